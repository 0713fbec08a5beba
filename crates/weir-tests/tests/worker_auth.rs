//! The worker API as an attacker on the same machine sees it (SPEC §12): a real engine with
//! real worker processes, and a process that is not a worker reading the engine's address and
//! a worker's id from `ps` (`/proc/PID/cmdline`) and speaking the protocol to it. Nothing it
//! sends is served (401, before the body is read); the run's result is untouched. And the
//! workers of an engine that is SIGKILLed stop at once (their stdin pipe from the engine
//! closes), not after missed heartbeats.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::Path;
use std::process::{Child, Command, Stdio};

use serde::Serialize;
use weir_tests::wait_for;

const BIN: &str = env!("CARGO_BIN_EXE_fixture");

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

fn start_run(state: &Path, input: &str, name: &str) -> Child {
    Command::new(BIN)
        .arg("--state-dir")
        .arg(state)
        .args(["run", "wburst", "-i", input, "--name", name])
        .args(["--workers", "process"])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("fixture starts")
}

/// `start I pid=P ...` lines of the fixture's `wwork` task: the pids.
fn started_pids(log: &Path) -> Vec<u32> {
    std::fs::read_to_string(log)
        .unwrap_or_default()
        .lines()
        .filter_map(|l| {
            l.strip_prefix("start ")?
                .split(' ')
                .nth(1)?
                .strip_prefix("pid=")?
                .parse()
                .ok()
        })
        .collect()
}

fn ended(log: &Path) -> usize {
    std::fs::read_to_string(log)
        .unwrap_or_default()
        .lines()
        .filter(|l| l.starts_with("end "))
        .count()
}

/// The value after `flag` on a process's command line, as `ps` shows it to anyone.
fn arg_of(pid: u32, flag: &str) -> String {
    let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).expect("cmdline readable");
    let args: Vec<String> = cmdline.split(|b| *b == 0).map(text).collect();
    let i = args.iter().position(|a| a == flag).expect("flag present");
    args[i + 1].clone()
}

/// One HTTP/1.1 POST; the status code.
fn post(addr: &str, path: &str, bearer: Option<&str>, body: &[u8]) -> u16 {
    let mut s = TcpStream::connect(addr).expect("engine reachable");
    let auth = bearer
        .map(|t| format!("Authorization: Bearer {t}\r\n"))
        .unwrap_or_default();
    let head = format!(
        "POST {path} HTTP/1.1\r\nHost: {addr}\r\nContent-Type: application/msgpack\r\n{auth}Content-Length: {}\r\n\r\n",
        body.len()
    );
    s.write_all(head.as_bytes()).unwrap();
    s.write_all(body).unwrap();
    // The status line only: the server may answer before it reads the body.
    let mut reply = Vec::new();
    let mut byte = [0u8; 1];
    while !reply.ends_with(b"\r\n") && s.read(&mut byte).is_ok_and(|n| n == 1) {
        reply.push(byte[0]);
    }
    let reply = text(&reply);
    reply
        .split(' ')
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or_else(|| panic!("no HTTP status in {reply:?}"))
}

fn msgpack<T: Serialize>(v: &T) -> Vec<u8> {
    rmp_serde::to_vec_named(v).unwrap()
}

#[derive(Serialize)]
struct Lease<'a> {
    worker: &'a str,
    max: u32,
}

#[derive(Serialize)]
struct Worker<'a> {
    worker: &'a str,
}

#[derive(Serialize)]
struct Completion {
    lease: u64,
    attempt: u32,
    action: u64,
    outcome: Outcome,
}

#[derive(Serialize)]
enum Outcome {
    Output(#[serde(with = "serde_bytes")] Vec<u8>),
}

#[derive(Serialize)]
struct Complete<'a> {
    worker: &'a str,
    completions: Vec<Completion>,
}

#[derive(Serialize)]
struct Cancel<'a> {
    worker: &'a str,
    calls: Vec<u64>,
}

