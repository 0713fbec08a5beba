//! Read queries behind the web UI (SPEC §11.2): runs with paging, children of an action folded
//! into groups with counts by status, paging of a group's members, and the whole-run aggregates
//! behind the timeline and the per-environment utilization chart.
//!
//! [`UiReader`] keeps a small pool of read-only connections of its own, so several UI requests
//! read at once and nothing it does can write to the database. Every query returns at most one
//! page of rows; the whole-run aggregates ([`UiReader::run_activity`]) read every action of a run
//! once and return a bounded summary (one lane per group, a fixed number of time buckets).

use std::path::{Path, PathBuf};

use parking_lot::Mutex;
use rusqlite::{Connection, OpenFlags, OptionalExtension, params};
use weir_core::{ActionId, ActionStatus, Failure};

use crate::sqlite::{ACTION_COLUMNS as STORE_ACTION_COLUMNS, action_record_at, join};
use crate::{ActionRecord, Error, Page, Payload, Result, RunStatus};

/// Number of action statuses ([`ActionStatus::code`] is `0..STATUSES`).
pub const STATUSES: usize = 7;

/// Most idle connections kept in the pool.
const MAX_IDLE_CONNECTIONS: usize = 4;

/// Action counts indexed by [`ActionStatus::code`].
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct StatusCounts(pub [u64; STATUSES]);

impl StatusCounts {
    /// All actions counted.
    pub fn total(&self) -> u64 {
        self.0.iter().sum()
    }
    /// Counts by snake_case status name, zeros left out.
    pub fn by_name(&self) -> std::collections::BTreeMap<&'static str, u64> {
        ActionStatus::ALL
            .into_iter()
            .filter(|s| self.0[s.code() as usize] > 0)
            .map(|s| (s.as_str(), self.0[s.code() as usize]))
            .collect()
    }
    /// Adds `n` actions of status `code` (unknown codes count as failed).
    pub fn add(&mut self, code: i64, n: u64) {
        let i = if (0..STATUSES as i64).contains(&code) {
            code as usize
        } else {
            ActionStatus::Failed.code() as usize
        };
        self.0[i] += n;
    }
    /// Whether every counted action is finished.
    pub fn all_terminal(&self) -> bool {
        ActionStatus::ALL
            .into_iter()
            .filter(|s| !s.is_terminal())
            .all(|s| self.0[s.code() as usize] == 0)
    }
}

/// A run row, without payloads.
#[derive(Clone, Debug)]
pub struct UiRun {
    /// Row id.
    pub id: i64,
    /// Unique name.
    pub name: String,
    /// Root task.
    pub task: String,
    /// Status.
    pub status: RunStatus,
    /// Creation time (µs since epoch).
    pub created_at: i64,
    /// End time, when over.
    pub ended_at: Option<i64>,
    /// Run context as JSON text (labels, limits).
    pub context: String,
    /// Failure, when failed.
    pub error: Option<Failure>,
}

/// Filter and page for [`UiReader::runs`].
#[derive(Clone, Debug, Default)]
pub struct UiRunFilter {
    /// Only runs in this status.
    pub status: Option<RunStatus>,
    /// Only runs whose name contains this.
    pub name_contains: Option<String>,
    /// Newest first: rows skipped and returned.
    pub page: Page,
}

/// An action row as listed by the UI (no payloads).
#[derive(Clone, Debug)]
pub struct UiAction {
    /// Creation order in the database (`actions.seq`).
    pub seq: i64,
    /// The action (payloads left out).
    pub record: ActionRecord,
    /// Whether it has child actions.
    pub has_children: bool,
}

/// An action with its payloads, for the detail pane.
#[derive(Clone, Debug)]
pub struct UiActionDetail {
    /// The row.
    pub action: UiAction,
    /// Inputs.
    pub inputs: Option<Payload>,
    /// Output.
    pub output: Option<Payload>,
    /// Direct children, all groups together.
    pub children: u64,
}

/// The children of one parent that share a group (`group == None`: its ungrouped children).
#[derive(Clone, Debug)]
pub struct UiGroup {
    /// Group name, `None` for the parent's ungrouped children.
    pub group: Option<String>,
    /// Members.
    pub count: u64,
    /// Members by status.
    pub counts: StatusCounts,
    /// `seq` of the first member.
    pub first_seq: i64,
}

