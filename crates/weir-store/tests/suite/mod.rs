//! The store conformance suite: what every backend of [`Store`] must do, run through
//! `dyn Store` against a fresh state of each backend. The checks are shared: this file is
//! included (`#[path]`) by `weir-store`'s `tests/conformance.rs` (SQLite) and by
//! `weir-store-postgres`'s (PostgreSQL), which each give a [`Fixture`] and list the checks with
//! [`conformance_tests!`]. Checks that only make sense for one backend (SQLite's read-only
//! opening, schema migrations) live in that backend's test file.
//!
//! Covered: write ordering within and across group commits, tickets resolving only after the
//! commit (visible to another connection), the sync barrier, run creation refusing a taken
//! name, ownership by compare-and-set with writes of a superseded owner refused, cache scope,
//! recovery reads (payloads, failed attempts, creation order, paging), an abort cancelling the
//! live actions queued before it (within one batch too), a finished run and run filters,
//! settings; the work queue: leases never given twice (four stores leasing at once), fenced
//! completion, heartbeats extending leases, the reaper's system retries, environments kept
//! apart, worker records; pages of actions with their payloads, and attempt logs.

#![allow(dead_code)]

use std::sync::Arc;

use weir_core::{ActionId, ActionStatus, ErrorKind, Failure};
use weir_store::{
    ActionKind, AttemptLog, AttemptRecord, CacheEntry, Error, NewRun, Page, Payload, QueuedAttempt,
    RunFilter, RunId, RunStatus, Store, WorkerRecord, WriteOp,
};

/// One fresh state of a backend (a temporary directory, a PostgreSQL schema), removed when
/// dropped.
pub trait Fixture {
    /// The backend's name, for messages.
    fn name(&self) -> &'static str;
    /// A new store on this state, as another process would open it (its own connections).
    fn open(&self) -> Arc<dyn Store>;
    /// A store on this state on other connections, to read what was committed.
    fn open_reader(&self) -> Arc<dyn Store> {
        self.open()
    }
    /// Whether the backend records attempt logs (else it refuses to).
    fn keeps_attempt_logs(&self) -> bool {
        true
    }
    /// Whether the backend keeps access tokens (else it refuses to).
    fn keeps_tokens(&self) -> bool {
        true
    }
}

/// Declares a `#[tokio::test]` per named check, each on a fresh fixture from `$fixture`.
macro_rules! conformance_tests {
    ($fixture:expr; $($check:ident),+ $(,)?) => {
        $(
            #[tokio::test]
            async fn $check() {
                let fixture = $fixture;
                $crate::suite::$check(&fixture).await;
            }
        )+
    };
}

/// Every shared check, for [`conformance_tests!`].
macro_rules! all_conformance_tests {
    ($fixture:expr) => {
        $crate::suite::conformance_tests!($fixture;
            writes_apply_in_order_and_tickets_resolve_after_the_commit,
            a_resubmitted_action_is_queued_again_and_ordering_holds_across_commits,
            a_recovered_action_reads_back_as_recovered_with_the_earlier_references,
            a_taken_run_name_is_refused_and_changes_nothing,
            ownership_is_compare_and_set_and_a_superseded_owner_writes_nothing,
            cache_lookups_respect_scope_and_clearing,
            recovery_reads_return_attempts_in_order_and_actions_by_page,
            settings_round_trip,
            leases_are_never_given_twice,
            completions_are_fenced_and_the_reaper_requeues_expired_leases,
            workers_are_recorded_and_heartbeats_refresh_them,
            an_abort_cancels_the_live_actions_queued_before_it_and_a_run_finishes,
            queue_entries_show_their_lease_and_later_attempts_wait_for_their_time,
            a_staged_write_is_seen_then_durable_and_keeps_its_order,
            a_run_created_with_a_queue_has_its_root_queued_and_a_refused_one_queues_nothing,
            a_capped_group_of_queues_never_has_more_leased_than_its_limit,
            a_page_of_actions_with_payloads_has_what_each_action_read_has,
            attempt_logs_round_trip_by_attempt_and_a_second_recording_changes_nothing,
            runs_are_listed_by_project_and_domain,
            tokens_are_kept_by_hash_and_revoked_by_prefix,
        );
    };
}

pub(crate) use {all_conformance_tests, conformance_tests};

pub fn new_run(name: &str, owner: &str) -> NewRun {
    NewRun {
        name: name.into(),
        task: "env.root".into(),
        inputs: Payload::Inline(vec![1, 2, 3]),
        context: serde_json::json!({"labels": {}}),
        owner: owner.into(),
        queue: None,
    }
}

pub fn insert(run: weir_store::RunId, id: u64) -> WriteOp {
    WriteOp::InsertAction {
        run,
        id: ActionId(id),
        parent: ActionId::ROOT,
        task: "env.child".into(),
        group: Some("g".into()),
        kind: ActionKind::Task,
        inputs: Payload::Offloaded {
            path: "r1/x/inputs".into(),
            size: 100_000,
            hash: Some("0f".repeat(32)),
        },
        queued_at: 1,
    }
}

pub fn finish(
    run: weir_store::RunId,
    id: u64,
    status: ActionStatus,
    output: Option<u8>,
) -> WriteOp {
    WriteOp::FinishAction {
        run,
        id: ActionId(id),
        status,
        output: output.map(|b| Payload::Inline(vec![b])),
        error: None,
        cache_hit: false,
        ended_at: 9,
        phases: None,
    }
}

pub fn failure(id: u64) -> Failure {
    Failure {
        action_id: ActionId(id).to_string(),
        task: "env.child".into(),
        kind: ErrorKind::User,
        message: "boom".into(),
        chain: vec![],
    }
}

