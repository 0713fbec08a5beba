//! OpenTelemetry export (the `otel` feature of the weir crate, see `weir/src/cli/telemetry.rs`).
//!
//! Without the feature (the default build, `cargo test --workspace`): a binary told to export
//! says that it cannot. With it (`cargo test -p weir-tests --features otel --test otel`, run by
//! `.ci/run`): a run of the fixture exports its actions' spans to an OTLP/HTTP receiver this test
//! runs (a plain HTTP server on a real socket, reading what the exporter posts).

use std::process::Command;

const BIN: &str = env!("CARGO_BIN_EXE_fixture");

#[cfg(not(feature = "otel"))]
#[test]
fn a_binary_without_the_feature_says_that_spans_are_not_exported() {
    let dir = tempfile::tempdir().unwrap();
    let o = Command::new(BIN)
        .arg("--state-dir")
        .arg(dir.path().join("state"))
        .args(["run", "add", "--input", r#"{"a": 1, "b": 2}"#])
        .env("OTEL_EXPORTER_OTLP_ENDPOINT", "http://127.0.0.1:9")
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(o.status.success(), "{err}");
    assert_eq!(String::from_utf8_lossy(&o.stdout).trim(), "3");
    assert!(
        err.contains("OTEL_EXPORTER_OTLP_ENDPOINT is set, but this binary was built without the `otel` feature"),
        "{err}"
    );
}

#[cfg(feature = "otel")]
mod exported {
    use std::io::{BufRead, BufReader, Read, Write};
    use std::net::{TcpListener, TcpStream};
    use std::sync::{Arc, Mutex};

    use super::*;

    /// Answers every request on `stream` with 200 and keeps the bodies posted to `/v1/traces`.
    fn serve_connection(stream: TcpStream, bodies: Arc<Mutex<Vec<Vec<u8>>>>) {
        let mut reader = BufReader::new(stream.try_clone().unwrap());
        let mut out = stream;
        loop {
            let mut request = String::new();
            if reader.read_line(&mut request).unwrap_or(0) == 0 {
                return;
            }
            let mut length = 0usize;
            loop {
                let mut line = String::new();
                if reader.read_line(&mut line).unwrap_or(0) == 0 {
                    return;
                }
                let line = line.trim_end();
                if line.is_empty() {
                    break;
                }
                if let Some((k, v)) = line.split_once(':')
                    && k.eq_ignore_ascii_case("content-length")
                {
                    length = v.trim().parse().unwrap();
                }
            }
            let mut body = vec![0; length];
            if reader.read_exact(&mut body).is_err() {
                return;
            }
            if request.starts_with("POST /v1/traces ") {
                bodies.lock().unwrap().push(body);
            }
            let reply =
                "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: 2\r\n\r\n{}";
            if out.write_all(reply.as_bytes()).is_err() {
                return;
            }
        }
    }

    /// A string attribute of an OTLP/JSON span.
    fn attribute<'a>(span: &'a serde_json::Value, key: &str) -> Option<&'a str> {
        span["attributes"]
            .as_array()?
            .iter()
            .find(|a| a["key"] == key)?["value"]["stringValue"]
            .as_str()
    }

    #[test]
    fn a_run_exports_its_actions_spans_with_run_and_action_ids() {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let received = Arc::new(Mutex::new(Vec::<Vec<u8>>::new()));
        let kept = received.clone();
        std::thread::spawn(move || {
            for stream in listener.incoming().flatten() {
                let kept = kept.clone();
                std::thread::spawn(move || serve_connection(stream, kept));
            }
        });
        let dir = tempfile::tempdir().unwrap();
        let o = Command::new(BIN)
            .arg("--state-dir")
            .arg(dir.path().join("state"))
            .args([
                "run",
                "traced",
                "--input",
                r#"{"n": 7}"#,
                "--name",
                "otel-1",
            ])
            .env("OTEL_EXPORTER_OTLP_ENDPOINT", format!("http://{addr}"))
            .env("OTEL_EXPORTER_OTLP_PROTOCOL", "http/json")
            .env("OTEL_SERVICE_NAME", "weir-otel-test")
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&o.stderr);
        assert!(o.status.success(), "{err}");
        assert_eq!(String::from_utf8_lossy(&o.stdout).trim(), "7");
        // Flushed before the process exited: the bodies are all here.
        let bodies = received.lock().unwrap().clone();
        assert!(!bodies.is_empty(), "nothing exported; stderr: {err}");
        let mut spans = Vec::new();
        let mut services = Vec::new();
        for body in &bodies {
            let v: serde_json::Value = serde_json::from_slice(body).unwrap();
            for rs in v["resourceSpans"].as_array().unwrap() {
                services.extend(attribute(&rs["resource"], "service.name").map(String::from));
                for ss in rs["scopeSpans"].as_array().unwrap() {
                    spans.extend(ss["spans"].as_array().unwrap().iter().cloned());
                }
            }
        }
        assert!(
            services.iter().all(|s| s == "weir-otel-test"),
            "{services:?}"
        );
        let action = spans
            .iter()
            .find(|s| s["name"] == "action" && attribute(s, "action") == Some("a0"))
            .unwrap_or_else(|| panic!("no span of action a0 in {spans:#?}"));
        assert_eq!(attribute(action, "run"), Some("otel-1"));
        assert_eq!(attribute(action, "task"), Some("fx.traced"));
        // What the task logged is an event of its action's span.
        let events = action["events"].as_array().cloned().unwrap_or_default();
        assert!(
            events.iter().any(|e| e["name"] == "traced task says hello"),
            "{events:#?}"
        );
        // Nothing of the exporter's own HTTP requests.
        assert!(
            spans.iter().all(|s| s["name"] == "action"),
            "{:?}",
            spans.iter().map(|s| &s["name"]).collect::<Vec<_>>()
        );

        // The default protocol, protobuf: the run's and task's names are in what is posted.
        let before = bodies.len();
        let run = |name: &str, protocol: Option<&str>| {
            let mut c = Command::new(BIN);
            c.arg("--state-dir")
                .arg(dir.path().join("state"))
                .args(["run", "traced", "--input", r#"{"n": 8}"#, "--name", name])
                .env("OTEL_EXPORTER_OTLP_ENDPOINT", format!("http://{addr}"));
            if let Some(p) = protocol {
                c.env("OTEL_EXPORTER_OTLP_PROTOCOL", p);
            }
            c.output().unwrap()
        };
        let o = run("otel-2", None);
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
        let posted = received.lock().unwrap().clone();
        let contains = |hay: &[u8], needle: &[u8]| hay.windows(needle.len()).any(|w| w == needle);
        assert!(
            posted[before..]
                .iter()
                .any(|b| contains(b, b"otel-2") && contains(b, b"fx.traced")),
            "{} bodies posted",
            posted.len() - before
        );
        assert!(
            posted[before..]
                .iter()
                .all(|b| serde_json::from_slice::<serde_json::Value>(b).is_err()),
            "the default protocol is protobuf, not JSON"
        );
        // gRPC is not built in: refused with a warning, the run goes on, nothing is sent.
        let o = run("otel-3", Some("grpc"));
        let err = String::from_utf8_lossy(&o.stderr);
        assert!(o.status.success(), "{err}");
        assert!(
            err.contains(
                "spans are not exported: OTEL_EXPORTER_OTLP_PROTOCOL=\"grpc\" is not supported"
            ),
            "{err}"
        );
        let posted = received.lock().unwrap().clone();
        assert!(!posted.iter().any(|b| contains(b, b"otel-3")));
    }
}
