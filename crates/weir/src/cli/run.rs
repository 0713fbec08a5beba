//! `run`, `resume`, `abort`.

use std::io::Read;
use std::path::{Path, PathBuf};
use std::time::Duration;

use clap::Args;
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use weir_engine::registry::find_task;
use weir_engine::worker::ExecutorKind;
use weir_engine::{Engine, EngineOptions, RunContext, RunHandle};

use super::output::{Field, esc, print_object, print_payload};
use super::{CliResult, Failure, OutputFormat};

#[derive(Args, Debug)]
pub(crate) struct RunArgs {
    /// Task name: `<env>.<task>`, or the task's name alone when unique.
    task: String,
    /// Inputs as a JSON object named by parameter, e.g. '{"n": 10}' (default `{}`); `-` reads
    /// them from stdin.
    #[arg(long, short = 'i', conflicts_with = "input_file")]
    input: Option<String>,
    /// Reads the inputs (a JSON object, as for --input) from this file (`-`: stdin), for inputs
    /// too large for the command line.
    #[arg(long, value_name = "PATH")]
    input_file: Option<PathBuf>,
    /// Run name (generated when omitted): not empty, no control characters, and no path
    /// (`/`, `\`, `.` or `..`): it names the run's objects in the object store.
    #[arg(long)]
    name: Option<String>,
    /// At most this many actions execute at once.
    #[arg(long)]
    max_action_concurrency: Option<usize>,
    /// Re-run cached tasks and replace their cache entries.
    #[arg(long)]
    overwrite_cache: bool,
    /// Neither read nor write the cache in this run.
    #[arg(long)]
    no_cache: bool,
    /// Look cache entries up in every project/domain (`global`) or only this run's.
    #[arg(long, value_parser = ["global", "project-domain"], default_value = "global")]
    cache_scope: String,
    /// Project of the run.
    #[arg(long)]
    project: Option<String>,
    /// Domain of the run.
    #[arg(long)]
    domain: Option<String>,
    /// Where task attempts run: in this process, or in worker processes of this binary kept
    /// per environment by its reuse policy (SPEC §7).
    #[arg(long, value_parser = ["in-process", "process"], default_value = "in-process")]
    workers: String,
    #[command(flatten)]
    server: super::cluster::ServerArgs,
}

#[derive(Args, Debug)]
pub(crate) struct ResumeArgs {
    /// Run name.
    run: String,
    /// Resume even if the run's recorded owner process still exists.
    #[arg(long)]
    force: bool,
    /// Where task attempts run (see `run --workers`); default: where the run's attempts ran.
    #[arg(long, value_parser = ["in-process", "process"])]
    workers: Option<String>,
}

#[derive(Args, Debug)]
pub(crate) struct AbortArgs {
    /// Run name.
    run: String,
    #[command(flatten)]
    server: super::cluster::ServerArgs,
}

fn open_engine(state_dir: &Path) -> Result<Engine, Failure> {
    Ok(Engine::open(EngineOptions::new(state_dir))?)
}

fn open_engine_with_workers(state_dir: &Path, workers: &str) -> Result<Engine, Failure> {
    let mut options = EngineOptions::new(state_dir);
    if ExecutorKind::parse(workers) == Some(ExecutorKind::Processes) {
        options = options.with_worker_processes();
        options.workers = options.workers.with_env_overrides();
    }
    Ok(Engine::open(options)?)
}

