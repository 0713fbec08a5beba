//! The JSON API against a state directory filled by real runs of the embedded engine: paging,
//! folding into groups with counts, payloads, timeline and utilization, live events, and the
//! 400/404 answers.

use std::path::Path;
use std::sync::LazyLock;
use std::sync::OnceLock;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::http::{Request, StatusCode};
use http_body_util::BodyExt;
use serde_json::Value;
use tower::ServiceExt;
use weir::prelude::*;

static ENV: LazyLock<TaskEnvironment> = LazyLock::new(|| TaskEnvironment::new("t"));
static OTHER: LazyLock<TaskEnvironment> = LazyLock::new(|| TaskEnvironment::new("other"));

/// Children in the test map: more than two pages of the largest page size.
const CHILDREN: u64 = 1_200;

#[weir::task(env = ENV)]
async fn square(x: u64) -> Result<u64> {
    if x % 100 == 7 {
        return Err(Error::non_recoverable(format!("item {x} is bad")));
    }
    Ok(x * x)
}

#[weir::task(env = OTHER)]
async fn measure(data: Vec<u64>) -> Result<u64> {
    Ok(data.len() as u64)
}

static FLAKY_FAILED: AtomicBool = AtomicBool::new(false);

#[weir::task(env = OTHER, retries = 2)]
async fn flaky(x: u64) -> Result<u64> {
    if !FLAKY_FAILED.swap(true, Ordering::SeqCst) {
        return Err(Error::msg("first attempt fails"));
    }
    Ok(x + 1)
}

#[weir::task(env = ENV)]
async fn root(n: u64) -> Result<u64> {
    let squares = weir::map(square, 0..n).concurrency(50).await;
    let ok = squares.iter().filter(|r| r.is_ok()).count() as u64;
    // an input over the 64 KiB inline limit is offloaded to the object store
    let big = measure((0..10_000).map(|i| i << 33).collect()).await?;
    let retried = flaky(1).await?;
    Ok(ok + big + retried)
}

#[weir::task(env = ENV)]
async fn broken(x: u64) -> Result<u64> {
    square(x).await
}

/// A `weir::File` and a `weir::DataFrame` (two columns, 3 rows), passed by reference.
#[weir::task(env = ENV)]
async fn references() -> Result<(weir::File, weir::DataFrame)> {
    use std::sync::Arc;
    use weir::arrow::array::{Int64Array, RecordBatch, StringArray};
    use weir::arrow::schema::{DataType, Field, Schema};
    let file = weir::File::from_bytes(b"hello, reference").await?;
    let schema = Arc::new(Schema::new(vec![
        Field::new("k", DataType::Int64, false),
        Field::new("v", DataType::Utf8, true),
    ]));
    let batch = RecordBatch::try_new(
        schema.clone(),
        vec![
            Arc::new(Int64Array::from(vec![1, 2, 3])),
            Arc::new(StringArray::from(vec![Some("one"), None, Some("three")])),
        ],
    )
    .map_err(Error::msg)?;
    let frame = weir::DataFrame::from_batches(schema, [batch]).await?;
    Ok((file, frame))
}

static STATE: OnceLock<tempfile::TempDir> = OnceLock::new();

/// A state directory with runs `big` (a map of [`CHILDREN`]), `bad` (failed), `small-1..3` and
/// `refs` (data by reference).
fn state() -> &'static Path {
    STATE
        .get_or_init(|| {
            std::thread::spawn(|| {
                let rt = tokio::runtime::Runtime::new().unwrap();
                rt.block_on(async {
                    let dir = tempfile::tempdir().unwrap();
                    let runner = weir::Runner::embedded(dir.path()).await.unwrap();
                    let out = runner
                        .with_context(RunContext::new().name("big"))
                        .run(root(CHILDREN))
                        .await
                        .unwrap()
                        .wait()
                        .await
                        .unwrap();
                    assert_eq!(out, CHILDREN - CHILDREN / 100 + 10_000 + 2);
                    let failed = runner
                        .with_context(RunContext::new().name("bad"))
                        .run(broken(7))
                        .await
                        .unwrap()
                        .wait()
                        .await;
                    assert!(failed.is_err());
                    for i in 1..=3 {
                        runner
                            .with_context(RunContext::new().name(format!("small-{i}")))
                            .run(square(i))
                            .await
                            .unwrap()
                            .wait()
                            .await
                            .unwrap();
                    }
                    runner
                        .with_context(RunContext::new().name("refs"))
                        .run(references())
                        .await
                        .unwrap()
                        .wait()
                        .await
                        .unwrap();
                    runner.engine().flush().unwrap();
                    dir
                })
            })
            .join()
            .unwrap()
        })
        .path()
}

