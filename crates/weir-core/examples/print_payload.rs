//! Prints a payload file (canonical MessagePack, as weir stores it) as pretty JSON, either
//! through a tree of JSON values (`tree`: how `get io` and `run` printed before) or streamed
//! (`stream`: `weir_core::transcode`, what they do now). For measuring the two side by side:
//!
//! ```text
//! cargo run --release -p weir-core --example print_payload -- gen 1000000 PATH  # a test payload
//! cargo run --release -p weir-core --example print_payload -- stream PATH > /dev/null
//! ```

use std::io::Write;

/// A processed record, as the pipeline demo's batches return them.
#[derive(serde::Serialize)]
struct Item {
    id: u64,
    words: u32,
    checksum: u64,
    label: String,
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let (mode, path) = match (args.next(), args.next()) {
        (Some(m), Some(p)) => (m, p),
        _ => return Err("usage: print_payload tree|stream PATH".into()),
    };
    if mode == "gen" {
        // `path` is the item count here; the file comes next.
        let n: u64 = path.parse()?;
        let file = args.next().ok_or("usage: print_payload gen N PATH")?;
        let items: Vec<Item> = (0..n)
            .map(|id| Item {
                id,
                words: (id % 13) as u32,
                checksum: id.wrapping_mul(0x9e37_79b9_7f4a_7c15),
                label: format!("item {id}"),
            })
            .collect();
        std::fs::write(file, weir_core::codec::encode(&items)?)?;
        return Ok(());
    }
    let bytes = std::fs::read(path)?;
    let stdout = std::io::stdout();
    let mut out = std::io::BufWriter::new(stdout.lock());
    match mode.as_str() {
        "tree" => {
            let value = weir_core::codec::to_json(&bytes)?;
            writeln!(out, "{}", serde_json::to_string_pretty(&value)?)?;
        }
        "stream" => {
            weir_core::transcode::write_json(&bytes, &mut out, true)?;
            writeln!(out)?;
        }
        other => return Err(format!("unknown mode {other:?}").into()),
    }
    out.flush()?;
    Ok(())
}
