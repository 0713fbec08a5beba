//! `rerun RUN [--recover [--force ACTION|TASK]...]`: a new run of an earlier run's task and
//! inputs; with `--recover` it takes the output of every action that succeeded in the earlier
//! run instead of running it again (SPEC §4.3).

use std::path::Path;

use clap::Args;

use super::output::esc;
use super::run::{check_run_name, engine_for_run, finish};
use super::{CliResult, OutputFormat};

#[derive(Args, Debug)]
pub(crate) struct RerunArgs {
    /// The earlier run.
    run: String,
    /// Take the output of every action that succeeded in the earlier run (which must have
    /// ended) instead of running it again; `get actions` shows them as recovered.
    #[arg(long)]
    recover: bool,
    /// With --recover: run this action again anyway (an action id, or a task or trace name
    /// for all of its actions); a name that matches nothing is refused. Repeatable.
    #[arg(long, requires = "recover", value_name = "ACTION|TASK")]
    force: Vec<String>,
    /// Name of the new run (generated when omitted; as for `run --name`).
    #[arg(long)]
    name: Option<String>,
    /// Where task attempts run (see `run --workers`); default: where the earlier run's ran.
    #[arg(long, value_parser = ["in-process", "process"], conflicts_with = "server")]
    workers: Option<String>,
    #[command(flatten)]
    server: super::cluster::ServerArgs,
}

pub(crate) async fn rerun(state_dir: &Path, out: OutputFormat, args: RerunArgs) -> CliResult {
    if let Some(name) = &args.name {
        check_run_name(name)?;
    }
    if args.server.server.is_some() {
        let clients = super::cluster::clients(state_dir, &args.server)?;
        let of = weir_engine::cluster::RerunOf {
            run: args.run,
            recover: args.recover.then_some(args.force),
        };
        return super::cluster::rerun(clients, out, of, args.name).await;
    }
    let engine = engine_for_run(state_dir, &args.run, args.workers, "rerun").await?;
    let recover = args.recover.then_some(args.force);
    let handle = engine.rerun(&args.run, args.name, recover).await?;
    eprintln!(
        "run {} started from run {}",
        esc(handle.name()),
        esc(&args.run)
    );
    finish(&engine, handle, out).await
}
