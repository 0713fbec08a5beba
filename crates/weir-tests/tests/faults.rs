//! The fault matrix (issue 10): a workload that touches every durable step (commits, blob puts,
//! leases, completions, trace checkpoints, cache entries) is killed or given an error at a
//! failpoint of one step (`FAILPOINTS`, the `fail` crate; the fixture aborts at a failpoint's
//! `panic`, as a SIGKILL would kill it), then resumed. Checked each time:
//!
//! - the resumed run succeeds, with the output of an uninterrupted run;
//! - every action listed as succeeded right after the fault ran exactly once: it does not run
//!   again on resume (the fixture logs one line per execution);
//! - every action listed as succeeded, after the fault and at the end, has its output
//!   (`get io` reads it);
//! - an injected error either is retried (the run succeeds) or fails the run with an error
//!   naming the failpoint; a run left running is finished by `resume`, a run recorded as
//!   failed by `rerun --recover` (which runs nothing that had succeeded).
//!
//! And a state directory on a small tmpfs that fills mid-run: a clear error, a state that
//! still opens, and `resume` finishes the run once there is room.

use std::collections::HashMap;
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::OnceLock;

const BIN: &str = env!("CARGO_BIN_EXE_fixture");

/// Children of the workload.
const N: u64 = 6;
/// Size of each value the workload's actions return: over the 64 KiB inline limit.
const SIZE: usize = 70_000;
/// The signal of `abort()`: how the fixture dies at a failpoint's `panic`.
const SIGABRT: i32 = 6;

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

/// Runs the fixture on `state`, with `FAILPOINTS` set to `failpoints` (or unset).
fn fixture(state: &Path, failpoints: Option<&str>, args: &[&str]) -> Output {
    let mut cmd = Command::new(BIN);
    cmd.arg("--state-dir").arg(state).args(args);
    match failpoints {
        Some(f) => cmd.env("FAILPOINTS", f),
        None => cmd.env_remove("FAILPOINTS"),
    };
    cmd.output().expect("fixture binary runs")
}

/// `fixture`, which must succeed; its stdout as JSON.
fn json(state: &Path, args: &[&str]) -> serde_json::Value {
    let o = fixture(state, None, args);
    assert!(o.status.success(), "{args:?}: {}", text(&o.stderr));
    serde_json::from_slice(&o.stdout).unwrap_or_else(|e| panic!("{args:?}: {e}"))
}

fn input(n: u64, log: &Path) -> String {
    format!(
        r#"{{"n": {n}, "width": 3, "size": {SIZE}, "log": "{}"}}"#,
        log.display()
    )
}

/// The output of an uninterrupted run of the workload (computed once).
fn reference() -> &'static serde_json::Value {
    static OUT: OnceLock<serde_json::Value> = OnceLock::new();
    OUT.get_or_init(|| {
        let tmp = tempfile::tempdir().unwrap();
        let state = tmp.path().join("state");
        let log = tmp.path().join("log");
        let doc = json(
            &state,
            &[
                "-o",
                "json",
                "run",
                "fault_job",
                "--name",
                "ref",
                "--input",
                &input(N, &log),
            ],
        );
        assert_eq!(doc["status"], "succeeded", "{doc}");
        let runs = executions(&log);
        assert_eq!(runs.values().sum::<usize>(), N as usize + 4, "{runs:?}");
        assert!(runs.values().all(|c| *c == 1), "{runs:?}");
        doc["output"].clone()
    })
}

/// Executions recorded by the workload, by what ran (`job`, `child 3`, `trace 1`, `cached 7`).
fn executions(log: &Path) -> HashMap<String, usize> {
    let mut m = HashMap::new();
    for line in std::fs::read_to_string(log).unwrap_or_default().lines() {
        *m.entry(line.to_string()).or_default() += 1;
    }
    m
}

