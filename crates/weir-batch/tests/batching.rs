//! Behaviour of `DynamicBatcher` and `TokenBatcher` (SPEC §8), one property per test.
//!
//! Timing-sensitive tests run on tokio's paused clock, which only moves when every task waits,
//! so batch boundaries and durations are exact.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::Semaphore;
use tokio::time::Instant;
use weir_batch::{
    BatchOptions, CostEstimator, DynamicBatcher, Error, Prompt, TokenBatcher, TokenEstimator,
};

type Infallible = std::convert::Infallible;

/// A `process_fn` that doubles each record and logs every batch it saw.
fn doubling_logger(
    log: &Arc<Mutex<Vec<Vec<u64>>>>,
) -> impl FnMut(Vec<u64>) -> std::future::Ready<Result<Vec<u64>, Infallible>> + Send + 'static {
    let log = Arc::clone(log);
    move |batch: Vec<u64>| {
        log.lock().unwrap().push(batch.clone());
        std::future::ready(Ok(batch.into_iter().map(|x| x * 2).collect()))
    }
}

/// Lets the other tasks of a current-thread runtime run until they all wait.
async fn settle() {
    for _ in 0..100 {
        tokio::task::yield_now().await;
    }
}

#[test]
fn defaults_match_spec() {
    let defaults = BatchOptions::default();
    assert_eq!(defaults.target_batch_cost, 32_000);
    assert_eq!(defaults.max_batch_size, 256);
    assert_eq!(defaults.min_batch_size, 1);
    assert_eq!(defaults.batch_timeout, Duration::from_millis(50));
    assert_eq!(defaults.max_queue_size, 5_000);
    assert_eq!(defaults.prefetch_batches, 2);
    assert_eq!(defaults.default_cost, 1);
    assert_eq!(DynamicBatcher::<u64, u64>::builder().options(), &defaults);
    assert_eq!(
        TokenBatcher::<Prompt, String>::builder().options(),
        &defaults
    );

    let tokens = TokenBatcher::<Prompt, String>::builder()
        .target_batch_tokens(8_000)
        .default_tokens(7);
    assert_eq!(tokens.options().target_batch_cost, 8_000);
    assert_eq!(tokens.options().default_cost, 7);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn results_come_back_in_order_from_concurrent_producers() {
    let batcher = DynamicBatcher::builder()
        .max_batch_size(16)
        .max_queue_size(64)
        .start(|batch: Vec<u64>| async move {
            tokio::task::yield_now().await;
            Ok::<_, Infallible>(batch.into_iter().map(|x| x * 2).collect())
        });

    let producers: Vec<_> = (0..8u64)
        .map(|p| {
            let batcher = batcher.clone();
            tokio::spawn(async move {
                let records = (0..500).map(|i| p * 1_000 + i);
                let tickets = batcher.submit_many(records).await.unwrap();
                let mut results = Vec::new();
                for ticket in tickets {
                    results.push(ticket.await.unwrap());
                }
                results
            })
        })
        .collect();
    for (p, producer) in producers.into_iter().enumerate() {
        let expected: Vec<u64> = (0..500).map(|i| (p as u64 * 1_000 + i) * 2).collect();
        assert_eq!(producer.await.unwrap(), expected);
    }
    assert_eq!(batcher.process(21).await.unwrap(), 42);

    let stats = batcher.stats();
    assert_eq!(stats.total_submitted, 4_001);
    assert_eq!(stats.total_completed, 4_001);
    assert_eq!(stats.total_failed, 0);
    assert!(stats.total_batches >= 4_001 / 16, "{stats:?}");
    assert!(stats.avg_batch_size > 1.0 && stats.avg_batch_size <= 16.0);
    assert_eq!(stats.total_cost, 4_001); // default cost 1 each
    batcher.stop().await;
}

#[tokio::test]
async fn cost_budget_and_max_size_close_batches() {
    let log = Arc::new(Mutex::new(Vec::new()));
    // A high min size and a long timeout leave only the cost and size limits (and the final
    // drain) to close batches, so the boundaries below are exact.
    let batcher = DynamicBatcher::builder()
        .target_batch_cost(10)
        .max_batch_size(4)
        .min_batch_size(1_000)
        .batch_timeout(Duration::from_secs(3_600))
        .prefetch_batches(8)
        .start(doubling_logger(&log));
    // Records are their own cost here.
    let costs = [4, 4, 4, 50, 9, 5, 5, 5, 1, 1, 1, 1, 1];
    let mut tickets = Vec::new();
    for cost in costs {
        tickets.push(batcher.submit_with_cost(cost, cost).await.unwrap());
    }
    batcher.stop().await;
    for (ticket, cost) in tickets.into_iter().zip(costs) {
        assert_eq!(ticket.await.unwrap(), cost * 2);
    }
    let batches = log.lock().unwrap().clone();
    assert_eq!(
        batches,
        [
            vec![4, 4, 4],    // under the budget until the third record
            vec![50],         // costlier than the budget alone
            vec![9, 5],       // added while under the budget, even past it
            vec![5, 5],       // exactly the budget
            vec![1, 1, 1, 1], // max_batch_size
            vec![1],          // drained at stop
        ]
    );
    let stats = batcher.stats();
    assert_eq!(stats.total_batches, 6);
    assert_eq!(stats.total_cost, 91);
    assert!((stats.avg_batch_cost - 91.0 / 6.0).abs() < 1e-9);
    assert!((stats.avg_batch_size - 13.0 / 6.0).abs() < 1e-9);
}

#[tokio::test(start_paused = true)]
async fn timeout_starts_at_first_record_and_overrides_min_size() {
    let seen = Arc::new(Mutex::new(Vec::new()));
    let seen_in_fn = Arc::clone(&seen);
    let batcher = DynamicBatcher::builder()
        .min_batch_size(10)
        .batch_timeout(Duration::from_millis(50))
        .start(move |batch: Vec<u64>| {
            seen_in_fn
                .lock()
                .unwrap()
                .push((Instant::now(), batch.clone()));
            std::future::ready(Ok::<_, Infallible>(batch))
        });
    let t0 = Instant::now();
    let first = batcher.submit(1).await.unwrap();
    tokio::time::sleep(Duration::from_millis(30)).await;
    let second = batcher.submit(2).await.unwrap();
    assert_eq!((first.await.unwrap(), second.await.unwrap()), (1, 2));

    let t1 = Instant::now();
    let lone = batcher.submit(3).await.unwrap();
    assert_eq!(lone.await.unwrap(), 3);

    let seen = seen.lock().unwrap().clone();
    assert_eq!(seen.len(), 2);
    // The window is 50 ms from the batch's first record, not from its last.
    assert_eq!(seen[0].0 - t0, Duration::from_millis(50));
    assert_eq!(seen[0].1, [1, 2]);
    // A batch below min_batch_size still goes at its timeout.
    assert_eq!(seen[1].0 - t1, Duration::from_millis(50));
    assert_eq!(seen[1].1, [3]);
    batcher.stop().await;
}

#[tokio::test(start_paused = true)]
async fn idle_consumer_gets_records_without_waiting_for_the_timeout() {
    let batcher = DynamicBatcher::builder()
        .batch_timeout(Duration::from_secs(60))
        .start(|batch: Vec<u64>| std::future::ready(Ok::<_, Infallible>(batch)));
    let t0 = Instant::now();
    assert_eq!(batcher.process(5).await.unwrap(), 5);
    assert_eq!(t0.elapsed(), Duration::ZERO);
    batcher.stop().await;
}

#[tokio::test(start_paused = true)]
async fn prefetch_assembles_batches_ahead_and_full_queue_blocks_submit() {
    let gate = Arc::new(Semaphore::new(0));
    let gate_in_fn = Arc::clone(&gate);
    let batcher = DynamicBatcher::builder()
        .max_batch_size(2)
        .min_batch_size(2)
        .max_queue_size(1)
        .prefetch_batches(2)
        .start(move |batch: Vec<u64>| {
            let gate = Arc::clone(&gate_in_fn);
            async move {
                // Each batch waits for one permit: the test decides when it may finish.
                gate.acquire().await.unwrap().forget();
                Ok::<_, Infallible>(batch)
            }
        });

    let accepted = Arc::new(AtomicUsize::new(0));
    let producer = {
        let (batcher, accepted) = (batcher.clone(), Arc::clone(&accepted));
        tokio::spawn(async move {
            let mut tickets = Vec::new();
            for record in 0..10u64 {
                tickets.push(batcher.submit(record).await.unwrap());
                accepted.fetch_add(1, Ordering::SeqCst);
            }
            tickets
        })
    };
    settle().await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    // Batch [0, 1] is in process_fn, [2, 3] and [4, 5] are assembled ahead (prefetch 2), 6 waits
    // in the queue (size 1), and the producer waits to submit 7.
    assert_eq!(accepted.load(Ordering::SeqCst), 7);
    let stats = batcher.stats();
    assert_eq!((stats.total_submitted, stats.queued), (7, 1));
    assert!(!producer.is_finished());

    gate.add_permits(100);
    let tickets = producer.await.unwrap();
    for (record, ticket) in (0..10u64).zip(tickets) {
        assert_eq!(ticket.await.unwrap(), record);
    }
    assert_eq!(batcher.stats().total_batches, 5);
    batcher.stop().await;
}

/// A record with its own cost (or none).
struct Weighed(Option<u64>);
impl CostEstimator for Weighed {
    fn estimate_cost(&self) -> Option<u64> {
        self.0
    }
}

/// Records one record at a time and returns the cost the batcher gave it.
async fn cost_of<R: Send + 'static>(
    batcher: &DynamicBatcher<R, ()>,
    submit: bool,
    record: R,
) -> u64 {
    let before = batcher.stats().total_cost;
    if submit {
        batcher.submit(record).await.unwrap().await.unwrap();
    } else {
        batcher
            .submit_with_cost(record, 1_000)
            .await
            .unwrap()
            .await
            .unwrap();
    }
    batcher.stats().total_cost - before
}

