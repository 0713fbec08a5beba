//! The store conformance suite (`weir-store/tests/suite`, shared with SQLite) against
//! PostgreSQL, each check in a fresh schema (`t_<random>`) dropped at the end, so checks run in
//! parallel; and PostgreSQL's own checks (schema versioning).
//!
//! The server is `postgres://postgres@127.0.0.1:5432/test` unless `WEIR_TEST_POSTGRES` names
//! another. A server that cannot be reached fails the tests (it does not skip them).

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use weir_store::{Error, Store};
use weir_store_postgres::{PostgresOptions, PostgresStore, SCHEMA_VERSION};

#[path = "../../weir-store/tests/suite/mod.rs"]
mod suite;

fn url() -> String {
    std::env::var("WEIR_TEST_POSTGRES")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".into())
}

/// A fresh schema, dropped when the fixture is.
struct Postgres {
    schema: String,
}

impl Postgres {
    fn new() -> Postgres {
        static SEQ: AtomicU64 = AtomicU64::new(0);
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_nanos();
        let schema = format!(
            "t_{}_{}_{}",
            std::process::id(),
            nanos % 1_000_000_000_000,
            SEQ.fetch_add(1, Ordering::Relaxed)
        );
        Postgres { schema }
    }

    fn options(&self) -> PostgresOptions {
        PostgresOptions {
            schema: Some(self.schema.clone()),
            readers: 2,
            ..PostgresOptions::default()
        }
    }

    fn connect(&self) -> PostgresStore {
        PostgresStore::connect(&url(), self.options()).unwrap_or_else(|e| {
            panic!(
                "the PostgreSQL store's tests need a PostgreSQL server at {} (set WEIR_TEST_POSTGRES to use another): {e}",
                url()
            )
        })
    }

    /// Runs SQL on a connection of its own (outside any test runtime).
    fn sql(&self, sql: String) {
        let url = url();
        std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            rt.block_on(async {
                let (client, conn) = tokio_postgres::connect(&url, tokio_postgres::NoTls)
                    .await
                    .expect("connect to PostgreSQL");
                tokio::spawn(conn);
                client.batch_execute(&sql).await.expect(&sql);
            })
        })
        .join()
        .unwrap();
    }
}

impl Drop for Postgres {
    fn drop(&mut self) {
        self.sql(format!("DROP SCHEMA IF EXISTS {} CASCADE", self.schema));
    }
}

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
