//! The command line's edges against a real user binary (issue 10, findings 7 and 8): inspection
//! that reads a state directory without changing it (or being able to), numbers that do not
//! fit, run names, state directories that are files, corrupt or empty databases, and inputs
//! too large for the command line.

use std::io::{BufRead, BufReader, Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::LazyLock;

use weir::prelude::*;
use weir_tests::{fixture, snapshot, wait_for};

const BIN: &str = env!("CARGO_BIN_EXE_fixture");

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}
fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// Every file and directory under `dir` (relative paths, sorted), SQLite's `-wal` and `-shm`
/// included: [`snapshot`] leaves those out, this shows whether one appeared.
fn files(dir: &Path) -> Vec<PathBuf> {
    fn walk(root: &Path, dir: &Path, out: &mut Vec<PathBuf>) {
        for e in std::fs::read_dir(dir).unwrap().flatten() {
            let p = e.path();
            out.push(p.strip_prefix(root).unwrap().to_path_buf());
            if p.is_dir() {
                walk(root, &p, out);
            }
        }
    }
    let mut out = Vec::new();
    walk(dir, dir, &mut out);
    out.sort();
    out
}

/// What must hold after a command that changes nothing: the same files, the same contents.
fn unchanged(state: &Path, before: &(Vec<PathBuf>, Vec<(PathBuf, u64)>), what: &str) {
    assert_eq!(files(state), before.0, "{what}: files appeared or vanished");
    assert_eq!(snapshot(state), before.1, "{what}: a file changed");
}

fn state_of(state: &Path) -> (Vec<PathBuf>, Vec<(PathBuf, u64)>) {
    (files(state), snapshot(state))
}

/// Raw control characters other than line feeds (what could drive a terminal).
fn controls(text: &str) -> Vec<char> {
    text.chars()
        .filter(|c| c.is_control() && *c != '\n')
        .collect()
}

/// `fixture ui --port 0` started by `cmd`, and the port it listens on; killed when dropped.
struct Ui {
    child: Child,
    port: u16,
}

impl Ui {
    fn start(mut cmd: Command) -> Ui {
        let mut child = cmd
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let mut lines = BufReader::new(child.stderr.take().unwrap());
        let mut line = String::new();
        let port = loop {
            line.clear();
            let n = lines.read_line(&mut line).unwrap();
            assert!(n > 0, "ui exited before serving: {:?}", child.wait());
            if let Some(rest) = line.split("http://127.0.0.1:").nth(1) {
                break rest.split('/').next().unwrap().parse().unwrap();
            }
        };
        // Keep reading stderr so that the server never blocks on a full pipe.
        std::thread::spawn(move || std::io::copy(&mut lines, &mut std::io::sink()));
        Ui { child, port }
    }

    /// The status line and body of `GET path`.
    fn get(&self, path: &str) -> String {
        let mut s = std::net::TcpStream::connect(("127.0.0.1", self.port)).unwrap();
        write!(
            s,
            "GET {path} HTTP/1.1\r\nHost: 127.0.0.1:{}\r\nConnection: close\r\n\r\n",
            self.port
        )
        .unwrap();
        let mut out = String::new();
        s.read_to_string(&mut out).unwrap();
        out
    }
}

