//! The lifecycle table is the law: scenarios that take every kind of status change the engine
//! makes, then a check that each change it took is declared in `weir_core::lifecycle` and
//! that it asked for no undeclared one (declared transitions never taken are listed). Also the
//! environment concurrency bounds and the task context.

use std::collections::HashMap;
use std::sync::{LazyLock, Mutex};
use std::time::Duration;

use weir::prelude::*;
use weir::{ActionStatus, Runner};

static ENV: LazyLock<TaskEnvironment> = LazyLock::new(|| TaskEnvironment::new("lc"));
static CACHED: LazyLock<TaskEnvironment> =
    LazyLock::new(|| TaskEnvironment::new("lc_cached").cache(Cache::override_version("v1")));
static NARROW: LazyLock<TaskEnvironment> =
    LazyLock::new(|| TaskEnvironment::new("lc_narrow").max_concurrency(2));
static POOLED: LazyLock<TaskEnvironment> = LazyLock::new(|| {
    TaskEnvironment::new("lc_pooled").reuse(ReusePolicy::new().replicas(1..=2).concurrency(2))
});

static COUNTS: LazyLock<Mutex<HashMap<String, u64>>> = LazyLock::new(Default::default);
fn bump(key: &str) -> u64 {
    let mut m = COUNTS.lock().unwrap();
    let c = m.entry(key.to_string()).or_default();
    *c += 1;
    *c
}

async fn runner() -> (tempfile::TempDir, Runner) {
    let dir = tempfile::tempdir().unwrap();
    let runner = Runner::embedded(dir.path()).await.unwrap();
    (dir, runner)
}

async fn run_named<O: serde::de::DeserializeOwned>(
    runner: &Runner,
    name: &str,
    call: weir::TaskCall<O>,
) -> weir::Result<O> {
    let run = runner
        .with_context(RunContext::new().name(name))
        .run(call)
        .await?;
    run.wait().await
}

#[weir::task(env = ENV)]
async fn leaf(x: u64) -> Result<u64> {
    Ok(x + 1)
}

#[weir::task(env = ENV, retries = 1)]
async fn fails_once(tag: String) -> Result<u64> {
    if bump(&tag) == 1 {
        return Err(Error::msg("transient"));
    }
    Ok(7)
}

#[weir::task(env = ENV)]
async fn always_fails(tag: String) -> Result<u64> {
    bump(&tag);
    Err(Error::msg("no luck"))
}

#[weir::task(env = CACHED)]
async fn cached(x: u64) -> Result<u64> {
    Ok(x * 3)
}

#[weir::task(env = ENV)]
async fn sleeper(ms: u64) -> Result<u64> {
    tokio::time::sleep(Duration::from_millis(ms)).await;
    Ok(ms)
}

#[weir::task(env = ENV, timeout = Timeouts::new().max_queued(Duration::from_millis(20)))]
async fn impatient() -> Result<u64> {
    Ok(1)
}

/// Success, a retried child, a child that fails (handled), a cache hit.
#[weir::task(env = ENV)]
async fn mixed(tag: String) -> Result<u64> {
    let a = leaf(1).await?;
    let b = fails_once(format!("{tag}-once")).await?;
    let c = always_fails(format!("{tag}-fail")).await.unwrap_or(100);
    let d = cached(2).await? + cached(2).await?;
    Ok(a + b + c + d)
}

/// The queued child waits behind a sibling longer than its `max_queued` (run bound 1).
#[weir::task(env = ENV)]
async fn queue_deadline() -> Result<String> {
    let (a, b) = futures::join!(sleeper(300), async {
        tokio::time::sleep(Duration::from_millis(30)).await;
        impatient().await
    });
    a?;
    Ok(b.err()
        .and_then(|e| e.child().map(|c| c.kind.to_string()))
        .unwrap_or_default())
}

#[weir::task(env = ENV)]
async fn ff_item(tag: String, i: u64) -> Result<u64> {
    let parent_first_attempt = COUNTS.lock().unwrap().get(&tag).copied() == Some(1);
    if parent_first_attempt {
        if i == 0 {
            return Err(Error::msg("item 0 fails while its parent is on attempt 1"));
        }
        tokio::time::sleep(Duration::from_secs(5)).await;
    }
    Ok(i)
}

