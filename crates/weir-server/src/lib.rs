//! weir's web UI and its JSON API (SPEC §11.2), served read-only from a state directory, or
//! from any [`weir_store::ReadModel`] (cluster mode's on PostgreSQL).
//!
//! ```no_run
//! # async fn demo() -> Result<(), weir_server::Error> {
//! // What `weir ui --state-dir .weir --port 8080` does:
//! weir_server::serve(std::path::Path::new(".weir"), 8080).await?;
//! # Ok(()) }
//! ```
//!
//! `weir serve` mounts [`token_router`] under `/ui` in its own router instead: the same pages
//! and API, reading its PostgreSQL read model, every route behind the cluster token (see
//! [`token_router`]).
//!
//! The server opens `<state-dir>/state.db` read-only (it never creates or changes anything in
//! the directory) and answers every request with at most one page: children of an action are
//! folded into groups with counts by status, a group's members are paged, and the timeline and
//! utilization are aggregated into lanes and time buckets. Whole-run aggregates are cached and,
//! while a run is live, recomputed at most every `max(0.5 s, 4 × the time they took)`, so a
//! 1 000 000-action run does not keep the machine busy. An action's payloads are shown as
//! bounded previews (the first 256 KiB of the payload read, at most 64 KiB of JSON written from
//! it), at most [`Options::payload_reads`] at once, on the request's own future so that a client
//! that goes stops the work. `weir ui` refuses requests whose `Host` is not the listening
//! address (421), against DNS rebinding; [`token_router`] needs the token instead. The UI (plain
//! HTML, CSS and JS) is compiled into the binary; its links are relative, so it works mounted
//! under a path.
//!
//! The API reference follows (also in `crates/weir-server/API.md`).
//!
#![doc = include_str!("../API.md")]

mod api;
mod app;
mod assets;
mod auth;
mod cache;
mod events;
mod host;
mod params;
mod payload;
mod preview;

use std::net::{Ipv4Addr, SocketAddr};
use std::path::Path;
use std::sync::Arc;

pub use auth::OtherToken;
#[doc(hidden)]
pub use payload::PayloadProbe;

/// Limits of the server; [`Options::default`] is what `weir ui` uses.
#[derive(Clone)]
pub struct Options {
    /// Action views (the requests that read inputs and outputs) served at once (default 4).
    pub payload_reads: usize,
    /// Action views that may wait for one of those (default 16); more are answered
    /// 503 Service Unavailable.
    pub payload_waiting: usize,
    /// A test hook on action views.
    #[doc(hidden)]
    pub payload_probe: Option<Arc<dyn PayloadProbe>>,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            payload_reads: 4,
            payload_waiting: 16,
            payload_probe: None,
        }
    }
}

impl std::fmt::Debug for Options {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Options")
            .field("payload_reads", &self.payload_reads)
            .field("payload_waiting", &self.payload_waiting)
            .finish_non_exhaustive()
    }
}

/// The UI and API for `state_dir`, answering only requests addressed to `addr` (the address it
/// is served on: `Host` must be `127.0.0.1`, `localhost` or `[::1]` with its port, or else 421),
/// for embedding in another server or for tests. Nothing is opened until the first request.
pub fn router(state_dir: &Path, addr: SocketAddr) -> axum::Router {
    router_with(state_dir, addr, Options::default())
}

/// [`router`] with other limits.
pub fn router_with(state_dir: &Path, addr: SocketAddr, options: Options) -> axum::Router {
    api::router(app::Source::StateDir(state_dir.to_path_buf()), options, "").layer(
        axum::middleware::from_fn_with_state(host::Allowed::new(addr), host::check),
    )
}

