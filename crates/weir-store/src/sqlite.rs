//! The embedded SQLite backend: one writer thread with group commit, one read connection.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::mpsc;
use std::thread;

use parking_lot::Mutex;
use rusqlite::{Connection, OpenFlags, OptionalExtension, params};
use weir_core::{ActionId, ActionStatus, Failure};

use crate::{
    Ack, ActionKind, ActionRecord, AttemptRecord, CacheEntry, Error, NewRun, Page, Payload, Result,
    RunFilter, RunId, RunRecord, RunStatus, RunSummary, Store, WriteOp, now_us,
};

/// Newest schema this build reads and writes.
pub const SCHEMA_VERSION: i64 = 1;

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS meta(key TEXT PRIMARY KEY, value INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS runs(
  id INTEGER PRIMARY KEY, name TEXT NOT NULL UNIQUE, task TEXT NOT NULL, status TEXT NOT NULL,
  created_at INTEGER NOT NULL, ended_at INTEGER, inputs BLOB, inputs_ref TEXT, context TEXT NOT NULL,
  output BLOB, output_ref TEXT, error TEXT, owner_pid INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS actions(
  seq INTEGER PRIMARY KEY, run INTEGER NOT NULL, id INTEGER NOT NULL, parent INTEGER NOT NULL,
  task TEXT NOT NULL, grp TEXT, kind INTEGER NOT NULL, status INTEGER NOT NULL,
  attempts INTEGER NOT NULL DEFAULT 0, queued_at INTEGER NOT NULL, started_at INTEGER,
  ended_at INTEGER, cache_hit INTEGER NOT NULL DEFAULT 0, inputs BLOB, inputs_ref TEXT,
  output BLOB, output_ref TEXT, error TEXT);
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
  started_at INTEGER NOT NULL, ended_at INTEGER NOT NULL, error TEXT NOT NULL,
  PRIMARY KEY(run, action, attempt)) WITHOUT ROWID;
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

enum Cmd {
    Write(WriteOp, Option<Ack>),
    Flush(mpsc::Sender<Result<(), Arc<Error>>>),
}

/// The embedded SQLite store (`<state-dir>/state.db`).
pub struct SqliteStore {
    path: PathBuf,
    tx: Mutex<Option<mpsc::Sender<Cmd>>>,
    reader: Mutex<Connection>,
    writer: Mutex<Option<thread::JoinHandle<()>>>,
}

impl std::fmt::Debug for SqliteStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SqliteStore")
            .field("path", &self.path)
            .finish()
    }
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
        std::fs::create_dir_all(state_dir)
            .map_err(|e| Error::Corrupt(format!("cannot create {}: {e}", state_dir.display())))?;
        let path = Self::db_path(state_dir);
        let e = sql_err(&path);
        let conn = Connection::open(&path).map_err(&e)?;
        configure(&conn, options.fsync).map_err(&e)?;
        check_version(&conn, &path)?;
        conn.execute_batch(SCHEMA).map_err(&e)?;
        conn.execute(
            "INSERT OR IGNORE INTO meta(key, value) VALUES('schema_version', ?1)",
            [SCHEMA_VERSION],
        )
        .map_err(&e)?;
        let writer_conn = Connection::open(&path).map_err(&e)?;
        configure(&writer_conn, options.fsync).map_err(&e)?;
        let (tx, rx) = mpsc::channel();
        let wpath = path.clone();
        let handle = thread::Builder::new()
            .name("weir-store-writer".into())
            .spawn(move || writer_loop(writer_conn, wpath, rx, options.max_batch))
            .map_err(|e| Error::Corrupt(format!("cannot start writer thread: {e}")))?;
        Ok(SqliteStore {
            path,
            tx: Mutex::new(Some(tx)),
            reader: Mutex::new(conn),
            writer: Mutex::new(Some(handle)),
        })
    }

    /// Opens an existing store for reading only; fails with [`Error::NoState`] if there is none.
    /// Nothing in the directory is created or changed.
    pub fn open_read_only(state_dir: &Path) -> Result<SqliteStore> {
        let path = Self::db_path(state_dir);
        if !path.exists() {
            return Err(Error::NoState(state_dir.display().to_string()));
        }
        let e = sql_err(&path);
        let conn = Connection::open_with_flags(
            &path,
            OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX,
        )
        .map_err(&e)?;
        conn.busy_timeout(std::time::Duration::from_secs(10))
            .map_err(&e)?;
        check_version(&conn, &path)?;
        Ok(SqliteStore {
            path,
            tx: Mutex::new(None),
            reader: Mutex::new(conn),
            writer: Mutex::new(None),
        })
    }

    /// The database file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Commits what is queued and stops the writer thread.
    pub fn close(&self) -> Result<()> {
        let flushed = self.flush();
        self.tx.lock().take();
        if let Some(h) = self.writer.lock().take() {
            let _ = h.join();
        }
        flushed
    }

    #[allow(clippy::result_large_err)] // the command is handed back to run its ack
    fn send(&self, cmd: Cmd) -> std::result::Result<(), Cmd> {
        match self.tx.lock().as_ref() {
            Some(tx) => tx.send(cmd).map_err(|e| e.0),
            None => Err(cmd),
        }
    }
}

