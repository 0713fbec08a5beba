//! Payload integrity (SPEC §12): every offloaded payload's reference keeps its content hash,
//! checked on read. A recorded child output that is damaged or deleted before it is replayed
//! (here: between two attempts of its parent, the same admission a resumed run takes) counts
//! as not recorded: the child runs again and the parent gets the right value, never the
//! damaged bytes and never a string of system errors. `get io`-style reads of a damaged
//! object fail naming it.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{LazyLock, Mutex};

use weir::Runner;
use weir::prelude::*;

static ENV: LazyLock<TaskEnvironment> = LazyLock::new(|| TaskEnvironment::new("integrity"));

static COUNTS: LazyLock<Mutex<HashMap<String, u64>>> = LazyLock::new(Default::default);
fn bump(key: &str) -> u64 {
    let mut m = COUNTS.lock().unwrap();
    let c = m.entry(key.to_string()).or_default();
    *c += 1;
    *c
}
fn count(key: &str) -> u64 {
    COUNTS.lock().unwrap().get(key).copied().unwrap_or(0)
}

/// Where each test's state lives, by tag (the parent damages its child's output there).
static DIRS: LazyLock<Mutex<HashMap<String, PathBuf>>> = LazyLock::new(Default::default);

/// A 200 KB output: offloaded to the object store (over the 64 KiB inline threshold).
#[weir::task(env = ENV)]
async fn big_child(tag: String) -> Result<Vec<u8>> {
    bump(&format!("{tag}/child"));
    Ok((0..200_000u32).map(|i| (i % 251) as u8).collect())
}

/// Calls the child, then on its first attempt damages (or deletes) the child's recorded
/// output object and fails; the retry replays the child.
#[weir::task(env = ENV, retries = 1)]
async fn damaging_parent(tag: String, delete: bool) -> Result<u64> {
    let out = big_child(tag.clone()).await?;
    let expected: Vec<u8> = (0..200_000u32).map(|i| (i % 251) as u8).collect();
    if bump(&format!("{tag}/parent")) == 1 {
        let dir = DIRS.lock().unwrap()[&tag].clone();
        let objects = find_outputs(&dir.join("blobs"));
        assert_eq!(objects.len(), 1, "{objects:?}");
        if delete {
            std::fs::remove_file(&objects[0]).unwrap();
        } else {
            let mut bytes = std::fs::read(&objects[0]).unwrap();
            let mid = bytes.len() / 2;
            bytes[mid] ^= 0x01;
            std::fs::write(&objects[0], bytes).unwrap();
        }
        return Err(Error::msg("first attempt fails after its child"));
    }
    Ok((out == expected) as u64 + out.len() as u64)
}

fn find_outputs(dir: &std::path::Path) -> Vec<PathBuf> {
    let mut found = Vec::new();
    let Ok(entries) = std::fs::read_dir(dir) else {
        return found;
    };
    for e in entries.flatten() {
        let p = e.path();
        if p.is_dir() {
            found.extend(find_outputs(&p));
        } else if p.file_name().is_some_and(|n| n == "outputs") {
            found.push(p);
        }
    }
    found
}

async fn damaged_child_output_runs_the_child_again(tag: &str, delete: bool) {
    let dir = tempfile::tempdir().unwrap();
    DIRS.lock()
        .unwrap()
        .insert(tag.to_string(), dir.path().to_path_buf());
    let runner = Runner::embedded(dir.path()).await.unwrap();
    let run = runner
        .with_context(RunContext::new().name(tag))
        .run(damaging_parent(tag.to_string(), delete))
        .await
        .unwrap();
    let out = run.wait().await.unwrap();
    assert_eq!(out, 200_001, "the parent got the child's true output");
    assert_eq!(count(&format!("{tag}/parent")), 2);
    assert_eq!(
        count(&format!("{tag}/child")),
        2,
        "the child ran again instead of replaying a lost output"
    );
}

#[tokio::test]
async fn a_flipped_bit_in_a_recorded_output_runs_its_action_again() {
    damaged_child_output_runs_the_child_again("flipped", false).await;
}

#[tokio::test]
async fn a_deleted_recorded_output_runs_its_action_again() {
    damaged_child_output_runs_the_child_again("deleted", true).await;
}
