//! The store conformance suite (`suite/mod.rs`, shared with the PostgreSQL store) against
//! SQLite, each check in a fresh state directory, and the SQLite-only checks: reading through
//! a read-only store, schema migration and refusal of a newer schema.

use std::sync::Arc;

use weir_store::{Error, SqliteStore, Store, StoreOptions};

#[path = "suite/mod.rs"]
mod suite;

/// A fresh state directory.
struct Sqlite(tempfile::TempDir);

impl Sqlite {
    fn new() -> Sqlite {
        Sqlite(tempfile::tempdir().unwrap())
    }
}

impl suite::Fixture for Sqlite {
    fn name(&self) -> &'static str {
        "sqlite"
    }
    fn open(&self) -> Arc<dyn Store> {
        Arc::new(SqliteStore::open(self.0.path(), StoreOptions::default()).unwrap())
    }
    /// Another connection, read-only: what the CLI and the UI read through.
    fn open_reader(&self) -> Arc<dyn Store> {
        Arc::new(SqliteStore::open_read_only(self.0.path()).unwrap())
    }
    /// The embedded engine's workers keep their output in files (`get logs`).
    fn keeps_attempt_logs(&self) -> bool {
        false
    }
    /// Only a control plane (on PostgreSQL) has access tokens.
    fn keeps_tokens(&self) -> bool {
        false
    }
}

suite::all_conformance_tests!(Sqlite::new());

#[tokio::test]
async fn sqlite_migrates_schema_2_to_3_keeping_actions_without_phases() {
    let dir = tempfile::tempdir().unwrap();
    let db = SqliteStore::db_path(dir.path());
    {
        let store = SqliteStore::open(dir.path(), StoreOptions::default()).unwrap();
        store.create_run(suite::new_run("old", "me")).await.unwrap();
        store.close().unwrap();
    }
    // As schema 2 left it: no phases column.
    let conn = rusqlite::Connection::open(&db).unwrap();
    conn.execute_batch(
        "ALTER TABLE actions DROP COLUMN phases; ALTER TABLE attempts DROP COLUMN phases;
         UPDATE meta SET value = 2 WHERE key = 'schema_version';",
    )
    .unwrap();
    drop(conn);
    let err = SqliteStore::open_read_only(dir.path()).unwrap_err();
    assert!(
        err.to_string()
            .contains("schema version 2 (this weir reads 3)"),
        "{err}"
    );
    let store = SqliteStore::open(dir.path(), StoreOptions::default()).unwrap();
    let run = store.run_by_name("old").await.unwrap();
    let root = store
        .action(run.id, weir_core::ActionId::ROOT)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(root.phases, None);
    store.close().unwrap();
    drop(store);
    let reader = SqliteStore::open_read_only(dir.path()).unwrap();
    assert_eq!(reader.run_by_name("old").await.unwrap().name, "old");
}

#[tokio::test]
async fn sqlite_migrates_schema_1_and_refuses_a_newer_schema() {
    let dir = tempfile::tempdir().unwrap();
    let db = SqliteStore::db_path(dir.path());
    {
        let conn = rusqlite::Connection::open(&db).unwrap();
        conn.execute_batch(
            "CREATE TABLE meta(key TEXT PRIMARY KEY, value INTEGER NOT NULL);
             INSERT INTO meta VALUES('schema_version', 1);
             CREATE TABLE runs(
               id INTEGER PRIMARY KEY, name TEXT NOT NULL UNIQUE, task TEXT NOT NULL, status TEXT NOT NULL,
               created_at INTEGER NOT NULL, ended_at INTEGER, inputs BLOB, inputs_ref TEXT, context TEXT NOT NULL,
               output BLOB, output_ref TEXT, error TEXT, owner_pid INTEGER NOT NULL);
             INSERT INTO runs(name, task, status, created_at, context, owner_pid)
               VALUES('old', 'env.t', 'succeeded', 1, '{}', 4242);",
        )
        .unwrap();
    }
    // A read-only open does not change it, and says how to upgrade.
    let err = SqliteStore::open_read_only(dir.path()).unwrap_err();
    assert!(err.to_string().contains("schema version 1"), "{err}");
    let store = SqliteStore::open(dir.path(), StoreOptions::default()).unwrap();
    let old = store.run_by_name("old").await.unwrap();
    assert_eq!((old.owner.as_str(), old.epoch), ("pid 4242", 1));
    let (_, claim) = store.create_run(suite::new_run("new", "me")).await.unwrap();
    assert_eq!(claim.epoch, 1);
    store.close().unwrap();
    drop(store);
    let conn = rusqlite::Connection::open(&db).unwrap();
    conn.execute(
        "UPDATE meta SET value = 99 WHERE key = 'schema_version'",
        [],
    )
    .unwrap();
    drop(conn);
    let err = SqliteStore::open(dir.path(), StoreOptions::default()).unwrap_err();
    assert!(err.to_string().contains("schema version 99"), "{err}");
    assert!(matches!(
        SqliteStore::open_read_only(&dir.path().join("missing")),
        Err(Error::NoState(_))
    ));
}
