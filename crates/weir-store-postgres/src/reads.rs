//! Reads, run creation, claims and settings, on the pooled connections.

use weir_core::{ActionId, ActionStatus};
use weir_store::columns::payload_to_columns;
use weir_store::{
    ActionRecord, AttemptRecord, CacheEntry, Error, NewRun, Page, Result, RunFilter, RunId,
    RunRecord, RunStatus, RunSummary, now_us,
};

use crate::Inner;
use crate::rows::{
    ACTION_COLUMNS, CACHE_COLUMNS, RUN_COLUMNS, action_from_row, cache_from_row, run_from_row,
};

impl Inner {
    pub(crate) async fn create_run(&self, run: &NewRun) -> Result<RunRecord> {
        let e = self.err("creating a run");
        let mut client = self.client().await?;
        let (blob, reference) = payload_to_columns(&run.inputs);
        let now = now_us();
        let tx = client.transaction().await.map_err(&e)?;
        let id: Option<i64> = tx
            .query_opt(
                "INSERT INTO runs(name, task, status, created_at, inputs, inputs_ref, context, owner, epoch, owner_seen_at)
                 VALUES($1, $2, 'running', $3, $4, $5, $6, $7, 1, $3) ON CONFLICT(name) DO NOTHING RETURNING id",
                &[&run.name, &run.task, &now, &blob, &reference, &run.context.to_string(), &run.owner],
            )
            .await
            .map_err(&e)?
            .map(|r| r.get(0));
        let Some(id) = id else {
            return Err(Error::RunExists(run.name.clone()));
        };
        tx.execute(
            "INSERT INTO actions(run, id, parent, task, kind, status, queued_at, inputs, inputs_ref)
             VALUES($1, 0, 0, $2, 0, $3, $4, $5, $6)",
            &[&id, &run.task, &ActionStatus::Queued.code(), &now, &blob, &reference],
        )
        .await
        .map_err(&e)?;
        if let Some(queue) = &run.queue {
            tx.execute(
                "INSERT INTO queue(run, action, attempt, env, task, enqueued_at)
                 VALUES($1, 0, 1, $2, $3, $4)",
                &[&id, queue, &run.task, &now],
            )
            .await
            .map_err(&e)?;
        }
        let row = tx
            .query_one(
                &format!("SELECT {RUN_COLUMNS} FROM runs WHERE id = $1"),
                &[&id],
            )
            .await
            .map_err(&e)?;
        tx.commit().await.map_err(&e)?;
        Ok(run_from_row(&row))
    }

    pub(crate) async fn run(&self, id: RunId) -> Result<RunRecord> {
        let client = self.client().await?;
        client
            .query_opt(
                &format!("SELECT {RUN_COLUMNS} FROM runs WHERE id = $1"),
                &[&id.0],
            )
            .await
            .map_err(self.err("reading a run"))?
            .map(|r| run_from_row(&r))
            .ok_or_else(|| Error::UnknownRun(format!("#{id}")))
    }

    pub(crate) async fn ended_among(&self, run: RunId, ids: &[ActionId]) -> Result<Vec<ActionId>> {
        let client = self.client().await?;
        let ids: Vec<i64> = ids.iter().map(|i| i.as_i64()).collect();
        let ended: Vec<i64> = [
            ActionStatus::Succeeded,
            ActionStatus::Failed,
            ActionStatus::Cancelled,
        ]
        .iter()
        .map(|s| s.code())
        .collect();
        let rows = client
            .query(
                "SELECT id FROM actions WHERE run = $1 AND id = ANY($2) AND status = ANY($3)",
                &[&run.0, &ids, &ended],
            )
            .await
            .map_err(self.err("reading action statuses"))?;
        Ok(rows
            .iter()
            .map(|r| ActionId(r.get::<_, i64>(0) as u64))
            .collect())
    }

    pub(crate) async fn run_by_name(&self, name: &str) -> Result<RunRecord> {
        let client = self.client().await?;
        client
            .query_opt(
                &format!("SELECT {RUN_COLUMNS} FROM runs WHERE name = $1"),
                &[&name],
            )
            .await
            .map_err(self.err("reading a run"))?
            .map(|r| run_from_row(&r))
            .ok_or_else(|| Error::UnknownRun(name.to_string()))
    }