/// One lane of the timeline: a group of actions under one parent, or a single ungrouped call.
#[derive(Clone, Debug)]
pub struct UiLane {
    /// Parent of the lane's actions.
    pub parent: ActionId,
    /// Group name (`None`: ungrouped children of `parent`; the root's lane has `parent == id`).
    pub group: Option<String>,
    /// The task, when every action of the lane runs the same one.
    pub task: Option<String>,
    /// The action, when the lane holds exactly one.
    pub action: Option<ActionId>,
    /// Actions in the lane.
    pub count: u64,
    /// By status.
    pub counts: StatusCounts,
    /// `seq` of the first action.
    pub first_seq: i64,
    /// Earliest queue time (µs).
    pub queued_at: i64,
    /// Earliest start (µs), if any started.
    pub started_at: Option<i64>,
    /// Latest end (µs), if any ended.
    pub ended_at: Option<i64>,
}

/// Busy time of one environment over the run, in equal time buckets.
#[derive(Clone, Debug)]
pub struct UiEnvUsage {
    /// Environment name (the part of the task name before the first `.`).
    pub env: String,
    /// Microseconds of attempt time per bucket, summed over actions (divide by the bucket
    /// width for the mean number of running actions).
    pub busy_us: Vec<f64>,
    /// Total attempt time (µs).
    pub total_busy_us: f64,
    /// Actions that started.
    pub actions: u64,
}

/// The whole-run aggregates behind the timeline and the utilization chart.
#[derive(Clone, Debug)]
pub struct UiActivity {
    /// Start of the first bucket (µs): the run's creation.
    pub t0: i64,
    /// End of the last bucket (µs): the run's end, or `now` while it runs.
    pub t1: i64,
    /// Bucket width (µs).
    pub bucket_us: i64,
    /// Counts over every action of the run.
    pub counts: StatusCounts,
    /// Lanes ordered by first start (unstarted last), then creation.
    pub lanes: Vec<UiLane>,
    /// Per environment, by name.
    pub envs: Vec<UiEnvUsage>,
}