impl Drop for SqliteStore {
    fn drop(&mut self) {
        let _ = self.close();
    }
}

fn configure(conn: &Connection, fsync: bool) -> rusqlite::Result<()> {
    conn.busy_timeout(std::time::Duration::from_secs(10))?;
    conn.pragma_update(None, "journal_mode", "WAL")?;
    conn.pragma_update(None, "synchronous", if fsync { "FULL" } else { "NORMAL" })?;
    conn.pragma_update(None, "cache_size", -64_000)?;
    Ok(())
}

fn check_version(conn: &Connection, path: &Path) -> Result<()> {
    let has_meta: bool = conn
        .query_row(
            "SELECT count(*) FROM sqlite_master WHERE name='meta'",
            [],
            |r| r.get::<_, i64>(0),
        )
        .map_err(sql_err(path))?
        > 0;
    if !has_meta {
        return Ok(());
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
        _ => Ok(()),
    }
}

/// Waits for the next command. A chain of calls (each waiting on the previous commit) sends its
/// next write within microseconds of an acknowledgement, so the writer polls briefly before
/// parking its thread: a futex wake-up costs more than the commit itself.
fn next_command(rx: &mpsc::Receiver<Cmd>) -> Option<Cmd> {
    let spin_until = std::time::Instant::now() + std::time::Duration::from_micros(SPIN_MICROS);
    loop {
        match rx.try_recv() {
            Ok(cmd) => return Some(cmd),
            Err(mpsc::TryRecvError::Disconnected) => return None,
            Err(mpsc::TryRecvError::Empty) if std::time::Instant::now() < spin_until => {
                std::hint::spin_loop()
            }
            Err(mpsc::TryRecvError::Empty) => return rx.recv().ok(),
        }
    }
}

/// How long the writer polls for work before parking.
const SPIN_MICROS: u64 = 30;

/// Longest time a write nobody waits for is held back to share a commit.
const MAX_HOLD: std::time::Duration = std::time::Duration::from_millis(2);

impl Cmd {
    /// Whether someone waits for this command's commit.
    fn is_awaited(&self) -> bool {
        !matches!(self, Cmd::Write(_, None))
    }
}

fn writer_loop(mut conn: Connection, path: PathBuf, rx: mpsc::Receiver<Cmd>, max_batch: usize) {
    let mut batch: Vec<Cmd> = Vec::with_capacity(1024);
    while let Some(first) = next_command(&rx) {
        let mut awaited = first.is_awaited();
        batch.push(first);
        // Writes nobody waits for (an action queued or started) need no commit of their own:
        // hold them until a write that is waited for arrives (usually microseconds later: the
        // action's completion) or until `MAX_HOLD` passes. Their ordering is unchanged, and
        // nothing unacknowledged was promised to anyone.
        let hold_until = std::time::Instant::now() + MAX_HOLD;
        while batch.len() < max_batch {
            match rx.try_recv() {
                Ok(cmd) => {
                    awaited |= cmd.is_awaited();
                    batch.push(cmd);
                }
                Err(mpsc::TryRecvError::Disconnected) => break,
                Err(mpsc::TryRecvError::Empty) => {
                    let now = std::time::Instant::now();
                    if awaited || now >= hold_until {
                        break;
                    }
                    match rx.recv_timeout(hold_until - now) {
                        Ok(cmd) => {
                            awaited |= cmd.is_awaited();
                            batch.push(cmd);
                        }
                        Err(_) => break,
                    }
                }
            }
        }
        let result = apply_batch(&mut conn, &batch).map_err(|source| {
            Arc::new(Error::Sqlite {
                path: path.display().to_string(),
                source,
            })
        });
        if let Err(e) = &result {
            tracing::error!(error = %e, ops = batch.len(), "state commit failed");
        }
        for cmd in batch.drain(..) {
            match cmd {
                Cmd::Write(_, Some(ack)) => ack(result.clone()),
                Cmd::Write(_, None) => {}
                Cmd::Flush(done) => {
                    let _ = done.send(result.clone());
                }
            }
        }
    }
}

