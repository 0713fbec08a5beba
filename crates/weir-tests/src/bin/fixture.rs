//! A user program for weir's integration tests: a few tasks and `weir::cli::main()`.

use std::io::Write;
use std::sync::LazyLock;
use std::time::Duration;

use weir::prelude::*;

static FX: LazyLock<TaskEnvironment> = LazyLock::new(|| TaskEnvironment::new("fx"));

fn log_line(log: &str, line: String) {
    if log.is_empty() {
        return;
    }
    let mut f = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(log)
        .expect("log file opens");
    f.write_all(format!("{line}\n").as_bytes())
        .expect("log line written");
}

/// Records one execution of `i`, sleeps, returns `i * 2`.
#[weir::task(env = FX)]
async fn child(i: u64, sleep_ms: u64, log: String) -> Result<u64> {
    log_line(&log, format!("start {i}"));
    tokio::time::sleep(Duration::from_millis(sleep_ms)).await;
    log_line(&log, format!("end {i}"));
    Ok(i * 2)
}

/// Fans `child` out over `0..n`, `width` at a time, and sums the results.
#[weir::task(env = FX)]
async fn fanout(n: u64, width: usize, sleep_ms: u64, log: String) -> Result<u64> {
    let log2 = log.clone();
    let results = weir::map(move |i| child(i, sleep_ms, log2.clone()), 0..n)
        .concurrency(width)
        .fail_fast()
        .await?;
    log_line(&log, "parent done".into());
    Ok(results.into_iter().sum())
}

/// Adds two numbers.
#[weir::task(env = FX)]
async fn add(a: i64, b: i64) -> Result<i64> {
    Ok(a + b)
}

/// Always fails without retry.
#[weir::task(env = FX, retries = 3)]
async fn refuse(reason: String) -> Result<u64> {
    Err(Error::non_recoverable(reason))
}

/// A checkpointed step: logs, sleeps, returns `i`.
#[weir::trace]
async fn step(i: u64, log: String) -> Result<u64> {
    log_line(&log, format!("step {i}"));
    tokio::time::sleep(Duration::from_millis(40)).await;
    Ok(i)
}

/// A checkpointed stream: logs each item as it is produced.
#[weir::trace]
fn produce(n: u64, log: String) -> impl futures::Stream<Item = u64> {
    use futures::StreamExt;
    futures::stream::iter(0..n).then(move |i| {
        let log = log.clone();
        async move {
            log_line(&log, format!("item {i}"));
            tokio::time::sleep(Duration::from_millis(10)).await;
            i * 3
        }
    })
}

/// Ten traces in sequence, then a stream trace, then a pause (a window to kill the process).
#[weir::task(env = FX)]
async fn traced_job(log: String, pause_ms: u64) -> Result<u64> {
    use futures::StreamExt;
    let mut sum = 0;
    for i in 0..10 {
        sum += step(i, log.clone()).await?;
    }
    let items: Vec<u64> = produce(5, log.clone()).collect().await;
    log_line(&log, "streamed".into());
    tokio::time::sleep(Duration::from_millis(pause_ms)).await;
    log_line(&log, "job done".into());
    Ok(sum + items.iter().sum::<u64>())
}

/// Cached under version v1; logs each real execution.
#[weir::task(env = FX, cache = "v1")]
async fn cached_add(a: i64, b: i64, log: String) -> Result<i64> {
    log_line(&log, "cached_add".into());
    Ok(a + b)
}

/// Calls the cached task.
#[weir::task(env = FX)]
async fn call_cached(a: i64, b: i64, log: String) -> Result<i64> {
    cached_add(a, b, log).await
}

fn main() -> std::process::ExitCode {
    weir::cli::main()
}
