//! `worker`: the worker mode of the user's binary (SPEC §7). Started by the process executor of
//! an engine (`run --workers process`), not by hand: it leases actions of one environment from
//! the engine's worker API, runs them, heartbeats and completes them with their fencing token.

use std::path::PathBuf;
use std::time::Duration;

use clap::Args;
use weir_engine::worker::{WorkerConfig, run_worker};

use super::{CliResult, Failure};

#[derive(Args, Debug)]
pub(crate) struct WorkerArgs {
    /// The environment whose actions this worker runs.
    #[arg(long)]
    env: String,
    /// The engine's worker API, e.g. `http://127.0.0.1:40123` (how an engine starts its
    /// workers).
    #[arg(long, required_unless_present = "server", conflicts_with = "server")]
    engine: Option<String>,
    /// A control plane (`weir serve`) to work for: its URL, or several replicas'
    /// comma-separated (the worker moves to the next when one goes away).
    #[arg(long, value_name = "URL[,URL...]")]
    server: Option<String>,
    /// The cluster token file (with --server; `WEIR_TOKEN` overrides it). Default
    /// `<state-dir>/cluster-token`.
    #[arg(long, value_name = "PATH", requires = "server")]
    token_file: Option<PathBuf>,
    /// Slots: at most this many actions at once (a parent waiting on children holds none).
    /// Default: the environment's reuse policy's concurrency, 1 without one.
    #[arg(long)]
    concurrency: Option<usize>,
    /// Worker id: given by the executor (default `w0`); with --server, default
    /// `<hostname>-<pid>-<n>` (it must be unique among the control plane's workers).
    #[arg(long)]
    id: Option<String>,
    /// Run one action, then exit (environments without a reuse policy; an engine's workers).
    #[arg(long, conflicts_with = "server")]
    once: bool,
    /// Heartbeat period in milliseconds.
    #[arg(long, env = "WEIR_WORKER_HEARTBEAT_MS", default_value_t = 500)]
    heartbeat_ms: u64,
    /// Append the worker's structured log (JSON lines) to this file.
    #[arg(long, env = "WEIR_WORKER_LOG")]
    log: Option<PathBuf>,
    /// Read the engine's admission secret from the first line of stdin, and stop at once when
    /// stdin closes (the engine that started this worker is gone). How the process executor
    /// starts its workers.
    #[arg(long, conflicts_with = "server")]
    credential_stdin: bool,
}

/// The admission secret in the environment, for a worker started some other way.
const CREDENTIAL_ENV: &str = "WEIR_WORKER_CREDENTIAL";

pub(crate) async fn worker(state_dir: &std::path::Path, args: WorkerArgs) -> CliResult {
    if args.concurrency == Some(0) {
        return Err(Failure::input("--concurrency must be at least 1"));
    }
    if let Some(server) = &args.server {
        let path = args
            .token_file
            .clone()
            .unwrap_or_else(|| super::cluster::token_path(state_dir));
        let token = super::cluster::read_token(&path, false)?;
        let id = args.id.clone().unwrap_or_else(|| {
            format!(
                "{}-{}-{}",
                std::fs::read_to_string("/proc/sys/kernel/hostname")
                    .map(|h| h.trim().to_string())
                    .unwrap_or_else(|_| "host".into()),
                std::process::id(),
                weir_core::clock::now_us() % 1_000_000
            )
        });
        let config = WorkerConfig {
            env: args.env,
            engine_url: server.clone(),
            id,
            credential: token,
            once: false,
            heartbeat: Duration::from_millis(args.heartbeat_ms.max(1)),
            concurrency: args.concurrency,
            cluster: true,
            log: args.log,
        };
        return run_worker(config).await.map_err(Failure::other);
    }
    let (credential, engine_gone) = if args.credential_stdin {
        let (credential, gone) = read_stdin_credential().map_err(Failure::other)?;
        (credential, Some(gone))
    } else {
        match std::env::var(CREDENTIAL_ENV) {
            Ok(c) if !c.is_empty() => (c, None),
            _ => {
                return Err(Failure::input(format!(
                    "a worker needs the engine's admission secret: --credential-stdin (how the engine starts its workers) or {CREDENTIAL_ENV}"
                )));
            }
        }
    };
    let config = WorkerConfig {
        env: args.env,
        engine_url: args.engine.unwrap_or_default(),
        id: args.id.unwrap_or_else(|| "w0".into()),
        credential,
        once: args.once,
        heartbeat: Duration::from_millis(args.heartbeat_ms.max(1)),
        concurrency: args.concurrency,
        cluster: false,
        log: args.log,
    };
    let gone = async {
        match engine_gone {
            Some(rx) => {
                let _ = rx.await;
            }
            None => std::future::pending().await,
        }
    };
    // When the engine's process ends, what this worker runs could never be delivered: it stops
    // at once, leasing nothing more (what it ran is dropped with `run_worker`'s future).
    tokio::select! {
        r = run_worker(config) => r.map_err(Failure::other),
        () = gone => Err(Failure::other("the engine that started this worker is gone (its pipe closed); stopping")),
    }
}

/// Reads the secret line from stdin, then watches stdin on a thread of its own: the returned
/// receiver completes when it closes.
fn read_stdin_credential() -> Result<(String, tokio::sync::oneshot::Receiver<()>), String> {
    use std::io::BufRead;
    let mut stdin = std::io::stdin().lock();
    let mut line = String::new();
    stdin
        .read_line(&mut line)
        .map_err(|e| format!("cannot read the admission secret from stdin: {e}"))?;
    let credential = line.trim_end().to_string();
    if credential.is_empty() {
        return Err("no admission secret on stdin (--credential-stdin)".into());
    }
    drop(stdin);
    let (tx, rx) = tokio::sync::oneshot::channel();
    std::thread::spawn(move || {
        let mut sink = Vec::new();
        // Returns at EOF (or an error): either way the engine's end of the pipe is gone.
        let _ = std::io::Read::read_to_end(&mut std::io::stdin().lock(), &mut sink);
        let _ = tx.send(());
    });
    Ok((credential, rx))
}
