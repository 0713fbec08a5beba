//! Reads a `WEIR_TRANSITION_LOG` file written by a whole test suite (every process appends the
//! first use of each transition and every refused one), prints the declared transitions never
//! taken, and fails if any undeclared transition was asked for.
//!
//! ```text
//! WEIR_TRANSITION_LOG=target/transitions.log cargo test --workspace
//! cargo run -p weir-core --example transition_report -- target/transitions.log
//! ```

use std::process::ExitCode;

fn main() -> ExitCode {
    let Some(path) = std::env::args().nth(1) else {
        eprintln!("usage: transition_report LOG_FILE");
        return ExitCode::from(2);
    };
    let text = match std::fs::read_to_string(&path) {
        Ok(t) => t,
        Err(e) => {
            eprintln!("cannot read {path}: {e}");
            return ExitCode::from(2);
        }
    };
    let coverage = match weir_core::lifecycle::read_log(&text) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("{path}: {e}");
            return ExitCode::from(2);
        }
    };
    println!(
        "lifecycle transitions taken by the test suite: {} of {} declared",
        coverage.taken.len(),
        coverage.taken.len() + coverage.not_taken.len()
    );
    for (from, event, to) in &coverage.not_taken {
        println!("  never taken: {from} --{}--> {to}", event.as_str());
    }
    if coverage.refused.is_empty() {
        return ExitCode::SUCCESS;
    }
    for r in &coverage.refused {
        eprintln!(
            "  UNDECLARED: {} --{}--> (refused)",
            r.from,
            r.event.as_str()
        );
    }
    eprintln!("the engine asked for transitions the lifecycle table does not declare");
    ExitCode::from(1)
}
