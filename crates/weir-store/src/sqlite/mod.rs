//! The embedded SQLite backend: one writer thread with group commit (`writer`), one read
//! connection. Reads run on the caller's thread when polled: each is a short indexed query,
//! cheaper than a hop to a blocking pool (a PostgreSQL backend awaits its connection instead).

mod fence;
mod queue;
pub(crate) mod readonly;
mod reads;
pub(crate) mod rows;
mod writer;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::thread;

use parking_lot::{MappedMutexGuard, Mutex, MutexGuard};
use rusqlite::{Connection, OptionalExtension};

use readonly::ReadConn;
pub(crate) use rows::{ACTION_COLUMNS, action_record_at, join};
use writer::{Claims, Cmd, Writer};

use weir_core::ActionId;

use crate::{
    ActionRecord, AttemptRecord, CacheEntry, Claim, Error, Lease, NewRun, Page, QueuedAttempt,
    Reaped, Result, RunFilter, RunId, RunRecord, RunSummary, Store, StoreFuture, Ticket,
    WorkerRecord, WriteOp,
};

/// Newest schema this build reads and writes.
pub const SCHEMA_VERSION: i64 = 3;

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS meta(key TEXT PRIMARY KEY, value INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS runs(
  id INTEGER PRIMARY KEY, name TEXT NOT NULL UNIQUE, task TEXT NOT NULL, status TEXT NOT NULL,
  created_at INTEGER NOT NULL, ended_at INTEGER, inputs BLOB, inputs_ref TEXT, context TEXT NOT NULL,
  output BLOB, output_ref TEXT, error TEXT, owner TEXT NOT NULL, epoch INTEGER NOT NULL DEFAULT 1,
  owner_seen_at INTEGER);
CREATE TABLE IF NOT EXISTS actions(
  seq INTEGER PRIMARY KEY, run INTEGER NOT NULL, id INTEGER NOT NULL, parent INTEGER NOT NULL,
  task TEXT NOT NULL, grp TEXT, kind INTEGER NOT NULL, status INTEGER NOT NULL,
  attempts INTEGER NOT NULL DEFAULT 0, queued_at INTEGER NOT NULL, started_at INTEGER,
  ended_at INTEGER, cache_hit INTEGER NOT NULL DEFAULT 0, inputs BLOB, inputs_ref TEXT,
  output BLOB, output_ref TEXT, error TEXT, phases BLOB);
CREATE UNIQUE INDEX IF NOT EXISTS actions_by_id ON actions(run, id);
-- Children of a parent in creation order (index entries end with the rowid `seq`).
CREATE INDEX IF NOT EXISTS actions_by_parent ON actions(run, parent);
CREATE TABLE IF NOT EXISTS cache(
  key TEXT NOT NULL, project TEXT NOT NULL, domain TEXT NOT NULL, task TEXT NOT NULL,
  version TEXT NOT NULL, output BLOB, output_ref TEXT, created_at INTEGER NOT NULL,
  PRIMARY KEY(key, project, domain)) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS cache_by_task ON cache(task);
CREATE TABLE IF NOT EXISTS attempts(
  run INTEGER NOT NULL, action INTEGER NOT NULL, attempt INTEGER NOT NULL,
  started_at INTEGER NOT NULL, ended_at INTEGER NOT NULL, error TEXT NOT NULL, phases BLOB,
  PRIMARY KEY(run, action, attempt)) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS settings(key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS queue(
  run INTEGER NOT NULL, action INTEGER NOT NULL, attempt INTEGER NOT NULL, env TEXT NOT NULL,
  task TEXT NOT NULL, enqueued_at INTEGER NOT NULL, lease INTEGER, worker TEXT,
  expires_at INTEGER, system_retries INTEGER NOT NULL DEFAULT 0,
  PRIMARY KEY(run, action));
CREATE INDEX IF NOT EXISTS queue_ready ON queue(env, lease, enqueued_at);
CREATE INDEX IF NOT EXISTS queue_expiry ON queue(expires_at) WHERE lease IS NOT NULL;
CREATE TABLE IF NOT EXISTS workers(
  id TEXT PRIMARY KEY, env TEXT NOT NULL, version TEXT NOT NULL, registered_at INTEGER NOT NULL,
  seen_at INTEGER NOT NULL);
";

/// From schema 1 (owner as a pid) to 2 (owner id + epoch, settings).
const MIGRATE_1_TO_2: &str = "
ALTER TABLE runs ADD COLUMN owner TEXT NOT NULL DEFAULT '';
ALTER TABLE runs ADD COLUMN epoch INTEGER NOT NULL DEFAULT 1;
ALTER TABLE runs ADD COLUMN owner_seen_at INTEGER;
UPDATE runs SET owner = 'pid ' || owner_pid;
ALTER TABLE runs DROP COLUMN owner_pid;
CREATE TABLE IF NOT EXISTS settings(key TEXT PRIMARY KEY, value TEXT NOT NULL);
UPDATE meta SET value = 2 WHERE key = 'schema_version';
";

/// Options of the SQLite store.
#[derive(Clone, Debug)]
pub struct StoreOptions {
    /// `synchronous=FULL` (survives power loss) instead of `NORMAL` (survives process crashes).
    /// Default false.
    pub fsync: bool,
    /// Most writes in one transaction. Default 20 000.
    pub max_batch: usize,
}

impl Default for StoreOptions {
    fn default() -> Self {
        StoreOptions {
            fsync: false,
            max_batch: 20_000,
        }
    }
}

/// The embedded SQLite store (`<state-dir>/state.db`).
pub struct SqliteStore {
    path: PathBuf,
    queue: Option<Arc<Writer>>,
    reader: Mutex<Reader>,
    writer: Mutex<Option<thread::JoinHandle<()>>>,
    claims: Claims,
}

impl std::fmt::Debug for SqliteStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SqliteStore")
            .field("path", &self.path)
            .finish()
    }
}