fn units<R>(batch: Vec<R>) -> std::future::Ready<Result<Vec<()>, Infallible>> {
    std::future::ready(Ok(vec![(); batch.len()]))
}

#[tokio::test]
async fn cost_precedence_explicit_then_estimator_then_record_then_default() {
    let own = DynamicBatcher::builder().default_cost(3).start(units);
    assert_eq!(
        cost_of(&own, true, Weighed(Some(40))).await,
        40,
        "record's own"
    );
    assert_eq!(cost_of(&own, true, Weighed(None)).await, 3, "default");
    assert_eq!(
        cost_of(&own, false, Weighed(Some(40))).await,
        1_000,
        "explicit"
    );

    let estimated = DynamicBatcher::builder()
        .default_cost(3)
        .cost_estimator(|_: &Weighed| 7)
        .start(units);
    assert_eq!(
        cost_of(&estimated, true, Weighed(Some(40))).await,
        7,
        "estimator fn"
    );
    assert_eq!(
        cost_of(&estimated, true, Weighed(None)).await,
        7,
        "estimator fn"
    );
    assert_eq!(
        cost_of(&estimated, false, Weighed(None)).await,
        1_000,
        "explicit"
    );
    own.stop().await;
    estimated.stop().await;
}

/// A record with both kinds of estimate.
struct Chat {
    tokens: Option<u64>,
    cost: Option<u64>,
}
impl CostEstimator for Chat {
    fn estimate_cost(&self) -> Option<u64> {
        self.cost
    }
}
impl TokenEstimator for Chat {
    fn estimate_tokens(&self) -> Option<u64> {
        self.tokens
    }
}

