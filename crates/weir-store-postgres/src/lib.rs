//! weir's durable state on PostgreSQL, for cluster mode (several engines and workers sharing
//! one state): [`PostgresStore`] implements [`weir_store::Store`] and passes the same
//! conformance suite as the embedded SQLite store (`tests/conformance.rs`, which runs the
//! checks of `weir-store/tests/suite`).
//!
//! ## How it works
//! - [`PostgresStore::connect`] creates (or checks) a versioned schema in the database's
//!   current schema, or in [`PostgresOptions::schema`] (created if missing); a schema written by
//!   a newer weir is refused with [`Error::NewerSchema`].
//! - Writes are queued to one writer task on its own connection, which takes every queued write
//!   (up to [`PostgresOptions::max_batch`]) into one transaction, holding writes nobody waits
//!   for up to 2 ms to share a commit; actions queued, started and finished within one batch are
//!   merged into one row and upserted with one multi-row statement. Tickets resolve after
//!   `COMMIT`.
//! - The writer's connection does not wait for the disk unless a batch holds a write someone
//!   awaits with [`Store::commit`] or [`Store::sync`] (then `SET LOCAL synchronous_commit =
//!   on`). A staged write ([`Store::commit_staged`]) resolves `visible` at `COMMIT` and
//!   `durable` once a flusher connection has written to the WAL and waited for the disk, which
//!   flushes every commit before it. Leases, heartbeats and the reaper run on a connection of
//!   their own whose commits never wait (a lease lost in a crash is granted again; fencing
//!   refuses the first holder). Reader connections prepare each statement once.
//! - Run ownership: [`weir_store::Store::claim_run`] is a compare-and-set on the run's epoch.
//!   The writer reads the epochs of the claimed runs a batch writes with `FOR SHARE` inside
//!   its transaction, so a takeover cannot commit between the check and the writes; writes of a
//!   run taken over are refused ([`Error::RunOwned`] on their tickets) and change nothing.
//! - The work queue: leases with `SELECT ... FOR UPDATE SKIP LOCKED`, lease ids from a
//!   sequence (never reused: fencing tokens), completion fenced by (lease, worker).
//! - Reads, claims, settings and queue operations run on a small pool of connections
//!   ([`PostgresOptions::readers`]); a connection found closed is opened again.
//! - The store runs its connections on a runtime of its own (two threads), so it works from any
//!   caller: async code on any runtime, or blocking code.
//! - The web UI reads through [`PostgresReadModel`] ([`PostgresStore::read_model`]), the
//!   PostgreSQL implementation of [`weir_store::ReadModel`]: the same queries as SQLite's
//!   `UiReader`, on a few connections of its own (opened when first needed).
//!
//! ## Not yet
//! - Only cluster mode uses it (`weir serve`); the embedded engine's `weir_store::open` opens
//!   SQLite.
//! - No TLS (`NoTls` only), no statement timeouts, no retry of a batch that failed on a
//!   serialization error or a lost connection: its tickets get the error (as with SQLite).

mod analyze;
mod batched;
mod conn;
mod logs;
mod pipe;
mod queue;
mod reads;
mod rows;
mod schema;
mod tokens;
mod ui;
mod writer;

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use parking_lot::Mutex;
use tokio::sync::mpsc;
use tokio_postgres::{Client, Config, NoTls};
use weir_core::ActionId;
use weir_store::{
    ActionRecord, AttemptLog, AttemptRecord, CacheEntry, Cap, Claim, Error, Lease, NewRun, Page,
    QueuedAttempt, Reaped, Result, RunFilter, RunId, RunRecord, RunSummary, Staged, Store,
    StoreFuture, Ticket, TokenRecord, WorkerRecord, WriteOp,
};

use conn::Conn;
pub use schema::SCHEMA_VERSION;
pub use ui::PostgresReadModel;
use writer::Cmd;

/// Options of the PostgreSQL store.
#[derive(Clone, Debug)]
pub struct PostgresOptions {
    /// Most writes in one transaction. Default 20 000.
    pub max_batch: usize,
    /// Connections for reads, claims and queue operations (the writer, and the queue operations
    /// whose commits need not wait for the disk, have one more each). Default 4.
    pub readers: usize,
    /// The schema weir's tables live in (created if missing; letters, digits and `_` only).
    /// Default: the connection's current schema (`search_path`, usually `public`).
    pub schema: Option<String>,
}

