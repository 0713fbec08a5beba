//! The embedded control plane: runs, the live-action table, the in-process executor.
//!
//! Hot state (live actions and their waiters) is in memory; every state change goes to the
//! [`Store`] writer in order, and a waiter is told an action's outcome only in the
//! acknowledgement of the commit that holds it (SPEC §12.1). Finished actions leave memory
//! at that point, so a run's memory is bounded by what is live, not by its size.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use futures::FutureExt;
use parking_lot::Mutex;
use tokio::sync::{Semaphore, oneshot, watch};
use tokio::task::AbortHandle;
use weir_blob::BlobStore;
use weir_core::cache::CacheKeyParts;
use weir_core::spec::CacheBehavior;
use weir_core::spec::DEFAULT_INLINE_STORE_THRESHOLD;
use weir_core::{ActionId, ActionStatus, ErrorKind, Failure, ids::inputs_hash};
use weir_store::{
    ActionKind, AttemptRecord, CacheEntry, NewRun, Payload, RunRecord, RunStatus, SqliteStore,
    Store, StoreOptions, WriteOp, now_us,
};

use crate::call::TaskCtx;
use crate::registry::{self, TaskDef};
use crate::run::{RunContext, RunHandle};
use crate::{Error, Result};

/// The outcome of an action as delivered to waiters: canonical output bytes or the failure.
pub(crate) type Outcome = std::result::Result<Arc<[u8]>, Failure>;

/// Options of the embedded engine.
#[derive(Clone, Debug)]
pub struct EngineOptions {
    /// State directory: `state.db` and `blobs/` live here. Default `./.weir`.
    pub state_dir: PathBuf,
    /// Payloads larger than this go to the object store. Default 64 KiB.
    pub inline_store_threshold: usize,
    /// Object store URL for payloads. Default `file://<state_dir>/blobs`.
    pub blob_url: Option<String>,
    /// SQLite options.
    pub store: StoreOptions,
    /// Where attempts run: in this process (default) or in worker processes.
    pub executor: crate::worker::ExecutorKind,
    /// Settings of the process executor (used with [`ExecutorKind::Processes`](crate::worker::ExecutorKind)).
    pub workers: crate::worker::WorkerOptions,
}

impl EngineOptions {
    /// Defaults for a state directory.
    pub fn new(state_dir: impl Into<PathBuf>) -> Self {
        EngineOptions {
            state_dir: state_dir.into(),
            inline_store_threshold: DEFAULT_INLINE_STORE_THRESHOLD,
            blob_url: None,
            store: StoreOptions::default(),
            executor: crate::worker::ExecutorKind::InProcess,
            workers: crate::worker::WorkerOptions::default(),
        }
    }

    /// Runs attempts in worker processes of this binary (SPEC §7).
    pub fn with_worker_processes(mut self) -> Self {
        self.executor = crate::worker::ExecutorKind::Processes;
        self
    }
}

/// The engine: a cheap cloneable handle.
#[derive(Clone)]
pub struct Engine {
    inner: Arc<Inner>,
}

struct Inner {
    store: Arc<SqliteStore>,
    blobs: BlobStore,
    options: EngineOptions,
    runs: Mutex<HashMap<i64, Arc<RunState>>>,
    /// The process executor, when attempts run in worker processes.
    executor: Option<Arc<crate::worker::executor::Executor>>,
}

/// A handle on the engine that does not keep it alive (held by the process executor).
pub(crate) struct WeakEngine(std::sync::Weak<Inner>);

impl WeakEngine {
    pub(crate) fn upgrade(&self) -> Option<Engine> {
        self.0.upgrade().map(|inner| Engine { inner })
    }
}

impl std::fmt::Debug for Engine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Engine")
            .field("state_dir", &self.inner.options.state_dir)
            .finish()
    }
}

struct LiveAction {
    waiters: Vec<oneshot::Sender<Outcome>>,
    abort: Option<AbortHandle>,
    /// Set once the final write is queued; a cancel then no longer applies.
    finishing: bool,
    /// Cache key and version the output is stored under when it succeeds.
    cache: Option<(String, String)>,
}

/// The run's cache settings (SPEC §3.4, §6.2).
struct RunCache {
    disabled: bool,
    overwrite: bool,
    project_domain_only: bool,
    project: String,
    domain: String,
}

/// Action ids are already uniform hashes: the live table uses them as their own hash.
type IdHash = std::hash::BuildHasherDefault<IdHasher>;

#[derive(Default)]
struct IdHasher(u64);

impl std::hash::Hasher for IdHasher {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        for b in bytes {
            self.0 = (self.0 << 8) ^ (self.0 >> 56) ^ *b as u64;
        }
    }
    fn write_u64(&mut self, n: u64) {
        self.0 = n;
    }
}

/// Counters of a run, for progress display.
#[derive(Debug, Default)]
pub struct Counters {
    /// Actions created (including the root).
    pub created: AtomicU64,
    /// Attempts running now.
    pub running: AtomicU64,
    /// Actions succeeded.
    pub succeeded: AtomicU64,
    /// Actions failed or cancelled.
    pub failed: AtomicU64,
    /// Child calls answered from the store (recovery).
    pub recovered: AtomicU64,
    /// Child calls answered from the cache.
    pub cache_hits: AtomicU64,
}

