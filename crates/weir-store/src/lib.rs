//! Durable state of weir.
//!
//! [`Store`] is what the engine needs from a state backend: an ordered stream of writes
//! ([`WriteOp`]) that are applied in group commits and acknowledged only once committed, and the
//! reads behind recovery, the CLI and the UI. [`SqliteStore`] is the embedded backend.
//!
//! ## Why rusqlite
//! The embedded backend uses `rusqlite` (bundled SQLite) directly: the hot path is one writer
//! thread doing group commits with cached prepared statements, which rusqlite does with no async
//! overhead. The PostgreSQL backend will use `tokio-postgres` rather than `sqlx`, since `sqlx`
//! also links SQLite and only resolves next to old rusqlite releases.
//!
//! ## Durability
//! SQLite runs in WAL mode with `synchronous=NORMAL`: a committed transaction survives the crash
//! or `SIGKILL` of any process (the WAL is in the OS page cache); set
//! [`StoreOptions::fsync`] for `synchronous=FULL` to also survive power loss, at about a
//! millisecond per commit on common disks. Commits are batched: the writer thread takes every
//! operation waiting in its channel (up to [`StoreOptions::max_batch`]) into one transaction.

mod records;
mod sqlite;
mod ui_queries;

pub use records::*;
pub use sqlite::{SqliteStore, StoreOptions};
pub use ui_queries::*;

/// A store failure.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The SQLite database failed.
    #[error("state database {path}: {source}")]
    Sqlite {
        /// The database file.
        path: String,
        /// The underlying error.
        #[source]
        source: rusqlite::Error,
    },
    /// There is no weir state at the given directory.
    #[error(
        "no weir state in {0} (nothing has run there yet; pass --state-dir to point elsewhere)"
    )]
    NoState(String),
    /// The database was written by a newer weir.
    #[error(
        "state database {path} has schema version {found}, newer than this weir supports ({supported}); upgrade weir"
    )]
    NewerSchema {
        /// The database file.
        path: String,
        /// Version found.
        found: i64,
        /// Newest version this build knows.
        supported: i64,
    },
    /// No run with that name.
    #[error("unknown run {0:?} (see `get runs`)")]
    UnknownRun(String),
    /// No such action in the run.
    #[error("unknown action {action} in run {run:?} (see `get actions {run}`)")]
    UnknownAction {
        /// Run name.
        run: String,
        /// Action id as given.
        action: String,
    },
    /// A run with this name exists already.
    #[error("a run named {0:?} exists already; choose another --name")]
    RunExists(String),
    /// The writer thread is gone (the store was closed or crashed).
    #[error("the state writer has stopped")]
    WriterGone,
    /// A stored value could not be read.
    #[error("corrupt state: {0}")]
    Corrupt(String),
}

/// Result of store operations.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Called once the write it belongs to is committed (or failed).
pub type Ack = Box<dyn FnOnce(Result<(), std::sync::Arc<Error>>) + Send>;

/// What the engine needs from a state backend.
pub trait Store: Send + Sync + 'static {
    /// Queues a write. Writes are applied in the order they are queued; `ack`, if any, is called
    /// after the transaction holding the write has committed.
    fn write(&self, op: WriteOp, ack: Option<Ack>);
    /// Creates a run and its root action; fails if the name is taken.
    fn create_run(&self, run: &NewRun) -> Result<RunRecord>;
    /// A run by name.
    fn run_by_name(&self, name: &str) -> Result<RunRecord>;
    /// Runs, newest first.
    fn list_runs(&self, filter: &RunFilter) -> Result<Vec<RunSummary>>;
    /// Actions of a run in creation order, paged.
    fn list_actions(&self, run: RunId, page: Page) -> Result<Vec<ActionRecord>>;
    /// One action with its payloads.
    fn action(&self, run: RunId, id: weir_core::ActionId) -> Result<Option<ActionRecord>>;
    /// Failed attempts of one action, oldest first.
    fn failed_attempts(&self, run: RunId, id: weir_core::ActionId) -> Result<Vec<AttemptRecord>>;
    /// The cache entry for a key: any project/domain when `scope` is `None`, else only that
    /// project and domain's.
    fn cache_lookup(&self, key: &str, scope: Option<(&str, &str)>) -> Result<Option<CacheEntry>>;
    /// Cache entries, newest first, optionally of one task.
    fn list_cache(&self, task: Option<&str>, limit: u32) -> Result<Vec<CacheEntry>>;
    /// Deletes cache entries (of one task, or all); returns how many.
    fn clear_cache(&self, task: Option<&str>) -> Result<u64>;
    /// Blocks until every write queued so far is committed.
    fn flush(&self) -> Result<()>;
}