/// An action row assembled from the writes of one batch: an action that is queued, started and
/// finished within one group commit costs one upsert instead of three statements.
struct MergedRow<'a> {
    run: RunId,
    id: ActionId,
    parent: ActionId,
    task: &'a str,
    group: Option<&'a str>,
    kind: ActionKind,
    status: ActionStatus,
    attempts: u32,
    queued_at: i64,
    started_at: Option<i64>,
    ended_at: Option<i64>,
    cache_hit: bool,
    inputs: &'a Payload,
    output: Option<&'a Payload>,
    error: Option<&'a Failure>,
}

fn apply_batch(conn: &mut Connection, batch: &[Cmd]) -> rusqlite::Result<()> {
    let tx = conn.transaction()?;
    let mut rows: Vec<MergedRow<'_>> = Vec::new();
    let mut pending: HashMap<(RunId, ActionId), usize> = HashMap::new();
    for cmd in batch {
        let Cmd::Write(op, _) = cmd else { continue };
        match op {
            WriteOp::InsertAction {
                run,
                id,
                parent,
                task,
                group,
                kind,
                inputs,
                queued_at,
            } => {
                let row = MergedRow {
                    run: *run,
                    id: *id,
                    parent: *parent,
                    task,
                    group: group.as_deref(),
                    kind: *kind,
                    status: ActionStatus::Queued,
                    attempts: 0,
                    queued_at: *queued_at,
                    started_at: None,
                    ended_at: None,
                    cache_hit: false,
                    inputs,
                    output: None,
                    error: None,
                };
                match pending.get(&(*run, *id)) {
                    Some(&i) => rows[i] = row,
                    None => {
                        pending.insert((*run, *id), rows.len());
                        rows.push(row);
                    }
                }
            }
            WriteOp::StartAttempt {
                run,
                id,
                attempt,
                started_at,
            } if pending.contains_key(&(*run, *id)) => {
                let row = &mut rows[pending[&(*run, *id)]];
                row.status = ActionStatus::Running;
                row.attempts = *attempt;
                row.started_at = Some(*started_at);
            }
            WriteOp::FinishAction {
                run,
                id,
                status,
                output,
                error,
                cache_hit,
                ended_at,
            } if pending.contains_key(&(*run, *id)) => {
                let row = &mut rows[pending[&(*run, *id)]];
                row.status = *status;
                row.output = output.as_ref();
                row.error = error.as_ref();
                row.cache_hit = *cache_hit;
                row.ended_at = Some(*ended_at);
            }
            WriteOp::FailAttempt {
                run,
                id,
                retrying: true,
                ..
            } if pending.contains_key(&(*run, *id)) => {
                rows[pending[&(*run, *id)]].status = ActionStatus::Retrying;
                apply(&tx, op)?;
            }
            WriteOp::CancelLiveActions { .. } => {
                // It must see every action queued before it.
                for row in rows.drain(..) {
                    upsert_row(&tx, &row)?;
                }
                pending.clear();
                apply(&tx, op)?;
            }
            _ => apply(&tx, op)?,
        }
    }
    for row in &rows {
        upsert_row(&tx, row)?;
    }
    tx.commit()
}

fn upsert_row(tx: &rusqlite::Transaction<'_>, row: &MergedRow<'_>) -> rusqlite::Result<()> {
    let (inputs, inputs_ref) = split(row.inputs);
    let (output, output_ref) = row.output.map(split).unwrap_or((None, None));
    let mut st = tx.prepare_cached(
        "INSERT INTO actions(run, id, parent, task, grp, kind, status, attempts, queued_at, started_at,
                             ended_at, cache_hit, inputs, inputs_ref, output, output_ref, error)
         VALUES(?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15, ?16, ?17)
         ON CONFLICT(run, id) DO UPDATE SET status = excluded.status,
           attempts = max(attempts, excluded.attempts), queued_at = excluded.queued_at,
           started_at = coalesce(excluded.started_at, started_at), ended_at = excluded.ended_at,
           cache_hit = excluded.cache_hit, output = excluded.output, output_ref = excluded.output_ref,
           error = excluded.error",
    )?;
    st.execute(params![
        row.run,
        row.id.as_i64(),
        row.parent.as_i64(),
        row.task,
        row.group,
        (row.kind == ActionKind::Trace) as i64,
        row.status.code(),
        row.attempts,
        row.queued_at,
        row.started_at,
        row.ended_at,
        row.cache_hit as i64,
        inputs,
        inputs_ref,
        output,
        output_ref,
        row.error.and_then(|f| serde_json::to_string(f).ok()),
    ])?;
    Ok(())
}