/// In-memory state of a run driven by this process.
pub struct RunState {
    pub(crate) id: i64,
    pub(crate) name: String,
    pub(crate) limit: Option<Arc<Semaphore>>,
    recovering: bool,
    live: Mutex<HashMap<ActionId, LiveAction, IdHash>>,
    pub(crate) counters: Counters,
    cache: RunCache,
    pub(crate) done: watch::Sender<Option<RunOutcome>>,
    aborted: AtomicBool,
}

/// How a run ended.
#[derive(Clone, Debug)]
pub enum RunOutcome {
    /// Root output bytes.
    Succeeded(Arc<[u8]>),
    /// Root failure.
    Failed(Failure),
    /// Aborted.
    Aborted,
}

impl RunState {
    /// Whether this run was resumed after its process died.
    pub(crate) fn recovering(&self) -> bool {
        self.recovering
    }

    /// The run's name.
    pub fn name(&self) -> &str {
        &self.name
    }
    /// Progress counters.
    pub fn counters(&self) -> &Counters {
        &self.counters
    }
}

enum Attach {
    Ready(Outcome),
    Wait(oneshot::Receiver<Outcome>),
}

/// Cancels a child whose caller stopped waiting (dropped future, fail-fast sibling).
struct CancelOnDrop {
    engine: Engine,
    run: Arc<RunState>,
    id: ActionId,
    armed: bool,
}

impl Drop for CancelOnDrop {
    fn drop(&mut self) {
        if self.armed {
            self.engine.cancel_if_unwanted(&self.run, self.id);
        }
    }
}

/// A pending child result: the receiver drops before the guard checks it.
struct Pending {
    rx: Option<oneshot::Receiver<Outcome>>,
    guard: CancelOnDrop,
}

fn is_alive(pid: u32) -> bool {
    pid != std::process::id() && Path::new(&format!("/proc/{pid}")).exists()
}

fn generate_run_name() -> String {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    let h = blake3::hash(format!("{}{}", now.as_nanos(), std::process::id()).as_bytes());
    format!("r{}", &h.to_hex()[..10])
}

impl Engine {
    /// Opens the embedded engine on a state directory (created if needed).
    pub fn open(options: EngineOptions) -> Result<Engine> {
        let store = SqliteStore::open(&options.state_dir, options.store.clone())
            .map_err(|e| Error::with_kind(ErrorKind::System, e))?;
        let blobs = match &options.blob_url {
            Some(url) => BlobStore::from_url(url),
            None => BlobStore::local(&options.state_dir.join("blobs")),
        }
        .map_err(|e| Error::with_kind(ErrorKind::System, e))?;
        let processes = options.executor == crate::worker::ExecutorKind::Processes;
        Ok(Engine {
            inner: Arc::new_cyclic(|weak| Inner {
                store: Arc::new(store),
                blobs,
                executor: processes.then(|| {
                    Arc::new(crate::worker::executor::Executor::new(
                        WeakEngine(weak.clone()),
                        options.workers.clone(),
                        &options.state_dir,
                    ))
                }),
                options,
                runs: Mutex::new(HashMap::new()),
            }),
        })
    }

    /// The state store.
    pub fn store(&self) -> &Arc<SqliteStore> {
        &self.inner.store
    }

    /// The object store for payloads.
    pub fn blobs(&self) -> &BlobStore {
        &self.inner.blobs
    }

    /// Retires the worker processes of the process executor (if any) and records their final
    /// state; waits up to `grace` for them to exit. Call it before the process exits.
    pub async fn shutdown_workers(&self, grace: Duration) {
        if let Some(exec) = &self.inner.executor {
            exec.shutdown(grace).await;
        }
    }

    /// Commits everything queued.
    pub fn flush(&self) -> Result<()> {
        self.inner
            .store
            .flush()
            .map_err(|e| Error::with_kind(ErrorKind::System, e))
    }

    /// Reads a stored payload (inline or from the object store).
    pub async fn load_payload(&self, payload: &Payload) -> Result<Arc<[u8]>> {
        match payload {
            Payload::Inline(b) => Ok(Arc::from(b.as_slice())),
            Payload::Offloaded { path, .. } => {
                let bytes = self
                    .inner
                    .blobs
                    .get(path)
                    .await
                    .map_err(|e| Error::with_kind(ErrorKind::System, e))?;
                Ok(Arc::from(bytes))
            }
        }
    }

    async fn store_payload(&self, key: impl FnOnce() -> String, bytes: &[u8]) -> Result<Payload> {
        if bytes.len() <= self.inner.options.inline_store_threshold {
            return Ok(Payload::Inline(bytes.to_vec()));
        }
        let key = key();
        self.inner
            .blobs
            .put(&key, bytes.to_vec())
            .await
            .map_err(|e| Error::with_kind(ErrorKind::System, e))?;
        Ok(Payload::Offloaded {
            path: key,
            size: bytes.len() as u64,
        })
    }

