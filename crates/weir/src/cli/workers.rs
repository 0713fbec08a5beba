//! `get workers` and `get logs`: what the process executor decided and what workers printed
//! (found with each worker's structured log, `<state_dir>/workers/*.jsonl`; with `--server`,
//! what the control plane's workers sent of each attempt).

use std::path::Path;

use clap::Args;
use serde_json::json;
use weir_core::ActionId;
use weir_engine::worker::{
    ReplicaRecord, WorkerEvent, WorkerLogRecord, read_snapshot, read_worker_log,
};

use super::output::{esc, escape_message, fmt_time_ms, table};
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
    #[command(flatten)]
    pub(crate) server: super::cluster::ServerArgs,
}

/// What `get logs` says of attempts run by a worker that may run others at once.
const INTERLEAVED: &str =
    " — lines of other actions running at the same time on this worker may be interleaved";

/// The action id as workers record it (`a0`, or 16 lower-case hex digits).
fn action_id(given: &str) -> String {
    ActionId::parse(&given.to_ascii_lowercase())
        .map(|id| id.to_string())
        .unwrap_or_else(|| given.to_string())
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
                fmt_time_ms(r.started_at),
                r.ended_at.map(fmt_time_ms).unwrap_or_else(|| "-".into()),
                if r.once { "fresh" } else { "reused" }.into(),
            ]
        })
        .collect();
    table(
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
                fmt_time_ms(d.at),
                d.env.clone(),
                d.worker.clone().unwrap_or_else(|| "-".into()),
                d.decision.clone(),
            ]
        })
        .collect();
    table(&["AT", "ENV", "WORKER", "DECISION"], &rows);
    Ok(())
}

/// One attempt's section of a worker log.
struct Section<'a> {
    replica: &'a ReplicaRecord,
    begin: WorkerLogRecord,
    /// Its `end` or `cancelled` record; none when the worker stopped first.
    last: Option<WorkerLogRecord>,
    lines: Vec<String>,
}

/// The sections of `run`'s `action` in one worker's structured log, with the lines the worker
/// wrote to its stdout/stderr log between each attempt's `begin` and its end.
fn sections<'a>(replica: &'a ReplicaRecord, run: &str, action: &str) -> Vec<Section<'a>> {
    let Ok(records) = read_worker_log(&replica.events_path()) else {
        return Vec::new();
    };
    let mut output: Option<Vec<u8>> = None;
    let mut found = Vec::new();
    for begin in records.iter().filter(|r| {
        r.event == WorkerEvent::Begin
            && r.run.as_deref() == Some(run)
            && r.action.as_deref() == Some(action)
    }) {
        let last = records
            .iter()
            .find(|r| {
                matches!(r.event, WorkerEvent::End | WorkerEvent::Cancelled)
                    && r.lease == begin.lease
                    && r.at >= begin.at
            })
            .cloned();
        let output = output.get_or_insert_with(|| std::fs::read(&replica.log).unwrap_or_default());
        let lines = match begin.log_offset {
            Some(from) => {
                let to = last
                    .as_ref()
                    .and_then(|r| r.log_offset)
                    .unwrap_or(output.len() as u64);
                let bytes = output
                    .get(from as usize..(to as usize).min(output.len()))
                    .unwrap_or_default();
                String::from_utf8_lossy(bytes)
                    .lines()
                    .map(str::to_string)
                    .collect()
            }
            None => Vec::new(),
        };
        found.push(Section {
            replica,
            begin: begin.clone(),
            last,
            lines,
        });
    }
    found
}

