//! Worker processes (SPEC §3, §7): the worker protocol, its HTTP transport on loopback, the
//! worker side that runs leased actions in a process of the user's binary, and the process
//! executor that starts, scales and retires those processes.
//!
//! Why this lives in `weir-engine` and not in a crate of its own: both halves need engine
//! internals. A task running in a worker keeps the same `TaskCtx` as in-process (child ids,
//! `seq` counters, the slot released while waiting on children), whose backend is either the
//! local [`Engine`](crate::Engine) or a worker's connection to the engine; and the engine side
//! calls the engine's own child submission, trace checkpoints and attempt loop. A separate crate
//! would have to depend on the engine and be depended on by it.
//!
//! # One contract for out-of-process workers; the in-process executor is a direct call
//!
//! The worker protocol ([`protocol`], and the [`WorkerApi`] trait with one method per message)
//! is the one contract between the engine and a worker outside its process. The engine
//! implements it once (`service.rs`); HTTP is an adapter on each side (`http.rs`); the worker's
//! loops take any [`WorkerApi`], so a worker can also run against the engine in the same process
//! ([`run_worker_with`]).
//!
//! The in-process executor (the default, [`ExecutorKind::InProcess`]) is *not* a transport of
//! this protocol: the engine's attempt loop invokes the task body directly, and a child call or
//! trace checkpoint from that body calls the engine's functions directly. That is the
//! ~13 µs-per-action path; leasing through queues, fencing tokens, heartbeats and encoding and
//! decoding each message would cost more than the work it carries. What the two paths share is
//! the engine's functions (child submission, checkpoints), the task context and the child-id
//! derivation, not the messages.
//!
//! # Modules
//!
//! - [`protocol`]: the messages, shared by both sides; `api`: the [`WorkerApi`] trait.
//! - `service`: the engine's implementation of [`WorkerApi`], over the lease table and the
//!   engine; `http`: the HTTP server (an adapter over any [`WorkerApi`]) and the HTTP client
//!   (an implementation of it).
//! - `executor`: the process executor: queues an attempt, starts workers (`pool`, behind a
//!   `Launcher`), scales them (`scaling`), records what it did (`journal`).
//! - `leases`: per-environment queues, leases with fencing tokens, system retries — plain state.
//! - [`run_worker`]: the worker mode of the user's binary (`<binary> worker --env NAME
//!   --engine URL`); `client`: its connection to the engine (batching loops over a
//!   [`WorkerApi`]); `remote_run`: a task's child calls and checkpoints from a worker;
//!   `worker_log`: its structured log ([`WorkerLogRecord`]), read by `get logs`; `capture`:
//!   a control plane's worker keeps what each attempt printed, sent with its completion.
//!
//! # Slots and nested calls
//!
//! A worker runs at most `concurrency` attempts at once, but an attempt that waits on a child
//! call gives its slot back until the child finishes (the same rule as the run-level limit of
//! the in-process path). So an environment with `replicas 1..=1, concurrency 1` whose task calls
//! another task of the same environment does not deadlock: the parent waits without a slot, the
//! one replica leases and runs the child, then the parent takes its slot again.

mod api;
mod auth;
mod capture;
pub(crate) mod client;
pub(crate) mod executor;
mod http;
mod journal;
mod leases;
mod pool;
pub mod protocol;
mod remote_run;
mod runtime;
mod scaling;
mod service;
mod worker_log;

use std::path::PathBuf;
use std::time::Duration;

pub use api::{ApiFuture, WorkerApi};
pub(crate) use auth::Credentials;
pub(crate) use http::{HttpClient, router as worker_router};
pub use journal::{DecisionRecord, ReplicaRecord, WorkersSnapshot, read_snapshot};
pub use runtime::{WorkerConfig, run_worker, run_worker_with};
pub use worker_log::{WorkerEvent, WorkerLogRecord, read_worker_log};

