//! `get logs RUN ACTION --server` and `get actions RUN --with-io --server` through `serve` on
//! the machine's PostgreSQL: a worker captures what each attempt printed and sends it with the
//! attempt's completion (lines still reach the worker's own output); the control plane records
//! it and prints it per attempt as the embedded `get logs` does; pages of actions carry their
//! inputs and outputs exactly as the embedded `get actions --with-io` gives them.

mod support;

use support::*;
use weir_tests::wait_for;

fn json_of(out: &str) -> serde_json::Value {
    serde_json::from_str(out.trim()).unwrap_or_else(|e| panic!("{e}: {out}"))
}

/// JSON lines (`get logs -o json` prints one object per attempt).
fn json_lines(out: &str) -> Vec<serde_json::Value> {
    out.lines().map(json_of).collect()
}

/// The lines of `text` from the one equal to `from` up to the one equal to `to`.
fn section<'a>(text: &'a str, from: &str, to: &str) -> Vec<&'a str> {
    let lines: Vec<&str> = text.lines().collect();
    let start = lines.iter().position(|l| l.starts_with(from));
    let start = start.unwrap_or_else(|| panic!("no {from:?} in\n{text}"));
    let end = lines[start..].iter().position(|l| l.starts_with(to));
    let end = end.unwrap_or_else(|| panic!("no {to:?} after {from:?} in\n{text}"));
    lines[start..=start + end].to_vec()
}

