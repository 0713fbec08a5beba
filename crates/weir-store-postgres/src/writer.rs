//! The write path: one task on its own connection takes queued writes in group commits (one
//! transaction each) and resolves their tickets after `COMMIT`. Writes of a run this store
//! claimed but another owner has claimed since are refused inside the transaction.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::mpsc;
use tokio_postgres::{Client, Statement};
use weir_core::ActionStatus;
use weir_store::columns::payload_to_columns;
use weir_store::merge::{MergedRow, Step, plan};
use weir_store::{ActionKind, Error, Promise, RunId, WriteOp};

use crate::batched::{apply_group, apply_queue};
use crate::pipe::{Tx, params};
use crate::rows::failure_json;
use crate::{Inner, open_client};

/// A command for the writer.
pub(crate) enum Cmd {
    /// A write, and the promise of its ticket if someone waits for it.
    Write(WriteOp, Option<Promise>),
    /// A write seen before it is on disk: the promises of its visible and durable tickets.
    Staged(WriteOp, Promise, Promise),
    /// Resolves once everything before it is committed.
    Sync(Promise),
}

impl Cmd {
    fn is_awaited(&self) -> bool {
        match self {
            Cmd::Write(_, Some(p)) | Cmd::Sync(p) | Cmd::Staged(_, p, _) => !p.is_abandoned(),
            Cmd::Write(_, None) => false,
        }
    }

    /// Whether someone waits for this write to be on disk when its commit returns.
    fn needs_disk(&self) -> bool {
        match self {
            Cmd::Write(_, Some(p)) | Cmd::Sync(p) => !p.is_abandoned(),
            Cmd::Write(_, None) | Cmd::Staged(..) => false,
        }
    }

    pub(crate) fn op(&self) -> Option<&WriteOp> {
        match self {
            Cmd::Write(op, _) | Cmd::Staged(op, _, _) => Some(op),
            Cmd::Sync(_) => None,
        }
    }
}

/// Longest time a write nobody waits for is held back to share a commit.
const MAX_HOLD: Duration = Duration::from_millis(2);

