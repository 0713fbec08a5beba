//! Runs: start, resume after a crash, abort.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use parking_lot::Mutex;
use tokio::sync::{Semaphore, watch};
use weir_blob::PayloadKey;
use weir_core::clock::now_us;
use weir_core::{ActionId, ErrorKind, Failure};
use weir_store::{NewRun, RunRecord, RunStatus, WriteOp};

use super::Engine;
use super::attempt::NewAction;
use super::error::Error;
use super::owner::{OwnerId, PRESUMED_GONE, pid_alive};
use super::state::{Counters, LiveAction, RecoverFrom, RunCache, RunOutcome, RunState};
use crate::decide::RecordedOwner;
use crate::registry::{self, TaskDef};
use crate::run::{RunContext, RunHandle};

pub(crate) fn generate_run_name() -> String {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    let h = blake3::hash(format!("{}{}", now.as_nanos(), std::process::id()).as_bytes());
    format!("r{}", &h.to_hex()[..10])
}

/// A failure of the run itself (not of one of its actions), recorded on the root.
pub(crate) fn run_failure(task: &str, kind: ErrorKind, message: impl Into<String>) -> Failure {
    Failure {
        action_id: ActionId::ROOT.to_string(),
        task: task.to_string(),
        kind,
        message: message.into(),
        chain: vec![],
    }
}

/// How a run's root is started.
#[derive(Default)]
struct Start {
    /// Resumed after its process died.
    recovering: bool,
    /// The root's attempts so far.
    base_attempt: u32,
    /// The earlier run it recovers from.
    recover: Option<RecoverFrom>,
}

impl Engine {
    /// Starts a run of `def` with canonical `inputs`.
    pub async fn start_run(
        &self,
        def: &'static TaskDef,
        inputs: Vec<u8>,
        context: RunContext,
    ) -> std::result::Result<RunHandle, Error> {
        def.check_inline("inputs", inputs.len())
            .map_err(|e| Error::TooLarge(e.to_string()))?;
        let name = context.name.clone().unwrap_or_else(generate_run_name);
        // The name is claimed before anything is written: a refused run changes nothing.
        let key = PayloadKey::Inputs {
            run: &name,
            action: &ActionId::ROOT,
        };
        let payload = self.inner.payloads.prepare(key, &inputs);
        let (record, _claim) = self
            .inner
            .store
            .create_run(NewRun {
                name: name.clone(),
                task: def.full_name().into(),
                inputs: payload.clone(),
                context: self.recorded_context(&context),
                owner: self.inner.owner.to_string(),
                queue: None,
            })
            .await?;
        self.inner.payloads.write(&payload, &inputs).await?;
        Ok(self.launch(record, def, Arc::from(inputs), &context, Start::default()))
    }

    /// Starts a new run of the task and inputs of run `from` (`rerun`). With `recover`
    /// (`rerun --recover`, SPEC §4.3) `from` must have ended, and the new run takes the output
    /// of every action that succeeded in `from` instead of running it again, except the
    /// actions `recover` names (action ids, task or trace names), which run. The root always
    /// runs; `get actions` marks what was recovered. The new run keeps the earlier run's
    /// settings (cache, concurrency, labels); `name` names it.
    pub async fn rerun(
        &self,
        from: &str,
        name: Option<String>,
        recover: Option<Vec<String>>,
    ) -> std::result::Result<RunHandle, Error> {
        let old = self.inner.store.run_by_name(from).await?;
        if recover.is_some() && !old.status.is_terminal() {
            return Err(Error::RunNotEnded(from.to_string()));
        }
        let def = registry::find_task(&old.task)?;
        for name in recover.iter().flatten() {
            self.check_forced(&old, name).await?;
        }
        // Read (and check) the inputs before anything is written.
        let inputs = self.inner.payloads.load(&old.inputs).await?;
        let mut context: RunContext =
            serde_json::from_value(old.context.clone()).unwrap_or_default();
        context.name = Some(name.unwrap_or_else(generate_run_name));
        let mut recorded = self.recorded_context(&context);
        if let (Some(map), Some(force)) = (recorded.as_object_mut(), &recover) {
            map.insert("recovered_from".into(), from.into());
            map.insert("recover_force".into(), force.clone().into());
        }
        let (record, _claim) = self
            .inner
            .store
            .create_run(NewRun {
                name: context.name.clone().unwrap_or_default(),
                task: def.full_name().into(),
                // The earlier run's inputs, by reference: the same object, not a copy.
                inputs: old.inputs.clone(),
                context: recorded,
                owner: self.inner.owner.to_string(),
                queue: None,
            })
            .await?;
        let recover = recover.map(|force| RecoverFrom {
            run: old.id,
            force: force.into_iter().collect(),
        });
        let start = Start {
            recover,
            ..Start::default()
        };
        Ok(self.launch(record, def, inputs, &context, start))
    }

