//! What clients read beyond an action's row: pages of actions with their payloads, and the
//! logs of attempts (what cluster workers captured of their output), on the pooled
//! connections.

use weir_core::ActionId;
use weir_store::columns::payload_from_columns;
use weir_store::{ActionRecord, AttemptLog, Page, Result, RunId};

use crate::Inner;
use crate::rows::{ACTION_COLUMNS, action_from_row};

pub(crate) const LOG_COLUMNS: &str = "run, action, attempt, lease, worker, pid, env, task, started_at, ended_at, ok, text, dropped, overlapping";

impl Inner {
    pub(crate) async fn list_actions_with_payloads(
        &self,
        run: RunId,
        page: Page,
    ) -> Result<Vec<ActionRecord>> {
        let client = self.client().await?;
        let rows = client
            .query(
                &format!(
                    "SELECT {ACTION_COLUMNS}, inputs, inputs_ref, output, output_ref FROM actions
                     WHERE run = $1 ORDER BY seq LIMIT $2 OFFSET $3"
                ),
                &[&run.0, &(page.limit as i64), &(page.offset as i64)],
            )
            .await
            .map_err(self.err("listing actions with their payloads"))?;
        Ok(rows
            .iter()
            .map(|row| {
                let mut rec = action_from_row(row);
                rec.inputs = payload_from_columns(row.get(13), row.get(14));
                rec.output = payload_from_columns(row.get(15), row.get(16));
                rec
            })
            .collect())
    }

    /// One statement for the whole batch; a log already recorded is kept.
    pub(crate) async fn record_attempt_logs(&self, logs: &[AttemptLog]) -> Result<()> {
        if logs.is_empty() {
            return Ok(());
        }
        let col = |f: fn(&AttemptLog) -> i64| logs.iter().map(f).collect::<Vec<i64>>();
        let text = |f: fn(&AttemptLog) -> &str| logs.iter().map(f).collect::<Vec<&str>>();
        let client = self.client().await?;
        client
            .execute(
                &format!(
                    "INSERT INTO attempt_logs({LOG_COLUMNS})
                     SELECT * FROM unnest($1::bigint[], $2::bigint[], $3::bigint[], $4::bigint[],
                       $5::text[], $6::bigint[], $7::text[], $8::text[], $9::bigint[],
                       $10::bigint[], $11::boolean[], $12::bytea[], $13::bigint[], $14::bigint[])
                     ON CONFLICT(run, action, lease) DO NOTHING"
                ),
                &[
                    &col(|l| l.run.0),
                    &col(|l| l.action.as_i64()),
                    &col(|l| l.attempt as i64),
                    &col(|l| l.lease as i64),
                    &text(|l| &l.worker),
                    &col(|l| l.pid as i64),
                    &text(|l| &l.env),
                    &text(|l| &l.task),
                    &col(|l| l.started_at),
                    &col(|l| l.ended_at),
                    &logs.iter().map(|l| l.ok).collect::<Vec<bool>>(),
                    &logs
                        .iter()
                        .map(|l| l.text.as_slice())
                        .collect::<Vec<&[u8]>>(),
                    &col(|l| l.dropped as i64),
                    &col(|l| l.overlapping as i64),
                ],
            )
            .await
            .map(|_| ())
            .map_err(self.err("recording attempt logs"))
    }

    pub(crate) async fn attempt_logs(
        &self,
        run: RunId,
        action: ActionId,
    ) -> Result<Vec<AttemptLog>> {
        let client = self.client().await?;
        let rows = client
            .query(
                &format!(
                    "SELECT {LOG_COLUMNS} FROM attempt_logs WHERE run = $1 AND action = $2
                     ORDER BY attempt, lease"
                ),
                &[&run.0, &action.as_i64()],
            )
            .await
            .map_err(self.err("reading attempt logs"))?;
        Ok(rows.iter().map(log_from_row).collect())
    }
}

pub(crate) fn log_from_row(r: &tokio_postgres::Row) -> AttemptLog {
    AttemptLog {
        run: RunId(r.get(0)),
        action: ActionId(r.get::<_, i64>(1) as u64),
        attempt: r.get::<_, i64>(2) as u32,
        lease: r.get::<_, i64>(3) as u64,
        worker: r.get(4),
        pid: r.get::<_, i64>(5) as u32,
        env: r.get(6),
        task: r.get(7),
        started_at: r.get(8),
        ended_at: r.get(9),
        ok: r.get(10),
        text: r.get(11),
        dropped: r.get::<_, i64>(12) as u64,
        overlapping: r.get::<_, i64>(13) as u32,
    }
}