/// Prepared statements of the writer's connection.
#[derive(Default)]
pub(crate) struct Statements(HashMap<&'static str, Statement>);

impl Statements {
    pub(crate) async fn get(
        &mut self,
        client: &Client,
        sql: &'static str,
    ) -> Result<Statement, tokio_postgres::Error> {
        if let Some(st) = self.0.get(sql) {
            return Ok(st.clone());
        }
        let st = client.prepare(sql).await?;
        self.0.insert(sql, st.clone());
        Ok(st)
    }
}

/// The writer task: runs until every sender is gone and the queue is drained.
pub(crate) async fn run(
    inner: Arc<Inner>,
    mut client: Client,
    mut rx: mpsc::UnboundedReceiver<Cmd>,
    max_batch: usize,
) {
    let mut statements = Statements::default();
    let mut analyze = crate::analyze::Schedule::default();
    let (flushes, flush_rx) = mpsc::unbounded_channel();
    tokio::spawn(flusher(inner.clone(), flush_rx));
    while let Some(first) = rx.recv().await {
        let mut awaited = first.is_awaited();
        let mut batch = vec![first];
        let since = Instant::now();
        loop {
            while batch.len() < max_batch {
                match rx.try_recv() {
                    Ok(cmd) => {
                        awaited |= cmd.is_awaited();
                        batch.push(cmd);
                    }
                    Err(_) => break,
                }
            }
            if awaited || batch.len() >= max_batch {
                break;
            }
            let left = MAX_HOLD.saturating_sub(since.elapsed());
            if left.is_zero() {
                break;
            }
            match tokio::time::timeout(left, rx.recv()).await {
                Ok(Some(cmd)) => {
                    awaited |= cmd.is_awaited();
                    batch.push(cmd);
                }
                Ok(None) | Err(_) => break,
            }
        }
        if client.is_closed() {
            match open_client(&inner.writer_config).await {
                Ok(c) => {
                    client = c;
                    statements = Statements::default();
                }
                Err(e) => {
                    let err = Arc::new(inner.err("reconnecting the writer")(e));
                    tracing::error!(error = %err, ops = batch.len(), "state commit failed");
                    resolve(batch, &HashMap::new(), Err(err), true, &flushes);
                    continue;
                }
            }
        }
        let mut lost = HashMap::new();
        let on_disk = batch.iter().any(Cmd::needs_disk);
        let result = transact(
            &inner,
            &mut client,
            &mut statements,
            &batch,
            &mut lost,
            on_disk,
        )
        .await
        .map_err(|e| Arc::new(inner.err("committing writes")(e)));
        match &result {
            Ok(()) => analyze.written(&inner, batch.len()),
            Err(e) => {
                tracing::error!(error = %e, ops = batch.len(), "state commit failed");
                // A failed statement may have left a prepared one unknown to the server.
                statements = Statements::default();
            }
        }
        resolve(batch, &lost, result, on_disk, &flushes);
    }
}

fn resolve(
    batch: Vec<Cmd>,
    lost: &HashMap<RunId, Arc<Error>>,
    result: Result<(), Arc<Error>>,
    on_disk: bool,
    flusher: &mpsc::UnboundedSender<Promise>,
) {
    for cmd in batch {
        let refusal = cmd.op().and_then(|op| op.run()).and_then(|r| lost.get(&r));
        let result = match refusal {
            Some(refusal) => Err(refusal.clone()),
            None => result.clone(),
        };
        match cmd {
            Cmd::Write(_, Some(promise)) | Cmd::Sync(promise) => promise.resolve(result),
            Cmd::Write(_, None) => {}
            Cmd::Staged(_, visible, durable) => {
                visible.resolve(result.clone());
                match result {
                    Ok(()) if !on_disk => {
                        if let Err(e) = flusher.send(durable) {
                            e.0.resolve(Err(Arc::new(Error::WriterGone)));
                        }
                    }
                    r => durable.resolve(r),
                }
            }
        }
    }
}

/// Makes commits that did not wait for the disk durable: on a connection of its own, a
/// transaction that waits for the disk, which flushes every commit before it. One flush for
/// all that waits. The transaction must write to the WAL, or PostgreSQL does not wait for its
/// commit: a transactional logical message is such a write, and touches no table.
async fn flusher(inner: Arc<Inner>, mut rx: mpsc::UnboundedReceiver<Promise>) {
    let mut client: Option<Client> = None;
    while let Some(first) = rx.recv().await {
        let mut waiting = vec![first];
        while let Ok(p) = rx.try_recv() {
            waiting.push(p);
        }
        let flushed = async {
            if client.as_ref().is_none_or(Client::is_closed) {
                client = Some(open_client(&inner.config).await?);
            }
            let c = client.as_ref().expect("connected above");
            c.simple_query("SELECT pg_logical_emit_message(true, 'weir.flush', '')")
                .await
                .map(|_| ())
        }
        .await
        .map_err(|e| Arc::new(inner.err("flushing commits to disk")(e)));
        if flushed.is_err() {
            client = None;
        }
        for p in waiting {
            p.resolve(flushed.clone());
        }
    }
}

/// One transaction: the ownership check and the writes, pipelined (`pipe.rs`).
async fn transact(
    inner: &Inner,
    client: &mut Client,
    statements: &mut Statements,
    batch: &[Cmd],
    lost: &mut HashMap<RunId, Arc<Error>>,
    on_disk: bool,
) -> Result<(), tokio_postgres::Error> {
    let client: &Client = client;
    let result = pipelined(inner, client, statements, batch, lost, on_disk).await;
    if result.is_err() {
        // Ends a transaction left open by an error before `COMMIT` was sent (a warning
        // otherwise).
        let _ = client.batch_execute("ROLLBACK").await;
    }
    result
}

async fn pipelined(
    inner: &Inner,
    client: &Client,
    statements: &mut Statements,
    batch: &[Cmd],
    lost: &mut HashMap<RunId, Arc<Error>>,
    on_disk: bool,
) -> Result<(), tokio_postgres::Error> {
    // `synchronous_commit` on when someone waits for this commit to be on disk (the
    // connection's commits do not wait: see `flusher`).
    let mut tx = Tx::begin(client, on_disk);
    // The runs of this batch this store claimed, with the epoch of its claim.
    let mine: Vec<(RunId, u64)> = {
        let claims = inner.claims.lock();
        let mut seen = HashSet::new();
        batch
            .iter()
            .filter_map(|cmd| cmd.op().and_then(WriteOp::run))
            .filter(|run| seen.insert(*run))
            .filter_map(|run| claims.get(&run).map(|epoch| (run, *epoch)))
            .collect()
    };
    if !mine.is_empty() {
        let ids: Vec<i64> = mine.iter().map(|(r, _)| r.0).collect();
        // `FOR SHARE`: a takeover (an UPDATE of the row) waits for this commit, so no claim
        // lands between the check and the writes.
        let st = statements
            .get(
                client,
                "SELECT id, name, owner, epoch FROM runs WHERE id = ANY($1) ORDER BY id FOR SHARE",
            )
            .await?;
        for row in tx.query(&st, &[&ids]).await? {
            let run = RunId(row.get(0));
            let epoch = row.get::<_, i64>(3) as u64;
            let claimed = mine.iter().find(|(r, _)| *r == run).map(|(_, e)| *e);
            if claimed.is_some_and(|c| c != epoch) {
                let (name, owner): (String, String) = (row.get(1), row.get(2));
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
                        epoch,
                    }),
                );
            }
        }
    }
    apply_batch(&mut tx, statements, batch, lost).await?;
    tx.commit().await
}

