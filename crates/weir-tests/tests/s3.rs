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
    // So does the web UI that serve serves (its action page's API: a bounded preview).
    let page = format!("/ui/api/runs/{run}/actions/a0");
    let (status, body) = exchange(&url, "GET", &page, &cl.token(), b"");
    let body = String::from_utf8_lossy(&body).to_string();
    assert_eq!(status, 200, "{body}");
    assert!(
        body.contains(&big[..200]),
        "{}",
        &body[..body.len().min(2000)]
    );

    // Damaged (same size, other bytes), then deleted: errors naming the object.
    let (_, _, original) = moto.request("GET", &format!("/weir-cluster/{key}"), b"");
    let mut damaged = original.clone();
    let last = damaged.len() - 1;
    damaged[last] ^= 1;
    moto.put_object("weir-cluster", key, &damaged);
    let (code, _, err) = cl.output(&get_io);
    assert_ne!(code, 0);
    assert!(err.contains(reference) && err.contains("corrupt"), "{err}");
    let (_, body) = exchange(&url, "GET", &page, &cl.token(), b"");
    let body = String::from_utf8_lossy(&body).to_string();
    assert!(
        body.contains(reference) && body.contains("corrupt") && !body.contains(&big[..200]),
        "{}",
        &body[..body.len().min(2000)]
    );
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

    // A weir::File (9 MiB: uploaded in parts) lives in the bucket under raw/<hash>, read back
    // by a child; what the run records is its small reference.
    let size = (9 << 20) + 7;
    let input = format!(r#"{{"seed": 11, "size": {size}}}"#);
    let (ok, out, err) = fixture(&["run", "file_job", "--input", &input, "-o", "json"]);
    assert!(ok, "{out}\n{err}");
    let v: serde_json::Value = serde_json::from_str(out.trim()).unwrap();
    let made = big_value(11, size);
    let hash = blake3::hash(made.as_bytes()).to_hex().to_string();
    let want = format!("{hash} {}", fnv_line(&made));
    assert_eq!(v["output"], want.as_str());
    let raw = format!("runs/raw/{hash}");
    assert!(
        moto.keys("weir-embedded").contains(&raw),
        "{:?}",
        moto.keys("weir-embedded")
    );
    let name = v["run"].as_str().unwrap();
    assert!(
        !moto
            .keys("weir-embedded")
            .iter()
            .any(|k| k.starts_with(&format!("runs/{name}/"))),
        "the File went by reference, no payload of the run is offloaded"
    );

    // A weir::DataFrame: Parquet in the bucket under raw/<hash>, read back whole and by a
    // projection by another child; `get io` shows where it is, its schema and first rows.
    let (ok, out, err) = fixture(&[
        "run",
        "frame_job",
        "--input",
        r#"{"rows": 25000}"#,
        "-o",
        "json",
    ]);
    assert!(ok, "{out}\n{err}");
    let v: serde_json::Value = serde_json::from_str(out.trim()).unwrap();
    let (frame, seen) = (&v["output"][0], &v["output"][1]);
    assert_eq!(
        seen,
        &serde_json::json!([25000, (0..25000i64).sum::<i64>(), 25000])
    );
    let hash = frame["weir_dataframe"].as_str().unwrap();
    let (_, size) = moto.head_object("weir-embedded", &format!("runs/raw/{hash}"));
    assert_eq!(frame["size"], size);
    let name = v["run"].as_str().unwrap();
    let (ok, io, err) = fixture(&["get", "io", name, "a0", "-o", "json"]);
    assert!(ok, "{err}");
    let io: serde_json::Value = serde_json::from_str(io.trim()).unwrap();
    let refs = io["references"].as_array().expect("references listed");
    let r = refs
        .iter()
        .find(|r| r["kind"] == "dataframe")
        .expect("the frame");
    assert_eq!(r["at"], "output[0]");
    assert_eq!(
        r["uri"],
        format!("s3://weir-embedded/runs/raw/{hash}").as_str()
    );
    assert_eq!(r["rows"], 25000);
    assert_eq!(r["columns"][1]["name"], "name");
    assert_eq!(r["head"][2], serde_json::json!(["2", "row2"]));
    let (ok, table, err) = fixture(&["get", "io", name, "a0"]);
    assert!(ok, "{err}");
    assert!(
        table.contains(&format!(
            "output[0]: dataframe s3://weir-embedded/runs/raw/{hash}"
        )) && table.contains("columns: id: Int64, name: Utf8")
            && table.contains("| 1 | row1 |"),
        "{table}"
    );

    // A weir::Dir: uploaded by one child, downloaded by another, the same files.
    let tree = tempfile::tempdir().unwrap();
    let input = format!(
        r#"{{"root": "{}", "files": 7, "size": 70000}}"#,
        tree.path().display()
    );
    let (ok, out, err) = fixture(&["run", "dir_job", "--input", &input, "-o", "json"]);
    assert!(ok, "{out}\n{err}");
    let v: serde_json::Value = serde_json::from_str(out.trim()).unwrap();
    let total: u64 = (0..7u64).map(|i| 70000 + i).sum();
    assert_eq!(v["output"], serde_json::json!([7, total]));
    for i in 0..7u64 {
        let rel = format!("d{}/f{i}.txt", i % 3);
        let a = std::fs::read(tree.path().join("src").join(&rel)).unwrap();
        let b = std::fs::read(tree.path().join("dst").join(&rel)).unwrap();
        assert!(a == b, "{rel}");
        let key = format!("runs/raw/{}", blake3::hash(&a).to_hex());
        assert!(moto.keys("weir-embedded").contains(&key), "{key}");
    }
}

