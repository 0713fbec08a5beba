//! `weir::File` across a crash: a file a child made before the process was SIGKILLed is the
//! child's recorded output, so the resumed run reuses it (the child does not run again, nothing
//! is uploaded again) and reads the same bytes.

use std::process::{Command, Stdio};

use weir_tests::wait_for;

const BIN: &str = env!("CARGO_BIN_EXE_fixture");

#[test]
fn a_file_made_before_a_sigkill_is_reused_by_the_resumed_run() {
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("state");
    let log = dir.path().join("execs.log");
    let gate = dir.path().join("gate");
    let size = 2_000_000;
    let input = format!(
        r#"{{"seed": 4, "size": {size}, "log": "{}", "gate": "{}"}}"#,
        log.display(),
        gate.display()
    );
    let mut child = Command::new(BIN)
        .arg("--state-dir")
        .arg(&state)
        .args(["run", "file_resume", "--input", &input, "--name", "R"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let made = || std::fs::read_to_string(&log).unwrap_or_default();
    // The parent has the file once the child's result is durable: kill it then.
    wait_for("the parent to have its file", || {
        made().contains("parent has the file")
    });
    let raw = state.join("blobs/raw");
    child.kill().unwrap();
    child.wait().unwrap();
    let objects = |dir: &std::path::Path| -> Vec<(String, std::time::SystemTime)> {
        std::fs::read_dir(dir)
            .unwrap()
            .flatten()
            .filter(|e| e.path().is_file())
            .map(|e| {
                (
                    e.file_name().to_string_lossy().to_string(),
                    e.metadata().unwrap().modified().unwrap(),
                )
            })
            .collect()
    };
    let before = objects(&raw);
    assert_eq!(before.len(), 1, "{before:?}");

    std::fs::write(&gate, "").unwrap();
    let o = Command::new(BIN)
        .arg("--state-dir")
        .arg(&state)
        .args(["-o", "json", "resume", "R"])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(o.status.success(), "{err}");
    let doc: serde_json::Value =
        serde_json::from_str(String::from_utf8_lossy(&o.stdout).trim()).unwrap();
    let text = big_value(4, size);
    let hash = blake3::hash(text.as_bytes()).to_hex().to_string();
    let mut h: u64 = 0xcbf29ce484222325;
    for b in text.bytes().chain([0]) {
        h = (h ^ b as u64).wrapping_mul(0x100000001b3);
    }
    assert_eq!(
        doc["output"],
        format!("{hash} {} {h:016x}", text.len()).as_str()
    );
    // The child ran once; the object is the one written before the kill, untouched.
    assert_eq!(made().matches("file_make 4").count(), 1, "{}", made());
    assert_eq!(objects(&raw), before);
    assert_eq!(before[0].0, hash);
}

/// The fixture's `big_value`.
fn big_value(seed: u64, len: usize) -> String {
    let unit = format!("{seed:016x}.");
    unit.chars().cycle().take(len).collect()
}

/// Worker processes of an embedded engine (`--workers process`) read and write reference data
/// in the engine's own store themselves: a `File` and a `DataFrame` made by one worker's task
/// and read back by another's, the bytes under the state's `blobs/raw`.
#[test]
fn worker_processes_of_an_embedded_engine_make_and_read_references() {
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("state");
    let run = |task: &str, input: &str| {
        let o = Command::new(BIN)
            .arg("--state-dir")
            .arg(&state)
            .args([
                "run",
                task,
                "-i",
                input,
                "--workers",
                "process",
                "-o",
                "json",
            ])
            .stdin(Stdio::null())
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&o.stderr).into_owned();
        assert!(o.status.success(), "{task}: {err}");
        let doc: serde_json::Value =
            serde_json::from_str(String::from_utf8_lossy(&o.stdout).trim()).unwrap();
        doc["output"].clone()
    };
    let size = 300_000;
    let out = run("file_job", &format!(r#"{{"seed": 6, "size": {size}}}"#));
    let text = big_value(6, size);
    let hash = blake3::hash(text.as_bytes()).to_hex().to_string();
    let mut h: u64 = 0xcbf29ce484222325;
    for b in text.bytes().chain([0]) {
        h = (h ^ b as u64).wrapping_mul(0x100000001b3);
    }
    assert_eq!(out, format!("{hash} {} {h:016x}", text.len()).as_str());
    assert_eq!(
        std::fs::read(state.join("blobs/raw").join(&hash)).unwrap(),
        text.as_bytes()
    );
    let out = run("frame_job", r#"{"rows": 30000}"#);
    assert_eq!(
        out[1],
        serde_json::json!([30000, (0..30000i64).sum::<i64>(), 30000])
    );
    let frame_hash = out[0]["weir_dataframe"].as_str().unwrap();
    assert!(state.join("blobs/raw").join(frame_hash).is_file());
}
