//! Cluster mode (SPEC §10.2): a control plane that runs no user code, over a shared store
//! (PostgreSQL), with any number of replicas, and workers anywhere that speak the worker
//! protocol to it over HTTP.
//!
//! # Stateless replicas
//! All state is in the store; a replica keeps only caches and wake-ups, so every replica
//! serves every request and a replica's death loses nothing:
//!
//! - a run is submitted by a client with the settings of every task of its code version
//!   ([`TaskSpec`], kept in the store under the version): the control plane decides retries,
//!   caching and inline limits without the code;
//! - an action's attempt is a row of the store's queue named `env@version`
//!   ([`spec::queue_name`]), so only workers of the run's code version lease it;
//! - child admission reads the store (recorded? live? cached?) and queues what must run; a
//!   worker's completion is checked against the current lease (fencing), its writes commit, and
//!   only then is it acknowledged and the lease removed: a replica killed between the commit
//!   and the removal leaves a lease whose completion the worker delivers again to another
//!   replica (the writes are the same);
//! - the outcome of a child goes to the worker that asked for it: at once when the child ends
//!   on the same replica, otherwise found by a sweep of the store (a call waiting 1 s is
//!   looked up, then again every tenth of the time it waited, at least 250 ms apart and at
//!   most 5 s; one query per run); a worker that moves to another replica submits its open
//!   calls again, which admission answers from the store;
//! - each replica reaps expired leases (a worker that stopped heartbeating): the attempt is
//!   queued again as a system retry, and after too many the action fails.
//!
//! # Not yet
//! `max_queued` and `deadline` are not enforced here: tasks that declare them are refused when
//! submitted (see [`TaskSpec::unsupported`]; `max_runtime` is enforced by the worker that runs
//! the attempt, an environment's `max_concurrency` by the lease over all its versions' queues); an abort does not stop attempts that are
//! already running (their completions are ignored); a cancelled child call is not cancelled.

pub mod access;
mod admit;
mod api;
mod client;
mod complete;
mod direct;
mod failover;
mod inspect;
mod metrics;
mod outbox;
mod rerun;
mod runs;
pub mod spec;
mod submit;
mod views;

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::AtomicU64;
use std::time::{Duration, Instant};

use parking_lot::Mutex;
use tokio::sync::Notify;
use weir_blob::{PayloadKey, Payloads};
use weir_core::clock::now_us;
use weir_core::{ActionId, ActionStatus, ErrorKind, Failure};
use weir_store::{ActionKind, QueuedAttempt, RunId, Store, WriteOp};

use crate::worker::protocol::{ObjectStoreOffer, RemoteError};

pub use client::ClusterClient;
pub use failover::FailoverClient;
pub use runs::client_router;
pub use spec::{TaskSpec, binary_version, local_specs, version_of};
pub use views::{
    ActionIo, ActionView, ActionsWithIo, AttemptLogView, CacheView, RerunOf, RunSubmission, RunView,
};

/// Settings of a control-plane replica. Every default is written on its field.
#[derive(Clone, Debug)]
pub struct ClusterOptions {
    /// A lease not renewed by its worker's heartbeat for this long expires. Default 5 s.
    pub lease_ttl: Duration,
    /// How long a lease or results request waits for work. Default 5 s.
    pub long_poll: Duration,
    /// How often the replica reaps expired leases. Default 500 ms.
    pub reap_every: Duration,
    /// Times an attempt is queued again after its worker was lost before its action fails.
    /// Default 3.
    pub max_system_retries: u32,
    /// This replica's id (recorded as the owner of the runs it creates).
    pub replica: String,
}

impl Default for ClusterOptions {
    fn default() -> Self {
        ClusterOptions {
            lease_ttl: Duration::from_secs(5),
            long_poll: Duration::from_secs(5),
            reap_every: Duration::from_millis(500),
            max_system_retries: 3,
            replica: format!("serve:{}", std::process::id()),
        }
    }
}

