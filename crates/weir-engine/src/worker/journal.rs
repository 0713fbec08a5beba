//! What the process executor records for `get workers` and `get logs`, in
//! `<state_dir>/workers/`:
//!
//! - `replicas-<engine pid>.json`: the replica table of one engine process, rewritten when it
//!   changes ([`ReplicaRecord`]);
//! - `decisions.jsonl`: every decision (scale up, retire, stop, requeue, reject), appended
//!   ([`DecisionRecord`]) and also logged with `tracing`;
//! - per worker, `<env>-<engine pid>-<worker>.log` (its stdout and stderr) and
//!   `<env>-<engine pid>-<worker>.jsonl` (its structured log, see [`WorkerLogRecord`](super::WorkerLogRecord)).
//!
//! Files rather than store tables for now; [`read_snapshot`] is the one reader.

use std::io::Write;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use weir_core::clock::now_us;

/// One replica as shown by `get workers`.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct ReplicaRecord {
    /// Environment.
    pub env: String,
    /// Worker id.
    pub worker: String,
    /// Process id.
    pub pid: u32,
    /// `starting`, `ready`, `retiring`, `retired` or `lost`.
    pub state: String,
    /// Leased attempts not yet completed.
    pub in_flight: usize,
    /// Attempts it completed.
    pub completed: u64,
    /// Start time (µs since the epoch).
    pub started_at: i64,
    /// Retirement or death time (µs).
    pub ended_at: Option<i64>,
    /// Runs one action and exits (environment without a `ReusePolicy`).
    pub once: bool,
    /// Its stdout/stderr log file.
    pub log: PathBuf,
    /// Its structured log (JSON lines of [`WorkerLogRecord`](super::WorkerLogRecord)).
    /// Absent in tables written before it existed.
    #[serde(default)]
    pub events: Option<PathBuf>,
}

impl ReplicaRecord {
    /// The worker's structured log file.
    pub fn events_path(&self) -> PathBuf {
        self.events
            .clone()
            .unwrap_or_else(|| self.log.with_extension("jsonl"))
    }
}

/// One executor decision (scale up, retire, stop, requeue, reject).
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct DecisionRecord {
    /// When (µs since the epoch).
    pub at: i64,
    /// Environment.
    pub env: String,
    /// Worker concerned, if any.
    pub worker: Option<String>,
    /// What was decided and why.
    pub decision: String,
}

/// The executor's tables as written for `get workers`.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct WorkersSnapshot {
    /// Replicas, per engine process, in start order.
    pub replicas: Vec<ReplicaRecord>,
    /// Decisions, oldest first.
    pub decisions: Vec<DecisionRecord>,
}

/// Reads what the process executors of a state directory recorded.
pub fn read_snapshot(state_dir: &Path) -> WorkersSnapshot {
    let dir = state_dir.join("workers");
    let mut snap = WorkersSnapshot::default();
    if let Ok(entries) = std::fs::read_dir(&dir) {
        let mut files: Vec<_> = entries
            .flatten()
            .map(|e| e.path())
            .filter(|p| {
                p.file_name()
                    .and_then(|n| n.to_str())
                    .is_some_and(|n| n.starts_with("replicas-") && n.ends_with(".json"))
            })
            .collect();
        files.sort();
        for f in files {
            if let Ok(bytes) = std::fs::read(&f)
                && let Ok(mut r) = serde_json::from_slice::<Vec<ReplicaRecord>>(&bytes)
            {
                snap.replicas.append(&mut r);
            }
        }
    }
    snap.replicas.sort_by_key(|r| r.started_at);
    if let Ok(text) = std::fs::read_to_string(dir.join("decisions.jsonl")) {
        snap.decisions = text
            .lines()
            .filter_map(|l| serde_json::from_str(l).ok())
            .collect();
    }
    snap
}

/// The writing side, owned by one engine process's executor.
pub(crate) struct Journal {
    dir: PathBuf,
    /// The replica table changed since it was last written.
    dirty: bool,
    /// Rejected completions not yet recorded, and when rejections were last recorded.
    rejections: Rejections,
}

/// Rejected completions are recorded at most once per [`REJECTION_PERIOD`], as one decision
/// that counts them: a flood of fenced-off (or forged) completions costs a counter, not a
/// line each.
#[derive(Default)]
struct Rejections {
    last: Option<std::time::Instant>,
    pending: u64,
    /// The first unrecorded rejection: environment, worker, why.
    first: Option<(String, String, String)>,
}

/// How often rejected completions are recorded.
const REJECTION_PERIOD: std::time::Duration = std::time::Duration::from_secs(1);

impl Journal {
    pub(crate) fn new(dir: PathBuf) -> Journal {
        Journal {
            dir,
            dirty: false,
            rejections: Rejections::default(),
        }
    }

