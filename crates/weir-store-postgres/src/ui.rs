//! The UI's read model on PostgreSQL ([`PostgresReadModel`]): the queries of SQLite's
//! `weir_store::UiReader` with the same ordering, paging, folding and counts, and the same
//! whole-run aggregation ([`ActivityBuilder`]), on a few connections of its own.
//!
//! [`ReadModel`]'s methods block (the UI calls them on a blocking thread): each runs its
//! queries as a task on the store's runtime and waits for it. The connections are opened on
//! first use and kept, at most [`PostgresReadModel`]'s `connections`, so a replica nobody
//! browses holds none; the store's own connections (the writer's, the readers') are never used,
//! so browsing a large run does not delay the engine's reads.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use futures::TryStreamExt;
use tokio::sync::{Mutex, OwnedMutexGuard};
use tokio_postgres::types::ToSql;
use tokio_postgres::{Client, Config, Row};
use weir_core::{ActionId, ActionStatus, ErrorKind, Failure};
use weir_store::columns::payload_from_columns;
use weir_store::{
    ActivityBuilder, ActivityRow, AttemptRecord, Error, Page, ReadModel, Result, RunStatus,
    StatusCounts, UiAction, UiActionDetail, UiActivity, UiGroup, UiRun, UiRunFilter,
};

use crate::rows::{ACTION_COLUMNS, action_from_row};
use crate::{PostgresStore, describe, open_client};

/// The UI's queries on the database of a [`PostgresStore`] (see [`PostgresStore::read_model`]).
///
/// Reads fail once the store it came from is dropped (its runtime runs the queries).
pub struct PostgresReadModel {
    shared: Arc<Shared>,
    handle: tokio::runtime::Handle,
}

impl std::fmt::Debug for PostgresReadModel {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PostgresReadModel")
            .field("what", &self.shared.what)
            .field("connections", &self.shared.clients.len())
            .finish()
    }
}

struct Shared {
    config: Config,
    what: String,
    /// Opened on first use; one found closed is opened again.
    clients: Vec<Arc<Mutex<Option<Client>>>>,
    next: AtomicUsize,
}

/// A pooled connection, held until dropped.
struct Conn(OwnedMutexGuard<Option<Client>>);

impl std::ops::Deref for Conn {
    type Target = Client;
    fn deref(&self) -> &Client {
        self.0.as_ref().expect("opened before it is handed out")
    }
}

impl Shared {
    fn err(&self, doing: &str) -> impl Fn(tokio_postgres::Error) -> Error + use<> {
        let what = format!("{} (UI: {doing})", self.what);
        move |e| Error::Database {
            what: what.clone(),
            source: describe(&e).into(),
        }
    }

    /// An idle connection if there is one, else the next one in turn (waiting for it).
    async fn client(&self) -> Result<Conn> {
        let n = self.clients.len();
        let start = self.next.fetch_add(1, Ordering::Relaxed) % n;
        let idle = (0..n).find_map(|i| self.clients[(start + i) % n].clone().try_lock_owned().ok());
        let mut guard = match idle {
            Some(g) => g,
            None => self.clients[start].clone().lock_owned().await,
        };
        if guard.as_ref().is_none_or(Client::is_closed) {
            *guard = Some(
                open_client(&self.config)
                    .await
                    .map_err(self.err("connecting"))?,
            );
        }
        Ok(Conn(guard))
    }
}

impl PostgresStore {
    /// The UI's read model on this store's database, on at most `connections` connections of
    /// its own (at least 1), opened when first needed.
    pub fn read_model(&self, connections: usize) -> PostgresReadModel {
        PostgresReadModel {
            shared: Arc::new(Shared {
                config: self.inner.config.clone(),
                what: self.inner.what.clone(),
                clients: (0..connections.max(1))
                    .map(|_| Arc::new(Mutex::new(None)))
                    .collect(),
                next: AtomicUsize::new(0),
            }),
            handle: self.handle.clone(),
        }
    }
}

const RUN_COLUMNS: &str = "id, name, task, status, created_at, ended_at, context, error";

