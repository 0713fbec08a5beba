//! Task calls: the value a task function returns, and the task context that makes awaiting it
//! a child action.

use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::task::{Context, Poll};

use futures::future::BoxFuture;
use parking_lot::Mutex;
use serde::{Serialize, de::DeserializeOwned};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use weir_core::{ActionId, CallKey, ErrorKind, codec, ids::inputs_hash};

use crate::engine::{ChildCall, Engine, RunState};
use crate::limits::Slots;
use crate::registry::TaskDef;
use crate::{Error, Result};

tokio::task_local! {
    static CURRENT: Arc<TaskCtx>;
}

tokio::task_local! {
    pub(crate) static IN_TRACE: &'static str;
}

/// The trace the current code runs in, if any (set by `trace.rs` around a trace body).
pub(crate) fn in_trace() -> Option<&'static str> {
    IN_TRACE.try_with(|name| *name).ok()
}

/// Identical calls share (task name, inputs hash, group): the same text the id hashes, so two
/// calls get distinct `seq`s exactly when they would otherwise get the same id.
type SeqKey = (Box<str>, [u8; 32], Option<Arc<str>>);

/// Where a task's child calls and trace checkpoints go: the engine in this process, or the
/// engine behind the worker protocol (a `match`, so the in-process path stays as fast as a
/// direct call).
pub(crate) enum Backend {
    /// The attempt runs in the engine's process.
    Local {
        /// The engine.
        engine: Engine,
        /// The run.
        run: Arc<RunState>,
    },
    /// The attempt runs in a worker process.
    Remote(Arc<RemoteRun>),
}

/// What a worker knows of the run of a leased attempt.
pub(crate) struct RemoteRun {
    pub client: crate::worker::client::WorkerClient,
    pub run_id: weir_store::RunId,
    pub run_name: String,
    /// The lease of the attempt (its trace outputs written to the object store name it).
    pub lease: u64,
    /// The worker's slots: released while the attempt waits on a child.
    pub slots: Arc<Semaphore>,
}

/// The context of one running attempt of an action.
pub(crate) struct TaskCtx {
    pub backend: Backend,
    pub action: ActionId,
    /// The task this attempt runs.
    pub def: &'static crate::registry::TaskDef,
    /// Children and traces may already be recorded: look them up before running them.
    pub check_store: bool,
    /// Identical calls seen so far, for the `seq` part of child ids.
    seqs: Mutex<HashMap<SeqKey, u32>>,
    /// The slots this attempt takes (environment, run; a worker's own slots), and the permits
    /// it holds: given back while it waits on children.
    slots: Slots,
    permits: Mutex<Vec<OwnedSemaphorePermit>>,
    waiting_on_children: AtomicUsize,
    /// The attempt number (1-based).
    pub attempt: u32,
    /// Time spent decoding inputs and encoding the output (ns), and what a worker reported of
    /// the attempt (phase timings, SPEC §9.3).
    pub times: AttemptTimes,
}

/// Phase times of an attempt measured where its code runs (µs).
#[derive(Default)]
pub(crate) struct AttemptTimes {
    pub decode: AtomicU64,
    pub encode: AtomicU64,
    /// Set when a worker ran the attempt: its own figures.
    pub remote: parking_lot::Mutex<Option<crate::worker::protocol::WorkerPhases>>,
}

/// Adds `elapsed` to the current attempt's input decode (`decode`) or output encode time.
/// Called by the code `#[weir::task]` generates; nothing outside a task.
#[doc(hidden)]
pub fn record_codec(decode: bool, elapsed: std::time::Duration) {
    if let Some(ctx) = current() {
        let ns = elapsed.as_nanos() as u64;
        let slot = if decode {
            &ctx.times.decode
        } else {
            &ctx.times.encode
        };
        slot.fetch_add(ns, Ordering::Relaxed);
    }
}

impl TaskCtx {
    pub(crate) fn new(
        engine: Engine,
        run: Arc<RunState>,
        action: ActionId,
        def: &'static crate::registry::TaskDef,
        attempt: u32,
        slots: Slots,
        permits: Vec<OwnedSemaphorePermit>,
    ) -> Self {
        let check_store = run.recovering() || attempt > 1;
        TaskCtx {
            backend: Backend::Local { engine, run },
            action,
            def,
            check_store,
            seqs: Mutex::new(HashMap::new()),
            slots,
            permits: Mutex::new(permits),
            waiting_on_children: AtomicUsize::new(0),
            attempt,
            times: AttemptTimes::default(),
        }
    }

