//! Task calls: the value a task function returns, and the task context that makes awaiting it
//! a child action.

use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::task::{Context, Poll};

use futures::future::BoxFuture;
use parking_lot::Mutex;
use serde::{Serialize, de::DeserializeOwned};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use weir_core::{ActionId, CallKey, ErrorKind, codec};

use crate::engine::{Engine, RunState};
use crate::registry::TaskDef;
use crate::{Error, Result};

tokio::task_local! {
    static CURRENT: Arc<TaskCtx>;
}

/// Identical calls share (task, inputs hash, group); the task is keyed by its name's address.
type SeqKey = (usize, [u8; 32], Option<Arc<str>>);

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
    pub run_id: i64,
    /// The worker's slots: released while the attempt waits on a child.
    pub slots: Arc<Semaphore>,
}

/// The context of one running attempt of an action.
pub(crate) struct TaskCtx {
    pub backend: Backend,
    pub action: ActionId,
    /// Children and traces may already be recorded: look them up before running them.
    pub check_store: bool,
    /// Identical calls seen so far, for the `seq` part of child ids.
    seqs: Mutex<HashMap<SeqKey, u32>>,
    /// The run-level concurrency permit, released while this attempt waits on children.
    pub(crate) permit: Mutex<Option<OwnedSemaphorePermit>>,
    waiting_on_children: AtomicUsize,
}

impl TaskCtx {
    pub(crate) fn new(
        engine: Engine,
        run: Arc<RunState>,
        action: ActionId,
        attempt: u32,
        permit: Option<OwnedSemaphorePermit>,
    ) -> Self {
        let check_store = run.recovering() || attempt > 1;
        TaskCtx {
            backend: Backend::Local { engine, run },
            action,
            check_store,
            seqs: Mutex::new(HashMap::new()),
            permit: Mutex::new(permit),
            waiting_on_children: AtomicUsize::new(0),
        }
    }

    /// The context of an attempt leased by a worker process.
    pub(crate) fn remote(
        run: Arc<RemoteRun>,
        action: ActionId,
        check_store: bool,
        permit: Option<OwnedSemaphorePermit>,
    ) -> Self {
        TaskCtx {
            backend: Backend::Remote(run),
            action,
            check_store,
            seqs: Mutex::new(HashMap::new()),
            permit: Mutex::new(permit),
            waiting_on_children: AtomicUsize::new(0),
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
            .entry((task.as_ptr() as usize, inputs_hash, group.clone()))
            .or_insert(0);
        let seq = *n;
        *n += 1;
        seq
    }

    /// Called before waiting on a child: gives the run-level slot back so that children can use
    /// it (a parent never holds a slot its own children need).
    pub(crate) fn begin_wait(&self) {
        if self.waiting_on_children.fetch_add(1, Ordering::AcqRel) == 0 {
            self.permit.lock().take();
        }
    }

    /// Called after a child finished: takes a slot again before the parent's code goes on.
    pub(crate) async fn end_wait(&self) {
        if self.waiting_on_children.fetch_sub(1, Ordering::AcqRel) == 1 {
            let limit = match &self.backend {
                Backend::Local { run, .. } => run.limit.as_ref(),
                Backend::Remote(r) => Some(&r.slots),
            };
            if let Some(limit) = limit
                && let Ok(p) = limit.clone().acquire_owned().await
            {
                *self.permit.lock() = Some(p);
            }
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
pub struct CapturedContext(Arc<TaskCtx>);

/// Captures the current task context, if any.
#[doc(hidden)]
pub fn capture_context() -> Option<CapturedContext> {
    current().map(CapturedContext)
}

/// Whether the caller runs inside a task of a run.
pub fn in_task() -> bool {
    current().is_some()
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
    if let Some(trace) = crate::trace::in_trace() {
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
    ctx.begin_wait();
    let result = match &ctx.backend {
        Backend::Local { engine, .. } => {
            engine.clone().submit_child(&ctx, def, inputs, group).await
        }
        Backend::Remote(remote) => remote.submit_child(&ctx, def, inputs, group).await,
    };
    ctx.end_wait().await;
    let bytes = result?;
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
