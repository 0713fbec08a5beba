//! The worker protocol: one set of messages for both sides (SPEC §3.1). The operations are the
//! methods of [`WorkerApi`](super::WorkerApi); over HTTP (the only transport today, see
//! `http.rs`) bodies are MessagePack (`rmp-serde`, named fields) on loopback, and every request
//! names the worker it comes from.
//!
//! | path              | request            | response            |
//! |-------------------|--------------------|---------------------|
//! | `/v1/register`    | [`Register`]       | [`Registered`]      |
//! | `/v1/lease`       | [`LeaseRequest`]   | [`LeaseResponse`]   |
//! | `/v1/heartbeat`   | [`Heartbeat`]      | [`HeartbeatReply`]  |
//! | `/v1/complete`    | [`CompleteBatch`]  | [`CompleteReply`]   |
//! | `/v1/submit`      | [`SubmitBatch`]    | `()`                |
//! | `/v1/results`     | [`ResultsRequest`] | [`ResultsReply`]    |
//! | `/v1/cancel`      | [`CancelCalls`]    | `()`                |
//! | `/v1/trace/lookup`| [`TraceLookup`]    | [`Checkpoint`]      |
//! | `/v1/trace/record`| [`TraceRecord`]    | `()`                |
//!
//! Payloads travel as bytes, except between a control plane whose object store is `s3://` and
//! a worker that can open it: [`Registered::object_store`] names the store, the worker asks for
//! references ([`LeaseRequest::direct`]) and sends them ([`AttemptOutcome::Stored`],
//! [`ChildCall::inputs_ref`]) for payloads over the threshold, reading and writing the objects
//! itself; it gets its children's offloaded outputs as references too
//! ([`ResultsRequest::direct`], [`ChildResult::output_ref`]) and records and reads trace
//! checkpoints by reference ([`TraceRecord::output_ref`], [`TraceLookup::direct`]). Small
//! payloads are always bytes.
//!
//! Every request but `register` carries the worker's token (`Authorization: Bearer TOKEN`);
//! `register` carries the engine's admission secret instead (see `auth.rs`).
//!
//! A refused request answers HTTP 401 (no valid credential), 403 (the request names another
//! worker, or an attempt the worker does not hold), 409 (stale lease, retired or unknown
//! worker, engine shutting down), 400 (a message that does not decode), 413 (a body or batch
//! over the caps: [`MAX_BATCH`], [`body_limit`]) or 500 (the engine could not carry it out),
//! with an [`ErrorReply`]; the [`Refusal`](super::Refusal) of
//! [`Error::Refused`](super::Error::Refused) on the worker's side.

use serde::{Deserialize, Serialize};
use weir_core::{ActionId, ErrorKind, Failure};
use weir_store::RunId;

use crate::Error;

/// Most messages of one kind in one request (completions, child calls, cancellations).
pub const MAX_BATCH: usize = 4096;

/// Payload bytes a worker puts in one batch; a single larger payload travels alone.
pub const BATCH_BYTES: usize = 8 << 20;

/// The largest request body the engine reads, given the largest inline limit of any task:
/// a trace record (inputs and output, each at that limit) or a batch of [`BATCH_BYTES`], plus
/// room for the envelope.
pub fn body_limit(max_inline: u64) -> usize {
    let payload = usize::try_from(max_inline).unwrap_or(usize::MAX);
    payload
        .saturating_mul(2)
        .max(BATCH_BYTES)
        .saturating_add(1 << 20)
}

/// What every request tells about itself, for the transport's checks before it reaches the
/// engine: the worker it comes from (must be the one its token names) and its batch size.
pub trait Request {
    /// The worker the request names.
    fn worker(&self) -> &str;
    /// How many messages it batches (at most [`MAX_BATCH`]).
    fn items(&self) -> usize {
        1
    }
}

/// A worker's first request: asks for its token, presenting the engine's admission secret.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Register {
    /// Worker id (given by the executor on the command line).
    pub worker: String,
    /// A worker of a control plane (`weir serve`) says what it is; an engine's own workers
    /// send nothing (the engine launched them).
    #[serde(default)]
    pub cluster: Option<ClusterWorker>,
}

/// What a worker of a control plane is: its environment and code version, and the settings of
/// every task of that version (the control plane runs no user code).
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct ClusterWorker {
    /// The environment whose actions it runs.
    pub env: String,
    /// Content hash of its binary.
    pub version: String,
    /// The settings of the tasks of its version.
    pub tasks: Vec<crate::cluster::TaskSpec>,
}