fn run_from_row(row: &Row) -> UiRun {
    UiRun {
        id: row.get(0),
        name: row.get(1),
        task: row.get(2),
        status: RunStatus::parse(row.get(3)).unwrap_or(RunStatus::Failed),
        created_at: row.get(4),
        ended_at: row.get(5),
        context: row.get(6),
        error: row
            .get::<_, Option<String>>(7)
            .and_then(|s| serde_json::from_str(&s).ok()),
    }
}

/// The columns of [`ui_action_from_row`], for `FROM actions AS a`: the store's action columns,
/// `seq`, and whether the action has children (the root is its own parent, not its child).
fn ui_action_columns() -> String {
    format!(
        "{ACTION_COLUMNS}, seq,
  EXISTS(SELECT 1 FROM actions AS c WHERE c.run = a.run AND c.parent = a.id AND c.id <> a.id)"
    )
}

/// Columns after [`ui_action_columns`].
const AFTER_ACTION: usize = 15;

fn ui_action_from_row(row: &Row) -> UiAction {
    UiAction {
        seq: row.get(13),
        record: action_from_row(row),
        has_children: row.get(14),
    }
}

impl PostgresReadModel {
    /// Runs `read` on the store's runtime and waits for it.
    fn block<T, F>(&self, read: impl FnOnce(Arc<Shared>) -> F) -> Result<T>
    where
        T: Send + 'static,
        F: Future<Output = Result<T>> + Send + 'static,
    {
        let task = self.handle.spawn(read(self.shared.clone()));
        match futures::executor::block_on(task) {
            Ok(r) => r,
            Err(e) if e.is_panic() => std::panic::resume_unwind(e.into_panic()),
            Err(_) => Err(Error::Database {
                what: self.shared.what.clone(),
                source: "the store was closed: its runtime no longer runs the UI's reads".into(),
            }),
        }
    }
}

impl ReadModel for PostgresReadModel {
    fn runs(&self, filter: &UiRunFilter) -> Result<(Vec<UiRun>, u64)> {
        let filter = filter.clone();
        self.block(|db| async move {
            let e = db.err("listing runs");
            let client = db.client().await?;
            let status = filter.status.map(RunStatus::as_str);
            let name = filter.name_contains.as_deref();
            let rows = client
                .query(
                    &format!(
                        "SELECT {RUN_COLUMNS} FROM runs
                         WHERE ($1::text IS NULL OR status = $1) AND ($2::text IS NULL OR strpos(name, $2) > 0)
                         ORDER BY id DESC LIMIT $3 OFFSET $4"
                    ),
                    &[
                        &status,
                        &name,
                        &i64::from(filter.page.limit),
                        &(filter.page.offset as i64),
                    ],
                )
                .await
                .map_err(&e)?;
            let total: i64 = client
                .query_one(
                    "SELECT count(*) FROM runs
                     WHERE ($1::text IS NULL OR status = $1) AND ($2::text IS NULL OR strpos(name, $2) > 0)",
                    &[&status, &name],
                )
                .await
                .map_err(&e)?
                .get(0);
            Ok((rows.iter().map(run_from_row).collect(), total as u64))
        })
    }

    fn run(&self, name: &str) -> Result<UiRun> {
        let name = name.to_string();
        self.block(|db| async move {
            let client = db.client().await?;
            client
                .query_opt(
                    &format!("SELECT {RUN_COLUMNS} FROM runs WHERE name = $1"),
                    &[&name],
                )
                .await
                .map_err(db.err("reading a run"))?
                .map(|r| run_from_row(&r))
                .ok_or(Error::UnknownRun(name))
        })
    }

    fn run_counts(&self, run: i64) -> Result<(StatusCounts, i64)> {
        self.block(move |db| async move {
            let client = db.client().await?;
            let rows = client
                .query(
                    "SELECT status, count(*), max(seq) FROM actions WHERE run = $1 GROUP BY status",
                    &[&run],
                )
                .await
                .map_err(db.err("counting a run's actions"))?;
            let mut counts = StatusCounts::default();
            let mut last = 0;
            for r in rows {
                counts.add(r.get(0), r.get::<_, i64>(1) as u64);
                last = last.max(r.get::<_, i64>(2));
            }
            Ok((counts, last))
        })
    }