    /// The permits it holds, for the next attempt of the same action.
    pub(crate) fn into_permits(self) -> Vec<OwnedSemaphorePermit> {
        self.permits.into_inner()
    }

    /// The context of an attempt leased by a worker process.
    pub(crate) fn remote(
        run: Arc<RemoteRun>,
        action: ActionId,
        def: &'static crate::registry::TaskDef,
        attempt: u32,
        check_store: bool,
        permit: Option<OwnedSemaphorePermit>,
    ) -> Self {
        let slots = Slots::new(Some(run.slots.clone()), None);
        TaskCtx {
            backend: Backend::Remote(run),
            action,
            def,
            check_store,
            seqs: Mutex::new(HashMap::new()),
            slots,
            permits: Mutex::new(permit.into_iter().collect()),
            waiting_on_children: AtomicUsize::new(0),
            attempt,
            times: AttemptTimes::default(),
        }
    }

    pub(crate) fn next_seq(
        &self,
        task: &str,
        inputs_hash: [u8; 32],
        group: &Option<Arc<str>>,
    ) -> u32 {
        let mut seqs = self.seqs.lock();
        let n = seqs
            .entry((task.into(), inputs_hash, group.clone()))
            .or_insert(0);
        let seq = *n;
        *n += 1;
        seq
    }

    /// Called before waiting on a child: gives the slots back so that children can use them
    /// (a parent never holds a slot its own children need).
    pub(crate) fn begin_wait(&self) {
        if self.waiting_on_children.fetch_add(1, Ordering::AcqRel) == 0 {
            self.permits.lock().clear();
        }
    }

    /// Called after a child finished: takes the slots again before the parent's code goes on.
    pub(crate) async fn end_wait(&self) {
        if self.waiting_on_children.fetch_sub(1, Ordering::AcqRel) == 1 {
            let permits = self.slots.acquire().await;
            *self.permits.lock() = permits;
        }
    }

    /// The id of a child or trace called from this attempt with these inputs: the same
    /// derivation in the engine and in a worker (SPEC §4.1).
    pub(crate) fn child_id(
        &self,
        task: &str,
        inputs_hash: [u8; 32],
        group: &Option<Arc<str>>,
    ) -> ActionId {
        let seq = self.next_seq(task, inputs_hash, group);
        ActionId::derive(
            self.action,
            &CallKey {
                task,
                inputs_hash,
                seq,
                group: group.as_deref(),
            },
        )
    }

    pub(crate) async fn scope<F: Future>(self: Arc<Self>, fut: F) -> F::Output {
        CURRENT.scope(self, fut).await
    }
}

/// The context of the current task attempt, if this code runs inside one.
pub(crate) fn current() -> Option<Arc<TaskCtx>> {
    CURRENT.try_with(Arc::clone).ok()
}

/// Runs `f` inside the given context (used by `map` to create calls in the parent's context
/// even when the map future is polled elsewhere).
#[doc(hidden)]
pub fn with_context<R>(ctx: &Option<CapturedContext>, f: impl FnOnce() -> R) -> R {
    match ctx {
        Some(c) => CURRENT.sync_scope(c.0.clone(), f),
        None => f(),
    }
}

/// A captured task context (opaque).
#[derive(Clone)]
#[doc(hidden)]
pub struct CapturedContext(pub(crate) Arc<TaskCtx>);

/// Captures the current task context, if any.
#[doc(hidden)]
pub fn capture_context() -> Option<CapturedContext> {
    current().map(CapturedContext)
}

/// The object store the current task reads and writes reference data in (`weir::File`): the
/// engine's in process; on a cluster worker, the control plane's store when the worker can
/// reach it itself. An error saying why there is none otherwise.
pub fn object_store() -> std::result::Result<weir_blob::BlobStore, String> {
    let ctx = current().ok_or_else(|| {
        "reference data (weir::File) is written and read inside a task of a run: there is no object store here".to_string()
    })?;
    match &ctx.backend {
        Backend::Local { engine, .. } => Ok(engine.blobs().clone()),
        Backend::Remote(remote) => remote.client.reference_store().ok_or_else(|| {
            format!(
                "worker {} cannot reach the object store itself, and reference data (weir::File) never goes through the control plane: give the worker AWS_* settings that reach the control plane's s3:// store",
                remote.client.worker()
            )
        }),
    }
}