/// What an action's execution logs, from its `get io` record.
fn execution_key(io: &serde_json::Value) -> String {
    let task = io["task"].as_str().unwrap_or_default();
    let inputs = &io["inputs"];
    if task.ends_with("fault_job") {
        "job".into()
    } else if task.ends_with("fault_child") {
        format!("child {}", inputs["i"])
    } else if task.ends_with("fault_step") {
        format!("trace {}", inputs["k"])
    } else if task.ends_with("fault_cached") {
        format!("cached {}", inputs["x"])
    } else {
        panic!("an action of an unknown task: {io}")
    }
}

/// The actions of `run` listed as succeeded, each with its output read back (`get io` must
/// succeed and give an output): (action id, execution key). Also returns every action's status.
fn succeeded(state: &Path, run: &str) -> (Vec<(String, String)>, Vec<String>) {
    let actions = json(
        state,
        &["-o", "json", "get", "actions", run, "--limit", "1000"],
    );
    let actions = actions.as_array().expect("a list of actions");
    let mut out = Vec::new();
    for a in actions.iter().filter(|a| a["status"] == "succeeded") {
        let id = a["id"].as_str().unwrap();
        let o = fixture(state, None, &["-o", "json", "get", "io", run, id]);
        assert!(
            o.status.success(),
            "action {id} of {run} is listed as succeeded but its record does not read: {}",
            text(&o.stderr)
        );
        let io: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
        assert!(
            !io["output"].is_null(),
            "action {id} of {run} is listed as succeeded without an output: {io}"
        );
        out.push((id.to_string(), execution_key(&io)));
    }
    let statuses = actions
        .iter()
        .map(|a| a["status"].as_str().unwrap().to_string())
        .collect();
    (out, statuses)
}

/// The recorded status of `run`.
fn run_status(state: &Path, run: &str) -> String {
    let runs = json(state, &["-o", "json", "get", "runs", "--name", run]);
    let runs = runs.as_array().unwrap();
    let r = runs.iter().find(|r| r["name"] == run).expect("run listed");
    r["status"].as_str().unwrap().to_string()
}

/// How a failpoint acts.
#[derive(Clone, Copy, Debug, PartialEq)]
enum Fault {
    /// The process dies there (abort, like SIGKILL).
    Kill,
    /// The step fails there, once, through its normal error path.
    Error,
}

