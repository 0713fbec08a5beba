//! The control plane's side of the worker protocol: the same [`WorkerApi`] the embedded
//! engine implements, over the store instead of in-memory tables.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use futures::StreamExt;
use weir_blob::PayloadKey;
use weir_core::clock::now_us;
use weir_core::{ActionEvent, ActionId, ActionStatus, ErrorKind};
use weir_store::{ActionKind, RunId, WorkerRecord, WriteOp};

use super::complete::Rejected;
use super::{Inner, Output, WorkerInfo, remote, spec, system_failure};
use crate::worker::protocol::*;
use crate::worker::{ApiFuture, Error, Refusal, WorkerApi};

pub(crate) struct ClusterApi {
    pub(super) inner: Arc<Inner>,
}

use crate::worker::refused;

fn internal(request: &str) -> impl Fn(String) -> Error + '_ {
    move |m| refused(request, Refusal::Internal, m)
}

impl ClusterApi {
    /// The worker's record (cached; read from the store on a miss).
    async fn worker(&self, request: &str, worker: &str) -> Result<Arc<WorkerInfo>, Error> {
        if let Some(w) = self.inner.workers.lock().get(worker) {
            return Ok(w.clone());
        }
        let all = self
            .inner
            .store
            .workers()
            .await
            .map_err(|e| refused(request, Refusal::Internal, e.to_string()))?;
        let w = all.into_iter().find(|w| w.id == worker).ok_or_else(|| {
            refused(
                request,
                Refusal::Conflict,
                format!("worker {worker} is not registered with this control plane; it must register again"),
            )
        })?;
        let specs = self
            .inner
            .specs(&w.version)
            .await
            .map_err(|e| refused(request, Refusal::Internal, e))?;
        // A worker of a project other than the default is recorded under `PROJECT/ENV`.
        let (project, env) = spec::unqualified(&w.env, |e| specs.values().any(|t| t.env == e));
        let info = Arc::new(WorkerInfo {
            queue: spec::queue_name(&w.env, &w.version),
            cap: spec::cap_of(project, env, specs.values()),
        });
        self.inner
            .workers
            .lock()
            .insert(worker.to_string(), info.clone());
        Ok(info)
    }

    /// Checks that `worker` holds the current lease of `action` of `run`.
    pub(super) async fn check_holds(
        &self,
        request: &str,
        worker: &str,
        run: RunId,
        action: ActionId,
    ) -> Result<weir_store::QueueEntry, Error> {
        let entry = self
            .inner
            .store
            .queue_entry(run, action)
            .await
            .map_err(|e| refused(request, Refusal::Internal, e.to_string()))?;
        match entry {
            Some(e) if e.lease.as_ref().is_some_and(|(_, w)| w == worker) => Ok(e),
            _ => Err(refused(
                request,
                Refusal::Forbidden,
                format!("worker {worker} holds no lease on action {action} of run {run}"),
            )),
        }
    }

