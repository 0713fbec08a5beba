//! `TokenBatcher`: the same engine, budgeted in tokens, for LLM-style inference.

use std::fmt;
use std::future::Future;
use std::time::Duration;

use crate::batcher::{DynamicBatcher, DynamicBatcherBuilder, Ticket};
use crate::cost::{self, TokenEstimator};
use crate::error::{BoxError, Error};
use crate::options::BatchOptions;
use crate::stats::Stats;

/// A [`DynamicBatcher`] whose cost is a token count: batches are assembled under a token budget
/// ([`target_batch_tokens`](TokenBatcherBuilder::target_batch_tokens)).
///
/// A record's tokens come from, in order: the count given to
/// [`submit_with_tokens`](Self::submit_with_tokens), the builder's
/// [`token_estimator`](TokenBatcherBuilder::token_estimator), the record's
/// [`estimate_tokens()`](TokenEstimator::estimate_tokens), its
/// [`estimate_cost()`](crate::CostEstimator::estimate_cost), and the builder's
/// [`default_tokens`](TokenBatcherBuilder::default_tokens). In [`Stats`], costs are tokens.
///
/// ```
/// use weir_batch::{Prompt, TokenBatcher};
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), weir_batch::Error> {
/// let batcher = TokenBatcher::builder()
///     .target_batch_tokens(32_000)
///     .max_batch_size(256)
///     .start(|batch: Vec<Prompt>| async move {
///         // A real model would generate here.
///         Ok::<_, std::convert::Infallible>(
///             batch.into_iter().map(|p| p.text.to_uppercase()).collect(),
///         )
///     });
/// let answer = batcher.submit(Prompt::new("what is 2+2?")).await?.await?;
/// assert_eq!(answer, "WHAT IS 2+2?");
/// batcher.stop().await;
/// # Ok(())
/// # }
/// ```
pub struct TokenBatcher<R, T> {
    batcher: DynamicBatcher<R, T>,
}

impl<R, T> Clone for TokenBatcher<R, T> {
    fn clone(&self) -> Self {
        TokenBatcher {
            batcher: self.batcher.clone(),
        }
    }
}

impl<R, T> fmt::Debug for TokenBatcher<R, T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("TokenBatcher").field(&self.batcher).finish()
    }
}

impl<R: TokenEstimator, T> TokenBatcher<R, T> {
    /// A builder with the default [`BatchOptions`] (32 000 tokens per batch, ...).
    pub fn builder() -> TokenBatcherBuilder<R, T> {
        TokenBatcherBuilder {
            builder: DynamicBatcherBuilder::with_record_cost(cost::record_tokens::<R>),
        }
    }
}

impl<R, T> TokenBatcher<R, T> {
    /// Queues `record` and returns a [`Ticket`] for its result; waits while the queue is full.
    /// See [`DynamicBatcher::submit`].
    ///
    /// # Errors
    /// [`Error::Stopped`] once [`stop`](Self::stop) was called.
    pub async fn submit(&self, record: R) -> Result<Ticket<T>, Error> {
        self.batcher.submit(record).await
    }

    /// Like [`submit`](Self::submit), with an explicit token count that overrides every estimate.
    ///
    /// # Errors
    /// [`Error::Stopped`] once [`stop`](Self::stop) was called.
    pub async fn submit_with_tokens(&self, record: R, tokens: u64) -> Result<Ticket<T>, Error> {
        self.batcher.submit_with_cost(record, tokens).await
    }

    /// Submits every record in order; see [`DynamicBatcher::submit_many`].
    ///
    /// # Errors
    /// [`Error::Stopped`] once [`stop`](Self::stop) was called.
    pub async fn submit_many(
        &self,
        records: impl IntoIterator<Item = R>,
    ) -> Result<Vec<Ticket<T>>, Error> {
        self.batcher.submit_many(records).await
    }

    /// Submits `record` and waits for its result.
    ///
    /// # Errors
    /// [`Error::Stopped`] if the batcher is stopped, or the failure of the record's batch.
    pub async fn process(&self, record: R) -> Result<T, Error> {
        self.batcher.process(record).await
    }

    /// Drains every record submitted and ends the batcher; see [`DynamicBatcher::stop`].
    pub async fn stop(&self) {
        self.batcher.stop().await;
    }

    /// Whether the batcher no longer accepts records.
    pub fn is_stopped(&self) -> bool {
        self.batcher.is_stopped()
    }

    /// A snapshot of the counters; costs are tokens.
    pub fn stats(&self) -> Stats {
        self.batcher.stats()
    }

    /// The options the batcher runs with; `target_batch_cost` is the token budget.
    pub fn options(&self) -> &BatchOptions {
        self.batcher.options()
    }

    /// The underlying [`DynamicBatcher`] (the same batcher, with cost-named methods).
    pub fn as_dynamic(&self) -> &DynamicBatcher<R, T> {
        &self.batcher
    }
}