impl Drop for Ui {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn ui_command(prefix: &[&str], bin: &Path, state: &Path) -> Command {
    let mut cmd = match prefix.split_first() {
        Some((first, rest)) => {
            let mut c = Command::new(first);
            c.args(rest).arg(bin);
            c
        }
        None => Command::new(bin),
    };
    cmd.arg("--state-dir")
        .arg(state)
        .args(["ui", "--port", "0"]);
    cmd
}

/// A state made by a real run: `first` (fx.add 2 + 3) and a cache entry.
fn made_state(state: &Path) {
    let o = fixture(
        BIN,
        state,
        &[
            "run",
            "add",
            "--input",
            r#"{"a": 2, "b": 3}"#,
            "--name",
            "first",
        ],
    );
    assert!(o.status.success(), "{}", stderr(&o));
    let o = fixture(
        BIN,
        state,
        &[
            "run",
            "call_cached",
            "--input",
            r#"{"a": 1, "b": 1, "log": ""}"#,
            "--name",
            "cached",
        ],
    );
    assert!(o.status.success(), "{}", stderr(&o));
}

/// The inspection commands and what each must print of [`made_state`].
const INSPECTIONS: &[(&[&str], &str)] = &[
    (&["get", "runs"], "first"),
    (&["-o", "json", "get", "runs"], "\"first\""),
    (&["get", "actions", "first"], "fx.add"),
    (&["get", "actions", "cached", "--with-io"], "fx.cached_add"),
    (&["-o", "json", "get", "io", "first", "a0"], "\"output\":5"),
    (&["cache", "list"], "fx.cached_add"),
];

#[test]
fn inspection_creates_and_changes_nothing_in_the_state_directory() {
    let tmp = tempfile::tempdir().unwrap();
    let state = tmp.path().join("state");
    made_state(&state);
    let before = state_of(&state);
    // (A finished run's process usually leaves no -wal or -shm; where one did, the readers
    // read in WAL mode and must not add or change anything either.)
    for (args, needle) in INSPECTIONS {
        let o = fixture(BIN, &state, args);
        assert!(o.status.success(), "{args:?}: {}", stderr(&o));
        assert!(stdout(&o).contains(needle), "{args:?}: {}", stdout(&o));
        unchanged(&state, &before, &format!("{args:?}"));
    }
    let ui = Ui::start(ui_command(&[], Path::new(BIN), &state));
    let runs = ui.get("/api/runs");
    assert!(
        runs.contains(" 200 ") && runs.contains("\"first\""),
        "{runs}"
    );
    let run = ui.get("/api/runs/first/actions/a0");
    assert!(run.contains(" 200 "), "{run}");
    drop(ui);
    unchanged(&state, &before, "ui");
}

/// A command prefix that runs a program as user `nobody` (for a test running as root, whom
/// permissions do not stop); `None` where that is not possible here.
fn as_nobody() -> Option<Vec<&'static str>> {
    let prefix = vec![
        "setpriv",
        "--reuid=nobody",
        "--regid=nogroup",
        "--clear-groups",
    ];
    let ok = Command::new(prefix[0])
        .args(&prefix[1..])
        .arg("true")
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    ok.then_some(prefix)
}

#[cfg(unix)]
fn chmod_tree(dir: &Path, write: bool) {
    use std::os::unix::fs::PermissionsExt;
    let mut all = vec![dir.to_path_buf()];
    all.extend(files(dir).into_iter().map(|p| dir.join(p)));
    for p in all {
        let mode = match (p.is_dir(), write) {
            (true, true) => 0o755,
            (true, false) => 0o555,
            (false, true) => 0o644,
            (false, false) => 0o444,
        };
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(mode)).unwrap();
    }
}

