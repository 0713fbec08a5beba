//! Writes the PostgreSQL writer gathers into one statement each: runs of action starts or
//! ends, and queue writes (see `writer.rs`).

use std::collections::HashMap;

use weir_core::ActionStatus;
use weir_store::columns::payload_to_columns;
use weir_store::{RunId, WriteOp};

use crate::pipe::{Tx, params};
use crate::rows::failure_json;
use crate::writer::{Statements, apply};

/// Applies starts (or ends) of distinct actions with one statement.
pub(crate) async fn apply_group(
    tx: &mut Tx<'_>,
    statements: &mut Statements,
    group: &[&WriteOp],
) -> Result<(), tokio_postgres::Error> {
    match group {
        [] => Ok(()),
        [one] => apply(tx, statements, one).await,
        [WriteOp::StartAttempt { .. }, ..] => {
            let (mut run, mut id, mut attempt, mut at) = (vec![], vec![], vec![], vec![]);
            for op in group {
                if let WriteOp::StartAttempt {
                    run: r,
                    id: i,
                    attempt: a,
                    started_at,
                } = op
                {
                    run.push(r.0);
                    id.push(i.as_i64());
                    attempt.push(*a as i64);
                    at.push(*started_at);
                }
            }
            let st = statements
                .get(
                    tx.client(),
                    "UPDATE actions a SET status = $5, attempts = s.attempt, started_at = s.at
                     FROM unnest($1::bigint[], $2::bigint[], $3::bigint[], $4::bigint[])
                       AS s(run, id, attempt, at)
                     WHERE a.run = s.run AND a.id = s.id",
                )
                .await?;
            let running = ActionStatus::Running.code();
            tx.execute(st, params![&run, &id, &attempt, &at, &running]);
            Ok(())
        }
        _ => {
            let mut cols: (Vec<i64>, Vec<i64>, Vec<i64>) = (vec![], vec![], vec![]);
            let (mut blob, mut reference, mut error, mut hit, mut ended) =
                (vec![], vec![], vec![], vec![], vec![]);
            let mut phases_col: Vec<Option<Vec<u8>>> = vec![];
            for op in group {
                if let WriteOp::FinishAction {
                    run,
                    id,
                    status,
                    output,
                    error: e,
                    cache_hit,
                    ended_at,
                    phases,
                } = op
                {
                    let (b, r) = output
                        .as_ref()
                        .map(payload_to_columns)
                        .unwrap_or((None, None));
                    cols.0.push(run.0);
                    cols.1.push(id.as_i64());
                    cols.2.push(status.code());
                    blob.push(b);
                    reference.push(r);
                    error.push(failure_json(e));
                    hit.push(*cache_hit as i64);
                    ended.push(*ended_at);
                    phases_col.push(phases.as_ref().map(|p| p.encode()));
                }
            }
            let st = statements
                .get(
                    tx.client(),
                    "UPDATE actions a SET status = f.status, output = f.output,
                       output_ref = f.output_ref, error = f.error, cache_hit = f.hit,
                       ended_at = f.ended, phases = f.phases
                     FROM unnest($1::bigint[], $2::bigint[], $3::bigint[], $4::bytea[], $5::text[],
                       $6::text[], $7::bigint[], $8::bigint[], $9::bytea[])
                       AS f(run, id, status, output, output_ref, error, hit, ended, phases)
                     WHERE a.run = f.run AND a.id = f.id",
                )
                .await?;
            tx.execute(
                st,
                params![
                    &cols.0,
                    &cols.1,
                    &cols.2,
                    &blob,
                    &reference,
                    &error,
                    &hit,
                    &ended,
                    &phases_col
                ],
            );
            Ok(())
        }
    }
}

/// Applies queue writes with two statements: the dequeues (fenced by lease), then the
/// enqueues (the last of each action's wins). The order between the two kinds does not
/// change the result: a dequeue matches only the entry still under its lease.
pub(crate) async fn apply_queue(
    tx: &mut Tx<'_>,
    statements: &mut Statements,
    ops: &[&WriteOp],
) -> Result<(), tokio_postgres::Error> {
    let (mut d_run, mut d_action, mut d_lease) = (Vec::new(), Vec::new(), Vec::new());
    let mut enqueued: HashMap<(RunId, weir_core::ActionId), usize> = HashMap::new();
    let mut e: Vec<(&weir_store::QueuedAttempt, i64)> = Vec::new();
    for op in ops {
        match op {
            WriteOp::Dequeue { run, action, lease } => {
                d_run.push(run.0);
                d_action.push(action.as_i64());
                d_lease.push(*lease as i64);
            }
            WriteOp::Enqueue { attempt, due } => match enqueued.get(&(attempt.run, attempt.action))
            {
                Some(&i) => e[i] = (attempt, *due),
                None => {
                    enqueued.insert((attempt.run, attempt.action), e.len());
                    e.push((attempt, *due));
                }
            },
            _ => unreachable!("only queue writes are planned as a queue step"),
        }
    }
    if !d_run.is_empty() {
        let st = statements
            .get(
                tx.client(),
                "DELETE FROM queue q USING unnest($1::bigint[], $2::bigint[], $3::bigint[])
                   AS d(run, action, lease)
                 WHERE q.run = d.run AND q.action = d.action AND q.lease = d.lease",
            )
            .await?;
        tx.execute(st, params![&d_run, &d_action, &d_lease]);
    }
    if !e.is_empty() {
        let run: Vec<i64> = e.iter().map(|(a, _)| a.run.0).collect();
        let action: Vec<i64> = e.iter().map(|(a, _)| a.action.as_i64()).collect();
        let attempt: Vec<i64> = e.iter().map(|(a, _)| a.attempt as i64).collect();
        let env: Vec<&str> = e.iter().map(|(a, _)| a.env.as_str()).collect();
        let task: Vec<&str> = e.iter().map(|(a, _)| a.task.as_str()).collect();
        let due: Vec<i64> = e.iter().map(|(_, d)| *d).collect();
        let st = statements
            .get(
                tx.client(),
                "INSERT INTO queue(run, action, attempt, env, task, enqueued_at)
                 SELECT run, action, attempt, env, task, due
                 FROM unnest($1::bigint[], $2::bigint[], $3::bigint[], $4::text[], $5::text[],
                   $6::bigint[]) WITH ORDINALITY AS e(run, action, attempt, env, task, due, n)
                 ORDER BY n
                 ON CONFLICT(run, action) DO UPDATE SET attempt = excluded.attempt,
                   env = excluded.env, task = excluded.task, enqueued_at = excluded.enqueued_at,
                   seq = nextval('queue_seq'), lease = NULL, worker = NULL, expires_at = NULL,
                   system_retries = 0",
            )
            .await?;
        tx.execute(st, params![&run, &action, &attempt, &env, &task, &due]);
    }
    Ok(())
}