#[tokio::test]
async fn token_batcher_prefers_tokens_and_prompt_estimates_len_over_4() {
    assert_eq!(Prompt::new("").estimate_tokens(), Some(1));
    assert_eq!(Prompt::new("abcdefgh").estimate_tokens(), Some(3));
    assert_eq!(Prompt::new("é".repeat(9)).estimate_tokens(), Some(3)); // chars, not bytes
    assert_eq!(Prompt::with_metadata("x", 7u32).metadata, Some(7));

    let chats = TokenBatcher::builder().default_tokens(2).start(units);
    let tokens_of = async |chat: Chat| cost_of(chats.as_dynamic(), true, chat).await;
    let both = Chat {
        tokens: Some(30),
        cost: Some(500),
    };
    assert_eq!(
        tokens_of(both).await,
        30,
        "estimate_tokens wins over estimate_cost"
    );
    assert_eq!(
        tokens_of(Chat {
            tokens: None,
            cost: Some(500)
        })
        .await,
        500
    );
    assert_eq!(
        tokens_of(Chat {
            tokens: None,
            cost: None
        })
        .await,
        2,
        "default_tokens"
    );
    let before = chats.stats().total_cost;
    let explicit = Chat {
        tokens: Some(30),
        cost: None,
    };
    chats
        .submit_with_tokens(explicit, 9)
        .await
        .unwrap()
        .await
        .unwrap();
    assert_eq!(chats.stats().total_cost - before, 9, "explicit tokens win");
    chats.stop().await;

    let prompts = TokenBatcher::builder()
        .target_batch_tokens(5)
        .min_batch_size(100)
        .batch_timeout(Duration::from_secs(3_600))
        .start(
            |batch: Vec<Prompt>| async move { Ok::<_, Infallible>(vec![batch.len(); batch.len()]) },
        );
    // 3 tokens each: the second prompt reaches the budget of 5, so batches hold two prompts.
    let tickets = prompts
        .submit_many((0..4).map(|_| Prompt::new("abcdefgh")))
        .await
        .unwrap();
    prompts.stop().await;
    for ticket in tickets {
        assert_eq!(ticket.await.unwrap(), 2);
    }
    let stats = prompts.stats();
    assert_eq!((stats.total_batches, stats.total_cost), (2, 12));

    let estimated = TokenBatcher::builder()
        .token_estimator(|p: &Prompt| p.text.len() as u64 * 10)
        .start(units);
    assert_eq!(
        cost_of(estimated.as_dynamic(), true, Prompt::new("abc")).await,
        30
    );
    estimated.stop().await;
}

