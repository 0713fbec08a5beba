//! The `Host` check: the server answers only requests addressed to the address it listens on,
//! so that a web page on another origin cannot reach it through DNS rebinding (a name of the
//! attacker's that resolves to 127.0.0.1 would otherwise let that page read every run's inputs
//! and outputs through the browser).

use std::net::SocketAddr;
use std::sync::Arc;

use axum::extract::{Request, State};
use axum::http::{StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use serde_json::json;

/// The `Host` values accepted: `127.0.0.1:PORT`, `localhost:PORT`, `[::1]:PORT` and the
/// listening address itself (without the port too when it is 80).
#[derive(Clone, Debug)]
pub(crate) struct Allowed(Arc<Vec<String>>);

impl Allowed {
    pub(crate) fn new(addr: SocketAddr) -> Allowed {
        let port = addr.port();
        let mut names = vec![
            "127.0.0.1".to_string(),
            "localhost".to_string(),
            "[::1]".to_string(),
        ];
        let own = match addr {
            SocketAddr::V4(a) => a.ip().to_string(),
            SocketAddr::V6(a) => format!("[{}]", a.ip()),
        };
        if !addr.ip().is_unspecified() && !names.contains(&own) {
            names.push(own);
        }
        let mut hosts: Vec<String> = names.iter().map(|n| format!("{n}:{port}")).collect();
        if port == 80 {
            hosts.extend(names);
        }
        Allowed(Arc::new(hosts))
    }

    fn allows(&self, host: &str) -> bool {
        self.0.iter().any(|h| h.eq_ignore_ascii_case(host))
    }
}

fn refuse(message: String) -> Response {
    (
        StatusCode::MISDIRECTED_REQUEST,
        axum::Json(json!({ "error": message })),
    )
        .into_response()
}

/// Middleware: 421 Misdirected Request, before any handler, unless the request's `Host` (or,
/// without one, the authority of its URI) is one of [`Allowed`].
pub(crate) async fn check(State(allowed): State<Allowed>, req: Request, next: Next) -> Response {
    let mut hosts = req.headers().get_all(header::HOST).iter();
    let host = match (hosts.next(), hosts.next()) {
        (Some(_), Some(_)) => return refuse("more than one Host header".to_string()),
        (Some(h), None) => match h.to_str() {
            Ok(h) => Some(h.to_string()),
            Err(_) => return refuse("the Host header is not text".to_string()),
        },
        (None, _) => None,
    };
    let authority = req.uri().authority().map(|a| a.as_str().to_string());
    if host.is_none() && authority.is_none() {
        return refuse(format!(
            "the request has no Host header; the weir UI answers requests to {}",
            allowed.0.join(", ")
        ));
    }
    if let Some(bad) = [host, authority]
        .into_iter()
        .flatten()
        .find(|h| !allowed.allows(h))
    {
        tracing::debug!(host = %bad, "refused a request for another host");
        return refuse(format!(
            "Host {bad:?} is not this server: the weir UI answers only requests addressed to \
             {} (a web page that reaches it under another name is refused, against DNS \
             rebinding)",
            allowed.0.join(", ")
        ));
    }
    next.run(req).await
}
