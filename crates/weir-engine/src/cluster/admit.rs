//! Admission of a child call on the control plane: replayed from the store, re-raised,
//! answered from the cache, waited for (live), or started.

use std::sync::Arc;

use weir_core::clock::now_us;
use weir_core::{ActionEvent, ActionStatus, ErrorKind, Failure};
use weir_store::{ActionKind, WriteOp};

use super::api::ClusterApi;
use super::{CallInputs, NewAction, Output, child_failed, spec, system_failure};
use crate::decide::{self, Admission, Stored};
use crate::worker::protocol::*;

impl ClusterApi {
    /// Admission of one child call (the caller's lease was checked): the outcome is delivered
    /// to the worker now (recorded, cached, refused) or when the child ends.
    pub(super) async fn admit(&self, worker: &str, call: ChildCall) -> Result<(), String> {
        let inner = &self.inner;
        let key = (call.run, call.id);
        let meta = inner.run_meta(call.run).await?;
        let specs = inner.specs(&meta.version).await?;
        let refuse = |kind: ErrorKind, message: String| {
            let failure = Failure {
                action_id: call.id.to_string(),
                task: call.task.clone(),
                kind,
                message,
                chain: vec![],
            };
            inner.deliver(worker, call.call, &Err(child_failed(failure)));
            Ok(())
        };
        let Some(spec) = specs.get(&call.task) else {
            let message = format!(
                "unknown task {} (not a task of code version {})",
                call.task, meta.version
            );
            return refuse(ErrorKind::NonRecoverable, message);
        };
        if let Some(why) = spec.unsupported() {
            return refuse(ErrorKind::NonRecoverable, why);
        }
        if call.inputs_size() > spec.inline_limit {
            let message = format!(
                "the inputs of task {} are {} bytes, over its inline limit of {} bytes",
                call.task,
                call.inputs_size(),
                spec.inline_limit
            );
            return refuse(ErrorKind::TooLarge, message);
        }
        inner.subscribe(worker, call.call, key);
        if !inner.admitting.lock().insert(key) {
            return Ok(()); // being admitted: the outcome comes with the first admission's
        }
        let result = self.admit_subscribed(call, key, &meta, spec).await;
        inner.admitting.lock().remove(&key);
        result
    }

