//! A PostgreSQL server for the tests: the one at `postgres://postgres@127.0.0.1:5432/test`
//! unless `WEIR_TEST_POSTGRES` names another, and a fresh schema per test ([`Postgres`]),
//! dropped when the fixture is. A server that cannot be reached fails the tests.

#![allow(dead_code)]

use std::sync::atomic::{AtomicU64, Ordering};

use weir_store_postgres::{PostgresOptions, PostgresStore};

pub fn url() -> String {
    std::env::var("WEIR_TEST_POSTGRES")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".into())
}

/// A fresh schema, dropped when the fixture is.
pub struct Postgres {
    pub schema: String,
}

impl Postgres {
    pub fn new() -> Postgres {
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

    pub fn options(&self) -> PostgresOptions {
        PostgresOptions {
            schema: Some(self.schema.clone()),
            readers: 2,
            ..PostgresOptions::default()
        }
    }

    pub fn connect(&self) -> PostgresStore {
        PostgresStore::connect(&url(), self.options()).unwrap_or_else(|e| {
            panic!(
                "the PostgreSQL store's tests need a PostgreSQL server at {} (set WEIR_TEST_POSTGRES to use another): {e}",
                url()
            )
        })
    }

    /// The first column of the first row `sql` returns, as text, on a connection of its own.
    pub fn value(&self, sql: String) -> String {
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
                let row = client.query_one(&sql, &[]).await.expect(&sql);
                row.get::<_, String>(0)
            })
        })
        .join()
        .unwrap()
    }

    /// Runs SQL on a connection of its own (outside any test runtime).
    pub fn sql(&self, sql: String) {
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
