//! The reference guide's "before optimization" pipeline — one action per small item — and its
//! "after", batched; `weir advise` measures the first and says how to turn it into the second.
//!
//! ```text
//! cargo run --release -p weir-examples --bin overhead -- run before --input '{"n": 20000}' --name before
//! cargo run --release -p weir-examples --bin overhead -- advise before
//! cargo run --release -p weir-examples --bin overhead -- run after --input '{"n": 20000, "k": K}' --name after
//! cargo run --release -p weir-examples --bin overhead -- get tasks after
//! ```
//! (the README's walk-through shows the figures). It is the weir command line for these tasks.

use std::sync::LazyLock;
use std::time::{Duration, Instant};

use weir::prelude::*;

static ITEMS: LazyLock<TaskEnvironment> = LazyLock::new(|| TaskEnvironment::new("items"));

/// About 20 µs of work on one item.
fn work(i: u64) -> u64 {
    let t = Instant::now();
    let mut h = i;
    while t.elapsed() < Duration::from_micros(20) {
        h = h
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
    }
    h >> 60
}

/// One item per action (the guide's `process_item`).
#[weir::task(env = ITEMS)]
async fn process_item(i: u64) -> Result<u64> {
    Ok(work(i))
}

/// Many items per action (the guide's `process_batch`): a result per item, in order.
#[weir::task(env = ITEMS)]
async fn process_batch(items: Vec<u64>) -> Result<Vec<u64>> {
    Ok(items.into_iter().map(work).collect())
}

/// Before: `n` items, one action each.
#[weir::task(env = ITEMS)]
async fn before(n: u64) -> Result<u64> {
    Ok(weir::map(process_item, 0..n)
        .fail_fast()
        .await?
        .into_iter()
        .sum())
}

/// After: `n` items, `k` per action.
#[weir::task(env = ITEMS)]
async fn after(n: u64, k: u64) -> Result<u64> {
    Ok(weir::map(process_batch, 0..n)
        .batch(k as usize)
        .fail_fast()
        .await?
        .into_iter()
        .sum())
}

fn main() -> std::process::ExitCode {
    weir::cli::main()
}