    /// Counts rejected completions of `worker`; records them (how many, and the first reason)
    /// when the last record is older than [`REJECTION_PERIOD`].
    pub(crate) fn rejected(&mut self, env: &str, worker: &str, rejected: &[(u64, String)]) {
        let Some((_, why)) = rejected.first() else {
            return;
        };
        let r = &mut self.rejections;
        r.pending += rejected.len() as u64;
        r.first
            .get_or_insert_with(|| (env.to_string(), worker.to_string(), why.clone()));
        if r.last.is_some_and(|t| t.elapsed() < REJECTION_PERIOD) {
            return;
        }
        self.record_rejections();
    }

    fn record_rejections(&mut self) {
        let r = &mut self.rejections;
        r.last = Some(std::time::Instant::now());
        let n = std::mem::take(&mut r.pending);
        let Some((env, worker, why)) = r.first.take() else {
            return;
        };
        let decision = match n {
            1 => format!("reject completion: {why}"),
            n => format!(
                "reject completion: {why} (and {} more rejected since the last record)",
                n - 1
            ),
        };
        self.decide(&env, Some(&worker), decision);
    }

    /// The directory of the files.
    pub(crate) fn dir(&self) -> &Path {
        &self.dir
    }

    /// The stdout/stderr log and the structured log of a new worker.
    pub(crate) fn worker_logs(&self, env: &str, worker: &str) -> (PathBuf, PathBuf) {
        let base = format!("{env}-{}-{worker}", std::process::id());
        (
            self.dir.join(format!("{base}.log")),
            self.dir.join(format!("{base}.jsonl")),
        )
    }

    /// Logs and appends one decision.
    pub(crate) fn decide(&mut self, env: &str, worker: Option<&str>, decision: String) {
        tracing::info!(env, worker, "{decision}");
        let rec = DecisionRecord {
            at: now_us(),
            env: env.to_string(),
            worker: worker.map(str::to_string),
            decision,
        };
        if let Ok(line) = serde_json::to_string(&rec)
            && let Ok(mut f) = std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(self.dir.join("decisions.jsonl"))
        {
            let _ = writeln!(f, "{line}");
        }
        self.dirty = true;
    }

    /// Records the rejections counted and not yet recorded (at the executor's tick).
    pub(crate) fn flush_rejections(&mut self) {
        let r = &mut self.rejections;
        if r.pending == 0 || r.last.is_some_and(|t| t.elapsed() < REJECTION_PERIOD) {
            return;
        }
        self.record_rejections();
    }

    /// The replica table changed: write it at the next [`Journal::flush`].
    pub(crate) fn touch(&mut self) {
        self.dirty = true;
    }

    /// Writes the replica table if it changed (atomically: a reader sees the old or the new).
    pub(crate) fn flush(&mut self, records: impl FnOnce() -> Vec<ReplicaRecord>) {
        if !std::mem::take(&mut self.dirty) {
            return;
        }
        let path = self
            .dir
            .join(format!("replicas-{}.json", std::process::id()));
        let tmp = path.with_extension("tmp");
        if let Ok(bytes) = serde_json::to_vec_pretty(&records())
            && std::fs::write(&tmp, bytes).is_ok()
        {
            let _ = std::fs::rename(&tmp, &path);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_flood_of_rejected_completions_costs_a_counter_not_a_line_each() {
        let dir = tempfile::tempdir().unwrap();
        let mut journal = Journal::new(dir.path().to_path_buf());
        let why = |lease: u64| (lease, format!("lease {lease} was fenced off"));
        // 250 000 rejections in batches of 1 000, within one period.
        for batch in 0..250u64 {
            let rejected: Vec<_> = (0..1000).map(|i| why(batch * 1000 + i)).collect();
            journal.rejected("env", "w1", &rejected);
        }
        let text = std::fs::read_to_string(dir.path().join("decisions.jsonl")).unwrap();
        assert_eq!(
            text.lines().count(),
            1,
            "only the first is recorded at once"
        );
        assert!(text.contains("lease 0 was fenced off"), "{text}");
        // The rest is recorded as one counted line once the period has passed.
        journal.rejections.last = Some(std::time::Instant::now() - REJECTION_PERIOD);
        journal.flush_rejections();
        let text = std::fs::read_to_string(dir.path().join("decisions.jsonl")).unwrap();
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 2, "{text}");
        assert!(
            lines[1].contains("lease 1000 was fenced off")
                && lines[1].contains("and 248999 more rejected"),
            "{}",
            lines[1]
        );
        // Nothing pending: nothing more is written.
        journal.rejections.last = Some(std::time::Instant::now() - REJECTION_PERIOD);
        journal.flush_rejections();
        let text = std::fs::read_to_string(dir.path().join("decisions.jsonl")).unwrap();
        assert_eq!(text.lines().count(), 2);
    }
}
