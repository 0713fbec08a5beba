//! The UI's read model on PostgreSQL answers exactly as SQLite's: the same state is written
//! through the `Store` trait into both (runs in each status, nested actions in groups and
//! ungrouped, failed attempts, inline and offloaded payloads, a cache hit, a recovered action,
//! a trace), and every `ReadModel` method is asked the same questions on both.
//!
//! Only `seq` (creation order) differs in value between the backends (PostgreSQL's sequence
//! has gaps), so it is compared as its rank among the state's actions; run creation times
//! and the roots' queue times (the clock's) are left out.

use std::collections::BTreeMap;
use std::sync::Arc;

use weir_core::{ActionId, ActionStatus, ErrorKind, Failure};
use weir_store::{
    ActionKind, AttemptRecord, NewRun, Page, Payload, ReadModel, RunId, RunStatus, SqliteStore,
    Store, StoreOptions, UiAction, UiReader, UiRun, UiRunFilter, WriteOp,
};

mod pg;

fn failure(id: u64, message: &str) -> Failure {
    Failure {
        action_id: ActionId(id).to_string(),
        task: "cpu.work".into(),
        kind: ErrorKind::User,
        message: message.into(),
        chain: vec!["cause".into()],
    }
}

fn offloaded(path: &str, size: u64) -> Payload {
    Payload::Offloaded {
        path: path.into(),
        size,
        hash: Some("ab".repeat(32)),
    }
}

async fn put(store: &dyn Store, op: WriteOp) {
    store.commit(op).await.unwrap();
}

async fn insert(
    store: &dyn Store,
    run: RunId,
    id: u64,
    parent: u64,
    task: &'static str,
    group: Option<&str>,
    inputs: Payload,
) {
    put(
        store,
        WriteOp::InsertAction {
            run,
            id: ActionId(id),
            parent: ActionId(parent),
            task: task.into(),
            group: group.map(Arc::from),
            kind: ActionKind::Task,
            inputs,
            queued_at: 1_000 + id as i64,
        },
    )
    .await;
}

async fn start(store: &dyn Store, run: RunId, id: u64, attempt: u32) {
    put(
        store,
        WriteOp::StartAttempt {
            run,
            id: ActionId(id),
            attempt,
            started_at: 2_000 + 10 * id as i64 + attempt as i64,
        },
    )
    .await;
}

async fn finish(store: &dyn Store, run: RunId, id: u64, status: ActionStatus, output: Payload) {
    let failed = status != ActionStatus::Succeeded;
    put(
        store,
        WriteOp::FinishAction {
            run,
            id: ActionId(id),
            status,
            output: (!failed).then_some(output),
            error: failed.then(|| failure(id, "it broke")),
            cache_hit: id == 4,
            ended_at: 5_000 + 7 * id as i64,
            phases: None,
        },
    )
    .await;
}

fn new_run(name: &str) -> NewRun {
    NewRun {
        name: name.into(),
        task: "cpu.root".into(),
        inputs: offloaded(&format!("{name}/0/inputs"), 70_000),
        context: serde_json::json!({"labels": {"team": "x"}, "limits": {"cpu": 4}}),
        owner: "me".into(),
        queue: None,
    }
}

