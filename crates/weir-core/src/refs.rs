//! References to data in the object store (`weir::File`, `weir::Dir`, `weir::DataFrame`) found
//! in a payload, for display by `weir get io` and the web UI (SPEC §5.2).
//!
//! A reference is a small map in the payload, known by its first key: `weir_file` (the blake3
//! of the bytes, with `size`), `weir_dir` (a list of `[path, file]`), `weir_dataframe` (the
//! blake3 of the Parquet object, with `size`, `rows`, `columns` and `head`: the schema and first
//! rows ride in the reference, so they are shown without reading the object). Its bytes live
//! under `raw/<hash>` in the run's object store.

use serde_json::{Value, json};

/// Payloads larger than this are not searched for references (a payload carrying references
/// is small: the data is elsewhere).
pub const MAX_SEARCHED: usize = 4 << 20;

/// Most references listed for one payload.
pub const MAX_LISTED: usize = 1000;

/// The references in a MessagePack payload, each as JSON: `at` (where in the value, like
/// `[1].frame`), `kind` (`file`, `dir` or `dataframe`), `uri` (`store_url` + `/raw/<hash>`;
/// none for a dir), `size`, `hash`, and for a dataframe `rows`, `columns` and `head`, for a dir
/// `files`. Empty for a payload that is not MessagePack or is over [`MAX_SEARCHED`] bytes.
pub fn references(payload: &[u8], store_url: &str) -> Vec<Value> {
    if payload.len() > MAX_SEARCHED {
        return Vec::new();
    }
    let Ok(value) = crate::codec::to_json(payload) else {
        return Vec::new();
    };
    let mut found = Vec::new();
    walk(
        &value,
        String::new(),
        store_url.trim_end_matches('/'),
        &mut found,
    );
    found
}

fn is_hash(v: &Value) -> Option<&str> {
    let h = v.as_str()?;
    (h.len() == 64 && h.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))).then_some(h)
}

fn walk(v: &Value, at: String, store: &str, found: &mut Vec<Value>) {
    if found.len() >= MAX_LISTED {
        return;
    }
    match v {
        Value::Object(m) => {
            let size = m.get("size").and_then(Value::as_u64);
            if let (Some(hash), Some(size)) = (m.get("weir_file").and_then(is_hash), size) {
                found.push(json!({
                    "at": at, "kind": "file", "uri": format!("{store}/raw/{hash}"),
                    "size": size, "hash": hash,
                }));
                return;
            }
            if let (Some(hash), Some(size)) = (m.get("weir_dataframe").and_then(is_hash), size) {
                found.push(json!({
                    "at": at, "kind": "dataframe", "uri": format!("{store}/raw/{hash}"),
                    "size": size, "hash": hash,
                    "rows": m.get("rows"), "columns": m.get("columns"), "head": m.get("head"),
                }));
                return;
            }
            if let Some(Value::Array(files)) = m.get("weir_dir") {
                let total: u64 = files
                    .iter()
                    .filter_map(|f| f.get(1)?.get("size")?.as_u64())
                    .sum();
                found.push(json!({
                    "at": at, "kind": "dir", "files": files.len(), "size": total,
                }));
                for f in files {
                    if let (Some(path), Some(file)) = (f.get(0).and_then(Value::as_str), f.get(1)) {
                        walk(file, format!("{at}/{path}"), store, found);
                    }
                }
                return;
            }
            for (k, v) in m {
                let at = if at.is_empty() {
                    k.clone()
                } else {
                    format!("{at}.{k}")
                };
                walk(v, at, store, found);
            }
        }
        Value::Array(items) => {
            for (i, v) in items.iter().enumerate() {
                walk(v, format!("{at}[{i}]"), store, found);
            }
        }
        _ => {}
    }
}

/// Lines of text describing `references` (as [`references`] gives them) for a terminal.
pub fn describe(references: &[Value]) -> Vec<String> {
    let mut lines = Vec::new();
    for r in references {
        let at = r["at"].as_str().unwrap_or("");
        let at = if at.is_empty() { "(the value)" } else { at };
        let size = r["size"].as_u64().unwrap_or(0);
        match r["kind"].as_str() {
            Some("dir") => lines.push(format!(
                "{at}: dir of {} files, {size} bytes",
                r["files"].as_u64().unwrap_or(0)
            )),
            Some("dataframe") => {
                lines.push(format!(
                    "{at}: dataframe {} ({size} bytes, {} rows, blake3 {})",
                    r["uri"].as_str().unwrap_or(""),
                    r["rows"].as_u64().unwrap_or(0),
                    r["hash"].as_str().unwrap_or("")
                ));
                let columns: Vec<String> = r["columns"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .map(|c| {
                        format!(
                            "{}: {}{}",
                            c["name"].as_str().unwrap_or("?"),
                            c["type"].as_str().unwrap_or("?"),
                            if c["nullable"].as_bool() == Some(true) {
                                "?"
                            } else {
                                ""
                            }
                        )
                    })
                    .collect();
                lines.push(format!("  columns: {}", columns.join(", ")));
                for row in r["head"].as_array().into_iter().flatten() {
                    let cells: Vec<&str> = row
                        .as_array()
                        .into_iter()
                        .flatten()
                        .map(|c| c.as_str().unwrap_or(""))
                        .collect();
                    lines.push(format!("  | {} |", cells.join(" | ")));
                }
            }
            _ => lines.push(format!(
                "{at}: file {} ({size} bytes, blake3 {})",
                r["uri"].as_str().unwrap_or(""),
                r["hash"].as_str().unwrap_or("")
            )),
        }
    }
    lines
}

#[cfg(test)]
mod tests {
    use super::*;

    const H: &str = "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";

    fn file(size: u64) -> Value {
        json!({"weir_file": H, "size": size})
    }

    #[test]
    fn finds_files_frames_and_dirs_where_they_are() {
        let v = json!({
            "a": [1, file(3)],
            "b": {"weir_dataframe": H, "size": 10, "rows": 2,
                  "columns": [{"name": "x", "type": "Int64", "nullable": false}],
                  "head": [["1"], ["2"]]},
            "c": {"weir_dir": [["p/q.txt", file(4)], ["r", file(5)]]},
            "d": {"weir_file": "not a hash", "size": 1},
        });
        let bytes = crate::codec::encode(&v).unwrap();
        let found = references(&bytes, "file:///s/blobs/");
        let at: Vec<(&str, &str)> = found
            .iter()
            .map(|r| (r["at"].as_str().unwrap(), r["kind"].as_str().unwrap()))
            .collect();
        assert_eq!(
            at,
            vec![
                ("a[1]", "file"),
                ("b", "dataframe"),
                ("c", "dir"),
                ("c/p/q.txt", "file"),
                ("c/r", "file"),
            ]
        );
        assert_eq!(found[0]["uri"], format!("file:///s/blobs/raw/{H}"));
        assert_eq!(found[0]["size"], 3);
        assert_eq!(found[2]["size"], 9);
        let text = describe(&found).join("\n");
        assert!(text.contains("b: dataframe file:///s/blobs/raw/"), "{text}");
        assert!(
            text.contains("  columns: x: Int64\n  | 1 |\n  | 2 |"),
            "{text}"
        );
        assert!(text.contains("c: dir of 2 files, 9 bytes"), "{text}");
    }

    #[test]
    fn a_plain_value_has_none() {
        let bytes = crate::codec::encode(&json!({"hash": H, "size": 3})).unwrap();
        assert!(references(&bytes, "file:///x").is_empty());
        assert!(references(b"\xc1", "file:///x").is_empty());
    }
}
