//! The read queries, run on the read connection.

use rusqlite::{OptionalExtension, params};
use weir_core::{ActionId, ActionStatus};

use super::SqliteStore;
use super::rows::{
    ACTION_COLUMNS, RUN_COLUMNS, action_from_row, cache_from_row, join, run_from_row, split,
};
use super::sql_err;
use crate::{
    ActionRecord, AttemptRecord, CacheEntry, Error, NewRun, Page, Result, RunFilter, RunId,
    RunRecord, RunStatus, RunSummary, Store, now_us,
};

impl SqliteStore {
    pub(super) fn create_run_now(&self, run: &NewRun) -> Result<RunRecord> {
        let conn = self.write_conn();
        let e = sql_err(&self.path);
        let (blob, reference) = split(&run.inputs);
        let now = now_us();
        let tx = conn.unchecked_transaction().map_err(&e)?;
        let inserted = tx
            .prepare_cached(
                "INSERT INTO runs(name, task, status, created_at, inputs, inputs_ref, context, owner, epoch, owner_seen_at)
                 VALUES(?1, ?2, 'running', ?3, ?4, ?5, ?6, ?7, 1, ?3) ON CONFLICT(name) DO NOTHING",
            )
            .and_then(|mut st| {
                st.execute(params![
                    run.name,
                    run.task,
                    now,
                    blob,
                    reference,
                    run.context.to_string(),
                    run.owner
                ])
            });
        if inserted.map_err(&e)? == 0 {
            return Err(Error::RunExists(run.name.clone()));
        }
        let id = tx.last_insert_rowid();
        tx.prepare_cached(
            "INSERT INTO actions(run, id, parent, task, kind, status, queued_at, inputs, inputs_ref) VALUES(?1, 0, 0, ?2, 0, ?3, ?4, ?5, ?6)",
        )
        .and_then(|mut st| {
            st.execute(params![id, run.task, ActionStatus::Queued.code(), now, blob, reference])
        })
        .map_err(&e)?;
        if let Some(queue) = &run.queue {
            tx.prepare_cached(
                "INSERT INTO queue(run, action, attempt, env, task, enqueued_at)
                 VALUES(?1, 0, 1, ?2, ?3, ?4)",
            )
            .and_then(|mut st| st.execute(params![id, queue, run.task, now]))
            .map_err(&e)?;
        }
        tx.commit().map_err(&e)?;
        conn.prepare_cached(&format!("SELECT {RUN_COLUMNS} FROM runs WHERE id = ?1"))
            .and_then(|mut st| st.query_row([id], run_from_row))
            .map_err(&e)
    }

    pub(super) fn run_now(&self, id: RunId) -> Result<RunRecord> {
        let conn = self.reader();
        conn.prepare_cached(&format!("SELECT {RUN_COLUMNS} FROM runs WHERE id = ?1"))
            .and_then(|mut st| st.query_row([id], run_from_row))
            .optional()
            .map_err(sql_err(&self.path))?
            .ok_or_else(|| Error::UnknownRun(format!("#{id}")))
    }

    pub(super) fn ended_among_now(&self, run: RunId, ids: &[ActionId]) -> Result<Vec<ActionId>> {
        let conn = self.reader();
        let e = sql_err(&self.path);
        let mut st = conn
            .prepare_cached("SELECT status FROM actions WHERE run = ?1 AND id = ?2")
            .map_err(&e)?;
        let mut ended = Vec::new();
        for id in ids {
            let status: Option<i64> = st
                .query_row(params![run, id.as_i64()], |r| r.get(0))
                .optional()
                .map_err(&e)?;
            if status
                .and_then(ActionStatus::from_code)
                .is_some_and(ActionStatus::is_terminal)
            {
                ended.push(*id);
            }
        }
        Ok(ended)
    }

    pub(super) fn run_by_name_now(&self, name: &str) -> Result<RunRecord> {
        let conn = self.reader();
        conn.prepare_cached(&format!("SELECT {RUN_COLUMNS} FROM runs WHERE name = ?1"))
            .and_then(|mut st| st.query_row([name], run_from_row))
            .optional()
            .map_err(sql_err(&self.path))?
            .ok_or_else(|| Error::UnknownRun(name.to_string()))
    }

