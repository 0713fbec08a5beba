//! The lease table of the process executor: a queue of attempts per environment, the attempts
//! waiting for a worker or leased to one, and the rules that keep an attempt's outcome
//! delivered exactly once (SPEC §7.4):
//!
//! - a queued attempt is leased to one worker at a time, under a fresh lease id;
//! - a completion is accepted only with the current fencing token (lease, attempt, action,
//!   worker); any other is rejected and changes nothing;
//! - the leases of a lost worker go back to the front of their queue as system retries, and
//!   an attempt that lost its worker more than `max_system_retries` times fails;
//! - an attempt cancelled by the engine while leased is reported to its worker (with the next
//!   heartbeat) and its lease stops being current.
//!
//! Plain state and plain values: no transport, no process, no clock but `Instant` for the
//! idle time the scaling rule reads. Methods return what happened; the caller logs the
//! decisions and sends the [`Delivery`]s outside its lock.

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::Arc;
use std::time::Instant;

use tokio::sync::oneshot;
use weir_core::ActionId;
use weir_store::RunId;

use super::protocol::{AttemptOutcome, Completion, LeasedAction, from_remote};
use crate::Error;

/// How an attempt ended, as its caller in the engine gets it.
pub(crate) type Outcome = Result<Vec<u8>, Error>;

/// What a worker needs to run one attempt: plain values taken from the run and the task.
#[derive(Clone, Debug)]
pub(crate) struct AttemptSpec {
    /// Run id.
    pub run: RunId,
    /// Run name.
    pub run_name: Arc<str>,
    /// The run is being resumed: children and traces may already be recorded.
    pub recovering: bool,
    /// Action id.
    pub action: ActionId,
    /// Attempt number (1-based).
    pub attempt: u32,
    /// Full task name.
    pub task: &'static str,
    /// Canonical inputs.
    pub inputs: Arc<[u8]>,
}

impl AttemptSpec {
    fn describe(&self) -> String {
        format!(
            "action {} of run {} (attempt {}, {})",
            self.action, self.run_name, self.attempt, self.task
        )
    }
}

/// An outcome to hand to the engine-side caller of an attempt.
#[must_use = "a delivery does nothing until it is sent"]
pub(crate) struct Delivery {
    tx: oneshot::Sender<Outcome>,
    outcome: Outcome,
}

impl Delivery {
    /// Sends the outcome (the caller may have stopped waiting: then nothing happens).
    pub(crate) fn send(self) {
        let _ = self.tx.send(self.outcome);
    }
}

/// The lease an attempt is held under.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Holder {
    lease: u64,
    worker: u64,
}

struct Attempt {
    spec: AttemptSpec,
    env: String,
    system_retries: u32,
    holder: Option<Holder>,
    tx: oneshot::Sender<Outcome>,
    /// Told the time (µs) of the attempt's first lease: its start.
    on_lease: Option<oneshot::Sender<i64>>,
}

/// The leases of one worker.
struct WorkerLeases {
    env: String,
    in_flight: HashSet<u64>,
    completed: u64,
    /// Leases cancelled by the engine that the worker has not heard of yet.
    cancelled: Vec<u64>,
    /// Since when nothing is leased to it.
    idle_since: Instant,
}

/// Completions of one batch: the outcomes to deliver and the rejected ones, with why.
pub(crate) struct Completed {
    /// Accepted outcomes, to send to the attempts' callers.
    pub deliveries: Vec<Delivery>,
    /// `(lease, why)` of each rejected completion.
    pub rejected: Vec<(u64, String)>,
}

/// What became of one attempt leased to a lost worker.
pub(crate) enum Requeued {
    /// Back at the front of its environment's queue.
    Retry {
        /// The attempt, in words.
        what: String,
        /// The system retry this is (1-based).
        retry: u32,
        /// `max_system_retries`.
        max: u32,
    },
    /// It lost its worker more than `max_system_retries` times: it fails.
    GaveUp {
        /// Why, in words (also the attempt's error).
        message: String,
        /// The failure, for the attempt's caller.
        delivery: Delivery,
    },
}

