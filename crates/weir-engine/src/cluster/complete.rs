//! A worker's completion of an attempt on the control plane: fenced by its lease, then its
//! result (or its next attempt) committed with the lease's removal.

use std::sync::atomic::Ordering;
use std::time::Instant;

use weir_blob::PayloadKey;
use weir_core::clock::now_us;
use weir_core::{ActionEvent, ActionStatus, ErrorKind};
use weir_store::{AttemptRecord, RunId, WriteOp};

use super::api::ClusterApi;
use super::system_failure;
use crate::decide::{self, Next};
use crate::worker::protocol::*;

/// Why a completion was not carried out.
pub(super) enum Rejected {
    /// Its lease is not current: fenced off, for good.
    Stale(String),
    /// The store failed: the worker delivers it again.
    Failed(String),
}

impl ClusterApi {
    /// Carries out one completion: rejected when its lease is not current (fenced off), or
    /// failed when the store or object store failed (the worker delivers it again).
    /// `entry` is the action's queue entry, read for the whole batch.
    pub(super) async fn complete_one(
        &self,
        worker: &str,
        c: Completion,
        entry: Option<weir_store::QueueEntry>,
    ) -> Result<(), Rejected> {
        let run = c.run.ok_or(Rejected::Stale(
            "a completion to a control plane must name its run".into(),
        ))?;
        let current = entry.as_ref().is_some_and(|e| {
            e.attempt.attempt == c.attempt
                && e.lease
                    .as_ref()
                    .is_some_and(|(l, w)| *l == c.lease && w == worker)
        });
        let Some(entry) = entry.filter(|_| current) else {
            return Err(Rejected::Stale(format!(
                "lease {} of attempt {} is not current (expired and re-leased, or completed)",
                c.lease, c.attempt
            )));
        };
        self.carry_out(run, c, entry)
            .await
            .map_err(Rejected::Failed)
    }

    /// The writes of a completion whose lease is current.
    async fn carry_out(
        &self,
        run: RunId,
        c: Completion,
        entry: weir_store::QueueEntry,
    ) -> Result<(), String> {
        let inner = &self.inner;
        // The worker's figures; its queue wait is the action's from queueing to its lease
        // (read from its row by whoever shows it: see `weir_store::shown_phases`).
        let phases = c.phases.map(|w| weir_core::phases::Phases {
            upload: 0,
            queue: 0,
            start: w.start,
            download: w.download,
            exec: w.exec,
            output: w.output,
            deliver: weir_core::phases::Phases::NOT_RECORDED,
        });
        let meta = inner.run_meta(run).await?;
        let specs = inner.specs(&meta.version).await?;
        let task = entry.attempt.task.as_str();
        let spec = specs
            .get(task)
            .ok_or_else(|| format!("task {task} is not a task of version {}", meta.version))?;
        let too_large = |size: u64| RemoteError {
            kind: ErrorKind::TooLarge,
            message: format!(
                "the output of task {task} is {size} bytes, over its inline limit of {} bytes",
                spec.inline_limit
            ),
            chain: vec![],
            child: None,
        };
        // The bytes, or the reference to the object the worker wrote (checked with the batch,
        // see `check_output_refs`; an object refused here, or of a completion fenced off
        // above, stays in the store unrecorded).
        let outcome = match c.outcome {
            AttemptOutcome::Output(bytes) if bytes.len() as u64 > spec.inline_limit => {
                Err(too_large(bytes.len() as u64))
            }
            AttemptOutcome::Stored(r) if r.size > spec.inline_limit => Err(too_large(r.size)),
            AttemptOutcome::Output(bytes) => Ok(Ok(bytes)),
            AttemptOutcome::Stored(r) => Ok(Err(r)),
            AttemptOutcome::Error(e) => Err(e),
        };
        match outcome {
            Ok(output) => {
                let (payload, bytes) = match output {
                    Ok(bytes) => {
                        let key = PayloadKey::Outputs {
                            run: &meta.name,
                            action: &c.action,
                            attempt: c.attempt,
                        };
                        (inner.store_payload(key, &bytes).await?, Some(bytes))
                    }
                    Err(r) => (r.to_payload(), None),
                };
                let cache = match (&spec.cache, meta.cache_disabled) {
                    (Some(_), false) => {
                        let rec = inner
                            .store
                            .action(run, c.action)
                            .await
                            .map_err(system_failure)?;
                        let inputs = match rec.and_then(|r| r.inputs) {
                            Some(p) => inner.payloads.load(&p).await.map_err(system_failure)?,
                            None => return Err("the action's inputs are gone".into()),
                        };
                        spec.cache_key(&inputs)?
                    }
                    _ => None,
                };
                inner
                    .finish(
                        run,
                        c.action,
                        task,
                        Ok((payload, bytes)),
                        cache,
                        Some((c.lease, phases)),
                    )
                    .await?;
            }
            Err(e) => {
                let err = from_remote(e);
                let failure = err.to_failure(c.action.to_string(), task.to_string());
                // A child's failure is retried as the child's kind allows.
                let kind = match (err.kind(), err.child()) {
                    (ErrorKind::ChildFailed, Some(child)) => child.kind,
                    (kind, _) => kind,
                };
                let used = c.attempt.saturating_sub(1);
                let next = decide::after_failure(kind, used, &spec.retry(), None, Instant::now());
                let now = now_us();
                let record = AttemptRecord {
                    attempt: c.attempt,
                    started_at: now,
                    ended_at: now,
                    error: failure.clone(),
                    phases: phases.map(|p| weir_core::phases::Phases { deliver: 0, ..p }),
                };
                match next {
                    Next::Retry(delay) => {
                        ActionStatus::Running
                            .take(ActionEvent::FailRetryable)
                            .map_err(system_failure)?;
                        let mut again = entry.attempt.clone();
                        again.attempt += 1;
                        let queue = again.env.clone();
                        // The next attempt replaces the entry and its lease, in the commit of
                        // the failure.
                        inner
                            .commit(vec![
                                WriteOp::FailAttempt {
                                    run,
                                    id: c.action,
                                    attempt: record,
                                    retrying: true,
                                },
                                WriteOp::Enqueue {
                                    attempt: again,
                                    due: now + delay.as_micros() as i64,
                                },
                            ])
                            .await?;
                        inner.queue_notify(&queue).notify_waiters();
                        inner.counters.completed.fetch_add(1, Ordering::Relaxed);
                        return Ok(());
                    }
                    Next::Finish => {
                        inner
                            .finish(
                                run,
                                c.action,
                                task,
                                Err(failure),
                                None,
                                Some((c.lease, phases)),
                            )
                            .await?;
                    }
                }
            }
        }
        inner.counters.completed.fetch_add(1, Ordering::Relaxed);
        Ok(())
    }
}
