//! The embedded engine end to end, in process: nesting, map, retries, timeouts, errors,
//! limits, identity and abort. State goes to a real SQLite database in a temporary directory.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{LazyLock, Mutex};
use std::time::Duration;

use weir::prelude::*;
use weir::{ActionId, Runner};

static ENV: LazyLock<TaskEnvironment> = LazyLock::new(|| TaskEnvironment::new("t"));

/// Execution counters keyed by a per-test tag (tests run in parallel in one process).
static COUNTS: LazyLock<Mutex<HashMap<String, u64>>> = LazyLock::new(Default::default);
fn bump(key: &str) -> u64 {
    let mut m = COUNTS.lock().unwrap();
    let c = m.entry(key.to_string()).or_default();
    *c += 1;
    *c
}
fn count(key: &str) -> u64 {
    COUNTS.lock().unwrap().get(key).copied().unwrap_or(0)
}

async fn runner() -> (tempfile::TempDir, Runner) {
    let dir = tempfile::tempdir().unwrap();
    let runner = Runner::embedded(dir.path()).await.unwrap();
    (dir, runner)
}

fn actions(runner: &Runner, run: &str) -> Vec<weir_store::ActionRecord> {
    runner.engine().flush().unwrap();
    let store = runner.engine().store();
    let rec = futures::executor::block_on(store.run_by_name(run)).unwrap();
    let page = weir_store::Page {
        offset: 0,
        limit: 100_000,
    };
    futures::executor::block_on(store.list_actions(rec.id, page)).unwrap()
}

#[weir::task(env = ENV)]
async fn double(x: u64) -> Result<u64> {
    Ok(x * 2)
}

#[weir::task(env = ENV)]
async fn square_then_double(x: u64) -> Result<u64> {
    double(x * x).await
}

#[weir::task(env = ENV)]
async fn nested(x: u64) -> Result<u64> {
    let (a, b) = futures::join!(double(x), square_then_double(x));
    let many = futures::future::join_all((0..3).map(|i| double(x + i))).await;
    let spawned = tokio::spawn(double(100)).await.map_err(Error::msg)??;
    Ok(a? + b? + many.into_iter().map(|r| r.unwrap()).sum::<u64>() + spawned)
}

#[tokio::test]
async fn nested_calls_with_join_join_all_and_spawn() {
    assert_eq!(
        double(4).await.unwrap(),
        8,
        "outside a run a task runs directly"
    );
    let (_d, runner) = runner().await;
    let run = runner
        .with_context(RunContext::new().name("nest"))
        .run(nested(3))
        .await
        .unwrap();
    // 6 + 18 + (6+8+10) + 200
    assert_eq!(run.wait().await.unwrap(), 248);
    let acts = actions(&runner, "nest");
    // root, double(3), square_then_double(3) -> double(9), 3 x double, spawned double(100)
    assert_eq!(acts.len(), 8);
    assert!(
        acts.iter()
            .all(|a| a.status == weir::ActionStatus::Succeeded)
    );
    let sq = acts
        .iter()
        .find(|a| a.task == "t.square_then_double")
        .unwrap();
    assert_eq!(
        acts.iter().filter(|a| a.parent == sq.id).count(),
        1,
        "grandchild hangs under its parent"
    );
}

static IN_FLIGHT: AtomicU64 = AtomicU64::new(0);
static MAX_IN_FLIGHT: AtomicU64 = AtomicU64::new(0);

#[weir::task(env = ENV)]
async fn tracked(i: u64, scale: u64) -> Result<u64> {
    let now = IN_FLIGHT.fetch_add(1, Ordering::SeqCst) + 1;
    MAX_IN_FLIGHT.fetch_max(now, Ordering::SeqCst);
    tokio::time::sleep(Duration::from_millis(1 + (i * 7) % 5)).await;
    IN_FLIGHT.fetch_sub(1, Ordering::SeqCst);
    Ok(i * scale)
}

#[weir::task(env = ENV)]
async fn bounded_map(n: u64, width: usize) -> Result<Vec<u64>> {
    weir::map(|i| tracked(i, 10), 0..n)
        .concurrency(width)
        .group("tens")
        .fail_fast()
        .await
}

