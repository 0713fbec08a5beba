//! The tree's own rule (issue 9 of the engine's structure): no source file of a crate's `src`
//! over 700 lines. A file that grows past it is split along a seam, not allowed to sprawl.

use std::path::{Path, PathBuf};

const LIMIT: usize = 700;

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display())) {
        let path = entry.expect("directory entry").path();
        if path.is_dir() {
            rust_files(&path, out);
        } else if path.extension().is_some_and(|x| x == "rs") {
            out.push(path);
        }
    }
}

#[test]
fn no_source_file_of_a_crate_is_over_700_lines() {
    let crates = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let mut files = Vec::new();
    for krate in std::fs::read_dir(&crates).expect("crates/") {
        let src = krate.expect("crate").path().join("src");
        if src.is_dir() {
            rust_files(&src, &mut files);
        }
    }
    // The walk must have found the tree (a wrong path would pass with nothing to check).
    assert!(
        files.iter().any(|f| f.ends_with("weir-engine/src/lib.rs")),
        "the walk did not reach crates/weir-engine/src: {} files",
        files.len()
    );
    let mut over: Vec<String> = files
        .iter()
        .filter_map(|f| {
            let lines = std::fs::read_to_string(f).ok()?.lines().count();
            (lines > LIMIT).then(|| format!("{} ({lines} lines)", f.display()))
        })
        .collect();
    over.sort();
    assert!(
        over.is_empty(),
        "source files over {LIMIT} lines (split them along a seam):\n{}",
        over.join("\n")
    );
}
