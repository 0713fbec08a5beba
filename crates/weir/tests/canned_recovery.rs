//! Recovery from a canned state, in the spirit of Temporal's canned histories: the state a
//! crashed process left is written row by row (a child that succeeded, one that failed for
//! good, a recorded trace, the root found running), then the run is resumed, and the test
//! checks what the resumed root got replayed and what actually ran.

use std::collections::HashMap;
use std::sync::{LazyLock, Mutex};

use serde::Serialize;
use weir::prelude::*;
use weir::{ActionId, Runner};
use weir_core::ids::inputs_hash;
use weir_core::{ActionStatus, CallKey, ErrorKind, Failure, codec};
use weir_store::{ActionKind, NewRun, Payload, WriteOp};

static ENV: LazyLock<TaskEnvironment> = LazyLock::new(|| TaskEnvironment::new("canned"));

static RAN: LazyLock<Mutex<HashMap<&'static str, u64>>> = LazyLock::new(Default::default);
fn ran(what: &'static str) {
    *RAN.lock().unwrap().entry(what).or_default() += 1;
}
fn runs_of(what: &str) -> u64 {
    RAN.lock().unwrap().get(what).copied().unwrap_or(0)
}

#[weir::task(env = ENV)]
async fn ok_child(x: u64) -> Result<u64> {
    ran("ok_child");
    Ok(x * 10)
}

#[weir::task(env = ENV)]
async fn bad_child(x: u64) -> Result<u64> {
    ran("bad_child");
    Ok(x)
}

#[weir::task(env = ENV)]
async fn fresh_child(x: u64) -> Result<u64> {
    ran("fresh_child");
    Ok(x)
}

#[weir::trace]
async fn looked_up(x: u64) -> u64 {
    ran("looked_up");
    x + 1
}

#[weir::task(env = ENV)]
async fn canned_root() -> Result<(u64, String, u64, u64)> {
    ran("canned_root");
    let a = ok_child(1).await?;
    let b = match bad_child(2).await {
        Ok(v) => format!("ran: {v}"),
        Err(e) => e.to_string(),
    };
    let c = looked_up(3).await;
    let d = fresh_child(4).await?;
    Ok((a, b, c, d))
}

fn child_id(task: &str, inputs: &[u8]) -> ActionId {
    ActionId::derive(
        ActionId::ROOT,
        &CallKey {
            task,
            inputs_hash: inputs_hash(inputs),
            seq: 0,
            group: None,
        },
    )
}

fn insert(
    run: weir_store::RunId,
    id: ActionId,
    task: &str,
    kind: ActionKind,
    inputs: Vec<u8>,
) -> WriteOp {
    WriteOp::InsertAction {
        run,
        id,
        parent: ActionId::ROOT,
        task: task.to_string().into(),
        group: None,
        kind,
        inputs: Payload::Inline(inputs),
        queued_at: 1,
    }
}

fn finish(run: weir_store::RunId, id: ActionId, out: Result<Vec<u8>, Failure>) -> WriteOp {
    let (status, output, error) = match out {
        Ok(b) => (ActionStatus::Succeeded, Some(Payload::Inline(b)), None),
        Err(f) => (ActionStatus::Failed, None, Some(f)),
    };
    WriteOp::FinishAction {
        run,
        id,
        status,
        output,
        error,
        cache_hit: false,
        ended_at: 2,
        phases: None,
    }
}

#[tokio::test]
async fn a_resumed_root_replays_recorded_children_and_traces_and_runs_the_rest() {
    let dir = tempfile::tempdir().unwrap();
    let (_, root_inputs) = canned_root().into_parts();
    let (_, ok_inputs) = ok_child(1).into_parts();
    let (_, bad_inputs) = bad_child(2).into_parts();
    #[derive(Serialize)]
    struct TraceArgs {
        x: u64,
    }
    let trace_inputs = codec::encode(&TraceArgs { x: 3 }).unwrap();
    let (ok_inputs, bad_inputs) = (ok_inputs.unwrap(), bad_inputs.unwrap());

    // The canned state: what a process killed in the middle of the root left behind.
    {
        let store = weir_store::open(dir.path(), Default::default()).unwrap();
        let (run, _) = store
            .create_run(NewRun {
                name: "canned".into(),
                task: "canned.canned_root".into(),
                inputs: Payload::Inline(root_inputs.unwrap()),
                context: serde_json::json!({}),
                // A process of this host that no longer exists.
                owner: format!("pid {}", u32::MAX - 1),
                queue: None,
            })
            .await
            .unwrap();
        store.write(WriteOp::StartAttempt {
            run: run.id,
            id: ActionId::ROOT,
            attempt: 1,
            started_at: 1,
        });
        let ok = child_id("canned.ok_child", &ok_inputs);
        store.write(insert(
            run.id,
            ok,
            "canned.ok_child",
            ActionKind::Task,
            ok_inputs,
        ));
        store.write(finish(run.id, ok, Ok(codec::encode(&777u64).unwrap())));
        let bad = child_id("canned.bad_child", &bad_inputs);
        store.write(insert(
            run.id,
            bad,
            "canned.bad_child",
            ActionKind::Task,
            bad_inputs,
        ));
        store.write(finish(
            run.id,
            bad,
            Err(Failure {
                action_id: bad.to_string(),
                task: "canned.bad_child".into(),
                kind: ErrorKind::NonRecoverable,
                message: "recorded failure".into(),
                chain: vec![],
            }),
        ));
        let trace = child_id("looked_up", &trace_inputs);
        store.write(insert(
            run.id,
            trace,
            "looked_up",
            ActionKind::Trace,
            trace_inputs,
        ));
        store.write(finish(run.id, trace, Ok(codec::encode(&999u64).unwrap())));
        store.close().unwrap();
    }

    let runner = Runner::embedded(dir.path()).await.unwrap();
    let run = runner
        .resume::<(u64, String, u64, u64)>("canned")
        .await
        .unwrap();
    let (a, b, c, d) = run.wait().await.unwrap();
    // The recorded success and trace come back as recorded (not recomputed: 10 and 4 would be).
    assert_eq!((a, c), (777, 999));
    // The recorded non-recoverable failure is re-raised without running the child.
    assert!(b.contains("recorded failure"), "{b}");
    // Only what was not recorded runs: the root again, and the fresh child.
    assert_eq!(d, 4);
    assert_eq!(
        (
            runs_of("canned_root"),
            runs_of("ok_child"),
            runs_of("bad_child"),
            runs_of("looked_up"),
            runs_of("fresh_child")
        ),
        (1, 0, 0, 0, 1)
    );
    let p = run.progress();
    assert_eq!(p.recovered, 1, "one task call answered from the store");
}
