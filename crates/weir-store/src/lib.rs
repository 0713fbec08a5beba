//! Durable state of weir.
//!
//! [`Store`] is what the engine, the CLI and the UI need from a state backend, and the only
//! door to state: an ordered stream of writes ([`WriteOp`]) applied in group commits, whose
//! commits are reported by [`Ticket`]s (nothing of the caller runs on the writer); async reads
//! behind recovery, the cache, the CLI and the UI; and run ownership by owner id and epoch.
//! [`SqliteStore`] is the embedded backend; the PostgreSQL backend (crate
//! `weir-store-postgres`) implements the same trait and runs the same conformance suite
//! (`tests/suite`, run by each backend's `tests/conformance.rs`).
//!
//! ## Why rusqlite
//! The embedded backend uses `rusqlite` (bundled SQLite) directly: the hot path is one writer
//! thread doing group commits with cached prepared statements, which rusqlite does with no async
//! overhead. The PostgreSQL backend uses `tokio-postgres` rather than `sqlx`, since `sqlx`
//! also links SQLite and only resolves next to old rusqlite releases.
//!
//! ## Durability
//! SQLite runs in WAL mode with `synchronous=NORMAL`: a committed transaction survives the crash
//! or `SIGKILL` of any process (the WAL is in the OS page cache); set
//! [`StoreOptions::fsync`] for `synchronous=FULL` to also survive power loss, at about a
//! millisecond per commit on common disks. Commits are batched: the writer thread takes every
//! operation waiting in its channel (up to [`StoreOptions::max_batch`]) into one transaction.

pub mod advise;
pub mod merge;
mod records;
mod sqlite;
mod ticket;
mod ui;

pub use records::{
    ActionKind, ActionRecord, AttemptLog, AttemptRecord, CacheEntry, Cap, DEFAULT_DOMAIN,
    DEFAULT_PROJECT, Lease, NewRun, Page, Payload, QueueDepth, QueueEntry, QueuedAttempt, Reaped,
    RunFilter, RunId, RunRecord, RunStatus, RunSummary, TokenRecord, WorkerRecord, WriteOp, now_us,
};
pub use sqlite::{SCHEMA_VERSION, SqliteStore, StoreOptions};
pub use ticket::{Promise, Staged, Ticket};
pub use ui::{
    ActivityBuilder, ActivityRow, ReadModel, STATUSES, StatusCounts, UiAction, UiActionDetail,
    UiActivity, UiEnvUsage, UiGroup, UiLane, UiReader, UiRun, UiRunFilter, open_read_model,
};

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
    /// A database server (the PostgreSQL store's) failed or could not be reached.
    #[error("state database {what}: {source}")]
    Database {
        /// What was being done, and where (server and schema).
        what: String,
        /// The underlying error.
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    /// There is no weir state at the given directory.
    #[error(
        "no weir state in {0} (nothing has run there yet; pass --state-dir to point elsewhere)"
    )]
    NoState(String),
    /// The state directory is a file (or something else that is not a directory).
    #[error("state directory {0} is not a directory (pass --state-dir to point elsewhere)")]
    NotADirectory(String),
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
    /// A stored value could not be read, or the state directory could not be used.
    #[error("corrupt state: {0}")]
    Corrupt(String),
    /// The run is driven by another engine (it claimed the run after this one did, or is
    /// alive): this engine's writes for it are refused.
    #[error(
        "run {run:?} is driven by {owner} (claim {epoch}); a second driver would run its actions twice. If that process is gone, `resume --force` takes the run over"
    )]
    RunOwned {
        /// Run name (or id when the name is not at hand).
        run: String,
        /// The owning engine instance.
        owner: String,
        /// Its claim's epoch.
        epoch: u64,
    },
    /// The backend does not keep this kind of state.
    #[error("this state store does not keep {what}: {why}")]
    Unsupported {
        /// What was asked for.
        what: &'static str,
        /// Why, and where to look instead.
        why: &'static str,
    },
}

/// How rows hold payloads and reuse, shared by the backends so that they store the same
/// values: a payload is either inline bytes or a reference `SIZE#HASH:PATH` (`SIZE:PATH` in
/// rows written before hashes were kept); the `cache_hit` column is `0` ran, [`REUSED_CACHE`]
/// (a cache hit) or [`REUSED_RECOVERED`] (recovered from an earlier run).
///
/// [`REUSED_CACHE`]: columns::REUSED_CACHE
/// [`REUSED_RECOVERED`]: columns::REUSED_RECOVERED
pub mod columns {
    pub use crate::sqlite::rows::{
        REUSED_CACHE, REUSED_RECOVERED, join as payload_from_columns, split as payload_to_columns,
    };
}