#[tokio::test]
async fn failures_fail_only_their_batch_and_the_batcher_keeps_serving() {
    // Batches are exactly four records: min = max = 4.
    let batcher = DynamicBatcher::builder()
        .max_batch_size(4)
        .min_batch_size(4)
        .start(|batch: Vec<u64>| async move {
            match batch[0] {
                100 => Err(format!("model rejected record {}", batch[0])),
                200 => Ok(batch[..3].to_vec()),
                300 => panic!("GPU fell over"),
                _ => Ok(batch),
            }
        });
    let run = async |first: u64| {
        let tickets = batcher.submit_many(first..first + 4).await.unwrap();
        let mut results = Vec::new();
        for ticket in tickets {
            results.push(ticket.await);
        }
        results
    };

    let process_error = run(100).await;
    assert_eq!(process_error.len(), 4);
    for result in &process_error {
        let error = result.as_ref().unwrap_err();
        assert!(matches!(error, Error::Process { batch_size: 4, .. }));
        assert_eq!(
            error.to_string(),
            "process_fn failed on a batch of 4 records: model rejected record 100"
        );
        assert!(std::error::Error::source(error).is_some());
    }

    for result in run(200).await {
        let error = result.unwrap_err();
        assert!(matches!(
            error,
            Error::ResultCount {
                expected: 4,
                returned: 3
            }
        ));
        assert!(
            error
                .to_string()
                .starts_with("process_fn returned 3 results for a batch of 4 records")
        );
    }

    for result in run(300).await {
        let error = result.unwrap_err();
        assert!(matches!(error, Error::Panicked { batch_size: 4, .. }));
        assert!(error.to_string().contains("GPU fell over"), "{error}");
    }

    let served: Vec<u64> = run(1).await.into_iter().map(Result::unwrap).collect();
    assert_eq!(served, [1, 2, 3, 4]);
    let stats = batcher.stats();
    assert_eq!((stats.total_failed, stats.total_completed), (12, 4));
    assert_eq!(stats.total_batches, 4);
    batcher.stop().await;
}

#[tokio::test]
async fn records_whose_ticket_was_dropped_are_skipped() {
    let log = Arc::new(Mutex::new(Vec::new()));
    // Batches of exactly three; nothing is processed until a batch is full.
    let batcher = DynamicBatcher::builder()
        .max_batch_size(3)
        .min_batch_size(3)
        .batch_timeout(Duration::from_secs(3_600))
        .start(doubling_logger(&log));
    // The assembly loop may already hold these records; dropping a ticket still cancels its
    // record because the check happens right before process_fn.
    let kept = batcher.submit(1).await.unwrap();
    drop(batcher.submit(2).await.unwrap());
    let kept_too = batcher.submit(3).await.unwrap();
    assert_eq!((kept.await.unwrap(), kept_too.await.unwrap()), (2, 6));

    // A batch whose every caller left does not reach process_fn at all.
    for record in 4..7 {
        drop(batcher.submit(record).await.unwrap());
    }
    let last = batcher.submit(7).await.unwrap();
    batcher.stop().await; // drains the lone record without waiting for the timeout
    assert_eq!(last.await.unwrap(), 14);

    let batches = log.lock().unwrap().clone();
    assert!(
        !batches.iter().flatten().any(|r| [2, 4, 5, 6].contains(r)),
        "{batches:?}"
    );
    let stats = batcher.stats();
    assert_eq!(stats.total_cancelled, 4);
    assert_eq!(stats.total_completed, 3);
}