pub async fn writes_apply_in_order_and_tickets_resolve_after_the_commit(fx: &dyn Fixture) {
    let backend = fx.name();
    let store = fx.open();
    {
        let (run, _) = store.create_run(new_run("r1", "me")).await.unwrap();
        assert_eq!(run.status, RunStatus::Running);
        let child = 77;
        store.write(insert(run.id, child));
        store.write(WriteOp::StartAttempt {
            run: run.id,
            id: ActionId(child),
            attempt: 1,
            started_at: 2,
        });
        store.write(WriteOp::FailAttempt {
            run: run.id,
            id: ActionId(child),
            attempt: AttemptRecord {
                attempt: 1,
                started_at: 2,
                ended_at: 3,
                error: failure(child),
                phases: None,
            },
            retrying: true,
        });
        // The retrying status is written (it is not only a passing state in memory).
        store.sync().await.unwrap();
        let rec = store
            .action(run.id, ActionId(child))
            .await
            .unwrap()
            .unwrap();
        assert_eq!(rec.status, ActionStatus::Retrying, "{backend}");
        store.write(WriteOp::StartAttempt {
            run: run.id,
            id: ActionId(child),
            attempt: 2,
            started_at: 4,
        });
        let ticket = store.commit(finish(run.id, child, ActionStatus::Succeeded, Some(9)));
        ticket.await.unwrap();
        // Visible to another connection as soon as the ticket resolved.
        let other = fx.open_reader();
        let rec = other
            .action(run.id, ActionId(child))
            .await
            .unwrap()
            .unwrap();
        assert_eq!(rec.status, ActionStatus::Succeeded);
        assert_eq!(rec.attempts, 2);
        assert_eq!(rec.output, Some(Payload::Inline(vec![9])));
        assert_eq!(
            rec.inputs,
            Some(Payload::Offloaded {
                path: "r1/x/inputs".into(),
                size: 100_000,
                hash: Some("0f".repeat(32)),
            })
        );
        assert_eq!(rec.group.as_deref(), Some("g"));
    }
}

pub async fn a_resubmitted_action_is_queued_again_and_ordering_holds_across_commits(
    fx: &dyn Fixture,
) {
    let backend = fx.name();
    let store = fx.open();
    {
        let (run, _) = store.create_run(new_run("r", "me")).await.unwrap();
        store.write(insert(run.id, 5));
        store
            .commit(finish(run.id, 5, ActionStatus::Failed, None))
            .await
            .unwrap();
        // A second commit: the re-insert must land after the failure, not be merged before it.
        store.write(insert(run.id, 5));
        store.sync().await.unwrap();
        let rec = store.action(run.id, ActionId(5)).await.unwrap().unwrap();
        assert_eq!(rec.status, ActionStatus::Queued, "{backend}");
        assert_eq!(rec.ended_at, None);
        // Within one batch the last write wins too.
        store.write(finish(run.id, 5, ActionStatus::Cancelled, None));
        store.write(insert(run.id, 5));
        store.write(finish(run.id, 5, ActionStatus::Succeeded, Some(1)));
        store.sync().await.unwrap();
        let rec = store.action(run.id, ActionId(5)).await.unwrap().unwrap();
        assert_eq!(rec.status, ActionStatus::Succeeded);
        assert_eq!(
            store
                .list_actions(run.id, Page::default())
                .await
                .unwrap()
                .len(),
            2
        );
    }
}

pub async fn a_recovered_action_reads_back_as_recovered_with_the_earlier_references(
    fx: &dyn Fixture,
) {
    let backend = fx.name();
    let store = fx.open();
    {
        let (run, _) = store.create_run(new_run("later", "me")).await.unwrap();
        let output = Payload::Offloaded {
            path: "earlier/7/1/outputs".into(),
            size: 10,
            hash: Some("ab".repeat(32)),
        };
        store.write(WriteOp::RecoverAction {
            run: run.id,
            id: ActionId(7),
            parent: ActionId::ROOT,
            task: "env.child".into(),
            group: Some("g".into()),
            kind: ActionKind::Trace,
            inputs: Payload::Inline(vec![1]),
            output: output.clone(),
            at: 5,
        });
        store.write(insert(run.id, 8));
        store.write(finish(run.id, 8, ActionStatus::Succeeded, Some(2)));
        store.sync().await.unwrap();
        let rec = store.action(run.id, ActionId(7)).await.unwrap().unwrap();
        assert_eq!(rec.status, ActionStatus::Succeeded, "{backend}");
        assert!(rec.recovered && !rec.cache_hit, "{rec:?}");
        assert_eq!((rec.kind, rec.attempts), (ActionKind::Trace, 0));
        assert_eq!(rec.output, Some(output));
        assert_eq!(rec.inputs, Some(Payload::Inline(vec![1])));
        assert_eq!(rec.ended_at, Some(5));
        let ran = store.action(run.id, ActionId(8)).await.unwrap().unwrap();
        assert!(!ran.recovered && !ran.cache_hit, "{ran:?}");
    }
}

pub async fn a_taken_run_name_is_refused_and_changes_nothing(fx: &dyn Fixture) {
    let backend = fx.name();
    let store = fx.open();
    {
        let (first, claim) = store.create_run(new_run("same", "a")).await.unwrap();
        assert_eq!((claim.epoch, claim.owner.as_str()), (1, "a"));
        let err = store.create_run(new_run("same", "b")).await.unwrap_err();
        assert!(
            matches!(err, Error::RunExists(ref n) if n == "same"),
            "{backend}: {err}"
        );
        let again = store.run_by_name("same").await.unwrap();
        assert_eq!(
            (again.id, again.owner.as_str(), again.epoch),
            (first.id, "a", 1)
        );
        let runs = store.list_runs(&RunFilter::default()).await.unwrap();
        assert_eq!(runs.len(), 1);
        assert!(matches!(
            store.run_by_name("nope").await,
            Err(Error::UnknownRun(_))
        ));
    }
}

