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

/// Where a run's actions are read from: the state directory, or a control plane (`--server`).
enum Source {
    Local(Arc<dyn Store>, weir_store::RunId),
    Remote(Vec<weir_engine::cluster::ClusterClient>, String),
}

impl Source {
    /// A page of the run's actions, in creation order.
    async fn page(&self, offset: u64) -> Result<Vec<weir_store::ActionRecord>, Failure> {
        match self {
            Source::Local(store, run) => store
                .list_actions(
                    *run,
                    Page {
                        offset,
                        limit: PAGE,
                    },
                )
                .await
                .map_err(Failure::other),
            Source::Remote(clients, run) => {
                super::cluster::actions(clients, run, offset, PAGE).await
            }
        }
    }

    /// The larger of an action's inputs and output, in bytes (as passed by value); `None` for
    /// an action the local store no longer has.
    async fn payload_size(&self, id: weir_core::ActionId) -> Result<Option<u64>, Failure> {
        match self {
            Source::Local(store, run) => {
                let full = store.action(*run, id).await.map_err(Failure::other)?;
                let size = |p: Option<Payload>| p.as_ref().map_or(0, Payload::size);
                Ok(full.map(|f| size(f.inputs).max(size(f.output))))
            }
            Source::Remote(clients, run) => {
                let v = super::cluster::action(clients, run, &id.to_string()).await?;
                let size = |b: Option<&Vec<u8>>| b.map_or(0, |b| b.len() as u64);
                Ok(Some(
                    size(v.inputs.as_deref()).max(size(v.output.as_deref())),
                ))
            }
        }
    }
}

/// A run's tasks summarized, and what `advise` needs besides: from the state directory, or
/// through a control plane (`--server`), page by page.
async fn summarize(
    state_dir: &Path,
    run: &str,
    server: &super::cluster::ServerArgs,
) -> Result<(Vec<TaskSummary>, RunFacts), Failure> {
    let (source, created_at, ended_at) = if server.server.is_some() {
        let clients = super::cluster::clients(state_dir, server)?;
        let view = super::cluster::run_view(&clients, run).await?;
        let times = (view.created_at, view.ended_at);
        (Source::Remote(clients, run.to_string()), times.0, times.1)
    } else {
        let store: Arc<dyn Store> = weir_store::open_read_only(state_dir)?;
        let rec = store.run_by_name(run).await?;
        (Source::Local(store, rec.id), rec.created_at, rec.ended_at)
    };
    let mut summarizer = Summarizer::default();
    let mut facts = RunFacts {
        duration_us: ended_at.map(|e| e - created_at),
        ..RunFacts::default()
    };
    let mut offset = 0;
    loop {
        let page = source.page(offset).await?;
        summarizer.add(&page);
        for r in &page {
            let seen = facts.inline_sizes.entry(r.task.clone()).or_default();
            if seen.len() < SIZE_SAMPLE && r.phases.is_some() {
                seen.extend(source.payload_size(r.id).await?);
            }
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
    advise::shown_phases(r).map_or(serde_json::Value::Null, |p| p.to_json())
}
