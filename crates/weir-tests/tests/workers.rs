//! Worker processes (SPEC §7) with real processes: autoscaling between `min` and `max` with
//! shortened ttls, the per-replica concurrency, a fresh process per action without a reuse
//! policy, nested calls with one slot, a SIGKILLed worker and a stalled (fenced-off) one.

use std::collections::{HashMap, HashSet};
use std::path::Path;
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

const BIN: &str = env!("CARGO_BIN_EXE_fixture");

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

/// Starts `fixture --state-dir STATE run TASK -i INPUT --workers process` with extra env vars.
fn start_run(state: &Path, task: &str, input: &str, name: &str, env: &[(&str, &str)]) -> Child {
    let mut cmd = Command::new(BIN);
    cmd.arg("--state-dir")
        .arg(state)
        .args([
            "run",
            task,
            "-i",
            input,
            "--name",
            name,
            "--workers",
            "process",
        ])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    for (k, v) in env {
        cmd.env(k, v);
    }
    cmd.spawn().expect("fixture starts")
}

/// Waits for a run, failing the test (and killing it) past `limit`.
fn finish(mut child: Child, limit: Duration) -> Output {
    let start = Instant::now();
    loop {
        if child.try_wait().expect("wait works").is_some() {
            return child.wait_with_output().expect("output read");
        }
        if start.elapsed() > limit {
            let _ = child.kill();
            let out = child.wait_with_output().expect("output read");
            panic!(
                "run did not finish within {limit:?} (deadlock?): {}",
                text(&out.stderr)
            );
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn get(state: &Path, args: &[&str]) -> String {
    let o = Command::new(BIN)
        .arg("--state-dir")
        .arg(state)
        .args(args)
        .output()
        .expect("fixture runs");
    assert!(o.status.success(), "{args:?}: {}", text(&o.stderr));
    text(&o.stdout)
}

fn workers_json(state: &Path) -> serde_json::Value {
    serde_json::from_str(&get(state, &["-o", "json", "get", "workers"])).expect("json")
}

fn decisions(w: &serde_json::Value) -> Vec<String> {
    w["decisions"]
        .as_array()
        .expect("decisions")
        .iter()
        .map(|d| d["decision"].as_str().unwrap_or_default().to_string())
        .collect()
}

/// `start I pid=P inflight=N` lines of the fixture's `wwork` task.
fn starts(log: &Path) -> Vec<(u64, u32, usize)> {
    std::fs::read_to_string(log)
        .unwrap_or_default()
        .lines()
        .filter_map(|l| {
            let mut it = l.strip_prefix("start ")?.split(' ');
            let i = it.next()?.parse().ok()?;
            let pid = it.next()?.strip_prefix("pid=")?.parse().ok()?;
            let n = it.next()?.strip_prefix("inflight=")?.parse().ok()?;
            Some((i, pid, n))
        })
        .collect()
}

fn ends(log: &Path) -> Vec<(u64, u32)> {
    std::fs::read_to_string(log)
        .unwrap_or_default()
        .lines()
        .filter_map(|l| {
            let mut it = l.strip_prefix("end ")?.split(' ');
            Some((
                it.next()?.parse().ok()?,
                it.next()?.strip_prefix("pid=")?.parse().ok()?,
            ))
        })
        .collect()
}

#[test]
fn reusable_environment_scales_up_under_load_and_down_after_the_ttls() {
    let tmp = tempfile::tempdir().unwrap();
    let state = tmp.path().join("state");
    let log = tmp.path().join("log");
    let input = format!(
        r#"{{"n": 12, "sleep_ms": 400, "pause_ms": 1500, "log": "{}"}}"#,
        log.display()
    );
    let run = start_run(
        &state,
        "wburst",
        &input,
        "burst",
        &[
            ("WEIR_WORKER_SCALEDOWN_TTL_MS", "300"),
            ("WEIR_WORKER_IDLE_TTL_MS", "800"),
        ],
    );
    let out = finish(run, Duration::from_secs(60));
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert_eq!(
        text(&out.stdout).trim(),
        (2 * (0..12).sum::<u64>() + 200).to_string()
    );

    // Concurrency 2 per replica is never exceeded, and the burst used more than one replica
    // but never more than max = 3 at once.
    let starts = starts(&log);
    assert_eq!(starts.len(), 13, "every action ran exactly once");
    assert!(starts.iter().all(|&(_, _, n)| n <= 2), "{starts:?}");
    let burst_pids: HashSet<u32> = starts.iter().filter(|s| s.0 < 100).map(|s| s.1).collect();
    assert!((2..=3).contains(&burst_pids.len()), "{burst_pids:?}");

    let w = workers_json(&state);
    let d = decisions(&w);
    let count = |needle: &str| d.iter().filter(|x| x.contains(needle)).count();
    assert!(count("scale up") >= 1, "{d:#?}");
    assert!(count("scaledown_ttl") >= 1, "{d:#?}");
    assert_eq!(count("stop environment: no work for 800ms"), 1, "{d:#?}");
    // The environment started again for the last call after it had stopped.
    assert_eq!(count("start environment"), 2, "{d:#?}");
    let fxw: Vec<_> = w["replicas"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|r| r["env"] == "fxw")
        .collect();
    assert!(fxw.iter().all(|r| r["state"] == "retired"), "{fxw:#?}");
    let table = get(&state, &["get", "workers"]);
    assert!(table.contains("ENV") && table.contains("fxw") && table.contains("retired"));
}

#[test]
fn environment_without_policy_runs_each_action_in_a_fresh_process() {
    let tmp = tempfile::tempdir().unwrap();
    let state = tmp.path().join("state");
    let run = start_run(&state, "wpids", r#"{"n": 4}"#, "fresh", &[]);
    let out = finish(run, Duration::from_secs(60));
    assert!(out.status.success(), "{}", text(&out.stderr));
    let pids: Vec<u32> = serde_json::from_str(&text(&out.stdout)).unwrap();
    assert_eq!(pids.len(), 5);
    let distinct: HashSet<u32> = pids.iter().copied().collect();
    assert_eq!(distinct.len(), 5, "a process was reused: {pids:?}");
    let w = workers_json(&state);
    let fresh = w["replicas"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|r| r["once"] == true)
        .count();
    assert_eq!(fresh, 5);

    // The stdout of the child that ran in the second process is in its action's log.
    let actions: serde_json::Value =
        serde_json::from_str(&get(&state, &["-o", "json", "get", "actions", "fresh"])).unwrap();
    let child_id = actions
        .as_array()
        .unwrap()
        .iter()
        .find(|a| a["task"] == "fxd.wpid")
        .map(|a| a["id"].as_str().unwrap().to_string())
        .expect("a wpid action");
    let logs = get(&state, &["get", "logs", "fresh", "a0"]);
    assert!(
        logs.contains("== worker") && logs.contains("task=fxd.wpids"),
        "{logs}"
    );
    let logs = get(&state, &["get", "logs", "fresh", &child_id]);
    assert!(
        logs.contains("runs in pid") && logs.contains("fresh"),
        "{logs}"
    );
    assert!(
        !logs.contains("task=fxd.wpids"),
        "another action's log: {logs}"
    );
}

#[test]
fn nested_calls_in_a_one_slot_environment_do_not_deadlock() {
    let tmp = tempfile::tempdir().unwrap();
    let state = tmp.path().join("state");
    let run = start_run(&state, "wnest_parent", r#"{"n": 3}"#, "nested", &[]);
    let out = finish(run, Duration::from_secs(30));
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert_eq!(
        text(&out.stdout).trim(),
        (1 + 2 + 3 + 101 + 201).to_string()
    );
    let w = workers_json(&state);
    let replicas = w["replicas"].as_array().unwrap();
    assert_eq!(replicas.len(), 1, "max = 1 replica: {replicas:#?}");
    assert_eq!(replicas[0]["completed"], 6, "parent and its five children");

    // With a run-level limit of one action at a time as well: the parent also gives its run
    // slot back while it waits (this run hung before that).
    let limited = Command::new(BIN)
        .arg("--state-dir")
        .arg(&state)
        .args([
            "run",
            "wnest_parent",
            "-i",
            r#"{"n": 2}"#,
            "--name",
            "limited",
        ])
        .args(["--workers", "process", "--max-action-concurrency", "1"])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("fixture starts");
    let out = finish(limited, Duration::from_secs(30));
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert_eq!(text(&out.stdout).trim(), (1 + 2 + 101 + 201).to_string());
}

/// Waits until the log shows a `wwork` start and returns that pid.
fn busy_pid(log: &Path) -> u32 {
    let start = Instant::now();
    loop {
        if let Some(&(_, pid, _)) = starts(log).first() {
            return pid;
        }
        assert!(
            start.elapsed() < Duration::from_secs(30),
            "no action started within 30 s (hang?)"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
}

fn signal(sig: &str, pid: u32) {
    let ok = Command::new("kill")
        .args([sig, &pid.to_string()])
        .status()
        .expect("kill runs")
        .success();
    assert!(ok, "kill {sig} {pid}");
}

/// Every action succeeded once, with one recorded attempt (system retries are not attempts).
fn assert_accepted_once(state: &Path, run: &str, expected: usize) {
    let actions: serde_json::Value =
        serde_json::from_str(&get(state, &["-o", "json", "get", "actions", run])).unwrap();
    let list = actions.as_array().expect("actions list");
    let work: Vec<_> = list.iter().filter(|a| a["task"] == "fxw.wwork").collect();
    assert_eq!(work.len(), expected, "{list:#?}");
    for a in work {
        assert_eq!(a["status"], "succeeded", "{a}");
        assert_eq!(a["attempts"], 1, "{a}");
    }
}

#[test]
fn sigkilled_worker_loses_its_leases_and_nothing_is_lost() {
    let tmp = tempfile::tempdir().unwrap();
    let state = tmp.path().join("state");
    let log = tmp.path().join("log");
    let input = format!(
        r#"{{"n": 6, "sleep_ms": 700, "pause_ms": 0, "log": "{}"}}"#,
        log.display()
    );
    let run = start_run(&state, "wburst", &input, "killed", &[]);
    let victim = busy_pid(&log);
    signal("-KILL", victim);
    let out = finish(run, Duration::from_secs(60));
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert_eq!(
        text(&out.stdout).trim(),
        (2 * (0..6).sum::<u64>() + 200).to_string()
    );

    // Each action ended exactly once, never in the killed process.
    let ends = ends(&log);
    let mut per_action: HashMap<u64, usize> = HashMap::new();
    for (i, pid) in &ends {
        assert_ne!(*pid, victim, "the killed worker finished an action");
        *per_action.entry(*i).or_default() += 1;
    }
    assert_eq!(per_action.len(), 7);
    assert!(per_action.values().all(|&n| n == 1), "{per_action:?}");
    let d = decisions(&workers_json(&state));
    assert!(
        d.iter().any(|x| x.contains("exited unexpectedly")),
        "{d:#?}"
    );
    assert!(d.iter().any(|x| x.contains("system retry 1/3")), "{d:#?}");
    assert_accepted_once(&state, "killed", 7);
}

#[test]
fn stalled_worker_is_fenced_off_and_its_late_completion_rejected() {
    let tmp = tempfile::tempdir().unwrap();
    let state = tmp.path().join("state");
    let log = tmp.path().join("log");
    let input = format!(
        r#"{{"n": 2, "sleep_ms": 1500, "pause_ms": 2500, "log": "{}"}}"#,
        log.display()
    );
    let run = start_run(
        &state,
        "wburst",
        &input,
        "stalled",
        &[
            ("WEIR_WORKER_HEARTBEAT_MS", "100"),
            ("WEIR_WORKER_HEARTBEAT_TIMEOUT_MS", "600"),
        ],
    );
    let victim = busy_pid(&log);
    signal("-STOP", victim);
    // Fenced off after 600 ms; its actions run again elsewhere meanwhile.
    std::thread::sleep(Duration::from_millis(2500));
    signal("-CONT", victim);
    let out = finish(run, Duration::from_secs(60));
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert_eq!(text(&out.stdout).trim(), (2 + 200).to_string());
    let d = decisions(&workers_json(&state));
    assert!(d.iter().any(|x| x.contains("fence off")), "{d:#?}");
    assert!(d.iter().any(|x| x.contains("requeue")), "{d:#?}");
    assert!(
        d.iter().any(|x| x.contains("reject completion")),
        "the stalled worker's completion was not rejected: {d:#?}"
    );
    assert_accepted_once(&state, "stalled", 3);
}

/// The records of a worker's structured log (`events` of its replica in `get workers`).
fn worker_records(replica: &serde_json::Value) -> Vec<serde_json::Value> {
    let path = replica["events"]
        .as_str()
        .expect("the replica names its structured log");
    std::fs::read_to_string(path)
        .unwrap_or_else(|e| panic!("worker log {path}: {e}"))
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l}")))
        .collect()
}

#[test]
fn attempt_past_its_timeout_is_cancelled_in_its_worker() {
    let tmp = tempfile::tempdir().unwrap();
    let state = tmp.path().join("state");
    let log = tmp.path().join("log");
    let input = format!(r#"{{"sleep_ms": 3000, "log": "{}"}}"#, log.display());
    let run = start_run(
        &state,
        "wtoo_slow",
        &input,
        "slow",
        &[("WEIR_WORKER_HEARTBEAT_MS", "50")],
    );
    // A guard against a hang, not a measure of speed.
    let out = finish(run, Duration::from_secs(30));
    assert_eq!(out.status.code(), Some(1), "{}", text(&out.stderr));
    assert!(
        text(&out.stderr).contains("max runtime"),
        "{}",
        text(&out.stderr)
    );
    let logs = get(&state, &["get", "logs", "slow", "a0"]);
    assert!(logs.contains("task=fxw.wtoo_slow"), "{logs}");
    assert!(logs.contains("(cancelled by the engine)"), "{logs}");

    // The worker exited before the engine did (its retirement at shutdown was not held up by
    // the attempt's 3 s sleep), so its logs are complete.
    let w = workers_json(&state);
    let replicas = w["replicas"].as_array().unwrap();
    assert_eq!(replicas.len(), 1, "{replicas:#?}");
    assert_eq!(replicas[0]["state"], "retired", "{replicas:#?}");

    // The worker heard of the cancellation and dropped the attempt: one `begin`, one
    // `cancelled` for the same lease, no `end`, and the task never reached its end.
    let records = worker_records(&replicas[0]);
    let count = |event: &str| records.iter().filter(|r| r["event"] == event).count();
    assert_eq!(
        (count("begin"), count("cancelled"), count("end")),
        (1, 1, 0),
        "{records:#?}"
    );
    let begin = records.iter().find(|r| r["event"] == "begin").unwrap();
    let cancelled = records.iter().find(|r| r["event"] == "cancelled").unwrap();
    assert_eq!(
        (
            &begin["run"],
            &begin["action"],
            &begin["task"],
            &begin["attempt"]
        ),
        (
            &serde_json::json!("slow"),
            &serde_json::json!("a0"),
            &serde_json::json!("fxw.wtoo_slow"),
            &serde_json::json!(1)
        ),
        "{begin}"
    );
    assert!(begin["lease"].is_u64(), "{begin}");
    assert_eq!(cancelled["lease"], begin["lease"], "{cancelled}");
    assert_eq!(cancelled["action"], "a0", "{cancelled}");
    assert_eq!(cancelled["worker"], replicas[0]["worker"], "{cancelled}");
    let stop = records
        .iter()
        .find(|r| r["event"] == "stop")
        .expect("a stop record");
    assert_eq!(stop["message"], "retired by the engine", "{stop}");
    let log = std::fs::read_to_string(&log).unwrap();
    assert!(log.contains("slow start"), "{log}");
    assert!(
        !log.contains("slow end"),
        "the cancelled attempt ran on: {log}"
    );
}

#[test]
fn max_concurrency_bounds_an_environment_across_its_worker_processes() {
    let tmp = tempfile::tempdir().unwrap();
    let state = tmp.path().join("state");
    let log = tmp.path().join("exec.log");
    let input = format!(
        r#"{{"n": 12, "sleep_ms": 150, "log": "{}"}}"#,
        log.display()
    );
    let out = Command::new(BIN)
        .arg("--state-dir")
        .arg(&state)
        .args(["run", "mfan", "-i", &input, "--workers", "process"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert_eq!(text(&out.stdout).trim(), "66");
    // Overlap of the recorded [start, end] intervals, across both worker processes.
    let (lines, max) = weir_tests::most_at_once(&std::fs::read_to_string(&log).unwrap());
    assert_eq!(lines, 24);
    assert!(max <= 3, "{max} ran at once; max_concurrency is 3");
    assert!(
        max >= 2,
        "the bound held, but nothing ran concurrently ({max})"
    );
}

#[test]
fn waiting_for_a_worker_slot_is_queue_time_not_runtime() {
    let tmp = tempfile::tempdir().unwrap();
    let state = tmp.path().join("state");
    let out = Command::new(BIN)
        .arg("--state-dir")
        .arg(&state)
        .args(["run", "sfan", "-i", r#"{"n": 3, "sleep_ms": 500}"#])
        .args(["--name", "slots", "--workers", "process"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert_eq!(text(&out.stdout).trim(), "3");
    let actions: serde_json::Value =
        serde_json::from_str(&get(&state, &["-o", "json", "get", "actions", "slots"])).unwrap();
    let mut spans: Vec<(i64, i64, i64)> = actions
        .as_array()
        .unwrap()
        .iter()
        .filter(|a| a["task"] == "fxs.sslow")
        .map(|a| {
            let t = |k: &str| a[k].as_i64().unwrap_or_else(|| panic!("{k} in {a}"));
            (t("started_at_us"), t("ended_at_us"), t("queued_at_us"))
        })
        .collect();
    assert_eq!(spans.len(), 3);
    spans.sort();
    // One worker with one slot ran them one after another, 500 ms each. Counted from the
    // queue, the second and third would show 1 s and 1.5 s; counted from the lease, each shows
    // its own 500 ms plus the engine's bookkeeping (far under the 500 ms margin).
    for (started, ended, _) in &spans {
        let runtime = ended - started;
        assert!(
            (500_000..1_000_000).contains(&runtime),
            "{runtime} µs: {spans:?}"
        );
    }
    // The last one waited in the queue while the other two ran.
    let (started, _, queued) = spans[2];
    assert!(started - queued >= 500_000, "{spans:?}");
}
