//! weir's tables on PostgreSQL, versioned in `meta`.

use tokio_postgres::Client;
use weir_store::{Error, Result};

use crate::describe;

/// Newest schema this build reads and writes (PostgreSQL's own numbering, apart from SQLite's):
/// 1 the first; 2 adds `attempt_logs` (what attempts printed); 3 adds `tokens` (access tokens,
/// by hash).
pub const SCHEMA_VERSION: i64 = 4;

/// The tables, as SQLite's (`weir_store`'s `sqlite/mod.rs`) with PostgreSQL's types: ids and
/// times are `bigint`, payloads `bytea` or a reference (see `weir_store::columns`).
const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS meta(key text PRIMARY KEY, value bigint NOT NULL);
CREATE TABLE IF NOT EXISTS runs(
  id bigserial PRIMARY KEY, name text NOT NULL UNIQUE, task text NOT NULL, status text NOT NULL,
  created_at bigint NOT NULL, ended_at bigint, inputs bytea, inputs_ref text, context text NOT NULL,
  output bytea, output_ref text, error text, owner text NOT NULL, epoch bigint NOT NULL DEFAULT 1,
  owner_seen_at bigint);
CREATE INDEX IF NOT EXISTS runs_by_owner ON runs(owner) WHERE status = 'running';
CREATE TABLE IF NOT EXISTS actions(
  seq bigserial PRIMARY KEY, run bigint NOT NULL, id bigint NOT NULL, parent bigint NOT NULL,
  task text NOT NULL, grp text, kind bigint NOT NULL, status bigint NOT NULL,
  attempts bigint NOT NULL DEFAULT 0, queued_at bigint NOT NULL, started_at bigint,
  ended_at bigint, cache_hit bigint NOT NULL DEFAULT 0, inputs bytea, inputs_ref text,
  output bytea, output_ref text, error text);
CREATE UNIQUE INDEX IF NOT EXISTS actions_by_id ON actions(run, id);
CREATE INDEX IF NOT EXISTS actions_by_parent ON actions(run, parent, seq);
CREATE TABLE IF NOT EXISTS cache(
  key text NOT NULL, project text NOT NULL, domain text NOT NULL, task text NOT NULL,
  version text NOT NULL, output bytea, output_ref text, created_at bigint NOT NULL,
  PRIMARY KEY(key, project, domain));
CREATE INDEX IF NOT EXISTS cache_by_task ON cache(task);
CREATE TABLE IF NOT EXISTS attempts(
  run bigint NOT NULL, action bigint NOT NULL, attempt bigint NOT NULL,
  started_at bigint NOT NULL, ended_at bigint NOT NULL, error text NOT NULL,
  PRIMARY KEY(run, action, attempt));
CREATE TABLE IF NOT EXISTS settings(key text PRIMARY KEY, value text NOT NULL);
CREATE SEQUENCE IF NOT EXISTS queue_seq;
CREATE SEQUENCE IF NOT EXISTS lease_seq;
CREATE TABLE IF NOT EXISTS queue(
  run bigint NOT NULL, action bigint NOT NULL, attempt bigint NOT NULL, env text NOT NULL,
  task text NOT NULL, enqueued_at bigint NOT NULL, seq bigint NOT NULL DEFAULT nextval('queue_seq'),
  lease bigint, worker text, expires_at bigint, system_retries bigint NOT NULL DEFAULT 0,
  PRIMARY KEY(run, action));
CREATE INDEX IF NOT EXISTS queue_ready ON queue(env, enqueued_at, seq) WHERE lease IS NULL;
CREATE INDEX IF NOT EXISTS queue_expiry ON queue(expires_at) WHERE lease IS NOT NULL;
CREATE INDEX IF NOT EXISTS queue_by_worker ON queue(worker) WHERE lease IS NOT NULL;
CREATE UNIQUE INDEX IF NOT EXISTS queue_by_lease ON queue(lease);
CREATE TABLE IF NOT EXISTS workers(
  id text PRIMARY KEY, env text NOT NULL, version text NOT NULL, registered_at bigint NOT NULL,
  seen_at bigint NOT NULL);
";

