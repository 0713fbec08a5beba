//! The command line (SPEC §11.1). A user's binary gets all of it by calling [`main`]; the
//! standalone `weir` binary offers the same inspection commands on a state directory.
//!
//! Data goes to stdout (tables, or JSON with `--output json`); progress, messages and errors go
//! to stderr. Exit codes: 0 success, 1 the run failed or was aborted, or the state could not be
//! read or written (a corrupt or newer database), 2 bad input (nothing changed): a malformed
//! argument, an unknown task, run or action, a `--state-dir` that holds no state or is not a
//! directory. Inspection commands (`get`, `cache list`, `ui`) open the state read-only and
//! change nothing in it.
//!
//! Text output escapes control characters in what it prints from the state (run names, task
//! errors, worker logs), so that stored bytes cannot drive the terminal; JSON output is JSON.

mod autoscale;
mod cache;
mod cluster;
mod deploy;
mod get;
mod health;
mod output;
mod phases;
mod rerun;
mod run;
mod serve;
mod telemetry;
mod token;
mod ui;
mod worker;
mod workers;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand, ValueEnum};

/// Output format for data commands.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum OutputFormat {
    /// Human-readable tables.
    Table,
    /// JSON for scripts.
    Json,
}

#[derive(Parser, Debug)]
#[command(
    name = "weir",
    about = "Durable task orchestration: run, resume and inspect runs",
    version
)]
struct Cli {
    /// State directory (SQLite database and object store).
    #[arg(long, global = true, env = "WEIR_STATE_DIR", default_value = ".weir")]
    state_dir: PathBuf,
    /// Output format of data commands.
    #[arg(long, short = 'o', global = true, value_enum, default_value = "table")]
    output: OutputFormat,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Run a task of this binary with JSON inputs and print its output.
    Run(run::RunArgs),
    /// Resume a run whose process died: succeeded actions are not run again.
    Resume(run::ResumeArgs),
    /// Abort a run.
    Abort(run::AbortArgs),
    /// Start a new run of an earlier run's task and inputs (`--recover`: reuse what succeeded).
    Rerun(rerun::RerunArgs),
    /// Show runs, actions, inputs and outputs.
    #[command(subcommand)]
    Get(get::GetCommand),
    /// List or clear cache entries.
    #[command(subcommand)]
    Cache(cache::CacheCommand),
    /// Serve the web UI on 127.0.0.1.
    Ui(ui::UiArgs),
    /// List the tasks registered in this binary.
    Tasks,
    /// Advice from a run's measured phase timings: batch, trace, reuse workers, raise
    /// concurrency, pass by reference (with numbers; `-o json` for tools).
    Advise(phases::AdviseArgs),
    /// Run as a worker: of an engine (started by `run --workers process`), or of a control
    /// plane (`--server URL`, started by hand or by `workers up`).
    Worker(worker::WorkerArgs),
    /// Serve the control plane of cluster mode on PostgreSQL (runs no user code).
    Serve(serve::ServeArgs),
    /// Worker processes of a control plane on this machine (`workers up`).
    #[command(subcommand)]
    Workers(autoscale::WorkersCommand),
    /// Access tokens of a control plane (`token create --project P --role client|worker|admin`).
    #[command(subcommand)]
    Token(token::TokenCommand),
    /// Render manifests that run this binary's workers elsewhere (`deploy kubernetes`).
    #[command(subcommand)]
    Deploy(deploy::DeployCommand),
    /// Check that a control plane replica answers and reaches its database (for probes).
    Health(health::HealthArgs),
}

/// A CLI failure: message and exit code.
#[derive(Debug)]
pub(crate) struct Failure {
    code: u8,
    message: String,
}

impl Failure {
    /// Bad input: exit 2, nothing changed.
    pub(crate) fn input(message: impl std::fmt::Display) -> Self {
        Failure {
            code: 2,
            message: message.to_string(),
        }
    }
    /// Any other failure: exit 1.
    pub(crate) fn other(message: impl std::fmt::Display) -> Self {
        Failure {
            code: 1,
            message: message.to_string(),
        }
    }
}

