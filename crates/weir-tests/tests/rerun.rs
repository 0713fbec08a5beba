//! `rerun RUN [--recover [--force ACTION|TASK]]` (SPEC §4.3) with the real binary: a run fails
//! after its children and a trace succeeded; the recovering rerun runs only the root, takes
//! everything else from the failed run and marks it recovered in `get actions`; `--force`
//! runs what it names again; a plain rerun runs everything.

use std::path::Path;
use std::process::Output;

use weir_tests::fixture;

const BIN: &str = env!("CARGO_BIN_EXE_fixture");

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

fn run(state: &Path, args: &[&str]) -> Output {
    fixture(BIN, state, args)
}

/// Lines of the log, counted by prefix.
fn count(log: &Path, prefix: &str) -> usize {
    std::fs::read_to_string(log)
        .unwrap_or_default()
        .lines()
        .filter(|l| l.starts_with(prefix))
        .count()
}

fn actions(state: &Path, run_name: &str) -> Vec<serde_json::Value> {
    let o = run(state, &["-o", "json", "get", "actions", run_name]);
    assert!(o.status.success(), "{}", text(&o.stderr));
    serde_json::from_slice::<serde_json::Value>(&o.stdout)
        .unwrap()
        .as_array()
        .unwrap()
        .clone()
}

#[test]
fn rerun_recover_takes_what_succeeded_and_runs_the_rest() {
    let tmp = tempfile::tempdir().unwrap();
    let state = tmp.path().join("state");
    let log = tmp.path().join("log");
    let gate = tmp.path().join("gate");
    std::fs::write(&gate, "closed").unwrap();
    let input = format!(
        r#"{{"n": 3, "gate": "{}", "log": "{}"}}"#,
        gate.display(),
        log.display()
    );
    let first = run(&state, &["run", "gated", "-i", &input, "--name", "first"]);
    assert_eq!(first.status.code(), Some(1), "{}", text(&first.stderr));
    assert!(text(&first.stderr).contains("is closed"));
    assert_eq!((count(&log, "start "), count(&log, "step ")), (3, 1));

    // Still failing: the rerun recovers the children and the trace, runs only the root.
    std::fs::remove_file(&gate).unwrap();
    let again = run(&state, &["rerun", "first", "--recover", "--name", "again"]);
    assert!(again.status.success(), "{}", text(&again.stderr));
    assert_eq!(text(&again.stdout).trim(), "106"); // 0 + 2 + 4 + 100
    assert_eq!(
        (count(&log, "start "), count(&log, "step ")),
        (3, 1),
        "nothing but the root ran again"
    );
    let acts = actions(&state, "again");
    assert_eq!(acts.len(), 5, "{acts:#?}");
    for a in &acts {
        let is_root = a["parent"] == a["id"];
        assert_eq!(a["status"], "succeeded", "{a}");
        assert_eq!(a["recovered"], !is_root, "{a}");
    }
    assert!(
        acts.iter()
            .any(|a| a["kind"] == "trace" && a["recovered"] == true)
    );
    // The earlier run is untouched.
    let firsts = actions(&state, "first");
    assert!(
        firsts.iter().all(|a| a["recovered"] == false),
        "{firsts:#?}"
    );
    assert_eq!(firsts.iter().filter(|a| a["status"] == "failed").count(), 1);

    // --force names a task: its actions run again; the trace is still recovered.
    let forced = run(
        &state,
        &[
            "rerun",
            "first",
            "--recover",
            "--force",
            "fx.child",
            "--name",
            "forced",
        ],
    );
    assert!(forced.status.success(), "{}", text(&forced.stderr));
    assert_eq!(text(&forced.stdout).trim(), "106");
    assert_eq!((count(&log, "start "), count(&log, "step ")), (6, 1));
    let acts = actions(&state, "forced");
    assert!(
        acts.iter()
            .filter(|a| a["task"] == "fx.child")
            .all(|a| a["recovered"] == false)
    );

    // A plain rerun runs everything.
    let plain = run(&state, &["rerun", "first", "--name", "plain"]);
    assert!(plain.status.success(), "{}", text(&plain.stderr));
    assert_eq!((count(&log, "start "), count(&log, "step ")), (9, 2));
}

#[test]
fn rerun_refuses_bad_input_and_changes_nothing() {
    let tmp = tempfile::tempdir().unwrap();
    let state = tmp.path().join("state");
    let ok = run(
        &state,
        &["run", "add", "-i", r#"{"a": 1, "b": 2}"#, "--name", "r1"],
    );
    assert!(ok.status.success(), "{}", text(&ok.stderr));
    let before = weir_tests::snapshot(&state);
    for args in [
        &["rerun", "nope", "--recover"][..],
        &["rerun", "r1", "--force", "fx.add"][..],
        &["rerun", "r1", "--recover", "--name", "r1"][..],
        // A --force that names nothing would be accepted and change nothing: refused.
        &[
            "rerun",
            "r1",
            "--recover",
            "--force",
            "fx.nope",
            "--name",
            "r2",
        ][..],
        &[
            "rerun",
            "r1",
            "--recover",
            "--force",
            "deadbeef",
            "--name",
            "r3",
        ][..],
    ] {
        let o = run(&state, args);
        assert_eq!(o.status.code(), Some(2), "{args:?}: {}", text(&o.stderr));
    }
    assert_eq!(weir_tests::snapshot(&state), before);
}
