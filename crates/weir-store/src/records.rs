//! Rows of the state store.

use serde::{Deserialize, Serialize};
use weir_core::{ActionId, ActionStatus, Failure};

pub use weir_core::clock::now_us;

/// The identity of a run in the state store (its row id in SQLite). Distinct from the run's
/// name, which users choose; engines, workers and the protocol refer to runs by this id.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(transparent)]
pub struct RunId(pub i64);

impl std::fmt::Display for RunId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}", self.0)
    }
}

impl rusqlite::ToSql for RunId {
    fn to_sql(&self) -> rusqlite::Result<rusqlite::types::ToSqlOutput<'_>> {
        self.0.to_sql()
    }
}

impl rusqlite::types::FromSql for RunId {
    fn column_result(value: rusqlite::types::ValueRef<'_>) -> rusqlite::types::FromSqlResult<Self> {
        i64::column_result(value).map(RunId)
    }
}

pub use weir_core::Payload;

/// Status of a run.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RunStatus {
    /// The root action has not finished.
    Running,
    /// The root action succeeded.
    Succeeded,
    /// The root action failed.
    Failed,
    /// Aborted by the user.
    Aborted,
}

impl RunStatus {
    /// snake_case name.
    pub fn as_str(self) -> &'static str {
        match self {
            RunStatus::Running => "running",
            RunStatus::Succeeded => "succeeded",
            RunStatus::Failed => "failed",
            RunStatus::Aborted => "aborted",
        }
    }
    /// Parses [`RunStatus::as_str`].
    pub fn parse(s: &str) -> Option<RunStatus> {
        [
            RunStatus::Running,
            RunStatus::Succeeded,
            RunStatus::Failed,
            RunStatus::Aborted,
        ]
        .into_iter()
        .find(|r| r.as_str() == s)
    }
    /// Whether the run is over.
    pub fn is_terminal(self) -> bool {
        self != RunStatus::Running
    }
}

/// What is needed to create a run.
#[derive(Clone, Debug)]
pub struct NewRun {
    /// Unique run name.
    pub name: String,
    /// Root task's full name.
    pub task: String,
    /// Root inputs.
    pub inputs: Payload,
    /// The run context, as JSON.
    pub context: serde_json::Value,
    /// The engine instance that creates (and first drives) the run.
    pub owner: String,
    /// When set, the root's first attempt is queued in this queue by the same transaction
    /// (cluster mode: a run is never created without its root queued). Such a run is driven
    /// through the queue by whoever leases its actions: the creating store does not fence its
    /// writes by the creator's claim (the PostgreSQL store skips that check for it).
    pub queue: Option<String>,
}

/// A run as stored.
#[derive(Clone, Debug, Serialize)]
pub struct RunRecord {
    /// Row id.
    pub id: RunId,
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
    /// Root inputs.
    #[serde(skip)]
    pub inputs: Payload,
    /// Run context as JSON.
    pub context: serde_json::Value,
    /// Root output, when succeeded.
    #[serde(skip)]
    pub output: Option<Payload>,
    /// Failure, when failed.
    pub error: Option<Failure>,
    /// The engine instance that drives (or last drove) the run.
    pub owner: String,
    /// Epoch of its claim: 1 at creation, +1 per takeover.
    pub epoch: u64,
    /// When the owner last said it is alive (µs), if ever.
    pub owner_seen_at: Option<i64>,
}

/// A run with action counts, for listings.
#[derive(Clone, Debug, Serialize)]
pub struct RunSummary {
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
    /// Number of actions per status (snake_case status names).
    pub actions: std::collections::BTreeMap<String, u64>,
}

/// Filter for [`crate::Store::list_runs`].
#[derive(Clone, Debug, Default)]
pub struct RunFilter {
    /// Only runs in this status.
    pub status: Option<RunStatus>,
    /// Only runs whose name contains this.
    pub name_contains: Option<String>,
    /// At most this many (default 100).
    pub limit: Option<u32>,
    /// Only runs of this project (a run whose context names none is in [`DEFAULT_PROJECT`]).
    pub project: Option<String>,
    /// Only runs of this domain (a run whose context names none is in [`DEFAULT_DOMAIN`]).
    pub domain: Option<String>,
}

