//! Admission of a child call: attach to the live action with its id, replay what the store
//! recorded for it, answer it from the cache, or start a new action (rules:
//! [`crate::decide::admit`]). Also the cancel of a child whose caller stopped waiting.

use std::sync::Arc;
use std::sync::atomic::Ordering;

use tokio::sync::oneshot;
use weir_core::clock::now_us;
use weir_core::{ActionEvent, ActionId, ActionStatus, ErrorKind};
use weir_store::{ActionKind, WriteOp};

use super::attempt::NewAction;
use super::state::{LiveAction, Outcome, RunState};
use super::{Engine, system};
use crate::decide::{self, Admission, Stored};
use crate::registry::TaskDef;
use crate::{Error, Result};

/// One call of a task by a running attempt: what travels from the caller (in process or
/// through the worker protocol) to admission and on to the action's attempt loop.
pub(crate) struct ChildCall {
    /// The run.
    pub run: Arc<RunState>,
    /// The calling action.
    pub parent: ActionId,
    /// The child's id, derived by the caller (SPEC §4.1).
    pub id: ActionId,
    /// The task called.
    pub def: &'static TaskDef,
    /// Canonical inputs, already checked against the inline limit.
    pub inputs: Vec<u8>,
    /// Group, if any.
    pub group: Option<Arc<str>>,
    /// The child may already be recorded (the caller is a retry or a resumed run): look it up
    /// before running it.
    pub may_replay: bool,
}

/// A call admission could not decide without IO, with its cache key and version.
type Deferred = (ChildCall, Option<(String, String)>);

enum Attach {
    Ready(Outcome),
    Wait(oneshot::Receiver<Outcome>),
}

/// Cancels a child whose caller stopped waiting (dropped future, fail-fast sibling).
struct CancelOnDrop {
    engine: Engine,
    run: Arc<RunState>,
    id: ActionId,
    armed: bool,
}

impl Drop for CancelOnDrop {
    fn drop(&mut self) {
        if self.armed {
            self.engine.cancel_if_unwanted(&self.run, self.id);
        }
    }
}

/// A pending child result: the receiver drops before the guard checks it.
struct Pending {
    rx: Option<oneshot::Receiver<Outcome>>,
    guard: CancelOnDrop,
}

impl Engine {
    /// Creates (or attaches to, or recovers) the child and waits for its outcome: the one
    /// implementation behind in-process calls and the worker protocol's submit.
    pub(crate) async fn submit(self, call: ChildCall) -> Result<Arc<[u8]>> {
        let (run, id, task) = (call.run.clone(), call.id, call.def.full_name());
        // Most calls are decided without waiting; the others (a retry or resume that reads the
        // store, a cached call) wait in a boxed future, so that the future of a call waiting on
        // its child stays small: a parent awaiting 100 000 children holds 100 000 of them.
        let attach = match self.attach_now(call)? {
            Ok(attach) => attach,
            Err((call, cache)) => Box::pin(self.attach_or_start(call, cache)).await?,
        };
        let mut pending = match attach {
            Attach::Ready(outcome) => return outcome.map_err(Error::from_child),
            Attach::Wait(rx) => Pending {
                rx: Some(rx),
                guard: CancelOnDrop {
                    engine: self,
                    run,
                    id,
                    armed: true,
                },
            },
        };
        // Unconstrained: a parent awaiting thousands of children in one `join_all` would
        // otherwise exhaust tokio's cooperative budget and re-poll every pending child per wake
        // (quadratic in the fan-out).
        let outcome =
            tokio::task::unconstrained(pending.rx.as_mut().expect("receiver present")).await;
        pending.guard.armed = false;
        match outcome {
            Ok(o) => o.map_err(Error::from_child),
            Err(_) => Err(Error::with_kind(
                ErrorKind::Cancelled,
                format!("action {id} ({task}) was cancelled"),
            )),
        }
    }