/// `get logs RUN ACTION`: what each worker printed while running the action's attempts, found
/// with the workers' structured logs.
pub(crate) fn logs(state_dir: &Path, out: OutputFormat, a: LogsArgs) -> CliResult {
    let snap = read_snapshot(state_dir);
    let action = action_id(&a.action);
    let sections: Vec<Section> = snap
        .replicas
        .iter()
        .flat_map(|r| sections(r, &a.run, &action))
        .collect();
    if sections.is_empty() {
        return Err(Failure::input(format!(
            "no worker log of action {} in run {}: only attempts run by worker processes (run --workers process) have logs",
            a.action, a.run
        )));
    }
    for s in sections {
        let (r, b) = (s.replica, &s.begin);
        let field = |v: Option<String>| v.unwrap_or_else(|| "?".into());
        let attempt = field(b.attempt.map(|n| n.to_string()));
        let head = format!(
            "[weir] begin run={} action={} attempt={attempt} task={} lease={}",
            a.run,
            action,
            field(b.task.clone()),
            field(b.lease.map(|n| n.to_string())),
        );
        let tail = match &s.last {
            Some(e) if e.event == WorkerEvent::End => format!(
                "[weir] end run={} action={} attempt={attempt} ok={}",
                a.run,
                action,
                e.ok.unwrap_or(false)
            ),
            Some(_) => "(cancelled by the engine)".to_string(),
            None => "(no end: the worker stopped)".to_string(),
        };
        if out == OutputFormat::Json {
            println!(
                "{}",
                json!({
                    "worker": r.worker, "pid": r.pid, "env": r.env, "log": r.log,
                    "attempt": b.attempt, "lease": b.lease,
                    "ok": s.last.as_ref().and_then(|e| e.ok),
                    "cancelled": s.last.as_ref().is_some_and(|e| e.event == WorkerEvent::Cancelled),
                    "begin": head, "lines": s.lines, "end": tail
                })
            );
            continue;
        }
        println!(
            "== worker {} (pid {}, env {}, log {}){}",
            esc(&r.worker),
            r.pid,
            esc(&r.env),
            esc(&r.log.display().to_string()),
            if r.once { "" } else { INTERLEAVED }
        );
        println!("{}", esc(&head));
        for l in s.lines {
            println!("{}", escape_message(&l));
        }
        println!("{}", esc(&tail));
    }
    Ok(())
}

/// `get logs RUN ACTION --server`: what each attempt printed, as the worker that ran it sent
/// it to the control plane, in the format of the embedded `get logs`.
pub(crate) async fn server_logs(state_dir: &Path, out: OutputFormat, a: LogsArgs) -> CliResult {
    let clients = super::cluster::clients(state_dir, &a.server)?;
    let action = action_id(&a.action);
    let logs = super::cluster::attempt_logs(&clients, &a.run, &action).await?;
    if logs.is_empty() {
        return Err(Failure::input(format!(
            "no log of action {} in run {} on the control plane: its attempts printed nothing, or it has not run on a worker yet (cache hits, recovered actions and traces run on none)",
            a.action, a.run
        )));
    }
    for l in logs {
        let head = format!(
            "[weir] begin run={} action={action} attempt={} task={} lease={}",
            a.run, l.attempt, l.task, l.lease
        );
        let tail = format!(
            "[weir] end run={} action={action} attempt={} ok={}",
            a.run, l.attempt, l.ok
        );
        let text = String::from_utf8_lossy(&l.text);
        let lines: Vec<&str> = text.lines().collect();
        if out == OutputFormat::Json {
            println!(
                "{}",
                json!({
                    "worker": l.worker, "pid": l.pid, "env": l.env, "log": null,
                    "attempt": l.attempt, "lease": l.lease, "ok": l.ok, "cancelled": false,
                    "started_at_us": l.started_at, "ended_at_us": l.ended_at,
                    "dropped_bytes": l.dropped, "overlapping": l.overlapping,
                    "begin": head, "lines": lines, "end": tail
                })
            );
            continue;
        }
        println!(
            "== worker {} (pid {}, env {}){}",
            esc(&l.worker),
            l.pid,
            esc(&l.env),
            if l.overlapping > 0 { INTERLEAVED } else { "" }
        );
        println!("{}", esc(&head));
        if l.dropped > 0 {
            println!(
                "[weir] ({} bytes printed before these were not kept: the last {} KiB of each attempt are)",
                l.dropped,
                weir_engine::worker::protocol::OUTPUT_CAP >> 10
            );
        }
        for line in lines {
            println!("{}", escape_message(line));
        }
        println!("{}", esc(&tail));
    }
    Ok(())
}