/// `<len> <FNV-1a as 16 hex digits>` of `text`, as the fixture's `file_check` says it.
fn fnv_line(text: &str) -> String {
    let mut h: u64 = 0xcbf29ce484222325;
    for b in text.bytes().chain([0]) {
        h = (h ^ b as u64).wrapping_mul(0x100000001b3);
    }
    format!("{} {h:016x}", text.len())
}

/// Counter `name` of serve's `/metrics`.
fn metric(url: &str, token: &str, name: &str) -> u64 {
    let (status, body) = http_get(url, "/metrics", Some(token));
    assert!(status.contains("200"), "{status}: {body}");
    body.lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.trim().parse().ok())
        .unwrap_or_else(|| panic!("no {name} in {body}"))
}

/// Runs the fixture's `payload_job` on the control plane; its run name and output.
fn payload_job(cl: &Cluster, url: &str, seed: u64, size: usize) -> (String, String) {
    let input = format!(r#"{{"seed": {seed}, "size": {size}}}"#);
    let args = [
        "run",
        "payload_job",
        "--input",
        &input,
        "--server",
        url,
        "-o",
        "json",
    ];
    let (code, out, err) = cl.output(&args);
    assert_eq!(code, 0, "{}\n{err}", &out[..out.len().min(2000)]);
    let v: serde_json::Value = serde_json::from_str(out.trim()).unwrap();
    assert_eq!(v["status"], "succeeded");
    let output = v["output"].as_str().unwrap().to_string();
    (v["run"].as_str().unwrap().to_string(), output)
}

/// What `payload_job(seed, size)` returns (see the fixture).
fn payload_output(seed: u64, size: usize) -> String {
    let input = big_value(seed + 1, size);
    let mut h: u64 = 0xcbf29ce484222325;
    for b in input.bytes().chain([0]) {
        h = (h ^ b as u64).wrapping_mul(0x100000001b3);
    }
    format!("{} {h:016x}|{}", input.len(), big_value(seed, size))
}

/// One value of a query on the cluster's schema.
fn query(cl: &Cluster, sql: &str) -> String {
    let (url, sql) = (cl.database.clone(), sql.replace("SCHEMA", &cl.schema));
    std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async {
            let (client, conn) = tokio_postgres::connect(&url, tokio_postgres::NoTls)
                .await
                .unwrap();
            tokio::spawn(conn);
            let row = client
                .query_one(&format!("SELECT ({sql})::text"), &[])
                .await;
            row.unwrap_or_else(|e| panic!("{sql}: {e}"))
                .get::<_, String>(0)
        })
    })
    .join()
    .unwrap()
}

