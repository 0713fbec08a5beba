//! The store's batch writes stay lookups by key as its tables grow from empty (`analyze.rs`
//! and the planner settings of `PostgresStore::connect`).

use std::time::{Duration, Instant};

use weir_core::ActionId;
use weir_store::{ActionKind, NewRun, Store, WriteOp};

mod pg;

use pg::Postgres;

#[tokio::test]
async fn young_tables_are_analyzed_and_batch_updates_find_rows_by_key() {
    let pg = Postgres::new();
    let store = pg.connect();
    let (run, _) = store
        .create_run(NewRun {
            name: "grow".into(),
            task: "t".into(),
            inputs: weir_store::Payload::Inline(vec![1]),
            context: serde_json::json!({}),
            owner: "me".into(),
            queue: None,
        })
        .await
        .unwrap();
    let analyzed = || {
        pg.value(format!(
            "SELECT coalesce(last_analyze::text, '') FROM pg_stat_user_tables
             WHERE schemaname = '{}' AND relname = 'actions'",
            pg.schema
        ))
    };
    assert_eq!(analyzed(), "", "a new table has not been analyzed");
    for id in 1..=3_000u64 {
        store.write(WriteOp::InsertAction {
            run: run.id,
            id: ActionId(id * 7919),
            parent: ActionId::ROOT,
            task: "t".into(),
            group: None,
            kind: ActionKind::Task,
            inputs: weir_store::Payload::Inline(vec![2]),
            queued_at: 1,
        });
    }
    store.sync().await.unwrap();
    let start = Instant::now();
    while analyzed().is_empty() {
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "the store never analyzed its tables after writing 3 000 rows"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // With the store's planner settings, a batch update of a hundred actions looks each up in
    // the unique index on (run, id): no scan of the table, nor of all the run's actions.
    let s = &pg.schema;
    pg.sql(format!(
        "CREATE FUNCTION {s}.plan_of(q text) RETURNS text LANGUAGE plpgsql AS $$
         DECLARE r text; o text := '';
         BEGIN
           SET LOCAL enable_hashjoin = off; SET LOCAL enable_mergejoin = off;
           SET LOCAL search_path = {s};
           FOR r IN EXECUTE 'EXPLAIN ' || q LOOP o := o || r || E'\\n'; END LOOP;
           RETURN o;
         END $$"
    ));
    let ids: Vec<String> = (1..=100u64).map(|i| (i * 7919).to_string()).collect();
    let runs = vec![run.id.to_string(); 100];
    let plan = pg.value(format!(
        "SELECT {s}.plan_of('UPDATE actions a SET status = 2
           FROM unnest(ARRAY[{}]::bigint[], ARRAY[{}]::bigint[]) AS k(run, id)
           WHERE a.run = k.run AND a.id = k.id')",
        runs.join(","),
        ids.join(",")
    ));
    assert!(plan.contains("actions_by_id"), "plan:\n{plan}");
    assert!(!plan.contains("Seq Scan on actions"), "plan:\n{plan}");
    assert!(!plan.contains("actions_by_parent"), "plan:\n{plan}");
}
