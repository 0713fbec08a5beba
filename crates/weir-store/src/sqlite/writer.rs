//! The write path: group commits of queued writes, acknowledged through tickets once the
//! transaction holding them has committed (see [`Writer`]); writes of a run this store lost
//! are refused.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use parking_lot::{Condvar, Mutex};
use rusqlite::{Connection, params};
use weir_core::ActionStatus;

use super::fence::lost_runs;
use super::rows::{failure_json, split, split_opt};
use crate::merge::{MergedRow, Step, plan};
use crate::{ActionKind, Error, Promise, RunId, WriteOp};

/// A command for the writer. Writes are by far the most of them and move once through the
/// channel: boxing them would cost an allocation per write for no gain.
#[allow(clippy::large_enum_variant)]
pub(super) enum Cmd {
    /// A write, and the promise of its ticket if someone waits for it.
    Write(WriteOp, Option<Promise>),
    /// Resolves once everything before it is committed.
    Sync(Promise),
}

/// The runs this store instance drives: run → epoch of its claim.
pub(super) type Claims = Arc<Mutex<HashMap<RunId, u64>>>;

/// Longest time a write nobody waits for is held back to share a commit.
const MAX_HOLD: Duration = Duration::from_millis(2);

/// How long the background committer sleeps when nothing is queued (it is woken earlier).
const IDLE_WAIT: Duration = Duration::from_millis(100);

/// How often the background committer checkpoints the WAL while commits happen.
const CHECKPOINT_EVERY: Duration = Duration::from_millis(20);

impl Cmd {
    /// Whether someone waits for this command's commit.
    fn is_awaited(&self) -> bool {
        match self {
            Cmd::Write(_, Some(p)) | Cmd::Sync(p) => !p.is_abandoned(),
            Cmd::Write(_, None) => false,
        }
    }
}

struct Queue {
    cmds: Vec<Cmd>,
    /// Commands in `cmds` that someone waits for.
    awaited: usize,
    /// When the oldest queued command arrived.
    since: Option<Instant>,
    closed: bool,
}

/// The ordered write queue and the one write connection.
///
/// Writes are queued in order. A write that someone waits for is committed at once: on the
/// caller's own thread when the connection is free (a sequential chain of calls then pays no
/// thread hand-offs at all), else by whoever holds the connection or by the background
/// committer, which it wakes. Writes nobody waits for (an action queued or started) are held
/// until a waited-for write arrives or `MAX_HOLD` passes, so they share its commit. A commit
/// takes everything queued (up to `max_batch`) in one transaction, and the queue is taken only
/// while holding the connection, so commits are in queue order.
pub(super) struct Writer {
    path: PathBuf,
    conn: Mutex<Connection>,
    queue: Mutex<Queue>,
    wake: Condvar,
    max_batch: usize,
    claims: Claims,
    /// Commit on the caller's thread (off with `fsync`: a synced commit would stall a runtime
    /// thread for a millisecond).
    inline: bool,
    /// Commits since the last checkpoint. Checkpoints (copying the WAL into the database, with
    /// an fsync) run on the background committer's own connection, never in a commit.
    commits: std::sync::atomic::AtomicU64,
    checkpointer: Mutex<Connection>,
    /// `PRAGMA data_version` at this connection's last commit.
    seen_version: Mutex<Option<i64>>,
    /// Runs another engine has taken over, with the refusal their writes get.
    lost: Mutex<HashMap<RunId, Arc<Error>>>,
    /// Runs with a write in a batch whose commit failed, with this store's claim on each then
    /// and the error. Writes go to the store in order, so none of such a run may commit after
    /// one that was lost: its later writes get that error, until the run is claimed again.
    failed: Mutex<HashMap<RunId, FailedCommit>>,
}

/// This store's claim (epoch) on a run when a commit with a write of it failed, and the error.
type FailedCommit = (Option<u64>, Arc<Error>);

impl Writer {
    pub(super) fn new(
        conn: Connection,
        checkpointer: Connection,
        path: PathBuf,
        max_batch: usize,
        claims: Claims,
        inline: bool,
    ) -> Writer {
        Writer {
            path,
            conn: Mutex::new(conn),
            queue: Mutex::new(Queue {
                cmds: Vec::with_capacity(1024),
                awaited: 0,
                since: None,
                closed: false,
            }),
            wake: Condvar::new(),
            max_batch,
            claims,
            inline,
            commits: Default::default(),
            checkpointer: Mutex::new(checkpointer),
            seen_version: Mutex::new(None),
            lost: Mutex::default(),
            failed: Mutex::default(),
        }
    }