    pub(super) fn list_runs_now(&self, filter: &RunFilter) -> Result<Vec<RunSummary>> {
        let conn = self.reader();
        let e = sql_err(&self.path);
        let mut st = conn
            .prepare(
                "SELECT id, name, task, status, created_at, ended_at FROM runs
                 WHERE (?1 IS NULL OR status = ?1) AND (?2 IS NULL OR instr(name, ?2) > 0)
                   AND (?4 IS NULL OR ifnull(json_extract(context, '$.project'), ?5) = ?4)
                   AND (?6 IS NULL OR ifnull(json_extract(context, '$.domain'), ?7) = ?6)
                 ORDER BY id DESC LIMIT ?3",
            )
            .map_err(&e)?;
        let rows = st
            .query_map(
                params![
                    filter.status.map(|s| s.as_str()),
                    filter.name_contains,
                    filter.limit.unwrap_or(100),
                    filter.project,
                    crate::DEFAULT_PROJECT,
                    filter.domain,
                    crate::DEFAULT_DOMAIN,
                ],
                |r| {
                    Ok((
                        r.get::<_, i64>(0)?,
                        RunSummary {
                            name: r.get(1)?,
                            task: r.get(2)?,
                            status: RunStatus::parse(&r.get::<_, String>(3)?)
                                .unwrap_or(RunStatus::Failed),
                            created_at: r.get(4)?,
                            ended_at: r.get(5)?,
                            actions: Default::default(),
                        },
                    ))
                },
            )
            .map_err(&e)?
            .collect::<rusqlite::Result<Vec<_>>>()
            .map_err(&e)?;
        let mut counts = conn
            .prepare_cached("SELECT status, count(*) FROM actions WHERE run = ?1 GROUP BY status")
            .map_err(&e)?;
        let mut out = Vec::with_capacity(rows.len());
        for (id, mut summary) in rows {
            let per_status = counts
                .query_map([id], |r| Ok((r.get::<_, i64>(0)?, r.get::<_, i64>(1)?)))
                .map_err(&e)?
                .collect::<rusqlite::Result<Vec<_>>>()
                .map_err(&e)?;
            for (code, n) in per_status {
                let name = ActionStatus::from_code(code)
                    .map(|s| s.as_str())
                    .unwrap_or("unknown");
                summary.actions.insert(name.to_string(), n as u64);
            }
            out.push(summary);
        }
        Ok(out)
    }

    pub(super) fn list_actions_now(&self, run: RunId, page: Page) -> Result<Vec<ActionRecord>> {
        let conn = self.reader();
        let e = sql_err(&self.path);
        let mut st = conn
            .prepare_cached(&format!("SELECT {ACTION_COLUMNS} FROM actions WHERE run = ?1 ORDER BY seq LIMIT ?2 OFFSET ?3"))
            .map_err(&e)?;
        let rows = st
            .query_map(
                params![run, page.limit, page.offset as i64],
                action_from_row,
            )
            .map_err(&e)?
            .collect::<rusqlite::Result<Vec<_>>>()
            .map_err(&e)?;
        Ok(rows)
    }

    pub(super) fn action_now(&self, run: RunId, id: ActionId) -> Result<Option<ActionRecord>> {
        let conn = self.reader();
        let e = sql_err(&self.path);
        let mut st = conn
            .prepare_cached(&format!("SELECT {ACTION_COLUMNS}, inputs, inputs_ref, output, output_ref FROM actions WHERE run = ?1 AND id = ?2"))
            .map_err(&e)?;
        st.query_row(params![run, id.as_i64()], |row| {
            let mut rec = action_from_row(row)?;
            rec.inputs = join(row.get(13)?, row.get(14)?);
            rec.output = join(row.get(15)?, row.get(16)?);
            Ok(rec)
        })
        .optional()
        .map_err(&e)
    }