/// The address the in-process router is told it is served on; requests name it in `Host`.
const ADDR: &str = "127.0.0.1:8080";

fn app() -> Router {
    weir_server::router(state(), ADDR.parse().unwrap())
}

/// GET `uri`: status, JSON body (or the text as a JSON string), body size.
async fn get(app: &Router, uri: &str) -> (StatusCode, Value, usize) {
    let res = app
        .clone()
        .oneshot(
            Request::get(uri)
                .header("host", ADDR)
                .body(Body::empty())
                .unwrap(),
        )
        .await
        .unwrap();
    let status = res.status();
    let bytes = tokio::time::timeout(Duration::from_secs(20), res.into_body().collect())
        .await
        .expect("body within 20 s")
        .unwrap()
        .to_bytes();
    let body = serde_json::from_slice(&bytes)
        .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(&bytes).into_owned()));
    (status, body, bytes.len())
}

async fn ok(app: &Router, uri: &str) -> Value {
    let (status, body, size) = get(app, uri).await;
    assert_eq!(status, StatusCode::OK, "{uri}: {body}");
    assert!(size < 256 * 1024, "{uri}: {size} bytes is more than a page");
    body
}

async fn error(app: &Router, uri: &str, expected: StatusCode, needle: &str) {
    let (status, body, _) = get(app, uri).await;
    assert_eq!(status, expected, "{uri}: {body}");
    let message = body["error"].as_str().unwrap_or_default();
    assert!(
        message.contains(needle),
        "{uri}: {message:?} lacks {needle:?}"
    );
}

#[tokio::test]
async fn runs_are_listed_with_counts_filtered_and_paged() {
    let app = app();
    let all = ok(&app, "/api/runs").await;
    let names: Vec<&str> = all["runs"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["name"].as_str().unwrap())
        .collect();
    assert_eq!(
        names,
        ["refs", "small-3", "small-2", "small-1", "bad", "big"],
        "newest first"
    );
    assert_eq!(all["total"], 6);
    let big = &all["runs"][5];
    // root + children + measure + flaky
    assert_eq!(big["total"], CHILDREN + 3);
    assert_eq!(big["counts"]["failed"], CHILDREN / 100);
    assert_eq!(big["counts"]["succeeded"], CHILDREN + 3 - CHILDREN / 100);
    assert_eq!(big["status"], "succeeded");
    assert!(big["duration_us"].as_i64().unwrap() > 0);

    let failed = ok(&app, "/api/runs?status=failed").await;
    assert_eq!(failed["total"], 1);
    assert_eq!(failed["runs"][0]["name"], "bad");
    let page = ok(&app, "/api/runs?name=small&offset=1&limit=1").await;
    assert_eq!(page["total"], 3);
    assert_eq!(page["runs"].as_array().unwrap().len(), 1);
    assert_eq!(page["runs"][0]["name"], "small-2");

    let run = ok(&app, "/api/runs/big").await;
    assert_eq!(run["root"]["id"], "a0");
    assert_eq!(run["root"]["task"], "t.root");
    assert_eq!(run["root"]["has_children"], true);
    assert_eq!(run["total"], CHILDREN + 3);

    error(
        &app,
        "/api/runs?status=done",
        StatusCode::BAD_REQUEST,
        "not a run status",
    )
    .await;
    error(
        &app,
        "/api/runs?limit=501",
        StatusCode::BAD_REQUEST,
        "from 1 to 500",
    )
    .await;
    error(
        &app,
        "/api/runs?offset=-1",
        StatusCode::BAD_REQUEST,
        "offset",
    )
    .await;
    error(
        &app,
        "/api/runs?sort=name",
        StatusCode::BAD_REQUEST,
        "unknown parameter \"sort\"",
    )
    .await;
    error(
        &app,
        "/api/runs/nope",
        StatusCode::NOT_FOUND,
        "unknown run \"nope\"",
    )
    .await;
    error(
        &app,
        "/api/nothing",
        StatusCode::NOT_FOUND,
        "no such endpoint",
    )
    .await;
}