    /// Queues a command; it is handed back when the writer has stopped.
    #[allow(clippy::result_large_err)]
    pub(super) fn push(&self, cmd: Cmd) -> std::result::Result<(), Cmd> {
        let awaited = cmd.is_awaited();
        {
            let mut q = self.queue.lock();
            if q.closed {
                return Err(cmd);
            }
            q.cmds.push(cmd);
            q.since.get_or_insert_with(Instant::now);
            if !awaited && q.cmds.len() < self.max_batch {
                return Ok(());
            }
            q.awaited += awaited as usize;
        }
        if !(self.inline && awaited) {
            self.wake.notify_one();
            return Ok(());
        }
        match self.conn.try_lock() {
            Some(mut conn) => self.commit_queued(&mut conn),
            None => {
                self.wake.notify_one();
            }
        }
        Ok(())
    }

    /// The write connection, for writes that answer with what they wrote (a run created or
    /// claimed): made on the connection that makes every other write, they leave its page
    /// cache valid (a commit from another connection makes the next one read its pages again).
    pub(super) fn conn(&self) -> parking_lot::MutexGuard<'_, Connection> {
        self.conn.lock()
    }

    /// Stops accepting commands; the background committer commits what is queued and exits.
    pub(super) fn close(&self) {
        self.queue.lock().closed = true;
        self.wake.notify_all();
    }

    /// Commits what is queued, batch by batch, while someone waits for a queued command.
    fn commit_queued(&self, conn: &mut Connection) {
        while let Some(batch) = self.take_batch() {
            self.commit(conn, batch);
            if self.queue.lock().awaited == 0 {
                return;
            }
        }
    }

    /// Commits everything queued.
    fn commit_all(&self, conn: &mut Connection) {
        while let Some(batch) = self.take_batch() {
            self.commit(conn, batch);
        }
    }

    /// The oldest queued commands, at most `max_batch` (the caller holds the connection, so
    /// batches commit in queue order).
    fn take_batch(&self) -> Option<Vec<Cmd>> {
        let mut q = self.queue.lock();
        if q.cmds.is_empty() {
            return None;
        }
        let take = q.cmds.len().min(self.max_batch);
        let batch: Vec<Cmd> = q.cmds.drain(..take).collect();
        q.awaited = q.cmds.iter().filter(|c| c.is_awaited()).count();
        q.since = (!q.cmds.is_empty()).then(Instant::now);
        Some(batch)
    }

    /// One transaction: the ownership check and the writes. `IMMEDIATE` takes the write lock
    /// at once, so no other engine can claim a run between the check and the commit; and when
    /// no other connection committed since this one's last commit (`data_version` unchanged),
    /// no claim can have changed and the check reads nothing.
    fn transact(
        &self,
        conn: &mut Connection,
        batch: &[Cmd],
        lost: &mut HashMap<RunId, Arc<Error>>,
    ) -> rusqlite::Result<()> {
        // Fault injection (feature `failpoints`): die, or fail as an I/O error would, before
        // the batch is committed.
        #[cfg(feature = "failpoints")]
        fail::fail_point!("store.commit.before", |_| Err(injected_io_error(
            "store.commit.before"
        )));
        let tx = conn.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
        let version: i64 = tx
            .prepare_cached("PRAGMA data_version")?
            .query_row([], |r| r.get(0))?;
        let mut seen = self.seen_version.lock();
        let mut known = self.lost.lock();
        if *seen != Some(version) {
            known.extend(lost_runs(&tx, batch, &self.claims)?);
        }
        // Runs found lost stay lost: their writes are refused from then on. So are those of
        // a run with a lost write, while this store's claim on it is the one it had then.
        let failed = self.failed.lock();
        let claims = (!failed.is_empty()).then(|| self.claims.lock());
        for cmd in batch {
            let Cmd::Write(op, _) = cmd else { continue };
            let Some(run) = op.run() else { continue };
            if let Some(refusal) = known.get(&run) {
                lost.insert(run, refusal.clone());
            } else if let (Some((epoch, error)), Some(claims)) = (failed.get(&run), &claims)
                && claims.get(&run) == epoch.as_ref()
            {
                lost.insert(run, error.clone());
            }
        }
        drop((failed, claims));
        apply_batch(&tx, batch, lost)?;
        tx.commit()?;
        // Fault injection: die with the batch committed and its tickets not yet resolved.
        #[cfg(feature = "failpoints")]
        fail::fail_point!("store.commit.after");
        *seen = Some(version);
        Ok(())
    }

    fn commit(&self, conn: &mut Connection, batch: Vec<Cmd>) {
        let sql_error = |source| {
            Arc::new(Error::Sqlite {
                path: self.path.display().to_string(),
                source,
            })
        };
        let mut lost = HashMap::new();
        let result = self.transact(conn, &batch, &mut lost).map_err(sql_error);
        if let Err(e) = &result {
            tracing::error!(error = %e, ops = batch.len(), "state commit failed");
            let mut failed = self.failed.lock();
            let claims = self.claims.lock();
            for cmd in &batch {
                if let Cmd::Write(op, _) = cmd
                    && let Some(run) = op.run()
                {
                    let epoch = claims.get(&run).copied();
                    if failed.get(&run).is_none_or(|(was, _)| *was != epoch) {
                        failed.insert(run, (epoch, e.clone()));
                    }
                }
            }
        }
        self.commits
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        for cmd in batch {
            match cmd {
                Cmd::Write(op, Some(promise)) => match op.run().and_then(|r| lost.get(&r)) {
                    Some(refusal) => promise.resolve(Err(refusal.clone())),
                    None => promise.resolve(result.clone()),
                },
                Cmd::Write(_, None) => {}
                Cmd::Sync(promise) => promise.resolve(result.clone()),
            }
        }
    }

    /// The background committer: commits waited-for writes that found the connection busy,
    /// and held writes after `MAX_HOLD`; exits once closed and drained.
    pub(super) fn background(&self) {
        let mut last_checkpoint = Instant::now();
        loop {
            let commit = {
                let mut q = self.queue.lock();
                loop {
                    let held = q.since.map(|t| t.elapsed());
                    let due = q.awaited > 0 || held.is_some_and(|h| h >= MAX_HOLD);
                    if due || (q.closed && !q.cmds.is_empty()) {
                        break true;
                    }
                    if q.closed {
                        return;
                    }
                    let pending = self.commits.load(std::sync::atomic::Ordering::Relaxed) > 0;
                    if pending && last_checkpoint.elapsed() >= CHECKPOINT_EVERY {
                        break false;
                    }
                    let mut wait = match held {
                        Some(h) => MAX_HOLD - h,
                        None => IDLE_WAIT,
                    };
                    if pending {
                        wait = wait.min(CHECKPOINT_EVERY);
                    }
                    self.wake.wait_for(&mut q, wait);
                }
            };
            if commit {
                let mut conn = self.conn.lock();
                self.commit_all(&mut conn);
            } else {
                self.checkpoint();
                last_checkpoint = Instant::now();
            }
        }
    }

    /// Copies committed WAL frames into the database without blocking writers (`PASSIVE`).
    fn checkpoint(&self) {
        self.commits.store(0, std::sync::atomic::Ordering::Relaxed);
        let conn = self.checkpointer.lock();
        if let Err(e) = conn.query_row("PRAGMA wal_checkpoint(PASSIVE)", [], |_| Ok(())) {
            tracing::warn!(error = %e, "WAL checkpoint failed (it is retried)");
        }
    }
}