    /// Refuses a `--force` name that names nothing: neither an action of run `old` nor a
    /// task or trace of this binary (it would be accepted and change nothing).
    async fn check_forced(&self, old: &RunRecord, name: &str) -> std::result::Result<(), Error> {
        let known = match ActionId::parse(name) {
            Some(id) => self.inner.store.action(old.id, id).await?.is_some(),
            None => registry::is_task_or_trace(name),
        };
        match known {
            true => Ok(()),
            false => Err(Error::Config(format!(
                "--force {name:?}: run {} has no action with that id, and this binary no task or trace of that name (give an action id, a full task name `env.task`, or a trace name)",
                old.name
            ))),
        }
    }

    /// Resumes a run whose process died (SPEC §4.2): the root runs again and every child that
    /// had succeeded returns its recorded output without running.
    pub async fn resume_run(
        &self,
        name: &str,
        force: bool,
    ) -> std::result::Result<RunHandle, Error> {
        let record = self.inner.store.run_by_name(name).await?;
        let def = registry::find_task(&record.task)?;
        let context: RunContext =
            serde_json::from_value(record.context.clone()).unwrap_or_default();
        if record.status.is_terminal() {
            let outcome = self.stored_outcome(&record).await?;
            let (done, _) = watch::channel(Some(outcome));
            let state = Arc::new(self.new_run_state(&record, &context, done, false, None));
            return Ok(RunHandle::new(self.clone(), state));
        }
        if !force && !self.owner_gone(&record) {
            return Err(Error::RunOwned {
                run: name.to_string(),
                owner: record.owner.clone(),
                epoch: record.epoch,
            });
        }
        // Compare and set: of two engines resuming together, one gets the run.
        self.inner
            .store
            .claim_run(record.id, self.inner.owner.to_string(), record.epoch)
            .await?;
        let inputs = self.inner.payloads.load(&record.inputs).await?;
        let root = self
            .inner
            .store
            .action(record.id, ActionId::ROOT)
            .await
            .ok()
            .flatten();
        // A resumed `rerun --recover` run goes on recovering from the same earlier run, and
        // still runs what it was told to run again.
        let recover = match record.context["recovered_from"].as_str() {
            Some(from) => Some(RecoverFrom {
                run: self.inner.store.run_by_name(from).await?.id,
                force: serde_json::from_value(record.context["recover_force"].clone())
                    .unwrap_or_default(),
            }),
            None => None,
        };
        let start = Start {
            recovering: true,
            base_attempt: root.map(|r| r.attempts).unwrap_or(0),
            recover,
        };
        Ok(self.launch(record, def, inputs, &context, start))
    }

    /// The run context as recorded with the run, with where its attempts run (so that a
    /// resume runs them the same way).
    fn recorded_context(&self, context: &RunContext) -> serde_json::Value {
        let mut value = serde_json::to_value(context).unwrap_or_default();
        if let Some(map) = value.as_object_mut() {
            let executor = self.inner.options.executor.as_str();
            map.insert("executor".into(), executor.into());
        }
        value
    }

    /// Whether the run's recorded owner is gone ([`crate::decide::owner_gone`]).
    fn owner_gone(&self, record: &RunRecord) -> bool {
        let me = &self.inner.owner;
        let Some(owner) = OwnerId::parse(&record.owner) else {
            return true; // no usable owner recorded
        };
        let silent_for = record
            .owner_seen_at
            .map(|at| Duration::from_micros(now_us().saturating_sub(at).max(0) as u64));
        crate::decide::owner_gone(
            RecordedOwner {
                same_host: owner.host == me.host,
                is_me: owner == *me,
                pid_alive: owner.pid != me.pid && pid_alive(owner.pid),
                silent_for,
            },
            PRESUMED_GONE,
        )
    }

    async fn stored_outcome(&self, record: &RunRecord) -> std::result::Result<RunOutcome, Error> {
        Ok(match record.status {
            RunStatus::Succeeded => match &record.output {
                Some(p) => RunOutcome::Succeeded(self.inner.payloads.load(p).await?),
                None => RunOutcome::Failed(run_failure(
                    &record.task,
                    ErrorKind::System,
                    "the run succeeded but its output is missing",
                )),
            },
            RunStatus::Aborted => RunOutcome::Aborted,
            _ => RunOutcome::Failed(
                record
                    .error
                    .clone()
                    .unwrap_or_else(|| run_failure(&record.task, ErrorKind::System, "failed")),
            ),
        })
    }

