//! The one error type of the crate.

use std::sync::Arc;

/// The error a caller can see from [`submit`](crate::DynamicBatcher::submit) or from awaiting a
/// [`Ticket`](crate::Ticket).
///
/// Batch failures ([`Error::Process`], [`Error::ResultCount`], [`Error::Panicked`]) are given to
/// every record of the failed batch and to no other record: the batcher keeps serving.
/// The error is cheap to clone, which is how one batch failure reaches all of its records.
#[derive(Debug, Clone, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// `submit` was called after `stop()`: the batcher no longer accepts records.
    #[error(
        "the batcher is stopped and accepts no new records; submit before calling stop(), \
         or start a new batcher"
    )]
    Stopped,

    /// `process_fn` returned an error for the batch that held this record.
    #[error("process_fn failed on a batch of {batch_size} records: {source}")]
    Process {
        /// Number of records in the failed batch.
        batch_size: usize,
        /// The error `process_fn` returned.
        source: Arc<dyn std::error::Error + Send + Sync>,
    },

    /// `process_fn` broke its contract of one result per record.
    #[error(
        "process_fn returned {returned} results for a batch of {expected} records; \
         it must return exactly one result per record, in input order"
    )]
    ResultCount {
        /// Number of records given to `process_fn`.
        expected: usize,
        /// Number of results it returned.
        returned: usize,
    },

    /// `process_fn` panicked while processing the batch that held this record.
    #[error("process_fn panicked on a batch of {batch_size} records: {message}")]
    Panicked {
        /// Number of records in the batch.
        batch_size: usize,
        /// The panic message, when it was a string.
        message: String,
    },

    /// The batcher's tasks ended before this record got a result, which happens only when the
    /// tokio runtime that ran them shut down.
    #[error(
        "the batcher's tasks ended before this record got a result \
         (was the tokio runtime that started the batcher shut down?)"
    )]
    Closed,
}

/// What a `process_fn` error must convert into: any `std::error::Error + Send + Sync`,
/// `String`, `&str`, or `anyhow::Error` qualifies.
pub type BoxError = Box<dyn std::error::Error + Send + Sync>;
