//! Cluster mode with its payloads in S3: `serve --blobs s3://...` against a real S3-compatible
//! server (moto, started by the test) and the machine's PostgreSQL. A missing bucket stops
//! `serve` at start; a large output goes to the bucket under the prefix and `get io` reads it
//! back; a damaged or deleted object is an error naming its key.

mod support;

#[path = "../../weir-blob/tests/moto/mod.rs"]
mod moto;

use support::*;
use weir_tests::wait_for;

/// What the fixture's `fault_child(i, size)` returns.
fn big_value(seed: u64, len: usize) -> String {
    let unit = format!("{seed:016x}.");
    unit.chars().cycle().take(len).collect()
}

/// Starts a `serve` replica with moto's `AWS_*` settings and `--blobs url`; returns its URL.
fn serve_on(cl: &mut Cluster, moto: &moto::Moto, url: &str) -> String {
    let log = cl.log("serve");
    let db = cl.database.clone();
    let schema = cl.schema.clone();
    let args = [
        "serve",
        "--database",
        &db,
        "--schema",
        &schema,
        "--listen",
        "127.0.0.1:0",
        "--blobs",
        url,
    ];
    let child = cl.command(&args, &log).envs(moto.env()).spawn().unwrap();
    // Killed with the cluster.
    cl.serves.push((child, String::new()));
    let mut addr = String::new();
    wait_for("serve listening", || {
        let text = std::fs::read_to_string(&log).unwrap_or_default();
        if let Some(status) = cl.serves.last_mut().unwrap().0.try_wait().unwrap() {
            panic!("serve ended ({status}): {text}");
        }
        match text
            .split("listening on ")
            .nth(1)
            .filter(|rest| rest.contains('\n'))
        {
            Some(rest) => {
                addr = rest.split_whitespace().next().unwrap().to_string();
                true
            }
            None => false,
        }
    });
    cl.serves.last_mut().unwrap().1 = addr.clone();
    addr
}

#[test]
fn serve_keeps_large_payloads_in_s3_and_get_io_reads_them_back() {
    let Some(moto) = moto::Moto::start() else {
        return;
    };
    let mut cl = Cluster::new();

    // A missing bucket: serve stops at start, naming it and the server; nothing is recorded.
    let log = cl.log("serve-missing");
    let (db, schema) = (cl.database.clone(), cl.schema.clone());
    let args = [
        "serve",
        "--database",
        &db,
        "--schema",
        &schema,
        "--listen",
        "127.0.0.1:0",
        "--blobs",
        "s3://weir-missing/p",
    ];
    let child = cl.command(&args, &log).envs(moto.env()).spawn().unwrap();
    // Killed with the cluster if it does not stop.
    cl.others.push(child);
    let mut status = None;
    wait_for("serve to stop", || {
        status = cl.others[0].try_wait().unwrap();
        status.is_some()
    });
    let text = std::fs::read_to_string(&log).unwrap();
    assert_eq!(status.unwrap().code(), Some(2), "{text}");
    assert!(
        text.contains("\"weir-missing\"")
            && text.contains(&moto.endpoint())
            && text.contains("does not exist"),
        "{text}"
    );

    moto.create_bucket("weir-cluster");
    let url = serve_on(&mut cl, &moto, "s3://weir-cluster/team/one");
    cl.worker(&url, "fxf", "2");
    let size = 200_000;
    let input = format!(
        r#"{{"i": 3, "size": {size}, "log": "{}"}}"#,
        cl.state().join("children.log").display()
    );
    let (code, out, err) = cl.output(&[
        "run",
        "fault_child",
        "--input",
        &input,
        "--server",
        &url,
        "-o",
        "json",
    ]);
    assert_eq!(code, 0, "{out}\n{err}");
    let v: serde_json::Value = serde_json::from_str(out.trim()).unwrap();
    let big = big_value(3, size);
    assert_eq!(v["status"], "succeeded");
    assert_eq!(v["output"], big.as_str());
    let run = v["run"].as_str().unwrap();

    // The output (over the inline threshold) is the only object, under the prefix.
    let keys = moto.keys("weir-cluster");
    assert_eq!(keys.len(), 1, "{keys:?}");
    let key = &keys[0];
    let prefix = format!("team/one/{run}/a0/");
    assert!(
        key.starts_with(&prefix) && key.ends_with("/outputs"),
        "{key}"
    );
    let reference = key.strip_prefix("team/one/").unwrap();

    // `get io` reads it back through the control plane.
    let get_io = ["get", "io", run, "a0", "--server", &url, "-o", "json"];
    let (code, io, err) = cl.output(&get_io);
    assert_eq!(code, 0, "{err}");
    let io: serde_json::Value = serde_json::from_str(io.trim()).unwrap();
    assert_eq!(io["output"], big.as_str());

    // Damaged (same size, other bytes), then deleted: errors naming the object.
    let (_, _, original) = moto.request("GET", &format!("/weir-cluster/{key}"), b"");
    let mut damaged = original.clone();
    let last = damaged.len() - 1;
    damaged[last] ^= 1;
    moto.put_object("weir-cluster", key, &damaged);
    let (code, _, err) = cl.output(&get_io);
    assert_ne!(code, 0);
    assert!(err.contains(reference) && err.contains("corrupt"), "{err}");
    moto.delete_object("weir-cluster", key);
    let (code, _, err) = cl.output(&get_io);
    assert_ne!(code, 0);
    assert!(err.contains(reference) && err.contains("missing"), "{err}");
    // Put back, it reads again.
    moto.put_object("weir-cluster", key, &original);
    let (code, io, err) = cl.output(&get_io);
    assert_eq!(code, 0, "{err}");
    let io: serde_json::Value = serde_json::from_str(io.trim()).unwrap();
    assert_eq!(io["output"], big.as_str());
}

