//! The client of a control plane: what `run --server`, `get --server`, `abort --server`,
//! `workers up` and `Runner::remote` use (the routes are in `runs.rs`).

use std::time::Duration;

use axum::body::Bytes;
use axum::http::header::AUTHORIZATION;
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use serde::de::DeserializeOwned;
use weir_store::ActionRecord;

use super::views::{ActionView, ActionsWithIo, AttemptLogView, CacheView, RunSubmission, RunView};

/// How long a replica may take to answer beyond what a request waits on it (pages of payloads
/// are up to 32 MiB).
const ANSWER_WITHIN: Duration = Duration::from_secs(30);

/// A client of a control plane: what `run --server`, `get --server` and `abort --server` use.
pub struct ClusterClient {
    /// The pool, or why there is none (an unreadable `WEIR_TLS_CA`): every request says so.
    http: Result<Client<crate::tls::Connector, Full<Bytes>>, String>,
    base: String,
    token: String,
}

impl ClusterClient {
    /// A client of the control plane at `base` (`http://HOST:PORT`, or `https://` when it
    /// serves TLS: see `tls.rs` for the certificates it trusts) with a token.
    pub fn new(base: &str, token: &str) -> ClusterClient {
        ClusterClient {
            http: crate::tls::client(base, 32),
            base: base.trim_end_matches('/').to_string(),
            token: token.to_string(),
        }
    }

    /// One request, which waits up to `wait` on the replica.
    async fn call<T: DeserializeOwned>(
        &self,
        method: &str,
        path: &str,
        body: Vec<u8>,
        wait: Duration,
    ) -> Result<T, String> {
        let body = self.call_raw(method, path, body, wait).await?;
        let url = format!("{}{path}", self.base);
        rmp_serde::from_slice(&body).map_err(|e| format!("{url}: bad answer: {e}"))
    }

    /// The metrics text (`/metrics`).
    pub async fn metrics(&self) -> Result<String, String> {
        let body = self
            .call_raw("GET", "/metrics", Vec::new(), Duration::ZERO)
            .await?;
        String::from_utf8(body.to_vec()).map_err(|e| format!("/metrics: {e}"))
    }

    /// Whether the replica serves (`live`) or can reach its database too (`/v1/health`): its
    /// answer text, or why not.
    pub async fn health(&self, live: bool) -> Result<String, String> {
        let path = if live {
            "/v1/health?live=1"
        } else {
            "/v1/health"
        };
        let body = self
            .call_raw("GET", path, Vec::new(), Duration::ZERO)
            .await?;
        Ok(String::from_utf8_lossy(&body).trim_end().to_string())
    }

    /// One request; a replica that has not answered [`ANSWER_WITHIN`] after the `wait` the
    /// request asked for (cut off from its database, say) is reported as not reachable, so
    /// that a client of several replicas asks another.
    async fn call_raw(
        &self,
        method: &str,
        path: &str,
        body: Vec<u8>,
        wait: Duration,
    ) -> Result<Bytes, String> {
        let url = format!("{}{path}", self.base);
        let limit = wait + ANSWER_WITHIN;
        tokio::time::timeout(limit, self.request(method, &url, body))
            .await
            .unwrap_or_else(|_| {
                Err(format!(
                    "cannot reach the control plane at {url}: no answer within {limit:?}"
                ))
            })
    }

    async fn request(&self, method: &str, url: &str, body: Vec<u8>) -> Result<Bytes, String> {
        let req = hyper::Request::builder()
            .method(method)
            .uri(url)
            .header(AUTHORIZATION, format!("Bearer {}", self.token))
            .header("content-type", "application/msgpack")
            .body(Full::new(Bytes::from(body)))
            .map_err(|e| format!("{url}: {e}"))?;
        let http = self
            .http
            .as_ref()
            .map_err(|e| format!("cannot reach the control plane at {url}: {e}"))?;
        let resp = http.request(req).await.map_err(|e| {
            format!(
                "cannot reach the control plane at {url}: {}",
                crate::tls::describe(&e)
            )
        })?;
        let status = resp.status();
        let body = resp
            .into_body()
            .collect()
            .await
            .map_err(|e| format!("{url}: {e}"))?
            .to_bytes();
        if !status.is_success() {
            let message = rmp_serde::from_slice::<crate::worker::protocol::ErrorReply>(&body)
                .map(|r| r.message)
                .unwrap_or_else(|_| String::from_utf8_lossy(&body).into_owned());
            return Err(format!("{message} (HTTP {status})"));
        }
        Ok(body)
    }