/// The UI and API reading `reads`, under `base` (a path like `/ui`: the page is `BASE/`, the
/// API `BASE/api/...`), for merging into another server's router (`weir serve`'s). Offloaded
/// payloads are read from the object store recorded in `reads`' settings
/// ([`weir_blob::BLOB_URL_SETTING`]).
///
/// Every route needs `token`: `Authorization: Bearer TOKEN`, or the session cookie that
/// `BASE/login` sets once given the token (a form, or `BASE/login?token=TOKEN`); the cookie is
/// `HttpOnly`, `SameSite=Strict` and holds a key derived from the token, not the token.
/// Without either, the API answers 401 with a JSON error and pages 401 with a page saying how
/// to log in. There is no `Host` check (a server on a network is reached under names it cannot
/// know): against DNS rebinding the token suffices, as the browser never sends the cookie to
/// another site's name.
///
/// ```no_run
/// # fn demo(reads: std::sync::Arc<dyn weir_store::ReadModel>, other: axum::Router) {
/// let app = other.merge(weir_server::token_router(reads, "TOKEN", "/ui", Default::default()));
/// # }
/// ```
///
/// # Panics
/// If `base` is empty or `/` (the UI would take every path of the server it is merged into).
pub fn token_router(
    reads: Arc<dyn weir_store::ReadModel>,
    token: &str,
    base: &str,
    options: Options,
) -> axum::Router {
    token_router_with(reads, token, base, options, None)
}

/// [`token_router`], where `other` tells tokens the server knows besides `token` (a project's
/// tokens on `weir serve`): those are refused with 403 (valid, but not for this UI, which
/// shows every project's runs) rather than 401.
pub fn token_router_with(
    reads: Arc<dyn weir_store::ReadModel>,
    token: &str,
    base: &str,
    options: Options,
    other: Option<OtherToken>,
) -> axum::Router {
    let base = base.trim_matches('/');
    assert!(!base.is_empty(), "mount the UI under a path, e.g. /ui");
    let base = format!("/{base}");
    let auth = auth::TokenAuth::new(token, &base, other);
    let login = axum::Router::new()
        .route(
            &format!("{base}/login"),
            axum::routing::get(auth::login_get).post(auth::login_post),
        )
        .with_state(auth.clone());
    api::router(app::Source::Model(reads), options, &base)
        .route_layer(axum::middleware::from_fn_with_state(auth, auth::check))
        .merge(login)
}

/// Most rows (actions, runs, groups, lanes) in one response.
pub const MAX_PAGE: u32 = 500;

/// A failure to start or run the server.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The port could not be bound.
    #[error(
        "cannot listen on {addr}: {source} (is another `weir ui` running? pass --port to choose another)"
    )]
    Bind {
        /// The address.
        addr: SocketAddr,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// Serving failed.
    #[error("the UI server stopped: {0}")]
    Serve(#[source] std::io::Error),
}

/// Serves the UI and API for `state_dir` on `127.0.0.1:port` (port 0 picks a free one) until
/// the process ends. Logs the URL with `tracing`; to print it yourself, bind with
/// [`tokio::net::TcpListener`] and call [`serve_on`].
pub async fn serve(state_dir: &Path, port: u16) -> Result<(), Error> {
    let addr = SocketAddr::from((Ipv4Addr::LOCALHOST, port));
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .map_err(|source| Error::Bind { addr, source })?;
    serve_on(listener, state_dir).await
}

/// Serves the UI and API for `state_dir` on an already bound listener. Requests addressed to
/// another host than the listener's address are refused (see [`router`]).
pub async fn serve_on(listener: tokio::net::TcpListener, state_dir: &Path) -> Result<(), Error> {
    serve_with(listener, state_dir, Options::default()).await
}

/// [`serve_on`] with other limits.
pub async fn serve_with(
    listener: tokio::net::TcpListener,
    state_dir: &Path,
    options: Options,
) -> Result<(), Error> {
    let addr = listener.local_addr().map_err(Error::Serve)?;
    tracing::info!(url = %format!("http://{addr}/"), state_dir = %state_dir.display(), "weir ui serving");
    axum::serve(listener, router_with(state_dir, addr, options))
        .await
        .map_err(Error::Serve)
}
