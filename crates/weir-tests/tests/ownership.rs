//! Run ownership with real processes: a run is driven by one engine at a time (owner id +
//! epoch), a taken run name changes nothing, and a resumed run runs where it ran before.

use std::collections::HashMap;
use std::path::Path;
use std::process::{Command, Stdio};

use weir_tests::{fixture, snapshot, wait_for};

const BIN: &str = env!("CARGO_BIN_EXE_fixture");

fn stderr(o: &std::process::Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// Child starts by input `i`, from the fixture's execution log.
fn starts(log: &Path) -> HashMap<u64, usize> {
    let mut m = HashMap::new();
    for line in std::fs::read_to_string(log).unwrap_or_default().lines() {
        let first_word = line
            .strip_prefix("start ")
            .and_then(|r| r.split(' ').next());
        if let Some(i) = first_word.and_then(|w| w.parse().ok()) {
            *m.entry(i).or_default() += 1;
        }
    }
    m
}

#[test]
fn a_live_run_is_not_taken_over_and_of_two_resumes_one_drives_it() {
    let tmp = tempfile::tempdir().unwrap();
    let state = tmp.path().join("state");
    let log = tmp.path().join("exec.log");
    let n = 40u64;
    let input = format!(
        r#"{{"n": {n}, "width": 4, "sleep_ms": 150, "log": "{}"}}"#,
        log.display()
    );
    let mut first = Command::new(BIN)
        .arg("--state-dir")
        .arg(&state)
        .args(["run", "fanout", "--name", "owned", "--input", &input])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    wait_for("fan-out start", || starts(&log).len() >= 8);

    // The driving process is alive: a plain resume is refused and names the owner.
    let o = fixture(BIN, &state, &["resume", "owned"]);
    assert_eq!(o.status.code(), Some(1), "{}", stderr(&o));
    assert!(stderr(&o).contains("is driven by"), "{}", stderr(&o));
    assert!(
        first.try_wait().unwrap().is_none(),
        "the refusal disturbed the driver"
    );

    first.kill().unwrap(); // SIGKILL
    first.wait().unwrap();
    let before = starts(&log);

    // Two resumes at once: the claim is a compare-and-set, so one drives the run and the
    // other is refused; no child runs twice because of the second.
    let spawn = || {
        Command::new(BIN)
            .arg("--state-dir")
            .arg(&state)
            .args(["-o", "json", "resume", "owned"])
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap()
    };
    let (a, b) = (spawn(), spawn());
    let (a, b) = (a.wait_with_output().unwrap(), b.wait_with_output().unwrap());
    let outcomes = [&a, &b];
    let won: Vec<_> = outcomes.iter().filter(|o| o.status.success()).collect();
    assert!(!won.is_empty(), "a: {} b: {}", stderr(&a), stderr(&b));
    // The other is refused (or, had it started only after the run ended, prints the
    // recorded outcome); the execution log below shows that only one drove the run.
    for o in outcomes.iter().filter(|o| !o.status.success()) {
        assert!(stderr(o).contains("is driven by"), "{}", stderr(o));
    }
    let doc: serde_json::Value =
        serde_json::from_str(String::from_utf8_lossy(&won[0].stdout).trim()).unwrap();
    assert_eq!(doc["output"].as_u64(), Some((0..n).map(|i| i * 2).sum()));

    let after = starts(&log);
    assert_eq!(after.len(), n as usize, "every child ran");
    // A child started twice only if it was in flight when the first driver was killed (at
    // most its width, 4); the losing resume ran nothing.
    let twice: Vec<_> = after.iter().filter(|(_, c)| **c > 1).collect();
    assert!(twice.len() <= 4, "{twice:?}");
    for (i, c) in &after {
        assert!(
            *c <= before.get(i).copied().unwrap_or(0) + 1,
            "child {i} ran {c} times"
        );
    }
    let o = fixture(BIN, &state, &["-o", "json", "get", "runs"]);
    let runs: serde_json::Value =
        serde_json::from_str(String::from_utf8_lossy(&o.stdout).trim()).unwrap();
    assert_eq!(runs[0]["actions"]["succeeded"], n + 1);
}

#[test]
fn a_taken_name_is_refused_before_its_large_inputs_are_written() {
    let tmp = tempfile::tempdir().unwrap();
    let state = tmp.path().join("state");
    // 100 KB inputs go to the object store (over the 64 KiB inline threshold).
    let first = format!(r#"{{"reason": "{}"}}"#, "a".repeat(100_000));
    let o = fixture(
        BIN,
        &state,
        &["run", "refuse", "--name", "big", "--input", &first],
    );
    assert_eq!(o.status.code(), Some(1), "{}", stderr(&o));
    let before = snapshot(&state);
    let second = format!(r#"{{"reason": "{}"}}"#, "b".repeat(100_000));
    let o = fixture(
        BIN,
        &state,
        &["run", "refuse", "--name", "big", "--input", &second],
    );
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
    assert!(stderr(&o).contains("exists already"), "{}", stderr(&o));
    assert_eq!(
        snapshot(&state),
        before,
        "the refused run changed the state directory"
    );
    let o = fixture(BIN, &state, &["-o", "json", "get", "io", "big", "a0"]);
    let io: serde_json::Value =
        serde_json::from_str(String::from_utf8_lossy(&o.stdout).trim()).unwrap();
    assert!(io["inputs"]["reason"].as_str().unwrap().starts_with("aaa"));
}

#[test]
fn a_resumed_run_runs_in_worker_processes_as_before() {
    let tmp = tempfile::tempdir().unwrap();
    let state = tmp.path().join("state");
    let log = tmp.path().join("exec.log");
    let input = format!(
        r#"{{"n": 6, "sleep_ms": 300, "pause_ms": 0, "log": "{}"}}"#,
        log.display()
    );
    let mut first = Command::new(BIN)
        .arg("--state-dir")
        .arg(&state)
        .args([
            "run",
            "wburst",
            "--workers",
            "process",
            "--name",
            "wp",
            "--input",
            &input,
        ])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    wait_for("first worker start", || starts(&log).len() >= 2);
    first.kill().unwrap();
    first.wait().unwrap();
    // No --workers: the run remembers that its attempts ran in worker processes.
    let resume = Command::new(BIN)
        .arg("--state-dir")
        .arg(&state)
        .args(["resume", "wp"])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let resumer = resume.id().to_string();
    let o = resume.wait_with_output().unwrap();
    assert!(o.status.success(), "{}", stderr(&o));
    let text = std::fs::read_to_string(&log).unwrap();
    let ended: Vec<&str> = text
        .lines()
        .filter(|l| l.starts_with("end "))
        .filter_map(|l| l.split("pid=").nth(1))
        .collect();
    assert!(ended.len() >= 7, "6 + 1 calls ended: {text}");
    assert!(
        !ended.contains(&resumer.as_str()),
        "an attempt ran inside the resuming engine's process: {text}"
    );
}