    fn child_groups(&self, run: i64, parent: ActionId) -> Result<Vec<UiGroup>> {
        self.block(move |db| async move {
            let client = db.client().await?;
            let rows = client
                .query(
                    "SELECT grp, status, count(*), min(seq) FROM actions
                     WHERE run = $1 AND parent = $2 AND id <> $2
                     GROUP BY grp, status",
                    &[&run, &parent.as_i64()],
                )
                .await
                .map_err(db.err("grouping an action's children"))?;
            let mut groups: Vec<UiGroup> = Vec::new();
            for r in rows {
                let group: Option<String> = r.get(0);
                let n = r.get::<_, i64>(2) as u64;
                let first: i64 = r.get(3);
                let i = match groups.iter().position(|g| g.group == group) {
                    Some(i) => i,
                    None => {
                        groups.push(UiGroup {
                            group,
                            count: 0,
                            counts: StatusCounts::default(),
                            first_seq: first,
                        });
                        groups.len() - 1
                    }
                };
                let g = &mut groups[i];
                g.count += n;
                g.counts.add(r.get(1), n);
                g.first_seq = g.first_seq.min(first);
            }
            groups.sort_by_key(|g| g.first_seq);
            Ok(groups)
        })
    }

    fn children(
        &self,
        run: i64,
        parent: ActionId,
        group: Option<&str>,
        status: Option<ActionStatus>,
        page: Page,
    ) -> Result<Vec<UiAction>> {
        let group = group.map(str::to_string);
        self.block(move |db| async move {
            let client = db.client().await?;
            let rows = client
                .query(
                    &format!(
                        "SELECT {cols} FROM actions AS a
                         WHERE run = $1 AND parent = $2 AND id <> $2
                           AND grp IS NOT DISTINCT FROM $3::text
                           AND ($4::bigint IS NULL OR status = $4)
                         ORDER BY seq LIMIT $5 OFFSET $6",
                        cols = ui_action_columns()
                    ),
                    &[
                        &run,
                        &parent.as_i64(),
                        &group,
                        &status.map(|s| s.code()),
                        &i64::from(page.limit),
                        &(page.offset as i64),
                    ],
                )
                .await
                .map_err(db.err("listing an action's children"))?;
            Ok(rows.iter().map(ui_action_from_row).collect())
        })
    }

    fn action(&self, run: i64, id: ActionId) -> Result<Option<UiActionDetail>> {
        self.block(move |db| async move {
            let e = db.err("reading an action");
            let client = db.client().await?;
            let found = client
                .query_opt(
                    &format!(
                        "SELECT {cols}, inputs, inputs_ref, output, output_ref FROM actions AS a
                         WHERE run = $1 AND id = $2",
                        cols = ui_action_columns()
                    ),
                    &[&run, &id.as_i64()],
                )
                .await
                .map_err(&e)?;
            let Some(row) = found else {
                return Ok(None);
            };
            let children: i64 = client
                .query_one(
                    "SELECT count(*) FROM actions WHERE run = $1 AND parent = $2 AND id <> $2",
                    &[&run, &id.as_i64()],
                )
                .await
                .map_err(&e)?
                .get(0);
            Ok(Some(UiActionDetail {
                action: ui_action_from_row(&row),
                inputs: payload_from_columns(row.get(AFTER_ACTION), row.get(AFTER_ACTION + 1)),
                output: payload_from_columns(row.get(AFTER_ACTION + 2), row.get(AFTER_ACTION + 3)),
                children: children as u64,
            }))
        })
    }

    fn attempt_logs(&self, run: i64, id: ActionId) -> Result<Option<Vec<weir_store::AttemptLog>>> {
        self.block(move |db| async move {
            let client = db.client().await?;
            let rows = client
                .query(
                    &format!(
                        "SELECT {} FROM attempt_logs WHERE run = $1 AND action = $2
                         ORDER BY attempt, lease",
                        crate::logs::LOG_COLUMNS
                    ),
                    &[&run, &id.as_i64()],
                )
                .await
                .map_err(db.err("reading attempt logs"))?;
            Ok(Some(rows.iter().map(crate::logs::log_from_row).collect()))
        })
    }

