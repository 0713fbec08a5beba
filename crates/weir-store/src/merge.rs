//! How a batch of writes becomes statements, shared by the backends: the writes of one action
//! within a batch (queued, started, finished) merge into one row, upserted once; every other
//! write is applied as it comes, in queue order. A backend runs the [`Step`]s of [`plan`] in
//! order inside its transaction.

use std::collections::HashMap;

use weir_core::{ActionId, ActionStatus, Failure};

use crate::columns::{REUSED_CACHE, REUSED_RECOVERED};
use crate::{ActionKind, Payload, RunId, WriteOp};

/// An action row assembled from the writes of one batch.
#[derive(Debug)]
pub struct MergedRow<'a> {
    /// Run row id.
    pub run: RunId,
    /// Action id.
    pub id: ActionId,
    /// Parent id.
    pub parent: ActionId,
    /// Task (or trace) name.
    pub task: &'a str,
    /// Group.
    pub group: Option<&'a str>,
    /// Task or trace.
    pub kind: ActionKind,
    /// Status after the batch.
    pub status: ActionStatus,
    /// Attempts started.
    pub attempts: u32,
    /// Queue time (µs).
    pub queued_at: i64,
    /// Start of the last attempt.
    pub started_at: Option<i64>,
    /// End time.
    pub ended_at: Option<i64>,
    /// The `cache_hit` column: 0 ran, [`REUSED_CACHE`], [`REUSED_RECOVERED`].
    pub reused: i64,
    /// Inputs.
    pub inputs: &'a Payload,
    /// Output.
    pub output: Option<&'a Payload>,
    /// Failure.
    pub error: Option<&'a Failure>,
    /// Phases of the last attempt.
    pub phases: Option<&'a weir_core::phases::Phases>,
}

/// One step of a batch's application, in order.
#[derive(Debug)]
pub enum Step<'a> {
    /// Upsert these merged rows (batch order).
    Rows(Vec<MergedRow<'a>>),
    /// Apply this write as it is.
    Op(&'a WriteOp),
    /// Apply these queue writes ([`WriteOp::Enqueue`], [`WriteOp::Dequeue`]) in order; they
    /// touch only the queue, so they come last (a backend may batch them).
    Queue(Vec<&'a WriteOp>),
}

/// The steps that apply `ops` (one batch, in queue order): each action first inserted in the
/// batch becomes one row carrying its later start and end; an abort's bulk cancel sees every
/// row queued before it; everything else is applied in place.
pub fn plan<'a>(ops: impl IntoIterator<Item = &'a WriteOp>) -> Vec<Step<'a>> {
    let mut steps = Vec::new();
    let mut rows: Vec<MergedRow<'a>> = Vec::new();
    let mut pending: HashMap<(RunId, ActionId), usize> = HashMap::new();
    let mut queue = Vec::new();
    for op in ops {
        match op {
            WriteOp::Enqueue { .. } | WriteOp::Dequeue { .. } => queue.push(op),
            WriteOp::InsertAction {
                run,
                id,
                parent,
                task,
                group,
                kind,
                inputs,
                queued_at,
            } => put(
                &mut rows,
                &mut pending,
                MergedRow {
                    run: *run,
                    id: *id,
                    parent: *parent,
                    task,
                    group: group.as_deref(),
                    kind: *kind,
                    status: ActionStatus::Queued,
                    attempts: 0,
                    queued_at: *queued_at,
                    started_at: None,
                    ended_at: None,
                    reused: 0,
                    inputs,
                    output: None,
                    error: None,
                    phases: None,
                },
            ),
            WriteOp::RecoverAction {
                run,
                id,
                parent,
                task,
                group,
                kind,
                inputs,
                output,
                at,
            } => put(
                &mut rows,
                &mut pending,
                MergedRow {
                    run: *run,
                    id: *id,
                    parent: *parent,
                    task,
                    group: group.as_deref(),
                    kind: *kind,
                    status: ActionStatus::Succeeded,
                    attempts: 0,
                    queued_at: *at,
                    started_at: None,
                    ended_at: Some(*at),
                    reused: REUSED_RECOVERED,
                    inputs,
                    output: Some(output),
                    error: None,
                    phases: None,
                },
            ),
            _ => {
                let row = merged(&pending, op);
                match (row, op) {
                    (
                        Some(i),
                        WriteOp::StartAttempt {
                            attempt,
                            started_at,
                            ..
                        },
                    ) => {
                        let row = &mut rows[i];
                        row.status = ActionStatus::Running;
                        row.attempts = *attempt;
                        row.started_at = Some(*started_at);
                    }
                    (
                        Some(i),
                        WriteOp::FinishAction {
                            status,
                            output,
                            error,
                            cache_hit,
                            ended_at,
                            phases,
                            ..
                        },
                    ) => {
                        let row = &mut rows[i];
                        row.phases = phases.as_deref();
                        row.status = *status;
                        row.output = output.as_ref();
                        row.error = error.as_ref();
                        row.reused = if *cache_hit { REUSED_CACHE } else { 0 };
                        row.ended_at = Some(*ended_at);
                    }
                    (Some(i), WriteOp::FailAttempt { retrying: true, .. }) => {
                        rows[i].status = ActionStatus::Retrying;
                        steps.push(Step::Op(op));
                    }
                    (_, WriteOp::CancelLiveActions { .. }) => {
                        // It must see every action queued before it.
                        if !rows.is_empty() {
                            steps.push(Step::Rows(std::mem::take(&mut rows)));
                        }
                        pending.clear();
                        steps.push(Step::Op(op));
                    }
                    _ => steps.push(Step::Op(op)),
                }
            }
        }
    }
    if !rows.is_empty() {
        steps.push(Step::Rows(rows));
    }
    if !queue.is_empty() {
        steps.push(Step::Queue(queue));
    }
    steps
}

/// The index of the merged row a start, retry or end applies to, if its action was inserted
/// earlier in the batch.
fn merged(pending: &HashMap<(RunId, ActionId), usize>, op: &WriteOp) -> Option<usize> {
    match op {
        WriteOp::StartAttempt { run, id, .. }
        | WriteOp::FinishAction { run, id, .. }
        | WriteOp::FailAttempt { run, id, .. } => pending.get(&(*run, *id)).copied(),
        _ => None,
    }
}

/// Adds a row, or replaces the row of the same action (a re-insert within the batch).
fn put<'a>(
    rows: &mut Vec<MergedRow<'a>>,
    pending: &mut HashMap<(RunId, ActionId), usize>,
    row: MergedRow<'a>,
) {
    match pending.get(&(row.run, row.id)) {
        Some(&i) => rows[i] = row,
        None => {
            pending.insert((row.run, row.id), rows.len());
            rows.push(row);
        }
    }
}
