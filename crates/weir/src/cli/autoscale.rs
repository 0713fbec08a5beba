//! `workers up`: keeps local worker processes of a binary in step with what a control plane
//! asks for (`weir_desired_workers` on its `/metrics`), on a bare machine without an external
//! autoscaler.

use std::collections::HashMap;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use clap::{Args, Subcommand};
use weir_engine::cluster::version_of;

use super::{CliResult, Failure};

#[derive(Subcommand, Debug)]
pub(crate) enum WorkersCommand {
    /// Start and stop worker processes of a binary as the control plane's queues ask.
    Up(UpArgs),
}

#[derive(Args, Debug)]
pub(crate) struct UpArgs {
    #[command(flatten)]
    server: super::cluster::ServerArgs,
    /// The user binary whose workers to run (its version must be the runs' version).
    #[arg(long)]
    binary: PathBuf,
    /// Slots of each started worker (default: its environment's reuse policy).
    #[arg(long)]
    concurrency: Option<usize>,
    /// At most this many workers per environment.
    #[arg(long, default_value_t = 8)]
    max: usize,
    /// How often the metrics are read (e.g. `1s`).
    #[arg(long, default_value = "1s", value_parser = weir_core::spec::parse_duration)]
    every: Duration,
    /// A worker is stopped only after fewer were wanted for this long (e.g. `30s`).
    #[arg(long, default_value = "30s", value_parser = weir_core::spec::parse_duration)]
    scaledown: Duration,
}

/// The desired workers per environment of `version`, from the metrics text.
fn desired(metrics: &str, version: &str) -> HashMap<String, usize> {
    let mut out = HashMap::new();
    for line in metrics.lines() {
        let Some(rest) = line.strip_prefix("weir_desired_workers{queue=\"") else {
            continue;
        };
        let Some((queue, value)) = rest.split_once("\"} ") else {
            continue;
        };
        if let (Some((env, v)), Ok(n)) = (queue.split_once('@'), value.trim().parse::<usize>())
            && v == version
        {
            out.insert(env.to_string(), n);
        }
    }
    out
}

pub(crate) async fn up(state_dir: &std::path::Path, args: UpArgs) -> CliResult {
    if args.server.server.is_none() {
        return Err(Failure::input("workers up needs --server URL"));
    }
    let version = version_of(&args.binary).map_err(Failure::input)?;
    let clients = super::cluster::clients(state_dir, &args.server)?;
    let servers = args.server.server.clone().unwrap_or_default();
    let token_file = args
        .server
        .token_file
        .clone()
        .unwrap_or_else(|| super::cluster::token_path(state_dir));
    let mut workers: HashMap<String, Vec<Child>> = HashMap::new();
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .map_err(Failure::other)?;
    let mut fewer_since: HashMap<String, Instant> = HashMap::new();
    eprintln!(
        "workers up: following {servers} for {} (version {version})",
        args.binary.display()
    );
    loop {
        let metrics = match clients.first().map(|c| c.metrics()) {
            Some(m) => m.await,
            None => Err("no server".into()),
        };
        match metrics {
            Err(e) => eprintln!("workers up: cannot read the metrics: {e}"),
            Ok(text) => {
                let want = desired(&text, &version);
                let envs: Vec<String> = want.keys().chain(workers.keys()).cloned().collect();
                for env in envs {
                    let n = want.get(&env).copied().unwrap_or(0).min(args.max);
                    let running = workers.entry(env.clone()).or_default();
                    running.retain_mut(|c| matches!(c.try_wait(), Ok(None)));
                    while running.len() < n {
                        let mut c = Command::new(&args.binary);
                        c.args(["worker", "--server", &servers, "--env", &env])
                            .arg("--token-file")
                            .arg(&token_file)
                            .stdin(Stdio::null());
                        if let Some(k) = args.concurrency {
                            c.args(["--concurrency", &k.to_string()]);
                        }
                        let child = c.spawn().map_err(|e| {
                            Failure::other(format!("cannot start {}: {e}", args.binary.display()))
                        })?;
                        eprintln!("workers up: started worker {} of {env}", child.id());
                        running.push(child);
                        fewer_since.remove(&env);
                    }
                    if running.len() > n {
                        let since = *fewer_since.entry(env.clone()).or_insert_with(Instant::now);
                        if since.elapsed() >= args.scaledown {
                            // What it runs is leased again after its lease expires.
                            if let Some(mut c) = running.pop() {
                                eprintln!("workers up: stopping worker {} of {env}", c.id());
                                let _ = c.kill();
                                let _ = c.wait();
                            }
                            fewer_since.remove(&env);
                        }
                    } else {
                        fewer_since.remove(&env);
                    }
                }
            }
        }
        tokio::select! {
            () = tokio::time::sleep(args.every) => {}
            _ = term.recv() => break,
            _ = tokio::signal::ctrl_c() => break,
        }
    }
    // Stopped: its workers stop with it.
    for c in workers.values_mut().flatten() {
        let _ = c.kill();
        let _ = c.wait();
    }
    eprintln!("workers up: stopped");
    Ok(())
}

#[cfg(test)]
mod tests {
    #[test]
    fn desired_workers_are_read_per_environment_of_one_version() {
        let text = "# TYPE weir_desired_workers gauge\nweir_desired_workers{queue=\"fx@v1\"} 3\nweir_desired_workers{queue=\"fy@v1\"} 0\nweir_desired_workers{queue=\"fx@v2\"} 9\nweir_leased_total 4\n";
        let d = super::desired(text, "v1");
        assert_eq!(d.len(), 2);
        assert_eq!(d["fx"], 3);
        assert_eq!(d["fy"], 0);
    }
}