pub async fn ownership_is_compare_and_set_and_a_superseded_owner_writes_nothing(fx: &dyn Fixture) {
    {
        let original = fx.open();
        let (run, _) = original
            .create_run(new_run("owned", "first"))
            .await
            .unwrap();
        original.write(insert(run.id, 1));
        original.sync().await.unwrap();
        // Two engines try to take it over having read epoch 1: exactly one wins.
        let a = fx.open();
        let b = fx.open();
        let won = a.claim_run(run.id, "second".into(), 1).await.unwrap();
        assert_eq!(won.epoch, 2);
        let lost = b.claim_run(run.id, "third".into(), 1).await.unwrap_err();
        assert!(
            matches!(lost, Error::RunOwned { ref owner, epoch: 2, .. } if owner == "second"),
            "{lost}"
        );
        // The first owner's writes are now refused, on its tickets, and change nothing.
        let refused = original
            .commit(finish(run.id, 1, ActionStatus::Succeeded, Some(1)))
            .await
            .unwrap_err();
        assert!(matches!(*refused, Error::RunOwned { .. }), "{refused}");
        // And stay refused, though nothing else was committed in between.
        let again = original
            .commit(finish(run.id, 1, ActionStatus::Failed, None))
            .await
            .unwrap_err();
        assert!(matches!(*again, Error::RunOwned { .. }), "{again}");
        let rec = a.action(run.id, ActionId(1)).await.unwrap().unwrap();
        assert_eq!(rec.status, ActionStatus::Queued);
        // The new owner writes.
        a.commit(finish(run.id, 1, ActionStatus::Succeeded, Some(1)))
            .await
            .unwrap();
        let rec = a.action(run.id, ActionId(1)).await.unwrap().unwrap();
        assert_eq!(rec.status, ActionStatus::Succeeded);
        let rec = a.run_by_name("owned").await.unwrap();
        assert_eq!((rec.owner.as_str(), rec.epoch), ("second", 2));
        // Writes of another run in the same store are unaffected.
        let (other, _) = original
            .create_run(new_run("other", "first"))
            .await
            .unwrap();
        original.commit(insert(other.id, 3)).await.unwrap();
        // An owner's heartbeat is recorded on the runs it drives.
        a.commit(WriteOp::OwnerAlive {
            owner: "second".into(),
            at: 123,
        })
        .await
        .unwrap();
        assert_eq!(
            a.run_by_name("owned").await.unwrap().owner_seen_at,
            Some(123)
        );
    }
}

pub fn entry(key: &str, project: &str, task: &str, byte: u8) -> CacheEntry {
    CacheEntry {
        key: key.into(),
        project: project.into(),
        domain: "development".into(),
        task: task.into(),
        version: "v1".into(),
        output: Payload::Inline(vec![byte]),
        created_at: byte as i64,
    }
}

pub async fn cache_lookups_respect_scope_and_clearing(fx: &dyn Fixture) {
    let backend = fx.name();
    let store = fx.open();
    {
        store.write(WriteOp::PutCache(entry("k", "alpha", "env.a", 1)));
        store.write(WriteOp::PutCache(entry("k2", "beta", "env.b", 2)));
        store.sync().await.unwrap();
        let global = store.cache_lookup("k", None).await.unwrap().unwrap();
        assert_eq!(global.output, Payload::Inline(vec![1]), "{backend}");
        assert!(
            store
                .cache_lookup("k", Some(("beta", "development")))
                .await
                .unwrap()
                .is_none()
        );
        assert!(
            store
                .cache_lookup("k", Some(("alpha", "development")))
                .await
                .unwrap()
                .is_some()
        );
        // Replacing an entry keeps one per key, project and domain.
        store.write(WriteOp::PutCache(entry("k", "alpha", "env.a", 7)));
        store.sync().await.unwrap();
        let all = store.list_cache(None, None, 10).await.unwrap();
        assert_eq!(all.len(), 2);
        assert_eq!(
            store
                .list_cache(Some("env.a"), None, 10)
                .await
                .unwrap()
                .len(),
            1
        );
        let beta = store.list_cache(None, Some("beta"), 10).await.unwrap();
        assert_eq!(beta.len(), 1, "{backend}");
        assert_eq!(beta[0].key, "k2", "{backend}");
        assert!(
            store
                .list_cache(Some("env.a"), Some("beta"), 10)
                .await
                .unwrap()
                .is_empty()
        );
        assert_eq!(store.clear_cache(Some("env.a")).await.unwrap(), 1);
        assert!(store.cache_lookup("k", None).await.unwrap().is_none());
        assert_eq!(store.clear_cache(None).await.unwrap(), 1);
    }
}

pub async fn recovery_reads_return_attempts_in_order_and_actions_by_page(fx: &dyn Fixture) {
    let backend = fx.name();
    let store = fx.open();
    {
        let (run, _) = store.create_run(new_run("rec", "me")).await.unwrap();
        for id in 1..=5 {
            store.write(insert(run.id, id * 10));
        }
        for attempt in 1..=3 {
            store.write(WriteOp::FailAttempt {
                run: run.id,
                id: ActionId(10),
                attempt: AttemptRecord {
                    attempt,
                    started_at: attempt as i64,
                    ended_at: attempt as i64 + 1,
                    error: failure(10),
                    phases: None,
                },
                retrying: attempt < 3,
            });
        }
        store.sync().await.unwrap();
        let attempts = store.failed_attempts(run.id, ActionId(10)).await.unwrap();
        assert_eq!(
            attempts.iter().map(|a| a.attempt).collect::<Vec<_>>(),
            vec![1, 2, 3],
            "{backend}"
        );
        let page = store
            .list_actions(
                run.id,
                Page {
                    offset: 2,
                    limit: 3,
                },
            )
            .await
            .unwrap();
        assert_eq!(
            page.iter().map(|a| a.id).collect::<Vec<_>>(),
            vec![ActionId(20), ActionId(30), ActionId(40)]
        );
        // Listings carry no payloads; one action's read carries them.
        assert!(page[0].inputs.is_none());
        let root = store.action(run.id, ActionId::ROOT).await.unwrap().unwrap();
        assert_eq!(root.inputs, Some(Payload::Inline(vec![1, 2, 3])));
        assert!(store.action(run.id, ActionId(999)).await.unwrap().is_none());
        let runs = store.list_runs(&RunFilter::default()).await.unwrap();
        assert_eq!(runs[0].actions.get("queued"), Some(&5));
        assert_eq!(runs[0].actions.get("retrying"), Some(&1));
    }
}

