//! w8: 100 000 tiny items (~20 µs of CPU each) mapped one per action, against
//! `weir::map(..).auto_batch()` (see `weir::auto_batch_size`): embedded in process (`w8`), and
//! with the items in a reusable environment of worker processes (`w8p`: 2 replicas × 8).

use std::sync::LazyLock;
use std::time::{Duration, Instant};

use weir::prelude::*;

static W8: LazyLock<TaskEnvironment> = LazyLock::new(|| TaskEnvironment::new("w8"));
static W8_ROOT: LazyLock<TaskEnvironment> = LazyLock::new(|| {
    TaskEnvironment::new("w8root").reuse(ReusePolicy::new().replicas(1..=1).concurrency(1))
});
static W8_POOL: LazyLock<TaskEnvironment> = LazyLock::new(|| {
    TaskEnvironment::new("w8pool").reuse(ReusePolicy::new().replicas(2..=2).concurrency(8))
});

/// About 20 µs of CPU.
pub(crate) fn work(x: u64) -> u64 {
    let end = Instant::now() + Duration::from_micros(20);
    let mut acc = x;
    while Instant::now() < end {
        acc = acc.wrapping_mul(6364136223846793005).wrapping_add(1);
        std::hint::black_box(acc);
    }
    x + 1
}

#[weir::task(env = W8)]
async fn w8_item(x: u64) -> Result<u64> {
    Ok(work(x))
}

#[weir::task(env = W8)]
async fn w8_items(xs: Vec<u64>) -> Result<Vec<u64>> {
    Ok(xs.into_iter().map(work).collect())
}

#[weir::task(env = W8)]
async fn w8_unbatched(n: u64) -> Result<u64> {
    Ok(weir::map(w8_item, 0..n)
        .fail_fast()
        .await?
        .into_iter()
        .sum())
}

#[weir::task(env = W8)]
async fn w8_batched(n: u64) -> Result<u64> {
    Ok(weir::map(w8_items, 0..n)
        .auto_batch()
        .fail_fast()
        .await?
        .into_iter()
        .sum())
}

#[weir::task(env = W8_POOL)]
async fn w8p_item(x: u64) -> Result<u64> {
    Ok(work(x))
}

#[weir::task(env = W8_POOL)]
async fn w8p_items(xs: Vec<u64>) -> Result<Vec<u64>> {
    Ok(xs.into_iter().map(work).collect())
}

#[weir::task(env = W8_ROOT)]
async fn w8p_unbatched(n: u64) -> Result<u64> {
    Ok(weir::map(w8p_item, 0..n)
        .fail_fast()
        .await?
        .into_iter()
        .sum())
}

#[weir::task(env = W8_ROOT)]
async fn w8p_batched(n: u64) -> Result<u64> {
    Ok(weir::map(w8p_items, 0..n)
        .auto_batch()
        .fail_fast()
        .await?
        .into_iter()
        .sum())
}

/// One w8 measurement.
#[derive(Debug, Clone)]
pub struct W8Result {
    pub unbatched_seconds: f64,
    pub batched_seconds: f64,
    /// The k `.auto_batch()` recorded.
    pub batch_size: u64,
    /// Actions of the batched run's map (the two probes included).
    pub batched_actions: usize,
}

/// The k recorded by the run's `weir.auto_batch` trace and the number of batch actions.
async fn chosen(runner: &Runner, run: &str, item_task: &str) -> anyhow::Result<(u64, usize)> {
    runner.engine().flush()?;
    let store = runner.engine().store();
    let rec = store.run_by_name(run).await?;
    let page = weir_store::Page {
        offset: 0,
        limit: 1_000_000,
    };
    let actions = store.list_actions(rec.id, page).await?;
    let batches = actions
        .iter()
        .filter(|a| a.task.ends_with(item_task))
        .count();
    let trace = actions
        .iter()
        .find(|a| a.task == "weir.auto_batch")
        .ok_or_else(|| anyhow::anyhow!("no weir.auto_batch trace in run {run}"))?;
    let full = store
        .action(rec.id, trace.id)
        .await?
        .ok_or_else(|| anyhow::anyhow!("trace action gone"))?;
    let k = match full.output {
        Some(weir_core::Payload::Inline(b)) => weir_core::codec::decode::<u64>(&b)?,
        other => anyhow::bail!("unexpected trace output {other:?}"),
    };
    Ok((k, batches))
}

/// `processes`: the items run in worker processes of a reusable environment.
pub async fn w8(n: u64, processes: bool) -> anyhow::Result<W8Result> {
    let dir = tempfile::tempdir()?;
    let mut options = weir::EngineOptions::new(dir.path());
    if processes {
        options = options.with_worker_processes();
    }
    let runner = Runner::with_options(options).await?;
    let expected = n * (n + 1) / 2;
    // A warm-up (worker processes started, pages cached), not measured.
    let warm = match processes {
        true => runner.run(w8p_unbatched(100)).await?,
        false => runner.run(w8_unbatched(100)).await?,
    };
    warm.wait().await?;
    let t = Instant::now();
    let run = match processes {
        true => runner.run(w8p_unbatched(n)).await?,
        false => runner.run(w8_unbatched(n)).await?,
    };
    let out = run.wait().await?;
    let unbatched_seconds = t.elapsed().as_secs_f64();
    anyhow::ensure!(out == expected, "wrong result {out}");
    let t = Instant::now();
    let run = match processes {
        true => runner.run(w8p_batched(n)).await?,
        false => runner.run(w8_batched(n)).await?,
    };
    let name = run.name().to_string();
    let out = run.wait().await?;
    let batched_seconds = t.elapsed().as_secs_f64();
    anyhow::ensure!(out == expected, "wrong result {out}");
    let item = if processes { "w8p_items" } else { "w8_items" };
    let (batch_size, batched_actions) = chosen(&runner, &name, item).await?;
    runner.engine().flush()?;
    Ok(W8Result {
        unbatched_seconds,
        batched_seconds,
        batch_size,
        batched_actions,
    })
}
