//! The engine's decisions as plain functions over plain values: no store, no runtime, no
//! clock of their own (the caller passes `now`). The engine's async code gathers the inputs,
//! calls one of these, and carries out what it returns. Each has tests below, in the style of
//! Restate's state-machine tests: a state in, the decision out.
//!
//! - [`admit`]: what a child call becomes, given what the store holds for its id.
//! - [`cache_version`]: whether a call is cached, and under which version.
//! - [`attempt_limit`], [`timeout_kind`], [`after_failure`]: the attempt loop's rules.
//! - [`finish_writes`]: what an action's end writes, in which order.
//! - [`owner_gone`]: whether a run's recorded owner may be taken over.

use std::time::{Duration, Instant};

use weir_core::lifecycle::InvalidTransition;
use weir_core::spec::{CacheBehavior, CachePolicy, RetryPolicy, Timeouts};
use weir_core::{ActionEvent, ActionId, ActionStatus, ErrorKind, Failure};
use weir_store::{CacheEntry, Payload, RunId, RunStatus, WriteOp};

/// What the store holds for an action id, as admission needs it.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Stored<'a> {
    /// Stored status.
    pub status: ActionStatus,
    /// Attempts started so far.
    pub attempts: u32,
    /// Output, when it succeeded.
    pub output: Option<&'a Payload>,
    /// Failure, when it failed or was cancelled.
    pub error: Option<&'a Failure>,
}

