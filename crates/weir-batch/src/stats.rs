//! Counters of a running batcher.

use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use tokio::time::Instant;

/// A snapshot of a batcher's counters, from [`stats()`](crate::DynamicBatcher::stats).
///
/// Counters of a batch are updated before its results are handed out, so a caller that has
/// awaited its results sees them counted.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
#[non_exhaustive]
pub struct Stats {
    /// Records accepted by `submit` (and its variants).
    pub total_submitted: u64,
    /// Records that got a result.
    pub total_completed: u64,
    /// Records that got an error because their batch failed.
    pub total_failed: u64,
    /// Records skipped before `process_fn` because their caller dropped its ticket.
    pub total_cancelled: u64,
    /// Calls of `process_fn`.
    pub total_batches: u64,
    /// Sum of the costs of the records given to `process_fn`.
    pub total_cost: u64,
    /// Records per `process_fn` call.
    pub avg_batch_size: f64,
    /// Cost per `process_fn` call.
    pub avg_batch_cost: f64,
    /// Time spent inside `process_fn`.
    pub busy_time: Duration,
    /// Time the processing loop waited for a batch since the batcher started (including a wait
    /// still going on).
    pub idle_time: Duration,
    /// `busy_time / (busy_time + idle_time)`, or 0 before anything was measured.
    pub utilization: f64,
    /// Records accepted but not yet taken into a batch.
    pub queued: usize,
}

/// Where the engine writes its counters: `received` by the assembly loop, the rest by the
/// processing loop once per batch, under a mutex that `stats()` briefly shares.
#[derive(Debug)]
pub(crate) struct Recorder {
    received: AtomicU64,
    totals: Mutex<Totals>,
}

#[derive(Debug, Default)]
struct Totals {
    completed: u64,
    failed: u64,
    cancelled: u64,
    batches: u64,
    records: u64,
    cost: u64,
    busy: Duration,
    idle: Duration,
    waiting_since: Option<Instant>,
}

/// What one batch added.
pub(crate) struct BatchOutcome {
    pub(crate) records: u64,
    pub(crate) cost: u64,
    pub(crate) busy: Duration,
    pub(crate) succeeded: bool,
}

impl Recorder {
    pub(crate) fn new() -> Self {
        Recorder {
            received: AtomicU64::new(0),
            totals: Mutex::new(Totals::default()),
        }
    }

    fn totals(&self) -> std::sync::MutexGuard<'_, Totals> {
        // Counters stay meaningful even if a thread panicked while holding the lock.
        self.totals
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Counts records the assembly loop took from the queue; only that loop writes it, so
    /// producers share no counter.
    pub(crate) fn received(&self, records: usize) {
        self.received.fetch_add(records as u64, Ordering::Relaxed);
    }

    pub(crate) fn wait_started(&self, at: Instant) {
        self.totals().waiting_since = Some(at);
    }

    pub(crate) fn wait_ended(&self, at: Instant) {
        let mut totals = self.totals();
        if let Some(since) = totals.waiting_since.take() {
            totals.idle += at.saturating_duration_since(since);
        }
    }

    pub(crate) fn cancelled(&self, records: u64) {
        self.totals().cancelled += records;
    }

    pub(crate) fn batch_done(&self, outcome: BatchOutcome) {
        let mut totals = self.totals();
        totals.batches += 1;
        totals.records += outcome.records;
        totals.cost = totals.cost.saturating_add(outcome.cost);
        totals.busy += outcome.busy;
        if outcome.succeeded {
            totals.completed += outcome.records;
        } else {
            totals.failed += outcome.records;
        }
    }

    pub(crate) fn snapshot(&self, queued: usize) -> Stats {
        let totals = self.totals();
        let ongoing_wait = totals
            .waiting_since
            .map_or(Duration::ZERO, |since| since.elapsed());
        let idle = totals.idle + ongoing_wait;
        let busy = totals.busy;
        let measured = (busy + idle).as_secs_f64();
        let per_batch = |total: f64| {
            if totals.batches == 0 {
                0.0
            } else {
                total / totals.batches as f64
            }
        };
        Stats {
            // Accepted records are either taken from the queue already or still in it.
            total_submitted: self.received.load(Ordering::Relaxed) + queued as u64,
            total_completed: totals.completed,
            total_failed: totals.failed,
            total_cancelled: totals.cancelled,
            total_batches: totals.batches,
            total_cost: totals.cost,
            avg_batch_size: per_batch(totals.records as f64),
            avg_batch_cost: per_batch(totals.cost as f64),
            busy_time: busy,
            idle_time: idle,
            utilization: if measured > 0.0 {
                busy.as_secs_f64() / measured
            } else {
                0.0
            },
            queued,
        }
    }
}