    /// Admission of a call already subscribed to, the only one of its action here.
    async fn admit_subscribed(
        &self,
        call: ChildCall,
        key: (weir_store::RunId, weir_core::ActionId),
        meta: &super::RunMeta,
        spec: &super::TaskSpec,
    ) -> Result<(), String> {
        let inner = &self.inner;
        // A call of a first attempt (not a retry, not resubmitted after a move between
        // replicas) cannot have been recorded: the store is not read (as in the engine).
        let rec = match call.check_store {
            true => inner
                .store
                .action(call.run, call.id)
                .await
                .map_err(system_failure)?,
            false => None,
        };
        let start = |base_attempt| NewAction {
            run: call.run,
            run_name: meta.name.clone(),
            project: &meta.scope.0,
            version: &meta.version,
            id: call.id,
            parent: call.parent,
            spec,
            inputs: inputs_of(&call),
            group: call.group.clone(),
            base_attempt,
        };
        match rec {
            Some(r) if r.status.is_terminal() => {
                let stored = Stored {
                    status: r.status,
                    attempts: r.attempts,
                    output: r.output.as_ref(),
                    error: r.error.as_ref(),
                };
                let admission = match decide::admit(Some(stored)) {
                    Admission::Replay(out) => match inner.output_of(out).await {
                        Ok(output) => {
                            inner.resolve(key, &Ok(output));
                            return Ok(());
                        }
                        Err(_) => decide::output_lost(stored),
                    },
                    other => other,
                };
                match admission {
                    Admission::Reraise(f) => inner.resolve(key, &Err(child_failed(f.clone()))),
                    Admission::Start {
                        base_attempt,
                        requeue,
                    } => {
                        if let Some(event) = requeue {
                            r.status.take(event).map_err(system_failure)?;
                        }
                        inner.start_action(start(base_attempt)).await?;
                    }
                    Admission::Replay(_) => unreachable!("replayed above"),
                }
            }
            Some(r) => {
                // Live: it runs, or waits in the queue. An action row without a queue entry
                // (a replica died between the two) is queued again.
                let queued = inner
                    .store
                    .queue_entry(call.run, call.id)
                    .await
                    .map_err(system_failure)?;
                if queued.is_none() {
                    let attempt = weir_store::QueuedAttempt {
                        run: call.run,
                        action: call.id,
                        attempt: r.attempts + 1,
                        env: spec::queue_name(
                            &spec::qualified(&meta.scope.0, &spec.env),
                            &meta.version,
                        ),
                        task: spec.name.clone(),
                    };
                    inner.enqueue(attempt, now_us()).await?;
                }
            }
            None => {
                // A recovering run takes what its earlier run recorded.
                if let Some(bytes) = self
                    .recovered(meta, call.run, (call.id, call.parent), ActionKind::Task)
                    .await?
                {
                    inner.resolve(key, &Ok(Output::Bytes(serde_bytes::ByteBuf::from(bytes))));
                    return Ok(());
                }
                if let (false, Some((cache_key, _))) =
                    (meta.cache_disabled, self.cache_key_of(&call, spec).await?)
                    && !meta.cache_overwrite
                {
                    let scope = meta
                        .scope
                        .2
                        .then_some((meta.scope.0.as_str(), meta.scope.1.as_str()));
                    let hit = inner
                        .store
                        .cache_lookup(&cache_key, scope)
                        .await
                        .map_err(system_failure)?;
                    if let Some(entry) = hit
                        && let Ok(output) = inner.output_of(&entry.output).await
                    {
                        self.record_cache_hit(&call, &meta.name, entry.output)
                            .await?;
                        inner.resolve(key, &Ok(output));
                        return Ok(());
                    }
                }
                inner.start_action(start(0)).await?;
            }
        }
        Ok(())
    }

    /// The cache key of a call of a cached task. Inputs the worker wrote to the object store
    /// are read from there (the key derives from their decoded value), not from the worker.
    async fn cache_key_of(
        &self,
        call: &ChildCall,
        spec: &super::TaskSpec,
    ) -> Result<Option<(String, String)>, String> {
        match (&call.inputs_ref, &spec.cache) {
            (Some(r), Some(_)) => {
                let bytes = self
                    .inner
                    .payloads
                    .load(&r.to_payload())
                    .await
                    .map_err(system_failure)?;
                spec.cache_key(&bytes)
            }
            _ => spec.cache_key(&call.inputs),
        }
    }

    async fn record_cache_hit(
        &self,
        call: &ChildCall,
        run_name: &str,
        output: weir_store::Payload,
    ) -> Result<(), String> {
        let inner = &self.inner;
        let inputs = inner
            .call_inputs(run_name, call.id, inputs_of(call))
            .await?;
        let status = ActionStatus::Queued
            .take(ActionEvent::CacheHit)
            .map_err(system_failure)?;
        let now = now_us();
        inner
            .commit(vec![
                WriteOp::InsertAction {
                    run: call.run,
                    id: call.id,
                    parent: call.parent,
                    task: call.task.clone().into(),
                    group: call.group.as_deref().map(Arc::from),
                    kind: ActionKind::Task,
                    inputs,
                    queued_at: now,
                },
                WriteOp::FinishAction {
                    run: call.run,
                    id: call.id,
                    status,
                    output: Some(output),
                    error: None,
                    cache_hit: true,
                    ended_at: now,
                    phases: None,
                },
            ])
            .await
    }
}

/// A call's inputs: its bytes, or the reference to the object its worker wrote.
fn inputs_of(call: &ChildCall) -> CallInputs<'_> {
    match &call.inputs_ref {
        Some(r) => CallInputs::Stored(r),
        None => CallInputs::Bytes(&call.inputs),
    }
}