/// Result of store operations.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Opens (creating if needed) the state in `state_dir` with the backend for it (the embedded
/// SQLite store; cluster mode adds PostgreSQL).
pub fn open(
    state_dir: &std::path::Path,
    options: StoreOptions,
) -> Result<std::sync::Arc<dyn Store>> {
    Ok(std::sync::Arc::new(SqliteStore::open(state_dir, options)?))
}

/// Opens existing state for reading only: nothing is created or changed (no SQLite `-wal` or
/// `-shm` files either), and a state directory the user cannot write can be read; fails with
/// [`Error::NoState`] when there is none (see [`SqliteStore::open_read_only`]).
pub fn open_read_only(state_dir: &std::path::Path) -> Result<std::sync::Arc<dyn Store>> {
    Ok(std::sync::Arc::new(SqliteStore::open_read_only(state_dir)?))
}

/// The refusal of a backend that keeps no attempt logs.
fn attempt_logs_unsupported() -> Error {
    Error::Unsupported {
        what: "attempt logs",
        why: "only cluster mode (`weir serve`, on PostgreSQL) records what attempts printed; the embedded engine's workers keep theirs in <state-dir>/workers/ (see `get logs`)",
    }
}

/// The refusal of a backend that keeps no access tokens.
fn tokens_unsupported() -> Error {
    Error::Unsupported {
        what: "access tokens",
        why: "only cluster mode (`weir serve`, on PostgreSQL) has access tokens; the embedded engine is reached by no one but its own processes",
    }
}

/// The future of a read.
pub type StoreFuture<'a, T> = futures::future::BoxFuture<'a, Result<T>>;

/// A successful claim of a run: this owner drives it under this epoch.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Claim {
    /// The run.
    pub run: RunId,
    /// The owner id.
    pub owner: String,
    /// The claim's epoch (1 for the creating engine, +1 per takeover).
    pub epoch: u64,
}

