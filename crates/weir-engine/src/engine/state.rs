//! In-memory state of the runs this process drives: the live-action table (with each action's
//! status, changed only through the lifecycle table), waiters, counters and the run slot.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64};

use parking_lot::Mutex;
use tokio::sync::{Semaphore, oneshot, watch};
use tokio::task::AbortHandle;
use weir_core::{ActionEvent, ActionId, ActionStatus, Failure};
use weir_store::RunId;

/// The outcome of an action as delivered to waiters: canonical output bytes or the failure.
pub(crate) type Outcome = std::result::Result<Arc<[u8]>, Failure>;

pub(crate) struct LiveAction {
    pub(crate) status: ActionStatus,
    pub(crate) waiters: Vec<oneshot::Sender<Outcome>>,
    pub(crate) abort: Option<AbortHandle>,
    /// Set once the final write is queued; a cancel then no longer applies.
    pub(crate) finishing: bool,
    /// Cache key and version the output is stored under when it succeeds.
    pub(crate) cache: Option<(String, String)>,
}

impl LiveAction {
    pub(crate) fn queued(
        waiters: Vec<oneshot::Sender<Outcome>>,
        cache: Option<(String, String)>,
    ) -> Self {
        LiveAction {
            status: ActionStatus::Queued,
            waiters,
            abort: None,
            finishing: false,
            cache,
        }
    }
}

/// The run's cache settings (SPEC §3.4, §6.2).
pub(crate) struct RunCache {
    pub(crate) disabled: bool,
    pub(crate) overwrite: bool,
    pub(crate) project_domain_only: bool,
    pub(crate) project: String,
    pub(crate) domain: String,
}

/// Action ids are already uniform hashes: the live table uses them as their own hash.
pub(crate) type IdHash = std::hash::BuildHasherDefault<IdHasher>;

#[derive(Default)]
pub(crate) struct IdHasher(u64);

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
    pub(crate) id: RunId,
    pub(crate) name: String,
    pub(crate) limit: Option<Arc<Semaphore>>,
    pub(crate) recovering: bool,
    pub(crate) live: Mutex<HashMap<ActionId, LiveAction, IdHash>>,
    pub(crate) counters: Counters,
    pub(crate) cache: RunCache,
    pub(crate) done: watch::Sender<Option<RunOutcome>>,
    pub(crate) aborted: AtomicBool,
    /// The earlier run whose succeeded actions this run takes (`rerun --recover`).
    pub(crate) recover: Option<RecoverFrom>,
}

/// What a `rerun --recover` run takes from the earlier run.
#[derive(Clone, Debug)]
pub(crate) struct RecoverFrom {
    /// The earlier run.
    pub run: RunId,
    /// Action ids (display form) and task or trace names that run again.
    pub force: std::collections::HashSet<String>,
}

impl RecoverFrom {
    /// Whether the action `id` of `task` must run again rather than be recovered.
    pub(crate) fn forced(&self, id: ActionId, task: &str) -> bool {
        self.force.contains(task) || self.force.contains(&id.to_string())
    }
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

/// Why a live action's status could not change.
#[derive(Debug)]
pub(crate) enum NotLive {
    /// It left the live table (cancelled, or its run aborted).
    Gone,
    /// The lifecycle table refuses the event (logged there; a bug in the engine).
    Refused,
}

impl RunState {
    /// Whether this run was resumed after its process died.
    pub(crate) fn recovering(&self) -> bool {
        self.recovering || self.recover.is_some()
    }

    /// The run's name.
    pub fn name(&self) -> &str {
        &self.name
    }
    /// Progress counters.
    pub fn counters(&self) -> &Counters {
        &self.counters
    }

    /// Applies `event` to live action `id` through the lifecycle table.
    pub(crate) fn transition(
        &self,
        id: ActionId,
        event: ActionEvent,
    ) -> Result<ActionStatus, NotLive> {
        let mut live = self.live.lock();
        let action = live.get_mut(&id).ok_or(NotLive::Gone)?;
        action.status = action.status.take(event).map_err(|refused| {
            tracing::error!(run = %self.name, action = %id, %refused, "status change refused by the lifecycle table");
            NotLive::Refused
        })?;
        Ok(action.status)
    }
}