/// The worker's token, to present on every further request.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Registered {
    /// The token.
    pub token: String,
    /// A control plane whose object store workers can reach themselves (`s3://`) names it
    /// here: a worker that can open it with its own credentials reads and writes payloads
    /// over the threshold there directly ([`LeaseRequest::direct`]). `None` from an engine,
    /// from a control plane on a `file://` store, and from an older peer.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub object_store: Option<ObjectStoreOffer>,
    /// An engine names its own object store here (a `file://` directory on the workers'
    /// machine) for reference data only (`weir::File`, `Dir`, `DataFrame`): its workers read
    /// and write those bytes there themselves, while payloads still go through the engine.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reference_store: Option<String>,
}

/// The control plane's object store as offered to its workers at registration.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ObjectStoreOffer {
    /// Its URL (`s3://BUCKET[/PREFIX]`); the worker opens it with the `AWS_*` settings of its
    /// own environment.
    pub url: String,
    /// Payloads over this many bytes go to the store; smaller ones stay inline in messages.
    pub inline_threshold: u64,
}

/// A payload in the control plane's object store, as a worker with direct access names it:
/// the object's key (relative to the store's URL), its size and its content hash (blake3,
/// lower-case hex, as [`weir_core::payload::content_hash`] makes it). The control plane takes
/// only the key it expects for the message (the attempt's output, the child's inputs), checks
/// that the object is there with that size, and records the reference; the hash is checked on
/// every read.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PayloadRef {
    /// Object key, e.g. `RUN/ACTION/ATTEMPT/LEASE/outputs`.
    pub key: String,
    /// Size in bytes.
    pub size: u64,
    /// blake3 of the bytes, lower-case hex.
    pub hash: String,
}

impl PayloadRef {
    /// The reference of an offloaded payload; `None` for an inline one or one without hash.
    pub fn of(payload: &weir_core::Payload) -> Option<PayloadRef> {
        match payload {
            weir_core::Payload::Offloaded {
                path,
                size,
                hash: Some(hash),
            } => Some(PayloadRef {
                key: path.clone(),
                size: *size,
                hash: hash.clone(),
            }),
            _ => None,
        }
    }

    /// The payload as recorded.
    pub fn to_payload(&self) -> weir_core::Payload {
        weir_core::Payload::Offloaded {
            path: self.key.clone(),
            size: self.size,
            hash: Some(self.hash.clone()),
        }
    }
}

/// Leases up to `max` queued actions of the worker's environment; waits up to the engine's
/// long-poll time when none is queued.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct LeaseRequest {
    /// Worker id (given by the executor on the command line).
    pub worker: String,
    /// At most this many actions (the worker's free slots).
    pub max: u32,
    /// The highest lease id the worker has received so far (0: none yet). Leases the engine
    /// granted it above that never reached it (their lease response failed or was lost): the
    /// engine puts them back at the front of their queue before it leases again. `None`: not
    /// tracked, nothing is put back.
    #[serde(default)]
    pub received: Option<u64>,
    /// The worker reads the control plane's object store itself: inputs over the threshold
    /// come as [`LeasedAction::inputs_ref`] instead of bytes. `false` (an older worker, or one
    /// that could not open the store): bytes.
    #[serde(default)]
    pub direct: bool,
}

/// Leased actions, or the order to stop.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct LeaseResponse {
    /// The actions; empty when the long poll timed out.
    pub actions: Vec<LeasedAction>,
    /// The worker is retired: finish what it runs and exit.
    pub shutdown: bool,
}

/// One leased attempt. `(attempt, lease)` is its fencing token: a completion is accepted only
/// while the lease is current.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct LeasedAction {
    /// Lease id (unique per engine process).
    pub lease: u64,
    /// Run id.
    pub run: RunId,
    /// Run name (for logs and payload keys).
    pub run_name: String,
    /// Action id.
    pub action: ActionId,
    /// Attempt number (1-based).
    pub attempt: u32,
    /// Full task name (`env.task`).
    pub task: String,
    /// Canonical inputs (empty when they come as `inputs_ref`).
    #[serde(with = "serde_bytes")]
    pub inputs: Vec<u8>,
    /// Children and traces may already be recorded (resumed run, retry, system retry).
    pub check_store: bool,
    /// The inputs, in the object store, for a worker that asked for references
    /// ([`LeaseRequest::direct`]): it reads them there.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub inputs_ref: Option<PayloadRef>,
}

/// One heartbeat per worker (not per action).
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Heartbeat {
    /// Worker id.
    pub worker: String,
}

/// What the worker must do after a heartbeat.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct HeartbeatReply {
    /// Leases to stop running (timeout, abort, caller gone).
    pub cancelled: Vec<u64>,
    /// The worker is retired.
    pub shutdown: bool,
}

