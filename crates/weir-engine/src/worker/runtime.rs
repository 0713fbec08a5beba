//! The worker mode of the user's binary: lease actions of one environment, run them (at most
//! `concurrency` holding a slot at once), heartbeat, complete them with their fencing token.
//! The loops talk to the engine through a [`WorkerApi`]: over HTTP in [`run_worker`], or any
//! other implementation in [`run_worker_with`].

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use futures::FutureExt;
use parking_lot::Mutex;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio::task::{AbortHandle, JoinHandle, JoinSet};

use super::api::WorkerApi;
use super::client::WorkerClient;
use super::http::HttpClient;
use super::protocol::*;
use super::worker_log::WorkerLog;
use super::{Error, Refusal};
use crate::call::{RemoteRun, TaskCtx};
use crate::registry;

/// How a worker process is told to run.
#[derive(Clone, Debug)]
pub struct WorkerConfig {
    /// The environment whose actions it leases.
    pub env: String,
    /// The engine's worker API, e.g. `http://127.0.0.1:40123` (used by [`run_worker`]).
    pub engine_url: String,
    /// Worker id given by the executor.
    pub id: String,
    /// The engine's admission secret, presented once at registration (never on the command
    /// line: the executor writes it to the worker's stdin).
    pub credential: String,
    /// Run one action, then exit (environments without a `ReusePolicy`).
    pub once: bool,
    /// Heartbeat period. Default 500 ms (`WEIR_WORKER_HEARTBEAT_MS`).
    pub heartbeat: Duration,
    /// Slots: at most this many attempts at once. Default: the environment's reuse policy's
    /// concurrency (1 without one).
    pub concurrency: Option<usize>,
    /// A worker of a control plane (`weir serve`): it registers its environment, code version
    /// and task settings, and moves between the replicas at `engine_url` (comma-separated).
    pub cluster: bool,
    /// Where to append the worker's structured log (JSON lines of
    /// [`WorkerLogRecord`](super::WorkerLogRecord)); only `tracing` events when unset.
    pub log: Option<PathBuf>,
}

/// Runs a worker against the engine's HTTP worker API until the engine retires it. Returns
/// when every action it leased is completed and its completions are delivered; returns an
/// error when the engine stops answering (then what it ran is abandoned: the engine, if it
/// comes back, requeues it).
pub async fn run_worker(config: WorkerConfig) -> Result<(), Error> {
    let api: Arc<dyn WorkerApi> = match config.cluster {
        true => {
            let urls: Vec<String> = config
                .engine_url
                .split(',')
                .map(|u| u.trim().trim_end_matches('/').to_string())
                .filter(|u| !u.is_empty())
                .collect();
            Arc::new(crate::cluster::FailoverClient::new(&urls))
        }
        false => Arc::new(HttpClient::new(config.engine_url.clone())),
    };
    // A control plane's worker runs anywhere: what its attempts print travels with their
    // completions (an engine's workers write theirs to a file the engine reads).
    let _captured = config.cluster.then(super::capture::install).flatten();
    run_worker_with(config, api).await
}

/// What runs in the worker, by lease: to cancel it, and to say what was cancelled.
type Running = Arc<Mutex<HashMap<u64, (AbortHandle, LeasedAction)>>>;

/// Why the worker stops leasing: the first reason given wins.
#[derive(Default)]
struct Stop {
    requested: AtomicBool,
    reason: Mutex<Option<String>>,
}

impl Stop {
    fn request(&self, reason: impl Into<String>) {
        self.reason.lock().get_or_insert_with(|| reason.into());
        self.requested.store(true, Ordering::Release);
    }
    fn requested(&self) -> bool {
        self.requested.load(Ordering::Acquire)
    }
    fn reason(&self) -> String {
        self.reason.lock().clone().unwrap_or_default()
    }
}

