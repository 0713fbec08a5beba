//! # weir
//!
//! Durable task orchestration for Rust: tasks in environments, runs made of actions, tasks
//! calling tasks, fan-out with [`map`], retries, timeouts and crash recovery by deterministic
//! action ids. Runs embedded with zero set-up (SQLite + local files in `./.weir/`).
//!
//! ```no_run
//! use std::sync::LazyLock;
//! use weir::prelude::*;
//!
//! static ENV: LazyLock<TaskEnvironment> = LazyLock::new(|| TaskEnvironment::new("demo"));
//!
//! #[weir::task(env = ENV)]
//! async fn double(x: u64) -> Result<u64> {
//!     Ok(x * 2)
//! }
//!
//! #[weir::task(env = ENV, retries = 2, timeout = "1m")]
//! async fn total(n: u64) -> Result<u64> {
//!     let doubled = weir::map(double, 0..n).fail_fast().await?;
//!     Ok(doubled.into_iter().sum())
//! }
//!
//! # async fn demo() -> anyhow::Result<()> {
//! let runner = weir::Runner::embedded(".weir").await?;
//! let run = runner.run(total(100)).await?;
//! assert_eq!(run.wait().await?, 9900);
//! # Ok(()) }
//! ```
//!
//! A binary that calls [`cli::main`] gets the command line: `run`, `resume`, `abort`,
//! `get runs|actions|io|workers|logs`, `cache list|clear`, `tasks`, `ui` and `worker`.

extern crate self as weir;

mod batch_map;
pub mod cli;
#[cfg(feature = "dataframe")]
mod dataframe;
mod file;
mod map;
mod remote;
mod runner;
mod worker_once;

pub use batch_map::{BatchMap, BatchMapFailFast, auto_batch_size};
#[cfg(feature = "dataframe")]
pub use dataframe::{Column, DataFrame, DataFrameWriter};
pub use file::{Dir, File};
/// The Arrow crates `weir::DataFrame` is built on (the versions its batches and schemas are of).
#[cfg(feature = "dataframe")]
pub mod arrow {
    pub use arrow_array as array;
    pub use arrow_schema as schema;
}
pub use map::{Map, MapFailFast, map};
pub use remote::{RemoteRun, RemoteRunner};
pub use runner::Runner;
pub use weir_batch as batch;
pub use weir_core::spec::{
    Cache, CacheBehavior, CachePolicy, Resources, RetryPolicy, ReusePolicy, ReuseScope,
    TaskEnvironment, Timeouts,
};
pub use weir_core::{ActionId, ActionStatus, ErrorKind, Failure};
pub use weir_engine::durable;
/// Worker processes (SPEC §7): where attempts run and the process executor's settings. (The
/// wire protocol is internal to weir.)
pub mod worker {
    pub use weir_engine::worker::{ExecutorKind, WorkerOptions, read_snapshot};
}
pub use weir_engine::{
    CacheLookupScope, Engine, EngineError, EngineOptions, Error, Progress, Result, Run, RunContext,
    RunHandle, TaskCall, TaskContext, context, in_task,
};
pub use weir_macros::{task, trace};
pub use worker_once::WorkerOnce;

/// The names most task code needs.
pub mod prelude {
    pub use crate::{
        Cache, CachePolicy, Error, ErrorKind, Resources, Result, RetryPolicy, ReusePolicy,
        RunContext, Runner, TaskEnvironment, Timeouts, map,
    };
    pub use serde::{Deserialize, Serialize};
}

/// Used by the code `#[weir::task]` generates. Not a public API.
#[doc(hidden)]
pub mod __private {
    use std::sync::LazyLock;

    pub use futures;
    pub use futures::future::BoxFuture;
    pub use inventory;
    pub use serde;
    pub use weir_core::{codec, spec};
    pub use weir_engine::TaskArgs;
    pub use weir_engine::registry::{
        Invoke, Registration, Settings, TaskConfig, TaskDef, TraceRegistration,
    };
    pub use weir_engine::{trace_call, trace_call_infallible, trace_stream};

    use weir_core::ErrorKind;
    use weir_core::spec::TaskEnvironment;

    /// Something that derefs to a `TaskEnvironment` and lives forever.
    pub trait EnvRef: Sync {
        /// The environment.
        fn env(&'static self) -> &'static TaskEnvironment;
    }
    impl EnvRef for TaskEnvironment {
        fn env(&'static self) -> &'static TaskEnvironment {
            self
        }
    }
    impl EnvRef for LazyLock<TaskEnvironment> {
        fn env(&'static self) -> &'static TaskEnvironment {
            self
        }
    }

    /// The environment named by `env = ...`.
    pub fn env_ref<E: EnvRef + ?Sized>(e: &'static E) -> &'static TaskEnvironment {
        e.env()
    }

    static DEFAULT_ENV: LazyLock<TaskEnvironment> =
        LazyLock::new(|| TaskEnvironment::new("default"));

    /// The environment of tasks that name none.
    pub fn default_env() -> &'static TaskEnvironment {
        &DEFAULT_ENV
    }

    /// Compile-time check that a task's argument or output type is a serde type.
    pub const fn assert_serde<T: serde::Serialize + serde::de::DeserializeOwned>() {}

    /// Decodes a task's inputs, naming the task on failure.
    pub fn decode_inputs<T: serde::de::DeserializeOwned>(
        bytes: &[u8],
        task: &str,
    ) -> crate::Result<T> {
        let t = std::time::Instant::now();
        let decoded = codec::decode(bytes);
        weir_engine::record_codec(true, t.elapsed());
        decoded.map_err(|e| {
            crate::Error::with_kind(
                ErrorKind::Codec,
                format!("inputs of task {task} do not decode: {e}"),
            )
            .into_non_recoverable()
        })
    }

    /// Encodes a task's output, naming the task on failure.
    pub fn encode_output<T: serde::Serialize>(out: &T, task: &str) -> crate::Result<Vec<u8>> {
        let t = std::time::Instant::now();
        let encoded = codec::encode(out);
        weir_engine::record_codec(false, t.elapsed());
        encoded.map_err(|e| {
            crate::Error::with_kind(
                ErrorKind::Codec,
                format!("output of task {task} does not encode: {e}"),
            )
        })
    }
}