#[test]
fn get_logs_server_prints_each_attempt_of_an_action_as_its_worker_captured_it() {
    let mut cl = Cluster::new();
    let url = cl.serve(&[]);
    let worker = cl.worker(&url, "fx", "4");
    let worker_pid = cl.others[worker].id();
    let worker_log = cl.state().join(format!("worker-{}.log", cl.n));
    let marker = cl.state().join("marker");
    let input = format!(
        r#"{{"tags": ["a", "b"], "marker": "{}"}}"#,
        marker.display()
    );
    let (code, out, err) = cl.output(&[
        "run", "chatter", "--input", &input, "--name", "talk", "--server", &url,
    ]);
    assert_eq!(code, 0, "{err}");
    assert_eq!(json_of(&out), serde_json::json!(["a done", "b done"]));

    let (code, list, err) = cl.output(&["get", "actions", "talk", "--server", &url, "-o", "json"]);
    assert_eq!(code, 0, "{err}");
    let list = json_of(&list);
    let list = list.as_array().unwrap();
    assert_eq!(list.len(), 3, "{list:#?}");
    let (a, b) = (&list[1], &list[2]);
    assert_eq!(
        (&a["task"], &a["attempts"]),
        (&"fx.chatty".into(), &2.into())
    );
    assert_eq!(b["attempts"], 1);
    let a_id = a["id"].as_str().unwrap();

    // The retried child: both attempts, in order, each with what it printed (stdout and
    // stderr), between the embedded format's begin and end lines.
    let (code, text, err) = cl.output(&["get", "logs", "talk", a_id, "--server", &url]);
    assert_eq!(code, 0, "{err}");
    let begin =
        |n: u32| format!("[weir] begin run=talk action={a_id} attempt={n} task=fx.chatty lease=");
    let end = |n: u32, ok: bool| format!("[weir] end run=talk action={a_id} attempt={n} ok={ok}");
    let first = section(&text, &begin(1), &end(1, false));
    assert_eq!(
        first[1..first.len() - 1],
        [
            "chatty a on stdout",
            "chatty a on stderr",
            "chatty a fails its first attempt"
        ],
        "{text}"
    );
    let second = section(&text, &begin(2), &end(2, true));
    assert_eq!(
        second[1..second.len() - 1],
        ["chatty a on stdout", "chatty a on stderr"],
        "{text}"
    );
    assert!(
        text.find(&begin(1)) < text.find(&begin(2)),
        "attempts in order: {text}"
    );
    // The web UI's action page has the same logs, per attempt.
    let (status, page) = http_get(
        &url,
        &format!("/ui/api/runs/talk/actions/{a_id}"),
        Some(&cl.token()),
    );
    assert!(status.contains("200"), "{status}");
    let page = json_of(&page);
    let logs = page["logs"].as_array().unwrap_or_else(|| panic!("{page}"));
    assert_eq!(logs.len(), 2, "{page}");
    assert_eq!(
        (&logs[0]["attempt"], &logs[0]["ok"]),
        (&1.into(), &false.into())
    );
    assert_eq!(
        (&logs[1]["attempt"], &logs[1]["ok"]),
        (&2.into(), &true.into())
    );
    let ui_first = logs[0]["text"].as_str().unwrap();
    assert!(
        ui_first
            .contains("chatty a on stdout\nchatty a on stderr\nchatty a fails its first attempt"),
        "{ui_first}"
    );
    assert_eq!(page["logs_note"], "");
    // Its parent ran in the same worker meanwhile (waiting for it): the header says lines of
    // other actions may be interleaved, as the embedded one does for a reused worker.
    let headers: Vec<&str> = text
        .lines()
        .filter(|l| l.starts_with("== worker "))
        .collect();
    assert_eq!(headers.len(), 2, "{text}");
    for h in &headers {
        assert!(h.contains(&format!("(pid {worker_pid}, env fx)")), "{h}");
        assert!(h.ends_with("may be interleaved"), "{h}");
    }

    // The same as JSON, one object per attempt.
    let (code, out, err) =
        cl.output(&["get", "logs", "talk", a_id, "--server", &url, "-o", "json"]);
    assert_eq!(code, 0, "{err}");
    let attempts = json_lines(&out);
    assert_eq!(attempts.len(), 2, "{out}");
    for (i, at) in attempts.iter().enumerate() {
        assert_eq!(at["attempt"], i + 1);
        assert_eq!(at["ok"], i == 1);
        assert_eq!((&at["env"], &at["pid"]), (&"fx".into(), &worker_pid.into()));
        assert_eq!(
            (&at["cancelled"], &at["dropped_bytes"]),
            (&false.into(), &0.into())
        );
        assert!(at["worker"].as_str().is_some_and(|w| !w.is_empty()));
        assert!(at["overlapping"].as_u64().unwrap() >= 1, "{at}");
        assert!(
            at["begin"]
                .as_str()
                .unwrap()
                .starts_with(&begin(i as u32 + 1))
        );
        assert!(at["started_at_us"].as_i64() <= at["ended_at_us"].as_i64());
    }
    assert_eq!(
        attempts[1]["lines"],
        serde_json::json!(["chatty a on stdout", "chatty a on stderr"])
    );
    assert_ne!(attempts[0]["lease"], attempts[1]["lease"]);

    // The root's log holds its own line (and, interleaved, its children's).
    let (code, root, err) = cl.output(&["get", "logs", "talk", "a0", "--server", &url]);
    assert_eq!(code, 0, "{err}");
    assert!(root.lines().any(|l| l == "chatter starts"), "{root}");
    assert!(root.contains("task=fx.chatter"), "{root}");
    // Case does not matter in the action id, as embedded.
    let (code, upper, err) = cl.output(&[
        "get",
        "logs",
        "talk",
        &a_id.to_ascii_uppercase(),
        "--server",
        &url,
    ]);
    assert_eq!((code, upper.as_str()), (0, text.as_str()), "{err}");

    // Every line still reached the worker's own output.
    wait_for("the worker's output", || {
        let out = std::fs::read_to_string(&worker_log).unwrap_or_default();
        out.lines().filter(|l| *l == "chatty a on stdout").count() == 2
            && out.lines().filter(|l| *l == "chatty a on stderr").count() == 2
            && out.lines().any(|l| l == "chatty b on stdout")
            && out.lines().any(|l| l == "chatter starts")
    });

    // Refused, exit 2: an unknown run, an unknown action, an action that printed nothing.
    let (code, _, err) = cl.output(&["get", "logs", "nosuch", "a0", "--server", &url]);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("unknown run \"nosuch\""), "{err}");
    for id in ["00000000000000ff", "zz"] {
        let (code, _, err) = cl.output(&["get", "logs", "talk", id, "--server", &url]);
        assert_eq!(code, 2, "{err}");
        assert!(err.contains(&format!("unknown action {id}")), "{err}");
    }
    let (code, out, err) = cl.output(&[
        "run",
        "add",
        "--input",
        r#"{"a": 1, "b": 2}"#,
        "--name",
        "quiet",
        "--server",
        &url,
    ]);
    assert_eq!((code, out.trim()), (0, "3"), "{err}");
    let (code, _, err) = cl.output(&["get", "logs", "quiet", "a0", "--server", &url]);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("printed nothing"), "{err}");
    // Without the cluster token: refused.
    let (status, _) = http_get(&url, &format!("/v1/runs/talk/actions/{a_id}/logs"), None);
    assert!(status.contains("401"), "{status}");
}