/// The project of a run whose context names none.
pub const DEFAULT_PROJECT: &str = "default";
/// The domain of a run whose context names none.
pub const DEFAULT_DOMAIN: &str = "development";

/// An access token of a control plane (`weir token create`). Only a hash of the token is
/// kept: the token itself is shown once, when it is made.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct TokenRecord {
    /// blake3 of the token, lower-case hex.
    pub hash: String,
    /// The project it gives access to.
    pub project: String,
    /// The domain it is limited to, if any.
    pub domain: Option<String>,
    /// `client`, `worker` or `admin`.
    pub role: String,
    /// When it was made (µs).
    pub created_at: i64,
}

/// A page of rows: `offset` rows skipped, at most `limit` returned.
#[derive(Clone, Copy, Debug)]
pub struct Page {
    /// Rows to skip.
    pub offset: u64,
    /// Rows to return.
    pub limit: u32,
}

impl Default for Page {
    fn default() -> Self {
        Page {
            offset: 0,
            limit: 1000,
        }
    }
}

/// What kind of action a row is.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ActionKind {
    /// A task call.
    Task,
    /// A trace checkpoint.
    Trace,
}

/// An action as stored (payloads are left out of its serialized form).
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct ActionRecord {
    /// Id.
    pub id: ActionId,
    /// Parent's id (the root's parent is itself).
    pub parent: ActionId,
    /// Full task name.
    pub task: String,
    /// Group, if any.
    pub group: Option<String>,
    /// Task or trace.
    pub kind: ActionKind,
    /// Status.
    pub status: ActionStatus,
    /// Attempts started so far.
    pub attempts: u32,
    /// When it was queued (µs).
    pub queued_at: i64,
    /// When the last attempt started.
    pub started_at: Option<i64>,
    /// When it finished.
    pub ended_at: Option<i64>,
    /// Whether the output came from the cache.
    pub cache_hit: bool,
    /// Whether the output was taken from the same action of an earlier run
    /// (`rerun --recover`).
    pub recovered: bool,
    /// Inputs (empty for listings).
    #[serde(skip)]
    pub inputs: Option<Payload>,
    /// Output (empty for listings).
    #[serde(skip)]
    pub output: Option<Payload>,
    /// Failure, if failed.
    pub error: Option<Failure>,
    /// Where its last attempt's time went (none before it ended, for a cache hit, a recovered
    /// action, and actions of an older weir).
    #[serde(default)]
    pub phases: Option<weir_core::phases::Phases>,
}

/// A failed attempt.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct AttemptRecord {
    /// 1-based attempt number.
    pub attempt: u32,
    /// Start (µs).
    pub started_at: i64,
    /// End (µs).
    pub ended_at: i64,
    /// The failure.
    pub error: Failure,
    /// Where its time went (none from an older weir; `deliver` is 0: a failure that is retried
    /// is not delivered).
    #[serde(default)]
    pub phases: Option<weir_core::phases::Phases>,
}