/// The connection reads (and the claim and queue transactions) run on.
enum Reader {
    /// A writing store's own connection.
    Write(Connection),
    /// A read-only store's connection, opened again when it no longer sees the current state.
    Read(ReadConn),
}

fn sql_err(path: &Path) -> impl Fn(rusqlite::Error) -> Error + use<> {
    let path = path.display().to_string();
    move |source| Error::Sqlite {
        path: path.clone(),
        source,
    }
}

impl SqliteStore {
    /// The database file inside a state directory.
    pub fn db_path(state_dir: &Path) -> PathBuf {
        state_dir.join("state.db")
    }

    /// Opens (creating if needed) the store in `state_dir`.
    pub fn open(state_dir: &Path, options: StoreOptions) -> Result<SqliteStore> {
        if state_dir.exists() && !state_dir.is_dir() {
            return Err(Error::NotADirectory(state_dir.display().to_string()));
        }
        std::fs::create_dir_all(state_dir)
            .map_err(|e| Error::Corrupt(format!("cannot create {}: {e}", state_dir.display())))?;
        let path = Self::db_path(state_dir);
        let e = sql_err(&path);
        match std::fs::metadata(&path) {
            Ok(m) if m.len() == 0 => return Err(readonly::empty_database(&path)),
            Ok(_) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                create_database(&path, options.fsync)?
            }
            Err(_) => {} // opening it says what is wrong
        }
        let conn = Connection::open(&path).map_err(&e)?;
        configure(&conn, options.fsync).map_err(&e)?;
        if check_version(&conn, &path)? == Some(1) {
            conn.execute_batch(&format!("BEGIN; {MIGRATE_1_TO_2} COMMIT;"))
                .map_err(&e)?;
        }
        conn.execute_batch(SCHEMA).map_err(&e)?;
        // From schema 2 to 3: each action's and each failed attempt's phase timings (SPEC §9.3).
        for table in ["actions", "attempts"] {
            let has_phases: i64 = conn
                .query_row(
                    &format!(
                        "SELECT count(*) FROM pragma_table_info('{table}') WHERE name = 'phases'"
                    ),
                    [],
                    |r| r.get(0),
                )
                .map_err(&e)?;
            if has_phases == 0 {
                conn.execute_batch(&format!("ALTER TABLE {table} ADD COLUMN phases BLOB;"))
                    .map_err(&e)?;
            }
        }
        conn.execute(
            "UPDATE meta SET value = ?1 WHERE key = 'schema_version' AND value < ?1",
            [SCHEMA_VERSION],
        )
        .map_err(&e)?;
        conn.execute(
            "INSERT OR IGNORE INTO meta(key, value) VALUES('schema_version', ?1)",
            [SCHEMA_VERSION],
        )
        .map_err(&e)?;
        // The first commit after a store opens creates the WAL (a closed store leaves none) and
        // syncs its header and the directory: half a millisecond here. Made now, it is part of
        // opening rather than of the first run. The row changes and changes back, so the file's
        // content stays as it was (a refused command changes nothing: tests/cli.rs).
        conn.execute_batch(
            "BEGIN IMMEDIATE;
             UPDATE meta SET value = value + 1 WHERE key = 'schema_version';
             UPDATE meta SET value = value - 1 WHERE key = 'schema_version';
             COMMIT;",
        )
        .map_err(&e)?;
        // Its own commits (runs created or claimed) never checkpoint either: that fsyncs, on
        // the caller's thread. The background committer checkpoints.
        conn.pragma_update(None, "wal_autocheckpoint", 0)
            .map_err(&e)?;
        let writer_conn = Connection::open(&path).map_err(&e)?;
        configure(&writer_conn, options.fsync).map_err(&e)?;
        // Commits never checkpoint: the background committer does, on a connection of its own.
        writer_conn
            .pragma_update(None, "wal_autocheckpoint", 0)
            .map_err(&e)?;
        let checkpointer = Connection::open(&path).map_err(&e)?;
        configure(&checkpointer, options.fsync).map_err(&e)?;
        // It only copies WAL frames: no page cache of its own worth keeping.
        checkpointer
            .pragma_update(None, "cache_size", -1_000)
            .map_err(&e)?;
        let claims = Claims::default();
        let queue = Arc::new(Writer::new(
            writer_conn,
            checkpointer,
            path.clone(),
            options.max_batch,
            claims.clone(),
            !options.fsync,
        ));
        let background = queue.clone();
        let handle = thread::Builder::new()
            .name("weir-store-writer".into())
            .spawn(move || background.background())
            .map_err(|e| Error::Corrupt(format!("cannot start writer thread: {e}")))?;
        Ok(SqliteStore {
            path,
            queue: Some(queue),
            reader: Mutex::new(Reader::Write(conn)),
            writer: Mutex::new(Some(handle)),
            claims,
        })
    }

    /// Opens an existing store for reading only; fails with [`Error::NoState`] if there is none,
    /// [`Error::NotADirectory`] where `state_dir` is a file, [`Error::Corrupt`] for an empty
    /// database or one without weir's schema, [`Error::NewerSchema`] for a newer one. Nothing in
    /// the directory is created or changed (no `-wal` or `-shm` either), and a directory the
    /// user cannot write works (see `readonly`).
    pub fn open_read_only(state_dir: &Path) -> Result<SqliteStore> {
        let path = readonly::existing_db(state_dir)?;
        let e = sql_err(&path);
        let conn = ReadConn::open(&path).map_err(&e)?;
        readonly::require_current(readonly::schema_version(conn.conn(), &path)?, &path)?;
        Ok(SqliteStore {
            path,
            queue: None,
            reader: Mutex::new(Reader::Read(conn)),
            writer: Mutex::new(None),
            claims: Claims::default(),
        })
    }

    /// The read connection; a read-only store's is opened again first when a writer started
    /// or the database file changed since it was opened.
    /// The connection for a write that answers with what it wrote (a run created or claimed):
    /// the writer's, or the reader's in a store opened read-only (which refuses it).
    pub(super) fn write_conn(&self) -> ConnGuard<'_> {
        match &self.queue {
            Some(queue) => ConnGuard::Writer(queue.conn()),
            None => ConnGuard::Reader(self.reader()),
        }
    }

    pub(super) fn reader(&self) -> MappedMutexGuard<'_, Connection> {
        let mut guard = self.reader.lock();
        if let Reader::Read(conn) = &mut *guard
            && !conn.is_current(&self.path)
        {
            match ReadConn::open(&self.path) {
                Ok(fresh) => *conn = fresh,
                // The one it has still reads what it saw; the next read tries again.
                Err(e) => {
                    tracing::warn!(error = %e, path = %self.path.display(), "cannot reopen the state database")
                }
            }
        }
        MutexGuard::map(guard, |r| match r {
            Reader::Write(conn) => conn,
            Reader::Read(conn) => conn.conn_mut(),
        })
    }

    /// The database file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Commits what is queued and stops the writer thread.
    pub fn close(&self) -> Result<()> {
        let Some(queue) = &self.queue else {
            return Ok(()); // read-only: nothing to commit
        };
        let flushed = self
            .sync()
            .wait()
            .map_err(|e| Error::Corrupt(e.to_string()));
        queue.close();
        if let Some(h) = self.writer.lock().take() {
            let _ = h.join();
        }
        // Everything into the database file and an empty WAL, so that nothing is left for the
        // next process to fold in (whether or not this store's connections are ever dropped).
        let checkpointed = self
            .reader()
            .query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |_| Ok(()))
            .map_err(sql_err(&self.path));
        flushed.and(checkpointed)
    }

    #[allow(clippy::result_large_err)] // the command is handed back to run its ack
    fn send(&self, cmd: Cmd) -> std::result::Result<(), Cmd> {
        match &self.queue {
            Some(queue) => queue.push(cmd),
            None => Err(cmd),
        }
    }
}

