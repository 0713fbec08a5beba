//! Cluster mode with real processes on the machine's PostgreSQL (127.0.0.1:5432, or
//! `WEIR_TEST_POSTGRES`): `serve` replicas, workers and clients of the fixture binary, each test
//! in a schema of its own (dropped at the end).

mod support;

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use support::*;
use weir_tests::wait_for;

#[test]
fn a_fan_out_runs_on_workers_through_serve_and_equals_the_embedded_run() {
    let mut cl = Cluster::new();
    let url = cl.serve(&[]);
    cl.worker(&url, "fx", "4");
    cl.worker(&url, "fx", "4");
    let log = cl.state().join("children.log");
    let input = format!(
        r#"{{"n": 100, "width": 16, "sleep_ms": 5, "log": "{}"}}"#,
        log.display()
    );
    let (code, out, err) = cl.output(&[
        "run", "fanout", "--input", &input, "--server", &url, "-o", "json",
    ]);
    assert_eq!(code, 0, "{out}\n{err}");
    let v: serde_json::Value = serde_json::from_str(out.trim()).unwrap();
    assert_eq!(v["status"], "succeeded");
    // The embedded engine gives the same output.
    let (code, embedded, err) = cl.output(&["run", "fanout", "--input", &input, "-o", "json"]);
    assert_eq!(code, 0, "{err}");
    let e: serde_json::Value = serde_json::from_str(embedded.trim()).unwrap();
    assert_eq!(v["output"], e["output"]);
    assert_eq!(v["output"], 9900);
    // Each child ran once in the cluster and once embedded.
    for i in 0..100 {
        assert_eq!(count(&log, &format!("end {i}")), 2, "child {i}");
    }
    // The control plane lists the run with its 101 actions.
    let (code, runs, err) = cl.output(&["get", "runs", "--server", &url, "-o", "json"]);
    assert_eq!(code, 0, "{err}");
    let runs: serde_json::Value = serde_json::from_str(runs.trim()).unwrap();
    let run = &runs[0];
    assert_eq!(run["name"], v["run"]);
    assert_eq!(run["status"], "succeeded");
    assert_eq!(run["actions"]["succeeded"], 101);
    // The run's actions and an action's inputs and output, read through the control plane.
    let name = v["run"].as_str().unwrap();
    let (code, list, err) = cl.output(&["get", "actions", name, "--server", &url, "-o", "json"]);
    assert_eq!(code, 0, "{err}");
    let list: serde_json::Value = serde_json::from_str(list.trim()).unwrap();
    assert_eq!(list.as_array().unwrap().len(), 101);
    assert_eq!(list[0]["id"], "a0");
    assert_eq!(list[0]["task"], "fx.fanout");
    // Where each child's time went, as its worker measured it and serve recorded it.
    let (code, phased, err) = cl.output(&[
        "get", "actions", name, "--server", &url, "--phases", "-o", "json",
    ]);
    assert_eq!(code, 0, "{err}");
    let phased: serde_json::Value = serde_json::from_str(phased.trim()).unwrap();
    for a in &phased.as_array().unwrap()[1..] {
        let p = &a["phases"];
        for name in [
            "upload", "queue", "start", "download", "exec", "output", "deliver",
        ] {
            assert!(p[format!("{name}_us")].is_u64(), "{name}: {a}");
        }
        // Each child logs to a file (its work), after waiting to be leased.
        assert!(p["exec_us"].as_u64().unwrap() > 0, "{a}");
        assert!(p["queue_us"].as_u64().unwrap() > 0, "{a}");
    }
    // Per task, and the advice, through the control plane.
    let (code, tasks, err) = cl.output(&["get", "tasks", name, "--server", &url, "-o", "json"]);
    assert_eq!(code, 0, "{err}");
    let tasks: serde_json::Value = serde_json::from_str(tasks.trim()).unwrap();
    let child = tasks
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["task"] == "fx.child")
        .unwrap_or_else(|| panic!("{tasks}"));
    assert_eq!(child["count"], 100);
    assert_eq!(child["max_siblings"], 100);
    let (code, advice, err) = cl.output(&["advise", name, "--server", &url, "-o", "json"]);
    assert_eq!(code, 0, "{err}");
    let advice: serde_json::Value = serde_json::from_str(advice.trim()).unwrap();
    assert_eq!(advice["run"], name);
    assert!(advice["advice"].is_array(), "{advice}");
    let child = list[1]["id"].as_str().unwrap();
    let (code, io, err) = cl.output(&["get", "io", name, child, "--server", &url, "-o", "json"]);
    assert_eq!(code, 0, "{err}");
    let io: serde_json::Value = serde_json::from_str(io.trim()).unwrap();
    assert_eq!(io["status"], "succeeded");
    assert_eq!(
        io["output"],
        io["inputs"]["i"].as_u64().unwrap() * 2,
        "{io}"
    );
    let (code, _, err) = cl.output(&["get", "io", name, "a123", "--server", &url]);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("unknown action"), "{err}");
    // Metrics need the token; with it they count what the workers completed.
    let token = cl.token();
    let (status, _) = http_get(&url, "/metrics", None);
    assert!(status.contains("401"), "{status}");
    let (status, _) = http_get(&url, "/metrics", Some("wrong"));
    assert!(status.contains("401"), "{status}");
    let (status, body) = http_get(&url, "/metrics", Some(&token));
    assert!(status.contains("200"), "{status}");
    let completed: u64 = body
        .lines()
        .find_map(|l| l.strip_prefix("weir_completed_total "))
        .unwrap()
        .parse()
        .unwrap();
    assert_eq!(completed, 101, "{body}");
    // The worker API needs a worker token too.
    let (status, _) = http_get(&url, "/v1/runs", None);
    assert!(status.contains("401"), "{status}");
}

