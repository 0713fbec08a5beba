//! Live updates of a run as server-sent events.
//!
//! The server polls the state database (the engine may be another process) every
//! [`POLL_INTERVAL`] and sends a `summary` event whenever the run's status, end time, counts by
//! status or number of actions changed; the UI then refreshes only what is on screen. Once the
//! run has settled it sends `end` and closes the stream.

use std::collections::HashMap;
use std::convert::Infallible;
use std::time::Duration;

use axum::extract::{Query, State, rejection::QueryRejection};
use axum::response::sse::{Event, KeepAlive, Sse};
use futures::Stream;
use serde_json::{Value, json};

use crate::app::{ApiError, App, run_json};
use crate::params::Params;

/// How often the database is polled for a live run.
pub(crate) const POLL_INTERVAL: Duration = Duration::from_millis(500);

struct Watch {
    app: App,
    name: String,
    last: Option<Value>,
    first: bool,
    done: bool,
}

impl Watch {
    /// The next event to send, or `None` when the stream is over.
    async fn next_event(&mut self) -> Option<Event> {
        if self.done {
            return None;
        }
        loop {
            if !self.first {
                tokio::time::sleep(POLL_INTERVAL).await;
            }
            self.first = false;
            let summary = match self.summary().await {
                Ok(s) => s,
                Err(e) => {
                    self.done = true;
                    return Some(
                        Event::default()
                            .event("error")
                            .data(json!({ "error": e.message() }).to_string()),
                    );
                }
            };
            let (doc, settled) = summary;
            if self.last.as_ref() != Some(&doc) {
                self.last = Some(doc.clone());
                let mut data = doc;
                data["now"] = json!(weir_store::now_us());
                return Some(Event::default().event("summary").data(data.to_string()));
            }
            if settled {
                self.done = true;
                return Some(Event::default().event("end").data("{}"));
            }
        }
    }

    async fn summary(&self) -> Result<(Value, bool), ApiError> {
        let run = self.app.run(self.name.clone()).await?;
        let counts = self.app.counts(&run).await?;
        let settled = run.status.is_terminal()
            && run
                .ended_at
                .is_some_and(|t| weir_store::now_us() - t > 2_000_000);
        Ok((run_json(&run, &counts.0, counts.1), settled))
    }
}

/// `GET /api/runs/{run}/events`.
pub(crate) async fn run_events(
    State(app): State<App>,
    path: Result<axum::extract::Path<String>, axum::extract::rejection::PathRejection>,
    q: Result<Query<HashMap<String, String>>, QueryRejection>,
) -> Result<Sse<impl Stream<Item = Result<Event, Infallible>>>, ApiError> {
    let axum::extract::Path(name) =
        path.map_err(|e| ApiError::bad_request(format!("malformed path: {e}")))?;
    Params::new(q, &[])?;
    app.run(name.clone()).await?; // 404 before the stream starts
    let watch = Watch {
        app,
        name,
        last: None,
        first: true,
        done: false,
    };
    let stream = futures::stream::unfold(watch, |mut w| async move {
        let event = w.next_event().await?;
        Some((Ok(event), w))
    });
    Ok(Sse::new(stream).keep_alive(KeepAlive::default()))
}