impl Default for PostgresOptions {
    fn default() -> Self {
        PostgresOptions {
            max_batch: 20_000,
            readers: 4,
            schema: None,
        }
    }
}

/// The runs this store instance drives: run → epoch of its claim.
pub(crate) type Claims = Arc<Mutex<HashMap<RunId, u64>>>;

/// What the store's tasks share.
pub(crate) struct Inner {
    config: Config,
    /// The server, database and schema, for messages.
    what: String,
    readers: Vec<tokio::sync::Mutex<Conn>>,
    /// The connection of queue operations whose loss in a crash of the database is harmless
    /// (leases, heartbeats, the reaper): its commits do not wait for the disk
    /// (`synchronous_commit = off`; see [`Inner::relaxed`]).
    relaxed: Vec<tokio::sync::Mutex<Conn>>,
    relaxed_config: Config,
    /// The writer's: commits that wait for the disk only when asked.
    pub(crate) writer_config: Config,
    next: AtomicUsize,
    claims: Claims,
}

/// The PostgreSQL store.
pub struct PostgresStore {
    inner: Arc<Inner>,
    writer: Mutex<Option<mpsc::UnboundedSender<Cmd>>>,
    writer_task: Mutex<Option<tokio::task::JoinHandle<()>>>,
    runtime: Mutex<Option<tokio::runtime::Runtime>>,
    handle: tokio::runtime::Handle,
}

impl std::fmt::Debug for PostgresStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PostgresStore")
            .field("what", &self.inner.what)
            .finish()
    }
}

/// The text of a PostgreSQL error: the server's message (with its detail) when there is one.
pub(crate) fn describe(e: &tokio_postgres::Error) -> String {
    match e.as_db_error() {
        Some(db) => {
            let mut s = format!("{}: {}", db.severity(), db.message());
            if let Some(detail) = db.detail() {
                s.push_str(&format!(" ({detail})"));
            }
            s
        }
        None => {
            let mut s = e.to_string();
            let mut source = std::error::Error::source(e);
            while let Some(cause) = source {
                s.push_str(&format!(": {cause}"));
                source = cause.source();
            }
            s
        }
    }
}

impl Inner {
    /// The error for a failed database call while `doing` something.
    pub(crate) fn err(&self, doing: &str) -> impl Fn(tokio_postgres::Error) -> Error + use<> {
        let what = format!("{} ({doing})", self.what);
        move |e| Error::Database {
            what: what.clone(),
            source: describe(&e).into(),
        }
    }

    /// A pooled connection (opened again if it was closed).
    pub(crate) async fn client(&self) -> Result<tokio::sync::MutexGuard<'_, Conn>> {
        self.acquire(&self.readers, &self.config).await
    }

    /// The connection whose commits do not wait for the disk, for queue operations a crash of
    /// the database may undo without harm: a lease lost is granted again (and the first
    /// holder's completion refused: fencing), a heartbeat or a reaping lost is done again. It
    /// is never used for what is acknowledged as accepted (results, new actions, runs): those
    /// go through the writer, whose commits do wait, and a later waiting commit makes every
    /// earlier one durable too.
    pub(crate) async fn relaxed(&self) -> Result<tokio::sync::MutexGuard<'_, Conn>> {
        self.acquire(&self.relaxed, &self.relaxed_config).await
    }

    async fn acquire<'a>(
        &self,
        pool: &'a [tokio::sync::Mutex<Conn>],
        config: &Config,
    ) -> Result<tokio::sync::MutexGuard<'a, Conn>> {
        let n = pool.len();
        let start = self.next.fetch_add(1, Ordering::Relaxed) % n;
        let mut guard = None;
        for i in 0..n {
            if let Ok(g) = pool[(start + i) % n].try_lock() {
                guard = Some(g);
                break;
            }
        }
        let mut guard = match guard {
            Some(g) => g,
            None => pool[start].lock().await,
        };
        if guard.is_closed() {
            *guard = Conn::new(
                open_client(config)
                    .await
                    .map_err(self.err("reconnecting"))?,
            );
        }
        Ok(guard)
    }
}

/// Opens a connection and drives it on the current runtime.
pub(crate) async fn open_client(config: &Config) -> Result<Client, tokio_postgres::Error> {
    let (client, connection) = config.connect(NoTls).await?;
    tokio::spawn(async move {
        if let Err(e) = connection.await {
            tracing::warn!(error = %describe(&e), "PostgreSQL connection lost");
        }
    });
    Ok(client)
}

