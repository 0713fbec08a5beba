//! The attempt loop of one action: its slot, each attempt's start, limit and outcome, retries
//! (rules: [`crate::decide`]), and the writes that end it. Every status change goes through the
//! live table's lifecycle ([`RunState::transition`]).

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Instant;

use futures::FutureExt;
use weir_blob::PayloadKey;
use weir_core::clock::now_us;
use weir_core::phases::Phases;
use weir_core::{ActionEvent, ActionId, ErrorKind, Failure};
use weir_store::{ActionKind, AttemptRecord, Payload, WriteOp};

use super::Engine;
use super::state::{RunOutcome, RunState};
use crate::call::{TaskCtx, flatten_panic};
use crate::decide::{self, Finish, Next};
use crate::registry::TaskDef;
use crate::{Error, Result};

/// An action to run: what admission (or a run's start) hands to [`Engine::run_action`].
pub(crate) struct NewAction {
    pub run: Arc<RunState>,
    pub id: ActionId,
    pub parent: ActionId,
    pub def: &'static TaskDef,
    pub inputs: Arc<[u8]>,
    pub group: Option<Arc<str>>,
    /// Attempts already started (a resubmitted or recovered action counts on).
    pub base_attempt: u32,
    /// Write the action's row (false for a run's root, created with the run).
    pub insert: bool,
}

impl Engine {
    /// Starts an action on its own task, inside a span naming its run, action and task (what
    /// the task logs through `tracing` carries them).
    pub(super) fn spawn_action(&self, action: NewAction) -> tokio::task::JoinHandle<()> {
        let span = tracing::info_span!(
            "action",
            run = %action.run.name,
            action = %action.id,
            task = %action.def.full_name(),
        );
        // Unwrapped when nothing listens (the default): a hop of a chain costs less.
        if span.is_disabled() {
            return tokio::spawn(self.clone().run_action(action));
        }
        tokio::spawn(tracing::Instrument::instrument(
            self.clone().run_action(action),
            span,
        ))
    }

