//! `rerun RUN [--recover [--force ACTION|TASK]...]`: a new run of an earlier run's task and
//! inputs; with `--recover` it takes the output of every action that succeeded in the earlier
//! run instead of running it again (SPEC §4.3).

use std::path::Path;

use clap::Args;
use weir_engine::registry::find_task;
use weir_engine::worker::ExecutorKind;

use super::output::esc;
use super::run::{check_run_name, finish, open_engine_with_workers};
use super::{CliResult, Failure, OutputFormat};

#[derive(Args, Debug)]
pub(crate) struct RerunArgs {
    /// The earlier run.
    run: String,
    /// Take the output of every action that succeeded in the earlier run (which must have
    /// ended) instead of running it again; `get actions` shows them as recovered.
    #[arg(long)]
    recover: bool,
    /// With --recover: run this action again anyway (an action id, or a task or trace name
    /// for all of its actions). Repeatable.
    #[arg(long, requires = "recover", value_name = "ACTION|TASK")]
    force: Vec<String>,
    /// Name of the new run (generated when omitted; as for `run --name`).
    #[arg(long)]
    name: Option<String>,
    /// Where task attempts run (see `run --workers`); default: where the earlier run's ran.
    #[arg(long, value_parser = ["in-process", "process"])]
    workers: Option<String>,
}

pub(crate) async fn rerun(state_dir: &Path, out: OutputFormat, args: RerunArgs) -> CliResult {
    if let Some(name) = &args.name {
        check_run_name(name)?;
    }
    let store = weir_store::open_read_only(state_dir)?;
    let record = store.run_by_name(&args.run).await?;
    find_task(&record.task).map_err(|e| {
        Failure::input(format!(
            "run {} cannot be rerun by this binary: {e}",
            args.run
        ))
    })?;
    drop(store);
    let workers = args
        .workers
        .or_else(|| record.context["executor"].as_str().map(str::to_string))
        .unwrap_or_else(|| ExecutorKind::InProcess.as_str().into());
    let engine = open_engine_with_workers(state_dir, &workers)?;
    let recover = args.recover.then_some(args.force);
    let handle = engine.rerun(&args.run, args.name, recover).await?;
    eprintln!(
        "run {} started from run {}",
        esc(handle.name()),
        esc(&args.run)
    );
    finish(&engine, handle, out).await
}
