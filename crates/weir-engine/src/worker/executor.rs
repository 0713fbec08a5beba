//! The engine side of worker processes: per-environment queues, leases with fencing tokens,
//! heartbeats, the replica pool of each environment and its scaling decisions (SPEC §7.2, §7.4),
//! and the HTTP server of the worker protocol.
//!
//! Decisions are logged with `tracing` and appended to `<state_dir>/workers/decisions.jsonl`;
//! the replica table is written to `<state_dir>/workers/replicas.json` (read by `get workers`).
//! Each worker's stdout and stderr go to `<state_dir>/workers/<env>-<engine pid>-<worker>.log`.

use std::collections::{BTreeMap, HashMap, HashSet, VecDeque};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Weak};
use std::time::{Duration, Instant};

use axum::Router;
use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, State as AxState};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use parking_lot::Mutex;
use serde::{Deserialize, Serialize, de::DeserializeOwned};
use tokio::sync::{Notify, oneshot};
use tokio::task::AbortHandle;
use weir_core::spec::ReusePolicy;
use weir_core::{ActionId, ErrorKind};
use weir_store::{RunId, now_us};

use super::client::{from_remote, to_remote};
use super::protocol::*;
use super::{Error as ProtocolError, WorkerOptions};
use crate::call::TaskCtx;
use crate::engine::{Engine, RunState, WeakEngine};
use crate::registry::{self, TaskDef};
use crate::{Error, Result};

/// One replica as shown by `get workers`.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct ReplicaRecord {
    /// Environment.
    pub env: String,
    /// Worker id.
    pub worker: String,
    /// Process id.
    pub pid: u32,
    /// `starting`, `ready`, `retiring`, `retired` or `lost`.
    pub state: String,
    /// Leased attempts not yet completed.
    pub in_flight: usize,
    /// Attempts it completed.
    pub completed: u64,
    /// Start time (µs since the epoch).
    pub started_at: i64,
    /// Retirement or death time (µs).
    pub ended_at: Option<i64>,
    /// Runs one action and exits (environment without a `ReusePolicy`).
    pub once: bool,
    /// Its stdout/stderr log file.
    pub log: PathBuf,
}

/// One executor decision (scale up, retire, stop, requeue, reject).
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct DecisionRecord {
    /// When (µs since the epoch).
    pub at: i64,
    /// Environment.
    pub env: String,
    /// Worker concerned, if any.
    pub worker: Option<String>,
    /// What was decided and why.
    pub decision: String,
}

/// The executor's tables as written for `get workers`.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct WorkersSnapshot {
    /// Replicas, per engine process, in start order.
    pub replicas: Vec<ReplicaRecord>,
    /// Decisions, oldest first.
    pub decisions: Vec<DecisionRecord>,
}

/// Reads what the process executors of a state directory recorded.
pub fn read_snapshot(state_dir: &Path) -> WorkersSnapshot {
    let dir = state_dir.join("workers");
    let mut snap = WorkersSnapshot::default();
    if let Ok(entries) = std::fs::read_dir(&dir) {
        let mut files: Vec<_> = entries
            .flatten()
            .map(|e| e.path())
            .filter(|p| {
                p.file_name()
                    .and_then(|n| n.to_str())
                    .is_some_and(|n| n.starts_with("replicas-") && n.ends_with(".json"))
            })
            .collect();
        files.sort();
        for f in files {
            if let Ok(bytes) = std::fs::read(&f)
                && let Ok(mut r) = serde_json::from_slice::<Vec<ReplicaRecord>>(&bytes)
            {
                snap.replicas.append(&mut r);
            }
        }
    }
    snap.replicas.sort_by_key(|r| r.started_at);
    if let Ok(text) = std::fs::read_to_string(dir.join("decisions.jsonl")) {
        snap.decisions = text
            .lines()
            .filter_map(|l| serde_json::from_str(l).ok())
            .collect();
    }
    snap
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum ReplicaState {
    Starting,
    Ready,
    Retiring,
    Retired,
    Lost,
}

impl ReplicaState {
    fn as_str(self) -> &'static str {
        match self {
            ReplicaState::Starting => "starting",
            ReplicaState::Ready => "ready",
            ReplicaState::Retiring => "retiring",
            ReplicaState::Retired => "retired",
            ReplicaState::Lost => "lost",
        }
    }
    fn alive(self) -> bool {
        matches!(
            self,
            ReplicaState::Starting | ReplicaState::Ready | ReplicaState::Retiring
        )
    }
    /// Counts towards the environment's replicas (a retiring one does not).
    fn serving(self) -> bool {
        matches!(self, ReplicaState::Starting | ReplicaState::Ready)
    }
}

struct Replica {
    id: String,
    env: String,
    pid: u32,
    child: Child,
    state: ReplicaState,
    in_flight: HashSet<u64>,
    completed: u64,
    last_heartbeat: Instant,
    idle_since: Instant,
    retiring_since: Option<Instant>,
    started_at: i64,
    ended_at: Option<i64>,
    once: bool,
    log: PathBuf,
    outbox: Vec<ChildResult>,
    outbox_notify: Arc<Notify>,
    cancelled: Vec<u64>,
}

struct EnvPool {
    policy: Option<ReusePolicy>,
    queue: VecDeque<u64>,
    notify: Arc<Notify>,
    last_work: Instant,
    active: bool,
}

type Outcome = std::result::Result<Vec<u8>, Error>;