/// Read-only access to a state database for the UI, with a pool of connections.
pub struct UiReader {
    path: PathBuf,
    idle: Mutex<Vec<Connection>>,
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
        has_children: row.get(13)?,
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
    /// [`Error::NewerSchema`] if a newer weir wrote it. Nothing in the directory is changed.
    pub fn open(state_dir: &Path) -> Result<UiReader> {
        let path = crate::SqliteStore::db_path(state_dir);
        if !path.exists() {
            return Err(Error::NoState(state_dir.display().to_string()));
        }
        let reader = UiReader {
            path,
            idle: Mutex::new(Vec::new()),
        };
        reader
            .with_conn(|conn| {
                let has_meta: i64 = conn.query_row(
                    "SELECT count(*) FROM sqlite_master WHERE name='meta'",
                    [],
                    |r| r.get(0),
                )?;
                if has_meta == 0 {
                    return Ok(None);
                }
                conn.query_row(
                    "SELECT value FROM meta WHERE key='schema_version'",
                    [],
                    |r| r.get::<_, i64>(0),
                )
                .optional()
            })
            .and_then(|found| match found {
                Some(v) if v > crate::sqlite::SCHEMA_VERSION => Err(Error::NewerSchema {
                    path: reader.path.display().to_string(),
                    found: v,
                    supported: crate::sqlite::SCHEMA_VERSION,
                }),
                _ => Ok(()),
            })?;
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

    fn connect(&self) -> rusqlite::Result<Connection> {
        let conn = Connection::open_with_flags(
            &self.path,
            OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX,
        )?;
        conn.busy_timeout(std::time::Duration::from_secs(10))?;
        conn.pragma_update(None, "query_only", 1)?;
        conn.pragma_update(None, "cache_size", -32_000)?;
        Ok(conn)
    }

    /// Runs `f` on a pooled connection (opening one if none is idle).
    fn with_conn<R>(&self, f: impl FnOnce(&Connection) -> rusqlite::Result<R>) -> Result<R> {
        let pooled = self.idle.lock().pop();
        let conn = match pooled {
            Some(c) => c,
            None => self.connect().map_err(|e| self.sql_err(e))?,
        };
        let result = f(&conn).map_err(|e| self.sql_err(e));
        let mut idle = self.idle.lock();
        if idle.len() < MAX_IDLE_CONNECTIONS {
            idle.push(conn);
        }
        result
    }

    /// Runs, newest first, one page; and how many match the filter.
    pub fn runs(&self, filter: &UiRunFilter) -> Result<(Vec<UiRun>, u64)> {
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
    pub fn run(&self, name: &str) -> Result<UiRun> {
        self.with_conn(|conn| {
            conn.prepare_cached(&format!("SELECT {RUN_COLUMNS} FROM runs WHERE name = ?1"))?
                .query_row([name], run_from_row)
                .optional()
        })?
        .ok_or_else(|| Error::UnknownRun(name.to_string()))
    }

    /// Action counts by status over a whole run, and the highest `seq` (changes when actions
    /// are added). Reads every action of the run.
    pub fn run_counts(&self, run: i64) -> Result<(StatusCounts, i64)> {
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
    pub fn child_groups(&self, run: i64, parent: ActionId) -> Result<Vec<UiGroup>> {
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
    pub fn children(
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
    pub fn action(&self, run: i64, id: ActionId) -> Result<Option<UiActionDetail>> {
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
                        inputs: join(row.get(14)?, row.get(15)?),
                        output: join(row.get(16)?, row.get(17)?),
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
    pub fn failed_attempts(
        &self,
        run: i64,
        id: ActionId,
        limit: u32,
    ) -> Result<Vec<crate::AttemptRecord>> {
        self.with_conn(|conn| {
            conn.prepare_cached(
                "SELECT attempt, started_at, ended_at, error FROM attempts
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
                })
            })?
            .collect()
        })
    }

    /// Whole-run aggregates for the timeline and utilization: lanes (one per group of
    /// children of a parent, the root on its own) and per-environment busy time in `buckets`
    /// equal buckets from the run's creation to `t1` (its end, or `now`). Reads every action of
    /// the run once, in storage order, aggregating as it goes.
    pub fn run_activity(&self, run: &UiRun, buckets: usize, now: i64) -> Result<UiActivity> {
        let buckets = buckets.max(1);
        let t0 = run.created_at;
        let t1 = run.ended_at.unwrap_or(now).max(t0 + 1);
        let bucket_us = ((t1 - t0) as f64 / buckets as f64).ceil().max(1.0) as i64;
        self.with_conn(|conn| {
            let mut activity = ActivityBuilder::new(t0, t1, bucket_us, buckets);
            if let Some(scan) = RunScan::plan(conn, run.id)? {
                let mut st = conn.prepare_cached(&format!(
                    "SELECT seq, id, parent, grp, task, status, queued_at, started_at, ended_at
                     FROM actions WHERE {}",
                    scan.filter()
                ))?;
                let mut rows = st.query(scan.params())?;
                while let Some(r) = rows.next()? {
                    activity.add(r)?;
                }
            }
            Ok(activity.finish())
        })
    }

    /// The task of each of `ids` in `run` (for labels), in order; `None` for unknown ids.
    pub fn tasks_of(&self, run: i64, ids: &[ActionId]) -> Result<Vec<Option<String>>> {
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

/// Aggregates the rows of one run into lanes and per-environment busy time.
struct ActivityBuilder {
    t1: i64,
    t0: i64,
    bucket_us: i64,
    buckets: usize,
    counts: StatusCounts,
    lanes: Vec<UiLane>,
    /// Lanes by parent id, then scanned by group name (a parent has few groups).
    lanes_by_parent: std::collections::HashMap<i64, Vec<usize>>,
    envs: Vec<UiEnvUsage>,
    /// Per environment: a difference array of whole buckets covered.
    covered: Vec<Vec<i64>>,
}

impl ActivityBuilder {
    fn new(t0: i64, t1: i64, bucket_us: i64, buckets: usize) -> Self {
        ActivityBuilder {
            t0,
            t1,
            bucket_us,
            buckets,
            counts: StatusCounts::default(),
            lanes: Vec::new(),
            lanes_by_parent: Default::default(),
            envs: Vec::new(),
            covered: Vec::new(),
        }
    }

    /// One row of `SELECT seq, id, parent, grp, task, status, queued_at, started_at, ended_at`.
    fn add(&mut self, r: &rusqlite::Row<'_>) -> rusqlite::Result<()> {
        let seq: i64 = r.get(0)?;
        let id: i64 = r.get(1)?;
        let parent: i64 = r.get(2)?;
        let grp = r.get_ref(3)?.as_str_or_null()?;
        let task = r.get_ref(4)?.as_str()?;
        let status: i64 = r.get(5)?;
        let queued_at: i64 = r.get(6)?;
        let started_at: Option<i64> = r.get(7)?;
        let ended_at: Option<i64> = r.get(8)?;
        self.counts.add(status, 1);

        // The root is its own parent: it gets a lane of its own, keyed apart from its children.
        let lane_parent = if id == parent { -1 } else { parent };
        let slots = self.lanes_by_parent.entry(lane_parent).or_default();
        let lanes = &mut self.lanes;
        let found = match grp {
            Some(_) => slots
                .iter()
                .copied()
                .find(|&i| lanes[i].group.as_deref() == grp),
            // Ungrouped calls get a lane each, until their parent has made more than
            // MAX_SINGLE_LANES: then they fold into one lane.
            None => {
                let singles: Vec<usize> = slots
                    .iter()
                    .copied()
                    .filter(|&i| lanes[i].group.is_none())
                    .collect();
                match singles.as_slice() {
                    [only] if lanes[*only].action.is_none() => Some(*only), // folded already
                    s if s.len() < MAX_SINGLE_LANES => None,
                    [keep, rest @ ..] => {
                        for &j in rest {
                            let other = std::mem::replace(&mut lanes[j], empty_lane());
                            merge_lane(&mut lanes[*keep], &other);
                        }
                        lanes[*keep].action = None;
                        slots.retain(|i| !rest.contains(i));
                        Some(*keep)
                    }
                    [] => None,
                }
            }
        };
        let lane = match found {
            Some(i) => &mut lanes[i],
            None => {
                slots.push(lanes.len());
                lanes.push(UiLane {
                    parent: ActionId(parent as u64),
                    group: grp.map(str::to_string),
                    task: Some(task.to_string()),
                    action: Some(ActionId(id as u64)),
                    count: 0,
                    counts: StatusCounts::default(),
                    first_seq: seq,
                    queued_at,
                    started_at: None,
                    ended_at: None,
                });
                lanes.last_mut().expect("just pushed")
            }
        };
        lane.count += 1;
        lane.counts.add(status, 1);
        if lane.count > 1 {
            lane.action = None;
            if lane.task.as_deref().is_some_and(|t| t != task) {
                lane.task = None;
            }
        }
        lane.first_seq = lane.first_seq.min(seq);
        lane.queued_at = lane.queued_at.min(queued_at);
        lane.started_at = min_opt(lane.started_at, started_at);
        lane.ended_at = ended_at.max(lane.ended_at);

        let Some(started) = started_at else {
            return Ok(());
        };
        // Busy time, relative to t0, clipped to [t0, t1]; a running action counts until t1.
        let s = (started.clamp(self.t0, self.t1) - self.t0) as f64;
        let end = ended_at.unwrap_or(self.t1).max(started).min(self.t1);
        let e = (end.max(self.t0) - self.t0) as f64;
        let env = task.split_once('.').map_or(task, |(env, _)| env);
        let i = match self.envs.iter().position(|u| u.env == env) {
            Some(i) => i,
            None => {
                self.envs.push(UiEnvUsage {
                    env: env.to_string(),
                    busy_us: vec![0.0; self.buckets],
                    total_busy_us: 0.0,
                    actions: 0,
                });
                self.covered.push(vec![0; self.buckets + 1]);
                self.envs.len() - 1
            }
        };
        let usage = &mut self.envs[i];
        usage.actions += 1;
        usage.total_busy_us += e - s;
        let width = self.bucket_us as f64;
        let last = self.buckets - 1;
        let b0 = ((s / width) as usize).min(last);
        let b1 = ((e / width) as usize).min(last);
        if b0 == b1 {
            usage.busy_us[b0] += e - s;
        } else {
            usage.busy_us[b0] += (b0 + 1) as f64 * width - s;
            usage.busy_us[b1] += e - b1 as f64 * width;
            self.covered[i][b0 + 1] += 1;
            self.covered[i][b1] -= 1;
        }
        Ok(())
    }

    fn finish(mut self) -> UiActivity {
        let width = self.bucket_us as f64;
        for (usage, diff) in self.envs.iter_mut().zip(&self.covered) {
            let mut whole = 0;
            for (b, busy) in usage.busy_us.iter_mut().enumerate() {
                whole += diff[b];
                *busy += whole as f64 * width;
            }
        }
        self.envs.sort_by(|a, b| a.env.cmp(&b.env));
        self.lanes.retain(|l| l.count > 0); // lanes merged into others
        self.lanes
            .sort_by_key(|l| (l.started_at.is_none(), l.started_at, l.first_seq));
        UiActivity {
            t0: self.t0,
            t1: self.t1,
            bucket_us: self.bucket_us,
            counts: self.counts,
            lanes: self.lanes,
            envs: self.envs,
        }
    }
}

/// Most lanes of single ungrouped calls per parent before they fold into one.
const MAX_SINGLE_LANES: usize = 20;

fn empty_lane() -> UiLane {
    UiLane {
        parent: ActionId::ROOT,
        group: None,
        task: None,
        action: None,
        count: 0,
        counts: StatusCounts::default(),
        first_seq: i64::MAX,
        queued_at: i64::MAX,
        started_at: None,
        ended_at: None,
    }
}

fn merge_lane(into: &mut UiLane, other: &UiLane) {
    into.count += other.count;
    for (a, b) in into.counts.0.iter_mut().zip(other.counts.0) {
        *a += b;
    }
    if into.task != other.task {
        into.task = None;
    }
    into.first_seq = into.first_seq.min(other.first_seq);
    into.queued_at = into.queued_at.min(other.queued_at);
    into.started_at = min_opt(into.started_at, other.started_at);
    into.ended_at = into.ended_at.max(other.ended_at);
}

fn min_opt(a: Option<i64>, b: Option<i64>) -> Option<i64> {
    match (a, b) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    }
}