#[weir::task(env = ENV)]
async fn default_group_map(n: u64) -> Result<Vec<u64>> {
    let results = weir::map(double, 0..n).await;
    results.into_iter().collect()
}

#[tokio::test]
async fn map_keeps_input_order_bounds_concurrency_and_names_groups() {
    let (_d, runner) = runner().await;
    let run = runner
        .with_context(RunContext::new().name("bounded"))
        .run(bounded_map(40, 3))
        .await
        .unwrap();
    let out = run.wait().await.unwrap();
    assert_eq!(out, (0..40).map(|i| i * 10).collect::<Vec<_>>());
    let max = MAX_IN_FLIGHT.load(Ordering::SeqCst);
    assert!(max <= 3, "concurrency(3) exceeded: {max}");
    assert!(max >= 2, "map ran sequentially");
    let acts = actions(&runner, "bounded");
    assert_eq!(acts.len(), 41);
    assert!(acts[1..].iter().all(|a| a.group.as_deref() == Some("tens")));

    let run = runner
        .with_context(RunContext::new().name("grouped"))
        .run(default_group_map(5))
        .await
        .unwrap();
    assert_eq!(run.wait().await.unwrap(), vec![0, 2, 4, 6, 8]);
    let acts = actions(&runner, "grouped");
    assert!(
        acts[1..]
            .iter()
            .all(|a| a.group.as_deref() == Some("double_map"))
    );
}

#[weir::task(env = ENV)]
async fn maybe_fail(i: u64) -> Result<u64> {
    if i == 3 {
        return Err(Error::non_recoverable(format!("item {i} is bad")));
    }
    if i > 3 {
        tokio::time::sleep(Duration::from_secs(30)).await;
    }
    Ok(i)
}

#[weir::task(env = ENV)]
async fn per_item(n: u64) -> Result<Vec<String>> {
    let results = weir::map(maybe_fail, 0..n).await;
    Ok(results
        .into_iter()
        .map(|r| match r {
            Ok(v) => format!("ok {v}"),
            Err(e) => format!(
                "err {} {}",
                e.child().map(|c| c.kind.as_str()).unwrap_or("?"),
                e.child().map(|c| c.message.clone()).unwrap_or_default()
            ),
        })
        .collect())
}

#[weir::task(env = ENV)]
async fn fail_fast_map(n: u64) -> Result<Vec<u64>> {
    weir::map(maybe_fail, 0..n).fail_fast().await
}

#[tokio::test]
async fn map_per_item_results_and_fail_fast_cancellation() {
    let (_d, runner) = runner().await;
    let run = runner
        .with_context(RunContext::new().name("items"))
        .run(per_item(4))
        .await
        .unwrap();
    assert_eq!(
        run.wait().await.unwrap(),
        vec!["ok 0", "ok 1", "ok 2", "err non_recoverable item 3 is bad"]
    );

    let started = std::time::Instant::now();
    let run = runner
        .with_context(RunContext::new().name("fast"))
        .run(fail_fast_map(8))
        .await
        .unwrap();
    let err = run.wait().await.unwrap_err();
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "fail-fast waited for the slow children"
    );
    assert!(err.to_string().contains("item 3 is bad"), "{err}");
    let acts = actions(&runner, "fast");
    let cancelled = acts
        .iter()
        .filter(|a| a.status == weir::ActionStatus::Cancelled)
        .count();
    assert_eq!(
        cancelled,
        4,
        "the four slow children are cancelled: {:?}",
        acts.iter().map(|a| a.status).collect::<Vec<_>>()
    );
}

#[weir::task(env = ENV, retries = RetryPolicy::retries(3).backoff(Duration::from_millis(5), 2.0, Duration::from_millis(20)))]
async fn flaky(tag: String, fail_times: u64) -> Result<u64> {
    let n = bump(&tag);
    if n <= fail_times {
        return Err(std::io::Error::other(format!("transient failure {n}")).into());
    }
    Ok(n)
}

