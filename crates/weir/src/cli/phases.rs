//! Phase timings on the command line (SPEC §9.3): `get tasks RUN` (per-task aggregates) and
//! `advise RUN` (advice from them); `get actions --phases` is in `get.rs`.

use std::path::Path;
use std::sync::Arc;

use clap::Args;
use serde_json::json;
use weir_core::phases::Phases;
use weir_store::advise::{self, Advice, RunFacts, Summarizer, TaskSummary, fmt_us};
use weir_store::{Page, Payload, Store};

use super::output::table;
use super::{CliResult, Failure, OutputFormat};

#[derive(Args, Debug)]
pub(crate) struct TasksArgs {
    /// Run name.
    run: String,
    #[command(flatten)]
    server: super::cluster::ServerArgs,
}

#[derive(Args, Debug)]
pub(crate) struct AdviseArgs {
    /// Run name.
    run: String,
    #[command(flatten)]
    server: super::cluster::ServerArgs,
}

/// Actions read per page while summarizing.
const PAGE: u32 = 5_000;
/// Actions per task whose payload sizes are read (for the `reference` rule).
const SIZE_SAMPLE: usize = 50;

/// A run's tasks summarized, and what `advise` needs besides: from the state directory, or
/// through a control plane (`--server`).
async fn summarize(
    state_dir: &Path,
    run: &str,
    server: &super::cluster::ServerArgs,
) -> Result<(Vec<TaskSummary>, RunFacts), Failure> {
    if server.server.is_some() {
        return summarize_remote(state_dir, run, server).await;
    }
    let store: Arc<dyn Store> = weir_store::open_read_only(state_dir)?;
    let rec = store.run_by_name(run).await?;
    let mut summarizer = Summarizer::default();
    let mut facts = RunFacts {
        duration_us: rec.ended_at.map(|e| e - rec.created_at),
        ..RunFacts::default()
    };
    let mut offset = 0;
    loop {
        let page = store
            .list_actions(
                rec.id,
                Page {
                    offset,
                    limit: PAGE,
                },
            )
            .await
            .map_err(Failure::other)?;
        summarizer.add(&page);
        for r in &page {
            let seen = facts.inline_sizes.entry(r.task.clone()).or_default();
            if seen.len() >= SIZE_SAMPLE || r.phases.is_none() {
                continue;
            }
            let Some(full) = store.action(rec.id, r.id).await.map_err(Failure::other)? else {
                continue;
            };
            let size = |p: &Option<Payload>| p.as_ref().map_or(0, Payload::size);
            seen.push(size(&full.inputs).max(size(&full.output)));
        }
        if (page.len() as u32) < PAGE {
            break;
        }
        offset += page.len() as u64;
    }
    Ok((summarizer.finish(), facts))
}

/// [`summarize`] through a control plane: the same pages of actions, over HTTP.
async fn summarize_remote(
    state_dir: &Path,
    run: &str,
    server: &super::cluster::ServerArgs,
) -> Result<(Vec<TaskSummary>, RunFacts), Failure> {
    let clients = super::cluster::clients(state_dir, server)?;
    let view = super::cluster::run_view(&clients, run).await?;
    let mut summarizer = Summarizer::default();
    let mut facts = RunFacts {
        duration_us: view.ended_at.map(|e| e - view.created_at),
        ..RunFacts::default()
    };
    let mut offset = 0;
    loop {
        let page = super::cluster::actions(&clients, run, offset, PAGE).await?;
        summarizer.add(&page);
        for r in &page {
            let seen = facts.inline_sizes.entry(r.task.clone()).or_default();
            if seen.len() >= SIZE_SAMPLE || r.phases.is_none() {
                continue;
            }
            let v = super::cluster::action(&clients, run, &r.id.to_string()).await?;
            let size = |b: Option<&Vec<u8>>| b.map_or(0, |b| b.len() as u64);
            seen.push(size(v.inputs.as_deref()).max(size(v.output.as_deref())));
        }
        if (page.len() as u32) < PAGE {
            break;
        }
        offset += page.len() as u64;
    }
    Ok((summarizer.finish(), facts))
}

/// `get tasks RUN`.
pub(crate) async fn tasks(state_dir: &Path, out: OutputFormat, a: TasksArgs) -> CliResult {
    let (tasks, _) = summarize(state_dir, &a.run, &a.server).await?;
    if out == OutputFormat::Json {
        println!("{}", serde_json::to_string(&tasks).unwrap_or_default());
        return Ok(());
    }
    let mut header = vec!["TASK".to_string(), "ACTIONS".into()];
    header.extend(
        Phases::NAMES
            .iter()
            .map(|n| format!("{} p50/p95", n.to_uppercase())),
    );
    header.push("OVERHEAD".into());
    let rows: Vec<Vec<String>> = tasks
        .iter()
        .map(|t| {
            let mut row = vec![t.task.clone(), t.count.to_string()];
            row.extend(t.phases.iter().map(|(_, s)| match s.recorded {
                0 => "-".to_string(),
                _ => format!("{}/{}", fmt_us(s.p50), fmt_us(s.p95)),
            }));
            row.push(format!("{:.0}%", t.overhead_share * 100.0));
            row
        })
        .collect();
    let header: Vec<&str> = header.iter().map(String::as_str).collect();
    table(&header, &rows);
    if tasks.is_empty() {
        eprintln!("(no phase timings recorded in run {})", a.run);
    }
    Ok(())
}

/// `advise RUN`.
pub(crate) async fn advise(state_dir: &Path, out: OutputFormat, a: AdviseArgs) -> CliResult {
    let (tasks, facts) = summarize(state_dir, &a.run, &a.server).await?;
    let advice: Vec<Advice> = advise::advise(&tasks, &facts);
    if out == OutputFormat::Json {
        println!(
            "{}",
            serde_json::to_string(&json!({ "run": a.run, "advice": advice })).unwrap_or_default()
        );
        return Ok(());
    }
    if tasks.is_empty() {
        println!(
            "run {}: no phase timings recorded (nothing to advise)",
            a.run
        );
        return Ok(());
    }
    if advice.is_empty() {
        println!(
            "run {}: no advice: every task's run time is large against its overhead",
            a.run
        );
        return Ok(());
    }
    for a in &advice {
        println!("[{}] {}", a.rule, a.message);
    }
    Ok(())
}

/// The phase columns of `get actions --phases` for one action (`-` before it ended).
pub(crate) fn columns(r: &weir_store::ActionRecord) -> Vec<String> {
    match advise::shown_phases(r) {
        Some(p) => p
            .recorded()
            .iter()
            .map(|v| v.map_or("-".into(), fmt_us))
            .collect(),
        None => vec!["-".into(); 7],
    }
}

/// The phases of an action as JSON (`null` before it ended).
pub(crate) fn json(r: &weir_store::ActionRecord) -> serde_json::Value {
    match advise::shown_phases(r) {
        Some(p) => {
            let mut m = serde_json::Map::new();
            for (n, v) in Phases::NAMES.iter().zip(p.recorded()) {
                m.insert(format!("{n}_us"), v.into());
            }
            serde_json::Value::Object(m)
        }
        None => serde_json::Value::Null,
    }
}