/// A refusal of a worker-protocol request (the engine's and the control plane's).
pub(crate) fn refused(request: &str, reason: Refusal, message: impl Into<String>) -> Error {
    Error::Refused {
        request: request.into(),
        reason,
        message: message.into(),
    }
}

/// A fresh admission secret for an engine's worker API (see `auth.rs`).
pub(crate) fn admission_secret() -> Result<String, String> {
    auth::random_token()
        .map_err(|e| format!("cannot draw random bytes for the worker API's secret: {e}"))
}

/// Where the engine runs task attempts.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum ExecutorKind {
    /// In the engine's own process (default).
    #[default]
    InProcess,
    /// In worker processes of the same binary (`<binary> worker ...`), kept per environment
    /// according to its `ReusePolicy`, or one fresh process per action without one.
    Processes,
    /// Environments with a `ReusePolicy` in worker processes (kept according to it), the others
    /// in the engine's process (how weir's Python front runs reusable environments).
    Reusable,
}

impl ExecutorKind {
    /// The name the CLI's `--workers` takes and a run records: `in-process`, `process` or
    /// `reusable`.
    pub fn as_str(self) -> &'static str {
        match self {
            ExecutorKind::InProcess => "in-process",
            ExecutorKind::Processes => "process",
            ExecutorKind::Reusable => "reusable",
        }
    }

    /// Whether attempts of `env` run in worker processes.
    pub fn in_workers(self, env: &weir_core::spec::TaskEnvironment) -> bool {
        match self {
            ExecutorKind::InProcess => false,
            ExecutorKind::Processes => true,
            ExecutorKind::Reusable => env.reuse_policy().is_some(),
        }
    }

    /// Parses [`ExecutorKind::as_str`].
    pub fn parse(s: &str) -> Option<ExecutorKind> {
        [
            ExecutorKind::InProcess,
            ExecutorKind::Processes,
            ExecutorKind::Reusable,
        ]
        .into_iter()
        .find(|k| k.as_str() == s)
    }
}

/// Settings of the process executor. Every default is written on its field.
#[derive(Clone, Debug)]
pub struct WorkerOptions {
    /// The program started as a worker. Default: `std::env::current_exe()` (the user's binary,
    /// whose `main` must hand `worker ...` arguments to `weir::cli::main()`).
    pub program: Option<PathBuf>,
    /// Arguments put before `worker ...` (for a program that is an interpreter: `["-m",
    /// "weir", "--import", "app.py"]` starts `python -m weir --import app.py worker ...`).
    /// Default: none.
    pub program_args: Vec<String>,
    /// How often a worker sends its heartbeat. Default 500 ms.
    pub heartbeat_interval: Duration,
    /// A worker silent this long is presumed dead: killed, its leases requeued. Default 5 s.
    pub heartbeat_timeout: Duration,
    /// A started worker that has not leased or heartbeaten within this is presumed dead.
    /// Default 20 s.
    pub startup_timeout: Duration,
    /// How long a lease or results request waits for work. Default 5 s.
    pub long_poll: Duration,
    /// How often scaling decisions are taken. Default 50 ms.
    pub tick: Duration,
    /// Requeues of one attempt after its worker died before it fails (system retries, apart
    /// from the task's own retries). Default 3.
    pub max_system_retries: u32,
    /// Replaces every environment's `idle_ttl` (tests). Default: unset.
    pub idle_ttl: Option<Duration>,
    /// Replaces every environment's `scaledown_ttl` (tests). Default: unset.
    pub scaledown_ttl: Option<Duration>,
}

impl Default for WorkerOptions {
    fn default() -> Self {
        WorkerOptions {
            program: None,
            program_args: Vec::new(),
            heartbeat_interval: Duration::from_millis(500),
            heartbeat_timeout: Duration::from_secs(5),
            startup_timeout: Duration::from_secs(20),
            long_poll: Duration::from_secs(5),
            tick: Duration::from_millis(50),
            max_system_retries: 3,
            idle_ttl: None,
            scaledown_ttl: None,
        }
    }
}