/// One cell of the matrix: the workload runs with `point` set to act (`Kill` or `Error`) at
/// its `(skip + 1)`-th evaluation; then it is recovered and the invariants are checked.
fn fault(point: &str, skip: usize, fault: Fault, workers: bool) {
    let expected = reference();
    let tmp = tempfile::tempdir().unwrap();
    let state = tmp.path().join("state");
    let log = tmp.path().join("log");
    let what = format!("{fault:?} at {point} (after {skip})");
    let action = match fault {
        Fault::Kill => "panic",
        Fault::Error => "1*return->off",
    };
    let failpoints = format!("{point}={skip}*off->{action}");
    let input = input(N, &log);
    let mut args = vec![
        "-o",
        "json",
        "run",
        "fault_job",
        "--name",
        "R",
        "--input",
        &input,
    ];
    if workers {
        args.extend(["--workers", "process"]);
    }
    let first = fixture(&state, Some(&failpoints), &args);
    let err = text(&first.stderr);

    // What the state shows right after the fault.
    let (before, _) = succeeded(&state, "R");
    let runs_before = executions(&log);
    let mut name = "R";
    match fault {
        Fault::Kill => {
            assert_eq!(
                first.status.signal(),
                Some(SIGABRT),
                "{what}: the process was not killed there: {:?}\n{err}",
                first.status
            );
            assert!(
                err.contains(&format!("failpoint {point} panic")),
                "{what}: {err}"
            );
            for (id, key) in &before {
                assert_eq!(
                    runs_before.get(key),
                    Some(&1),
                    "{what}: succeeded action {id} ({key}) did not run exactly once"
                );
            }
            let o = fixture(&state, None, &["-o", "json", "resume", "R"]);
            assert!(o.status.success(), "{what}: resume: {}", text(&o.stderr));
            let doc: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
            assert_eq!(&doc["output"], expected, "{what}: resumed output");
        }
        Fault::Error => {
            assert!(
                err.contains(&format!("failpoint {point}: injected error")),
                "{what}: the failpoint did not act: {err}"
            );
            let doc: serde_json::Value = serde_json::from_slice(&first.stdout)
                .unwrap_or_else(|e| panic!("{what}: {e}: {}", text(&first.stdout)));
            let status = run_status(&state, "R");
            eprintln!("{what}: exit {:?}, run R {status}", first.status);
            match status.as_str() {
                // Retried: the run went on and succeeded.
                "succeeded" => {
                    assert!(first.status.success(), "{what}: {err}");
                    assert_eq!(&doc["output"], expected, "{what}: output");
                }
                // Failed for good, naming the step: `rerun --recover` finishes the work.
                "failed" => {
                    assert_eq!(first.status.code(), Some(1), "{what}: {err}");
                    let e = doc["error"].as_str().unwrap_or_default();
                    assert!(e.contains(&format!("failpoint {point}")), "{what}: {doc}");
                    let o = fixture(
                        &state,
                        None,
                        &["-o", "json", "rerun", "R", "--recover", "--name", "R2"],
                    );
                    assert!(o.status.success(), "{what}: rerun: {}", text(&o.stderr));
                    let doc: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
                    assert_eq!(&doc["output"], expected, "{what}: recovered output");
                    name = "R2";
                }
                // The end of the run was not recorded: `resume` finishes it.
                "running" => {
                    assert_eq!(first.status.code(), Some(1), "{what}: {err}");
                    let e = doc["error"].as_str().unwrap_or_default();
                    assert!(e.contains(&format!("failpoint {point}")), "{what}: {doc}");
                    let o = fixture(&state, None, &["-o", "json", "resume", "R"]);
                    assert!(o.status.success(), "{what}: resume: {}", text(&o.stderr));
                    let doc: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
                    assert_eq!(&doc["output"], expected, "{what}: resumed output");
                }
                other => panic!("{what}: run R is {other}"),
            }
        }
    }

    // Nothing that had succeeded ran again; the run ended succeeded with every action's output.
    let runs_after = executions(&log);
    for (id, key) in &before {
        assert_eq!(
            runs_after.get(key),
            runs_before.get(key),
            "{what}: action {id} ({key}) had succeeded and ran again"
        );
    }
    assert_eq!(run_status(&state, name), "succeeded", "{what}");
    let (after, statuses) = succeeded(&state, name);
    assert_eq!(after.len(), N as usize + 4, "{what}: {statuses:?}");
    assert!(
        statuses.iter().all(|s| s == "succeeded"),
        "{what}: {statuses:?}"
    );
    for key in after.iter().map(|(_, k)| k) {
        assert!(
            runs_after.get(key).is_some_and(|c| *c >= 1),
            "{what}: {key}"
        );
    }
}

// One test per failpoint: kills early, mid-run and late (the counts stay below what one run
// of the workload reaches: about 11 commits, 9 blob puts, 4 leases and 4 completion batches at
// the least), and one injected error where the step has an error path.

#[test]
fn store_commit_before() {
    for skip in [1, 4, 7] {
        fault("store.commit.before", skip, Fault::Kill, false);
    }
    for skip in [1, 7] {
        fault("store.commit.before", skip, Fault::Error, false);
    }
}

#[test]
fn store_commit_after() {
    for skip in [1, 4, 7] {
        fault("store.commit.after", skip, Fault::Kill, false);
    }
}

#[test]
fn blob_put_before() {
    for skip in [0, 3, 8] {
        fault("blob.put.before", skip, Fault::Kill, false);
    }
    fault("blob.put.before", 3, Fault::Error, false);
}

#[test]
fn blob_put_after() {
    for skip in [0, 3, 8] {
        fault("blob.put.after", skip, Fault::Kill, false);
    }
    fault("blob.put.after", 3, Fault::Error, false);
}

#[test]
fn worker_lease() {
    for skip in [0, 2, 3] {
        fault("worker.lease", skip, Fault::Kill, true);
    }
    fault("worker.lease", 2, Fault::Error, true);
}