impl PostgresStore {
    /// Connects to the database at `url` (a `postgres://` URL or a `key=value` string),
    /// creating weir's schema there or checking the one found: one written by a newer weir is
    /// refused with [`Error::NewerSchema`]. Blocks until connected; fine to call from async code
    /// (the connections run on the store's own runtime).
    pub fn connect(url: &str, options: PostgresOptions) -> Result<PostgresStore> {
        let mut config: Config =
            url.parse()
                .map_err(|e: tokio_postgres::Error| Error::Database {
                    what: "URL".into(),
                    source: describe(&e).into(),
                })?;
        if let Some(schema) = &options.schema {
            if schema.is_empty()
                || !schema
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '_')
            {
                return Err(Error::Corrupt(format!(
                    "PostgreSQL schema name {schema:?}: use letters, digits and _ only"
                )));
            }
            let mut opts = config.get_options().unwrap_or("").to_string();
            opts.push_str(&format!(" -c search_path={schema}"));
            config.options(opts.trim());
        }
        // Every statement of the store finds its rows by key; the largest writes join a batch
        // of keys, given as arrays, to `actions` or `queue`. Costed for a disk, such a join of
        // a hundred keys hashes them and scans the whole table (the tables' pages are in
        // memory: a lookup per key is several times faster); a run of 10 000 actions read
        // 1 600 rows per action. Joins here are lookups per key (see also `analyze.rs`).
        let mut opts = config.get_options().unwrap_or("").to_string();
        opts.push_str(" -c enable_hashjoin=off -c enable_mergejoin=off");
        config.options(opts.trim());
        let what = format!(
            "PostgreSQL {}/{} schema {}",
            config
                .get_hosts()
                .iter()
                .map(|h| match h {
                    tokio_postgres::config::Host::Tcp(h) => h.clone(),
                    #[cfg(unix)]
                    tokio_postgres::config::Host::Unix(p) => p.display().to_string(),
                })
                .collect::<Vec<_>>()
                .join(","),
            config.get_dbname().unwrap_or(""),
            options.schema.as_deref().unwrap_or("(current)")
        );
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .thread_name("weir-store-pg")
            .enable_all()
            .build()
            .map_err(|e| {
                Error::Corrupt(format!("cannot start the PostgreSQL store's runtime: {e}"))
            })?;
        let handle = runtime.handle().clone();
        let max_batch = options.max_batch.max(1);
        let opened = handle.spawn(async move {
            let cannot_connect = |e: tokio_postgres::Error| Error::Database {
                what: format!("{what} (connecting)"),
                source: describe(&e).into(),
            };
            let mut first = open_client(&config).await.map_err(cannot_connect)?;
            schema::migrate(&mut first, options.schema.as_deref(), &what).await?;
            // The writer's commits wait for the disk only where someone waits for that
            // (`writer::transact`); the relaxed connection's never do.
            let with = |extra: &str| {
                let mut c = config.clone();
                c.options(format!("{} {extra}", config.get_options().unwrap_or("")).trim());
                c
            };
            let writer_config = with("-c synchronous_commit=off");
            let relaxed_config =
                with("-c synchronous_commit=off -c plan_cache_mode=force_custom_plan");
            let writer = open_client(&writer_config).await.map_err(cannot_connect)?;
            let mut readers = vec![tokio::sync::Mutex::new(Conn::new(first))];
            for _ in 1..options.readers.max(1) {
                let c = open_client(&config).await.map_err(cannot_connect)?;
                readers.push(tokio::sync::Mutex::new(Conn::new(c)));
            }
            let relaxed = open_client(&relaxed_config).await.map_err(cannot_connect)?;
            let inner = Arc::new(Inner {
                config,
                what,
                readers,
                relaxed: vec![tokio::sync::Mutex::new(Conn::new(relaxed))],
                relaxed_config,
                writer_config,
                next: AtomicUsize::new(0),
                claims: Claims::default(),
            });
            let (tx, rx) = mpsc::unbounded_channel();
            let task = tokio::spawn(writer::run(inner.clone(), writer, rx, max_batch));
            Ok::<_, Error>((inner, tx, task))
        });
        let opened = match futures::executor::block_on(opened) {
            Ok(r) => r,
            Err(e) => Err(Error::Corrupt(format!("connecting failed: {e}"))),
        };
        let (inner, tx, task) = match opened {
            Ok(r) => r,
            Err(e) => {
                // Not dropped: that would block, which a caller's runtime forbids.
                runtime.shutdown_background();
                return Err(e);
            }
        };
        Ok(PostgresStore {
            inner,
            writer: Mutex::new(Some(tx)),
            writer_task: Mutex::new(Some(task)),
            runtime: Mutex::new(Some(runtime)),
            handle,
        })
    }

    /// Commits what is queued and stops the writer: later writes fail with
    /// [`Error::WriterGone`].
    pub fn close(&self) -> Result<()> {
        let Some(tx) = self.writer.lock().take() else {
            return Ok(());
        };
        let (ticket, promise) = Ticket::new();
        let _ = tx.send(Cmd::Sync(promise));
        drop(tx);
        let flushed = ticket.wait().map_err(|e| Error::Corrupt(e.to_string()));
        if let Some(task) = self.writer_task.lock().take() {
            let _ = futures::executor::block_on(task);
        }
        flushed
    }

    fn queue(&self, cmd: Cmd) {
        let refused = match &*self.writer.lock() {
            Some(tx) => tx.send(cmd).err().map(|e| e.0),
            None => Some(cmd),
        };
        let gone = || Err(Arc::new(Error::WriterGone));
        match refused {
            Some(Cmd::Write(_, Some(promise)) | Cmd::Sync(promise)) => promise.resolve(gone()),
            Some(Cmd::Staged(_, visible, durable)) => {
                visible.resolve(gone());
                durable.resolve(gone());
            }
            Some(Cmd::Write(_, None)) | None => {}
        }
    }

    /// Runs `f` on the store's runtime.
    fn spawn<T, F>(&self, f: F) -> StoreFuture<'_, T>
    where
        T: Send + 'static,
        F: Future<Output = Result<T>> + Send + 'static,
    {
        let task = self.handle.spawn(f);
        Box::pin(async move {
            match task.await {
                Ok(r) => r,
                Err(e) if e.is_panic() => std::panic::resume_unwind(e.into_panic()),
                Err(_) => Err(Error::WriterGone),
            }
        })
    }
}

