//! Helpers for weir's integration tests: running the fixture binary and reading its state.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

/// Runs the fixture binary with `args` against `state_dir`.
pub fn fixture(bin: &str, state_dir: &Path, args: &[&str]) -> Output {
    Command::new(bin)
        .arg("--state-dir")
        .arg(state_dir)
        .args(args)
        .output()
        .expect("fixture binary runs")
}

/// Polls `done` until it holds. The 60 s bound guards against a hang; it is not a timing
/// assertion (the test fails naming `what`).
pub fn wait_for(what: &str, mut done: impl FnMut() -> bool) {
    let t0 = std::time::Instant::now();
    while !done() {
        assert!(
            t0.elapsed() < std::time::Duration::from_secs(60),
            "{what}: no progress in 60 s (hang?)"
        );
        std::thread::sleep(std::time::Duration::from_millis(5));
    }
}

/// Reads the fixture's `mwork` log (lines `mstart|mend I AT_US PID`): the number of lines
/// and the most [start, end] intervals open at once (an end sorts before a start at the same
/// microsecond).
pub fn most_at_once(log: &str) -> (usize, i32) {
    let mut events: Vec<(u128, i32)> = log
        .lines()
        .map(|line| {
            let w: Vec<&str> = line.split(' ').collect();
            let at: u128 = w[2].parse().expect("a time in µs");
            (at, if w[0] == "mstart" { 1 } else { -1 })
        })
        .collect();
    events.sort();
    let (mut now, mut max) = (0, 0);
    for (_, delta) in &events {
        now += delta;
        max = max.max(now);
    }
    (events.len(), max)
}

/// A snapshot of every file under a directory: (relative path, content hash). Used to prove
/// that a rejected command changed nothing (SQLite's `-shm` index and an empty `-wal` are left out).
pub fn snapshot(dir: &Path) -> Vec<(PathBuf, u64)> {
    let mut out = Vec::new();
    fn walk(root: &Path, dir: &Path, out: &mut Vec<(PathBuf, u64)>) {
        let Ok(entries) = std::fs::read_dir(dir) else {
            return;
        };
        for e in entries.flatten() {
            let p = e.path();
            // SQLite's `-shm` file is a shared-memory index that readers rebuild, and an empty
            // `-wal` file holds no transactions: neither is state.
            let name = p.to_string_lossy();
            let empty = e.metadata().map(|m| m.len() == 0).unwrap_or(false);
            if name.ends_with("-shm") || (name.ends_with("-wal") && empty) {
                continue;
            }
            if p.is_dir() {
                walk(root, &p, out);
            } else {
                let bytes = std::fs::read(&p).unwrap_or_default();
                let mut h: u64 = 0xcbf29ce484222325;
                for b in bytes {
                    h = (h ^ b as u64).wrapping_mul(0x100000001b3);
                }
                out.push((p.strip_prefix(root).unwrap_or(&p).to_path_buf(), h));
            }
        }
    }
    walk(dir, dir, &mut out);
    out.sort();
    out
}
