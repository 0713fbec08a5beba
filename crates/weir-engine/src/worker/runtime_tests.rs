//! The worker's loops against an engine in the same process (a scripted [`WorkerApi`]): no
//! process, no HTTP.

use std::sync::LazyLock;
use std::sync::atomic::AtomicU32;

use futures::future::BoxFuture;
use weir_core::ActionId;
use weir_core::spec::{ReusePolicy, TaskEnvironment};
use weir_store::RunId;

use super::*;
use crate::registry::{Invoke, Registration, Settings, TaskConfig, TaskDef};
use crate::worker::api::ApiFuture;
use crate::worker::{Refusal, WorkerEvent, read_worker_log};

static ENV: LazyLock<TaskEnvironment> = LazyLock::new(|| {
    TaskEnvironment::new("inproc").reuse(ReusePolicy::new().replicas(1..=1).concurrency(2))
});

fn env() -> &'static TaskEnvironment {
    &ENV
}

/// Echoes its inputs; never ends when they are `[0]`.
fn invoke(inputs: Arc<[u8]>) -> BoxFuture<'static, crate::Result<Vec<u8>>> {
    Box::pin(async move {
        if inputs[..] == [0] {
            futures::future::pending::<()>().await;
        }
        Ok(inputs.to_vec())
    })
}

fn no_json(_: &str) -> Result<Vec<u8>, weir_core::codec::Error> {
    Ok(Vec::new())
}

static ECHO: TaskDef = TaskDef {
    name: "echo",
    module: "weir_engine::worker::runtime::tests",
    settings: Settings::Static {
        env,
        config: TaskConfig::default,
    },
    invoke: Invoke::Static(invoke),
    inputs_from_json: no_json,
    params: &[],
    source_hash: "",
    interface: "",
    resolved: std::sync::OnceLock::new(),
};

inventory::submit! { Registration(&ECHO) }

fn leased(lease: u64, inputs: u8) -> LeasedAction {
    LeasedAction {
        lease,
        run: RunId(1),
        run_name: "inproc-run".into(),
        action: ActionId(lease),
        attempt: 1,
        task: "inproc.echo".into(),
        inputs: vec![inputs],
        check_store: false,
        inputs_ref: None,
    }
}

/// Leases two attempts once (lease 1 ends, lease 2 never does), cancels lease 2 with the
/// first heartbeat, and retires the worker once lease 1 is completed. Or answers nothing.
#[derive(Default)]
struct Scripted {
    unreachable: bool,
    to_lease: Mutex<Vec<LeasedAction>>,
    heartbeats: AtomicU32,
    completions: Mutex<Vec<Completion>>,
}

impl Scripted {
    fn down(&self) -> Result<(), Error> {
        match self.unreachable {
            true => Err(Error::Unreachable {
                url: "in-process".into(),
                message: "down".into(),
            }),
            false => Ok(()),
        }
    }
}

impl WorkerApi for Scripted {
    fn register<'a>(&'a self, req: Register, secret: &'a str) -> ApiFuture<'a, Registered> {
        Box::pin(async move {
            assert_eq!((req.worker.as_str(), secret), ("w1", "secret"));
            Ok(Registered {
                token: "t".into(),
                object_store: None,
                reference_store: None,
            })
        })
    }
    fn lease(&self, _: LeaseRequest) -> ApiFuture<'_, LeaseResponse> {
        Box::pin(async move {
            self.down()?;
            let actions = std::mem::take(&mut *self.to_lease.lock());
            let done =
                !self.completions.lock().is_empty() && self.heartbeats.load(Ordering::Acquire) > 0;
            if actions.is_empty() && !done {
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
            Ok(LeaseResponse {
                actions,
                shutdown: done,
            })
        })
    }
    fn heartbeat(&self, _: Heartbeat) -> ApiFuture<'_, HeartbeatReply> {
        Box::pin(async move {
            self.down()?;
            let first = self.heartbeats.fetch_add(1, Ordering::AcqRel) == 0;
            Ok(HeartbeatReply {
                cancelled: if first { vec![2] } else { vec![] },
                shutdown: false,
            })
        })
    }
    fn complete(&self, req: CompleteBatch) -> ApiFuture<'_, CompleteReply> {
        Box::pin(async move {
            self.completions.lock().extend(req.completions);
            Ok(CompleteReply::default())
        })
    }
    fn submit(&self, _: SubmitBatch) -> ApiFuture<'_, ()> {
        Box::pin(async { Ok(()) })
    }
    fn results(&self, _: ResultsRequest) -> ApiFuture<'_, ResultsReply> {
        Box::pin(async {
            tokio::time::sleep(Duration::from_millis(5)).await;
            Ok(ResultsReply::default())
        })
    }
    fn cancel(&self, _: CancelCalls) -> ApiFuture<'_, ()> {
        Box::pin(async { Ok(()) })
    }
    fn trace_lookup(&self, _: TraceLookup) -> ApiFuture<'_, Checkpoint> {
        Box::pin(async { Err(refused()) })
    }
    fn trace_record(&self, _: TraceRecord) -> ApiFuture<'_, ()> {
        Box::pin(async { Err(refused()) })
    }
}