/// Whether the caller runs inside a task of a run.
pub fn in_task() -> bool {
    current().is_some()
}

/// What a running task knows of itself: see [`context`].
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct TaskContext {
    /// The run's name.
    pub run: String,
    /// This action's id (`a0` for the root): stable across retries and resumes.
    pub action: ActionId,
    /// The task's full name.
    pub task: String,
    /// This attempt's number, from 1; a retry, or a run resumed after a crash, counts on.
    pub attempt: u32,
}

/// The run, action and attempt of the task attempt this code runs in, or `None` outside a
/// task (in process and in worker processes alike).
///
/// ```
/// assert!(weir_engine::context().is_none());
/// ```
pub fn context() -> Option<TaskContext> {
    let ctx = current()?;
    let run = match &ctx.backend {
        Backend::Local { run, .. } => run.name().to_string(),
        Backend::Remote(remote) => remote.run_name.clone(),
    };
    Some(TaskContext {
        run,
        action: ctx.action,
        task: ctx.def.full_name().to_string(),
        attempt: ctx.attempt,
    })
}

/// The arguments of a task, as generated by `#[weir::task]`.
#[doc(hidden)]
pub trait TaskArgs: Serialize + DeserializeOwned + Send + 'static {
    /// The task's output.
    type Output: Serialize + DeserializeOwned + Send + 'static;
    /// Runs the task body.
    fn run(self) -> BoxFuture<'static, Result<Self::Output>>;
}

trait ErasedArgs<O>: Send {
    fn encode(&self) -> std::result::Result<Vec<u8>, codec::Error>;
    fn run(self: Box<Self>) -> BoxFuture<'static, Result<O>>;
}

impl<A: TaskArgs> ErasedArgs<A::Output> for A {
    fn encode(&self) -> std::result::Result<Vec<u8>, codec::Error> {
        codec::encode(self)
    }
    fn run(self: Box<Self>) -> BoxFuture<'static, Result<A::Output>> {
        TaskArgs::run(*self)
    }
}

/// A call of a task with its arguments: what `my_task(x)` returns.
///
/// Awaited inside a running task it becomes a child action (durable, retried, recovered);
/// awaited outside a run it simply runs the function (for unit tests); handed to
/// `Runner::run` it starts a run. It is a plain `Future`, so `join!`, `join_all`, `select` and
/// `tokio::spawn` work. Dropping it before it finishes cancels the child.
#[must_use = "a task call does nothing until awaited or run"]
pub struct TaskCall<O> {
    def: &'static TaskDef,
    group: Option<Arc<str>>,
    state: CallState<O>,
}

enum CallState<O> {
    Created {
        args: Box<dyn ErasedArgs<O>>,
        ctx: Option<Arc<TaskCtx>>,
    },
    Running(BoxFuture<'static, Result<O>>),
    Done,
}

impl<O: Serialize + DeserializeOwned + Send + 'static> TaskCall<O> {
    #[doc(hidden)]
    pub fn new<A: TaskArgs<Output = O>>(def: &'static TaskDef, args: A) -> TaskCall<O> {
        TaskCall {
            def,
            group: None,
            state: CallState::Created {
                args: Box::new(args),
                ctx: current(),
            },
        }
    }
}

impl<O> TaskCall<O> {
    /// Puts the call in a named group (part of its action id, used for display and folding).
    pub fn group(mut self, name: impl Into<Arc<str>>) -> Self {
        self.group = Some(name.into());
        self
    }

    /// The task being called.
    pub fn task(&self) -> &'static TaskDef {
        self.def
    }

    /// The task and its canonically encoded inputs (for starting a run).
    pub fn into_parts(self) -> (&'static TaskDef, std::result::Result<Vec<u8>, codec::Error>) {
        match self.state {
            CallState::Created { args, .. } => (self.def, args.encode()),
            _ => (
                self.def,
                Err(codec::Error::Encode("the call was already polled".into())),
            ),
        }
    }
}

