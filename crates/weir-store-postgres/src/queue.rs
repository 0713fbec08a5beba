//! The work queue on PostgreSQL: leases taken with `FOR UPDATE SKIP LOCKED` (two stores never
//! lease the same attempt, nor wait for each other), lease ids from the sequence `lease_seq`
//! (never reused: fencing tokens), completion by (lease, worker) in one statement.

use tokio_postgres::Row;
use weir_core::ActionId;
use weir_store::{Cap, Lease, QueuedAttempt, Reaped, Result, RunId, WorkerRecord};

use crate::Inner;
use crate::conn::Conn;

fn attempt_from(r: &Row) -> QueuedAttempt {
    QueuedAttempt {
        run: RunId(r.get(0)),
        action: ActionId(r.get::<_, i64>(1) as u64),
        attempt: r.get::<_, i64>(2) as u32,
        env: r.get(3),
        task: r.get(4),
    }
}

impl Inner {
    pub(crate) async fn enqueue(&self, a: &QueuedAttempt, now: i64) -> Result<()> {
        let client = self.client().await?;
        client
            .execute(
                "INSERT INTO queue(run, action, attempt, env, task, enqueued_at)
                 VALUES($1, $2, $3, $4, $5, $6)
                 ON CONFLICT(run, action) DO UPDATE SET attempt = excluded.attempt,
                   env = excluded.env, task = excluded.task, enqueued_at = excluded.enqueued_at,
                   seq = nextval('queue_seq'), lease = NULL, worker = NULL, expires_at = NULL,
                   system_retries = 0",
                &[
                    &a.run.0,
                    &a.action.as_i64(),
                    &(a.attempt as i64),
                    &a.env,
                    &a.task,
                    &now,
                ],
            )
            .await
            .map(|_| ())
            .map_err(self.err("queueing an attempt"))
    }

