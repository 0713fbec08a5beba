//! TLS for cluster mode, with rustls: the listener `serve --tls-cert/--tls-key` serves on, and
//! the connector clients and workers reach `https://` servers with.
//!
//! Clients trust the machine's root certificates and, when `WEIR_TLS_CA` names a PEM file,
//! the certificates in it (a private CA, or a server's self-signed certificate). A file that
//! cannot be read or holds no certificate is an error of every request, naming the file:
//! never a silent fall back to the system roots alone.

use std::io;
use std::path::Path;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::Full;
use hyper_rustls::{HttpsConnector, HttpsConnectorBuilder};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio_rustls::TlsAcceptor;
use tokio_rustls::server::TlsStream;

/// The environment variable naming extra trusted certificates (PEM).
pub const CA_ENV: &str = "WEIR_TLS_CA";

/// How long a client has to finish its TLS handshake.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// The connector of clients and workers: `http://` as before, `https://` with rustls.
pub(crate) type Connector = HttpsConnector<HttpConnector>;

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::aws_lc_rs::default_provider())
}

fn read_certs(path: &Path) -> Result<Vec<CertificateDer<'static>>, String> {
    let certs = CertificateDer::pem_file_iter(path)
        .map_err(|e| format!("cannot read certificates from {}: {e}", path.display()))?
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| format!("bad certificate in {}: {e}", path.display()))?;
    if certs.is_empty() {
        return Err(format!("{} holds no PEM certificate", path.display()));
    }
    Ok(certs)
}

fn build_connector() -> Result<Connector, String> {
    let mut roots = rustls::RootCertStore::empty();
    // Certificates of the system store that rustls cannot parse are skipped, as browsers do.
    for cert in rustls_native_certs::load_native_certs().certs {
        let _ = roots.add(cert);
    }
    if let Some(path) = std::env::var_os(CA_ENV).filter(|p| !p.is_empty()) {
        let path = Path::new(&path);
        for cert in read_certs(path)? {
            roots
                .add(cert)
                .map_err(|e| format!("{CA_ENV}={}: {e}", path.display()))?;
        }
    }
    let config = rustls::ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?
        .with_root_certificates(roots)
        .with_no_client_auth();
    Ok(wrap(config))
}

fn wrap(config: rustls::ClientConfig) -> Connector {
    let mut http = HttpConnector::new();
    http.enforce_http(false);
    http.set_nodelay(true);
    HttpsConnectorBuilder::new()
        .with_tls_config(config)
        .https_or_http()
        .enable_http1()
        .wrap_connector(http)
}

/// The connector for a server at `base`: for `https://`, the one with the trusted roots
/// (built once per process), or why there is none; for `http://`, one that never needs them
/// (so the engine's own workers on loopback do not read the system's certificates).
pub(crate) fn connector(base: &str) -> Result<Connector, String> {
    static CONNECTOR: OnceLock<Result<Connector, String>> = OnceLock::new();
    if base.starts_with("https://") {
        return CONNECTOR.get_or_init(build_connector).clone();
    }
    let config = rustls::ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?
        .with_root_certificates(rustls::RootCertStore::empty())
        .with_no_client_auth();
    Ok(wrap(config))
}

/// An HTTP client of `base` over [`connector`].
pub(crate) fn client(
    base: &str,
    idle_per_host: usize,
) -> Result<Client<Connector, Full<Bytes>>, String> {
    Ok(Client::builder(TokioExecutor::new())
        .pool_max_idle_per_host(idle_per_host)
        .build(connector(base)?))
}

/// An error with its causes (a failed TLS handshake says why only in its sources).
pub(crate) fn describe(e: &(dyn std::error::Error + 'static)) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        let s_text = s.to_string();
        if !text.contains(&s_text) {
            text.push_str(": ");
            text.push_str(&s_text);
        }
        source = s.source();
    }
    text
}

/// A listener whose connections are TLS: accepted TCP connections finish their handshake on
/// tasks of their own (a slow or broken client holds up no one), and those that fail it are
/// dropped.
pub struct TlsListener {
    local: std::net::SocketAddr,
    ready: mpsc::Receiver<(TlsStream<TcpStream>, std::net::SocketAddr)>,
}

impl TlsListener {
    /// Serves TLS on `listener` with the certificate chain and private key of the PEM files.
    pub fn new(listener: TcpListener, cert: &Path, key: &Path) -> Result<TlsListener, String> {
        let chain = read_certs(cert)?;
        let key = PrivateKeyDer::from_pem_file(key)
            .map_err(|e| format!("cannot read a private key from {}: {e}", key.display()))?;
        let config = rustls::ServerConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()
            .map_err(|e| e.to_string())?
            .with_no_client_auth()
            .with_single_cert(chain, key)
            .map_err(|e| format!("certificate {} and its key: {e}", cert.display()))?;
        let acceptor = TlsAcceptor::from(Arc::new(config));
        let local = listener.local_addr().map_err(|e| e.to_string())?;
        let (tx, ready) = mpsc::channel(64);
        tokio::spawn(async move {
            loop {
                let (tcp, addr) = match listener.accept().await {
                    Ok(c) => c,
                    Err(e) => {
                        // Out of file descriptors and the like: wait, as axum's listener does.
                        tracing::warn!(error = %e, "accepting a connection failed");
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        continue;
                    }
                };
                let _ = tcp.set_nodelay(true);
                let acceptor = acceptor.clone();
                let sender = tx.clone();
                tokio::spawn(async move {
                    match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(tcp)).await {
                        Ok(Ok(tls)) => {
                            let _ = sender.send((tls, addr)).await;
                        }
                        Ok(Err(e)) => tracing::debug!(%addr, error = %e, "TLS handshake failed"),
                        Err(_) => tracing::debug!(%addr, "TLS handshake timed out"),
                    }
                });
                if tx.is_closed() {
                    return;
                }
            }
        });
        Ok(TlsListener { local, ready })
    }
}

impl axum::serve::Listener for TlsListener {
    type Io = TlsStream<TcpStream>;
    type Addr = std::net::SocketAddr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        match self.ready.recv().await {
            Some(c) => c,
            // The accepting task only ends once this listener is dropped.
            None => std::future::pending().await,
        }
    }

    fn local_addr(&self) -> io::Result<Self::Addr> {
        Ok(self.local)
    }
}