/// Applies one batch in its transaction: the writes of each action merged into rows
/// (`weir_store::merge`, one multi-row upsert per step), the others in place; the writes of
/// runs lost to another owner left out.
async fn apply_batch(
    tx: &mut Tx<'_>,
    statements: &mut Statements,
    batch: &[Cmd],
    lost: &HashMap<RunId, Arc<Error>>,
) -> Result<(), tokio_postgres::Error> {
    let ops = batch
        .iter()
        .filter_map(Cmd::op)
        .filter(|op| !op.run().is_some_and(|r| lost.contains_key(&r)));
    // Starts and ends of actions not inserted in this batch, gathered while consecutive into
    // one statement each (a second write of the same action closes the group).
    let mut group: Vec<&WriteOp> = Vec::new();
    let mut keys: HashSet<(RunId, weir_core::ActionId)> = HashSet::new();
    for step in plan(ops) {
        let groupable = match &step {
            Step::Op(
                op
                @ (WriteOp::StartAttempt { run, id, .. } | WriteOp::FinishAction { run, id, .. }),
            ) => Some((*op, (*run, *id))),
            _ => None,
        };
        if let Some((op, key)) = groupable {
            let same_kind = group
                .first()
                .is_none_or(|g| std::mem::discriminant(*g) == std::mem::discriminant(op));
            if !same_kind || keys.contains(&key) {
                apply_group(tx, statements, &group).await?;
                group.clear();
                keys.clear();
            }
            group.push(op);
            keys.insert(key);
            continue;
        }
        apply_group(tx, statements, &group).await?;
        group.clear();
        keys.clear();
        match step {
            Step::Rows(rows) => upsert_rows(tx, statements, &rows).await?,
            Step::Op(op) => apply(tx, statements, op).await?,
            Step::Queue(ops) => apply_queue(tx, statements, &ops).await?,
        }
    }
    apply_group(tx, statements, &group).await
}

