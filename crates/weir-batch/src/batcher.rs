//! The `DynamicBatcher` handle, its builder and the `Ticket` future.

use std::fmt;
use std::future::Future;
use std::marker::PhantomData;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::sync::{mpsc, oneshot};

use crate::cost::{self, CostEstimator};
use crate::engine::{self, Entry, Shared};
use crate::error::{BoxError, Error};
use crate::options::BatchOptions;
use crate::stats::Stats;

/// A function that estimates a record's cost, set with
/// [`cost_estimator`](DynamicBatcherBuilder::cost_estimator).
type Estimator<R> = Arc<dyn Fn(&R) -> u64 + Send + Sync>;

/// Where a record's cost comes from, in order of precedence (after an explicit cost).
struct Costing<R> {
    estimator: Option<Estimator<R>>,
    record_cost: fn(&R) -> Option<u64>,
}

impl<R> Clone for Costing<R> {
    fn clone(&self) -> Self {
        Costing {
            estimator: self.estimator.clone(),
            record_cost: self.record_cost,
        }
    }
}

/// A running batcher: many producers [`submit`](Self::submit) records, and one `process_fn`
/// receives them in batches assembled under [`BatchOptions`].
///
/// The handle is cheap to clone (one `Arc`); all clones feed the same batcher. Call
/// [`stop`](Self::stop) to drain it, or use
/// [`run_scoped`](DynamicBatcherBuilder::run_scoped), which always stops. Dropping every handle
/// without `stop` is fine too: the records already submitted are still processed, then the
/// batcher's tasks end.
///
/// Build one with [`DynamicBatcher::builder`]; see the [crate docs](crate) for an example.
pub struct DynamicBatcher<R, T> {
    inner: Arc<Inner<R, T>>,
}

struct Inner<R, T> {
    queue: mpsc::Sender<Entry<R, T>>,
    shared: Arc<Shared>,
    costing: Costing<R>,
    options: BatchOptions,
}

impl<R, T> Clone for DynamicBatcher<R, T> {
    fn clone(&self) -> Self {
        DynamicBatcher {
            inner: Arc::clone(&self.inner),
        }
    }
}

impl<R, T> fmt::Debug for DynamicBatcher<R, T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DynamicBatcher")
            .field("options", &self.inner.options)
            .field("stopped", &self.is_stopped())
            .finish_non_exhaustive()
    }
}

impl<R: CostEstimator, T> DynamicBatcher<R, T> {
    /// A builder with the default [`BatchOptions`]. The record's own
    /// [`estimate_cost`](CostEstimator::estimate_cost) is used when no explicit cost or
    /// estimator function applies.
    pub fn builder() -> DynamicBatcherBuilder<R, T> {
        DynamicBatcherBuilder::with_record_cost(cost::record_cost::<R>)
    }
}

impl<R, T> DynamicBatcher<R, T> {
    /// Queues `record` and returns a [`Ticket`] that resolves to its result.
    ///
    /// Waits while `max_queue_size` records are already queued (backpressure). The record's cost
    /// comes from the builder's estimator function, else the record's `estimate_cost()`, else
    /// the default cost.
    ///
    /// Dropping the ticket before the record's batch starts cancels the record: it is not given
    /// to `process_fn`.
    ///
    /// # Errors
    /// [`Error::Stopped`] once [`stop`](Self::stop) was called.
    pub async fn submit(&self, record: R) -> Result<Ticket<T>, Error> {
        let cost = self.cost_of(&record);
        self.enqueue(record, cost).await
    }

    /// Like [`submit`](Self::submit), with an explicit cost that overrides every estimate.
    ///
    /// # Errors
    /// [`Error::Stopped`] once [`stop`](Self::stop) was called.
    pub async fn submit_with_cost(&self, record: R, cost: u64) -> Result<Ticket<T>, Error> {
        self.enqueue(record, cost).await
    }

    /// Submits every record in order and returns their tickets in the same order.
    ///
    /// # Errors
    /// [`Error::Stopped`] once [`stop`](Self::stop) was called; the tickets of records
    /// submitted before that are dropped, which cancels those records.
    pub async fn submit_many(
        &self,
        records: impl IntoIterator<Item = R>,
    ) -> Result<Vec<Ticket<T>>, Error> {
        let records = records.into_iter();
        let mut tickets = Vec::with_capacity(records.size_hint().0);
        for record in records {
            tickets.push(self.submit(record).await?);
        }
        Ok(tickets)
    }

    /// Submits `record` and waits for its result: `submit(record).await?.await`.
    ///
    /// # Errors
    /// [`Error::Stopped`] if the batcher is stopped, or the failure of the record's batch.
    pub async fn process(&self, record: R) -> Result<T, Error> {
        self.submit(record).await?.await
    }

