//! The UI's read model on SQLite: a small pool of read-only connections of its own.

use std::path::{Path, PathBuf};

use parking_lot::Mutex;
use rusqlite::{Connection, OptionalExtension, params};
use weir_core::{ActionId, ActionStatus, Failure};

use super::activity::{ActivityBuilder, ActivityRow};
use super::{
    ReadModel, StatusCounts, UiAction, UiActionDetail, UiActivity, UiGroup, UiRun, UiRunFilter,
};
use crate::sqlite::readonly::{self, ReadConn};
use crate::sqlite::{ACTION_COLUMNS as STORE_ACTION_COLUMNS, action_record_at, join};
use crate::{Error, Page, Result, RunStatus};

/// Most idle connections kept in the pool.
const MAX_IDLE_CONNECTIONS: usize = 4;

/// Read-only access to a state database for the UI, with a pool of connections.
pub struct UiReader {
    path: PathBuf,
    idle: Mutex<Vec<ReadConn>>,
}

impl std::fmt::Debug for UiReader {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("UiReader")
            .field("path", &self.path)
            .finish()
    }
}

/// Columns of [`action_from_row`], for `FROM actions AS a`: `seq`, the store's action columns,
/// then whether the action has children.
static ACTION_COLUMNS: std::sync::LazyLock<String> = std::sync::LazyLock::new(|| {
    format!(
        "seq, {STORE_ACTION_COLUMNS},
  EXISTS(SELECT 1 FROM actions AS c WHERE c.run = a.run AND c.parent = a.id AND c.seq <> a.seq)"
    )
});

fn action_from_row(row: &rusqlite::Row<'_>) -> rusqlite::Result<UiAction> {
    Ok(UiAction {
        seq: row.get(0)?,
        record: action_record_at(row, 1)?,
        has_children: row.get(14)?,
    })
}

fn run_from_row(row: &rusqlite::Row<'_>) -> rusqlite::Result<UiRun> {
    Ok(UiRun {
        id: row.get(0)?,
        name: row.get(1)?,
        task: row.get(2)?,
        status: RunStatus::parse(&row.get::<_, String>(3)?).unwrap_or(RunStatus::Failed),
        created_at: row.get(4)?,
        ended_at: row.get(5)?,
        context: row.get(6)?,
        error: row
            .get::<_, Option<String>>(7)?
            .and_then(|s| serde_json::from_str(&s).ok()),
    })
}

const RUN_COLUMNS: &str = "id, name, task, status, created_at, ended_at, context, error";

impl UiReader {
    /// Opens the state database of `state_dir` for reading; [`Error::NoState`] if there is none,
    /// [`Error::NewerSchema`] if a newer weir wrote it, [`Error::Corrupt`] if it is empty or
    /// holds no weir schema. Nothing in the directory is created or changed (its connections
    /// are opened as in `SqliteStore::open_read_only`).
    pub fn open(state_dir: &Path) -> Result<UiReader> {
        let path = readonly::existing_db(state_dir)?;
        let reader = UiReader {
            path,
            idle: Mutex::new(Vec::new()),
        };
        let conn = reader.connect().map_err(|e| reader.sql_err(e))?;
        readonly::require_current(
            readonly::schema_version(conn.conn(), &reader.path)?,
            &reader.path,
        )?;
        reader.idle.lock().push(conn);
        Ok(reader)
    }

    /// The database file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    fn sql_err(&self, source: rusqlite::Error) -> Error {
        Error::Sqlite {
            path: self.path.display().to_string(),
            source,
        }
    }

    fn connect(&self) -> rusqlite::Result<ReadConn> {
        let conn = ReadConn::open(&self.path)?;
        conn.conn().pragma_update(None, "cache_size", -32_000)?;
        Ok(conn)
    }

    /// Runs `f` on a pooled connection (opening one if none is idle and current).
    fn with_conn<R>(&self, f: impl FnOnce(&Connection) -> rusqlite::Result<R>) -> Result<R> {
        let pooled = loop {
            let Some(c) = self.idle.lock().pop() else {
                break None;
            };
            // One opened before a writer started (or the file changed) is dropped.
            if c.is_current(&self.path) {
                break Some(c);
            }
        };
        let conn = match pooled {
            Some(c) => c,
            None => self.connect().map_err(|e| self.sql_err(e))?,
        };
        let result = f(conn.conn()).map_err(|e| self.sql_err(e));
        let mut idle = self.idle.lock();
        if idle.len() < MAX_IDLE_CONNECTIONS {
            idle.push(conn);
        }
        result
    }
}

