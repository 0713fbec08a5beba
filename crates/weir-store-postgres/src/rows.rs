//! Rows to records: the same column values as SQLite's (see `weir_store::columns`).

use tokio_postgres::Row;
use weir_core::{ActionId, ActionStatus, Failure};
use weir_store::columns::{REUSED_CACHE, REUSED_RECOVERED, payload_from_columns};
use weir_store::{ActionKind, ActionRecord, CacheEntry, Payload, RunRecord, RunStatus};

pub(crate) fn failure_json(f: &Option<Failure>) -> Option<String> {
    f.as_ref().and_then(|f| serde_json::to_string(f).ok())
}

fn parse_failure(s: Option<String>) -> Option<Failure> {
    s.and_then(|s| serde_json::from_str(&s).ok())
}

pub(crate) const CACHE_COLUMNS: &str =
    "key, project, domain, task, version, output, output_ref, created_at";

pub(crate) fn cache_from_row(row: &Row) -> CacheEntry {
    CacheEntry {
        key: row.get(0),
        project: row.get(1),
        domain: row.get(2),
        task: row.get(3),
        version: row.get(4),
        output: payload_from_columns(row.get(5), row.get(6)).unwrap_or(Payload::Inline(Vec::new())),
        created_at: row.get(7),
    }
}

pub(crate) const RUN_COLUMNS: &str = "id, name, task, status, created_at, ended_at, inputs, inputs_ref, context, output, output_ref, error, owner, epoch, owner_seen_at";

pub(crate) fn run_from_row(row: &Row) -> RunRecord {
    let status: String = row.get(3);
    let context: String = row.get(8);
    RunRecord {
        id: weir_store::RunId(row.get(0)),
        name: row.get(1),
        task: row.get(2),
        status: RunStatus::parse(&status).unwrap_or(RunStatus::Failed),
        created_at: row.get(4),
        ended_at: row.get(5),
        inputs: payload_from_columns(row.get(6), row.get(7)).unwrap_or(Payload::Inline(Vec::new())),
        context: serde_json::from_str(&context).unwrap_or_default(),
        output: payload_from_columns(row.get(9), row.get(10)),
        error: parse_failure(row.get(11)),
        owner: row.get(12),
        epoch: row.get::<_, i64>(13) as u64,
        owner_seen_at: row.get(14),
    }
}

pub(crate) const ACTION_COLUMNS: &str = "id, parent, task, grp, kind, status, attempts, queued_at, started_at, ended_at, cache_hit, error, phases";

/// An action without payloads from the [`ACTION_COLUMNS`].
pub(crate) fn action_from_row(row: &Row) -> ActionRecord {
    let reused: i64 = row.get(10);
    ActionRecord {
        id: ActionId(row.get::<_, i64>(0) as u64),
        parent: ActionId(row.get::<_, i64>(1) as u64),
        task: row.get(2),
        group: row.get(3),
        kind: if row.get::<_, i64>(4) == 1 {
            ActionKind::Trace
        } else {
            ActionKind::Task
        },
        status: ActionStatus::from_code(row.get(5)).unwrap_or(ActionStatus::Failed),
        attempts: row.get::<_, i64>(6) as u32,
        queued_at: row.get(7),
        started_at: row.get(8),
        ended_at: row.get(9),
        cache_hit: reused == REUSED_CACHE,
        recovered: reused == REUSED_RECOVERED,
        inputs: None,
        output: None,
        error: parse_failure(row.get(11)),
        phases: row
            .get::<_, Option<Vec<u8>>>(12)
            .and_then(|b| weir_core::phases::Phases::decode(&b)),
    }
}
