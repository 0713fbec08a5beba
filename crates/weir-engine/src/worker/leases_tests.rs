//! Tests of the lease table (`leases.rs`): plain state, no process, no HTTP.

use super::*;
use crate::worker::protocol::RemoteError;
use weir_core::ErrorKind;

type Rx = oneshot::Receiver<Outcome>;

fn spec(action: u64) -> AttemptSpec {
    AttemptSpec {
        run: RunId(7),
        run_name: Arc::from("r"),
        recovering: false,
        action: ActionId(action),
        attempt: 1,
        task: "env.task",
        inputs: Arc::from(vec![action as u8]),
    }
}

/// A table with workers 1 and 2 of `env` and `n` queued attempts (actions 1..=n).
fn table(n: u64, max_system_retries: u32) -> (Leases, Vec<Rx>) {
    let mut t = Leases::new(max_system_retries);
    t.add_worker(1, "env");
    t.add_worker(2, "env");
    let rxs = (1..=n)
        .map(|a| {
            let (tx, rx) = oneshot::channel();
            t.enqueue("env", spec(a), tx);
            rx
        })
        .collect();
    (t, rxs)
}

fn done(a: &LeasedAction, bytes: Vec<u8>) -> Completion {
    Completion {
        lease: a.lease,
        run: None,
        attempt: a.attempt,
        action: a.action,
        outcome: AttemptOutcome::Output(bytes),
        log: None,
        phases: None,
    }
}

fn send_all(c: Completed) -> Vec<(u64, String)> {
    for d in c.deliveries {
        d.send();
    }
    c.rejected
}

#[test]
fn a_fenced_completion_is_refused_and_changes_nothing() {
    let (mut t, mut rxs) = table(1, 3);
    let a = t.lease(1, 10).pop().expect("one lease");
    let before = t.snapshot();
    let stale = [
        // A lease id that is not current.
        Completion {
            lease: a.lease + 100,
            run: None,
            ..done(&a, vec![1])
        },
        // The right lease for another attempt number.
        Completion {
            attempt: 2,
            ..done(&a, vec![1])
        },
        // The right lease naming another action.
        Completion {
            action: ActionId(99),
            ..done(&a, vec![1])
        },
    ];
    for c in stale {
        let rejected = send_all(t.complete(1, vec![c]));
        assert_eq!(rejected.len(), 1);
        assert!(rejected[0].1.contains("fenced off"), "{rejected:?}");
    }
    // The right token from another worker.
    let rejected = send_all(t.complete(2, vec![done(&a, vec![1])]));
    assert_eq!(rejected.len(), 1);
    assert_eq!(
        t.snapshot(),
        before,
        "a rejected completion changed the table"
    );
    assert!(rxs[0].try_recv().is_err(), "nothing was delivered");

    // The current token is accepted once; the same completion again is rejected.
    assert!(send_all(t.complete(1, vec![done(&a, vec![42])])).is_empty());
    assert_eq!(rxs[0].try_recv().expect("delivered").expect("ok"), vec![42]);
    assert_eq!((t.in_flight(1), t.completed(1)), (0, 1));
    let after = t.snapshot();
    assert_eq!(send_all(t.complete(1, vec![done(&a, vec![42])])).len(), 1);
    assert_eq!(t.snapshot(), after);
}

#[test]
fn a_lease_is_never_given_to_two_workers() {
    let (mut t, _rxs) = table(10, 3);
    let mut first = t.lease(1, 4);
    let second = t.lease(2, 100);
    assert_eq!((first.len(), second.len()), (4, 6));
    assert!(t.lease(1, 100).is_empty(), "the queue is empty");
    let ids = |v: &[LeasedAction]| -> HashSet<ActionId> { v.iter().map(|a| a.action).collect() };
    assert!(ids(&first).is_disjoint(&ids(&second)));
    let leases: HashSet<u64> = first.iter().chain(&second).map(|a| a.lease).collect();
    assert_eq!(leases.len(), 10, "lease ids are unique");

    // Worker 1 is lost: its attempts are leased again, under new lease ids, to one worker.
    let released = t.release_worker(1);
    assert_eq!(released.len(), 4);
    let again = t.lease(2, 100);
    assert_eq!(ids(&again), ids(&first));
    assert!(again.iter().all(|a| !leases.contains(&a.lease)));
    assert!(t.lease(1, 100).is_empty() && t.lease(2, 100).is_empty());
    // The lost worker's late completion is fenced off; the new holder's is accepted.
    let late = first.pop().unwrap();
    assert_eq!(send_all(t.complete(1, vec![done(&late, vec![])])).len(), 1);
    let current = again.iter().find(|a| a.action == late.action).unwrap();
    assert!(send_all(t.complete(2, vec![done(current, vec![])])).is_empty());
}