impl<O: DeserializeOwned + Send + 'static> Future for TaskCall<O> {
    type Output = Result<O>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.get_mut();
        if let CallState::Created { .. } = this.state {
            let CallState::Created { args, ctx } =
                std::mem::replace(&mut this.state, CallState::Done)
            else {
                unreachable!()
            };
            let fut = match ctx {
                None => args.run(),
                Some(ctx) => {
                    let inputs = args.encode();
                    Box::pin(call_child::<O>(ctx, this.def, inputs, this.group.take()))
                }
            };
            this.state = CallState::Running(fut);
        }
        match &mut this.state {
            CallState::Running(fut) => {
                let out = fut.as_mut().poll(cx);
                if out.is_ready() {
                    this.state = CallState::Done;
                }
                out
            }
            _ => panic!("TaskCall polled after completion"),
        }
    }
}

async fn call_child<O: DeserializeOwned>(
    ctx: Arc<TaskCtx>,
    def: &'static TaskDef,
    inputs: std::result::Result<Vec<u8>, codec::Error>,
    group: Option<Arc<str>>,
) -> Result<O> {
    if let Some(trace) = in_trace() {
        return Err(Error::non_recoverable(format!(
            "task {} was called from inside trace {trace}; traces run in their task's process and may not call tasks",
            def.full_name()
        )));
    }
    let inputs = inputs.map_err(|e| {
        Error::with_kind(
            ErrorKind::Codec,
            format!("cannot encode the inputs of task {}: {e}", def.full_name()),
        )
    })?;
    let bytes = call_child_bytes(ctx, def, inputs, group).await?;
    codec::decode(&bytes).map_err(|e| {
        Error::with_kind(
            ErrorKind::Codec,
            format!(
                "the output of task {} does not decode as the expected type: {e}",
                def.full_name()
            ),
        )
    })
}

/// A child call with canonical inputs, its output as canonical bytes.
async fn call_child_bytes(
    ctx: Arc<TaskCtx>,
    def: &'static TaskDef,
    inputs: Vec<u8>,
    group: Option<Arc<str>>,
) -> Result<Arc<[u8]>> {
    // The same checks and the same id whichever backend carries the call.
    def.check_inline("inputs", inputs.len())?;
    let id = ctx.child_id(def.full_name(), inputs_hash(&inputs), &group);
    ctx.begin_wait();
    let result = match &ctx.backend {
        Backend::Local { engine, run } => {
            let call = ChildCall {
                run: run.clone(),
                parent: ctx.action,
                id,
                def,
                inputs,
                group,
                may_replay: ctx.check_store,
            };
            engine.clone().submit(call).await
        }
        Backend::Remote(remote) => remote.submit_child(&ctx, id, def, inputs, group).await,
    };
    ctx.end_wait().await;
    result
}

impl CapturedContext {
    /// Calls `def` as a child of this attempt with canonically encoded `inputs`, in `group`:
    /// the call a task body makes when it awaits a task, for bodies that are not Rust (the
    /// Python front). The output comes back as canonical bytes.
    pub async fn call(
        &self,
        def: &'static TaskDef,
        inputs: Vec<u8>,
        group: Option<Arc<str>>,
    ) -> Result<Arc<[u8]>> {
        call_child_bytes(self.0.clone(), def, inputs, group).await
    }

    /// Runs `fut` inside this context: what it calls sees the attempt as a task body does (the
    /// Python front reads and writes reference data, `weir::File`, this way).
    pub async fn scope<F: Future>(&self, fut: F) -> F::Output {
        CURRENT.scope(self.0.clone(), fut).await
    }

    /// The run, action, task and attempt of this context.
    pub fn info(&self) -> TaskContext {
        CURRENT.sync_scope(self.0.clone(), || context().expect("a context is set"))
    }
}

/// A task body's result, with a panic turned into an error of kind `panic`.
pub(crate) fn flatten_panic(r: std::thread::Result<Result<Vec<u8>>>) -> Result<Vec<u8>> {
    match r {
        Ok(r) => r,
        Err(panic) => {
            let msg = panic
                .downcast_ref::<&str>()
                .map(|s| s.to_string())
                .or_else(|| panic.downcast_ref::<String>().cloned())
                .unwrap_or_else(|| "unknown panic payload".into());
            Err(Error::with_kind(
                ErrorKind::Panic,
                format!("task panicked: {msg}"),
            ))
        }
    }
}