    /// One leased attempt as the worker receives it; `None` when its action ended meanwhile
    /// (an aborted run): the lease is dropped.
    async fn leased(
        &self,
        worker: &str,
        l: weir_store::Lease,
        rec: Option<weir_store::ActionRecord>,
        direct: bool,
    ) -> Result<Option<LeasedAction>, String> {
        let inner = &self.inner;
        let a = &l.attempt;
        let Some(rec) = rec.filter(|r| !r.status.is_terminal()) else {
            inner
                .store
                .complete(l.id, worker)
                .await
                .map_err(system_failure)?;
            return Ok(None);
        };
        // A worker that reads the object store itself gets the reference of offloaded inputs.
        let inputs_ref = match (&rec.inputs, direct && inner.offer.is_some()) {
            (Some(p), true) => PayloadRef::of(p),
            _ => None,
        };
        let inputs = match (&rec.inputs, &inputs_ref) {
            (_, Some(r)) => {
                inner.counters.direct(r.size);
                Vec::new()
            }
            (Some(p), None) => {
                let bytes = inner
                    .payloads
                    .load(p)
                    .await
                    .map_err(system_failure)?
                    .to_vec();
                inner.counters.proxied(bytes.len());
                bytes
            }
            (None, None) => {
                return Err(format!(
                    "action {} of run {} has no inputs",
                    a.action, a.run
                ));
            }
        };
        let meta = inner.run_meta(a.run).await?;
        let now = now_us();
        inner.counters.dispatch_us.fetch_add(
            now.saturating_sub(rec.queued_at).max(0) as u64,
            Ordering::Relaxed,
        );
        inner.store.write(WriteOp::StartAttempt {
            run: a.run,
            id: a.action,
            attempt: a.attempt,
            started_at: now,
        });
        Ok(Some(LeasedAction {
            lease: l.id,
            run: a.run,
            run_name: meta.name.clone(),
            action: a.action,
            attempt: a.attempt,
            task: a.task.clone(),
            inputs,
            // A retry, or an attempt of a recovering run, looks up its traces' checkpoints.
            check_store: a.attempt > 1 || l.system_retries > 0 || meta.recover.is_some(),
            inputs_ref,
        }))
    }
}

impl ClusterApi {
    /// Checks the references of the completions that name objects the worker wrote: each may
    /// only be `RUN/ACTION/ATTEMPT/LEASE/outputs` of its own run, action, attempt and lease.
    /// Counts what the batch carries.
    async fn check_output_refs(&self, completions: &[Completion]) -> Result<(), Error> {
        let inner = &self.inner;
        for c in completions {
            let r = match &c.outcome {
                AttemptOutcome::Stored(r) => r,
                AttemptOutcome::Output(bytes) => {
                    inner.counters.proxied(bytes.len());
                    continue;
                }
                AttemptOutcome::Error(_) => continue,
            };
            let what = format!(
                "the output of action {} attempt {} (lease {})",
                c.action, c.attempt, c.lease
            );
            let Some(run) = c.run else {
                let message = format!("{what} names no run");
                return Err(refused("complete", Refusal::BadRequest, message));
            };
            let meta = inner.run_meta(run).await.map_err(internal("complete"))?;
            let expected = PayloadKey::LeaseOutputs {
                run: &meta.name,
                action: &c.action,
                attempt: c.attempt,
                lease: c.lease,
            }
            .key();
            inner.check_ref("complete", &what, &expected, r).await?;
            inner.counters.direct(r.size);
        }
        Ok(())
    }
}

impl WorkerApi for ClusterApi {
    fn register<'a>(&'a self, req: Register, secret: &'a str) -> ApiFuture<'a, Registered> {
        Box::pin(async move {
            let inner = &self.inner;
            let who = match inner.access.principal(secret).await {
                Ok(Some(who)) => who,
                Ok(None) => {
                    return Err(refused(
                        "register",
                        Refusal::Unauthorized,
                        "wrong token: workers register with the cluster token or a worker token of their project (`weir token create --role worker`)",
                    ));
                }
                Err(e) => return Err(refused("register", Refusal::Internal, e)),
            };
            if let Err((_, message)) = who.as_worker() {
                return Err(refused("register", Refusal::Forbidden, message));
            }
            let project = who.worker_project();
            let Some(me) = req.cluster else {
                return Err(refused(
                    "register",
                    Refusal::BadRequest,
                    "a worker of a control plane must say its environment, version and tasks",
                ));
            };
            if !me.tasks.iter().any(|t| t.env == me.env) {
                return Err(refused(
                    "register",
                    Refusal::BadRequest,
                    format!(
                        "environment {:?} has no task in the worker's version",
                        me.env
                    ),
                ));
            }
            inner
                .record_specs(&me.version, &me.tasks)
                .await
                .map_err(internal("register"))?;
            let now = now_us();
            inner
                .store
                .register_worker(WorkerRecord {
                    id: req.worker.clone(),
                    env: spec::qualified(project, &me.env),
                    version: me.version.clone(),
                    registered_at: now,
                    seen_at: now,
                })
                .await
                .map_err(|e| refused("register", Refusal::Internal, e.to_string()))?;
            inner.workers.lock().insert(
                req.worker.clone(),
                Arc::new(WorkerInfo {
                    queue: spec::queue_name(&spec::qualified(project, &me.env), &me.version),
                    cap: spec::cap_of(project, &me.env, &me.tasks),
                }),
            );
            let token = inner
                .credentials
                .issue(&req.worker)
                .map_err(|e| refused("register", Refusal::Internal, e.to_string()))?;
            Ok(Registered {
                token,
                object_store: inner.offer.clone(),
                reference_store: None,
            })
        })
    }

