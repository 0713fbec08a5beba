//! weir's control plane and in-process executor.
//!
//! - [`Engine`]: runs, the live-action table, child admission with deterministic ids and
//!   recovery from the store, retries, timeouts, cancellation, run ownership. Its boundary
//!   error is [`EngineError`].
//! - `decide`: the engine's rules as plain functions over plain values (admission, caching,
//!   attempt limits, retries, the writes that end an action, takeover of a run), unit-tested
//!   without IO; the async code in `engine/` gathers their inputs and carries out what they
//!   return.
//! - [`TaskCall`]: what a task function returns; awaiting it inside a task makes a child action.
//!   [`context`] tells a running task its run, action and attempt.
//! - [`registry`]: tasks registered at compile time (duplicate names refused).
//! - [`RunHandle`] / [`Run`]: waiting on and aborting runs.
//! - [`worker`]: worker processes: the worker protocol, the worker mode of a user's binary and
//!   the process executor (SPEC §7).
//!
//! Every status change of an action goes through the lifecycle table in `weir-core`
//! (`ActionStatus::take`); durable writes go through the `weir-store` `Store` trait, and a
//! caller learns an outcome only once the commit ticket of the write that holds it resolved.

mod call;
pub mod cluster;
mod decide;
mod engine;
mod error;
mod limits;
pub mod registry;
mod run;
pub mod tls;
mod trace;
pub mod worker;

pub use call::{
    CapturedContext, TaskArgs, TaskCall, TaskContext, capture_context, context, in_task,
    object_store, record_codec, with_context,
};
pub use engine::error::Error as EngineError;
pub use engine::{Engine, EngineOptions, RunOutcome};
pub use error::{Error, Result, StdError};
pub use run::{CacheLookupScope, Progress, Run, RunContext, RunHandle};
pub use trace::{OpenTrace, TraceStart, durable, trace_call, trace_call_infallible, trace_stream};