/// The lease table. See the module docs.
pub(crate) struct Leases {
    max_system_retries: u32,
    queues: HashMap<String, VecDeque<u64>>,
    attempts: HashMap<u64, Attempt>,
    /// Current lease id → attempt key.
    leases: HashMap<u64, u64>,
    workers: HashMap<u64, WorkerLeases>,
    /// Attempt keys and lease ids come from one counter: neither is ever reused.
    next: u64,
}

impl Leases {
    pub(crate) fn new(max_system_retries: u32) -> Leases {
        Leases {
            max_system_retries,
            queues: HashMap::new(),
            attempts: HashMap::new(),
            leases: HashMap::new(),
            workers: HashMap::new(),
            next: 0,
        }
    }

    fn next_id(&mut self) -> u64 {
        self.next += 1;
        self.next
    }

    /// A new worker of `env`, which may lease from now on.
    pub(crate) fn add_worker(&mut self, worker: u64, env: &str) {
        self.workers.insert(
            worker,
            WorkerLeases {
                env: env.to_string(),
                in_flight: HashSet::new(),
                completed: 0,
                cancelled: Vec::new(),
                idle_since: Instant::now(),
            },
        );
    }

    /// Queues an attempt for a worker of `env`; its outcome goes to `tx`. Returns its key.
    pub(crate) fn enqueue(
        &mut self,
        env: &str,
        spec: AttemptSpec,
        tx: oneshot::Sender<Outcome>,
    ) -> u64 {
        let key = self.next_id();
        self.attempts.insert(
            key,
            Attempt {
                spec,
                env: env.to_string(),
                system_retries: 0,
                holder: None,
                tx,
                on_lease: None,
            },
        );
        self.queues
            .entry(env.to_string())
            .or_default()
            .push_back(key);
        key
    }

    /// Attempts waiting in `env`'s queue (including ones cancelled since, which leasing skips).
    pub(crate) fn queued(&self, env: &str) -> usize {
        self.queues.get(env).map_or(0, VecDeque::len)
    }

    /// Attempts leased to `worker` and not completed.
    pub(crate) fn in_flight(&self, worker: u64) -> usize {
        self.workers.get(&worker).map_or(0, |w| w.in_flight.len())
    }

    /// Attempts `worker` completed (accepted completions).
    pub(crate) fn completed(&self, worker: u64) -> u64 {
        self.workers.get(&worker).map_or(0, |w| w.completed)
    }

    /// Since when nothing is leased to `worker`.
    pub(crate) fn idle_since(&self, worker: u64) -> Option<Instant> {
        self.workers.get(&worker).map(|w| w.idle_since)
    }

    /// The environment of `worker`, if known.
    pub(crate) fn env_of(&self, worker: u64) -> Option<&str> {
        self.workers.get(&worker).map(|w| w.env.as_str())
    }

    /// Tells `tx` when attempt `key` is first leased (µs since the epoch).
    pub(crate) fn on_lease(&mut self, key: u64, tx: oneshot::Sender<i64>) {
        if let Some(a) = self.attempts.get_mut(&key) {
            a.on_lease = Some(tx);
        }
    }

    /// Whether `worker` holds a current lease on an attempt of `action` in `run` (only such
    /// an attempt may call children or record traces through it).
    pub(crate) fn holds(&self, worker: u64, run: RunId, action: ActionId) -> bool {
        self.workers.get(&worker).is_some_and(|w| {
            w.in_flight.iter().any(|lease| {
                self.leases
                    .get(lease)
                    .and_then(|k| self.attempts.get(k))
                    .is_some_and(|a| a.spec.run == run && a.spec.action == action)
            })
        })
    }

    /// Leases up to `max` queued attempts of the worker's environment to `worker`, each
    /// under a fresh lease id. Nothing for an unknown worker.
    pub(crate) fn lease(&mut self, worker: u64, max: usize) -> Vec<LeasedAction> {
        let Some(env) = self.workers.get(&worker).map(|w| w.env.clone()) else {
            return Vec::new();
        };
        let mut actions = Vec::new();
        while actions.len() < max {
            let Some(key) = self.queues.get_mut(&env).and_then(VecDeque::pop_front) else {
                break;
            };
            if !self.attempts.contains_key(&key) {
                continue; // cancelled while queued
            }
            let lease = self.next_id();
            let slot = self.attempts.get_mut(&key).expect("attempt present");
            slot.holder = Some(Holder { lease, worker });
            if let Some(tx) = slot.on_lease.take() {
                let _ = tx.send(weir_core::clock::now_us());
            }
            self.leases.insert(lease, key);
            let spec = &slot.spec;
            actions.push(LeasedAction {
                lease,
                run: spec.run,
                run_name: spec.run_name.to_string(),
                action: spec.action,
                attempt: spec.attempt,
                task: spec.task.to_string(),
                inputs: spec.inputs.to_vec(),
                check_store: spec.recovering || spec.attempt > 1 || slot.system_retries > 0,
                inputs_ref: None,
            });
        }
        if let Some(w) = self.workers.get_mut(&worker) {
            w.in_flight.extend(actions.iter().map(|a| a.lease));
        }
        actions
    }

