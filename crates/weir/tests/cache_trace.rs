//! Caching (SPEC §6.1–6.3) and traces (SPEC §6.4) in the embedded engine.

use std::collections::HashMap;
use std::sync::{LazyLock, Mutex};
use std::time::Duration;

use futures::StreamExt;
use futures::executor::block_on;
use weir::prelude::*;
use weir::{ActionId, CacheLookupScope, Runner};
use weir_store::{ActionKind, ActionRecord, Page, Payload};

static ENV: LazyLock<TaskEnvironment> = LazyLock::new(|| TaskEnvironment::new("c"));
static CACHED_ENV: LazyLock<TaskEnvironment> =
    LazyLock::new(|| TaskEnvironment::new("ce").cache("env-v1"));

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

fn actions(runner: &Runner, run: &str) -> Vec<ActionRecord> {
    runner.engine().flush().unwrap();
    let store = runner.engine().store();
    let rec = block_on(store.run_by_name(run)).unwrap();
    block_on(store.list_actions(
        rec.id,
        Page {
            offset: 0,
            limit: 100_000,
        },
    ))
    .unwrap()
}

fn full(runner: &Runner, run: &str, id: ActionId) -> ActionRecord {
    let store = runner.engine().store();
    let rec = block_on(store.run_by_name(run)).unwrap();
    block_on(store.action(rec.id, id)).unwrap().unwrap()
}

#[weir::task(env = ENV, cache = Cache::auto().ignored_inputs(["label"]))]
async fn cached_square(tag: String, x: u64, label: String) -> Result<u64> {
    bump(&tag);
    let _ = label;
    Ok(x * x)
}

#[weir::task(env = ENV, cache = "v1")]
async fn big_output(tag: String, n: usize) -> Result<Vec<u8>> {
    bump(&tag);
    Ok(vec![7; n])
}

/// Cache from the environment (override "env-v1"), salted at the task.
#[weir::task(env = CACHED_ENV)]
async fn env_cached(tag: String) -> Result<u64> {
    Ok(bump(&tag))
}

#[weir::task(env = CACHED_ENV, cache = "disable")]
async fn env_cached_but_disabled(tag: String) -> Result<u64> {
    Ok(bump(&tag))
}

#[weir::task(env = ENV)]
async fn call_square(tag: String, x: u64, label: String) -> Result<u64> {
    cached_square(tag, x, label).await
}

#[weir::task(env = ENV)]
async fn call_big(tag: String, n: usize) -> Result<usize> {
    Ok(big_output(tag, n).await?.len())
}

#[weir::task(env = ENV)]
async fn call_env(tag: String) -> Result<(u64, u64)> {
    Ok((
        env_cached(tag.clone()).await?,
        env_cached_but_disabled(tag).await?,
    ))
}

async fn run_named<O: serde::de::DeserializeOwned>(
    runner: &Runner,
    ctx: RunContext,
    call: weir::TaskCall<O>,
) -> O {
    runner
        .with_context(ctx)
        .run(call)
        .await
        .unwrap()
        .wait()
        .await
        .unwrap()
}

fn child<'a>(acts: &'a [ActionRecord], task: &str) -> &'a ActionRecord {
    acts.iter().find(|a| a.task == task).unwrap()
}

