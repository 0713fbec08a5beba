//! `serve`: a replica of the control plane of cluster mode (SPEC §10.2), on PostgreSQL. It
//! runs no user code: workers (`<binary> worker --server URL`) lease its actions over HTTP,
//! clients (`<binary> run TASK --server URL`) submit runs. Start as many replicas as wanted on
//! the same database: each serves every request. Each also serves the web UI under `/ui/`
//! (reading PostgreSQL), behind the cluster token like every other route.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use clap::Args;
use weir_blob::{BLOB_URL_SETTING, BlobStore, Payloads};
use weir_engine::cluster::{ClusterOptions, ControlPlane};
use weir_store_postgres::{PostgresOptions, PostgresStore};

use super::cluster::{read_token, token_path};
use super::{CliResult, Failure};

/// Where the web UI is mounted (the control plane's own routes are `/v1/...` and `/metrics`).
const UI_BASE: &str = "/ui";
/// Connections of the UI's read model.
const UI_CONNECTIONS: usize = 2;

#[derive(Args, Debug)]
pub(crate) struct ServeArgs {
    /// The PostgreSQL database, e.g. `postgres://postgres@127.0.0.1:5432/test`.
    #[arg(long, env = "WEIR_DATABASE")]
    database: String,
    /// The schema weir's tables live in (created if missing). Default: the connection's.
    #[arg(long)]
    schema: Option<String>,
    /// Address to listen on. Loopback by default; listening on another address without
    /// `--tls-cert` is allowed with a warning (tokens would cross the network in clear).
    #[arg(long, default_value = "127.0.0.1:8700")]
    listen: String,
    /// Serve HTTPS with this certificate chain (PEM); needs `--tls-key`. Clients and workers
    /// then use `https://` URLs and trust the certificate through the system's roots or
    /// `WEIR_TLS_CA=PEM-FILE`.
    #[arg(long, requires = "tls_key", value_name = "PEM")]
    tls_cert: Option<PathBuf>,
    /// The private key of `--tls-cert` (PEM).
    #[arg(long, requires = "tls_cert", value_name = "PEM")]
    tls_key: Option<PathBuf>,
    /// Object store URL for payloads (`file:///path`, `s3://bucket/prefix`): recorded in the
    /// database on first use, and the same for every replica. Default
    /// `file://<state-dir>/cluster-blobs` (one machine only).
    #[arg(long)]
    blobs: Option<String>,
    /// The cluster token file: created with a fresh token when missing. Clients and workers
    /// present the token (`--token-file`, or `WEIR_TOKEN`). Default `<state-dir>/cluster-token`.
    #[arg(long)]
    token_file: Option<PathBuf>,
    /// A lease not renewed by its worker's heartbeat for this long expires, and its action is
    /// queued again (e.g. `5s`).
    #[arg(long, default_value = "5s", value_parser = weir_core::spec::parse_duration)]
    lease_ttl: Duration,
}

