//! `rerun RUN [--recover [--force ACTION|TASK]...] --server` (SPEC §4.3) on the control plane:
//! a new run of an earlier run's task and inputs (by reference); with `--recover`, a call or
//! trace whose action succeeded in the earlier run takes that output instead of running. Ids
//! derive from the parent's id, the task and the inputs, so the same call has the same id in
//! both runs (as in the engine's `engine/recover.rs`).

use std::collections::HashSet;
use std::sync::Arc;

use axum::http::StatusCode;
use weir_core::clock::now_us;
use weir_core::{ActionEvent, ActionId, ActionStatus};
use weir_store::{ActionKind, Payload, RunId, RunRecord, WriteOp};

use super::api::ClusterApi;
use super::views::{RerunOf, RunSubmission};
use super::{RunMeta, system_failure};

/// What a recovering run takes from its earlier run.
#[derive(Clone, Debug)]
pub(crate) struct Recover {
    run: RunId,
    force: Arc<HashSet<String>>,
}

impl Recover {
    /// The recovery recorded in a run's context, if any.
    pub(crate) fn of(context: &serde_json::Value) -> Option<Recover> {
        let run = RunId(context["recover_from_id"].as_i64()?);
        let force = context["recover_force"]
            .as_array()
            .map(|a| {
                a.iter()
                    .filter_map(|v| v.as_str().map(str::to_string))
                    .collect()
            })
            .unwrap_or_default();
        Some(Recover {
            run,
            force: Arc::new(force),
        })
    }

    fn forced(&self, id: ActionId, task: &str) -> bool {
        self.force.contains(task) || self.force.contains(&id.to_string())
    }
}

/// A rerun being submitted: the earlier run and what to record.
pub(super) struct Rerun {
    /// The earlier run's inputs (taken by reference).
    pub(super) inputs: Payload,
    from: RunRecord,
    recover: Option<Vec<String>>,
}

impl Rerun {
    /// Records the rerun in the new run's context.
    pub(super) fn record(&self, map: &mut serde_json::Map<String, serde_json::Value>) {
        map.insert("rerun_of".into(), self.from.name.clone().into());
        if let Some(force) = &self.recover {
            map.insert("recovered_from".into(), self.from.name.clone().into());
            map.insert("recover_from_id".into(), self.from.id.0.into());
            map.insert("recover_force".into(), force.clone().into());
        }
    }
}

type Refusal = (StatusCode, String);

impl super::ControlPlane {
    /// Checks a rerun and fills `sub` with the earlier run's task and inputs.
    pub(super) async fn rerun_of(
        &self,
        of: &RerunOf,
        sub: &mut RunSubmission,
    ) -> Result<Rerun, Refusal> {
        let inner = &self.inner;
        let internal = |e: String| (StatusCode::INTERNAL_SERVER_ERROR, e);
        let from = inner
            .store
            .run_by_name(&of.run)
            .await
            .map_err(|e| match e {
                weir_store::Error::UnknownRun(_) => {
                    (StatusCode::NOT_FOUND, format!("no run named {:?}", of.run))
                }
                e => internal(e.to_string()),
            })?;
        if of.recover.is_some() && !from.status.is_terminal() {
            return Err((
                StatusCode::CONFLICT,
                format!(
                    "run {} has not ended: --recover takes the outputs of an ended run (abort it or wait)",
                    from.name
                ),
            ));
        }
        for name in of.recover.iter().flatten() {
            let known = match ActionId::parse(name) {
                Some(id) => inner
                    .store
                    .action(from.id, id)
                    .await
                    .map_err(|e| internal(e.to_string()))?
                    .is_some(),
                None => {
                    sub.tasks.iter().any(|t| &t.name == name)
                        || self.ran_task(from.id, name).await?
                }
            };
            if !known {
                return Err((
                    StatusCode::BAD_REQUEST,
                    format!(
                        "--force {name:?}: run {} has no action with that id, and no task or trace of that name (give an action id, a full task name `env.task`, or a trace name)",
                        from.name
                    ),
                ));
            }
        }
        let bytes = inner
            .payloads
            .load(&from.inputs)
            .await
            .map_err(|e| internal(format!("the inputs of run {}: {e}", from.name)))?;
        sub.task = from.task.clone();
        sub.inputs = bytes.to_vec();
        Ok(Rerun {
            inputs: from.inputs.clone(),
            recover: of.recover.clone(),
            from,
        })
    }

    /// Whether an action of `run` ran task (or trace) `name`.
    async fn ran_task(&self, run: RunId, name: &str) -> Result<bool, Refusal> {
        let mut page = weir_store::Page {
            offset: 0,
            limit: 1000,
        };
        loop {
            let actions = self
                .inner
                .store
                .list_actions(run, page)
                .await
                .map_err(|e| (StatusCode::INTERNAL_SERVER_ERROR, e.to_string()))?;
            if actions.iter().any(|a| a.task == name) {
                return Ok(true);
            }
            if (actions.len() as u64) < page.limit as u64 {
                return Ok(false);
            }
            page.offset += page.limit as u64;
        }
    }
}

impl ClusterApi {
    /// The output of action `id` (a child of `parent`, of `kind`) as the earlier run of a
    /// recovering run recorded it, now recorded in `run` as recovered; `None` when it must run
    /// (no recovery, forced, not succeeded there, or its output lost).
    pub(super) async fn recovered(
        &self,
        meta: &RunMeta,
        run: RunId,
        (id, parent): (ActionId, ActionId),
        kind: ActionKind,
    ) -> Result<Option<Vec<u8>>, String> {
        let Some(from) = &meta.recover else {
            return Ok(None);
        };
        let inner = &self.inner;
        let old = inner
            .store
            .action(from.run, id)
            .await
            .map_err(system_failure)?
            .filter(|o| o.status == ActionStatus::Succeeded && o.kind == kind && o.parent == parent)
            .filter(|o| !from.forced(id, &o.task));
        let Some(old) = old else {
            return Ok(None);
        };
        let (Some(output), Some(inputs)) = (old.output, old.inputs) else {
            return Ok(None);
        };
        let Ok(bytes) = inner.payloads.load(&output).await else {
            return Ok(None);
        };
        ActionStatus::Queued
            .take(ActionEvent::Recover)
            .map_err(system_failure)?;
        inner
            .commit(vec![WriteOp::RecoverAction {
                run,
                id,
                parent,
                task: old.task.into(),
                group: old.group.map(Arc::from),
                kind,
                inputs,
                output,
                at: now_us(),
            }])
            .await?;
        Ok(Some(bytes.to_vec()))
    }
}
