//! The shared state of the handlers ([`App`]: the read model, opened on first use, and the
//! aggregate caches), the API's error type, and the JSON shapes of rows. The handlers
//! (`api`, `events`) build on it; it depends on none of them.

use std::path::PathBuf;
use std::sync::Arc;

use axum::Json;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use parking_lot::Mutex;
use serde_json::{Value, json};
use weir_core::ActionId;
use weir_store::{
    ActionKind, ReadModel, StatusCounts, UiAction, UiActivity, UiGroup, UiRun, now_us,
};

use crate::Options;
use crate::cache::Slot;
use crate::payload::Gate;

/// A finished run's rows are taken as final this long after it ended.
const SETTLE_US: i64 = 2_000_000;
/// Longest error message in a listing row.
const MAX_ROW_ERROR: usize = 300;

/// An API error: a status code and a message, answered as `{"error": message}`.
#[derive(Debug)]
pub(crate) struct ApiError {
    status: StatusCode,
    message: String,
}

impl ApiError {
    pub(crate) fn bad_request(message: impl Into<String>) -> Self {
        ApiError {
            status: StatusCode::BAD_REQUEST,
            message: message.into(),
        }
    }
    pub(crate) fn not_found(message: impl Into<String>) -> Self {
        ApiError {
            status: StatusCode::NOT_FOUND,
            message: message.into(),
        }
    }
    pub(crate) fn message(&self) -> &str {
        &self.message
    }
    pub(crate) fn internal(message: impl Into<String>) -> Self {
        ApiError {
            status: StatusCode::INTERNAL_SERVER_ERROR,
            message: message.into(),
        }
    }
    pub(crate) fn unavailable(message: impl Into<String>) -> Self {
        ApiError {
            status: StatusCode::SERVICE_UNAVAILABLE,
            message: message.into(),
        }
    }
}

impl From<weir_store::Error> for ApiError {
    fn from(e: weir_store::Error) -> Self {
        use weir_store::Error as E;
        match e {
            E::UnknownRun(_) | E::UnknownAction { .. } | E::NoState(_) => {
                ApiError::not_found(e.to_string())
            }
            other => {
                tracing::warn!(error = %other, "state read failed");
                ApiError::internal(other.to_string())
            }
        }
    }
}

impl From<tokio::task::JoinError> for ApiError {
    fn from(e: tokio::task::JoinError) -> Self {
        ApiError::internal(format!("aggregate computation panicked: {e}"))
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let mut res = (self.status, Json(json!({ "error": self.message }))).into_response();
        if self.status == StatusCode::SERVICE_UNAVAILABLE {
            res.headers_mut()
                .insert(header::RETRY_AFTER, header::HeaderValue::from_static("1"));
        }
        res
    }
}

pub(crate) type ApiResult = Result<Json<Value>, ApiError>;

/// Where the UI reads runs and payloads from.
#[derive(Clone)]
pub(crate) enum Source {
    /// A state directory (`weir ui`): its database is opened on first use, its payloads are in
    /// the object store recorded there (or `<state-dir>/blobs`).
    StateDir(PathBuf),
    /// A read model of any backend (`weir serve`): payloads are in the object store recorded
    /// in its settings ([`weir_blob::BLOB_URL_SETTING`]).
    Model(Arc<dyn ReadModel>),
}

struct Inner {
    source: Source,
    reader: Mutex<Option<Arc<dyn ReadModel>>>,
    counts: Slot<i64, (StatusCounts, i64)>,
    groups: Slot<(i64, ActionId), Vec<UiGroup>>,
    activity: Slot<(i64, usize), UiActivity>,
    payloads: Gate,
}

/// Shared state of the handlers: where to read, the reader (a state directory's is opened on
/// first use, so the UI can start before anything has run) and the aggregate caches.
#[derive(Clone)]
pub(crate) struct App(Arc<Inner>);

impl App {
    /// The shared state for `source` (nothing is opened yet).
    pub(crate) fn new(source: Source, options: Options) -> App {
        App(Arc::new(Inner {
            source,
            reader: Mutex::new(None),
            counts: Slot::new(),
            groups: Slot::new(),
            activity: Slot::new(),
            payloads: Gate::new(
                options.payload_reads,
                options.payload_waiting,
                options.payload_probe,
            ),
        }))
    }

    /// The cap on action views (which read payloads).
    pub(crate) fn payloads(&self) -> &Gate {
        &self.0.payloads
    }

    /// Where payloads are: the object store `recorded` in the state (its
    /// [`weir_blob::BLOB_URL_SETTING`]), or a state directory's own `blobs`.
    pub(crate) fn payload_store(
        &self,
        recorded: Option<&str>,
    ) -> Result<weir_blob::Payloads, String> {
        match (&self.0.source, recorded) {
            (Source::StateDir(dir), recorded) => {
                weir_blob::Payloads::of_state(dir, recorded).map_err(|e| e.to_string())
            }
            (Source::Model(_), Some(url)) => weir_blob::BlobStore::from_url(url)
                .map(|blobs| weir_blob::Payloads::new(blobs, 0))
                .map_err(|e| e.to_string()),
            (Source::Model(_), None) => Err(format!(
                "the state records no object store (setting {:?}), so offloaded payloads cannot be read",
                weir_blob::BLOB_URL_SETTING
            )),
        }
    }

