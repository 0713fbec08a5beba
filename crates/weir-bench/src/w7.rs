//! w7: worker processes (SPEC §7), with the process executor of the embedded engine.
//!
//! - `w7_reusable(n)`: a root task fans out `n` trivial actions with `weir::map` to an
//!   environment with `ReusePolicy { replicas: 2..=2, concurrency: 8 }`; throughput in actions
//!   per second, measured after a warm-up run so that the replicas are already up.
//! - `w7_fresh(n)`: a root task calls a trivial task of an environment without a reuse policy
//!   `n` times in sequence; each call starts a fresh worker process. The per-action cost is the
//!   median latency of one call as seen by the parent (process start, lease, run, complete,
//!   commit, result).
//!
//! The bench binary is started again as the workers (`weir-bench worker --env ...`), so its
//! `main` hands `worker` arguments to `weir::cli::main()`.

use std::sync::LazyLock;
use std::time::Instant;

use weir::prelude::*;

static W7_ROOT: LazyLock<TaskEnvironment> = LazyLock::new(|| {
    TaskEnvironment::new("w7root").reuse(ReusePolicy::new().replicas(1..=1).concurrency(1))
});
static W7_REUSE: LazyLock<TaskEnvironment> = LazyLock::new(|| {
    TaskEnvironment::new("w7reuse").reuse(ReusePolicy::new().replicas(2..=2).concurrency(8))
});
static W7_FRESH: LazyLock<TaskEnvironment> = LazyLock::new(|| TaskEnvironment::new("w7fresh"));

/// A trivial action in the reusable environment.
#[weir::task(env = W7_REUSE)]
async fn w7_inc(x: u64) -> Result<u64> {
    Ok(x + 1)
}

/// A trivial action in a fresh process.
#[weir::task(env = W7_FRESH)]
async fn w7_once(x: u64) -> Result<u64> {
    Ok(x + 1)
}

/// Fans `n` `w7_inc` calls out at once.
#[weir::task(env = W7_ROOT)]
async fn w7_fan(n: u64) -> Result<u64> {
    Ok(weir::map(w7_inc, 0..n).fail_fast().await?.into_iter().sum())
}

/// Calls `w7_once` `n` times in sequence; returns each call's latency in microseconds.
#[weir::task(env = W7_ROOT)]
async fn w7_seq(n: u64) -> Result<Vec<u64>> {
    let mut lat = Vec::with_capacity(n as usize);
    for i in 0..n {
        let t = Instant::now();
        w7_once(i).await?;
        lat.push(t.elapsed().as_micros() as u64);
    }
    Ok(lat)
}

/// Outcome of a w7 measurement.
#[derive(Debug, Clone)]
pub struct W7Result {
    /// Actions measured.
    pub n: usize,
    /// Wall time of the measured run.
    pub seconds: f64,
    /// `n / seconds`.
    pub actions_per_s: f64,
    /// Median per-action latency in milliseconds (w7_fresh; for w7_reusable `seconds / n`).
    pub median_action_ms: f64,
    /// 90th percentile per-action latency in milliseconds (w7_fresh only; else 0).
    pub p90_action_ms: f64,
    /// Worker processes started in all (warm-up included).
    pub workers_started: usize,
}

async fn runner() -> (tempfile::TempDir, Runner) {
    let dir = tempfile::tempdir().expect("temporary state directory");
    let options = weir::EngineOptions::new(dir.path()).with_worker_processes();
    let runner = Runner::with_options(options).await.expect("engine opens");
    (dir, runner)
}

fn workers_started(dir: &std::path::Path) -> usize {
    weir::worker::read_snapshot(dir).replicas.len()
}

/// w7, reusable environment: throughput of `n` trivial actions (replicas 2, concurrency 8).
pub async fn w7_reusable(n: usize) -> W7Result {
    let (dir, runner) = runner().await;
    // Warm-up: starts the root's and the environment's replicas.
    let warm = runner.run(w7_fan(64)).await.expect("warm-up starts");
    warm.wait().await.expect("warm-up succeeds");
    let t = Instant::now();
    let run = runner.run(w7_fan(n as u64)).await.expect("run starts");
    let sum = run.wait().await.expect("run succeeds");
    let seconds = t.elapsed().as_secs_f64();
    assert_eq!(sum, (n as u64) * (n as u64 + 1) / 2);
    runner
        .engine()
        .shutdown_workers(std::time::Duration::from_secs(2))
        .await;
    W7Result {
        n,
        seconds,
        actions_per_s: n as f64 / seconds,
        median_action_ms: seconds * 1e3 / n as f64,
        p90_action_ms: 0.0,
        workers_started: workers_started(dir.path()),
    }
}

/// w7, environment without a reuse policy: median cost of one action in a fresh process.
pub async fn w7_fresh(n: usize) -> W7Result {
    let (dir, runner) = runner().await;
    let warm = runner.run(w7_seq(2)).await.expect("warm-up starts");
    warm.wait().await.expect("warm-up succeeds");
    let t = Instant::now();
    let run = runner.run(w7_seq(n as u64)).await.expect("run starts");
    let mut lat = run.wait().await.expect("run succeeds");
    let seconds = t.elapsed().as_secs_f64();
    runner
        .engine()
        .shutdown_workers(std::time::Duration::from_secs(2))
        .await;
    lat.sort_unstable();
    let pick = |q: f64| lat[((lat.len() - 1) as f64 * q) as usize] as f64 / 1e3;
    W7Result {
        n,
        seconds,
        actions_per_s: n as f64 / seconds,
        median_action_ms: pick(0.5),
        p90_action_ms: pick(0.9),
        workers_started: workers_started(dir.path()),
    }
}
