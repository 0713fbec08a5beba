//! `rerun --recover` (SPEC §4.3): in a run started from an earlier one, a call (or trace) whose
//! action succeeded in the earlier run takes that output instead of running. Ids are derived
//! from the parent's id, the task and the inputs, so the same call in the new run has the same
//! id as in the earlier one; its row is copied, the output and inputs by reference.

use std::sync::Arc;
use std::sync::atomic::Ordering;

use weir_core::clock::now_us;
use weir_core::{ActionEvent, ActionId, ActionStatus};
use weir_store::{ActionKind, WriteOp};

use super::state::RunState;
use super::{Engine, system};
use crate::Result;

impl Engine {
    /// The output of action `id` (a child of `parent`, of `kind`) as the earlier run of `run`
    /// recorded it, now recorded in `run` as recovered. `None` when it must run: `run` does
    /// not recover, the action is forced to run again, it did not succeed in the earlier run,
    /// or its output there is lost (missing or corrupt).
    pub(super) async fn recover_action(
        &self,
        run: &RunState,
        id: ActionId,
        parent: ActionId,
        kind: ActionKind,
    ) -> Result<Option<Arc<[u8]>>> {
        let Some(from) = &run.recover else {
            return Ok(None);
        };
        let old = self
            .inner
            .store
            .action(from.run, id)
            .await
            .map_err(system)?
            .filter(|o| o.status == ActionStatus::Succeeded && o.kind == kind && o.parent == parent)
            .filter(|o| !from.forced(id, &o.task));
        let Some(old) = old else {
            return Ok(None);
        };
        let (Some(output), Some(inputs)) = (old.output, old.inputs) else {
            return Ok(None);
        };
        let Some(bytes) = self.load_recorded(&output).await? else {
            return Ok(None);
        };
        ActionStatus::Queued
            .take(ActionEvent::Recover)
            .map_err(system)?;
        self.inner.store.write(WriteOp::RecoverAction {
            run: run.id,
            id,
            parent,
            task: old.task.into(),
            group: old.group.map(Arc::from),
            kind,
            inputs,
            output,
            at: now_us(),
        });
        run.counters.created.fetch_add(1, Ordering::Relaxed);
        run.counters.succeeded.fetch_add(1, Ordering::Relaxed);
        run.counters.recovered.fetch_add(1, Ordering::Relaxed);
        Ok(Some(bytes))
    }
}
