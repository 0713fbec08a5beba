//! The lifecycle of an action, as one transition table.
//!
//! ```text
//! queued ──start──▶ running ──succeed──▶ succeeded ──output_lost──▶ queued
//!   │                 │ ──fail──────────▶ failed ──resubmit──▶ queued
//!   │                 │ ──fail_retryable─▶ retrying ──requeue─▶ queued
//!   ├──cache_hit──▶ succeeded   └─lease_lost──▶ queued   (its process died; resume)
//!   ├──recover──▶ succeeded   (output taken from the same action of an earlier run)
//!   ├──fail (before any attempt: queue deadline, inputs not stored)──▶ failed
//!   └──cancel (from any live state)──▶ cancelled ──resubmit──▶ queued
//! ```
//!
//! `output_lost`: a recovering run found a succeeded action whose recorded output is missing
//! or corrupt (its object deleted or damaged): the success cannot be replayed, so the action
//! runs again (SPEC §12).
//!
//! The engine changes a status only through [`ActionStatus::take`] (which is
//! [`ActionStatus::apply`] plus a record of the transition for the coverage test), so an
//! impossible transition (a completion for a cancelled action, a second success) is refused in
//! one place. Every status in the table is written to the store: `retrying` when an attempt
//! failed and a retry follows. There is no `leased` state yet: in embedded mode an attempt is
//! handed to a worker as it starts; store-level leases (cluster mode) will add it.
//!
//! [`coverage`] reports the transitions this process took and any it was refused; with
//! `WEIR_TRANSITION_LOG=<file>` set, each process also appends the first use of each transition
//! (and every refused one) to that file, so a whole test suite can be checked
//! ([`read_log`]).

use std::sync::atomic::{AtomicBool, Ordering};

use serde::{Deserialize, Serialize};

/// The status of an action.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ActionStatus {
    /// Waiting for a slot.
    Queued,
    /// An attempt is running.
    Running,
    /// An attempt failed and another will follow after the backoff.
    Retrying,
    /// Finished with an accepted output.
    Succeeded,
    /// Finished with an error; no attempts left or not retryable.
    Failed,
    /// Cancelled by the user, a fail-fast sibling or an abort.
    Cancelled,
}

/// What can happen to an action.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ActionEvent {
    /// An attempt started.
    Start,
    /// The running attempt's output was accepted.
    Succeed,
    /// The running attempt failed with no retry left (or a non-retryable error), or a queued
    /// action failed before any attempt (queue deadline, inputs not stored).
    Fail,
    /// The running attempt failed and a retry will follow.
    FailRetryable,
    /// The retry's backoff elapsed.
    Requeue,
    /// The process running it died (found `running` on resume), or its worker was lost.
    LeaseLost,
    /// The output was found in the cache (or recorded before a crash): no attempt needed.
    CacheHit,
    /// Cancelled.
    Cancel,
    /// A finished-but-unsuccessful action was called again (its parent was retried).
    Resubmit,
    /// A succeeded action's recorded output is missing or corrupt: it runs again.
    OutputLost,
    /// The output of the same action in an earlier run was taken (`rerun --recover`).
    Recover,
}

/// A transition the table does not allow.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("action in state {from:?} cannot take event {event:?}")]
pub struct InvalidTransition {
    /// The state the action was in.
    pub from: ActionStatus,
    /// The event that was refused.
    pub event: ActionEvent,
}

/// Every allowed transition. Kept as data so that a test can check each one is exercised and
/// every other pair is refused.
pub const TRANSITIONS: &[(ActionStatus, ActionEvent, ActionStatus)] = {
    use ActionEvent as E;
    use ActionStatus as S;
    &[
        (S::Queued, E::Start, S::Running),
        (S::Queued, E::CacheHit, S::Succeeded),
        (S::Queued, E::Recover, S::Succeeded),
        (S::Queued, E::Fail, S::Failed),
        (S::Queued, E::Cancel, S::Cancelled),
        (S::Running, E::Succeed, S::Succeeded),
        (S::Running, E::Fail, S::Failed),
        (S::Running, E::FailRetryable, S::Retrying),
        (S::Running, E::LeaseLost, S::Queued),
        (S::Running, E::Cancel, S::Cancelled),
        (S::Retrying, E::Requeue, S::Queued),
        (S::Retrying, E::Cancel, S::Cancelled),
        (S::Failed, E::Resubmit, S::Queued),
        (S::Cancelled, E::Resubmit, S::Queued),
        (S::Succeeded, E::OutputLost, S::Queued),
    ]
};