    /// Stops accepting records, waits until every record already submitted has its result, and
    /// ends the batcher's tasks. Later `submit`s fail with [`Error::Stopped`].
    ///
    /// Stopping through one handle stops all clones. Calling it again just waits for the same end.
    /// Do not await it inside `process_fn`: it waits for `process_fn` to return.
    pub async fn stop(&self) {
        let shared = &self.inner.shared;
        shared.stopping.store(true, Ordering::Release);
        shared.stop_requested.notify_one();
        let mut finished = shared.finished.clone();
        // An error means the processing task is gone (runtime shutdown): nothing left to wait for.
        let _ = finished.wait_for(|done| *done).await;
    }

    /// Whether the batcher no longer accepts records.
    pub fn is_stopped(&self) -> bool {
        self.inner.shared.stopping.load(Ordering::Acquire) || self.inner.queue.is_closed()
    }

    /// A snapshot of the batcher's counters.
    pub fn stats(&self) -> Stats {
        let queue = &self.inner.queue;
        let queued = queue.max_capacity() - queue.capacity();
        self.inner.shared.stats.snapshot(queued)
    }

    /// The options the batcher runs with (after bringing out-of-range values into range).
    pub fn options(&self) -> &BatchOptions {
        &self.inner.options
    }

    /// The cost of `record` under the precedence: estimator fn, record estimate, default.
    pub(crate) fn cost_of(&self, record: &R) -> u64 {
        let costing = &self.inner.costing;
        match &costing.estimator {
            Some(estimate) => estimate(record),
            None => (costing.record_cost)(record).unwrap_or(self.inner.options.default_cost),
        }
    }

    async fn enqueue(&self, record: R, cost: u64) -> Result<Ticket<T>, Error> {
        let shared = &self.inner.shared;
        if shared.stopping.load(Ordering::Acquire) {
            return Err(Error::Stopped);
        }
        let (reply, result) = oneshot::channel();
        let entry = Entry {
            record,
            cost,
            reply,
        };
        match self.inner.queue.send(entry).await {
            Ok(()) => Ok(Ticket { result }),
            Err(_) if shared.stopping.load(Ordering::Acquire) => Err(Error::Stopped),
            Err(_) => Err(Error::Closed),
        }
    }
}

/// The future result of one submitted record, returned by
/// [`submit`](DynamicBatcher::submit). Await it for `Result<T, Error>`.
///
/// Dropping a ticket before its record's batch starts cancels the record.
#[must_use = "dropping a ticket cancels its record; await it to get the result"]
pub struct Ticket<T> {
    result: oneshot::Receiver<Result<T, Error>>,
}

impl<T> fmt::Debug for Ticket<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Ticket").finish_non_exhaustive()
    }
}

impl<T> Future for Ticket<T> {
    type Output = Result<T, Error>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        Pin::new(&mut self.result)
            .poll(cx)
            .map(|received| received.unwrap_or(Err(Error::Closed)))
    }
}

/// Configures and starts a [`DynamicBatcher`]. Every default is that of [`BatchOptions`].
///
/// ```
/// use std::time::Duration;
/// use weir_batch::DynamicBatcher;
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), weir_batch::Error> {
/// let batcher = DynamicBatcher::builder()
///     .target_batch_cost(1_000)
///     .max_batch_size(64)
///     .batch_timeout(Duration::from_millis(5))
///     .start(|batch: Vec<String>| async move {
///         Ok::<_, std::convert::Infallible>(batch.into_iter().map(|s| s.len()).collect())
///     });
/// assert_eq!(batcher.process("four".to_owned()).await?, 4);
/// batcher.stop().await;
/// # Ok(())
/// # }
/// ```
pub struct DynamicBatcherBuilder<R, T> {
    options: BatchOptions,
    costing: Costing<R>,
    results: PhantomData<fn() -> T>,
}

impl<R, T> Clone for DynamicBatcherBuilder<R, T> {
    fn clone(&self) -> Self {
        DynamicBatcherBuilder {
            options: self.options.clone(),
            costing: self.costing.clone(),
            results: PhantomData,
        }
    }
}

impl<R, T> fmt::Debug for DynamicBatcherBuilder<R, T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DynamicBatcherBuilder")
            .field("options", &self.options)
            .field("cost_estimator", &self.costing.estimator.is_some())
            .finish()
    }
}