/// A registered worker, as the replica caches it.
pub(crate) struct WorkerInfo {
    pub(crate) queue: String,
    /// Its environment's concurrency limit, if it has one.
    pub(crate) cap: Option<weir_store::Cap>,
}

/// What the replica keeps of a run.
pub(crate) struct RunMeta {
    pub(crate) name: String,
    pub(crate) version: String,
    pub(crate) cache_disabled: bool,
    pub(crate) cache_overwrite: bool,
    /// Project and domain; cache lookups are limited to them when the flag is set.
    pub(crate) scope: (String, String, bool),
    /// The earlier run whose succeeded actions this one recovers (`rerun --recover`).
    pub(crate) recover: Option<rerun::Recover>,
}

/// Counters for `/metrics`.
#[derive(Default)]
pub(crate) struct Counters {
    pub(crate) leased: AtomicU64,
    pub(crate) completed: AtomicU64,
    pub(crate) rejected: AtomicU64,
    /// Sum of queue waits of leased attempts (µs), for the mean dispatch latency.
    pub(crate) dispatch_us: AtomicU64,
    /// Payload bytes the worker API carried in its messages: inputs in leases, outputs in
    /// completions, child inputs, child results, trace checkpoints.
    pub(crate) payload_proxied: AtomicU64,
    /// Payload bytes workers read or wrote in the object store themselves (the sizes of the
    /// references exchanged instead).
    pub(crate) payload_direct: AtomicU64,
}

impl Counters {
    /// Counts `n` payload bytes carried through the worker API.
    pub(crate) fn proxied(&self, n: usize) {
        self.payload_proxied
            .fetch_add(n as u64, std::sync::atomic::Ordering::Relaxed);
    }

    /// Counts `n` payload bytes that went between a worker and the object store directly.
    pub(crate) fn direct(&self, n: u64) {
        self.payload_direct
            .fetch_add(n, std::sync::atomic::Ordering::Relaxed);
    }
}

/// One replica of the control plane: a cheap cloneable handle.
#[derive(Clone)]
pub struct ControlPlane {
    pub(crate) inner: Arc<Inner>,
}

pub(crate) struct Inner {
    pub(crate) store: Arc<dyn Store>,
    pub(crate) payloads: Payloads,
    /// The object store as offered to workers at registration: only one they can reach
    /// themselves (`s3://`), see [`ObjectStoreOffer`].
    pub(crate) offer: Option<ObjectStoreOffer>,
    pub(crate) credentials: Arc<crate::worker::Credentials>,
    /// Who each bearer token is (the cluster token, access tokens).
    pub(crate) access: access::Access,
    pub(crate) options: ClusterOptions,
    specs: Mutex<HashMap<String, Arc<spec::Specs>>>,
    pub(crate) workers: Mutex<HashMap<String, Arc<WorkerInfo>>>,
    queues: Mutex<HashMap<String, Arc<Notify>>>,
    runs: Mutex<HashMap<RunId, Arc<RunMeta>>>,
    waiting: Mutex<outbox::Waiting>,
    /// Child calls being admitted here: a second admission of the same action (a call sent
    /// again while the first is admitted) only waits for the outcome.
    pub(crate) admitting: Mutex<std::collections::HashSet<(RunId, ActionId)>>,
    /// Woken when a run ends on this replica.
    pub(crate) run_ended: Notify,
    pub(crate) counters: Counters,
}

/// A failure of the control plane itself (store, object store).
pub(crate) fn system_failure(e: impl std::fmt::Display) -> String {
    e.to_string()
}

