//! Worker processes (SPEC §3, §7): the worker protocol, its HTTP transport on loopback, the
//! worker side that runs leased actions in a process of the user's binary, and the process
//! executor that starts, scales and retires those processes.
//!
//! Why this lives in `weir-engine` and not in a crate of its own: both halves need engine
//! internals. A task running in a worker keeps the same `TaskCtx` as in-process (child ids,
//! `seq` counters, the slot released while waiting on children), whose backend is either the
//! local [`Engine`](crate::Engine) or the [`client`] of this protocol; and the server side calls
//! the engine's own child submission, trace checkpoints and attempt loop. A separate crate would
//! have to depend on the engine and be depended on by it.
//!
//! - [`protocol`]: the messages, shared by both sides (one protocol, two transports: the
//!   in-process executor calls the same engine functions the server calls).
//! - `client`: the worker's HTTP client, with batching loops for child submissions, results
//!   and completions.
//! - [`run_worker`]: the worker mode of the user's binary (`<binary> worker --env NAME
//!   --engine URL`).
//! - `executor`: the engine side: queues per environment, leases with fencing tokens,
//!   heartbeats, replicas kept between `min` and `max` of the environment's `ReusePolicy`, a
//!   fresh process per action for an environment without one, system retries.
//!
//! # Slots and nested calls
//!
//! A worker runs at most `concurrency` attempts at once, but an attempt that waits on a child
//! call gives its slot back until the child finishes (the same rule as the run-level limit of
//! the in-process path). So an environment with `replicas 1..=1, concurrency 1` whose task calls
//! another task of the same environment does not deadlock: the parent waits without a slot, the
//! one replica leases and runs the child, then the parent takes its slot again.

pub(crate) mod client;
pub(crate) mod executor;
pub mod protocol;
mod runtime;

use std::path::PathBuf;
use std::time::Duration;

pub use executor::{DecisionRecord, ReplicaRecord, WorkersSnapshot, read_snapshot};
pub use runtime::{WorkerConfig, run_worker};

/// Where the engine runs task attempts.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum ExecutorKind {
    /// In the engine's own process (default).
    #[default]
    InProcess,
    /// In worker processes of the same binary (`<binary> worker ...`), kept per environment
    /// according to its `ReusePolicy`, or one fresh process per action without one.
    Processes,
}

/// Settings of the process executor. Every default is written on its field.
#[derive(Clone, Debug)]
pub struct WorkerOptions {
    /// The program started as a worker. Default: `std::env::current_exe()` (the user's binary,
    /// whose `main` must hand `worker ...` arguments to `weir::cli::main()`).
    pub program: Option<PathBuf>,
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
    #[error("the engine refused {path} (HTTP {status}): {message}")]
    Refused {
        /// Request path.
        path: String,
        /// HTTP status.
        status: u16,
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
    /// A worker process could not be started.
    #[error("cannot start a worker process {program}: {message}")]
    Spawn {
        /// The program.
        program: String,
        /// Why.
        message: String,
    },
}
