//! Batched `map` in the embedded engine: k items per action, per-item results in input order,
//! the batch size `.auto_batch()` chooses recorded and replayed by a retried parent.

use std::collections::HashMap;
use std::sync::{LazyLock, Mutex};

use weir::Runner;
use weir::prelude::*;

static ENV: LazyLock<TaskEnvironment> = LazyLock::new(|| TaskEnvironment::new("bm"));

/// Executions per key (tests run in parallel in one process).
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

/// The guide's `process_batch`: squares each item; counts its executions under `tag`.
#[weir::task(env = ENV)]
async fn squares(tag: String, items: Vec<u64>) -> Result<Vec<u64>> {
    bump(&tag);
    Ok(items.into_iter().map(|x| x * x).collect())
}

/// Drops the last result of every batch: a broken batched task.
#[weir::task(env = ENV)]
async fn short_by_one(items: Vec<u64>) -> Result<Vec<u64>> {
    let mut v = items;
    v.pop();
    Ok(v)
}

/// Fails batches holding a multiple of 10 (but 0).
#[weir::task(env = ENV)]
async fn fails_on_tens(items: Vec<u64>) -> Result<Vec<u64>> {
    if items.iter().any(|x| x % 10 == 0 && *x > 0) {
        return Err(Error::non_recoverable("a ten in the batch"));
    }
    Ok(items)
}

#[weir::task(env = ENV)]
async fn batched(tag: String, n: u64, k: usize) -> Result<Vec<u64>> {
    weir::map(move |b| squares(tag.clone(), b), 0..n)
        .batch(k)
        .concurrency(3)
        .fail_fast()
        .await
}

#[weir::task(env = ENV)]
async fn broken(n: u64) -> Result<Vec<u64>> {
    weir::map(short_by_one, 0..n).batch(4).fail_fast().await
}

#[weir::task(env = ENV)]
async fn per_item(n: u64) -> Result<Vec<String>> {
    let out = weir::map(fails_on_tens, 0..n).batch(5).await;
    Ok(out
        .into_iter()
        .map(|r| match r {
            Ok(x) => x.to_string(),
            Err(e) => format!("error: {}", e.message()),
        })
        .collect())
}

#[tokio::test]
async fn k_items_go_to_each_action_and_results_come_back_flat_in_input_order() {
    let (_d, runner) = runner().await;
    let tag = "fixed".to_string();
    let run = runner
        .with_context(RunContext::new().name("fixed"))
        .run(batched(tag.clone(), 50, 7))
        .await
        .unwrap();
    let out = run.wait().await.unwrap();
    assert_eq!(out, (0..50u64).map(|x| x * x).collect::<Vec<_>>());
    let acts = actions(&runner, "fixed");
    let children: Vec<_> = acts
        .iter()
        .filter(|a| a.task.ends_with("squares"))
        .collect();
    // 50 items, 7 per action: 8 actions (the last of 1 item), each run once.
    assert_eq!(children.len(), 8);
    assert_eq!(COUNTS.lock().unwrap()[&tag], 8);
    assert!(
        children
            .iter()
            .all(|a| a.group.as_deref() == Some("squares_map")),
        "{:?}",
        children.iter().map(|a| &a.group).collect::<Vec<_>>()
    );
}

#[tokio::test]
async fn a_batch_with_another_number_of_results_fails_naming_the_counts() {
    let (_d, runner) = runner().await;
    let run = runner.run(broken(10)).await.unwrap();
    let e = run.wait().await.unwrap_err();
    let text = format!("{e} {:?}", e.child());
    assert!(
        text.contains("a batch of 4 items returned 3 results"),
        "{text}"
    );
}

#[tokio::test]
async fn a_failed_batch_fails_each_of_its_items_and_only_those() {
    let (_d, runner) = runner().await;
    let run = runner.run(per_item(23)).await.unwrap();
    let out = run.wait().await.unwrap();
    assert_eq!(out.len(), 23);
    for (i, r) in out.iter().enumerate() {
        // Batches of 5: 10..15 and 20..23 hold a ten.
        let failed = (10..15).contains(&i) || (20..23).contains(&i);
        assert_eq!(
            r.starts_with("error: ") && r.contains("a ten in the batch"),
            failed,
            "{i}: {r}"
        );
        if !failed {
            assert_eq!(r, &i.to_string());
        }
    }
}

/// About `us` microseconds of CPU per item.
fn spin(us: u64) {
    let end = std::time::Instant::now() + std::time::Duration::from_micros(us);
    while std::time::Instant::now() < end {
        std::hint::spin_loop();
    }
}

#[weir::task(env = ENV)]
async fn spun(tag: String, items: Vec<u64>) -> Result<Vec<u64>> {
    bump(&tag);
    Ok(items
        .into_iter()
        .map(|x| {
            spin(50);
            x + 1
        })
        .collect())
}

/// `.auto_batch()` over `n` items, then fails its first attempt (retried once).
#[weir::task(env = ENV, retries = 1)]
async fn auto(tag: String, n: u64) -> Result<Vec<u64>> {
    let t = tag.clone();
    let out = weir::map(move |b| spun(t.clone(), b), 0..n)
        .auto_batch()
        .fail_fast()
        .await?;
    if bump(&format!("{tag}-parent")) == 1 {
        return Err(Error::msg("the first attempt fails after its map"));
    }
    Ok(out)
}

#[tokio::test]
async fn auto_batch_records_its_choice_and_a_retried_parent_makes_the_same_batches() {
    let (_d, runner) = runner().await;
    let tag = "auto".to_string();
    let n = 2_000u64;
    let run = runner
        .with_context(RunContext::new().name("auto"))
        .run(auto(tag.clone(), n))
        .await
        .unwrap();
    let out = run.wait().await.unwrap();
    assert_eq!(out, (1..=n).collect::<Vec<_>>());
    let acts = actions(&runner, "auto");
    let choice: Vec<_> = acts
        .iter()
        .filter(|a| a.task == "weir.auto_batch")
        .collect();
    assert_eq!(choice.len(), 1, "the choice is recorded once");
    let store = runner.engine().store();
    let run_id = futures::executor::block_on(store.run_by_name("auto"))
        .unwrap()
        .id;
    let recorded = futures::executor::block_on(store.action(run_id, choice[0].id))
        .unwrap()
        .unwrap();
    let k: u64 = match &recorded.output {
        Some(weir_core::Payload::Inline(b)) => weir_core::codec::decode(b).unwrap(),
        other => panic!("the choice's output: {other:?}"),
    };
    assert!(k >= 1);
    // Two probes (1 and 16 items), then batches of k.
    let batches = acts.iter().filter(|a| a.task.ends_with("spun")).count() as u64;
    assert_eq!(batches, 2 + (n - 17).div_ceil(k), "k = {k}");
    // The retried parent made the same batches: each ran once.
    assert_eq!(COUNTS.lock().unwrap()[&tag], batches);
    eprintln!("auto_batch chose k = {k} for {n} items of ~50 µs ({batches} actions)");
}