pub async fn settings_round_trip(fx: &dyn Fixture) {
    let backend = fx.name();
    let store = fx.open();
    {
        assert_eq!(store.setting("blob_url").await.unwrap(), None, "{backend}");
        store.set_setting("blob_url", "file:///x").await.unwrap();
        store.set_setting("blob_url", "s3://b/p").await.unwrap();
        assert_eq!(
            store.setting("blob_url").await.unwrap().as_deref(),
            Some("s3://b/p")
        );
    }
}

pub fn queued(run: RunId, action: u64, env: &str) -> QueuedAttempt {
    QueuedAttempt {
        run,
        action: ActionId(action),
        attempt: 1,
        env: env.into(),
        task: format!("{env}.t"),
    }
}

pub async fn leases_are_never_given_twice(fx: &dyn Fixture) {
    {
        let backend = fx.name();
        let store = fx.open();
        for i in 0..200 {
            store
                .enqueue(queued(RunId(1), i, "gpu"), i as i64)
                .await
                .unwrap();
        }
        // Four stores on the same state, as four engines or replicas, lease at once.
        let threads: Vec<_> = (0..4)
            .map(|w| {
                let store = fx.open();
                std::thread::spawn(move || {
                    let worker = format!("w{w}");
                    let mut got = Vec::new();
                    loop {
                        let batch = futures::executor::block_on(
                            store.lease(&worker, "gpu", 7, 1_000, 60_000_000),
                        )
                        .unwrap();
                        if batch.is_empty() {
                            break got;
                        }
                        got.extend(batch);
                    }
                })
            })
            .collect();
        let leases: Vec<_> = threads
            .into_iter()
            .flat_map(|t| t.join().unwrap())
            .collect();
        assert_eq!(leases.len(), 200, "{backend}");
        let actions: std::collections::HashSet<_> =
            leases.iter().map(|l| l.attempt.action).collect();
        assert_eq!(actions.len(), 200, "an attempt was leased twice");
        let ids: std::collections::HashSet<_> = leases.iter().map(|l| l.id).collect();
        assert_eq!(ids.len(), 200, "a lease id was reused");
    }
}

pub async fn completions_are_fenced_and_the_reaper_requeues_expired_leases(fx: &dyn Fixture) {
    let backend = fx.name();
    let store = fx.open();
    {
        let run = RunId(3);
        store.enqueue(queued(run, 1, "cpu"), 0).await.unwrap();
        store.enqueue(queued(run, 2, "gpu"), 0).await.unwrap();
        // Environments are kept apart, oldest first within one.
        let first = store.lease("a", "cpu", 10, 100, 1_000).await.unwrap();
        assert_eq!(first.len(), 1, "{backend}");
        assert_eq!(first[0].attempt.action, ActionId(1));
        assert_eq!(first[0].expires_at, 1_100);
        // Only the holder completes it.
        assert_eq!(store.complete(first[0].id, "b").await.unwrap(), None);
        // A heartbeat extends the lease: not reaped at its first expiry.
        assert_eq!(store.heartbeat("a", 900, 1_000).await.unwrap(), 1);
        assert!(store.reap(1_100, 3).await.unwrap().requeued.is_empty());
        // Silent past the extended expiry: requeued as a system retry.
        let reaped = store.reap(1_900, 3).await.unwrap();
        assert_eq!(reaped.requeued.len(), 1);
        assert!(reaped.gave_up.is_empty());
        // The lost worker's late completion is refused and changes nothing.
        assert_eq!(store.complete(first[0].id, "a").await.unwrap(), None);
        let second = store.lease("b", "cpu", 10, 2_000, 1_000).await.unwrap();
        assert_eq!(second.len(), 1);
        assert_eq!(second[0].system_retries, 1);
        assert_ne!(second[0].id, first[0].id, "a new fencing token");
        let done = store.complete(second[0].id, "b").await.unwrap().unwrap();
        assert_eq!(done.action, ActionId(1));
        // Completed: gone from the queue, and a second completion is refused.
        assert_eq!(store.complete(second[0].id, "b").await.unwrap(), None);
        assert!(
            store
                .lease("b", "cpu", 10, 3_000, 1_000)
                .await
                .unwrap()
                .is_empty()
        );
        // The reaper gives up after the allowed system retries.
        let mut now = 10_000;
        for retry in 0..3 {
            let l = store.lease("c", "gpu", 1, now, 10).await.unwrap();
            assert_eq!(l[0].system_retries, retry);
            now += 100;
            assert_eq!(
                store.reap(now, 2).await.unwrap().gave_up.len(),
                (retry == 2) as usize
            );
        }
        assert!(
            store
                .lease("c", "gpu", 1, now, 10)
                .await
                .unwrap()
                .is_empty()
        );
    }
}