#[test]
fn an_embedded_run_keeps_large_payloads_in_s3_and_get_io_reads_them_back() {
    let Some(moto) = moto::Moto::start() else {
        return;
    };
    let state = tempfile::tempdir().unwrap();
    // The state's object store, recorded as `EngineOptions::blob_url` records it on first use
    // (the command line has no flag for it): every engine and reader of the state uses it.
    let store = weir_store::open(state.path(), Default::default()).unwrap();
    let url = "s3://weir-embedded/runs";
    futures::executor::block_on(store.set_setting(weir_blob::BLOB_URL_SETTING, url)).unwrap();
    store.close().unwrap();
    drop(store);
    let fixture = |args: &[&str]| {
        let o = std::process::Command::new(BIN)
            .arg("--state-dir")
            .arg(state.path())
            .args(args)
            .envs(moto.env())
            .output()
            .unwrap();
        let text = |b: &[u8]| String::from_utf8_lossy(b).into_owned();
        (o.status.success(), text(&o.stdout), text(&o.stderr))
    };
    let size = 300_000;
    let input = format!(
        r#"{{"i": 5, "size": {size}, "log": "{}"}}"#,
        state.path().join("children.log").display()
    );
    let run = ["run", "fault_child", "--input", &input, "-o", "json"];

    // No bucket yet: the engine does not start, and says which bucket on which server.
    let (ok, _, err) = fixture(&run);
    assert!(!ok);
    assert!(
        err.contains("\"weir-embedded\"")
            && err.contains(&moto.endpoint())
            && err.contains("does not exist"),
        "{err}"
    );

    moto.create_bucket("weir-embedded");
    let (ok, out, err) = fixture(&run);
    assert!(ok, "{out}\n{err}");
    let v: serde_json::Value = serde_json::from_str(out.trim()).unwrap();
    let big = big_value(5, size);
    assert_eq!(v["output"], big.as_str());
    let name = v["run"].as_str().unwrap();
    let keys = moto.keys("weir-embedded");
    assert_eq!(keys.len(), 1, "{keys:?}");
    let key = &keys[0];
    assert!(
        key.starts_with(&format!("runs/{name}/a0/")) && key.ends_with("/outputs"),
        "{key}"
    );

    // `get io` finds it through the state's recorded store.
    let get_io = ["get", "io", name, "a0", "-o", "json"];
    let (ok, io, err) = fixture(&get_io);
    assert!(ok, "{err}");
    let io: serde_json::Value = serde_json::from_str(io.trim()).unwrap();
    assert_eq!(io["output"], big.as_str());
    moto.delete_object("weir-embedded", key);
    let (ok, _, err) = fixture(&get_io);
    assert!(!ok);
    assert!(
        err.contains(key.strip_prefix("runs/").unwrap()) && err.contains("missing"),
        "{err}"
    );
}