    /// Puts back the leases granted to `worker` that it never received: those above
    /// `received`, the highest lease id it has (its lease requests come one at a time, so a
    /// lease granted in an earlier response and not received was lost on the way). Each goes
    /// back to the front of its queue, not counted as a system retry (it never started).
    /// Returns how many.
    pub(crate) fn reclaim_unreceived(&mut self, worker: u64, received: u64) -> usize {
        let Some(w) = self.workers.get_mut(&worker) else {
            return 0;
        };
        let mut lost: Vec<u64> = w
            .in_flight
            .iter()
            .copied()
            .filter(|l| *l > received)
            .collect();
        if lost.is_empty() {
            return 0;
        }
        for lease in &lost {
            w.in_flight.remove(lease);
        }
        if w.in_flight.is_empty() {
            w.idle_since = Instant::now();
        }
        // Newest first, each to the front: the queue keeps the order they were leased in.
        lost.sort_unstable();
        for lease in lost.iter().rev() {
            let Some(key) = self.leases.remove(lease) else {
                continue;
            };
            let Some(attempt) = self.attempts.get_mut(&key) else {
                continue;
            };
            attempt.holder = None;
            let env = attempt.env.clone();
            self.queues.entry(env).or_default().push_front(key);
        }
        lost.len()
    }

    /// Completes attempts leased to `worker`. A completion is accepted only while its lease
    /// is current and names the leased attempt and action; a rejected one changes nothing.
    pub(crate) fn complete(&mut self, worker: u64, completions: Vec<Completion>) -> Completed {
        let mut done = Completed {
            deliveries: Vec::with_capacity(completions.len()),
            rejected: Vec::new(),
        };
        for c in completions {
            let key = self.leases.get(&c.lease).copied();
            let current = key.and_then(|k| self.attempts.get(&k)).is_some_and(|a| {
                a.holder
                    == Some(Holder {
                        lease: c.lease,
                        worker,
                    })
                    && a.spec.attempt == c.attempt
                    && a.spec.action == c.action
            });
            if !current {
                let why = format!(
                    "action {} attempt {} (lease {}) was fenced off: its lease is no longer current (the worker was presumed dead and the action requeued, or the attempt was cancelled); this completion is ignored",
                    c.action, c.attempt, c.lease
                );
                done.rejected.push((c.lease, why));
                continue;
            }
            let key = self.leases.remove(&c.lease).expect("lease present");
            let attempt = self.attempts.remove(&key).expect("attempt present");
            if let Some(w) = self.workers.get_mut(&worker) {
                w.in_flight.remove(&c.lease);
                w.completed += 1;
                if w.in_flight.is_empty() {
                    w.idle_since = Instant::now();
                }
            }
            let outcome = match c.outcome {
                AttemptOutcome::Output(bytes) => Ok(bytes),
                // An engine offers its workers no object store: its outputs come as bytes.
                AttemptOutcome::Stored(r) => {
                    Err(from_remote(super::protocol::system_error(format!(
                        "the worker completed action {} with a reference to object {:?}, but an engine takes outputs as bytes (it offers its workers no object store)",
                        c.action, r.key
                    ))))
                }
                AttemptOutcome::Error(e) => Err(from_remote(e)),
            };
            done.deliveries.push(Delivery {
                tx: attempt.tx,
                outcome,
            });
        }
        done
    }

    /// The leases of `worker` cancelled since its last heartbeat.
    pub(crate) fn take_cancelled(&mut self, worker: u64) -> Vec<u64> {
        self.workers
            .get_mut(&worker)
            .map(|w| std::mem::take(&mut w.cancelled))
            .unwrap_or_default()
    }