impl ActionStatus {
    /// All states, in lifecycle order.
    pub const ALL: [ActionStatus; 6] = [
        ActionStatus::Queued,
        ActionStatus::Running,
        ActionStatus::Retrying,
        ActionStatus::Succeeded,
        ActionStatus::Failed,
        ActionStatus::Cancelled,
    ];

    /// Applies an event, returning the next state or the refused transition.
    pub fn apply(self, event: ActionEvent) -> Result<ActionStatus, InvalidTransition> {
        TRANSITIONS
            .iter()
            .find(|(from, ev, _)| *from == self && *ev == event)
            .map(|(_, _, to)| *to)
            .ok_or(InvalidTransition { from: self, event })
    }

    /// [`ActionStatus::apply`], recording the transition (or the refusal) for [`coverage`].
    /// This is the one way the engine changes a status.
    pub fn take(self, event: ActionEvent) -> Result<ActionStatus, InvalidTransition> {
        let result = self.apply(event);
        match result {
            Ok(_) => {
                let i = TRANSITIONS
                    .iter()
                    .position(|(f, e, _)| *f == self && *e == event)
                    .expect("an allowed transition is in the table");
                if !TAKEN[i].load(Ordering::Relaxed) && !TAKEN[i].swap(true, Ordering::Relaxed) {
                    log_line(&format!("took {} {}", self.as_str(), event.as_str()));
                }
            }
            Err(e) => {
                REFUSED.lock().unwrap_or_else(|p| p.into_inner()).push(e);
                if !EXPECTING_REFUSALS.with(|x| x.get()) {
                    log_line(&format!("refused {} {}", self.as_str(), event.as_str()));
                }
            }
        }
        result
    }

    /// Whether no further attempt will run on its own.
    pub fn is_terminal(self) -> bool {
        matches!(
            self,
            ActionStatus::Succeeded | ActionStatus::Failed | ActionStatus::Cancelled
        )
    }

    /// Stable small integer for storage.
    pub fn code(self) -> i64 {
        match self {
            ActionStatus::Queued => 0,
            ActionStatus::Running => 2,
            ActionStatus::Retrying => 3,
            ActionStatus::Succeeded => 4,
            ActionStatus::Failed => 5,
            ActionStatus::Cancelled => 6,
        }
    }

    /// Inverse of [`ActionStatus::code`].
    pub fn from_code(code: i64) -> Option<ActionStatus> {
        ActionStatus::ALL.into_iter().find(|s| s.code() == code)
    }

    /// snake_case name, as shown by the CLI.
    pub fn as_str(self) -> &'static str {
        match self {
            ActionStatus::Queued => "queued",
            ActionStatus::Running => "running",
            ActionStatus::Retrying => "retrying",
            ActionStatus::Succeeded => "succeeded",
            ActionStatus::Failed => "failed",
            ActionStatus::Cancelled => "cancelled",
        }
    }

    /// Parses [`ActionStatus::as_str`].
    pub fn parse(s: &str) -> Option<ActionStatus> {
        ActionStatus::ALL.into_iter().find(|st| st.as_str() == s)
    }
}

impl ActionEvent {
    /// Every event.
    pub const ALL: [ActionEvent; 11] = [
        ActionEvent::Start,
        ActionEvent::Succeed,
        ActionEvent::Fail,
        ActionEvent::FailRetryable,
        ActionEvent::Requeue,
        ActionEvent::LeaseLost,
        ActionEvent::CacheHit,
        ActionEvent::Cancel,
        ActionEvent::Resubmit,
        ActionEvent::OutputLost,
        ActionEvent::Recover,
    ];