/// The same state, written the same way (each write committed before the next, so creation
/// order is the same on both).
async fn build(store: &dyn Store) {
    let (old, _) = store.create_run(new_run("old-batch")).await.unwrap();
    insert(
        store,
        old.id,
        1,
        0,
        "cpu.work",
        None,
        Payload::Inline(vec![0x90]),
    )
    .await;
    start(store, old.id, 1, 1).await;
    finish(
        store,
        old.id,
        1,
        ActionStatus::Failed,
        Payload::Inline(vec![]),
    )
    .await;
    put(
        store,
        WriteOp::FinishRun {
            run: old.id,
            status: RunStatus::Failed,
            output: None,
            error: Some(failure(0, "a child failed")),
            ended_at: 9_000,
        },
    )
    .await;

    let (run, _) = store.create_run(new_run("fanout-main")).await.unwrap();
    let r = run.id;
    start(store, r, 0, 1).await;
    for id in 1..=5 {
        let inputs = if id == 2 {
            offloaded("fanout-main/2/inputs", 300_000)
        } else {
            Payload::Inline(vec![0x91, id as u8])
        };
        insert(store, r, id, 0, "cpu.work", Some("shards"), inputs).await;
    }
    insert(
        store,
        r,
        6,
        0,
        "gpu.train",
        None,
        Payload::Inline(vec![0xc0]),
    )
    .await;
    insert(
        store,
        r,
        7,
        0,
        "cpu.work",
        None,
        Payload::Inline(vec![0xc2]),
    )
    .await;
    // Children of action 1: a group, an ungrouped call and a trace.
    for id in 8..=10 {
        insert(
            store,
            r,
            id,
            1,
            "io.fetch",
            Some("inner"),
            Payload::Inline(vec![id as u8]),
        )
        .await;
    }
    insert(
        store,
        r,
        11,
        1,
        "cpu.work",
        None,
        Payload::Inline(vec![0xc3]),
    )
    .await;
    put(
        store,
        WriteOp::InsertAction {
            run: r,
            id: ActionId(12),
            parent: ActionId(1),
            task: "trace.step".into(),
            group: None,
            kind: ActionKind::Trace,
            inputs: Payload::Inline(vec![0xc0]),
            queued_at: 1_012,
        },
    )
    .await;
    put(
        store,
        WriteOp::RecoverAction {
            run: r,
            id: ActionId(13),
            parent: ActionId(0),
            task: "cpu.work".into(),
            group: Some(Arc::from("shards")),
            kind: ActionKind::Task,
            inputs: Payload::Inline(vec![0x91, 13]),
            output: offloaded("old-batch/13/outputs", 1_000_000),
            at: 1_013,
        },
    )
    .await;
    // Statuses: 1 running, 2 and 4 (a cache hit) succeeded, 3 failed after a retry, 5 retrying,
    // 8 succeeded with an offloaded output, 9 cancelled, the rest queued.
    for id in [1, 2, 3, 4, 5, 8, 9] {
        start(store, r, id, 1).await;
    }
    finish(
        store,
        r,
        2,
        ActionStatus::Succeeded,
        Payload::Inline(vec![0xa1, 0x61, 2]),
    )
    .await;
    finish(
        store,
        r,
        4,
        ActionStatus::Succeeded,
        Payload::Inline(vec![0x04]),
    )
    .await;
    finish(
        store,
        r,
        8,
        ActionStatus::Succeeded,
        offloaded("fanout-main/8/outputs", 90_000),
    )
    .await;
    finish(
        store,
        r,
        9,
        ActionStatus::Cancelled,
        Payload::Inline(vec![]),
    )
    .await;
    for (id, attempts, last) in [(3, 2, ActionStatus::Failed), (5, 1, ActionStatus::Retrying)] {
        for attempt in 1..=attempts {
            put(
                store,
                WriteOp::FailAttempt {
                    run: r,
                    id: ActionId(id),
                    attempt: AttemptRecord {
                        attempt,
                        started_at: 2_000 + attempt as i64,
                        ended_at: 3_000 + attempt as i64,
                        error: failure(id, &format!("attempt {attempt} failed")),
                        phases: None,
                    },
                    retrying: true,
                },
            )
            .await;
            if attempt < attempts || last == ActionStatus::Failed {
                start(store, r, id, attempt + 1).await;
            }
        }
        if last == ActionStatus::Failed {
            finish(store, r, id, last, Payload::Inline(vec![])).await;
        }
    }

    let (live, _) = store.create_run(new_run("fanout-live")).await.unwrap();
    insert(
        store,
        live.id,
        1,
        0,
        "cpu.work",
        Some("shards"),
        Payload::Inline(vec![1]),
    )
    .await;
    start(store, live.id, 1, 1).await;
    store
        .set_setting("blob_url", "file:///nowhere")
        .await
        .unwrap();
    store.sync().await.unwrap();
}