/// What a child call becomes.
#[derive(Clone, Debug, PartialEq)]
pub(crate) enum Admission<'a> {
    /// Its recorded output is returned without running it (recovery).
    Replay(&'a Payload),
    /// Its recorded failure cannot change by running it again: re-raised.
    Reraise(&'a Failure),
    /// It runs (after a cache lookup, if cached). `base_attempt` continues the attempt
    /// numbering of a stored row; `requeue` is the transition that puts such a row back in
    /// the queue (none for a new action or one still queued).
    Start {
        /// Attempts already started.
        base_attempt: u32,
        /// How a stored row goes back to `queued`.
        requeue: Option<ActionEvent>,
    },
}

/// Admission of a child call whose id is not live in this process. `stored` is `None` when
/// the call may not have been recorded before (first attempt of a fresh run: the store is not
/// read at all).
pub(crate) fn admit(stored: Option<Stored<'_>>) -> Admission<'_> {
    let Some(rec) = stored else {
        return Admission::Start {
            base_attempt: 0,
            requeue: None,
        };
    };
    let requeue = match rec.status {
        ActionStatus::Succeeded => match rec.output {
            Some(out) => return Admission::Replay(out),
            // A success without its output is not trusted: run it again.
            None => Some(ActionEvent::OutputLost),
        },
        ActionStatus::Failed | ActionStatus::Cancelled => match rec.error {
            Some(f) if rec.status == ActionStatus::Failed && !f.kind.is_retryable() => {
                return Admission::Reraise(f);
            }
            _ => Some(ActionEvent::Resubmit),
        },
        // Its process died while it ran.
        ActionStatus::Running => Some(ActionEvent::LeaseLost),
        ActionStatus::Retrying => Some(ActionEvent::Requeue),
        ActionStatus::Queued => None,
    };
    Admission::Start {
        base_attempt: rec.attempts,
        requeue,
    }
}

/// Admission of a call whose recorded success could not be replayed: its output object is
/// missing or corrupt. The success is not trusted; the action runs again (SPEC §12), its
/// attempts counting on.
pub(crate) fn output_lost(stored: Stored<'_>) -> Admission<'static> {
    Admission::Start {
        base_attempt: stored.attempts,
        requeue: Some(ActionEvent::OutputLost),
    }
}

/// The cache version of a task's calls under `policy`, or `None` when they are not cached
/// (the run disables the cache, or the policy does). `source_hash` is the `auto` version.
pub(crate) fn cache_version(
    run_disables_cache: bool,
    policy: &CachePolicy,
    source_hash: &str,
) -> Option<String> {
    if run_disables_cache {
        return None;
    }
    match &policy.behavior {
        CacheBehavior::Disable => None,
        CacheBehavior::Auto => Some(source_hash.to_string()),
        CacheBehavior::Override(v) => Some(v.clone()),
    }
}

/// How long the next attempt may run: its `max_runtime`, cut to what is left of the action's
/// overall deadline. `None`: unbounded.
pub(crate) fn attempt_limit(
    timeouts: &Timeouts,
    deadline: Option<Instant>,
    now: Instant,
) -> Option<Duration> {
    let left = deadline.map(|dl| dl.saturating_duration_since(now));
    match (timeouts.max_runtime, left) {
        (Some(rt), Some(left)) => Some(rt.min(left)),
        (rt, left) => rt.or(left),
    }
}

/// The kind of an attempt stopped by its limit: past the overall deadline it is `Deadline`
/// (never retried), else `Timeout` (retried while retries are left).
pub(crate) fn timeout_kind(deadline: Option<Instant>, now: Instant) -> ErrorKind {
    if deadline.is_some_and(|dl| now >= dl) {
        ErrorKind::Deadline
    } else {
        ErrorKind::Timeout
    }
}

/// What follows a failed attempt.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Next {
    /// Another attempt after this backoff.
    Retry(Duration),
    /// The action fails with this attempt's error.
    Finish,
}

/// After a failed attempt: retry when the error kind allows it, retries are left, and the
/// backoff ends before the overall deadline.
pub(crate) fn after_failure(
    kind: ErrorKind,
    retries_used: u32,
    retry: &RetryPolicy,
    deadline: Option<Instant>,
    now: Instant,
) -> Next {
    let delay = retry.delay(retries_used);
    let in_time = deadline.is_none_or(|dl| now + delay < dl);
    if kind.is_retryable() && retries_used < retry.retries && in_time {
        Next::Retry(delay)
    } else {
        Next::Finish
    }
}

/// The end of an action, as [`finish_writes`] needs it.
#[derive(Clone, Debug)]
pub(crate) struct Finish<'a> {
    /// The run.
    pub run: RunId,
    /// The action.
    pub id: ActionId,
    /// Its task's full name.
    pub task: &'a str,
    /// Its status now.
    pub from: ActionStatus,
    /// Stored output or failure.
    pub outcome: Result<Payload, Failure>,
    /// Cache key and version the output goes under, when the call is cached.
    pub cache: Option<(String, String)>,
    /// Project and domain of the run (cache entries belong to them).
    pub scope: (&'a str, &'a str),
    /// End time (µs).
    pub ended_at: i64,
    /// Where the last attempt's time went, when it ran.
    pub phases: Option<weir_core::phases::Phases>,
}

/// The writes that end an action, in commit order: the cache entry before the result it
/// caches (a crash between them leaves an entry for a result that was never acknowledged,
/// which is harmless, never the other way round), the action's final row, then for the root
/// the run's. Fails when the action's status does not allow the end (a cancelled action).
pub(crate) fn finish_writes(f: Finish<'_>) -> Result<Vec<WriteOp>, InvalidTransition> {
    let event = if f.outcome.is_ok() {
        ActionEvent::Succeed
    } else {
        ActionEvent::Fail
    };
    let status = f.from.take(event)?;
    let mut writes = Vec::with_capacity(3);
    let (output, error) = match f.outcome {
        Ok(payload) => (Some(payload), None),
        Err(failure) => (None, Some(failure)),
    };
    if let (Some((key, version)), Some(payload)) = (f.cache, &output) {
        writes.push(WriteOp::PutCache(CacheEntry {
            key,
            project: f.scope.0.to_string(),
            domain: f.scope.1.to_string(),
            task: f.task.to_string(),
            version,
            output: payload.clone(),
            created_at: f.ended_at,
        }));
    }
    let run_write = (f.id == ActionId::ROOT).then(|| WriteOp::FinishRun {
        run: f.run,
        status: if status == ActionStatus::Succeeded {
            RunStatus::Succeeded
        } else {
            RunStatus::Failed
        },
        output: output.clone(),
        error: error.clone(),
        ended_at: f.ended_at,
    });
    writes.push(WriteOp::FinishAction {
        run: f.run,
        id: f.id,
        status,
        output,
        error,
        cache_hit: false,
        ended_at: f.ended_at,
        phases: f.phases.map(Box::new),
    });
    writes.extend(run_write);
    Ok(writes)
}

/// What is known of a run's recorded owner when another engine wants to resume the run.
#[derive(Clone, Copy, Debug)]
pub(crate) struct RecordedOwner {
    /// It runs on this host.
    pub same_host: bool,
    /// It is this very engine instance.
    pub is_me: bool,
    /// Its process exists on this host (meaningless on another host).
    pub pid_alive: bool,
    /// Time since it last said it is alive, if it ever did.
    pub silent_for: Option<Duration>,
}

/// Whether the run may be taken over: its owner is this engine, or a process of this host
/// that no longer exists, or an owner (any host; a zombie or a reused pid) silent for longer
/// than `presumed_gone`.
pub(crate) fn owner_gone(owner: RecordedOwner, presumed_gone: Duration) -> bool {
    if owner.is_me || (owner.same_host && !owner.pid_alive) {
        return true;
    }
    owner.silent_for.is_some_and(|s| s > presumed_gone)
}

#[cfg(test)]
mod tests {
    use super::*;
    use weir_core::CallKey;

    fn failure(kind: ErrorKind) -> Failure {
        Failure {
            action_id: "a1".into(),
            task: "env.t".into(),
            kind,
            message: "boom".into(),
            chain: vec![],
        }
    }

    fn stored<'a>(status: ActionStatus, attempts: u32) -> Stored<'a> {
        Stored {
            status,
            attempts,
            output: None,
            error: None,
        }
    }

    #[test]
    fn admission_replays_successes_reraises_final_failures_and_reruns_the_rest() {
        let out = Payload::Inline(vec![1]);
        let ok = Stored {
            output: Some(&out),
            ..stored(ActionStatus::Succeeded, 1)
        };
        assert_eq!(admit(Some(ok)), Admission::Replay(&out));
        // Its output could not be read back (deleted or corrupt object): it runs again.
        assert_eq!(
            output_lost(ok),
            Admission::Start {
                base_attempt: 1,
                requeue: Some(ActionEvent::OutputLost)
            }
        );
        // A success recorded without an output is not trusted either.
        assert_eq!(
            admit(Some(stored(ActionStatus::Succeeded, 2))),
            Admission::Start {
                base_attempt: 2,
                requeue: Some(ActionEvent::OutputLost)
            }
        );

        // Not recorded (or not looked up): a new action from attempt 1.
        assert_eq!(
            admit(None),
            Admission::Start {
                base_attempt: 0,
                requeue: None
            }
        );

        let fatal = failure(ErrorKind::NonRecoverable);
        let rec = Stored {
            error: Some(&fatal),
            ..stored(ActionStatus::Failed, 1)
        };
        assert_eq!(admit(Some(rec)), Admission::Reraise(&fatal));

        // A retryable failure (its parent is being retried) runs again, counting on.
        let user = failure(ErrorKind::User);
        let rec = Stored {
            error: Some(&user),
            ..stored(ActionStatus::Failed, 3)
        };
        assert_eq!(
            admit(Some(rec)),
            Admission::Start {
                base_attempt: 3,
                requeue: Some(ActionEvent::Resubmit)
            }
        );

        // A cancelled action runs again, even with a non-retryable failure recorded.
        let cancelled = failure(ErrorKind::Cancelled);
        let rec = Stored {
            error: Some(&cancelled),
            ..stored(ActionStatus::Cancelled, 1)
        };
        assert_eq!(
            admit(Some(rec)),
            Admission::Start {
                base_attempt: 1,
                requeue: Some(ActionEvent::Resubmit)
            }
        );

        // Found running after a crash: its process died; it goes back to the queue.
        assert_eq!(
            admit(Some(stored(ActionStatus::Running, 2))),
            Admission::Start {
                base_attempt: 2,
                requeue: Some(ActionEvent::LeaseLost)
            }
        );
        assert_eq!(
            admit(Some(stored(ActionStatus::Retrying, 1))),
            Admission::Start {
                base_attempt: 1,
                requeue: Some(ActionEvent::Requeue)
            }
        );
        assert_eq!(
            admit(Some(stored(ActionStatus::Queued, 0))),
            Admission::Start {
                base_attempt: 0,
                requeue: None
            }
        );
    }

    #[test]
    fn every_requeue_event_admission_returns_leads_to_queued() {
        for status in ActionStatus::ALL {
            if let Admission::Start {
                requeue: Some(event),
                ..
            } = admit(Some(stored(status, 1)))
            {
                assert_eq!(status.apply(event), Ok(ActionStatus::Queued), "{status:?}");
            }
        }
    }

    #[test]
    fn cache_version_follows_run_and_policy() {
        let auto = CachePolicy::auto();
        assert_eq!(cache_version(false, &auto, "h1"), Some("h1".into()));
        assert_eq!(cache_version(true, &auto, "h1"), None);
        let v = CachePolicy::override_version("v7");
        assert_eq!(cache_version(false, &v, "h1"), Some("v7".into()));
        assert_eq!(cache_version(false, &CachePolicy::disable(), "h1"), None);
    }

    #[test]
    fn attempt_limits_and_timeout_kinds() {
        let now = Instant::now();
        let s = Duration::from_secs;
        let rt = Timeouts::new().max_runtime(s(10));
        assert_eq!(attempt_limit(&Timeouts::new(), None, now), None);
        assert_eq!(attempt_limit(&rt, None, now), Some(s(10)));
        // The deadline cuts the runtime limit short, and bounds an attempt on its own.
        assert_eq!(attempt_limit(&rt, Some(now + s(4)), now), Some(s(4)));
        assert_eq!(attempt_limit(&rt, Some(now + s(40)), now), Some(s(10)));
        assert_eq!(
            attempt_limit(&Timeouts::new(), Some(now + s(3)), now),
            Some(s(3))
        );
        assert_eq!(attempt_limit(&rt, Some(now), now + s(1)), Some(s(0)));

        assert_eq!(timeout_kind(None, now), ErrorKind::Timeout);
        assert_eq!(timeout_kind(Some(now + s(1)), now), ErrorKind::Timeout);
        assert_eq!(timeout_kind(Some(now), now), ErrorKind::Deadline);
    }

    #[test]
    fn retries_follow_kind_count_backoff_and_deadline() {
        let now = Instant::now();
        let ms = Duration::from_millis;
        let retry = RetryPolicy::retries(2).backoff(ms(100), 2.0, ms(1000));
        assert_eq!(
            after_failure(ErrorKind::User, 0, &retry, None, now),
            Next::Retry(ms(100))
        );
        assert_eq!(
            after_failure(ErrorKind::Panic, 1, &retry, None, now),
            Next::Retry(ms(200))
        );
        // Retries used up.
        assert_eq!(
            after_failure(ErrorKind::User, 2, &retry, None, now),
            Next::Finish
        );
        // Kinds that are never retried.
        for kind in [
            ErrorKind::NonRecoverable,
            ErrorKind::Deadline,
            ErrorKind::TooLarge,
            ErrorKind::Codec,
            ErrorKind::Cancelled,
        ] {
            assert_eq!(
                after_failure(kind, 0, &retry, None, now),
                Next::Finish,
                "{kind:?}"
            );
        }
        // The backoff would end past the deadline: no retry.
        assert_eq!(
            after_failure(ErrorKind::Timeout, 0, &retry, Some(now + ms(50)), now),
            Next::Finish
        );
        assert_eq!(
            after_failure(ErrorKind::Timeout, 0, &retry, Some(now + ms(150)), now),
            Next::Retry(ms(100))
        );
        // No retries configured.
        assert_eq!(
            after_failure(ErrorKind::User, 0, &RetryPolicy::default(), None, now),
            Next::Finish
        );
    }

    #[test]
    fn a_run_is_taken_over_only_from_a_dead_or_silent_owner() {
        let gone = Duration::from_secs(10);
        let alive = RecordedOwner {
            same_host: true,
            is_me: false,
            pid_alive: true,
            silent_for: Some(Duration::from_secs(1)),
        };
        assert!(!owner_gone(alive, gone));
        // Its process is gone.
        assert!(owner_gone(
            RecordedOwner {
                pid_alive: false,
                ..alive
            },
            gone
        ));
        // The pid exists but never heartbeats any more (zombie, reused pid).
        assert!(owner_gone(
            RecordedOwner {
                silent_for: Some(Duration::from_secs(11)),
                ..alive
            },
            gone
        ));
        // Another host: the pid says nothing, only the heartbeat does.
        let remote = RecordedOwner {
            same_host: false,
            pid_alive: false,
            ..alive
        };
        assert!(!owner_gone(remote, gone));
        assert!(owner_gone(
            RecordedOwner {
                silent_for: Some(Duration::from_secs(30)),
                ..remote
            },
            gone
        ));
        assert!(owner_gone(
            RecordedOwner {
                is_me: true,
                ..alive
            },
            gone
        ));
    }

    fn child_id() -> ActionId {
        ActionId::derive(
            ActionId::ROOT,
            &CallKey {
                task: "env.t",
                inputs_hash: [0; 32],
                seq: 0,
                group: None,
            },
        )
    }

    fn finish(id: ActionId, outcome: Result<Payload, Failure>, cached: bool) -> Finish<'static> {
        Finish {
            run: RunId(7),
            id,
            task: "env.t",
            from: ActionStatus::Running,
            outcome,
            cache: cached.then(|| ("k".to_string(), "v1".to_string())),
            scope: ("p", "d"),
            ended_at: 42,
            phases: None,
        }
    }

    #[test]
    fn a_cached_success_writes_the_entry_before_the_result() {
        let out = Payload::Inline(vec![9]);
        let writes = finish_writes(finish(child_id(), Ok(out.clone()), true)).unwrap();
        assert_eq!(writes.len(), 2);
        let WriteOp::PutCache(entry) = &writes[0] else {
            panic!("cache entry first: {writes:?}")
        };
        assert_eq!(
            (
                entry.key.as_str(),
                entry.version.as_str(),
                entry.project.as_str(),
                entry.domain.as_str()
            ),
            ("k", "v1", "p", "d")
        );
        assert_eq!(entry.output, out);
        assert!(matches!(
            &writes[1],
            WriteOp::FinishAction { status: ActionStatus::Succeeded, output: Some(o), error: None, cache_hit: false, .. } if *o == out
        ));
    }

    #[test]
    fn a_failure_is_never_cached_and_the_root_also_ends_the_run() {
        let f = failure(ErrorKind::User);
        let writes = finish_writes(finish(ActionId::ROOT, Err(f.clone()), true)).unwrap();
        assert_eq!(writes.len(), 2, "{writes:?}");
        assert!(matches!(
            &writes[0],
            WriteOp::FinishAction { status: ActionStatus::Failed, error: Some(e), output: None, .. } if *e == f
        ));
        assert!(matches!(
            &writes[1],
            WriteOp::FinishRun { status: RunStatus::Failed, error: Some(e), run: RunId(7), .. } if *e == f
        ));

        let out = Payload::Inline(vec![1]);
        let writes = finish_writes(finish(ActionId::ROOT, Ok(out), false)).unwrap();
        assert!(matches!(
            &writes[..],
            [
                WriteOp::FinishAction { .. },
                WriteOp::FinishRun {
                    status: RunStatus::Succeeded,
                    output: Some(_),
                    ..
                }
            ]
        ));
    }

    #[test]
    fn a_cancelled_action_cannot_finish() {
        let mut f = finish(child_id(), Ok(Payload::Inline(vec![])), false);
        f.from = ActionStatus::Cancelled;
        assert!(weir_core::lifecycle::expecting_refusals(|| finish_writes(f)).is_err());
        // A queued action may fail (queue deadline) but not succeed without running.
        let mut f = finish(child_id(), Err(failure(ErrorKind::Deadline)), false);
        f.from = ActionStatus::Queued;
        assert!(finish_writes(f).is_ok());
        let mut f = finish(child_id(), Ok(Payload::Inline(vec![])), false);
        f.from = ActionStatus::Queued;
        assert!(weir_core::lifecycle::expecting_refusals(|| finish_writes(f)).is_err());
    }
}
