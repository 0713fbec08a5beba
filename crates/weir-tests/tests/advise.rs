//! Phase timings and `weir advise` through the command line, on runs of the fixture built to
//! need each rule (and one that needs none): `get actions --phases`, `get tasks`, `advise`
//! (text and JSON), in process and with worker processes.

use std::path::Path;
use std::process::Command;

use serde_json::Value;

const BIN: &str = env!("CARGO_BIN_EXE_fixture");

fn weir(state: &Path, args: &[&str]) -> (bool, String, String) {
    let o = Command::new(BIN)
        .arg("--state-dir")
        .arg(state)
        .args(args)
        .output()
        .unwrap();
    let text = |b: &[u8]| String::from_utf8_lossy(b).into_owned();
    (o.status.success(), text(&o.stdout), text(&o.stderr))
}

fn run(state: &Path, task: &str, input: &str, extra: &[&str]) {
    let mut args = vec!["run", task, "--input", input, "--name", task];
    args.extend(extra);
    let (ok, out, err) = weir(state, &args);
    assert!(ok, "{task}: {out}\n{err}");
}

fn json(state: &Path, args: &[&str]) -> Value {
    let mut all = vec!["-o", "json"];
    all.extend(args);
    let (ok, out, err) = weir(state, &all);
    assert!(ok, "{args:?}: {err}");
    serde_json::from_str(out.trim()).unwrap_or_else(|e| panic!("{args:?}: {e}: {out}"))
}

/// The rules `advise RUN` gives, as (rule, task) (what it saw printed on stderr, for a failure).
fn rules(state: &Path, run: &str) -> Vec<(String, String)> {
    let v = json(state, &["advise", run]);
    assert_eq!(v["run"], run);
    eprintln!(
        "advise {run}: {v}\ntasks: {}",
        json(state, &["get", "tasks", run])
    );
    v["advice"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| {
            (
                a["rule"].as_str().unwrap().to_string(),
                a["task"].as_str().unwrap_or("").to_string(),
            )
        })
        .collect()
}

#[test]
fn phases_are_recorded_shown_and_summarized_per_task() {
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path();
    run(state, "adv_spin_map", r#"{"n": 300}"#, &[]);
    let actions = json(
        state,
        &[
            "get",
            "actions",
            "adv_spin_map",
            "--phases",
            "--limit",
            "400",
        ],
    );
    let actions = actions.as_array().unwrap();
    assert_eq!(actions.len(), 301);
    for a in actions {
        let p = &a["phases"];
        for name in [
            "upload", "queue", "start", "download", "exec", "output", "deliver",
        ] {
            assert!(p[format!("{name}_us")].is_u64(), "{name}: {a}");
        }
        // Each item spins 20 µs; the root waits for all of them.
        assert!(p["exec_us"].as_u64().unwrap() >= 19, "{a}");
    }
    // Children were queued with inputs stored; their results were delivered (committed).
    let child = &actions[1]["phases"];
    assert!(child["deliver_us"].as_u64().unwrap() > 0, "{child}");
    let (ok, table, err) = weir(
        state,
        &["get", "actions", "adv_spin_map", "--phases", "--limit", "3"],
    );
    assert!(ok, "{err}");
    assert!(
        table.lines().next().unwrap().contains("UPLOAD") && table.contains("DELIVER"),
        "{table}"
    );

    let tasks = json(state, &["get", "tasks", "adv_spin_map"]);
    let item = tasks
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["task"] == "adv.adv_spin")
        .unwrap();
    assert_eq!(item["count"], 300);
    assert_eq!(item["max_siblings"], 300);
    assert_eq!(item["phases"][4][0], "exec");
    assert!(
        item["phases"][4][1]["p50"].as_u64().unwrap() >= 19,
        "{item}"
    );
    let share = item["overhead_share"].as_f64().unwrap();
    assert!((0.0..=1.0).contains(&share), "{item}");
    let (ok, table, _) = weir(state, &["get", "tasks", "adv_spin_map"]);
    assert!(
        ok && table.contains("adv.adv_spin") && table.contains("EXEC p50/p95"),
        "{table}"
    );
}

