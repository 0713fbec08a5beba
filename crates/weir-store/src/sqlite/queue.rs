//! The work queue on SQLite: each operation is one `BEGIN IMMEDIATE` transaction, so two
//! stores (two processes) never lease the same attempt; lease ids come from a counter in
//! `meta` and are never reused, which is what makes them fencing tokens.

use rusqlite::{Connection, OptionalExtension, Transaction, TransactionBehavior, params};
use weir_core::ActionId;

use super::{SqliteStore, sql_err};
use crate::{Lease, QueuedAttempt, Reaped, Result, WorkerRecord};

fn attempt_from(r: &rusqlite::Row<'_>) -> rusqlite::Result<QueuedAttempt> {
    Ok(QueuedAttempt {
        run: r.get(0)?,
        action: ActionId(r.get::<_, i64>(1)? as u64),
        attempt: r.get(2)?,
        env: r.get(3)?,
        task: r.get(4)?,
    })
}

impl SqliteStore {
    fn immediate<R>(&self, f: impl FnOnce(&Transaction<'_>) -> rusqlite::Result<R>) -> Result<R> {
        let mut conn = self.reader();
        let conn: &mut Connection = &mut conn;
        let e = sql_err(&self.path);
        let tx = conn
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .map_err(&e)?;
        let r = f(&tx).map_err(&e)?;
        tx.commit().map_err(&e)?;
        Ok(r)
    }

    pub(super) fn enqueue_now(&self, a: &QueuedAttempt, now: i64) -> Result<()> {
        self.immediate(|tx| {
            tx.execute(
                "INSERT OR REPLACE INTO queue(run, action, attempt, env, task, enqueued_at)
                 VALUES(?1, ?2, ?3, ?4, ?5, ?6)",
                params![a.run, a.action.as_i64(), a.attempt, a.env, a.task, now],
            )
            .map(|_| ())
        })
    }

    pub(super) fn lease_now(
        &self,
        worker: &str,
        env: &str,
        max: u32,
        now: i64,
        ttl_us: i64,
    ) -> Result<Vec<Lease>> {
        self.immediate(|tx| {
            let mut pick = tx.prepare_cached(
                "SELECT run, action, attempt, env, task, system_retries FROM queue
                 WHERE env = ?1 AND lease IS NULL AND enqueued_at <= ?3
                 ORDER BY enqueued_at, rowid LIMIT ?2",
            )?;
            let picked = pick
                .query_map(params![env, max, now], |r| {
                    Ok((attempt_from(r)?, r.get::<_, u32>(5)?))
                })?
                .collect::<rusqlite::Result<Vec<_>>>()?;
            let mut next = tx.prepare_cached(
                "INSERT INTO meta(key, value) VALUES('lease_seq', 1)
                 ON CONFLICT(key) DO UPDATE SET value = value + 1 RETURNING value",
            )?;
            let mut assign = tx.prepare_cached(
                "UPDATE queue SET lease = ?3, worker = ?4, expires_at = ?5
                 WHERE run = ?1 AND action = ?2 AND lease IS NULL",
            )?;
            let mut leases = Vec::with_capacity(picked.len());
            for (attempt, system_retries) in picked {
                let id: i64 = next.query_row([], |r| r.get(0))?;
                let expires_at = now + ttl_us;
                assign.execute(params![
                    attempt.run,
                    attempt.action.as_i64(),
                    id,
                    worker,
                    expires_at
                ])?;
                leases.push(Lease {
                    id: id as u64,
                    worker: worker.to_string(),
                    expires_at,
                    system_retries,
                    attempt,
                });
            }
            Ok(leases)
        })
    }

    pub(super) fn heartbeat_now(&self, worker: &str, now: i64, ttl_us: i64) -> Result<u64> {
        self.immediate(|tx| {
            tx.execute(
                "UPDATE workers SET seen_at = ?2 WHERE id = ?1",
                params![worker, now],
            )?;
            let n = tx.execute(
                "UPDATE queue SET expires_at = ?2 WHERE worker = ?1 AND lease IS NOT NULL",
                params![worker, now + ttl_us],
            )?;
            Ok(n as u64)
        })
    }

    pub(super) fn queue_entry_now(
        &self,
        run: crate::RunId,
        action: ActionId,
    ) -> Result<Option<crate::QueueEntry>> {
        let conn = self.reader();
        conn.query_row(
            "SELECT run, action, attempt, env, task, lease, worker, system_retries FROM queue
             WHERE run = ?1 AND action = ?2",
            params![run, action.as_i64()],
            |r| {
                let lease: Option<i64> = r.get(5)?;
                let worker: Option<String> = r.get(6)?;
                Ok(crate::QueueEntry {
                    attempt: attempt_from(r)?,
                    lease: lease.zip(worker).map(|(l, w)| (l as u64, w)),
                    system_retries: r.get(7)?,
                })
            },
        )
        .optional()
        .map_err(sql_err(&self.path))
    }

    pub(super) fn queue_metrics_now(&self) -> Result<Vec<crate::QueueDepth>> {
        let conn = self.reader();
        let e = sql_err(&self.path);
        let mut st = conn
            .prepare_cached(
                "SELECT env, sum(lease IS NULL), sum(lease IS NOT NULL) FROM queue
                 GROUP BY env ORDER BY env",
            )
            .map_err(&e)?;
        let rows = st
            .query_map([], |r| {
                Ok(crate::QueueDepth {
                    queue: r.get(0)?,
                    waiting: r.get::<_, i64>(1)? as u64,
                    leased: r.get::<_, i64>(2)? as u64,
                })
            })
            .map_err(&e)?;
        rows.collect::<rusqlite::Result<Vec<_>>>().map_err(&e)
    }

    pub(super) fn release_unreceived_now(&self, worker: &str, received: u64) -> Result<u64> {
        self.immediate(|tx| {
            tx.execute(
                "UPDATE queue SET lease = NULL, worker = NULL, expires_at = NULL
                 WHERE worker = ?1 AND lease > ?2",
                params![worker, received as i64],
            )
            .map(|n| n as u64)
        })
    }

    pub(super) fn complete_now(&self, lease: u64, worker: &str) -> Result<Option<QueuedAttempt>> {
        self.immediate(|tx| {
            let found = tx
                .prepare_cached(
                    "SELECT run, action, attempt, env, task FROM queue WHERE lease = ?1 AND worker = ?2",
                )?
                .query_row(params![lease as i64, worker], attempt_from)
                .optional()?;
            if let Some(a) = &found {
                tx.execute(
                    "DELETE FROM queue WHERE run = ?1 AND action = ?2",
                    params![a.run, a.action.as_i64()],
                )?;
            }
            Ok(found)
        })
    }

    pub(super) fn reap_now(&self, now: i64, max_system_retries: u32) -> Result<Reaped> {
        self.immediate(|tx| {
            let expired = tx
                .prepare_cached(
                    "SELECT run, action, attempt, env, task, system_retries FROM queue
                     WHERE lease IS NOT NULL AND expires_at <= ?1",
                )?
                .query_map([now], |r| Ok((attempt_from(r)?, r.get::<_, u32>(5)?)))?
                .collect::<rusqlite::Result<Vec<_>>>()?;
            let mut reaped = Reaped::default();
            for (a, retries) in expired {
                let key = params![a.run, a.action.as_i64()];
                if retries + 1 > max_system_retries {
                    tx.execute("DELETE FROM queue WHERE run = ?1 AND action = ?2", key)?;
                    reaped.gave_up.push(a);
                } else {
                    tx.execute(
                        "UPDATE queue SET lease = NULL, worker = NULL, expires_at = NULL,
                           system_retries = system_retries + 1
                         WHERE run = ?1 AND action = ?2",
                        key,
                    )?;
                    reaped.requeued.push(a);
                }
            }
            Ok(reaped)
        })
    }

    pub(super) fn register_worker_now(&self, w: &WorkerRecord) -> Result<()> {
        self.immediate(|tx| {
            tx.execute(
                "INSERT INTO workers(id, env, version, registered_at, seen_at) VALUES(?1, ?2, ?3, ?4, ?5)
                 ON CONFLICT(id) DO UPDATE SET env = excluded.env, version = excluded.version,
                   seen_at = excluded.seen_at",
                params![w.id, w.env, w.version, w.registered_at, w.seen_at],
            )
            .map(|_| ())
        })
    }

    pub(super) fn workers_now(&self) -> Result<Vec<WorkerRecord>> {
        let conn = self.reader();
        let e = sql_err(&self.path);
        let mut st = conn
            .prepare_cached(
                "SELECT id, env, version, registered_at, seen_at FROM workers ORDER BY registered_at, id",
            )
            .map_err(&e)?;
        st.query_map([], |r| {
            Ok(WorkerRecord {
                id: r.get(0)?,
                env: r.get(1)?,
                version: r.get(2)?,
                registered_at: r.get(3)?,
                seen_at: r.get(4)?,
            })
        })
        .map_err(&e)?
        .collect::<rusqlite::Result<Vec<_>>>()
        .map_err(&e)
    }
}
