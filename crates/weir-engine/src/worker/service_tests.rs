//! The engine's side of the protocol against a real engine and lease table, with a worker
//! that is only an entry in the replica table (no process, no HTTP): who may register, and
//! that trace and child-call requests are accepted only for attempts the caller holds.

use std::path::PathBuf;

use tokio::sync::oneshot;

use super::*;
use crate::EngineOptions;
use crate::engine::WeakEngine;
use crate::worker::WorkerOptions;
use crate::worker::leases::{AttemptSpec, Outcome};
use crate::worker::pool::{LaunchSpec, Launched, Launcher};

struct NoProcess;
struct Nothing;
impl Launcher for NoProcess {
    fn start(&self, _: &LaunchSpec) -> Result<Box<dyn Launched>, Error> {
        Ok(Box::new(Nothing))
    }
}
impl Launched for Nothing {
    fn pid(&self) -> u32 {
        0
    }
    fn exited(&mut self) -> std::io::Result<Option<String>> {
        Ok(None)
    }
    fn kill(&mut self) {}
}

const RUN: RunId = RunId(1);

fn action(n: u64) -> ActionId {
    ActionId(1000 + n)
}

/// An executor with worker `w1` of environment `e` holding a lease on `action(1)`.
fn setup(dir: &std::path::Path) -> (Engine, Arc<Executor>, oneshot::Receiver<Outcome>) {
    let engine = Engine::open_registered(EngineOptions::new(dir)).unwrap();
    let exec = Arc::new(Executor::new(
        WeakEngine::of(&engine),
        WorkerOptions::default(),
        dir,
        "the-secret".into(),
    ));
    let (tx, rx) = oneshot::channel();
    {
        let mut st = exec.state.lock();
        st.pool.set_launcher(Arc::new(NoProcess));
        let (n, id) = st.pool.next_id();
        let spec = LaunchSpec {
            env: "e".into(),
            worker: id,
            engine_url: String::new(),
            once: false,
            heartbeat: Duration::from_secs(1),
            log: PathBuf::new(),
            events: PathBuf::new(),
        };
        st.pool.start(n, spec).unwrap();
        st.leases.add_worker(n, "e");
        st.calls.add_worker(n);
        let attempt = AttemptSpec {
            run: RUN,
            run_name: Arc::from("r"),
            recovering: false,
            action: action(1),
            attempt: 1,
            task: "e.t",
            inputs: Arc::from(&b""[..]),
        };
        st.leases.enqueue("e", attempt, tx);
        assert_eq!(st.leases.lease(n, 1).len(), 1);
    }
    (engine, exec, rx)
}

fn reason(e: Error) -> Refusal {
    match e {
        Error::Refused { reason, .. } => reason,
        e => panic!("not a refusal: {e}"),
    }
}

#[tokio::test]
async fn only_a_launched_worker_with_the_secret_registers() {
    let dir = tempfile::tempdir().unwrap();
    let (_engine, exec, _rx) = setup(dir.path());
    let api = EngineApi::new(Arc::downgrade(&exec));
    let reg = |w: &str| Register {
        worker: w.into(),
        cluster: None,
    };
    let wrong = api.register(reg("w1"), "a-guess").await.unwrap_err();
    assert_eq!(reason(wrong), Refusal::Unauthorized);
    let stranger = api.register(reg("w9"), "the-secret").await.unwrap_err();
    assert_eq!(reason(stranger), Refusal::Conflict);
    let token = api.register(reg("w1"), "the-secret").await.unwrap().token;
    assert_eq!(exec.credentials.identify(&token).as_deref(), Some("w1"));
}

#[tokio::test]
async fn trace_and_child_requests_are_refused_for_attempts_the_worker_does_not_hold() {
    let dir = tempfile::tempdir().unwrap();
    let (_engine, exec, _rx) = setup(dir.path());
    let api = EngineApi::new(Arc::downgrade(&exec));
    let (held, other) = (action(1), action(2));

    let lookup = |parent| TraceLookup {
        worker: "w1".into(),
        run: RUN,
        id: action(3),
        parent,
        direct: false,
    };
    let e = api.trace_lookup(lookup(other)).await.unwrap_err();
    assert_eq!(reason(e), Refusal::Forbidden);
    let other_run = TraceLookup {
        run: RunId(2),
        ..lookup(held)
    };
    let e = api.trace_lookup(other_run).await.unwrap_err();
    assert_eq!(reason(e), Refusal::Forbidden);
    // The attempt it holds may look up (nothing recorded here).
    assert!(matches!(
        api.trace_lookup(lookup(held)).await.unwrap(),
        Checkpoint::Nothing
    ));

    let record = |parent| TraceRecord {
        worker: "w1".into(),
        run: RUN,
        id: action(3),
        parent,
        name: "tr".into(),
        inputs: vec![],
        started_at: 0,
        outcome: Ok(serde_bytes::ByteBuf::from(vec![1])),
        inputs_ref: None,
        output_ref: None,
    };
    let e = api.trace_record(record(other)).await.unwrap_err();
    assert_eq!(reason(e), Refusal::Forbidden);
    // A reference to an object, from the attempt it holds: refused (an engine offers its
    // workers no object store), not recorded as empty bytes.
    let stored = PayloadRef {
        key: "r/a3/1/1/outputs".into(),
        size: 70_000,
        hash: "0".repeat(64),
    };
    let with_ref = TraceRecord {
        outcome: Ok(serde_bytes::ByteBuf::new()),
        output_ref: Some(stored.clone()),
        ..record(held)
    };
    let e = api.trace_record(with_ref).await.unwrap_err();
    assert_eq!(reason(e), Refusal::BadRequest);

    let call = |parent| ChildCall {
        call: 1,
        run: RUN,
        parent,
        id: action(4),
        task: "e.t".into(),
        inputs: vec![],
        group: None,
        check_store: false,
        inputs_ref: None,
    };
    let submit = SubmitBatch {
        worker: "w1".into(),
        calls: vec![call(held), call(other)],
    };
    let e = api.submit(submit).await.unwrap_err();
    assert_eq!(reason(e), Refusal::Forbidden);
    let by_ref = SubmitBatch {
        worker: "w1".into(),
        calls: vec![ChildCall {
            inputs_ref: Some(stored),
            ..call(held)
        }],
    };
    let e = api.submit(by_ref).await.unwrap_err();
    assert_eq!(reason(e), Refusal::BadRequest);
    assert!(
        exec.state.lock().calls.running.is_empty(),
        "nothing of a refused batch started"
    );

    // A worker the engine does not know is refused as such.
    let stranger = TraceLookup {
        worker: "w9".into(),
        ..lookup(held)
    };
    let e = api.trace_lookup(stranger).await.unwrap_err();
    assert_eq!(reason(e), Refusal::Conflict);
}
