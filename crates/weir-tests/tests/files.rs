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
