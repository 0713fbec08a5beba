//! Fencing of a superseded owner inside the writer's transaction: the runs of a batch that
//! another engine has claimed since this store claimed them (SPEC §4.2).

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use rusqlite::{Connection, OptionalExtension};

use super::writer::{Claims, Cmd};
use crate::{Error, RunId};

/// The runs of this batch that this store claimed but another owner has claimed since: their
/// writes are refused (with the reason each ticket gets).
pub(super) fn lost_runs(
    conn: &Connection,
    batch: &[Cmd],
    claims: &Claims,
) -> rusqlite::Result<HashMap<RunId, Arc<Error>>> {
    let mut lost = HashMap::new();
    let claims = claims.lock();
    if claims.is_empty() {
        return Ok(lost);
    }
    let mut checked = HashSet::new();
    let mut st = conn.prepare_cached("SELECT name, owner, epoch FROM runs WHERE id = ?1")?;
    for cmd in batch {
        let Cmd::Write(op, _) = cmd else { continue };
        let Some(run) = op.run() else { continue };
        if !checked.insert(run) {
            continue;
        }
        let Some(mine) = claims.get(&run) else {
            continue;
        };
        let now: Option<(String, String, i64)> = st
            .query_row([run], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))
            .optional()?;
        if let Some((name, owner, epoch)) = now
            && epoch as u64 != *mine
        {
            tracing::warn!(
                run = name,
                owner,
                epoch,
                "run taken over by another engine: its writes from here are refused"
            );
            lost.insert(
                run,
                Arc::new(Error::RunOwned {
                    run: name,
                    owner,
                    epoch: epoch as u64,
                }),
            );
        }
    }
    Ok(lost)
}
