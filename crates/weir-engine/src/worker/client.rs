//! A worker's connection to the engine, over any [`WorkerApi`]: the loops that batch child
//! submissions, cancellations and completions, and the one that long-polls child results.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};

use parking_lot::Mutex;
use tokio::sync::{mpsc, oneshot};
use tokio::task::AbortHandle;
use weir_core::ActionId;

use super::api::WorkerApi;
use super::protocol::*;
use super::worker_log::WorkerLog;

type ChildOutcome = Result<serde_bytes::ByteBuf, RemoteError>;

/// A cheap cloneable handle on the worker's connection to the engine.
#[derive(Clone)]
pub(crate) struct WorkerClient {
    inner: Arc<ClientInner>,
}

struct ClientInner {
    api: Arc<dyn WorkerApi>,
    worker: String,
    log: Arc<WorkerLog>,
    next_call: AtomicU64,
    pending: Mutex<HashMap<u64, oneshot::Sender<ChildOutcome>>>,
    submit_tx: mpsc::UnboundedSender<ChildCall>,
    cancel_tx: mpsc::UnboundedSender<u64>,
    complete_tx: mpsc::UnboundedSender<Completion>,
    /// Completions queued but not yet acknowledged by the engine.
    unsent: AtomicUsize,
    /// The control plane's object store, when this worker reads and writes payloads over its
    /// threshold there itself.
    direct: Option<weir_blob::Payloads>,
    /// The engine's object store for reference data (see [`Registered::reference_store`]).
    references: Option<weir_blob::BlobStore>,
    /// The loops, stopped by [`WorkerClient::close`].
    loops: Mutex<Vec<AbortHandle>>,
}

/// Most messages of one kind in one request.
const BATCH: usize = MAX_BATCH;

/// Splits `items` into batches of at most [`BATCH_BYTES`] payload bytes each (an item larger
/// than that travels alone), so that no request goes over the engine's body limit.
fn by_bytes<T>(items: Vec<T>, size: impl Fn(&T) -> usize) -> Vec<Vec<T>> {
    let mut batches = Vec::new();
    let mut batch = Vec::new();
    let mut bytes = 0usize;
    for item in items {
        let n = size(&item);
        if !batch.is_empty() && bytes.saturating_add(n) > BATCH_BYTES {
            batches.push(std::mem::take(&mut batch));
            bytes = 0;
        }
        bytes = bytes.saturating_add(n);
        batch.push(item);
    }
    if !batch.is_empty() {
        batches.push(batch);
    }
    batches
}

fn completion_bytes(c: &Completion) -> usize {
    let log = c.log.as_ref().map_or(0, |l| l.text.len());
    log + match &c.outcome {
        AttemptOutcome::Output(b) => b.len(),
        AttemptOutcome::Stored(r) => r.key.len() + r.hash.len(),
        AttemptOutcome::Error(e) => {
            e.message.len() + e.chain.iter().map(String::len).sum::<usize>()
        }
    }
}

impl WorkerClient {
    /// Starts the batching loops of worker `worker` over `api`.
    pub(crate) fn start(
        api: Arc<dyn WorkerApi>,
        worker: String,
        log: Arc<WorkerLog>,
        direct: Option<weir_blob::Payloads>,
        references: Option<weir_blob::BlobStore>,
    ) -> WorkerClient {
        let (submit_tx, submit_rx) = mpsc::unbounded_channel();
        let (cancel_tx, cancel_rx) = mpsc::unbounded_channel();
        let (complete_tx, complete_rx) = mpsc::unbounded_channel();
        let client = WorkerClient {
            inner: Arc::new(ClientInner {
                api,
                worker,
                log,
                next_call: AtomicU64::new(1),
                pending: Mutex::new(HashMap::new()),
                submit_tx,
                cancel_tx,
                complete_tx,
                unsent: AtomicUsize::new(0),
                direct,
                references,
                loops: Mutex::new(Vec::new()),
            }),
        };
        let loops = vec![
            tokio::spawn(client.clone().submit_loop(submit_rx)).abort_handle(),
            tokio::spawn(client.clone().cancel_loop(cancel_rx)).abort_handle(),
            tokio::spawn(client.clone().complete_loop(complete_rx)).abort_handle(),
            tokio::spawn(client.clone().results_loop()).abort_handle(),
        ];
        *client.inner.loops.lock() = loops;
        client
    }

