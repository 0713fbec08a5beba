//! The fuzz harnesses of weir: one function per area that takes untrusted bytes. The
//! `cargo fuzz` targets in `fuzz/` (outside the workspace) call them with libFuzzer's inputs;
//! the smoke test of this crate (`tests/smoke.rs`, run by `cargo test --workspace` and so by CI)
//! calls them with each target's seeds and a few thousand mutations of them.
//!
//! Each harness panics when a property is broken, so a fuzzer reports it:
//!
//! - [`codec_decode`]: the canonical codec's decoders never panic on any bytes; a value they
//!   decode re-encodes canonically and stably (decode → encode → decode → encode gives the same
//!   bytes); `canonicalize` is idempotent.
//! - [`protocol_messages`]: every worker-protocol message decoder (requests as the engine's
//!   HTTP server decodes them, replies as the worker decodes them), with the same stability.
//! - [`ui_params`]: the web UI's query and path parameters, through the real router over a
//!   state directory with real runs: every answer is 200, 400 or 404 (never a 500 or a panic),
//!   with a JSON body naming the problem.
//! - [`cli_input`]: `run --input JSON` turned into a task's canonical inputs, as the CLI does,
//!   for tasks with many kinds of parameters; inputs it accepts decode in the task, are
//!   canonical, and show (`get io`) as JSON that parses back to the same bytes. Also the task
//!   name lookup and the action ids and statuses `get` takes.

mod cli;
mod codec;
mod protocol;
pub mod seeds;
mod ui;

pub use cli::cli_input;
pub use codec::codec_decode;
pub use protocol::protocol_messages;
pub use ui::ui_params;

/// A harness: takes one input, panics when a property is broken.
pub type Harness = fn(&[u8]);

/// The fuzz targets, by the name of their `cargo fuzz` target.
pub const TARGETS: [(&str, Harness); 4] = [
    ("codec_decode", codec_decode),
    ("protocol_messages", protocol_messages),
    ("ui_params", ui_params),
    ("cli_input", cli_input),
];