    pub(super) async fn run_action(self, action: NewAction) {
        let NewAction {
            run,
            id,
            parent,
            def,
            inputs,
            group,
            base_attempt,
            insert,
        } = action;
        let queued = Instant::now();
        let store = &self.inner.store;
        // Phase timings (SPEC §9.3): a few clock reads per attempt.
        let mut upload = 0;
        if insert {
            let payload = match self
                .store_payload(
                    PayloadKey::Inputs {
                        run: &run.name,
                        action: &id,
                    },
                    &inputs,
                )
                .await
            {
                Ok(p) => p,
                Err(e) => return self.halt_run(&run, id, def.full_name(), &e),
            };
            store.write(WriteOp::InsertAction {
                run: run.id,
                id,
                parent,
                task: def.full_name().to_string().into(),
                group,
                kind: ActionKind::Task,
                inputs: payload,
                queued_at: now_us(),
            });
            upload = queued.elapsed().as_micros() as u64;
        }
        let timeouts = &def.config().timeouts;
        let retry = &def.config().retry;
        let deadline = timeouts.deadline.map(|d| queued + d);
        // Take the environment's and the run's slots (SPEC §9.2), bounded by max_queued.
        let slots = crate::limits::Slots::new(
            self.inner.env_limits.of(def.environment()),
            run.limit.clone(),
        );
        let mut permits = match timeouts.max_queued.or(timeouts.deadline) {
            Some(max) => tokio::time::timeout(max, slots.acquire()).await.ok(),
            None => Some(slots.acquire().await),
        };
        if permits.is_none() {
            let e = Error::with_kind(
                ErrorKind::Deadline,
                format!(
                    "task {} waited in the queue longer than its max_queued time",
                    def.full_name()
                ),
            );
            return self.fail(&run, id, def, e).await;
        }
        let mut attempt = base_attempt;
        let mut retries_used = 0;
        // The first attempt waited from its inputs' upload; a retry from its requeue.
        let mut ready = queued + std::time::Duration::from_micros(upload);
        loop {
            attempt += 1;
            let slot_at = Instant::now();
            let ctx = Arc::new(TaskCtx::new(
                self.clone(),
                run.clone(),
                id,
                def,
                attempt,
                slots.clone(),
                permits.take().unwrap_or_default(),
            ));
            // In worker processes an attempt starts when a worker leases it: its wait for a
            // worker is queue time, not runtime (nor part of its max runtime).
            let mut queued = None;
            let mut started = None;
            if let Some(exec) = self
                .inner
                .executor
                .as_ref()
                .filter(|_| self.inner.options.executor.in_workers(def.environment()))
            {
                let queue = exec.queue_attempt(&run, id, attempt, def, inputs.clone(), ctx.clone());
                let mut q = match queue.await {
                    Ok(q) => q,
                    Err(e) => return self.fail(&run, id, def, e).await,
                };
                started = match deadline {
                    Some(d) => {
                        let at = tokio::time::Instant::from_std(d);
                        tokio::time::timeout_at(at, q.leased()).await.ok().flatten()
                    }
                    None => q.leased().await,
                };
                queued = Some(q);
            }
            if run.transition(id, ActionEvent::Start).is_err() {
                return; // cancelled meanwhile
            }
            let leased_at = Instant::now();
            let started = started.unwrap_or_else(now_us);
            store.write(WriteOp::StartAttempt {
                run: run.id,
                id,
                attempt,
                started_at: started,
            });
            run.counters.running.fetch_add(1, Ordering::Relaxed);
            let body = async {
                match queued {
                    None => flatten_panic(
                        std::panic::AssertUnwindSafe(ctx.clone().scope(def.invoke(inputs.clone())))
                            .catch_unwind()
                            .await,
                    ),
                    Some(q) => q.outcome().await,
                }
            };
            let body_at = Instant::now();
            let result: Result<Vec<u8>> =
                match decide::attempt_limit(timeouts, deadline, Instant::now()) {
                    Some(limit) => match tokio::time::timeout(limit, body).await {
                        Ok(r) => r,
                        Err(_) => {
                            let kind = decide::timeout_kind(deadline, Instant::now());
                            let what = match kind {
                                ErrorKind::Deadline => "its overall deadline",
                                _ => "its max runtime",
                            };
                            Err(Error::with_kind(
                                kind,
                                format!(
                                    "attempt {attempt} of task {} ran past {what} of {limit:?}",
                                    def.full_name()
                                ),
                            ))
                        }
                    },
                    None => body.await,
                };
            run.counters.running.fetch_sub(1, Ordering::Relaxed);
            let mut phases = attempt_phases(&ctx, upload, ready, slot_at, leased_at, body_at);
            upload = 0;
            permits = Arc::try_unwrap(ctx).ok().map(TaskCtx::into_permits);
            let result = result.and_then(|out| def.check_inline("output", out.len()).map(|_| out));
            let e = match result {
                Ok(out) => {
                    let output_at = Instant::now();
                    let payload = match self
                        .store_payload(
                            PayloadKey::Outputs {
                                run: &run.name,
                                action: &id,
                                attempt,
                            },
                            &out,
                        )
                        .await
                    {
                        Ok(p) => p,
                        Err(e) => return self.halt_run(&run, id, def.full_name(), &e),
                    };
                    phases.output += output_at.elapsed().as_micros() as u64;
                    return self
                        .finish(&run, id, def, Ok((payload, Arc::from(out))), Some(phases))
                        .await;
                }
                Err(e) => e,
            };
            let failure = e.to_failure(id.to_string(), def.full_name().into());
            let next =
                decide::after_failure(e.kind(), retries_used, retry, deadline, Instant::now());
            let retrying = next != Next::Finish;
            if retrying && run.transition(id, ActionEvent::FailRetryable).is_err() {
                return;
            }
            store.write(WriteOp::FailAttempt {
                run: run.id,
                id,
                attempt: AttemptRecord {
                    attempt,
                    started_at: started,
                    ended_at: now_us(),
                    error: failure.clone(),
                    phases: Some(Phases {
                        deliver: 0,
                        ..phases
                    }),
                },
                retrying,
            });
            let Next::Retry(delay) = next else {
                return self.finish(&run, id, def, Err(failure), Some(phases)).await;
            };
            retries_used += 1;
            tracing::debug!(run = %run.name, action = %id, task = def.full_name(), attempt, error = %failure.message, "attempt failed, retrying");
            if !delay.is_zero() {
                tokio::time::sleep(delay).await;
            }
            if run.transition(id, ActionEvent::Requeue).is_err() {
                return;
            }
            ready = Instant::now();
        }
    }