impl ReadModel for UiReader {
    /// Runs, newest first, one page; and how many match the filter.
    fn runs(&self, filter: &UiRunFilter) -> Result<(Vec<UiRun>, u64)> {
        self.with_conn(|conn| {
            let status = filter.status.map(|s| s.as_str());
            let name = filter.name_contains.as_deref();
            let mut st = conn.prepare_cached(&format!(
                "SELECT {RUN_COLUMNS} FROM runs
                 WHERE (?1 IS NULL OR status = ?1) AND (?2 IS NULL OR instr(name, ?2) > 0)
                 ORDER BY id DESC LIMIT ?3 OFFSET ?4"
            ))?;
            let runs = st
                .query_map(
                    params![status, name, filter.page.limit, filter.page.offset as i64],
                    run_from_row,
                )?
                .collect::<rusqlite::Result<Vec<_>>>()?;
            let total: i64 = conn.query_row(
                "SELECT count(*) FROM runs WHERE (?1 IS NULL OR status = ?1) AND (?2 IS NULL OR instr(name, ?2) > 0)",
                params![status, name],
                |r| r.get(0),
            )?;
            Ok((runs, total as u64))
        })
    }

    /// A run by name; [`Error::UnknownRun`] if there is none.
    fn run(&self, name: &str) -> Result<UiRun> {
        self.with_conn(|conn| {
            conn.prepare_cached(&format!("SELECT {RUN_COLUMNS} FROM runs WHERE name = ?1"))?
                .query_row([name], run_from_row)
                .optional()
        })?
        .ok_or_else(|| Error::UnknownRun(name.to_string()))
    }

    /// Action counts by status over a whole run, and the highest `seq` (changes when actions
    /// are added). Reads every action of the run.
    fn run_counts(&self, run: i64) -> Result<(StatusCounts, i64)> {
        self.with_conn(|conn| {
            let mut counts = StatusCounts::default();
            let Some(scan) = RunScan::plan(conn, run)? else {
                return Ok((counts, 0));
            };
            let mut st = conn.prepare_cached(&format!(
                "SELECT seq, status FROM actions WHERE {}",
                scan.filter()
            ))?;
            let mut rows = st.query(scan.params())?;
            let mut last = 0;
            while let Some(r) = rows.next()? {
                last = last.max(r.get::<_, i64>(0)?);
                counts.add(r.get(1)?, 1);
            }
            Ok((counts, last))
        })
    }

    /// The groups of `parent`'s children with counts by status, ordered by first member
    /// (`group == None` holds its ungrouped children). Reads every child of `parent`.
    fn child_groups(&self, run: i64, parent: ActionId) -> Result<Vec<UiGroup>> {
        self.with_conn(|conn| {
            let mut st = conn.prepare_cached(
                "SELECT grp, status, count(*), min(seq) FROM actions
                 WHERE run = ?1 AND parent = ?2 AND seq NOT IN (SELECT seq FROM actions WHERE run = ?1 AND id = ?2 AND parent = ?2)
                 GROUP BY grp, status",
            )?;
            let mut groups: Vec<UiGroup> = Vec::new();
            let mut rows = st.query(params![run, parent.as_i64()])?;
            while let Some(r) = rows.next()? {
                let group: Option<String> = r.get(0)?;
                let n = r.get::<_, i64>(2)? as u64;
                let first: i64 = r.get(3)?;
                let g = match groups.iter_mut().find(|g| g.group == group) {
                    Some(g) => g,
                    None => {
                        groups.push(UiGroup {
                            group,
                            count: 0,
                            counts: StatusCounts::default(),
                            first_seq: first,
                        });
                        groups.last_mut().expect("just pushed")
                    }
                };
                g.count += n;
                g.counts.add(r.get(1)?, n);
                g.first_seq = g.first_seq.min(first);
            }
            groups.sort_by_key(|g| g.first_seq);
            Ok(groups)
        })
    }

