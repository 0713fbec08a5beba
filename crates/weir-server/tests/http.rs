//! The server over real HTTP on a real listener: requests for another `Host` are refused, an
//! action whose input is ~9.5 MB is shown as a bounded preview read from a prefix of the
//! payload, action views over the cap are answered 503, and a view whose client goes stops.

use std::net::SocketAddr;
use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, LazyLock, OnceLock};
use std::time::Duration;

use futures::future::BoxFuture;
use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::{Semaphore, watch};
use weir::prelude::*;
use weir_server::{Options, PayloadProbe};

static ENV: LazyLock<TaskEnvironment> = LazyLock::new(|| TaskEnvironment::new("t"));

/// Elements of the large input: 9 bytes each in MessagePack, ~9.5 MB in all (under the 10 MiB
/// inline-I/O limit of a task).
const ELEMENTS: u64 = 1_050_000;
/// Elements of an input that is offloaded (over 64 KiB) but read whole for its preview (its JSON
/// is still over 64 KiB: a preview).
const SMALL: u64 = 10_000;

#[weir::task(env = ENV)]
async fn inspect(data: Vec<u64>) -> Result<u64> {
    Ok(data.len() as u64)
}

static STATE: OnceLock<tempfile::TempDir> = OnceLock::new();

/// A state directory with runs `intact` and `corrupt`, each a root action whose input is
/// [`ELEMENTS`] numbers from 2^32 up, and `small`, whose input is [`SMALL`] of them.
fn state() -> &'static Path {
    STATE
        .get_or_init(|| {
            std::thread::spawn(|| {
                let rt = tokio::runtime::Runtime::new().unwrap();
                rt.block_on(async {
                    let dir = tempfile::tempdir().unwrap();
                    let runner = weir::Runner::embedded(dir.path()).await.unwrap();
                    for (name, n) in [
                        ("intact", ELEMENTS),
                        ("corrupt", ELEMENTS),
                        ("small", SMALL),
                    ] {
                        let data: Vec<u64> = (1..=n).map(|i| i << 32).collect();
                        let got = runner
                            .with_context(RunContext::new().name(name))
                            .run(inspect(data))
                            .await
                            .unwrap()
                            .wait()
                            .await
                            .unwrap();
                        assert_eq!(got, n);
                    }
                    runner.engine().flush().unwrap();
                    dir
                })
            })
            .join()
            .unwrap()
        })
        .path()
}

/// Serves the state on a free port of 127.0.0.1; returns the address.
async fn serve(options: Option<Options>) -> SocketAddr {
    let state = state();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        match options {
            Some(o) => weir_server::serve_with(listener, state, o).await,
            None => weir_server::serve_on(listener, state).await,
        }
        .unwrap()
    });
    addr
}

struct Reply {
    status: u16,
    headers: String,
    body: Value,
    size: usize,
}

/// Sends `raw` (a whole HTTP/1 request) and reads the reply until the server closes.
async fn exchange(addr: SocketAddr, raw: String) -> Reply {
    let mut conn = TcpStream::connect(addr).await.unwrap();
    conn.write_all(raw.as_bytes()).await.unwrap();
    let mut bytes = Vec::new();
    conn.read_to_end(&mut bytes).await.unwrap();
    let split = bytes
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .expect("a header block");
    let headers = String::from_utf8_lossy(&bytes[..split]).to_ascii_lowercase();
    assert!(!headers.contains("transfer-encoding: chunked"), "{headers}");
    let status = headers[9..12].parse().unwrap();
    let body = &bytes[split + 4..];
    Reply {
        status,
        body: serde_json::from_slice(body)
            .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(body).into_owned())),
        size: body.len(),
        headers,
    }
}

async fn get(addr: SocketAddr, host: &str, path: &str) -> Reply {
    exchange(
        addr,
        format!("GET {path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n"),
    )
    .await
}

