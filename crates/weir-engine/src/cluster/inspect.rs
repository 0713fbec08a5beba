//! What clients read about actions beyond their rows: a page of actions with their payloads
//! (`get actions --with-io --server`), and what attempts printed (`get logs --server`), which
//! workers send with their completions ([`Completion::log`]) and the control plane records.

use std::collections::HashMap;

use axum::http::StatusCode;
use futures::StreamExt;
use weir_core::{ActionId, ActionStatus};
use weir_store::{AttemptLog, Page, QueueEntry, RunId};

use super::Inner;
use super::runs::{Refusal, internal, unknown_run};
use super::views::{ActionIo, ActionsWithIo, AttemptLogView};
use crate::worker::protocol::{Completion, OUTPUT_CAP};

/// Most payload bytes one answer of [`actions_with_io`] holds (more when a single action's
/// payloads are larger: a page holds at least one action).
const IO_PAGE_BYTES: usize = 32 << 20;

/// Payloads read from the object store at once for one page.
const IO_READS: usize = 8;

/// The attempt logs of a batch of completions, taken out of them: only those of attempts the
/// completing worker holds the current lease of (a worker writes no other attempt's log). The
/// text is held to [`OUTPUT_CAP`] here too.
pub(super) fn logs_of(
    worker: &str,
    completions: &mut [Completion],
    entries: &HashMap<(RunId, ActionId), QueueEntry>,
) -> Vec<AttemptLog> {
    let mut logs = Vec::new();
    for c in completions.iter_mut() {
        let (Some(out), Some(run)) = (c.log.take(), c.run) else {
            continue;
        };
        let Some(entry) = entries.get(&(run, c.action)).filter(|e| {
            e.lease
                .as_ref()
                .is_some_and(|(l, w)| *l == c.lease && w == worker)
        }) else {
            continue;
        };
        let mut text = out.text;
        let over = text.len().saturating_sub(OUTPUT_CAP);
        text.drain(..over);
        let env = entry.attempt.env.split('@').next().unwrap_or_default();
        logs.push(AttemptLog {
            run,
            action: c.action,
            attempt: c.attempt,
            lease: c.lease,
            worker: worker.to_string(),
            pid: out.pid,
            env: env.to_string(),
            task: entry.attempt.task.clone(),
            started_at: out.started_at,
            ended_at: out.ended_at,
            ok: !matches!(c.outcome, crate::worker::protocol::AttemptOutcome::Error(_)),
            text,
            dropped: out.dropped.saturating_add(over as u64),
            overlapping: out.overlapping,
        });
    }
    logs
}

/// A page of run `name`'s actions with their payloads (read from the object store when
/// offloaded), cut short past [`IO_PAGE_BYTES`].
pub(super) async fn actions_with_io(
    inner: &Inner,
    name: &str,
    page: Page,
) -> Result<ActionsWithIo, Refusal> {
    let run = inner.store.run_by_name(name).await.map_err(unknown_run)?;
    let listed = inner
        .store
        .list_actions_with_payloads(run.id, page)
        .await
        .map_err(internal)?;
    let load = |p: Option<weir_store::Payload>| async move {
        match p {
            None => Ok(None),
            Some(p) => inner
                .payloads
                .load(&p)
                .await
                .map(|b| Some(serde_bytes::ByteBuf::from(b.to_vec())))
                .map_err(internal),
        }
    };
    let mut loaded = futures::stream::iter(listed.into_iter().map(|mut action| async move {
        let inputs = load(action.inputs.take()).await?;
        let output = match action.status {
            ActionStatus::Succeeded => load(action.output.take()).await?,
            _ => None,
        };
        action.output = None;
        Ok::<_, Refusal>(ActionIo {
            action,
            inputs,
            output,
        })
    }))
    .buffered(IO_READS);
    let mut page = ActionsWithIo::default();
    let mut bytes = 0usize;
    while let Some(item) = loaded.next().await {
        let item = item?;
        let size = item.inputs.as_ref().map_or(0, |b| b.len())
            + item.output.as_ref().map_or(0, |b| b.len());
        if !page.actions.is_empty() && bytes.saturating_add(size) > IO_PAGE_BYTES {
            page.cut = true;
            break;
        }
        bytes = bytes.saturating_add(size);
        page.actions.push(item);
    }
    Ok(page)
}

/// What the attempts of action `id` of run `name` printed, by attempt.
pub(super) async fn attempt_logs(
    inner: &Inner,
    name: &str,
    id: &str,
) -> Result<Vec<AttemptLogView>, Refusal> {
    let run = inner.store.run_by_name(name).await.map_err(unknown_run)?;
    let unknown = || {
        let e = weir_store::Error::UnknownAction {
            run: name.to_string(),
            action: id.to_string(),
        };
        (StatusCode::NOT_FOUND, e.to_string())
    };
    let action = ActionId::parse(id).ok_or_else(unknown)?;
    inner
        .store
        .action(run.id, action)
        .await
        .map_err(internal)?
        .ok_or_else(unknown)?;
    let logs = inner
        .store
        .attempt_logs(run.id, action)
        .await
        .map_err(internal)?;
    Ok(logs.into_iter().map(AttemptLogView::from).collect())
}
