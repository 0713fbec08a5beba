//! weir's web UI and its JSON API (SPEC §11.2), served read-only from a state directory.
//!
//! ```no_run
//! # async fn demo() -> Result<(), weir_server::Error> {
//! // What `weir ui --state-dir .weir --port 8080` does:
//! weir_server::serve(std::path::Path::new(".weir"), 8080).await?;
//! # Ok(()) }
//! ```
//!
//! The server opens `<state-dir>/state.db` read-only (it never creates or changes anything in
//! the directory) and answers every request with at most one page: children of an action are
//! folded into groups with counts by status, a group's members are paged, and the timeline and
//! utilization are aggregated into lanes and time buckets. Whole-run aggregates are cached and,
//! while a run is live, recomputed at most every `max(0.5 s, 4 × the time they took)`, so a
//! 1 000 000-action run does not keep the machine busy. The UI (plain HTML, CSS and JS) is
//! compiled into the binary.
//!
//! The API reference follows (also in `crates/weir-server/API.md`).
//!
#![doc = include_str!("../API.md")]

mod api;
mod app;
mod assets;
mod cache;
mod events;
mod params;

use std::net::{Ipv4Addr, SocketAddr};
use std::path::Path;

pub use api::router;

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

/// Serves the UI and API for `state_dir` on an already bound listener.
pub async fn serve_on(listener: tokio::net::TcpListener, state_dir: &Path) -> Result<(), Error> {
    if let Ok(addr) = listener.local_addr() {
        tracing::info!(url = %format!("http://{addr}/"), state_dir = %state_dir.display(), "weir ui serving");
    }
    axum::serve(listener, router(state_dir))
        .await
        .map_err(Error::Serve)
}
