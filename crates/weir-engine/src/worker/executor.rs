//! The process executor of one engine: queues an attempt in the lease table, keeps the workers
//! its environment needs (a fresh one per action without a `ReusePolicy`; between `min` and
//! `max` replicas with one, following the scaling rule), checks their health, and records
//! every decision (SPEC §7.2, §7.4).
//!
//! The parts: `leases` (queues, leases, fencing, system retries), `pool` (replicas and their
//! `Launcher`), `scaling` (the rule), `journal` (files for `get workers`), `service` (the
//! engine's side of the worker protocol) and `http` (its transport), started here on first use.

use std::path::Path;
use std::sync::{Arc, Weak};
use std::time::{Duration, Instant};

use parking_lot::Mutex;
use tokio::sync::oneshot;
use weir_core::{ActionId, ErrorKind};
use weir_store::RunId;

use super::auth::Credentials;
use super::journal::Journal;
use super::leases::{AttemptSpec, Leases, Outcome, Requeued};
use super::pool::{LaunchSpec, Launcher, LocalProcess, Pool, ReplicaState};
use super::protocol::body_limit;
use super::scaling::{ReplicaView, ScaleStep, scale_step};
use super::service::{ChildCalls, EngineApi};
use super::{Error as ProtocolError, WorkerOptions};
use crate::call::TaskCtx;
use crate::engine::{RunState, WeakEngine};
use crate::registry::TaskDef;
use crate::{Error, Result};

/// Everything the executor keeps, behind one lock.
pub(super) struct State {
    pub(super) leases: Leases,
    pub(super) pool: Pool,
    pub(super) calls: ChildCalls,
    pub(super) journal: Journal,
}

/// The process executor of one engine.
pub(crate) struct Executor {
    pub(super) engine: WeakEngine,
    pub(super) options: WorkerOptions,
    pub(super) state: Mutex<State>,
    url: tokio::sync::OnceCell<String>,
    /// The admission secret handed to the workers it launches, and the tokens they got.
    pub(super) credentials: Arc<Credentials>,
}

impl Executor {
    pub(crate) fn new(
        engine: WeakEngine,
        options: WorkerOptions,
        state_dir: &Path,
        secret: String,
    ) -> Executor {
        let launcher: Arc<dyn Launcher> = Arc::new(LocalProcess {
            program: options.program.clone(),
            program_args: options.program_args.clone(),
            secret: secret.clone(),
        });
        let credentials = Arc::new(Credentials::new(&secret));
        Executor {
            engine,
            credentials: credentials.clone(),
            state: Mutex::new(State {
                leases: Leases::new(options.max_system_retries),
                pool: Pool::new(launcher, credentials),
                calls: ChildCalls::default(),
                journal: Journal::new(state_dir.join("workers")),
            }),
            options,
            url: tokio::sync::OnceCell::new(),
        }
    }