#[test]
fn an_attempt_that_prints_more_than_a_mebibyte_keeps_its_last_lines_and_says_so() {
    let mut cl = Cluster::new();
    let url = cl.serve(&[]);
    cl.worker(&url, "fx", "1");
    let worker_log = cl.state().join(format!("worker-{}.log", cl.n));
    let n = 60_000u64;
    let line = format!("chatty big line {:06} ..........\n", 0).len() as u64; // 2 MB in all
    let input = format!(r#"{{"tag": "big", "lines": {n}, "marker": ""}}"#);
    let (code, out, err) = cl.output(&[
        "run", "chatty", "--input", &input, "--name", "loud", "--server", &url,
    ]);
    assert_eq!((code, out.trim()), (0, "\"big done\""), "{err}");
    let (code, out, err) =
        cl.output(&["get", "logs", "loud", "a0", "--server", &url, "-o", "json"]);
    assert_eq!(code, 0, "{err}");
    let attempts = json_lines(&out);
    assert_eq!(attempts.len(), 1);
    let lines: Vec<&str> = attempts[0]["lines"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| l.as_str().unwrap())
        .collect();
    let kept: u64 = lines.iter().map(|l| l.len() as u64 + 1).sum();
    let printed = n * line + "chatty big on stdout\nchatty big on stderr\n".len() as u64;
    assert_eq!(
        kept + attempts[0]["dropped_bytes"].as_u64().unwrap(),
        printed
    );
    assert!(kept <= 1 << 20 && kept > (1 << 20) - line, "{kept}");
    // From a whole line to the last one.
    let first: u64 = lines[0]
        .strip_prefix("chatty big line ")
        .and_then(|l| l.split(' ').next())
        .unwrap()
        .parse()
        .unwrap();
    assert_eq!(lines.len() as u64, n - first, "{}", lines[0]);
    assert_eq!(
        *lines.last().unwrap(),
        format!("chatty big line {:06} ..........", n - 1)
    );
    // The text says what was dropped.
    let (code, text, err) = cl.output(&["get", "logs", "loud", "a0", "--server", &url]);
    assert_eq!(code, 0, "{err}");
    let note = text.lines().nth(2).unwrap();
    assert!(
        note.starts_with(&format!(
            "[weir] ({} bytes printed before these were not kept",
            attempts[0]["dropped_bytes"]
        )),
        "{note}"
    );
    // The worker's own output has every line (and no interleaving note: one slot).
    assert!(
        !text.lines().next().unwrap().contains("interleaved"),
        "{text}"
    );
    wait_for("the worker's output", || {
        let out = std::fs::read_to_string(&worker_log).unwrap_or_default();
        out.lines()
            .filter(|l| l.starts_with("chatty big line "))
            .count() as u64
            == n
    });
}

#[test]
fn get_actions_with_io_server_gives_what_the_embedded_one_gives() {
    let mut cl = Cluster::new();
    let url = cl.serve(&[]);
    cl.worker(&url, "fx", "4");
    cl.worker(&url, "fxf", "1");
    let marker = cl.state().join("marker");
    let input = format!(
        r#"{{"tags": ["x", "y", "z"], "marker": "{}"}}"#,
        marker.display()
    );
    let (code, _, err) = cl.output(&[
        "run", "chatter", "--input", &input, "--name", "remote", "--server", &url,
    ]);
    assert_eq!(code, 0, "{err}");
    // The same run embedded: the same inputs (the marker made afresh), so the same ids.
    std::fs::remove_file(&marker).unwrap();
    let (code, _, err) = cl.output(&["run", "chatter", "--input", &input, "--name", "local"]);
    assert_eq!(code, 0, "{err}");
    // Timings differ; everything else is the same.
    let without_times = |out: &str| {
        let mut v = json_of(out);
        for a in v.as_array_mut().unwrap() {
            let a = a.as_object_mut().unwrap();
            for k in ["queued_at_us", "started_at_us", "ended_at_us"] {
                assert!(a.remove(k).is_some(), "{k}");
            }
        }
        v
    };
    let get = |args: &[&str]| {
        let (code, out, err) = cl.output(args);
        assert_eq!(code, 0, "{err}");
        out
    };
    let remote = get(&[
        "get",
        "actions",
        "remote",
        "--with-io",
        "--server",
        &url,
        "-o",
        "json",
    ]);
    let local = get(&["get", "actions", "local", "--with-io", "-o", "json"]);
    let (remote, local) = (without_times(&remote), without_times(&local));
    assert_eq!(remote, local);
    let actions = remote.as_array().unwrap();
    assert_eq!(actions.len(), 4);
    assert_eq!(
        actions[0]["inputs"]["tags"],
        serde_json::json!(["x", "y", "z"])
    );
    assert_eq!(
        actions[0]["output"],
        serde_json::json!(["x done", "y done", "z done"])
    );
    assert_eq!(actions[1]["inputs"]["marker"], marker.display().to_string());
    assert_eq!(
        (&actions[1]["attempts"], &actions[1]["output"]),
        (&2.into(), &"x done".into())
    );
    assert_eq!(
        actions[3]["inputs"],
        serde_json::json!({"tag": "z", "lines": 0, "marker": ""})
    );
    // A page from an offset.
    let page = get(&[
        "get",
        "actions",
        "remote",
        "--with-io",
        "--offset",
        "2",
        "--limit",
        "1",
        "--server",
        &url,
        "-o",
        "json",
    ]);
    assert_eq!(without_times(&page), serde_json::json!([actions[2]]));
    // The table has the previews.
    let table = get(&["get", "actions", "remote", "--with-io", "--server", &url]);
    let head = table.lines().next().unwrap();
    assert!(
        head.contains("INPUTS") && head.contains("OUTPUT"),
        "{table}"
    );
    assert!(table.contains("\"y done\""), "{table}");
    // An output over the inline limit, offloaded to the object store: read by the server.
    let log = cl.state().join("fault.log");
    let big = format!(r#"{{"i": 3, "size": 100000, "log": "{}"}}"#, log.display());
    let (code, _, err) = cl.output(&[
        "run",
        "fault_child",
        "--input",
        &big,
        "--name",
        "big",
        "--server",
        &url,
    ]);
    assert_eq!(code, 0, "{err}");
    let (code, _, err) = cl.output(&["run", "fault_child", "--input", &big, "--name", "big-local"]);
    assert_eq!(code, 0, "{err}");
    let remote = get(&[
        "get",
        "actions",
        "big",
        "--with-io",
        "--server",
        &url,
        "-o",
        "json",
    ]);
    let local = get(&["get", "actions", "big-local", "--with-io", "-o", "json"]);
    let (remote, local) = (without_times(&remote), without_times(&local));
    assert_eq!(remote, local);
    let output = remote[0]["output"].as_str().unwrap();
    assert_eq!(output.len(), 100_000);
    assert!(output.starts_with("0000000000000003."), "{}", &output[..40]);
    // An unknown run: exit 2.
    let (code, _, err) = cl.output(&["get", "actions", "nosuch", "--with-io", "--server", &url]);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("unknown run"), "{err}");
}

/// What a task logs through `tracing` carries its run, action and attempt: in a cluster
/// worker's output and in an embedded run's.
#[test]
fn tracing_events_of_a_task_name_its_run_and_action() {
    let mut cl = Cluster::new();
    let url = cl.serve(&[]);
    let log = cl.log("worker");
    let args = [
        "worker",
        "--server",
        &url,
        "--env",
        "fx",
        "--concurrency",
        "2",
    ];
    let child = cl
        .command(&args, &log)
        .env("WEIR_LOG", "info")
        .spawn()
        .unwrap();
    cl.others.push(child);
    let (code, out, err) = cl.output(&[
        "run",
        "traced",
        "--input",
        r#"{"n": 7}"#,
        "--server",
        &url,
        "--name",
        "traced-1",
    ]);
    assert_eq!((code, out.trim()), (0, "7"), "{err}");
    let mut line = String::new();
    wait_for("the worker's traced line", || {
        let text = std::fs::read_to_string(&log).unwrap_or_default();
        match text.lines().find(|l| l.contains("traced task says hello")) {
            Some(l) => {
                line = l.to_string();
                true
            }
            None => false,
        }
    });
    for part in [
        "attempt{",
        "run=traced-1",
        "action=a0",
        "attempt=1",
        "task=fx.traced",
        "n=7",
    ] {
        assert!(line.contains(part), "{part} missing: {line}");
    }
    // Embedded: the action's span.
    let out = std::process::Command::new(BIN)
        .arg("--state-dir")
        .arg(cl.state().join("embedded"))
        .args([
            "run",
            "traced",
            "--input",
            r#"{"n": 8}"#,
            "--name",
            "traced-2",
        ])
        .env("WEIR_LOG", "info")
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{err}");
    let line = err
        .lines()
        .find(|l| l.contains("traced task says hello"))
        .unwrap_or_else(|| panic!("no traced line: {err}"));
    for part in [
        "action{",
        "run=traced-2",
        "action=a0",
        "task=fx.traced",
        "n=8",
    ] {
        assert!(line.contains(part), "{part} missing: {line}");
    }
}
