//! The engine's side of the worker protocol: the one implementation of [`WorkerApi`] on the
//! engine, over the executor's lease table and replica table and the engine's own child
//! submission and trace checkpoints. Transports call it (`http.rs`); so could a worker in the
//! engine's process.

use std::collections::HashMap;
use std::sync::{Arc, Weak};
use std::time::{Duration, Instant};

use tokio::sync::Notify;
use tokio::task::AbortHandle;
use weir_core::{ActionId, ErrorKind};
use weir_store::RunId;

use super::api::{ApiFuture, WorkerApi};
use super::executor::Executor;
use super::pool::{ReplicaState, worker_number};
use super::protocol::*;
use super::{Error, Refusal};
use crate::call::TaskCtx;
use crate::engine::{ChildCall as EngineCall, Engine, TraceOutcome};
use crate::registry;

/// Child calls made by attempts running in workers.
#[derive(Default)]
pub(super) struct ChildCalls {
    /// Engine-side contexts of attempts running in workers, by (run, action): they hold the
    /// run-level slot, released while the attempt waits on children.
    pub(super) contexts: HashMap<(RunId, ActionId), Arc<TaskCtx>>,
    /// Finished calls not yet fetched, per worker.
    outboxes: HashMap<u64, Outbox>,
    /// Calls in progress, by (worker, call id).
    running: HashMap<(u64, u64), AbortHandle>,
}

#[derive(Default)]
struct Outbox {
    results: Vec<ChildResult>,
    notify: Arc<Notify>,
}

impl ChildCalls {
    pub(super) fn add_worker(&mut self, worker: u64) {
        self.outboxes.insert(worker, Outbox::default());
    }

    /// Wakes the worker's results long poll (it is retiring).
    pub(super) fn wake(&self, worker: u64) {
        if let Some(o) = self.outboxes.get(&worker) {
            o.notify.notify_waiters();
        }
    }

    /// The worker is lost: the outcomes waiting for it go nowhere.
    pub(super) fn forget_results(&mut self, worker: u64) {
        if let Some(o) = self.outboxes.get_mut(&worker) {
            o.results.clear();
        }
    }
}

use super::refused;

/// The refusal an injected failure gives (an internal error, naming the failpoint).
#[cfg(feature = "failpoints")]
fn injected(request: &str, point: &str) -> Error {
    eprintln!("weir: failpoint {point}: injected error");
    let message = format!("failpoint {point}: injected error");
    refused(request, Refusal::Internal, message)
}

/// Refuses a request about an attempt the worker does not hold.
fn not_held(request: &str, worker: &str, run: RunId, action: ActionId) -> Error {
    refused(
        request,
        Refusal::Forbidden,
        format!("worker {worker} holds no lease on action {action} of run {run}"),
    )
}

fn unknown_worker(request: &str, worker: &str) -> Error {
    refused(
        request,
        Refusal::Conflict,
        format!("worker {worker} is unknown to this engine or was presumed dead; it must exit"),
    )
}

/// Waits for a long poll's notification, re-checking at least every 250 ms (a notification
/// sent between the caller's unlock and this wait is caught by the re-check). False once the
/// poll's deadline has passed.
async fn wait_for_more(notify: &Notify, deadline: Instant) -> bool {
    let remaining = deadline.saturating_duration_since(Instant::now());
    if remaining.is_zero() {
        return false;
    }
    let _ =
        tokio::time::timeout(remaining.min(Duration::from_millis(250)), notify.notified()).await;
    true
}

/// The engine's implementation of the worker protocol.
pub(super) struct EngineApi {
    exec: Weak<Executor>,
}

impl EngineApi {
    pub(super) fn new(exec: Weak<Executor>) -> EngineApi {
        EngineApi { exec }
    }

    fn executor(&self, request: &str) -> Result<Arc<Executor>, Error> {
        self.exec
            .upgrade()
            .ok_or_else(|| refused(request, Refusal::Conflict, "the engine is shutting down"))
    }

    fn engine(&self, request: &str) -> Result<(Arc<Executor>, Engine), Error> {
        let exec = self.executor(request)?;
        let engine = exec
            .engine
            .upgrade()
            .ok_or_else(|| refused(request, Refusal::Conflict, "the engine is shutting down"))?;
        Ok((exec, engine))
    }
}

