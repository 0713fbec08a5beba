//! Error kinds and the failure record stored for a failed action (SPEC §2.4).

use serde::{Deserialize, Serialize};

/// Why an attempt or action failed. Decides whether a retry is allowed.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ErrorKind {
    /// An error returned by user code; retried while retries are left.
    User,
    /// An error the user marked as not worth retrying.
    NonRecoverable,
    /// A panic inside user code; retried like a user error.
    Panic,
    /// The attempt ran longer than its `max_runtime`; retried.
    Timeout,
    /// The action waited in the queue longer than `max_queued`, or its overall deadline passed;
    /// never retried.
    Deadline,
    /// An input or output broke the inline size limit (SPEC §5.1); never retried.
    TooLarge,
    /// The inputs or output could not be encoded or decoded; never retried.
    Codec,
    /// A child action failed and the parent did not handle it.
    ChildFailed,
    /// The action or its run was cancelled.
    Cancelled,
    /// The engine or its storage failed.
    System,
}

impl ErrorKind {
    /// Whether an attempt that failed this way may be retried.
    pub fn is_retryable(self) -> bool {
        matches!(
            self,
            ErrorKind::User
                | ErrorKind::Panic
                | ErrorKind::Timeout
                | ErrorKind::ChildFailed
                | ErrorKind::System
        )
    }

    /// Stable snake_case name, as stored and shown.
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorKind::User => "user",
            ErrorKind::NonRecoverable => "non_recoverable",
            ErrorKind::Panic => "panic",
            ErrorKind::Timeout => "timeout",
            ErrorKind::Deadline => "deadline",
            ErrorKind::TooLarge => "too_large",
            ErrorKind::Codec => "codec",
            ErrorKind::ChildFailed => "child_failed",
            ErrorKind::Cancelled => "cancelled",
            ErrorKind::System => "system",
        }
    }
}

impl std::fmt::Display for ErrorKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The failure of an action as stored and as handed to its parent.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Failure {
    /// Id of the action that failed (display form).
    pub action_id: String,
    /// Full task name of that action.
    pub task: String,
    /// Why it failed.
    pub kind: ErrorKind,
    /// The error message, outermost first.
    pub message: String,
    /// The error's source chain, outermost first, without `message`.
    #[serde(default)]
    pub chain: Vec<String>,
}

impl std::fmt::Display for Failure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "action {} ({}) failed [{}]: {}",
            self.action_id, self.task, self.kind, self.message
        )?;
        for cause in &self.chain {
            write!(f, ": {cause}")?;
        }
        Ok(())
    }
}