fn refused() -> Error {
    Error::Refused {
        request: "trace".into(),
        reason: Refusal::Conflict,
        message: "not in this test".into(),
    }
}

fn config(log: &std::path::Path) -> WorkerConfig {
    WorkerConfig {
        env: "inproc".into(),
        engine_url: String::new(),
        id: "w1".into(),
        credential: "secret".into(),
        once: false,
        heartbeat: Duration::from_millis(10),
        concurrency: None,
        cluster: false,
        log: Some(log.to_path_buf()),
    }
}

/// A guard against a hang, not a measure of speed.
const HANG: Duration = Duration::from_secs(30);

#[tokio::test]
async fn a_worker_runs_in_process_and_drops_the_attempt_the_engine_cancels() {
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("w1.jsonl");
    let engine = Arc::new(Scripted::default());
    *engine.to_lease.lock() = vec![leased(1, 7), leased(2, 0)];
    let api: Arc<dyn WorkerApi> = engine.clone();
    let ran = tokio::time::timeout(HANG, run_worker_with(config(&log), api)).await;
    ran.expect("the worker stopped").expect("without error");

    let completions = engine.completions.lock();
    assert_eq!(
        completions.len(),
        1,
        "only the attempt that ended completes"
    );
    assert_eq!(completions[0].lease, 1);
    assert!(matches!(&completions[0].outcome, AttemptOutcome::Output(b) if b == &[7]));

    let records = read_worker_log(&log).unwrap();
    let events: Vec<(WorkerEvent, Option<u64>)> =
        records.iter().map(|r| (r.event, r.lease)).collect();
    let has = |e: WorkerEvent, lease: u64| events.contains(&(e, Some(lease)));
    assert!(
        has(WorkerEvent::Begin, 1) && has(WorkerEvent::End, 1),
        "{events:?}"
    );
    assert!(
        has(WorkerEvent::Begin, 2) && has(WorkerEvent::Cancelled, 2),
        "{events:?}"
    );
    assert!(
        !has(WorkerEvent::End, 2),
        "the cancelled attempt ended: {events:?}"
    );
    let cancelled = records
        .iter()
        .find(|r| r.event == WorkerEvent::Cancelled)
        .unwrap();
    assert_eq!(cancelled.run.as_deref(), Some("inproc-run"));
    assert_eq!(cancelled.task.as_deref(), Some("inproc.echo"));
    assert_eq!(cancelled.action, Some(ActionId(2).to_string()));
    let last = records.last().unwrap();
    assert_eq!(last.event, WorkerEvent::Stop);
    assert_eq!(last.message.as_deref(), Some("retired by the engine"));
}

#[tokio::test]
async fn a_worker_whose_engine_stops_answering_returns_an_error() {
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("w1.jsonl");
    let engine = Arc::new(Scripted {
        unreachable: true,
        ..Scripted::default()
    });
    let ran = tokio::time::timeout(HANG, run_worker_with(config(&log), engine)).await;
    match ran.expect("the worker stopped") {
        Err(Error::EngineLost {
            requests,
            failures,
            last,
        }) => {
            assert_eq!((requests, failures), ("heartbeats", 10));
            assert!(last.contains("down"), "{last}");
        }
        other => panic!("not EngineLost: {other:?}"),
    }
    let records = read_worker_log(&log).unwrap();
    let stop = records.last().expect("a stop record");
    assert_eq!(stop.event, WorkerEvent::Stop);
    assert!(
        stop.message
            .as_deref()
            .is_some_and(|m| m.contains("stopped answering")),
        "{stop:?}"
    );
}