    /// Starts the loopback server and the scaling loop on first use.
    async fn ensure_started(self: &Arc<Self>) -> std::result::Result<&str, ProtocolError> {
        self.url
            .get_or_try_init(|| async {
                let server = |e: std::io::Error| ProtocolError::Server(e.to_string());
                std::fs::create_dir_all(self.state.lock().journal.dir()).map_err(server)?;
                let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
                    .await
                    .map_err(server)?;
                let addr = listener.local_addr().map_err(server)?;
                let api = Arc::new(EngineApi::new(Arc::downgrade(self)));
                let limit = body_limit(crate::registry::max_inline_limit());
                let router = super::http::router(api, self.credentials.clone(), limit);
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

    /// Queues one attempt for a worker of the task's environment. The attempt is leased to a
    /// worker later ([`QueuedAttempt::leased`]) and its outcome comes back through
    /// [`QueuedAttempt::outcome`]. Dropping the handle (timeout, abort, caller gone) cancels
    /// the attempt, queued or leased.
    pub(crate) async fn queue_attempt(
        self: &Arc<Self>,
        run: &Arc<RunState>,
        action: ActionId,
        attempt: u32,
        def: &'static TaskDef,
        inputs: Arc<[u8]>,
        ctx: Arc<TaskCtx>,
    ) -> Result<QueuedAttempt> {
        let url = self
            .ensure_started()
            .await
            .map_err(|e| Error::with_kind(ErrorKind::System, e))?
            .to_string();
        let (tx, outcome) = oneshot::channel();
        let (leased_tx, leased) = oneshot::channel();
        let env = def.environment();
        let spec = AttemptSpec {
            run: run.id,
            run_name: Arc::from(run.name()),
            recovering: run.recovering(),
            action,
            attempt,
            task: def.full_name(),
            inputs,
        };
        let key = {
            let mut st = self.state.lock();
            let key = st.leases.enqueue(env.name(), spec, tx);
            st.leases.on_lease(key, leased_tx);
            let pool = st.pool.env(env.name(), env.reuse_policy());
            pool.last_work = Instant::now();
            pool.notify.notify_waiters();
            st.calls.contexts.insert((run.id, action), ctx);
            st.place(&self.options, env.name(), &url);
            key
        };
        Ok(QueuedAttempt {
            guard: AttemptGuard {
                exec: self.clone(),
                key,
                context: (run.id, action),
                armed: true,
            },
            leased: Some(leased),
            outcome,
        })
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
                .pool
                .replicas
                .iter()
                .filter(|(_, r)| r.state.serving())
                .map(|(n, _)| *n)
                .collect();
            for n in serving {
                st.retire(n, "the engine is shutting down".into());
            }
        }
        let deadline = Instant::now() + grace;
        loop {
            self.tick();
            let alive = self.state.lock().pool.any_alive();
            if !alive || Instant::now() >= deadline {
                break;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        self.state.lock().journal.touch();
        self.tick();
    }

    /// One round of health checks and scaling decisions, then the replica table is written
    /// if it changed.
    fn tick(&self) {
        let Some(url) = self.url.get() else {
            return;
        };
        let options = &self.options;
        let mut st = self.state.lock();
        let st = &mut *st;
        let (lost, changed) = st.pool.check_health(
            &st.leases,
            options.startup_timeout,
            options.heartbeat_timeout,
        );
        if changed {
            st.journal.touch();
        }
        for l in lost {
            st.journal.decide(&l.env, Some(&l.id), l.decision);
            st.requeue_leases(l.worker);
        }
        let envs: Vec<String> = st.pool.envs.keys().cloned().collect();
        for env in envs {
            st.scale(options, &env, url);
        }
        let State {
            pool,
            leases,
            journal,
            ..
        } = st;
        journal.flush_rejections();
        journal.flush(|| pool.records(leases));
    }
}

impl State {
    /// Starts the workers an environment needs now: `min` replicas when it becomes active, a
    /// fresh process per queued action without a policy.
    fn place(&mut self, options: &WorkerOptions, env: &str, url: &str) {
        let Some(pool) = self.pool.envs.get_mut(env) else {
            return;
        };
        match pool.policy.clone() {
            None => {
                let starting = self
                    .pool
                    .replicas
                    .values()
                    .filter(|r| r.env == env && r.state == ReplicaState::Starting)
                    .count();
                for _ in starting..self.leases.queued(env) {
                    let why = "fresh process for a queued action (no reuse policy)";
                    self.spawn(options, env, url, true, why.into());
                }
            }
            Some(p) => {
                if !pool.active {
                    pool.active = true;
                    let (min, max) = (p.replicas.start(), p.replicas.end());
                    let decision = format!(
                        "start environment: work queued (replicas {min}..={max}, concurrency {})",
                        p.concurrency
                    );
                    self.journal.decide(env, None, decision);
                }
                let serving = self.pool.serving(env).count();
                let min = (*p.replicas.start()).max(1);
                for _ in serving..min {
                    let why = format!("keep min {} replicas", p.replicas.start());
                    self.spawn(options, env, url, false, why);
                }
            }
        }
    }

    /// One scaling step of `env` (a fresh process per queued action without a policy).
    fn scale(&mut self, options: &WorkerOptions, env: &str, url: &str) {
        let now = Instant::now();
        let queued = self.leases.queued(env);
        let Some(pool) = self.pool.envs.get(env) else {
            return;
        };
        let Some(policy) = pool.policy.clone() else {
            if queued > 0 {
                self.place(options, env, url);
            }
            return;
        };
        let idle_ttl = options.idle_ttl.unwrap_or(policy.idle_ttl);
        let scaledown_ttl = options.scaledown_ttl.unwrap_or(policy.scaledown_ttl);
        let views: Vec<ReplicaView> = self
            .pool
            .serving(env)
            .map(|(n, r)| ReplicaView {
                n,
                busy: self.leases.in_flight(n),
                starting: r.state == ReplicaState::Starting,
                idle_for: now.duration_since(self.leases.idle_since(n).unwrap_or(now)),
            })
            .collect();
        let in_flight: usize = views.iter().map(|v| v.busy).sum();
        let pool = self.pool.envs.get_mut(env).expect("pool present");
        if queued > 0 || in_flight > 0 {
            pool.last_work = now;
        }
        let idle_for = now.duration_since(pool.last_work);
        if queued > 0 || in_flight > 0 {
            self.place(options, env, url);
        }
        if !self.pool.envs.get(env).is_some_and(|p| p.active) {
            return;
        }
        match scale_step(&policy, (idle_ttl, scaledown_ttl), queued, &views, idle_for) {
            ScaleStep::Hold => {}
            ScaleStep::ScaleUp { free } => {
                let why = format!(
                    "scale up to {}: {queued} actions wait, {free} free slots",
                    views.len() + 1
                );
                self.spawn(options, env, url, false, why);
            }
            ScaleStep::StopEnvironment => {
                for v in &views {
                    self.retire(v.n, format!("environment idle for {idle_ttl:?} (idle_ttl)"));
                }
                if let Some(pool) = self.pool.envs.get_mut(env) {
                    pool.active = false;
                }
                let decision = format!("stop environment: no work for {idle_ttl:?}");
                self.journal.decide(env, None, decision);
            }
            ScaleStep::Retire { n } => {
                let min = policy.replicas.start();
                let why = format!(
                    "idle for {scaledown_ttl:?} (scaledown_ttl), {} > min {min}",
                    views.len()
                );
                self.retire(n, why);
            }
        }
    }

    /// Starts a worker of `env`. When it cannot start, nothing can run the environment's
    /// queued attempts: they fail rather than wait forever.
    fn spawn(&mut self, options: &WorkerOptions, env: &str, url: &str, once: bool, why: String) {
        let (n, id) = self.pool.next_id();
        let (log, events) = self.journal.worker_logs(env, &id);
        let spec = LaunchSpec {
            env: env.to_string(),
            worker: id.clone(),
            engine_url: url.to_string(),
            once,
            heartbeat: options.heartbeat_interval,
            log,
            events,
        };
        match self.pool.start(n, spec) {
            Ok(pid) => {
                self.leases.add_worker(n, env);
                self.calls.add_worker(n);
                let decision = format!("spawn {id} (pid {pid}): {why}");
                self.journal.decide(env, Some(&id), decision);
            }
            Err(e) => {
                self.journal.decide(env, None, format!("spawn failed: {e}"));
                for delivery in self.leases.fail_queued(env, &e.to_string()) {
                    delivery.send();
                }
            }
        }
    }

    fn retire(&mut self, n: u64, why: String) {
        let Some((env, id)) = self.pool.retire(n) else {
            return;
        };
        self.calls.wake(n);
        self.journal
            .decide(&env, Some(&id), format!("retire {id}: {why}"));
    }

    /// A worker died or was presumed dead: its leases are requeued as system retries, and the
    /// outcomes of its child calls are dropped.
    fn requeue_leases(&mut self, n: u64) {
        let Some(env) = self.leases.env_of(n).map(str::to_string) else {
            return;
        };
        let id = self.pool.replicas.get(&n).map(|r| r.id.clone());
        let id = id.unwrap_or_else(|| format!("w{n}"));
        self.calls.forget_results(n);
        for requeued in self.leases.release_worker(n) {
            match requeued {
                Requeued::Retry { what, retry, max } => {
                    let decision = format!("requeue {what}: system retry {retry}/{max}");
                    self.journal.decide(&env, Some(&id), decision);
                }
                Requeued::GaveUp { message, delivery } => {
                    self.journal.decide(&env, Some(&id), message);
                    delivery.send();
                }
            }
        }
        if let Some(pool) = self.pool.envs.get(&env) {
            pool.notify.notify_waiters();
        }
    }
}

/// Drops an attempt whose caller stopped waiting; a leased one is cancelled in its worker.
/// An attempt in the process executor's queue, then leased to a worker.
pub(crate) struct QueuedAttempt {
    guard: AttemptGuard,
    leased: Option<oneshot::Receiver<i64>>,
    outcome: oneshot::Receiver<Outcome>,
}

impl QueuedAttempt {
    /// Waits until a worker leases the attempt and returns when (µs): the attempt's start,
    /// its wait for a worker being queue time. `None` when it ended without a lease (its
    /// environment's workers could not start, or the executor stopped).
    pub(crate) async fn leased(&mut self) -> Option<i64> {
        let rx = self.leased.take()?;
        rx.await.ok()
    }

    /// The attempt's outcome.
    pub(crate) async fn outcome(mut self) -> Result<Vec<u8>> {
        let outcome = (&mut self.outcome).await;
        self.guard.armed = false;
        let exec = &self.guard.exec;
        exec.state.lock().calls.contexts.remove(&self.guard.context);
        match outcome {
            Ok(o) => o,
            Err(_) => Err(Error::with_kind(
                ErrorKind::System,
                "the process executor stopped",
            )),
        }
    }
}

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
        st.calls.contexts.remove(&self.context);
        if st.leases.cancel(self.key).is_some() {
            st.journal.touch();
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