/// [`run_worker`] over any implementation of the worker protocol (`config.engine_url` is not
/// used): the engine's own, in its process, as well as a transport's client.
pub async fn run_worker_with(config: WorkerConfig, api: Arc<dyn WorkerApi>) -> Result<(), Error> {
    let env = registry::tasks()
        .map(|d| d.environment())
        .find(|e| e.name() == config.env)
        .ok_or_else(|| Error::UnknownEnvironment(config.env.clone()))?;
    let concurrency = if config.once {
        1
    } else {
        env.reuse_policy()
            .map(|p| p.concurrency.max(1))
            .unwrap_or(1)
    };
    let concurrency = config.concurrency.unwrap_or(concurrency).max(1);
    let cluster = match config.cluster {
        true => Some(ClusterWorker {
            env: config.env.clone(),
            version: crate::cluster::binary_version().map_err(Error::Server)?,
            tasks: crate::cluster::local_specs(),
        }),
        false => None,
    };
    let register = Register {
        worker: config.id.clone(),
        cluster,
    };
    let registered = api.register(register, &config.credential).await?;
    let direct = match config.cluster {
        true => open_direct(registered.object_store).await,
        false => None,
    };
    // An engine's own store, for reference data: on this machine, so opened without a check
    // (a task that uses it gets the store's error).
    let references = match &registered.reference_store {
        Some(url) => match weir_blob::BlobStore::from_url(url) {
            Ok(store) => Some(store),
            Err(e) => {
                eprintln!(
                    "weir worker: cannot open the engine's object store {url} for weir::File data: {e}"
                );
                None
            }
        },
        None => None,
    };
    let log = Arc::new(WorkerLog::open(&config.id, config.log.as_deref()));
    let client = WorkerClient::start(api, config.id.clone(), log, direct, references);
    let running: Running = Arc::default();
    let stop = Arc::new(Stop::default());
    let mut heartbeat = tokio::spawn(heartbeat_loop(
        client.clone(),
        config.heartbeat,
        running.clone(),
        stop.clone(),
    ));
    let work = lease_and_run(&config, &client, concurrency, running, stop.clone());
    // When the engine is lost, what runs is dropped with `work`: nothing it finishes could be
    // delivered any more.
    let result = tokio::select! {
        r = work => r,
        e = engine_lost(&mut heartbeat) => Err(e),
    };
    match &result {
        Ok(()) => client.log().stop(stop.reason()),
        Err(e) => client.log().stop(e.to_string()),
    }
    heartbeat.abort();
    client.close();
    result
}

/// How long a worker waits for the object store a control plane offers to answer before it
/// lets its payloads go through the control plane instead.
const OPEN_STORE_WITHIN: Duration = Duration::from_secs(15);

/// The control plane's object store, when it offered one and this worker can open and list
/// it with the `AWS_*` settings of its own environment. Otherwise its payloads go through the
/// control plane, and stderr says so once, with the reason.
async fn open_direct(offer: Option<ObjectStoreOffer>) -> Option<weir_blob::Payloads> {
    let offer = offer?;
    let opened = match weir_blob::BlobStore::from_url(&offer.url) {
        Ok(store) => match tokio::time::timeout(OPEN_STORE_WITHIN, store.check()).await {
            Ok(Ok(())) => Ok(store),
            Ok(Err(e)) => Err(e.to_string()),
            Err(_) => Err(format!("no answer within {OPEN_STORE_WITHIN:?}")),
        },
        Err(e) => Err(e.to_string()),
    };
    match opened {
        Ok(store) => {
            tracing::info!(store = %offer.url, threshold = offer.inline_threshold, "payloads over the threshold go to the object store directly");
            let threshold = usize::try_from(offer.inline_threshold).unwrap_or(usize::MAX);
            Some(weir_blob::Payloads::new(store, threshold))
        }
        Err(why) => {
            eprintln!(
                "weir worker: cannot use the control plane's object store {} directly ({why}); payloads over {} bytes go through the control plane instead (give this worker AWS_* settings that reach the store to avoid that)",
                offer.url, offer.inline_threshold
            );
            None
        }
    }
}