impl<R, T> DynamicBatcherBuilder<R, T> {
    pub(crate) fn with_record_cost(record_cost: fn(&R) -> Option<u64>) -> Self {
        DynamicBatcherBuilder {
            options: BatchOptions::default(),
            costing: Costing {
                estimator: None,
                record_cost,
            },
            results: PhantomData,
        }
    }

    /// Replaces every limit at once, for options loaded from configuration.
    pub fn with_options(mut self, options: BatchOptions) -> Self {
        self.options = options;
        self
    }

    /// The options set so far.
    pub fn options(&self) -> &BatchOptions {
        &self.options
    }

    /// Cost budget of one batch. Default: `32_000`.
    pub fn target_batch_cost(mut self, cost: u64) -> Self {
        self.options.target_batch_cost = cost;
        self
    }

    /// Most records in one batch. Default: `256`.
    ///
    /// # Panics
    /// If `size` is 0.
    pub fn max_batch_size(mut self, size: usize) -> Self {
        assert!(size > 0, "max_batch_size must be at least 1");
        self.options.max_batch_size = size;
        self
    }

    /// Fewest records an idle `process_fn` is handed before the batch timeout passes; at the
    /// timeout the batch goes however small it is. Default: `1`.
    pub fn min_batch_size(mut self, size: usize) -> Self {
        self.options.min_batch_size = size;
        self
    }

    /// Longest time a batch waits for more records, counted from its first record.
    /// Default: 50 ms.
    pub fn batch_timeout(mut self, timeout: Duration) -> Self {
        self.options.batch_timeout = timeout;
        self
    }

    /// Records that may wait to be batched before `submit` waits (backpressure). Default: `5_000`.
    ///
    /// # Panics
    /// If `size` is 0.
    pub fn max_queue_size(mut self, size: usize) -> Self {
        assert!(size > 0, "max_queue_size must be at least 1");
        self.options.max_queue_size = size;
        self
    }

    /// Batches assembled ahead while `process_fn` runs. Default: `2`.
    ///
    /// # Panics
    /// If `batches` is 0.
    pub fn prefetch_batches(mut self, batches: usize) -> Self {
        assert!(batches > 0, "prefetch_batches must be at least 1");
        self.options.prefetch_batches = batches;
        self
    }

    /// Cost of a record that nothing else estimates. Default: `1`.
    pub fn default_cost(mut self, cost: u64) -> Self {
        self.options.default_cost = cost;
        self
    }

    /// Estimates every record's cost with `estimate`, which takes precedence over the record's
    /// own `estimate_cost()` (an explicit cost at submit still wins). Default: none.
    pub fn cost_estimator(mut self, estimate: impl Fn(&R) -> u64 + Send + Sync + 'static) -> Self {
        self.costing.estimator = Some(Arc::new(estimate));
        self
    }

    /// Starts the batcher on the current tokio runtime.
    ///
    /// `process_fn` gets each batch and must return one result per record, in the same order;
    /// an error, a wrong number of results or a panic fails that batch's records only.
    ///
    /// # Panics
    /// If called outside a tokio runtime.
    pub fn start<F, Fut, E>(self, process_fn: F) -> DynamicBatcher<R, T>
    where
        R: Send + 'static,
        T: Send + 'static,
        F: FnMut(Vec<R>) -> Fut + Send + 'static,
        Fut: Future<Output = Result<Vec<T>, E>> + Send + 'static,
        E: Into<BoxError> + 'static,
    {
        let options = self.options.normalized();
        let (queue, shared) = engine::spawn(&options, process_fn);
        DynamicBatcher {
            inner: Arc::new(Inner {
                queue,
                shared,
                costing: self.costing,
                options,
            }),
        }
    }

    /// Starts the batcher, runs `body` with a handle to it, then stops it (draining every record
    /// submitted) and returns what `body` returned. The batcher is stopped even if `body` panics;
    /// the panic then continues once the batcher has drained.
    ///
    /// # Panics
    /// If called outside a tokio runtime, or when `body` panics.
    pub async fn run_scoped<F, Fut, E, B, BodyFut>(self, process_fn: F, body: B) -> BodyFut::Output
    where
        R: Send + 'static,
        T: Send + 'static,
        F: FnMut(Vec<R>) -> Fut + Send + 'static,
        Fut: Future<Output = Result<Vec<T>, E>> + Send + 'static,
        E: Into<BoxError> + 'static,
        B: FnOnce(DynamicBatcher<R, T>) -> BodyFut,
        BodyFut: Future,
    {
        let batcher = self.start(process_fn);
        let outcome = engine::catch_unwind_future(body(batcher.clone())).await;
        batcher.stop().await;
        match outcome {
            Ok(output) => output,
            Err(payload) => std::panic::resume_unwind(payload),
        }
    }
}
