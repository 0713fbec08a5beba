//! The client side of cluster mode: the cluster token, and `run`, `get runs` and `abort`
//! against a control plane (`--server URL[,URL...]`).

use std::path::{Path, PathBuf};
use std::time::Duration;

use clap::Args;
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use weir_engine::cluster::{ClusterClient, RunSubmission, RunView, binary_version, local_specs};

use super::output::{Field, esc, fmt_time, print_object, print_payload, table};
use super::{CliResult, Failure, OutputFormat};

/// The environment variable that holds the cluster token (instead of a token file).
pub(crate) const TOKEN_ENV: &str = "WEIR_TOKEN";

/// Where to reach a control plane.
#[derive(Args, Debug, Clone)]
pub(crate) struct ServerArgs {
    /// Talk to a control plane (`weir serve`) instead of the embedded state: its URL, or
    /// several replicas' comma-separated (tried in order).
    #[arg(long, value_name = "URL[,URL...]")]
    pub(crate) server: Option<String>,
    /// The cluster token file (`WEIR_TOKEN` overrides it). Default `<state-dir>/cluster-token`,
    /// where `weir serve` writes it.
    #[arg(long, value_name = "PATH", requires = "server")]
    pub(crate) token_file: Option<PathBuf>,
}

/// The default token file of a state directory.
pub(crate) fn token_path(state_dir: &Path) -> PathBuf {
    state_dir.join("cluster-token")
}

/// The cluster token: `WEIR_TOKEN`, else the file's first line; with `create`, a missing
/// file is created (mode 0600) with a fresh random token.
pub(crate) fn read_token(path: &Path, create: bool) -> Result<String, Failure> {
    if let Ok(t) = std::env::var(TOKEN_ENV)
        && !t.trim().is_empty()
    {
        return Ok(t.trim().to_string());
    }
    match std::fs::read_to_string(path) {
        Ok(text) => {
            let token = text.lines().next().unwrap_or("").trim().to_string();
            if token.is_empty() {
                return Err(Failure::input(format!(
                    "the token file {} is empty",
                    path.display()
                )));
            }
            Ok(token)
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound && create => {
            let token = fresh_token()?;
            if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
                std::fs::create_dir_all(dir)
                    .map_err(|e| Failure::other(format!("cannot create {}: {e}", dir.display())))?;
            }
            match write_private(path, &token) {
                Ok(()) => Ok(token),
                // Another replica wrote it first: use theirs.
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => read_token(path, false),
                Err(e) => Err(Failure::other(format!(
                    "cannot write {}: {e}",
                    path.display()
                ))),
            }
        }
        Err(e) => Err(Failure::input(format!(
            "cannot read the cluster token from {}: {e} (set {TOKEN_ENV}, or pass --token-file: the file `weir serve` wrote)",
            path.display()
        ))),
    }
}

fn fresh_token() -> Result<String, Failure> {
    let mut bytes = [0u8; 32];
    std::fs::File::open("/dev/urandom")
        .and_then(|mut f| std::io::Read::read_exact(&mut f, &mut bytes))
        .map_err(|e| Failure::other(format!("cannot draw a random token: {e}")))?;
    Ok(bytes.iter().map(|b| format!("{b:02x}")).collect())
}

#[cfg(unix)]
fn write_private(path: &Path, token: &str) -> std::io::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)?;
    writeln!(f, "{token}")
}

#[cfg(not(unix))]
fn write_private(path: &Path, token: &str) -> std::io::Result<()> {
    std::fs::write(path, format!("{token}\n"))
}

/// Clients of each replica named in `--server`, in order.
pub(crate) fn clients(state_dir: &Path, args: &ServerArgs) -> Result<Vec<ClusterClient>, Failure> {
    let urls = args.server.as_deref().unwrap_or_default();
    let path = args
        .token_file
        .clone()
        .unwrap_or_else(|| token_path(state_dir));
    let token = read_token(&path, false)?;
    let clients: Vec<ClusterClient> = urls
        .split(',')
        .map(str::trim)
        .filter(|u| !u.is_empty())
        .map(|u| ClusterClient::new(u, &token))
        .collect();
    if clients.is_empty() {
        return Err(Failure::input("--server names no URL"));
    }
    Ok(clients)
}

/// Calls the first replica that answers; a refusal is final, an unreachable replica is
/// skipped.
macro_rules! first_reachable {
    ($clients:expr, $c:ident => $call:expr) => {{
        let mut last = String::new();
        let mut answer = None;
        for $c in $clients.iter() {
            match $call.await {
                Err(e) if e.starts_with("cannot reach") => last = e,
                r => {
                    answer = Some(r);
                    break;
                }
            }
        }
        answer.unwrap_or(Err(last))
    }};
}