/// The error an injected commit failure gives (SQLite's `SQLITE_IOERR`, naming the failpoint).
#[cfg(feature = "failpoints")]
fn injected_io_error(point: &str) -> rusqlite::Error {
    eprintln!("weir: failpoint {point}: injected error");
    rusqlite::Error::SqliteFailure(
        rusqlite::ffi::Error::new(rusqlite::ffi::SQLITE_IOERR),
        Some(format!("failpoint {point}: injected I/O error")),
    )
}

/// Applies one batch in its transaction: the writes of each action merged into one row
/// (`crate::merge`), the others in place; the writes of runs lost to another owner left out.
fn apply_batch(
    tx: &rusqlite::Transaction<'_>,
    batch: &[Cmd],
    lost: &HashMap<RunId, Arc<Error>>,
) -> rusqlite::Result<()> {
    let ops = batch.iter().filter_map(|cmd| match cmd {
        Cmd::Write(op, _) if !op.run().is_some_and(|r| lost.contains_key(&r)) => Some(op),
        _ => None,
    });
    for step in plan(ops) {
        match step {
            Step::Rows(rows) => {
                for row in &rows {
                    upsert_row(tx, row)?;
                }
            }
            Step::Op(op) => apply(tx, op)?,
            Step::Queue(ops) => {
                for op in ops {
                    apply(tx, op)?;
                }
            }
        }
    }
    Ok(())
}