#[weir::task(env = ENV, retries = 3)]
async fn hopeless(tag: String) -> Result<u64> {
    bump(&tag);
    Err(Error::non_recoverable("input is invalid"))
}

#[weir::task(env = ENV, retries = 1)]
async fn panicky(tag: String) -> Result<u64> {
    bump(&tag);
    panic!("kaboom {tag}");
}

#[tokio::test]
async fn retries_with_backoff_non_recoverable_and_panics() {
    let (_d, runner) = runner().await;
    let run = runner
        .with_context(RunContext::new().name("flaky"))
        .run(flaky("flaky".into(), 2))
        .await
        .unwrap();
    assert_eq!(run.wait().await.unwrap(), 3);
    let acts = actions(&runner, "flaky");
    assert_eq!(acts[0].attempts, 3);
    {
        let rec = runner.engine().store().run_by_name("flaky").await.unwrap();
        let failed = runner
            .engine()
            .store()
            .failed_attempts(rec.id, ActionId::ROOT)
            .await
            .unwrap();
        assert_eq!(failed.len(), 2);
        assert!(failed[0].error.message.contains("transient failure 1"));
        assert!(
            failed[1].started_at - failed[0].ended_at >= 5_000,
            "backoff of 5 ms before the first retry"
        );
    }

    let run = runner
        .with_context(RunContext::new().name("hopeless"))
        .run(hopeless("hopeless".into()))
        .await
        .unwrap();
    let err = run.wait().await.unwrap_err();
    assert_eq!(err.child().unwrap().kind, ErrorKind::NonRecoverable);
    assert_eq!(
        count("hopeless"),
        1,
        "non-recoverable errors are never retried"
    );

    let run = runner
        .with_context(RunContext::new().name("panicky"))
        .run(panicky("panicky".into()))
        .await
        .unwrap();
    let err = run.wait().await.unwrap_err();
    assert_eq!(err.child().unwrap().kind, ErrorKind::Panic);
    assert!(err.to_string().contains("kaboom panicky"), "{err}");
    assert_eq!(
        count("panicky"),
        2,
        "a panic is a failed attempt and is retried"
    );
    // The engine is still fine.
    let run = runner.run(double(21)).await.unwrap();
    assert_eq!(run.wait().await.unwrap(), 42);
}

#[weir::task(env = ENV, timeout = "50ms", retries = 1)]
async fn too_slow(tag: String) -> Result<u64> {
    bump(&tag);
    tokio::time::sleep(Duration::from_secs(5)).await;
    Ok(0)
}

#[weir::task(env = ENV, retries = 100, timeout = Timeouts::new().max_runtime(Duration::from_millis(30)).deadline(Duration::from_millis(200)))]
async fn past_deadline(tag: String) -> Result<u64> {
    bump(&tag);
    tokio::time::sleep(Duration::from_secs(5)).await;
    Ok(0)
}

#[weir::task(env = ENV)]
async fn hold_slot(ms: u64) -> Result<u64> {
    tokio::time::sleep(Duration::from_millis(ms)).await;
    Ok(ms)
}

#[weir::task(env = ENV, timeout = Timeouts::new().max_queued(Duration::from_millis(30)))]
async fn impatient() -> Result<u64> {
    Ok(1)
}

#[weir::task(env = ENV)]
async fn queue_pressure() -> Result<String> {
    let slow = hold_slot(400);
    let (a, b) = futures::join!(slow, async {
        tokio::time::sleep(Duration::from_millis(50)).await;
        impatient().await
    });
    a?;
    Ok(match b {
        Ok(_) => "started".into(),
        Err(e) => e
            .child()
            .map(|c| c.kind.as_str())
            .unwrap_or("?")
            .to_string(),
    })
}