pub async fn queue_entries_show_their_lease_and_later_attempts_wait_for_their_time(
    fx: &dyn Fixture,
) {
    let backend = fx.name();
    let store = fx.open();
    let (run, _) = store.create_run(new_run("q", "o")).await.unwrap();
    assert_eq!(store.run(run.id).await.unwrap().name, "q", "{backend}");
    // Leased with their rows in one call; entries of several actions at once.
    store.commit(insert(run.id, 7)).await.unwrap();
    store.enqueue(queued(run.id, 7, "io"), 0).await.unwrap();
    store.enqueue(queued(run.id, 8, "io"), 0).await.unwrap();
    let both = store
        .lease_with_actions("a", "io", 10, (0, 100), None, None)
        .await
        .unwrap();
    assert_eq!(both.len(), 2, "{backend}");
    let (with_row, rec) = &both[0];
    assert_eq!(with_row.attempt.action, ActionId(7), "{backend}");
    let rec = rec.as_ref().expect("action 7 has a row");
    assert!(
        matches!(&rec.inputs, Some(Payload::Offloaded { path, size: 100_000, .. }) if path == "r1/x/inputs"),
        "{backend}: {:?}",
        rec.inputs
    );
    assert!(both[1].1.is_none(), "action 8 has no row ({backend})");
    let keys = [
        (run.id, ActionId(7)),
        (run.id, ActionId(8)),
        (run.id, ActionId(9)),
    ];
    let mut entries = store.queue_entries(&keys).await.unwrap();
    entries.sort_by_key(|e| e.attempt.action);
    assert_eq!(entries.len(), 2, "{backend}");
    assert_eq!(
        entries[0].lease,
        Some((with_row.id, "a".to_string())),
        "{backend}"
    );
    // A lease request saying the worker received only the first lease puts the second back
    // (it may be leased again at once, under a new lease id).
    let again = store
        .lease_with_actions("a", "io", 10, (0, 100), Some(both[0].0.id), None)
        .await
        .unwrap();
    let second = store
        .queue_entry(run.id, ActionId(8))
        .await
        .unwrap()
        .expect("action 8 is still queued");
    assert_ne!(
        second.lease,
        Some((both[1].0.id, "a".to_string())),
        "{backend}"
    );
    assert!(again.iter().all(|(l, _)| l.attempt.action == ActionId(8)));
    store.complete(both[0].0.id, "a").await.unwrap();
    for (l, _) in &again {
        store.complete(l.id, "a").await.unwrap();
    }
    assert!(matches!(
        store.run(RunId(run.id.0 + 1000)).await,
        Err(Error::UnknownRun(_))
    ));
    assert_eq!(store.queue_entry(run.id, ActionId(1)).await.unwrap(), None);
    // A retry's attempt queued for later is not leased before its time.
    store
        .enqueue(queued(run.id, 1, "cpu"), 5_000)
        .await
        .unwrap();
    let entry = store
        .queue_entry(run.id, ActionId(1))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        (entry.attempt.attempt, &entry.lease),
        (1, &None),
        "{backend}"
    );
    assert!(
        store
            .lease("a", "cpu", 10, 4_999, 100)
            .await
            .unwrap()
            .is_empty()
    );
    let leased = store.lease("a", "cpu", 10, 5_000, 100).await.unwrap();
    assert_eq!(leased.len(), 1, "{backend}");
    let entry = store
        .queue_entry(run.id, ActionId(1))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        entry.lease,
        Some((leased[0].id, "a".to_string())),
        "{backend}"
    );
    // Queued again (a retry): the entry replaces the lease, and the old one is fenced off.
    let mut next = queued(run.id, 1, "cpu");
    next.attempt = 2;
    store.enqueue(next, 6_000).await.unwrap();
    let entry = store
        .queue_entry(run.id, ActionId(1))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        (entry.attempt.attempt, &entry.lease),
        (2, &None),
        "{backend}"
    );
    assert_eq!(
        store.complete(leased[0].id, "a").await.unwrap(),
        None,
        "{backend}"
    );
    // Leases granted above what the worker says it received go back to the queue.
    let got = store.lease("a", "cpu", 10, 7_000, 100).await.unwrap();
    assert_eq!(got.len(), 1, "{backend}");
    assert_eq!(store.release_unreceived("a", got[0].id).await.unwrap(), 0);
    assert_eq!(
        store.release_unreceived("a", got[0].id - 1).await.unwrap(),
        1
    );
    let entry = store
        .queue_entry(run.id, ActionId(1))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(entry.lease, None, "{backend}");
    let taken = store.lease("b", "cpu", 10, 7_000, 100).await.unwrap();
    assert_eq!(taken.len(), 1);
    // The same as writes inside a commit: a dequeue under a stale lease changes nothing, one
    // under the current lease removes the entry, an enqueue puts one back.
    let dequeue = |lease| WriteOp::Dequeue {
        run: run.id,
        action: ActionId(1),
        lease,
    };
    store.commit(dequeue(taken[0].id + 1)).await.unwrap();
    assert!(
        store
            .queue_entry(run.id, ActionId(1))
            .await
            .unwrap()
            .is_some(),
        "{backend}"
    );
    store.commit(dequeue(taken[0].id)).await.unwrap();
    assert_eq!(
        store.queue_entry(run.id, ActionId(1)).await.unwrap(),
        None,
        "{backend}"
    );
    let mut third = queued(run.id, 1, "cpu");
    third.attempt = 3;
    store.write(dequeue(taken[0].id));
    store
        .commit(WriteOp::Enqueue {
            attempt: third,
            due: 8_000,
        })
        .await
        .unwrap();
    let entry = store
        .queue_entry(run.id, ActionId(1))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        (entry.attempt.attempt, &entry.lease),
        (3, &None),
        "{backend}"
    );
    assert!(
        store
            .lease("b", "cpu", 10, 7_999, 100)
            .await
            .unwrap()
            .is_empty()
    );
}

pub async fn workers_are_recorded_and_heartbeats_refresh_them(fx: &dyn Fixture) {
    let backend = fx.name();
    let store = fx.open();
    {
        let w = WorkerRecord {
            id: "w1".into(),
            env: "gpu".into(),
            version: "abc123".into(),
            registered_at: 5,
            seen_at: 5,
        };
        store.register_worker(w.clone()).await.unwrap();
        store.heartbeat("w1", 50, 10).await.unwrap();
        let all = store.workers().await.unwrap();
        assert_eq!(all.len(), 1, "{backend}");
        assert_eq!(all[0].seen_at, 50);
        assert_eq!(all[0].version, "abc123");
    }
}