    pub(crate) async fn lease(
        &self,
        worker: &str,
        env: &str,
        max: u32,
        now: i64,
        ttl_us: i64,
    ) -> Result<Vec<Lease>> {
        let client = self.relaxed().await?;
        let expires_at = now + ttl_us;
        let rows = client
            .query(
                "WITH picked AS (
                   SELECT run, action FROM queue WHERE env = $1 AND lease IS NULL AND enqueued_at <= $5
                   ORDER BY enqueued_at, seq LIMIT $2 FOR UPDATE SKIP LOCKED)
                 UPDATE queue q SET lease = nextval('lease_seq'), worker = $3, expires_at = $4
                 FROM picked WHERE q.run = picked.run AND q.action = picked.action
                 RETURNING q.run, q.action, q.attempt, q.env, q.task, q.system_retries, q.lease,
                   q.enqueued_at, q.seq",
                &[&env, &(max as i64), &worker, &expires_at, &now],
            )
            .await
            .map_err(self.err("leasing attempts"))?;
        let mut leased: Vec<(i64, i64, Lease)> = rows
            .iter()
            .map(|r| {
                (
                    r.get::<_, i64>(7),
                    r.get::<_, i64>(8),
                    Lease {
                        id: r.get::<_, i64>(6) as u64,
                        worker: worker.to_string(),
                        expires_at,
                        system_retries: r.get::<_, i64>(5) as u32,
                        attempt: attempt_from(r),
                    },
                )
            })
            .collect();
        // Oldest first.
        leased.sort_by_key(|(at, seq, _)| (*at, *seq));
        Ok(leased.into_iter().map(|(_, _, l)| l).collect())
    }

    pub(crate) async fn queue_entry(
        &self,
        run: RunId,
        action: ActionId,
    ) -> Result<Option<weir_store::QueueEntry>> {
        let client = self.client().await?;
        let row = client
            .query_opt(
                "SELECT run, action, attempt, env, task, lease, worker, system_retries FROM queue
                 WHERE run = $1 AND action = $2",
                &[&run.0, &action.as_i64()],
            )
            .await
            .map_err(self.err("reading the queue"))?;
        Ok(row.map(|r| {
            let lease: Option<i64> = r.get(5);
            let worker: Option<String> = r.get(6);
            weir_store::QueueEntry {
                attempt: attempt_from(&r),
                lease: lease.zip(worker).map(|(l, w)| (l as u64, w)),
                system_retries: r.get::<_, i64>(7) as u32,
            }
        }))
    }

    pub(crate) async fn queue_metrics(&self) -> Result<Vec<weir_store::QueueDepth>> {
        let client = self.client().await?;
        let rows = client
            .query(
                "SELECT env, count(*) FILTER (WHERE lease IS NULL),
                   count(*) FILTER (WHERE lease IS NOT NULL) FROM queue GROUP BY env ORDER BY env",
                &[],
            )
            .await
            .map_err(self.err("reading queue depths"))?;
        Ok(rows
            .iter()
            .map(|r| weir_store::QueueDepth {
                queue: r.get(0),
                waiting: r.get::<_, i64>(1) as u64,
                leased: r.get::<_, i64>(2) as u64,
            })
            .collect())
    }

    pub(crate) async fn release_unreceived(&self, worker: &str, received: u64) -> Result<u64> {
        let client = self.relaxed().await?;
        client
            .execute(
                "UPDATE queue SET lease = NULL, worker = NULL, expires_at = NULL
                 WHERE worker = $1 AND lease > $2",
                &[&worker, &(received as i64)],
            )
            .await
            .map_err(self.err("putting back unreceived leases"))
    }

    pub(crate) async fn lease_with_actions(
        &self,
        worker: &str,
        env: &str,
        max: u32,
        (now, ttl_us): (i64, i64),
        received: Option<u64>,
        cap: Option<&Cap>,
    ) -> Result<Vec<(Lease, Option<weir_store::ActionRecord>)>> {
        let client = self.relaxed().await?;
        let Some(cap) = cap else {
            return self
                .lease_rows(&client, worker, env, max, (now, ttl_us), received)
                .await;
        };
        // Leases of a capped group one at a time (an advisory lock until the commit), so the
        // count, taken after the lock, sees every lease granted before.
        client
            .batch_execute("BEGIN")
            .await
            .map_err(self.err("leasing attempts"))?;
        let capped = async {
            client
                .execute(
                    "SELECT pg_advisory_xact_lock(hashtextextended($1, 7))",
                    &[&cap.group],
                )
                .await?;
            let leased: i64 = client
                .query(
                    "SELECT count(*) FROM queue WHERE starts_with(env, $1) AND lease IS NOT NULL",
                    &[&cap.group],
                )
                .await?[0]
                .get(0);
            Ok::<_, tokio_postgres::Error>((cap.limit as i64 - leased).clamp(0, max as i64) as u32)
        }
        .await;
        let result = match capped {
            Ok(max) => {
                self.lease_rows(&client, worker, env, max, (now, ttl_us), received)
                    .await
            }
            Err(e) => Err(self.err("leasing attempts")(e)),
        };
        let end = if result.is_ok() { "COMMIT" } else { "ROLLBACK" };
        client
            .batch_execute(end)
            .await
            .map_err(self.err("leasing attempts"))?;
        result
    }

    /// The lease statement of [`Inner::lease_with_actions`].
    async fn lease_rows(
        &self,
        client: &Conn,
        worker: &str,
        env: &str,
        max: u32,
        (now, ttl_us): (i64, i64),
        received: Option<u64>,
    ) -> Result<Vec<(Lease, Option<weir_store::ActionRecord>)>> {
        let expires_at = now + ttl_us;
        let cols: Vec<String> = crate::rows::ACTION_COLUMNS
            .split(", ")
            .map(|c| format!("a.{c}"))
            .collect();
        let sql = format!(
            "WITH released AS (
               UPDATE queue SET lease = NULL, worker = NULL, expires_at = NULL
               WHERE worker = $3 AND lease > $6),
             picked AS (
               SELECT run, action FROM queue WHERE env = $1 AND lease IS NULL AND enqueued_at <= $5
               ORDER BY enqueued_at, seq LIMIT $2 FOR UPDATE SKIP LOCKED),
             leased AS (
               UPDATE queue q SET lease = nextval('lease_seq'), worker = $3, expires_at = $4
               FROM picked WHERE q.run = picked.run AND q.action = picked.action
               RETURNING q.run, q.action, q.attempt, q.env, q.task, q.system_retries, q.lease,
                 q.enqueued_at, q.seq)
             SELECT {}, a.inputs, a.inputs_ref, l.run, l.action, l.attempt, l.env, l.task,
               l.system_retries, l.lease
             FROM leased l LEFT JOIN actions a ON a.run = l.run AND a.id = l.action
             ORDER BY l.enqueued_at, l.seq",
            cols.join(", ")
        );
        let rows = client
            .query(
                &sql,
                &[
                    &env,
                    &(max as i64),
                    &worker,
                    &expires_at,
                    &now,
                    &received.map(|r| r as i64),
                ],
            )
            .await
            .map_err(self.err("leasing attempts"))?;
        Ok(rows
            .iter()
            .map(|r| {
                let rec = r.get::<_, Option<i64>>(0).map(|_| {
                    let mut rec = crate::rows::action_from_row(r);
                    rec.inputs = weir_store::columns::payload_from_columns(r.get(13), r.get(14));
                    rec
                });
                let lease = Lease {
                    id: r.get::<_, i64>(21) as u64,
                    worker: worker.to_string(),
                    expires_at,
                    system_retries: r.get::<_, i64>(20) as u32,
                    attempt: QueuedAttempt {
                        run: RunId(r.get(15)),
                        action: ActionId(r.get::<_, i64>(16) as u64),
                        attempt: r.get::<_, i64>(17) as u32,
                        env: r.get(18),
                        task: r.get(19),
                    },
                };
                (lease, rec)
            })
            .collect())
    }

    pub(crate) async fn queue_entries(
        &self,
        keys: &[(RunId, ActionId)],
    ) -> Result<Vec<weir_store::QueueEntry>> {
        let client = self.client().await?;
        let runs: Vec<i64> = keys.iter().map(|(r, _)| r.0).collect();
        let actions: Vec<i64> = keys.iter().map(|(_, a)| a.as_i64()).collect();
        let rows = client
            .query(
                "SELECT q.run, q.action, q.attempt, q.env, q.task, q.lease, q.worker, q.system_retries
                 FROM queue q JOIN unnest($1::bigint[], $2::bigint[]) AS k(run, action)
                   ON q.run = k.run AND q.action = k.action",
                &[&runs, &actions],
            )
            .await
            .map_err(self.err("reading the queue"))?;
        Ok(rows
            .iter()
            .map(|r| {
                let lease: Option<i64> = r.get(5);
                let worker: Option<String> = r.get(6);
                weir_store::QueueEntry {
                    attempt: attempt_from(r),
                    lease: lease.zip(worker).map(|(l, w)| (l as u64, w)),
                    system_retries: r.get::<_, i64>(7) as u32,
                }
            })
            .collect())
    }

    pub(crate) async fn heartbeat(&self, worker: &str, now: i64, ttl_us: i64) -> Result<u64> {
        let e = self.err("recording a heartbeat");
        let mut client = self.relaxed().await?;
        let tx = client.transaction().await.map_err(&e)?;
        tx.execute(
            "UPDATE workers SET seen_at = $2 WHERE id = $1",
            &[&worker, &now],
        )
        .await
        .map_err(&e)?;
        let n = tx
            .execute(
                "UPDATE queue SET expires_at = $2 WHERE worker = $1 AND lease IS NOT NULL",
                &[&worker, &(now + ttl_us)],
            )
            .await
            .map_err(&e)?;
        tx.commit().await.map_err(&e)?;
        Ok(n)
    }

    pub(crate) async fn complete(&self, lease: u64, worker: &str) -> Result<Option<QueuedAttempt>> {
        let client = self.client().await?;
        let row = client
            .query_opt(
                "DELETE FROM queue WHERE lease = $1 AND worker = $2
                 RETURNING run, action, attempt, env, task",
                &[&(lease as i64), &worker],
            )
            .await
            .map_err(self.err("completing an attempt"))?;
        Ok(row.as_ref().map(attempt_from))
    }

    pub(crate) async fn reap(&self, now: i64, max_system_retries: u32) -> Result<Reaped> {
        let e = self.err("reaping expired leases");
        let mut client = self.relaxed().await?;
        let tx = client.transaction().await.map_err(&e)?;
        let max = max_system_retries as i64;
        let gave_up = tx
            .query(
                "DELETE FROM queue WHERE lease IS NOT NULL AND expires_at <= $1
                   AND system_retries + 1 > $2
                 RETURNING run, action, attempt, env, task, enqueued_at, seq",
                &[&now, &max],
            )
            .await
            .map_err(&e)?;
        let requeued = tx
            .query(
                "UPDATE queue SET lease = NULL, worker = NULL, expires_at = NULL,
                   system_retries = system_retries + 1
                 WHERE lease IS NOT NULL AND expires_at <= $1
                 RETURNING run, action, attempt, env, task, enqueued_at, seq",
                &[&now],
            )
            .await
            .map_err(&e)?;
        tx.commit().await.map_err(&e)?;
        let oldest_first = |rows: Vec<Row>| {
            let mut v: Vec<_> = rows
                .iter()
                .map(|r| ((r.get::<_, i64>(5), r.get::<_, i64>(6)), attempt_from(r)))
                .collect();
            v.sort_by_key(|(k, _)| *k);
            v.into_iter().map(|(_, a)| a).collect()
        };
        Ok(Reaped {
            requeued: oldest_first(requeued),
            gave_up: oldest_first(gave_up),
        })
    }

    pub(crate) async fn register_worker(&self, w: &WorkerRecord) -> Result<()> {
        let client = self.client().await?;
        client
            .execute(
                "INSERT INTO workers(id, env, version, registered_at, seen_at) VALUES($1, $2, $3, $4, $5)
                 ON CONFLICT(id) DO UPDATE SET env = excluded.env, version = excluded.version,
                   seen_at = excluded.seen_at",
                &[&w.id, &w.env, &w.version, &w.registered_at, &w.seen_at],
            )
            .await
            .map(|_| ())
            .map_err(self.err("registering a worker"))
    }

    pub(crate) async fn workers(&self) -> Result<Vec<WorkerRecord>> {
        let client = self.client().await?;
        let rows = client
            .query(
                "SELECT id, env, version, registered_at, seen_at FROM workers ORDER BY registered_at, id",
                &[],
            )
            .await
            .map_err(self.err("listing workers"))?;
        Ok(rows
            .iter()
            .map(|r| WorkerRecord {
                id: r.get(0),
                env: r.get(1),
                version: r.get(2),
                registered_at: r.get(3),
                seen_at: r.get(4),
            })
            .collect())
    }
}