/// Configures and starts a [`TokenBatcher`]. Defaults are those of [`BatchOptions`].
pub struct TokenBatcherBuilder<R, T> {
    builder: DynamicBatcherBuilder<R, T>,
}

impl<R, T> Clone for TokenBatcherBuilder<R, T> {
    fn clone(&self) -> Self {
        TokenBatcherBuilder {
            builder: self.builder.clone(),
        }
    }
}

impl<R, T> fmt::Debug for TokenBatcherBuilder<R, T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("TokenBatcherBuilder")
            .field(&self.builder)
            .finish()
    }
}

impl<R, T> TokenBatcherBuilder<R, T> {
    /// Replaces every limit at once (`target_batch_cost` and `default_cost` are in tokens).
    pub fn with_options(self, options: BatchOptions) -> Self {
        self.map(|b| b.with_options(options))
    }

    /// The options set so far.
    pub fn options(&self) -> &BatchOptions {
        self.builder.options()
    }

    /// Token budget of one batch. Default: `32_000`.
    pub fn target_batch_tokens(self, tokens: u64) -> Self {
        self.map(|b| b.target_batch_cost(tokens))
    }

    /// Most records in one batch. Default: `256`.
    ///
    /// # Panics
    /// If `size` is 0.
    pub fn max_batch_size(self, size: usize) -> Self {
        self.map(|b| b.max_batch_size(size))
    }

    /// Fewest records an idle `inference_fn` is handed before the batch timeout passes.
    /// Default: `1`.
    pub fn min_batch_size(self, size: usize) -> Self {
        self.map(|b| b.min_batch_size(size))
    }

    /// Longest time a batch waits for more records, counted from its first record.
    /// Default: 50 ms.
    pub fn batch_timeout(self, timeout: Duration) -> Self {
        self.map(|b| b.batch_timeout(timeout))
    }

    /// Records that may wait to be batched before `submit` waits. Default: `5_000`.
    ///
    /// # Panics
    /// If `size` is 0.
    pub fn max_queue_size(self, size: usize) -> Self {
        self.map(|b| b.max_queue_size(size))
    }

    /// Batches assembled ahead while `inference_fn` runs. Default: `2`.
    ///
    /// # Panics
    /// If `batches` is 0.
    pub fn prefetch_batches(self, batches: usize) -> Self {
        self.map(|b| b.prefetch_batches(batches))
    }

    /// Tokens of a record that nothing else estimates. Default: `1`.
    pub fn default_tokens(self, tokens: u64) -> Self {
        self.map(|b| b.default_cost(tokens))
    }

    /// Counts every record's tokens with `estimate`, which takes precedence over the record's own
    /// estimates (an explicit count at submit still wins). Default: none.
    pub fn token_estimator(self, estimate: impl Fn(&R) -> u64 + Send + Sync + 'static) -> Self {
        self.map(|b| b.cost_estimator(estimate))
    }

    /// Starts the batcher on the current tokio runtime; `inference_fn` must return one result per
    /// record, in order. See [`DynamicBatcherBuilder::start`].
    ///
    /// # Panics
    /// If called outside a tokio runtime.
    pub fn start<F, Fut, E>(self, inference_fn: F) -> TokenBatcher<R, T>
    where
        R: Send + 'static,
        T: Send + 'static,
        F: FnMut(Vec<R>) -> Fut + Send + 'static,
        Fut: Future<Output = Result<Vec<T>, E>> + Send + 'static,
        E: Into<BoxError> + 'static,
    {
        TokenBatcher {
            batcher: self.builder.start(inference_fn),
        }
    }

    /// Starts the batcher, runs `body` with it, then stops it; see
    /// [`DynamicBatcherBuilder::run_scoped`].
    ///
    /// # Panics
    /// If called outside a tokio runtime, or when `body` panics.
    pub async fn run_scoped<F, Fut, E, B, BodyFut>(
        self,
        inference_fn: F,
        body: B,
    ) -> BodyFut::Output
    where
        R: Send + 'static,
        T: Send + 'static,
        F: FnMut(Vec<R>) -> Fut + Send + 'static,
        Fut: Future<Output = Result<Vec<T>, E>> + Send + 'static,
        E: Into<BoxError> + 'static,
        B: FnOnce(TokenBatcher<R, T>) -> BodyFut,
        BodyFut: Future,
    {
        self.builder
            .run_scoped(inference_fn, |batcher| body(TokenBatcher { batcher }))
            .await
    }

    fn map(
        self,
        set: impl FnOnce(DynamicBatcherBuilder<R, T>) -> DynamicBatcherBuilder<R, T>,
    ) -> Self {
        TokenBatcherBuilder {
            builder: set(self.builder),
        }
    }
}
