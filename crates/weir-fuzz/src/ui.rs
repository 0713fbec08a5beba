//! The web UI's query and path parameters, through the real router (`weir_server::router`)
//! over a state directory with real runs, so that parameters that pass the checks reach the
//! read model's queries.

use std::path::PathBuf;
use std::sync::{LazyLock, OnceLock};

use axum::Router;
use axum::body::Body;
use axum::http::{Request, StatusCode, Uri};
use http_body_util::BodyExt;
use tower::ServiceExt;
use weir::prelude::*;

static UI: LazyLock<TaskEnvironment> = LazyLock::new(|| TaskEnvironment::new("fzui"));

#[weir::task(env = UI)]
async fn square(x: u64) -> Result<u64> {
    if x % 10 == 7 {
        return Err(Error::non_recoverable(format!("item {x} is bad")));
    }
    Ok(x * x)
}

#[weir::task(env = UI)]
async fn measure(data: Vec<u64>) -> Result<u64> {
    Ok(data.len() as u64)
}

#[weir::task(env = UI)]
async fn root(n: u64) -> Result<u64> {
    let grouped = weir::map(square, 0..n)
        .group("squares")
        .concurrency(8)
        .await;
    let ungrouped = weir::map(square, 100..104).await;
    // an input over the 64 KiB inline limit is offloaded to the object store
    let big = measure((0..10_000).map(|i| i << 33).collect()).await?;
    Ok(grouped
        .iter()
        .chain(&ungrouped)
        .filter(|r| r.is_ok())
        .count() as u64
        + big)
}

#[weir::task(env = UI)]
async fn broken(x: u64) -> Result<u64> {
    square(x).await
}

/// The runs in the state directory.
pub const RUNS: [&str; 3] = ["big", "bad", "small-1"];
/// The group of `big`'s root.
pub const GROUP: &str = "squares";

/// The endpoints by the low bits of the selector byte (`{run}`, `{action}` and `{group}` are
/// filled in from the input); the last takes the whole path from the input.
pub const ENDPOINTS: [&str; 10] = [
    "/api/runs",
    "/api/runs/{run}",
    "/api/runs/{run}/events",
    "/api/runs/{run}/timeline",
    "/api/runs/{run}/utilization",
    "/api/runs/{run}/actions/{action}",
    "/api/runs/{run}/actions/{action}/children",
    "/api/runs/{run}/actions/{action}/groups/{group}",
    "/api",
    "",
];

struct State {
    dir: PathBuf,
    runtime: tokio::runtime::Runtime,
    router: Router,
    /// Action ids of `big`: the root and some children (grouped and not).
    actions: Vec<String>,
}

static STATE: OnceLock<State> = OnceLock::new();

/// Removes the state directory when the process exits (libFuzzer ends with `exit`, which
/// drops no statics).
extern "C" fn remove_state() {
    if let Some(s) = STATE.get() {
        let _ = std::fs::remove_dir_all(&s.dir);
    }
}

fn state() -> &'static State {
    STATE.get_or_init(|| {
        let dir = tempfile::Builder::new()
            .prefix("weir-fuzz-ui-")
            .tempdir()
            .expect("a temporary directory")
            .keep();
        fill(&dir);
        #[allow(unsafe_code)]
        // SAFETY: registers a plain function without arguments, as atexit requires.
        unsafe {
            libc::atexit(remove_state);
        }
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("a tokio runtime");
        let router = weir_server::router(&dir, ADDR.parse().expect("an address"));
        let mut actions = vec!["a0".to_string()];
        for uri in [
            "/api/runs/big/actions/a0/children",
            "/api/runs/big/actions/a0/groups/squares?limit=3",
        ] {
            let (status, body) = runtime.block_on(get(&router, uri.parse().expect("a URI")));
            assert_eq!(status, StatusCode::OK, "{uri}: {body}");
            let rows = body["actions"].as_array().cloned().unwrap_or_default();
            actions.extend(
                rows.iter()
                    .filter_map(|a| a["id"].as_str().map(String::from)),
            );
        }
        assert!(actions.len() > 3, "children of big's root: {actions:?}");
        State {
            dir,
            runtime,
            router,
            actions,
        }
    })
}