/// Fail-fast (run bound 3): item 0 fails and cancels the running and the queued siblings.
/// The parent fails once, is retried, and its failed and cancelled children are resubmitted.
#[weir::task(env = ENV, retries = 1)]
async fn fail_fast_then_retry(tag: String) -> Result<u64> {
    bump(&tag);
    let out = weir::map(move |i| ff_item(tag.clone(), i), 0..6)
        .fail_fast()
        .await?;
    Ok(out.iter().sum())
}

/// A child in its retry backoff when the run is aborted.
#[weir::task(env = ENV, retries = RetryPolicy::retries(3).backoff(Duration::from_secs(30), 1.0, Duration::from_secs(30)))]
async fn slow_backoff(tag: String) -> Result<u64> {
    bump(&tag);
    Err(Error::msg("later"))
}

#[weir::task(env = ENV)]
async fn waits_on_backoff(tag: String) -> Result<u64> {
    slow_backoff(tag).await
}

static RELEASE: tokio::sync::Notify = tokio::sync::Notify::const_new();

#[weir::task(env = ENV)]
async fn stuck_child(x: u64) -> Result<u64> {
    if bump("stuck") == 1 {
        // The first process never finishes it: it stays `running` in the store.
        RELEASE.notified().await;
    }
    Ok(x)
}

#[weir::task(env = ENV)]
async fn stuck_parent() -> Result<u64> {
    stuck_child(5).await
}

