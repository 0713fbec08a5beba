//! Read queries behind the web UI (SPEC §11.2): runs with paging, children of an action folded
//! into groups with counts by status, paging of a group's members, and the whole-run aggregates
//! behind the timeline and the per-environment utilization chart.
//!
//! [`UiReader`] keeps a small pool of read-only connections of its own, so several UI requests
//! read at once and nothing it does can write to the database. Every query returns at most one
//! page of rows; the whole-run aggregates ([`UiReader::run_activity`]) read every action of a run
//! once and return a bounded summary (one lane per group, a fixed number of time buckets).
//!
//! [`ReadModel`] is what the UI reads through; [`UiReader`] is its SQLite implementation
//! (`sqlite.rs`; PostgreSQL's is in `weir-store-postgres`), and the whole-run aggregation
//! ([`ActivityBuilder`]) is fed plain rows, so every backend shares it.

mod activity;
mod sqlite;

use weir_core::{ActionId, ActionStatus, Failure};

pub use activity::{ActivityBuilder, ActivityRow};
pub use sqlite::UiReader;

use crate::{ActionRecord, AttemptRecord, Page, Payload, Result, RunStatus};

/// Number of action statuses ([`ActionStatus::code`] is `0..STATUSES`).
pub const STATUSES: usize = 7;

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

/// The queries behind the web UI, on any backend. Every method returns at most one page of
/// rows or a bounded summary. Methods block (the UI calls them on a blocking thread).
pub trait ReadModel: Send + Sync + 'static {
    /// Runs, newest first, one page; and how many match the filter.
    fn runs(&self, filter: &UiRunFilter) -> Result<(Vec<UiRun>, u64)>;
    /// A run by name; [`crate::Error::UnknownRun`] if there is none.
    fn run(&self, name: &str) -> Result<UiRun>;
    /// Counts by status of a run's actions, and the highest `seq` (for cache validation).
    fn run_counts(&self, run: i64) -> Result<(StatusCounts, i64)>;
    /// The children of `parent` folded into groups.
    fn child_groups(&self, run: i64, parent: ActionId) -> Result<Vec<UiGroup>>;
    /// One page of the children of `parent` in one group, in creation order, optionally only
    /// those in `status`.
    fn children(
        &self,
        run: i64,
        parent: ActionId,
        group: Option<&str>,
        status: Option<ActionStatus>,
        page: Page,
    ) -> Result<Vec<UiAction>>;
    /// One action with its payloads.
    fn action(&self, run: i64, id: ActionId) -> Result<Option<UiActionDetail>>;
    /// Failed attempts of one action, oldest first, at most `limit`.
    fn failed_attempts(&self, run: i64, id: ActionId, limit: u32) -> Result<Vec<AttemptRecord>>;
    /// What each attempt of an action printed, as a control plane's workers captured it
    /// (`None`: this model keeps no logs; the embedded engine's workers write files).
    fn attempt_logs(&self, run: i64, id: ActionId) -> Result<Option<Vec<crate::AttemptLog>>> {
        let _ = (run, id);
        Ok(None)
    }
    /// The whole-run aggregates (lanes, per-environment busy time) in `buckets` time buckets.
    fn run_activity(&self, run: &UiRun, buckets: usize, now: i64) -> Result<UiActivity>;
    /// The task of each of `ids` in `run`, in order; `None` for unknown ids.
    fn tasks_of(&self, run: i64, ids: &[ActionId]) -> Result<Vec<Option<String>>>;
    /// A page of a run's actions in creation order, without payloads (phase summaries).
    fn actions_page(&self, run: i64, offset: u64, limit: u32) -> Result<Vec<crate::ActionRecord>>;
    /// A store-wide setting (e.g. where payloads are).
    fn setting(&self, key: &str) -> Result<Option<String>>;
}

/// Opens the read model of the state in `state_dir` (nothing in it is changed).
pub fn open_read_model(state_dir: &std::path::Path) -> Result<std::sync::Arc<dyn ReadModel>> {
    Ok(std::sync::Arc::new(UiReader::open(state_dir)?))
}