#[cfg(unix)]
#[test]
fn inspection_reads_a_state_directory_it_cannot_write() {
    use std::os::unix::fs::{MetadataExt, PermissionsExt};
    let tmp = tempfile::tempdir().unwrap();
    // Readable by every user (a temporary directory is its owner's alone).
    std::fs::set_permissions(tmp.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let state = tmp.path().join("state");
    made_state(&state);
    let root = std::fs::metadata(&state).unwrap().uid() == 0;
    // Root ignores permissions: then the reader is `nobody`, on root's files (755/644).
    // Another user reads its own state made read-only.
    let prefix: Vec<&str> = if root {
        match as_nobody() {
            Some(p) => p,
            None => {
                eprintln!("skipped: running as root without setpriv to become nobody");
                return;
            }
        }
    } else {
        Vec::new()
    };
    // The fixture binary where the reader can run it.
    let bin = tmp.path().join("fixture");
    std::fs::copy(BIN, &bin).unwrap();
    std::fs::set_permissions(&bin, std::fs::Permissions::from_mode(0o755)).unwrap();
    let run_as_reader = |state: &Path, args: &[&str]| -> Output {
        let mut cmd = match prefix.split_first() {
            Some((first, rest)) => {
                let mut c = Command::new(first);
                c.args(rest).arg(&bin);
                c
            }
            None => Command::new(&bin),
        };
        cmd.arg("--state-dir")
            .arg(state)
            .args(args)
            .output()
            .unwrap()
    };
    chmod_tree(&state, root); // 755/644 for root's files, read-only for our own
    let before = state_of(&state);

    // The reader cannot write here.
    let o = match prefix.split_first() {
        Some((first, rest)) => Command::new(first)
            .args(rest)
            .args(["touch"])
            .arg(state.join("probe"))
            .output()
            .unwrap(),
        None => Command::new("touch")
            .arg(state.join("probe"))
            .output()
            .unwrap(),
    };
    assert!(
        !o.status.success(),
        "the reader can write the state directory"
    );

    for (args, needle) in INSPECTIONS {
        let o = run_as_reader(&state, args);
        assert!(o.status.success(), "{args:?}: {}", stderr(&o));
        assert!(stdout(&o).contains(needle), "{args:?}: {}", stdout(&o));
    }
    {
        let ui = Ui::start(ui_command(&prefix, &bin, &state));
        let runs = ui.get("/api/runs");
        assert!(
            runs.contains(" 200 ") && runs.contains("\"first\""),
            "{runs}"
        );
    }
    unchanged(&state, &before, "read-only inspection");
    chmod_tree(&state, true);

    // A run in progress (its writer's -wal and -shm exist, readable, not writable by the
    // reader), then the same state after its writer was killed.
    let live = tmp.path().join("live");
    std::fs::create_dir(&live).unwrap();
    let log = tmp.path().join("exec.log");
    let input = format!(
        // At least 100 s of sleeps: still running when read, killed after.
        r#"{{"n": 20000, "width": 2, "sleep_ms": 10, "log": "{}"}}"#,
        log.display()
    );
    let mut writer = Command::new(BIN)
        .arg("--state-dir")
        .arg(&live)
        .args(["run", "fanout", "--name", "live", "--input", &input])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let ended = || {
        std::fs::read_to_string(&log)
            .unwrap_or_default()
            .lines()
            .filter(|l| l.starts_with("end "))
            .count()
    };
    wait_for("ten children of the live run", || ended() >= 10);
    if !root {
        // Another user's run: the reader cannot write its directory.
        std::fs::set_permissions(&live, std::fs::Permissions::from_mode(0o555)).unwrap();
    }
    let read_live = || -> (String, usize) {
        let o = run_as_reader(&live, &["-o", "json", "get", "runs"]);
        assert!(o.status.success(), "get runs: {}", stderr(&o));
        let runs: serde_json::Value = serde_json::from_str(stdout(&o).trim()).unwrap();
        let o = run_as_reader(
            &live,
            &["-o", "json", "get", "actions", "live", "--limit", "1000"],
        );
        assert!(o.status.success(), "get actions: {}", stderr(&o));
        let actions: Vec<serde_json::Value> = serde_json::from_str(stdout(&o).trim()).unwrap();
        let succeeded = actions
            .iter()
            .filter(|a| a["status"] == "succeeded")
            .count();
        (runs[0]["status"].as_str().unwrap().to_string(), succeeded)
    };
    let mut seen = 0;
    wait_for("the reader sees a committed child", || {
        let (status, succeeded) = read_live();
        assert_eq!(status, "running");
        seen = succeeded;
        seen >= 1
    });
    writer.kill().unwrap(); // SIGKILL: the -wal and -shm stay behind
    writer.wait().unwrap();
    let names: Vec<String> = files(&live)
        .iter()
        .map(|p| p.to_string_lossy().into_owned())
        .collect();
    assert!(
        names.iter().any(|n| n.ends_with("-wal")),
        "killed writer's WAL: {names:?}"
    );
    let killed = state_of(&live);
    let (status, after) = read_live();
    assert_eq!(
        status, "running",
        "a killed run stays running until resumed"
    );
    assert!(
        after >= seen,
        "{after} succeeded after the kill, {seen} before"
    );
    if !root {
        std::fs::set_permissions(&live, std::fs::Permissions::from_mode(0o755)).unwrap();
    }
    assert_eq!(
        files(&live),
        killed.0,
        "the reader created or removed a file"
    );
}

#[test]
fn offsets_and_limits_that_do_not_fit_are_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let state = tmp.path().join("state");
    made_state(&state);
    let before = state_of(&state);
    for args in [
        &[
            "get",
            "actions",
            "first",
            "--offset",
            "18446744073709551615",
        ][..],
        &["get", "actions", "first", "--offset", "9223372036854775808"],
        &["get", "actions", "first", "--limit", "4294967296"],
        &["get", "runs", "--limit", "18446744073709551615"],
        &["cache", "list", "--limit", "99999999999"],
    ] {
        let o = fixture(BIN, &state, args);
        assert_eq!(o.status.code(), Some(2), "{args:?}: {}", stderr(&o));
        assert!(stdout(&o).is_empty(), "{args:?} printed {}", stdout(&o));
        let flag = args[args.len() - 2];
        assert!(
            stderr(&o).contains(flag),
            "{args:?}: the error names {flag}: {}",
            stderr(&o)
        );
    }
    // The largest offset that fits reads past the end.
    let o = fixture(
        BIN,
        &state,
        &[
            "-o",
            "json",
            "get",
            "actions",
            "first",
            "--offset",
            "9223372036854775807",
        ],
    );
    assert!(o.status.success(), "{}", stderr(&o));
    assert_eq!(stdout(&o).trim(), "[]");
    unchanged(&state, &before, "refused numbers");
}

