//! The clients' side of the control plane: submit a run, follow it, list runs, abort, and the
//! Prometheus metrics. Bodies are MessagePack (named fields), like the worker protocol; every
//! route needs the cluster token (`Authorization: Bearer TOKEN`), `/metrics` included.
//!
//! `with_io=1` gives each action of the page with its inputs and output (read from the object
//! store when offloaded; the page is cut short past 32 MiB of them, see [`ActionsWithIo`]).
//! `/logs` gives what each attempt of the action printed, as its worker captured it (the last
//! 1 MiB of each; see `inspect.rs`): an unknown run or action is 404, an action whose attempts
//! printed nothing (or that ran on no worker) has none.
//!
//! | route                          | request           | response         |
//! |--------------------------------|-------------------|------------------|
//! | `POST /v1/runs`                | [`RunSubmission`] | [`RunView`]      |
//! | `GET /v1/runs?limit=N`         |                   | `Vec<RunView>`   |
//! | `GET /v1/runs/NAME?wait_ms=N`  |                   | [`RunView`]      |
//! | `POST /v1/runs/NAME/abort`     |                   | [`RunView`]      |
//! | `GET /v1/runs/NAME/actions?offset=N&limit=N` |     | `Vec<ActionRecord>` |
//! | `GET /v1/runs/NAME/actions?offset=N&limit=N&with_io=1` | | [`ActionsWithIo`] |
//! | `GET /v1/runs/NAME/actions/ID` |                   | [`ActionView`]   |
//! | `GET /v1/runs/NAME/actions/ID/logs` |              | `Vec<AttemptLogView>` |
//! | `GET /v1/cache?task=T&limit=N` |                   | `Vec<CacheView>` |
//! | `POST /v1/cache/clear?task=T`  |                   | `u64` (removed)  |
//! | `GET /metrics`                 |                   | text             |
//! | `GET /v1/health`               |                   | text (503: the database did not answer) |
//! | `GET /v1/health?live=1`        |                   | text (this replica serves; no database query) |

use std::time::{Duration, Instant};

use axum::Extension;
use axum::Router;
use axum::body::Bytes;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::http::header::AUTHORIZATION;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde::{Deserialize, Serialize};
use weir_core::clock::now_us;
use weir_core::{ActionId, Failure};
use weir_store::{Page, RunFilter, RunRecord, RunStatus, WriteOp};

use super::access::Principal;
use super::views::{ActionView, CacheView, RunSubmission, RunView};
#[cfg(doc)]
use super::views::{ActionsWithIo, AttemptLogView};
use super::{ControlPlane, spec};

pub(super) type Refusal = (StatusCode, String);

fn refuse((status, message): Refusal) -> Response {
    let body = rmp_serde::to_vec_named(&crate::worker::protocol::ErrorReply { message })
        .unwrap_or_default();
    (status, body).into_response()
}

fn reply<T: Serialize>(r: Result<T, Refusal>) -> Response {
    match r.and_then(|v| {
        rmp_serde::to_vec_named(&v).map_err(|e| (StatusCode::INTERNAL_SERVER_ERROR, e.to_string()))
    }) {
        Ok(body) => (StatusCode::OK, body).into_response(),
        Err(r) => refuse(r),
    }
}

pub(super) fn internal(e: impl std::fmt::Display) -> Refusal {
    (StatusCode::INTERNAL_SERVER_ERROR, e.to_string())
}

pub(super) fn bad(message: impl Into<String>) -> Refusal {
    (StatusCode::BAD_REQUEST, message.into())
}

/// The routes clients use, each checking the bearer token before anything else (see
/// `access.rs` for who may do what).
pub fn client_router(plane: ControlPlane) -> Router {
    Router::new()
        .route("/v1/runs", post(submit).get(list))
        .route("/v1/runs/{name}", get(show))
        .route("/v1/runs/{name}/abort", post(abort))
        .route("/v1/runs/{name}/actions", get(actions))
        .route("/v1/runs/{name}/actions/{id}", get(action))
        .route("/v1/runs/{name}/actions/{id}/logs", get(logs))
        .route("/v1/cache", get(cache_list))
        .route("/v1/cache/clear", post(cache_clear))
        .route("/metrics", get(metrics))
        .route("/v1/health", get(health))
        .route_layer(axum::middleware::from_fn_with_state(
            plane.clone(),
            authenticate,
        ))
        .with_state(plane)
}

