//! The two loops behind a batcher handle.
//!
//! Producers push [`Entry`]s into a bounded queue (`max_queue_size`, the backpressure). The
//! *assembly loop* drains it with `recv_many` into batches and hands them over a second bounded
//! queue of `prefetch_batches` slots. The *processing loop* calls `process_fn` on one batch at a
//! time and answers each record through its oneshot channel. There is no task per record.
//!
//! The processing loop raises `consumer_waiting` when it finds no batch ready; the assembly loop
//! then closes its open batch early (once it holds `min_batch_size` records) instead of waiting
//! for it to fill, so `process_fn` is never idle while records are queued.

use std::any::Any;
use std::future::Future;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::pin::pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::task::Poll;

use tokio::sync::mpsc::error::TryRecvError;
use tokio::sync::{Notify, mpsc, oneshot, watch};
use tokio::time::Instant;

use crate::error::{BoxError, Error};
use crate::options::BatchOptions;
use crate::stats::{BatchOutcome, Recorder};

/// Where a record's result goes.
pub(crate) type Reply<T> = oneshot::Sender<Result<T, Error>>;

/// One submitted record, as it travels through the queue.
pub(crate) struct Entry<R, T> {
    pub(crate) record: R,
    pub(crate) cost: u64,
    pub(crate) reply: Reply<T>,
}

/// State shared by the handles and the two loops. It holds no queue sender, so the loops never
/// keep the queue open: dropping every handle closes it and lets the loops drain and end.
pub(crate) struct Shared {
    /// Set by `stop()`; `submit` checks it before queueing.
    pub(crate) stopping: AtomicBool,
    /// Wakes the assembly loop so that it closes the queue.
    pub(crate) stop_requested: Notify,
    /// The processing loop is waiting for a batch.
    consumer_waiting: AtomicBool,
    /// Wakes the assembly loop when `consumer_waiting` is raised.
    consumer_hungry: Notify,
    pub(crate) stats: Recorder,
    /// Becomes `true` when the processing loop ended (and is closed if its task was dropped).
    pub(crate) finished: watch::Receiver<bool>,
}

/// Records and their reply channels, index for index.
struct Batch<R, T> {
    records: Vec<R>,
    replies: Vec<(Reply<T>, u64)>,
    cost: u64,
}

impl<R, T> Batch<R, T> {
    fn with_capacity(capacity: usize) -> Self {
        Batch {
            records: Vec::with_capacity(capacity),
            replies: Vec::with_capacity(capacity),
            cost: 0,
        }
    }

    fn len(&self) -> usize {
        self.records.len()
    }

    fn is_empty(&self) -> bool {
        self.records.is_empty()
    }

    fn push(&mut self, entry: Entry<R, T>) {
        self.cost = self.cost.saturating_add(entry.cost);
        self.records.push(entry.record);
        self.replies.push((entry.reply, entry.cost));
    }
}

/// The size and cost limits that close a batch.
#[derive(Clone, Copy)]
struct Limits {
    target_cost: u64,
    max_size: usize,
}

impl Limits {
    /// A record is added while the running cost is below the target, so the first record always
    /// fits, however costly.
    fn is_full(self, len: usize, cost: u64) -> bool {
        len >= self.max_size || (len > 0 && cost >= self.target_cost)
    }
}

/// Spawns both loops on the current tokio runtime and returns the queue's sending side.
pub(crate) fn spawn<R, T, F, Fut, E>(
    options: &BatchOptions,
    process_fn: F,
) -> (mpsc::Sender<Entry<R, T>>, Arc<Shared>)
where
    R: Send + 'static,
    T: Send + 'static,
    F: FnMut(Vec<R>) -> Fut + Send + 'static,
    Fut: Future<Output = Result<Vec<T>, E>> + Send + 'static,
    E: Into<BoxError> + 'static,
{
    let (queue_tx, queue_rx) = mpsc::channel(options.max_queue_size);
    let (batch_tx, batch_rx) = mpsc::channel(options.prefetch_batches);
    let (finished_tx, finished_rx) = watch::channel(false);
    let shared = Arc::new(Shared {
        stopping: AtomicBool::new(false),
        stop_requested: Notify::new(),
        consumer_waiting: AtomicBool::new(false),
        consumer_hungry: Notify::new(),
        stats: Recorder::new(),
        finished: finished_rx,
    });
    let assembly = Assembly {
        queue: queue_rx,
        batches: batch_tx,
        shared: Arc::clone(&shared),
        limits: Limits {
            target_cost: options.target_batch_cost,
            max_size: options.max_batch_size,
        },
        min_size: options.min_batch_size,
        timeout: options.batch_timeout,
    };
    tokio::spawn(assembly.run());
    tokio::spawn(process_batches(
        batch_rx,
        process_fn,
        Arc::clone(&shared),
        finished_tx,
    ));
    (queue_tx, shared)
}

