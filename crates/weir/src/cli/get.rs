//! `get runs|actions|io`, `tasks`.

use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;

use clap::{Args, Subcommand};
use serde_json::json;
use weir_core::{ActionId, ActionStatus};
use weir_engine::registry;
use weir_store::{ActionRecord, Page, Payload, RunFilter, RunStatus, Store};

use super::output::{Field, fmt_dur, fmt_time, print_object, table};
use super::{CliResult, Failure, OutputFormat};

#[derive(Subcommand, Debug)]
pub(crate) enum GetCommand {
    /// Runs, newest first, with action counts by status.
    Runs(RunsArgs),
    /// A run's action tree: status, attempts, timings.
    Actions(ActionsArgs),
    /// An action's inputs and output (or error).
    Io(IoArgs),
    /// Per task of a run: actions, p50/p95 of each phase of their time, overhead share.
    Tasks(super::phases::TasksArgs),
    /// Worker processes per environment and the executor's decisions.
    Workers(super::workers::WorkersArgs),
    /// What the worker processes that ran an action printed (with --server: what the
    /// control plane's workers sent of each attempt).
    Logs(super::workers::LogsArgs),
}

#[derive(Args, Debug)]
pub(crate) struct RunsArgs {
    /// Only runs in this status (running, succeeded, failed, aborted).
    #[arg(long)]
    status: Option<String>,
    /// Only runs whose name contains this.
    #[arg(long)]
    name: Option<String>,
    /// At most this many runs.
    #[arg(long, default_value_t = 50)]
    limit: u32,
    #[command(flatten)]
    server: super::cluster::ServerArgs,
}

#[derive(Args, Debug)]
pub(crate) struct ActionsArgs {
    /// Run name.
    run: String,
    /// Skip this many actions (creation order).
    #[arg(long, default_value_t = 0, value_parser = clap::value_parser!(u64).range(..=i64::MAX as u64))]
    offset: u64,
    /// At most this many actions.
    #[arg(long, default_value_t = 200)]
    limit: u32,
    /// Also show each action's inputs and output (JSON: `inputs` and `output` fields, decoded;
    /// table: short previews).
    #[arg(long)]
    with_io: bool,
    /// Also show where each action's time went: one column per phase (upload, queue, start,
    /// download, exec, output, deliver).
    #[arg(long)]
    phases: bool,
    #[command(flatten)]
    server: super::cluster::ServerArgs,
}

#[derive(Args, Debug)]
pub(crate) struct IoArgs {
    /// Run name.
    run: String,
    /// Action id (`a0` for the root).
    action: String,
    #[command(flatten)]
    server: super::cluster::ServerArgs,
}

fn open(state_dir: &Path) -> Result<Arc<dyn Store>, Failure> {
    Ok(weir_store::open_read_only(state_dir)?)
}

pub(crate) async fn get(state_dir: &Path, out: OutputFormat, cmd: GetCommand) -> CliResult {
    match cmd {
        GetCommand::Runs(a) => runs(state_dir, out, a).await,
        GetCommand::Actions(a) => actions(state_dir, out, a).await,
        GetCommand::Io(a) => io(state_dir, out, a).await,
        GetCommand::Tasks(a) => super::phases::tasks(state_dir, out, a).await,
        GetCommand::Workers(a) => super::workers::workers(state_dir, out, a),
        GetCommand::Logs(a) if a.server.server.is_some() => {
            super::workers::server_logs(state_dir, out, a).await
        }
        GetCommand::Logs(a) => super::workers::logs(state_dir, out, a),
    }
}

async fn runs(state_dir: &Path, out: OutputFormat, a: RunsArgs) -> CliResult {
    let status = match a.status.as_deref() {
        Some(s) => Some(RunStatus::parse(s).ok_or_else(|| {
            Failure::input(format!(
                "unknown status {s:?}; use running, succeeded, failed or aborted"
            ))
        })?),
        None => None,
    };
    if a.server.server.is_some() {
        let clients = super::cluster::clients(state_dir, &a.server)?;
        return super::cluster::runs(clients, out, status, a.name, a.limit).await;
    }
    let store = open(state_dir)?;
    let runs = store
        .list_runs(&RunFilter {
            status,
            name_contains: a.name,
            limit: Some(a.limit),
            ..RunFilter::default()
        })
        .await
        .map_err(Failure::other)?;
    if out == OutputFormat::Json {
        println!("{}", serde_json::to_string(&runs).unwrap_or_default());
        return Ok(());
    }
    let rows: Vec<Vec<String>> = runs
        .iter()
        .map(|r| {
            let counts = r
                .actions
                .iter()
                .map(|(k, v)| format!("{k}={v}"))
                .collect::<Vec<_>>()
                .join(" ");
            vec![
                r.name.clone(),
                r.task.clone(),
                r.status.as_str().into(),
                fmt_time(r.created_at),
                r.ended_at
                    .map(|e| fmt_dur(e - r.created_at))
                    .unwrap_or_else(|| "-".into()),
                counts,
            ]
        })
        .collect();
    table(
        &["RUN", "TASK", "STATUS", "STARTED", "DURATION", "ACTIONS"],
        &rows,
    );
    Ok(())
}