struct AttemptSlot {
    run: Arc<RunState>,
    action: ActionId,
    attempt: u32,
    def: &'static TaskDef,
    inputs: Arc<[u8]>,
    system_retries: u32,
    /// `(lease id, worker number)` while leased.
    lease: Option<(u64, u64)>,
    tx: oneshot::Sender<Outcome>,
}

#[derive(Default)]
struct State {
    envs: HashMap<String, EnvPool>,
    replicas: BTreeMap<u64, Replica>,
    attempts: HashMap<u64, AttemptSlot>,
    leases: HashMap<u64, u64>,
    calls: HashMap<(u64, u64), AbortHandle>,
    /// Engine-side contexts of attempts running in workers, by (run, action): they hold the
    /// run-level slot, released while the attempt waits on children.
    contexts: HashMap<(RunId, ActionId), Arc<TaskCtx>>,
    next: u64,
    next_worker: u64,
    dirty: bool,
    decisions: Vec<DecisionRecord>,
}

/// The process executor of one engine.
pub(crate) struct Executor {
    engine: WeakEngine,
    options: WorkerOptions,
    dir: PathBuf,
    state: Mutex<State>,
    url: tokio::sync::OnceCell<String>,
}

fn worker_number(id: &str) -> Option<u64> {
    id.strip_prefix('w')?.parse().ok()
}

impl Executor {
    pub(crate) fn new(engine: WeakEngine, options: WorkerOptions, state_dir: &Path) -> Executor {
        Executor {
            engine,
            options,
            dir: state_dir.join("workers"),
            state: Mutex::new(State::default()),
            url: tokio::sync::OnceCell::new(),
        }
    }

    fn engine(&self) -> Option<Engine> {
        self.engine.upgrade()
    }

    /// Starts the loopback server and the scaling loop on first use.
    async fn ensure_started(self: &Arc<Self>) -> std::result::Result<&str, ProtocolError> {
        self.url
            .get_or_try_init(|| async {
                std::fs::create_dir_all(&self.dir)
                    .map_err(|e| ProtocolError::Server(e.to_string()))?;
                let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
                    .await
                    .map_err(|e| ProtocolError::Server(e.to_string()))?;
                let addr = listener
                    .local_addr()
                    .map_err(|e| ProtocolError::Server(e.to_string()))?;
                let router = Router::new()
                    .route("/v1/lease", post(lease))
                    .route("/v1/heartbeat", post(heartbeat))
                    .route("/v1/complete", post(complete))
                    .route("/v1/submit", post(submit))
                    .route("/v1/results", post(results))
                    .route("/v1/cancel", post(cancel))
                    .route("/v1/trace/lookup", post(trace_lookup))
                    .route("/v1/trace/record", post(trace_record))
                    .layer(DefaultBodyLimit::max(1 << 30))
                    .with_state(Arc::downgrade(self));
                tokio::spawn(async move {
                    if let Err(e) = axum::serve(listener, router).await {
                        tracing::error!(error = %e, "worker API stopped");
                    }
                });
                tokio::spawn(tick_loop(Arc::downgrade(self), self.options.tick));
                let url = format!("http://{addr}");
                tracing::info!(%url, "worker API listening");
                Ok(url)
            })
            .await
            .map(String::as_str)
    }

    /// Runs one attempt in a worker of the task's environment and returns its outcome. Dropping
    /// the future (timeout, abort, caller gone) cancels the attempt.
    pub(crate) async fn run_attempt(
        self: &Arc<Self>,
        run: &Arc<RunState>,
        action: ActionId,
        attempt: u32,
        def: &'static TaskDef,
        inputs: Arc<[u8]>,
        ctx: Arc<TaskCtx>,
    ) -> Result<Vec<u8>> {
        let url = self
            .ensure_started()
            .await
            .map_err(|e| Error::with_kind(ErrorKind::System, e))?
            .to_string();
        let (tx, rx) = oneshot::channel();
        let env = def.environment();
        let key = {
            let mut st = self.state.lock();
            st.next += 1;
            let key = st.next;
            st.attempts.insert(
                key,
                AttemptSlot {
                    run: run.clone(),
                    action,
                    attempt,
                    def,
                    inputs,
                    system_retries: 0,
                    lease: None,
                    tx,
                },
            );
            let pool = st
                .envs
                .entry(env.name().to_string())
                .or_insert_with(|| EnvPool {
                    policy: env.reuse_policy().cloned(),
                    queue: VecDeque::new(),
                    notify: Arc::new(Notify::new()),
                    last_work: Instant::now(),
                    active: false,
                });
            pool.queue.push_back(key);
            pool.last_work = Instant::now();
            pool.notify.notify_waiters();
            st.contexts.insert((run.id, action), ctx);
            self.place(&mut st, env.name(), &url);
            key
        };
        let mut guard = AttemptGuard {
            exec: self.clone(),
            key,
            context: (run.id, action),
            armed: true,
        };
        let outcome = rx.await;
        guard.armed = false;
        self.state.lock().contexts.remove(&(run.id, action));
        match outcome {
            Ok(o) => o,
            Err(_) => Err(Error::with_kind(
                ErrorKind::System,
                "the process executor stopped",
            )),
        }
    }