fn upsert_row(tx: &rusqlite::Transaction<'_>, row: &MergedRow<'_>) -> rusqlite::Result<()> {
    let (inputs, inputs_ref) = split(row.inputs);
    let (output, output_ref) = row.output.map(split).unwrap_or((None, None));
    let mut st = tx.prepare_cached(
        "INSERT INTO actions(run, id, parent, task, grp, kind, status, attempts, queued_at, started_at,
                             ended_at, cache_hit, inputs, inputs_ref, output, output_ref, error, phases)
         VALUES(?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15, ?16, ?17, ?18)
         ON CONFLICT(run, id) DO UPDATE SET status = excluded.status,
           attempts = max(attempts, excluded.attempts), queued_at = excluded.queued_at,
           started_at = coalesce(excluded.started_at, started_at), ended_at = excluded.ended_at,
           cache_hit = excluded.cache_hit, output = excluded.output, output_ref = excluded.output_ref,
           error = excluded.error, phases = excluded.phases",
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
        row.reused,
        inputs,
        inputs_ref,
        output,
        output_ref,
        row.error.and_then(|f| serde_json::to_string(f).ok()),
        row.phases.map(|p| p.encode()),
    ])?;
    Ok(())
}

fn apply(tx: &rusqlite::Transaction<'_>, op: &WriteOp) -> rusqlite::Result<()> {
    match op {
        WriteOp::InsertAction { .. } | WriteOp::RecoverAction { .. } => {
            unreachable!("inserts are merged in apply_batch")
        }
        WriteOp::Enqueue { attempt: a, due } => {
            let mut st = tx.prepare_cached(
                "INSERT OR REPLACE INTO queue(run, action, attempt, env, task, enqueued_at)
                 VALUES(?1, ?2, ?3, ?4, ?5, ?6)",
            )?;
            st.execute(params![
                a.run,
                a.action.as_i64(),
                a.attempt,
                a.env,
                a.task,
                due
            ])?;
        }
        WriteOp::Dequeue { run, action, lease } => {
            let mut st = tx.prepare_cached(
                "DELETE FROM queue WHERE run = ?1 AND action = ?2 AND lease = ?3",
            )?;
            st.execute(params![run, action.as_i64(), *lease as i64])?;
        }
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
                "INSERT OR REPLACE INTO attempts(run, action, attempt, started_at, ended_at, error, phases) VALUES(?1, ?2, ?3, ?4, ?5, ?6, ?7)",
            )?;
            st.execute(params![
                run,
                id.as_i64(),
                attempt.attempt,
                attempt.started_at,
                attempt.ended_at,
                serde_json::to_string(&attempt.error).unwrap_or_default(),
                attempt.phases.map(|p| p.encode())
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
            phases,
        } => {
            let (blob, reference) = split_opt(output);
            let mut st = tx.prepare_cached(
                "UPDATE actions SET status = ?3, output = ?4, output_ref = ?5, error = ?6, cache_hit = ?7, ended_at = ?8,
                   phases = ?9
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
                ended_at,
                phases.as_ref().map(|p| p.encode())
            ])?;
        }
        WriteOp::Delivered { run, id, phases } => {
            let mut st =
                tx.prepare_cached("UPDATE actions SET phases = ?3 WHERE run = ?1 AND id = ?2")?;
            st.execute(params![run, id.as_i64(), phases.encode()])?;
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
        WriteOp::OwnerAlive { owner, at } => {
            let mut st = tx.prepare_cached(
                "UPDATE runs SET owner_seen_at = ?2 WHERE owner = ?1 AND status = 'running'",
            )?;
            st.execute(params![owner, at])?;
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
            // Their attempts leave the queue: a running one's completion finds no lease.
            tx.execute("DELETE FROM queue WHERE run = ?1", params![run])?;
        }
    }
    Ok(())
}