async fn actions(state_dir: &Path, out: OutputFormat, a: ActionsArgs) -> CliResult {
    if a.server.server.is_some() {
        let clients = super::cluster::clients(state_dir, &a.server)?;
        if a.with_io {
            let page = super::cluster::actions_with_io(&clients, &a.run, a.offset, a.limit).await?;
            let json = |b: Option<Vec<u8>>| match b {
                None => Ok(serde_json::Value::Null),
                Some(b) => weir_core::codec::to_json(&b).map_err(Failure::other),
            };
            let mut list = Vec::with_capacity(page.len());
            let mut io = Vec::with_capacity(page.len());
            for item in page {
                let inputs = json(item.inputs.map(|b| b.into_vec()))?;
                io.push((inputs, json(item.output.map(|b| b.into_vec()))?));
                list.push(item.action);
            }
            return print_actions(out, &a, &list, &io);
        }
        let list = super::cluster::actions(&clients, &a.run, a.offset, a.limit).await?;
        return print_actions(out, &a, &list, &[]);
    }
    let store = open(state_dir)?;
    let run = store.run_by_name(&a.run).await?;
    let list = store
        .list_actions(
            run.id,
            Page {
                offset: a.offset,
                limit: a.limit,
            },
        )
        .await
        .map_err(Failure::other)?;
    let mut io = Vec::new();
    if a.with_io {
        let payloads = payloads_of(state_dir, store.as_ref()).await?;
        for r in &list {
            let full = store
                .action(run.id, r.id)
                .await
                .map_err(Failure::other)?
                .unwrap_or_else(|| r.clone());
            let inputs = decode(&payloads, full.inputs.as_ref()).await?;
            let output = match full.status {
                ActionStatus::Succeeded => decode(&payloads, full.output.as_ref()).await?,
                _ => serde_json::Value::Null,
            };
            io.push((inputs, output));
        }
    }
    print_actions(out, &a, &list, &io)
}

/// Prints a page of actions (with their decoded inputs and outputs when `io` has them).
fn print_actions(
    out: OutputFormat,
    a: &ActionsArgs,
    list: &[ActionRecord],
    io: &[(serde_json::Value, serde_json::Value)],
) -> CliResult {
    if out == OutputFormat::Json {
        let items: Vec<_> = list
            .iter()
            .enumerate()
            .map(|(i, r)| {
                let mut item = action_json(r);
                if a.phases {
                    item["phases"] = super::phases::json(r);
                }
                if let Some((inputs, output)) = io.get(i) {
                    item["inputs"] = inputs.clone();
                    item["output"] = output.clone();
                }
                item
            })
            .collect();
        println!("{}", serde_json::to_string(&items).unwrap_or_default());
        return Ok(());
    }
    // Depth in the tree, from the parents present on this page.
    let mut depth: HashMap<ActionId, usize> = HashMap::new();
    let rows: Vec<Vec<String>> = list
        .iter()
        .enumerate()
        .map(|(i, r)| {
            let d = if r.id == ActionId::ROOT {
                0
            } else {
                depth.get(&r.parent).map(|d| d + 1).unwrap_or(1)
            };
            depth.insert(r.id, d);
            let wait = r
                .started_at
                .map(|s| fmt_dur(s - r.queued_at))
                .unwrap_or_else(|| "-".into());
            let dur = match (r.started_at, r.ended_at) {
                (Some(s), Some(e)) => fmt_dur(e - s),
                _ => "-".into(),
            };
            let mut row = vec![
                format!("{}{}", "  ".repeat(d), r.id),
                match r.kind {
                    weir_store::ActionKind::Trace => format!("{} (trace)", r.task),
                    weir_store::ActionKind::Task => r.task.clone(),
                },
                r.group.clone().unwrap_or_default(),
                r.status.as_str().into(),
                r.attempts.to_string(),
                wait,
                dur,
                if r.cache_hit {
                    "hit".into()
                } else if r.recovered {
                    "recovered".into()
                } else {
                    String::new()
                },
                r.error
                    .as_ref()
                    .map(|e| format!("[{}] {}", e.kind, e.message))
                    .unwrap_or_default(),
            ];
            if a.phases {
                row.extend(super::phases::columns(r));
            }
            if a.with_io {
                let (inputs, output) = &io[i];
                row.push(preview(inputs));
                row.push(preview(output));
            }
            row
        })
        .collect();
    let mut header = vec![
        "ACTION", "TASK", "GROUP", "STATUS", "ATTEMPTS", "QUEUED", "RUNTIME", "REUSED", "ERROR",
    ];
    if a.phases {
        header.extend([
            "UPLOAD", "QUEUE", "START", "DOWNLOAD", "EXEC", "OUTPUT", "DELIVER",
        ]);
    }
    if a.with_io {
        header.extend(["INPUTS", "OUTPUT"]);
    }
    table(&header, &rows);
    if list.len() as u32 == a.limit {
        eprintln!(
            "(showing {} actions from offset {}; use --offset/--limit for more)",
            list.len(),
            a.offset
        );
    }
    Ok(())
}