#[test]
fn workers_up_starts_workers_as_the_queue_asks_and_stops_them_with_it() {
    let mut cl = Cluster::new();
    let url = cl.serve(&[]);
    let log = cl.log("up");
    let up = cl
        .command(
            &[
                "workers", "up", "--server", &url, "--binary", BIN, "--every", "100ms",
            ],
            &log,
        )
        .spawn()
        .unwrap();
    let input = r#"{"n": 30, "width": 30, "sleep_ms": 200, "log": ""}"#;
    let (code, out, err) = cl.output(&["run", "fanout", "--input", input, "--server", &url]);
    assert_eq!((code, out.trim()), (0, "870"), "{err}");
    // It followed the queue: more than one worker for 30 children of 200 ms at once.
    let text = std::fs::read_to_string(&log).unwrap();
    let started = text.matches("started worker").count();
    assert!(started >= 2, "{text}");
    // SIGTERM: it stops, and its workers with it.
    let pid = up.id().to_string();
    assert!(Command::new("kill").arg(&pid).status().unwrap().success());
    cl.others.push(up);
    let up = cl.others.last_mut().unwrap();
    wait_for("workers up to stop", || {
        matches!(up.try_wait(), Ok(Some(_)))
    });
    let text = std::fs::read_to_string(&log).unwrap();
    assert!(text.contains("workers up: stopped"), "{text}");
    for line in text.lines().filter(|l| l.contains("started worker")) {
        let pid = line.split_whitespace().nth(4).unwrap();
        assert!(
            !std::path::Path::new(&format!("/proc/{pid}")).exists()
                || std::fs::read_to_string(format!("/proc/{pid}/stat"))
                    .is_ok_and(|s| s.contains(") Z ")),
            "worker {pid} outlived workers up"
        );
    }
}