impl EngineApi {
    /// Checks that `worker` is alive and holds a lease on `action` of `run`.
    fn check_holds(
        &self,
        request: &str,
        worker: &str,
        run: RunId,
        action: ActionId,
    ) -> Result<(), Error> {
        let exec = self.executor(request)?;
        let st = exec.state.lock();
        let n = st
            .pool
            .live(worker)
            .ok_or_else(|| unknown_worker(request, worker))?;
        if st.leases.holds(n, run, action) {
            Ok(())
        } else {
            Err(not_held(request, worker, run, action))
        }
    }
}

impl WorkerApi for EngineApi {
    fn register<'a>(&'a self, req: Register, secret: &'a str) -> ApiFuture<'a, Registered> {
        Box::pin(async move {
            let exec = self.executor("register")?;
            if !exec.credentials.admits(secret) {
                let message =
                    "wrong admission secret: a worker gets it from the engine that launched it"
                        .to_string();
                return Err(refused("register", Refusal::Unauthorized, message));
            }
            if exec.state.lock().pool.live(&req.worker).is_none() {
                return Err(unknown_worker("register", &req.worker));
            }
            let token = exec
                .credentials
                .issue(&req.worker)
                .map_err(|e| refused("register", Refusal::Internal, e.to_string()))?;
            // An engine's workers are on its machine: payloads go through it; reference data
            // (weir::File) they read and write in the engine's store themselves.
            let reference_store = exec
                .engine
                .upgrade()
                .map(|engine| engine.blobs().url().to_string());
            Ok(Registered {
                token,
                object_store: None,
                reference_store,
            })
        })
    }