impl Drop for PostgresStore {
    fn drop(&mut self) {
        let _ = self.close();
        if let Some(rt) = self.runtime.lock().take() {
            rt.shutdown_background();
        }
    }
}

impl Store for PostgresStore {
    fn write(&self, op: WriteOp) {
        self.queue(Cmd::Write(op, None));
    }

    fn commit(&self, op: WriteOp) -> Ticket {
        let (ticket, promise) = Ticket::new();
        self.queue(Cmd::Write(op, Some(promise)));
        ticket
    }

    /// The commit does not wait for the disk; `durable` resolves after a later commit that
    /// does (one for all that wait, on a connection of its own).
    fn commit_staged(&self, op: WriteOp) -> Staged {
        let (visible, v) = Ticket::new();
        let (durable, d) = Ticket::new();
        self.queue(Cmd::Staged(op, v, d));
        Staged { visible, durable }
    }

    fn sync(&self) -> Ticket {
        let (ticket, promise) = Ticket::new();
        match &*self.writer.lock() {
            Some(tx) => match tx.send(Cmd::Sync(promise)) {
                Ok(()) => ticket,
                Err(_) => Ticket::ready(Ok(())),
            },
            None => Ticket::ready(Ok(())),
        }
    }

    fn close(&self) -> Result<()> {
        PostgresStore::close(self)
    }

