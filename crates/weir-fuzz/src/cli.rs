//! The command line's input parsing: `run TASK --input JSON` (the task lookup, the JSON
//! checks and the conversion to canonical inputs that `crates/weir/src/cli/run.rs` makes before
//! it opens a state directory), and the action ids and statuses `get` takes.

use std::collections::{BTreeMap, HashMap};
use std::sync::LazyLock;

use serde::{Deserialize, Serialize};
use serde_bytes::ByteBuf;
use weir::prelude::*;
use weir_core::codec;
use weir_engine::registry::{TaskDef, find_task};

use crate::codec::Shape;

pub(crate) static ENV: LazyLock<TaskEnvironment> = LazyLock::new(|| TaskEnvironment::new("fz"));
static OTHER: LazyLock<TaskEnvironment> =
    LazyLock::new(|| TaskEnvironment::new("fz2").max_inline_io(64));

/// A nested parameter type.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Point {
    x: i64,
    y: Option<u32>,
    tags: Vec<String>,
}

#[weir::task(env = ENV)]
async fn scalars(n: u64, i: i32, f: f64, g: f32, flag: bool, c: char, s: String) -> Result<u64> {
    let _ = (i, f, g, flag, c, s);
    Ok(n)
}

#[weir::task(env = ENV)]
async fn collections(
    items: Vec<u64>,
    names: HashMap<String, i64>,
    keyed: BTreeMap<u32, String>,
    pair: (u8, String),
    fixed: [u16; 3],
    maybe: Option<Vec<bool>>,
) -> Result<usize> {
    let _ = (names, keyed, pair, fixed, maybe);
    Ok(items.len())
}

#[weir::task(env = ENV)]
async fn structured(
    point: Point,
    shapes: Vec<Shape>,
    bytes: ByteBuf,
    nothing: (),
) -> Result<usize> {
    let _ = (point, nothing);
    Ok(shapes.len() + bytes.len())
}

#[weir::task(env = ENV)]
async fn anything(value: serde_json::Value) -> Result<serde_json::Value> {
    Ok(value)
}

#[weir::task(env = ENV)]
async fn no_params() -> Result<u64> {
    Ok(0)
}

/// Same short name as [`scalars`] in another environment (an ambiguous short name), with a
/// 64-byte inline limit.
mod other {
    use super::*;

    #[weir::task(env = OTHER)]
    pub(super) async fn scalars(n: i8) -> Result<i8> {
        Ok(n)
    }
}

/// Tasks by the selector: full names (the short name `scalars` is ambiguous).
pub const TASKS: [&str; 6] = [
    "fz.scalars",
    "fz.collections",
    "fz.structured",
    "fz.anything",
    "fz.no_params",
    "fz2.scalars",
];

/// What `run` does with `--input` before it opens the state directory (`cli/run.rs`): the
/// object check, the conversion, the inline limit. `Ok` holds the canonical inputs.
fn run_input(def: &'static TaskDef, input: &str) -> std::result::Result<Vec<u8>, String> {
    if let Ok(v) = serde_json::from_str::<serde_json::Value>(input)
        && !v.is_object()
    {
        return Err(format!(
            "expected a JSON object named by parameter ({{\"{}\": ...}}), got {v}",
            def.params.first().copied().unwrap_or("param")
        ));
    }
    let inputs = (def.inputs_from_json)(input).map_err(|e| {
        format!(
            "invalid --input for task {} (parameters: {}): {e}",
            def.full_name(),
            def.params.join(", ")
        )
    })?;
    if inputs.len() as u64 > def.inline_limit() {
        return Err(format!("{} bytes, over the inline limit", inputs.len()));
    }
    Ok(inputs)
}

/// The first byte picks what the rest is: mostly `--input` text for one of [`TASKS`]; else a
/// task name to look up, or an action id or status as `get` takes them.
pub fn cli_input(data: &[u8]) {
    let Some((&selector, rest)) = data.split_first() else {
        return;
    };
    // Command-line arguments reach the CLI as UTF-8 (clap refuses anything else).
    let Ok(text) = std::str::from_utf8(rest) else {
        return;
    };
    match selector {
        0..=239 => input(TASKS[selector as usize % TASKS.len()], text),
        240..=247 => lookup(text),
        _ => get_args(text),
    }
}

fn input(task: &str, text: &str) {
    let def = find_task(task).unwrap_or_else(|e| panic!("task {task} is not registered: {e}"));
    let Ok(bytes) = run_input(def, text) else {
        return;
    };
    assert_eq!(
        codec::canonicalize(bytes.clone()).expect("inputs canonicalize"),
        bytes,
        "inputs from {text:?} are not canonical"
    );
    // The task decodes them (its body only echoes).
    futures::executor::block_on(def.invoke(bytes.clone().into()))
        .unwrap_or_else(|e| panic!("task {task} refuses inputs it made from {text:?}: {e}"));
    // `get io` shows them as JSON, which is valid input giving the same bytes.
    let shown = codec::to_json(&bytes)
        .unwrap_or_else(|e| panic!("inputs {bytes:02x?} do not show as JSON: {e}"))
        .to_string();
    let back = run_input(def, &shown)
        .unwrap_or_else(|e| panic!("shown inputs {shown} (from {text:?}) are refused: {e}"));
    assert_eq!(
        back, bytes,
        "{text:?} → {shown} does not give the same inputs"
    );
}

fn lookup(name: &str) {
    match find_task(name) {
        Ok(def) => assert!(
            def.full_name() == name || def.short_name() == name,
            "{name:?} found {}",
            def.full_name()
        ),
        Err(e) => {
            let _ = e.to_string();
        }
    }
}

fn get_args(text: &str) {
    if let Some(id) = weir_core::ActionId::parse(text) {
        let shown = id.to_string();
        assert_eq!(weir_core::ActionId::parse(&shown), Some(id), "{text:?}");
    }
    if let Some(id) = weir_core::ActionId::parse(&text.to_ascii_lowercase()) {
        let _ = id.as_i64();
    }
    if let Some(s) = weir_store::RunStatus::parse(text) {
        assert_eq!(weir_store::RunStatus::parse(s.as_str()), Some(s));
    }
    if let Some(s) = weir_core::ActionStatus::parse(text) {
        assert_eq!(weir_core::ActionStatus::parse(s.as_str()), Some(s));
    }
}
