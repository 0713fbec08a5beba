//! The error type of tasks and task calls (SPEC §2.4).

use weir_core::{ErrorKind, Failure};

/// An error inside or from a task.
///
/// Any `std::error::Error` converts into it with `?` (kind [`ErrorKind::User`], message and
/// source chain kept). A failed child call returns one of kind [`ErrorKind::ChildFailed`]
/// carrying the child's [`Failure`] (action id, task, kind, message): see [`Error::child`].
/// Like `anyhow::Error`, it deliberately does not implement `std::error::Error` itself, which is
/// what lets the blanket conversion exist; it converts into `anyhow::Error` and
/// `Box<dyn std::error::Error + Send + Sync>`.
pub struct Error {
    inner: Box<Inner>,
}

struct Inner {
    kind: ErrorKind,
    message: String,
    chain: Vec<String>,
    child: Option<Failure>,
}

/// `Result` with weir's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    /// A user error with a message; retried while retries are left.
    pub fn msg(message: impl std::fmt::Display) -> Error {
        Error::with_kind(ErrorKind::User, message)
    }

    /// An error that must not be retried.
    pub fn non_recoverable(message: impl std::fmt::Display) -> Error {
        Error::with_kind(ErrorKind::NonRecoverable, message)
    }

    /// An error of a given kind.
    pub fn with_kind(kind: ErrorKind, message: impl std::fmt::Display) -> Error {
        Error {
            inner: Box::new(Inner {
                kind,
                message: message.to_string(),
                chain: Vec::new(),
                child: None,
            }),
        }
    }

    /// The error of a failed child action.
    pub fn from_child(failure: Failure) -> Error {
        Error {
            inner: Box::new(Inner {
                kind: ErrorKind::ChildFailed,
                message: failure.to_string(),
                chain: Vec::new(),
                child: Some(failure),
            }),
        }
    }

    /// The error of a failed run or action as its caller outside the run sees it: the kind of
    /// what failed (the root's own timeout, or `child_failed` when the root failed because of
    /// a child it did not handle), with the failure record in [`Error::child`].
    pub fn from_failure(failure: Failure) -> Error {
        Error {
            inner: Box::new(Inner {
                kind: failure.kind,
                message: failure.to_string(),
                chain: Vec::new(),
                child: Some(failure),
            }),
        }
    }

    /// Why it failed.
    pub fn kind(&self) -> ErrorKind {
        self.inner.kind
    }

    /// The message (outermost).
    pub fn message(&self) -> &str {
        &self.inner.message
    }

    /// The source chain below the message.
    pub fn chain(&self) -> &[String] {
        &self.inner.chain
    }

    /// The failed child's record, if this error comes from a child call.
    pub fn child(&self) -> Option<&Failure> {
        self.inner.child.as_ref()
    }

    /// Whether an attempt failing with this error may be retried. A child's failure is
    /// retryable for the parent only if the child's own kind was.
    pub fn is_retryable(&self) -> bool {
        match &self.inner.child {
            Some(child) if self.inner.kind == ErrorKind::ChildFailed => child.kind.is_retryable(),
            _ => self.inner.kind.is_retryable(),
        }
    }

    /// The failure record of this error for the action it ended.
    pub fn to_failure(&self, action_id: String, task: String) -> Failure {
        Failure {
            action_id,
            task,
            kind: self.inner.kind,
            message: self.inner.message.clone(),
            chain: self.inner.chain.clone(),
        }
    }

    /// Adds a cause below the message (used when rebuilding recorded errors).
    pub fn context_below(mut self, cause: impl Into<String>) -> Error {
        self.inner.chain.push(cause.into());
        self
    }

    /// Marks this error as not to be retried, keeping its message.
    pub fn into_non_recoverable(mut self) -> Error {
        self.inner.kind = ErrorKind::NonRecoverable;
        self
    }
}

impl<E: std::error::Error + Send + Sync + 'static> From<E> for Error {
    fn from(e: E) -> Error {
        let mut chain = Vec::new();
        let mut source = e.source();
        while let Some(s) = source {
            chain.push(s.to_string());
            source = s.source();
        }
        Error {
            inner: Box::new(Inner {
                kind: ErrorKind::User,
                message: e.to_string(),
                chain,
                child: None,
            }),
        }
    }
}

impl std::fmt::Display for Error {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.inner.message)?;
        for c in &self.inner.chain {
            write!(f, ": {c}")?;
        }
        Ok(())
    }
}

impl std::fmt::Debug for Error {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "weir::Error[{}]: {}", self.inner.kind, self)
    }
}

/// `Error` as a standard error, for `anyhow` and `Box<dyn Error>`.
#[derive(Debug)]
pub struct StdError(pub Error);

impl std::fmt::Display for StdError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        std::fmt::Display::fmt(&self.0, f)
    }
}

impl std::error::Error for StdError {}

impl From<Error> for anyhow::Error {
    fn from(e: Error) -> anyhow::Error {
        anyhow::Error::new(StdError(e))
    }
}

impl From<Error> for Box<dyn std::error::Error + Send + Sync> {
    fn from(e: Error) -> Self {
        Box::new(StdError(e))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn conversions_keep_message_chain_and_kind() {
        let io = std::io::Error::other("disk on fire");
        let e: Error = io.into();
        assert_eq!(e.kind(), ErrorKind::User);
        assert!(e.is_retryable());
        assert_eq!(e.to_string(), "disk on fire");
        let child = Failure {
            action_id: "ab".into(),
            task: "env.t".into(),
            kind: ErrorKind::NonRecoverable,
            message: "bad".into(),
            chain: vec![],
        };
        let e = Error::from_child(child.clone());
        assert_eq!(e.child(), Some(&child));
        assert!(
            !e.is_retryable(),
            "a non-recoverable child is not retried through its parent"
        );
        let any: anyhow::Error = Error::non_recoverable("stop").into();
        assert_eq!(any.to_string(), "stop");
    }
}