/// The heartbeat loop's error; never returns while the loop runs or ended without one.
async fn engine_lost(heartbeat: &mut JoinHandle<Result<(), Error>>) -> Error {
    match heartbeat.await {
        Ok(Err(e)) => e,
        _ => std::future::pending().await,
    }
}

/// Leases and runs actions until told to stop, then waits for what runs and for the delivery
/// of its completions. An error when the engine stopped answering lease requests.
/// How long a busy worker lets slots free before it leases.
const LEASE_GATHER: Duration = Duration::from_millis(1);

async fn lease_and_run(
    config: &WorkerConfig,
    client: &WorkerClient,
    concurrency: usize,
    running: Running,
    stop: Arc<Stop>,
) -> Result<(), Error> {
    const MAX_FAILURES: u32 = 20;
    let slots = Arc::new(Semaphore::new(concurrency));
    let mut tasks = JoinSet::new();
    let mut failures = 0u32;
    let mut leased_once = false;
    // The highest lease id received: leases granted above it never arrived (see LeaseRequest).
    let mut received = 0u64;
    loop {
        if stop.requested() {
            break;
        }
        if config.once && leased_once {
            stop.request("ran its one action");
            break;
        }
        // Lease as many actions as there are free slots, without holding the slots while the
        // lease waits: a parent whose child just finished must get its slot back at once. Each
        // leased action takes its slot before it runs, so `concurrency` is never exceeded.
        let mut free = slots.available_permits();
        if free == 0 {
            match slots.acquire().await {
                Ok(p) => drop(p),
                Err(_) => break,
            }
            continue;
        }
        // Busy (most slots taken): a moment for more slots to free, so that one lease
        // request brings several actions (each costs the engine a statement and a round
        // trip; leasing at every freed slot took 4-14 actions per statement). A worker with
        // half its slots or more free (a chain, a worker waiting for work) leases at once.
        if free * 2 < concurrency {
            tokio::time::sleep(LEASE_GATHER).await;
            free = slots.available_permits().max(1);
        }
        let req = LeaseRequest {
            worker: config.id.clone(),
            max: free.min(256) as u32,
            received: Some(received),
            direct: client.direct().is_some(),
        };
        let reply = match client.api().lease(req).await {
            Ok(r) => {
                failures = 0;
                r
            }
            // An internal error of the engine is retried like a lost request; any other
            // refusal stops the worker.
            Err(e @ Error::Refused { reason, .. }) if reason != Refusal::Internal => {
                stop.request(format!("lease refused: {e}"));
                break;
            }
            Err(e) => {
                failures += 1;
                if failures >= MAX_FAILURES {
                    return Err(Error::EngineLost {
                        requests: "lease requests",
                        failures,
                        last: e.to_string(),
                    });
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let newest = reply.actions.iter().map(|a| a.lease).max();
        received = received.max(newest.unwrap_or(0));
        for action in reply.actions {
            leased_once = true;
            let lease = action.lease;
            let summary = LeasedAction {
                lease,
                run: action.run,
                run_name: action.run_name.clone(),
                action: action.action,
                attempt: action.attempt,
                task: action.task.clone(),
                inputs: Vec::new(),
                check_store: action.check_store,
                inputs_ref: None,
            };
            // Under the lock: the attempt cannot end (and remove itself) before it is added.
            // The slot is taken here, before the next lease request counts the free ones: a
            // worker never leases more than it can start at once. (Only a parent whose child
            // just finished can have taken it meanwhile; then this action waits for one.)
            let permit = slots.clone().try_acquire_owned().ok();
            let mut running_now = running.lock();
            // What the task logs through `tracing` names its run, action and attempt.
            let span = tracing::info_span!(
                "attempt",
                run = %action.run_name,
                action = %action.action,
                attempt = action.attempt,
                task = %action.task,
            );
            let handle = tasks.spawn(tracing::Instrument::instrument(
                run_leased(
                    client.clone(),
                    slots.clone(),
                    permit,
                    action,
                    running.clone(),
                    config.cluster,
                ),
                span,
            ));
            running_now.insert(lease, (handle, summary));
        }
        while tasks.try_join_next().is_some() {}
        if reply.shutdown {
            stop.request("retired by the engine");
            break;
        }
    }
    while tasks.join_next().await.is_some() {}
    // Deliver the last completions before returning.
    for _ in 0..500 {
        if client.unsent_completions() == 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    Ok(())
}

/// Heartbeats every `every`; cancels the leases the engine cancelled, and asks the worker to
/// stop when the engine retires or refuses it. Returns an error when the engine stopped
/// answering (10 heartbeats in a row failed): the worker then stops at once.
async fn heartbeat_loop(
    client: WorkerClient,
    every: Duration,
    running: Running,
    stop: Arc<Stop>,
) -> Result<(), Error> {
    const MAX_FAILURES: u32 = 10;
    let msg = Heartbeat {
        worker: client.worker().to_string(),
    };
    let mut failures = 0;
    loop {
        tokio::time::sleep(every).await;
        match client.api().heartbeat(msg.clone()).await {
            Ok(reply) => {
                failures = 0;
                for lease in reply.cancelled {
                    let cancelled = running.lock().remove(&lease);
                    if let Some((handle, action)) = cancelled {
                        handle.abort();
                        client.log().cancelled(&action);
                    }
                }
                if reply.shutdown {
                    stop.request("retired by the engine");
                }
            }
            Err(e @ Error::Refused { .. }) => {
                // Fenced off: lease nothing more. What runs still finishes; the engine rejects
                // its completions (the actions were requeued elsewhere).
                stop.request(format!("heartbeat refused: {e}"));
                return Ok(());
            }
            Err(e) => {
                failures += 1;
                // The engine is gone: nothing this worker runs can be delivered any more.
                if failures >= MAX_FAILURES {
                    return Err(Error::EngineLost {
                        requests: "heartbeats",
                        failures,
                        last: e.to_string(),
                    });
                }
            }
        }
    }
}

async fn run_leased(
    client: WorkerClient,
    slots: Arc<Semaphore>,
    permit: Option<OwnedSemaphorePermit>,
    mut a: LeasedAction,
    running: Running,
    enforce_max_runtime: bool,
) {
    let arrived = std::time::Instant::now();
    let permit = match permit {
        Some(p) => p,
        None => match slots.clone().acquire_owned().await {
            Ok(p) => p,
            Err(_) => return,
        },
    };
    let slot = arrived.elapsed();
    client.log().begin(&a);
    let capturing = super::capture::begin(a.lease);
    let read_at = std::time::Instant::now();
    let inputs = match a.inputs_ref.take() {
        Some(r) => read_inputs(&client, &a, &r).await,
        None => Ok(std::mem::take(&mut a.inputs)),
    };
    let read = read_at.elapsed();
    let mut phases = None;
    let outcome = match (registry::find_task(&a.task), inputs) {
        (Err(e), _) => {
            AttemptOutcome::Error(system_error(format!("worker {}: {e}", client.worker())))
        }
        (_, Err(e)) => AttemptOutcome::Error(e),
        (Ok(def), Ok(inputs)) => {
            let remote = Arc::new(RemoteRun {
                client: client.clone(),
                run_id: a.run,
                run_name: a.run_name.clone(),
                lease: a.lease,
                slots,
            });
            let ctx = Arc::new(TaskCtx::remote(
                remote,
                a.action,
                def,
                a.attempt,
                a.check_store,
                Some(permit),
            ));
            let inputs: Arc<[u8]> = Arc::from(inputs);
            let body_at = std::time::Instant::now();
            let body =
                std::panic::AssertUnwindSafe(ctx.clone().scope(def.invoke(inputs))).catch_unwind();
            // A control plane runs no user code, so a worker of one enforces the task's
            // `max_runtime` itself (an engine's workers are stopped by their engine).
            let limit = def
                .config()
                .timeouts
                .max_runtime
                .filter(|_| enforce_max_runtime);
            let body = match limit {
                Some(limit) => tokio::time::timeout(limit, body).await.ok(),
                None => Some(body.await),
            };
            let ran = body_at.elapsed();
            let decode = ctx.times.decode.load(std::sync::atomic::Ordering::Relaxed) / 1000;
            let encode = ctx.times.encode.load(std::sync::atomic::Ordering::Relaxed) / 1000;
            let us = |d: Duration| d.as_micros() as u64;
            let mut p = crate::worker::protocol::WorkerPhases {
                start: us(slot),
                download: us(read) + decode,
                exec: us(ran).saturating_sub(decode + encode),
                output: encode,
                held: 0,
            };
            let outcome = match body.map(crate::call::flatten_panic) {
                Some(Ok(out)) => {
                    let write_at = std::time::Instant::now();
                    let o = write_output(&client, &a, out).await;
                    p.output += us(write_at.elapsed());
                    o
                }
                Some(Err(e)) => AttemptOutcome::Error(to_remote(&e)),
                None => AttemptOutcome::Error(RemoteError {
                    kind: weir_core::ErrorKind::Timeout,
                    message: format!(
                        "attempt {} of {} ran past its max_runtime of {:?}",
                        a.attempt,
                        a.task,
                        limit.unwrap_or_default()
                    ),
                    chain: vec![],
                    child: None,
                }),
            };
            phases = Some(p);
            outcome
        }
    };
    let error = match &outcome {
        AttemptOutcome::Output(_) | AttemptOutcome::Stored(_) => None,
        AttemptOutcome::Error(e) => Some(e.message.clone()),
    };
    let log = capturing.and_then(super::capture::Capturing::end);
    client.log().end(&a, error);
    running.lock().remove(&a.lease);
    if let Some(p) = phases.as_mut() {
        p.held = arrived.elapsed().as_micros() as u64;
    }
    client.complete(Completion {
        lease: a.lease,
        run: Some(a.run),
        attempt: a.attempt,
        action: a.action,
        outcome,
        log,
        phases,
    });
}

/// Reads leased inputs the control plane handed over by reference: from the object store,
/// checked against the reference's size and hash.
async fn read_inputs(
    client: &WorkerClient,
    a: &LeasedAction,
    r: &PayloadRef,
) -> Result<Vec<u8>, RemoteError> {
    let fail = |why: String| {
        system_error(format!(
            "worker {}: the inputs of action {} attempt {}: {why}",
            client.worker(),
            a.action,
            a.attempt
        ))
    };
    let Some(payloads) = client.direct() else {
        return Err(fail(format!(
            "they came as a reference to object {:?}, but this worker has no object store",
            r.key
        )));
    };
    match payloads.load(&r.to_payload()).await {
        Ok(bytes) => Ok(bytes.to_vec()),
        Err(e) => Err(fail(e.to_string())),
    }
}

/// The outcome of an attempt that returned `out`: with direct access to the object store and
/// over its threshold, written there under the attempt's lease and sent as a reference; else
/// the bytes (also when the write fails: the control plane stores them then).
async fn write_output(client: &WorkerClient, a: &LeasedAction, out: Vec<u8>) -> AttemptOutcome {
    let Some(payloads) = client.direct().filter(|p| out.len() > p.inline_threshold()) else {
        return AttemptOutcome::Output(out);
    };
    let key = weir_blob::PayloadKey::LeaseOutputs {
        run: &a.run_name,
        action: &a.action,
        attempt: a.attempt,
        lease: a.lease,
    };
    match payloads.store(key, &out).await {
        Ok(stored) => match PayloadRef::of(&stored) {
            Some(r) => AttemptOutcome::Stored(r),
            None => AttemptOutcome::Output(out),
        },
        Err(e) => {
            tracing::warn!(action = %a.action, error = %e, "output not written to the object store; sending it to the control plane");
            AttemptOutcome::Output(out)
        }
    }
}

#[cfg(test)]
#[path = "runtime_tests.rs"]
mod tests;
