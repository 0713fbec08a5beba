//! The worker mode of the user's binary: lease actions of one environment, run them (at most
//! `concurrency` holding a slot at once), heartbeat, complete them with their fencing token.
//! The loops talk to the engine through a [`WorkerApi`]: over HTTP in [`run_worker`], or any
//! other implementation in [`run_worker_with`].

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use futures::FutureExt;
use parking_lot::Mutex;
use tokio::sync::Semaphore;
use tokio::task::{AbortHandle, JoinSet};

use super::Error;
use super::api::WorkerApi;
use super::client::WorkerClient;
use super::http::HttpClient;
use super::protocol::*;
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
    /// Run one action, then exit (environments without a `ReusePolicy`).
    pub once: bool,
    /// Heartbeat period. Default 500 ms (`WEIR_WORKER_HEARTBEAT_MS`).
    pub heartbeat: Duration,
}

/// Runs a worker against the engine's HTTP worker API until the engine retires it (or goes
/// away). Returns when every action it leased is completed and its completions are delivered.
pub async fn run_worker(config: WorkerConfig) -> Result<(), Error> {
    let api = Arc::new(HttpClient::new(config.engine_url.clone()));
    run_worker_with(config, api).await
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
    let client = WorkerClient::start(api, config.id.clone());
    let slots = Arc::new(Semaphore::new(concurrency));
    let running: Arc<Mutex<HashMap<u64, AbortHandle>>> = Arc::default();
    let stop = Arc::new(AtomicBool::new(false));
    let heartbeat = tokio::spawn(heartbeat_loop(
        client.clone(),
        config.heartbeat,
        running.clone(),
        stop.clone(),
    ));
    let mut tasks = JoinSet::new();
    let mut failures = 0u32;
    let mut leased_once = false;
    while !(stop.load(Ordering::Acquire) || config.once && leased_once) {
        // Lease as many actions as there are free slots, without holding the slots while the
        // lease waits: a parent whose child just finished must get its slot back at once. Each
        // leased action takes its slot before it runs, so `concurrency` is never exceeded.
        let free = slots.available_permits();
        if free == 0 {
            match slots.acquire().await {
                Ok(p) => drop(p),
                Err(_) => break,
            }
            continue;
        }
        let req = LeaseRequest {
            worker: config.id.clone(),
            max: free.min(256) as u32,
        };
        let reply = match client.api().lease(req).await {
            Ok(r) => {
                failures = 0;
                r
            }
            Err(Error::Refused { message, .. }) => {
                eprintln!("[weir] worker {} stops: {message}", config.id);
                break;
            }
            Err(e) => {
                failures += 1;
                if failures >= 20 {
                    eprintln!("[weir] worker {} stops: {e}", config.id);
                    break;
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        for action in reply.actions {
            leased_once = true;
            let lease = action.lease;
            let handle = tasks.spawn(run_leased(
                client.clone(),
                slots.clone(),
                action,
                running.clone(),
            ));
            running.lock().insert(lease, handle);
        }
        while tasks.try_join_next().is_some() {}
        if reply.shutdown {
            break;
        }
    }
    stop.store(true, Ordering::Release);
    while tasks.join_next().await.is_some() {}
    // Deliver the last completions before the process exits.
    for _ in 0..500 {
        if client.unsent_completions() == 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    heartbeat.abort();
    client.close();
    Ok(())
}

async fn heartbeat_loop(
    client: WorkerClient,
    every: Duration,
    running: Arc<Mutex<HashMap<u64, AbortHandle>>>,
    stop: Arc<AtomicBool>,
) {
    let msg = Heartbeat {
        worker: client.worker().to_string(),
    };
    let mut failures = 0;
    loop {
        tokio::time::sleep(every).await;
        match client.api().heartbeat(msg.clone()).await {
            Ok(reply) => {
                failures = 0;
                let mut running = running.lock();
                for lease in reply.cancelled {
                    if let Some(h) = running.remove(&lease) {
                        eprintln!("[weir] lease {lease} cancelled by the engine");
                        h.abort();
                    }
                }
                if reply.shutdown {
                    stop.store(true, Ordering::Release);
                }
            }
            Err(Error::Refused { message, .. }) => {
                // Fenced off: lease nothing more. What runs still finishes; the engine rejects
                // its completions (the actions were requeued elsewhere).
                eprintln!("[weir] heartbeat refused, stopping: {message}");
                stop.store(true, Ordering::Release);
                return;
            }
            Err(e) => {
                failures += 1;
                // The engine is gone: nothing this worker runs can be delivered any more.
                if failures >= 10 {
                    eprintln!("[weir] engine unreachable, exiting: {e}");
                    std::process::exit(1);
                }
            }
        }
    }
}

async fn run_leased(
    client: WorkerClient,
    slots: Arc<Semaphore>,
    a: LeasedAction,
    running: Arc<Mutex<HashMap<u64, AbortHandle>>>,
) {
    let Ok(permit) = slots.clone().acquire_owned().await else {
        return;
    };
    eprintln!(
        "[weir] begin run={} action={} attempt={} task={} lease={}",
        a.run_name, a.action, a.attempt, a.task, a.lease
    );
    let outcome = match registry::find_task(&a.task) {
        Err(e) => AttemptOutcome::Error(system_error(format!("worker {}: {e}", client.worker()))),
        Ok(def) => {
            let remote = Arc::new(RemoteRun {
                client: client.clone(),
                run_id: a.run,
                run_name: a.run_name.clone(),
                slots,
            });
            let ctx = Arc::new(TaskCtx::remote(
                remote,
                a.action,
                a.attempt,
                a.check_store,
                Some(permit),
            ));
            let body =
                std::panic::AssertUnwindSafe(ctx.clone().scope((def.invoke)(Arc::from(a.inputs))))
                    .catch_unwind()
                    .await;
            match crate::call::flatten_panic(body) {
                Ok(out) => AttemptOutcome::Output(out),
                Err(e) => AttemptOutcome::Error(to_remote(&e)),
            }
        }
    };
    let ok = matches!(outcome, AttemptOutcome::Output(_));
    eprintln!(
        "[weir] end run={} action={} attempt={} ok={ok}",
        a.run_name, a.action, a.attempt
    );
    running.lock().remove(&a.lease);
    client.complete(Completion {
        lease: a.lease,
        attempt: a.attempt,
        action: a.action,
        outcome,
    });
}