    /// Stops driving `run` because a durable step of action `id` failed: an object or a state
    /// commit could not be written (a full disk, a store that went away). Nothing more of the
    /// run is written and nothing is recorded as failed (that would turn a passing fault of
    /// the engine's storage into the run's final outcome): the state stays as its last commit
    /// left it, as after a crash, and `resume` goes on from there once the cause is fixed. The
    /// run's caller gets the error.
    pub(crate) fn halt_run(
        &self,
        run: &RunState,
        id: ActionId,
        task: &str,
        error: &dyn std::fmt::Display,
    ) {
        if run.aborted.swap(true, Ordering::AcqRel) {
            return; // aborted or halted already
        }
        tracing::error!(run = %run.name, action = %id, %error, "a durable step failed: the run stops, to be resumed");
        let handles: Vec<_> = run
            .live
            .lock()
            .drain()
            .filter_map(|(_, a)| a.abort)
            .collect();
        let failure = Failure {
            action_id: id.to_string(),
            task: task.into(),
            kind: ErrorKind::System,
            message: format!(
                "run {} stopped: {error}; nothing was recorded as failed: `resume {}` goes on from its last commit once the cause is fixed",
                run.name, run.name
            ),
            chain: vec![],
        };
        run.done.send_replace(Some(RunOutcome::Failed(failure)));
        self.inner.runs.lock().remove(&run.id);
        for h in handles {
            h.abort();
        }
    }

    /// Ends an action with an error raised by the engine itself (queue wait).
    async fn fail(&self, run: &Arc<RunState>, id: ActionId, def: &'static TaskDef, e: Error) {
        let failure = e.to_failure(id.to_string(), def.full_name().into());
        self.finish(run, id, def, Err(failure), None).await;
    }