#[tokio::test]
async fn timeouts_runtime_deadline_and_queue() {
    let (_d, runner) = runner().await;
    let run = runner.run(too_slow("slow".into())).await.unwrap();
    let err = run.wait().await.unwrap_err();
    assert_eq!(err.child().unwrap().kind, ErrorKind::Timeout, "{err}");
    assert_eq!(count("slow"), 2, "a timed-out attempt is retried");

    let run = runner.run(past_deadline("deadline".into())).await.unwrap();
    let err = run.wait().await.unwrap_err();
    assert_eq!(err.child().unwrap().kind, ErrorKind::Deadline, "{err}");
    let attempts = count("deadline");
    assert!(
        (3..=8).contains(&attempts),
        "the 200 ms deadline cut 100 retries of 30 ms attempts: {attempts} attempts"
    );

    // One slot for the run: the parent gives it up while waiting, the slow child takes it, and
    // the impatient child times out in the queue.
    let run = runner
        .with_context(RunContext::new().max_action_concurrency(1))
        .run(queue_pressure())
        .await
        .unwrap();
    assert_eq!(run.wait().await.unwrap(), "deadline");
}

#[weir::task(env = ENV)]
async fn failing_child(x: u64) -> Result<u64> {
    Err(Error::msg(format!("cannot handle {x}")))
}

#[weir::task(env = ENV)]
async fn handles_child_error() -> Result<(String, String, String, String)> {
    match failing_child(7).await {
        Ok(_) => Err(Error::msg("expected a failure")),
        Err(e) => {
            let c = e.child().expect("a child failure");
            Ok((
                c.action_id.clone(),
                c.task.clone(),
                c.kind.as_str().to_string(),
                c.message.clone(),
            ))
        }
    }
}

#[tokio::test]
async fn child_errors_reach_the_parent_typed() {
    let (_d, runner) = runner().await;
    let run = runner
        .with_context(RunContext::new().name("errs"))
        .run(handles_child_error())
        .await
        .unwrap();
    let (id, task, kind, message) = run.wait().await.unwrap();
    let acts = actions(&runner, "errs");
    let child = acts.iter().find(|a| a.task == "t.failing_child").unwrap();
    assert_eq!(id, child.id.to_string());
    assert_eq!(task, "t.failing_child");
    assert_eq!(kind, "user");
    assert_eq!(message, "cannot handle 7");
    assert_eq!(child.status, weir::ActionStatus::Failed);
    assert_eq!(
        acts[0].status,
        weir::ActionStatus::Succeeded,
        "the parent handled it"
    );
}

#[weir::task(env = ENV, max_inline_io = "1KiB")]
async fn small_io(data: Vec<u8>, out_len: usize) -> Result<Vec<u8>> {
    Ok(vec![data.len() as u8; out_len])
}

#[weir::task(env = ENV)]
async fn echo_big(data: Vec<u8>) -> Result<Vec<u8>> {
    Ok(data.into_iter().rev().collect())
}

#[weir::task(env = ENV)]
async fn limits_parent() -> Result<Vec<String>> {
    let mut out = Vec::new();
    for (input, output) in [(2000usize, 1usize), (1, 2000)] {
        match small_io(vec![1; input], output).await {
            Ok(v) => out.push(format!("ok {}", v.len())),
            Err(e) => out.push(format!("{}", e)),
        }
    }
    let big: Vec<u8> = (0..200_000u32).map(|i| (i % 251) as u8).collect();
    let back = echo_big(big.clone()).await?;
    out.push(format!("big {}", back.iter().rev().eq(big.iter())));
    Ok(out)
}

#[tokio::test]
async fn inline_limits_and_offloaded_payloads() {
    let (dir, runner) = runner().await;
    let run = runner
        .with_context(RunContext::new().name("limits"))
        .run(limits_parent())
        .await
        .unwrap();
    let out = run.wait().await.unwrap();
    assert!(
        out[0].contains("inputs of task t.small_io are")
            && out[0].contains("over its inline limit of 1024 bytes"),
        "{}",
        out[0]
    );
    assert!(
        out[1].contains("output of task t.small_io is") && out[1].contains("1024"),
        "{}",
        out[1]
    );
    assert_eq!(out[2], "big true");
    let acts = actions(&runner, "limits");
    // The oversized input never became an action; the oversized output failed its action.
    assert_eq!(acts.iter().filter(|a| a.task == "t.small_io").count(), 1);
    let echo = acts.iter().find(|a| a.task == "t.echo_big").unwrap();
    let blob_dir = dir.path().join("blobs/limits").join(echo.id.to_string());
    assert!(
        blob_dir.join("inputs").is_file(),
        "large inputs go to the object store"
    );
    assert!(
        blob_dir.join("1/outputs").is_file(),
        "large outputs go under the attempt prefix"
    );

    // A root input over the limit is refused before anything is stored.
    let err = runner.run(small_io(vec![0; 5000], 1)).await.unwrap_err();
    assert!(matches!(err, weir::EngineError::TooLarge(_)), "{err}");
    assert!(err.is_bad_input());
}