/// How an attempt ended in the worker.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub enum AttemptOutcome {
    /// Canonical output bytes.
    Output(#[serde(with = "serde_bytes")] Vec<u8>),
    /// The output, written by the worker to the control plane's object store under
    /// `RUN/ACTION/ATTEMPT/LEASE/outputs` (see [`Registered::object_store`]).
    Stored(PayloadRef),
    /// The task's error, with everything needed to rebuild it (retryability included).
    Error(RemoteError),
}

/// A task error as sent over the wire.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct RemoteError {
    /// Kind.
    pub kind: ErrorKind,
    /// Message.
    pub message: String,
    /// Source chain.
    pub chain: Vec<String>,
    /// The failed child, when the error comes from a child call.
    pub child: Option<Failure>,
}

/// Completion of one leased attempt.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Completion {
    /// Lease id.
    pub lease: u64,
    /// The run (a control plane finds the lease by run and action).
    #[serde(default)]
    pub run: Option<RunId>,
    /// Attempt number (the other half of the fencing token).
    pub attempt: u32,
    /// Action id (for error messages).
    pub action: ActionId,
    /// The outcome.
    pub outcome: AttemptOutcome,
    /// What the worker's process printed while the attempt ran, when a control plane's worker
    /// captured something (none otherwise: an engine's workers write theirs to files).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub log: Option<AttemptOutput>,
    /// What the worker measured of the attempt (phase timings); none from an older worker.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub phases: Option<WorkerPhases>,
}

/// Where a leased attempt's time went on its worker (µs; SPEC §9.3).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct WorkerPhases {
    /// From the lease's arrival to the task's code (a free slot).
    pub start: u64,
    /// Reading the inputs (from the object store when by reference) and decoding them.
    pub download: u64,
    /// The task's own code.
    pub exec: u64,
    /// Encoding the output and storing it (to the object store when by reference).
    pub output: u64,
    /// From the lease's arrival to the completion handed to the sender: what the engine sees
    /// beyond this is delivery (both ways).
    pub held: u64,
}

/// Most bytes of an attempt's output a worker keeps (the last ones) and a control plane
/// records.
pub const OUTPUT_CAP: usize = 1 << 20;

/// What a worker's process printed (stdout and stderr) while one attempt ran.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct AttemptOutput {
    /// The bytes, at most [`OUTPUT_CAP`] (the last ones: what came before is dropped, up to
    /// the end of a line).
    #[serde(with = "serde_bytes")]
    pub text: Vec<u8>,
    /// How many bytes came before `text` and were dropped.
    pub dropped: u64,
    /// How many other attempts ran in the process at some point while this one ran (their
    /// output is interleaved with this one's).
    pub overlapping: u32,
    /// When the attempt started (µs).
    pub started_at: i64,
    /// When it ended (µs).
    pub ended_at: i64,
    /// The worker's process id.
    pub pid: u32,
}

/// Completions, batched.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct CompleteBatch {
    /// Worker id.
    pub worker: String,
    /// The completions.
    pub completions: Vec<Completion>,
}

/// Completions that were not accepted.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct CompleteReply {
    /// `(lease, why)` of each rejected completion (fenced-off attempts).
    pub rejected: Vec<(u64, String)>,
}

/// A child call made by a task running in a worker. The worker derives `id` exactly as the
/// in-process path does (`ActionId::derive(parent, (task, inputs hash, seq, group))`).
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct ChildCall {
    /// Worker-local call id, echoed in the result.
    pub call: u64,
    /// Run id.
    pub run: RunId,
    /// Parent action id.
    pub parent: ActionId,
    /// Derived child id.
    pub id: ActionId,
    /// Full task name.
    pub task: String,
    /// Canonical inputs (empty when they come as `inputs_ref`).
    #[serde(with = "serde_bytes")]
    pub inputs: Vec<u8>,
    /// Group name.
    pub group: Option<String>,
    /// Look for a recorded outcome first.
    pub check_store: bool,
    /// The inputs, written by the worker to the control plane's object store under the
    /// child's key `RUN/CHILD/inputs` (see [`Registered::object_store`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub inputs_ref: Option<PayloadRef>,
}

impl ChildCall {
    /// Size of the inputs, whether carried or referenced.
    pub fn inputs_size(&self) -> u64 {
        match &self.inputs_ref {
            Some(r) => r.size,
            None => self.inputs.len() as u64,
        }
    }
}