    fn create_run(&self, run: NewRun) -> StoreFuture<'_, (RunRecord, Claim)> {
        let inner = self.inner.clone();
        self.spawn(async move {
            let rec = inner.create_run(&run).await?;
            // A run created with its root queued is driven through the queue by whoever
            // leases its actions (cluster mode): no owner's writes to fence.
            if run.queue.is_none() {
                inner.claims.lock().insert(rec.id, rec.epoch);
            }
            let claim = Claim {
                run: rec.id,
                owner: run.owner.clone(),
                epoch: rec.epoch,
            };
            Ok((rec, claim))
        })
    }

    fn claim_run(&self, run: RunId, owner: String, seen_epoch: u64) -> StoreFuture<'_, Claim> {
        let inner = self.inner.clone();
        self.spawn(async move {
            let epoch = inner.claim(run, &owner, seen_epoch).await?;
            inner.claims.lock().insert(run, epoch);
            Ok(Claim { run, owner, epoch })
        })
    }

    fn run(&self, id: RunId) -> StoreFuture<'_, RunRecord> {
        let inner = self.inner.clone();
        self.spawn(async move { inner.run(id).await })
    }

    fn ended_among<'a>(
        &'a self,
        run: RunId,
        ids: &'a [ActionId],
    ) -> StoreFuture<'a, Vec<ActionId>> {
        let inner = self.inner.clone();
        let ids = ids.to_vec();
        self.spawn(async move { inner.ended_among(run, &ids).await })
    }

    fn run_by_name<'a>(&'a self, name: &'a str) -> StoreFuture<'a, RunRecord> {
        let inner = self.inner.clone();
        let name = name.to_string();
        self.spawn(async move { inner.run_by_name(&name).await })
    }

    fn list_runs<'a>(&'a self, filter: &'a RunFilter) -> StoreFuture<'a, Vec<RunSummary>> {
        let inner = self.inner.clone();
        let filter = filter.clone();
        self.spawn(async move { inner.list_runs(&filter).await })
    }

    fn list_actions(&self, run: RunId, page: Page) -> StoreFuture<'_, Vec<ActionRecord>> {
        let inner = self.inner.clone();
        self.spawn(async move { inner.list_actions(run, page).await })
    }

    fn action(&self, run: RunId, id: ActionId) -> StoreFuture<'_, Option<ActionRecord>> {
        let inner = self.inner.clone();
        self.spawn(async move { inner.action(run, id).await })
    }

    fn list_actions_with_payloads(
        &self,
        run: RunId,
        page: Page,
    ) -> StoreFuture<'_, Vec<ActionRecord>> {
        let inner = self.inner.clone();
        self.spawn(async move { inner.list_actions_with_payloads(run, page).await })
    }

    fn record_attempt_logs<'a>(&'a self, logs: &'a [AttemptLog]) -> StoreFuture<'a, ()> {
        let inner = self.inner.clone();
        let logs = logs.to_vec();
        self.spawn(async move { inner.record_attempt_logs(&logs).await })
    }

    fn attempt_logs(&self, run: RunId, action: ActionId) -> StoreFuture<'_, Vec<AttemptLog>> {
        let inner = self.inner.clone();
        self.spawn(async move { inner.attempt_logs(run, action).await })
    }

    fn create_token<'a>(&'a self, token: &'a TokenRecord) -> StoreFuture<'a, ()> {
        let inner = self.inner.clone();
        let token = token.clone();
        self.spawn(async move { inner.create_token(&token).await })
    }

    fn token<'a>(&'a self, hash: &'a str) -> StoreFuture<'a, Option<TokenRecord>> {
        let inner = self.inner.clone();
        let hash = hash.to_string();
        self.spawn(async move { inner.token(&hash).await })
    }

    fn list_tokens(&self) -> StoreFuture<'_, Vec<TokenRecord>> {
        let inner = self.inner.clone();
        self.spawn(async move { inner.list_tokens().await })
    }

    fn revoke_tokens<'a>(&'a self, prefix: &'a str) -> StoreFuture<'a, u64> {
        let inner = self.inner.clone();
        let prefix = prefix.to_string();
        self.spawn(async move { inner.revoke_tokens(&prefix).await })
    }

    fn failed_attempts(&self, run: RunId, id: ActionId) -> StoreFuture<'_, Vec<AttemptRecord>> {
        let inner = self.inner.clone();
        self.spawn(async move { inner.failed_attempts(run, id).await })
    }

    fn cache_lookup<'a>(
        &'a self,
        key: &'a str,
        scope: Option<(&'a str, &'a str)>,
    ) -> StoreFuture<'a, Option<CacheEntry>> {
        let inner = self.inner.clone();
        let key = key.to_string();
        let scope = scope.map(|(p, d)| (p.to_string(), d.to_string()));
        self.spawn(async move { inner.cache_lookup(&key, scope).await })
    }

    fn list_cache<'a>(
        &'a self,
        task: Option<&'a str>,
        project: Option<&'a str>,
        limit: u32,
    ) -> StoreFuture<'a, Vec<CacheEntry>> {
        let inner = self.inner.clone();
        let task = task.map(str::to_string);
        let project = project.map(str::to_string);
        self.spawn(async move { inner.list_cache(task, project, limit).await })
    }

    fn clear_cache<'a>(&'a self, task: Option<&'a str>) -> StoreFuture<'a, u64> {
        let inner = self.inner.clone();
        let task = task.map(str::to_string);
        // Entries queued before the call are cleared too.
        let synced = self.sync();
        self.spawn(async move {
            synced.await.map_err(|e| Error::Corrupt(e.to_string()))?;
            inner.clear_cache(task).await
        })
    }

    fn setting<'a>(&'a self, key: &'a str) -> StoreFuture<'a, Option<String>> {
        let inner = self.inner.clone();
        let key = key.to_string();
        self.spawn(async move { inner.setting(&key).await })
    }

    fn set_setting<'a>(&'a self, key: &'a str, value: &'a str) -> StoreFuture<'a, ()> {
        let inner = self.inner.clone();
        let (key, value) = (key.to_string(), value.to_string());
        self.spawn(async move { inner.set_setting(&key, &value).await })
    }

    fn enqueue(&self, attempt: QueuedAttempt, now: i64) -> StoreFuture<'_, ()> {
        let inner = self.inner.clone();
        self.spawn(async move { inner.enqueue(&attempt, now).await })
    }

    fn lease<'a>(
        &'a self,
        worker: &'a str,
        env: &'a str,
        max: u32,
        now: i64,
        ttl_us: i64,
    ) -> StoreFuture<'a, Vec<Lease>> {
        let inner = self.inner.clone();
        let (worker, env) = (worker.to_string(), env.to_string());
        self.spawn(async move { inner.lease(&worker, &env, max, now, ttl_us).await })
    }

    fn heartbeat<'a>(&'a self, worker: &'a str, now: i64, ttl_us: i64) -> StoreFuture<'a, u64> {
        let inner = self.inner.clone();
        let worker = worker.to_string();
        self.spawn(async move { inner.heartbeat(&worker, now, ttl_us).await })
    }

    fn queue_entry(
        &self,
        run: RunId,
        action: ActionId,
    ) -> StoreFuture<'_, Option<weir_store::QueueEntry>> {
        let inner = self.inner.clone();
        self.spawn(async move { inner.queue_entry(run, action).await })
    }

    fn lease_with_actions<'a>(
        &'a self,
        worker: &'a str,
        env: &'a str,
        max: u32,
        (now, ttl_us): (i64, i64),
        received: Option<u64>,
        cap: Option<&'a Cap>,
    ) -> StoreFuture<'a, Vec<(Lease, Option<ActionRecord>)>> {
        let inner = self.inner.clone();
        let (worker, env, cap) = (worker.to_string(), env.to_string(), cap.cloned());
        self.spawn(async move {
            inner
                .lease_with_actions(&worker, &env, max, (now, ttl_us), received, cap.as_ref())
                .await
        })
    }

    fn queue_entries<'a>(
        &'a self,
        keys: &'a [(RunId, ActionId)],
    ) -> StoreFuture<'a, Vec<weir_store::QueueEntry>> {
        let inner = self.inner.clone();
        let keys = keys.to_vec();
        self.spawn(async move { inner.queue_entries(&keys).await })
    }

    fn queue_metrics(&self) -> StoreFuture<'_, Vec<weir_store::QueueDepth>> {
        let inner = self.inner.clone();
        self.spawn(async move { inner.queue_metrics().await })
    }

    fn release_unreceived<'a>(&'a self, worker: &'a str, received: u64) -> StoreFuture<'a, u64> {
        let inner = self.inner.clone();
        let worker = worker.to_string();
        self.spawn(async move { inner.release_unreceived(&worker, received).await })
    }

    fn complete<'a>(
        &'a self,
        lease: u64,
        worker: &'a str,
    ) -> StoreFuture<'a, Option<QueuedAttempt>> {
        let inner = self.inner.clone();
        let worker = worker.to_string();
        self.spawn(async move { inner.complete(lease, &worker).await })
    }

    fn reap(&self, now: i64, max_system_retries: u32) -> StoreFuture<'_, Reaped> {
        let inner = self.inner.clone();
        self.spawn(async move { inner.reap(now, max_system_retries).await })
    }

    fn register_worker(&self, worker: WorkerRecord) -> StoreFuture<'_, ()> {
        let inner = self.inner.clone();
        self.spawn(async move { inner.register_worker(&worker).await })
    }

    fn workers(&self) -> StoreFuture<'_, Vec<WorkerRecord>> {
        let inner = self.inner.clone();
        self.spawn(async move { inner.workers().await })
    }
}