/// What the engine, the CLI and the UI need from a state backend.
///
/// Writes are applied in the order they are queued. A write of a run this store instance has
/// claimed ([`Store::create_run`], [`Store::claim_run`]) commits only while that claim is the
/// run's newest: once another owner took the run over, its writes are refused with
/// [`Error::RunOwned`] (reported on the tickets) and change nothing.
///
/// Reads see every write whose ticket has resolved; [`Store::sync`] makes a read see every
/// write queued before it.
pub trait Store: Send + Sync + 'static {
    /// Queues a write; it commits with a later awaited write or after a short hold.
    fn write(&self, op: WriteOp);
    /// Queues a write and returns the ticket of the commit that holds it.
    fn commit(&self, op: WriteOp) -> Ticket;
    /// A ticket that resolves once every write queued before it is committed.
    fn sync(&self) -> Ticket;
    /// Queues a write whose commit may be seen before it is on disk: [`Staged::visible`]
    /// resolves once readers see it, [`Staged::durable`] once it would survive a crash of the
    /// database. Whoever acts on what they saw early writes only after it, so a crash can undo
    /// both but never keep the later write without the earlier one. By default (stores whose
    /// commits are durable when seen) both resolve with the one commit.
    fn commit_staged(&self, op: WriteOp) -> Staged {
        Staged {
            visible: self.commit(op),
            durable: Ticket::ready(Ok(())),
        }
    }
    /// Commits what is queued and stops writing: later writes fail with
    /// [`Error::WriterGone`]. Leaves the state complete for the next process.
    fn close(&self) -> Result<()>;
    /// Creates a run, its root action and this owner's claim (epoch 1); fails with
    /// [`Error::RunExists`] if the name is taken (and then writes nothing).
    fn create_run(&self, run: NewRun) -> StoreFuture<'_, (RunRecord, Claim)>;
    /// Takes a run over: succeeds only if the run's claim is still `seen_epoch` (compare and
    /// set), else [`Error::RunOwned`] naming the owner that got there first.
    fn claim_run(&self, run: RunId, owner: String, seen_epoch: u64) -> StoreFuture<'_, Claim>;
    /// A run by id ([`Error::UnknownRun`] naming the id when there is none).
    fn run(&self, id: RunId) -> StoreFuture<'_, RunRecord>;
    /// A run by name.
    fn run_by_name<'a>(&'a self, name: &'a str) -> StoreFuture<'a, RunRecord>;
    /// Runs, newest first.
    fn list_runs<'a>(&'a self, filter: &'a RunFilter) -> StoreFuture<'a, Vec<RunSummary>>;
    /// Actions of a run in creation order, paged.
    fn list_actions(&self, run: RunId, page: Page) -> StoreFuture<'_, Vec<ActionRecord>>;
    /// One action with its payloads.
    fn action(&self, run: RunId, id: weir_core::ActionId) -> StoreFuture<'_, Option<ActionRecord>>;
    /// [`Store::list_actions`] with each action's payloads (as [`Store::action`] has them).
    /// The default reads the page, then each action; a backend may do it at once.
    fn list_actions_with_payloads(
        &self,
        run: RunId,
        page: Page,
    ) -> StoreFuture<'_, Vec<ActionRecord>> {
        Box::pin(async move {
            let listed = self.list_actions(run, page).await?;
            let mut out = Vec::with_capacity(listed.len());
            for rec in listed {
                out.push(self.action(run, rec.id).await?.unwrap_or(rec));
            }
            Ok(out)
        })
    }
    /// Records what attempts printed (cluster workers send it with their completions). The log
    /// of an attempt already recorded (same run, action and lease: a completion delivered
    /// twice) is kept as it was. The default refuses with [`Error::Unsupported`]: the embedded
    /// engine's workers write their output to files of the state directory (`get logs`), not
    /// to the store.
    fn record_attempt_logs<'a>(&'a self, logs: &'a [AttemptLog]) -> StoreFuture<'a, ()> {
        let _ = logs;
        Box::pin(async { Err(attempt_logs_unsupported()) })
    }
    /// The recorded logs of an action's attempts, by attempt number then lease. The default
    /// refuses, as [`Store::record_attempt_logs`] does.
    fn attempt_logs(
        &self,
        run: RunId,
        action: weir_core::ActionId,
    ) -> StoreFuture<'_, Vec<AttemptLog>> {
        let _ = (run, action);
        Box::pin(async { Err(attempt_logs_unsupported()) })
    }
    /// Records a new access token. The default refuses with [`Error::Unsupported`], as
    /// every token method does: only a control plane's store keeps tokens.
    fn create_token<'a>(&'a self, token: &'a TokenRecord) -> StoreFuture<'a, ()> {
        let _ = token;
        Box::pin(async { Err(tokens_unsupported()) })
    }
    /// The token whose hash is `hash`, if it exists (was made and not revoked).
    fn token<'a>(&'a self, hash: &'a str) -> StoreFuture<'a, Option<TokenRecord>> {
        let _ = hash;
        Box::pin(async { Err(tokens_unsupported()) })
    }
    /// Every token, oldest first.
    fn list_tokens(&self) -> StoreFuture<'_, Vec<TokenRecord>> {
        Box::pin(async { Err(tokens_unsupported()) })
    }
    /// Deletes the tokens whose hash starts with `prefix`; returns how many.
    fn revoke_tokens<'a>(&'a self, prefix: &'a str) -> StoreFuture<'a, u64> {
        let _ = prefix;
        Box::pin(async { Err(tokens_unsupported()) })
    }
    /// Which of `ids` (actions of `run`) have ended (succeeded, failed or cancelled).
    fn ended_among<'a>(
        &'a self,
        run: RunId,
        ids: &'a [weir_core::ActionId],
    ) -> StoreFuture<'a, Vec<weir_core::ActionId>>;
    /// Failed attempts of one action, oldest first.
    fn failed_attempts(
        &self,
        run: RunId,
        id: weir_core::ActionId,
    ) -> StoreFuture<'_, Vec<AttemptRecord>>;
    /// The cache entry for a key: any project/domain when `scope` is `None`, else only that
    /// project and domain's.
    fn cache_lookup<'a>(
        &'a self,
        key: &'a str,
        scope: Option<(&'a str, &'a str)>,
    ) -> StoreFuture<'a, Option<CacheEntry>>;
    /// Cache entries, newest first, optionally of one task, optionally of one project.
    fn list_cache<'a>(
        &'a self,
        task: Option<&'a str>,
        project: Option<&'a str>,
        limit: u32,
    ) -> StoreFuture<'a, Vec<CacheEntry>>;
    /// Deletes cache entries (of one task, or all); returns how many.
    fn clear_cache<'a>(&'a self, task: Option<&'a str>) -> StoreFuture<'a, u64>;
    /// A store-wide setting (e.g. the object store URL payloads go to).
    fn setting<'a>(&'a self, key: &'a str) -> StoreFuture<'a, Option<String>>;
    /// Sets a store-wide setting (committed before it returns).
    fn set_setting<'a>(&'a self, key: &'a str, value: &'a str) -> StoreFuture<'a, ()>;

    // The work queue of worker processes (SPEC §3): leases with fencing tokens, heartbeats,
    // the reaper. Each operation is one transaction.

    /// Puts an attempt in its environment's queue (replacing any entry of the same action,
    /// and so its lease). `now` is when it may be leased: an attempt queued for later (a
    /// retry's backoff) is not leased before then.
    fn enqueue(&self, attempt: QueuedAttempt, now: i64) -> StoreFuture<'_, ()>;
    /// Leases up to `max` queued attempts of `env` due by `now` to `worker`, oldest first,
    /// until `now + ttl_us`. An attempt is never leased to two workers at once.
    fn lease<'a>(
        &'a self,
        worker: &'a str,
        env: &'a str,
        max: u32,
        now: i64,
        ttl_us: i64,
    ) -> StoreFuture<'a, Vec<Lease>>;
    /// Puts back in the queue (at their place) the attempts leased to `worker` under a lease
    /// id above `received`: granted, but the answer never reached the worker (its leases
    /// come one request at a time, and lease ids only grow). Returns how many.
    fn release_unreceived<'a>(&'a self, worker: &'a str, received: u64) -> StoreFuture<'a, u64>;
    /// [`Store::lease`], each leased attempt with its action's row and inputs (`None` when the
    /// row is missing); first, with `received`, [`Store::release_unreceived`]. With `cap`, no
    /// more than leaves the cap's queues at most its limit leased. The default does it step by
    /// step (with a cap, two concurrent calls may together pass the limit); a backend may do
    /// it at once.
    fn lease_with_actions<'a>(
        &'a self,
        worker: &'a str,
        env: &'a str,
        max: u32,
        (now, ttl_us): (i64, i64),
        received: Option<u64>,
        cap: Option<&'a Cap>,
    ) -> StoreFuture<'a, Vec<(Lease, Option<ActionRecord>)>> {
        Box::pin(async move {
            if let Some(received) = received {
                self.release_unreceived(worker, received).await?;
            }
            let mut max = max;
            if let Some(cap) = cap {
                let leased: u64 = self
                    .queue_metrics()
                    .await?
                    .iter()
                    .filter(|q| q.queue.starts_with(&cap.group))
                    .map(|q| q.leased)
                    .sum();
                max = max.min((cap.limit as u64).saturating_sub(leased) as u32);
                if max == 0 {
                    return Ok(Vec::new());
                }
            }
            let leases = self.lease(worker, env, max, now, ttl_us).await?;
            let mut out = Vec::with_capacity(leases.len());
            for l in leases {
                let rec = self.action(l.attempt.run, l.attempt.action).await?;
                out.push((l, rec));
            }
            Ok(out)
        })
    }
    /// The queue entries of several actions (those queued or leased), in no order. The
    /// default reads them one by one; a backend may do it at once.
    fn queue_entries<'a>(
        &'a self,
        keys: &'a [(RunId, weir_core::ActionId)],
    ) -> StoreFuture<'a, Vec<QueueEntry>> {
        Box::pin(async move {
            let mut out = Vec::new();
            for (run, action) in keys {
                out.extend(self.queue_entry(*run, *action).await?);
            }
            Ok(out)
        })
    }
    /// A worker's sign of life: records it and extends all its leases to `now + ttl_us`;
    /// returns how many it holds.
    fn heartbeat<'a>(&'a self, worker: &'a str, now: i64, ttl_us: i64) -> StoreFuture<'a, u64>;
    /// Completes a leased attempt: removes it from the queue and returns it, or `None` when
    /// the lease is not current or not this worker's (fenced off: nothing changes).
    fn complete<'a>(
        &'a self,
        lease: u64,
        worker: &'a str,
    ) -> StoreFuture<'a, Option<QueuedAttempt>>;
    /// The queue entry of an action, if it is queued or leased.
    fn queue_entry(
        &self,
        run: RunId,
        action: weir_core::ActionId,
    ) -> StoreFuture<'_, Option<QueueEntry>>;
    /// Attempts waiting and leased, per queue (queues holding none are left out).
    fn queue_metrics(&self) -> StoreFuture<'_, Vec<QueueDepth>>;
    /// Requeues the attempts whose leases expired by `now` (a system retry each); those
    /// requeued more than `max_system_retries` times leave the queue and are reported.
    fn reap(&self, now: i64, max_system_retries: u32) -> StoreFuture<'_, Reaped>;
    /// Records a worker (or refreshes its record).
    fn register_worker(&self, worker: WorkerRecord) -> StoreFuture<'_, ()>;
    /// Registered workers, oldest first.
    fn workers(&self) -> StoreFuture<'_, Vec<WorkerRecord>>;
}