    /// Drops an attempt whose caller stopped waiting (timeout, abort). A leased one is
    /// reported to its worker, and its lease stops being current. Returns that lease.
    pub(crate) fn cancel(&mut self, key: u64) -> Option<u64> {
        let holder = self.attempts.remove(&key)?.holder?;
        self.leases.remove(&holder.lease);
        if let Some(w) = self.workers.get_mut(&holder.worker) {
            w.in_flight.remove(&holder.lease);
            if w.in_flight.is_empty() {
                w.idle_since = Instant::now();
            }
            w.cancelled.push(holder.lease);
        }
        Some(holder.lease)
    }

    /// `worker` died or was presumed dead: each attempt leased to it goes back to the front of
    /// its queue as a system retry, or fails past `max_system_retries`.
    pub(crate) fn release_worker(&mut self, worker: u64) -> Vec<Requeued> {
        let Some(w) = self.workers.get_mut(&worker) else {
            return Vec::new();
        };
        let mut leases: Vec<u64> = w.in_flight.drain().collect();
        w.cancelled.clear();
        leases.sort_unstable();
        let mut requeued = Vec::with_capacity(leases.len());
        for lease in leases {
            let Some(key) = self.leases.remove(&lease) else {
                continue;
            };
            let Some(attempt) = self.attempts.get_mut(&key) else {
                continue;
            };
            attempt.holder = None;
            attempt.system_retries += 1;
            let what = attempt.spec.describe();
            let retry = attempt.system_retries;
            if retry > self.max_system_retries {
                let attempt = self.attempts.remove(&key).expect("attempt present");
                let message = format!(
                    "{what} lost its worker {retry} times; giving up after {} system retries (see `get workers` and the worker logs)",
                    self.max_system_retries
                );
                let outcome = Err(Error::with_kind(
                    weir_core::ErrorKind::System,
                    message.clone(),
                ));
                requeued.push(Requeued::GaveUp {
                    message,
                    delivery: Delivery {
                        tx: attempt.tx,
                        outcome,
                    },
                });
            } else {
                let env = attempt.env.clone();
                self.queues.entry(env).or_default().push_front(key);
                requeued.push(Requeued::Retry {
                    what,
                    retry,
                    max: self.max_system_retries,
                });
            }
        }
        requeued
    }

    /// Fails every attempt queued in `env` (nothing can run them).
    pub(crate) fn fail_queued(&mut self, env: &str, message: &str) -> Vec<Delivery> {
        let keys: Vec<u64> = self
            .queues
            .get_mut(env)
            .map(|q| q.drain(..).collect())
            .unwrap_or_default();
        keys.into_iter()
            .filter_map(|k| self.attempts.remove(&k))
            .map(|a| Delivery {
                tx: a.tx,
                outcome: Err(Error::with_kind(weir_core::ErrorKind::System, message)),
            })
            .collect()
    }

    /// Everything the table holds, in a fixed order (tests compare it before and after).
    #[cfg(test)]
    fn snapshot(&self) -> String {
        let mut out = String::new();
        let mut envs: Vec<_> = self.queues.iter().collect();
        envs.sort();
        for (env, q) in envs {
            out += &format!("queue {env}: {q:?}\n");
        }
        let mut attempts: Vec<_> = self.attempts.iter().collect();
        attempts.sort_by_key(|(k, _)| **k);
        for (k, a) in attempts {
            out += &format!(
                "attempt {k}: {} retries={} holder={:?}\n",
                a.spec.describe(),
                a.system_retries,
                a.holder
            );
        }
        let mut leases: Vec<_> = self.leases.iter().collect();
        leases.sort();
        out += &format!("leases: {leases:?}\n");
        let mut workers: Vec<_> = self.workers.iter().collect();
        workers.sort_by_key(|(n, _)| **n);
        for (n, w) in workers {
            let mut in_flight: Vec<_> = w.in_flight.iter().collect();
            in_flight.sort();
            out += &format!(
                "worker {n} ({}): in_flight={in_flight:?} completed={} cancelled={:?}\n",
                w.env, w.completed, w.cancelled
            );
        }
        out
    }
}

#[cfg(test)]
#[path = "leases_tests.rs"]
mod tests;