/// Upserts merged rows with one statement (arrays unnested, in batch order).
async fn upsert_rows(
    tx: &mut Tx<'_>,
    statements: &mut Statements,
    rows: &[MergedRow<'_>],
) -> Result<(), tokio_postgres::Error> {
    if rows.is_empty() {
        return Ok(());
    }
    let mut run = Vec::with_capacity(rows.len());
    let mut id = Vec::with_capacity(rows.len());
    let mut parent = Vec::with_capacity(rows.len());
    let mut task = Vec::with_capacity(rows.len());
    let mut grp = Vec::with_capacity(rows.len());
    let mut kind = Vec::with_capacity(rows.len());
    let mut status = Vec::with_capacity(rows.len());
    let mut attempts = Vec::with_capacity(rows.len());
    let mut queued_at = Vec::with_capacity(rows.len());
    let mut started_at = Vec::with_capacity(rows.len());
    let mut ended_at = Vec::with_capacity(rows.len());
    let mut reused = Vec::with_capacity(rows.len());
    let mut inputs = Vec::with_capacity(rows.len());
    let mut inputs_ref = Vec::with_capacity(rows.len());
    let mut output = Vec::with_capacity(rows.len());
    let mut output_ref = Vec::with_capacity(rows.len());
    let mut error = Vec::with_capacity(rows.len());
    let mut phases = Vec::with_capacity(rows.len());
    for row in rows {
        let (i, i_ref) = payload_to_columns(row.inputs);
        let (o, o_ref) = row.output.map(payload_to_columns).unwrap_or((None, None));
        run.push(row.run.0);
        id.push(row.id.as_i64());
        parent.push(row.parent.as_i64());
        task.push(row.task);
        grp.push(row.group);
        kind.push((row.kind == ActionKind::Trace) as i64);
        status.push(row.status.code());
        attempts.push(row.attempts as i64);
        queued_at.push(row.queued_at);
        started_at.push(row.started_at);
        ended_at.push(row.ended_at);
        reused.push(row.reused);
        inputs.push(i);
        inputs_ref.push(i_ref);
        output.push(o);
        output_ref.push(o_ref);
        error.push(row.error.and_then(|f| serde_json::to_string(f).ok()));
        phases.push(row.phases.map(|p| p.encode()));
    }
    let st = statements
        .get(
            tx.client(),
            "INSERT INTO actions(run, id, parent, task, grp, kind, status, attempts, queued_at,
               started_at, ended_at, cache_hit, inputs, inputs_ref, output, output_ref, error, phases)
             SELECT run, id, parent, task, grp, kind, status, attempts, queued_at, started_at,
               ended_at, cache_hit, inputs, inputs_ref, output, output_ref, error, phases
             FROM unnest($1::bigint[], $2::bigint[], $3::bigint[], $4::text[], $5::text[],
               $6::bigint[], $7::bigint[], $8::bigint[], $9::bigint[], $10::bigint[],
               $11::bigint[], $12::bigint[], $13::bytea[], $14::text[], $15::bytea[], $16::text[],
               $17::text[], $18::bytea[])
               WITH ORDINALITY AS r(run, id, parent, task, grp, kind, status, attempts, queued_at,
                 started_at, ended_at, cache_hit, inputs, inputs_ref, output, output_ref, error,
                 phases, n)
             ORDER BY n
             ON CONFLICT(run, id) DO UPDATE SET status = excluded.status,
               attempts = greatest(actions.attempts, excluded.attempts),
               queued_at = excluded.queued_at,
               started_at = coalesce(excluded.started_at, actions.started_at),
               ended_at = excluded.ended_at, cache_hit = excluded.cache_hit,
               output = excluded.output, output_ref = excluded.output_ref, error = excluded.error,
               phases = excluded.phases",
        )
        .await?;
    tx.execute(
        st,
        params![
            &run,
            &id,
            &parent,
            &task,
            &grp,
            &kind,
            &status,
            &attempts,
            &queued_at,
            &started_at,
            &ended_at,
            &reused,
            &inputs,
            &inputs_ref,
            &output,
            &output_ref,
            &error,
            &phases,
        ],
    );
    Ok(())
}