impl Drop for SqliteStore {
    fn drop(&mut self) {
        let _ = self.close();
    }
}

/// Page size of a new database. A commit writes every page it changed to the WAL, and a typical
/// commit (an action's row and its two index entries) changes a few rows on a few pages: with
/// 1 KiB pages it writes a quarter of the bytes it writes with SQLite's default 4 KiB (measured,
/// release, side by side: a sequential chain's hop 26–34 → 20–27 µs; 512 B gains nothing more).
/// The price: a run of a million actions, whose indexes then have four times the pages, takes
/// 10–20% longer (9.9–11.4 s against 8.5–10.5 s). Databases created before keep their page size.
const PAGE_SIZE: i64 = 1024;

/// Creates the database at `path` with its schema under a temporary name and links it into
/// place, so that a `state.db` always holds weir's schema: a process killed while creating it
/// leaves no empty database behind, and an engine or reader starting at the same moment never
/// sees one. When another process links its own first, that one is used.
fn create_database(path: &Path, fsync: bool) -> Result<()> {
    static SEQ: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let tmp = path.with_file_name(format!(
        "state.db.creating-{}-{}",
        std::process::id(),
        SEQ.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
    ));
    let built = (|| {
        let conn = Connection::open(&tmp)?;
        // Set before the first write (and before WAL mode), so it holds for the file's life.
        conn.pragma_update(None, "page_size", PAGE_SIZE)?;
        configure(&conn, fsync)?;
        conn.execute_batch(SCHEMA)?;
        conn.execute(
            "INSERT OR IGNORE INTO meta(key, value) VALUES('schema_version', ?1)",
            [SCHEMA_VERSION],
        )?;
        // The last connection checkpoints into the file (synced) and removes its `-wal`.
        conn.close().map_err(|(_, e)| e)
    })();
    let linked = built.map_err(sql_err(path)).and_then(|()| {
        match std::fs::hard_link(&tmp, path) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => Ok(()),
            // A file system without hard links: a rename, unless another process was faster.
            Err(_) if !path.exists() => std::fs::rename(&tmp, path)
                .map_err(|e| Error::Corrupt(format!("cannot create {}: {e}", path.display()))),
            Err(_) => Ok(()),
        }
    });
    for suffix in ["", "-wal", "-shm"] {
        let mut name = tmp.as_os_str().to_os_string();
        name.push(suffix);
        let _ = std::fs::remove_file(name);
    }
    linked
}