    /// One page of `parent`'s children in `group` (`None`: its ungrouped children) in creation
    /// order, optionally only those in `status`.
    fn children(
        &self,
        run: i64,
        parent: ActionId,
        group: Option<&str>,
        status: Option<ActionStatus>,
        page: Page,
    ) -> Result<Vec<UiAction>> {
        self.with_conn(|conn| {
            let mut st = conn.prepare_cached(&format!(
                "SELECT {cols} FROM actions AS a
                 WHERE run = ?1 AND parent = ?2 AND grp IS ?3 AND seq NOT IN (SELECT seq FROM actions WHERE run = ?1 AND id = ?2 AND parent = ?2)
                   AND (?4 IS NULL OR status = ?4)
                 ORDER BY seq LIMIT ?5 OFFSET ?6",
                cols = *ACTION_COLUMNS
            ))?;
            st.query_map(
                params![
                    run,
                    parent.as_i64(),
                    group,
                    status.map(|s| s.code()),
                    page.limit,
                    page.offset as i64
                ],
                action_from_row,
            )?
            .collect()
        })
    }

    /// One action with its payloads and number of children; `None` if the run has no such
    /// action.
    fn action(&self, run: i64, id: ActionId) -> Result<Option<UiActionDetail>> {
        self.with_conn(|conn| {
            let found = conn
                .prepare_cached(&format!(
                    "SELECT {cols}, inputs, inputs_ref, output, output_ref FROM actions AS a
                     WHERE run = ?1 AND id = ?2",
                    cols = *ACTION_COLUMNS
                ))?
                .query_row(params![run, id.as_i64()], |row| {
                    Ok(UiActionDetail {
                        action: action_from_row(row)?,
                        inputs: join(row.get(15)?, row.get(16)?),
                        output: join(row.get(17)?, row.get(18)?),
                        children: 0,
                    })
                })
                .optional()?;
            let Some(mut detail) = found else {
                return Ok(None);
            };
            detail.children = conn
                .prepare_cached(
                    "SELECT count(*) FROM actions WHERE run = ?1 AND parent = ?2 AND seq NOT IN (SELECT seq FROM actions WHERE run = ?1 AND id = ?2 AND parent = ?2)",
                )?
                .query_row(params![run, id.as_i64()], |r| r.get::<_, i64>(0))?
                as u64;
            Ok(Some(detail))
        })
    }

    /// Failed attempts of one action, oldest first, at most `limit`.
    fn failed_attempts(
        &self,
        run: i64,
        id: ActionId,
        limit: u32,
    ) -> Result<Vec<crate::AttemptRecord>> {
        self.with_conn(|conn| {
            conn.prepare_cached(
                "SELECT attempt, started_at, ended_at, error, phases FROM attempts
                 WHERE run = ?1 AND action = ?2 ORDER BY attempt LIMIT ?3",
            )?
            .query_map(params![run, id.as_i64(), limit], |r| {
                let error: String = r.get(3)?;
                Ok(crate::AttemptRecord {
                    attempt: r.get(0)?,
                    started_at: r.get(1)?,
                    ended_at: r.get(2)?,
                    error: serde_json::from_str(&error).unwrap_or_else(|_| Failure {
                        action_id: ActionId(id.0).to_string(),
                        task: String::new(),
                        kind: weir_core::ErrorKind::User,
                        message: error,
                        chain: vec![],
                    }),
                    phases: r
                        .get::<_, Option<Vec<u8>>>(4)?
                        .and_then(|b| weir_core::phases::Phases::decode(&b)),
                })
            })?
            .collect()
        })
    }