#[tokio::test]
async fn cache_hits_misses_ignored_inputs_scope_overwrite_and_disable() {
    let dir = tempfile::tempdir().unwrap();
    let runner = Runner::embedded(dir.path()).await.unwrap();
    let t = "sq".to_string();
    // miss, then hit (even with another value of the ignored input)
    assert_eq!(
        run_named(
            &runner,
            RunContext::new().name("c1"),
            call_square(t.clone(), 7, "a".into())
        )
        .await,
        49
    );
    assert_eq!(
        run_named(
            &runner,
            RunContext::new().name("c2"),
            call_square(t.clone(), 7, "b".into())
        )
        .await,
        49
    );
    assert_eq!(count(&t), 1, "the second call was a cache hit");
    assert!(!child(&actions(&runner, "c1"), "c.cached_square").cache_hit);
    let hit = child(&actions(&runner, "c2"), "c.cached_square").clone();
    assert!(hit.cache_hit && hit.status == weir::ActionStatus::Succeeded);
    // another input value: miss
    assert_eq!(
        run_named(
            &runner,
            RunContext::new().name("c3"),
            call_square(t.clone(), 8, "a".into())
        )
        .await,
        64
    );
    assert_eq!(count(&t), 2);
    // overwrite: runs and replaces; later runs hit again
    run_named(
        &runner,
        RunContext::new().name("c4").overwrite_cache(true),
        call_square(t.clone(), 7, "a".into()),
    )
    .await;
    assert_eq!(count(&t), 3);
    assert!(!child(&actions(&runner, "c4"), "c.cached_square").cache_hit);
    run_named(
        &runner,
        RunContext::new().name("c5"),
        call_square(t.clone(), 7, "a".into()),
    )
    .await;
    assert_eq!(count(&t), 3);
    // disabled for one run: runs, records no hit
    run_named(
        &runner,
        RunContext::new().name("c6").disable_cache(true),
        call_square(t.clone(), 7, "a".into()),
    )
    .await;
    assert_eq!(count(&t), 4);
    // scope: entries were written by project default/development
    let other = RunContext::new().project_domain("other", "prod");
    run_named(
        &runner,
        other.clone().name("c7"),
        call_square(t.clone(), 7, "a".into()),
    )
    .await;
    assert_eq!(count(&t), 4, "global scope sees entries of every project");
    run_named(
        &runner,
        other
            .name("c8")
            .cache_lookup_scope(CacheLookupScope::ProjectDomain),
        call_square(t.clone(), 9, "a".into()),
    )
    .await;
    assert_eq!(count(&t), 5);
    let scoped = RunContext::new()
        .project_domain("third", "dev")
        .cache_lookup_scope(CacheLookupScope::ProjectDomain);
    run_named(
        &runner,
        scoped.name("c9"),
        call_square(t.clone(), 9, "a".into()),
    )
    .await;
    assert_eq!(
        count(&t),
        6,
        "project-domain scope does not see other projects' entries"
    );

    // environment-level override cache; a task-level "disable" wins over it
    let e = "envc".to_string();
    assert_eq!(
        run_named(&runner, RunContext::new().name("e1"), call_env(e.clone())).await,
        (1, 2)
    );
    assert_eq!(
        run_named(&runner, RunContext::new().name("e2"), call_env(e.clone())).await,
        (1, 3)
    );
}

#[tokio::test]
async fn large_outputs_are_cached_by_reference() {
    let dir = tempfile::tempdir().unwrap();
    let runner = Runner::embedded(dir.path()).await.unwrap();
    let t = "big".to_string();
    assert_eq!(
        run_named(
            &runner,
            RunContext::new().name("b1"),
            call_big(t.clone(), 300_000)
        )
        .await,
        300_000
    );
    assert_eq!(
        run_named(
            &runner,
            RunContext::new().name("b2"),
            call_big(t.clone(), 300_000)
        )
        .await,
        300_000
    );
    assert_eq!(count(&t), 1);
    let first = child(&actions(&runner, "b1"), "c.big_output").id;
    let second = child(&actions(&runner, "b2"), "c.big_output").id;
    let p1 = full(&runner, "b1", first).output.unwrap();
    let p2 = full(&runner, "b2", second).output.unwrap();
    assert!(matches!(p1, Payload::Offloaded { .. }));
    assert_eq!(p1, p2, "the hit points at the original object, no copy");
    let entries = runner
        .engine()
        .store()
        .list_cache(Some("c.big_output"), None, 10)
        .await
        .unwrap();
    assert_eq!(entries.len(), 1);
    assert_eq!(entries[0].version, "v1");
    assert_eq!(
        runner
            .engine()
            .store()
            .clear_cache(Some("c.big_output"))
            .await
            .unwrap(),
        1
    );
    run_named(
        &runner,
        RunContext::new().name("b3"),
        call_big(t.clone(), 300_000),
    )
    .await;
    assert_eq!(count(&t), 2, "cleared entries are not hit");
}

#[weir::trace]
async fn fetch(tag: String, i: u64) -> Result<String> {
    bump(&format!("{tag}-fetch-{i}"));
    Ok(format!("page {i}"))
}

#[weir::trace]
async fn flaky_fetch(tag: String, hard: bool) -> Result<u64> {
    let n = bump(&format!("{tag}-flaky"));
    if hard {
        Err(Error::non_recoverable(format!("gone for good {n}")))
    } else {
        Err(Error::msg(format!("try again {n}")))
    }
}

#[weir::trace]
fn numbers(tag: String, n: u64) -> impl futures::Stream<Item = u64> {
    futures::stream::iter(0..n).map(move |i| {
        bump(&format!("{tag}-item"));
        i * 10
    })
}

#[weir::trace]
async fn sneaky(x: u64) -> Result<u64> {
    call_square("sneaky".into(), x, String::new()).await
}

#[weir::task(env = ENV, retries = 2)]
async fn traced_task(tag: String) -> Result<Vec<String>> {
    let mut out = Vec::new();
    for i in 0..3 {
        out.push(fetch(tag.clone(), i).await?);
    }
    let items: Vec<u64> = numbers(tag.clone(), 4).collect().await;
    out.push(format!("{items:?}"));
    if bump(&format!("{tag}-attempt")) < 3 {
        return Err(Error::msg("fail after the traces"));
    }
    Ok(out)
}