impl ControlPlane {
    /// A replica over `store` (shared by all replicas), keeping payloads with `payloads`;
    /// `token` is the cluster token: clients present it, workers register with it. Starts
    /// the reaper and the sweep of waiting calls on the current runtime.
    pub fn new(
        store: Arc<dyn Store>,
        payloads: Payloads,
        token: &str,
        options: ClusterOptions,
    ) -> ControlPlane {
        // A `file://` store is a directory of this machine: workers elsewhere would write to
        // a directory of theirs under the same path, so only `s3://` is offered.
        let offer = payloads
            .blobs()
            .ok()
            .filter(|b| b.is_shared())
            .map(|b| ObjectStoreOffer {
                url: b.url().to_string(),
                inline_threshold: payloads.inline_threshold() as u64,
            });
        let plane = ControlPlane {
            inner: Arc::new(Inner {
                access: access::Access::new(token, store.clone()),
                store,
                payloads,
                offer,
                credentials: Arc::new(crate::worker::Credentials::cluster(token)),
                options,
                specs: Mutex::default(),
                workers: Mutex::default(),
                queues: Mutex::default(),
                runs: Mutex::default(),
                waiting: Mutex::default(),
                admitting: Mutex::default(),
                run_ended: Notify::new(),
                counters: Counters::default(),
            }),
        };
        let weak = Arc::downgrade(&plane.inner);
        tokio::spawn(async move {
            let every = match weak.upgrade() {
                Some(inner) => inner.options.reap_every,
                None => return,
            };
            let mut tick = tokio::time::interval(every.min(Duration::from_millis(100)));
            let mut last_reap = Instant::now();
            loop {
                tick.tick().await;
                let Some(inner) = weak.upgrade() else { return };
                inner.sweep().await;
                if last_reap.elapsed() >= every {
                    last_reap = Instant::now();
                    if let Err(e) = inner.reap().await {
                        tracing::warn!(error = %e, "reaping expired leases failed; trying again");
                    }
                }
            }
        });
        plane
    }

    /// Who `token` is: the cluster token, an access token (`weir token create`), or no one.
    pub async fn principal(&self, token: &str) -> Result<Option<access::Principal>, String> {
        self.inner.access.principal(token).await
    }

    /// The HTTP routes of the worker protocol and of clients (`/v1/...`), authenticated.
    pub fn router(&self) -> axum::Router {
        let api: Arc<dyn crate::worker::WorkerApi> = Arc::new(api::ClusterApi {
            inner: self.inner.clone(),
        });
        let limit = crate::worker::protocol::body_limit(64 << 20);
        crate::worker::worker_router(api, self.inner.credentials.clone(), limit)
            .merge(runs::client_router(self.clone()))
    }

    /// The state store.
    pub fn store(&self) -> &Arc<dyn Store> {
        &self.inner.store
    }
}

impl Inner {
    /// The task specs of a code version (cached; read from the store on a miss).
    pub(crate) async fn specs(&self, version: &str) -> Result<Arc<spec::Specs>, String> {
        if let Some(s) = self.specs.lock().get(version) {
            return Ok(s.clone());
        }
        let text = self
            .store
            .setting(&spec::setting_key(version))
            .await
            .map_err(system_failure)?
            .ok_or_else(|| format!("no task settings are known for code version {version}"))?;
        let list: Vec<TaskSpec> = serde_json::from_str(&text)
            .map_err(|e| format!("stored task settings of version {version}: {e}"))?;
        let specs: Arc<spec::Specs> =
            Arc::new(list.into_iter().map(|s| (s.name.clone(), s)).collect());
        self.specs.lock().insert(version.to_string(), specs.clone());
        Ok(specs)
    }

    /// Records the specs of a version (first writer wins: a version's code cannot change).
    pub(crate) async fn record_specs(
        &self,
        version: &str,
        tasks: &[TaskSpec],
    ) -> Result<(), String> {
        if self.specs(version).await.is_ok() {
            return Ok(());
        }
        let text = serde_json::to_string(tasks).map_err(system_failure)?;
        self.store
            .set_setting(&spec::setting_key(version), &text)
            .await
            .map_err(system_failure)
    }