#[tokio::test]
async fn children_fold_into_groups_whose_members_page() {
    let app = app();
    let children = ok(&app, "/api/runs/big/actions/a0/children").await;
    assert_eq!(children["parent_task"], "t.root");
    let groups = children["groups"].as_array().unwrap();
    assert_eq!(groups.len(), 1, "the map is one folded row: {groups:?}");
    assert_eq!(groups[0]["group"], "square_map");
    assert_eq!(groups[0]["total"], CHILDREN);
    assert_eq!(groups[0]["counts"]["failed"], CHILDREN / 100);
    assert_eq!(children["ungrouped"], 2);
    let singles: Vec<&str> = children["actions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a["task"].as_str().unwrap())
        .collect();
    assert_eq!(singles, ["other.measure", "other.flaky"]);

    let base = "/api/runs/big/actions/a0/groups/square_map";
    let first = ok(&app, &format!("{base}?limit=500")).await;
    let rows = first["actions"].as_array().unwrap();
    assert_eq!(rows.len(), 500);
    assert_eq!(first["total"], CHILDREN);
    let seqs: Vec<i64> = rows.iter().map(|r| r["seq"].as_i64().unwrap()).collect();
    assert!(seqs.windows(2).all(|w| w[0] < w[1]), "creation order");
    assert!(
        rows.iter()
            .all(|r| r["group"] == "square_map" && r["parent"] == "a0")
    );
    let row = &rows[0];
    for field in [
        "id",
        "status",
        "attempts",
        "queue_us",
        "run_us",
        "cache_hit",
        "recovered",
        "kind",
    ] {
        assert!(!row[field].is_null(), "row has {field}: {row}");
    }
    let last = ok(&app, &format!("{base}?offset=1000&limit=500")).await;
    assert_eq!(
        last["actions"].as_array().unwrap().len(),
        (CHILDREN - 1000) as usize
    );
    let past = ok(&app, &format!("{base}?offset=5000")).await;
    assert!(past["actions"].as_array().unwrap().is_empty());
    let failed = ok(&app, &format!("{base}?status=failed&limit=500")).await;
    assert_eq!(failed["total"], CHILDREN / 100);
    let failed_rows = failed["actions"].as_array().unwrap();
    assert_eq!(failed_rows.len() as u64, CHILDREN / 100);
    assert!(
        failed_rows
            .iter()
            .all(|r| r["status"] == "failed" && r["error"].as_str().unwrap().contains("is bad"))
    );

    error(
        &app,
        &format!("{base}?status=broken"),
        StatusCode::BAD_REQUEST,
        "not an action status",
    )
    .await;
    error(
        &app,
        "/api/runs/big/actions/a0/groups/nope",
        StatusCode::NOT_FOUND,
        "no group \"nope\"",
    )
    .await;
    error(
        &app,
        "/api/runs/big/actions/xyz/children",
        StatusCode::BAD_REQUEST,
        "not an action id",
    )
    .await;
    error(
        &app,
        "/api/runs/big/actions/00000000000000ff/children",
        StatusCode::NOT_FOUND,
        "unknown action",
    )
    .await;
    error(
        &app,
        "/api/runs/nope/actions/a0/children",
        StatusCode::NOT_FOUND,
        "unknown run",
    )
    .await;
    // a leaf has no children
    let leaf = rows[0]["id"].as_str().unwrap();
    let none = ok(&app, &format!("/api/runs/big/actions/{leaf}/children")).await;
    assert_eq!(none["ungrouped"], 0);
    assert!(none["groups"].as_array().unwrap().is_empty());
}

#[tokio::test]
async fn action_detail_timeline_utilization_and_events() {
    let app = app();
    let children = ok(&app, "/api/runs/big/actions/a0/children").await;
    let id_of = |task: &str| {
        children["actions"]
            .as_array()
            .unwrap()
            .iter()
            .find(|a| a["task"] == task)
            .map(|a| a["id"].as_str().unwrap().to_string())
            .unwrap()
    };
    let measure = ok(
        &app,
        &format!("/api/runs/big/actions/{}", id_of("other.measure")),
    )
    .await;
    let inputs = &measure["inputs"];
    assert!(
        inputs["offloaded"].is_string(),
        "big input offloaded: {}",
        inputs["size"]
    );
    assert!(inputs["size"].as_u64().unwrap() > 64 * 1024);
    assert_eq!(inputs["hash_checked"], true, "read whole, so checked");
    // its JSON is larger than a page: a truncated preview
    assert_eq!(inputs["truncated"], true);
    let preview = inputs["preview"].as_str().unwrap();
    assert!(preview.starts_with("{\"data\":[0,8589934592,") && preview.len() <= 64 * 1024 + 3);
    assert_eq!(measure["output"]["value"], 10_000);
    assert_eq!(measure["logs"], Value::Null);
    assert_eq!(measure["logs_note"], "no logs captured");
    assert!(measure["overhead"]["queue_wait_us"].is_i64());
    assert!(measure["overhead"]["run_us"].is_i64());

    let flaky = ok(
        &app,
        &format!("/api/runs/big/actions/{}", id_of("other.flaky")),
    )
    .await;
    assert_eq!(flaky["attempts"], 2);
    let attempts = flaky["failed_attempts"].as_array().unwrap();
    assert_eq!(attempts.len(), 1);
    assert!(
        attempts[0]["error"]["message"]
            .as_str()
            .unwrap()
            .contains("first attempt fails")
    );

    let bad = ok(&app, "/api/runs/bad/actions/a0").await;
    assert_eq!(bad["status"], "failed");
    assert_eq!(bad["output"], Value::Null);
    assert!(
        bad["error"]["message"]
            .as_str()
            .unwrap()
            .contains("item 7 is bad")
    );
    error(
        &app,
        "/api/runs/big/actions/a0?verbose=1",
        StatusCode::BAD_REQUEST,
        "unknown parameter",
    )
    .await;

    let timeline = ok(&app, "/api/runs/big/timeline?limit=2&buckets=50").await;
    assert_eq!(timeline["total"], CHILDREN + 3);
    assert_eq!(
        timeline["lanes_total"], 4,
        "root, the map, the two single calls"
    );
    let lanes = timeline["lanes"].as_array().unwrap();
    assert_eq!(lanes.len(), 2);
    assert_eq!(lanes[0]["action"], "a0");
    assert!(timeline["t1"].as_i64() > timeline["t0"].as_i64());
    let all_lanes = ok(&app, "/api/runs/big/timeline").await;
    let lane_total: u64 = all_lanes["lanes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| l["total"].as_u64().unwrap())
        .sum();
    assert_eq!(lane_total, CHILDREN + 3, "lanes cover every action once");
    let map_lane = all_lanes["lanes"]
        .as_array()
        .unwrap()
        .iter()
        .find(|l| l["group"] == "square_map")
        .unwrap();
    assert_eq!(map_lane["task"], "t.square");
    assert_eq!(map_lane["parent_task"], "t.root");
    error(
        &app,
        "/api/runs/big/timeline?buckets=5",
        StatusCode::BAD_REQUEST,
        "from 10 to 2000",
    )
    .await;

    let util = ok(&app, "/api/runs/big/utilization?buckets=20").await;
    let envs = util["envs"].as_array().unwrap();
    let names: Vec<&str> = envs.iter().map(|e| e["env"].as_str().unwrap()).collect();
    assert_eq!(names, ["other", "t"]);
    assert!(
        envs.iter()
            .all(|e| e["mean_running"].as_array().unwrap().len() == 20)
    );
    let t = &envs[1];
    assert_eq!(t["actions"], CHILDREN + 1);
    // the root runs from start to end: at least one `t` action running on average
    let bucket_us = util["bucket_us"].as_f64().unwrap();
    let busy: f64 = t["mean_running"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_f64().unwrap())
        .sum();
    assert!(
        (busy * bucket_us - t["busy_us"].as_f64().unwrap()).abs()
            < 0.01 * t["busy_us"].as_f64().unwrap() + 20.0 * bucket_us / 100.0
    );

    // live events: a summary, then `end` once the run has settled
    let (status, body, _) = get(&app, "/api/runs/small-1/events").await;
    assert_eq!(status, StatusCode::OK);
    let text = body.as_str().unwrap();
    assert!(text.contains("event: summary"), "{text}");
    assert!(text.contains("\"status\":\"succeeded\""), "{text}");
    assert!(
        text.trim_end().ends_with("data: {}") && text.contains("event: end"),
        "{text}"
    );
    error(
        &app,
        "/api/runs/nope/events",
        StatusCode::NOT_FOUND,
        "unknown run",
    )
    .await;

    // the UI itself
    let (status, html, _) = get(&app, "/").await;
    assert_eq!(status, StatusCode::OK);
    // relative, so that the page works mounted under a path too (`weir serve`'s `/ui/`)
    assert!(html.as_str().unwrap().contains("src=\"assets/app.js\""));
    let (status, js, _) = get(&app, "/assets/app.js").await;
    assert_eq!(status, StatusCode::OK);
    assert!(js.as_str().unwrap().contains("class Tree"));
}

#[tokio::test]
async fn references_show_uri_size_hash_and_a_frames_schema_and_first_rows() {
    let app = app();
    let d = ok(&app, "/api/runs/refs/actions/a0").await;
    let refs = d["output"]["references"].as_array().expect("references");
    assert_eq!(refs.len(), 2, "{refs:?}");
    let hash = blake3::hash(b"hello, reference").to_hex().to_string();
    let blobs = format!("file://{}", state().join("blobs").display());
    assert_eq!(refs[0]["at"], "[0]");
    assert_eq!(refs[0]["kind"], "file");
    assert_eq!(refs[0]["size"], 16);
    assert_eq!(refs[0]["hash"], hash.as_str());
    let uri = refs[0]["uri"].as_str().unwrap();
    assert!(
        uri.ends_with(&format!("/raw/{hash}")) && uri.contains(&blobs),
        "{uri}"
    );
    let frame = &refs[1];
    assert_eq!(frame["kind"], "dataframe");
    assert_eq!(frame["rows"], 3);
    assert_eq!(
        frame["columns"],
        serde_json::json!([
            {"name": "k", "type": "Int64", "nullable": false},
            {"name": "v", "type": "Utf8", "nullable": true}
        ])
    );
    assert_eq!(
        frame["head"],
        serde_json::json!([["1", "one"], ["2", "null"], ["3", "three"]])
    );
    // The frame's object is where the URI says, with the size shown.
    let key = frame["uri"]
        .as_str()
        .unwrap()
        .strip_prefix(&format!("{blobs}/"))
        .unwrap();
    let len = std::fs::metadata(state().join("blobs").join(key))
        .unwrap()
        .len();
    assert_eq!(frame["size"], len);
    // A run without references has none listed.
    let small = ok(&app, "/api/runs/small-1/actions/a0").await;
    assert!(small["output"].get("references").is_none(), "{small}");
}

#[tokio::test]
async fn missing_state_is_a_404_with_a_hint_and_nothing_is_created() {
    let dir = tempfile::tempdir().unwrap();
    let empty = dir.path().join("not-yet");
    let app = weir_server::router(&empty, ADDR.parse().unwrap());
    error(
        &app,
        "/api/runs",
        StatusCode::NOT_FOUND,
        "nothing has run there yet",
    )
    .await;
    assert!(!empty.exists(), "the UI creates nothing");
}