/// Refuses a run name that cannot be shown or stored as one: empty, with a control character
/// (line feeds and terminal escapes would be printed wherever runs are listed), or a path
/// (run names are the first segment of their object keys).
pub(super) fn check_run_name(name: &str) -> CliResult {
    if name.is_empty() {
        return Err(Failure::input("invalid --name: it is empty"));
    }
    if let Some((at, c)) = name.char_indices().find(|(_, c)| c.is_control()) {
        let what = match c {
            '\n' => "a line feed".to_string(),
            '\r' => "a carriage return".to_string(),
            '\t' => "a tab".to_string(),
            '\x1b' => "an escape character".to_string(),
            _ => "a control character".to_string(),
        };
        return Err(Failure::input(format!(
            "invalid --name {:?}: it contains {what} (U+{:04X}) at byte {at}; run names cannot hold control characters",
            name, c as u32
        )));
    }
    if name == "." || name == ".." || name.contains(['/', '\\']) {
        return Err(Failure::input(format!(
            "invalid --name {name:?}: run names cannot contain '/' or '\\' or be '.' or '..' (they name the run's objects in the object store)"
        )));
    }
    Ok(())
}

/// The `--input` text: the argument, stdin (`--input -`, `--input-file -`) or a file.
fn read_input(args: &RunArgs) -> Result<String, Failure> {
    let from_stdin = || {
        let mut text = String::new();
        std::io::stdin()
            .read_to_string(&mut text)
            .map_err(|e| Failure::input(format!("cannot read the inputs from stdin: {e}")))?;
        Ok(text)
    };
    match (&args.input, &args.input_file) {
        (Some(text), _) if text == "-" => from_stdin(),
        (Some(text), _) => Ok(text.clone()),
        (None, Some(path)) if path.as_os_str() == "-" => from_stdin(),
        (None, Some(path)) => std::fs::read_to_string(path).map_err(|e| {
            Failure::input(format!("cannot read --input-file {}: {e}", path.display()))
        }),
        (None, None) => Ok("{}".into()),
    }
}

pub(crate) async fn run(state_dir: &Path, out: OutputFormat, args: RunArgs) -> CliResult {
    // Validate everything before touching the state directory.
    if let Some(name) = &args.name {
        check_run_name(name)?;
    }
    let def = find_task(&args.task).map_err(Failure::input)?;
    let input = read_input(&args)?;
    if let Ok(v) = serde_json::from_str::<serde_json::Value>(&input)
        && !v.is_object()
    {
        return Err(Failure::input(format!(
            "invalid --input for task {}: expected a JSON object named by parameter ({{\"{}\": ...}}), got {}",
            def.full_name(),
            def.params.first().copied().unwrap_or("param"),
            v
        )));
    }
    let inputs = (def.inputs_from_json)(&input).map_err(|e| {
        Failure::input(format!(
            "invalid --input for task {} (parameters: {}): {e}",
            def.full_name(),
            if def.params.is_empty() {
                "none".to_string()
            } else {
                def.params.join(", ")
            }
        ))
    })?;
    let limit = def.inline_limit();
    if inputs.len() as u64 > limit {
        return Err(Failure::input(format!(
            "--input for task {} is {} bytes encoded, over its inline limit of {limit} bytes",
            def.full_name(),
            inputs.len()
        )));
    }
    let mut context = RunContext::new();
    context.name = args.name;
    context.max_action_concurrency = args.max_action_concurrency;
    context.overwrite_cache = args.overwrite_cache;
    context.disable_cache = args.no_cache;
    if args.cache_scope == "project-domain" {
        context.cache_lookup_scope = weir_engine::CacheLookupScope::ProjectDomain;
    }
    context.project = args.project;
    context.domain = args.domain;
    if args.server.server.is_some() {
        if args.workers != "in-process" {
            return Err(Failure::input(
                "--workers applies to embedded runs; with --server the control plane's workers run every action",
            ));
        }
        let clients = super::cluster::clients(state_dir, &args.server)?;
        return super::cluster::run(clients, out, def.full_name(), inputs, &context).await;
    }
    let engine = open_engine_with_workers(state_dir, &args.workers)?;
    // A taken --name is refused here (exit 2) before anything is written.
    let handle = engine.start_run(def, inputs, context).await?;
    eprintln!("run {} started ({})", esc(handle.name()), def.full_name());
    finish(&engine, handle, out).await
}

