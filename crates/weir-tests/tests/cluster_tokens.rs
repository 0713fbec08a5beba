//! Access tokens of cluster mode (SPEC §12.3) with real processes on PostgreSQL: tokens made
//! by `token create` for two projects; each project's workers lease only its actions; a
//! client token of project B is refused (403) on every route that touches project A's runs,
//! sees none of them in lists and none of A's cache entries; roles are kept apart; a revoked
//! token stops working.

mod support;

use std::io::{Read, Write};
use std::process::Command;

use support::{BIN, Cluster, count, finish, http_get};
use weir_tests::wait_for;

/// Runs the fixture binary with `WEIR_TOKEN=token`: (exit code, stdout, stderr).
fn with_token(cl: &Cluster, token: &str, args: &[&str]) -> (i32, String, String) {
    let out = Command::new(BIN)
        .arg("--state-dir")
        .arg(cl.state())
        .args(args)
        .env("WEIR_TOKEN", token)
        .output()
        .unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// `token create`: the token printed on stdout.
fn create(cl: &Cluster, project: &str, role: &str) -> String {
    let (code, out, err) = cl.output(&[
        "token",
        "create",
        "--database",
        &cl.database,
        "--schema",
        &cl.schema,
        "--project",
        project,
        "--role",
        role,
    ]);
    assert_eq!(code, 0, "{err}");
    assert!(err.contains("shown only now"), "{err}");
    let token = out.trim().to_string();
    assert!(token.starts_with("weir_") && token.len() == 69, "{token}");
    token
}

/// A plain HTTP/1.0 request with a body; (status line, body).
fn http(url: &str, method: &str, path: &str, token: &str) -> (String, String) {
    let addr = url.trim_start_matches("http://");
    let mut s = std::net::TcpStream::connect(addr).unwrap();
    write!(
        s,
        "{method} {path} HTTP/1.0\r\nHost: {addr}\r\nAuthorization: Bearer {token}\r\nContent-Length: 0\r\n\r\n"
    )
    .unwrap();
    let mut bytes = Vec::new();
    s.read_to_end(&mut bytes).unwrap();
    let text = String::from_utf8_lossy(&bytes).into_owned();
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    (
        head.lines().next().unwrap_or("").to_string(),
        body.to_string(),
    )
}

/// Starts a worker of `env` presenting `token`; its log.
fn worker(cl: &mut Cluster, url: &str, token: &str) -> std::path::PathBuf {
    let log = cl.log("worker");
    let args = [
        "worker",
        "--server",
        url,
        "--env",
        "fx",
        "--concurrency",
        "4",
    ];
    let child = cl
        .command(&args, &log)
        .env("WEIR_TOKEN", token)
        .spawn()
        .unwrap();
    cl.others.push(child);
    log
}

#[test]
fn project_tokens_keep_projects_apart_on_every_route() {
    let mut cl = Cluster::new();
    let url = cl.serve(&[]);
    let a_client = create(&cl, "a", "client");
    let a_worker = create(&cl, "a", "worker");
    let b_client = create(&cl, "b", "client");
    let b_worker = create(&cl, "b", "worker");
    let log = cl.state().join("runs.log");
    let fanout = format!(
        r#"{{"n": 3, "width": 3, "sleep_ms": 1, "log": "{}"}}"#,
        log.display()
    );

    // Only project b's worker runs: a's run waits, b's worker never leases its actions.
    let b_log = worker(&mut cl, &url, &b_worker);
    let a_run = "tok-a-1";
    let args = [
        "run", "fanout", "--input", &fanout, "--server", &url, "--name", a_run,
    ];
    let mut a_client_run = cl.command(&args, &cl.state().join("a-run.log"));
    let mut a_child = a_client_run.env("WEIR_TOKEN", &a_client).spawn().unwrap();
    wait_for("a's run to be listed", || {
        let (code, out, _) = with_token(&cl, &a_client, &["get", "runs", "--server", &url]);
        code == 0 && out.contains(a_run)
    });
    let (code, shown, err) = with_token(
        &cl,
        &a_client,
        &["get", "runs", "--server", &url, "-o", "json"],
    );
    assert_eq!(code, 0, "{err}");
    assert!(
        shown.contains("waiting for workers"),
        "a's run waits for a worker of project a: {shown}"
    );
    std::thread::sleep(std::time::Duration::from_millis(1500));
    assert_eq!(count(&log, "start 0"), 0, "b's worker ran a's action");
    // Project a's worker takes it.
    let a_log = worker(&mut cl, &url, &a_worker);
    let (code, out) = finish(&mut a_child, &cl.state().join("a-run.log"));
    assert_eq!(code, 0, "{out}");
    assert!(out.lines().any(|l| l == "6"), "{out}");
    assert!(count(&log, "parent done") == 1);
    // A run of project b on b's worker, by b's client.
    let (code, out, err) = with_token(
        &cl,
        &b_client,
        &[
            "run", "fanout", "--input", &fanout, "--server", &url, "--name", "tok-b-1",
        ],
    );
    assert_eq!((code, out.trim()), (0, "6"), "{err}");
    drop((a_log, b_log));

    // Every route with a's run and b's client token: 403, naming the project.
    let routes = [
        ("GET", format!("/v1/runs/{a_run}")),
        ("GET", format!("/v1/runs/{a_run}?wait_ms=10")),
        ("POST", format!("/v1/runs/{a_run}/abort")),
        ("GET", format!("/v1/runs/{a_run}/actions")),
        ("GET", format!("/v1/runs/{a_run}/actions?with_io=1")),
        ("GET", format!("/v1/runs/{a_run}/actions/a0")),
        ("GET", format!("/v1/runs/{a_run}/actions/a0/logs")),
    ];
    for (method, path) in &routes {
        let (status, body) = http(&url, method, path, &b_client);
        assert!(status.contains("403"), "{method} {path}: {status}");
        assert!(
            body.contains("belongs to project a"),
            "{method} {path}: {body}"
        );
        // a's own client may (an abort of the ended run is a conflict, not a refusal).
        let (status, _) = http(&url, method, path, &a_client);
        let want = if *method == "POST" { "409" } else { "200" };
        assert!(
            status.contains(want),
            "{method} {path} with a's token: {status}"
        );
    }
    // The CLI says the same and exits non-zero.
    for args in [
        vec!["get", "actions", a_run],
        vec!["get", "io", a_run, "a0"],
        vec!["get", "logs", a_run, "a0"],
        vec!["abort", a_run],
        vec!["rerun", a_run],
    ] {
        let mut args = args.clone();
        args.extend(["--server", &url]);
        let (code, _, err) = with_token(&cl, &b_client, &args);
        assert_ne!(code, 0, "{args:?}");
        assert!(
            err.contains("belongs to project a") && err.contains("403"),
            "{args:?}: {err}"
        );
    }
    // b cannot start a run in project a.
    let (code, _, err) = with_token(
        &cl,
        &b_client,
        &[
            "run",
            "add",
            "--input",
            r#"{"a": 1, "b": 2}"#,
            "--server",
            &url,
            "--project",
            "a",
        ],
    );
    assert_ne!(code, 0);
    assert!(
        err.contains("cannot start a run in project a") && err.contains("403"),
        "{err}"
    );
    // Lists show each project its own runs only.
    let (_, b_runs) = http_get(&url, "/v1/runs", Some(&b_client));
    let (code, b_list, err) = with_token(
        &cl,
        &b_client,
        &["get", "runs", "--server", &url, "-o", "json"],
    );
    assert_eq!(code, 0, "{err}");
    assert!(
        b_list.contains("tok-b-1") && !b_list.contains(a_run),
        "{b_list}"
    );
    assert!(!b_runs.contains(a_run));
    let (_, a_list, _) = with_token(
        &cl,
        &a_client,
        &["get", "runs", "--server", &url, "-o", "json"],
    );
    assert!(
        a_list.contains(a_run) && !a_list.contains("tok-b-1"),
        "{a_list}"
    );
    // The cluster token sees both.
    let (_, all, _) = with_token(
        &cl,
        &cl.token(),
        &["get", "runs", "--server", &url, "-o", "json"],
    );
    assert!(all.contains(a_run) && all.contains("tok-b-1"), "{all}");

    // The cache: a's entry is not b's to see or to hit.
    let cache_log = cl.state().join("cache.log");
    let cached = format!(r#"{{"a": 2, "b": 3, "log": "{}"}}"#, cache_log.display());
    let call = |token: &str| {
        let (code, out, err) = with_token(
            &cl,
            token,
            &["run", "call_cached", "--input", &cached, "--server", &url],
        );
        assert_eq!((code, out.trim()), (0, "5"), "{err}");
    };
    call(&a_client);
    call(&a_client);
    assert_eq!(count(&cache_log, "cached_add"), 1, "a's second run hit");
    call(&b_client);
    assert_eq!(
        count(&cache_log, "cached_add"),
        2,
        "b's run did not take a's entry"
    );
    let entries = |token: &str| {
        let (code, out, err) = with_token(
            &cl,
            token,
            &["cache", "list", "--server", &url, "-o", "json"],
        );
        assert_eq!(code, 0, "{err}");
        let v: serde_json::Value = serde_json::from_str(out.trim()).unwrap();
        v.as_array()
            .unwrap()
            .iter()
            .map(|e| e["project"].as_str().unwrap().to_string())
            .collect::<Vec<_>>()
    };
    assert_eq!(entries(&a_client), ["a"]);
    assert_eq!(entries(&b_client), ["b"]);

    // What needs the cluster token: metrics, clearing the cache.
    let (status, body) = http_get(&url, "/metrics", Some(&a_client));
    assert!(status.contains("403"), "{status}");
    assert!(body.contains("needs the cluster token"), "{body}");
    let (code, _, err) = with_token(&cl, &a_client, &["cache", "clear", "--server", &url]);
    assert_ne!(code, 0);
    assert!(err.contains("needs the cluster token"), "{err}");
    assert_eq!(entries(&a_client), ["a"], "nothing was cleared");

    // The web UI shows every project: a project's token is refused (403), none is 401.
    let (status, body) = http_get(&url, "/ui/api/runs", Some(&a_client));
    assert!(status.contains("403"), "{status}");
    assert!(body.contains("needs the cluster token"), "{body}");
    assert!(!body.contains(a_run), "{body}");
    let (status, _) = http_get(&url, &format!("/ui/login?token={a_client}"), None);
    assert!(status.contains("403"), "{status}");
    let (status, _) = http_get(&url, "/ui/api/runs", Some("weir_0000"));
    assert!(status.contains("401"), "{status}");
    let (status, body) = http_get(&url, "/ui/api/runs", Some(&cl.token()));
    assert!(status.contains("200") && body.contains(a_run), "{status}");

    // Roles: a worker token is no client, a client token registers no worker.
    let (status, body) = http(&url, "GET", "/v1/runs", &a_worker);
    assert!(status.contains("403"), "{status}");
    assert!(body.contains("needs a client or admin token"), "{body}");
    let reg_log = cl.log("worker");
    let mut refused = cl
        .command(
            &[
                "worker",
                "--server",
                &url,
                "--env",
                "fx",
                "--concurrency",
                "1",
            ],
            &reg_log,
        )
        .env("WEIR_TOKEN", &b_client)
        .spawn()
        .unwrap();
    let (code, text) = finish(&mut refused, &reg_log);
    assert_ne!(code, 0, "{text}");
    assert!(
        text.contains("registering a worker needs a worker or admin token"),
        "{text}"
    );
    // No token, or one nobody made: 401.
    let (status, _) = http_get(&url, &format!("/v1/runs/{a_run}"), None);
    assert!(status.contains("401"), "{status}");
    let (status, _) = http(&url, "GET", "/v1/runs", "weir_0000");
    assert!(status.contains("401"), "{status}");

    // Revoked: refused (401) within the 2 s a replica trusts what it resolved.
    let (code, listed, err) = cl.output(&[
        "token",
        "list",
        "--database",
        &cl.database,
        "--schema",
        &cl.schema,
        "-o",
        "json",
    ]);
    assert_eq!(code, 0, "{err}");
    let listed: serde_json::Value = serde_json::from_str(listed.trim()).unwrap();
    assert_eq!(listed.as_array().unwrap().len(), 4, "{listed}");
    assert!(
        !listed.to_string().contains(&b_client),
        "a token is never listed"
    );
    let b_id = listed
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["project"] == "b" && t["role"] == "client")
        .unwrap()["id"]
        .as_str()
        .unwrap()
        .to_string();
    let (code, _, err) = cl.output(&[
        "token",
        "revoke",
        &b_id,
        "--database",
        &cl.database,
        "--schema",
        &cl.schema,
    ]);
    assert_eq!(code, 0, "{err}");
    wait_for("the revoked token to be refused", || {
        http_get(&url, "/v1/runs", Some(&b_client))
            .0
            .contains("401")
    });
    let (status, _) = http_get(&url, "/v1/runs", Some(&a_client));
    assert!(status.contains("200"), "{status}");
}

#[test]
fn token_commands_refuse_bad_input_with_a_clear_error() {
    let cl = Cluster::new();
    let db = cl.database.clone();
    let base = ["--database", &db, "--schema", &cl.schema];
    let run = |extra: &[&str]| {
        let mut args = vec!["token"];
        args.extend_from_slice(&extra[..1]);
        args.extend(base);
        args.extend_from_slice(&extra[1..]);
        cl.output(&args)
    };
    let (code, _, err) = run(&["create", "--project", "a/b", "--role", "client"]);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("bad project name \"a/b\""), "{err}");
    let (code, _, err) = run(&[
        "create",
        "--project",
        "a",
        "--domain",
        "",
        "--role",
        "client",
    ]);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("bad domain name"), "{err}");
    let (code, _, err) = run(&["create", "--project", "a", "--role", "root"]);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("invalid value 'root'"), "{err}");
    let (code, _, err) = run(&["revoke", "abc"]);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("at least 8 hex digits"), "{err}");
    let (code, _, err) = run(&["revoke", "0123456789ab"]);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("no token with id 0123456789ab"), "{err}");
}