fn split(p: &Payload) -> (Option<&[u8]>, Option<String>) {
    match p {
        Payload::Inline(b) => (Some(b), None),
        Payload::Offloaded { path, size } => (None, Some(format!("{size}:{path}"))),
    }
}

fn split_opt(p: &Option<Payload>) -> (Option<&[u8]>, Option<String>) {
    p.as_ref().map(split).unwrap_or((None, None))
}

/// A payload from its two columns (`inputs`/`inputs_ref`, `output`/`output_ref`).
pub(crate) fn join(blob: Option<Vec<u8>>, reference: Option<String>) -> Option<Payload> {
    if let Some(r) = reference {
        let (size, path) = r.split_once(':')?;
        return Some(Payload::Offloaded {
            path: path.to_string(),
            size: size.parse().ok()?,
        });
    }
    blob.map(Payload::Inline)
}

fn failure_json(f: &Option<Failure>) -> Option<String> {
    f.as_ref().and_then(|f| serde_json::to_string(f).ok())
}

fn parse_failure(s: Option<String>) -> Option<Failure> {
    s.and_then(|s| serde_json::from_str(&s).ok())
}

fn apply(tx: &rusqlite::Transaction<'_>, op: &WriteOp) -> rusqlite::Result<()> {
    match op {
        WriteOp::InsertAction { .. } => unreachable!("inserts are merged in apply_batch"),
        WriteOp::PutCache(entry) => {
            let (blob, reference) = split(&entry.output);
            let mut st = tx.prepare_cached(
                "INSERT OR REPLACE INTO cache(key, project, domain, task, version, output, output_ref, created_at)
                 VALUES(?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
            )?;
            st.execute(params![
                entry.key,
                entry.project,
                entry.domain,
                entry.task,
                entry.version,
                blob,
                reference,
                entry.created_at
            ])?;
        }
        WriteOp::StartAttempt {
            run,
            id,
            attempt,
            started_at,
        } => {
            let mut st = tx.prepare_cached("UPDATE actions SET status = ?3, attempts = ?4, started_at = ?5 WHERE run = ?1 AND id = ?2")?;
            st.execute(params![
                run,
                id.as_i64(),
                ActionStatus::Running.code(),
                attempt,
                started_at
            ])?;
        }
        WriteOp::FailAttempt {
            run,
            id,
            attempt,
            retrying,
        } => {
            if *retrying {
                let mut st =
                    tx.prepare_cached("UPDATE actions SET status = ?3 WHERE run = ?1 AND id = ?2")?;
                st.execute(params![run, id.as_i64(), ActionStatus::Retrying.code()])?;
            }
            let mut st = tx.prepare_cached(
                "INSERT OR REPLACE INTO attempts(run, action, attempt, started_at, ended_at, error) VALUES(?1, ?2, ?3, ?4, ?5, ?6)",
            )?;
            st.execute(params![
                run,
                id.as_i64(),
                attempt.attempt,
                attempt.started_at,
                attempt.ended_at,
                serde_json::to_string(&attempt.error).unwrap_or_default()
            ])?;
        }
        WriteOp::FinishAction {
            run,
            id,
            status,
            output,
            error,
            cache_hit,
            ended_at,
        } => {
            let (blob, reference) = split_opt(output);
            let mut st = tx.prepare_cached(
                "UPDATE actions SET status = ?3, output = ?4, output_ref = ?5, error = ?6, cache_hit = ?7, ended_at = ?8
                 WHERE run = ?1 AND id = ?2",
            )?;
            st.execute(params![
                run,
                id.as_i64(),
                status.code(),
                blob,
                reference,
                failure_json(error),
                *cache_hit as i64,
                ended_at
            ])?;
        }
        WriteOp::FinishRun {
            run,
            status,
            output,
            error,
            ended_at,
        } => {
            let (blob, reference) = split_opt(output);
            let mut st = tx.prepare_cached("UPDATE runs SET status = ?2, output = ?3, output_ref = ?4, error = ?5, ended_at = ?6 WHERE id = ?1")?;
            st.execute(params![
                run,
                status.as_str(),
                blob,
                reference,
                failure_json(error),
                ended_at
            ])?;
        }
        WriteOp::ClaimRun { run, owner_pid } => {
            tx.execute("UPDATE runs SET owner_pid = ?2, status = 'running', ended_at = NULL, error = NULL WHERE id = ?1", params![run, owner_pid])?;
        }
        WriteOp::CancelLiveActions {
            run,
            error,
            ended_at,
        } => {
            tx.execute(
                "UPDATE actions SET status = ?2, error = ?3, ended_at = ?4 WHERE run = ?1 AND status IN (?5, ?6, ?7)",
                params![
                    run,
                    ActionStatus::Cancelled.code(),
                    serde_json::to_string(error).unwrap_or_default(),
                    ended_at,
                    ActionStatus::Queued.code(),
                    ActionStatus::Running.code(),
                    ActionStatus::Retrying.code()
                ],
            )?;
        }
    }
    Ok(())
}

fn cache_from_row(row: &rusqlite::Row<'_>) -> rusqlite::Result<CacheEntry> {
    Ok(CacheEntry {
        key: row.get(0)?,
        project: row.get(1)?,
        domain: row.get(2)?,
        task: row.get(3)?,
        version: row.get(4)?,
        output: join(row.get(5)?, row.get(6)?).unwrap_or(Payload::Inline(Vec::new())),
        created_at: row.get(7)?,
    })
}

const RUN_COLUMNS: &str = "id, name, task, status, created_at, ended_at, inputs, inputs_ref, context, output, output_ref, error, owner_pid";

fn run_from_row(row: &rusqlite::Row<'_>) -> rusqlite::Result<RunRecord> {
    let status: String = row.get(3)?;
    let context: String = row.get(8)?;
    Ok(RunRecord {
        id: row.get(0)?,
        name: row.get(1)?,
        task: row.get(2)?,
        status: RunStatus::parse(&status).unwrap_or(RunStatus::Failed),
        created_at: row.get(4)?,
        ended_at: row.get(5)?,
        inputs: join(row.get(6)?, row.get(7)?).unwrap_or(Payload::Inline(Vec::new())),
        context: serde_json::from_str(&context).unwrap_or_default(),
        output: join(row.get(9)?, row.get(10)?),
        error: parse_failure(row.get(11)?),
        owner_pid: row.get(12)?,
    })
}

pub(crate) const ACTION_COLUMNS: &str = "id, parent, task, grp, kind, status, attempts, queued_at, started_at, ended_at, cache_hit, error";

fn action_from_row(row: &rusqlite::Row<'_>) -> rusqlite::Result<ActionRecord> {
    action_record_at(row, 0)
}

/// An action (without payloads) from the [`ACTION_COLUMNS`] starting at column `base`.
pub(crate) fn action_record_at(
    row: &rusqlite::Row<'_>,
    base: usize,
) -> rusqlite::Result<ActionRecord> {
    Ok(ActionRecord {
        id: ActionId(row.get::<_, i64>(base)? as u64),
        parent: ActionId(row.get::<_, i64>(base + 1)? as u64),
        task: row.get(base + 2)?,
        group: row.get(base + 3)?,
        kind: if row.get::<_, i64>(base + 4)? == 1 {
            ActionKind::Trace
        } else {
            ActionKind::Task
        },
        status: ActionStatus::from_code(row.get(base + 5)?).unwrap_or(ActionStatus::Failed),
        attempts: row.get(base + 6)?,
        queued_at: row.get(base + 7)?,
        started_at: row.get(base + 8)?,
        ended_at: row.get(base + 9)?,
        cache_hit: row.get::<_, i64>(base + 10)? != 0,
        inputs: None,
        output: None,
        error: parse_failure(row.get(base + 11)?),
    })
}

impl Store for SqliteStore {
    fn write(&self, op: WriteOp, ack: Option<Ack>) {
        if let Err(Cmd::Write(_, Some(ack))) = self.send(Cmd::Write(op, ack)) {
            ack(Err(Arc::new(Error::WriterGone)));
        }
    }

    fn create_run(&self, run: &NewRun) -> Result<RunRecord> {
        let conn = self.reader.lock();
        let e = sql_err(&self.path);
        let (blob, reference) = split(&run.inputs);
        let now = now_us();
        let tx = conn.unchecked_transaction().map_err(&e)?;
        let inserted = tx.execute(
            "INSERT INTO runs(name, task, status, created_at, inputs, inputs_ref, context, owner_pid)
             VALUES(?1, ?2, 'running', ?3, ?4, ?5, ?6, ?7) ON CONFLICT(name) DO NOTHING",
            params![run.name, run.task, now, blob, reference, run.context.to_string(), run.owner_pid],
        );
        if inserted.map_err(&e)? == 0 {
            return Err(Error::RunExists(run.name.clone()));
        }
        let id = tx.last_insert_rowid();
        tx.execute(
            "INSERT INTO actions(run, id, parent, task, kind, status, queued_at, inputs, inputs_ref) VALUES(?1, 0, 0, ?2, 0, ?3, ?4, ?5, ?6)",
            params![id, run.task, ActionStatus::Queued.code(), now, blob, reference],
        )
        .map_err(&e)?;
        tx.commit().map_err(&e)?;
        drop(conn);
        self.run_by_name(&run.name)
    }

    fn run_by_name(&self, name: &str) -> Result<RunRecord> {
        let conn = self.reader.lock();
        conn.query_row(
            &format!("SELECT {RUN_COLUMNS} FROM runs WHERE name = ?1"),
            [name],
            run_from_row,
        )
        .optional()
        .map_err(sql_err(&self.path))?
        .ok_or_else(|| Error::UnknownRun(name.to_string()))
    }

    fn list_runs(&self, filter: &RunFilter) -> Result<Vec<RunSummary>> {
        let conn = self.reader.lock();
        let e = sql_err(&self.path);
        let mut st = conn
            .prepare(
                "SELECT id, name, task, status, created_at, ended_at FROM runs
                 WHERE (?1 IS NULL OR status = ?1) AND (?2 IS NULL OR instr(name, ?2) > 0)
                 ORDER BY id DESC LIMIT ?3",
            )
            .map_err(&e)?;
        let rows = st
            .query_map(
                params![
                    filter.status.map(|s| s.as_str()),
                    filter.name_contains,
                    filter.limit.unwrap_or(100)
                ],
                |r| {
                    Ok((
                        r.get::<_, i64>(0)?,
                        RunSummary {
                            name: r.get(1)?,
                            task: r.get(2)?,
                            status: RunStatus::parse(&r.get::<_, String>(3)?)
                                .unwrap_or(RunStatus::Failed),
                            created_at: r.get(4)?,
                            ended_at: r.get(5)?,
                            actions: Default::default(),
                        },
                    ))
                },
            )
            .map_err(&e)?
            .collect::<rusqlite::Result<Vec<_>>>()
            .map_err(&e)?;
        let mut counts = conn
            .prepare_cached("SELECT status, count(*) FROM actions WHERE run = ?1 GROUP BY status")
            .map_err(&e)?;
        let mut out = Vec::with_capacity(rows.len());
        for (id, mut summary) in rows {
            let per_status = counts
                .query_map([id], |r| Ok((r.get::<_, i64>(0)?, r.get::<_, i64>(1)?)))
                .map_err(&e)?
                .collect::<rusqlite::Result<Vec<_>>>()
                .map_err(&e)?;
            for (code, n) in per_status {
                let name = ActionStatus::from_code(code)
                    .map(|s| s.as_str())
                    .unwrap_or("unknown");
                summary.actions.insert(name.to_string(), n as u64);
            }
            out.push(summary);
        }
        Ok(out)
    }

    fn list_actions(&self, run: RunId, page: Page) -> Result<Vec<ActionRecord>> {
        let conn = self.reader.lock();
        let e = sql_err(&self.path);
        let mut st = conn
            .prepare_cached(&format!("SELECT {ACTION_COLUMNS} FROM actions WHERE run = ?1 ORDER BY seq LIMIT ?2 OFFSET ?3"))
            .map_err(&e)?;
        let rows = st
            .query_map(
                params![run, page.limit, page.offset as i64],
                action_from_row,
            )
            .map_err(&e)?
            .collect::<rusqlite::Result<Vec<_>>>()
            .map_err(&e)?;
        Ok(rows)
    }

    fn action(&self, run: RunId, id: ActionId) -> Result<Option<ActionRecord>> {
        let conn = self.reader.lock();
        let e = sql_err(&self.path);
        let mut st = conn
            .prepare_cached(&format!("SELECT {ACTION_COLUMNS}, inputs, inputs_ref, output, output_ref FROM actions WHERE run = ?1 AND id = ?2"))
            .map_err(&e)?;
        st.query_row(params![run, id.as_i64()], |row| {
            let mut rec = action_from_row(row)?;
            rec.inputs = join(row.get(12)?, row.get(13)?);
            rec.output = join(row.get(14)?, row.get(15)?);
            Ok(rec)
        })
        .optional()
        .map_err(&e)
    }

    fn failed_attempts(&self, run: RunId, id: ActionId) -> Result<Vec<AttemptRecord>> {
        let conn = self.reader.lock();
        let e = sql_err(&self.path);
        let mut st = conn
            .prepare_cached("SELECT attempt, started_at, ended_at, error FROM attempts WHERE run = ?1 AND action = ?2 ORDER BY attempt")
            .map_err(&e)?;
        let rows = st
            .query_map(params![run, id.as_i64()], |r| {
                let error: String = r.get(3)?;
                Ok(AttemptRecord {
                    attempt: r.get(0)?,
                    started_at: r.get(1)?,
                    ended_at: r.get(2)?,
                    error: serde_json::from_str(&error).map_err(|err| {
                        rusqlite::Error::FromSqlConversionFailure(
                            3,
                            rusqlite::types::Type::Text,
                            Box::new(err),
                        )
                    })?,
                })
            })
            .map_err(&e)?
            .collect::<rusqlite::Result<Vec<_>>>()
            .map_err(&e)?;
        Ok(rows)
    }

    fn cache_lookup(&self, key: &str, scope: Option<(&str, &str)>) -> Result<Option<CacheEntry>> {
        let conn = self.reader.lock();
        let e = sql_err(&self.path);
        let mut st = conn
            .prepare_cached(
                "SELECT key, project, domain, task, version, output, output_ref, created_at FROM cache
                 WHERE key = ?1 AND (?2 IS NULL OR (project = ?2 AND domain = ?3)) LIMIT 1",
            )
            .map_err(&e)?;
        st.query_row(
            params![key, scope.map(|s| s.0), scope.map(|s| s.1)],
            cache_from_row,
        )
        .optional()
        .map_err(&e)
    }

    fn list_cache(&self, task: Option<&str>, limit: u32) -> Result<Vec<CacheEntry>> {
        let conn = self.reader.lock();
        let e = sql_err(&self.path);
        let mut st = conn
            .prepare_cached(
                "SELECT key, project, domain, task, version, output, output_ref, created_at FROM cache
                 WHERE ?1 IS NULL OR task = ?1 ORDER BY created_at DESC LIMIT ?2",
            )
            .map_err(&e)?;
        st.query_map(params![task, limit], cache_from_row)
            .map_err(&e)?
            .collect::<rusqlite::Result<Vec<_>>>()
            .map_err(&e)
    }

    fn clear_cache(&self, task: Option<&str>) -> Result<u64> {
        self.flush()?;
        let conn = self.reader.lock();
        let n = conn
            .execute(
                "DELETE FROM cache WHERE ?1 IS NULL OR task = ?1",
                params![task],
            )
            .map_err(sql_err(&self.path))?;
        Ok(n as u64)
    }

    fn flush(&self) -> Result<()> {
        let (tx, rx) = mpsc::channel();
        if self.send(Cmd::Flush(tx)).is_err() {
            return Ok(()); // read-only or closed: nothing queued
        }
        match rx.recv() {
            Ok(Ok(())) => Ok(()),
            Ok(Err(e)) => Err(Error::Corrupt(e.to_string())),
            Err(_) => Err(Error::WriterGone),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use weir_core::ErrorKind;

    fn new_run(name: &str) -> NewRun {
        NewRun {
            name: name.into(),
            task: "env.root".into(),
            inputs: Payload::Inline(vec![1, 2, 3]),
            context: serde_json::json!({"labels": {}}),
            owner_pid: 42,
        }
    }

    #[test]
    fn action_lifecycle_is_persisted_in_order_and_acked_after_commit() {
        let dir = tempfile::tempdir().unwrap();
        let store = SqliteStore::open(dir.path(), StoreOptions::default()).unwrap();
        let run = store.create_run(&new_run("r1")).unwrap();
        assert!(matches!(
            store.create_run(&new_run("r1")),
            Err(Error::RunExists(_))
        ));
        let child = ActionId(77);
        store.write(
            WriteOp::InsertAction {
                run: run.id,
                id: child,
                parent: ActionId::ROOT,
                task: "env.child".into(),
                group: Some("g".into()),
                kind: ActionKind::Task,
                inputs: Payload::Offloaded {
                    path: "r1/x/inputs".into(),
                    size: 100_000,
                },
                queued_at: 1,
            },
            None,
        );
        store.write(
            WriteOp::StartAttempt {
                run: run.id,
                id: child,
                attempt: 1,
                started_at: 2,
            },
            None,
        );
        let failure = Failure {
            action_id: child.to_string(),
            task: "env.child".into(),
            kind: ErrorKind::User,
            message: "boom".into(),
            chain: vec![],
        };
        store.write(
            WriteOp::FailAttempt {
                run: run.id,
                id: child,
                attempt: AttemptRecord {
                    attempt: 1,
                    started_at: 2,
                    ended_at: 3,
                    error: failure.clone(),
                },
                retrying: true,
            },
            None,
        );
        store.write(
            WriteOp::StartAttempt {
                run: run.id,
                id: child,
                attempt: 2,
                started_at: 4,
            },
            None,
        );
        let (tx, rx) = mpsc::channel();
        store.write(
            WriteOp::FinishAction {
                run: run.id,
                id: child,
                status: ActionStatus::Succeeded,
                output: Some(Payload::Inline(vec![9])),
                error: None,
                cache_hit: false,
                ended_at: 5,
            },
            Some(Box::new(move |r| tx.send(r.is_ok()).unwrap())),
        );
        assert!(rx.recv().unwrap(), "ack reports the commit");
        // visible to a separate read-only connection once acked
        let ro = SqliteStore::open_read_only(dir.path()).unwrap();
        let rec = ro.action(run.id, child).unwrap().unwrap();
        assert_eq!(rec.status, ActionStatus::Succeeded);
        assert_eq!(rec.attempts, 2);
        assert_eq!(rec.output, Some(Payload::Inline(vec![9])));
        assert_eq!(
            rec.inputs,
            Some(Payload::Offloaded {
                path: "r1/x/inputs".into(),
                size: 100_000
            })
        );
        assert_eq!(rec.group.as_deref(), Some("g"));
        let attempts = ro.failed_attempts(run.id, child).unwrap();
        assert_eq!(attempts.len(), 1);
        assert_eq!(attempts[0].error, failure);
        let listed = ro.list_actions(run.id, Page::default()).unwrap();
        assert_eq!(
            listed.iter().map(|a| a.id).collect::<Vec<_>>(),
            vec![ActionId::ROOT, child]
        );
        let runs = ro.list_runs(&RunFilter::default()).unwrap();
        assert_eq!(runs[0].actions.get("succeeded"), Some(&1));
        assert_eq!(runs[0].actions.get("queued"), Some(&1));
        assert!(matches!(ro.run_by_name("nope"), Err(Error::UnknownRun(_))));
    }

    #[test]
    fn resubmit_resets_a_failed_action_and_newer_schema_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        {
            let store = SqliteStore::open(dir.path(), StoreOptions::default()).unwrap();
            let run = store.create_run(&new_run("r")).unwrap();
            let insert = WriteOp::InsertAction {
                run: run.id,
                id: ActionId(5),
                parent: ActionId::ROOT,
                task: "t".into(),
                group: None,
                kind: ActionKind::Task,
                inputs: Payload::Inline(vec![]),
                queued_at: 1,
            };
            store.write(insert.clone(), None);
            store.write(
                WriteOp::FinishAction {
                    run: run.id,
                    id: ActionId(5),
                    status: ActionStatus::Failed,
                    output: None,
                    error: None,
                    cache_hit: false,
                    ended_at: 2,
                },
                None,
            );
            store.write(insert, None);
            store.flush().unwrap();
            let rec = store.action(run.id, ActionId(5)).unwrap().unwrap();
            assert_eq!(rec.status, ActionStatus::Queued);
            assert_eq!(rec.ended_at, None);
            assert_eq!(
                store.list_actions(run.id, Page::default()).unwrap().len(),
                2
            );
            store.close().unwrap();
        }
        let conn = Connection::open(SqliteStore::db_path(dir.path())).unwrap();
        conn.execute(
            "UPDATE meta SET value = 99 WHERE key = 'schema_version'",
            [],
        )
        .unwrap();
        drop(conn);
        let err = SqliteStore::open(dir.path(), StoreOptions::default()).unwrap_err();
        assert!(err.to_string().contains("schema version 99"), "{err}");
        assert!(matches!(
            SqliteStore::open_read_only(&dir.path().join("missing")),
            Err(Error::NoState(_))
        ));
    }
}
