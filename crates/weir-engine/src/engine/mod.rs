//! The embedded control plane: runs, the live-action table, the in-process executor.
//!
//! Hot state (live actions and their waiters) is in memory; every state change goes to the
//! [`Store`] writer in order, and a waiter is told an action's outcome only once the commit
//! that holds it is acknowledged (SPEC §12.1). Finished actions leave memory at that point, so
//! a run's memory is bounded by what is live, not by its size.
//!
//! The rules are plain functions in [`crate::decide`]; the files here gather their inputs and
//! carry out what they return:
//!
//! - `state`: the live-action table and run counters;
//! - `runs`: start, resume and abort of runs;
//! - `admit`: a child call: attach to a live action, replay a recorded one, a cache hit, or a
//!   new action;
//! - `attempt`: the attempt loop of one action (slot, retries, timeouts) and its end;
//! - `cache`: cache keys and hits;
//! - `payload`: inline values and offloading to the object store;
//! - `checkpoint`: trace checkpoints.

mod admit;
mod attempt;
mod cache;
mod checkpoint;
pub mod error;
mod owner;
mod payload;
mod recover;
mod runs;
mod state;

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use parking_lot::Mutex;
use weir_blob::{BLOB_URL_SETTING, BlobStore, Payloads};
use weir_core::ErrorKind;
use weir_core::spec::DEFAULT_INLINE_STORE_THRESHOLD;
use weir_store::{RunId, RunStatus, Store, StoreOptions};

pub(crate) use admit::ChildCall;
pub(crate) use checkpoint::TraceOutcome;
pub(crate) use runs::generate_run_name;
pub use state::RunOutcome;
pub(crate) use state::RunState;

use crate::Error;

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
    store: Arc<dyn Store>,
    payloads: Payloads,
    options: EngineOptions,
    runs: Mutex<HashMap<RunId, Arc<RunState>>>,
    /// Concurrency bounds of environments in the in-process executor, by name.
    env_limits: crate::limits::EnvLimits,
    /// The process executor, when attempts run in worker processes.
    executor: Option<Arc<crate::worker::executor::Executor>>,
    /// This engine instance as the owner of the runs it drives.
    owner: owner::OwnerId,
    heartbeat_started: std::sync::atomic::AtomicBool,
}

/// A handle on the engine that does not keep it alive (held by the process executor).
pub(crate) struct WeakEngine(std::sync::Weak<Inner>);

impl WeakEngine {
    /// A weak handle on `engine`.
    #[cfg(test)]
    pub(crate) fn of(engine: &Engine) -> WeakEngine {
        WeakEngine(Arc::downgrade(&engine.inner))
    }

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

/// A store or blob error as the task-facing error.
pub(crate) fn system(e: impl std::fmt::Display) -> Error {
    Error::with_kind(ErrorKind::System, e)
}

impl Engine {
    /// Opens the embedded engine on a state directory (created if needed).
    pub fn open(options: EngineOptions) -> std::result::Result<Engine, error::Error> {
        crate::registry::check_unique_names()?;
        Self::open_registered(options)
    }

    /// [`Engine::open`] without the check of the registry (this crate's unit tests register
    /// duplicate names on purpose).
    pub(crate) fn open_registered(
        options: EngineOptions,
    ) -> std::result::Result<Engine, error::Error> {
        let store = weir_store::open(&options.state_dir, options.store.clone())?;
        let blobs = Self::open_blobs(store.as_ref(), &options)?;
        let processes = options.executor != crate::worker::ExecutorKind::InProcess;
        // The worker API's admission secret, drawn before anything can fail half-way.
        let secret = processes
            .then(crate::worker::admission_secret)
            .transpose()
            .map_err(error::Error::System)?;
        Ok(Engine {
            inner: Arc::new_cyclic(|weak| Inner {
                store,
                payloads: Payloads::new(blobs, options.inline_store_threshold),
                executor: secret.map(|secret| {
                    Arc::new(crate::worker::executor::Executor::new(
                        WeakEngine(weak.clone()),
                        options.workers.clone(),
                        &options.state_dir,
                        secret,
                    ))
                }),
                options,
                runs: Mutex::new(HashMap::new()),
                env_limits: crate::limits::EnvLimits::new(processes),
                owner: owner::OwnerId::generate(),
                heartbeat_started: Default::default(),
            }),
        })
    }

    /// The object store of the state: the one recorded in it, or `blob_url` (recorded on first
    /// use), or `<state_dir>/blobs`. A `blob_url` other than the recorded one is refused: the
    /// payloads of earlier runs would not be found.
    fn open_blobs(
        store: &dyn Store,
        options: &EngineOptions,
    ) -> std::result::Result<BlobStore, error::Error> {
        let recorded = futures::executor::block_on(store.setting(BLOB_URL_SETTING))?;
        let (url, record) = match (recorded, &options.blob_url) {
            (Some(recorded), Some(given)) if recorded != *given => {
                return Err(error::Error::Config(format!(
                    "the state in {} keeps its payloads in {recorded}, not {given}; use the same blob URL (or another state directory)",
                    options.state_dir.display()
                )));
            }
            (Some(recorded), _) => (recorded, false),
            (None, Some(given)) => (given.clone(), true),
            (None, None) => return Ok(BlobStore::local(&options.state_dir.join("blobs"))?),
        };
        let blobs = BlobStore::from_url(&url)?;
        // An s3:// bucket is listed now, before it is recorded: a missing one is an error at
        // start rather than at the first large payload.
        blobs.check_blocking()?;
        if record {
            futures::executor::block_on(store.set_setting(BLOB_URL_SETTING, &url))?;
        }
        Ok(blobs)
    }

    /// The state store.
    pub fn store(&self) -> &Arc<dyn Store> {
        &self.inner.store
    }

    /// The object store for payloads.
    pub fn blobs(&self) -> &BlobStore {
        self.inner
            .payloads
            .blobs()
            .expect("an engine's object store exists")
    }

    /// Retires the worker processes of the process executor (if any) and records their final
    /// state; waits up to `grace` for them to exit. Call it before the process exits.
    pub async fn shutdown_workers(&self, grace: Duration) {
        if let Some(exec) = &self.inner.executor {
            exec.shutdown(grace).await;
        }
    }

    /// Commits everything queued.
    pub fn flush(&self) -> std::result::Result<(), error::Error> {
        self.inner
            .store
            .sync()
            .wait()
            .map_err(|e| error::Error::Store(weir_store::Error::Corrupt(e.to_string())))
    }

    /// Commits what is queued and closes the state store (the command line does this before
    /// it exits). Runs still live in this engine can no longer record anything.
    pub fn close(&self) -> std::result::Result<(), error::Error> {
        Ok(self.inner.store.close()?)
    }

    /// The state of a run driven by this process, by id.
    pub(crate) fn run_state(&self, run_id: RunId) -> Option<Arc<RunState>> {
        self.inner.runs.lock().get(&run_id).cloned()
    }

    /// Polls the store for an abort of this run requested by another process.
    pub(crate) async fn aborted_in_store(&self, run: &RunState) -> bool {
        matches!(self.inner.store.run_by_name(&run.name).await, Ok(r) if r.status == RunStatus::Aborted)
    }

    /// Time between checks for an external abort.
    pub(crate) const ABORT_POLL: Duration = Duration::from_millis(500);
}