    pub(crate) async fn list_runs(&self, filter: &RunFilter) -> Result<Vec<RunSummary>> {
        let e = self.err("listing runs");
        let client = self.client().await?;
        let rows = client
            .query(
                "SELECT id, name, task, status, created_at, ended_at FROM runs
                 WHERE ($1::text IS NULL OR status = $1) AND ($2::text IS NULL OR strpos(name, $2) > 0)
                   AND ($4::text IS NULL OR coalesce(context::jsonb ->> 'project', $5) = $4)
                   AND ($6::text IS NULL OR coalesce(context::jsonb ->> 'domain', $7) = $6)
                 ORDER BY id DESC LIMIT $3",
                &[
                    &filter.status.map(RunStatus::as_str),
                    &filter.name_contains,
                    &(filter.limit.unwrap_or(100) as i64),
                    &filter.project,
                    &weir_store::DEFAULT_PROJECT,
                    &filter.domain,
                    &weir_store::DEFAULT_DOMAIN,
                ],
            )
            .await
            .map_err(&e)?;
        let ids: Vec<i64> = rows.iter().map(|r| r.get(0)).collect();
        let mut out: Vec<RunSummary> = rows
            .iter()
            .map(|r| RunSummary {
                name: r.get(1),
                task: r.get(2),
                status: RunStatus::parse(r.get(3)).unwrap_or(RunStatus::Failed),
                created_at: r.get(4),
                ended_at: r.get(5),
                actions: Default::default(),
            })
            .collect();
        let counts = client
            .query(
                "SELECT run, status, count(*) FROM actions WHERE run = ANY($1) GROUP BY run, status",
                &[&ids],
            )
            .await
            .map_err(&e)?;
        for row in counts {
            let run: i64 = row.get(0);
            let code: i64 = row.get(1);
            let n: i64 = row.get(2);
            if let Some(i) = ids.iter().position(|id| *id == run) {
                let name = ActionStatus::from_code(code)
                    .map(|s| s.as_str())
                    .unwrap_or("unknown");
                out[i].actions.insert(name.to_string(), n as u64);
            }
        }
        Ok(out)
    }

    pub(crate) async fn list_actions(&self, run: RunId, page: Page) -> Result<Vec<ActionRecord>> {
        let client = self.client().await?;
        let rows = client
            .query(
                &format!(
                    "SELECT {ACTION_COLUMNS} FROM actions WHERE run = $1 ORDER BY seq LIMIT $2 OFFSET $3"
                ),
                &[&run.0, &(page.limit as i64), &(page.offset as i64)],
            )
            .await
            .map_err(self.err("listing actions"))?;
        Ok(rows.iter().map(action_from_row).collect())
    }

    pub(crate) async fn action(&self, run: RunId, id: ActionId) -> Result<Option<ActionRecord>> {
        let client = self.client().await?;
        let row = client
            .query_opt(
                &format!(
                    "SELECT {ACTION_COLUMNS}, inputs, inputs_ref, output, output_ref FROM actions WHERE run = $1 AND id = $2"
                ),
                &[&run.0, &id.as_i64()],
            )
            .await
            .map_err(self.err("reading an action"))?;
        Ok(row.map(|row| {
            let mut rec = action_from_row(&row);
            rec.inputs = weir_store::columns::payload_from_columns(row.get(13), row.get(14));
            rec.output = weir_store::columns::payload_from_columns(row.get(15), row.get(16));
            rec
        }))
    }

    pub(crate) async fn failed_attempts(
        &self,
        run: RunId,
        id: ActionId,
    ) -> Result<Vec<AttemptRecord>> {
        let client = self.client().await?;
        let rows = client
            .query(
                "SELECT attempt, started_at, ended_at, error, phases FROM attempts
                 WHERE run = $1 AND action = $2 ORDER BY attempt",
                &[&run.0, &id.as_i64()],
            )
            .await
            .map_err(self.err("reading failed attempts"))?;
        rows.iter()
            .map(|r| {
                let error: String = r.get(3);
                Ok(AttemptRecord {
                    attempt: r.get::<_, i64>(0) as u32,
                    started_at: r.get(1),
                    ended_at: r.get(2),
                    error: serde_json::from_str(&error).map_err(|e| {
                        Error::Corrupt(format!("a failed attempt of {run}/{id}: {e}"))
                    })?,
                    phases: r
                        .get::<_, Option<Vec<u8>>>(4)
                        .and_then(|b| weir_core::phases::Phases::decode(&b)),
                })
            })
            .collect()
    }