pub async fn an_abort_cancels_the_live_actions_queued_before_it_and_a_run_finishes(
    fx: &dyn Fixture,
) {
    let backend = fx.name();
    let store = fx.open();
    let (run, _) = store.create_run(new_run("abort", "me")).await.unwrap();
    store.write(insert(run.id, 1));
    store.write(insert(run.id, 2));
    // Action 1's attempt is queued and leased: the abort takes it off the queue, and the
    // holder's completion then finds no lease.
    store
        .enqueue(queued(run.id, 1, "abort-env"), 0)
        .await
        .unwrap();
    let leased = store
        .lease("w", "abort-env", 1, 0, 1_000_000)
        .await
        .unwrap();
    assert_eq!(leased.len(), 1, "{backend}");
    store
        .commit(WriteOp::FinishAction {
            run: run.id,
            id: ActionId(2),
            status: ActionStatus::Succeeded,
            output: Some(Payload::Inline(vec![2])),
            error: None,
            cache_hit: true,
            ended_at: 3,
            phases: None,
        })
        .await
        .unwrap();
    // Within one batch: 3 is queued before the abort, 4 after it.
    store.write(insert(run.id, 3));
    store.write(WriteOp::CancelLiveActions {
        run: run.id,
        error: failure(0),
        ended_at: 10,
    });
    store.write(insert(run.id, 4));
    store
        .commit(WriteOp::FinishRun {
            run: run.id,
            status: RunStatus::Aborted,
            output: None,
            error: Some(failure(0)),
            ended_at: 11,
        })
        .await
        .unwrap();
    let status = |id: u64| {
        let store = store.clone();
        async move {
            store
                .action(run.id, ActionId(id))
                .await
                .unwrap()
                .unwrap()
                .status
        }
    };
    assert_eq!(status(1).await, ActionStatus::Cancelled, "{backend}");
    assert_eq!(status(3).await, ActionStatus::Cancelled, "{backend}");
    assert_eq!(status(0).await, ActionStatus::Cancelled, "{backend}");
    assert_eq!(status(4).await, ActionStatus::Queued, "{backend}");
    assert_eq!(
        store.queue_entry(run.id, ActionId(1)).await.unwrap(),
        None,
        "{backend}"
    );
    assert_eq!(
        store.complete(leased[0].id, "w").await.unwrap(),
        None,
        "{backend}"
    );
    let done = store.action(run.id, ActionId(2)).await.unwrap().unwrap();
    assert_eq!(done.status, ActionStatus::Succeeded);
    assert!(done.cache_hit && !done.recovered, "{done:?}");
    assert_eq!(done.output, Some(Payload::Inline(vec![2])));
    let cancelled = store.action(run.id, ActionId(1)).await.unwrap().unwrap();
    assert_eq!(cancelled.ended_at, Some(10));
    assert_eq!(cancelled.error.map(|f| f.message), Some("boom".to_string()));
    let rec = store.run_by_name("abort").await.unwrap();
    assert_eq!(rec.status, RunStatus::Aborted);
    assert_eq!(rec.ended_at, Some(11));
    assert_eq!(rec.error.map(|f| f.message), Some("boom".to_string()));
    let aborted = store
        .list_runs(&RunFilter {
            status: Some(RunStatus::Aborted),
            name_contains: Some("bor".into()),
            ..RunFilter::default()
        })
        .await
        .unwrap();
    assert_eq!(aborted.len(), 1);
    assert_eq!(aborted[0].actions.get("cancelled"), Some(&3));
    assert!(
        store
            .list_runs(&RunFilter {
                status: Some(RunStatus::Running),
                ..RunFilter::default()
            })
            .await
            .unwrap()
            .is_empty()
    );
}

pub async fn a_staged_write_is_seen_then_durable_and_keeps_its_order(fx: &dyn Fixture) {
    let backend = fx.name();
    let store = fx.open();
    let (run, _) = store.create_run(new_run("staged", "me")).await.unwrap();
    store.write(insert(run.id, 5));
    let staged = store.commit_staged(finish(run.id, 5, ActionStatus::Succeeded, Some(4)));
    staged.visible.await.unwrap();
    // Seen by another connection once `visible` resolved.
    let other = fx.open_reader();
    let rec = other.action(run.id, ActionId(5)).await.unwrap().unwrap();
    assert_eq!(rec.status, ActionStatus::Succeeded, "{backend}");
    assert_eq!(rec.output, Some(Payload::Inline(vec![4])), "{backend}");
    staged.durable.await.unwrap();
    // A write queued after a staged one commits after it (never the later without the earlier).
    let staged = store.commit_staged(insert(run.id, 6));
    let ticket = store.commit(finish(run.id, 6, ActionStatus::Failed, None));
    ticket.await.unwrap();
    staged.visible.await.unwrap();
    staged.durable.await.unwrap();
    let rec = other.action(run.id, ActionId(6)).await.unwrap().unwrap();
    assert_eq!(rec.status, ActionStatus::Failed, "{backend}");
}

pub async fn a_run_created_with_a_queue_has_its_root_queued_and_a_refused_one_queues_nothing(
    fx: &dyn Fixture,
) {
    let backend = fx.name();
    let store = fx.open();
    let mut new = new_run("queued-root", "me");
    new.queue = Some("env@v1".into());
    let (run, _) = store.create_run(new).await.unwrap();
    let entry = store
        .queue_entry(run.id, ActionId::ROOT)
        .await
        .unwrap()
        .expect("the root is queued with its run");
    assert_eq!(
        (
            entry.attempt.attempt,
            entry.attempt.env.as_str(),
            entry.lease
        ),
        (1, "env@v1", None),
        "{backend}"
    );
    assert_eq!(entry.attempt.task, "env.root", "{backend}");
    // A second run of that name is refused and queues nothing more.
    let mut again = new_run("queued-root", "me");
    again.queue = Some("env@v1".into());
    assert!(matches!(
        store.create_run(again).await,
        Err(Error::RunExists(_))
    ));
    let leased = store
        .lease("w", "env@v1", 10, i64::MAX / 2, 100)
        .await
        .unwrap();
    assert_eq!(leased.len(), 1, "{backend}");
    assert_eq!(leased[0].attempt.run, run.id, "{backend}");
    // Without a queue, nothing is queued.
    let (plain, _) = store.create_run(new_run("plain", "me")).await.unwrap();
    assert_eq!(
        store.queue_entry(plain.id, ActionId::ROOT).await.unwrap(),
        None,
        "{backend}"
    );
}