    pub(crate) fn check_inline(def: &TaskDef, what: &str, size: usize) -> Result<()> {
        let limit = def.inline_limit();
        if size as u64 > limit {
            return Err(Error::with_kind(
                ErrorKind::TooLarge,
                format!(
                    "{what} of task {} are {size} bytes, over its inline limit of {limit} bytes; raise max_inline_io on the task or environment, or pass the data as a File",
                    def.full_name()
                ),
            ));
        }
        Ok(())
    }

    /// Starts a run of `def` with canonical `inputs`.
    pub async fn start_run(
        &self,
        def: &'static TaskDef,
        inputs: Vec<u8>,
        context: RunContext,
    ) -> Result<RunHandle> {
        Self::check_inline(def, "the inputs", inputs.len())?;
        let name = context.name.clone().unwrap_or_else(generate_run_name);
        let payload = self
            .store_payload(|| format!("{name}/a0/inputs"), &inputs)
            .await?;
        let record = self
            .inner
            .store
            .create_run(&NewRun {
                name: name.clone(),
                task: def.full_name().into(),
                inputs: payload,
                context: serde_json::to_value(&context).unwrap_or_default(),
                owner_pid: std::process::id(),
            })
            .map_err(|e| Error::with_kind(ErrorKind::System, e))?;
        Ok(self.launch(record, def, Arc::from(inputs), &context, false, 0))
    }

    /// Resumes a run whose process died (SPEC §4.2): the root runs again and every child that
    /// had succeeded returns its recorded output without running.
    pub async fn resume_run(&self, name: &str, force: bool) -> Result<RunHandle> {
        let record = self
            .inner
            .store
            .run_by_name(name)
            .map_err(|e| Error::with_kind(ErrorKind::System, e))?;
        let def = registry::find_task(&record.task)
            .map_err(|e| Error::with_kind(ErrorKind::System, e))?;
        let context: RunContext =
            serde_json::from_value(record.context.clone()).unwrap_or_default();
        if record.status.is_terminal() {
            let (done, _) = watch::channel(Some(self.stored_outcome(&record).await?));
            let state = Arc::new(self.new_run_state(&record, &context, done, false));
            return Ok(RunHandle::new(self.clone(), state));
        }
        if !force && is_alive(record.owner_pid) {
            return Err(Error::with_kind(
                ErrorKind::System,
                format!(
                    "run {name} is still being driven by process {} (pass --force if that process is not weir)",
                    record.owner_pid
                ),
            ));
        }
        let inputs = self.load_payload(&record.inputs).await?;
        let root = self
            .inner
            .store
            .action(record.id, ActionId::ROOT)
            .ok()
            .flatten();
        self.inner.store.write(
            WriteOp::ClaimRun {
                run: record.id,
                owner_pid: std::process::id(),
            },
            None,
        );
        Ok(self.launch(
            record,
            def,
            inputs,
            &context,
            true,
            root.map(|r| r.attempts).unwrap_or(0),
        ))
    }

    async fn stored_outcome(&self, record: &RunRecord) -> Result<RunOutcome> {
        Ok(match record.status {
            RunStatus::Succeeded => match &record.output {
                Some(p) => RunOutcome::Succeeded(self.load_payload(p).await?),
                None => RunOutcome::Failed(Failure {
                    action_id: "a0".into(),
                    task: record.task.clone(),
                    kind: ErrorKind::System,
                    message: "the run succeeded but its output is missing".into(),
                    chain: vec![],
                }),
            },
            RunStatus::Aborted => RunOutcome::Aborted,
            _ => RunOutcome::Failed(record.error.clone().unwrap_or_else(|| Failure {
                action_id: "a0".into(),
                task: record.task.clone(),
                kind: ErrorKind::System,
                message: "failed".into(),
                chain: vec![],
            })),
        })
    }

    fn new_run_state(
        &self,
        record: &RunRecord,
        context: &RunContext,
        done: watch::Sender<Option<RunOutcome>>,
        recovering: bool,
    ) -> RunState {
        RunState {
            id: record.id,
            name: record.name.clone(),
            limit: context
                .max_action_concurrency
                .map(|n| Arc::new(Semaphore::new(n.max(1)))),
            recovering,
            live: Mutex::new(HashMap::default()),
            counters: Counters::default(),
            cache: RunCache {
                disabled: context.disable_cache,
                overwrite: context.overwrite_cache,
                project_domain_only: context.cache_lookup_scope
                    == crate::run::CacheLookupScope::ProjectDomain,
                project: context.project.clone().unwrap_or_else(|| "default".into()),
                domain: context
                    .domain
                    .clone()
                    .unwrap_or_else(|| "development".into()),
            },
            done,
            aborted: AtomicBool::new(false),
        }
    }