/// A locked connection: the writer's or the reader's.
pub(super) enum ConnGuard<'a> {
    Writer(parking_lot::MutexGuard<'a, Connection>),
    Reader(MappedMutexGuard<'a, Connection>),
}

impl std::ops::Deref for ConnGuard<'_> {
    type Target = Connection;
    fn deref(&self) -> &Connection {
        match self {
            ConnGuard::Writer(c) => c,
            ConnGuard::Reader(c) => c,
        }
    }
}

fn configure(conn: &Connection, fsync: bool) -> rusqlite::Result<()> {
    conn.busy_timeout(std::time::Duration::from_secs(10))?;
    conn.pragma_update(None, "journal_mode", "WAL")?;
    conn.pragma_update(None, "synchronous", if fsync { "FULL" } else { "NORMAL" })?;
    conn.pragma_update(None, "cache_size", -64_000)?;
    Ok(())
}

/// The schema version found (`None` for a new database); refuses a newer one.
fn check_version(conn: &Connection, path: &Path) -> Result<Option<i64>> {
    let has_meta: bool = conn
        .query_row(
            "SELECT count(*) FROM sqlite_master WHERE name='meta'",
            [],
            |r| r.get::<_, i64>(0),
        )
        .map_err(sql_err(path))?
        > 0;
    if !has_meta {
        return Ok(None);
    }
    let found: Option<i64> = conn
        .query_row(
            "SELECT value FROM meta WHERE key='schema_version'",
            [],
            |r| r.get(0),
        )
        .optional()
        .map_err(sql_err(path))?;
    match found {
        Some(v) if v > SCHEMA_VERSION => Err(Error::NewerSchema {
            path: path.display().to_string(),
            found: v,
            supported: SCHEMA_VERSION,
        }),
        v => Ok(v),
    }
}
impl SqliteStore {
    fn queue(&self, op: WriteOp, promise: Option<crate::Promise>) {
        if let Err(Cmd::Write(_, Some(promise))) = self.send(Cmd::Write(op, promise)) {
            promise.resolve(Err(Arc::new(Error::WriterGone)));
        }
    }

