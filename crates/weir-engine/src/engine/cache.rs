//! Cache keys and hits (SPEC §6): the recipe is `weir_core::cache`, the rule whether a call is
//! cached is [`crate::decide::cache_version`].

use std::sync::Arc;
use std::sync::atomic::Ordering;

use weir_blob::PayloadKey;
use weir_core::cache::CacheKeyParts;
use weir_core::clock::now_us;
use weir_core::{ActionEvent, ActionStatus, ErrorKind};
use weir_store::{ActionKind, WriteOp};

use super::admit::ChildCall;
use super::state::RunState;
use super::{Engine, system};
use crate::registry::TaskDef;
use crate::{Error, Result};

impl Engine {
    /// The cache key and version of a call, or `None` when the task or the run does not cache.
    pub(super) fn cache_key(
        &self,
        def: &'static TaskDef,
        inputs: &[u8],
        run: &RunState,
    ) -> Result<Option<(String, String)>> {
        let policy = def
            .config()
            .cache
            .as_ref()
            .unwrap_or(def.environment().cache_policy());
        let Some(version) =
            crate::decide::cache_version(run.cache.disabled, policy, def.source_hash)
        else {
            return Ok(None);
        };
        let ignored: Vec<&str> = policy.ignored_inputs.iter().map(String::as_str).collect();
        let key = weir_core::cache::cache_key(&CacheKeyParts {
            task: def.full_name(),
            env: def.environment().name(),
            inputs,
            ignored_inputs: &ignored,
            interface: def.interface,
            salt: &policy.salt,
            version: &version,
        })
        .map_err(|e| {
            Error::with_kind(
                ErrorKind::Codec,
                format!("cache key of task {}: {e}", def.full_name()),
            )
        })?;
        Ok(Some((key, version)))
    }

    /// Looks the key up; on a hit records the action as a cache hit (the output by reference,
    /// never copied) and returns the output. A hit whose payload is gone counts as a miss.
    pub(super) async fn cache_hit(&self, call: &ChildCall, key: &str) -> Result<Option<Arc<[u8]>>> {
        let run = &call.run;
        let scope = run
            .cache
            .project_domain_only
            .then(|| (run.cache.project.as_str(), run.cache.domain.as_str()));
        let Some(entry) = self
            .inner
            .store
            .cache_lookup(key, scope)
            .await
            .map_err(system)?
        else {
            return Ok(None);
        };
        let Ok(bytes) = self.load_payload(&entry.output).await else {
            tracing::warn!(
                task = call.def.full_name(),
                key,
                "cache entry's payload is missing; running the task"
            );
            return Ok(None);
        };
        let inputs = self
            .store_payload(
                PayloadKey::Inputs {
                    run: &run.name,
                    action: &call.id,
                },
                &call.inputs,
            )
            .await
            // An input that cannot be written stops the run (see `halt_run`).
            .inspect_err(|e| self.halt_run(run, call.id, call.def.full_name(), e))?;
        let status = ActionStatus::Queued
            .take(ActionEvent::CacheHit)
            .map_err(system)?;
        let now = now_us();
        self.inner.store.write(WriteOp::InsertAction {
            run: run.id,
            id: call.id,
            parent: call.parent,
            task: call.def.full_name().to_string().into(),
            group: call.group.clone(),
            kind: ActionKind::Task,
            inputs,
            queued_at: now,
        });
        self.inner.store.write(WriteOp::FinishAction {
            run: run.id,
            id: call.id,
            status,
            output: Some(entry.output),
            error: None,
            cache_hit: true,
            ended_at: now,
            phases: None,
        });
        run.counters.created.fetch_add(1, Ordering::Relaxed);
        run.counters.succeeded.fetch_add(1, Ordering::Relaxed);
        run.counters.cache_hits.fetch_add(1, Ordering::Relaxed);
        Ok(Some(bytes))
    }
}
