//! The JSON API (`/api/...`). See `API.md` for the reference.

use std::collections::HashMap;

use axum::Json;
use axum::Router;
use axum::extract::rejection::{PathRejection, QueryRejection};
use axum::extract::{self, Query, State};
use axum::http::StatusCode;
use axum::routing::get;
use serde_json::{Value, json};
use weir_core::ActionId;
use weir_store::{UiRunFilter, now_us};

use crate::app::{ApiError, ApiResult, App, Source, action_json, duration, group_json, run_json};
use crate::params::{Params, action_id};
use crate::payload::payload_json;
use crate::{MAX_PAGE, Options, assets, events};

/// The UI and API reading from `source`, under `base` (`""`, or a path like `/ui` without the
/// trailing slash), without the `Host` check or authentication (`crate::router` and
/// `crate::token_router` add them). Under a `base`, unknown paths below it are answered 404 by
/// a route (not a fallback), so that the router merges into another one.
pub(crate) fn router(source: Source, options: Options, base: &str) -> Router {
    let app = App::new(source, options);
    let at = |path: &str| format!("{base}{path}");
    let router = Router::new()
        .route(&at("/"), get(assets::index))
        .route(&at("/assets/{file}"), get(assets::file))
        .route(
            &at("/favicon.ico"),
            get(|| async { StatusCode::NO_CONTENT }),
        )
        .route(&at("/api"), get(api_index))
        .route(&at("/api/runs"), get(list_runs))
        .route(&at("/api/runs/{run}"), get(run_detail))
        .route(&at("/api/runs/{run}/events"), get(events::run_events))
        .route(&at("/api/runs/{run}/timeline"), get(timeline))
        .route(&at("/api/runs/{run}/utilization"), get(utilization))
        .route(&at("/api/runs/{run}/actions/{action}"), get(action_detail))
        .route(&at("/api/runs/{run}/tasks"), get(run_tasks))
        .route(
            &at("/api/runs/{run}/actions/{action}/children"),
            get(children),
        )
        .route(
            &at("/api/runs/{run}/actions/{action}/groups/{group}"),
            get(group_members),
        );
    let router = if base.is_empty() {
        router.fallback(not_found)
    } else {
        // The page's relative links (`assets/...`, `api/...`) need the trailing slash.
        let index = at("/");
        router
            .route(
                base,
                get(move || async move { axum::response::Redirect::permanent(&index) }),
            )
            .route(&at("/{*rest}"), get(not_found))
    };
    router.with_state(app)
}

type QueryMap = Result<Query<HashMap<String, String>>, QueryRejection>;
type PathArgs<T> = Result<extract::Path<T>, PathRejection>;

fn path_args<T>(p: PathArgs<T>) -> Result<T, ApiError> {
    p.map(|extract::Path(t)| t)
        .map_err(|e| ApiError::bad_request(format!("malformed path: {e}")))
}

async fn not_found(uri: axum::http::Uri) -> ApiError {
    ApiError::not_found(format!("no such endpoint: {} (see /api)", uri.path()))
}

async fn api_index() -> Json<Value> {
    Json(json!({
        "endpoints": [
            "GET /api/runs?status=&name=&offset=&limit=",
            "GET /api/runs/{run}",
            "GET /api/runs/{run}/events (text/event-stream)",
            "GET /api/runs/{run}/timeline?offset=&limit=&buckets=",
            "GET /api/runs/{run}/utilization?buckets=",
            "GET /api/runs/{run}/actions/{action}",
            "GET /api/runs/{run}/actions/{action}/children?offset=&limit=",
            "GET /api/runs/{run}/actions/{action}/groups/{group}?status=&offset=&limit=",
        ],
        "max_page": MAX_PAGE,
        "docs": "crates/weir-server/API.md",
    }))
}

async fn list_runs(State(app): State<App>, q: QueryMap) -> ApiResult {
    let p = Params::new(q, &["status", "name", "offset", "limit"])?;
    let filter = UiRunFilter {
        status: p.run_status()?,
        name_contains: p.text("name")?,
        page: p.page()?,
    };
    let page = filter.page;
    let (runs, total) = app.read(move |r| r.runs(&filter)).await?;
    let mut rows = Vec::with_capacity(runs.len());
    for run in &runs {
        let counts = app.counts(run).await?;
        rows.push(run_json(run, &counts.0, counts.1));
    }
    Ok(Json(json!({
        "runs": rows,
        "total": total,
        "offset": page.offset,
        "limit": page.limit,
    })))
}

async fn run_detail(State(app): State<App>, path: PathArgs<String>, q: QueryMap) -> ApiResult {
    let name = path_args(path)?;
    Params::new(q, &[])?;
    let run = app.run(name).await?;
    let counts = app.counts(&run).await?;
    let run_id = run.id;
    let root = app
        .read(move |r| r.action(run_id, ActionId::ROOT))
        .await?
        .map(|d| action_json(&d.action));
    let mut doc = run_json(&run, &counts.0, counts.1);
    doc["root"] = json!(root);
    doc["context"] = serde_json::from_str(&run.context).unwrap_or(Value::Null);
    doc["error"] = json!(run.error);
    doc["now"] = json!(now_us());
    Ok(Json(doc))
}

