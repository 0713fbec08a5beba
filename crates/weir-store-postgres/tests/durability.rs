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
/// resolves only once the WAL is flushed past its commit.
#[tokio::test]
async fn a_staged_write_is_on_disk_when_its_durable_ticket_resolves() {
    let pg = Postgres::new();
    let store = pg.connect();
    let (run, _) = store.create_run(new_run()).await.unwrap();
    for id in 1..=5 {
        let staged = store.commit_staged(insert(run.id, id));
        staged.visible.await.unwrap();
        let written = pg.value("SELECT pg_current_wal_insert_lsn()::text".into());
        staged.durable.await.unwrap();
        let flushed = pg.value(format!(
            "SELECT (pg_current_wal_flush_lsn() >= '{written}'::pg_lsn)::text"
        ));
        assert_eq!(
            flushed, "true",
            "write {id}: WAL not flushed past {written}"
        );
    }
}
