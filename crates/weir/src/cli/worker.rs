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
    /// The engine's worker API, e.g. `http://127.0.0.1:40123`.
    #[arg(long)]
    engine: String,
    /// Worker id given by the executor.
    #[arg(long, default_value = "w0")]
    id: String,
    /// Run one action, then exit (environments without a reuse policy).
    #[arg(long)]
    once: bool,
    /// Heartbeat period in milliseconds.
    #[arg(long, env = "WEIR_WORKER_HEARTBEAT_MS", default_value_t = 500)]
    heartbeat_ms: u64,
    /// Append the worker's structured log (JSON lines) to this file.
    #[arg(long, env = "WEIR_WORKER_LOG")]
    log: Option<PathBuf>,
}

pub(crate) async fn worker(args: WorkerArgs) -> CliResult {
    let config = WorkerConfig {
        env: args.env,
        engine_url: args.engine,
        id: args.id,
        once: args.once,
        heartbeat: Duration::from_millis(args.heartbeat_ms.max(1)),
        log: args.log,
    };
    run_worker(config).await.map_err(Failure::other)
}
