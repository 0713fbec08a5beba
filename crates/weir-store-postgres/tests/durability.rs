//! Durability of staged writes, in a test binary of its own: it compares WAL positions, which
//! the writes of checks running beside it would move.

use weir_core::ActionId;
use weir_store::{ActionKind, NewRun, Store, WriteOp};

mod pg;

use pg::Postgres;

fn new_run() -> NewRun {
    NewRun {
        name: "disk".into(),
        task: "t".into(),
        inputs: weir_store::Payload::Inline(vec![1]),
        context: serde_json::json!({}),
        owner: "me".into(),
        queue: None,
    }
}

fn insert(run: weir_store::RunId, id: u64) -> WriteOp {
    WriteOp::InsertAction {
        run,
        id: ActionId(id),
        parent: ActionId::ROOT,
        task: "t".into(),
        group: None,
        kind: ActionKind::Task,
        inputs: weir_store::Payload::Inline(vec![2]),
        queued_at: 1,
    }
}

/// The writer's commits do not wait for the disk unless asked: a staged write's `durable`
/// resolves only once the WAL is flushed past the commit record of the transaction that wrote
/// it. The commit record is found with `pg_walinspect` by the row's `xmin`, so WAL that other
/// sessions of the server write meanwhile (autovacuum, asynchronous commits) cannot make the
/// check pass or fail.
#[tokio::test]
async fn a_staged_write_is_on_disk_when_its_durable_ticket_resolves() {
    let pg = Postgres::new();
    pg.sql("CREATE EXTENSION IF NOT EXISTS pg_walinspect WITH SCHEMA public".into());
    let store = pg.connect();
    let (run, _) = store.create_run(new_run()).await.unwrap();
    for id in 1..=5 {
        let before = pg.value("SELECT pg_current_wal_insert_lsn()::text".into());
        let staged = store.commit_staged(insert(run.id, id));
        staged.visible.await.unwrap();
        let xid = pg.value(format!(
            "SELECT xmin::text FROM {}.actions WHERE run = {} AND id = {id}",
            pg.schema, run.id.0
        ));
        staged.durable.await.unwrap();
        let flushed = pg.value("SELECT pg_current_wal_flush_lsn()::text".into());
        let past = pg.value(format!(
            "SELECT ('{flushed}'::pg_lsn > '{before}'::pg_lsn)::text"
        ));
        assert_eq!(past, "true", "write {id}: nothing flushed past {before}");
        // Only WAL up to the flush position can be read: the commit is there or not flushed.
        let commits = pg.value(format!(
            "SELECT count(*)::text FROM public.pg_get_wal_records_info('{before}', '{flushed}') \
             WHERE resource_manager = 'Transaction' AND record_type = 'COMMIT' \
             AND xid::text = '{xid}' AND end_lsn <= '{flushed}'::pg_lsn"
        ));
        assert_eq!(
            commits, "1",
            "write {id}: the commit of transaction {xid} is not in the WAL flushed up to {flushed}"
        );
    }
}
