//! A worker's structured log: one JSON object a line ([`WorkerLogRecord`]), written by the
//! worker to the file the launcher names (`<state_dir>/workers/<env>-<engine pid>-<worker>.jsonl`)
//! and read by `get logs`. Every record is also a `tracing` event.
//!
//! The worker's stdout and stderr (what its tasks print) go to the `.log` file beside it. A
//! record carries `log_offset`, the size of that file when the event happened, so the output of
//! one attempt is the bytes between its `begin` and its `end` (interleaved with the output of
//! other attempts running at the same time on the same worker).

use std::fs::File;
use std::io::Write;
use std::path::Path;

use parking_lot::Mutex;
use serde::{Deserialize, Serialize};
use weir_core::ActionId;
use weir_core::clock::now_us;

use super::protocol::LeasedAction;

/// What happened.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum WorkerEvent {
    /// A leased attempt starts running.
    Begin,
    /// It ended (`ok`, and the error's `message` when it failed); its completion is queued.
    End,
    /// The engine cancelled it (timeout, abort, caller gone): it was dropped unfinished.
    Cancelled,
    /// The engine rejected its completion (the lease was no longer current).
    Rejected,
    /// Completions could not be delivered.
    Undelivered,
    /// The worker stops leasing (`message` says why).
    Stop,
}

/// One record of a worker's structured log. Fields that do not apply are left out.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct WorkerLogRecord {
    /// When (µs since the epoch).
    pub at: i64,
    /// What happened.
    pub event: WorkerEvent,
    /// Worker id.
    pub worker: String,
    /// Run name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub run: Option<String>,
    /// Action id, as shown (`a0`, or 16 hex digits).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub action: Option<String>,
    /// Attempt number.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub attempt: Option<u32>,
    /// Full task name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub task: Option<String>,
    /// Lease id.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lease: Option<u64>,
    /// Whether the attempt succeeded (`end`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ok: Option<bool>,
    /// Explanation (an error, a refusal, why the worker stops).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    /// Bytes of the worker's stdout/stderr log written before this event, when that is a file.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub log_offset: Option<u64>,
}

impl WorkerLogRecord {
    fn new(event: WorkerEvent, worker: &str) -> WorkerLogRecord {
        WorkerLogRecord {
            at: now_us(),
            event,
            worker: worker.to_string(),
            run: None,
            action: None,
            attempt: None,
            task: None,
            lease: None,
            ok: None,
            message: None,
            log_offset: None,
        }
    }

    /// A record about one leased attempt.
    fn about(event: WorkerEvent, worker: &str, a: &LeasedAction) -> WorkerLogRecord {
        WorkerLogRecord {
            run: Some(a.run_name.clone()),
            action: Some(a.action.to_string()),
            attempt: Some(a.attempt),
            task: Some(a.task.clone()),
            lease: Some(a.lease),
            ..WorkerLogRecord::new(event, worker)
        }
    }
}

/// Reads a worker's structured log (lines that do not parse are skipped: a worker killed
/// mid-write leaves half a line).
pub fn read_worker_log(path: &Path) -> std::io::Result<Vec<WorkerLogRecord>> {
    Ok(std::fs::read_to_string(path)?
        .lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect())
}

/// The writing side, one per worker.
pub(crate) struct WorkerLog {
    worker: String,
    file: Option<Mutex<File>>,
}

impl WorkerLog {
    /// Appends to `path` when given (created if needed); otherwise only `tracing` events.
    pub(crate) fn open(worker: &str, path: Option<&Path>) -> WorkerLog {
        let file = path.and_then(|p| {
            std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(p)
                .inspect_err(|e| {
                    tracing::warn!(path = %p.display(), error = %e, "cannot open the worker log")
                })
                .ok()
        });
        WorkerLog {
            worker: worker.to_string(),
            file: file.map(Mutex::new),
        }
    }

    fn write(&self, mut rec: WorkerLogRecord) {
        if self.file.is_some() {
            rec.log_offset = output_offset();
        }
        let WorkerLogRecord {
            event,
            worker,
            run,
            action,
            attempt,
            task,
            lease,
            ok,
            message,
            ..
        } = &rec;
        let message = message.as_deref().unwrap_or("");
        match event {
            WorkerEvent::Rejected | WorkerEvent::Undelivered => {
                tracing::warn!(?event, worker, action, attempt, lease, "{message}")
            }
            _ => tracing::info!(
                ?event,
                worker,
                run,
                action,
                attempt,
                task,
                lease,
                ok,
                "{message}"
            ),
        }
        let Some(file) = &self.file else {
            return;
        };
        if let Ok(mut line) = serde_json::to_vec(&rec) {
            line.push(b'\n');
            // One write per record: records of concurrent attempts never interleave.
            let _ = file.lock().write_all(&line);
        }
    }

    /// A leased attempt starts.
    pub(crate) fn begin(&self, a: &LeasedAction) {
        self.write(WorkerLogRecord::about(WorkerEvent::Begin, &self.worker, a));
    }

    /// A leased attempt ended; `error` is its error's message when it failed.
    pub(crate) fn end(&self, a: &LeasedAction, error: Option<String>) {
        self.write(WorkerLogRecord {
            ok: Some(error.is_none()),
            message: error,
            ..WorkerLogRecord::about(WorkerEvent::End, &self.worker, a)
        });
    }

    /// The engine cancelled a leased attempt; it is dropped.
    pub(crate) fn cancelled(&self, a: &LeasedAction) {
        self.write(WorkerLogRecord {
            message: Some("cancelled by the engine".into()),
            ..WorkerLogRecord::about(WorkerEvent::Cancelled, &self.worker, a)
        });
    }

    /// The engine rejected the completion of `lease` (of `(action, attempt)`).
    pub(crate) fn rejected(&self, lease: u64, leased: Option<(ActionId, u32)>, why: String) {
        self.write(WorkerLogRecord {
            action: leased.map(|(action, _)| action.to_string()),
            attempt: leased.map(|(_, attempt)| attempt),
            lease: Some(lease),
            message: Some(why),
            ..WorkerLogRecord::new(WorkerEvent::Rejected, &self.worker)
        });
    }

    /// `count` completions could not be delivered.
    pub(crate) fn undelivered(&self, count: usize, why: String) {
        self.write(WorkerLogRecord {
            message: Some(format!("{count} completions lost: {why}")),
            ..WorkerLogRecord::new(WorkerEvent::Undelivered, &self.worker)
        });
    }

    /// The worker stops leasing.
    pub(crate) fn stop(&self, why: String) {
        self.write(WorkerLogRecord {
            message: Some(why),
            ..WorkerLogRecord::new(WorkerEvent::Stop, &self.worker)
        });
    }
}

/// The size of the file the worker's stdout goes to (its stderr goes to the same file when a
/// launcher starts it), after flushing stdout; `None` when stdout is not a file.
fn output_offset() -> Option<u64> {
    let _ = std::io::stdout().flush();
    #[cfg(unix)]
    {
        use std::os::fd::AsFd;
        let fd = std::io::stdout().as_fd().try_clone_to_owned().ok()?;
        let meta = File::from(fd).metadata().ok()?;
        meta.is_file().then_some(meta.len())
    }
    #[cfg(not(unix))]
    {
        None
    }
}
