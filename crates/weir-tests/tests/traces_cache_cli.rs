//! Traces survive a SIGKILL of the engine process, and the cache CLI works on a real binary.

use std::collections::HashMap;
use std::path::Path;
use std::process::{Command, Stdio};

use weir_tests::{fixture, wait_for};

const BIN: &str = env!("CARGO_BIN_EXE_fixture");

fn lines(log: &Path) -> HashMap<String, usize> {
    let mut counts = HashMap::new();
    for l in std::fs::read_to_string(log).unwrap_or_default().lines() {
        *counts.entry(l.to_string()).or_default() += 1;
    }
    counts
}

fn run_and_kill_at(state: &Path, log: &Path, name: &str, pause_ms: u64, marker: &str) {
    let input = format!(r#"{{"log": "{}", "pause_ms": {pause_ms}}}"#, log.display());
    let mut proc = Command::new(BIN)
        .arg("--state-dir")
        .arg(state)
        .args(["run", "traced_job", "--name", name, "--input", &input])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    wait_for(marker, || lines(log).contains_key(marker));
    proc.kill().unwrap(); // SIGKILL
    proc.wait().unwrap();
    assert!(
        !lines(log).contains_key("job done"),
        "killed before the task finished"
    );
}

fn resume(state: &Path, name: &str) -> serde_json::Value {
    let o = fixture(BIN, state, &["-o", "json", "resume", name]);
    assert!(
        o.status.success(),
        "resume failed: {}",
        String::from_utf8_lossy(&o.stderr)
    );
    serde_json::from_str(String::from_utf8_lossy(&o.stdout).trim()).unwrap()
}

#[test]
fn finished_traces_do_not_run_again_after_sigkill_and_streams_replay_their_items() {
    let tmp = tempfile::tempdir().unwrap();
    let state = tmp.path().join("state");

    // Killed in the middle of the ten traces.
    let log = tmp.path().join("a.log");
    run_and_kill_at(&state, &log, "a", 0, "step 5");
    let before = lines(&log);
    let started: Vec<u64> = (0..10)
        .filter(|i| before.contains_key(&format!("step {i}")))
        .collect();
    let doc = resume(&state, "a");
    assert_eq!(doc["output"], 75);
    let after = lines(&log);
    let last_started = *started.last().unwrap();
    for i in 0..last_started {
        // A later step started, so step i had returned, and a trace returns only after its
        // checkpoint is committed.
        assert_eq!(
            after[&format!("step {i}")],
            1,
            "finished trace {i} ran again"
        );
    }
    for i in 0..10 {
        assert!(after.contains_key(&format!("step {i}")));
    }
    for i in 0..5 {
        assert_eq!(after[&format!("item {i}")], 1);
    }

    // Killed after the stream trace finished: its items are replayed, the stream is not re-run.
    let log = tmp.path().join("b.log");
    run_and_kill_at(&state, &log, "b", 1_500, "streamed");
    let doc = resume(&state, "b");
    assert_eq!(doc["output"], 75);
    let after = lines(&log);
    for i in 0..10 {
        assert_eq!(after[&format!("step {i}")], 1, "trace {i} ran again");
    }
    for i in 0..5 {
        assert_eq!(
            after[&format!("item {i}")],
            1,
            "stream item {i} was produced again"
        );
    }
    assert_eq!(
        after["streamed"], 2,
        "the task itself ran again after the kill"
    );

    // Traces show up in the action tree as their own kind.
    let o = fixture(BIN, &state, &["-o", "json", "get", "actions", "b"]);
    let acts: Vec<serde_json::Value> =
        serde_json::from_str(String::from_utf8_lossy(&o.stdout).trim()).unwrap();
    assert_eq!(acts.iter().filter(|a| a["kind"] == "trace").count(), 11);
    let table = String::from_utf8_lossy(&fixture(BIN, &state, &["get", "actions", "b"]).stdout)
        .into_owned();
    assert!(
        table.contains("step (trace)") && table.contains("produce (trace)"),
        "{table}"
    );
}

#[test]
fn cache_hits_show_in_actions_and_the_cache_cli_lists_and_clears() {
    let tmp = tempfile::tempdir().unwrap();
    let state = tmp.path().join("state");
    let log = tmp.path().join("cache.log");
    let input = format!(r#"{{"a": 2, "b": 40, "log": "{}"}}"#, log.display());
    for name in ["first", "second"] {
        let o = fixture(
            BIN,
            &state,
            &["run", "call_cached", "--name", name, "--input", &input],
        );
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
        assert_eq!(String::from_utf8_lossy(&o.stdout).trim(), "42");
    }
    assert_eq!(lines(&log)["cached_add"], 1, "the second run hit the cache");
    let o = fixture(BIN, &state, &["-o", "json", "get", "actions", "second"]);
    let acts: Vec<serde_json::Value> =
        serde_json::from_str(String::from_utf8_lossy(&o.stdout).trim()).unwrap();
    let child = acts.iter().find(|a| a["task"] == "fx.cached_add").unwrap();
    assert_eq!(child["cache_hit"], true);
    assert_eq!(child["status"], "succeeded");

    let o = fixture(BIN, &state, &["-o", "json", "cache", "list"]);
    let entries: Vec<serde_json::Value> =
        serde_json::from_str(String::from_utf8_lossy(&o.stdout).trim()).unwrap();
    assert_eq!(entries.len(), 1);
    assert_eq!(entries[0]["task"], "fx.cached_add");
    assert_eq!(entries[0]["version"], "v1");
    let o = fixture(BIN, &state, &["cache", "clear", "fx.cached_add"]);
    assert!(String::from_utf8_lossy(&o.stderr).contains("removed 1 cache entries"));
    let o = fixture(
        BIN,
        &state,
        &["run", "call_cached", "--name", "third", "--input", &input],
    );
    assert!(o.status.success());
    assert_eq!(
        lines(&log)["cached_add"],
        2,
        "after clear the task runs again"
    );
    // --overwrite-cache runs it again too; --no-cache as well
    fixture(
        BIN,
        &state,
        &["run", "call_cached", "--overwrite-cache", "--input", &input],
    );
    fixture(
        BIN,
        &state,
        &["run", "call_cached", "--no-cache", "--input", &input],
    );
    assert_eq!(lines(&log)["cached_add"], 4);
    fixture(BIN, &state, &["run", "call_cached", "--input", &input]);
    assert_eq!(lines(&log)["cached_add"], 4);
}