/// `run --server`: submits the run and follows it to its end.
pub(crate) async fn run(
    clients: Vec<ClusterClient>,
    out: OutputFormat,
    task: &str,
    inputs: Vec<u8>,
    context: &weir_engine::RunContext,
) -> CliResult {
    let sub = RunSubmission {
        task: task.to_string(),
        inputs,
        context: serde_json::to_string(context).map_err(Failure::other)?,
        version: binary_version().map_err(Failure::other)?,
        tasks: local_specs(),
        rerun: None,
    };
    follow(clients, out, sub).await
}

/// `rerun RUN --server`: a new run of an earlier run's task and inputs (by reference), with
/// `recover` its succeeded actions taken instead of run again; followed to its end.
pub(crate) async fn rerun(
    clients: Vec<ClusterClient>,
    out: OutputFormat,
    of: weir_engine::cluster::RerunOf,
    name: Option<String>,
) -> CliResult {
    let context = weir_engine::RunContext {
        name,
        ..Default::default()
    };
    let sub = RunSubmission {
        task: String::new(),
        inputs: Vec::new(),
        context: serde_json::to_string(&context).map_err(Failure::other)?,
        version: binary_version().map_err(Failure::other)?,
        tasks: local_specs(),
        rerun: Some(of),
    };
    follow(clients, out, sub).await
}

/// Submits `sub` and follows the run to its end with a progress line.
async fn follow(clients: Vec<ClusterClient>, out: OutputFormat, sub: RunSubmission) -> CliResult {
    let started = first_reachable!(clients, c => c.submit(&sub)).map_err(|e| {
        if e.contains("HTTP 409") || e.contains("HTTP 400") || e.contains("HTTP 404") {
            Failure::input(e)
        } else {
            Failure::other(e)
        }
    })?;
    let name = started.name.clone();
    match &sub.rerun {
        Some(of) => eprintln!(
            "run {} started from run {} on the control plane",
            esc(&name),
            esc(&of.run)
        ),
        None => eprintln!(
            "run {} started ({}) on the control plane",
            esc(&name),
            sub.task
        ),
    }
    let bar = ProgressBar::with_draw_target(None, ProgressDrawTarget::stderr());
    bar.set_style(
        ProgressStyle::with_template("{spinner} {elapsed_precise} {msg}")
            .unwrap_or_else(|_| ProgressStyle::default_spinner()),
    );
    // The run goes on without this client: a control plane that cannot answer for a while
    // (every replica down, its database restarting) is asked again for a minute.
    let mut failing_since = None;
    // The replica that answered last is asked first; one that does not answer or fails (its
    // database restarting, or cut off from it) is skipped for the next: reading a run changes
    // nothing.
    let mut at = 0;
    let view = loop {
        let mut answer = Err(String::new());
        for k in 0..clients.len() {
            let i = (at + k) % clients.len();
            match clients[i].run(&name, Duration::from_secs(1)).await {
                Err(e) if e.starts_with("cannot reach") || e.contains("(HTTP 5") => answer = Err(e),
                r => {
                    at = i;
                    answer = r;
                    break;
                }
            }
        }
        let view = match answer {
            Ok(v) => {
                failing_since = None;
                v
            }
            Err(e) => {
                let since = *failing_since.get_or_insert_with(std::time::Instant::now);
                if since.elapsed() > Duration::from_secs(60) {
                    return Err(Failure::other(format!(
                        "lost the control plane while following run {}: {e}",
                        esc(&name)
                    )));
                }
                bar.set_message(format!("(control plane not answering: {e})"));
                tokio::time::sleep(Duration::from_millis(250)).await;
                continue;
            }
        };
        if view.is_terminal() {
            break view;
        }
        bar.set_message(progress(&view));
        bar.tick();
    };
    bar.finish_and_clear();
    ended(view, out)
}

fn progress(v: &RunView) -> String {
    let n = |s: &str| v.actions.get(s).copied().unwrap_or(0);
    let mut msg = format!(
        "{} done, {} running, {} queued, {} failed, {} actions",
        n("succeeded"),
        n("running"),
        n("queued") + n("retrying"),
        n("failed"),
        v.actions.values().sum::<u64>()
    );
    if let Some(w) = &v.waiting {
        msg.push_str(&format!(" ({w})"));
    }
    msg
}

fn ended(view: RunView, out: OutputFormat) -> CliResult {
    let total: u64 = view.actions.values().sum();
    match (view.status.as_str(), &view.output) {
        ("succeeded", Some(bytes)) => {
            let printed = match out {
                OutputFormat::Json => print_object(
                    vec![
                        ("output", Field::Payload(Some(bytes))),
                        ("run", Field::Value(view.name.clone().into())),
                        ("status", Field::Value("succeeded".into())),
                    ],
                    false,
                ),
                OutputFormat::Table => print_payload(bytes, true),
            };
            printed.map_err(|e| Failure::other(format!("cannot print the output: {e}")))?;
            eprintln!("run {} succeeded ({total} actions)", esc(&view.name));
            Ok(())
        }
        (status, _) => {
            let error = view
                .error
                .as_ref()
                .map(|f| format!("{}: {}", f.kind.as_str(), f.message))
                .unwrap_or_else(|| status.to_string());
            if out == OutputFormat::Json {
                println!(
                    "{}",
                    serde_json::json!({"run": view.name, "status": status, "error": error})
                );
            }
            Err(Failure::other(format!(
                "run {} {status}: {error}",
                esc(&view.name)
            )))
        }
    }
}