/// Child calls, batched. Answered at once; outcomes come back through `/v1/results`.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct SubmitBatch {
    /// Worker id.
    pub worker: String,
    /// The calls.
    pub calls: Vec<ChildCall>,
}

/// Long poll for finished child calls of this worker.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct ResultsRequest {
    /// Worker id.
    pub worker: String,
    /// The worker reads the control plane's object store itself: a child's offloaded output
    /// comes as [`ChildResult::output_ref`] instead of bytes. `false`: bytes.
    #[serde(default)]
    pub direct: bool,
}

/// The outcome of one child call.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct ChildResult {
    /// The worker-local call id.
    pub call: u64,
    /// Output bytes or the child's failure (or why the call itself failed). The bytes are
    /// empty when the output comes as `output_ref`.
    pub outcome: Result<serde_bytes::ByteBuf, RemoteError>,
    /// The child's output in the object store, for a worker that asked for references
    /// ([`ResultsRequest::direct`]): it reads it there, checking size and hash.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub output_ref: Option<PayloadRef>,
}

/// Finished child calls.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct ResultsReply {
    /// The results; empty when the long poll timed out.
    pub results: Vec<ChildResult>,
    /// The worker is unknown or retired.
    pub shutdown: bool,
}

/// Child calls whose caller stopped waiting.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct CancelCalls {
    /// Worker id.
    pub worker: String,
    /// Worker-local call ids.
    pub calls: Vec<u64>,
}

/// Looks a trace checkpoint up.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct TraceLookup {
    /// Worker id.
    pub worker: String,
    /// Run id.
    pub run: RunId,
    /// Trace action id.
    pub id: ActionId,
    /// The attempt's action making the lookup (the worker must hold it).
    pub parent: ActionId,
    /// The worker reads the control plane's object store itself: an offloaded output comes
    /// as [`Checkpoint::Stored`] instead of bytes. `false`: bytes.
    #[serde(default)]
    pub direct: bool,
}

pub use crate::trace::Checkpoint;

/// Records a trace checkpoint; answered after its commit.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct TraceRecord {
    /// Worker id.
    pub worker: String,
    /// Run id.
    pub run: RunId,
    /// Trace action id.
    pub id: ActionId,
    /// Parent (the task's action).
    pub parent: ActionId,
    /// Trace name.
    pub name: String,
    /// Canonical inputs (empty when they come as `inputs_ref`).
    #[serde(with = "serde_bytes")]
    pub inputs: Vec<u8>,
    /// Start time (µs).
    pub started_at: i64,
    /// Output bytes or failure (empty bytes when the output comes as `output_ref`).
    pub outcome: Result<serde_bytes::ByteBuf, Failure>,
    /// The inputs, written by the worker to the control plane's object store under the
    /// trace's key `RUN/TRACE/inputs` (see [`Registered::object_store`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub inputs_ref: Option<PayloadRef>,
    /// The output, written by the worker under `RUN/TRACE/1/LEASE/outputs`, LEASE being the
    /// lease of the attempt that records it (a fenced-off attempt never replaces the object of
    /// the record that was accepted).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub output_ref: Option<PayloadRef>,
}

macro_rules! requests {
    ($($t:ty $(=> $items:ident)?),* $(,)?) => {$(
        impl Request for $t {
            fn worker(&self) -> &str {
                &self.worker
            }
            $(fn items(&self) -> usize {
                self.$items.len()
            })?
        }
    )*};
}

requests!(
    Register,
    LeaseRequest,
    Heartbeat,
    CompleteBatch => completions,
    SubmitBatch => calls,
    ResultsRequest,
    CancelCalls => calls,
    TraceLookup,
    TraceRecord,
);

/// Body of a refused request.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct ErrorReply {
    /// What went wrong and what to do.
    pub message: String,
}

/// Converts a task error for the wire.
pub(crate) fn to_remote(e: &Error) -> RemoteError {
    RemoteError {
        kind: e.kind(),
        message: e.message().to_string(),
        chain: e.chain().to_vec(),
        child: e.child().cloned(),
    }
}

/// Rebuilds a task error from the wire.
pub(crate) fn from_remote(r: RemoteError) -> Error {
    match r.child {
        Some(child) if r.kind == ErrorKind::ChildFailed => Error::from_child(child),
        _ => {
            let mut e = Error::with_kind(r.kind, r.message);
            for c in r.chain {
                e = e.context_below(c);
            }
            e
        }
    }
}

/// A system error for the wire (the call itself failed, not the task).
pub(crate) fn system_error(message: String) -> RemoteError {
    RemoteError {
        kind: ErrorKind::System,
        message,
        chain: vec![],
        child: None,
    }
}