    fn claimed(&self, run: crate::RunId, epoch: u64) {
        self.claims.lock().insert(run, epoch);
    }
}

impl Store for SqliteStore {
    fn close(&self) -> Result<()> {
        SqliteStore::close(self)
    }

    fn write(&self, op: WriteOp) {
        self.queue(op, None);
    }

    fn commit(&self, op: WriteOp) -> Ticket {
        let (ticket, promise) = Ticket::new();
        self.queue(op, Some(promise));
        ticket
    }

    fn sync(&self) -> Ticket {
        let (ticket, promise) = Ticket::new();
        match self.send(Cmd::Sync(promise)) {
            Ok(()) => ticket,
            // Read-only or closed: nothing is queued.
            Err(_) => Ticket::ready(Ok(())),
        }
    }

    fn create_run(&self, run: NewRun) -> StoreFuture<'_, (RunRecord, Claim)> {
        let result = self.create_run_now(&run).map(|rec| {
            self.claimed(rec.id, rec.epoch);
            let claim = Claim {
                run: rec.id,
                owner: run.owner.clone(),
                epoch: rec.epoch,
            };
            (rec, claim)
        });
        Box::pin(std::future::ready(result))
    }

    fn claim_run(&self, run: RunId, owner: String, seen_epoch: u64) -> StoreFuture<'_, Claim> {
        let result = self.claim_now(run, &owner, seen_epoch).map(|epoch| {
            self.claimed(run, epoch);
            Claim { run, owner, epoch }
        });
        Box::pin(std::future::ready(result))
    }

    fn run(&self, id: RunId) -> StoreFuture<'_, RunRecord> {
        Box::pin(std::future::ready(self.run_now(id)))
    }

    fn run_by_name<'a>(&'a self, name: &'a str) -> StoreFuture<'a, RunRecord> {
        Box::pin(std::future::ready(self.run_by_name_now(name)))
    }

    fn list_runs<'a>(&'a self, filter: &'a RunFilter) -> StoreFuture<'a, Vec<RunSummary>> {
        Box::pin(std::future::ready(self.list_runs_now(filter)))
    }

    fn list_actions(&self, run: RunId, page: Page) -> StoreFuture<'_, Vec<ActionRecord>> {
        Box::pin(std::future::ready(self.list_actions_now(run, page)))
    }

    fn action(&self, run: RunId, id: ActionId) -> StoreFuture<'_, Option<ActionRecord>> {
        Box::pin(std::future::ready(self.action_now(run, id)))
    }

    fn ended_among<'a>(
        &'a self,
        run: RunId,
        ids: &'a [ActionId],
    ) -> StoreFuture<'a, Vec<ActionId>> {
        Box::pin(std::future::ready(self.ended_among_now(run, ids)))
    }

    fn failed_attempts(&self, run: RunId, id: ActionId) -> StoreFuture<'_, Vec<AttemptRecord>> {
        Box::pin(std::future::ready(self.failed_attempts_now(run, id)))
    }

    fn cache_lookup<'a>(
        &'a self,
        key: &'a str,
        scope: Option<(&'a str, &'a str)>,
    ) -> StoreFuture<'a, Option<CacheEntry>> {
        Box::pin(std::future::ready(self.cache_lookup_now(key, scope)))
    }

    fn list_cache<'a>(
        &'a self,
        task: Option<&'a str>,
        project: Option<&'a str>,
        limit: u32,
    ) -> StoreFuture<'a, Vec<CacheEntry>> {
        Box::pin(std::future::ready(
            self.list_cache_now(task, project, limit),
        ))
    }

    fn clear_cache<'a>(&'a self, task: Option<&'a str>) -> StoreFuture<'a, u64> {
        Box::pin(std::future::ready(self.clear_cache_now(task)))
    }

    fn setting<'a>(&'a self, key: &'a str) -> StoreFuture<'a, Option<String>> {
        Box::pin(std::future::ready(self.setting_now(key)))
    }

    fn set_setting<'a>(&'a self, key: &'a str, value: &'a str) -> StoreFuture<'a, ()> {
        Box::pin(std::future::ready(self.set_setting_now(key, value)))
    }

    fn enqueue(&self, attempt: QueuedAttempt, now: i64) -> StoreFuture<'_, ()> {
        Box::pin(std::future::ready(self.enqueue_now(&attempt, now)))
    }

    fn lease<'a>(
        &'a self,
        worker: &'a str,
        env: &'a str,
        max: u32,
        now: i64,
        ttl_us: i64,
    ) -> StoreFuture<'a, Vec<Lease>> {
        Box::pin(std::future::ready(
            self.lease_now(worker, env, max, now, ttl_us),
        ))
    }

    fn heartbeat<'a>(&'a self, worker: &'a str, now: i64, ttl_us: i64) -> StoreFuture<'a, u64> {
        Box::pin(std::future::ready(self.heartbeat_now(worker, now, ttl_us)))
    }

    fn complete<'a>(
        &'a self,
        lease: u64,
        worker: &'a str,
    ) -> StoreFuture<'a, Option<QueuedAttempt>> {
        Box::pin(std::future::ready(self.complete_now(lease, worker)))
    }

    fn queue_entry(
        &self,
        run: RunId,
        action: ActionId,
    ) -> StoreFuture<'_, Option<crate::QueueEntry>> {
        Box::pin(std::future::ready(self.queue_entry_now(run, action)))
    }

    fn queue_metrics(&self) -> StoreFuture<'_, Vec<crate::QueueDepth>> {
        Box::pin(std::future::ready(self.queue_metrics_now()))
    }

    fn release_unreceived<'a>(&'a self, worker: &'a str, received: u64) -> StoreFuture<'a, u64> {
        Box::pin(std::future::ready(
            self.release_unreceived_now(worker, received),
        ))
    }

    fn reap(&self, now: i64, max_system_retries: u32) -> StoreFuture<'_, Reaped> {
        Box::pin(std::future::ready(self.reap_now(now, max_system_retries)))
    }

    fn register_worker(&self, worker: WorkerRecord) -> StoreFuture<'_, ()> {
        Box::pin(std::future::ready(self.register_worker_now(&worker)))
    }

    fn workers(&self) -> StoreFuture<'_, Vec<WorkerRecord>> {
        Box::pin(std::future::ready(self.workers_now()))
    }
}