    fn reader(&self) -> Result<Arc<dyn ReadModel>, ApiError> {
        let mut slot = self.0.reader.lock();
        if let Some(r) = slot.as_ref() {
            return Ok(r.clone());
        }
        let reader = match &self.0.source {
            Source::Model(m) => m.clone(),
            Source::StateDir(dir) => weir_store::open_read_model(dir)?,
        };
        *slot = Some(reader.clone());
        Ok(reader)
    }

    /// Runs a read on a blocking thread.
    pub(crate) async fn read<T: Send + 'static>(
        &self,
        f: impl FnOnce(&dyn ReadModel) -> Result<T, weir_store::Error> + Send + 'static,
    ) -> Result<T, ApiError> {
        let reader = self.reader()?;
        tokio::task::spawn_blocking(move || f(reader.as_ref()))
            .await
            .map_err(|e| ApiError::internal(format!("read panicked: {e}")))?
            .map_err(ApiError::from)
    }

    pub(crate) async fn run(&self, name: String) -> Result<UiRun, ApiError> {
        self.read(move |r| r.run(&name)).await
    }

    /// Counts by status and highest `seq` of a run (cached).
    pub(crate) async fn counts(&self, run: &UiRun) -> Result<Arc<(StatusCounts, i64)>, ApiError> {
        let reader = self.reader()?;
        let id = run.id;
        self.0
            .counts
            .get(id, settled(run), move || Ok(reader.run_counts(id)?))
            .await
    }

    pub(crate) async fn groups(
        &self,
        run: &UiRun,
        parent: ActionId,
    ) -> Result<Arc<Vec<UiGroup>>, ApiError> {
        let reader = self.reader()?;
        let id = run.id;
        self.0
            .groups
            .get((id, parent), settled(run), move || {
                Ok(reader.child_groups(id, parent)?)
            })
            .await
    }

    pub(crate) async fn activity(
        &self,
        run: &UiRun,
        buckets: usize,
    ) -> Result<Arc<UiActivity>, ApiError> {
        let reader = self.reader()?;
        let rec = run.clone();
        self.0
            .activity
            .get((run.id, buckets), settled(run), move || {
                Ok(reader.run_activity(&rec, buckets, now_us())?)
            })
            .await
    }

    /// The task of an action, or 404.
    pub(crate) async fn task_of(&self, run: &UiRun, id: ActionId) -> Result<String, ApiError> {
        let run_id = run.id;
        let name = run.name.clone();
        self.read(move |r| r.tasks_of(run_id, &[id]))
            .await?
            .pop()
            .flatten()
            .ok_or_else(|| {
                weir_store::Error::UnknownAction {
                    run: name,
                    action: id.to_string(),
                }
                .into()
            })
    }
}

/// Whether a run's rows no longer change (it ended a while ago).
fn settled(run: &UiRun) -> bool {
    run.status.is_terminal() && run.ended_at.is_some_and(|t| now_us() - t > SETTLE_US)
}

pub(crate) fn duration(start: Option<i64>, end: Option<i64>) -> Option<i64> {
    Some(end? - start?)
}

pub(crate) fn truncate(s: &str, max: usize) -> String {
    if s.len() <= max {
        return s.to_string();
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}…", &s[..end])
}

pub(crate) fn run_json(run: &UiRun, counts: &StatusCounts, max_seq: i64) -> Value {
    json!({
        "name": run.name,
        "task": run.task,
        "status": run.status.as_str(),
        "created_at": run.created_at,
        "ended_at": run.ended_at,
        "duration_us": duration(Some(run.created_at), run.ended_at),
        "counts": counts.by_name(),
        "total": counts.total(),
        "max_seq": max_seq,
    })
}

pub(crate) fn action_json(row: &UiAction) -> Value {
    let a = &row.record;
    json!({
        "seq": row.seq,
        "id": a.id.to_string(),
        "parent": a.parent.to_string(),
        "task": a.task,
        "group": a.group,
        "kind": match a.kind { ActionKind::Task => "task", ActionKind::Trace => "trace" },
        "status": a.status.as_str(),
        "attempts": a.attempts,
        "queued_at": a.queued_at,
        "started_at": a.started_at,
        "ended_at": a.ended_at,
        "queue_us": duration(Some(a.queued_at), a.started_at),
        "run_us": duration(a.started_at, a.ended_at),
        "cache_hit": a.cache_hit,
        "recovered": a.recovered,
        "has_children": row.has_children,
        "error": a.error.as_ref().map(|f| truncate(&f.message, MAX_ROW_ERROR)),
    })
}

pub(crate) fn group_json(g: &UiGroup) -> Value {
    json!({
        "group": g.group,
        "total": g.count,
        "counts": g.counts.by_name(),
        "first_seq": g.first_seq,
    })
}