/// A POST of MessagePack with a bearer token: (status, body).
fn post(url: &str, path: &str, token: &str, body: &[u8]) -> (u16, Vec<u8>) {
    exchange(url, "POST", path, token, body)
}

/// A request with a bearer token: (status, body).
fn exchange(url: &str, method: &str, path: &str, token: &str, body: &[u8]) -> (u16, Vec<u8>) {
    use std::io::{Read, Write};
    let addr = url.trim_start_matches("http://");
    let mut s = std::net::TcpStream::connect(addr).unwrap();
    let head = format!(
        "{method} {path} HTTP/1.0\r\nHost: {addr}\r\nAuthorization: Bearer {token}\r\nContent-Type: application/msgpack\r\nContent-Length: {}\r\n\r\n",
        body.len()
    );
    s.write_all(head.as_bytes()).unwrap();
    s.write_all(body).unwrap();
    let mut reply = Vec::new();
    s.read_to_end(&mut reply).unwrap();
    let end = reply.windows(4).position(|w| w == b"\r\n\r\n").unwrap();
    let status = String::from_utf8_lossy(&reply[..end])
        .split(' ')
        .nth(1)
        .unwrap()
        .parse()
        .unwrap();
    (status, reply[end + 4..].to_vec())
}

/// A completion as a worker sends it, referring to an object it wrote.
#[derive(serde::Serialize)]
struct Completion {
    lease: u64,
    run: Option<i64>,
    attempt: u32,
    action: u64,
    outcome: Outcome,
}

#[derive(serde::Serialize)]
enum Outcome {
    Stored(PayloadRef),
}

#[derive(serde::Serialize)]
struct PayloadRef {
    key: String,
    size: u64,
    hash: String,
}

#[derive(serde::Serialize)]
struct CompleteBatch<'a> {
    worker: &'a str,
    completions: Vec<Completion>,
}

/// A child call as a worker submits it, its inputs in an object it wrote.
#[derive(serde::Serialize)]
struct ChildCall {
    call: u64,
    run: i64,
    parent: u64,
    id: u64,
    task: String,
    #[serde(with = "serde_bytes")]
    inputs: Vec<u8>,
    group: Option<String>,
    check_store: bool,
    inputs_ref: Option<PayloadRef>,
}

/// A trace checkpoint as a worker records it, its output in an object it wrote.
#[derive(serde::Serialize)]
struct TraceRecord<'a> {
    worker: &'a str,
    run: i64,
    id: u64,
    parent: u64,
    name: String,
    #[serde(with = "serde_bytes")]
    inputs: Vec<u8>,
    started_at: i64,
    outcome: Result<serde_bytes::ByteBuf, ()>,
    output_ref: Option<PayloadRef>,
}

#[derive(serde::Serialize)]
struct SubmitBatch<'a> {
    worker: &'a str,
    calls: Vec<ChildCall>,
}

#[derive(serde::Deserialize)]
struct CompleteReply {
    rejected: Vec<(u64, String)>,
}

#[derive(serde::Deserialize)]
struct ErrorReply {
    message: String,
}