pub(crate) async fn apply(
    tx: &mut Tx<'_>,
    statements: &mut Statements,
    op: &WriteOp,
) -> Result<(), tokio_postgres::Error> {
    match op {
        WriteOp::InsertAction { .. } | WriteOp::RecoverAction { .. } => {
            unreachable!("inserts are merged in apply_batch")
        }
        WriteOp::Enqueue { .. } | WriteOp::Dequeue { .. } => {
            apply_queue(tx, statements, &[op]).await?;
        }
        WriteOp::PutCache(entry) => {
            let (blob, reference) = payload_to_columns(&entry.output);
            let st = statements
                .get(tx.client(),
                    "INSERT INTO cache(key, project, domain, task, version, output, output_ref, created_at)
                     VALUES($1, $2, $3, $4, $5, $6, $7, $8)
                     ON CONFLICT(key, project, domain) DO UPDATE SET task = excluded.task,
                       version = excluded.version, output = excluded.output,
                       output_ref = excluded.output_ref, created_at = excluded.created_at",
                )
                .await?;
            tx.execute(
                st,
                params![
                    &entry.key,
                    &entry.project,
                    &entry.domain,
                    &entry.task,
                    &entry.version,
                    &blob,
                    &reference,
                    &entry.created_at
                ],
            );
        }
        WriteOp::StartAttempt {
            run,
            id,
            attempt,
            started_at,
        } => {
            let st = statements
                .get(tx.client(),
                    "UPDATE actions SET status = $3, attempts = $4, started_at = $5 WHERE run = $1 AND id = $2",
                )
                .await?;
            tx.execute(
                st,
                params![
                    &run.0,
                    &id.as_i64(),
                    &ActionStatus::Running.code(),
                    &(*attempt as i64),
                    started_at
                ],
            );
        }
        WriteOp::FailAttempt {
            run,
            id,
            attempt,
            retrying,
        } => {
            if *retrying {
                let st = statements
                    .get(
                        tx.client(),
                        "UPDATE actions SET status = $3 WHERE run = $1 AND id = $2",
                    )
                    .await?;
                tx.execute(
                    st,
                    params![&run.0, &id.as_i64(), &ActionStatus::Retrying.code()],
                );
            }
            let st = statements
                .get(tx.client(),
                    "INSERT INTO attempts(run, action, attempt, started_at, ended_at, error, phases)
                     VALUES($1, $2, $3, $4, $5, $6, $7)
                     ON CONFLICT(run, action, attempt) DO UPDATE SET started_at = excluded.started_at,
                       ended_at = excluded.ended_at, error = excluded.error, phases = excluded.phases",
                )
                .await?;
            tx.execute(
                st,
                params![
                    &run.0,
                    &id.as_i64(),
                    &(attempt.attempt as i64),
                    &attempt.started_at,
                    &attempt.ended_at,
                    &serde_json::to_string(&attempt.error).unwrap_or_default(),
                    &attempt.phases.map(|p| p.encode())
                ],
            );
        }
        WriteOp::FinishAction {
            run,
            id,
            status,
            output,
            error,
            cache_hit,
            ended_at,
            phases,
        } => {
            let (blob, reference) = output
                .as_ref()
                .map(payload_to_columns)
                .unwrap_or((None, None));
            let phases = phases.as_ref().map(|p| p.encode());
            let st = statements
                .get(
                    tx.client(),
                    "UPDATE actions SET status = $3, output = $4, output_ref = $5, error = $6,
                       cache_hit = $7, ended_at = $8, phases = $9
                     WHERE run = $1 AND id = $2",
                )
                .await?;
            tx.execute(
                st,
                params![
                    &run.0,
                    &id.as_i64(),
                    &status.code(),
                    &blob,
                    &reference,
                    &failure_json(error),
                    &(*cache_hit as i64),
                    ended_at,
                    &phases
                ],
            );
        }
        WriteOp::Delivered { run, id, phases } => {
            let st = statements
                .get(
                    tx.client(),
                    "UPDATE actions SET phases = $3 WHERE run = $1 AND id = $2",
                )
                .await?;
            tx.execute(st, params![&run.0, &id.as_i64(), &phases.encode()]);
        }
        WriteOp::FinishRun {
            run,
            status,
            output,
            error,
            ended_at,
        } => {
            let (blob, reference) = output
                .as_ref()
                .map(payload_to_columns)
                .unwrap_or((None, None));
            let st = statements
                .get(tx.client(),
                    "UPDATE runs SET status = $2, output = $3, output_ref = $4, error = $5, ended_at = $6
                     WHERE id = $1",
                )
                .await?;
            tx.execute(
                st,
                params![
                    &run.0,
                    &status.as_str(),
                    &blob,
                    &reference,
                    &failure_json(error),
                    ended_at
                ],
            );
        }
        WriteOp::OwnerAlive { owner, at } => {
            let st = statements
                .get(
                    tx.client(),
                    "UPDATE runs SET owner_seen_at = $2 WHERE owner = $1 AND status = 'running'",
                )
                .await?;
            tx.execute(st, params![owner, at]);
        }
        WriteOp::CancelLiveActions {
            run,
            error,
            ended_at,
        } => {
            let st = statements
                .get(
                    tx.client(),
                    "UPDATE actions SET status = $2, error = $3, ended_at = $4
                     WHERE run = $1 AND status IN ($5, $6, $7)",
                )
                .await?;
            tx.execute(
                st,
                params![
                    &run.0,
                    &ActionStatus::Cancelled.code(),
                    &serde_json::to_string(error).unwrap_or_default(),
                    ended_at,
                    &ActionStatus::Queued.code(),
                    &ActionStatus::Running.code(),
                    &ActionStatus::Retrying.code()
                ],
            );
            // Their attempts leave the queue: a running one's completion finds no lease.
            let st = statements
                .get(tx.client(), "DELETE FROM queue WHERE run = $1")
                .await?;
            tx.execute(st, params![&run.0]);
        }
    }
    Ok(())
}