    /// What the replica keeps of a run (read from the store on a miss).
    pub(crate) async fn run_meta(&self, run: RunId) -> Result<Arc<RunMeta>, String> {
        if let Some(m) = self.runs.lock().get(&run) {
            return Ok(m.clone());
        }
        let record = self.store.run(run).await.map_err(system_failure)?;
        let meta = Arc::new(run_meta(&record.name, &record.context));
        self.runs.lock().insert(run, meta.clone());
        Ok(meta)
    }

    /// The wake-up of a queue's long polls.
    pub(crate) fn queue_notify(&self, queue: &str) -> Arc<Notify> {
        self.queues
            .lock()
            .entry(queue.to_string())
            .or_default()
            .clone()
    }

    /// Queues an attempt (due at `due`, µs) and wakes the queue's long polls here.
    pub(crate) async fn enqueue(&self, attempt: QueuedAttempt, due: i64) -> Result<(), String> {
        let queue = attempt.env.clone();
        self.store
            .enqueue(attempt, due)
            .await
            .map_err(system_failure)?;
        self.queue_notify(&queue).notify_waiters();
        Ok(())
    }

    /// Commits `writes` and waits for the commit.
    pub(crate) async fn commit(&self, writes: Vec<WriteOp>) -> Result<(), String> {
        let n = writes.len();
        let mut ticket = None;
        for (i, op) in writes.into_iter().enumerate() {
            if i + 1 == n {
                ticket = Some(self.store.commit(op));
            } else {
                self.store.write(op);
            }
        }
        match ticket {
            Some(t) => t.await.map_err(system_failure),
            None => Ok(()),
        }
    }

    /// Stores a payload (inline or in the object store).
    pub(crate) async fn store_payload(
        &self,
        key: PayloadKey<'_>,
        bytes: &[u8],
    ) -> Result<weir_store::Payload, String> {
        self.payloads
            .store(key, bytes)
            .await
            .map_err(system_failure)
    }

    /// The payload of a call's inputs: the bytes it carried, stored (inline or in the object
    /// store), or the reference the worker made (its key and size checked when it came).
    pub(crate) async fn call_inputs(
        &self,
        run_name: &str,
        id: ActionId,
        inputs: CallInputs<'_>,
    ) -> Result<weir_store::Payload, String> {
        match inputs {
            CallInputs::Bytes(bytes) => {
                let key = PayloadKey::Inputs {
                    run: run_name,
                    action: &id,
                };
                self.store_payload(key, bytes).await
            }
            CallInputs::Stored(r) => Ok(r.to_payload()),
        }
    }

    /// The outcome of an ended action as a caller receives it.
    pub(crate) async fn outcome_of(&self, rec: &weir_store::ActionRecord) -> Outcome {
        match (rec.status, &rec.output, &rec.error) {
            (ActionStatus::Succeeded, Some(out), _) => self
                .output_of(out)
                .await
                .map_err(|e| remote(ErrorKind::System, e)),
            (_, _, Some(f)) => Err(child_failed(f.clone())),
            _ => Err(remote(
                ErrorKind::System,
                format!(
                    "action {} ended {} without a result",
                    rec.id,
                    rec.status.as_str()
                ),
            )),
        }
    }

    /// A recorded output as a caller receives it: inline bytes, or the offloaded payload once
    /// its object is there with its size (its hash is checked by whoever reads it).
    pub(crate) async fn output_of(&self, out: &weir_core::Payload) -> Result<Output, String> {
        match out {
            weir_core::Payload::Inline(bytes) => {
                Ok(Output::Bytes(serde_bytes::ByteBuf::from(bytes.to_vec())))
            }
            weir_core::Payload::Offloaded { path, size, .. } => {
                let blobs = self.payloads.blobs().map_err(|e| e.to_string())?;
                match blobs.size(path).await {
                    Ok(n) if n == *size => Ok(Output::Stored(out.clone())),
                    Ok(n) => Err(format!(
                        "object {path:?} holds {n} bytes, its reference says {size}"
                    )),
                    Err(e) => Err(e.to_string()),
                }
            }
        }
    }