    /// Queues the writes that end the action ([`decide::finish_writes`]); once they are
    /// committed, the waiters get the outcome and the action leaves memory.
    async fn finish(
        &self,
        run: &Arc<RunState>,
        id: ActionId,
        def: &'static TaskDef,
        outcome: std::result::Result<(Payload, Arc<[u8]>), Failure>,
        phases: Option<Phases>,
    ) {
        let (from, cache) = {
            let mut live = run.live.lock();
            match live.get_mut(&id) {
                Some(a) => {
                    a.finishing = true;
                    (a.status, a.cache.take())
                }
                None => return, // cancelled meanwhile
            }
        };
        let (stored, delivered) = match outcome {
            Ok((payload, bytes)) => (Ok(payload), Ok(bytes)),
            Err(f) => (Err(f.clone()), Err(f)),
        };
        let writes = decide::finish_writes(Finish {
            run: run.id,
            id,
            task: def.full_name(),
            from,
            outcome: stored,
            cache,
            scope: (&run.cache.project, &run.cache.domain),
            ended_at: now_us(),
            phases,
        });
        let writes = match writes {
            Ok(w) => w,
            Err(refused) => {
                tracing::error!(run = %run.name, action = %id, %refused, "finish refused by the lifecycle table");
                return;
            }
        };
        // Fault injection (feature `failpoints`): die before a cache entry (and the result it
        // caches) is queued, or once both are committed and nobody has been told.
        #[cfg(feature = "failpoints")]
        let caches = writes.iter().any(|w| matches!(w, WriteOp::PutCache(_)));
        #[cfg(feature = "failpoints")]
        if caches {
            fail::fail_point!("cache.write.before");
        }
        // A run halted (a durable step failed) or aborted meanwhile records no end of its own:
        // halted, it is resumed from its last commit; aborted, the abort recorded it.
        if run.aborted.load(Ordering::Acquire) {
            return;
        }
        let mut writes = writes.into_iter();
        let last = writes.next_back().expect("an action's end writes its row");
        for op in writes {
            self.inner.store.write(op);
        }
        let commit_at = Instant::now();
        let committed = self.inner.store.commit(last).await;
        #[cfg(feature = "failpoints")]
        if caches && committed.is_ok() {
            fail::fail_point!("cache.write.after");
        }
        if let Err(e) = committed {
            let what = format!("could not persist the result of action {id}: {e}");
            return self.halt_run(run, id, def.full_name(), &what);
        }
        if delivered.is_ok() {
            run.counters.succeeded.fetch_add(1, Ordering::Relaxed);
        } else {
            run.counters.failed.fetch_add(1, Ordering::Relaxed);
        }
        // Recorded before anyone is told, so that it is queued before whatever the parent
        // writes next (a run ends after its children's deliveries are recorded).
        let finished = run.counters.succeeded.load(Ordering::Relaxed)
            + run.counters.failed.load(Ordering::Relaxed);
        if let Some(mut phases) = phases.filter(|_| Phases::sampled(finished)) {
            phases.deliver = commit_at.elapsed().as_micros() as u64;
            self.inner.store.write(WriteOp::Delivered {
                run: run.id,
                id,
                phases: Box::new(phases),
            });
        }
        let entry = run.live.lock().remove(&id);
        if id == ActionId::ROOT {
            let outcome = match &delivered {
                Ok(b) => RunOutcome::Succeeded(b.clone()),
                Err(f) => RunOutcome::Failed(f.clone()),
            };
            run.done.send_replace(Some(outcome));
            self.inner.runs.lock().remove(&run.id);
        }
        if let Some(entry) = entry {
            for w in entry.waiters {
                let _ = w.send(delivered.clone());
            }
        }
    }
}

/// The phases of an attempt that ran (its output's upload is added by the caller): `upload`
/// of its inputs, queue wait from `ready` to its slot (`slot_at`), start to its code (with a
/// worker: its lease at `leased_at` and what the worker reported), and what its code measured
/// (decode, encode).
fn attempt_phases(
    ctx: &TaskCtx,
    upload: u64,
    ready: Instant,
    slot_at: Instant,
    leased_at: Instant,
    body_at: Instant,
) -> Phases {
    let us = |d: std::time::Duration| d.as_micros() as u64;
    let ran = us(body_at.elapsed());
    let queue = us(slot_at.saturating_duration_since(ready));
    match *ctx.times.remote.lock() {
        // A worker ran it: from its slot to its code is start (a worker or a process to take
        // it, the lease's delivery, a free slot in the worker), and so is what the worker did
        // not spend holding it (the completion's delivery).
        Some(w) => Phases {
            upload,
            queue,
            start: us(leased_at.saturating_duration_since(slot_at))
                + w.start
                + ran.saturating_sub(w.held),
            download: w.download,
            exec: w.exec,
            output: w.output,
            deliver: Phases::NOT_RECORDED,
        },
        None => {
            let decode = ctx.times.decode.load(Ordering::Relaxed) / 1000;
            let encode = ctx.times.encode.load(Ordering::Relaxed) / 1000;
            Phases {
                upload,
                queue: us(slot_at.saturating_duration_since(ready)),
                start: us(body_at.saturating_duration_since(slot_at)),
                download: decode,
                exec: ran.saturating_sub(decode + encode),
                output: encode,
                deliver: Phases::NOT_RECORDED,
            }
        }
    }
}