pub(crate) async fn resume(state_dir: &Path, out: OutputFormat, args: ResumeArgs) -> CliResult {
    let engine = engine_for_run(state_dir, &args.run, args.workers, "resumed").await?;
    let handle = engine.resume_run(&args.run, args.force).await?;
    eprintln!("run {} resumed", esc(handle.name()));
    finish(&engine, handle, out).await
}

/// The engine to drive (or start again) the recorded run `run` with: refused (exit 2) when
/// there is no such run or this binary lacks its task (`verb` says what could not be done);
/// its attempts run where `workers` says, or where the run's ran (a run remembers it).
pub(super) async fn engine_for_run(
    state_dir: &Path,
    run: &str,
    workers: Option<String>,
    verb: &str,
) -> Result<Engine, Failure> {
    let store = weir_store::open_read_only(state_dir)?;
    let record = store.run_by_name(run).await?;
    find_task(&record.task)
        .map_err(|e| Failure::input(format!("run {run} cannot be {verb} by this binary: {e}")))?;
    drop(store);
    let workers = workers
        .or_else(|| record.context["executor"].as_str().map(str::to_string))
        .unwrap_or_else(|| ExecutorKind::InProcess.as_str().into());
    open_engine_with_workers(state_dir, &workers)
}

pub(crate) async fn abort(state_dir: &Path, args: AbortArgs) -> CliResult {
    if args.server.server.is_some() {
        let clients = super::cluster::clients(state_dir, &args.server)?;
        return super::cluster::abort(clients, &args.run).await;
    }
    // Refused (exit 2) where there is no state, before anything is created.
    drop(weir_store::open_read_only(state_dir)?);
    let engine = open_engine(state_dir)?;
    engine.abort_run(&args.run).await?;
    engine.close()?;
    eprintln!("run {} aborted", esc(&args.run));
    Ok(())
}

pub(super) async fn finish(engine: &Engine, handle: RunHandle, out: OutputFormat) -> CliResult {
    let bar = ProgressBar::with_draw_target(None, ProgressDrawTarget::stderr());
    bar.set_style(
        ProgressStyle::with_template("{spinner} {elapsed_precise} {msg}")
            .unwrap_or_else(|_| ProgressStyle::default_spinner()),
    );
    let ticker = {
        let bar = bar.clone();
        let handle = handle.clone();
        tokio::spawn(async move {
            loop {
                let p = handle.progress();
                bar.set_message(format!(
                    "{} done, {} running, {} failed, {} actions",
                    p.succeeded, p.running, p.failed, p.created
                ));
                bar.tick();
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        })
    };
    let result = handle.wait_raw().await;
    engine.shutdown_workers(Duration::from_secs(2)).await;
    ticker.abort();
    bar.finish_and_clear();
    engine.close()?;
    let p = handle.progress();
    match result {
        Ok(bytes) => {
            // Streamed: a large output is never held as a JSON tree.
            let printed = match out {
                OutputFormat::Json => print_object(
                    vec![
                        ("output", Field::Payload(Some(&bytes))),
                        ("run", Field::Value(handle.name().into())),
                        ("status", Field::Value("succeeded".into())),
                    ],
                    false,
                ),
                OutputFormat::Table => print_payload(&bytes, true),
            };
            printed.map_err(|e| Failure::other(format!("cannot print the output: {e}")))?;
            eprintln!(
                "run {} succeeded ({} actions, {} recovered from before)",
                esc(handle.name()),
                p.created,
                p.recovered
            );
            Ok(())
        }
        Err(e) => {
            if out == OutputFormat::Json {
                println!(
                    "{}",
                    serde_json::json!({"run": handle.name(), "status": "failed", "error": e.to_string(), "kind": e.kind().as_str()})
                );
            }
            Err(Failure::other(format!(
                "run {} failed: {e}",
                esc(handle.name())
            )))
        }
    }
}