/// The largest an action view may be: two previews of 64 KiB of JSON text, escaped, and the
/// rest of the action.
const MAX_VIEW: usize = 256 * 1024;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_large_input_is_previewed_from_a_bounded_prefix() {
    let addr = serve(None).await;
    let host = addr.to_string();
    let r = get(addr, &host, "/api/runs/intact/actions/a0").await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert!(r.size < MAX_VIEW, "{} bytes", r.size);
    let inputs = &r.body["inputs"];
    let offloaded = inputs["offloaded"].as_str().expect("offloaded");
    let blob = state().join("blobs").join(offloaded);
    let size = std::fs::metadata(&blob).unwrap().len();
    assert!(size > 9_000_000, "{size}");
    assert_eq!(inputs["size"], size, "the full size");
    assert_eq!(inputs["truncated"], true);
    let preview = inputs["preview"].as_str().unwrap();
    assert!(
        preview.starts_with("{\"data\":[4294967296,8589934592,"),
        "{}",
        &preview[..100]
    );
    assert!(
        preview.len() <= 64 * 1024 + '…'.len_utf8(),
        "{}",
        preview.len()
    );
    assert_eq!(r.body["output"]["value"], ELEMENTS);

    // Only a prefix is read and decoded: garbage (0xc1 is never valid MessagePack) from 1 MiB
    // to the end of the other run's payload is never looked at.
    let r = get(addr, &host, "/api/runs/corrupt/actions/a0").await;
    let blob = state()
        .join("blobs")
        .join(r.body["inputs"]["offloaded"].as_str().unwrap());
    let mut bytes = std::fs::read(&blob).unwrap();
    bytes[1 << 20..].fill(0xc1);
    std::fs::write(&blob, &bytes).unwrap();
    let r = get(addr, &host, "/api/runs/corrupt/actions/a0").await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert!(r.size < MAX_VIEW, "{} bytes", r.size);
    let inputs = &r.body["inputs"];
    assert_eq!(inputs["note"], Value::Null, "{}", inputs["note"]);
    assert_eq!(inputs["truncated"], true);
    assert_eq!(inputs["size"], size);
    assert_eq!(inputs["preview"].as_str().unwrap(), preview);
    assert_eq!(inputs["hash_checked"], false, "a prefix is not checked");
    // ... but its size is
    std::fs::write(&blob, &bytes[..2 << 20]).unwrap();
    let r = get(addr, &host, "/api/runs/corrupt/actions/a0").await;
    assert_eq!(r.status, 200, "{}", r.body);
    let note = r.body["inputs"]["note"].as_str().unwrap();
    assert!(
        note.contains("is corrupt") && note.contains("found 2097152 bytes"),
        "{note}"
    );

    // An offloaded payload small enough to read whole is checked against its hash.
    let r = get(addr, &host, "/api/runs/small/actions/a0").await;
    assert_eq!(r.status, 200, "{}", r.body);
    let inputs = &r.body["inputs"];
    assert!(
        inputs["preview"]
            .as_str()
            .unwrap()
            .starts_with("{\"data\":[4294967296,")
    );
    assert_eq!(inputs["hash_checked"], true);
    let blob = state()
        .join("blobs")
        .join(inputs["offloaded"].as_str().unwrap());
    let mut bytes = std::fs::read(&blob).unwrap();
    bytes[5000] ^= 1;
    std::fs::write(&blob, &bytes).unwrap();
    let r = get(addr, &host, "/api/runs/small/actions/a0").await;
    let note = r.body["inputs"]["note"].as_str().unwrap();
    assert!(
        note.contains("is corrupt") && note.contains("blake3"),
        "{note}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requests_for_another_host_are_refused_before_any_handler() {
    let addr = serve(None).await;
    let port = addr.port();
    for host in [
        "evil.example".to_string(),
        format!("evil.example:{port}"),
        format!("127.0.0.1:{}", port ^ 1),
        format!("localhost.evil.example:{port}"),
        "127.0.0.1".to_string(),
    ] {
        for path in [
            "/api/runs",
            "/api/runs/intact/actions/a0",
            "/",
            "/api/nothing",
        ] {
            let r = get(addr, &host, path).await;
            assert_eq!(r.status, 421, "{host} {path}: {}", r.body);
            let message = r.body["error"].as_str().unwrap();
            assert!(
                message.contains(&format!("{host:?} is not this server"))
                    && message.contains(&format!("127.0.0.1:{port}"))
                    && message.contains("DNS rebinding"),
                "{message}"
            );
        }
    }
    // no Host at all (HTTP/1.0 allows it)
    let r = exchange(addr, "GET /api/runs HTTP/1.0\r\n\r\n".into()).await;
    assert_eq!(r.status, 421, "{}", r.body);
    assert!(r.body["error"].as_str().unwrap().contains("no Host header"));
    // two Host headers
    let r = exchange(
        addr,
        format!("GET /api/runs HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nHost: evil.example\r\nConnection: close\r\n\r\n"),
    )
    .await;
    assert!(r.status == 421 || r.status == 400, "{}", r.body);

    for host in [
        format!("127.0.0.1:{port}"),
        format!("localhost:{port}"),
        format!("LocalHost:{port}"),
        format!("[::1]:{port}"),
    ] {
        let r = get(addr, &host, "/api/runs").await;
        assert_eq!(r.status, 200, "{host}: {}", r.body);
        assert_eq!(r.body["total"], 3);
    }
}

/// Counts the action views inside the cap, and holds them until [`Probe::open`].
struct Probe {
    inside: watch::Sender<usize>,
    peak: AtomicUsize,
    gate: Arc<Semaphore>,
}

impl Probe {
    fn new() -> Arc<Probe> {
        Arc::new(Probe {
            inside: watch::channel(0).0,
            peak: AtomicUsize::new(0),
            gate: Arc::new(Semaphore::new(0)),
        })
    }
    /// Waits until exactly `n` views are inside.
    async fn until_inside(&self, n: usize) {
        let mut rx = self.inside.subscribe();
        tokio::time::timeout(Duration::from_secs(120), rx.wait_for(|&i| i == n))
            .await
            .unwrap_or_else(|_| panic!("never {n} views inside (hang guard)"))
            .unwrap();
    }
    fn open(&self) {
        self.gate.add_permits(Semaphore::MAX_PERMITS / 2);
    }
}

impl PayloadProbe for Probe {
    fn enter(&self) -> BoxFuture<'static, ()> {
        self.inside.send_modify(|i| {
            *i += 1;
            self.peak.fetch_max(*i, Ordering::SeqCst);
        });
        let gate = self.gate.clone();
        Box::pin(async move {
            drop(gate.acquire().await.unwrap());
        })
    }
    fn exit(&self) {
        self.inside.send_modify(|i| *i -= 1);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn action_views_over_the_cap_are_answered_503() {
    let probe = Probe::new();
    let (reads, waiting, extra) = (2, 3, 5);
    let addr = serve(Some(Options {
        payload_reads: reads,
        payload_waiting: waiting,
        payload_probe: Some(probe.clone()),
    }))
    .await;
    let host = addr.to_string();
    let mut views = tokio::task::JoinSet::new();
    for _ in 0..reads + waiting + extra {
        let host = host.clone();
        views.spawn(async move { get(addr, &host, "/api/runs/intact/actions/a0").await });
    }
    // Admitted views are held inside the probe until it opens, so the first replies are the
    // refusals, exactly those over the cap.
    for _ in 0..extra {
        let r = views.join_next().await.unwrap().unwrap();
        assert_eq!(r.status, 503, "{}", r.body);
        let message = r.body["error"].as_str().unwrap();
        assert!(
            message.contains("too many action views at once"),
            "{message}"
        );
        assert!(r.headers.contains("retry-after: 1"), "{}", r.headers);
    }
    probe.until_inside(reads).await;
    probe.open();
    let mut served = 0;
    while let Some(r) = views.join_next().await {
        let r = r.unwrap();
        assert_eq!(r.status, 200, "{}", r.body);
        assert_eq!(r.body["inputs"]["truncated"], true);
        served += 1;
    }
    assert_eq!(served, reads + waiting);
    assert_eq!(
        probe.peak.load(Ordering::SeqCst),
        reads,
        "at most {reads} read at once"
    );
    probe.until_inside(0).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_action_view_stops_when_its_client_goes() {
    let probe = Probe::new();
    let addr = serve(Some(Options {
        payload_reads: 1,
        payload_waiting: 0,
        payload_probe: Some(probe.clone()),
    }))
    .await;
    let host = addr.to_string();
    let mut conn = TcpStream::connect(addr).await.unwrap();
    conn.write_all(
        format!("GET /api/runs/intact/actions/a0 HTTP/1.1\r\nHost: {host}\r\n\r\n").as_bytes(),
    )
    .await
    .unwrap();
    probe.until_inside(1).await;
    // The only permit is held: another view is refused.
    let r = get(addr, &host, "/api/runs/intact/actions/a0").await;
    assert_eq!(r.status, 503, "{}", r.body);
    // The client goes; the server drops the view and gives its permit back.
    drop(conn);
    probe.until_inside(0).await;
    probe.open();
    let r = get(addr, &host, "/api/runs/intact/actions/a0").await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(probe.peak.load(Ordering::SeqCst), 1);
}