#[test]
fn a_process_that_is_not_a_worker_is_refused_everywhere_and_changes_nothing() {
    let tmp = tempfile::tempdir().unwrap();
    let state = tmp.path().join("state");
    let log = tmp.path().join("log");
    let input = format!(
        r#"{{"n": 6, "sleep_ms": 700, "pause_ms": 0, "log": "{}"}}"#,
        log.display()
    );
    let run = start_run(&state, &input, "attacked");
    wait_for("a worker runs an action", || !started_pids(&log).is_empty());
    let pid = started_pids(&log)[0];

    // What anyone on the machine can see of a worker: the engine's address and its id, not
    // its credential (neither on the command line nor in the environment).
    let url = arg_of(pid, "--engine");
    let id = arg_of(pid, "--id");
    let cmdline = text(&std::fs::read(format!("/proc/{pid}/cmdline")).unwrap());
    assert!(cmdline.contains("--credential-stdin"), "{cmdline:?}");
    let environ = text(&std::fs::read(format!("/proc/{pid}/environ")).unwrap());
    assert!(
        !environ.contains("WEIR_WORKER_CREDENTIAL"),
        "the secret is not in the environment"
    );
    let addr = url.strip_prefix("http://").expect("http URL");

    let lease = msgpack(&Lease {
        worker: &id,
        max: 1000,
    });
    let worker = msgpack(&Worker { worker: &id });
    let complete = msgpack(&Complete {
        worker: &id,
        completions: (1..200)
            .map(|lease| Completion {
                lease,
                attempt: 1,
                action: lease,
                outcome: Outcome::Output(vec![0xc0]),
            })
            .collect(),
    });
    let cancel = msgpack(&Cancel {
        worker: &id,
        calls: (1..100).collect(),
    });
    let requests: [(&str, &[u8]); 8] = [
        ("/v1/lease", &lease),
        ("/v1/heartbeat", &worker),
        ("/v1/complete", &complete),
        ("/v1/submit", &cancel),
        ("/v1/results", &worker),
        ("/v1/cancel", &cancel),
        ("/v1/trace/lookup", &worker),
        ("/v1/trace/record", &worker),
    ];
    for (path, body) in requests {
        for bearer in [
            None,
            Some(id.as_str()),
            Some("0000000000000000000000000000000000000000000000000000000000000000"),
        ] {
            assert_eq!(
                post(addr, path, bearer, body),
                401,
                "{path} with {bearer:?}"
            );
        }
    }
    // Registration needs the engine's admission secret.
    for bearer in [None, Some(id.as_str()), Some("guess")] {
        assert_eq!(
            post(addr, "/v1/register", bearer, &worker),
            401,
            "register with {bearer:?}"
        );
    }

    let out = run.wait_with_output().unwrap();
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert_eq!(
        text(&out.stdout).trim(),
        (2 * (0..6).sum::<u64>() + 200).to_string()
    );
    assert_eq!(ended(&log), 7, "each action ran once, by the workers");
}

#[test]
fn workers_stop_at_once_when_their_engine_is_killed() {
    let tmp = tempfile::tempdir().unwrap();
    let state = tmp.path().join("state");
    let log = tmp.path().join("log");
    // Actions far longer than the test: one that ends was not stopped.
    let input = format!(
        r#"{{"n": 2, "sleep_ms": 600000, "pause_ms": 0, "log": "{}"}}"#,
        log.display()
    );
    let mut run = start_run(&state, &input, "orphans");
    wait_for("two actions run", || started_pids(&log).len() == 2);
    let mut pids = started_pids(&log);
    pids.sort();
    pids.dedup();
    run.kill().unwrap();
    run.wait().unwrap();

    let alive = |pid: &u32| {
        std::fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|s| {
            !s.rsplit(')')
                .next()
                .unwrap_or("")
                .trim_start()
                .starts_with('Z')
        })
    };
    wait_for("the orphaned workers exit", || !pids.iter().any(alive));
    assert_eq!(ended(&log), 0, "no action ran on after its engine was gone");
    // Each says why it stopped: its pipe from the engine closed.
    let workers = std::fs::read_dir(state.join("workers")).unwrap();
    let logs: Vec<String> = workers
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|x| x == "log"))
        .map(|p| std::fs::read_to_string(p).unwrap())
        .collect();
    let said = logs
        .iter()
        .filter(|l| l.contains("its pipe closed"))
        .count();
    assert!(
        said >= pids.len(),
        "{said} of {} workers said why: {logs:#?}",
        pids.len()
    );
}