    fn launch(
        &self,
        record: RunRecord,
        def: &'static TaskDef,
        inputs: Arc<[u8]>,
        context: &RunContext,
        recovering: bool,
        base_attempt: u32,
    ) -> RunHandle {
        let (done, _) = watch::channel(None);
        let run = Arc::new(self.new_run_state(&record, context, done, recovering));
        self.inner.runs.lock().insert(run.id, run.clone());
        run.counters.created.fetch_add(1, Ordering::Relaxed);
        run.live.lock().insert(
            ActionId::ROOT,
            LiveAction {
                waiters: Vec::new(),
                abort: None,
                finishing: false,
                cache: None,
            },
        );
        let task = tokio::spawn(self.clone().run_action(
            run.clone(),
            ActionId::ROOT,
            ActionId::ROOT,
            def,
            inputs,
            None,
            base_attempt,
            false,
        ));
        if let Some(a) = run.live.lock().get_mut(&ActionId::ROOT) {
            a.abort = Some(task.abort_handle());
        }
        RunHandle::new(self.clone(), run)
    }

    /// Aborts a run driven by this process: cancels every live action and records the run as
    /// aborted. Returns false if this process does not drive the run.
    pub fn abort_local(&self, run_name: &str) -> bool {
        let run = self
            .inner
            .runs
            .lock()
            .values()
            .find(|r| r.name == run_name)
            .cloned();
        let Some(run) = run else { return false };
        self.abort_run_state(&run);
        true
    }

    pub(crate) fn abort_run_state(&self, run: &Arc<RunState>) {
        if run.aborted.swap(true, Ordering::AcqRel) {
            return;
        }
        let aborted: Vec<_> = run
            .live
            .lock()
            .drain()
            .filter_map(|(_, a)| a.abort)
            .collect();
        for h in aborted {
            h.abort();
        }
        let now = now_us();
        let failure = Failure {
            action_id: "a0".into(),
            task: String::new(),
            kind: ErrorKind::Cancelled,
            message: "the run was aborted".into(),
            chain: vec![],
        };
        self.inner.store.write(
            WriteOp::CancelLiveActions {
                run: run.id,
                error: failure,
                ended_at: now,
            },
            None,
        );
        let state = run.clone();
        let engine = self.clone();
        self.inner.store.write(
            WriteOp::FinishRun {
                run: run.id,
                status: RunStatus::Aborted,
                output: None,
                error: None,
                ended_at: now,
            },
            Some(Box::new(move |_| {
                state.done.send_replace(Some(RunOutcome::Aborted));
                engine.inner.runs.lock().remove(&state.id);
            })),
        );
    }

    /// Marks a run aborted in the store when no live process drives it (or tells the driving
    /// process through the store, which it polls).
    pub fn abort_stored(&self, record: &RunRecord) {
        let now = now_us();
        let failure = Failure {
            action_id: "a0".into(),
            task: record.task.clone(),
            kind: ErrorKind::Cancelled,
            message: "the run was aborted".into(),
            chain: vec![],
        };
        self.inner.store.write(
            WriteOp::CancelLiveActions {
                run: record.id,
                error: failure,
                ended_at: now,
            },
            None,
        );
        self.inner.store.write(
            WriteOp::FinishRun {
                run: record.id,
                status: RunStatus::Aborted,
                output: None,
                error: None,
                ended_at: now,
            },
            None,
        );
    }

    pub(crate) async fn submit_child(
        self,
        ctx: &TaskCtx,
        def: &'static TaskDef,
        inputs: Vec<u8>,
        group: Option<Arc<str>>,
    ) -> Result<Arc<[u8]>> {
        Self::check_inline(def, "the inputs", inputs.len())?;
        let id = ctx.child_id(def.full_name(), inputs_hash(&inputs), &group);
        let crate::call::Backend::Local { run, .. } = &ctx.backend else {
            unreachable!("a local submission from a remote context")
        };
        let run = run.clone();
        self.submit_child_as(run, ctx.action, id, ctx.check_store, def, inputs, group)
            .await
    }