async fn children(
    State(app): State<App>,
    path: PathArgs<(String, String)>,
    q: QueryMap,
) -> ApiResult {
    let (name, raw_id) = path_args(path)?;
    let p = Params::new(q, &["offset", "limit"])?;
    let page = p.page()?;
    let id = action_id(&raw_id)?;
    let run = app.run(name).await?;
    let parent_task = app.task_of(&run, id).await?;
    let groups = app.groups(&run, id).await?;
    let ungrouped = groups
        .iter()
        .find(|g| g.group.is_none())
        .map_or(0, |g| g.count);
    let rows = if page.offset < ungrouped {
        let run_id = run.id;
        app.read(move |r| r.children(run_id, id, None, None, page))
            .await?
    } else {
        Vec::new()
    };
    let named: Vec<Value> = groups
        .iter()
        .filter(|g| g.group.is_some())
        .take(MAX_PAGE as usize)
        .map(group_json)
        .collect();
    let named_total = groups.iter().filter(|g| g.group.is_some()).count();
    Ok(Json(json!({
        "run": run.name,
        "parent": id.to_string(),
        "parent_task": parent_task,
        "groups": named,
        "groups_total": named_total,
        "ungrouped": ungrouped,
        "offset": page.offset,
        "limit": page.limit,
        "actions": rows.iter().map(action_json).collect::<Vec<_>>(),
    })))
}

async fn group_members(
    State(app): State<App>,
    path: PathArgs<(String, String, String)>,
    q: QueryMap,
) -> ApiResult {
    let (name, raw_id, group) = path_args(path)?;
    let p = Params::new(q, &["status", "offset", "limit"])?;
    let page = p.page()?;
    let status = p.action_status()?;
    let id = action_id(&raw_id)?;
    let run = app.run(name).await?;
    app.task_of(&run, id).await?;
    let groups = app.groups(&run, id).await?;
    let Some(g) = groups
        .iter()
        .find(|g| g.group.as_deref() == Some(group.as_str()))
    else {
        return Err(ApiError::not_found(format!(
            "action {id} of run {:?} has no group {group:?}",
            run.name
        )));
    };
    let total = match status {
        Some(s) => g.counts.0[s.code() as usize],
        None => g.count,
    };
    let rows = if page.offset < total {
        let (run_id, grp) = (run.id, group.clone());
        app.read(move |r| r.children(run_id, id, Some(&grp), status, page))
            .await?
    } else {
        Vec::new()
    };
    Ok(Json(json!({
        "run": run.name,
        "parent": id.to_string(),
        "group": group,
        "status": status.map(|s| s.as_str()),
        "total": total,
        "counts": g.counts.by_name(),
        "offset": page.offset,
        "limit": page.limit,
        "actions": rows.iter().map(action_json).collect::<Vec<_>>(),
    })))
}

async fn action_detail(
    State(app): State<App>,
    path: PathArgs<(String, String)>,
    q: QueryMap,
) -> ApiResult {
    let (name, raw_id) = path_args(path)?;
    Params::new(q, &[])?;
    let id = action_id(&raw_id)?;
    // The row holds the inline payloads: it is read under the cap too.
    let _slot = app.payloads().enter().await?;
    let run = app.run(name).await?;
    let run_id = run.id;
    let detail = app
        .read(move |r| r.action(run_id, id))
        .await?
        .ok_or_else(|| {
            ApiError::from(weir_store::Error::UnknownAction {
                run: run.name.clone(),
                action: raw_id.clone(),
            })
        })?;
    let attempts = app
        .read(move |r| r.failed_attempts(run_id, id, MAX_PAGE))
        .await?;
    let mut doc = action_json(&detail.action);
    let a = &detail.action.record;
    doc["run"] = json!(run.name);
    doc["error"] = json!(a.error);
    doc["children"] = json!(detail.children);
    doc["inputs"] = payload_json(&app, detail.inputs.clone()).await;
    doc["output"] = payload_json(&app, detail.output.clone()).await;
    doc["failed_attempts"] = json!(attempts);
    doc["overhead"] = json!({
        "queue_wait_us": duration(Some(a.queued_at), a.started_at),
        "run_us": duration(a.started_at, a.ended_at),
        "phases": weir_store::advise::shown_phases(a).map(|p| p.to_json()),
    });
    let logs = app.read(move |r| r.attempt_logs(run_id, id)).await?;
    match logs {
        None => {
            doc["logs"] = Value::Null;
            doc["logs_note"] = json!("no logs captured");
        }
        Some(logs) => {
            doc["logs_note"] = json!(if logs.is_empty() {
                "no attempt of this action printed anything"
            } else {
                ""
            });
            doc["logs"] = Value::Array(logs.iter().map(log_json).collect());
        }
    }
    Ok(Json(doc))
}

fn buckets(p: &Params) -> Result<usize, ApiError> {
    Ok(p.number("buckets", 200, 10, 2000)? as usize)
}