/// Store failures: a state directory that holds no state or is a file is bad input (exit 2), as
/// are unknown runs and actions; a database that cannot be read (corrupt, empty, newer) is a
/// failure (exit 1), whichever command met it.
impl From<weir_store::Error> for Failure {
    fn from(e: weir_store::Error) -> Self {
        use weir_store::Error as E;
        match e {
            E::NoState(_) | E::NotADirectory(_) | E::UnknownRun(_) | E::UnknownAction { .. } => {
                Failure::input(e)
            }
            _ => Failure::other(e),
        }
    }
}

impl From<weir_engine::EngineError> for Failure {
    fn from(e: weir_engine::EngineError) -> Self {
        if e.is_bad_input() {
            Failure::input(e)
        } else {
            Failure::other(e)
        }
    }
}

pub(crate) type CliResult = std::result::Result<(), Failure>;

/// Parses the process arguments, runs the command and exits. Call it from a plain `fn main()`
/// (it starts its own tokio runtime).
pub fn main() -> ExitCode {
    ExitCode::from(main_with(std::env::args_os()))
}

/// [`main`] with the given arguments (the first is the program's name): for a host that is not
/// the binary itself, like weir's Python package (`python -m weir ...`). Returns the exit code.
pub fn main_with<I, T>(args: I) -> u8
where
    I: IntoIterator<Item = T>,
    T: Into<std::ffi::OsString> + Clone,
{
    let _telemetry = telemetry::init();
    let cli = Cli::parse_from(args);
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return 1;
        }
    };
    let result = runtime.block_on(dispatch(cli));
    // Runs end with their commit acknowledged, so nothing is lost by not waiting for tasks
    // that are still unwinding.
    runtime.shutdown_background();
    match result {
        Ok(()) => 0,
        Err(f) => {
            eprintln!("error: {}", output::escape_message(&f.message));
            f.code
        }
    }
}

/// Refuses a `--state-dir` that exists and is not a directory, before anything opens it.
fn check_state_dir(state_dir: &std::path::Path) -> CliResult {
    if state_dir.exists() && !state_dir.is_dir() {
        return Err(Failure::input(weir_store::Error::NotADirectory(
            state_dir.display().to_string(),
        )));
    }
    Ok(())
}

async fn dispatch(cli: Cli) -> CliResult {
    let out = cli.output;
    if !matches!(
        cli.command,
        Command::Tasks
            | Command::Worker(_)
            | Command::Serve(_)
            | Command::Workers(_)
            | Command::Token(_)
            | Command::Deploy(_)
            | Command::Health(_)
    ) {
        check_state_dir(&cli.state_dir)?;
    }
    match cli.command {
        Command::Run(args) => run::run(&cli.state_dir, out, args).await,
        Command::Resume(args) => run::resume(&cli.state_dir, out, args).await,
        Command::Abort(args) => run::abort(&cli.state_dir, args).await,
        Command::Rerun(args) => rerun::rerun(&cli.state_dir, out, args).await,
        Command::Get(cmd) => get::get(&cli.state_dir, out, cmd).await,
        Command::Cache(cmd) => cache::cache(&cli.state_dir, out, cmd).await,
        Command::Worker(args) => worker::worker(&cli.state_dir, args).await,
        Command::Serve(args) => serve::serve(&cli.state_dir, args).await,
        Command::Workers(autoscale::WorkersCommand::Up(args)) => {
            autoscale::up(&cli.state_dir, args).await
        }
        Command::Ui(args) => ui::ui(&cli.state_dir, args).await,
        Command::Token(cmd) => token::token(out, cmd).await,
        Command::Deploy(cmd) => deploy::deploy(out, cmd),
        Command::Health(args) => health::health(&cli.state_dir, args).await,
        Command::Tasks => {
            get::tasks(out);
            Ok(())
        }
        Command::Advise(args) => phases::advise(&cli.state_dir, out, args).await,
    }
}