    /// snake_case name.
    pub fn as_str(self) -> &'static str {
        match self {
            ActionEvent::Start => "start",
            ActionEvent::Succeed => "succeed",
            ActionEvent::Fail => "fail",
            ActionEvent::FailRetryable => "fail_retryable",
            ActionEvent::Requeue => "requeue",
            ActionEvent::LeaseLost => "lease_lost",
            ActionEvent::CacheHit => "cache_hit",
            ActionEvent::Cancel => "cancel",
            ActionEvent::Resubmit => "resubmit",
            ActionEvent::OutputLost => "output_lost",
            ActionEvent::Recover => "recover",
        }
    }

    /// Parses [`ActionEvent::as_str`].
    pub fn parse(s: &str) -> Option<ActionEvent> {
        ActionEvent::ALL.into_iter().find(|e| e.as_str() == s)
    }
}

thread_local! {
    static EXPECTING_REFUSALS: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
}

/// Runs `f` with refused transitions left out of the `WEIR_TRANSITION_LOG` file (for tests
/// that check a refusal on purpose; [`coverage`] of this process still lists them).
#[doc(hidden)]
pub fn expecting_refusals<R>(f: impl FnOnce() -> R) -> R {
    EXPECTING_REFUSALS.with(|x| x.set(true));
    let r = f();
    EXPECTING_REFUSALS.with(|x| x.set(false));
    r
}

static TAKEN: [AtomicBool; TRANSITIONS.len()] =
    [const { AtomicBool::new(false) }; TRANSITIONS.len()];
static REFUSED: std::sync::Mutex<Vec<InvalidTransition>> = std::sync::Mutex::new(Vec::new());

fn log_line(line: &str) {
    use std::io::Write;
    static LOG: std::sync::OnceLock<Option<std::sync::Mutex<std::fs::File>>> =
        std::sync::OnceLock::new();
    let log = LOG.get_or_init(|| {
        let path = std::env::var_os("WEIR_TRANSITION_LOG")?;
        std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)
            .ok()
            .map(std::sync::Mutex::new)
    });
    if let Some(file) = log {
        let mut f = file.lock().unwrap_or_else(|p| p.into_inner());
        // One write of the whole line: many processes append to the file at once, and an
        // append of one small write is not interleaved with another (`writeln!` would write
        // the line and its newline apart).
        let _ = f.write_all(format!("{line}\n").as_bytes());
    }
}

/// What the transition table saw: taken and never-taken declared transitions, and refused
/// (undeclared) ones.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Coverage {
    /// Declared transitions that were taken.
    pub taken: Vec<(ActionStatus, ActionEvent, ActionStatus)>,
    /// Declared transitions never taken.
    pub not_taken: Vec<(ActionStatus, ActionEvent, ActionStatus)>,
    /// Transitions that were asked for and are not in the table.
    pub refused: Vec<InvalidTransition>,
}

impl Coverage {
    fn from_marks(taken: impl Fn(usize) -> bool, refused: Vec<InvalidTransition>) -> Coverage {
        let (mut yes, mut no) = (Vec::new(), Vec::new());
        for (i, t) in TRANSITIONS.iter().enumerate() {
            if taken(i) { yes.push(*t) } else { no.push(*t) }
        }
        Coverage {
            taken: yes,
            not_taken: no,
            refused,
        }
    }
}

/// The transitions taken (and refused) in this process so far.
pub fn coverage() -> Coverage {
    Coverage::from_marks(
        |i| TAKEN[i].load(Ordering::Relaxed),
        REFUSED.lock().unwrap_or_else(|p| p.into_inner()).clone(),
    )
}

/// Reads a `WEIR_TRANSITION_LOG` file written by any number of processes.
pub fn read_log(text: &str) -> Result<Coverage, String> {
    let mut taken = vec![false; TRANSITIONS.len()];
    let mut refused = Vec::new();
    for (n, line) in text.lines().enumerate() {
        let bad = || {
            format!(
                "line {}: {line:?} is not \"took|refused STATUS EVENT\"",
                n + 1
            )
        };
        let mut words = line.split_whitespace();
        let (Some(verb), Some(from), Some(event)) = (words.next(), words.next(), words.next())
        else {
            return Err(bad());
        };
        let from = ActionStatus::parse(from).ok_or_else(bad)?;
        let event = ActionEvent::parse(event).ok_or_else(bad)?;
        match verb {
            "took" => match TRANSITIONS
                .iter()
                .position(|(f, e, _)| *f == from && *e == event)
            {
                Some(i) => taken[i] = true,
                None => refused.push(InvalidTransition { from, event }),
            },
            "refused" => refused.push(InvalidTransition { from, event }),
            _ => return Err(bad()),
        }
    }
    Ok(Coverage::from_marks(|i| taken[i], refused))
}