/// One write to the store. Applied in queue order inside group commits.
#[derive(Clone, Debug)]
pub enum WriteOp {
    /// A new (or re-submitted) action, queued.
    InsertAction {
        /// Run row id.
        run: RunId,
        /// Action id.
        id: ActionId,
        /// Parent id.
        parent: ActionId,
        /// Full task name.
        task: std::borrow::Cow<'static, str>,
        /// Group name.
        group: Option<std::sync::Arc<str>>,
        /// Task or trace.
        kind: ActionKind,
        /// Inputs.
        inputs: Payload,
        /// Queue time (µs).
        queued_at: i64,
    },
    /// An attempt started.
    StartAttempt {
        /// Run row id.
        run: RunId,
        /// Action id.
        id: ActionId,
        /// 1-based attempt number.
        attempt: u32,
        /// Start time (µs).
        started_at: i64,
    },
    /// An attempt failed (kept in the attempts history).
    FailAttempt {
        /// Run row id.
        run: RunId,
        /// Action id.
        id: ActionId,
        /// Attempt record.
        attempt: AttemptRecord,
        /// A retry follows: the action's status becomes `retrying`.
        retrying: bool,
    },
    /// The action reached a terminal state.
    FinishAction {
        /// Run row id.
        run: RunId,
        /// Action id.
        id: ActionId,
        /// Final status.
        status: ActionStatus,
        /// Output, if succeeded.
        output: Option<Payload>,
        /// Failure, if failed or cancelled.
        error: Option<Failure>,
        /// Whether the output came from a cache hit.
        cache_hit: bool,
        /// End time (µs).
        ended_at: i64,
        /// Where the last attempt's time went (its `deliver` follows in
        /// [`WriteOp::Delivered`], once this write is durable).
        phases: Option<Box<weir_core::phases::Phases>>,
    },
    /// An action's result was delivered (its end durable, its parent or caller told): its
    /// phases, now with `deliver`.
    Delivered {
        /// Run row id.
        run: RunId,
        /// Action id.
        id: ActionId,
        /// All its phases.
        phases: Box<weir_core::phases::Phases>,
    },
    /// An action recorded as succeeded with the output of the same action in an earlier run
    /// (`rerun --recover`): it does not run.
    RecoverAction {
        /// Run row id.
        run: RunId,
        /// Action id (the same as in the earlier run).
        id: ActionId,
        /// Parent id.
        parent: ActionId,
        /// Full task name (or trace name).
        task: std::borrow::Cow<'static, str>,
        /// Group name.
        group: Option<std::sync::Arc<str>>,
        /// Task or trace.
        kind: ActionKind,
        /// Inputs (the earlier run's reference).
        inputs: Payload,
        /// Output (the earlier run's reference).
        output: Payload,
        /// When (µs).
        at: i64,
    },
    /// The run reached a terminal state.
    FinishRun {
        /// Run row id.
        run: RunId,
        /// Final status.
        status: RunStatus,
        /// Root output.
        output: Option<Payload>,
        /// Root failure.
        error: Option<Failure>,
        /// End time (µs).
        ended_at: i64,
    },
    /// An engine instance says it is alive: the runs it drives are not taken over.
    OwnerAlive {
        /// The owner id.
        owner: String,
        /// When (µs).
        at: i64,
    },
    /// A cache entry is written (or replaced).
    PutCache(CacheEntry),
    /// An attempt goes into its queue (replacing any entry of the same action, and so its
    /// lease), leasable from `due` (µs): as [`crate::Store::enqueue`], inside the commit of
    /// the writes around it.
    Enqueue {
        /// The attempt.
        attempt: QueuedAttempt,
        /// When it may be leased (µs).
        due: i64,
    },
    /// A completed attempt leaves the queue, if `lease` is still its lease (as
    /// [`crate::Store::complete`], inside the commit of the attempt's result).
    Dequeue {
        /// Run row id.
        run: RunId,
        /// Action id.
        action: ActionId,
        /// The lease that completed.
        lease: u64,
    },
    /// Every live action of a run becomes cancelled (abort), and the run's attempts leave the
    /// queue (with their leases: a running attempt's completion is then refused).
    CancelLiveActions {
        /// Run row id.
        run: RunId,
        /// Failure recorded on each.
        error: Failure,
        /// End time (µs).
        ended_at: i64,
    },
}

impl WriteOp {
    /// The run the write belongs to (none for cache entries and owner heartbeats).
    pub fn run(&self) -> Option<RunId> {
        match self {
            WriteOp::InsertAction { run, .. }
            | WriteOp::StartAttempt { run, .. }
            | WriteOp::FailAttempt { run, .. }
            | WriteOp::FinishAction { run, .. }
            | WriteOp::Delivered { run, .. }
            | WriteOp::RecoverAction { run, .. }
            | WriteOp::FinishRun { run, .. }
            | WriteOp::CancelLiveActions { run, .. }
            | WriteOp::Dequeue { run, .. } => Some(*run),
            WriteOp::Enqueue { attempt, .. } => Some(attempt.run),
            WriteOp::PutCache(_) | WriteOp::OwnerAlive { .. } => None,
        }
    }
}