    /// Requeues attempts of lost workers; fails those lost too often.
    async fn reap(&self) -> Result<(), String> {
        let reaped = self
            .store
            .reap(now_us(), self.options.max_system_retries)
            .await
            .map_err(system_failure)?;
        for a in &reaped.requeued {
            tracing::info!(run = %a.run, action = %a.action, "lease expired: queued again");
            self.queue_notify(&a.env).notify_waiters();
        }
        for a in reaped.gave_up {
            let message = format!(
                "the workers running it were lost {} times (no heartbeat within {:?})",
                self.options.max_system_retries + 1,
                self.options.lease_ttl
            );
            let failure = Failure {
                action_id: a.action.to_string(),
                task: a.task.clone(),
                kind: ErrorKind::System,
                message,
                chain: vec![],
            };
            self.finish(a.run, a.action, &a.task, Err(failure), None, None)
                .await?;
        }
        Ok(())
    }

    /// Ends an action: its writes (cache entry, action, run, and `dequeue`: its lease's
    /// removal from the queue) commit together, then the calls waiting on it get the outcome.
    /// `output` is the stored payload of a success, with its bytes when the worker sent them
    /// (none when it wrote them to the object store itself); `lease`, the lease that completed
    /// it (dequeued with the writes) and its worker's phase timings.
    pub(crate) async fn finish(
        &self,
        run: RunId,
        id: ActionId,
        task: &str,
        outcome: Result<(weir_store::Payload, Option<Vec<u8>>), Failure>,
        cache: Option<(String, String)>,
        lease: Option<(u64, Option<weir_core::phases::Phases>)>,
    ) -> Result<(), String> {
        let (dequeue, phases) = match lease {
            Some((l, p)) => (Some(l), p),
            None => (None, None),
        };
        let meta = self.run_meta(run).await?;
        let (stored, delivered) = match outcome {
            Ok((payload, Some(bytes))) => (
                Ok(payload),
                Ok(Output::Bytes(serde_bytes::ByteBuf::from(bytes))),
            ),
            // Written by the worker to the object store: handed on as a reference (read there
            // by a waiting worker that can, by `take_results` for one that cannot).
            Ok((payload, None)) => (Ok(payload.clone()), Ok(Output::Stored(payload))),
            Err(f) => (Err(f.clone()), Err(child_failed(f))),
        };
        let mut writes = crate::decide::finish_writes(crate::decide::Finish {
            run,
            id,
            task,
            from: ActionStatus::Running,
            outcome: stored,
            cache,
            scope: (&meta.scope.0, &meta.scope.1),
            ended_at: now_us(),
            phases,
        })
        .map_err(system_failure)?;
        writes.extend(dequeue.map(|lease| WriteOp::Dequeue {
            run,
            action: id,
            lease,
        }));
        // Seen before it is on disk: the waiting parent goes on at once, and whatever it writes
        // next commits after this; the worker is answered once it is on disk.
        let commit_at = std::time::Instant::now();
        let staged = self.commit_staged(writes);
        staged.visible.await.map_err(system_failure)?;
        self.resolve((run, id), &delivered);
        if id == ActionId::ROOT {
            self.run_ended.notify_waiters();
        }
        staged.durable.await.map_err(system_failure)?;
        static FINISHED: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
        let n = FINISHED.fetch_add(1, std::sync::atomic::Ordering::Relaxed) + 1;
        if let Some(mut phases) = phases.filter(|_| weir_core::phases::Phases::sampled(n)) {
            phases.deliver = commit_at.elapsed().as_micros() as u64;
            // Not waited for: a lost record of a delivery time loses no result.
            drop(self.commit_staged(vec![WriteOp::Delivered {
                run,
                id,
                phases: Box::new(phases),
            }]));
        }
        Ok(())
    }