pub async fn a_capped_group_of_queues_never_has_more_leased_than_its_limit(fx: &dyn Fixture) {
    let backend = fx.name();
    let store = fx.open();
    let (run, _) = store.create_run(new_run("capped", "o")).await.unwrap();
    // Two versions' queues of environment `gpu`, and one of `gpux` (not in the group).
    for id in 1..=6 {
        store
            .enqueue(queued(run.id, id, "gpu@v1"), 0)
            .await
            .unwrap();
    }
    for id in 7..=9 {
        store
            .enqueue(queued(run.id, id, "gpu@v2"), 0)
            .await
            .unwrap();
    }
    store
        .enqueue(queued(run.id, 10, "gpux@v1"), 0)
        .await
        .unwrap();
    let cap = weir_store::Cap {
        group: "gpu@".into(),
        limit: 4,
    };
    let lease = |worker: &'static str, env: &'static str, max: u32| {
        let store = store.clone();
        let cap = cap.clone();
        async move {
            store
                .lease_with_actions(worker, env, max, (0, 1_000_000), None, Some(&cap))
                .await
                .unwrap()
        }
    };
    let first = lease("a", "gpu@v1", 3).await;
    assert_eq!(first.len(), 3, "{backend}");
    // The other version's queue shares the limit: one more, not three.
    let second = lease("b", "gpu@v2", 3).await;
    assert_eq!(second.len(), 1, "{backend}");
    assert!(
        lease("a", "gpu@v1", 3).await.is_empty(),
        "{backend}: at the limit"
    );
    // Outside the group, no limit.
    let other = store
        .lease_with_actions(
            "c",
            "gpux@v1",
            3,
            (0, 1_000_000),
            None,
            Some(&weir_store::Cap {
                group: "gpux@".into(),
                limit: 1,
            }),
        )
        .await
        .unwrap();
    assert_eq!(other.len(), 1, "{backend}");
    // A completed attempt frees its place.
    store.complete(first[0].0.id, "a").await.unwrap();
    assert_eq!(lease("a", "gpu@v1", 3).await.len(), 1, "{backend}");
    // Leases asked for at the same time never pass the limit together.
    for (l, _) in first.iter().skip(1).chain(&second) {
        store
            .complete(l.id, if l.attempt.env == "gpu@v1" { "a" } else { "b" })
            .await
            .unwrap();
    }
    let together = futures::future::join_all([
        lease("p", "gpu@v1", 4),
        lease("q", "gpu@v1", 4),
        lease("r", "gpu@v2", 4),
    ])
    .await;
    let held: usize = together.iter().map(Vec::len).sum();
    let before = 1; // the one leased after the completion above
    assert!(
        held + before <= 4,
        "{backend}: {held} leased beside {before}"
    );
    assert_eq!(held, 3, "{backend}: the free places are used");
}

/// A page of actions with payloads: the same actions as [`Store::list_actions`]'s page, each
/// with the payloads [`Store::action`] reads (offloaded references and inline bytes alike).
pub async fn a_page_of_actions_with_payloads_has_what_each_action_read_has(fx: &dyn Fixture) {
    let backend = fx.name();
    let store = fx.open();
    let (run, _) = store.create_run(new_run("paged-io", "me")).await.unwrap();
    for id in 1..=4 {
        store.write(insert(run.id, id));
    }
    store.write(finish(run.id, 2, ActionStatus::Succeeded, Some(7)));
    store.write(finish(run.id, 3, ActionStatus::Failed, None));
    store.sync().await.unwrap();
    let reader = fx.open_reader();
    let page = Page {
        offset: 1,
        limit: 3,
    };
    let listed = reader.list_actions(run.id, page).await.unwrap();
    let with = reader
        .list_actions_with_payloads(run.id, page)
        .await
        .unwrap();
    assert_eq!(
        with.iter().map(|a| a.id).collect::<Vec<_>>(),
        listed.iter().map(|a| a.id).collect::<Vec<_>>(),
        "{backend}"
    );
    assert_eq!(
        with.iter().map(|a| a.id.0).collect::<Vec<_>>(),
        vec![1, 2, 3],
        "{backend}"
    );
    for a in &with {
        let one = reader.action(run.id, a.id).await.unwrap().unwrap();
        assert_eq!(
            (&a.inputs, &a.output),
            (&one.inputs, &one.output),
            "{backend}"
        );
        assert_eq!(
            (a.status, a.attempts),
            (one.status, one.attempts),
            "{backend}"
        );
        assert!(
            matches!(a.inputs, Some(Payload::Offloaded { .. })),
            "{backend}"
        );
    }
    assert_eq!(with[1].output, Some(Payload::Inline(vec![7])), "{backend}");
    assert_eq!(with[0].output, None, "{backend}");
    // The root's inline inputs, on the first page.
    let first = reader
        .list_actions_with_payloads(
            run.id,
            Page {
                offset: 0,
                limit: 1,
            },
        )
        .await
        .unwrap();
    assert_eq!(
        first[0].inputs,
        Some(Payload::Inline(vec![1, 2, 3])),
        "{backend}"
    );
    let past = Page {
        offset: 10,
        limit: 5,
    };
    assert!(
        reader
            .list_actions_with_payloads(run.id, past)
            .await
            .unwrap()
            .is_empty()
    );
}

fn attempt_log(run: RunId, action: u64, attempt: u32, lease: u64, text: &str) -> AttemptLog {
    AttemptLog {
        run,
        action: ActionId(action),
        attempt,
        lease,
        worker: "w1".into(),
        pid: 4242,
        env: "env".into(),
        task: "env.child".into(),
        started_at: 100 * lease as i64,
        ended_at: 100 * lease as i64 + 50,
        ok: attempt > 1,
        text: text.as_bytes().to_vec(),
        dropped: if lease == 9 { 1 << 20 } else { 0 },
        overlapping: attempt,
    }
}