    fn new_run_state(
        &self,
        record: &RunRecord,
        context: &RunContext,
        done: watch::Sender<Option<RunOutcome>>,
        recovering: bool,
        recover: Option<RecoverFrom>,
    ) -> RunState {
        RunState {
            id: record.id,
            name: record.name.clone(),
            limit: context
                .max_action_concurrency
                .map(|n| Arc::new(Semaphore::new(n.max(1)))),
            recovering,
            live: Mutex::new(HashMap::default()),
            counters: Counters::default(),
            cache: RunCache {
                disabled: context.disable_cache,
                overwrite: context.overwrite_cache,
                project_domain_only: context.cache_lookup_scope
                    == crate::run::CacheLookupScope::ProjectDomain,
                project: context.project.clone().unwrap_or_else(|| "default".into()),
                domain: context
                    .domain
                    .clone()
                    .unwrap_or_else(|| "development".into()),
            },
            done,
            aborted: AtomicBool::new(false),
            recover,
        }
    }

    fn launch(
        &self,
        record: RunRecord,
        def: &'static TaskDef,
        inputs: Arc<[u8]>,
        context: &RunContext,
        start: Start,
    ) -> RunHandle {
        self.start_heartbeat();
        let (done, _) = watch::channel(None);
        let Start {
            recovering,
            base_attempt,
            recover,
        } = start;
        let run = Arc::new(self.new_run_state(&record, context, done, recovering, recover));
        self.inner.runs.lock().insert(run.id, run.clone());
        run.counters.created.fetch_add(1, Ordering::Relaxed);
        run.live
            .lock()
            .insert(ActionId::ROOT, LiveAction::queued(Vec::new(), None));
        let task = self.spawn_action(NewAction {
            run: run.clone(),
            id: ActionId::ROOT,
            parent: ActionId::ROOT,
            def,
            inputs,
            group: None,
            base_attempt,
            insert: false,
        });
        if let Some(a) = run.live.lock().get_mut(&ActionId::ROOT) {
            a.abort = Some(task.abort_handle());
        }
        RunHandle::new(self.clone(), run)
    }

    /// Aborts a run driven by this process: cancels every live action and records the run as
    /// aborted. Returns false if this process does not drive the run.
    pub fn abort_local(&self, run_name: &str) -> bool {
        let run = self
            .inner
            .runs
            .lock()
            .values()
            .find(|r| r.name == run_name)
            .cloned();
        let Some(run) = run else { return false };
        self.abort_run_state(&run);
        true
    }

    pub(crate) fn abort_run_state(&self, run: &Arc<RunState>) {
        if run.aborted.swap(true, Ordering::AcqRel) {
            return;
        }
        let aborted: Vec<_> = run
            .live
            .lock()
            .drain()
            .filter_map(|(_, mut a)| {
                // Every live status accepts a cancel; the store's bulk update below writes it.
                if let Ok(s) = a.status.take(weir_core::ActionEvent::Cancel) {
                    a.status = s;
                }
                a.abort
            })
            .collect();
        for h in aborted {
            h.abort();
        }
        let committed = self.write_abort(run.id, "");
        let (state, engine) = (run.clone(), self.clone());
        tokio::spawn(async move {
            let _ = committed.await;
            state.done.send_replace(Some(RunOutcome::Aborted));
            engine.inner.runs.lock().remove(&state.id);
        });
    }

    /// Aborts a run by name: in this process if it drives the run, else through the store
    /// (the process that drives it notices, as it polls). A run that has ended is refused.
    pub async fn abort_run(&self, name: &str) -> std::result::Result<(), Error> {
        if self.abort_local(name) {
            return Ok(());
        }
        let record = self.inner.store.run_by_name(name).await?;
        if record.status.is_terminal() {
            return Err(Error::RunEnded {
                run: name.to_string(),
                status: record.status.as_str(),
            });
        }
        self.write_abort(record.id, &record.task)
            .await
            .map_err(|e| Error::Store(weir_store::Error::Corrupt(e.to_string())))
    }

    fn write_abort(&self, run: weir_store::RunId, task: &str) -> weir_store::Ticket {
        let now = now_us();
        self.inner.store.write(WriteOp::CancelLiveActions {
            run,
            error: run_failure(task, ErrorKind::Cancelled, "the run was aborted"),
            ended_at: now,
        });
        self.inner.store.commit(WriteOp::FinishRun {
            run,
            status: RunStatus::Aborted,
            output: None,
            error: None,
            ended_at: now,
        })
    }
}
