//! The lifecycle of an action, as one transition table.
//!
//! ```text
//! queued ──lease──▶ leased ──start──▶ running ──succeed──▶ succeeded
//!   │  ╲──start────────────────────▶    │ ──fail──────────▶ failed ──resubmit──▶ queued
//!   │                                   │ ──fail_retryable─▶ retrying ──requeue─▶ queued
//!   ├──cache_hit──▶ succeeded           └─lease_lost───────▶ queued   (system retry)
//!   └──cancel (from any live state)──▶ cancelled ──resubmit──▶ queued
//! ```
//!
//! The engine never changes a status without going through [`ActionStatus::apply`], so an
//! impossible transition (a completion for a cancelled action, a second success) is rejected
//! in one place.

use serde::{Deserialize, Serialize};

/// The status of an action.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ActionStatus {
    /// Waiting for a worker slot.
    Queued,
    /// Handed to a worker, not yet started.
    Leased,
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
    /// A worker leased it.
    Lease,
    /// An attempt started.
    Start,
    /// The running attempt's output was accepted.
    Succeed,
    /// The running attempt failed with no retry left (or a non-retryable error).
    Fail,
    /// The running attempt failed and a retry will follow.
    FailRetryable,
    /// The retry's backoff elapsed.
    Requeue,
    /// The worker holding the lease died or stopped heartbeating.
    LeaseLost,
    /// The output was found in the cache (or recorded before a crash): no attempt needed.
    CacheHit,
    /// Cancelled.
    Cancel,
    /// A finished-but-unsuccessful action was called again (its parent was retried).
    Resubmit,
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
        (S::Queued, E::Lease, S::Leased),
        (S::Queued, E::Start, S::Running),
        (S::Queued, E::CacheHit, S::Succeeded),
        (S::Queued, E::Cancel, S::Cancelled),
        (S::Leased, E::Start, S::Running),
        (S::Leased, E::LeaseLost, S::Queued),
        (S::Leased, E::Cancel, S::Cancelled),
        (S::Running, E::Succeed, S::Succeeded),
        (S::Running, E::Fail, S::Failed),
        (S::Running, E::FailRetryable, S::Retrying),
        (S::Running, E::LeaseLost, S::Queued),
        (S::Running, E::Cancel, S::Cancelled),
        (S::Retrying, E::Requeue, S::Queued),
        (S::Retrying, E::Cancel, S::Cancelled),
        (S::Failed, E::Resubmit, S::Queued),
        (S::Cancelled, E::Resubmit, S::Queued),
    ]
};

impl ActionStatus {
    /// All states, in lifecycle order.
    pub const ALL: [ActionStatus; 7] = [
        ActionStatus::Queued,
        ActionStatus::Leased,
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
            ActionStatus::Leased => 1,
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
            ActionStatus::Leased => "leased",
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

impl std::fmt::Display for ActionStatus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashSet;

    const EVENTS: [ActionEvent; 10] = [
        ActionEvent::Lease,
        ActionEvent::Start,
        ActionEvent::Succeed,
        ActionEvent::Fail,
        ActionEvent::FailRetryable,
        ActionEvent::Requeue,
        ActionEvent::LeaseLost,
        ActionEvent::CacheHit,
        ActionEvent::Cancel,
        ActionEvent::Resubmit,
    ];

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
    fn succeeded_is_final_and_accepts_nothing() {
        for event in EVENTS {
            assert!(ActionStatus::Succeeded.apply(event).is_err(), "{event:?}");
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
    }
}
