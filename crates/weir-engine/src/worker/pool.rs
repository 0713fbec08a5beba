//! The replicas of the process executor: how workers are started ([`Launcher`]), the replica
//! table with each worker's state, and the health checks (exits, missed heartbeats, overdue
//! retirements). Which replicas to start or retire is decided in `executor.rs` with the
//! scaling rule; what a lost worker's leases become is decided by the lease table.

use std::collections::{BTreeMap, HashMap};
use std::io::Write;
use std::path::PathBuf;
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::Notify;
use weir_core::clock::now_us;
use weir_core::spec::ReusePolicy;

use super::Error;
use super::auth::Credentials;
use super::journal::ReplicaRecord;
use super::leases::Leases;

/// Everything a launcher needs to start one worker.
#[derive(Clone, Debug)]
pub(crate) struct LaunchSpec {
    /// The environment whose actions it leases.
    pub env: String,
    /// Its id, named in every request it makes.
    pub worker: String,
    /// The engine's worker API.
    pub engine_url: String,
    /// Runs one action, then exits.
    pub once: bool,
    /// Its heartbeat period.
    pub heartbeat: Duration,
    /// Where its stdout and stderr go.
    pub log: PathBuf,
    /// Where its structured log goes.
    pub events: PathBuf,
}

/// Starts workers. The first implementation starts a local process of the user's binary
/// ([`LocalProcess`]); a remote or container launcher is another.
pub(crate) trait Launcher: Send + Sync {
    /// Starts a worker for `spec.env` with id `spec.worker`, talking to `spec.engine_url`.
    fn start(&self, spec: &LaunchSpec) -> Result<Box<dyn Launched>, Error>;
}

/// A worker as its launcher controls it.
pub(crate) trait Launched: Send {
    /// Its process id (shown by `get workers`).
    fn pid(&self) -> u32;
    /// How it exited, or `None` while it runs.
    fn exited(&mut self) -> std::io::Result<Option<String>>;
    /// Kills it and waits for it.
    fn kill(&mut self);
}

/// Starts `<program> worker --env E --engine URL --id W --credential-stdin [--once] --log
/// EVENTS` with its stdout and stderr in one log file. The admission secret goes to the
/// worker's stdin (not its command line, which every user of the machine can read), and the
/// pipe stays open: when the engine's process ends, however it ends, the worker reads EOF and
/// stops at once.
pub(crate) struct LocalProcess {
    /// The program; the current executable when unset.
    pub program: Option<PathBuf>,
    /// Arguments before `worker`.
    pub program_args: Vec<String>,
    /// The engine's admission secret.
    pub secret: String,
}

impl Launcher for LocalProcess {
    fn start(&self, spec: &LaunchSpec) -> Result<Box<dyn Launched>, Error> {
        let program = match &self.program {
            Some(p) => p.clone(),
            None => std::env::current_exe().unwrap_or_else(|_| PathBuf::from("weir-worker")),
        };
        std::fs::File::create(&spec.log)
            .and_then(|out| Ok((out.try_clone()?, out)))
            .and_then(|(out, err)| {
                let mut cmd = Command::new(&program);
                cmd.args(&self.program_args)
                    .arg("worker")
                    .args(["--env", &spec.env, "--engine", &spec.engine_url])
                    .args(["--id", &spec.worker, "--credential-stdin"])
                    .arg("--log")
                    .arg(&spec.events)
                    .env(
                        "WEIR_WORKER_HEARTBEAT_MS",
                        spec.heartbeat.as_millis().to_string(),
                    )
                    .stdin(Stdio::piped())
                    .stdout(out)
                    .stderr(err);
                if spec.once {
                    cmd.arg("--once");
                }
                cmd.spawn()
            })
            .and_then(|mut child| {
                // The secret, then the pipe held open for the worker's life (a pipe buffer
                // holds far more than one line: this write does not block).
                let mut stdin = child.stdin.take().expect("stdin is piped");
                if let Err(e) = writeln!(stdin, "{}", self.secret) {
                    let _ = child.kill();
                    let _ = child.wait();
                    return Err(e);
                }
                Ok(Box::new(LocalChild {
                    child,
                    _stdin: stdin,
                }) as Box<dyn Launched>)
            })
            .map_err(|e| Error::Spawn {
                program: program.display().to_string(),
                message: e.to_string(),
            })
    }
}

struct LocalChild {
    child: Child,
    /// Held open while the worker lives: its EOF tells the worker the engine is gone.
    _stdin: ChildStdin,
}