#[test]
fn each_rule_fires_on_a_run_built_to_need_it_and_a_tuned_run_gets_none() {
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path();

    run(state, "adv_tiny_map", r#"{"n": 300}"#, &[]);
    assert_eq!(
        rules(state, "adv_tiny_map"),
        vec![("batch".to_string(), "adv.adv_item".to_string())]
    );
    let v = json(state, &["advise", "adv_tiny_map"]);
    let batch = &v["advice"][0];
    let k = batch["numbers"]["k"].as_u64().unwrap();
    assert!((2..=75).contains(&k), "{batch}");
    assert!(
        batch["message"]
            .as_str()
            .unwrap()
            .contains(&format!(".batch({k})")),
        "{batch}"
    );
    let (before, after) = (
        batch["numbers"]["estimated_before_us"].as_u64().unwrap(),
        batch["numbers"]["estimated_after_us"].as_u64().unwrap(),
    );
    assert!(after < before, "{batch}");
    let (ok, text, _) = weir(state, &["advise", "adv_tiny_map"]);
    assert!(
        ok && text.starts_with("[batch] batch adv.adv_item"),
        "{text}"
    );

    run(state, "adv_steps", "{}", &[]);
    assert_eq!(
        rules(state, "adv_steps"),
        vec![("trace".to_string(), "adv.adv_lookup".to_string())]
    );

    run(state, "adv_one_at_a_time", "{}", &[]);
    assert_eq!(
        rules(state, "adv_one_at_a_time"),
        vec![("concurrency".to_string(), "adv1.adv_slow".to_string())]
    );

    run(state, "adv_big_inputs", "{}", &[]);
    assert_eq!(
        rules(state, "adv_big_inputs"),
        vec![("reference".to_string(), "adv.adv_big".to_string())]
    );

    run(state, "adv_tuned", "{}", &[]);
    assert_eq!(rules(state, "adv_tuned"), vec![]);
    let (ok, text, _) = weir(state, &["advise", "adv_tuned"]);
    assert!(ok && text.contains("no advice"), "{text}");

    // An unknown run is bad input.
    let (ok, _, err) = weir(state, &["advise", "no-such-run"]);
    assert!(!ok && err.contains("no-such-run"), "{err}");
}

#[test]
fn worker_processes_report_their_phases_and_slow_starts_get_reuse_advice() {
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path();
    run(
        state,
        "adv_fresh_processes",
        "{}",
        &["--workers", "process"],
    );
    let actions = json(
        state,
        &["get", "actions", "adv_fresh_processes", "--phases"],
    );
    let quick: Vec<&Value> = actions
        .as_array()
        .unwrap()
        .iter()
        .filter(|a| a["task"] == "advp.adv_quick")
        .collect();
    assert_eq!(quick.len(), 3);
    for a in &quick {
        let p = &a["phases"];
        // A process started for each: its start dwarfs its work.
        assert!(
            p["start_us"].as_u64().unwrap() > 10 * p["exec_us"].as_u64().unwrap(),
            "{a}"
        );
    }
    // The root, in a process of its own too, may be told the same when its start outweighs its
    // wait for the children: only the quick task's advice is certain.
    let rules = rules(state, "adv_fresh_processes");
    assert!(
        rules.contains(&("reuse".to_string(), "advp.adv_quick".to_string())),
        "{rules:?}"
    );
    assert!(rules.iter().all(|(r, _)| r == "reuse"), "{rules:?}");
}

#[test]
fn a_failed_attempt_keeps_its_own_phases() {
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path();
    let marker = dir.path().join("marker");
    let input = format!(r#"{{"marker": "{}"}}"#, marker.display());
    run(state, "adv_flaky", &input, &[]);
    let io = json(state, &["get", "io", "adv_flaky", "a0"]);
    let failed = &io["failed_attempts"][0];
    assert_eq!(failed["attempt"], 1, "{io}");
    // Its 30 ms of work, and no delivery (it was retried, not delivered).
    let p = &failed["phases"];
    assert!(p["exec"].as_u64().unwrap() >= 29_000, "{io}");
    assert_eq!(p["deliver"], 0, "{io}");
    // The action's own phases are its last (successful) attempt's.
    let actions = json(state, &["get", "actions", "adv_flaky", "--phases"]);
    assert!(
        actions[0]["phases"]["exec_us"].as_u64().unwrap() >= 29_000,
        "{actions}"
    );
}