/// What each version adds to the one before it, in order: a schema found at version `v` gets
/// every step above `v` (in the transaction that checks the version), then records the newest.
/// [`SCHEMA`] is the schema of version 1.
const MIGRATIONS: &[(i64, &str)] = &[
    (
        2,
        "
CREATE TABLE IF NOT EXISTS attempt_logs(
  run bigint NOT NULL, action bigint NOT NULL, lease bigint NOT NULL, attempt bigint NOT NULL,
  worker text NOT NULL, pid bigint NOT NULL, env text NOT NULL, task text NOT NULL,
  started_at bigint NOT NULL, ended_at bigint NOT NULL, ok boolean NOT NULL,
  text bytea NOT NULL, dropped bigint NOT NULL, overlapping bigint NOT NULL,
  PRIMARY KEY(run, action, lease));
",
    ),
    (
        3,
        "
CREATE TABLE IF NOT EXISTS tokens(
  hash text PRIMARY KEY, project text NOT NULL, domain text, role text NOT NULL,
  created_at bigint NOT NULL);
",
    ),
    (
        4,
        "
ALTER TABLE actions ADD COLUMN IF NOT EXISTS phases bytea;
ALTER TABLE attempts ADD COLUMN IF NOT EXISTS phases bytea;
",
    ),
];

/// Creates the schema (and `schema`, the namespace, when given) or checks the version found;
/// serialized across processes by an advisory lock.
pub(crate) async fn migrate(client: &mut Client, schema: Option<&str>, what: &str) -> Result<()> {
    let err = |doing: &'static str| {
        let what = format!("{what} ({doing})");
        move |e: tokio_postgres::Error| Error::Database {
            what: what.clone(),
            source: describe(&e).into(),
        }
    };
    let tx = client
        .transaction()
        .await
        .map_err(err("creating the schema"))?;
    if let Some(schema) = schema {
        tx.execute(
            "SELECT pg_advisory_xact_lock(hashtext('weir schema ' || $1::text))",
            &[&schema],
        )
        .await
        .map_err(err("locking the schema"))?;
        // The name was checked to be letters, digits and `_`.
        tx.batch_execute(&format!("CREATE SCHEMA IF NOT EXISTS \"{schema}\""))
            .await
            .map_err(err("creating the schema"))?;
    }
    let current: Option<String> = tx
        .query_one("SELECT current_schema()", &[])
        .await
        .map_err(err("reading the schema"))?
        .get(0);
    let Some(current) = current else {
        return Err(Error::Corrupt(format!(
            "{what}: no schema to create weir's tables in (search_path names none that exists)"
        )));
    };
    tx.execute(
        "SELECT pg_advisory_xact_lock(hashtext('weir schema ' || $1::text))",
        &[&current],
    )
    .await
    .map_err(err("locking the schema"))?;
    let has_meta: bool = tx
        .query_one("SELECT to_regclass('meta') IS NOT NULL", &[])
        .await
        .map_err(err("reading the schema version"))?
        .get(0);
    let mut found = None;
    if has_meta {
        found = tx
            .query_opt("SELECT value FROM meta WHERE key = 'schema_version'", &[])
            .await
            .map_err(err("reading the schema version"))?
            .map(|r| r.get::<_, i64>(0));
        if let Some(found) = found
            && found > SCHEMA_VERSION
        {
            return Err(Error::NewerSchema {
                path: what.to_string(),
                found,
                supported: SCHEMA_VERSION,
            });
        }
    }
    tx.batch_execute(SCHEMA)
        .await
        .map_err(err("creating the schema"))?;
    // A new schema is at version 0 here: it gets every step.
    let found = found.unwrap_or(0);
    for (version, step) in MIGRATIONS.iter().filter(|(v, _)| *v > found) {
        tx.batch_execute(step).await.map_err(|e| Error::Database {
            what: format!("{what} (migrating the schema to version {version})"),
            source: describe(&e).into(),
        })?;
    }
    tx.execute(
        "INSERT INTO meta(key, value) VALUES('schema_version', $1)
         ON CONFLICT(key) DO UPDATE SET value = excluded.value WHERE meta.value < excluded.value",
        &[&SCHEMA_VERSION],
    )
    .await
    .map_err(err("creating the schema"))?;
    tx.commit().await.map_err(err("creating the schema"))
}