    pub(crate) async fn cache_lookup(
        &self,
        key: &str,
        scope: Option<(String, String)>,
    ) -> Result<Option<CacheEntry>> {
        let client = self.client().await?;
        let (project, domain) = match &scope {
            Some((p, d)) => (Some(p.as_str()), Some(d.as_str())),
            None => (None, None),
        };
        let row = client
            .query_opt(
                &format!(
                    "SELECT {CACHE_COLUMNS} FROM cache
                     WHERE key = $1 AND ($2::text IS NULL OR (project = $2 AND domain = $3)) LIMIT 1"
                ),
                &[&key, &project, &domain],
            )
            .await
            .map_err(self.err("reading the cache"))?;
        Ok(row.as_ref().map(cache_from_row))
    }

    pub(crate) async fn list_cache(
        &self,
        task: Option<String>,
        project: Option<String>,
        limit: u32,
    ) -> Result<Vec<CacheEntry>> {
        let client = self.client().await?;
        let rows = client
            .query(
                &format!(
                    "SELECT {CACHE_COLUMNS} FROM cache
                     WHERE ($1::text IS NULL OR task = $1) AND ($3::text IS NULL OR project = $3)
                     ORDER BY created_at DESC LIMIT $2"
                ),
                &[&task, &(limit as i64), &project],
            )
            .await
            .map_err(self.err("listing the cache"))?;
        Ok(rows.iter().map(cache_from_row).collect())
    }

    pub(crate) async fn clear_cache(&self, task: Option<String>) -> Result<u64> {
        let client = self.client().await?;
        client
            .execute(
                "DELETE FROM cache WHERE $1::text IS NULL OR task = $1",
                &[&task],
            )
            .await
            .map_err(self.err("clearing the cache"))
    }

    /// Compare and set on the run's epoch; the new epoch.
    pub(crate) async fn claim(&self, run: RunId, owner: &str, seen_epoch: u64) -> Result<u64> {
        let e = self.err("claiming a run");
        let client = self.client().await?;
        let won = client
            .query_opt(
                "UPDATE runs SET owner = $2, epoch = epoch + 1, owner_seen_at = $4, status = 'running',
                   ended_at = NULL, error = NULL
                 WHERE id = $1 AND epoch = $3 RETURNING epoch",
                &[&run.0, &owner, &(seen_epoch as i64), &now_us()],
            )
            .await
            .map_err(&e)?;
        if let Some(row) = won {
            return Ok(row.get::<_, i64>(0) as u64);
        }
        let now = client
            .query_opt(
                "SELECT name, owner, epoch FROM runs WHERE id = $1",
                &[&run.0],
            )
            .await
            .map_err(&e)?;
        match now {
            Some(row) => Err(Error::RunOwned {
                run: row.get(0),
                owner: row.get(1),
                epoch: row.get::<_, i64>(2) as u64,
            }),
            None => Err(Error::UnknownRun(run.to_string())),
        }
    }

    pub(crate) async fn setting(&self, key: &str) -> Result<Option<String>> {
        let client = self.client().await?;
        Ok(client
            .query_opt("SELECT value FROM settings WHERE key = $1", &[&key])
            .await
            .map_err(self.err("reading a setting"))?
            .map(|r| r.get(0)))
    }

    pub(crate) async fn set_setting(&self, key: &str, value: &str) -> Result<()> {
        let client = self.client().await?;
        client
            .execute(
                "INSERT INTO settings(key, value) VALUES($1, $2)
                 ON CONFLICT(key) DO UPDATE SET value = excluded.value",
                &[&key, &value],
            )
            .await
            .map(|_| ())
            .map_err(self.err("writing a setting"))
    }
}