#[test]
fn bad_run_names_are_refused_before_anything_opens() {
    let tmp = tempfile::tempdir().unwrap();
    let cases: &[(&str, &str)] = &[
        ("", "it is empty"),
        ("two\nlines", "a line feed (U+000A)"),
        ("back\rover", "a carriage return (U+000D)"),
        ("x\u{1b}]0;title\u{7}", "an escape character (U+001B)"),
        ("c1\u{9b}2J", "a control character (U+009B)"),
        ("a/b", "cannot contain '/'"),
        ("..", "cannot contain '/'"),
        ("a\\b", "cannot contain '/'"),
    ];
    // A state directory that does not exist: not created.
    let fresh = tmp.path().join("fresh");
    // One that exists: not changed.
    let state = tmp.path().join("state");
    made_state(&state);
    let before = state_of(&state);
    for dir in [&fresh, &state] {
        for (name, needle) in cases {
            let o = fixture(
                BIN,
                dir,
                &[
                    "run",
                    "add",
                    "--input",
                    r#"{"a": 1, "b": 2}"#,
                    "--name",
                    name,
                ],
            );
            assert_eq!(o.status.code(), Some(2), "{name:?}: {}", stderr(&o));
            assert!(
                stderr(&o).contains("invalid --name") && stderr(&o).contains(needle),
                "{name:?}: expected {needle:?} in {}",
                stderr(&o)
            );
            assert_eq!(controls(&stderr(&o)), Vec::<char>::new(), "{name:?}");
            assert!(!fresh.exists(), "{name:?} created the state directory");
        }
    }
    // `rerun --name` names a new run the same way.
    for (name, needle) in cases {
        let o = fixture(BIN, &state, &["rerun", "first", "--name", name]);
        assert_eq!(o.status.code(), Some(2), "rerun {name:?}: {}", stderr(&o));
        assert!(
            stderr(&o).contains(needle),
            "rerun {name:?}: {}",
            stderr(&o)
        );
    }
    unchanged(&state, &before, "refused names");
}

static EDGE: LazyLock<TaskEnvironment> = LazyLock::new(|| TaskEnvironment::new("edge"));

/// Fails with `text` as its error message.
#[weir::task(env = EDGE)]
async fn junk(text: String) -> Result<u64> {
    Err(Error::non_recoverable(text))
}

const JUNK_NAME: &str = "evil\u{1b}]0;pwned\u{7}\r\nFAKE\u{9b}2J";
const JUNK_TEXT: &str = "boom\u{1b}[2J\u{1b}]52;c;aGk=\u{7}\u{9b}31m\u{7f}";

