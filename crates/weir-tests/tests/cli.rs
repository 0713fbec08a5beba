//! The command line against a real user binary: bad inputs change nothing, inspection works,
//! and a SIGKILLed run resumes without re-running succeeded actions.

use std::collections::HashMap;
use std::path::Path;
use std::process::{Command, Stdio};

use weir_tests::{fixture, snapshot, wait_for};

const BIN: &str = env!("CARGO_BIN_EXE_fixture");

fn stdout(o: &std::process::Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}
fn stderr(o: &std::process::Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

#[test]
fn bad_input_is_refused_with_a_clear_error_and_changes_nothing() {
    let tmp = tempfile::tempdir().unwrap();
    let fresh = tmp.path().join("fresh");
    // On a directory that does not exist yet: nothing gets created.
    let cases: &[(&[&str], &str)] = &[
        (
            &["run", "add", "--input", "{\"a\": 1, \"b\":"],
            "invalid --input for task fx.add",
        ),
        (
            &["run", "add", "--input", "{\"a\": \"one\", \"b\": 2}"],
            "invalid type",
        ),
        (
            &["run", "add", "--input", "{\"a\": 1}"],
            "missing field `b`",
        ),
        (
            &["run", "add", "--input", "{\"a\": 1, \"b\": 2, \"c\": 3}"],
            "unknown field `c`",
        ),
        (&["run", "nope", "--input", "{}"], "unknown task \"nope\""),
        (&["get", "runs"], "no weir state"),
    ];
    for (args, needle) in cases {
        let o = fixture(BIN, &fresh, args);
        assert_eq!(o.status.code(), Some(2), "{args:?}: {}", stderr(&o));
        assert!(
            stderr(&o).contains(needle),
            "{args:?}: expected {needle:?} in {}",
            stderr(&o)
        );
        assert!(stdout(&o).is_empty(), "{args:?}: data printed on failure");
        assert!(!fresh.exists(), "{args:?} created the state directory");
    }

    // On an existing state directory: no file changes.
    let state = tmp.path().join("state");
    let o = fixture(
        BIN,
        &state,
        &[
            "run",
            "add",
            "--input",
            "{\"a\": 2, \"b\": 3}",
            "--name",
            "first",
        ],
    );
    assert!(o.status.success(), "{}", stderr(&o));
    assert_eq!(stdout(&o).trim(), "5");
    let before = snapshot(&state);
    let cases: &[(&[&str], &str)] = &[
        (&["run", "add", "--input", "[1, 2]"], "invalid --input"),
        (
            &[
                "run",
                "add",
                "--input",
                "{\"a\": 1, \"b\": 2}",
                "--name",
                "first",
            ],
            "exists already",
        ),
        (
            &["get", "actions", "missing-run"],
            "unknown run \"missing-run\"",
        ),
        (
            &["get", "io", "first", "0123456789abcdef"],
            "unknown action",
        ),
        (&["get", "io", "first", "zz"], "unknown action"),
        (&["resume", "missing-run"], "unknown run"),
        (&["abort", "first"], "already ended"),
        (&["get", "runs", "--status", "sideways"], "unknown status"),
    ];
    for (args, needle) in cases {
        let o = fixture(BIN, &state, args);
        assert_eq!(o.status.code(), Some(2), "{args:?}: {}", stderr(&o));
        assert!(
            stderr(&o).contains(needle),
            "{args:?}: expected {needle:?} in {}",
            stderr(&o)
        );
    }
    assert_eq!(
        snapshot(&state),
        before,
        "a rejected command changed the state directory"
    );

    // A failing run: exit 1, error kind and message in JSON, never retried (non-recoverable).
    let o = fixture(
        BIN,
        &state,
        &[
            "-o",
            "json",
            "run",
            "refuse",
            "--input",
            "{\"reason\": \"no way\"}",
            "--name",
            "bad",
        ],
    );
    assert_eq!(o.status.code(), Some(1));
    let doc: serde_json::Value = serde_json::from_str(stdout(&o).trim()).unwrap();
    assert_eq!(doc["status"], "failed");
    assert!(doc["error"].as_str().unwrap().contains("no way"));
    let o = fixture(BIN, &state, &["-o", "json", "get", "actions", "bad"]);
    let actions: serde_json::Value = serde_json::from_str(stdout(&o).trim()).unwrap();
    assert_eq!(
        actions[0]["attempts"], 1,
        "non-recoverable errors are not retried"
    );
    assert_eq!(actions[0]["error"]["kind"], "non_recoverable");
}

#[test]
fn inspection_commands_show_runs_actions_and_io() {
    let tmp = tempfile::tempdir().unwrap();
    let state = tmp.path();
    let o = fixture(
        BIN,
        state,
        &[
            "run",
            "fanout",
            "--input",
            r#"{"n": 5, "width": 5, "sleep_ms": 0, "log": ""}"#,
            "--name",
            "five",
        ],
    );
    assert!(o.status.success(), "{}", stderr(&o));
    assert_eq!(stdout(&o).trim(), "20");

    let o = fixture(BIN, state, &["-o", "json", "get", "runs"]);
    let runs: serde_json::Value = serde_json::from_str(stdout(&o).trim()).unwrap();
    assert_eq!(runs[0]["name"], "five");
    assert_eq!(runs[0]["status"], "succeeded");
    assert_eq!(runs[0]["actions"]["succeeded"], 6);

    let o = fixture(BIN, state, &["-o", "json", "get", "actions", "five"]);
    let actions: Vec<serde_json::Value> = serde_json::from_str(stdout(&o).trim()).unwrap();
    assert_eq!(actions.len(), 6);
    assert_eq!(actions[0]["id"], "a0");
    assert!(
        actions[1..]
            .iter()
            .all(|a| a["parent"] == "a0" && a["group"] == "child_map" && a["task"] == "fx.child")
    );

    let table = stdout(&fixture(BIN, state, &["get", "actions", "five"]));
    assert!(table.starts_with("ACTION"), "{table}");
    assert!(
        table.contains("  ") && table.contains("fx.child") && table.contains("succeeded"),
        "{table}"
    );

    let child = actions[3]["id"].as_str().unwrap();
    let o = fixture(BIN, state, &["-o", "json", "get", "io", "five", child]);
    let io: serde_json::Value = serde_json::from_str(stdout(&o).trim()).unwrap();
    let i = io["inputs"]["i"].as_u64().unwrap();
    assert_eq!(io["output"].as_u64().unwrap(), i * 2);
    assert_eq!(io["inputs"]["sleep_ms"], 0);

    // Every action's inputs and output in one call.
    let o = fixture(
        BIN,
        state,
        &["-o", "json", "get", "actions", "five", "--with-io"],
    );
    let with_io: Vec<serde_json::Value> = serde_json::from_str(stdout(&o).trim()).unwrap();
    assert_eq!(with_io[0]["inputs"]["n"], 5);
    assert_eq!(with_io[0]["output"], 20);
    for a in &with_io[1..] {
        assert_eq!(a["output"], a["inputs"]["i"].as_u64().unwrap() * 2, "{a}");
    }
    let table = stdout(&fixture(
        BIN,
        state,
        &["get", "actions", "five", "--with-io"],
    ));
    assert!(
        table.contains("INPUTS") && table.contains("\"sleep_ms\":0"),
        "{table}"
    );

    let tasks = stdout(&fixture(BIN, state, &["tasks"]));
    assert!(
        tasks.contains("fx.fanout") && tasks.contains("n, width, sleep_ms, log"),
        "{tasks}"
    );
}

fn executions(log: &Path) -> (HashMap<u64, usize>, HashMap<u64, usize>, usize) {
    let text = std::fs::read_to_string(log).unwrap_or_default();
    let (mut starts, mut ends, mut parent) = (HashMap::new(), HashMap::new(), 0);
    for line in text.lines() {
        if let Some(i) = line.strip_prefix("start ") {
            *starts.entry(i.parse().unwrap()).or_default() += 1;
        } else if let Some(i) = line.strip_prefix("end ") {
            *ends.entry(i.parse().unwrap()).or_default() += 1;
        } else if line == "parent done" {
            parent += 1;
        }
    }
    (starts, ends, parent)
}

#[test]
fn sigkill_mid_fanout_then_resume_reruns_no_succeeded_child() {
    let tmp = tempfile::tempdir().unwrap();
    let state = tmp.path().join("state");
    let log = tmp.path().join("exec.log");
    let n = 60u64;
    let input = format!(
        r#"{{"n": {n}, "width": 4, "sleep_ms": 15, "log": "{}"}}"#,
        log.display()
    );
    let mut proc = Command::new(BIN)
        .arg("--state-dir")
        .arg(&state)
        .args(["run", "fanout", "--name", "killed", "--input", &input])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    // Kill (SIGKILL) once a good part of the fan-out has finished.
    wait_for("the fan-out", || executions(&log).1.len() >= 20);
    proc.kill().unwrap(); // SIGKILL on Unix
    proc.wait().unwrap();
    let (starts_before, _, parent_before) = executions(&log);
    assert_eq!(parent_before, 0, "killed before the parent finished");
    assert!(starts_before.len() < n as usize, "killed in the middle");

    // What the store had accepted before the kill.
    let o = fixture(
        BIN,
        &state,
        &["-o", "json", "get", "actions", "killed", "--limit", "1000"],
    );
    let actions: Vec<serde_json::Value> = serde_json::from_str(stdout(&o).trim()).unwrap();
    let succeeded_before = actions
        .iter()
        .filter(|a| a["status"] == "succeeded")
        .count();
    assert!(
        succeeded_before >= 10,
        "only {succeeded_before} children were committed"
    );
    let succeeded_ids: Vec<String> = actions
        .iter()
        .filter(|a| a["status"] == "succeeded")
        .map(|a| a["id"].as_str().unwrap().to_string())
        .collect();
    let mut succeeded_inputs = Vec::new();
    for id in &succeeded_ids {
        let io: serde_json::Value = serde_json::from_str(
            stdout(&fixture(
                BIN,
                &state,
                &["-o", "json", "get", "io", "killed", id],
            ))
            .trim(),
        )
        .unwrap();
        succeeded_inputs.push(io["inputs"]["i"].as_u64().unwrap());
    }

    let o = fixture(BIN, &state, &["-o", "json", "resume", "killed"]);
    assert!(o.status.success(), "resume failed: {}", stderr(&o));
    let doc: serde_json::Value = serde_json::from_str(stdout(&o).trim()).unwrap();
    let expected: u64 = (0..n).map(|i| i * 2).sum();
    assert_eq!(
        doc["output"].as_u64(),
        Some(expected),
        "same output as an uninterrupted run"
    );

    let (starts, _, parent) = executions(&log);
    assert_eq!(parent, 1);
    assert_eq!(starts.len(), n as usize, "every child ran");
    for i in &succeeded_inputs {
        assert_eq!(
            starts[i], 1,
            "child {i} had succeeded before the kill and ran again"
        );
    }
    // Only children that were in flight at the kill may have run twice.
    let reruns = starts.values().filter(|c| **c > 1).count();
    assert!(reruns <= 8, "{reruns} children ran twice");

    let o = fixture(BIN, &state, &["-o", "json", "get", "runs"]);
    let runs: serde_json::Value = serde_json::from_str(stdout(&o).trim()).unwrap();
    assert_eq!(runs[0]["status"], "succeeded");
    assert_eq!(
        runs[0]["actions"]["succeeded"],
        n + 1,
        "no duplicate actions after resume"
    );
}