#[weir::task(env = ENV, retries = 2)]
async fn traced_failures(tag: String, hard: bool) -> Result<String> {
    match flaky_fetch(tag.clone(), hard).await {
        Ok(_) => Ok("ok".into()),
        // Fail the task in a retryable way so that it runs again.
        Err(e) if bump(&format!("{tag}-task")) < 3 => {
            Err(Error::msg(format!("retry the task: {e}")))
        }
        Err(e) => Ok(format!("{}: {}", e.kind(), e.message())),
    }
}

#[weir::task(env = ENV)]
async fn calls_task_in_trace() -> Result<String> {
    match sneaky(3).await {
        Ok(_) => Ok("no error".into()),
        Err(e) => Ok(e.to_string()),
    }
}

#[tokio::test]
async fn traces_replay_on_retry_streams_replay_items_and_may_not_call_tasks() {
    assert_eq!(
        fetch("direct".into(), 1).await.unwrap(),
        "page 1",
        "outside a task a trace is a plain call"
    );
    let dir = tempfile::tempdir().unwrap();
    let runner = Runner::embedded(dir.path()).await.unwrap();
    let out = run_named(
        &runner,
        RunContext::new().name("tr"),
        traced_task("tr".into()),
    )
    .await;
    assert_eq!(out, vec!["page 0", "page 1", "page 2", "[0, 10, 20, 30]"]);
    for i in 0..3 {
        assert_eq!(
            count(&format!("tr-fetch-{i}")),
            1,
            "trace {i} ran again on a retry"
        );
    }
    assert_eq!(
        count("tr-item"),
        4,
        "the stream yielded its recorded items on retries, without running"
    );
    assert_eq!(count("tr-attempt"), 3);
    let acts = actions(&runner, "tr");
    let traces: Vec<_> = acts
        .iter()
        .filter(|a| a.kind == ActionKind::Trace)
        .collect();
    assert_eq!(
        traces.len(),
        4,
        "three fetches and one stream, recorded once"
    );
    assert!(
        traces
            .iter()
            .all(|t| t.parent == ActionId::ROOT && t.status == weir::ActionStatus::Succeeded)
    );

    // A recoverable failure runs the trace again on retry; a non-recoverable one is re-raised.
    let soft = run_named(
        &runner,
        RunContext::new().name("soft"),
        traced_failures("soft".into(), false),
    )
    .await;
    assert_eq!(soft, "user: try again 3");
    assert_eq!(count("soft-flaky"), 3);
    let hard = run_named(
        &runner,
        RunContext::new().name("hard"),
        traced_failures("hard".into(), true),
    )
    .await;
    assert_eq!(hard, "non_recoverable: gone for good 1");
    assert_eq!(
        count("hard-flaky"),
        1,
        "a recorded non-recoverable failure is replayed, not re-run"
    );

    let msg = run_named(
        &runner,
        RunContext::new().name("sneaky"),
        calls_task_in_trace(),
    )
    .await;
    assert!(msg.contains("called from inside trace sneaky"), "{msg}");
    assert_eq!(count("sneaky"), 0);
}

#[weir::task(env = ENV, retries = 1)]
async fn sleeps_durably(tag: String) -> Result<u64> {
    let t0 = weir::durable::now().await?;
    weir::durable::sleep(Duration::from_millis(300)).await?;
    if bump(&tag) == 1 {
        return Err(Error::msg("fail after sleeping"));
    }
    let t1 = weir::durable::now().await?;
    Ok(t1.duration_since(t0).unwrap_or_default().as_millis() as u64)
}

#[tokio::test]
async fn durable_sleep_and_now_replay_on_retry() {
    let dir = tempfile::tempdir().unwrap();
    let runner = Runner::embedded(dir.path()).await.unwrap();
    let elapsed_ms = run_named(
        &runner,
        RunContext::new().name("sleep"),
        sleeps_durably("sleep".into()),
    )
    .await;
    // The retry replays `now` (same t0) and the sleep's recorded wake-up time (already past),
    // so the whole run sleeps about once.
    assert!(elapsed_ms >= 300, "{elapsed_ms}");
    let acts = actions(&runner, "sleep");
    let traces = acts.iter().filter(|a| a.kind == ActionKind::Trace).count();
    assert_eq!(traces, 3, "now, sleep, now");
    // From the recorded attempts: the first slept its 300 ms; the retry replayed the recorded
    // wake-up time, already past, instead of sleeping again (a sleep never ends early, so a
    // second sleep would make the retry last at least 300 ms).
    let root = &acts[0];
    let store = runner.engine().store();
    let run = store.run_by_name("sleep").await.unwrap();
    let failed = store.failed_attempts(run.id, root.id).await.unwrap();
    assert_eq!(failed.len(), 1);
    assert!(failed[0].ended_at - failed[0].started_at >= 300_000);
    let retry_us = root.ended_at.unwrap() - root.started_at.unwrap();
    assert!(retry_us < 300_000, "the retry slept again: {retry_us} µs");
}
