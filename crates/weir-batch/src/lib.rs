//! Dynamic batching (`weir::batch`, SPEC §8): many async producers submit records one at a
//! time, and a single consumer — typically a model's batched forward pass — receives them in
//! batches assembled under a cost budget.
//!
//! - [`DynamicBatcher`] assembles batches under [`BatchOptions`]: a cost budget, a maximum and
//!   a minimum size, a timeout counted from a batch's first record, a bounded queue whose
//!   fullness makes [`submit`](DynamicBatcher::submit) wait (backpressure), and batches assembled
//!   ahead while the previous one runs. An idle consumer is handed whatever is ready (at least
//!   `min_batch_size` records) instead of waiting for a full batch, so it is never idle while
//!   records are queued.
//! - A record's cost comes from the cost given at submit, else the builder's estimator function,
//!   else the record's [`CostEstimator::estimate_cost`], else the default cost.
//! - [`TokenBatcher`] is the same engine budgeted in tokens ([`TokenEstimator`], [`Prompt`]).
//! - Results come back in order. An error, a wrong number of results or a panic in `process_fn`
//!   fails exactly that batch's records with an [`Error`]; the batcher keeps serving. Records
//!   whose caller dropped its [`Ticket`] are skipped before `process_fn`.
//! - [`stats()`](DynamicBatcher::stats) reports counts, average batch size and cost, busy and
//!   idle time, and utilization.
//!
//! Two tasks run per batcher (one assembles batches, one calls `process_fn`); there is no task
//! per record.
//!
//! # Example
//!
//! ```
//! use std::time::Duration;
//! use weir_batch::{CostEstimator, DynamicBatcher};
//!
//! /// A record that knows its own cost.
//! struct Sentence(String);
//! impl CostEstimator for Sentence {
//!     fn estimate_cost(&self) -> Option<u64> {
//!         Some(self.0.len() as u64)
//!     }
//! }
//!
//! # #[tokio::main]
//! # async fn main() -> Result<(), weir_batch::Error> {
//! // Stand-in for a batched model call: one result per record, in order.
//! let embed = |batch: Vec<Sentence>| async move {
//!     Ok::<_, String>(batch.iter().map(|s| s.0.split(' ').count()).collect::<Vec<_>>())
//! };
//!
//! let words = DynamicBatcher::builder()
//!     .target_batch_cost(4_096)
//!     .max_batch_size(64)
//!     .batch_timeout(Duration::from_millis(10))
//!     .run_scoped(embed, |batcher| async move {
//!         // Producers submit concurrently; each gets a ticket to await later.
//!         let mut tickets = Vec::new();
//!         for text in ["a b c", "hello world", "one"] {
//!             tickets.push(batcher.submit(Sentence(text.to_owned())).await?);
//!         }
//!         let mut words = Vec::new();
//!         for ticket in tickets {
//!             words.push(ticket.await?);
//!         }
//!         assert!(batcher.stats().total_batches >= 1);
//!         Ok::<_, weir_batch::Error>(words)
//!     })
//!     .await?; // the batcher is stopped (drained) here
//! assert_eq!(words, [3, 2, 1]);
//! # Ok(())
//! # }
//! ```

mod batcher;
mod cost;
mod engine;
mod error;
mod options;
mod stats;
mod token;

pub use batcher::{DynamicBatcher, DynamicBatcherBuilder, Ticket};
pub use cost::{CostEstimator, Prompt, TokenEstimator};
pub use error::{BoxError, Error};
pub use options::BatchOptions;
pub use stats::Stats;
pub use token::{TokenBatcher, TokenBatcherBuilder};
