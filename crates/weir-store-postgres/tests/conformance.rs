//! The store conformance suite (`weir-store/tests/suite`, shared with SQLite) against
//! PostgreSQL, each check in a fresh schema (`t_<random>`) dropped at the end, so checks run in
//! parallel; and PostgreSQL's own checks (schema versioning).
//!
//! The server is `postgres://postgres@127.0.0.1:5432/test` unless `WEIR_TEST_POSTGRES` names
//! another. A server that cannot be reached fails the tests (it does not skip them).

use std::sync::Arc;

use weir_core::{ActionId, ActionStatus};
use weir_store::{Error, Store};
use weir_store_postgres::{PostgresOptions, PostgresStore, SCHEMA_VERSION};

#[path = "../../weir-store/tests/suite/mod.rs"]
mod suite;

mod pg;

use pg::{Postgres, url};

impl suite::Fixture for Postgres {
    fn name(&self) -> &'static str {
        "postgres"
    }
    fn open(&self) -> Arc<dyn Store> {
        Arc::new(self.connect())
    }
}

suite::all_conformance_tests!(Postgres::new());

#[tokio::test]
async fn postgres_refuses_a_newer_schema_and_keeps_its_state_across_connections() {
    let pg = Postgres::new();
    {
        let store = pg.connect();
        store.set_setting("k", "v").await.unwrap();
        store.close().unwrap();
    }
    // Connecting again finds the schema (and the state) in place.
    let store = pg.connect();
    assert_eq!(store.setting("k").await.unwrap().as_deref(), Some("v"));
    drop(store);
    pg.sql(format!(
        "UPDATE {}.meta SET value = {} WHERE key = 'schema_version'",
        pg.schema,
        SCHEMA_VERSION + 1
    ));
    let err = PostgresStore::connect(&url(), pg.options()).unwrap_err();
    assert!(
        matches!(err, Error::NewerSchema { found, .. } if found == SCHEMA_VERSION + 1),
        "{err}"
    );
    assert!(
        err.to_string()
            .contains(&format!("schema version {}", SCHEMA_VERSION + 1)),
        "{err}"
    );
}

/// A schema of version 1 (before `attempt_logs` and `tokens`) is migrated when a store
/// connects: the tables are added, the version recorded, and what was there kept.
#[tokio::test]
async fn postgres_migrates_a_version_1_schema_and_keeps_its_state() {
    let pg = Postgres::new();
    let run = {
        let store = pg.connect();
        let (run, _) = store.create_run(suite::new_run("old", "o")).await.unwrap();
        store.close().unwrap();
        run
    };
    // Version 1 had every table but `attempt_logs` (version 2) and `tokens` (version 3).
    pg.sql(format!(
        "DROP TABLE {0}.attempt_logs; DROP TABLE {0}.tokens;
         UPDATE {0}.meta SET value = 1 WHERE key = 'schema_version'",
        pg.schema
    ));
    let version = |pg: &Postgres| {
        pg.value(format!(
            "SELECT value::text FROM {}.meta WHERE key = 'schema_version'",
            pg.schema
        ))
    };
    assert_eq!(version(&pg), "1");
    let store = pg.connect();
    assert_eq!(version(&pg), SCHEMA_VERSION.to_string());
    assert_eq!(SCHEMA_VERSION, 4);
    assert!(store.list_tokens().await.unwrap().is_empty());
    assert_eq!(store.run_by_name("old").await.unwrap().id, run.id);
    let log = weir_store::AttemptLog {
        run: run.id,
        action: ActionId::ROOT,
        attempt: 1,
        lease: 1,
        worker: "w".into(),
        pid: 1,
        env: "env".into(),
        task: "env.root".into(),
        started_at: 1,
        ended_at: 2,
        ok: true,
        text: b"hello\n".to_vec(),
        dropped: 0,
        overlapping: 0,
    };
    store
        .record_attempt_logs(std::slice::from_ref(&log))
        .await
        .unwrap();
    assert_eq!(
        store.attempt_logs(run.id, ActionId::ROOT).await.unwrap(),
        vec![log]
    );
    drop(store);
    // Connecting again changes nothing.
    drop(pg.connect());
    assert_eq!(version(&pg), SCHEMA_VERSION.to_string());
}