/// Ranks of `seq` values among all actions (creation order), from the read model itself.
fn seq_ranks(reads: &dyn ReadModel, runs: &[UiRun]) -> BTreeMap<i64, usize> {
    let mut seqs = Vec::new();
    for run in runs {
        let root = reads.action(run.id, ActionId::ROOT).unwrap().unwrap();
        seqs.push(root.action.seq);
        let mut parents = vec![ActionId::ROOT];
        while let Some(parent) = parents.pop() {
            for g in reads.child_groups(run.id, parent).unwrap() {
                let page = Page {
                    offset: 0,
                    limit: 500,
                };
                for a in reads
                    .children(run.id, parent, g.group.as_deref(), None, page)
                    .unwrap()
                {
                    seqs.push(a.seq);
                    parents.push(a.record.id);
                }
            }
        }
    }
    seqs.sort();
    seqs.iter().enumerate().map(|(i, s)| (*s, i)).collect()
}

fn run_line(r: &UiRun) -> String {
    format!(
        "{} {} {:?} ended={:?} context={} error={:?}",
        r.name, r.task, r.status, r.ended_at, r.context, r.error
    )
}

/// Everything the read model answers about the state, one line per answer.
fn snapshot(reads: &dyn ReadModel) -> Vec<String> {
    let mut out = Vec::new();
    let all = UiRunFilter {
        page: Page {
            offset: 0,
            limit: 100,
        },
        ..Default::default()
    };
    let (runs, total) = reads.runs(&all).unwrap();
    let rank = seq_ranks(reads, &runs);
    let rank = |seq: i64| rank[&seq];
    // A root is queued when its run is created, at the clock's time.
    let clock = |t: i64| if t > 1_000_000_000 { 0 } else { t };
    let action_line = |a: &UiAction| {
        let record = weir_store::ActionRecord {
            queued_at: clock(a.record.queued_at),
            ..a.record.clone()
        };
        format!(
            "#{} {record:?} has_children={}",
            rank(a.seq),
            a.has_children
        )
    };
    out.push(format!(
        "{total} runs: {:?}",
        runs.iter().map(run_line).collect::<Vec<_>>()
    ));
    for filter in [
        UiRunFilter {
            status: Some(RunStatus::Running),
            ..all.clone()
        },
        UiRunFilter {
            name_contains: Some("fanout".into()),
            page: Page {
                offset: 1,
                limit: 1,
            },
            ..all.clone()
        },
        UiRunFilter {
            name_contains: Some("nothing".into()),
            ..all.clone()
        },
    ] {
        let (rows, total) = reads.runs(&filter).unwrap();
        out.push(format!(
            "{filter:?}: {total} {:?}",
            rows.iter().map(run_line).collect::<Vec<_>>()
        ));
    }
    assert!(matches!(
        reads.run("no-such-run"),
        Err(weir_store::Error::UnknownRun(_))
    ));
    for name in ["old-batch", "fanout-main", "fanout-live"] {
        let run = reads.run(name).unwrap();
        out.push(run_line(&run));
        let (counts, max_seq) = reads.run_counts(run.id).unwrap();
        out.push(format!(
            "{name} counts {counts:?} newest #{}",
            rank(max_seq)
        ));
        for id in 0..=14u64 {
            let id = ActionId(id);
            let groups = reads.child_groups(run.id, id).unwrap();
            out.push(format!(
                "{name}/{id} groups {:?}",
                groups
                    .iter()
                    .map(|g| format!(
                        "{:?} {} {:?} #{}",
                        g.group,
                        g.count,
                        g.counts,
                        rank(g.first_seq)
                    ))
                    .collect::<Vec<_>>()
            ));
            let mut asked: Vec<Option<String>> = groups.iter().map(|g| g.group.clone()).collect();
            asked.push(Some("no-such-group".into()));
            for group in asked {
                for (status, offset, limit) in [
                    (None, 0, 500),
                    (None, 1, 2),
                    (Some(ActionStatus::Succeeded), 0, 500),
                    (Some(ActionStatus::Queued), 0, 1),
                ] {
                    let rows = reads
                        .children(run.id, id, group.as_deref(), status, Page { offset, limit })
                        .unwrap();
                    out.push(format!(
                        "{name}/{id} {group:?} {status:?} {offset}+{limit}: {:?}",
                        rows.iter().map(action_line).collect::<Vec<_>>()
                    ));
                }
            }
            match reads.action(run.id, id).unwrap() {
                None => out.push(format!("{name}/{id} none")),
                Some(d) => out.push(format!(
                    "{name}/{id} {} inputs={:?} output={:?} children={}",
                    action_line(&d.action),
                    d.inputs,
                    d.output,
                    d.children
                )),
            }
            for limit in [1, 10] {
                out.push(format!(
                    "{name}/{id} attempts({limit}) {:?}",
                    reads.failed_attempts(run.id, id, limit).unwrap()
                ));
            }
        }
        out.push(format!(
            "{name} tasks {:?}",
            reads
                .tasks_of(
                    run.id,
                    &[ActionId(6), ActionId(99), ActionId(0), ActionId(12)]
                )
                .unwrap()
        ));
        // Creation times come from each backend's clock: the aggregation is asked with fixed ones.
        let fixed = UiRun {
            created_at: 500,
            ..run.clone()
        };
        for buckets in [1, 7, 200] {
            let mut activity = reads.run_activity(&fixed, buckets, 8_000).unwrap();
            let lanes: Vec<String> = activity
                .lanes
                .drain(..)
                .map(|l| {
                    format!(
                        "#{} {:?}",
                        rank(l.first_seq),
                        weir_store::UiLane {
                            first_seq: 0,
                            queued_at: clock(l.queued_at),
                            ..l
                        }
                    )
                })
                .collect();
            out.push(format!(
                "{name} activity({buckets}) {activity:?} lanes {lanes:?}"
            ));
        }
    }
    for key in ["blob_url", "missing"] {
        out.push(format!("setting {key}: {:?}", reads.setting(key).unwrap()));
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_read_model_answers_as_sqlite_does() {
    let dir = tempfile::tempdir().unwrap();
    let sqlite = SqliteStore::open(dir.path(), StoreOptions::default()).unwrap();
    build(&sqlite).await;
    let pg = pg::Postgres::new();
    let postgres = pg.connect();
    build(&postgres).await;

    let sqlite_reads = UiReader::open(dir.path()).unwrap();
    let postgres_reads = postgres.read_model(2);
    let (expected, found) =
        tokio::task::spawn_blocking(move || (snapshot(&sqlite_reads), snapshot(&postgres_reads)))
            .await
            .unwrap();
    assert_eq!(expected.len(), found.len());
    for (e, f) in expected.iter().zip(&found) {
        assert_eq!(e, f, "SQLite (left) and PostgreSQL (right) differ");
    }
    // The state is what it should be, not merely the same on both.
    let text = expected.join("\n");
    for shown in [
        "3 runs",
        "groups [\"Some(\\\"shards\\\") 6",
        "Offloaded { path: \"fanout-main/8/outputs\"",
        "attempt 2 failed",
        "cache_hit: true",
        "recovered: true",
        "kind: Trace",
        "setting blob_url: Some(\"file:///nowhere\")",
    ] {
        assert!(text.contains(shown), "{shown:?} not in:\n{text}");
    }
    drop(postgres);
}