async fn timeline(State(app): State<App>, path: PathArgs<String>, q: QueryMap) -> ApiResult {
    let name = path_args(path)?;
    let p = Params::new(q, &["offset", "limit", "buckets"])?;
    let page = p.page()?;
    let buckets = buckets(&p)?;
    let run = app.run(name).await?;
    let act = app.activity(&run, buckets).await?;
    let lanes: Vec<_> = act
        .lanes
        .iter()
        .skip(page.offset.min(usize::MAX as u64) as usize)
        .take(page.limit as usize)
        .cloned()
        .collect();
    let parents: Vec<ActionId> = lanes.iter().map(|l| l.parent).collect();
    let run_id = run.id;
    let parent_tasks = app.read(move |r| r.tasks_of(run_id, &parents)).await?;
    let lanes_json: Vec<Value> = lanes
        .iter()
        .zip(parent_tasks)
        .map(|(l, parent_task)| {
            let root = l.action == Some(ActionId::ROOT) && l.parent == ActionId::ROOT;
            json!({
                "parent": l.parent.to_string(),
                "parent_task": if root { None } else { parent_task },
                "group": l.group,
                "task": l.task,
                "action": l.action.map(|a| a.to_string()),
                "total": l.count,
                "counts": l.counts.by_name(),
                "queued_at": l.queued_at,
                "started_at": l.started_at,
                "ended_at": l.ended_at,
            })
        })
        .collect();
    Ok(Json(json!({
        "run": run.name,
        "t0": act.t0,
        "t1": act.t1,
        "bucket_us": act.bucket_us,
        "counts": act.counts.by_name(),
        "total": act.counts.total(),
        "lanes_total": act.lanes.len(),
        "offset": page.offset,
        "limit": page.limit,
        "lanes": lanes_json,
    })))
}

async fn utilization(State(app): State<App>, path: PathArgs<String>, q: QueryMap) -> ApiResult {
    let name = path_args(path)?;
    let p = Params::new(q, &["buckets"])?;
    let buckets = buckets(&p)?;
    let run = app.run(name).await?;
    let act = app.activity(&run, buckets).await?;
    let width = act.bucket_us as f64;
    let envs: Vec<Value> = act
        .envs
        .iter()
        .map(|u| {
            let running: Vec<f64> = u
                .busy_us
                .iter()
                .map(|b| (b / width * 100.0).round() / 100.0)
                .collect();
            json!({
                "env": u.env,
                "actions": u.actions,
                "busy_us": u.total_busy_us.round() as i64,
                "mean_running": running,
                "peak_running": running.iter().cloned().fold(0.0, f64::max),
            })
        })
        .collect();
    Ok(Json(json!({
        "run": run.name,
        "t0": act.t0,
        "t1": act.t1,
        "bucket_us": act.bucket_us,
        "buckets": buckets,
        "envs": envs,
    })))
}

/// Most bytes of one attempt's log a page shows (its last ones; `get logs --server` has all).
const LOG_PREVIEW: usize = 256 << 10;

/// One attempt's log for the action page: its last [`LOG_PREVIEW`] bytes, from a whole line.
fn log_json(l: &weir_store::AttemptLog) -> Value {
    let (text, cut) = if l.text.len() > LOG_PREVIEW {
        let tail = &l.text[l.text.len() - LOG_PREVIEW..];
        let start = tail.iter().position(|b| *b == b'\n').map_or(0, |i| i + 1);
        (&tail[start..], l.text.len() - tail.len() + start)
    } else {
        (&l.text[..], 0)
    };
    json!({
        "attempt": l.attempt,
        "worker": l.worker,
        "pid": l.pid,
        "env": l.env,
        "ok": l.ok,
        "started_at": l.started_at,
        "ended_at": l.ended_at,
        "dropped_bytes": l.dropped + cut as u64,
        "overlapping": l.overlapping,
        "text": String::from_utf8_lossy(text),
    })
}

/// Actions summarized per page in `/runs/{run}/tasks`.
const TASKS_PAGE: u32 = 10_000;

/// `/api/runs/{run}/tasks`: per task, where its actions' time went (each phase's p50, p95 and
/// mean), and the advice `weir advise` gives for the run (SPEC §9.3).
async fn run_tasks(State(app): State<App>, path: PathArgs<String>, q: QueryMap) -> ApiResult {
    let name = path_args(path)?;
    Params::new(q, &[])?;
    let run = app.run(name).await?;
    let run_id = run.id;
    let mut summarizer = weir_store::advise::Summarizer::default();
    let mut offset = 0;
    loop {
        let page = app
            .read(move |r| r.actions_page(run_id, offset, TASKS_PAGE))
            .await?;
        summarizer.add(&page);
        if (page.len() as u32) < TASKS_PAGE {
            break;
        }
        offset += page.len() as u64;
    }
    let tasks = summarizer.finish();
    let facts = weir_store::advise::RunFacts {
        duration_us: run.ended_at.map(|e| e - run.created_at),
        ..Default::default()
    };
    let advice = weir_store::advise::advise(&tasks, &facts);
    Ok(Json(json!({
        "run": run.name,
        "phase_names": weir_core::phases::Phases::NAMES,
        "tasks": tasks,
        "advice": advice,
    })))
}
