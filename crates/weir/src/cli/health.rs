//! `health`: asks a control plane replica whether it serves, for probes that cannot send the
//! cluster token themselves (Kubernetes' `httpGet` probes cannot read a Secret into a header;
//! an `exec` probe runs this with the token file mounted from it). Exit 0 when the replica
//! answered 200, 1 otherwise, with the reason on stderr.

use std::time::Duration;

use clap::Args;
use weir_engine::cluster::ClusterClient;

use super::{CliResult, Failure};

#[derive(Args, Debug)]
pub(crate) struct HealthArgs {
    #[command(flatten)]
    server: super::cluster::ServerArgs,
    /// Only check that the replica answers authenticated requests (`GET /v1/health?live=1`),
    /// not that its database does: for liveness probes, which a database outage must not fail.
    #[arg(long)]
    live: bool,
    /// Give up (exit 1) when no answer came within this long (e.g. `5s`).
    #[arg(long, default_value = "5s", value_parser = weir_core::spec::parse_duration)]
    timeout: Duration,
}

pub(crate) async fn health(state_dir: &std::path::Path, args: HealthArgs) -> CliResult {
    let Some(server) = args.server.server.as_deref() else {
        return Err(Failure::input("health needs --server URL"));
    };
    // Each replica is checked on its own: a probe asks about the replica it runs beside.
    if server.contains(',') {
        return Err(Failure::input(
            "health checks one replica: give --server one URL",
        ));
    }
    let client: ClusterClient = super::cluster::clients(state_dir, &args.server)?
        .into_iter()
        .next()
        .ok_or_else(|| Failure::input("--server names no URL"))?;
    match tokio::time::timeout(args.timeout, client.health(args.live)).await {
        Ok(Ok(text)) => {
            println!("{text}");
            Ok(())
        }
        Ok(Err(e)) => Err(Failure::other(format!("{server} is not healthy: {e}"))),
        Err(_) => Err(Failure::other(format!(
            "{server} did not answer within {:?}",
            args.timeout
        ))),
    }
}
