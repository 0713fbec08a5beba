//! A pooled connection that prepares each statement once: `query(sql)` on a bare
//! [`Client`] parses and describes `sql` on every call (a round trip before the one that runs
//! it); a [`Conn`] keeps what it prepared, so a query it ran before costs one round trip.

use std::collections::HashMap;
use std::ops::{Deref, DerefMut};

use parking_lot::Mutex;
use tokio_postgres::types::ToSql;
use tokio_postgres::{Client, Error, Row, Statement};

type Params<'a> = &'a [&'a (dyn ToSql + Sync)];

/// A connection and the statements prepared on it.
pub(crate) struct Conn {
    client: Client,
    statements: Mutex<HashMap<String, Statement>>,
}

impl Conn {
    pub(crate) fn new(client: Client) -> Conn {
        Conn {
            client,
            statements: Mutex::new(HashMap::new()),
        }
    }

    async fn statement(&self, sql: &str) -> Result<Statement, Error> {
        if let Some(st) = self.statements.lock().get(sql) {
            return Ok(st.clone());
        }
        let st = self.client.prepare(sql).await?;
        self.statements.lock().insert(sql.to_owned(), st.clone());
        Ok(st)
    }

    /// Runs `f` with the prepared `sql`; a statement that failed is prepared again next time
    /// (the failure may have been its plan's).
    async fn with<T, F>(&self, sql: &str, f: impl FnOnce(Statement) -> F) -> Result<T, Error>
    where
        F: Future<Output = Result<T, Error>>,
    {
        let st = self.statement(sql).await?;
        let r = f(st).await;
        if r.is_err() {
            self.statements.lock().remove(sql);
        }
        r
    }

    pub(crate) async fn query(&self, sql: &str, params: Params<'_>) -> Result<Vec<Row>, Error> {
        self.with(
            sql,
            |st| async move { self.client.query(&st, params).await },
        )
        .await
    }

    pub(crate) async fn query_opt(
        &self,
        sql: &str,
        params: Params<'_>,
    ) -> Result<Option<Row>, Error> {
        self.with(
            sql,
            |st| async move { self.client.query_opt(&st, params).await },
        )
        .await
    }

    pub(crate) async fn execute(&self, sql: &str, params: Params<'_>) -> Result<u64, Error> {
        self.with(
            sql,
            |st| async move { self.client.execute(&st, params).await },
        )
        .await
    }
}

impl Deref for Conn {
    type Target = Client;
    fn deref(&self) -> &Client {
        &self.client
    }
}

impl DerefMut for Conn {
    fn deref_mut(&mut self) -> &mut Client {
        &mut self.client
    }
}