impl std::fmt::Display for ActionStatus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashSet;

    const EVENTS: [ActionEvent; 11] = ActionEvent::ALL;

    #[test]
    fn table_is_exhaustive_and_consistent() {
        let allowed: HashSet<_> = TRANSITIONS.iter().map(|(f, e, _)| (*f, *e)).collect();
        assert_eq!(
            allowed.len(),
            TRANSITIONS.len(),
            "a (state, event) pair is listed twice"
        );
        for from in ActionStatus::ALL {
            for event in EVENTS {
                let got = from.apply(event);
                assert_eq!(
                    got.is_ok(),
                    allowed.contains(&(from, event)),
                    "{from:?} + {event:?}"
                );
            }
        }
        // every event and every state takes part in some transition
        for event in EVENTS {
            assert!(
                TRANSITIONS.iter().any(|(_, e, _)| *e == event),
                "{event:?} unused"
            );
        }
        for st in ActionStatus::ALL {
            assert!(
                TRANSITIONS.iter().any(|(f, _, t)| *f == st || *t == st),
                "{st:?} unreachable"
            );
        }
    }

    #[test]
    fn succeeded_accepts_only_the_loss_of_its_output() {
        for event in EVENTS {
            let next = ActionStatus::Succeeded.apply(event);
            match event {
                ActionEvent::OutputLost => assert_eq!(next, Ok(ActionStatus::Queued)),
                _ => assert!(next.is_err(), "{event:?}"),
            }
        }
        let path = [
            ActionEvent::Start,
            ActionEvent::FailRetryable,
            ActionEvent::Requeue,
            ActionEvent::Start,
            ActionEvent::Succeed,
        ];
        let end = path
            .iter()
            .try_fold(ActionStatus::Queued, |s, e| s.apply(*e))
            .unwrap();
        assert_eq!(end, ActionStatus::Succeeded);
        assert!(end.is_terminal());
    }

    #[test]
    fn codes_and_names_round_trip() {
        for st in ActionStatus::ALL {
            assert_eq!(ActionStatus::from_code(st.code()), Some(st));
            assert_eq!(ActionStatus::parse(st.as_str()), Some(st));
        }
        assert_eq!(ActionStatus::from_code(99), None);
        for e in ActionEvent::ALL {
            assert_eq!(ActionEvent::parse(e.as_str()), Some(e));
        }
    }

    #[test]
    fn take_records_taken_and_refused_transitions() {
        assert_eq!(
            ActionStatus::Queued.take(ActionEvent::CacheHit),
            Ok(ActionStatus::Succeeded)
        );
        assert!(expecting_refusals(|| ActionStatus::Succeeded.take(ActionEvent::Start)).is_err());
        let c = coverage();
        assert!(c.taken.contains(&(
            ActionStatus::Queued,
            ActionEvent::CacheHit,
            ActionStatus::Succeeded
        )));
        assert!(c.refused.contains(&InvalidTransition {
            from: ActionStatus::Succeeded,
            event: ActionEvent::Start
        }));
        assert_eq!(c.taken.len() + c.not_taken.len(), TRANSITIONS.len());
    }

    #[test]
    fn the_log_of_several_processes_is_read_back() {
        let c =
            read_log("took queued start\ntook running succeed\nrefused succeeded start\n").unwrap();
        assert_eq!(c.taken.len(), 2);
        assert_eq!(c.refused.len(), 1);
        // A "took" line for a pair the table does not declare counts as refused.
        assert_eq!(read_log("took succeeded start").unwrap().refused.len(), 1);
        assert!(
            read_log("took queued nonsense")
                .unwrap_err()
                .contains("line 1")
        );
    }
}