    /// Submits a run.
    pub async fn submit(&self, sub: &RunSubmission) -> Result<RunView, String> {
        let body = rmp_serde::to_vec_named(sub).map_err(|e| e.to_string())?;
        // Not sent to another replica when this one does not answer: it may have created the
        // run.
        let url = format!("{}/v1/runs", self.base);
        let body = tokio::time::timeout(ANSWER_WITHIN, self.request("POST", &url, body))
            .await
            .unwrap_or_else(|_| {
                Err(format!(
                    "the control plane at {url} did not answer within {ANSWER_WITHIN:?}; the run may have been created (see `get runs --server`)"
                ))
            })?;
        rmp_serde::from_slice(&body).map_err(|e| format!("{url}: bad answer: {e}"))
    }

    /// A run, waiting up to `wait` for it to end.
    pub async fn run(&self, name: &str, wait: Duration) -> Result<RunView, String> {
        let path = format!("/v1/runs/{}?wait_ms={}", encode(name), wait.as_millis());
        self.call("GET", &path, Vec::new(), wait).await
    }

    /// Runs, newest first: of one status, whose names contain a text, at most `limit`.
    pub async fn runs(
        &self,
        status: Option<&str>,
        name: Option<&str>,
        limit: u32,
    ) -> Result<Vec<RunView>, String> {
        let mut path = format!("/v1/runs?limit={limit}");
        if let Some(s) = status {
            path.push_str(&format!("&status={}", encode(s)));
        }
        if let Some(n) = name {
            path.push_str(&format!("&name={}", encode(n)));
        }
        self.call("GET", &path, Vec::new(), Duration::ZERO).await
    }

    /// Actions of a run in creation order, paged.
    pub async fn actions(
        &self,
        run: &str,
        offset: u64,
        limit: u32,
    ) -> Result<Vec<ActionRecord>, String> {
        let path = format!(
            "/v1/runs/{}/actions?offset={offset}&limit={limit}",
            encode(run)
        );
        self.call("GET", &path, Vec::new(), Duration::ZERO).await
    }

    /// Actions of a run in creation order with their payloads, paged; an answer may hold
    /// fewer than `limit` (see [`ActionsWithIo::cut`]).
    pub async fn actions_with_io(
        &self,
        run: &str,
        offset: u64,
        limit: u32,
    ) -> Result<ActionsWithIo, String> {
        let path = format!(
            "/v1/runs/{}/actions?offset={offset}&limit={limit}&with_io=1",
            encode(run)
        );
        self.call("GET", &path, Vec::new(), Duration::ZERO).await
    }

    /// What the attempts of one action printed, by attempt.
    pub async fn attempt_logs(&self, run: &str, id: &str) -> Result<Vec<AttemptLogView>, String> {
        let path = format!("/v1/runs/{}/actions/{}/logs", encode(run), encode(id));
        self.call("GET", &path, Vec::new(), Duration::ZERO).await
    }

    /// One action with its payloads.
    pub async fn action(&self, run: &str, id: &str) -> Result<ActionView, String> {
        let path = format!("/v1/runs/{}/actions/{}", encode(run), encode(id));
        self.call("GET", &path, Vec::new(), Duration::ZERO).await
    }

    /// Cache entries, newest first, optionally of one task.
    pub async fn cache(&self, task: Option<&str>, limit: u32) -> Result<Vec<CacheView>, String> {
        let mut path = format!("/v1/cache?limit={limit}");
        if let Some(t) = task {
            path.push_str(&format!("&task={}", encode(t)));
        }
        self.call("GET", &path, Vec::new(), Duration::ZERO).await
    }

    /// Deletes cache entries (of one task, or all); how many.
    pub async fn clear_cache(&self, task: Option<&str>) -> Result<u64, String> {
        let path = match task {
            Some(t) => format!("/v1/cache/clear?task={}", encode(t)),
            None => "/v1/cache/clear".to_string(),
        };
        self.call("POST", &path, Vec::new(), Duration::ZERO).await
    }

    /// Aborts a run.
    pub async fn abort(&self, name: &str) -> Result<RunView, String> {
        let path = format!("/v1/runs/{}/abort", encode(name));
        self.call("POST", &path, Vec::new(), Duration::ZERO).await
    }
}

/// Percent-encodes a path segment.
fn encode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}