#[tokio::test]
async fn the_engine_takes_only_declared_transitions() {
    let (_d, runner) = runner().await;
    assert_eq!(
        run_named(&runner, "mixed", mixed("m".into()))
            .await
            .unwrap(),
        1 + 1 + 7 + 100 + 12
    );

    let bounded = runner.with_context(RunContext::new().name("queue").max_action_concurrency(1));
    let run = bounded.run(queue_deadline()).await.unwrap();
    assert_eq!(run.wait().await.unwrap(), "deadline");

    let bounded = runner.with_context(RunContext::new().name("ff").max_action_concurrency(3));
    let run = bounded
        .run(fail_fast_then_retry("ff".into()))
        .await
        .unwrap();
    assert_eq!(run.wait().await.unwrap(), 15);

    let run = runner
        .with_context(RunContext::new().name("backoff"))
        .run(waits_on_backoff("bo".into()))
        .await
        .unwrap();
    while COUNTS.lock().unwrap().get("bo").copied().unwrap_or(0) == 0 {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    tokio::time::sleep(Duration::from_millis(50)).await;
    run.abort();
    assert_eq!(run.wait().await.unwrap_err().kind(), ErrorKind::Cancelled);

    // A run whose process "died" with a child running: a second engine on the same state
    // resumes it, and the child found `running` goes back to the queue (lease lost).
    let first = runner
        .with_context(RunContext::new().name("crashed"))
        .run(stuck_parent())
        .await
        .unwrap();
    while COUNTS.lock().unwrap().get("stuck").copied().unwrap_or(0) == 0 {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    runner.engine().flush().unwrap();
    let second = Runner::embedded(_d.path()).await.unwrap();
    let resumed = second.engine().resume_run("crashed", true).await.unwrap();
    assert_eq!(resumed.wait_as::<u64>().await.unwrap(), 5);
    drop(first);

    let coverage = weir_core::lifecycle::coverage();
    let mut not_taken = String::new();
    for (from, event, to) in &coverage.not_taken {
        not_taken += &format!("\n  {from} --{}--> {to}", event.as_str());
    }
    println!("declared transitions not taken by these scenarios:{not_taken}");
    assert!(
        coverage.refused.is_empty(),
        "the engine asked for undeclared transitions: {:?}",
        coverage.refused
    );
    use weir::ActionStatus as S;
    use weir_core::ActionEvent as E;
    for expected in [
        (S::Queued, E::Start),
        (S::Running, E::Succeed),
        (S::Running, E::Fail),
        (S::Running, E::FailRetryable),
        (S::Retrying, E::Requeue),
        (S::Queued, E::CacheHit),
        (S::Queued, E::Fail),
        (S::Running, E::Cancel),
        (S::Queued, E::Cancel),
        (S::Retrying, E::Cancel),
        (S::Failed, E::Resubmit),
        (S::Cancelled, E::Resubmit),
        (S::Running, E::LeaseLost),
    ] {
        assert!(
            coverage.taken.iter().any(|(f, e, _)| (*f, *e) == expected),
            "{expected:?} not taken; taken: {:?}",
            coverage.taken
        );
    }
}

static IN_FLIGHT: LazyLock<Mutex<HashMap<&'static str, (u64, u64)>>> =
    LazyLock::new(Default::default);

async fn gauge(key: &'static str) {
    {
        let mut m = IN_FLIGHT.lock().unwrap();
        let (now, max) = m.entry(key).or_default();
        *now += 1;
        *max = (*max).max(*now);
    }
    tokio::time::sleep(Duration::from_millis(40)).await;
    IN_FLIGHT.lock().unwrap().get_mut(key).unwrap().0 -= 1;
}

#[weir::task(env = NARROW)]
async fn narrow_item(i: u64) -> Result<u64> {
    gauge("narrow").await;
    Ok(i)
}

#[weir::task(env = POOLED)]
async fn pooled_item(i: u64) -> Result<u64> {
    gauge("pooled").await;
    Ok(i)
}

#[weir::task(env = NARROW)]
async fn narrow_parent() -> Result<u64> {
    // A parent of the bounded environment waiting on its children holds no slot.
    let items: Vec<u64> = weir::map(narrow_item, 0..8).fail_fast().await?;
    Ok(items.iter().sum())
}

#[weir::task(env = ENV)]
async fn pooled_fan() -> Result<u64> {
    let items: Vec<u64> = weir::map(pooled_item, 0..12).fail_fast().await?;
    Ok(items.iter().sum())
}

#[tokio::test]
async fn environments_bound_their_concurrent_actions() {
    let (_d, runner) = runner().await;
    assert_eq!(
        run_named(&runner, "narrow", narrow_parent()).await.unwrap(),
        28
    );
    assert_eq!(
        run_named(&runner, "pooled", pooled_fan()).await.unwrap(),
        66
    );
    let m = IN_FLIGHT.lock().unwrap();
    // max_concurrency(2) holds even though the parent is in the same environment.
    assert_eq!(m["narrow"].1, 2);
    // A policy of replicas 1..=2 × concurrency 2 runs at most 4 at once in process.
    assert_eq!(m["pooled"].1, 4);
}

#[weir::task(env = ENV, retries = 2)]
async fn who_am_i(tag: String) -> Result<(String, String, u32)> {
    let ctx = weir::context().expect("inside a task");
    if bump(&tag) == 1 {
        return Err(Error::msg("first attempt fails"));
    }
    Ok((ctx.run, ctx.action.to_string(), ctx.attempt))
}

#[weir::task(env = ENV)]
async fn ask_child(tag: String) -> Result<((String, String, u32), String)> {
    let root = weir::context().unwrap();
    Ok((who_am_i(tag).await?, root.action.to_string()))
}

#[tokio::test]
async fn tasks_know_their_run_action_and_attempt() {
    assert!(weir::context().is_none());
    let (_d, runner) = runner().await;
    let ((run, action, attempt), root) = run_named(&runner, "ctx", ask_child("ctx".into()))
        .await
        .unwrap();
    assert_eq!(run, "ctx");
    assert_eq!(root, "a0");
    assert_ne!(action, "a0");
    assert_eq!(attempt, 2);
    runner.engine().flush().unwrap();
    let store = runner.engine().store();
    let rec = store.run_by_name("ctx").await.unwrap();
    let acts = store
        .list_actions(rec.id, Default::default())
        .await
        .unwrap();
    let child = acts.iter().find(|a| a.id.to_string() == action).unwrap();
    assert_eq!((child.status, child.attempts), (ActionStatus::Succeeded, 2));
}

#[weir::task(env = ENV, timeout = "30ms")]
async fn root_too_slow() -> Result<u64> {
    tokio::time::sleep(Duration::from_secs(5)).await;
    Ok(0)
}

#[weir::task(env = ENV)]
async fn root_with_failing_child(tag: String) -> Result<u64> {
    always_fails(tag).await
}

#[tokio::test]
async fn a_failed_run_has_the_kind_of_what_failed() {
    let (_d, runner) = runner().await;
    let err = run_named(&runner, "slow-root", root_too_slow())
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Timeout, "{err}");
    assert_eq!(err.child().unwrap().action_id, "a0");
    let err = run_named(&runner, "bad-child", root_with_failing_child("bc".into()))
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::ChildFailed, "{err}");
    assert!(err.to_string().contains("no luck"), "{err}");
}
