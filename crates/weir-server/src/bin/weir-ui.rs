//! `weir-ui [--state-dir DIR] [--port P]`: serves the UI for manual testing and the end-to-end
//! tests (the `weir ui` command does the same). Prints the URL on stderr once listening.

use std::path::PathBuf;

#[tokio::main]
async fn main() -> std::process::ExitCode {
    let mut state_dir = PathBuf::from(std::env::var("WEIR_STATE_DIR").unwrap_or(".weir".into()));
    let mut port: u16 = 8080;
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        let value = args.next();
        match (arg.as_str(), value) {
            ("--state-dir", Some(v)) => state_dir = v.into(),
            ("--port", Some(v)) => match v.parse() {
                Ok(p) => port = p,
                Err(_) => {
                    eprintln!("--port {v:?} is not a port number");
                    return std::process::ExitCode::from(2);
                }
            },
            _ => {
                eprintln!("usage: weir-ui [--state-dir DIR] [--port PORT]");
                return std::process::ExitCode::from(2);
            }
        }
    }
    let listener = match tokio::net::TcpListener::bind(("127.0.0.1", port)).await {
        Ok(l) => l,
        Err(e) => {
            eprintln!("cannot listen on 127.0.0.1:{port}: {e}");
            return std::process::ExitCode::from(1);
        }
    };
    match listener.local_addr() {
        Ok(addr) => eprintln!("weir ui: http://{addr}/ (state: {})", state_dir.display()),
        Err(e) => eprintln!("weir ui: listening ({e})"),
    }
    match weir_server::serve_on(listener, &state_dir).await {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("{e}");
            std::process::ExitCode::from(1)
        }
    }
}
