//! Child calls waiting for their outcome, per worker: an outcome is handed to the calls
//! waiting on it here at once, or found by the sweep when the action ended on another replica.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::Notify;
use weir_core::ActionId;
use weir_store::RunId;

use futures::StreamExt;
use weir_core::ErrorKind;

use super::{Inner, Outcome, Output, remote};
use crate::worker::protocol::{ChildResult, PayloadRef};

/// A child call waiting for its outcome.
struct Pending {
    key: (RunId, ActionId),
    since: Instant,
    next_check: Instant,
}

/// A worker's open calls and the outcomes not yet fetched.
#[derive(Default)]
struct Outbox {
    results: Vec<(u64, Outcome)>,
    pending: HashMap<u64, Pending>,
    notify: Arc<Notify>,
}

/// Waiting child calls: by action (who to tell) and by worker.
#[derive(Default)]
pub(super) struct Waiting {
    by_action: HashMap<(RunId, ActionId), Vec<(String, u64)>>,
    by_worker: HashMap<String, Outbox>,
}

impl Inner {
    /// Registers interest of `worker`'s call `call` in action `key`'s outcome.
    pub(crate) fn subscribe(&self, worker: &str, call: u64, key: (RunId, ActionId)) {
        let mut w = self.waiting.lock();
        w.by_action
            .entry(key)
            .or_default()
            .push((worker.to_string(), call));
        let now = Instant::now();
        w.by_worker
            .entry(worker.to_string())
            .or_default()
            .pending
            .insert(
                call,
                Pending {
                    key,
                    since: now,
                    next_check: now + Duration::from_secs(1),
                },
            );
    }

    /// Hands an outcome to one call of a worker (and forgets the call).
    pub(crate) fn deliver(&self, worker: &str, call: u64, outcome: &Outcome) {
        let mut w = self.waiting.lock();
        let Some(out) = w.by_worker.get_mut(worker) else {
            return;
        };
        if let Some(p) = out.pending.remove(&call)
            && let Some(list) = w.by_action.get_mut(&p.key)
        {
            list.retain(|(wk, c)| !(wk == worker && *c == call));
            if list.is_empty() {
                w.by_action.remove(&p.key);
            }
        }
        let out = w.by_worker.get_mut(worker).expect("present above");
        out.results.push((call, outcome.clone()));
        out.notify.notify_waiters();
    }

    /// Hands an action's outcome to every call waiting on it here.
    pub(crate) fn resolve(&self, key: (RunId, ActionId), outcome: &Outcome) {
        let waiters = self.waiting.lock().by_action.remove(&key);
        for (worker, call) in waiters.into_iter().flatten() {
            self.deliver(&worker, call, outcome);
        }
    }

    /// Forgets calls their caller stopped waiting for.
    pub(crate) fn forget(&self, worker: &str, calls: &[u64]) {
        let mut w = self.waiting.lock();
        let mut keys = Vec::new();
        if let Some(out) = w.by_worker.get_mut(worker) {
            for c in calls {
                if let Some(p) = out.pending.remove(c) {
                    keys.push((p.key, *c));
                }
            }
        }
        for (key, call) in keys {
            if let Some(list) = w.by_action.get_mut(&key) {
                list.retain(|(wk, c)| !(wk == worker && *c == call));
                if list.is_empty() {
                    w.by_action.remove(&key);
                }
            }
        }
    }

    /// Takes the outcomes waiting for `worker`, waiting up to `until` for one. Offloaded
    /// outputs go as references to a worker that reads the object store itself (`direct`),
    /// else as bytes read here.
    pub(crate) async fn take_results(
        &self,
        worker: &str,
        until: Instant,
        direct: bool,
    ) -> Vec<ChildResult> {
        loop {
            let (taken, notify) = {
                let mut w = self.waiting.lock();
                let out = w.by_worker.entry(worker.to_string()).or_default();
                (std::mem::take(&mut out.results), out.notify.clone())
            };
            if !taken.is_empty() {
                return futures::stream::iter(taken)
                    .map(|(call, outcome)| self.child_result(call, outcome, direct))
                    .buffered(8)
                    .collect()
                    .await;
            }
            let left = until.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Vec::new();
            }
            let wait = notify.notified();
            tokio::pin!(wait);
            wait.as_mut().enable();
            // Re-check after arming: an outcome delivered between the check and the wait.
            if !self
                .waiting
                .lock()
                .by_worker
                .get(worker)
                .is_some_and(|o| o.results.is_empty())
            {
                continue;
            }
            let _ = tokio::time::timeout(left.min(Duration::from_millis(250)), wait).await;
        }
    }

    /// One outcome as the worker receives it (counted as carried or as direct).
    async fn child_result(&self, call: u64, outcome: Outcome, direct: bool) -> ChildResult {
        let (outcome, output_ref) = match outcome {
            Ok(Output::Bytes(bytes)) => (Ok(bytes), None),
            Ok(Output::Stored(payload)) => match PayloadRef::of(&payload) {
                Some(r) if direct && self.offer.is_some() => {
                    self.counters.direct(r.size);
                    (Ok(serde_bytes::ByteBuf::new()), Some(r))
                }
                _ => match self.payloads.load(&payload).await {
                    Ok(bytes) => (Ok(serde_bytes::ByteBuf::from(bytes.to_vec())), None),
                    Err(e) => (Err(remote(ErrorKind::System, e.to_string())), None),
                },
            },
            Err(e) => (Err(e), None),
        };
        if let Ok(bytes) = &outcome {
            self.counters.proxied(bytes.len());
        }
        ChildResult {
            call,
            outcome,
            output_ref,
        }
    }

    /// Looks up, in the store, the calls waiting longest whose action may have ended on
    /// another replica: one query per run for every due call.
    pub(super) async fn sweep(&self) {
        let now = Instant::now();
        let mut due: Vec<(RunId, ActionId)> = {
            let mut w = self.waiting.lock();
            let mut due = Vec::new();
            for out in w.by_worker.values_mut() {
                for p in out.pending.values_mut() {
                    if p.next_check <= now {
                        // A tenth of the time waited, 250 ms to 5 s apart.
                        let waited = now - p.since;
                        let gap =
                            (waited / 10).clamp(Duration::from_millis(250), Duration::from_secs(5));
                        p.next_check = now + gap;
                        due.push(p.key);
                    }
                }
            }
            due
        };
        due.sort();
        due.dedup();
        // One query per run for all its due calls.
        for chunk in due.chunk_by(|a, b| a.0 == b.0) {
            let run = chunk[0].0;
            let ids: Vec<ActionId> = chunk.iter().map(|(_, id)| *id).collect();
            let Ok(ended) = self.store.ended_among(run, &ids).await else {
                continue;
            };
            for id in ended {
                if let Ok(Some(rec)) = self.store.action(run, id).await {
                    let outcome = self.outcome_of(&rec).await;
                    self.resolve((run, id), &outcome);
                }
            }
        }
    }
}