struct Assembly<R, T> {
    queue: mpsc::Receiver<Entry<R, T>>,
    batches: mpsc::Sender<Batch<R, T>>,
    shared: Arc<Shared>,
    limits: Limits,
    min_size: usize,
    timeout: std::time::Duration,
}

impl<R, T> Assembly<R, T> {
    async fn run(mut self) {
        // Records received but not yet placed: what `recv_many` brought past a cost cut.
        let mut carried: Vec<Entry<R, T>> = Vec::with_capacity(self.limits.max_size);
        let mut queue_open = true;
        let mut stopping = false;
        let deadline = tokio::time::sleep(self.timeout);
        let mut deadline = pin!(deadline);

        while queue_open || !carried.is_empty() {
            // Assemble only into a free prefetch slot; while none is free, records stay in the
            // queue and producers feel the backpressure.
            let Ok(slot) = self.batches.reserve().await else {
                return; // The processing loop is gone (its runtime is shutting down).
            };
            let mut batch = Batch::with_capacity(self.limits.max_size);
            loop {
                if !carried.is_empty() {
                    if batch.is_empty() {
                        deadline.as_mut().reset(Instant::now() + self.timeout);
                    }
                    self.take_carried(&mut carried, &mut batch);
                }
                if self.limits.is_full(batch.len(), batch.cost) {
                    break;
                }
                if !queue_open {
                    break; // Drain: nothing more will come.
                }
                let want = self.limits.max_size - batch.len();
                let min_reached = batch.len() >= self.min_size;
                let has_records = !batch.is_empty();
                tokio::select! {
                    // Records first: an idle consumer still gets everything already queued.
                    biased;
                    received = self.queue.recv_many(&mut carried, want) => {
                        self.shared.stats.received(received);
                        if received == 0 {
                            queue_open = false;
                        }
                    }
                    () = consumer_waiting(&self.shared), if min_reached => break,
                    () = &mut deadline, if has_records => break,
                    () = self.shared.stop_requested.notified(), if !stopping => {
                        // Refuse new records but keep what is queued: it is drained below.
                        stopping = true;
                        self.queue.close();
                    }
                }
            }
            if batch.is_empty() {
                break;
            }
            // The consumer gets this batch, so it is no longer a reason to close the next early.
            self.shared.consumer_waiting.store(false, Ordering::Relaxed);
            slot.send(batch);
        }
    }

    /// Moves records from `carried` into `batch` until it is full, keeping their order.
    fn take_carried(&self, carried: &mut Vec<Entry<R, T>>, batch: &mut Batch<R, T>) {
        let (mut len, mut cost, mut take) = (batch.len(), batch.cost, 0);
        for entry in carried.iter() {
            if self.limits.is_full(len, cost) {
                break;
            }
            len += 1;
            cost = cost.saturating_add(entry.cost);
            take += 1;
        }
        for entry in carried.drain(..take) {
            batch.push(entry);
        }
    }
}

/// Resolves once the processing loop is waiting for a batch.
async fn consumer_waiting(shared: &Shared) {
    loop {
        // `notify_one` stores a permit, so a flag raised after the check below still wakes us.
        let hungry = shared.consumer_hungry.notified();
        if shared.consumer_waiting.load(Ordering::Acquire) {
            return;
        }
        hungry.await;
    }
}

async fn process_batches<R, T, F, Fut, E>(
    mut batches: mpsc::Receiver<Batch<R, T>>,
    mut process_fn: F,
    shared: Arc<Shared>,
    finished: watch::Sender<bool>,
) where
    F: FnMut(Vec<R>) -> Fut,
    Fut: Future<Output = Result<Vec<T>, E>>,
    E: Into<BoxError> + 'static,
{
    loop {
        let batch = match batches.try_recv() {
            Ok(batch) => batch,
            Err(TryRecvError::Disconnected) => break,
            Err(TryRecvError::Empty) => {
                shared.stats.wait_started(Instant::now());
                shared.consumer_waiting.store(true, Ordering::Release);
                shared.consumer_hungry.notify_one();
                let next = batches.recv().await;
                shared.consumer_waiting.store(false, Ordering::Relaxed);
                shared.stats.wait_ended(Instant::now());
                match next {
                    Some(batch) => batch,
                    None => break,
                }
            }
        };
        run_batch(batch, &mut process_fn, &shared.stats).await;
    }
    // Ignored error: no `stop()` is waiting when every handle is gone.
    let _ = finished.send(true);
}