impl Launched for LocalChild {
    fn pid(&self) -> u32 {
        self.child.id()
    }
    fn exited(&mut self) -> std::io::Result<Option<String>> {
        Ok(self.child.try_wait()?.map(|status| status.to_string()))
    }
    fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum ReplicaState {
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
    pub(crate) fn alive(self) -> bool {
        matches!(
            self,
            ReplicaState::Starting | ReplicaState::Ready | ReplicaState::Retiring
        )
    }
    /// Counts towards the environment's replicas (a retiring one does not).
    pub(crate) fn serving(self) -> bool {
        matches!(self, ReplicaState::Starting | ReplicaState::Ready)
    }
}

pub(crate) struct Replica {
    pub id: String,
    pub env: String,
    pub pid: u32,
    worker: Box<dyn Launched>,
    pub state: ReplicaState,
    pub last_heartbeat: Instant,
    pub retiring_since: Option<Instant>,
    started_at: i64,
    ended_at: Option<i64>,
    pub once: bool,
    log: PathBuf,
    events: PathBuf,
}

/// The executor's view of one environment.
pub(crate) struct EnvPool {
    pub policy: Option<ReusePolicy>,
    /// Woken when work is queued or a replica retires (lease long polls wait on it).
    pub notify: Arc<Notify>,
    pub last_work: Instant,
    /// Started (replicas kept at `min`) and not stopped since.
    pub active: bool,
}

/// A worker found dead or presumed dead by a health check: its leases must be requeued.
pub(crate) struct Lost {
    pub worker: u64,
    pub env: String,
    pub id: String,
    pub decision: String,
}

/// The replica table.
pub(crate) struct Pool {
    launcher: Arc<dyn Launcher>,
    /// Tokens of workers whose process ended are revoked.
    credentials: Arc<Credentials>,
    pub envs: HashMap<String, EnvPool>,
    pub replicas: BTreeMap<u64, Replica>,
    next_worker: u64,
}

/// The worker number of a worker id (`w7` → 7).
pub(crate) fn worker_number(id: &str) -> Option<u64> {
    id.strip_prefix('w')?.parse().ok()
}

impl Pool {
    pub(crate) fn new(launcher: Arc<dyn Launcher>, credentials: Arc<Credentials>) -> Pool {
        Pool {
            launcher,
            credentials,
            envs: HashMap::new(),
            replicas: BTreeMap::new(),
            next_worker: 0,
        }
    }

    /// Starts workers with `launcher` from now on.
    #[cfg(test)]
    pub(crate) fn set_launcher(&mut self, launcher: Arc<dyn Launcher>) {
        self.launcher = launcher;
    }

    /// The pool of `env`, created on first use.
    pub(crate) fn env(&mut self, env: &str, policy: Option<&ReusePolicy>) -> &mut EnvPool {
        self.envs.entry(env.to_string()).or_insert_with(|| EnvPool {
            policy: policy.cloned(),
            notify: Arc::new(Notify::new()),
            last_work: Instant::now(),
            active: false,
        })
    }

    /// The number of a worker that is known and alive.
    pub(crate) fn live(&self, worker: &str) -> Option<u64> {
        worker_number(worker).filter(|n| self.replicas.get(n).is_some_and(|r| r.state.alive()))
    }

    /// The next worker id, and its number.
    pub(crate) fn next_id(&mut self) -> (u64, String) {
        self.next_worker += 1;
        (self.next_worker, format!("w{}", self.next_worker))
    }

    /// Starts worker `n` with the launcher and adds it as `starting`. Returns its pid.
    pub(crate) fn start(&mut self, n: u64, spec: LaunchSpec) -> Result<u32, Error> {
        let worker = self.launcher.start(&spec)?;
        let now = Instant::now();
        let pid = worker.pid();
        self.replicas.insert(
            n,
            Replica {
                id: spec.worker,
                env: spec.env,
                pid,
                worker,
                state: ReplicaState::Starting,
                last_heartbeat: now,
                retiring_since: None,
                started_at: now_us(),
                ended_at: None,
                once: spec.once,
                log: spec.log,
                events: spec.events,
            },
        );
        Ok(pid)
    }

    /// Marks worker `n` retiring (it finishes what it runs, leases nothing more, exits).
    /// Returns its environment and id.
    pub(crate) fn retire(&mut self, n: u64) -> Option<(String, String)> {
        let r = self.replicas.get_mut(&n)?;
        r.state = ReplicaState::Retiring;
        r.retiring_since = Some(Instant::now());
        if let Some(pool) = self.envs.get(&r.env) {
            pool.notify.notify_waiters();
        }
        Some((r.env.clone(), r.id.clone()))
    }