    /// Starts the workers an environment needs now: `min` replicas when it becomes active, a
    /// fresh process per queued action without a policy.
    fn place(&self, st: &mut State, env: &str, url: &str) {
        let Some(pool) = st.envs.get_mut(env) else {
            return;
        };
        match pool.policy.clone() {
            None => {
                let starting = st
                    .replicas
                    .values()
                    .filter(|r| r.env == env && r.state == ReplicaState::Starting)
                    .count();
                let queued = pool.queue.len();
                for _ in starting..queued {
                    self.spawn(
                        st,
                        env,
                        url,
                        true,
                        "fresh process for a queued action (no reuse policy)",
                    );
                }
            }
            Some(p) => {
                if !pool.active {
                    pool.active = true;
                    self.decide(
                        st,
                        env,
                        None,
                        format!(
                            "start environment: work queued (replicas {}..={}, concurrency {})",
                            p.replicas.start(),
                            p.replicas.end(),
                            p.concurrency
                        ),
                    );
                }
                let serving = st
                    .replicas
                    .values()
                    .filter(|r| r.env == env && r.state.serving())
                    .count();
                let min = (*p.replicas.start()).max(1);
                for _ in serving..min {
                    self.spawn(
                        st,
                        env,
                        url,
                        false,
                        format!("keep min {} replicas", p.replicas.start()),
                    );
                }
            }
        }
    }

