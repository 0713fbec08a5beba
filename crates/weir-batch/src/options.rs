//! The batching limits, with the defaults of SPEC §8.1 (the same as Flyte's `DynamicBatcher`).

use std::time::Duration;

/// The limits a batcher assembles batches under.
///
/// Builders fill these in ([`DynamicBatcherBuilder`](crate::DynamicBatcherBuilder),
/// [`TokenBatcherBuilder`](crate::TokenBatcherBuilder)); a whole set loaded from configuration can
/// be handed over at once with `with_options`. Start from [`BatchOptions::default()`] and change
/// fields, since the struct may grow.
///
/// A batch is handed to `process_fn` as soon as one of these holds:
/// - its cost reached `target_batch_cost` (a record is added while the running cost is below the
///   target, so one record costlier than the target forms a batch of its own);
/// - it holds `max_batch_size` records;
/// - `batch_timeout` has passed since its first record, however small the batch;
/// - `process_fn` is idle and waiting, and the batch holds at least `min_batch_size` records (so
///   an idle consumer is never kept waiting for a fuller batch that it does not need);
/// - the batcher is stopping, or every handle to it was dropped (drain).
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct BatchOptions {
    /// Cost budget of one batch. Default: `32_000`.
    pub target_batch_cost: u64,
    /// Most records in one batch. Default: `256`. Values below 1 act as 1.
    pub max_batch_size: usize,
    /// Fewest records an idle `process_fn` is handed before `batch_timeout` passes. Default: `1`.
    /// Values above `max_batch_size` act as `max_batch_size`.
    pub min_batch_size: usize,
    /// Longest time a batch waits for more records, counted from its first record.
    /// Default: 50 ms.
    pub batch_timeout: Duration,
    /// Records accepted but not yet taken into a batch; `submit` waits while this many are
    /// queued (backpressure). Default: `5_000`. Values below 1 act as 1.
    pub max_queue_size: usize,
    /// Assembled batches that may wait for `process_fn` while it runs the current one.
    /// Default: `2`. Values below 1 act as 1.
    pub prefetch_batches: usize,
    /// Cost of a record when nothing else estimates it. Default: `1`.
    pub default_cost: u64,
}

impl Default for BatchOptions {
    fn default() -> Self {
        BatchOptions {
            target_batch_cost: 32_000,
            max_batch_size: 256,
            min_batch_size: 1,
            batch_timeout: Duration::from_millis(50),
            max_queue_size: 5_000,
            prefetch_batches: 2,
            default_cost: 1,
        }
    }
}

impl BatchOptions {
    /// The options with out-of-range values brought into range, as documented on each field.
    pub(crate) fn normalized(mut self) -> Self {
        self.max_batch_size = self.max_batch_size.max(1);
        self.min_batch_size = self.min_batch_size.clamp(1, self.max_batch_size);
        self.max_queue_size = self.max_queue_size.max(1);
        self.prefetch_batches = self.prefetch_batches.max(1);
        self
    }
}
