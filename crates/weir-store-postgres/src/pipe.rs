//! The writer's transactions, pipelined: `BEGIN`, each write statement and `COMMIT` are sent
//! as soon as they are queued, and their answers read at the end, so a batch costs one round
//! trip to the server instead of one per statement. PostgreSQL runs them in order; after a
//! failed statement it refuses the rest and turns the `COMMIT` into a rollback, and the first
//! error is what [`Tx::commit`] returns.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

use tokio_postgres::types::ToSql;
use tokio_postgres::{Client, Error, Row, Statement};

/// A statement parameter the pipelined statement owns.
pub(crate) type Param = Box<dyn ToSql + Sync + Send>;

type Answer<'c> = Pin<Box<dyn Future<Output = Result<(), Error>> + Send + 'c>>;

/// The parameters of a pipelined statement, copied into values it owns.
macro_rules! params {
    ($($p:expr),* $(,)?) => {
        vec![$($crate::pipe::Owned::owned($p)),*]
    };
}
pub(crate) use params;

/// A transaction whose statements are sent before earlier answers arrive.
pub(crate) struct Tx<'c> {
    client: &'c Client,
    sent: Vec<Answer<'c>>,
}

impl<'c> Tx<'c> {
    /// Sends `BEGIN` (with `synchronous_commit` on when someone waits for the disk).
    pub(crate) fn begin(client: &'c Client, on_disk: bool) -> Tx<'c> {
        let mut tx = Tx {
            client,
            sent: Vec::new(),
        };
        tx.simple(match on_disk {
            true => "BEGIN; SET LOCAL synchronous_commit = on",
            false => "BEGIN",
        });
        tx
    }

    /// The connection (to prepare statements on).
    pub(crate) fn client(&self) -> &'c Client {
        self.client
    }

    /// Sends `f`'s request now (its first poll writes it to the connection); its answer is
    /// read later.
    fn send(&mut self, mut f: Answer<'c>) {
        let mut cx = Context::from_waker(std::task::Waker::noop());
        match f.as_mut().poll(&mut cx) {
            Poll::Ready(r) => self.sent.push(Box::pin(std::future::ready(r))),
            Poll::Pending => self.sent.push(f),
        }
    }

    fn simple(&mut self, sql: &'static str) {
        let client = self.client;
        self.send(Box::pin(async move { client.batch_execute(sql).await }));
    }

    /// Sends a write statement.
    pub(crate) fn execute(&mut self, st: Statement, params: Vec<Param>) {
        let client = self.client;
        self.send(Box::pin(async move {
            client.execute_raw(&st, params).await.map(|_| ())
        }));
    }

    /// Reads the answers of what was sent, then runs a query and returns its rows.
    pub(crate) async fn query(
        &mut self,
        st: &Statement,
        params: &[&(dyn ToSql + Sync)],
    ) -> Result<Vec<Row>, Error> {
        self.answers().await?;
        self.client.query(st, params).await
    }

    async fn answers(&mut self) -> Result<(), Error> {
        for answer in self.sent.drain(..) {
            answer.await?;
        }
        Ok(())
    }

    /// Sends `COMMIT` and reads every answer: the first error, if any (the transaction is
    /// then rolled back).
    pub(crate) async fn commit(mut self) -> Result<(), Error> {
        self.simple("COMMIT");
        self.answers().await
    }
}

/// A parameter copied into a value a pipelined statement owns.
pub(crate) trait Owned {
    fn owned(self) -> Param;
}

macro_rules! copied {
    ($($t:ty),*) => {$(
        impl Owned for &$t {
            fn owned(self) -> Param {
                Box::new(self.clone())
            }
        }
    )*};
}

copied!(
    i64,
    String,
    Option<String>,
    Vec<i64>,
    Vec<Option<i64>>,
    Vec<Option<String>>,
    Vec<u8>,
    Option<Vec<u8>>,
    Vec<Option<Vec<u8>>>
);

impl Owned for &&str {
    fn owned(self) -> Param {
        Box::new(self.to_string())
    }
}

impl Owned for &Option<&[u8]> {
    fn owned(self) -> Param {
        Box::new(self.map(<[u8]>::to_vec))
    }
}

impl Owned for &Vec<&str> {
    fn owned(self) -> Param {
        Box::new(self.iter().map(|s| s.to_string()).collect::<Vec<_>>())
    }
}

impl Owned for &Vec<Option<&str>> {
    fn owned(self) -> Param {
        Box::new(
            self.iter()
                .map(|s| s.map(str::to_string))
                .collect::<Vec<_>>(),
        )
    }
}

impl Owned for &Vec<Option<&[u8]>> {
    fn owned(self) -> Param {
        Box::new(
            self.iter()
                .map(|b| b.map(<[u8]>::to_vec))
                .collect::<Vec<_>>(),
        )
    }
}