pub(crate) async fn serve(state_dir: &Path, args: ServeArgs) -> CliResult {
    let token_file = args
        .token_file
        .clone()
        .unwrap_or_else(|| token_path(state_dir));
    let token = read_token(&token_file, true)?;
    let store = connect(&args.database, args.schema.clone()).await?;
    // The UI reads on connections of its own (at most 2, opened when first browsed).
    let reads: Arc<dyn weir_store::ReadModel> = Arc::new(store.read_model(UI_CONNECTIONS));
    let store: Arc<dyn weir_store::Store> = Arc::new(store);
    let blobs = blob_store(store.as_ref(), state_dir, args.blobs.as_deref()).await?;
    let payloads = Payloads::new(blobs, weir_core::spec::DEFAULT_INLINE_STORE_THRESHOLD);
    let listener = tokio::net::TcpListener::bind(&args.listen)
        .await
        .map_err(|e| Failure::input(format!("cannot listen on {}: {e}", args.listen)))?;
    let addr = listener.local_addr().map_err(Failure::other)?;
    let (plain, tls) = match (&args.tls_cert, &args.tls_key) {
        (Some(cert), Some(key)) => (
            None,
            Some(weir_engine::tls::TlsListener::new(listener, cert, key).map_err(Failure::input)?),
        ),
        _ => {
            if !addr.ip().is_loopback() {
                eprintln!(
                    "weir serve: warning: listening on {addr}, which is not a loopback address, without TLS: tokens and payloads cross the network in clear (give --tls-cert and --tls-key)"
                );
            }
            (Some(listener), None)
        }
    };
    let scheme = if tls.is_some() { "https" } else { "http" };
    let options = ClusterOptions {
        lease_ttl: args.lease_ttl,
        replica: format!("serve:{addr}:{}", std::process::id()),
        ..ClusterOptions::default()
    };
    let plane = ControlPlane::new(store.clone(), payloads, &token, options);
    // The token itself is not printed (logs are read by more people than should hold it).
    // Each line in one write: whoever waits for the address may read the log meanwhile.
    let lines = format!(
        "weir serve: listening on {scheme}://{addr} (state on PostgreSQL); cluster token in {}\n\
         weir serve: web UI at {scheme}://{addr}{UI_BASE}/ (log in once at {scheme}://{addr}{UI_BASE}/login with the cluster token)\n",
        token_file.display()
    );
    let _ = std::io::Write::write_all(&mut std::io::stderr().lock(), lines.as_bytes());
    // A project's token is valid but not for the UI (every project's runs): 403, not 401.
    let known = plane.clone();
    let other: weir_server::OtherToken = Arc::new(move |t: String| {
        let plane = known.clone();
        Box::pin(async move { matches!(plane.principal(&t).await, Ok(Some(_))) })
    });
    let router = plane.router().merge(weir_server::token_router_with(
        reads,
        &token,
        UI_BASE,
        weir_server::Options::default(),
        Some(other),
    ));
    let shutdown = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    let served = match (plain, tls) {
        (_, Some(tls)) => {
            axum::serve(tls, router)
                .with_graceful_shutdown(shutdown)
                .await
        }
        (Some(listener), None) => {
            axum::serve(listener, router)
                .with_graceful_shutdown(shutdown)
                .await
        }
        (None, None) => unreachable!("one listener or the other"),
    };
    store.close().map_err(Failure::other)?;
    served.map_err(|e| Failure::other(format!("serving on {addr}: {e}")))
}

/// The object store recorded in the database, or the one given (recorded on first use), or
/// `<state_dir>/cluster-blobs`. Another than the recorded one is refused.
async fn blob_store(
    store: &dyn weir_store::Store,
    state_dir: &Path,
    given: Option<&str>,
) -> Result<BlobStore, Failure> {
    let recorded = store
        .setting(BLOB_URL_SETTING)
        .await
        .map_err(Failure::other)?;
    let (url, record) = match (recorded, given) {
        (Some(r), Some(g)) if r != g => {
            return Err(Failure::input(format!(
                "this database keeps its payloads in {r}, not {g}; every replica uses the same object store"
            )));
        }
        (Some(r), _) => (r, false),
        (None, Some(g)) => (g.to_string(), true),
        (None, None) => {
            let dir = state_dir.join("cluster-blobs");
            std::fs::create_dir_all(&dir)
                .map_err(|e| Failure::other(format!("cannot create {}: {e}", dir.display())))?;
            let dir = dir.canonicalize().map_err(Failure::other)?;
            (format!("file://{}", dir.display()), true)
        }
    };
    // A URL given now is the caller's input; a recorded one that fails is the environment's.
    let failure = if record {
        Failure::input
    } else {
        Failure::other
    };
    let blobs = BlobStore::from_url(&url).map_err(failure)?;
    // An s3:// bucket is listed before it is recorded: a missing one stops serve now.
    blobs.check().await.map_err(failure)?;
    if record {
        store
            .set_setting(BLOB_URL_SETTING, &url)
            .await
            .map_err(Failure::other)?;
    }
    Ok(blobs)
}

/// Connects to the control plane's database (creating or migrating weir's tables).
pub(crate) async fn connect(
    database: &str,
    schema: Option<String>,
) -> Result<PostgresStore, Failure> {
    let options = PostgresOptions {
        schema,
        ..PostgresOptions::default()
    };
    let database = database.to_string();
    tokio::task::spawn_blocking(move || PostgresStore::connect(&database, options))
        .await
        .map_err(Failure::other)?
        .map_err(Failure::other)
}
