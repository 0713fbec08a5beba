//! A worker's connection to a replicated control plane: the worker protocol over HTTP to one
//! replica at a time, moving to the next when the current one cannot be reached. On a move the
//! worker registers again and submits its open child calls again (admission is idempotent by
//! action id, and answers what already ended from the store), so a replica's death loses no
//! outcome a task waits for.

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use parking_lot::Mutex;

use crate::worker::protocol::*;
use crate::worker::{ApiFuture, Error, HttpClient, Refusal, WorkerApi};

/// How long a worker keeps trying the replicas before it gives up.
const GIVE_UP_AFTER: Duration = Duration::from_secs(60);

/// The worker protocol over HTTP to the first reachable of several replicas.
pub struct FailoverClient {
    clients: Vec<HttpClient>,
    current: AtomicUsize,
    credential: Mutex<Option<(Register, String)>>,
    /// Submitted child calls not yet answered, by call id.
    open: Mutex<HashMap<u64, ChildCall>>,
    switching: tokio::sync::Mutex<()>,
}

impl FailoverClient {
    /// A client of the replicas at `urls` (tried in order).
    pub fn new(urls: &[String]) -> FailoverClient {
        FailoverClient {
            clients: urls.iter().map(|u| HttpClient::new(u.clone())).collect(),
            current: AtomicUsize::new(0),
            credential: Mutex::new(None),
            open: Mutex::new(HashMap::new()),
            switching: tokio::sync::Mutex::new(()),
        }
    }

    /// Moves off replica `from` (unreachable): registers with the next reachable one and
    /// submits the open calls there. Fails after [`GIVE_UP_AFTER`] without any.
    async fn switch_from(&self, from: usize, error: Error) -> Result<(), Error> {
        let _one = self.switching.lock().await;
        if self.current.load(Ordering::Acquire) != from {
            return Ok(()); // another call moved already
        }
        let Some((register, secret)) = self.credential.lock().clone() else {
            return Err(error);
        };
        let start = Instant::now();
        let n = self.clients.len();
        loop {
            for k in 1..=n {
                let i = (from + k) % n;
                let client = &self.clients[i];
                if client.register(register.clone(), &secret).await.is_err() {
                    continue;
                }
                // Resubmitted: the other replica may have recorded them already.
                let calls: Vec<ChildCall> = self
                    .open
                    .lock()
                    .values()
                    .map(|c| ChildCall {
                        check_store: true,
                        ..c.clone()
                    })
                    .collect();
                for chunk in calls.chunks(MAX_BATCH) {
                    let batch = SubmitBatch {
                        worker: register.worker.clone(),
                        calls: chunk.to_vec(),
                    };
                    if client.submit(batch).await.is_err() {
                        break;
                    }
                }
                tracing::warn!(replica = i, "moved to another control-plane replica");
                self.current.store(i, Ordering::Release);
                return Ok(());
            }
            if start.elapsed() > GIVE_UP_AFTER {
                return Err(error);
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
}

/// Calls `$call` on the current replica's client `$c`, moving to another replica while the
/// current one is unreachable, and trying again (for up to [`GIVE_UP_AFTER`]) while the
/// replica answers with an internal error (its database is restarting, say).
macro_rules! failover {
    ($self:ident, $c:ident => $call:expr) => {{
        let mut failing_since: Option<Instant> = None;
        loop {
            let i = $self.current.load(Ordering::Acquire);
            let $c = &$self.clients[i];
            match $call.await {
                Err(e @ Error::Unreachable { .. }) => $self.switch_from(i, e).await?,
                Err(
                    e @ Error::Refused {
                        reason: Refusal::Internal,
                        ..
                    },
                ) => {
                    let since = *failing_since.get_or_insert_with(Instant::now);
                    if since.elapsed() > GIVE_UP_AFTER {
                        break Err(e);
                    }
                    tracing::warn!(error = %e, "the control plane failed a request; trying again");
                    tokio::time::sleep(Duration::from_millis(250)).await;
                }
                r => break r,
            }
        }
    }};
}

impl WorkerApi for FailoverClient {
    fn register<'a>(&'a self, req: Register, secret: &'a str) -> ApiFuture<'a, Registered> {
        Box::pin(async move {
            *self.credential.lock() = Some((req.clone(), secret.to_string()));
            failover!(self, c => c.register(req.clone(), secret))
        })
    }
    fn lease(&self, req: LeaseRequest) -> ApiFuture<'_, LeaseResponse> {
        Box::pin(async move { failover!(self, c => c.lease(req.clone())) })
    }
    fn heartbeat(&self, req: Heartbeat) -> ApiFuture<'_, HeartbeatReply> {
        Box::pin(async move { failover!(self, c => c.heartbeat(req.clone())) })
    }
    fn complete(&self, req: CompleteBatch) -> ApiFuture<'_, CompleteReply> {
        Box::pin(async move { failover!(self, c => c.complete(req.clone())) })
    }
    fn submit(&self, req: SubmitBatch) -> ApiFuture<'_, ()> {
        Box::pin(async move {
            self.open
                .lock()
                .extend(req.calls.iter().map(|c| (c.call, c.clone())));
            // Once this worker has moved to another replica, the calls may have been admitted
            // by the one it left: sent again, they are checked against the store first.
            let moved = std::sync::atomic::AtomicBool::new(false);
            let checked = |req: &SubmitBatch| {
                let mut req = req.clone();
                if moved.load(Ordering::Relaxed) {
                    for c in &mut req.calls {
                        c.check_store = true;
                    }
                }
                req
            };
            let first = self.current.load(Ordering::Acquire);
            failover!(self, c => {
                if self.current.load(Ordering::Acquire) != first {
                    moved.store(true, Ordering::Relaxed);
                }
                c.submit(checked(&req))
            })
        })
    }
    fn results(&self, req: ResultsRequest) -> ApiFuture<'_, ResultsReply> {
        Box::pin(async move {
            let reply: ResultsReply = failover!(self, c => c.results(req.clone()))?;
            let mut open = self.open.lock();
            for r in &reply.results {
                open.remove(&r.call);
            }
            Ok(reply)
        })
    }
    fn cancel(&self, req: CancelCalls) -> ApiFuture<'_, ()> {
        Box::pin(async move {
            {
                let mut open = self.open.lock();
                for c in &req.calls {
                    open.remove(c);
                }
            }
            failover!(self, c => c.cancel(req.clone()))
        })
    }
    fn trace_lookup(&self, req: TraceLookup) -> ApiFuture<'_, Checkpoint> {
        Box::pin(async move { failover!(self, c => c.trace_lookup(req.clone())) })
    }
    fn trace_record(&self, req: TraceRecord) -> ApiFuture<'_, ()> {
        Box::pin(async move { failover!(self, c => c.trace_record(req.clone())) })
    }
}