    /// Whole-run aggregates for the timeline and utilization: lanes (one per group of
    /// children of a parent, the root on its own) and per-environment busy time in `buckets`
    /// equal buckets from the run's creation to `t1` (its end, or `now`). Reads every action of
    /// the run once, in storage order, aggregating as it goes.
    fn run_activity(&self, run: &UiRun, buckets: usize, now: i64) -> Result<UiActivity> {
        self.with_conn(|conn| {
            let mut activity = ActivityBuilder::for_run(run, buckets, now);
            if let Some(scan) = RunScan::plan(conn, run.id)? {
                let mut st = conn.prepare_cached(&format!(
                    "SELECT seq, id, parent, grp, task, status, queued_at, started_at, ended_at
                     FROM actions WHERE {}",
                    scan.filter()
                ))?;
                let mut rows = st.query(scan.params())?;
                while let Some(r) = rows.next()? {
                    activity.add(ActivityRow {
                        seq: r.get(0)?,
                        id: r.get(1)?,
                        parent: r.get(2)?,
                        group: r.get_ref(3)?.as_str_or_null()?,
                        task: r.get_ref(4)?.as_str()?,
                        status: r.get(5)?,
                        queued_at: r.get(6)?,
                        started_at: r.get(7)?,
                        ended_at: r.get(8)?,
                    });
                }
            }
            Ok(activity.finish())
        })
    }

    /// The task of each of `ids` in `run` (for labels), in order; `None` for unknown ids.
    fn tasks_of(&self, run: i64, ids: &[ActionId]) -> Result<Vec<Option<String>>> {
        self.with_conn(|conn| {
            let mut st =
                conn.prepare_cached("SELECT task FROM actions WHERE run = ?1 AND id = ?2")?;
            ids.iter()
                .map(|id| {
                    st.query_row(params![run, id.as_i64()], |r| r.get(0))
                        .optional()
                })
                .collect()
        })
    }

    fn actions_page(&self, run: i64, offset: u64, limit: u32) -> Result<Vec<crate::ActionRecord>> {
        self.with_conn(|conn| {
            let mut st = conn.prepare_cached(&format!(
                "SELECT {STORE_ACTION_COLUMNS} FROM actions WHERE run = ?1 ORDER BY seq LIMIT ?2 OFFSET ?3"
            ))?;
            st.query_map(params![run, limit, offset as i64], |row| {
                action_record_at(row, 0)
            })?
            .collect()
        })
    }

    fn setting(&self, key: &str) -> Result<Option<String>> {
        self.with_conn(|conn| {
            let has: i64 = conn.query_row(
                "SELECT count(*) FROM sqlite_master WHERE name = 'settings'",
                [],
                |r| r.get(0),
            )?;
            if has == 0 {
                return Ok(None);
            }
            conn.query_row("SELECT value FROM settings WHERE key = ?1", [key], |r| {
                r.get(0)
            })
            .optional()
        })
    }
}

/// How to read every action of a run. A run's rows are mostly contiguous in storage (its root
/// comes first), so when they make up most of the rows from its root to the end of the table,
/// scanning that range of the table is fastest; otherwise (an old run followed by big ones) the
/// index on `run` is, so the cost stays proportional to the run's size either way.
struct RunScan {
    run: i64,
    first: i64,
    last: i64,
    by_range: bool,
}

impl RunScan {
    fn plan(conn: &Connection, run: i64) -> rusqlite::Result<Option<RunScan>> {
        let first: Option<i64> = conn
            .prepare_cached("SELECT seq FROM actions WHERE run = ?1 AND id = 0")?
            .query_row([run], |r| r.get(0))
            .optional()?;
        let Some(first) = first else {
            return Ok(None);
        };
        let last: i64 = conn
            .prepare_cached("SELECT max(seq) FROM actions")?
            .query_row([], |r| r.get(0))?;
        let rows: i64 = conn
            .prepare_cached("SELECT count(*) FROM actions WHERE run = ?1")?
            .query_row([run], |r| r.get(0))?;
        Ok(Some(RunScan {
            run,
            first,
            last,
            by_range: rows * 4 > last - first,
        }))
    }

    /// The `WHERE` clause, over parameters [`RunScan::params`].
    fn filter(&self) -> &'static str {
        if self.by_range {
            "seq BETWEEN ?2 AND ?3 AND +run = ?1"
        } else {
            "run = ?1 AND +seq BETWEEN ?2 AND ?3"
        }
    }

    fn params(&self) -> [i64; 3] {
        if self.by_range {
            // the root is the run's first row (created with the run)
            [self.run, self.first, self.last]
        } else {
            [self.run, i64::MIN, i64::MAX]
        }
    }
}