    fn failed_attempts(&self, run: i64, id: ActionId, limit: u32) -> Result<Vec<AttemptRecord>> {
        self.block(move |db| async move {
            let client = db.client().await?;
            let rows = client
                .query(
                    "SELECT attempt, started_at, ended_at, error, phases FROM attempts
                     WHERE run = $1 AND action = $2 ORDER BY attempt LIMIT $3",
                    &[&run, &id.as_i64(), &i64::from(limit)],
                )
                .await
                .map_err(db.err("reading failed attempts"))?;
            Ok(rows
                .iter()
                .map(|r| {
                    let error: String = r.get(3);
                    AttemptRecord {
                        attempt: r.get::<_, i64>(0) as u32,
                        started_at: r.get(1),
                        ended_at: r.get(2),
                        // As SQLite's: an error that is not a recorded failure is shown as text.
                        error: serde_json::from_str(&error).unwrap_or_else(|_| Failure {
                            action_id: id.to_string(),
                            task: String::new(),
                            kind: ErrorKind::User,
                            message: error,
                            chain: vec![],
                        }),
                        phases: r
                            .get::<_, Option<Vec<u8>>>(4)
                            .and_then(|b| weir_core::phases::Phases::decode(&b)),
                    }
                })
                .collect())
        })
    }

    fn run_activity(&self, run: &UiRun, buckets: usize, now: i64) -> Result<UiActivity> {
        let mut activity = ActivityBuilder::for_run(run, buckets, now);
        let run_id = run.id;
        self.block(move |db| async move {
            let e = db.err("aggregating a run");
            let client = db.client().await?;
            // Streamed: a run's rows are aggregated as they come, never all held at once.
            let params: [&(dyn ToSql + Sync); 1] = [&run_id];
            let rows = client
                .query_raw(
                    "SELECT seq, id, parent, grp, task, status, queued_at, started_at, ended_at
                     FROM actions WHERE run = $1 ORDER BY seq",
                    params,
                )
                .await
                .map_err(&e)?;
            futures::pin_mut!(rows);
            while let Some(r) = rows.try_next().await.map_err(&e)? {
                activity.add(ActivityRow {
                    seq: r.get(0),
                    id: r.get(1),
                    parent: r.get(2),
                    group: r.get(3),
                    task: r.get(4),
                    status: r.get(5),
                    queued_at: r.get(6),
                    started_at: r.get(7),
                    ended_at: r.get(8),
                });
            }
            Ok(activity.finish())
        })
    }

    fn tasks_of(&self, run: i64, ids: &[ActionId]) -> Result<Vec<Option<String>>> {
        let ids: Vec<i64> = ids.iter().map(|i| i.as_i64()).collect();
        self.block(move |db| async move {
            let client = db.client().await?;
            let rows = client
                .query(
                    "SELECT id, task FROM actions WHERE run = $1 AND id = ANY($2)",
                    &[&run, &ids],
                )
                .await
                .map_err(db.err("reading tasks"))?;
            let found: std::collections::HashMap<i64, String> =
                rows.iter().map(|r| (r.get(0), r.get(1))).collect();
            Ok(ids.iter().map(|id| found.get(id).cloned()).collect())
        })
    }

    fn actions_page(
        &self,
        run: i64,
        offset: u64,
        limit: u32,
    ) -> Result<Vec<weir_store::ActionRecord>> {
        self.block(move |db| async move {
            let client = db.client().await?;
            let rows = client
                .query(
                    &format!(
                        "SELECT {ACTION_COLUMNS} FROM actions WHERE run = $1 ORDER BY seq LIMIT $2 OFFSET $3"
                    ),
                    &[&run, &(limit as i64), &(offset as i64)],
                )
                .await
                .map_err(db.err("reading actions"))?;
            Ok(rows.iter().map(action_from_row).collect())
        })
    }

    fn setting(&self, key: &str) -> Result<Option<String>> {
        let key = key.to_string();
        self.block(|db| async move {
            let client = db.client().await?;
            Ok(client
                .query_opt("SELECT value FROM settings WHERE key = $1", &[&key])
                .await
                .map_err(db.err("reading a setting"))?
                .map(|r| r.get(0)))
        })
    }
}
