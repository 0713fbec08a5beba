//! `token create|list|revoke`: the access tokens of a control plane (SPEC §12.3), kept in its
//! PostgreSQL database. A token is printed once, when it is made; the database keeps only
//! its blake3 hash, whose first 12 hex digits are the token's id in `list` and `revoke`.
//! What each role may do is in `weir_engine::cluster::access`.

use clap::{Args, Subcommand, ValueEnum};
use weir_engine::cluster::access::{self, Role};
use weir_store::Store;

use super::output::{fmt_time, table};
use super::{CliResult, Failure, OutputFormat};

/// Hex digits of a token's hash shown as its id.
const ID_LEN: usize = 12;
/// The fewest hex digits `revoke` accepts (fewer could name several tokens by accident).
const MIN_ID_LEN: usize = 8;

#[derive(Subcommand, Debug)]
pub(crate) enum TokenCommand {
    /// Make a token and print it (once: only its hash is kept).
    Create(CreateArgs),
    /// The tokens: id, project, domain, role, when made (never the tokens themselves).
    List(DatabaseArgs),
    /// Delete a token by its id (replicas stop accepting it within 2 s).
    Revoke(RevokeArgs),
}

#[derive(Args, Debug)]
pub(crate) struct DatabaseArgs {
    /// The control plane's PostgreSQL database (as `serve --database`).
    #[arg(long, env = "WEIR_DATABASE")]
    database: String,
    /// The schema weir's tables live in (as `serve --schema`).
    #[arg(long)]
    schema: Option<String>,
}

#[derive(Clone, Copy, Debug, ValueEnum)]
pub(crate) enum RoleArg {
    /// Start, follow, abort and read the project's runs; list its cache entries.
    Client,
    /// Register workers that run the project's actions.
    Worker,
    /// Both.
    Admin,
}

#[derive(Args, Debug)]
pub(crate) struct CreateArgs {
    #[command(flatten)]
    db: DatabaseArgs,
    /// The project the token gives access to.
    #[arg(long)]
    project: String,
    /// Limit the token to one domain of the project.
    #[arg(long)]
    domain: Option<String>,
    /// What the token may do.
    #[arg(long, value_enum)]
    role: RoleArg,
}

#[derive(Args, Debug)]
pub(crate) struct RevokeArgs {
    #[command(flatten)]
    db: DatabaseArgs,
    /// The token's id, as `token list` shows it (at least 8 hex digits).
    id: String,
}

async fn connect(db: &DatabaseArgs) -> Result<Box<dyn Store>, Failure> {
    let store = super::serve::connect(&db.database, db.schema.clone()).await?;
    Ok(Box::new(store))
}

pub(crate) async fn token(out: OutputFormat, cmd: TokenCommand) -> CliResult {
    match cmd {
        TokenCommand::Create(args) => {
            let role = match args.role {
                RoleArg::Client => Role::Client,
                RoleArg::Worker => Role::Worker,
                RoleArg::Admin => Role::Admin,
            };
            access::check_name("project", &args.project).map_err(Failure::input)?;
            if let Some(d) = &args.domain {
                access::check_name("domain", d).map_err(Failure::input)?;
            }
            let store = connect(&args.db).await?;
            let (token, record) =
                access::create_token(store.as_ref(), &args.project, args.domain.as_deref(), role)
                    .await
                    .map_err(Failure::other)?;
            let id = &record.hash[..ID_LEN];
            if out == OutputFormat::Json {
                println!(
                    "{}",
                    serde_json::json!({
                        "token": token, "id": id, "project": record.project,
                        "domain": record.domain, "role": record.role,
                    })
                );
            } else {
                println!("{token}");
                eprintln!(
                    "weir token: made {} token {id} for project {}{}; it is shown only now (weir keeps its hash)",
                    record.role,
                    record.project,
                    record
                        .domain
                        .as_deref()
                        .map(|d| format!(", domain {d}"))
                        .unwrap_or_default()
                );
            }
            Ok(())
        }
        TokenCommand::List(db) => {
            let store = connect(&db).await?;
            let tokens = store.list_tokens().await.map_err(Failure::other)?;
            if out == OutputFormat::Json {
                let items: Vec<_> = tokens
                    .iter()
                    .map(|t| {
                        serde_json::json!({
                            "id": &t.hash[..ID_LEN], "project": t.project, "domain": t.domain,
                            "role": t.role, "created_at_us": t.created_at,
                        })
                    })
                    .collect();
                println!("{}", serde_json::Value::Array(items));
            } else {
                let rows: Vec<Vec<String>> = tokens
                    .iter()
                    .map(|t| {
                        vec![
                            t.hash[..ID_LEN].to_string(),
                            t.project.clone(),
                            t.domain.clone().unwrap_or_else(|| "*".into()),
                            t.role.clone(),
                            fmt_time(t.created_at),
                        ]
                    })
                    .collect();
                table(&["ID", "PROJECT", "DOMAIN", "ROLE", "CREATED"], &rows);
            }
            Ok(())
        }
        TokenCommand::Revoke(args) => {
            let id = args.id.to_ascii_lowercase();
            if id.len() < MIN_ID_LEN || !id.chars().all(|c| c.is_ascii_hexdigit()) {
                return Err(Failure::input(format!(
                    "bad token id {:?}: give at least {MIN_ID_LEN} hex digits of an id `token list` shows",
                    args.id
                )));
            }
            let store = connect(&args.db).await?;
            match store.revoke_tokens(&id).await.map_err(Failure::other)? {
                0 => Err(Failure::input(format!("no token with id {id}"))),
                n => {
                    eprintln!("weir token: revoked {n} token(s) with id {id}");
                    Ok(())
                }
            }
        }
    }
}