/// The payloads of the state (its recorded object store, or `<state>/blobs`).
async fn payloads_of(state_dir: &Path, store: &dyn Store) -> Result<weir_blob::Payloads, Failure> {
    let recorded = store
        .setting(weir_blob::BLOB_URL_SETTING)
        .await
        .map_err(Failure::other)?;
    weir_blob::Payloads::of_state(state_dir, recorded.as_deref()).map_err(Failure::other)
}

/// A payload as JSON (`null` when there is none).
async fn decode(
    payloads: &weir_blob::Payloads,
    p: Option<&Payload>,
) -> Result<serde_json::Value, Failure> {
    match p {
        None => Ok(serde_json::Value::Null),
        Some(p) => {
            let bytes = payloads.load(p).await.map_err(Failure::other)?;
            weir_core::codec::to_json(&bytes).map_err(Failure::other)
        }
    }
}

fn preview(v: &serde_json::Value) -> String {
    if v.is_null() {
        return "-".into();
    }
    let text = v.to_string();
    match text.char_indices().nth(40) {
        Some((cut, _)) => format!("{}…", &text[..cut]),
        None => text,
    }
}

fn action_json(r: &ActionRecord) -> serde_json::Value {
    json!({
        "id": r.id.to_string(),
        "parent": r.parent.to_string(),
        "task": r.task,
        "group": r.group,
        "kind": r.kind,
        "status": r.status.as_str(),
        "attempts": r.attempts,
        "queued_at_us": r.queued_at,
        "started_at_us": r.started_at,
        "ended_at_us": r.ended_at,
        "cache_hit": r.cache_hit,
        "recovered": r.recovered,
        "error": r.error,
    })
}