#[tokio::test(flavor = "multi_thread")]
async fn control_characters_from_the_state_are_escaped_in_text_output() {
    let tmp = tempfile::tempdir().unwrap();
    let state = tmp.path().join("state");
    // Stored by a library user (the CLI refuses such a name) and a task's error message.
    let runner = Runner::embedded(&state)
        .await
        .unwrap()
        .with_context(RunContext::new().name(JUNK_NAME));
    let run = runner.run(junk(JUNK_TEXT.to_string())).await.unwrap();
    assert!(run.wait().await.is_err());
    runner.engine().close().unwrap();
    drop(runner);

    let o = fixture(BIN, &state, &["get", "runs"]);
    assert!(o.status.success(), "{}", stderr(&o));
    let text = stdout(&o);
    assert_eq!(controls(&text), Vec::<char>::new(), "{text:?}");
    assert!(
        text.contains(r"evil\x1b]0;pwned\x07\r\nFAKE\x9b2J"),
        "{text}"
    );
    assert_eq!(text.lines().count(), 2, "the name added a row: {text}");

    let o = fixture(BIN, &state, &["get", "actions", JUNK_NAME]);
    assert!(o.status.success(), "{}", stderr(&o));
    let text = stdout(&o);
    assert_eq!(controls(&text), Vec::<char>::new(), "{text:?}");
    assert!(
        text.contains(r"boom\x1b[2J\x1b]52;c;aGk=\x07\x9b31m\x7f"),
        "{text}"
    );

    // Pretty JSON for a terminal: still JSON, with every control character escaped.
    let o = fixture(BIN, &state, &["get", "io", JUNK_NAME, "a0"]);
    assert!(o.status.success(), "{}", stderr(&o));
    let text = stdout(&o);
    assert_eq!(controls(&text), Vec::<char>::new(), "{text:?}");
    let doc: serde_json::Value = serde_json::from_str(&text).unwrap();
    assert_eq!(doc["inputs"]["text"], JUNK_TEXT);

    // JSON output carries the stored strings as they are.
    let o = fixture(BIN, &state, &["-o", "json", "get", "runs"]);
    let runs: serde_json::Value = serde_json::from_str(stdout(&o).trim()).unwrap();
    assert_eq!(runs[0]["name"], JUNK_NAME);

    // A failed run's error message on stderr.
    let input = serde_json::json!({ "reason": JUNK_TEXT }).to_string();
    let o = fixture(
        BIN,
        &state,
        &["run", "refuse", "--input", &input, "--name", "refused"],
    );
    assert_eq!(o.status.code(), Some(1), "{}", stderr(&o));
    assert_eq!(
        controls(&stderr(&o)),
        Vec::<char>::new(),
        "{:?}",
        stderr(&o)
    );
    assert!(stderr(&o).contains(r"boom\x1b[2J"), "{}", stderr(&o));
}