/// Attempt logs (what cluster workers captured): recorded in batches, read back per action by
/// attempt then lease with every field, a log recorded again kept as first recorded, other
/// actions' logs apart. A backend that keeps none (SQLite: the embedded engine's workers log
/// to files) refuses both calls with `Error::Unsupported`.
pub async fn attempt_logs_round_trip_by_attempt_and_a_second_recording_changes_nothing(
    fx: &dyn Fixture,
) {
    let backend = fx.name();
    let store = fx.open();
    let (run, _) = store.create_run(new_run("logged", "me")).await.unwrap();
    let logs = vec![
        attempt_log(run.id, 1, 2, 9, "second\nattempt\n"),
        attempt_log(run.id, 1, 1, 7, "first attempt\n\u{1b}[31mred\n"),
        attempt_log(run.id, 1, 1, 3, "lost worker\n"),
        attempt_log(run.id, 2, 1, 4, ""),
    ];
    if !fx.keeps_attempt_logs() {
        let refused = store.record_attempt_logs(&logs).await.unwrap_err();
        assert!(matches!(refused, Error::Unsupported { .. }), "{refused}");
        assert!(refused.to_string().contains("get logs"), "{refused}");
        let refused = store.attempt_logs(run.id, ActionId(1)).await.unwrap_err();
        assert!(matches!(refused, Error::Unsupported { .. }), "{refused}");
        return;
    }
    store.record_attempt_logs(&logs[..2]).await.unwrap();
    store.record_attempt_logs(&[]).await.unwrap();
    // Delivered again (with other bytes): the first recording stays.
    let mut again = logs.clone();
    again[0].text = b"changed".to_vec();
    store.record_attempt_logs(&again).await.unwrap();
    let reader = fx.open_reader();
    let read = reader.attempt_logs(run.id, ActionId(1)).await.unwrap();
    assert_eq!(
        read,
        vec![logs[2].clone(), logs[1].clone(), logs[0].clone()],
        "{backend}"
    );
    let other = reader.attempt_logs(run.id, ActionId(2)).await.unwrap();
    assert_eq!(other, vec![logs[3].clone()], "{backend}");
    assert!(
        reader
            .attempt_logs(run.id, ActionId(3))
            .await
            .unwrap()
            .is_empty()
    );
    assert!(
        reader
            .attempt_logs(RunId(run.id.0 + 1), ActionId(1))
            .await
            .unwrap()
            .is_empty()
    );
}

/// Runs filtered by the project and domain of their context; a context naming none is in
/// the default project and domain.
pub async fn runs_are_listed_by_project_and_domain(fx: &dyn Fixture) {
    let backend = fx.name();
    let store = fx.open();
    let with = |name: &str, context: serde_json::Value| NewRun {
        context,
        ..new_run(name, "me")
    };
    store
        .create_run(with(
            "a1",
            serde_json::json!({"project": "a", "domain": "prod"}),
        ))
        .await
        .unwrap();
    store
        .create_run(with(
            "a2",
            serde_json::json!({"project": "a", "domain": null}),
        ))
        .await
        .unwrap();
    store
        .create_run(with("b1", serde_json::json!({"project": "b"})))
        .await
        .unwrap();
    store
        .create_run(with("d1", serde_json::json!({"labels": {}})))
        .await
        .unwrap();
    let names = |project: Option<&str>, domain: Option<&str>| {
        let store = &store;
        let filter = RunFilter {
            project: project.map(Into::into),
            domain: domain.map(Into::into),
            ..RunFilter::default()
        };
        async move {
            let mut names: Vec<String> = store
                .list_runs(&filter)
                .await
                .unwrap()
                .into_iter()
                .map(|r| r.name)
                .collect();
            names.sort();
            names
        }
    };
    assert_eq!(names(Some("a"), None).await, ["a1", "a2"], "{backend}");
    assert_eq!(names(Some("a"), Some("prod")).await, ["a1"], "{backend}");
    assert_eq!(
        names(Some("a"), Some("development")).await,
        ["a2"],
        "{backend}"
    );
    assert_eq!(names(Some("default"), None).await, ["d1"], "{backend}");
    assert_eq!(
        names(None, Some("development")).await,
        ["a2", "b1", "d1"],
        "{backend}"
    );
    assert!(names(Some("c"), None).await.is_empty(), "{backend}");
    assert_eq!(names(None, None).await.len(), 4, "{backend}");
}

/// Access tokens by hash: made, read, listed, revoked by a prefix of the hash. A backend that
/// keeps none (SQLite: only a control plane has tokens) refuses every call.
pub async fn tokens_are_kept_by_hash_and_revoked_by_prefix(fx: &dyn Fixture) {
    let backend = fx.name();
    let store = fx.open();
    let token = |hash: &str, project: &str, domain: Option<&str>, role: &str, at: i64| {
        weir_store::TokenRecord {
            hash: hash.into(),
            project: project.into(),
            domain: domain.map(Into::into),
            role: role.into(),
            created_at: at,
        }
    };
    let a = token("aaaa1111", "p1", None, "client", 1);
    let b = token("aaaa2222", "p2", Some("prod"), "worker", 2);
    let c = token("bbbb3333", "p1", None, "admin", 3);
    if !fx.keeps_tokens() {
        for refused in [
            store.create_token(&a).await.unwrap_err(),
            store.token("aaaa1111").await.unwrap_err(),
            store.list_tokens().await.unwrap_err(),
            store.revoke_tokens("aaaa").await.unwrap_err(),
        ] {
            assert!(matches!(refused, Error::Unsupported { .. }), "{refused}");
            assert!(refused.to_string().contains("access tokens"), "{refused}");
        }
        return;
    }
    for t in [&a, &b, &c] {
        store.create_token(t).await.unwrap();
    }
    // A hash is made once.
    assert!(store.create_token(&a).await.is_err(), "{backend}");
    assert_eq!(store.token("aaaa2222").await.unwrap(), Some(b.clone()));
    assert_eq!(store.token("aaaa").await.unwrap(), None, "{backend}");
    assert_eq!(
        store.list_tokens().await.unwrap(),
        vec![a.clone(), b.clone(), c.clone()]
    );
    assert_eq!(store.revoke_tokens("aaaa1").await.unwrap(), 1, "{backend}");
    assert_eq!(store.token("aaaa1111").await.unwrap(), None, "{backend}");
    assert_eq!(store.revoke_tokens("zz").await.unwrap(), 0, "{backend}");
    assert_eq!(store.list_tokens().await.unwrap(), vec![b, c], "{backend}");
}