#[test]
fn runs_are_submitted_from_code_with_runner_remote() {
    let mut cl = Cluster::new();
    let url = cl.serve(&[]);
    cl.worker(&url, "fx", "1");
    let token = cl.token();
    let remote_add = |token: &str| {
        let out = Command::new(BIN)
            .args(["remote-add", &url, token, "40", "2"])
            .output()
            .unwrap();
        (
            out.status.code().unwrap_or(-1),
            String::from_utf8_lossy(&out.stdout).trim().to_string(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };
    let (code, out, err) = remote_add(&token);
    assert_eq!((code, out.as_str()), (0, "42"), "{err}");
    let (code, _, err) = remote_add("wrong");
    assert_eq!(code, 1);
    assert!(err.contains("cluster token"), "{err}");
}

#[test]
fn a_run_waits_for_workers_of_its_version_and_its_root_runs_on_one() {
    let mut cl = Cluster::new();
    let url = cl.serve(&[]);
    let (mut client, log) = cl.client(&[
        "run",
        "wpid",
        "--input",
        r#"{"i": 1}"#,
        "--server",
        &url,
        "-o",
        "json",
    ]);
    // No worker of environment fxd: the run says what it waits for.
    let mut waiting = String::new();
    wait_for("the run to say it waits for workers", || {
        let (_, runs, _) = cl.output(&["get", "runs", "--server", &url, "-o", "json"]);
        let runs: serde_json::Value = serde_json::from_str(runs.trim()).unwrap_or_default();
        waiting = runs[0]["waiting"].as_str().unwrap_or("").to_string();
        !waiting.is_empty()
    });
    assert!(
        waiting.contains("waiting for workers of version"),
        "{waiting}"
    );
    assert!(waiting.contains("environment fxd"), "{waiting}");
    // A worker of another environment does not help; one of fxd does.
    cl.worker(&url, "fx", "1");
    std::thread::sleep(Duration::from_millis(300));
    assert!(
        client.try_wait().unwrap().is_none(),
        "ended without an fxd worker"
    );
    let w = cl.worker(&url, "fxd", "1");
    let (code, text) = finish(&mut client, &log);
    assert_eq!(code, 0, "{text}");
    // The root ran in the worker's process, not the client's.
    let pid = cl.others[w].id();
    assert!(
        text.contains(&format!("\"output\":{pid}")),
        "{text} (worker pid {pid})"
    );
}

#[test]
fn a_serve_replica_killed_mid_fan_out_loses_nothing_and_runs_nothing_twice() {
    let mut cl = Cluster::new();
    // Leases outlive a starved heartbeat on a loaded machine: a child that runs twice here is
    // one the failover ran again, not one whose lease expired.
    let a = cl.serve(&["--lease-ttl", "60s"]);
    let b = cl.serve(&["--lease-ttl", "60s"]);
    let both = format!("{a},{b}");
    cl.worker(&both, "fx", "8");
    cl.worker(&both, "fx", "8");
    let log = cl.state().join("children.log");
    let input = format!(
        r#"{{"n": 200, "width": 32, "sleep_ms": 20, "log": "{}"}}"#,
        log.display()
    );
    let (mut client, client_log) = cl.client(&[
        "run", "fanout", "--input", &input, "--server", &both, "-o", "json",
    ]);
    wait_for("40 children to end", || {
        std::fs::read_to_string(&log)
            .unwrap_or_default()
            .lines()
            .filter(|l| l.starts_with("end "))
            .count()
            >= 40
    });
    // SIGKILL the replica everyone uses.
    let (serve_a, _) = &mut cl.serves[0];
    serve_a.kill().unwrap();
    serve_a.wait().unwrap();
    let (code, text) = finish(&mut client, &client_log);
    assert_eq!(code, 0, "{text}");
    assert!(text.contains("\"output\":39800"), "{text}");
    for i in 0..200 {
        assert_eq!(
            count(&log, &format!("end {i}")),
            1,
            "child {i} ended other than once"
        );
    }
}

#[test]
fn a_killed_workers_actions_are_leased_again_after_its_heartbeat_stops() {
    let mut cl = Cluster::new();
    let url = cl.serve(&["--lease-ttl", "1s"]);
    let w1 = cl.worker(&url, "fx", "4");
    let log = cl.state().join("children.log");
    let input = format!(
        r#"{{"n": 12, "width": 4, "sleep_ms": 300, "log": "{}"}}"#,
        log.display()
    );
    let (mut client, client_log) = cl.client(&[
        "run", "fanout", "--input", &input, "--server", &url, "-o", "json",
    ]);
    wait_for("children to start", || {
        std::fs::read_to_string(&log)
            .unwrap_or_default()
            .lines()
            .any(|l| l.starts_with("start "))
    });
    cl.others[w1].kill().unwrap();
    cl.others[w1].wait().unwrap();
    cl.worker(&url, "fx", "4");
    let (code, text) = finish(&mut client, &client_log);
    assert_eq!(code, 0, "{text}");
    assert!(text.contains("\"output\":132"), "{text}");
    for i in 0..12 {
        assert_eq!(count(&log, &format!("end {i}")), 1, "child {i}");
    }
}

#[test]
fn clients_and_workers_without_the_cluster_token_are_refused() {
    let mut cl = Cluster::new();
    let url = cl.serve(&[]);
    let other = cl.state().join("other-token");
    std::fs::write(&other, "not the token\n").unwrap();
    let other = other.display().to_string();
    let (code, _, err) = cl.output(&[
        "run",
        "add",
        "--input",
        r#"{"a": 1, "b": 2}"#,
        "--server",
        &url,
        "--token-file",
        &other,
    ]);
    assert_eq!(code, 1, "{err}");
    assert!(err.contains("cluster token"), "{err}");
    let (code, _, err) = cl.output(&[
        "worker",
        "--server",
        &url,
        "--env",
        "fx",
        "--token-file",
        &other,
    ]);
    assert_ne!(code, 0, "{err}");
    assert!(
        err.contains("wrong token: workers register with the cluster token"),
        "{err}"
    );
    // Flags of an engine's workers are refused with --server, not ignored.
    for flag in ["--once", "--credential-stdin"] {
        let (code, _, err) = cl.output(&["worker", "--server", &url, "--env", "fx", flag]);
        assert_eq!(code, 2, "{flag}: {err}");
        assert!(err.contains("cannot be used with"), "{flag}: {err}");
    }
    // Nothing was created.
    let (_, runs, _) = cl.output(&["get", "runs", "--server", &url, "-o", "json"]);
    assert_eq!(runs.trim(), "[]");
}

#[test]
fn a_workers_attempt_past_max_runtime_fails_with_a_timeout_and_errors_reach_the_client() {
    let mut cl = Cluster::new();
    let url = cl.serve(&[]);
    cl.worker(&url, "fxw", "2");
    cl.worker(&url, "fx", "2");
    let log = cl.state().join("slow.log");
    let slow = format!(r#"{{"sleep_ms": 5000, "log": "{}"}}"#, log.display());
    let (code, _, err) = cl.output(&["run", "wtoo_slow", "--input", &slow, "--server", &url]);
    assert_eq!(code, 1, "{err}");
    assert!(
        err.contains("timeout") && err.contains("max_runtime"),
        "{err}"
    );
    assert_eq!(count(&log, "slow end"), 0, "the attempt was not stopped");
    let quick = format!(r#"{{"sleep_ms": 1, "log": "{}"}}"#, log.display());
    let (code, out, err) = cl.output(&["run", "wtoo_slow", "--input", &quick, "--server", &url]);
    assert_eq!((code, out.trim()), (0, "0"), "{err}");
    // A non-recoverable error is not retried (the task allows 3 retries) and reaches the
    // client with its message.
    let (code, _, err) = cl.output(&[
        "run",
        "refuse",
        "--input",
        r#"{"reason": "no such thing"}"#,
        "--server",
        &url,
    ]);
    assert_eq!(code, 1, "{err}");
    assert!(err.contains("no such thing"), "{err}");
    let (_, runs, _) = cl.output(&["get", "runs", "--server", &url, "-o", "json"]);
    let runs: serde_json::Value = serde_json::from_str(runs.trim()).unwrap();
    assert_eq!(runs[0]["status"], "failed");
    assert_eq!(runs[0]["actions"]["failed"], 1, "{runs}");
}

#[test]
fn an_abort_ends_the_run_and_results_of_attempts_still_running_change_nothing() {
    let mut cl = Cluster::new();
    let url = cl.serve(&[]);
    cl.worker(&url, "fx", "4");
    let log = cl.state().join("children.log");
    let input = format!(
        r#"{{"n": 40, "width": 4, "sleep_ms": 400, "log": "{}"}}"#,
        log.display()
    );
    let (mut client, client_log) = cl.client(&[
        "run", "fanout", "--input", &input, "--server", &url, "--name", "to-abort",
    ]);
    wait_for("children to start", || count_prefix(&log, "start ") >= 4);
    let (code, _, err) = cl.output(&["abort", "to-abort", "--server", &url]);
    assert_eq!(code, 0, "{err}");
    let (code, text) = finish(&mut client, &client_log);
    assert_eq!(code, 1, "{text}");
    assert!(text.contains("aborted"), "{text}");
    // The attempts that were running end in their worker; their results are refused.
    wait_for("the running children to end", || {
        count_prefix(&log, "end ") >= count_prefix(&log, "start ")
    });
    std::thread::sleep(Duration::from_millis(300));
    let (_, runs, _) = cl.output(&["get", "runs", "--server", &url, "-o", "json"]);
    let runs: serde_json::Value = serde_json::from_str(runs.trim()).unwrap();
    assert_eq!(runs[0]["status"], "aborted", "{runs}");
    let actions = runs[0]["actions"].as_object().unwrap();
    assert!(
        actions.keys().all(|s| s == "cancelled" || s == "succeeded"),
        "{runs}"
    );
    // A second abort is refused: the run has ended.
    let (code, _, err) = cl.output(&["abort", "to-abort", "--server", &url]);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("already ended"), "{err}");
}

fn count_prefix(log: &Path, prefix: &str) -> usize {
    std::fs::read_to_string(log)
        .unwrap_or_default()
        .lines()
        .filter(|l| l.starts_with(prefix))
        .count()
}

#[test]
fn workers_on_different_replicas_share_one_run() {
    let mut cl = Cluster::new();
    let a = cl.serve(&[]);
    let b = cl.serve(&[]);
    // One worker per replica: children that end on one replica are waited for on the other.
    cl.worker(&a, "fx", "4");
    cl.worker(&b, "fx", "4");
    let log = cl.state().join("children.log");
    let input = format!(
        r#"{{"n": 60, "width": 8, "sleep_ms": 30, "log": "{}"}}"#,
        log.display()
    );
    let (code, out, err) = cl.output(&[
        "run", "fanout", "--input", &input, "--server", &b, "-o", "json",
    ]);
    assert_eq!(code, 0, "{out}\n{err}");
    assert!(out.contains("\"output\":3540"), "{out}");
    for i in 0..60 {
        assert_eq!(count(&log, &format!("end {i}")), 1, "child {i}");
    }
}

/// A PostgreSQL of the test's own (initdb, pg_ctl) on a private port, stopped when dropped.
struct PrivatePostgres {
    dir: tempfile::TempDir,
    port: u16,
}

impl PrivatePostgres {
    /// Runs a PostgreSQL tool, as the `postgres` user when this test runs as root (initdb and
    /// the server refuse root).
    fn tool(args: &[&str]) -> std::process::Output {
        let root = Command::new("id").arg("-u").output().unwrap().stdout == b"0\n";
        let mut c = if root {
            let mut c = Command::new("runuser");
            c.args(["-u", "postgres", "--"]);
            c
        } else {
            Command::new(args[0])
        };
        if root {
            c.arg(args[0]);
        }
        c.args(&args[1..]).output().unwrap_or_else(|e| {
            panic!("the PostgreSQL restart test needs {} on PATH: {e}", args[0])
        })
    }

    fn start() -> PrivatePostgres {
        let dir = tempfile::tempdir().unwrap();
        // The server's user must own its directory.
        let _ = Command::new("chmod").arg("777").arg(dir.path()).status();
        let data = dir.path().join("data");
        let data = data.to_str().unwrap();
        let out = Self::tool(&["initdb", "-D", data, "-A", "trust", "-U", "postgres"]);
        assert!(
            out.status.success(),
            "initdb: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let port = {
            let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            l.local_addr().unwrap().port()
        };
        let pg = PrivatePostgres { dir, port };
        pg.ctl(&["start"]);
        pg
    }

    fn ctl(&self, what: &[&str]) {
        let data = self.dir.path().join("data");
        let log = self.dir.path().join("pg.log");
        let opts = format!(
            "-p {} -k {} -c listen_addresses=127.0.0.1",
            self.port,
            self.dir.path().display()
        );
        let mut args = vec!["pg_ctl", "-D", data.to_str().unwrap(), "-w", "-o", &opts];
        let log = log.display().to_string();
        args.extend(["-l", &log, "-m", "fast"]);
        args.extend(what);
        let out = Self::tool(&args);
        assert!(
            out.status.success(),
            "pg_ctl {what:?}: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }

    fn url(&self) -> String {
        format!("postgres://postgres@127.0.0.1:{}/postgres", self.port)
    }
}

impl Drop for PrivatePostgres {
    fn drop(&mut self) {
        let data = self.dir.path().join("data");
        let _ = Self::tool(&[
            "pg_ctl",
            "-D",
            data.to_str().unwrap(),
            "-m",
            "immediate",
            "stop",
        ]);
    }
}

#[test]
fn a_postgresql_restart_mid_run_is_survived_and_the_run_finishes() {
    let pg = PrivatePostgres::start();
    let mut cl = Cluster::new();
    cl.database = pg.url();
    let url = cl.serve(&[]);
    cl.worker(&url, "fx", "4");
    cl.worker(&url, "fx", "4");
    let log = cl.state().join("children.log");
    let input = format!(
        r#"{{"n": 80, "width": 8, "sleep_ms": 50, "log": "{}"}}"#,
        log.display()
    );
    let (mut client, client_log) = cl.client(&[
        "run", "fanout", "--input", &input, "--server", &url, "-o", "json",
    ]);
    wait_for("20 children to end", || count_prefix(&log, "end ") >= 20);
    pg.ctl(&["restart"]);
    let (code, text) = finish(&mut client, &client_log);
    assert_eq!(code, 0, "{text}");
    assert!(text.contains("\"output\":6320"), "{text}");
    // Every child ended; none is left running.
    for i in 0..80 {
        assert!(
            count(&log, &format!("end {i}")) >= 1,
            "child {i} never ended"
        );
    }
}

#[test]
fn cached_children_are_served_from_the_cache_and_cache_commands_take_server() {
    let mut cl = Cluster::new();
    let url = cl.serve(&[]);
    cl.worker(&url, "fx", "2");
    let log = cl.state().join("cache.log");
    let input = format!(r#"{{"a": 2, "b": 3, "log": "{}"}}"#, log.display());
    let run = |cl: &Cluster| {
        let (code, out, err) =
            cl.output(&["run", "call_cached", "--input", &input, "--server", &url]);
        assert_eq!((code, out.trim()), (0, "5"), "{err}");
    };
    run(&cl);
    run(&cl);
    assert_eq!(
        count(&log, "cached_add"),
        1,
        "the second run took the cached output"
    );
    let (code, list, err) = cl.output(&["cache", "list", "--server", &url, "-o", "json"]);
    assert_eq!(code, 0, "{err}");
    let list: serde_json::Value = serde_json::from_str(list.trim()).unwrap();
    assert_eq!(list.as_array().unwrap().len(), 1, "{list}");
    assert_eq!(list[0]["task"], "fx.cached_add");
    assert_eq!(list[0]["version"], "v1");
    let (code, _, err) = cl.output(&["cache", "clear", "fx.cached_add", "--server", &url]);
    assert_eq!(code, 0, "{err}");
    assert!(err.contains("removed 1 cache entries"), "{err}");
    run(&cl);
    assert_eq!(count(&log, "cached_add"), 2, "cleared: it ran again");
    // The embedded state directory was not touched by any of this.
    assert!(!cl.state().join("state.db").exists());
}
