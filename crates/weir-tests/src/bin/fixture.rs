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

fn main() -> std::process::ExitCode {
    weir::cli::main()
}
