//! Run context and run handles (SPEC §2.6, §3.4).

use std::collections::BTreeMap;
use std::marker::PhantomData;
use std::sync::Arc;
use std::sync::atomic::Ordering;

use serde::{Deserialize, Serialize, de::DeserializeOwned};
use weir_core::{ErrorKind, codec};

use crate::engine::{Engine, RunOutcome, RunState};
use crate::{Error, Result};

/// Where cache entries are looked up (SPEC §3.4, §6.2).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum CacheLookupScope {
    /// Entries of every project and domain (default).
    #[default]
    Global,
    /// Only entries of this run's project and domain.
    ProjectDomain,
}

/// Per-run settings.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct RunContext {
    /// Run name; generated when unset.
    pub name: Option<String>,
    /// Re-execute cached tasks and replace their entries.
    #[serde(default)]
    pub overwrite_cache: bool,
    /// Skip the cache entirely for this run.
    #[serde(default)]
    pub disable_cache: bool,
    /// Cache lookup scope.
    #[serde(default)]
    pub cache_lookup_scope: CacheLookupScope,
    /// At most this many actions of the run execute at once (a parent waiting on children does
    /// not hold a slot).
    pub max_action_concurrency: Option<usize>,
    /// Labels.
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
    /// Project (default `"default"`).
    pub project: Option<String>,
    /// Domain (default `"development"`).
    pub domain: Option<String>,
}

impl RunContext {
    /// Defaults.
    pub fn new() -> Self {
        Self::default()
    }
    /// Sets the run name.
    pub fn name(mut self, name: impl Into<String>) -> Self {
        self.name = Some(name.into());
        self
    }
    /// Re-execute cached tasks and overwrite their entries.
    pub fn overwrite_cache(mut self, yes: bool) -> Self {
        self.overwrite_cache = yes;
        self
    }
    /// Disable the cache for this run.
    pub fn disable_cache(mut self, yes: bool) -> Self {
        self.disable_cache = yes;
        self
    }
    /// Cache lookup scope.
    pub fn cache_lookup_scope(mut self, scope: CacheLookupScope) -> Self {
        self.cache_lookup_scope = scope;
        self
    }
    /// Bound on concurrently executing actions.
    pub fn max_action_concurrency(mut self, n: usize) -> Self {
        self.max_action_concurrency = Some(n);
        self
    }
    /// Adds a label.
    pub fn label(mut self, k: impl Into<String>, v: impl Into<String>) -> Self {
        self.labels.insert(k.into(), v.into());
        self
    }
    /// Project and domain.
    pub fn project_domain(mut self, project: impl Into<String>, domain: impl Into<String>) -> Self {
        self.project = Some(project.into());
        self.domain = Some(domain.into());
        self
    }
}

/// Progress of a run.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Progress {
    /// Actions created so far.
    pub created: u64,
    /// Attempts running now.
    pub running: u64,
    /// Actions succeeded.
    pub succeeded: u64,
    /// Actions failed or cancelled.
    pub failed: u64,
    /// Child calls answered from recorded results (after a resume).
    pub recovered: u64,
    /// Child calls answered from the cache.
    pub cache_hits: u64,
}

/// A handle on a started run, untyped (output as canonical bytes).
#[derive(Clone)]
pub struct RunHandle {
    engine: Engine,
    run: Arc<RunState>,
}

impl std::fmt::Debug for RunHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RunHandle")
            .field("name", &self.run.name())
            .finish()
    }
}

impl RunHandle {
    pub(crate) fn new(engine: Engine, run: Arc<RunState>) -> Self {
        RunHandle { engine, run }
    }

    /// The run's name.
    pub fn name(&self) -> &str {
        self.run.name()
    }

    /// Current progress.
    pub fn progress(&self) -> Progress {
        let c = self.run.counters();
        Progress {
            created: c.created.load(Ordering::Relaxed),
            running: c.running.load(Ordering::Relaxed),
            succeeded: c.succeeded.load(Ordering::Relaxed),
            failed: c.failed.load(Ordering::Relaxed),
            recovered: c.recovered.load(Ordering::Relaxed),
            cache_hits: c.cache_hits.load(Ordering::Relaxed),
        }
    }

    /// Whether the run has finished.
    pub fn is_done(&self) -> bool {
        self.run.done.borrow().is_some()
    }

    /// Aborts the run.
    pub fn abort(&self) {
        self.engine.abort_run_state(&self.run);
    }

    /// Waits for the run to end; returns the root's output bytes. An abort requested by another
    /// process through the store is noticed within half a second.
    pub async fn wait_raw(&self) -> Result<Arc<[u8]>> {
        let mut rx = self.run.done.subscribe();
        loop {
            if let Some(outcome) = rx.borrow_and_update().clone() {
                return match outcome {
                    RunOutcome::Succeeded(b) => Ok(b),
                    RunOutcome::Failed(f) => Err(Error::from_failure(f)),
                    RunOutcome::Aborted => Err(Error::with_kind(
                        ErrorKind::Cancelled,
                        format!("run {} was aborted", self.name()),
                    )),
                };
            }
            tokio::select! {
                changed = rx.changed() => {
                    if changed.is_err() {
                        return Err(Error::with_kind(ErrorKind::System, "the engine stopped before the run ended"));
                    }
                }
                _ = tokio::time::sleep(Engine::ABORT_POLL) => {
                    if self.engine.aborted_in_store(&self.run).await {
                        self.engine.abort_run_state(&self.run);
                    }
                }
            }
        }
    }

    /// Waits and decodes the output as `O`.
    pub async fn wait_as<O: DeserializeOwned>(&self) -> Result<O> {
        let bytes = self.wait_raw().await?;
        codec::decode(&bytes).map_err(|e| {
            Error::with_kind(
                ErrorKind::Codec,
                format!(
                    "the output of run {} does not decode as the expected type: {e}",
                    self.name()
                ),
            )
        })
    }

    /// A typed view.
    pub fn typed<O: DeserializeOwned>(self) -> Run<O> {
        Run {
            handle: self,
            _output: PhantomData,
        }
    }
}

/// A handle on a started run with a typed output.
#[derive(Debug)]
pub struct Run<O> {
    handle: RunHandle,
    _output: PhantomData<fn() -> O>,
}

impl<O: DeserializeOwned> Run<O> {
    /// The run's name.
    pub fn name(&self) -> &str {
        self.handle.name()
    }
    /// Current progress.
    pub fn progress(&self) -> Progress {
        self.handle.progress()
    }
    /// Aborts the run.
    pub fn abort(&self) {
        self.handle.abort()
    }
    /// Waits for the typed output.
    pub async fn wait(&self) -> Result<O> {
        self.handle.wait_as().await
    }
    /// The untyped handle.
    pub fn raw(&self) -> &RunHandle {
        &self.handle
    }
}