    /// Stops the loops (the worker is done; what is still queued is dropped).
    pub(crate) fn close(&self) {
        for h in self.inner.loops.lock().drain(..) {
            h.abort();
        }
    }

    pub(crate) fn worker(&self) -> &str {
        &self.inner.worker
    }

    /// The engine.
    pub(crate) fn api(&self) -> &dyn WorkerApi {
        &*self.inner.api
    }

    /// The control plane's object store, when the worker reads and writes payloads over its
    /// threshold there itself (see [`Registered::object_store`]).
    pub(crate) fn direct(&self) -> Option<&weir_blob::Payloads> {
        self.inner.direct.as_ref()
    }

    /// Where this worker reads and writes reference data (`weir::File`): the control plane's
    /// store when it reaches it directly, or its engine's own store.
    pub(crate) fn reference_store(&self) -> Option<weir_blob::BlobStore> {
        if let Some(p) = &self.inner.direct {
            return p.blobs().ok().cloned();
        }
        self.inner.references.clone()
    }

    /// The worker's structured log.
    pub(crate) fn log(&self) -> &WorkerLog {
        &self.inner.log
    }

    /// Queues a completion (sent in the next batch).
    pub(crate) fn complete(&self, completion: Completion) {
        self.inner.unsent.fetch_add(1, Ordering::AcqRel);
        let _ = self.inner.complete_tx.send(completion);
    }

    /// Completions not yet acknowledged.
    pub(crate) fn unsent_completions(&self) -> usize {
        self.inner.unsent.load(Ordering::Acquire)
    }

    /// Submits a child call (its `call` id is assigned here) and waits for its outcome; `None`
    /// when the connection dropped it. Dropping the future cancels the call at the engine.
    pub(crate) async fn call_child(&self, mut call: ChildCall) -> Option<ChildOutcome> {
        let inner = &self.inner;
        call.call = inner.next_call.fetch_add(1, Ordering::Relaxed);
        let (tx, rx) = oneshot::channel();
        inner.pending.lock().insert(call.call, tx);
        let mut guard = CancelGuard {
            client: self.clone(),
            call: call.call,
            armed: true,
        };
        let _ = inner.submit_tx.send(call);
        let outcome = rx.await;
        guard.armed = false;
        outcome.ok()
    }

    async fn submit_loop(self, mut rx: mpsc::UnboundedReceiver<ChildCall>) {
        let mut buf = Vec::new();
        while rx.recv_many(&mut buf, BATCH).await > 0 {
            for calls in by_bytes(std::mem::take(&mut buf), |c| c.inputs.len()) {
                self.submit_batch(calls).await;
            }
        }
    }

    async fn submit_batch(&self, calls: Vec<ChildCall>) {
        let ids: Vec<u64> = calls.iter().map(|c| c.call).collect();
        let batch = SubmitBatch {
            worker: self.inner.worker.clone(),
            calls,
        };
        if let Err(e) = self.api().submit(batch).await {
            let failure = system_error(format!("child call not submitted: {e}"));
            let mut pending = self.inner.pending.lock();
            for id in ids {
                if let Some(tx) = pending.remove(&id) {
                    let _ = tx.send(Err(failure.clone()));
                }
            }
        }
    }