#[test]
fn worker_complete() {
    for skip in [0, 3] {
        fault("worker.complete", skip, Fault::Kill, true);
    }
    fault("worker.complete", 3, Fault::Error, true);
}

#[test]
fn trace_record() {
    for skip in [0, 1] {
        fault("trace.record", skip, Fault::Kill, false);
        fault("trace.record", skip, Fault::Error, false);
    }
}

#[test]
fn cache_write_before() {
    fault("cache.write.before", 0, Fault::Kill, false);
}

#[test]
fn cache_write_after() {
    fault("cache.write.after", 0, Fault::Kill, false);
}

/// Unmounts a filesystem the test mounted (lazily: nothing of the test uses it any more).
struct Unmount(PathBuf);

impl Drop for Unmount {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.0).output();
    }
}

/// Runs `mount` with `args`; a test that cannot mount fails, saying so.
fn mount(args: &[&str], dir: &Path) {
    let o = Command::new("mount").args(args).arg(dir).output();
    match o {
        Ok(o) if o.status.success() => {}
        Ok(o) => panic!(
            "the disk-full test needs to mount a small tmpfs as its state directory (as root, \
             or with CAP_SYS_ADMIN) and could not: `mount {}` failed: {}",
            args.join(" "),
            text(&o.stderr)
        ),
        Err(e) => panic!("the disk-full test needs the `mount` command: {e}"),
    }
}

#[test]
fn a_full_disk_fails_clearly_and_resume_finishes_once_there_is_room() {
    let n = 40; // 43 values of 70 KB: about 3 MB, on a 1 MiB filesystem
    let tmp = tempfile::tempdir().unwrap();
    let log = tmp.path().join("log");
    // What an uninterrupted run gives, on a roomy disk.
    let roomy = tmp.path().join("roomy");
    let ref_log = tmp.path().join("ref_log");
    let expected = json(
        &roomy,
        &[
            "-o",
            "json",
            "run",
            "fault_job",
            "--name",
            "R",
            "--input",
            &input(n, &ref_log),
        ],
    )["output"]
        .clone();

    let state = tmp.path().join("state");
    std::fs::create_dir(&state).unwrap();
    mount(&["-t", "tmpfs", "-o", "size=1m", "tmpfs"], &state);
    let _unmount = Unmount(state.clone());
    let input = input(n, &log);
    let full = fixture(
        &state,
        None,
        &[
            "-o",
            "json",
            "run",
            "fault_job",
            "--name",
            "R",
            "--input",
            &input,
        ],
    );
    let said = format!("{}{}", text(&full.stdout), text(&full.stderr));
    assert!(
        !full.status.success() && full.status.signal().is_none(),
        "the run on a full disk: {:?}\n{said}",
        full.status
    );
    assert!(
        said.contains("No space left on device") || said.contains("disk is full"),
        "the error does not say that the disk is full: {said}"
    );
    eprintln!("disk full: {:?}\n{said}", full.status);

    // The state opens and reads: the run, and every action listed as succeeded with its output.
    let status = run_status(&state, "R");
    let (before, _) = succeeded(&state, "R");
    let runs_before = executions(&log);
    eprintln!(
        "disk full: run R is {status}, {} actions succeeded",
        before.len()
    );

    // Room again: `resume` finishes the run, running nothing that had succeeded.
    mount(&["-o", "remount,size=64m"], &state);
    let o = fixture(&state, None, &["-o", "json", "resume", "R"]);
    assert!(o.status.success(), "resume: {}", text(&o.stderr));
    let doc: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(doc["output"], expected, "resumed output");
    let runs_after = executions(&log);
    for (id, key) in &before {
        assert_eq!(
            runs_after.get(key),
            runs_before.get(key),
            "action {id} ({key}) had succeeded and ran again"
        );
    }
    assert_eq!(run_status(&state, "R"), "succeeded");
    let (after, statuses) = succeeded(&state, "R");
    assert_eq!(after.len(), n as usize + 4, "{statuses:?}");
}
