//! A worker's connection to a replicated control plane: the worker protocol over HTTP to one
//! replica at a time, moving to the next when the current one cannot be reached. On a move the
//! worker registers again and submits its open child calls again (admission is idempotent by
//! action id, and answers what already ended from the store), so a replica's death loses no
//! outcome a task waits for. A replica that holds a request without answering (cut off from
//! its database, its TCP connection dead) counts as unreachable after a while, and one that
//! fails requests with internal errors is left for another, when there is one: the worker
//! must not stay with it while another replica works.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use parking_lot::Mutex;

use crate::worker::protocol::*;
use crate::worker::{ApiFuture, Error, HttpClient, Refusal, WorkerApi};

/// How long a worker keeps trying the replicas before it gives up.
const GIVE_UP_AFTER: Duration = Duration::from_secs(60);

/// How long a replica may take to answer, beyond what the request waits on it, before the
/// worker counts it unreachable. Below the default lease (5 s): a worker moves before its
/// leases expire.
const ANSWER_WITHIN: Duration = Duration::from_secs(3);

/// What a request carrying payloads (completions, child calls, checkpoints: up to the body
/// limit) may take to travel, beyond [`ANSWER_WITHIN`].
const BULK: Duration = Duration::from_secs(60);

/// What a lease or results request may wait on the replica for work (`ClusterOptions::long_poll`,
/// 5 s by default).
const LONG_POLL: Duration = Duration::from_secs(5);

/// The worker protocol over HTTP to the first reachable of several replicas.
pub struct FailoverClient {
    clients: Vec<HttpClient>,
    urls: Vec<String>,
    /// The replica requests go to; a request waiting on another one is sent again here.
    current: tokio::sync::watch::Sender<usize>,
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
            urls: urls.to_vec(),
            current: tokio::sync::watch::Sender::new(0),
            credential: Mutex::new(None),
            open: Mutex::new(HashMap::new()),
            switching: tokio::sync::Mutex::new(()),
        }
    }

    /// Moves off replica `from` (unreachable): registers with the next reachable one and
    /// submits the open calls there. Fails after [`GIVE_UP_AFTER`] without any.
    async fn switch_from(&self, from: usize, error: Error) -> Result<(), Error> {
        let _one = self.switching.lock().await;
        if *self.current.borrow() != from {
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
                let registered =
                    tokio::time::timeout(ANSWER_WITHIN, client.register(register.clone(), &secret))
                        .await;
                if !matches!(registered, Ok(Ok(_))) {
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
                self.current.send_replace(i);
                return Ok(());
            }
            if start.elapsed() > GIVE_UP_AFTER {
                return Err(error);
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    /// The error of replica `i` not answering within `limit`.
    fn silent(&self, i: usize, limit: Duration) -> Error {
        Error::Unreachable {
            url: self.urls[i].clone(),
            message: format!("no answer within {limit:?}"),
        }
    }
}

/// Calls `$call` on the current replica's client `$c`, moving to another replica while the
/// current one is unreachable or does not answer within `$wait` (what the request waits on the
/// replica) and [`ANSWER_WITHIN`], and trying again (for up to [`GIVE_UP_AFTER`]) while the
/// replica answers with an internal error (its database is restarting, or cut off: then on
/// another replica, when there is one). A call waiting on a replica the worker has moved off
/// is sent again to the one it moved to.
macro_rules! failover {
    ($self:ident, $wait:expr, $c:ident => $call:expr) => {{
        let mut failing_since: Option<Instant> = None;
        loop {
            let mut replica = $self.current.subscribe();
            let i = *replica.borrow_and_update();
            let $c = &$self.clients[i];
            let limit = $wait + ANSWER_WITHIN;
            let answer = tokio::select! {
                r = tokio::time::timeout(limit, $call) => {
                    Some(r.unwrap_or_else(|_| Err($self.silent(i, limit))))
                }
                _ = replica.wait_for(|&now| now != i) => None,
            };
            let Some(answer) = answer else { continue };
            match answer {
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
                    if $self.clients.len() > 1 {
                        $self.switch_from(i, e).await?;
                    }
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
            failover!(self, Duration::ZERO, c => c.register(req.clone(), secret))
        })
    }
    fn lease(&self, req: LeaseRequest) -> ApiFuture<'_, LeaseResponse> {
        Box::pin(async move { failover!(self, LONG_POLL, c => c.lease(req.clone())) })
    }
    fn heartbeat(&self, req: Heartbeat) -> ApiFuture<'_, HeartbeatReply> {
        Box::pin(async move { failover!(self, Duration::ZERO, c => c.heartbeat(req.clone())) })
    }
    fn complete(&self, req: CompleteBatch) -> ApiFuture<'_, CompleteReply> {
        Box::pin(async move { failover!(self, BULK, c => c.complete(req.clone())) })
    }
    fn submit(&self, req: SubmitBatch) -> ApiFuture<'_, ()> {
        Box::pin(async move {
            self.open
                .lock()
                .extend(req.calls.iter().map(|c| (c.call, c.clone())));
            // Once this worker has moved to another replica, the calls may have been admitted
            // by the one it left: sent again, they are checked against the store first.
            let moved = AtomicBool::new(false);
            let checked = |req: &SubmitBatch| {
                let mut req = req.clone();
                if moved.load(Ordering::Relaxed) {
                    for c in &mut req.calls {
                        c.check_store = true;
                    }
                }
                req
            };
            let first = *self.current.borrow();
            failover!(self, BULK, c => {
                if *self.current.borrow() != first {
                    moved.store(true, Ordering::Relaxed);
                }
                c.submit(checked(&req))
            })
        })
    }
    fn results(&self, req: ResultsRequest) -> ApiFuture<'_, ResultsReply> {
        Box::pin(async move {
            let reply: ResultsReply = failover!(self, LONG_POLL, c => c.results(req.clone()))?;
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
            failover!(self, Duration::ZERO, c => c.cancel(req.clone()))
        })
    }
    fn trace_lookup(&self, req: TraceLookup) -> ApiFuture<'_, Checkpoint> {
        Box::pin(async move { failover!(self, Duration::ZERO, c => c.trace_lookup(req.clone())) })
    }
    fn trace_record(&self, req: TraceRecord) -> ApiFuture<'_, ()> {
        Box::pin(async move { failover!(self, BULK, c => c.trace_record(req.clone())) })
    }
}