#[weir::task(env = ENV)]
async fn jittery(i: u64) -> Result<u64> {
    // Completion order differs from call order.
    tokio::time::sleep(Duration::from_millis((i * 37) % 11)).await;
    Ok(i)
}

#[weir::task(env = ENV)]
async fn id_parent(n: u64) -> Result<u64> {
    let a = futures::future::join_all((0..n).map(jittery)).await;
    let same = futures::future::join_all((0..3).map(|_| jittery(1000))).await;
    Ok(a.into_iter().chain(same).map(|r| r.unwrap()).sum())
}

#[weir::task(env = ENV)]
async fn parent_fails_once(tag: String) -> Result<u64> {
    let a = double(1).await?;
    let b = double(2).await?;
    let c = jittery(3).await?;
    if bump(&tag) == 1 {
        return Err(Error::msg("first attempt fails after its children"));
    }
    Ok(a + b + c)
}

#[weir::task(env = ENV, retries = 1)]
async fn retried_parent(tag: String) -> Result<u64> {
    parent_fails_once(tag).await
}

#[tokio::test]
async fn action_ids_are_stable_distinct_and_not_multiplied_by_retries() {
    let (_d, runner) = runner().await;
    let mut id_sets = Vec::new();
    for name in ["ids1", "ids2"] {
        let run = runner
            .with_context(RunContext::new().name(name))
            .run(id_parent(20))
            .await
            .unwrap();
        run.wait().await.unwrap();
        let ids: HashSet<ActionId> = actions(&runner, name).iter().map(|a| a.id).collect();
        assert_eq!(
            ids.len(),
            24,
            "20 calls + 3 identical calls + root get distinct ids"
        );
        id_sets.push(ids);
    }
    assert_eq!(
        id_sets[0], id_sets[1],
        "ids do not depend on completion order"
    );

    // parent_fails_once has retries = 0 inside retried_parent? It is a child with no retries;
    // give it its own retry through a wrapper: the wrapper's retry re-calls it.
    let run = runner
        .with_context(RunContext::new().name("retry"))
        .run(retried_parent("retry-tag".into()))
        .await
        .unwrap();
    assert_eq!(run.wait().await.unwrap(), 2 + 4 + 3);
    let acts = actions(&runner, "retry");
    assert_eq!(
        acts.iter().filter(|a| a.task == "t.double").count(),
        2,
        "children are not multiplied by the retry"
    );
    assert_eq!(acts.iter().filter(|a| a.task == "t.jittery").count(), 1);
    assert_eq!(acts.len(), 5);
}

#[weir::task(env = ENV)]
async fn sleepy_child() -> Result<u64> {
    tokio::time::sleep(Duration::from_secs(30)).await;
    Ok(1)
}

#[weir::task(env = ENV)]
async fn sleepy_parent() -> Result<u64> {
    sleepy_child().await
}

#[tokio::test]
async fn abort_cancels_live_actions() {
    let (_d, runner) = runner().await;
    let run = runner
        .with_context(RunContext::new().name("abort"))
        .run(sleepy_parent())
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(100)).await;
    run.abort();
    let err = run.wait().await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Cancelled);
    let acts = actions(&runner, "abort");
    assert_eq!(acts.len(), 2);
    assert!(
        acts.iter()
            .all(|a| a.status == weir::ActionStatus::Cancelled),
        "{:?}",
        acts.iter().map(|a| a.status).collect::<Vec<_>>()
    );
    assert_eq!(
        runner
            .engine()
            .store()
            .run_by_name("abort")
            .await
            .unwrap()
            .status,
        weir_store::RunStatus::Aborted
    );
}
