//! w5: the dynamic batcher (`weir_batch`), SPEC §8 and `BENCHMARKS.md`.
//!
//! - w5a, throughput: 8 concurrent producers submit small records to a batcher with a trivial
//!   `process_fn` (max_batch_size 64, batch_timeout 10 ms), then await their results.
//! - w5b, utilization: `process_fn` sleeps 10 ms per batch (a simulated GPU step) while 8
//!   producers each pause 1 ms between records; the batcher must keep the "GPU" busy.
//!
//! Both follow the reference idiom: a producer submits its records one by one, keeping the
//! tickets, and awaits the results at the end.

use std::convert::Infallible;
use std::time::{Duration, Instant};

use weir_batch::DynamicBatcher;

/// Producers feeding the batcher concurrently in both workloads.
const PRODUCERS: u64 = 8;

/// Outcome of w5a.
#[derive(Debug, Clone)]
pub struct W5aResult {
    /// Wall time from the first submit until the batcher was stopped (drained).
    pub seconds: f64,
    /// Records processed.
    pub records: u64,
    /// `records / seconds`.
    pub records_per_s: f64,
    /// Records per `process_fn` call.
    pub avg_batch_size: f64,
    /// `process_fn` calls.
    pub batches: u64,
}

/// Outcome of w5b.
#[derive(Debug, Clone)]
pub struct W5bResult {
    /// Wall time from the first submit until the batcher was stopped (drained).
    pub seconds: f64,
    /// Records processed.
    pub records: u64,
    /// Busy time of `process_fn` over busy plus idle time, from the batcher's stats.
    pub utilization: f64,
    /// `process_fn` calls.
    pub batches: u64,
    /// Records per `process_fn` call.
    pub avg_batch_size: f64,
}

/// The records of producer `p` out of `n`: a contiguous share, the first ones one longer.
fn share(n: usize, p: u64) -> std::ops::Range<u64> {
    let (base, extra) = (n as u64 / PRODUCERS, n as u64 % PRODUCERS);
    let start = p * base + p.min(extra);
    let len = base + u64::from(p < extra);
    start..start + len
}

/// Sum of `2 * i` for `i` in `0..n`, what both workloads must get back.
fn expected_sum(n: usize) -> u64 {
    let n = n as u64;
    n * n.saturating_sub(1)
}

/// w5a: batcher throughput with a trivial `process_fn` (doubling each record).
///
/// # Panics
/// If a record fails or a result is wrong (the workload checks its sum).
pub async fn w5a(n: usize) -> W5aResult {
    let batcher = DynamicBatcher::builder()
        .max_batch_size(64)
        .batch_timeout(Duration::from_millis(10))
        .start(|batch: Vec<u64>| {
            std::future::ready(Ok::<_, Infallible>(
                batch.into_iter().map(|x| x * 2).collect(),
            ))
        });

    let started = Instant::now();
    let producers: Vec<_> = (0..PRODUCERS)
        .map(|p| {
            let batcher = batcher.clone();
            let records = share(n, p);
            tokio::spawn(async move {
                let mut tickets = Vec::with_capacity(records.clone().count());
                for record in records {
                    tickets.push(batcher.submit(record).await.expect("w5a: submit failed"));
                }
                let mut sum = 0u64;
                for ticket in tickets {
                    sum += ticket.await.expect("w5a: record failed");
                }
                sum
            })
        })
        .collect();
    let mut sum = 0;
    for producer in producers {
        sum += producer.await.expect("w5a: producer panicked");
    }
    batcher.stop().await;
    let seconds = started.elapsed().as_secs_f64();
    assert_eq!(sum, expected_sum(n), "w5a: wrong results");

    let stats = batcher.stats();
    assert_eq!(stats.total_completed, n as u64, "w5a: records lost");
    W5aResult {
        seconds,
        records: stats.total_completed,
        records_per_s: stats.total_completed as f64 / seconds,
        avg_batch_size: stats.avg_batch_size,
        batches: stats.total_batches,
    }
}

/// w5b: utilization of a `process_fn` that takes 10 ms per batch, fed by 8 producers that each
/// pause 1 ms between records. The batcher runs with the default options.
///
/// # Panics
/// If a record fails or a result is wrong (the workload checks its sum).
pub async fn w5b(n: usize) -> W5bResult {
    let batcher = DynamicBatcher::builder().start(|batch: Vec<u64>| async move {
        tokio::time::sleep(Duration::from_millis(10)).await; // the simulated GPU step
        Ok::<_, Infallible>(batch.into_iter().map(|x| x * 2).collect())
    });

    let started = Instant::now();
    let producers: Vec<_> = (0..PRODUCERS)
        .map(|p| {
            let batcher = batcher.clone();
            let records = share(n, p);
            tokio::spawn(async move {
                let mut tickets = Vec::with_capacity(records.clone().count());
                for record in records {
                    tickets.push(batcher.submit(record).await.expect("w5b: submit failed"));
                    tokio::time::sleep(Duration::from_millis(1)).await; // loading the next record
                }
                let mut sum = 0u64;
                for ticket in tickets {
                    sum += ticket.await.expect("w5b: record failed");
                }
                sum
            })
        })
        .collect();
    let mut sum = 0;
    for producer in producers {
        sum += producer.await.expect("w5b: producer panicked");
    }
    batcher.stop().await;
    let seconds = started.elapsed().as_secs_f64();
    assert_eq!(sum, expected_sum(n), "w5b: wrong results");

    let stats = batcher.stats();
    assert_eq!(stats.total_completed, n as u64, "w5b: records lost");
    W5bResult {
        seconds,
        records: stats.total_completed,
        utilization: stats.utilization,
        batches: stats.total_batches,
        avg_batch_size: stats.avg_batch_size,
    }
}