impl WorkerOptions {
    /// Applies `WEIR_WORKER_IDLE_TTL_MS`, `WEIR_WORKER_SCALEDOWN_TTL_MS`,
    /// `WEIR_WORKER_HEARTBEAT_MS` and `WEIR_WORKER_HEARTBEAT_TIMEOUT_MS` when set.
    pub fn with_env_overrides(mut self) -> Self {
        fn ms(name: &str) -> Option<Duration> {
            std::env::var(name)
                .ok()
                .and_then(|v| v.parse::<u64>().ok())
                .map(Duration::from_millis)
        }
        if let Some(d) = ms("WEIR_WORKER_IDLE_TTL_MS") {
            self.idle_ttl = Some(d);
        }
        if let Some(d) = ms("WEIR_WORKER_SCALEDOWN_TTL_MS") {
            self.scaledown_ttl = Some(d);
        }
        if let Some(d) = ms("WEIR_WORKER_HEARTBEAT_MS") {
            self.heartbeat_interval = d;
        }
        if let Some(d) = ms("WEIR_WORKER_HEARTBEAT_TIMEOUT_MS") {
            self.heartbeat_timeout = d;
        }
        self
    }
}

/// A failure of the worker protocol.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The engine could not be reached.
    #[error("cannot reach the engine at {url}: {message}")]
    Unreachable {
        /// Engine URL.
        url: String,
        /// Why.
        message: String,
    },
    /// The engine refused the request.
    #[error("the engine refused {request} ({reason}): {message}")]
    Refused {
        /// The request (its path over HTTP).
        request: String,
        /// Why, in kind.
        reason: Refusal,
        /// The engine's explanation.
        message: String,
    },
    /// A message did not encode or decode.
    #[error("worker protocol message {what}: {message}")]
    Codec {
        /// Which message.
        what: String,
        /// Why.
        message: String,
    },
    /// The worker's environment is unknown to this binary.
    #[error(
        "environment {0:?} has no task in this binary; start the worker from the binary that defines it"
    )]
    UnknownEnvironment(String),
    /// The loopback server could not start.
    #[error("cannot start the worker API on 127.0.0.1: {0}")]
    Server(String),
    /// The engine stopped answering the worker: nothing the worker runs could be delivered any
    /// more, so it stops (the engine, if it comes back, requeues its leases).
    #[error(
        "the engine stopped answering: {failures} {requests} in a row failed, the last with: {last}"
    )]
    EngineLost {
        /// Which requests failed (`heartbeats`, `lease requests`).
        requests: &'static str,
        /// How many in a row.
        failures: u32,
        /// The last failure.
        last: String,
    },
    /// A worker process could not be started.
    #[error("cannot start a worker process {program}: {message}")]
    Spawn {
        /// The program.
        program: String,
        /// Why.
        message: String,
    },
}

/// Why the engine refused a request of the worker protocol (over HTTP: 401, 403, 409, 400,
/// 413, 500).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Refusal {
    /// No valid credential: a missing or unknown token, or a wrong admission secret.
    Unauthorized,
    /// The credential is valid but does not allow this: the request names another worker,
    /// or an attempt the worker does not hold.
    Forbidden,
    /// The body or the batch is over the engine's caps.
    TooLarge,
    /// The worker is unknown or presumed dead, the run is not live, or the engine is shutting
    /// down: the worker must stop.
    Conflict,
    /// The message did not decode.
    BadRequest,
    /// The engine could not carry the request out (a store or blob error).
    Internal,
}

impl std::fmt::Display for Refusal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Refusal::Unauthorized => "unauthorized",
            Refusal::Forbidden => "forbidden",
            Refusal::TooLarge => "too large",
            Refusal::Conflict => "conflict",
            Refusal::BadRequest => "bad request",
            Refusal::Internal => "internal error",
        })
    }
}
