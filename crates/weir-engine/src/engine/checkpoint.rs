//! Trace checkpoints (SPEC §6.4): looked up before a trace runs again, recorded after it ran.
//! A checkpoint is an action row of kind `trace` that goes queued → running → its end within
//! one group commit.

use std::borrow::Cow;

use weir_blob::PayloadKey;
use weir_core::clock::now_us;
use weir_core::{ActionEvent, ActionId, ActionStatus, ErrorKind, Failure};
use weir_store::{ActionKind, RunId, WriteOp};

use super::state::RunState;
use super::{Engine, system};
use crate::trace::Checkpoint;
use crate::{Error, Result};

/// A trace's outcome to record.
pub(crate) struct TraceOutcome<'a> {
    /// The trace's id (derived like a child's).
    pub id: ActionId,
    /// The attempt it ran in.
    pub parent: ActionId,
    /// The trace's name.
    pub name: Cow<'static, str>,
    /// Canonical inputs.
    pub inputs: &'a [u8],
    /// When it started (µs).
    pub started_at: i64,
    /// Its output or failure.
    pub outcome: std::result::Result<Vec<u8>, Failure>,
}

impl Engine {
    /// Looks up the checkpoint of trace `id` of attempt `parent` in run `run_id` (SPEC §6.4):
    /// a recorded output, a recorded non-recoverable failure, or nothing (run the trace). Only
    /// a trace recorded under `parent` counts: the lookup never reads another action.
    pub(crate) async fn lookup_checkpoint(
        &self,
        run_id: RunId,
        id: ActionId,
        parent: ActionId,
    ) -> Result<Checkpoint> {
        // A checkpoint is looked up only after a retry or a resume: see what was queued before.
        self.inner.store.sync().await.map_err(system)?;
        let rec = self.inner.store.action(run_id, id).await.map_err(system)?;
        let rec = rec.filter(|r| r.kind == ActionKind::Trace && r.parent == parent);
        if rec.is_none()
            && let Some(run) = self.run_state(run_id)
            && let Some(bytes) = self
                .recover_action(&run, id, parent, ActionKind::Trace)
                .await?
        {
            return Ok(Checkpoint::Output(bytes.to_vec()));
        }
        Ok(match rec.map(|r| (r.status, r.output, r.error)) {
            // A lost output (deleted or corrupt object): the trace runs again.
            Some((ActionStatus::Succeeded, Some(out), _)) => {
                match self.load_recorded(&out).await? {
                    Some(bytes) => Checkpoint::Output(bytes.to_vec()),
                    None => Checkpoint::Nothing,
                }
            }
            // A recoverable failure runs the trace again; any other is re-raised.
            Some((ActionStatus::Failed, _, Some(f))) if !f.kind.is_retryable() => {
                Checkpoint::Failure(f)
            }
            _ => Checkpoint::Nothing,
        })
    }

    /// Whether `id` is recorded as something other than a trace of attempt `parent` (a
    /// worker's trace record must not overwrite it).
    pub(crate) async fn recorded_as_other(
        &self,
        run_id: RunId,
        id: ActionId,
        parent: ActionId,
    ) -> Result<bool> {
        self.inner.store.sync().await.map_err(system)?;
        let rec = self.inner.store.action(run_id, id).await.map_err(system)?;
        Ok(rec.is_some_and(|r| r.kind != ActionKind::Trace || r.parent != parent))
    }

    /// Records a trace checkpoint and waits for its commit.
    pub(crate) async fn record_checkpoint(
        &self,
        run: &RunState,
        t: TraceOutcome<'_>,
    ) -> Result<()> {
        // A checkpoint that cannot be written stops the run (see `halt_run`).
        let (id, what) = (t.id, t.name.to_string());
        self.write_checkpoint(run, t).await.inspect_err(|e| {
            self.halt_run(run, id, &what, e);
        })
    }

    async fn write_checkpoint(&self, run: &RunState, t: TraceOutcome<'_>) -> Result<()> {
        let id = t.id;
        let inputs = self
            .store_payload(
                PayloadKey::Inputs {
                    run: &run.name,
                    action: &id,
                },
                t.inputs,
            )
            .await?;
        let running = ActionStatus::Queued
            .take(ActionEvent::Start)
            .map_err(system)?;
        let (event, output, error) = match t.outcome {
            Ok(bytes) => {
                let p = self
                    .store_payload(
                        PayloadKey::Outputs {
                            run: &run.name,
                            action: &id,
                            attempt: 1,
                        },
                        &bytes,
                    )
                    .await?;
                (ActionEvent::Succeed, Some(p), None)
            }
            Err(f) => (ActionEvent::Fail, None, Some(f)),
        };
        let status = running.take(event).map_err(system)?;
        let store = &self.inner.store;
        let what = t.name.to_string();
        // Fault injection (feature `failpoints`): die, or fail, with the trace run (and its
        // payloads written) but its checkpoint not yet written.
        #[cfg(feature = "failpoints")]
        fail::fail_point!("trace.record", |_| {
            eprintln!("weir: failpoint trace.record: injected error");
            Err(Error::with_kind(
                ErrorKind::System,
                format!("could not record trace {what}: failpoint trace.record: injected error"),
            ))
        });
        store.write(WriteOp::InsertAction {
            run: run.id,
            id,
            parent: t.parent,
            task: t.name,
            group: None,
            kind: ActionKind::Trace,
            inputs,
            queued_at: t.started_at,
        });
        store.write(WriteOp::StartAttempt {
            run: run.id,
            id,
            attempt: 1,
            started_at: t.started_at,
        });
        let committed = store
            .commit(WriteOp::FinishAction {
                run: run.id,
                id,
                status,
                output,
                error,
                cache_hit: false,
                ended_at: now_us(),
                phases: None,
            })
            .await;
        committed.map_err(|e| {
            Error::with_kind(
                ErrorKind::System,
                format!("could not record trace {what}: {e}"),
            )
        })
    }
}