#[test]
fn a_state_dir_that_is_a_file_is_refused_as_not_a_directory() {
    let tmp = tempfile::tempdir().unwrap();
    let file = tmp.path().join("not-a-dir");
    std::fs::write(&file, b"some file").unwrap();
    for args in [
        &["run", "add", "--input", r#"{"a": 1, "b": 2}"#][..],
        &["get", "runs"],
        &["get", "workers"],
        &["cache", "list"],
        &["cache", "clear"],
        &["abort", "x"],
        &["resume", "x"],
        &["ui", "--port", "0"],
    ] {
        let o = fixture(BIN, &file, args);
        assert_eq!(o.status.code(), Some(2), "{args:?}: {}", stderr(&o));
        assert!(
            stderr(&o).contains("is not a directory") && !stderr(&o).contains("corrupt"),
            "{args:?}: {}",
            stderr(&o)
        );
        assert_eq!(std::fs::read(&file).unwrap(), b"some file");
    }
    assert_eq!(files(tmp.path()), vec![PathBuf::from("not-a-dir")]);
}

#[test]
fn a_corrupt_database_fails_with_exit_1_whichever_command_meets_it() {
    let tmp = tempfile::tempdir().unwrap();
    let state = tmp.path().join("state");
    std::fs::create_dir(&state).unwrap();
    let junk: Vec<u8> = (0..20_000u32).map(|i| (i * 7 + 3) as u8).collect();
    std::fs::write(state.join("state.db"), &junk).unwrap();
    let before = state_of(&state);
    for args in [
        &["get", "runs"][..],
        &["run", "add", "--input", r#"{"a": 1, "b": 2}"#],
        &["get", "actions", "x"],
        &["cache", "list"],
        &["resume", "x"],
    ] {
        let o = fixture(BIN, &state, args);
        assert_eq!(o.status.code(), Some(1), "{args:?}: {}", stderr(&o));
        assert!(
            stderr(&o).contains("state database") && stderr(&o).contains("not a database"),
            "{args:?}: {}",
            stderr(&o)
        );
        unchanged(&state, &before, &format!("{args:?}"));
    }
}

#[test]
fn an_empty_database_is_refused_rather_than_started_over() {
    let tmp = tempfile::tempdir().unwrap();
    let state = tmp.path().join("state");
    std::fs::create_dir(&state).unwrap();
    std::fs::write(state.join("state.db"), b"").unwrap();
    for args in [
        &["run", "add", "--input", r#"{"a": 1, "b": 2}"#][..],
        &["get", "runs"],
        &["cache", "list"],
    ] {
        let o = fixture(BIN, &state, args);
        assert_eq!(o.status.code(), Some(1), "{args:?}: {}", stderr(&o));
        assert!(
            stderr(&o).contains("is empty (0 bytes)") && stderr(&o).contains("truncated"),
            "{args:?}: {}",
            stderr(&o)
        );
        assert_eq!(files(&state), vec![PathBuf::from("state.db")], "{args:?}");
        assert_eq!(std::fs::metadata(state.join("state.db")).unwrap().len(), 0);
    }

    // Weir never leaves an empty database itself: engines and readers starting together on a
    // new state directory all find it whole.
    let fresh = tmp.path().join("fresh");
    let runs: Vec<Child> = (0..4)
        .map(|i| {
            Command::new(BIN)
                .arg("--state-dir")
                .arg(&fresh)
                .args(["run", "add", "--input", r#"{"a": 1, "b": 2}"#, "--name"])
                .arg(format!("r{i}"))
                .stdout(Stdio::null())
                .stderr(Stdio::piped())
                .spawn()
                .unwrap()
        })
        .collect();
    let readers: Vec<Child> = (0..4)
        .map(|_| {
            Command::new(BIN)
                .arg("--state-dir")
                .arg(&fresh)
                .args(["get", "runs"])
                .stdout(Stdio::null())
                .stderr(Stdio::piped())
                .spawn()
                .unwrap()
        })
        .collect();
    for c in runs {
        let o = c.wait_with_output().unwrap();
        assert!(o.status.success(), "{}", stderr(&o));
    }
    for c in readers {
        let o = c.wait_with_output().unwrap();
        assert!(
            o.status.success() || stderr(&o).contains("no weir state"),
            "a reader met a half-made state: {}",
            stderr(&o)
        );
    }
    let o = fixture(BIN, &fresh, &["-o", "json", "get", "runs"]);
    let listed: Vec<serde_json::Value> = serde_json::from_str(stdout(&o).trim()).unwrap();
    assert_eq!(listed.len(), 4);
    let names: Vec<String> = files(&fresh)
        .iter()
        .map(|p| p.to_string_lossy().into_owned())
        .collect();
    assert!(
        !names.iter().any(|n| n.contains("creating")),
        "a temporary database was left: {names:?}"
    );
}

#[test]
fn large_inputs_pass_through_a_file_or_stdin() {
    let tmp = tempfile::tempdir().unwrap();
    let state = tmp.path().join("state");
    let reason = "x".repeat(1_000_000);
    let input = serde_json::json!({ "reason": reason }).to_string();
    let file = tmp.path().join("input.json");
    std::fs::write(&file, &input).unwrap();
    let stored = |run: &str| -> usize {
        let o = fixture(BIN, &state, &["-o", "json", "get", "io", run, "a0"]);
        assert!(o.status.success(), "{}", stderr(&o));
        let doc: serde_json::Value = serde_json::from_str(stdout(&o).trim()).unwrap();
        doc["inputs"]["reason"].as_str().unwrap().len()
    };

    // `refuse` fails with its reason (exit 1); the run and its 1 MB input are recorded.
    let o = fixture(
        BIN,
        &state,
        &[
            "run",
            "refuse",
            "--input-file",
            file.to_str().unwrap(),
            "--name",
            "from-file",
        ],
    );
    assert_eq!(
        o.status.code(),
        Some(1),
        "{}",
        &stderr(&o)[..200.min(stderr(&o).len())]
    );
    assert_eq!(stored("from-file"), 1_000_000);

    let mut child = Command::new(BIN)
        .arg("--state-dir")
        .arg(&state)
        .args(["run", "refuse", "--input", "-", "--name", "from-stdin"])
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut stdin = child.stdin.take().unwrap();
    let writer = {
        let input = input.clone();
        std::thread::spawn(move || stdin.write_all(input.as_bytes()))
    };
    assert_eq!(child.wait().unwrap().code(), Some(1));
    writer.join().unwrap().unwrap();
    assert_eq!(stored("from-stdin"), 1_000_000);

    // Refusals: a missing file, and two sources at once.
    let before = state_of(&state);
    let missing = tmp.path().join("missing.json");
    let o = fixture(
        BIN,
        &state,
        &["run", "add", "--input-file", missing.to_str().unwrap()],
    );
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
    assert!(
        stderr(&o).contains("cannot read --input-file") && stderr(&o).contains("missing.json"),
        "{}",
        stderr(&o)
    );
    let o = fixture(
        BIN,
        &state,
        &[
            "run",
            "add",
            "--input",
            "{}",
            "--input-file",
            file.to_str().unwrap(),
        ],
    );
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
    assert!(stderr(&o).contains("cannot be used with"), "{}", stderr(&o));
    unchanged(&state, &before, "refused inputs");
}