    /// Writes an action row for a new call and queues its first attempt.
    pub(crate) async fn start_action(&self, new: NewAction<'_>) -> Result<(), String> {
        let inputs = self.call_inputs(&new.run_name, new.id, new.inputs).await?;
        let attempt = QueuedAttempt {
            run: new.run,
            action: new.id,
            attempt: new.base_attempt + 1,
            env: spec::queue_name(&spec::qualified(new.project, &new.spec.env), new.version),
            task: new.spec.name.clone(),
        };
        let queue = attempt.env.clone();
        let now = now_us();
        // The row and its queue entry commit together; leased as soon as seen (a crash of the
        // database before it is on disk fails `durable`, and the admission is tried again).
        let staged = self.commit_staged(vec![
            WriteOp::InsertAction {
                run: new.run,
                id: new.id,
                parent: new.parent,
                task: new.spec.name.clone().into(),
                group: new.group.map(Arc::from),
                kind: ActionKind::Task,
                inputs,
                queued_at: now,
            },
            WriteOp::Enqueue { attempt, due: now },
        ]);
        staged.visible.await.map_err(system_failure)?;
        self.queue_notify(&queue).notify_waiters();
        staged.durable.await.map_err(system_failure)
    }

    /// Queues `writes` (at least one), the last one staged: see
    /// [`weir_store::Store::commit_staged`].
    fn commit_staged(&self, mut writes: Vec<WriteOp>) -> weir_store::Staged {
        let last = writes.pop().expect("at least one write");
        for op in writes {
            self.store.write(op);
        }
        self.store.commit_staged(last)
    }
}

/// A new action to start.
pub(crate) struct NewAction<'a> {
    pub(crate) run: RunId,
    pub(crate) run_name: String,
    pub(crate) project: &'a str,
    pub(crate) version: &'a str,
    pub(crate) id: ActionId,
    pub(crate) parent: ActionId,
    pub(crate) spec: &'a TaskSpec,
    pub(crate) inputs: CallInputs<'a>,
    pub(crate) group: Option<String>,
    pub(crate) base_attempt: u32,
}

/// A call's inputs as its message brought them.
#[derive(Clone, Copy)]
pub(crate) enum CallInputs<'a> {
    /// The bytes.
    Bytes(&'a [u8]),
    /// A reference to the object the worker wrote (checked when the message came).
    Stored(&'a crate::worker::protocol::PayloadRef),
}

/// A child's outcome as the worker protocol carries it.
/// A child's output as a replica hands it on: its bytes, or the offloaded payload, which a
/// worker with access to the object store reads itself (see `outbox.rs`).
#[derive(Clone, Debug)]
pub(crate) enum Output {
    Bytes(serde_bytes::ByteBuf),
    Stored(weir_core::Payload),
}

pub(crate) type Outcome = Result<Output, RemoteError>;

pub(crate) fn remote(kind: ErrorKind, message: String) -> RemoteError {
    RemoteError {
        kind,
        message,
        chain: vec![],
        child: None,
    }
}

/// A child's failure as its caller receives it.
pub(crate) fn child_failed(f: Failure) -> RemoteError {
    RemoteError {
        kind: ErrorKind::ChildFailed,
        message: f.message.clone(),
        chain: vec![],
        child: Some(f),
    }
}

/// What a run's recorded context says for the control plane.
fn run_meta(name: &str, context: &serde_json::Value) -> RunMeta {
    let ctx: crate::RunContext = serde_json::from_value(context.clone()).unwrap_or_default();
    RunMeta {
        name: name.to_string(),
        version: context["cluster_version"]
            .as_str()
            .unwrap_or_default()
            .to_string(),
        cache_disabled: ctx.disable_cache,
        cache_overwrite: ctx.overwrite_cache,
        scope: (
            ctx.project.unwrap_or_else(|| "default".into()),
            ctx.domain.unwrap_or_else(|| "development".into()),
            ctx.cache_lookup_scope == crate::CacheLookupScope::ProjectDomain,
        ),
        recover: rerun::Recover::of(context),
    }
}
