//! Starting a run on the control plane: the submitted version's task settings are recorded, the
//! run is created (with its root queued in the same transaction when its inputs are inline) and
//! a rerun takes its inputs from the earlier run by reference.

use axum::http::StatusCode;
use weir_blob::PayloadKey;
use weir_core::ActionId;
use weir_core::clock::now_us;
use weir_store::{NewRun, QueuedAttempt};

use super::access::Principal;
use super::runs::{Refusal, bad, internal};
use super::views::{RunSubmission, RunView};
use super::{ControlPlane, spec};

impl ControlPlane {
    /// Starts a run.
    pub(super) async fn submit(
        &self,
        mut sub: RunSubmission,
        who: &Principal,
    ) -> Result<RunView, Refusal> {
        let inner = &self.inner;
        let rerun = match sub.rerun.take() {
            Some(of) => Some(self.rerun_of(&of, &mut sub).await?),
            None => None,
        };
        let root = sub
            .tasks
            .iter()
            .find(|t| t.name == sub.task)
            .ok_or_else(|| {
                bad(format!(
                    "unknown task {:?} in the submitted version",
                    sub.task
                ))
            })?;
        if let Some(why) = root.unsupported() {
            return Err(bad(why));
        }
        if sub.inputs.len() as u64 > root.inline_limit {
            return Err(bad(format!(
                "the inputs of task {} are {} bytes, over its inline limit of {} bytes",
                root.name,
                sub.inputs.len(),
                root.inline_limit
            )));
        }
        let mut context: crate::RunContext =
            serde_json::from_str(&sub.context).map_err(|e| bad(format!("bad run context: {e}")))?;
        who.place_run(&mut context)?;
        if let Some(n) = context.max_action_concurrency {
            return Err(bad(format!(
                "max_action_concurrency {n}: cluster mode does not bound a run's concurrency yet, so it refuses the setting rather than ignore it"
            )));
        }
        inner
            .record_specs(&sub.version, &sub.tasks)
            .await
            .map_err(internal)?;
        let name = context
            .name
            .clone()
            .unwrap_or_else(crate::engine::generate_run_name);
        let mut recorded = serde_json::to_value(&context).map_err(internal)?;
        if let Some(map) = recorded.as_object_mut() {
            map.insert("executor".into(), "cluster".into());
            map.insert("cluster_version".into(), sub.version.clone().into());
            if let Some(r) = &rerun {
                r.record(map);
            }
        }
        let key = PayloadKey::Inputs {
            run: &name,
            action: &ActionId::ROOT,
        };
        // A rerun's inputs are the earlier run's, by reference (the same object, not a copy).
        let (payload, written) = match &rerun {
            Some(r) => (r.inputs.clone(), true),
            None => (inner.payloads.prepare(key, &sub.inputs), false),
        };
        let project = context
            .project
            .as_deref()
            .unwrap_or(weir_store::DEFAULT_PROJECT);
        let queue = spec::queue_name(&spec::qualified(project, &root.env), &sub.version);
        // Inputs inside the row: the root is queued by the transaction that creates the run.
        // Offloaded ones are written once the name is the run's (a replica dying before the
        // root is queued leaves a run that never starts: not yet repaired).
        let inline = written || matches!(payload, weir_store::Payload::Inline(_));
        let (record, _) = inner
            .store
            .create_run(NewRun {
                name: name.clone(),
                task: root.name.clone(),
                inputs: payload.clone(),
                context: recorded,
                owner: inner.options.replica.clone(),
                queue: inline.then(|| queue.clone()),
            })
            .await
            .map_err(|e| match e {
                weir_store::Error::RunExists(_) => (StatusCode::CONFLICT, e.to_string()),
                e => internal(e),
            })?;
        if inline {
            inner.queue_notify(&queue).notify_waiters();
        } else {
            inner
                .payloads
                .write(&payload, &sub.inputs)
                .await
                .map_err(internal)?;
            let attempt = QueuedAttempt {
                run: record.id,
                action: ActionId::ROOT,
                attempt: 1,
                env: queue,
                task: root.name.clone(),
            };
            inner.enqueue(attempt, now_us()).await.map_err(internal)?;
        }
        self.view(record, false).await
    }
}
