//! `ui`: the web UI on a state directory (SPEC §11.2).

use std::path::Path;

use clap::Args;

use super::{CliResult, Failure};

#[derive(Args, Debug)]
pub(crate) struct UiArgs {
    /// Port on 127.0.0.1 (0 picks a free one).
    #[arg(long, default_value_t = 8710)]
    port: u16,
}

pub(crate) async fn ui(state_dir: &Path, args: UiArgs) -> CliResult {
    // A state that cannot be read is refused now rather than on every page; none at all is
    // fine (the UI shows runs once there are some). Read-only: nothing is created or changed.
    match weir_store::open_read_model(state_dir) {
        Ok(_) | Err(weir_store::Error::NoState(_)) => {}
        Err(e) => return Err(e.into()),
    }
    let listener = tokio::net::TcpListener::bind(("127.0.0.1", args.port))
        .await
        .map_err(|e| {
            Failure::input(format!(
                "cannot listen on 127.0.0.1:{}: {e} (pass --port to choose another)",
                args.port
            ))
        })?;
    if let Ok(addr) = listener.local_addr() {
        eprintln!(
            "weir ui: http://{addr}/ (state in {}; Ctrl-C to stop)",
            state_dir.display()
        );
    }
    weir_server::serve_on(listener, state_dir)
        .await
        .map_err(Failure::other)
}