    /// [`Engine::submit_child_as`] as a boxed `Send` future (for the worker API's tasks).
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn submit_child_boxed(
        self,
        run: Arc<RunState>,
        parent: ActionId,
        id: ActionId,
        check_store: bool,
        def: &'static TaskDef,
        inputs: Vec<u8>,
        group: Option<Arc<str>>,
    ) -> futures::future::BoxFuture<'static, Result<Arc<[u8]>>> {
        Box::pin(self.submit_child_as(run, parent, id, check_store, def, inputs, group))
    }

    /// Creates (or attaches to, or recovers) child `id` of `parent` and waits for its outcome:
    /// the one implementation behind in-process calls and the worker protocol's submit.
    #[allow(clippy::too_many_arguments)]
    pub(crate) async fn submit_child_as(
        self,
        run: Arc<RunState>,
        parent: ActionId,
        id: ActionId,
        check_store: bool,
        def: &'static TaskDef,
        inputs: Vec<u8>,
        group: Option<Arc<str>>,
    ) -> Result<Arc<[u8]>> {
        let attach = self
            .attach_or_start(&run, id, parent, def, inputs, group, check_store)
            .await?;
        let mut pending = match attach {
            Attach::Ready(outcome) => return outcome.map_err(Error::from_child),
            Attach::Wait(rx) => Pending {
                rx: Some(rx),
                guard: CancelOnDrop {
                    engine: self,
                    run,
                    id,
                    armed: true,
                },
            },
        };
        // Unconstrained: a parent awaiting thousands of children in one `join_all` would
        // otherwise exhaust tokio's cooperative budget and re-poll every pending child per wake
        // (quadratic in the fan-out).
        let outcome =
            tokio::task::unconstrained(pending.rx.as_mut().expect("receiver present")).await;
        pending.guard.armed = false;
        match outcome {
            Ok(o) => o.map_err(Error::from_child),
            Err(_) => Err(Error::with_kind(
                ErrorKind::Cancelled,
                format!("action {id} ({}) was cancelled", def.full_name()),
            )),
        }
    }

    #[allow(clippy::too_many_arguments)]
    async fn attach_or_start(
        &self,
        run: &Arc<RunState>,
        id: ActionId,
        parent: ActionId,
        def: &'static TaskDef,
        inputs: Vec<u8>,
        group: Option<Arc<str>>,
        check_store: bool,
    ) -> Result<Attach> {
        if let Some(a) = run.live.lock().get_mut(&id) {
            let (tx, rx) = oneshot::channel();
            a.waiters.push(tx);
            return Ok(Attach::Wait(rx));
        }
        let mut base_attempt = 0;
        if check_store
            && let Some(rec) = self
                .inner
                .store
                .action(run.id, id)
                .map_err(|e| Error::with_kind(ErrorKind::System, e))?
        {
            match rec.status {
                ActionStatus::Succeeded => {
                    if let Some(out) = &rec.output {
                        run.counters.recovered.fetch_add(1, Ordering::Relaxed);
                        return Ok(Attach::Ready(Ok(self.load_payload(out).await?)));
                    }
                }
                ActionStatus::Failed => {
                    if let Some(f) = rec.error.as_ref().filter(|f| !f.kind.is_retryable()) {
                        return Ok(Attach::Ready(Err(f.clone())));
                    }
                }
                _ => {}
            }
            base_attempt = rec.attempts;
        }
        let cache = self.cache_key(def, &inputs, run)?;
        if let Some((key, _)) = &cache
            && !run.cache.overwrite
            && let Some(hit) = self
                .cache_hit(run, id, parent, def, &inputs, &group, key)
                .await?
        {
            return Ok(Attach::Ready(Ok(hit)));
        }
        let (tx, rx) = oneshot::channel();
        {
            let mut live = run.live.lock();
            if run.aborted.load(Ordering::Acquire) {
                return Err(Error::with_kind(
                    ErrorKind::Cancelled,
                    "the run was aborted",
                ));
            }
            if let Some(a) = live.get_mut(&id) {
                a.waiters.push(tx);
                return Ok(Attach::Wait(rx));
            }
            live.insert(
                id,
                LiveAction {
                    waiters: vec![tx],
                    abort: None,
                    finishing: false,
                    cache,
                },
            );
        }
        run.counters.created.fetch_add(1, Ordering::Relaxed);
        let task = tokio::spawn(self.clone().run_action(
            run.clone(),
            id,
            parent,
            def,
            Arc::from(inputs),
            group,
            base_attempt,
            true,
        ));
        if let Some(a) = run.live.lock().get_mut(&id) {
            a.abort = Some(task.abort_handle());
        }
        Ok(Attach::Wait(rx))
    }

    /// The cache key and version of a call, or `None` when the task or the run does not cache.
    /// Recipe: `weir_core::cache`.
    fn cache_key(
        &self,
        def: &'static TaskDef,
        inputs: &[u8],
        run: &RunState,
    ) -> Result<Option<(String, String)>> {
        if run.cache.disabled {
            return Ok(None);
        }
        let policy = def
            .config()
            .cache
            .as_ref()
            .unwrap_or(def.environment().cache_policy());
        let version = match &policy.behavior {
            CacheBehavior::Disable => return Ok(None),
            CacheBehavior::Auto => def.source_hash.to_string(),
            CacheBehavior::Override(v) => v.clone(),
        };
        let ignored: Vec<&str> = policy.ignored_inputs.iter().map(String::as_str).collect();
        let key = weir_core::cache::cache_key(&CacheKeyParts {
            task: def.full_name(),
            env: def.environment().name(),
            inputs,
            ignored_inputs: &ignored,
            interface: def.interface,
            salt: &policy.salt,
            version: &version,
        })
        .map_err(|e| {
            Error::with_kind(
                ErrorKind::Codec,
                format!("cache key of task {}: {e}", def.full_name()),
            )
        })?;
        Ok(Some((key, version)))
    }

    /// Looks the key up; on a hit records the action as a cache hit (the output by reference,
    /// never copied) and returns the output. A hit whose payload is gone counts as a miss.
    #[allow(clippy::too_many_arguments)]
    async fn cache_hit(
        &self,
        run: &Arc<RunState>,
        id: ActionId,
        parent: ActionId,
        def: &'static TaskDef,
        inputs: &[u8],
        group: &Option<Arc<str>>,
        key: &str,
    ) -> Result<Option<Arc<[u8]>>> {
        let scope = run
            .cache
            .project_domain_only
            .then(|| (run.cache.project.as_str(), run.cache.domain.as_str()));
        let Some(entry) = self
            .inner
            .store
            .cache_lookup(key, scope)
            .map_err(|e| Error::with_kind(ErrorKind::System, e))?
        else {
            return Ok(None);
        };
        let Ok(bytes) = self.load_payload(&entry.output).await else {
            tracing::warn!(
                task = def.full_name(),
                key,
                "cache entry's payload is missing; running the task"
            );
            return Ok(None);
        };
        let inputs = self
            .store_payload(|| format!("{}/{id}/inputs", run.name), inputs)
            .await?;
        let now = now_us();
        self.inner.store.write(
            WriteOp::InsertAction {
                run: run.id,
                id,
                parent,
                task: def.full_name().into(),
                group: group.clone(),
                kind: ActionKind::Task,
                inputs,
                queued_at: now,
            },
            None,
        );
        self.inner.store.write(
            WriteOp::FinishAction {
                run: run.id,
                id,
                status: ActionStatus::Succeeded,
                output: Some(entry.output),
                error: None,
                cache_hit: true,
                ended_at: now,
            },
            None,
        );
        run.counters.created.fetch_add(1, Ordering::Relaxed);
        run.counters.succeeded.fetch_add(1, Ordering::Relaxed);
        run.counters.cache_hits.fetch_add(1, Ordering::Relaxed);
        Ok(Some(bytes))
    }

    fn cancel_if_unwanted(&self, run: &Arc<RunState>, id: ActionId) {
        let handle = {
            let mut live = run.live.lock();
            match live.get(&id) {
                Some(a) if !a.finishing && a.waiters.iter().all(|w| w.is_closed()) => {
                    live.remove(&id).and_then(|a| a.abort)
                }
                _ => return,
            }
        };
        if let Some(h) = handle {
            h.abort();
        }
        run.counters.failed.fetch_add(1, Ordering::Relaxed);
        let failure = Failure {
            action_id: id.to_string(),
            task: String::new(),
            kind: ErrorKind::Cancelled,
            message: "cancelled: its caller stopped waiting".into(),
            chain: vec![],
        };
        self.inner.store.write(
            WriteOp::FinishAction {
                run: run.id,
                id,
                status: ActionStatus::Cancelled,
                output: None,
                error: Some(failure),
                cache_hit: false,
                ended_at: now_us(),
            },
            None,
        );
    }

    #[allow(clippy::too_many_arguments)]
    async fn run_action(
        self,
        run: Arc<RunState>,
        id: ActionId,
        parent: ActionId,
        def: &'static TaskDef,
        inputs: Arc<[u8]>,
        group: Option<Arc<str>>,
        base_attempt: u32,
        insert: bool,
    ) {
        let queued = Instant::now();
        let store = &self.inner.store;
        if insert {
            let payload = match self
                .store_payload(|| format!("{}/{id}/inputs", run.name), &inputs)
                .await
            {
                Ok(p) => p,
                Err(e) => {
                    return self.fail(&run, id, def, e);
                }
            };
            store.write(
                WriteOp::InsertAction {
                    run: run.id,
                    id,
                    parent,
                    task: def.full_name().into(),
                    group,
                    kind: ActionKind::Task,
                    inputs: payload,
                    queued_at: now_us(),
                },
                None,
            );
        }
        let timeouts = &def.config().timeouts;
        let retry = &def.config().retry;
        let deadline = timeouts.deadline.map(|d| queued + d);
        // Take a run-level slot (SPEC §9.2), bounded by max_queued.
        let mut permit = None;
        if let Some(limit) = &run.limit {
            let acquire = limit.clone().acquire_owned();
            let waited = match timeouts.max_queued.or(timeouts.deadline) {
                Some(max) => tokio::time::timeout(max, acquire).await.ok(),
                None => Some(acquire.await),
            };
            match waited {
                Some(Ok(p)) => permit = Some(p),
                _ => {
                    let e = Error::with_kind(
                        ErrorKind::Deadline,
                        format!(
                            "task {} waited in the queue longer than its max_queued time",
                            def.full_name()
                        ),
                    );
                    return self.fail(&run, id, def, e);
                }
            }
        }
        let mut attempt = base_attempt;
        let mut retries_used = 0;
        loop {
            attempt += 1;
            let started = now_us();
            store.write(
                WriteOp::StartAttempt {
                    run: run.id,
                    id,
                    attempt,
                    started_at: started,
                },
                None,
            );
            run.counters.running.fetch_add(1, Ordering::Relaxed);
            let ctx = Arc::new(TaskCtx::new(
                self.clone(),
                run.clone(),
                id,
                attempt,
                permit.take(),
            ));
            let body = async {
                match &self.inner.executor {
                    None => flatten_panic(
                        std::panic::AssertUnwindSafe(
                            ctx.clone().scope((def.invoke)(inputs.clone())),
                        )
                        .catch_unwind()
                        .await,
                    ),
                    Some(exec) => {
                        exec.run_attempt(&run, id, attempt, def, inputs.clone(), ctx.clone())
                            .await
                    }
                }
            };
            let limit = match (timeouts.max_runtime, deadline) {
                (Some(rt), Some(dl)) => Some(rt.min(dl.saturating_duration_since(Instant::now()))),
                (Some(rt), None) => Some(rt),
                (None, Some(dl)) => Some(dl.saturating_duration_since(Instant::now())),
                (None, None) => None,
            };
            let result: Result<Vec<u8>> = match limit {
                Some(limit) => match tokio::time::timeout(limit, body).await {
                    Ok(r) => r,
                    Err(_) => {
                        let past_deadline = deadline.is_some_and(|dl| Instant::now() >= dl);
                        let (kind, what) = if past_deadline {
                            (ErrorKind::Deadline, "its overall deadline")
                        } else {
                            (ErrorKind::Timeout, "its max runtime")
                        };
                        Err(Error::with_kind(
                            kind,
                            format!(
                                "attempt {attempt} of task {} ran past {what} of {:?}",
                                def.full_name(),
                                limit
                            ),
                        ))
                    }
                },
                None => body.await,
            };
            run.counters.running.fetch_sub(1, Ordering::Relaxed);
            permit = Arc::try_unwrap(ctx)
                .ok()
                .and_then(|c| c.permit.into_inner());
            let result = result
                .and_then(|out| Self::check_inline(def, "the output", out.len()).map(|_| out));
            match result {
                Ok(out) => {
                    let payload = match self
                        .store_payload(|| format!("{}/{id}/{attempt}/outputs", run.name), &out)
                        .await
                    {
                        Ok(p) => p,
                        Err(e) => {
                            return self.fail(&run, id, def, e);
                        }
                    };
                    return self.finish(&run, id, def, Ok((payload, Arc::from(out))));
                }
                Err(e) => {
                    let failure = e.to_failure(id.to_string(), def.full_name().into());
                    let ended = now_us();
                    store.write(
                        WriteOp::FailAttempt {
                            run: run.id,
                            id,
                            attempt: AttemptRecord {
                                attempt,
                                started_at: started,
                                ended_at: ended,
                                error: failure.clone(),
                            },
                        },
                        None,
                    );
                    let delay = retry.delay(retries_used);
                    let in_time = deadline.is_none_or(|dl| Instant::now() + delay < dl);
                    if e.is_retryable() && retries_used < retry.retries && in_time {
                        retries_used += 1;
                        tracing::debug!(run = %run.name, action = %id, task = def.full_name(), attempt, error = %failure.message, "attempt failed, retrying");
                        if !delay.is_zero() {
                            tokio::time::sleep(delay).await;
                        }
                        continue;
                    }
                    return self.finish(&run, id, def, Err(failure));
                }
            }
        }
    }

    /// Ends an action with an error raised by the engine itself (payload storage, queue wait).
    fn fail(&self, run: &Arc<RunState>, id: ActionId, def: &'static TaskDef, e: Error) {
        self.finish(
            run,
            id,
            def,
            Err(e.to_failure(id.to_string(), def.full_name().into())),
        );
    }

    fn finish(
        &self,
        run: &Arc<RunState>,
        id: ActionId,
        def: &'static TaskDef,
        outcome: std::result::Result<(Payload, Arc<[u8]>), Failure>,
    ) {
        let cache = {
            let mut live = run.live.lock();
            match live.get_mut(&id) {
                Some(a) => {
                    a.finishing = true;
                    a.cache.take()
                }
                None => return, // cancelled meanwhile
            }
        };
        let ended = now_us();
        // The entry is committed no later than the result it caches (it is queued first).
        if let (Some((key, version)), Ok((payload, _))) = (cache, &outcome) {
            self.inner.store.write(
                WriteOp::PutCache(CacheEntry {
                    key,
                    project: run.cache.project.clone(),
                    domain: run.cache.domain.clone(),
                    task: def.full_name().to_string(),
                    version,
                    output: payload.clone(),
                    created_at: ended,
                }),
                None,
            );
        }
        let (status, output, error, delivered) = match outcome {
            Ok((payload, bytes)) => (ActionStatus::Succeeded, Some(payload), None, Ok(bytes)),
            Err(f) => (ActionStatus::Failed, None, Some(f.clone()), Err(f)),
        };
        let is_root = id == ActionId::ROOT;
        let run_write = is_root.then(|| WriteOp::FinishRun {
            run: run.id,
            status: if status == ActionStatus::Succeeded {
                RunStatus::Succeeded
            } else {
                RunStatus::Failed
            },
            output: output.clone(),
            error: error.clone(),
            ended_at: ended,
        });
        let state = run.clone();
        let engine = self.clone();
        let ack: weir_store::Ack = Box::new(move |committed| {
            let delivered = match committed {
                Ok(()) => delivered,
                Err(e) => Err(Failure {
                    action_id: id.to_string(),
                    task: def.full_name().into(),
                    kind: ErrorKind::System,
                    message: format!("could not persist the result: {e}"),
                    chain: vec![],
                }),
            };
            if delivered.is_ok() {
                state.counters.succeeded.fetch_add(1, Ordering::Relaxed);
            } else {
                state.counters.failed.fetch_add(1, Ordering::Relaxed);
            }
            let entry = state.live.lock().remove(&id);
            if is_root {
                let outcome = match &delivered {
                    Ok(b) => RunOutcome::Succeeded(b.clone()),
                    Err(f) => RunOutcome::Failed(f.clone()),
                };
                state.done.send_replace(Some(outcome));
                engine.inner.runs.lock().remove(&state.id);
            }
            if let Some(entry) = entry {
                for w in entry.waiters {
                    let _ = w.send(delivered.clone());
                }
            }
        });
        let finish = WriteOp::FinishAction {
            run: run.id,
            id,
            status,
            output,
            error,
            cache_hit: false,
            ended_at: ended,
        };
        match run_write {
            Some(rw) => {
                self.inner.store.write(finish, None);
                self.inner.store.write(rw, Some(ack));
            }
            None => self.inner.store.write(finish, Some(ack)),
        }
    }

    /// Looks up the checkpoint of trace `id` in run `run_id` (SPEC §6.4): a recorded output,
    /// a recorded non-recoverable failure, or nothing (run the trace).
    pub(crate) async fn lookup_checkpoint(
        &self,
        run_id: i64,
        id: ActionId,
    ) -> Result<crate::trace::Recorded> {
        use crate::trace::Recorded;
        let rec = self
            .inner
            .store
            .action(run_id, id)
            .map_err(|e| Error::with_kind(ErrorKind::System, e))?;
        Ok(match rec.map(|r| (r.status, r.output, r.error)) {
            Some((ActionStatus::Succeeded, Some(out), _)) => {
                Recorded::Output(self.load_payload(&out).await?.to_vec())
            }
            // A recoverable failure runs the trace again; any other is re-raised.
            Some((ActionStatus::Failed, _, Some(f))) if !f.kind.is_retryable() => {
                Recorded::Failure(f)
            }
            _ => Recorded::Nothing,
        })
    }

    /// Records a trace checkpoint and waits for its commit.
    #[allow(clippy::too_many_arguments)]
    pub(crate) async fn record_checkpoint(
        &self,
        run: &RunState,
        id: ActionId,
        parent: ActionId,
        name: std::borrow::Cow<'static, str>,
        inputs: &[u8],
        started_at: i64,
        outcome: std::result::Result<Vec<u8>, Failure>,
    ) -> Result<()> {
        let inputs = self
            .store_payload(|| format!("{}/{id}/inputs", run.name), inputs)
            .await?;
        let (status, output, error) = match outcome {
            Ok(bytes) => {
                let p = self
                    .store_payload(|| format!("{}/{id}/1/outputs", run.name), &bytes)
                    .await?;
                (ActionStatus::Succeeded, Some(p), None)
            }
            Err(f) => (ActionStatus::Failed, None, Some(f)),
        };
        let store = &self.inner.store;
        let what = name.to_string();
        store.write(
            WriteOp::InsertAction {
                run: run.id,
                id,
                parent,
                task: name,
                group: None,
                kind: ActionKind::Trace,
                inputs,
                queued_at: started_at,
            },
            None,
        );
        store.write(
            WriteOp::StartAttempt {
                run: run.id,
                id,
                attempt: 1,
                started_at,
            },
            None,
        );
        let (tx, rx) = oneshot::channel();
        store.write(
            WriteOp::FinishAction {
                run: run.id,
                id,
                status,
                output,
                error,
                cache_hit: false,
                ended_at: now_us(),
            },
            Some(Box::new(move |r| {
                let _ = tx.send(r);
            })),
        );
        match rx.await {
            Ok(Ok(())) => Ok(()),
            Ok(Err(e)) => Err(Error::with_kind(
                ErrorKind::System,
                format!("could not record trace {what}: {e}"),
            )),
            Err(_) => Err(Error::with_kind(
                ErrorKind::System,
                format!("could not record trace {what}: the state writer stopped"),
            )),
        }
    }

    /// The state of a run driven by this process, by row id.
    pub(crate) fn run_state(&self, run_id: i64) -> Option<Arc<RunState>> {
        self.inner.runs.lock().get(&run_id).cloned()
    }

    /// Polls the store for an abort of this run requested by another process.
    pub(crate) fn aborted_in_store(&self, run: &RunState) -> bool {
        matches!(self.inner.store.run_by_name(&run.name), Ok(r) if r.status == RunStatus::Aborted)
    }

    /// Time between checks for an external abort.
    pub(crate) const ABORT_POLL: Duration = Duration::from_millis(500);
}

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
