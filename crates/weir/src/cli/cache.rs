//! `cache list|clear [TASK]`.

use std::path::Path;

use clap::Subcommand;
use weir_engine::cluster::CacheView;
use weir_store::StoreOptions;

use super::output::{fmt_time, table};
use super::{CliResult, Failure, OutputFormat};

#[derive(Subcommand, Debug)]
pub(crate) enum CacheCommand {
    /// Cache entries, newest first.
    List {
        /// Only entries of this task (`<env>.<task>`).
        task: Option<String>,
        /// At most this many entries.
        #[arg(long, default_value_t = 100)]
        limit: u32,
        #[command(flatten)]
        server: super::cluster::ServerArgs,
    },
    /// Delete cache entries (of one task, or all).
    Clear {
        /// Only entries of this task (`<env>.<task>`).
        task: Option<String>,
        #[command(flatten)]
        server: super::cluster::ServerArgs,
    },
}

pub(crate) async fn cache(state_dir: &Path, out: OutputFormat, cmd: CacheCommand) -> CliResult {
    match cmd {
        CacheCommand::List {
            task,
            limit,
            server,
        } => {
            let entries: Vec<CacheView> = if server.server.is_some() {
                let clients = super::cluster::clients(state_dir, &server)?;
                super::cluster::cache(&clients, task.as_deref(), limit).await?
            } else {
                let store = weir_store::open_read_only(state_dir)?;
                store
                    .list_cache(task.as_deref(), None, limit)
                    .await
                    .map_err(Failure::other)?
                    .into_iter()
                    .map(CacheView::from)
                    .collect()
            };
            if out == OutputFormat::Json {
                let items: Vec<_> = entries
                    .iter()
                    .map(|e| {
                        serde_json::json!({
                            "key": e.key, "task": e.task, "version": e.version, "project": e.project,
                            "domain": e.domain, "created_at_us": e.created_at, "size": e.size,
                        })
                    })
                    .collect();
                println!("{}", serde_json::Value::Array(items));
                return Ok(());
            }
            let rows: Vec<Vec<String>> = entries
                .iter()
                .map(|e| {
                    vec![
                        e.key.clone(),
                        e.task.clone(),
                        e.version.clone(),
                        e.size.to_string(),
                        format!("{}/{}", e.project, e.domain),
                        fmt_time(e.created_at),
                    ]
                })
                .collect();
            table(
                &[
                    "KEY",
                    "TASK",
                    "VERSION",
                    "SIZE",
                    "PROJECT/DOMAIN",
                    "CREATED",
                ],
                &rows,
            );
            Ok(())
        }
        CacheCommand::Clear { task, server } => {
            if server.server.is_some() {
                let clients = super::cluster::clients(state_dir, &server)?;
                let n = super::cluster::clear_cache(&clients, task.as_deref()).await?;
                eprintln!("removed {n} cache entries");
                return Ok(());
            }
            // Refused (exit 2) where there is no state, before anything is created.
            drop(weir_store::open_read_only(state_dir)?);
            let store = weir_store::open(state_dir, StoreOptions::default())?;
            let n = store
                .clear_cache(task.as_deref())
                .await
                .map_err(Failure::other)?;
            eprintln!("removed {n} cache entries");
            Ok(())
        }
    }
}
