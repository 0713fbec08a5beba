//! `serve --tls-cert/--tls-key` with real processes: a certificate the test makes (rcgen),
//! workers and clients reaching `https://` through `WEIR_TLS_CA`, refusals when the
//! certificate is not trusted or the files are wrong, and the warning for a non-loopback
//! address without TLS.

mod support;

use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::Command;

use support::{BIN, Cluster};
use weir_tests::wait_for;

/// A self-signed certificate for `localhost` and 127.0.0.1: (cert.pem, key.pem).
fn certificate(dir: &Path) -> (PathBuf, PathBuf) {
    let made =
        rcgen::generate_simple_self_signed(vec!["localhost".into(), "127.0.0.1".into()]).unwrap();
    let cert = dir.join("cert.pem");
    let key = dir.join("key.pem");
    std::fs::write(&cert, made.cert.pem()).unwrap();
    std::fs::write(&key, made.signing_key.serialize_pem()).unwrap();
    (cert, key)
}

/// Runs the fixture binary with extra environment: (exit code, stdout, stderr).
fn run_with(cl: &Cluster, env: &[(&str, &str)], args: &[&str]) -> (i32, String, String) {
    let mut c = Command::new(BIN);
    c.arg("--state-dir").arg(cl.state()).args(args);
    for (k, v) in env {
        c.env(k, v);
    }
    let out = c.output().unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn workers_and_clients_reach_a_tls_control_plane_that_trusts_its_certificate() {
    let mut cl = Cluster::new();
    let (cert, key) = certificate(cl.state());
    let (cert_s, key_s) = (cert.to_str().unwrap(), key.to_str().unwrap());
    let url = cl.serve(&["--tls-cert", cert_s, "--tls-key", key_s]);
    assert!(url.starts_with("https://127.0.0.1:"), "{url}");
    let log = cl.log("worker");
    let worker = cl
        .command(
            &[
                "worker",
                "--server",
                &url,
                "--env",
                "fx",
                "--concurrency",
                "4",
            ],
            &log,
        )
        .env("WEIR_TLS_CA", &cert)
        .spawn()
        .unwrap();
    cl.others.push(worker);
    let trusted = [("WEIR_TLS_CA", cert_s)];
    let (code, out, err) = run_with(
        &cl,
        &trusted,
        &[
            "run",
            "add",
            "--input",
            r#"{"a": 20, "b": 22}"#,
            "--server",
            &url,
        ],
    );
    assert_eq!((code, out.trim()), (0, "42"), "{err}");
    let (code, out, err) = run_with(
        &cl,
        &trusted,
        &["get", "runs", "--server", &url, "-o", "json"],
    );
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("succeeded"), "{out}");

    // Without the certificate among its roots the client refuses the server, and says why.
    let (code, _, err) = run_with(&cl, &[], &["get", "runs", "--server", &url]);
    assert_ne!(code, 0);
    assert!(err.contains("certificate"), "{err}");
    assert!(err.contains("UnknownIssuer"), "{err}");
    // A CA file that is not there is named, not skipped.
    let missing = cl.state().join("missing.pem");
    let (code, _, err) = run_with(
        &cl,
        &[("WEIR_TLS_CA", missing.to_str().unwrap())],
        &["get", "runs", "--server", &url],
    );
    assert_ne!(code, 0);
    assert!(err.contains("missing.pem"), "{err}");
    // Plain HTTP on the TLS port gets no answer.
    let addr = url.trim_start_matches("https://");
    let mut s = std::net::TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(std::time::Duration::from_secs(20)))
        .unwrap();
    // The server may drop the connection before the request is all written (a broken pipe).
    let _ = write!(s, "GET /v1/runs HTTP/1.0\r\nHost: {addr}\r\n\r\n");
    let mut bytes = Vec::new();
    let _ = s.read_to_end(&mut bytes);
    assert!(
        !String::from_utf8_lossy(&bytes).contains("HTTP/1"),
        "plain HTTP was answered"
    );
    // The worker's output says nothing of a refused handshake: it ran over TLS.
    let text = std::fs::read_to_string(&log).unwrap();
    assert!(!text.contains("certificate"), "{text}");
}

#[test]
fn serve_refuses_bad_tls_files_and_warns_without_tls_off_loopback() {
    let mut cl = Cluster::new();
    let (cert, key) = certificate(cl.state());
    let (cert_s, key_s) = (cert.to_str().unwrap(), key.to_str().unwrap());
    let db = cl.database.clone();
    let schema = cl.schema.clone();
    let serve = |extra: &[&str]| {
        let mut args = vec!["serve", "--database", &db, "--schema", &schema];
        args.extend_from_slice(extra);
        run_with(&cl, &[], &args)
    };
    let (code, _, err) = serve(&["--listen", "127.0.0.1:0", "--tls-cert", cert_s]);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("--tls-key"), "{err}");
    let (code, _, err) = serve(&[
        "--listen",
        "127.0.0.1:0",
        "--tls-cert",
        key_s,
        "--tls-key",
        key_s,
    ]);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("key.pem holds no PEM certificate"), "{err}");
    let (code, _, err) = serve(&[
        "--listen",
        "127.0.0.1:0",
        "--tls-cert",
        cert_s,
        "--tls-key",
        cert_s,
    ]);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("cannot read a private key from"), "{err}");

    // Off loopback without TLS: a warning; with TLS: none.
    let warned = |extra: &[&str], cl: &mut Cluster| {
        let log = cl.log("serve");
        let mut args = vec!["serve", "--database", &db, "--schema", &schema];
        args.extend_from_slice(extra);
        let child = cl.command(&args, &log).spawn().unwrap();
        cl.others.push(child);
        wait_for("serve listening", || {
            std::fs::read_to_string(&log)
                .unwrap_or_default()
                .contains("web UI at")
        });
        std::fs::read_to_string(&log).unwrap().contains("warning")
    };
    assert!(warned(&["--listen", "0.0.0.0:0"], &mut cl));
    assert!(!warned(
        &[
            "--listen",
            "0.0.0.0:0",
            "--tls-cert",
            cert_s,
            "--tls-key",
            key_s
        ],
        &mut cl
    ));
    assert!(!warned(&["--listen", "127.0.0.1:0"], &mut cl));
}
