//! `get workers` and `get logs`: what the process executor decided and what workers printed.

use std::path::Path;

use clap::Args;
use serde_json::json;
use weir_engine::worker::read_snapshot;

use super::{CliResult, Failure, OutputFormat};

#[derive(Args, Debug)]
pub(crate) struct WorkersArgs {
    /// Only this environment.
    #[arg(long)]
    env: Option<String>,
}

#[derive(Args, Debug)]
pub(crate) struct LogsArgs {
    /// Run name.
    run: String,
    /// Action id (`a0` for the root).
    action: String,
}

fn fmt_time(us: i64) -> String {
    let ms = (us / 1_000) % 1_000;
    let secs = us / 1_000_000;
    let (h, m, s) = ((secs / 3600) % 24, (secs / 60) % 60, secs % 60);
    format!("{h:02}:{m:02}:{s:02}.{ms:03}Z")
}

/// `get workers`: the replicas of each environment and the executor's decisions.
pub(crate) fn workers(state_dir: &Path, out: OutputFormat, a: WorkersArgs) -> CliResult {
    if !state_dir.exists() {
        return Err(Failure::input(format!(
            "no weir state in {}",
            state_dir.display()
        )));
    }
    let mut snap = read_snapshot(state_dir);
    if let Some(env) = &a.env {
        snap.replicas.retain(|r| &r.env == env);
        snap.decisions.retain(|d| &d.env == env);
    }
    if out == OutputFormat::Json {
        println!(
            "{}",
            json!({"replicas": snap.replicas, "decisions": snap.decisions})
        );
        return Ok(());
    }
    let rows: Vec<Vec<String>> = snap
        .replicas
        .iter()
        .map(|r| {
            vec![
                r.env.clone(),
                r.worker.clone(),
                r.pid.to_string(),
                r.state.clone(),
                r.in_flight.to_string(),
                r.completed.to_string(),
                fmt_time(r.started_at),
                r.ended_at.map(fmt_time).unwrap_or_else(|| "-".into()),
                if r.once { "fresh" } else { "reused" }.into(),
            ]
        })
        .collect();
    super::get::table(
        &[
            "ENV",
            "WORKER",
            "PID",
            "STATE",
            "IN-FLIGHT",
            "DONE",
            "STARTED",
            "RETIRED",
            "KIND",
        ],
        &rows,
    );
    println!();
    let rows: Vec<Vec<String>> = snap
        .decisions
        .iter()
        .map(|d| {
            vec![
                fmt_time(d.at),
                d.env.clone(),
                d.worker.clone().unwrap_or_else(|| "-".into()),
                d.decision.clone(),
            ]
        })
        .collect();
    super::get::table(&["AT", "ENV", "WORKER", "DECISION"], &rows);
    Ok(())
}

/// `get logs RUN ACTION`: the lines each worker printed while running the action's attempts.
pub(crate) fn logs(state_dir: &Path, out: OutputFormat, a: LogsArgs) -> CliResult {
    let snap = read_snapshot(state_dir);
    let begin = format!("[weir] begin run={} action={} ", a.run, a.action);
    let end = format!("[weir] end run={} action={} ", a.run, a.action);
    let mut sections = Vec::new();
    for r in &snap.replicas {
        let Ok(text) = std::fs::read_to_string(&r.log) else {
            continue;
        };
        let mut current: Option<(String, Vec<String>)> = None;
        for line in text.lines() {
            if line.starts_with(&begin) {
                current = Some((line.to_string(), Vec::new()));
            } else if line.starts_with(&end) {
                if let Some((head, lines)) = current.take() {
                    sections.push((r.clone(), head, lines, line.to_string()));
                }
            } else if let Some((_, lines)) = current.as_mut()
                && !line.starts_with("[weir] ")
            {
                lines.push(line.to_string());
            }
        }
        if let Some((head, lines)) = current.take() {
            sections.push((
                r.clone(),
                head,
                lines,
                "(no end: the worker stopped)".into(),
            ));
        }
    }
    if sections.is_empty() {
        return Err(Failure::input(format!(
            "no worker log of action {} in run {}: only attempts run by worker processes (run --workers process) have logs",
            a.action, a.run
        )));
    }
    for (r, head, lines, tail) in sections {
        if out == OutputFormat::Json {
            println!(
                "{}",
                json!({"worker": r.worker, "pid": r.pid, "env": r.env, "log": r.log, "begin": head, "lines": lines, "end": tail})
            );
            continue;
        }
        println!(
            "== worker {} (pid {}, env {}, log {}){}",
            r.worker,
            r.pid,
            r.env,
            r.log.display(),
            if r.once {
                ""
            } else {
                " — lines of other actions running at the same time on this worker may be interleaved"
            }
        );
        println!("{head}");
        for l in lines {
            println!("{l}");
        }
        println!("{tail}");
    }
    Ok(())
}