    /// Retires every worker (the engine's process is about to exit) and records the final
    /// state for `get workers`. Waits up to `grace` for them to exit.
    pub(crate) async fn shutdown(&self, grace: Duration) {
        if self.url.get().is_none() {
            return;
        }
        {
            let mut st = self.state.lock();
            let serving: Vec<u64> = st
                .replicas
                .iter()
                .filter(|(_, r)| r.state.serving())
                .map(|(n, _)| *n)
                .collect();
            for n in serving {
                self.retire(&mut st, n, "the engine is shutting down".into());
            }
        }
        let deadline = Instant::now() + grace;
        loop {
            self.tick();
            let alive = self.state.lock().replicas.values().any(|r| r.state.alive());
            if !alive || Instant::now() >= deadline {
                break;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        self.state.lock().dirty = true;
        self.tick();
    }

    fn decide(&self, st: &mut State, env: &str, worker: Option<&str>, decision: String) {
        tracing::info!(env, worker, "{decision}");
        let rec = DecisionRecord {
            at: now_us(),
            env: env.to_string(),
            worker: worker.map(str::to_string),
            decision,
        };
        if let Ok(line) = serde_json::to_string(&rec)
            && let Ok(mut f) = std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(self.dir.join("decisions.jsonl"))
        {
            let _ = writeln!(f, "{line}");
        }
        st.decisions.push(rec);
        st.dirty = true;
    }

    fn spawn(&self, st: &mut State, env: &str, url: &str, once: bool, why: impl Into<String>) {
        st.next_worker += 1;
        let n = st.next_worker;
        let id = format!("w{n}");
        let log = self
            .dir
            .join(format!("{env}-{}-{id}.log", std::process::id()));
        let program = match &self.options.program {
            Some(p) => p.clone(),
            None => std::env::current_exe().unwrap_or_else(|_| PathBuf::from("weir-worker")),
        };
        let spawned = std::fs::File::create(&log)
            .and_then(|out| Ok((out.try_clone()?, out)))
            .and_then(|(out, err)| {
                let mut cmd = Command::new(&program);
                cmd.arg("worker")
                    .args(["--env", env, "--engine", url, "--id", &id])
                    .env(
                        "WEIR_WORKER_HEARTBEAT_MS",
                        self.options.heartbeat_interval.as_millis().to_string(),
                    )
                    .stdin(Stdio::null())
                    .stdout(out)
                    .stderr(err);
                if once {
                    cmd.arg("--once");
                }
                cmd.spawn()
            });
        match spawned {
            Ok(child) => {
                let now = Instant::now();
                let pid = child.id();
                self.decide(
                    st,
                    env,
                    Some(&id),
                    format!("spawn {id} (pid {pid}): {}", why.into()),
                );
                st.replicas.insert(
                    n,
                    Replica {
                        id,
                        env: env.to_string(),
                        pid,
                        child,
                        state: ReplicaState::Starting,
                        in_flight: HashSet::new(),
                        completed: 0,
                        last_heartbeat: now,
                        idle_since: now,
                        retiring_since: None,
                        started_at: now_us(),
                        ended_at: None,
                        once,
                        log,
                        outbox: Vec::new(),
                        outbox_notify: Arc::new(Notify::new()),
                        cancelled: Vec::new(),
                    },
                );
            }
            Err(e) => {
                let e = ProtocolError::Spawn {
                    program: program.display().to_string(),
                    message: e.to_string(),
                };
                self.decide(st, env, None, format!("spawn failed: {e}"));
                // Nothing can run the queued actions: fail them rather than wait forever.
                if let Some(pool) = st.envs.get_mut(env) {
                    let keys: Vec<u64> = pool.queue.drain(..).collect();
                    for k in keys {
                        if let Some(slot) = st.attempts.remove(&k) {
                            let _ = slot
                                .tx
                                .send(Err(Error::with_kind(ErrorKind::System, e.to_string())));
                        }
                    }
                }
            }
        }
    }

    fn retire(&self, st: &mut State, n: u64, why: String) {
        let Some(r) = st.replicas.get_mut(&n) else {
            return;
        };
        r.state = ReplicaState::Retiring;
        r.retiring_since = Some(Instant::now());
        r.outbox_notify.notify_waiters();
        let (env, id) = (r.env.clone(), r.id.clone());
        if let Some(pool) = st.envs.get(&env) {
            pool.notify.notify_waiters();
        }
        self.decide(st, &env, Some(&id), format!("retire {id}: {why}"));
    }

    /// A worker died or was presumed dead: its leases are requeued as system retries.
    fn requeue_leases(&self, st: &mut State, n: u64) {
        let Some(r) = st.replicas.get_mut(&n) else {
            return;
        };
        let leases: Vec<u64> = r.in_flight.drain().collect();
        let (env, id) = (r.env.clone(), r.id.clone());
        r.outbox.clear();
        for lease in leases {
            let Some(key) = st.leases.remove(&lease) else {
                continue;
            };
            let Some(slot) = st.attempts.get_mut(&key) else {
                continue;
            };
            slot.lease = None;
            slot.system_retries += 1;
            let what = format!(
                "action {} of run {} (attempt {}, {})",
                slot.action,
                slot.run.name(),
                slot.attempt,
                slot.def.full_name()
            );
            if slot.system_retries > self.options.max_system_retries {
                let slot = st.attempts.remove(&key).expect("slot present");
                let msg = format!(
                    "{what} lost its worker {} times; giving up after {} system retries (see `get workers` and the worker logs)",
                    slot.system_retries, self.options.max_system_retries
                );
                self.decide(st, &env, Some(&id), msg.clone());
                let _ = slot.tx.send(Err(Error::with_kind(ErrorKind::System, msg)));
            } else {
                let k = slot.system_retries;
                if let Some(pool) = st.envs.get_mut(&env) {
                    pool.queue.push_front(key);
                    pool.notify.notify_waiters();
                }
                self.decide(
                    st,
                    &env,
                    Some(&id),
                    format!(
                        "requeue {what}: system retry {k}/{}",
                        self.options.max_system_retries
                    ),
                );
            }
        }
    }

    /// One round of health checks and scaling decisions.
    fn tick(&self) {
        let Some(url) = self.url.get().cloned() else {
            return;
        };
        let now = Instant::now();
        let mut st = self.state.lock();
        let st = &mut *st;
        // Health: exits, missed heartbeats, retirements that take too long.
        let numbers: Vec<u64> = st.replicas.keys().copied().collect();
        for n in numbers {
            let r = st.replicas.get_mut(&n).expect("replica present");
            if r.state == ReplicaState::Lost {
                // Fenced off but maybe still running: reap it, or kill it after a grace period.
                if r.ended_at.is_none() {
                    let exited = matches!(r.child.try_wait(), Ok(Some(_)));
                    let overdue = r
                        .retiring_since
                        .is_some_and(|t| now.duration_since(t) > Duration::from_secs(30));
                    if overdue {
                        let _ = r.child.kill();
                        let _ = r.child.wait();
                    }
                    if exited || overdue {
                        r.ended_at = Some(now_us());
                        st.dirty = true;
                    }
                }
                continue;
            }
            if !r.state.alive() {
                continue;
            }
            let (id, env) = (r.id.clone(), r.env.clone());
            match r.child.try_wait() {
                Ok(Some(status)) => {
                    r.ended_at = Some(now_us());
                    if r.state == ReplicaState::Retiring || (r.once && r.in_flight.is_empty()) {
                        r.state = ReplicaState::Retired;
                        st.dirty = true;
                    } else {
                        r.state = ReplicaState::Lost;
                        let leases = r.in_flight.len();
                        let pid = r.pid;
                        self.decide(
                            st,
                            &env,
                            Some(&id),
                            format!("{id} (pid {pid}) exited unexpectedly ({status}) with {leases} leased actions"),
                        );
                        self.requeue_leases(st, n);
                    }
                    continue;
                }
                Ok(None) => {}
                Err(e) => tracing::warn!(worker = id, error = %e, "cannot check worker"),
            }
            let silent = now.duration_since(r.last_heartbeat);
            let limit = if r.state == ReplicaState::Starting {
                self.options.startup_timeout
            } else {
                self.options.heartbeat_timeout
            };
            let stuck_retiring = r.state == ReplicaState::Retiring
                && r.retiring_since
                    .is_some_and(|t| now.duration_since(t) > Duration::from_secs(10));
            if stuck_retiring {
                let _ = r.child.kill();
                let _ = r.child.wait();
                r.ended_at = Some(now_us());
                r.state = ReplicaState::Retired;
                let pid = r.pid;
                self.decide(
                    st,
                    &env,
                    Some(&id),
                    format!("kill {id} (pid {pid}): did not exit within 10 s of its retirement"),
                );
                self.requeue_leases(st, n);
            } else if silent > limit {
                // Fenced off rather than killed (a remote worker cannot be killed either): its
                // leases go to other replicas and any completion it still sends is rejected.
                r.state = ReplicaState::Lost;
                r.retiring_since = Some(now);
                let (pid, leases) = (r.pid, r.in_flight.len());
                self.decide(
                    st,
                    &env,
                    Some(&id),
                    format!("fence off {id} (pid {pid}): no heartbeat for {silent:?} (limit {limit:?}); {leases} leased actions"),
                );
                self.requeue_leases(st, n);
            }
        }
        // Scaling, per environment with a policy.
        let envs: Vec<String> = st.envs.keys().cloned().collect();
        for env in envs {
            let pool = st.envs.get(&env).expect("pool present");
            let Some(policy) = pool.policy.clone() else {
                if !pool.queue.is_empty() {
                    self.place(st, &env, &url);
                }
                continue;
            };
            let idle_ttl = self.options.idle_ttl.unwrap_or(policy.idle_ttl);
            let scaledown_ttl = self.options.scaledown_ttl.unwrap_or(policy.scaledown_ttl);
            let queued = pool.queue.len();
            let serving: Vec<(u64, usize, ReplicaState, Instant)> = st
                .replicas
                .iter()
                .filter(|(_, r)| r.env == env && r.state.serving())
                .map(|(n, r)| (*n, r.in_flight.len(), r.state, r.idle_since))
                .collect();
            let in_flight: usize = serving.iter().map(|s| s.1).sum();
            let pool = st.envs.get_mut(&env).expect("pool present");
            if queued > 0 || in_flight > 0 {
                pool.last_work = now;
            }
            let last_work = pool.last_work;
            if queued > 0 || in_flight > 0 {
                self.place(st, &env, &url);
            }
            let pool = st.envs.get(&env).expect("pool present");
            if !pool.active {
                continue;
            }
            let views: Vec<ReplicaView> = serving
                .iter()
                .map(|&(n, busy, state, idle)| ReplicaView {
                    n,
                    busy,
                    starting: state == ReplicaState::Starting,
                    idle_for: now.duration_since(idle),
                })
                .collect();
            let ttls = (idle_ttl, scaledown_ttl);
            match scale_step(&policy, ttls, queued, &views, now.duration_since(last_work)) {
                ScaleStep::Hold => {}
                ScaleStep::ScaleUp { free } => self.spawn(
                    st,
                    &env,
                    &url,
                    false,
                    format!(
                        "scale up to {}: {queued} actions wait, {free} free slots",
                        views.len() + 1
                    ),
                ),
                ScaleStep::StopEnvironment => {
                    for v in &views {
                        self.retire(
                            st,
                            v.n,
                            format!("environment idle for {idle_ttl:?} (idle_ttl)"),
                        );
                    }
                    if let Some(pool) = st.envs.get_mut(&env) {
                        pool.active = false;
                    }
                    self.decide(
                        st,
                        &env,
                        None,
                        format!("stop environment: no work for {idle_ttl:?}"),
                    );
                }
                ScaleStep::Retire { n } => self.retire(
                    st,
                    n,
                    format!(
                        "idle for {scaledown_ttl:?} (scaledown_ttl), {} > min {}",
                        views.len(),
                        policy.replicas.start()
                    ),
                ),
            }
        }
        if st.dirty {
            st.dirty = false;
            let records: Vec<ReplicaRecord> = st
                .replicas
                .values()
                .map(|r| ReplicaRecord {
                    env: r.env.clone(),
                    worker: r.id.clone(),
                    pid: r.pid,
                    state: r.state.as_str().to_string(),
                    in_flight: r.in_flight.len(),
                    completed: r.completed,
                    started_at: r.started_at,
                    ended_at: r.ended_at,
                    once: r.once,
                    log: r.log.clone(),
                })
                .collect();
            let path = self
                .dir
                .join(format!("replicas-{}.json", std::process::id()));
            let tmp = path.with_extension("tmp");
            if let Ok(bytes) = serde_json::to_vec_pretty(&records)
                && std::fs::write(&tmp, bytes).is_ok()
            {
                let _ = std::fs::rename(&tmp, &path);
            }
        }
    }
}

/// A serving replica as the scaling rule sees it.
#[derive(Clone, Debug)]
struct ReplicaView {
    n: u64,
    /// Leased attempts not completed.
    busy: usize,
    /// Started but not yet leasing (its slots count as free: they are coming).
    starting: bool,
    /// Time since its last attempt completed (or since it started).
    idle_for: Duration,
}

/// One scaling step of an active environment with a policy.
#[derive(Debug, PartialEq, Eq)]
enum ScaleStep {
    Hold,
    /// Add a replica: more actions wait than there are free slots, below `max`.
    ScaleUp {
        free: usize,
    },
    /// No work for `idle_ttl`: retire every replica.
    StopEnvironment,
    /// A replica idle for `scaledown_ttl` while above `min`.
    Retire {
        n: u64,
    },
}

/// The scaling rule (SPEC §7.2), a pure function of the environment's state: at most one step
/// per tick, so a burst grows the pool gradually and a short lull retires one replica at a time.
fn scale_step(
    policy: &ReusePolicy,
    (idle_ttl, scaledown_ttl): (Duration, Duration),
    queued: usize,
    replicas: &[ReplicaView],
    idle_for: Duration,
) -> ScaleStep {
    let free: usize = replicas
        .iter()
        .map(|r| {
            if r.starting {
                policy.concurrency
            } else {
                policy.concurrency.saturating_sub(r.busy)
            }
        })
        .sum();
    let in_flight: usize = replicas.iter().map(|r| r.busy).sum();
    if queued > free && replicas.len() < *policy.replicas.end() {
        return ScaleStep::ScaleUp { free };
    }
    if queued == 0 && in_flight == 0 && idle_for >= idle_ttl {
        return ScaleStep::StopEnvironment;
    }
    if replicas.len() > *policy.replicas.start()
        && let Some(r) = replicas
            .iter()
            .find(|r| r.busy == 0 && !r.starting && r.idle_for >= scaledown_ttl)
    {
        return ScaleStep::Retire { n: r.n };
    }
    ScaleStep::Hold
}

/// Drops an attempt whose caller stopped waiting; a leased one is cancelled in its worker.
struct AttemptGuard {
    exec: Arc<Executor>,
    key: u64,
    context: (RunId, ActionId),
    armed: bool,
}

impl Drop for AttemptGuard {
    fn drop(&mut self) {
        if !self.armed {
            return;
        }
        let mut st = self.exec.state.lock();
        st.contexts.remove(&self.context);
        if let Some(slot) = st.attempts.remove(&self.key)
            && let Some((lease, n)) = slot.lease
        {
            st.leases.remove(&lease);
            if let Some(r) = st.replicas.get_mut(&n) {
                r.in_flight.remove(&lease);
                if r.in_flight.is_empty() {
                    r.idle_since = Instant::now();
                }
                r.cancelled.push(lease);
                st.dirty = true;
            }
        }
    }
}

async fn tick_loop(exec: Weak<Executor>, every: Duration) {
    loop {
        tokio::time::sleep(every).await;
        let Some(exec) = exec.upgrade() else { return };
        exec.tick();
    }
}

// ---- HTTP handlers ----

type Shared = AxState<Weak<Executor>>;

/// A response (boxed: handlers pass refusals around in `Result`s).
struct Reply(Box<Response>);

impl IntoResponse for Reply {
    fn into_response(self) -> Response {
        *self.0
    }
}

/// Waits for a long poll's notification, re-checking at least every 250 ms (a notification
/// sent between the caller's unlock and this wait is caught by the re-check). False once the
/// poll's deadline has passed.
async fn wait_for_more(notify: &tokio::sync::Notify, deadline: Instant) -> bool {
    let remaining = deadline.saturating_duration_since(Instant::now());
    if remaining.is_zero() {
        return false;
    }
    let _ =
        tokio::time::timeout(remaining.min(Duration::from_millis(250)), notify.notified()).await;
    true
}

/// The value of a `Result<T, Reply>`, or returns the refusal from the handler.
macro_rules! or_reply {
    ($e:expr) => {
        match $e {
            Ok(v) => v,
            Err(reply) => return reply,
        }
    };
}

fn ok<T: Serialize>(value: &T) -> Reply {
    match rmp_serde::to_vec_named(value) {
        Ok(b) => Reply(Box::new((StatusCode::OK, b).into_response())),
        Err(e) => refuse(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()),
    }
}

fn refuse(status: StatusCode, message: String) -> Reply {
    let body = rmp_serde::to_vec_named(&ErrorReply { message }).unwrap_or_default();
    Reply(Box::new((status, body).into_response()))
}

fn decode<T: DeserializeOwned>(body: &Bytes) -> std::result::Result<T, Reply> {
    rmp_serde::from_slice(body)
        .map_err(|e| refuse(StatusCode::BAD_REQUEST, format!("bad message: {e}")))
}

fn executor(exec: &Weak<Executor>) -> std::result::Result<Arc<Executor>, Reply> {
    exec.upgrade().ok_or_else(|| {
        refuse(
            StatusCode::CONFLICT,
            "the engine is shutting down".to_string(),
        )
    })
}

/// The worker's number when it is known and alive.
fn live_worker(st: &State, worker: &str) -> std::result::Result<u64, Reply> {
    let n = worker_number(worker)
        .filter(|n| st.replicas.get(n).is_some_and(|r| r.state.alive()))
        .ok_or_else(|| {
            refuse(
                StatusCode::CONFLICT,
                format!(
                    "worker {worker} is unknown to this engine or was presumed dead; it must exit"
                ),
            )
        })?;
    Ok(n)
}

async fn lease(AxState(exec): Shared, body: Bytes) -> Reply {
    let req: LeaseRequest = or_reply!(decode(&body));
    let exec = or_reply!(executor(&exec));
    let deadline = Instant::now() + exec.options.long_poll;
    let mut first = true;
    loop {
        let notify = {
            let mut st = exec.state.lock();
            let st = &mut *st;
            let n = or_reply!(live_worker(st, &req.worker));
            let r = st.replicas.get_mut(&n).expect("replica present");
            // A request counts as a sign of life when it arrives, not while it waits.
            if std::mem::take(&mut first) {
                r.last_heartbeat = Instant::now();
            }
            if r.state == ReplicaState::Starting {
                r.state = ReplicaState::Ready;
                st.dirty = true;
            }
            if r.state == ReplicaState::Retiring {
                return ok(&LeaseResponse {
                    actions: vec![],
                    shutdown: true,
                });
            }
            let env = r.env.clone();
            let Some(pool) = st.envs.get_mut(&env) else {
                return ok(&LeaseResponse::default());
            };
            let mut actions = Vec::new();
            while actions.len() < req.max as usize {
                let Some(key) = pool.queue.pop_front() else {
                    break;
                };
                let Some(slot) = st.attempts.get_mut(&key) else {
                    continue;
                };
                st.next += 1;
                let lease = st.next;
                slot.lease = Some((lease, n));
                st.leases.insert(lease, key);
                actions.push(LeasedAction {
                    lease,
                    run: slot.run.id,
                    run_name: slot.run.name().to_string(),
                    action: slot.action,
                    attempt: slot.attempt,
                    task: slot.def.full_name().to_string(),
                    inputs: slot.inputs.to_vec(),
                    check_store: slot.run.recovering()
                        || slot.attempt > 1
                        || slot.system_retries > 0,
                });
            }
            if !actions.is_empty() {
                let r = st.replicas.get_mut(&n).expect("replica present");
                r.in_flight.extend(actions.iter().map(|a| a.lease));
                st.dirty = true;
                return ok(&LeaseResponse {
                    actions,
                    shutdown: false,
                });
            }
            pool.notify.clone()
        };
        if !wait_for_more(&notify, deadline).await {
            return ok(&LeaseResponse::default());
        }
    }
}

async fn heartbeat(AxState(exec): Shared, body: Bytes) -> Reply {
    let req: Heartbeat = or_reply!(decode(&body));
    let exec = or_reply!(executor(&exec));
    let mut st = exec.state.lock();
    let n = or_reply!(live_worker(&st, &req.worker));
    let r = st.replicas.get_mut(&n).expect("replica present");
    r.last_heartbeat = Instant::now();
    ok(&HeartbeatReply {
        cancelled: std::mem::take(&mut r.cancelled),
        shutdown: r.state == ReplicaState::Retiring,
    })
}

async fn complete(AxState(exec): Shared, body: Bytes) -> Reply {
    let req: CompleteBatch = or_reply!(decode(&body));
    let exec = or_reply!(executor(&exec));
    let n = worker_number(&req.worker).unwrap_or(0);
    let mut rejected = Vec::new();
    let mut deliveries = Vec::with_capacity(req.completions.len());
    {
        let mut st = exec.state.lock();
        let st = &mut *st;
        for c in req.completions {
            let key = st.leases.get(&c.lease).copied();
            let current = key.and_then(|k| st.attempts.get(&k)).is_some_and(|s| {
                s.lease == Some((c.lease, n)) && s.attempt == c.attempt && s.action == c.action
            });
            if !current {
                let why = format!(
                    "action {} attempt {} (lease {}) was fenced off: its lease is no longer current (the worker was presumed dead and the action requeued, or the attempt was cancelled); this completion is ignored",
                    c.action, c.attempt, c.lease
                );
                let env = st
                    .replicas
                    .get(&n)
                    .map(|r| r.env.clone())
                    .unwrap_or_default();
                exec.decide(
                    st,
                    &env,
                    Some(&req.worker),
                    format!("reject completion: {why}"),
                );
                rejected.push((c.lease, why));
                continue;
            }
            let key = st.leases.remove(&c.lease).expect("lease present");
            let slot = st.attempts.remove(&key).expect("slot present");
            if let Some(r) = st.replicas.get_mut(&n) {
                r.in_flight.remove(&c.lease);
                r.completed += 1;
                if r.in_flight.is_empty() {
                    r.idle_since = Instant::now();
                }
            }
            let outcome = match c.outcome {
                AttemptOutcome::Output(bytes) => Ok(bytes),
                AttemptOutcome::Error(e) => Err(from_remote(e)),
            };
            deliveries.push((slot.tx, outcome));
        }
        st.dirty = true;
    }
    for (tx, outcome) in deliveries {
        let _ = tx.send(outcome);
    }
    ok(&CompleteReply { rejected })
}

async fn submit(AxState(exec): Shared, body: Bytes) -> Reply {
    let req: SubmitBatch = or_reply!(decode(&body));
    let exec = or_reply!(executor(&exec));
    let Some(engine) = exec.engine() else {
        return refuse(StatusCode::CONFLICT, "the engine is shutting down".into());
    };
    let n = {
        let st = exec.state.lock();
        or_reply!(live_worker(&st, &req.worker))
    };
    for call in req.calls {
        let id = call.call;
        let parent = exec
            .state
            .lock()
            .contexts
            .get(&(call.run, call.parent))
            .cloned();
        let run = engine.run_state(call.run);
        let def = registry::find_task(&call.task);
        let weak = Arc::downgrade(&exec);
        let engine = engine.clone();
        let task = tokio::spawn(async move {
            let outcome = match (run, def) {
                (None, _) => Err(Error::with_kind(
                    ErrorKind::Cancelled,
                    format!(
                        "run {} is not live in this engine (ended or aborted)",
                        call.run
                    ),
                )),
                (_, Err(e)) => Err(Error::with_kind(ErrorKind::System, e)),
                (Some(run), Ok(def)) => {
                    match def.check_inline("inputs", call.inputs.len()) {
                        Err(e) => Err(e),
                        Ok(()) => {
                            // The parent gives its run-level slot back while it waits (as
                            // in process), so that its children can use it.
                            if let Some(p) = &parent {
                                p.begin_wait();
                            }
                            let r = engine
                                .submit_boxed(crate::engine::ChildCall {
                                    run,
                                    parent: call.parent,
                                    id: call.id,
                                    def,
                                    inputs: call.inputs,
                                    group: call.group.map(Arc::from),
                                    may_replay: call.check_store,
                                })
                                .await;
                            if let Some(p) = &parent {
                                p.end_wait().await;
                            }
                            r
                        }
                    }
                }
            };
            let Some(exec) = weak.upgrade() else { return };
            let mut st = exec.state.lock();
            st.calls.remove(&(n, id));
            if let Some(r) = st.replicas.get_mut(&n) {
                r.outbox.push(ChildResult {
                    call: id,
                    outcome: outcome
                        .map(|b| serde_bytes::ByteBuf::from(b.to_vec()))
                        .map_err(|e| to_remote(&e)),
                });
                r.outbox_notify.notify_waiters();
            }
        });
        let mut st = exec.state.lock();
        if !task.is_finished() {
            st.calls.insert((n, id), task.abort_handle());
        }
    }
    ok(&())
}

async fn results(AxState(exec): Shared, body: Bytes) -> Reply {
    let req: ResultsRequest = or_reply!(decode(&body));
    let exec = or_reply!(executor(&exec));
    let deadline = Instant::now() + exec.options.long_poll;
    loop {
        let notify = {
            let mut st = exec.state.lock();
            let n = match live_worker(&st, &req.worker) {
                Ok(n) => n,
                Err(_) => {
                    return ok(&ResultsReply {
                        results: vec![],
                        shutdown: true,
                    });
                }
            };
            let r = st.replicas.get_mut(&n).expect("replica present");
            if !r.outbox.is_empty() {
                return ok(&ResultsReply {
                    results: std::mem::take(&mut r.outbox),
                    shutdown: false,
                });
            }
            r.outbox_notify.clone()
        };
        if !wait_for_more(&notify, deadline).await {
            return ok(&ResultsReply::default());
        }
    }
}

async fn cancel(AxState(exec): Shared, body: Bytes) -> Reply {
    let req: CancelCalls = or_reply!(decode(&body));
    let exec = or_reply!(executor(&exec));
    let n = worker_number(&req.worker).unwrap_or(0);
    let handles: Vec<AbortHandle> = {
        let mut st = exec.state.lock();
        req.calls
            .iter()
            .filter_map(|c| st.calls.remove(&(n, *c)))
            .collect()
    };
    for h in handles {
        h.abort();
    }
    ok(&())
}

async fn trace_lookup(AxState(exec): Shared, body: Bytes) -> Reply {
    let req: TraceLookup = or_reply!(decode(&body));
    let Some(engine) = exec.upgrade().and_then(|e| e.engine()) else {
        return refuse(StatusCode::CONFLICT, "the engine is shutting down".into());
    };
    match engine.lookup_checkpoint(req.run, req.id).await {
        Ok(c) => ok(&c),
        Err(e) => refuse(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()),
    }
}

async fn trace_record(AxState(exec): Shared, body: Bytes) -> Reply {
    let req: TraceRecord = or_reply!(decode(&body));
    let Some(engine) = exec.upgrade().and_then(|e| e.engine()) else {
        return refuse(StatusCode::CONFLICT, "the engine is shutting down".into());
    };
    let Some(run) = engine.run_state(req.run) else {
        return refuse(
            StatusCode::CONFLICT,
            format!("run {} is not live in this engine", req.run),
        );
    };
    let trace = crate::engine::TraceOutcome {
        id: req.id,
        parent: req.parent,
        name: std::borrow::Cow::Owned(req.name),
        inputs: &req.inputs,
        started_at: req.started_at,
        outcome: req.outcome.map(|b| b.into_vec()),
    };
    let result = engine.record_checkpoint(&run, trace).await;
    match result {
        Ok(()) => ok(&()),
        Err(e) => refuse(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn view(n: u64, busy: usize, idle_ms: u64) -> ReplicaView {
        ReplicaView {
            n,
            busy,
            starting: false,
            idle_for: Duration::from_millis(idle_ms),
        }
    }

    #[test]
    fn scaling_rule_follows_spec_7_2() {
        let policy = ReusePolicy::new().replicas(1..=3).concurrency(2);
        let ttls = (Duration::from_millis(800), Duration::from_millis(300));
        let busy = Duration::ZERO;
        // More waiting than free slots, below max: one more replica.
        let one_full = [view(1, 2, 0)];
        assert_eq!(
            scale_step(&policy, ttls, 3, &one_full, busy),
            ScaleStep::ScaleUp { free: 0 }
        );
        // A starting replica's slots count as free: no second spawn for the same backlog.
        let mut starting = view(2, 0, 0);
        starting.starting = true;
        assert_eq!(
            scale_step(&policy, ttls, 2, &[view(1, 2, 0), starting.clone()], busy),
            ScaleStep::Hold
        );
        // At max, actions wait in the queue (backpressure).
        let full = [view(1, 2, 0), view(2, 2, 0), view(3, 2, 0)];
        assert_eq!(scale_step(&policy, ttls, 100, &full, busy), ScaleStep::Hold);
        // Above min, a replica idle for scaledown_ttl retires; a busy or recent one does not.
        let lull = [view(1, 1, 0), view(2, 0, 100), view(3, 0, 400)];
        assert_eq!(
            scale_step(&policy, ttls, 0, &lull, busy),
            ScaleStep::Retire { n: 3 }
        );
        // Never below min.
        assert_eq!(
            scale_step(
                &policy,
                ttls,
                0,
                &[view(1, 0, 5_000)],
                Duration::from_millis(500)
            ),
            ScaleStep::Hold
        );
        // No work for idle_ttl: the environment stops, min or not.
        assert_eq!(
            scale_step(
                &policy,
                ttls,
                0,
                &[view(1, 0, 5_000)],
                Duration::from_millis(900)
            ),
            ScaleStep::StopEnvironment
        );
        // Work in flight keeps it running.
        assert_eq!(
            scale_step(&policy, ttls, 0, &[view(1, 1, 0)], Duration::from_secs(60)),
            ScaleStep::Hold
        );
    }
}