/// A cache entry (SPEC §6): the output of a task for a cache key, per project and domain.
#[derive(Clone, Debug, Serialize)]
pub struct CacheEntry {
    /// The key (see `weir_core::cache`).
    pub key: String,
    /// Project of the run that wrote it.
    pub project: String,
    /// Domain of the run that wrote it.
    pub domain: String,
    /// Task full name.
    pub task: String,
    /// Cache version the entry was written under.
    pub version: String,
    /// The output, inline or a reference to the object store (never copied).
    #[serde(skip)]
    pub output: Payload,
    /// When it was written (µs).
    pub created_at: i64,
}

/// An attempt waiting for a worker of its environment (SPEC §3.1): what the queue holds and
/// [`crate::Store::lease`] hands out.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct QueuedAttempt {
    /// The run.
    pub run: RunId,
    /// The action.
    pub action: ActionId,
    /// Attempt number (1-based).
    pub attempt: u32,
    /// The environment whose workers may run it.
    pub env: String,
    /// Full task name.
    pub task: String,
}

/// A leased attempt. `id` is the fencing token: a completion is accepted only with the current
/// lease of the attempt, from the worker that holds it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Lease {
    /// Lease id, never reused.
    pub id: u64,
    /// The worker holding it.
    pub worker: String,
    /// When it expires unless the worker heartbeats (µs).
    pub expires_at: i64,
    /// Times the attempt was requeued because its worker was lost.
    pub system_retries: u32,
    /// The attempt.
    pub attempt: QueuedAttempt,
}

/// An attempt in the queue as it is now: leased or waiting.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct QueueEntry {
    /// The attempt.
    pub attempt: QueuedAttempt,
    /// Its current lease (id, worker), when leased.
    pub lease: Option<(u64, String)>,
    /// Times the attempt was requeued because its worker was lost.
    pub system_retries: u32,
}

/// How many attempts a queue holds.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct QueueDepth {
    /// The queue (environment, or `env@version` in cluster mode).
    pub queue: String,
    /// Attempts waiting for a worker.
    pub waiting: u64,
    /// Attempts leased to a worker.
    pub leased: u64,
}

/// A concurrency limit shared by several queues: at most `limit` attempts of the queues whose
/// names start with `group` leased at once (an environment's `max_concurrency` over its
/// queues `env@version`, one per code version, with `group` = `env@`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Cap {
    /// The queues' common name prefix.
    pub group: String,
    /// The most attempts of those queues leased at once.
    pub limit: u32,
}

/// What the reaper did with expired leases.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Reaped {
    /// Attempts back in the queue (one more system retry each).
    pub requeued: Vec<QueuedAttempt>,
    /// Attempts removed after too many lost workers: their actions fail.
    pub gave_up: Vec<QueuedAttempt>,
}

/// A registered worker.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct WorkerRecord {
    /// Worker id.
    pub id: String,
    /// Its environment.
    pub env: String,
    /// Content hash of its binary.
    pub version: String,
    /// Registration time (µs).
    pub registered_at: i64,
    /// Last sign of life (µs).
    pub seen_at: i64,
}

/// What one attempt printed: the output of the worker process that ran it (stdout and stderr,
/// as the worker captured them while the attempt ran), recorded by a control plane when the
/// attempt's completion arrives. The worker keeps the last part only (see `dropped`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AttemptLog {
    /// The run.
    pub run: RunId,
    /// The action.
    pub action: ActionId,
    /// Attempt number (1-based).
    pub attempt: u32,
    /// The lease it ran under (an attempt requeued after its worker was lost runs again under
    /// another lease, with the same attempt number).
    pub lease: u64,
    /// The worker that ran it.
    pub worker: String,
    /// The worker's process id.
    pub pid: u32,
    /// The worker's environment.
    pub env: String,
    /// Full task name.
    pub task: String,
    /// When the attempt started in the worker (µs).
    pub started_at: i64,
    /// When it ended (µs).
    pub ended_at: i64,
    /// Whether it succeeded.
    pub ok: bool,
    /// The bytes printed (the last ones, when there were more than the worker keeps).
    pub text: Vec<u8>,
    /// How many bytes were printed before `text` and dropped.
    pub dropped: u64,
    /// How many other attempts ran in the same process while this one ran: their output is
    /// interleaved with this one's in `text`.
    pub overlapping: u32,
}