#[tokio::test]
async fn stop_drains_submitted_records_and_rejects_later_ones() {
    let batcher = DynamicBatcher::builder()
        .min_batch_size(1_000)
        .batch_timeout(Duration::from_secs(3_600))
        .start(|batch: Vec<u64>| std::future::ready(Ok::<_, Infallible>(batch)));
    let other_handle = batcher.clone();
    let tickets = batcher.submit_many(0..100).await.unwrap();
    assert!(!batcher.is_stopped());

    other_handle.stop().await;
    // The long timeout and high minimum would hold these records for an hour; stop drains them.
    for (record, ticket) in (0..100).zip(tickets) {
        assert_eq!(ticket.await.unwrap(), record);
    }
    assert!(batcher.is_stopped());
    let error = batcher.submit(7).await.unwrap_err();
    assert!(matches!(error, Error::Stopped));
    assert!(error.to_string().contains("stopped"), "{error}");
    assert!(matches!(batcher.process(7).await, Err(Error::Stopped)));
    batcher.stop().await; // a second stop returns at once
    assert_eq!(batcher.stats().total_submitted, 100);
}

#[tokio::test]
async fn run_scoped_always_stops() {
    let leaked = Arc::new(Mutex::new(None));
    let leak = Arc::clone(&leaked);
    let sum = DynamicBatcher::builder()
        .run_scoped(
            |batch: Vec<u64>| std::future::ready(Ok::<_, Infallible>(batch)),
            |batcher| async move {
                *leak.lock().unwrap() = Some(batcher.clone());
                let tickets = batcher.submit_many(1..=10).await.unwrap();
                let mut sum = 0;
                for ticket in tickets {
                    sum += ticket.await.unwrap();
                }
                sum
            },
        )
        .await;
    assert_eq!(sum, 55);
    let escaped = leaked.lock().unwrap().take().unwrap();
    assert!(escaped.is_stopped());
    assert!(matches!(escaped.submit(1).await, Err(Error::Stopped)));

    // A panicking body still stops the batcher, then the panic goes on.
    let leak = Arc::clone(&leaked);
    let panicked = tokio::spawn(DynamicBatcher::builder().run_scoped(
        |batch: Vec<u64>| std::future::ready(Ok::<_, Infallible>(batch)),
        |batcher| async move {
            *leak.lock().unwrap() = Some(batcher.clone());
            panic!("body failed");
        },
    ))
    .await;
    assert!(panicked.unwrap_err().is_panic());
    assert!(leaked.lock().unwrap().take().unwrap().is_stopped());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dropping_every_handle_drains_and_ends_the_tasks() {
    let probe = Arc::new(());
    let held = Arc::clone(&probe);
    let batcher = DynamicBatcher::builder().start(move |batch: Vec<u64>| {
        let _held = &held; // process_fn owns a clone until its task ends
        std::future::ready(Ok::<_, Infallible>(batch))
    });
    let tickets = batcher.submit_many(0..50).await.unwrap();
    drop(batcher);
    for (record, ticket) in (0..50).zip(tickets) {
        assert_eq!(ticket.await.unwrap(), record);
    }
    let ended = tokio::time::timeout(Duration::from_secs(10), async {
        while Arc::strong_count(&probe) > 1 {
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
    })
    .await;
    assert!(
        ended.is_ok(),
        "the batcher's tasks kept running after every handle was dropped"
    );
}

#[tokio::test(start_paused = true)]
async fn stats_measure_busy_and_idle_time() {
    let batcher = DynamicBatcher::builder().start(|batch: Vec<u64>| async move {
        tokio::time::sleep(Duration::from_millis(10)).await;
        Ok::<_, Infallible>(batch)
    });
    let before = batcher.stats();
    assert_eq!((before.total_batches, before.utilization), (0, 0.0));

    batcher.process(1).await.unwrap();
    tokio::time::sleep(Duration::from_millis(40)).await;
    let stats = batcher.stats();
    assert_eq!(stats.busy_time, Duration::from_millis(10));
    // The wait still going on counts.
    assert_eq!(stats.idle_time, Duration::from_millis(40));
    assert!((stats.utilization - 0.2).abs() < 1e-9, "{stats:?}");
    assert_eq!((stats.total_submitted, stats.total_completed), (1, 1));
    assert_eq!((stats.avg_batch_size, stats.avg_batch_cost), (1.0, 1.0));
    batcher.stop().await;
}