    pub(super) fn failed_attempts_now(
        &self,
        run: RunId,
        id: ActionId,
    ) -> Result<Vec<AttemptRecord>> {
        let conn = self.reader();
        let e = sql_err(&self.path);
        let mut st = conn
            .prepare_cached("SELECT attempt, started_at, ended_at, error, phases FROM attempts WHERE run = ?1 AND action = ?2 ORDER BY attempt")
            .map_err(&e)?;
        let rows = st
            .query_map(params![run, id.as_i64()], |r| {
                let error: String = r.get(3)?;
                Ok(AttemptRecord {
                    attempt: r.get(0)?,
                    started_at: r.get(1)?,
                    ended_at: r.get(2)?,
                    error: serde_json::from_str(&error).map_err(|err| {
                        rusqlite::Error::FromSqlConversionFailure(
                            3,
                            rusqlite::types::Type::Text,
                            Box::new(err),
                        )
                    })?,
                    phases: r
                        .get::<_, Option<Vec<u8>>>(4)?
                        .and_then(|b| weir_core::phases::Phases::decode(&b)),
                })
            })
            .map_err(&e)?
            .collect::<rusqlite::Result<Vec<_>>>()
            .map_err(&e)?;
        Ok(rows)
    }

    pub(super) fn cache_lookup_now(
        &self,
        key: &str,
        scope: Option<(&str, &str)>,
    ) -> Result<Option<CacheEntry>> {
        let conn = self.reader();
        let e = sql_err(&self.path);
        let mut st = conn
            .prepare_cached(
                "SELECT key, project, domain, task, version, output, output_ref, created_at FROM cache
                 WHERE key = ?1 AND (?2 IS NULL OR (project = ?2 AND domain = ?3)) LIMIT 1",
            )
            .map_err(&e)?;
        st.query_row(
            params![key, scope.map(|s| s.0), scope.map(|s| s.1)],
            cache_from_row,
        )
        .optional()
        .map_err(&e)
    }

    pub(super) fn list_cache_now(
        &self,
        task: Option<&str>,
        project: Option<&str>,
        limit: u32,
    ) -> Result<Vec<CacheEntry>> {
        let conn = self.reader();
        let e = sql_err(&self.path);
        let mut st = conn
            .prepare_cached(
                "SELECT key, project, domain, task, version, output, output_ref, created_at FROM cache
                 WHERE (?1 IS NULL OR task = ?1) AND (?3 IS NULL OR project = ?3)
                 ORDER BY created_at DESC LIMIT ?2",
            )
            .map_err(&e)?;
        st.query_map(params![task, limit, project], cache_from_row)
            .map_err(&e)?
            .collect::<rusqlite::Result<Vec<_>>>()
            .map_err(&e)
    }

    pub(super) fn clear_cache_now(&self, task: Option<&str>) -> Result<u64> {
        self.sync()
            .wait()
            .map_err(|e| Error::Corrupt(e.to_string()))?;
        let conn = self.reader();
        let n = conn
            .execute(
                "DELETE FROM cache WHERE ?1 IS NULL OR task = ?1",
                params![task],
            )
            .map_err(sql_err(&self.path))?;
        Ok(n as u64)
    }

    pub(super) fn claim_now(&self, run: RunId, owner: &str, seen_epoch: u64) -> Result<u64> {
        let conn = self.write_conn();
        let e = sql_err(&self.path);
        let changed = conn
            .execute(
                "UPDATE runs SET owner = ?2, epoch = epoch + 1, owner_seen_at = ?4, status = 'running',
                   ended_at = NULL, error = NULL
                 WHERE id = ?1 AND epoch = ?3",
                params![run, owner, seen_epoch as i64, crate::now_us()],
            )
            .map_err(&e)?;
        let (name, now_owner, epoch): (String, String, i64) = conn
            .query_row(
                "SELECT name, owner, epoch FROM runs WHERE id = ?1",
                [run],
                |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
            )
            .map_err(&e)?;
        if changed == 0 {
            return Err(Error::RunOwned {
                run: name,
                owner: now_owner,
                epoch: epoch as u64,
            });
        }
        Ok(epoch as u64)
    }

    pub(super) fn setting_now(&self, key: &str) -> Result<Option<String>> {
        let conn = self.reader();
        conn.query_row("SELECT value FROM settings WHERE key = ?1", [key], |r| {
            r.get(0)
        })
        .optional()
        .map_err(sql_err(&self.path))
    }

    pub(super) fn set_setting_now(&self, key: &str, value: &str) -> Result<()> {
        let conn = self.reader();
        conn.execute(
            "INSERT INTO settings(key, value) VALUES(?1, ?2)
             ON CONFLICT(key) DO UPDATE SET value = excluded.value",
            params![key, value],
        )
        .map(|_| ())
        .map_err(sql_err(&self.path))
    }
}