async fn authenticate(
    State(plane): State<ControlPlane>,
    req: axum::extract::Request,
    next: axum::middleware::Next,
) -> Response {
    let token = req
        .headers()
        .get(AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "));
    let principal = match token {
        Some(t) => plane.inner.access.principal(t).await,
        None => Ok(None),
    };
    match principal {
        Ok(Some(who)) => {
            let mut req = req;
            req.extensions_mut().insert(who);
            next.run(req).await
        }
        Ok(None) => refuse((
            StatusCode::UNAUTHORIZED,
            "this control plane needs a token (Authorization: Bearer TOKEN): the cluster token, or one made by `weir token create`".into(),
        )),
        Err(e) => refuse(internal(format!("checking the token: {e}"))),
    }
}

/// The run `name` when `who` may read it as a client: 404 for an unknown run, 403 for a run
/// of another project or domain. The cluster token reads every run without a store read.
pub(super) async fn check_run(
    plane: &ControlPlane,
    who: &Principal,
    name: &str,
    doing: &str,
) -> Result<(), Refusal> {
    who.as_client(doing)?;
    if who.project.is_some() {
        let run = plane
            .inner
            .store
            .run_by_name(name)
            .await
            .map_err(unknown_run)?;
        who.check_run(&run)?;
    }
    Ok(())
}

async fn submit(
    State(plane): State<ControlPlane>,
    Extension(who): Extension<Principal>,
    body: Bytes,
) -> Response {
    let sub = match rmp_serde::from_slice::<RunSubmission>(&body) {
        Ok(s) => s,
        Err(e) => return refuse(bad(format!("bad run submission: {e}"))),
    };
    let checked = async {
        who.as_client("starting a run")?;
        if let Some(of) = &sub.rerun {
            check_run(&plane, &who, &of.run, "rerunning a run").await?;
        }
        plane.submit(sub, &who).await
    };
    reply(checked.await)
}

#[derive(Deserialize)]
struct ShowQuery {
    wait_ms: Option<u64>,
}

async fn show(
    State(plane): State<ControlPlane>,
    Extension(who): Extension<Principal>,
    Path(name): Path<String>,
    Query(q): Query<ShowQuery>,
) -> Response {
    let wait = Duration::from_millis(q.wait_ms.unwrap_or(0).min(30_000));
    let shown = async {
        check_run(&plane, &who, &name, "reading a run").await?;
        plane.show(&name, wait).await
    };
    reply(shown.await)
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ListQuery {
    limit: Option<u32>,
    status: Option<String>,
    name: Option<String>,
}

async fn list(
    State(plane): State<ControlPlane>,
    Extension(who): Extension<Principal>,
    Query(q): Query<ListQuery>,
) -> Response {
    let listed = async {
        who.as_client("listing runs")?;
        plane.list(q, &who).await
    };
    reply(listed.await)
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct PageQuery {
    offset: Option<u64>,
    limit: Option<u32>,
    /// `1`: each action with its payloads.
    with_io: Option<u8>,
}

async fn actions(
    State(plane): State<ControlPlane>,
    Extension(who): Extension<Principal>,
    Path(name): Path<String>,
    Query(q): Query<PageQuery>,
) -> Response {
    if let Err(r) = check_run(&plane, &who, &name, "reading a run's actions").await {
        return refuse(r);
    }
    let store = &plane.inner.store;
    let page = Page {
        offset: q.offset.unwrap_or(0).min(i64::MAX as u64),
        limit: q.limit.unwrap_or(200).min(10_000),
    };
    if q.with_io.is_some_and(|w| w != 0) {
        return reply(super::inspect::actions_with_io(&plane.inner, &name, page).await);
    }
    let list = async {
        let run = store.run_by_name(&name).await.map_err(unknown_run)?;
        store.list_actions(run.id, page).await.map_err(internal)
    };
    reply(list.await)
}

async fn action(
    State(plane): State<ControlPlane>,
    Extension(who): Extension<Principal>,
    Path((name, id)): Path<(String, String)>,
) -> Response {
    let inner = &plane.inner;
    let view = async {
        check_run(&plane, &who, &name, "reading an action").await?;
        let run = inner.store.run_by_name(&name).await.map_err(unknown_run)?;
        let unknown = || {
            (
                StatusCode::NOT_FOUND,
                weir_store::Error::UnknownAction {
                    run: name.clone(),
                    action: id.clone(),
                }
                .to_string(),
            )
        };
        let aid = ActionId::parse(&id).ok_or_else(unknown)?;
        let rec = inner
            .store
            .action(run.id, aid)
            .await
            .map_err(internal)?
            .ok_or_else(unknown)?;
        let load = |p: Option<weir_store::Payload>| async move {
            match p {
                None => Ok(None),
                Some(p) => inner
                    .payloads
                    .load(&p)
                    .await
                    .map(|b| Some(serde_bytes::ByteBuf::from(b.to_vec())))
                    .map_err(internal),
            }
        };
        let inputs = load(rec.inputs.clone()).await?;
        let output = match rec.status {
            weir_core::ActionStatus::Succeeded => load(rec.output.clone()).await?,
            _ => None,
        };
        let failed_attempts = inner
            .store
            .failed_attempts(run.id, aid)
            .await
            .map_err(internal)?;
        Ok(ActionView {
            action: rec,
            inputs,
            output,
            failed_attempts,
            store: inner.payloads.blobs().ok().map(|b| b.url().to_string()),
        })
    };
    reply(view.await)
}

async fn logs(
    State(plane): State<ControlPlane>,
    Extension(who): Extension<Principal>,
    Path((name, id)): Path<(String, String)>,
) -> Response {
    let logs = async {
        check_run(&plane, &who, &name, "reading an action's logs").await?;
        super::inspect::attempt_logs(&plane.inner, &name, &id).await
    };
    reply(logs.await)
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct CacheQuery {
    task: Option<String>,
    limit: Option<u32>,
}

async fn cache_list(
    State(plane): State<ControlPlane>,
    Extension(who): Extension<Principal>,
    Query(q): Query<CacheQuery>,
) -> Response {
    if let Err(r) = who.as_client("listing the cache") {
        return refuse(r);
    }
    let limit = q.limit.unwrap_or(100).min(10_000);
    let entries = plane
        .inner
        .store
        .list_cache(q.task.as_deref(), who.project.as_deref(), limit)
        .await;
    reply(
        entries
            .map_err(internal)
            .map(|entries| entries.into_iter().map(CacheView::from).collect::<Vec<_>>()),
    )
}

async fn cache_clear(
    State(plane): State<ControlPlane>,
    Extension(who): Extension<Principal>,
    Query(q): Query<CacheQuery>,
) -> Response {
    if let Err(r) = who.as_cluster("clearing the cache") {
        return refuse(r);
    }
    if q.limit.is_some() {
        return refuse(bad("cache clear takes no limit"));
    }
    reply(
        plane
            .inner
            .store
            .clear_cache(q.task.as_deref())
            .await
            .map_err(internal),
    )
}

async fn abort(
    State(plane): State<ControlPlane>,
    Extension(who): Extension<Principal>,
    Path(name): Path<String>,
) -> Response {
    let aborted = async {
        check_run(&plane, &who, &name, "aborting a run").await?;
        plane.abort(&name).await
    };
    reply(aborted.await)
}

async fn metrics(
    State(plane): State<ControlPlane>,
    Extension(who): Extension<Principal>,
) -> Response {
    if let Err(r) = who.as_cluster("reading the metrics") {
        return refuse(r);
    }
    match plane.metrics().await {
        Ok(text) => (
            StatusCode::OK,
            [("content-type", "text/plain; version=0.0.4")],
            text,
        )
            .into_response(),
        Err(r) => refuse(r),
    }
}

/// How long `/v1/health` waits for the database before it answers 503.
const HEALTH_TIMEOUT: Duration = Duration::from_secs(3);

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct HealthQuery {
    /// `1`: only that this replica answers authenticated requests (a liveness check, which a
    /// database outage must not fail: restarting the replica would not mend it).
    live: Option<u8>,
}

/// Whether this replica can serve: it reads a row of the store (a PostgreSQL round trip),
/// answering 503 when that fails or takes longer than [`HEALTH_TIMEOUT`]. Behind the cluster
/// token like every route; what it says names no data.
async fn health(State(plane): State<ControlPlane>, Query(q): Query<HealthQuery>) -> Response {
    if q.live.is_some_and(|l| l != 0) {
        return (StatusCode::OK, "ok: serving\n").into_response();
    }
    let started = Instant::now();
    let read = plane.inner.store.setting(weir_blob::BLOB_URL_SETTING);
    match tokio::time::timeout(HEALTH_TIMEOUT, read).await {
        Ok(Ok(_)) => (
            StatusCode::OK,
            format!(
                "ok: the database answered in {} ms\n",
                started.elapsed().as_millis()
            ),
        )
            .into_response(),
        Ok(Err(e)) => refuse((
            StatusCode::SERVICE_UNAVAILABLE,
            format!("the database did not answer: {e}"),
        )),
        Err(_) => refuse((
            StatusCode::SERVICE_UNAVAILABLE,
            format!(
                "the database did not answer within {} s",
                HEALTH_TIMEOUT.as_secs()
            ),
        )),
    }
}

pub(super) fn unknown_run(e: weir_store::Error) -> Refusal {
    match e {
        weir_store::Error::UnknownRun(_) => (StatusCode::NOT_FOUND, e.to_string()),
        e => internal(e),
    }
}

impl ControlPlane {
    /// Runs, newest first, each with why it waits (if it does).
    async fn list(&self, q: ListQuery, who: &Principal) -> Result<Vec<RunView>, Refusal> {
        let status = match q.status.as_deref() {
            Some(s) => {
                Some(RunStatus::parse(s).ok_or_else(|| bad(format!("unknown status {s:?}")))?)
            }
            None => None,
        };
        let filter = RunFilter {
            status,
            name_contains: q.name,
            limit: Some(q.limit.unwrap_or(100).min(10_000)),
            project: who.project.clone(),
            domain: who.domain.clone(),
        };
        let runs = self
            .inner
            .store
            .list_runs(&filter)
            .await
            .map_err(internal)?;
        // Read once for every running run's "waiting for workers".
        let workers = match runs.iter().any(|r| r.status == RunStatus::Running) {
            true => self.inner.store.workers().await.map_err(internal)?,
            false => Vec::new(),
        };
        let mut views = Vec::with_capacity(runs.len());
        for r in runs {
            let mut view = RunView {
                name: r.name,
                task: r.task,
                status: r.status.as_str().into(),
                created_at: r.created_at,
                ended_at: r.ended_at,
                actions: r.actions,
                ..RunView::default()
            };
            if r.status == RunStatus::Running {
                let record = self
                    .inner
                    .store
                    .run_by_name(&view.name)
                    .await
                    .map_err(internal)?;
                view.version = record.context["cluster_version"]
                    .as_str()
                    .unwrap_or_default()
                    .to_string();
                view.waiting = self.waiting_for(&record, &view.version, &workers).await;
            }
            views.push(view);
        }
        Ok(views)
    }

    /// A run, waiting up to `wait` for it to end.
    async fn show(&self, name: &str, wait: Duration) -> Result<RunView, Refusal> {
        let until = Instant::now() + wait;
        loop {
            let ended = self.inner.run_ended.notified();
            tokio::pin!(ended);
            ended.as_mut().enable();
            let record = self
                .inner
                .store
                .run_by_name(name)
                .await
                .map_err(unknown_run)?;
            let left = until.saturating_duration_since(Instant::now());
            if record.status.is_terminal() || left.is_zero() {
                return self.view(record, true).await;
            }
            // Woken when a run ends here; runs ending on other replicas are polled.
            let _ = tokio::time::timeout(left.min(Duration::from_millis(50)), ended).await;
        }
    }

    pub(super) async fn view(
        &self,
        record: RunRecord,
        with_output: bool,
    ) -> Result<RunView, Refusal> {
        let inner = &self.inner;
        let filter = RunFilter {
            name_contains: Some(record.name.clone()),
            limit: Some(1000),
            ..RunFilter::default()
        };
        let actions = inner
            .store
            .list_runs(&filter)
            .await
            .map_err(internal)?
            .into_iter()
            .find(|r| r.name == record.name)
            .map(|r| r.actions)
            .unwrap_or_default();
        let version = record.context["cluster_version"]
            .as_str()
            .unwrap_or_default()
            .to_string();
        let output = match (&record.output, with_output) {
            (Some(p), true) => Some(serde_bytes::ByteBuf::from(
                inner.payloads.load(p).await.map_err(internal)?.to_vec(),
            )),
            _ => None,
        };
        let waiting = match record.status {
            RunStatus::Running => {
                let workers = inner.store.workers().await.map_err(internal)?;
                self.waiting_for(&record, &version, &workers).await
            }
            _ => None,
        };
        Ok(RunView {
            name: record.name,
            task: record.task,
            status: record.status.as_str().into(),
            created_at: record.created_at,
            ended_at: record.ended_at,
            actions,
            output,
            error: record.error,
            version,
            waiting,
        })
    }

    /// "waiting for workers ..." when no worker of `version` for the root task's environment
    /// was seen within three lease times.
    async fn waiting_for(
        &self,
        run: &RunRecord,
        version: &str,
        workers: &[weir_store::WorkerRecord],
    ) -> Option<String> {
        let inner = &self.inner;
        let specs = inner.specs(version).await.ok()?;
        let env = &specs.get(&run.task)?.env;
        let (project, _) = super::access::project_domain(&run.context);
        let queue_env = spec::qualified(project, env);
        let fresh = now_us() - 3 * inner.options.lease_ttl.as_micros() as i64;
        let live = workers
            .iter()
            .any(|w| w.version == version && w.env == queue_env && w.seen_at >= fresh);
        (!live).then(|| format!("waiting for workers of version {version} for environment {env}"))
    }

    /// Aborts a running run: its live actions are cancelled and it ends `aborted`.
    async fn abort(&self, name: &str) -> Result<RunView, Refusal> {
        let inner = &self.inner;
        let record = inner.store.run_by_name(name).await.map_err(unknown_run)?;
        if record.status.is_terminal() {
            return Err((
                StatusCode::CONFLICT,
                format!("run {name} has already ended ({})", record.status.as_str()),
            ));
        }
        let now = now_us();
        let failure = Failure {
            action_id: ActionId::ROOT.to_string(),
            task: record.task.clone(),
            kind: weir_core::ErrorKind::Cancelled,
            message: "the run was aborted".into(),
            chain: vec![],
        };
        inner
            .commit(vec![
                WriteOp::CancelLiveActions {
                    run: record.id,
                    error: failure.clone(),
                    ended_at: now,
                },
                WriteOp::FinishRun {
                    run: record.id,
                    status: RunStatus::Aborted,
                    output: None,
                    error: Some(failure),
                    ended_at: now,
                },
            ])
            .await
            .map_err(internal)?;
        inner.run_ended.notify_waiters();
        let record = inner.store.run_by_name(name).await.map_err(unknown_run)?;
        self.view(record, false).await
    }
}