#[test]
fn workers_read_and_write_large_payloads_in_s3_directly_and_keys_stay_in_their_prefix() {
    let Some(moto) = moto::Moto::start() else {
        return;
    };
    moto.create_bucket("weir-direct");
    let mut cl = Cluster::new();
    let url = serve_on(&mut cl, &moto, "s3://weir-direct/pfx");
    let token = cl.token();
    let size = 3 << 20;
    let proxied = |cl: &Cluster| metric(&url, &cl.token(), "weir_payload_bytes_proxied_total");
    let direct = |cl: &Cluster| metric(&url, &cl.token(), "weir_payload_bytes_direct_total");
    let worker_args = ["worker", "--server", &url, "--env", "fxf"];

    // Before: a worker whose AWS_* settings reach no S3 server says so once and has every
    // payload go through the control plane: a 3 MiB child input (in the call and in the
    // child's lease), a 3 MiB child output (in its completion and in the parent's results)
    // and a 3 MiB output.
    let unreachable = cl.log("worker-unreachable");
    let mut env = moto.env();
    env.retain(|(k, _)| k != "AWS_ENDPOINT_URL");
    env.push(("AWS_ENDPOINT_URL".into(), "http://127.0.0.1:9".into()));
    let child = cl
        .command(&worker_args, &unreachable)
        .envs(env)
        .spawn()
        .unwrap();
    cl.others.push(child);
    let (_, output) = payload_job(&cl, &url, 1, size);
    assert!(output == payload_output(1, size), "wrong output");
    // A weir::File needs the store itself (its bytes never go through serve): refused, saying so.
    let (code, out, err) = cl.output(&[
        "run",
        "file_job",
        "--input",
        r#"{"seed": 1, "size": 10}"#,
        "--server",
        &url,
    ]);
    assert_ne!(code, 0, "{out}");
    assert!(
        err.contains("cannot reach the object store itself"),
        "{err}"
    );
    let before = proxied(&cl);
    assert!(before >= 5 * size as u64, "proxied {before}");
    assert_eq!(direct(&cl), 0);
    let text = std::fs::read_to_string(&unreachable).unwrap();
    let said = "cannot use the control plane's object store s3://weir-direct/pfx directly";
    assert_eq!(text.matches(said).count(), 1, "{text}");
    eprintln!("{}", text.lines().find(|l| l.contains(said)).unwrap());
    let mut gone = cl.others.pop().unwrap();
    gone.kill().unwrap();
    gone.wait().unwrap();

    // A worker that reaches the bucket writes and reads them there itself: the control plane
    // carries references (a few hundred bytes of small payloads), not the bytes; the parent
    // gets its child's output as a reference too.
    let reaching = cl.log("worker-direct");
    let child = cl
        .command(&worker_args, &reaching)
        .envs(moto.env())
        .spawn()
        .unwrap();
    cl.others.push(child);
    let (run, output) = payload_job(&cl, &url, 2, size);
    assert!(output == payload_output(2, size), "wrong output");
    let carried = proxied(&cl) - before;
    let referenced = direct(&cl);
    eprintln!(
        "payload bytes proxied: {before} through the control plane, {carried} with direct access ({referenced} direct)"
    );
    assert!(carried < 4096, "proxied {carried} bytes");
    assert!(referenced >= 5 * size as u64, "direct {referenced}");
    assert!(!std::fs::read_to_string(&reaching).unwrap().contains(said));
    // The objects, under the run's prefix: the child's inputs, and the outputs of the root
    // and of the other child under their leases.
    let keys: Vec<String> = moto
        .keys("weir-direct")
        .into_iter()
        .filter(|k| k.starts_with(&format!("pfx/{run}/")))
        .collect();
    assert_eq!(keys.len(), 3, "{keys:?}");
    assert_eq!(
        keys.iter().filter(|k| k.ends_with("/outputs")).count(),
        2,
        "{keys:?}"
    );
    let output_key = keys
        .iter()
        .find(|k| k.starts_with(&format!("pfx/{run}/a0/1/")) && k.ends_with("/outputs"))
        .unwrap_or_else(|| panic!("{keys:?}"));
    assert_eq!(output_key.split('/').count(), 6, "{output_key}");
    assert!(keys.iter().any(|k| k.ends_with("/inputs")), "{keys:?}");
    // `get io` reads the output the worker wrote, through the control plane.
    let get_io = ["get", "io", &run, "a0", "--server", &url, "-o", "json"];
    let (code, io, err) = cl.output(&get_io);
    assert_eq!(code, 0, "{err}");
    let io: serde_json::Value = serde_json::from_str(io.trim()).unwrap();
    assert!(io["output"] == output.as_str(), "get io differs");

    // A trace's 3 MiB output is recorded by reference and read back by reference by the
    // retry of the task that made it (the trace runs once).
    let carried_before = proxied(&cl);
    let trace_log = cl.dir.path().join("trace.log");
    let input = format!(
        r#"{{"seed": 5, "size": {size}, "log": "{}", "marker": "{}"}}"#,
        trace_log.display(),
        cl.dir.path().join("trace.marker").display()
    );
    let args = [
        "run",
        "payload_retried",
        "--input",
        &input,
        "--server",
        &url,
        "-o",
        "json",
    ];
    let (code, out, err) = cl.output(&args);
    assert_eq!(code, 0, "{out}\n{err}");
    let v: serde_json::Value = serde_json::from_str(out.trim()).unwrap();
    let made = big_value(5, size);
    let mut h: u64 = 0xcbf29ce484222325;
    for b in made.bytes().chain([0]) {
        h = (h ^ b as u64).wrapping_mul(0x100000001b3);
    }
    assert_eq!(v["output"], format!("{} {h:016x}", made.len()));
    let ran = std::fs::read_to_string(&trace_log).unwrap();
    assert_eq!(
        ran.lines().filter(|l| *l == "payload_trace 5").count(),
        1,
        "{ran}"
    );
    let carried = proxied(&cl) - carried_before;
    eprintln!("a 3 MiB trace recorded and read back: {carried} bytes through the control plane");
    assert!(carried < 4096, "proxied {carried} bytes");
    let trace_run = v["run"].as_str().unwrap();
    let trace_keys: Vec<String> = moto
        .keys("weir-direct")
        .into_iter()
        .filter(|k| k.starts_with(&format!("pfx/{trace_run}/")) && k.ends_with("/outputs"))
        .collect();
    assert_eq!(trace_keys.len(), 1, "{trace_keys:?}");

    // A weir::File made by a task on the worker and read by its child on the worker: the
    // bytes go between the worker and S3 only.
    let carried_before = proxied(&cl);
    let input = format!(r#"{{"seed": 21, "size": {size}}}"#);
    let args = [
        "run", "file_job", "--input", &input, "--server", &url, "-o", "json",
    ];
    let (code, out, err) = cl.output(&args);
    assert_eq!(code, 0, "{out}\n{err}");
    let v: serde_json::Value = serde_json::from_str(out.trim()).unwrap();
    let made = big_value(21, size);
    let hash = blake3::hash(made.as_bytes()).to_hex().to_string();
    assert_eq!(v["output"], format!("{hash} {}", fnv_line(&made)).as_str());
    assert!(
        moto.keys("weir-direct")
            .contains(&format!("pfx/raw/{hash}"))
    );
    let carried = proxied(&cl) - carried_before;
    assert!(
        carried < 4096,
        "a 3 MiB File carried {carried} bytes through serve"
    );

    // The cached child, called again with the same 3 MiB inputs in another run: the control
    // plane reads them from the bucket for the cache key and answers from the cache.
    let (_, again) = payload_job(&cl, &url, 2, size);
    assert!(again == output, "wrong output");
    assert!(proxied(&cl) - before < 8192);

    // Hand-made completions of the worker (its token derives from the cluster token) naming
    // objects outside their prefix, or objects not as said: refused, nothing recorded.
    let worker = query(
        &cl,
        "SELECT id FROM SCHEMA.workers ORDER BY registered_at DESC LIMIT 1",
    );
    let key = blake3::derive_key("weir cluster worker token v1", token.as_bytes());
    let worker_token = format!(
        "{worker}.{}",
        blake3::keyed_hash(&key, worker.as_bytes()).to_hex()
    );
    let run_id: i64 = query(
        &cl,
        &format!("SELECT id FROM SCHEMA.runs WHERE name = '{run}'"),
    )
    .parse()
    .unwrap();
    let forged = rmp_serde::to_vec("forged").unwrap();
    let hash = blake3::hash(&forged).to_hex().to_string();
    let lease = 999_999;
    let complete = |key: String, size: u64| {
        let batch = CompleteBatch {
            worker: &worker,
            completions: vec![Completion {
                lease,
                run: Some(run_id),
                attempt: 1,
                action: 0,
                outcome: Outcome::Stored(PayloadRef {
                    key,
                    size,
                    hash: hash.clone(),
                }),
            }],
        };
        post(
            &url,
            "/v1/complete",
            &worker_token,
            &rmp_serde::to_vec_named(&batch).unwrap(),
        )
    };
    let message = |body: &[u8]| rmp_serde::from_slice::<ErrorReply>(body).unwrap().message;
    let n = forged.len() as u64;
    let other = output_key.strip_prefix("pfx/").unwrap().to_string();
    let first_run = query(&cl, "SELECT name FROM SCHEMA.runs ORDER BY id LIMIT 1");
    let completed = metric(&url, &token, "weir_completed_total");
    let rejected = metric(&url, &token, "weir_rejected_completions_total");
    for (key, status, says) in [
        // The current output of the action: another lease's key.
        (other, 403, "outside its prefix"),
        // Another run's, another action's.
        (
            format!("{first_run}/a0/1/{lease}/outputs"),
            403,
            "outside its prefix",
        ),
        (
            format!("{run}/a1/1/{lease}/outputs"),
            403,
            "outside its prefix",
        ),
        // Out of the prefix with `..`, or with an empty segment.
        (
            format!("{run}/a0/1/{lease}/../../../../{first_run}/a0/1/outputs"),
            400,
            "'..'",
        ),
        (format!("{run}/a0/1//{lease}/outputs"), 400, "'..'"),
        // Its own key, with no object under it.
        (format!("{run}/a0/1/{lease}/outputs"), 400, "missing"),
    ] {
        let (got, body) = complete(key.clone(), n);
        let m = message(&body);
        assert_eq!(got, status, "{key}: {m}");
        assert!(m.contains(says), "{key}: {m}");
    }
    // An object of another size than its reference says.
    let own = format!("{run}/a0/1/{lease}/outputs");
    moto.put_object("weir-direct", &format!("pfx/{own}"), &forged);
    let (got, body) = complete(own.clone(), n + 1);
    assert_eq!(got, 400);
    assert!(
        message(&body).contains(&format!("is {n} bytes")),
        "{}",
        message(&body)
    );
    // All in order, but the lease is not current: fenced off, the object left unrecorded.
    let (got, body) = complete(own, n);
    assert_eq!(got, 200, "{}", String::from_utf8_lossy(&body));
    let reply: CompleteReply = rmp_serde::from_slice(&body).unwrap();
    assert_eq!(reply.rejected.len(), 1);
    assert!(
        reply.rejected[0].1.contains("not current"),
        "{:?}",
        reply.rejected
    );
    assert_eq!(metric(&url, &token, "weir_completed_total"), completed);
    assert_eq!(
        metric(&url, &token, "weir_rejected_completions_total"),
        rejected + 1
    );
    let (code, io, err) = cl.output(&get_io);
    assert_eq!(code, 0, "{err}");
    let io: serde_json::Value = serde_json::from_str(io.trim()).unwrap();
    assert!(
        io["output"] == output.as_str(),
        "the recorded output changed"
    );

    // Child calls of an attempt the worker holds, with inputs outside the child's key: refused
    // before anything is admitted.
    let gate = cl.state().join("gate");
    let input = format!(r#"{{"gate": "{}"}}"#, gate.display());
    let (mut holding, log) = cl.client(&[
        "run",
        "payload_hold",
        "--input",
        &input,
        "--server",
        &url,
        "--name",
        "holding",
    ]);
    let mut held = String::new();
    wait_for("payload_hold to be leased", || {
        held = query(
            &cl,
            "SELECT coalesce((SELECT q.run::text FROM SCHEMA.queue q JOIN SCHEMA.runs r ON r.id = q.run WHERE r.name = 'holding' AND q.lease IS NOT NULL), '')",
        );
        !held.is_empty()
    });
    let held: i64 = held.parse().unwrap();
    let actions = query(&cl, "SELECT count(*) FROM SCHEMA.actions");
    let child = 0x1234_5678_u64;
    let submit = |key: String| {
        let batch = SubmitBatch {
            worker: &worker,
            calls: vec![ChildCall {
                call: 1,
                run: held,
                parent: 0,
                id: child,
                task: "fxf.payload_digest".into(),
                inputs: vec![],
                group: None,
                check_store: false,
                inputs_ref: Some(PayloadRef {
                    key,
                    size: n,
                    hash: hash.clone(),
                }),
            }],
        };
        post(
            &url,
            "/v1/submit",
            &worker_token,
            &rmp_serde::to_vec_named(&batch).unwrap(),
        )
    };
    let child_key = format!("holding/{}/inputs", weir::ActionId(child));
    for (key, status, says) in [
        (
            format!("{run}/{}/inputs", weir::ActionId(child)),
            403,
            "outside its prefix",
        ),
        ("holding/a0/inputs".to_string(), 403, "outside its prefix"),
        (format!("holding/../{run}/a0/inputs"), 400, "'..'"),
        (child_key, 400, "missing"),
    ] {
        let (got, body) = submit(key.clone());
        let m = message(&body);
        assert_eq!(got, status, "{key}: {m}");
        assert!(m.contains(says), "{key}: {m}");
    }
    assert_eq!(query(&cl, "SELECT count(*) FROM SCHEMA.actions"), actions);

    // Trace checkpoints of that attempt, their output under another key than the trace's own
    // under the attempt's lease: refused, nothing recorded.
    let holding_lease: u64 = query(
        &cl,
        &format!("SELECT lease FROM SCHEMA.queue WHERE run = {held} AND action = 0"),
    )
    .parse()
    .unwrap();
    let trace = 0x2345_6789_u64;
    let t = weir::ActionId(trace);
    let record = |key: String| {
        let msg = TraceRecord {
            worker: &worker,
            run: held,
            id: trace,
            parent: 0,
            name: "payload_trace".into(),
            inputs: rmp_serde::to_vec(&(1u64,)).unwrap(),
            started_at: 0,
            outcome: Ok(serde_bytes::ByteBuf::new()),
            output_ref: Some(PayloadRef {
                key,
                size: n,
                hash: hash.clone(),
            }),
        };
        post(
            &url,
            "/v1/trace/record",
            &worker_token,
            &rmp_serde::to_vec_named(&msg).unwrap(),
        )
    };
    for (key, status, says) in [
        (
            format!("holding/{t}/1/{}/outputs", holding_lease + 1),
            403,
            "outside its prefix",
        ),
        (
            format!("{run}/{t}/1/{holding_lease}/outputs"),
            403,
            "outside its prefix",
        ),
        (
            format!("holding/{t}/1/{holding_lease}/../../../a0/1/outputs"),
            400,
            "'..'",
        ),
        (
            format!("holding/{t}/1/{holding_lease}/outputs"),
            400,
            "missing",
        ),
    ] {
        let (got, body) = record(key.clone());
        let m = message(&body);
        assert_eq!(got, status, "{key}: {m}");
        assert!(m.contains(says), "{key}: {m}");
    }
    assert_eq!(query(&cl, "SELECT count(*) FROM SCHEMA.actions"), actions);
    std::fs::write(&gate, "").unwrap();
    let (code, text) = finish(&mut holding, &log);
    assert_eq!(code, 0, "{text}");
}
