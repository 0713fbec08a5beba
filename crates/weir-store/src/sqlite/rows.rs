//! Rows to records and back: payload columns, failures as JSON.

use rusqlite::Row;
use weir_core::{ActionId, ActionStatus, Failure};

use crate::{ActionKind, ActionRecord, CacheEntry, Payload, RunRecord, RunStatus};

/// A payload's two columns: inline bytes, or a reference `SIZE#HASH:PATH`.
pub fn split(p: &Payload) -> (Option<&[u8]>, Option<String>) {
    match p {
        Payload::Inline(b) => (Some(b), None),
        // `SIZE#HASH:PATH` (`SIZE:PATH` in rows written before hashes were kept: a size is
        // digits only, so the two never mix).
        Payload::Offloaded {
            path,
            size,
            hash: Some(hash),
        } => (None, Some(format!("{size}#{hash}:{path}"))),
        Payload::Offloaded {
            path,
            size,
            hash: None,
        } => (None, Some(format!("{size}:{path}"))),
    }
}

pub(super) fn split_opt(p: &Option<Payload>) -> (Option<&[u8]>, Option<String>) {
    p.as_ref().map(split).unwrap_or((None, None))
}

/// A payload from its two columns (`inputs`/`inputs_ref`, `output`/`output_ref`).
pub fn join(blob: Option<Vec<u8>>, reference: Option<String>) -> Option<Payload> {
    if let Some(r) = reference {
        let (head, path) = r.split_once(':')?;
        let (size, hash) = match head.split_once('#') {
            Some((size, hash)) => (size, Some(hash.to_string())),
            None => (head, None),
        };
        return Some(Payload::Offloaded {
            path: path.to_string(),
            size: size.parse().ok()?,
            hash,
        });
    }
    blob.map(Payload::Inline)
}

pub(super) fn failure_json(f: &Option<Failure>) -> Option<String> {
    f.as_ref().and_then(|f| serde_json::to_string(f).ok())
}

pub(super) fn parse_failure(s: Option<String>) -> Option<Failure> {
    s.and_then(|s| serde_json::from_str(&s).ok())
}

pub(super) fn cache_from_row(row: &Row<'_>) -> rusqlite::Result<CacheEntry> {
    Ok(CacheEntry {
        key: row.get(0)?,
        project: row.get(1)?,
        domain: row.get(2)?,
        task: row.get(3)?,
        version: row.get(4)?,
        output: join(row.get(5)?, row.get(6)?).unwrap_or(Payload::Inline(Vec::new())),
        created_at: row.get(7)?,
    })
}

pub(super) const RUN_COLUMNS: &str = "id, name, task, status, created_at, ended_at, inputs, inputs_ref, context, output, output_ref, error, owner, epoch, owner_seen_at";

pub(super) fn run_from_row(row: &Row<'_>) -> rusqlite::Result<RunRecord> {
    let status: String = row.get(3)?;
    let context: String = row.get(8)?;
    Ok(RunRecord {
        id: row.get(0)?,
        name: row.get(1)?,
        task: row.get(2)?,
        status: RunStatus::parse(&status).unwrap_or(RunStatus::Failed),
        created_at: row.get(4)?,
        ended_at: row.get(5)?,
        inputs: join(row.get(6)?, row.get(7)?).unwrap_or(Payload::Inline(Vec::new())),
        context: serde_json::from_str(&context).unwrap_or_default(),
        output: join(row.get(9)?, row.get(10)?),
        error: parse_failure(row.get(11)?),
        owner: row.get(12)?,
        epoch: row.get::<_, i64>(13)? as u64,
        owner_seen_at: row.get(14)?,
    })
}

/// The `cache_hit` column says how a succeeded action got its output without running: `0` it
/// ran, `1` a cache hit, `2` recovered from an earlier run (`rerun --recover`).
pub const REUSED_CACHE: i64 = 1;
/// See [`REUSED_CACHE`].
pub const REUSED_RECOVERED: i64 = 2;

pub(crate) const ACTION_COLUMNS: &str = "id, parent, task, grp, kind, status, attempts, queued_at, started_at, ended_at, cache_hit, error, phases";

pub(super) fn action_from_row(row: &Row<'_>) -> rusqlite::Result<ActionRecord> {
    action_record_at(row, 0)
}

/// An action (without payloads) from the [`ACTION_COLUMNS`] starting at column `base`.
pub(crate) fn action_record_at(row: &Row<'_>, base: usize) -> rusqlite::Result<ActionRecord> {
    Ok(ActionRecord {
        id: ActionId(row.get::<_, i64>(base)? as u64),
        parent: ActionId(row.get::<_, i64>(base + 1)? as u64),
        task: row.get(base + 2)?,
        group: row.get(base + 3)?,
        kind: if row.get::<_, i64>(base + 4)? == 1 {
            ActionKind::Trace
        } else {
            ActionKind::Task
        },
        status: ActionStatus::from_code(row.get(base + 5)?).unwrap_or(ActionStatus::Failed),
        attempts: row.get(base + 6)?,
        queued_at: row.get(base + 7)?,
        started_at: row.get(base + 8)?,
        ended_at: row.get(base + 9)?,
        cache_hit: row.get::<_, i64>(base + 10)? == REUSED_CACHE,
        recovered: row.get::<_, i64>(base + 10)? == REUSED_RECOVERED,
        inputs: None,
        output: None,
        error: parse_failure(row.get(base + 11)?),
        phases: row
            .get::<_, Option<Vec<u8>>>(base + 12)?
            .and_then(|b| weir_core::phases::Phases::decode(&b)),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn references_keep_their_hash_and_old_ones_read_without() {
        let with = Payload::Offloaded {
            path: "run:1/a/inputs".into(),
            size: 7,
            hash: Some("ab".repeat(32)),
        };
        let (_, r) = split(&with);
        assert_eq!(join(None, r), Some(with));
        // A reference written before hashes were kept.
        let old = join(None, Some("7:run:1/a/inputs".into()));
        let expected = Payload::Offloaded {
            path: "run:1/a/inputs".into(),
            size: 7,
            hash: None,
        };
        assert_eq!(old, Some(expected.clone()));
        assert_eq!(split(&expected).1.as_deref(), Some("7:run:1/a/inputs"));
    }
}