    /// Serving replicas of `env` (starting or ready).
    pub(crate) fn serving(&self, env: &str) -> impl Iterator<Item = (u64, &Replica)> {
        self.replicas
            .iter()
            .filter(move |(_, r)| r.env == env && r.state.serving())
            .map(|(n, r)| (*n, r))
    }

    pub(crate) fn any_alive(&self) -> bool {
        self.replicas.values().any(|r| r.state.alive())
    }

    /// One round of health checks: reaps exited workers, kills overdue ones, fences off silent
    /// ones. Returns the workers whose leases must be requeued, and whether the table changed.
    pub(crate) fn check_health(
        &mut self,
        leases: &Leases,
        startup_timeout: Duration,
        heartbeat_timeout: Duration,
    ) -> (Vec<Lost>, bool) {
        let now = Instant::now();
        let mut lost = Vec::new();
        let mut changed = false;
        for (&n, r) in self.replicas.iter_mut() {
            if r.state == ReplicaState::Lost {
                // Fenced off but maybe still running: reap it, or kill it after a grace period.
                if r.ended_at.is_none() {
                    let exited = matches!(r.worker.exited(), Ok(Some(_)));
                    let overdue = r
                        .retiring_since
                        .is_some_and(|t| now.duration_since(t) > Duration::from_secs(30));
                    if overdue {
                        r.worker.kill();
                    }
                    if exited || overdue {
                        r.ended_at = Some(now_us());
                        self.credentials.revoke(&r.id);
                        changed = true;
                    }
                }
                continue;
            }
            if !r.state.alive() {
                continue;
            }
            let (id, pid) = (r.id.clone(), r.pid);
            let lose = |decision: String| Lost {
                worker: n,
                env: r.env.clone(),
                id: id.clone(),
                decision,
            };
            match r.worker.exited() {
                Ok(Some(status)) => {
                    r.ended_at = Some(now_us());
                    self.credentials.revoke(&r.id);
                    changed = true;
                    // A retiring or one-action worker that exits with nothing leased is done;
                    // any other exit loses what it held.
                    let done = r.state == ReplicaState::Retiring || r.once;
                    if done && leases.in_flight(n) == 0 {
                        r.state = ReplicaState::Retired;
                    } else {
                        r.state = ReplicaState::Lost;
                        let leased = leases.in_flight(n);
                        lost.push(lose(format!(
                            "{id} (pid {pid}) exited unexpectedly ({status}) with {leased} leased actions"
                        )));
                    }
                    continue;
                }
                Ok(None) => {}
                Err(e) => tracing::warn!(worker = id, error = %e, "cannot check worker"),
            }
            let silent = now.duration_since(r.last_heartbeat);
            let limit = if r.state == ReplicaState::Starting {
                startup_timeout
            } else {
                heartbeat_timeout
            };
            let stuck_retiring = r.state == ReplicaState::Retiring
                && r.retiring_since
                    .is_some_and(|t| now.duration_since(t) > Duration::from_secs(10));
            if stuck_retiring {
                r.worker.kill();
                r.ended_at = Some(now_us());
                self.credentials.revoke(&r.id);
                r.state = ReplicaState::Retired;
                changed = true;
                lost.push(lose(format!(
                    "kill {id} (pid {pid}): did not exit within 10 s of its retirement"
                )));
            } else if silent > limit {
                // Fenced off rather than killed (a remote worker cannot be killed either): its
                // leases go to other replicas and any completion it still sends is rejected.
                r.state = ReplicaState::Lost;
                r.retiring_since = Some(now);
                changed = true;
                let leased = leases.in_flight(n);
                lost.push(lose(format!(
                    "fence off {id} (pid {pid}): no heartbeat for {silent:?} (limit {limit:?}); {leased} leased actions"
                )));
            }
        }
        (lost, changed)
    }

    /// The table as `get workers` shows it.
    pub(crate) fn records(&self, leases: &Leases) -> Vec<ReplicaRecord> {
        self.replicas
            .iter()
            .map(|(&n, r)| ReplicaRecord {
                env: r.env.clone(),
                worker: r.id.clone(),
                pid: r.pid,
                state: r.state.as_str().to_string(),
                in_flight: leases.in_flight(n),
                completed: leases.completed(n),
                started_at: r.started_at,
                ended_at: r.ended_at,
                once: r.once,
                log: r.log.clone(),
                events: Some(r.events.clone()),
            })
            .collect()
    }
}