#[tokio::test]
async fn postgres_writes_after_close_are_refused_and_an_unreachable_server_is_an_error() {
    let pg = Postgres::new();
    let store = pg.connect();
    store.close().unwrap();
    let refused = store
        .commit(weir_store::WriteOp::OwnerAlive {
            owner: "x".into(),
            at: 1,
        })
        .await
        .unwrap_err();
    assert!(matches!(*refused, Error::WriterGone), "{refused}");
    let err = PostgresStore::connect(
        "postgres://postgres@127.0.0.1:1/test?connect_timeout=5",
        PostgresOptions::default(),
    )
    .unwrap_err();
    assert!(matches!(err, Error::Database { .. }), "{err}");
    assert!(err.to_string().contains("connecting"), "{err}");
}

/// Statuses of actions `1..=n`.
async fn statuses(store: &dyn Store, run: weir_store::RunId, n: u64) -> Vec<ActionStatus> {
    let mut out = Vec::new();
    for id in 1..=n {
        let rec = store.action(run, ActionId(id)).await.unwrap().unwrap();
        out.push(rec.status);
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_a_takeover_racing_the_writer_lets_no_old_write_land_after_it() {
    let pg = Postgres::new();
    let a = Arc::new(pg.connect());
    let b = pg.connect();
    let (run, _) = a.create_run(suite::new_run("raced", "a")).await.unwrap();
    let n = 300;
    for id in 1..=n {
        a.write(suite::insert(run.id, id));
    }
    a.sync().await.unwrap();
    // The first owner finishes its actions one commit at a time while another takes it over.
    let writing = {
        let a = a.clone();
        tokio::spawn(async move {
            let mut committed = Vec::new();
            for id in 1..=n {
                let ticket = a.commit(suite::finish(run.id, id, ActionStatus::Succeeded, Some(1)));
                committed.push(match ticket.await {
                    Ok(()) => true,
                    Err(e) => {
                        assert!(matches!(*e, Error::RunOwned { .. }), "{e}");
                        false
                    }
                });
            }
            committed
        })
    };
    tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    b.claim_run(run.id, "b".into(), 1).await.unwrap();
    let at_takeover = statuses(&b, run.id, n).await;
    let committed = writing.await.unwrap();
    let after = statuses(&b, run.id, n).await;
    // Nothing of the first owner landed after the takeover...
    assert_eq!(at_takeover, after);
    // ...and a ticket said Ok exactly for the writes that landed.
    for (i, ok) in committed.iter().enumerate() {
        let landed = after[i] == ActionStatus::Succeeded;
        assert_eq!(*ok, landed, "action {}", i + 1);
    }
    assert!(
        committed.iter().any(|ok| *ok),
        "the takeover came before any write"
    );
    assert!(
        !committed.iter().all(|ok| *ok),
        "the takeover came after every write"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_group_commits_many_writes_in_order() {
    let pg = Postgres::new();
    let store = pg.connect();
    let (run, _) = store
        .create_run(suite::new_run("many", "me"))
        .await
        .unwrap();
    let n = 20_000u64;
    let started = std::time::Instant::now();
    for id in 1..=n {
        store.write(suite::insert(run.id, id));
        store.write(weir_store::WriteOp::StartAttempt {
            run: run.id,
            id: ActionId(id),
            attempt: 1,
            started_at: 2,
        });
        if id % 2 == 0 {
            store.write(suite::finish(run.id, id, ActionStatus::Succeeded, Some(1)));
        }
    }
    store.sync().await.unwrap();
    let unawaited = started.elapsed();
    let started = std::time::Instant::now();
    for id in 1..=200 {
        store
            .commit(suite::finish(run.id, id, ActionStatus::Failed, None))
            .await
            .unwrap();
    }
    let awaited = started.elapsed();
    eprintln!(
        "{} unawaited writes committed in {unawaited:?}; 200 awaited commits one after another in {awaited:?}",
        n * 5 / 2
    );
    let actions = store
        .list_actions(
            run.id,
            weir_store::Page {
                offset: 0,
                limit: 30_000,
            },
        )
        .await
        .unwrap();
    assert_eq!(actions.len() as u64, n + 1);
    // Creation order: the root, then 1..=n.
    assert!(
        actions
            .iter()
            .enumerate()
            .all(|(i, a)| a.id == ActionId(i as u64))
    );
    for a in &actions[1..] {
        let expected = match a.id.0 {
            1..=200 => ActionStatus::Failed,
            id if id % 2 == 0 => ActionStatus::Succeeded,
            _ => ActionStatus::Running,
        };
        assert_eq!(a.status, expected, "{a:?}");
        assert_eq!(a.attempts, 1);
    }
}

/// Windmill-style invariant check: 4 replicas (stores on their own connections) × 4 workers
/// each lease 3 000 attempts concurrently, in slots of 8, while a reaper with a short lease
/// time requeues what a slow worker holds too long. No attempt is held by two workers at
/// once, every attempt completes exactly once, and no worker ever holds more than its slots.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_workers_on_replicas_never_hold_one_attempt_twice() {
    use std::collections::{HashMap, HashSet};
    const N: u64 = 3_000;
    const SLOTS: u32 = 8;
    let pg = Postgres::new();
    let first = pg.connect();
    let (run, _) = first
        .create_run(suite::new_run("stress", "o"))
        .await
        .unwrap();
    for i in 0..N {
        first
            .enqueue(suite::queued(run.id, i + 1, "cpu"), 0)
            .await
            .unwrap();
    }
    let held: Arc<parking_lot::Mutex<HashSet<u64>>> = Arc::default();
    let completed: Arc<parking_lot::Mutex<HashMap<u64, u32>>> = Arc::default();
    let mut tasks = Vec::new();
    for r in 0..4 {
        let store: Arc<dyn Store> = Arc::new(pg.connect());
        for w in 0..4 {
            let (store, held, completed) = (store.clone(), held.clone(), completed.clone());
            let worker = format!("r{r}w{w}");
            tasks.push(tokio::spawn(async move {
                let mut idle = 0;
                while idle < 20 {
                    let now = weir_store::now_us();
                    let leases = store
                        .lease(&worker, "cpu", SLOTS, now, 2_000_000)
                        .await
                        .unwrap();
                    assert!(
                        leases.len() as u32 <= SLOTS,
                        "{worker} got {} leases",
                        leases.len()
                    );
                    if leases.is_empty() {
                        idle += 1;
                        tokio::time::sleep(std::time::Duration::from_millis(5)).await;
                        continue;
                    }
                    idle = 0;
                    for l in &leases {
                        let id = l.attempt.action.0;
                        assert!(
                            held.lock().insert(id),
                            "attempt {id} held by two workers at once"
                        );
                    }
                    for l in leases {
                        let id = l.attempt.action.0;
                        held.lock().remove(&id);
                        if store.complete(l.id, &worker).await.unwrap().is_some() {
                            *completed.lock().entry(id).or_default() += 1;
                        }
                    }
                }
            }));
        }
        // One reaper per replica.
        let store = store.clone();
        tasks.push(tokio::spawn(async move {
            for _ in 0..50 {
                store.reap(weir_store::now_us(), 100).await.unwrap();
                tokio::time::sleep(std::time::Duration::from_millis(10)).await;
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    let completed = completed.lock();
    assert_eq!(completed.len() as u64, N, "every attempt completed");
    assert!(
        completed.values().all(|n| *n == 1),
        "an attempt completed twice"
    );
}

/// The same with an environment's concurrency limit (`Cap`) over two versions' queues: 4
/// replicas × 4 workers leasing at once never have more than the limit leased together.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_workers_on_replicas_never_pass_a_concurrency_limit_together() {
    use std::collections::HashSet;
    const N: u64 = 1_000;
    const LIMIT: usize = 6;
    let pg = Postgres::new();
    let first = pg.connect();
    let (run, _) = first
        .create_run(suite::new_run("capped-stress", "o"))
        .await
        .unwrap();
    for i in 0..N {
        let queue = if i % 2 == 0 { "gpu@v1" } else { "gpu@v2" };
        first
            .enqueue(suite::queued(run.id, i + 1, queue), 0)
            .await
            .unwrap();
    }
    let cap = weir_store::Cap {
        group: "gpu@".into(),
        limit: LIMIT as u32,
    };
    let held: Arc<parking_lot::Mutex<HashSet<u64>>> = Arc::default();
    let most = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let done = Arc::new(std::sync::atomic::AtomicU64::new(0));
    let mut tasks = Vec::new();
    for r in 0..4 {
        let store: Arc<dyn Store> = Arc::new(pg.connect());
        for w in 0..4 {
            let (store, held, most, done, cap) = (
                store.clone(),
                held.clone(),
                most.clone(),
                done.clone(),
                cap.clone(),
            );
            let worker = format!("r{r}w{w}");
            let queue = if w % 2 == 0 { "gpu@v1" } else { "gpu@v2" };
            tasks.push(tokio::spawn(async move {
                let mut idle = 0;
                while idle < 40 {
                    let now = weir_store::now_us();
                    let leases = store
                        .lease_with_actions(&worker, queue, 4, (now, 60_000_000), None, Some(&cap))
                        .await
                        .unwrap();
                    if leases.is_empty() {
                        idle += 1;
                        tokio::time::sleep(std::time::Duration::from_millis(2)).await;
                        continue;
                    }
                    idle = 0;
                    {
                        let mut h = held.lock();
                        for (l, _) in &leases {
                            assert!(h.insert(l.attempt.action.0), "held twice");
                        }
                        most.fetch_max(h.len(), std::sync::atomic::Ordering::Relaxed);
                        assert!(
                            h.len() <= LIMIT,
                            "{} leased at once (limit {LIMIT})",
                            h.len()
                        );
                    }
                    tokio::time::sleep(std::time::Duration::from_millis(1)).await;
                    for (l, _) in leases {
                        held.lock().remove(&l.attempt.action.0);
                        if store.complete(l.id, &worker).await.unwrap().is_some() {
                            done.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                        }
                    }
                }
            }));
        }
    }
    for t in tasks {
        t.await.unwrap();
    }
    assert_eq!(
        done.load(std::sync::atomic::Ordering::Relaxed),
        N,
        "every attempt completed"
    );
    let most = most.load(std::sync::atomic::Ordering::Relaxed);
    assert!(
        most >= 2,
        "the workers did lease side by side (at most {most} at once)"
    );
}

/// The writer sends a batch's statements without waiting for each answer: a statement that
/// fails rolls back the whole batch (the statements sent before it included), its tickets get
/// the error, and the next batch commits normally.
#[tokio::test]
async fn a_failed_statement_rolls_back_its_whole_pipelined_batch() {
    let pg = Postgres::new();
    let store = pg.connect();
    let (run, _) = store
        .create_run(suite::new_run("pipelined", "me"))
        .await
        .unwrap();
    // Two statements of one batch: a cache entry, then an action PostgreSQL refuses (text
    // cannot hold a NUL byte).
    store.write(weir_store::WriteOp::PutCache(suite::entry(
        "k", "p", "env.a", 1,
    )));
    let mut bad = suite::insert(run.id, 5);
    if let weir_store::WriteOp::InsertAction { task, .. } = &mut bad {
        *task = "env.\0bad".into();
    }
    let err = store.commit(bad).await.unwrap_err();
    assert!(err.to_string().contains("committing writes"), "{err}");
    assert!(store.cache_lookup("k", None).await.unwrap().is_none());
    assert!(store.action(run.id, ActionId(5)).await.unwrap().is_none());
    // The connection is usable again.
    store
        .commit(weir_store::WriteOp::PutCache(suite::entry(
            "k2", "p", "env.a", 2,
        )))
        .await
        .unwrap();
    assert!(store.cache_lookup("k2", None).await.unwrap().is_some());
}