/// `get runs --server`.
pub(crate) async fn runs(
    clients: Vec<ClusterClient>,
    out: OutputFormat,
    status: Option<weir_store::RunStatus>,
    name: Option<String>,
    limit: u32,
) -> CliResult {
    let status = status.map(|s| s.as_str());
    let runs = first_reachable!(clients, c => c.runs(status, name.as_deref(), limit))
        .map_err(Failure::other)?;
    match out {
        OutputFormat::Json => {
            let v = serde_json::to_string(&runs.iter().map(|r| serde_json::json!({
                "name": r.name, "task": r.task, "status": r.status,
                "created_at": r.created_at, "ended_at": r.ended_at, "actions": r.actions,
                "waiting": r.waiting,
            })).collect::<Vec<_>>()).map_err(Failure::other)?;
            println!("{v}");
        }
        OutputFormat::Table => {
            let rows: Vec<Vec<String>> = runs
                .iter()
                .map(|r| {
                    vec![
                        esc(&r.name).into_owned(),
                        r.task.clone(),
                        r.status.clone(),
                        fmt_time(r.created_at),
                        r.actions.values().sum::<u64>().to_string(),
                        esc(r.waiting.as_deref().unwrap_or("")).into_owned(),
                    ]
                })
                .collect();
            table(
                &["NAME", "TASK", "STATUS", "CREATED", "ACTIONS", "WAITING"],
                &rows,
            );
        }
    }
    Ok(())
}

/// A refusal of the control plane as a CLI failure: unknown runs and actions are bad input.
fn failure(e: String) -> Failure {
    if e.contains("HTTP 404") || e.contains("HTTP 400") {
        Failure::input(e)
    } else {
        Failure::other(e)
    }
}

/// `get actions --server`.
pub(crate) async fn actions(
    clients: &[ClusterClient],
    run: &str,
    offset: u64,
    limit: u32,
) -> Result<Vec<weir_store::ActionRecord>, Failure> {
    first_reachable!(clients, c => c.actions(run, offset, limit)).map_err(failure)
}

/// `get actions --with-io --server`: a page of actions with their payloads (asked for again
/// from where the control plane cut an answer short).
pub(crate) async fn actions_with_io(
    clients: &[ClusterClient],
    run: &str,
    offset: u64,
    limit: u32,
) -> Result<Vec<weir_engine::cluster::ActionIo>, Failure> {
    let mut actions = Vec::new();
    loop {
        let at = offset.saturating_add(actions.len() as u64);
        let want = limit.saturating_sub(actions.len() as u32);
        let page =
            first_reachable!(clients, c => c.actions_with_io(run, at, want)).map_err(failure)?;
        let got = page.actions.len();
        actions.extend(page.actions);
        if !page.cut || got == 0 || actions.len() as u32 >= limit {
            return Ok(actions);
        }
    }
}

/// `get logs --server`.
pub(crate) async fn attempt_logs(
    clients: &[ClusterClient],
    run: &str,
    id: &str,
) -> Result<Vec<weir_engine::cluster::AttemptLogView>, Failure> {
    first_reachable!(clients, c => c.attempt_logs(run, id)).map_err(failure)
}

/// A run as the control plane has it (its times, for `advise --server`).
pub(crate) async fn run_view(
    clients: &[ClusterClient],
    run: &str,
) -> Result<weir_engine::cluster::RunView, Failure> {
    first_reachable!(clients, c => c.run(run, std::time::Duration::ZERO)).map_err(failure)
}

/// `get io --server`.
pub(crate) async fn action(
    clients: &[ClusterClient],
    run: &str,
    id: &str,
) -> Result<weir_engine::cluster::ActionView, Failure> {
    first_reachable!(clients, c => c.action(run, id)).map_err(failure)
}

/// `cache list --server`.
pub(crate) async fn cache(
    clients: &[ClusterClient],
    task: Option<&str>,
    limit: u32,
) -> Result<Vec<weir_engine::cluster::CacheView>, Failure> {
    first_reachable!(clients, c => c.cache(task, limit)).map_err(failure)
}

/// `cache clear --server`.
pub(crate) async fn clear_cache(
    clients: &[ClusterClient],
    task: Option<&str>,
) -> Result<u64, Failure> {
    first_reachable!(clients, c => c.clear_cache(task)).map_err(failure)
}

/// `abort --server`.
pub(crate) async fn abort(clients: Vec<ClusterClient>, run: &str) -> CliResult {
    first_reachable!(clients, c => c.abort(run)).map_err(|e| {
        if e.contains("HTTP 404") || e.contains("HTTP 409") {
            Failure::input(e)
        } else {
            Failure::other(e)
        }
    })?;
    eprintln!("run {} aborted", esc(run));
    Ok(())
}