    /// [`Engine::submit`] as a boxed `Send` future (for the worker API's tasks).
    pub(crate) fn submit_boxed(
        self,
        call: ChildCall,
    ) -> futures::future::BoxFuture<'static, Result<Arc<[u8]>>> {
        Box::pin(self.submit(call))
    }

    /// Admission without IO: attach to the live action, or start a new one when the call can
    /// not have been recorded and is not cached. `Err`: it needs the async path (with the
    /// call's cache key and version, computed once).
    fn attach_now(&self, call: ChildCall) -> Result<std::result::Result<Attach, Deferred>> {
        if let Some(a) = call.run.live.lock().get_mut(&call.id) {
            let (tx, rx) = oneshot::channel();
            a.waiters.push(tx);
            return Ok(Ok(Attach::Wait(rx)));
        }
        let cache = self.cache_key(call.def, &call.inputs, &call.run)?;
        if call.may_replay || (cache.is_some() && !call.run.cache.overwrite) {
            return Ok(Err((call, cache)));
        }
        self.start_new(call, cache, 0).map(Ok)
    }

    async fn attach_or_start(
        &self,
        call: ChildCall,
        cache: Option<(String, String)>,
    ) -> Result<Attach> {
        let (run, id) = (&call.run, call.id);
        if let Some(a) = run.live.lock().get_mut(&id) {
            let (tx, rx) = oneshot::channel();
            a.waiters.push(tx);
            return Ok(Attach::Wait(rx));
        }
        let record = match call.may_replay {
            true => {
                // Read what was queued before (a failed attempt's cancelled children).
                self.inner.store.sync().await.map_err(system)?;
                self.inner.store.action(run.id, id).await.map_err(system)?
            }
            false => None,
        };
        if record.is_none()
            && let Some(bytes) = self
                .recover_action(run, id, call.parent, ActionKind::Task)
                .await?
        {
            return Ok(Attach::Ready(Ok(bytes)));
        }
        let stored = record.as_ref().map(|r| Stored {
            status: r.status,
            attempts: r.attempts,
            output: r.output.as_ref(),
            error: r.error.as_ref(),
        });
        let mut admission = decide::admit(stored);
        if let Admission::Replay(out) = admission {
            match self.load_recorded(out).await? {
                Some(bytes) => {
                    run.counters.recovered.fetch_add(1, Ordering::Relaxed);
                    return Ok(Attach::Ready(Ok(bytes)));
                }
                None => admission = decide::output_lost(stored.expect("replay of a record")),
            }
        }
        let (base_attempt, requeue) = match admission {
            Admission::Replay(_) => unreachable!("replayed above"),
            Admission::Reraise(f) => return Ok(Attach::Ready(Err(f.clone()))),
            Admission::Start {
                base_attempt,
                requeue,
            } => (base_attempt, requeue),
        };
        if let (Some(event), Some(r)) = (requeue, &record) {
            // The stored row goes back to the queue; the insert below writes `queued`.
            r.status.take(event).map_err(system)?;
        }
        if let Some((key, _)) = &cache
            && !run.cache.overwrite
            && let Some(hit) = self.cache_hit(&call, key).await?
        {
            return Ok(Attach::Ready(Ok(hit)));
        }
        self.start_new(call, cache, base_attempt)
    }

    /// Creates the live action and spawns its attempt loop (or attaches, if it appeared
    /// meanwhile).
    fn start_new(
        &self,
        call: ChildCall,
        cache: Option<(String, String)>,
        base_attempt: u32,
    ) -> Result<Attach> {
        let (run, id) = (&call.run, call.id);
        let (tx, rx) = oneshot::channel();
        {
            let mut live = run.live.lock();
            if run.aborted.load(Ordering::Acquire) {
                return Err(Error::with_kind(
                    ErrorKind::Cancelled,
                    "the run was aborted",
                ));
            }
            if let Some(a) = live.get_mut(&id) {
                a.waiters.push(tx);
                return Ok(Attach::Wait(rx));
            }
            live.insert(id, LiveAction::queued(vec![tx], cache));
        }
        run.counters.created.fetch_add(1, Ordering::Relaxed);
        let run = call.run.clone();
        let task = self.spawn_action(NewAction {
            run: call.run,
            id,
            parent: call.parent,
            def: call.def,
            inputs: Arc::from(call.inputs),
            group: call.group,
            base_attempt,
            insert: true,
        });
        if let Some(a) = run.live.lock().get_mut(&id) {
            a.abort = Some(task.abort_handle());
        }
        Ok(Attach::Wait(rx))
    }

    fn cancel_if_unwanted(&self, run: &Arc<RunState>, id: ActionId) {
        let handle = {
            let mut live = run.live.lock();
            match live.get(&id) {
                Some(a) if !a.finishing && a.waiters.iter().all(|w| w.is_closed()) => {
                    match a.status.take(ActionEvent::Cancel) {
                        Ok(ActionStatus::Cancelled) => live.remove(&id).and_then(|a| a.abort),
                        _ => return,
                    }
                }
                _ => return,
            }
        };
        if let Some(h) = handle {
            h.abort();
        }
        run.counters.failed.fetch_add(1, Ordering::Relaxed);
        let mut failure = super::runs::run_failure(
            "",
            ErrorKind::Cancelled,
            "cancelled: its caller stopped waiting",
        );
        failure.action_id = id.to_string();
        self.inner.store.write(WriteOp::FinishAction {
            run: run.id,
            id,
            status: ActionStatus::Cancelled,
            output: None,
            error: Some(failure),
            cache_hit: false,
            ended_at: now_us(),
            phases: None,
        });
    }
}
