//! What clients and the control plane exchange about runs (MessagePack bodies of the routes in
//! [`super::runs`]).

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use weir_core::Failure;
use weir_store::{ActionRecord, RunStatus};

use super::TaskSpec;

/// A run to start: its root task and inputs, and the code version it runs with (with the
/// settings of every task of that version).
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct RunSubmission {
    /// Root task's full name.
    pub task: String,
    /// Canonical inputs.
    #[serde(with = "serde_bytes")]
    pub inputs: Vec<u8>,
    /// The run context (`weir::RunContext`) as JSON text; its `name` names the run.
    pub context: String,
    /// Content hash of the submitting binary.
    pub version: String,
    /// The settings of every task of that version.
    pub tasks: Vec<TaskSpec>,
    /// A new run of an earlier run's task and inputs (`task` and `inputs` are then ignored).
    #[serde(default)]
    pub rerun: Option<RerunOf>,
}

/// The earlier run a submission runs again (`rerun RUN --server`).
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct RerunOf {
    /// The earlier run's name.
    pub run: String,
    /// With `--recover`: the action ids, task or trace names to run again anyway; `None`:
    /// nothing is recovered.
    pub recover: Option<Vec<String>>,
}

/// A cache entry as a client sees it (`cache list`).
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct CacheView {
    /// The key.
    pub key: String,
    /// Task full name.
    pub task: String,
    /// Cache version.
    pub version: String,
    /// Project of the run that wrote it.
    pub project: String,
    /// Domain of the run that wrote it.
    pub domain: String,
    /// When it was written (µs).
    pub created_at: i64,
    /// Size of the output (bytes).
    pub size: u64,
}

impl From<weir_store::CacheEntry> for CacheView {
    fn from(e: weir_store::CacheEntry) -> CacheView {
        CacheView {
            size: e.output.size(),
            key: e.key,
            task: e.task,
            version: e.version,
            project: e.project,
            domain: e.domain,
            created_at: e.created_at,
        }
    }
}

/// One action with its payloads and failed attempts (`get io`).
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct ActionView {
    /// The action (payloads left out).
    pub action: ActionRecord,
    /// Its inputs (canonical bytes).
    pub inputs: Option<serde_bytes::ByteBuf>,
    /// Its output, when it succeeded.
    pub output: Option<serde_bytes::ByteBuf>,
    /// Its failed attempts, oldest first.
    pub failed_attempts: Vec<weir_store::AttemptRecord>,
    /// The URL of the control plane's object store, where references in the payloads point
    /// (`weir::File`: `<store>/raw/<hash>`).
    #[serde(default)]
    pub store: Option<String>,
}

/// A run as a client sees it.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct RunView {
    /// Name.
    pub name: String,
    /// Root task.
    pub task: String,
    /// `running`, `succeeded`, `failed` or `aborted`.
    pub status: String,
    /// Creation time (µs).
    pub created_at: i64,
    /// End time (µs).
    pub ended_at: Option<i64>,
    /// Actions by status.
    pub actions: BTreeMap<String, u64>,
    /// Root output (canonical bytes) of a succeeded run (only from `GET /v1/runs/NAME`).
    pub output: Option<serde_bytes::ByteBuf>,
    /// Failure of a failed run.
    pub error: Option<Failure>,
    /// Code version the run was submitted with.
    pub version: String,
    /// Why nothing moves: no live worker of the run's version for its environment.
    pub waiting: Option<String>,
}

impl RunView {
    /// Whether the run has ended.
    pub fn is_terminal(&self) -> bool {
        self.status != RunStatus::Running.as_str()
    }
}

/// One action of a page with its payloads (`get actions --with-io`).
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct ActionIo {
    /// The action (payloads left out).
    pub action: ActionRecord,
    /// Its inputs (canonical bytes).
    pub inputs: Option<serde_bytes::ByteBuf>,
    /// Its output, when it succeeded.
    pub output: Option<serde_bytes::ByteBuf>,
}

/// A page of actions with their payloads. The control plane holds at most a bounded amount of
/// payload bytes in one answer: past it the page is `cut` short, and the rest of the page
/// starts at the page's offset plus `actions.len()`.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct ActionsWithIo {
    /// The actions, in creation order.
    pub actions: Vec<ActionIo>,
    /// The page ended before its limit for the payloads' size, not for the run's end.
    pub cut: bool,
}

/// What one attempt printed, as its worker captured it (`get logs --server`).
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct AttemptLogView {
    /// Attempt number.
    pub attempt: u32,
    /// The lease it ran under.
    pub lease: u64,
    /// The worker that ran it.
    pub worker: String,
    /// The worker's process id.
    pub pid: u32,
    /// The worker's environment.
    pub env: String,
    /// Full task name.
    pub task: String,
    /// When it started in the worker (µs).
    pub started_at: i64,
    /// When it ended there (µs).
    pub ended_at: i64,
    /// Whether the attempt succeeded.
    pub ok: bool,
    /// The bytes printed (the last ones when `dropped` is not 0).
    pub text: serde_bytes::ByteBuf,
    /// Bytes printed before `text`, not kept.
    pub dropped: u64,
    /// Other attempts that ran in the worker's process meanwhile (their output is
    /// interleaved with this one's).
    pub overlapping: u32,
}

impl From<weir_store::AttemptLog> for AttemptLogView {
    fn from(l: weir_store::AttemptLog) -> AttemptLogView {
        AttemptLogView {
            attempt: l.attempt,
            lease: l.lease,
            worker: l.worker,
            pid: l.pid,
            env: l.env,
            task: l.task,
            started_at: l.started_at,
            ended_at: l.ended_at,
            ok: l.ok,
            text: serde_bytes::ByteBuf::from(l.text),
            dropped: l.dropped,
            overlapping: l.overlapping,
        }
    }
}