    async fn cancel_loop(self, mut rx: mpsc::UnboundedReceiver<u64>) {
        let mut buf = Vec::new();
        while rx.recv_many(&mut buf, BATCH).await > 0 {
            let msg = CancelCalls {
                worker: self.inner.worker.clone(),
                calls: std::mem::take(&mut buf),
            };
            if let Err(e) = self.api().cancel(msg).await {
                tracing::warn!(error = %e, "could not cancel child calls");
            }
        }
    }

    async fn complete_loop(self, mut rx: mpsc::UnboundedReceiver<Completion>) {
        let mut buf = Vec::new();
        while rx.recv_many(&mut buf, BATCH).await > 0 {
            for completions in by_bytes(std::mem::take(&mut buf), completion_bytes) {
                self.complete_batch(completions).await;
            }
        }
    }

    async fn complete_batch(&self, completions: Vec<Completion>) {
        let n = completions.len();
        let leased: HashMap<u64, (ActionId, u32)> = completions
            .iter()
            .map(|c| (c.lease, (c.action, c.attempt)))
            .collect();
        let batch = CompleteBatch {
            worker: self.inner.worker.clone(),
            completions,
        };
        // Retried until the engine answers: a completion is only lost with the process.
        let mut tries = 0;
        loop {
            match self.api().complete(batch.clone()).await {
                Ok(reply) => {
                    for (lease, why) in reply.rejected {
                        let leased = leased.get(&lease).copied();
                        self.log().rejected(lease, leased, why);
                    }
                    break;
                }
                Err(e) if tries < 20 => {
                    tries += 1;
                    tracing::warn!(error = %e, "completion not delivered, retrying");
                    tokio::time::sleep(std::time::Duration::from_millis(100)).await;
                }
                Err(e) => {
                    self.log().undelivered(n, e.to_string());
                    break;
                }
            }
        }
        self.inner.unsent.fetch_sub(n, Ordering::AcqRel);
    }

    async fn results_loop(self) {
        let req = ResultsRequest {
            worker: self.inner.worker.clone(),
            direct: self.inner.direct.is_some(),
        };
        loop {
            match self.api().results(req.clone()).await {
                Ok(reply) => {
                    let mut pending = self.inner.pending.lock();
                    for r in reply.results {
                        let Some(tx) = pending.remove(&r.call) else {
                            continue;
                        };
                        match r.output_ref {
                            None => {
                                let _ = tx.send(r.outcome);
                            }
                            // Read from the object store on a task of its own: a large output
                            // does not hold up the results of other calls.
                            Some(output) => {
                                let client = self.clone();
                                tokio::spawn(async move {
                                    let _ = tx.send(client.read_child_output(&output).await);
                                });
                            }
                        }
                    }
                    if reply.shutdown {
                        return;
                    }
                }
                Err(e) => {
                    tracing::debug!(error = %e, "results poll failed");
                    tokio::time::sleep(std::time::Duration::from_millis(100)).await;
                }
            }
        }
    }
}

impl WorkerClient {
    /// A child's output the control plane handed over by reference: from the object store,
    /// checked against the reference's size and hash.
    async fn read_child_output(
        &self,
        output: &PayloadRef,
    ) -> Result<serde_bytes::ByteBuf, RemoteError> {
        let why = match self.direct() {
            Some(payloads) => match payloads.load(&output.to_payload()).await {
                Ok(bytes) => return Ok(serde_bytes::ByteBuf::from(bytes.to_vec())),
                Err(e) => e.to_string(),
            },
            None => "this worker has no object store".to_string(),
        };
        Err(system_error(format!(
            "worker {}: a child's output at object {:?}: {why}",
            self.inner.worker, output.key
        )))
    }
}

/// Cancels a child call whose caller stopped waiting.
struct CancelGuard {
    client: WorkerClient,
    call: u64,
    armed: bool,
}

impl Drop for CancelGuard {
    fn drop(&mut self) {
        if self.armed {
            self.client.inner.pending.lock().remove(&self.call);
            let _ = self.client.inner.cancel_tx.send(self.call);
        }
    }
}