async fn io(state_dir: &Path, out: OutputFormat, a: IoArgs) -> CliResult {
    if a.server.server.is_some() {
        let clients = super::cluster::clients(state_dir, &a.server)?;
        let v = super::cluster::action(&clients, &a.run, &a.action).await?;
        let value = |v: serde_json::Value| Field::Value(v);
        let refs = references(
            [
                v.inputs.as_deref().map(|b| b.as_slice()),
                v.output.as_deref().map(|b| b.as_slice()),
            ],
            v.store.as_deref().unwrap_or("(the control plane's store)"),
        );
        let mut fields = vec![
            ("action", value(v.action.id.to_string().into())),
            ("error", value(json!(v.action.error))),
            ("failed_attempts", value(json!(v.failed_attempts))),
            (
                "inputs",
                Field::Payload(v.inputs.as_deref().map(|b| b.as_slice())),
            ),
            (
                "output",
                Field::Payload(v.output.as_deref().map(|b| b.as_slice())),
            ),
            ("run", value(a.run.clone().into())),
            ("status", value(v.action.status.as_str().into())),
            ("task", value(v.action.task.clone().into())),
        ];
        if !refs.is_empty() {
            fields.push(("references", value(json!(refs))));
        }
        return print_io(fields, &refs, out)
            .map_err(|e| Failure::other(format!("cannot print action {}: {e}", a.action)));
    }
    let store = open(state_dir)?;
    let run = store.run_by_name(&a.run).await?;
    let unknown = || {
        Failure::input(weir_store::Error::UnknownAction {
            run: a.run.clone(),
            action: a.action.clone(),
        })
    };
    let id = ActionId::parse(&a.action).ok_or_else(unknown)?;
    let rec = store
        .action(run.id, id)
        .await
        .map_err(Failure::other)?
        .ok_or_else(unknown)?;
    let recorded = store
        .setting(weir_blob::BLOB_URL_SETTING)
        .await
        .map_err(Failure::other)?;
    let payloads =
        weir_blob::Payloads::of_state(state_dir, recorded.as_deref()).map_err(Failure::other)?;
    let load = |p: Option<Payload>| {
        let payloads = payloads.clone();
        async move {
            match p {
                None => Ok(None),
                Some(p) => payloads.load(&p).await.map(Some).map_err(Failure::other),
            }
        }
    };
    let inputs = load(rec.inputs.clone()).await?;
    let output = if rec.status == ActionStatus::Succeeded {
        load(rec.output.clone()).await?
    } else {
        None
    };
    let attempts = store
        .failed_attempts(run.id, id)
        .await
        .map_err(Failure::other)?;
    let value = |v: serde_json::Value| Field::Value(v);
    let url = payloads
        .blobs()
        .map(|b| b.url().to_string())
        .unwrap_or_default();
    let refs = references([inputs.as_deref(), output.as_deref()], &url);
    // Payloads are streamed (a large value is never held as a JSON tree); keys sorted.
    let mut fields = vec![
        ("action", value(rec.id.to_string().into())),
        ("error", value(json!(rec.error))),
        ("failed_attempts", value(json!(attempts))),
        ("inputs", Field::Payload(inputs.as_deref())),
        ("output", Field::Payload(output.as_deref())),
        ("run", value(a.run.clone().into())),
        ("status", value(rec.status.as_str().into())),
        ("task", value(rec.task.clone().into())),
    ];
    if !refs.is_empty() {
        fields.push(("references", value(json!(refs))));
    }
    print_io(fields, &refs, out)
        .map_err(|e| Failure::other(format!("cannot print action {}: {e}", a.action)))
}

/// The references to object-store data (`weir::File`, `Dir`, `DataFrame`) in an action's inputs
/// and output, `at` prefixed with `inputs` or `output`.
fn references(payloads: [Option<&[u8]>; 2], store_url: &str) -> Vec<serde_json::Value> {
    let mut all = Vec::new();
    for (name, p) in ["inputs", "output"].into_iter().zip(payloads) {
        for mut r in p
            .map(|b| weir_core::refs::references(b, store_url))
            .unwrap_or_default()
        {
            let at = r["at"].as_str().unwrap_or("").to_string();
            r["at"] = match at.chars().next() {
                None => name.into(),
                Some('[') | Some('/') => format!("{name}{at}").into(),
                Some(_) => format!("{name}.{at}").into(),
            };
            all.push(r);
        }
    }
    all
}

/// `get io`'s object (references last, keys otherwise sorted); in a table, the references
/// described again in lines under it.
fn print_io(
    fields: Vec<(&str, Field<'_>)>,
    refs: &[serde_json::Value],
    out: OutputFormat,
) -> std::io::Result<()> {
    print_object(fields, out == OutputFormat::Table)?;
    if out == OutputFormat::Table && !refs.is_empty() {
        println!("references (data in the object store, not read):");
        for line in weir_core::refs::describe(refs) {
            println!("  {line}");
        }
    }
    Ok(())
}

pub(crate) fn tasks(out: OutputFormat) {
    let mut defs: Vec<_> = registry::tasks().collect();
    defs.sort_by_key(|d| d.full_name().to_string());
    if out == OutputFormat::Json {
        let items: Vec<_> = defs
            .iter()
            .map(|d| json!({"task": d.full_name(), "params": d.params}))
            .collect();
        println!("{}", serde_json::to_string(&items).unwrap_or_default());
        return;
    }
    let rows: Vec<Vec<String>> = defs
        .iter()
        .map(|d| vec![d.full_name().to_string(), d.params.join(", ")])
        .collect();
    table(&["TASK", "PARAMETERS"], &rows);
}