    fn lease(&self, req: LeaseRequest) -> ApiFuture<'_, LeaseResponse> {
        Box::pin(async move {
            let exec = self.executor("lease")?;
            let deadline = Instant::now() + exec.options.long_poll;
            let mut first = true;
            loop {
                let notify = {
                    let mut st = exec.state.lock();
                    let st = &mut *st;
                    let n = st
                        .pool
                        .live(&req.worker)
                        .ok_or_else(|| unknown_worker("lease", &req.worker))?;
                    // Leases of an earlier response that never reached the worker go back to
                    // the queue (it asks again only once it has the last answer, or none).
                    if first && let Some(received) = req.received {
                        let lost = st.leases.reclaim_unreceived(n, received);
                        if lost > 0 {
                            tracing::warn!(worker = %req.worker, lost, "leased actions that never reached their worker are queued again");
                            st.journal.touch();
                        }
                    }
                    let r = st.pool.replicas.get_mut(&n).expect("replica present");
                    // A request counts as a sign of life when it arrives, not while it waits.
                    if std::mem::take(&mut first) {
                        r.last_heartbeat = Instant::now();
                    }
                    if r.state == ReplicaState::Starting {
                        r.state = ReplicaState::Ready;
                        st.journal.touch();
                    }
                    if r.state == ReplicaState::Retiring {
                        return Ok(LeaseResponse {
                            actions: vec![],
                            shutdown: true,
                        });
                    }
                    let env = r.env.clone();
                    let actions = st.leases.lease(n, req.max as usize);
                    // Fault injection (feature `failpoints`): die with attempts leased and
                    // the worker not told, or fail the request after leasing.
                    #[cfg(feature = "failpoints")]
                    fail::fail_point!("worker.lease", !actions.is_empty(), |_| Err(injected(
                        "lease",
                        "worker.lease"
                    )));
                    if !actions.is_empty() {
                        st.journal.touch();
                        return Ok(LeaseResponse {
                            actions,
                            shutdown: false,
                        });
                    }
                    match st.pool.envs.get(&env) {
                        Some(pool) => pool.notify.clone(),
                        None => return Ok(LeaseResponse::default()),
                    }
                };
                if !wait_for_more(&notify, deadline).await {
                    return Ok(LeaseResponse::default());
                }
            }
        })
    }

    fn heartbeat(&self, req: Heartbeat) -> ApiFuture<'_, HeartbeatReply> {
        Box::pin(async move {
            let exec = self.executor("heartbeat")?;
            let mut st = exec.state.lock();
            let n = st
                .pool
                .live(&req.worker)
                .ok_or_else(|| unknown_worker("heartbeat", &req.worker))?;
            let r = st.pool.replicas.get_mut(&n).expect("replica present");
            r.last_heartbeat = Instant::now();
            let shutdown = r.state == ReplicaState::Retiring;
            Ok(HeartbeatReply {
                cancelled: st.leases.take_cancelled(n),
                shutdown,
            })
        })
    }

    fn complete(&self, req: CompleteBatch) -> ApiFuture<'_, CompleteReply> {
        Box::pin(async move {
            let exec = self.executor("complete")?;
            // Fault injection: die, or fail the request, with completions received and not
            // applied.
            #[cfg(feature = "failpoints")]
            fail::fail_point!("worker.complete", |_| Err(injected(
                "complete",
                "worker.complete"
            )));
            // Fenced by the lease, not by the worker's liveness: a worker presumed dead can
            // still be heard, and is rejected because its leases are no longer current.
            let n = worker_number(&req.worker).unwrap_or(0);
            let done = {
                let mut st = exec.state.lock();
                let st = &mut *st;
                // The worker's phase timings, for the attempt's record (a completion of a lease
                // no longer held is rejected below, its figures dropped).
                for c in &req.completions {
                    if let (Some(run), Some(p)) = (c.run, c.phases)
                        && st.leases.holds(n, run, c.action)
                        && let Some(ctx) = st.calls.contexts.get(&(run, c.action))
                    {
                        *ctx.times.remote.lock() = Some(p);
                    }
                }
                let done = st.leases.complete(n, req.completions);
                let env = st.leases.env_of(n).unwrap_or_default().to_string();
                st.journal.rejected(&env, &req.worker, &done.rejected);
                st.journal.touch();
                done
            };
            for delivery in done.deliveries {
                delivery.send();
            }
            Ok(CompleteReply {
                rejected: done.rejected,
            })
        })
    }

    fn submit(&self, req: SubmitBatch) -> ApiFuture<'_, ()> {
        Box::pin(async move {
            let (exec, engine) = self.engine("submit")?;
            let n = exec
                .state
                .lock()
                .pool
                .live(&req.worker)
                .ok_or_else(|| unknown_worker("submit", &req.worker))?;
            {
                let st = exec.state.lock();
                if let Some(c) = req
                    .calls
                    .iter()
                    .find(|c| !st.leases.holds(n, c.run, c.parent))
                {
                    return Err(not_held("submit", &req.worker, c.run, c.parent));
                }
            }
            if let Some(c) = req.calls.iter().find(|c| c.inputs_ref.is_some()) {
                return Err(no_references("submit", &format!("child call {}", c.id)));
            }
            for call in req.calls {
                let id = call.call;
                let parent = exec
                    .state
                    .lock()
                    .calls
                    .contexts
                    .get(&(call.run, call.parent))
                    .cloned();
                let run = engine.run_state(call.run);
                let weak = Arc::downgrade(&exec);
                let engine = engine.clone();
                let task = tokio::spawn(async move {
                    let outcome = match (run, registry::find_task(&call.task)) {
                        (None, _) => Err(crate::Error::with_kind(
                            ErrorKind::Cancelled,
                            format!(
                                "run {} is not live in this engine (ended or aborted)",
                                call.run
                            ),
                        )),
                        (_, Err(e)) => Err(crate::Error::with_kind(ErrorKind::System, e)),
                        (Some(run), Ok(def)) => match def.check_inline("inputs", call.inputs.len())
                        {
                            Err(e) => Err(e),
                            Ok(()) => {
                                // The parent gives its run-level slot back while it waits (as
                                // in process), so that its children can use it.
                                if let Some(p) = &parent {
                                    p.begin_wait();
                                }
                                let r = engine
                                    .submit_boxed(EngineCall {
                                        run,
                                        parent: call.parent,
                                        id: call.id,
                                        def,
                                        inputs: call.inputs,
                                        group: call.group.map(Arc::from),
                                        may_replay: call.check_store,
                                    })
                                    .await;
                                if let Some(p) = &parent {
                                    p.end_wait().await;
                                }
                                r
                            }
                        },
                    };
                    let Some(exec) = weak.upgrade() else { return };
                    let mut st = exec.state.lock();
                    st.calls.running.remove(&(n, id));
                    if let Some(o) = st.calls.outboxes.get_mut(&n) {
                        o.results.push(ChildResult {
                            call: id,
                            outcome: outcome
                                .map(|b| serde_bytes::ByteBuf::from(b.to_vec()))
                                .map_err(|e| to_remote(&e)),
                            output_ref: None,
                        });
                        o.notify.notify_waiters();
                    }
                });
                let mut st = exec.state.lock();
                if !task.is_finished() {
                    st.calls.running.insert((n, id), task.abort_handle());
                }
            }
            Ok(())
        })
    }

    fn results(&self, req: ResultsRequest) -> ApiFuture<'_, ResultsReply> {
        Box::pin(async move {
            let exec = self.executor("results")?;
            let deadline = Instant::now() + exec.options.long_poll;
            loop {
                let notify = {
                    let mut st = exec.state.lock();
                    let st = &mut *st;
                    let outbox = st
                        .pool
                        .live(&req.worker)
                        .and_then(|n| st.calls.outboxes.get_mut(&n));
                    let Some(outbox) = outbox else {
                        // Unknown or presumed dead: nothing will come any more.
                        return Ok(ResultsReply {
                            results: vec![],
                            shutdown: true,
                        });
                    };
                    if !outbox.results.is_empty() {
                        return Ok(ResultsReply {
                            results: std::mem::take(&mut outbox.results),
                            shutdown: false,
                        });
                    }
                    outbox.notify.clone()
                };
                if !wait_for_more(&notify, deadline).await {
                    return Ok(ResultsReply::default());
                }
            }
        })
    }

    fn cancel(&self, req: CancelCalls) -> ApiFuture<'_, ()> {
        Box::pin(async move {
            let exec = self.executor("cancel")?;
            let n = worker_number(&req.worker).unwrap_or(0);
            let handles: Vec<AbortHandle> = {
                let mut st = exec.state.lock();
                req.calls
                    .iter()
                    .filter_map(|c| st.calls.running.remove(&(n, *c)))
                    .collect()
            };
            for h in handles {
                h.abort();
            }
            Ok(())
        })
    }

    fn trace_lookup(&self, req: TraceLookup) -> ApiFuture<'_, Checkpoint> {
        Box::pin(async move {
            let (_, engine) = self.engine("trace lookup")?;
            self.check_holds("trace lookup", &req.worker, req.run, req.parent)?;
            engine
                .lookup_checkpoint(req.run, req.id, req.parent)
                .await
                .map_err(|e| refused("trace lookup", Refusal::Internal, e.to_string()))
        })
    }

    fn trace_record(&self, req: TraceRecord) -> ApiFuture<'_, ()> {
        Box::pin(async move {
            let (_, engine) = self.engine("trace record")?;
            self.check_holds("trace record", &req.worker, req.run, req.parent)?;
            if req.inputs_ref.is_some() || req.output_ref.is_some() {
                return Err(no_references("trace record", &format!("trace {}", req.id)));
            }
            let other = engine
                .recorded_as_other(req.run, req.id, req.parent)
                .await
                .map_err(|e| refused("trace record", Refusal::Internal, e.to_string()))?;
            if other {
                let message = format!(
                    "action {} of run {} is not a trace of action {}: not overwritten",
                    req.id, req.run, req.parent
                );
                return Err(refused("trace record", Refusal::Forbidden, message));
            }
            let Some(run) = engine.run_state(req.run) else {
                let message = format!("run {} is not live in this engine", req.run);
                return Err(refused("trace record", Refusal::Conflict, message));
            };
            let trace = TraceOutcome {
                id: req.id,
                parent: req.parent,
                name: std::borrow::Cow::Owned(req.name),
                inputs: &req.inputs,
                started_at: req.started_at,
                outcome: req.outcome.map(|b| b.into_vec()),
            };
            engine
                .record_checkpoint(&run, trace)
                .await
                .map_err(|e| refused("trace record", Refusal::Internal, e.to_string()))
        })
    }
}

/// A message with a payload reference to an engine, which offers its workers no object store
/// (only a control plane on `s3://` does): refused, not read as empty bytes.
fn no_references(request: &str, what: &str) -> Error {
    refused(
        request,
        Refusal::BadRequest,
        format!(
            "{what} comes with a reference to an object, but an engine takes payloads as bytes (it offers its workers no object store)"
        ),
    )
}

#[cfg(test)]
#[path = "service_tests.rs"]
mod tests;