/// Runs `big` (a map with a group, failed children and an offloaded input), `bad` (failed)
/// and `small-1` into `dir`.
fn fill(dir: &std::path::Path) {
    let dir = dir.to_path_buf();
    std::thread::spawn(move || {
        let rt = tokio::runtime::Runtime::new().expect("a tokio runtime");
        rt.block_on(async {
            let runner = weir::Runner::embedded(&dir).await.expect("an engine");
            let named = |name: &str| runner.with_context(RunContext::new().name(name));
            let big = named("big").run(root(30)).await.expect("run big");
            big.wait().await.expect("big succeeds");
            let bad = named("bad").run(broken(7)).await.expect("run bad");
            assert!(bad.wait().await.is_err());
            let small = named("small-1").run(square(3)).await.expect("run small-1");
            small.wait().await.expect("small-1 succeeds");
            runner.engine().flush().expect("flush");
        })
    })
    .join()
    .expect("filling the state directory");
}

/// Action ids of run `big` the harness fills in (the root first).
pub fn known_actions() -> Vec<String> {
    state().actions.clone()
}

/// The address the harness's UI router believes it is served on.
const ADDR: &str = "127.0.0.1:8710";

async fn get(router: &Router, uri: Uri) -> (StatusCode, serde_json::Value) {
    let path = uri.path().to_string();
    // Addressed to the server (its Host check refuses any other name).
    let req = Request::get(uri)
        .header("host", ADDR)
        .body(Body::empty())
        .expect("a request");
    let res = router.clone().oneshot(req).await.expect("infallible");
    let status = res.status();
    if path.ends_with("/events") && status == StatusCode::OK {
        // An event stream: it has started, which is all the parameters decide.
        return (status, serde_json::Value::Null);
    }
    let bytes = res.into_body().collect().await.expect("a body").to_bytes();
    assert!(
        bytes.len() <= 1 << 20,
        "{path}: a {} byte answer is not one page",
        bytes.len()
    );
    let body = if path.starts_with("/api") {
        serde_json::from_slice(&bytes).unwrap_or_else(|e| {
            panic!(
                "{path}: {status} with a body that is not JSON ({e}): {}",
                String::from_utf8_lossy(&bytes)
            )
        })
    } else {
        serde_json::Value::Null
    };
    (status, body)
}

/// The first byte picks the endpoint (low nibble, see [`ENDPOINTS`]) and the run and action
/// used when the input names none (high nibble); the rest is `query\naction\nname`, where
/// `name` is the run (or, for the group endpoint, the group). The whole path and query for the
/// last endpoint.
pub fn ui_params(data: &[u8]) {
    let Some((&selector, rest)) = data.split_first() else {
        return;
    };
    let s = state();
    let endpoint = ENDPOINTS[(selector & 0x0f) as usize % ENDPOINTS.len()];
    let pick = (selector >> 4) as usize;
    let target: Vec<u8> = if endpoint.is_empty() {
        rest.to_vec()
    } else {
        let mut parts = rest.splitn(3, |b| *b == b'\n');
        let query = parts.next().unwrap_or_default();
        let action = parts.next().unwrap_or_default();
        let name = parts.next().unwrap_or_default();
        let default_action = s.actions[pick % s.actions.len()].as_bytes();
        let (run, group) = if endpoint.ends_with("{group}") {
            (RUNS[pick % RUNS.len()].as_bytes(), name)
        } else if name.is_empty() {
            (RUNS[pick % RUNS.len()].as_bytes(), GROUP.as_bytes())
        } else {
            (name, GROUP.as_bytes())
        };
        let action = if action.is_empty() {
            default_action
        } else {
            action
        };
        let mut t = endpoint
            .replace("{run}", "\u{1}")
            .replace("{action}", "\u{2}")
            .replace("{group}", "\u{3}")
            .into_bytes()
            .into_iter()
            .fold(Vec::new(), |mut t, b| {
                match b {
                    1 => t.extend_from_slice(run),
                    2 => t.extend_from_slice(action),
                    3 => t.extend_from_slice(group),
                    b => t.push(b),
                }
                t
            });
        if !query.is_empty() {
            t.push(b'?');
            t.extend_from_slice(query);
        }
        t
    };
    // What an HTTP client cannot send does not reach the router.
    let Ok(uri) = Uri::try_from(target) else {
        return;
    };
    if uri.scheme().is_some() || uri.authority().is_some() || !uri.path().starts_with('/') {
        return;
    }
    let shown = uri.to_string();
    let (status, body) = s.runtime.block_on(get(&s.router, uri));
    match status {
        StatusCode::OK => {}
        StatusCode::NO_CONTENT if shown.starts_with("/favicon.ico") => {}
        StatusCode::BAD_REQUEST | StatusCode::NOT_FOUND => {
            if shown.starts_with("/api") {
                assert!(
                    body["error"].as_str().is_some_and(|m| !m.is_empty()),
                    "{shown}: {status} without a message: {body}"
                );
            }
        }
        other => panic!("{shown}: {other} {body}"),
    }
}
