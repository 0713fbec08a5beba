//! The worker protocol as a trait: one method per message of [`protocol`](super::protocol).
//!
//! The engine implements it once (`service.rs`, over the executor's lease table and the
//! engine's own child submission and trace checkpoints). Transports are adapters: the HTTP
//! server (`http.rs`) decodes a request, calls the engine's implementation and encodes the
//! answer; the HTTP client implements the trait by sending the same messages. The worker's
//! loops ([`run_worker_with`](super::run_worker_with)) take any implementation, so a worker can
//! run against the engine in its own process as well as over loopback.

use futures::future::BoxFuture;

use super::Error;
use super::protocol::*;

/// The answer of one protocol call.
pub type ApiFuture<'a, T> = BoxFuture<'a, Result<T, Error>>;

/// The operations of the worker protocol, as the worker sees them. Every request names the
/// worker it comes from; a request from a worker the engine does not know (or presumed dead)
/// is answered with [`Error::Refused`] and [`Refusal::Conflict`](super::Refusal::Conflict), and
/// the worker must stop.
///
/// Over a transport every call is authenticated (see `auth.rs`): [`register`] presents the
/// engine's admission secret and is answered with the worker's token, which the transport
/// presents on every later call. Implemented directly (a worker in the engine's process), the
/// calls are trusted and only `register`'s secret is checked.
///
/// [`register`]: WorkerApi::register
pub trait WorkerApi: Send + Sync + 'static {
    /// Admits the worker: checks `secret` (the engine's admission secret) and that the engine
    /// launched this worker, and issues its token. The first call of a worker.
    fn register<'a>(&'a self, req: Register, secret: &'a str) -> ApiFuture<'a, Registered>;

    /// Leases up to `max` queued attempts of the worker's environment, waiting up to the
    /// engine's long-poll time when none is queued. Also a sign of life.
    fn lease(&self, req: LeaseRequest) -> ApiFuture<'_, LeaseResponse>;

    /// The worker's heartbeat; answers the leases to cancel and whether to stop.
    fn heartbeat(&self, req: Heartbeat) -> ApiFuture<'_, HeartbeatReply>;

    /// Completes leased attempts. A completion whose fencing token (lease, attempt, worker) is
    /// no longer current is rejected and changes nothing.
    fn complete(&self, req: CompleteBatch) -> ApiFuture<'_, CompleteReply>;

    /// Submits child calls of attempts running in the worker; answered at once, the outcomes
    /// come back through [`results`](WorkerApi::results).
    fn submit(&self, req: SubmitBatch) -> ApiFuture<'_, ()>;

    /// Long-polls the outcomes of the worker's child calls.
    fn results(&self, req: ResultsRequest) -> ApiFuture<'_, ResultsReply>;

    /// Cancels child calls whose caller stopped waiting.
    fn cancel(&self, req: CancelCalls) -> ApiFuture<'_, ()>;

    /// Looks a trace checkpoint up.
    fn trace_lookup(&self, req: TraceLookup) -> ApiFuture<'_, Checkpoint>;

    /// Records a trace checkpoint; answered after its commit.
    fn trace_record(&self, req: TraceRecord) -> ApiFuture<'_, ()>;
}