    fn lease(&self, req: LeaseRequest) -> ApiFuture<'_, LeaseResponse> {
        Box::pin(async move {
            let inner = &self.inner;
            let me = self.worker("lease", &req.worker).await?;
            let ttl = inner.options.lease_ttl.as_micros() as i64;
            let deadline = Instant::now() + inner.options.long_poll;
            let notify = inner.queue_notify(&me.queue);
            // Leases of an earlier answer that never reached the worker (its replica died
            // while answering) go back to the queue, with the first lease query.
            let mut received = req.received;
            loop {
                // Armed before the queue is read: an enqueue meanwhile wakes it.
                let wake = notify.notified();
                tokio::pin!(wake);
                wake.as_mut().enable();
                // The leases with their actions' rows: one round trip.
                let leases = inner
                    .store
                    .lease_with_actions(
                        &req.worker,
                        &me.queue,
                        req.max.max(1),
                        (now_us(), ttl),
                        received.take(),
                        me.cap.as_ref(),
                    )
                    .await
                    .map_err(|e| refused("lease", Refusal::Internal, e.to_string()))?;
                if !leases.is_empty() {
                    let read = futures::future::join_all(
                        leases
                            .into_iter()
                            .map(|(l, rec)| self.leased(&req.worker, l, rec, req.direct)),
                    )
                    .await;
                    let mut actions = Vec::with_capacity(read.len());
                    for a in read {
                        actions.extend(a.map_err(internal("lease"))?);
                    }
                    inner
                        .counters
                        .leased
                        .fetch_add(actions.len() as u64, Ordering::Relaxed);
                    if !actions.is_empty() {
                        return Ok(LeaseResponse {
                            actions,
                            shutdown: false,
                        });
                    }
                    continue;
                }
                let left = deadline.saturating_duration_since(Instant::now());
                if left.is_zero() {
                    return Ok(LeaseResponse::default());
                }
                // Woken by a queue on this replica; other replicas' queues are polled.
                let _ = tokio::time::timeout(left.min(Duration::from_millis(50)), wake).await;
            }
        })
    }

    fn heartbeat(&self, req: Heartbeat) -> ApiFuture<'_, HeartbeatReply> {
        Box::pin(async move {
            let inner = &self.inner;
            self.worker("heartbeat", &req.worker).await?;
            let ttl = inner.options.lease_ttl.as_micros() as i64;
            inner
                .store
                .heartbeat(&req.worker, now_us(), ttl)
                .await
                .map_err(|e| refused("heartbeat", Refusal::Internal, e.to_string()))?;
            Ok(HeartbeatReply::default())
        })
    }

    fn complete(&self, mut req: CompleteBatch) -> ApiFuture<'_, CompleteReply> {
        Box::pin(async move {
            self.worker("complete", &req.worker).await?;
            // References to objects the worker wrote are checked before anything of the
            // batch is recorded.
            self.check_output_refs(&req.completions).await?;
            let worker = req.worker.as_str();
            // The queue entries of the batch: one round trip.
            let keys: Vec<(RunId, ActionId)> = req
                .completions
                .iter()
                .filter_map(|c| c.run.map(|r| (r, c.action)))
                .collect();
            let entries = self
                .inner
                .store
                .queue_entries(&keys)
                .await
                .map_err(|e| refused("complete", Refusal::Internal, e.to_string()))?;
            let mut entries: HashMap<(RunId, ActionId), weir_store::QueueEntry> = entries
                .into_iter()
                .map(|e| ((e.attempt.run, e.attempt.action), e))
                .collect();
            // What the attempts printed is recorded before their results: once a run has
            // ended, the logs of its attempts are in.
            let logs = super::inspect::logs_of(worker, &mut req.completions, &entries);
            if !logs.is_empty() {
                self.inner
                    .store
                    .record_attempt_logs(&logs)
                    .await
                    .map_err(|e| refused("complete", Refusal::Internal, e.to_string()))?;
            }
            let results: Vec<(u64, Result<(), Rejected>)> =
                futures::stream::iter(req.completions.into_iter().map(|c| {
                    let entry = c.run.and_then(|r| entries.remove(&(r, c.action)));
                    async move {
                        let lease = c.lease;
                        (lease, self.complete_one(worker, c, entry).await)
                    }
                }))
                .buffer_unordered(64)
                .collect()
                .await;
            let mut rejected = Vec::new();
            let mut failed = None;
            for (lease, r) in results {
                match r {
                    Ok(()) => {}
                    Err(Rejected::Stale(why)) => rejected.push((lease, why)),
                    Err(Rejected::Failed(why)) => failed = Some(why),
                }
            }
            // Not carried out: the worker delivers the batch again (what was carried out is
            // then refused as no longer current, its result already committed).
            if let Some(why) = failed {
                return Err(refused("complete", Refusal::Internal, why));
            }
            self.inner
                .counters
                .rejected
                .fetch_add(rejected.len() as u64, Ordering::Relaxed);
            Ok(CompleteReply { rejected })
        })
    }

    fn submit(&self, req: SubmitBatch) -> ApiFuture<'_, ()> {
        Box::pin(async move {
            self.worker("submit", &req.worker).await?;
            // Every caller must hold its attempt; checked once per (run, parent).
            let mut checked: HashMap<(RunId, ActionId), ()> = HashMap::new();
            for c in &req.calls {
                if checked.insert((c.run, c.parent), ()).is_none() {
                    self.check_holds("submit", &req.worker, c.run, c.parent)
                        .await?;
                }
            }
            // Inputs the worker wrote to the object store: each only under its child's key.
            for c in &req.calls {
                let Some(r) = &c.inputs_ref else {
                    self.inner.counters.proxied(c.inputs.len());
                    continue;
                };
                let meta = self
                    .inner
                    .run_meta(c.run)
                    .await
                    .map_err(internal("submit"))?;
                let expected = PayloadKey::Inputs {
                    run: &meta.name,
                    action: &c.id,
                }
                .key();
                let what = format!("the inputs of child call {} of run {}", c.id, c.run);
                self.inner.check_ref("submit", &what, &expected, r).await?;
                self.inner.counters.direct(r.size);
            }
            // Admitted in the background: outcomes come back through `results`. A replica
            // that dies first loses nothing: the worker submits its open calls again elsewhere.
            let api = ClusterApi {
                inner: self.inner.clone(),
            };
            tokio::spawn(async move {
                let worker = req.worker.as_str();
                let api = &api;
                futures::stream::iter(req.calls.into_iter().map(|call| async move {
                    let (id, n) = (call.id, call.call);
                    // A store that fails (restarting) is tried again for a minute before the
                    // caller gets the error.
                    let start = Instant::now();
                    let mut call = call;
                    loop {
                        match api.admit(worker, call.clone()).await {
                            Ok(()) => break,
                            Err(e) if start.elapsed() < Duration::from_secs(60) => {
                                tracing::warn!(action = %id, error = %e, "admitting a child call failed; trying again");
                                // What failed may have been committed all the same (a commit
                                // whose answer was lost, or not yet on disk): look first.
                                call.check_store = true;
                                tokio::time::sleep(Duration::from_millis(250)).await;
                            }
                            Err(e) => {
                                api.inner
                                    .deliver(worker, n, &Err(remote(ErrorKind::System, e)));
                                break;
                            }
                        }
                    }
                }))
                .buffer_unordered(64)
                .collect::<Vec<()>>()
                .await;
            });
            Ok(())
        })
    }

    fn results(&self, req: ResultsRequest) -> ApiFuture<'_, ResultsReply> {
        Box::pin(async move {
            self.worker("results", &req.worker).await?;
            let until = Instant::now() + self.inner.options.long_poll;
            let results = self
                .inner
                .take_results(&req.worker, until, req.direct)
                .await;
            Ok(ResultsReply {
                results,
                shutdown: false,
            })
        })
    }

    fn cancel(&self, req: CancelCalls) -> ApiFuture<'_, ()> {
        Box::pin(async move {
            self.worker("cancel", &req.worker).await?;
            self.inner.forget(&req.worker, &req.calls);
            Ok(())
        })
    }

    fn trace_lookup(&self, req: TraceLookup) -> ApiFuture<'_, Checkpoint> {
        Box::pin(async move {
            let inner = &self.inner;
            self.worker("trace lookup", &req.worker).await?;
            self.check_holds("trace lookup", &req.worker, req.run, req.parent)
                .await?;
            let rec = inner
                .store
                .action(req.run, req.id)
                .await
                .map_err(|e| refused("trace lookup", Refusal::Internal, e.to_string()))?
                .filter(|r| r.kind == ActionKind::Trace && r.parent == req.parent);
            if rec.is_none() {
                // A recovering run takes what its earlier run recorded.
                let meta = inner
                    .run_meta(req.run)
                    .await
                    .map_err(internal("trace lookup"))?;
                let recovered = self
                    .recovered(&meta, req.run, (req.id, req.parent), ActionKind::Trace)
                    .await
                    .map_err(internal("trace lookup"))?;
                if let Some(bytes) = recovered {
                    return Ok(Checkpoint::Output(bytes));
                }
            }
            Ok(match rec.map(|r| (r.status, r.output, r.error)) {
                Some((ActionStatus::Succeeded, Some(out), _)) => {
                    match inner.output_of(&out).await {
                        // A worker that reads the store itself gets the reference.
                        Ok(Output::Stored(p)) if req.direct && inner.offer.is_some() => {
                            match PayloadRef::of(&p) {
                                Some(r) => {
                                    inner.counters.direct(r.size);
                                    Checkpoint::Stored(r)
                                }
                                None => inner.checkpoint_bytes(&p).await,
                            }
                        }
                        Ok(Output::Stored(p)) => inner.checkpoint_bytes(&p).await,
                        Ok(Output::Bytes(bytes)) => {
                            inner.counters.proxied(bytes.len());
                            Checkpoint::Output(bytes.into_vec())
                        }
                        Err(_) => Checkpoint::Nothing,
                    }
                }
                Some((ActionStatus::Failed, _, Some(f))) if !f.kind.is_retryable() => {
                    Checkpoint::Failure(f)
                }
                _ => Checkpoint::Nothing,
            })
        })
    }

    fn trace_record(&self, req: TraceRecord) -> ApiFuture<'_, ()> {
        Box::pin(async move {
            let inner = &self.inner;
            let r = "trace record";
            self.worker(r, &req.worker).await?;
            let holder = self
                .check_holds(r, &req.worker, req.run, req.parent)
                .await?;
            let existing = inner
                .store
                .action(req.run, req.id)
                .await
                .map_err(|e| refused(r, Refusal::Internal, e.to_string()))?;
            if existing.is_some_and(|e| e.kind != ActionKind::Trace || e.parent != req.parent) {
                let message = format!(
                    "action {} of run {} is not a trace of action {}: not overwritten",
                    req.id, req.run, req.parent
                );
                return Err(refused(r, Refusal::Forbidden, message));
            }
            let meta = inner.run_meta(req.run).await.map_err(internal(r))?;
            let carried = req.inputs.len() + req.outcome.as_ref().map_or(0, |b| b.len());
            inner.counters.proxied(carried);
            let key = PayloadKey::Inputs {
                run: &meta.name,
                action: &req.id,
            };
            // References the worker sends may only name the trace's own inputs and its output
            // under the lease of the parent's attempt that records it.
            let inputs = match &req.inputs_ref {
                Some(x) => {
                    let what = format!("the inputs of trace {} of run {}", req.id, req.run);
                    inner.check_ref(r, &what, &key.key(), x).await?;
                    inner.counters.direct(x.size);
                    x.to_payload()
                }
                None => inner
                    .store_payload(key, &req.inputs)
                    .await
                    .map_err(internal(r))?,
            };
            let refs_and_bytes = (req.inputs_ref.is_some() && !req.inputs.is_empty())
                || (req.output_ref.is_some() && !req.outcome.as_ref().is_ok_and(|b| b.is_empty()));
            if refs_and_bytes {
                let message = format!(
                    "trace {} of run {}: a payload comes both as a reference and as bytes (or a failure comes with an output reference)",
                    req.id, req.run
                );
                return Err(refused(r, Refusal::BadRequest, message));
            }
            let output_ref = match (&req.output_ref, &holder.lease) {
                (None, _) => None,
                (Some(_), None) => {
                    let message = format!("the lease on action {} is gone", req.parent);
                    return Err(refused(r, Refusal::Conflict, message));
                }
                (Some(x), Some((lease, _))) => {
                    let expected = PayloadKey::LeaseOutputs {
                        run: &meta.name,
                        action: &req.id,
                        attempt: 1,
                        lease: *lease,
                    };
                    let what = format!("the output of trace {} of run {}", req.id, req.run);
                    inner.check_ref(r, &what, &expected.key(), x).await?;
                    inner.counters.direct(x.size);
                    Some(x.to_payload())
                }
            };
            let running = ActionStatus::Queued
                .take(ActionEvent::Start)
                .map_err(|e| refused(r, Refusal::Internal, e.to_string()))?;
            let (event, output, error) = match req.outcome {
                Ok(_) if output_ref.is_some() => (ActionEvent::Succeed, output_ref, None),
                Ok(bytes) => {
                    let key = PayloadKey::Outputs {
                        run: &meta.name,
                        action: &req.id,
                        attempt: 1,
                    };
                    let p = inner
                        .store_payload(key, &bytes)
                        .await
                        .map_err(internal(r))?;
                    (ActionEvent::Succeed, Some(p), None)
                }
                Err(f) => (ActionEvent::Fail, None, Some(f)),
            };
            let status = running
                .take(event)
                .map_err(|e| refused(r, Refusal::Internal, e.to_string()))?;
            inner
                .commit(vec![
                    WriteOp::InsertAction {
                        run: req.run,
                        id: req.id,
                        parent: req.parent,
                        task: req.name.into(),
                        group: None,
                        kind: ActionKind::Trace,
                        inputs,
                        queued_at: req.started_at,
                    },
                    WriteOp::StartAttempt {
                        run: req.run,
                        id: req.id,
                        attempt: 1,
                        started_at: req.started_at,
                    },
                    WriteOp::FinishAction {
                        run: req.run,
                        id: req.id,
                        status,
                        output,
                        error,
                        cache_hit: false,
                        ended_at: now_us(),
                        phases: None,
                    },
                ])
                .await
                .map_err(internal(r))
        })
    }
}