async fn run_batch<R, T, F, Fut, E>(batch: Batch<R, T>, process_fn: &mut F, stats: &Recorder)
where
    F: FnMut(Vec<R>) -> Fut,
    Fut: Future<Output = Result<Vec<T>, E>>,
    E: Into<BoxError> + 'static,
{
    let Batch {
        mut records,
        mut replies,
        mut cost,
    } = batch;

    // Records whose caller dropped its ticket are not worth processing.
    if replies.iter().any(|(reply, _)| reply.is_closed()) {
        let before = records.len();
        let mut kept_records = Vec::with_capacity(before);
        let mut kept_replies = Vec::with_capacity(before);
        for (record, (reply, record_cost)) in records.into_iter().zip(replies) {
            if reply.is_closed() {
                cost = cost.saturating_sub(record_cost);
            } else {
                kept_records.push(record);
                kept_replies.push((reply, record_cost));
            }
        }
        stats.cancelled((before - kept_records.len()) as u64);
        records = kept_records;
        replies = kept_replies;
        if records.is_empty() {
            return;
        }
    }

    let batch_size = records.len();
    let started = Instant::now();
    let outcome = call_guarded(process_fn, records).await;
    let busy = started.elapsed();
    let outcome = match outcome {
        Ok(Ok(results)) if results.len() == batch_size => Ok(results),
        Ok(Ok(results)) => Err(Error::ResultCount {
            expected: batch_size,
            returned: results.len(),
        }),
        Ok(Err(error)) => Err(Error::Process {
            batch_size,
            source: Arc::from(error.into()),
        }),
        Err(payload) => Err(Error::Panicked {
            batch_size,
            message: panic_message(payload.as_ref()),
        }),
    };
    // Count first, so that a caller who saw its result also sees it in `stats()`.
    stats.batch_done(BatchOutcome {
        records: batch_size as u64,
        cost,
        busy,
        succeeded: outcome.is_ok(),
    });
    // A send fails only when the caller dropped its ticket meanwhile; nobody is left to tell.
    match outcome {
        Ok(results) => {
            for ((reply, _), result) in replies.into_iter().zip(results) {
                let _ = reply.send(Ok(result));
            }
        }
        Err(error) => {
            for (reply, _) in replies {
                let _ = reply.send(Err(error.clone()));
            }
        }
    }
}

/// Calls `process_fn` and polls its future, turning a panic in either into an `Err`.
async fn call_guarded<R, T, F, Fut, E>(
    process_fn: &mut F,
    records: Vec<R>,
) -> Result<Result<Vec<T>, E>, Box<dyn Any + Send>>
where
    F: FnMut(Vec<R>) -> Fut,
    Fut: Future<Output = Result<Vec<T>, E>>,
{
    // After a panic the batcher only ever calls `process_fn` again, as a thread pool reuses a
    // worker after a panicking job; a `process_fn` with state it cannot trust must not panic.
    let future = catch_unwind(AssertUnwindSafe(|| process_fn(records)))?;
    catch_unwind_future(future).await
}

/// Polls `future` to completion, turning a panic into an `Err` with its payload.
pub(crate) async fn catch_unwind_future<F: Future>(
    future: F,
) -> Result<F::Output, Box<dyn Any + Send>> {
    let mut future = pin!(future);
    std::future::poll_fn(
        |cx| match catch_unwind(AssertUnwindSafe(|| future.as_mut().poll(cx))) {
            Ok(Poll::Pending) => Poll::Pending,
            Ok(Poll::Ready(output)) => Poll::Ready(Ok(output)),
            Err(payload) => Poll::Ready(Err(payload)),
        },
    )
    .await
}

fn panic_message(payload: &(dyn Any + Send)) -> String {
    if let Some(message) = payload.downcast_ref::<&str>() {
        (*message).to_owned()
    } else if let Some(message) = payload.downcast_ref::<String>() {
        message.clone()
    } else {
        "non-string panic payload".to_owned()
    }
}
