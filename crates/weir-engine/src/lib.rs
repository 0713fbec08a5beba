//! weir's control plane and in-process executor.
//!
//! - [`Engine`]: runs, the live-action table, child submission with deterministic ids and
//!   recovery from the store, retries, timeouts, cancellation.
//! - [`TaskCall`]: what a task function returns; awaiting it inside a task makes a child action.
//! - [`registry`]: tasks registered at compile time.
//! - [`RunHandle`] / [`Run`]: waiting on and aborting runs.
//! - [`worker`]: worker processes: the worker protocol, the worker mode of a user's binary and
//!   the process executor (SPEC §7).
//!
//! The engine's decisions are kept close to the data they need: the one lifecycle table lives
//! in `weir-core`, durable writes go through `weir-store`'s ordered writer, and a caller learns
//! an outcome only from the commit acknowledgement.

mod call;
mod decide;
mod engine;
mod error;
mod limits;
pub mod registry;
mod run;
mod trace;
pub mod worker;

pub use call::{
    CapturedContext, TaskArgs, TaskCall, TaskContext, capture_context, context, in_task,
    with_context,
};
pub use engine::error::Error as EngineError;
pub use engine::{Engine, EngineOptions, RunOutcome};
pub use error::{Error, Result, StdError};
pub use run::{CacheLookupScope, Progress, Run, RunContext, RunHandle};
pub use trace::{durable, trace_call, trace_call_infallible, trace_stream};