#[test]
fn a_requeue_counts_a_system_retry_and_fails_after_the_maximum() {
    let (mut t, mut rxs) = table(1, 2);
    for retry in 1..=2 {
        let a = t.lease(1, 1).pop().expect("leased again");
        assert_eq!(a.check_store, retry > 1, "a system retry looks for records");
        match t.release_worker(1).as_slice() {
            [
                Requeued::Retry {
                    retry: r,
                    max,
                    what,
                },
            ] => {
                assert_eq!((*r, *max), (retry, 2));
                assert!(what.contains("attempt 1, env.task"), "{what}");
            }
            _ => panic!("not requeued"),
        }
        assert_eq!(t.queued("env"), 1);
        t.add_worker(1, "env");
    }
    assert!(t.lease(1, 1).pop().expect("third lease").check_store);
    let mut released = t.release_worker(1);
    let Some(Requeued::GaveUp { message, delivery }) = released.pop() else {
        panic!("did not give up");
    };
    assert!(message.contains("lost its worker 3 times; giving up after 2 system retries"));
    delivery.send();
    let err = rxs[0].try_recv().expect("failed").expect_err("an error");
    assert_eq!(err.kind(), ErrorKind::System);
    assert_eq!(t.queued("env"), 0);
    assert!(t.lease(2, 10).is_empty());
}

#[test]
fn only_the_holder_of_a_current_lease_holds_its_attempt() {
    let (mut t, _rx) = table(2, 3);
    let a = t.lease(1, 1).remove(0);
    assert!(t.holds(1, a.run, a.action));
    assert!(!t.holds(2, a.run, a.action), "another worker");
    assert!(!t.holds(1, RunId(a.run.0 + 1), a.action), "another run");
    assert!(
        !t.holds(1, a.run, ActionId(a.action.0 + 1)),
        "another action"
    );
    let done = t.complete(1, vec![done(&a, vec![1])]);
    assert!(done.rejected.is_empty());
    drop(done);
    assert!(
        !t.holds(1, a.run, a.action),
        "its lease ended with the completion"
    );
}

#[test]
fn leases_a_worker_never_received_go_back_to_the_queue() {
    let (mut t, mut rxs) = table(3, 3);
    let got = t.lease(1, 1);
    let received = got[0].lease;
    let lost = t.lease(1, 2); // this response never reaches the worker
    assert_eq!(t.reclaim_unreceived(1, received), 2);
    assert_eq!((t.in_flight(1), t.queued("env")), (1, 2));
    assert_eq!(
        t.reclaim_unreceived(1, received),
        0,
        "nothing more to put back"
    );
    // They are leased again, in order, under new leases, without a system retry; the
    // lost leases are no longer current.
    let again = t.lease(2, 10);
    let ids = |v: &[LeasedAction]| v.iter().map(|a| a.action).collect::<Vec<_>>();
    assert_eq!(ids(&again), ids(&lost));
    assert!(again.iter().all(|a| !a.check_store));
    assert_eq!(
        send_all(t.complete(1, vec![done(&lost[0], vec![])])).len(),
        1
    );
    assert!(send_all(t.complete(2, vec![done(&again[0], vec![7])])).is_empty());
    assert_eq!(rxs[1].try_recv().expect("delivered").expect("ok"), vec![7]);
    // What the worker received stays leased to it.
    assert!(send_all(t.complete(1, vec![done(&got[0], vec![1])])).is_empty());
}

#[test]
fn a_lease_batch_respects_max() {
    let (mut t, _rxs) = table(5, 3);
    assert!(t.lease(1, 0).is_empty());
    assert_eq!(t.lease(1, 2).len(), 2);
    assert_eq!(t.in_flight(1), 2);
    assert_eq!(t.lease(1, 2).len(), 2);
    assert_eq!(t.lease(1, 2).len(), 1);
    assert_eq!(t.in_flight(1), 5);
    // An unknown worker leases nothing.
    let (mut t, _rxs) = table(5, 3);
    assert!(t.lease(9, 5).is_empty());
    assert_eq!(t.queued("env"), 5);
}

#[test]
fn a_cancelled_leased_attempt_is_reported_to_its_worker() {
    let (mut t, mut rxs) = table(2, 3);
    let leased = t.lease(1, 1).pop().unwrap();
    // Keys are handed out in order: the first enqueued attempt has key 1.
    assert_eq!(t.cancel(1), Some(leased.lease));
    assert_eq!(t.in_flight(1), 0);
    assert_eq!(t.take_cancelled(1), vec![leased.lease]);
    assert!(t.take_cancelled(1).is_empty(), "reported once");
    assert!(t.take_cancelled(2).is_empty(), "only to its worker");
    // Its completion is fenced off, and nothing reaches the (gone) caller.
    let failed = Completion {
        outcome: AttemptOutcome::Error(RemoteError {
            kind: ErrorKind::Cancelled,
            message: "cancelled".into(),
            chain: vec![],
            child: None,
        }),
        ..done(&leased, vec![])
    };
    assert_eq!(send_all(t.complete(1, vec![failed])).len(), 1);
    assert!(rxs[0].try_recv().is_err());
    // A queued attempt cancelled before it is leased is skipped and reported to nobody.
    assert_eq!(t.cancel(2), None);
    assert!(t.lease(2, 10).is_empty());
    assert!(t.take_cancelled(2).is_empty());
}
