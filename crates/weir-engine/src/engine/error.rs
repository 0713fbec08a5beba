//! The engine's own error: what opening an engine, starting, resuming or aborting a run can
//! fail with, typed so the CLI maps it to exit codes (and the Python front to exception
//! classes). Task code never sees it: failures inside a run are [`crate::Error`]s.

use crate::registry::{DuplicateName, LookupError};

/// A failure at the engine's boundary.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The state store failed (database unreadable, newer schema, writer gone, ...).
    #[error(transparent)]
    Store(weir_store::Error),
    /// The object store failed (missing object, bad URL).
    #[error(transparent)]
    Blob(#[from] weir_blob::Error),
    /// No task of that name in this binary.
    #[error(transparent)]
    UnknownTask(#[from] LookupError),
    /// Two tasks or traces share a name.
    #[error(transparent)]
    DuplicateName(#[from] DuplicateName),
    /// No run of that name.
    #[error("unknown run {0:?} (see `get runs`)")]
    UnknownRun(String),
    /// A run with that name exists.
    #[error("a run named {0:?} exists already; choose another --name")]
    RunExists(String),
    /// Another engine drives the run.
    #[error(
        "run {run:?} is driven by {owner} (claim {epoch}); if that process is gone, `resume --force` takes the run over"
    )]
    RunOwned {
        /// The run.
        run: String,
        /// Its owner.
        owner: String,
        /// The owner's claim.
        epoch: u64,
    },
    /// The run has ended (nothing to abort).
    #[error("run {run:?} has already ended ({status})")]
    RunEnded {
        /// The run.
        run: String,
        /// How it ended.
        status: &'static str,
    },
    /// Inputs over the task's inline limit.
    #[error("{0}")]
    TooLarge(String),
    /// Inputs that do not encode.
    #[error("{0}")]
    Encode(String),
    /// An engine option contradicts the state it opens.
    #[error("{0}")]
    Config(String),
    /// `rerun --recover` of a run that has not ended.
    #[error(
        "run {0} has not ended: recover from it once it has failed, been aborted or succeeded (or abort it first)"
    )]
    RunNotEnded(String),
    /// The operating system refused what the engine needs (random bytes for a secret, ...).
    #[error("{0}")]
    System(String),
}

impl From<weir_store::Error> for Error {
    fn from(e: weir_store::Error) -> Error {
        match e {
            weir_store::Error::RunExists(name) => Error::RunExists(name),
            weir_store::Error::UnknownRun(name) => Error::UnknownRun(name),
            weir_store::Error::RunOwned { run, owner, epoch } => {
                Error::RunOwned { run, owner, epoch }
            }
            e => Error::Store(e),
        }
    }
}

impl Error {
    /// Whether the caller's input was refused (and nothing changed): the CLI's exit code 2.
    pub fn is_bad_input(&self) -> bool {
        matches!(
            self,
            Error::UnknownTask(_)
                | Error::UnknownRun(_)
                | Error::RunExists(_)
                | Error::RunEnded { .. }
                | Error::RunNotEnded(_)
                | Error::TooLarge(_)
                | Error::Encode(_)
                | Error::Config(_)
                | Error::Store(weir_store::Error::NoState(_))
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn store_refusals_become_their_own_variants_and_inputs_are_told_apart() {
        let e: Error = weir_store::Error::RunExists("r".into()).into();
        assert!(matches!(e, Error::RunExists(ref n) if n == "r"));
        assert!(e.is_bad_input());
        let e: Error = weir_store::Error::RunOwned {
            run: "r".into(),
            owner: "h:1:x".into(),
            epoch: 3,
        }
        .into();
        assert!(matches!(e, Error::RunOwned { epoch: 3, .. }));
        assert!(!e.is_bad_input());
        assert!(e.to_string().contains("h:1:x"), "{e}");
        let e: Error = weir_store::Error::WriterGone.into();
        assert!(matches!(e, Error::Store(_)) && !e.is_bad_input());
    }
}
