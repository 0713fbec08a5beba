//! The web UI served by `weir serve` (under `/ui/`, reading PostgreSQL): it shows a cluster run
//! exactly as `weir ui` shows the same run made by the embedded engine, and every route of it
//! needs the cluster token (the bearer header, or the session cookie `/ui/login` sets).

mod support;

use std::io::{Read, Write};

use serde_json::Value;
use support::*;
use weir_tests::wait_for;

/// An HTTP/1.0 response: status code, headers (lower-case names) and body.
struct Response {
    status: u16,
    headers: Vec<(String, String)>,
    body: String,
}

impl Response {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }

    fn json(&self) -> Value {
        serde_json::from_str(&self.body).unwrap_or_else(|e| panic!("{e}: {}", self.body))
    }
}

/// One request over a fresh connection.
fn request(url: &str, method: &str, path: &str, headers: &[(&str, &str)], body: &str) -> Response {
    let addr = url.trim_start_matches("http://");
    let mut s = std::net::TcpStream::connect(addr).unwrap();
    let mut head = format!("{method} {path} HTTP/1.0\r\nHost: {addr}\r\n");
    for (name, value) in headers {
        head.push_str(&format!("{name}: {value}\r\n"));
    }
    if !body.is_empty() {
        head.push_str(&format!("Content-Length: {}\r\n", body.len()));
    }
    write!(s, "{head}\r\n{body}").unwrap();
    let mut bytes = Vec::new();
    s.read_to_end(&mut bytes).unwrap();
    let text = String::from_utf8_lossy(&bytes).into_owned();
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    let mut lines = head.lines();
    let status = lines.next().unwrap_or("").split_whitespace().nth(1);
    Response {
        status: status.and_then(|s| s.parse().ok()).unwrap_or(0),
        headers: lines
            .filter_map(|l| l.split_once(':'))
            .map(|(n, v)| (n.trim().to_ascii_lowercase(), v.trim().to_string()))
            .collect(),
        body: body.to_string(),
    }
}

fn get(url: &str, path: &str, headers: &[(&str, &str)]) -> Response {
    request(url, "GET", path, headers, "")
}

/// `doc` without what differs between two runs of the same work: times, durations, `seq`, the
/// order in which concurrent children were created (rows are compared by id), and in the run's
/// context where it ran (`executor`, and the code version a cluster run records).
fn comparable(doc: &Value) -> Value {
    const VOLATILE: [&str; 12] = [
        "created_at",
        "ended_at",
        "queued_at",
        "started_at",
        "duration_us",
        "queue_us",
        "run_us",
        "seq",
        "max_seq",
        "first_seq",
        "now",
        "overhead",
    ];
    match doc {
        Value::Object(m) => Value::Object(
            m.iter()
                // Where attempts' logs are kept differs (cluster workers send theirs; the embedded
                // engine's workers write files): the log fields are compared in cluster_logs.rs.
                .filter(|(k, _)| {
                    !["executor", "cluster_version", "logs", "logs_note"].contains(&k.as_str())
                })
                .map(|(k, v)| match (VOLATILE.contains(&k.as_str()), v) {
                    (true, v) => (k.clone(), Value::from(v.is_null())),
                    (false, Value::Array(rows)) if k == "actions" => {
                        let mut rows: Vec<Value> = rows.iter().map(comparable).collect();
                        rows.sort_by_key(|r| r["id"].as_str().map(str::to_string));
                        (k.clone(), Value::Array(rows))
                    }
                    (false, v) => (k.clone(), comparable(v)),
                })
                .collect(),
        ),
        Value::Array(a) => Value::Array(a.iter().map(comparable).collect()),
        v => v.clone(),
    }
}

/// The pages of the UI's API that show one run, from `base` (`/api` or `/ui/api`).
fn pages_of_run(url: &str, base: &str, run: &str, auth: &[(&str, &str)]) -> Vec<(String, Value)> {
    let mut pages = Vec::new();
    let mut fetch = |path: String| {
        let res = get(url, &format!("{base}{path}"), auth);
        assert_eq!(res.status, 200, "{base}{path}: {}", res.body);
        let doc = res.json();
        pages.push((path, doc.clone()));
        doc
    };
    fetch(format!("/runs?name={run}"));
    fetch(format!("/runs/{run}"));
    let children = fetch(format!("/runs/{run}/actions/a0/children"));
    let groups = children["groups"].as_array().unwrap().clone();
    assert_eq!(groups.len(), 1, "{children}");
    let group = groups[0]["group"].as_str().unwrap();
    let members = fetch(format!("/runs/{run}/actions/a0/groups/{group}?limit=500"));
    // The root, a member of the group (an offloaded output), the ungrouped calls.
    let mut ids = vec!["a0".to_string()];
    let members = members["actions"].as_array().unwrap();
    ids.extend(
        members
            .iter()
            .filter_map(|m| m["id"].as_str())
            .min()
            .map(str::to_string),
    );
    for a in children["actions"].as_array().unwrap() {
        ids.push(a["id"].as_str().unwrap().to_string());
    }
    for id in ids {
        fetch(format!("/runs/{run}/actions/{id}"));
    }
    pages
}

#[test]
fn serve_shows_cluster_runs_in_the_ui_as_the_embedded_ui_does_and_only_with_the_token() {
    let mut cl = Cluster::new();
    let url = cl.serve(&[]);
    let token = cl.token();
    let serve_log = std::fs::read_to_string(cl.state().join("serve-1.log")).unwrap();
    assert!(
        serve_log.contains(&format!("web UI at {url}/ui/")),
        "{serve_log}"
    );
    assert!(!serve_log.contains(&token), "serve printed the token");
    cl.worker(&url, "fxf", "4");

    // The same fan-out (6 children in a group, traces and a cached call around them, outputs
    // of 100 000 bytes: offloaded) on the cluster and embedded.
    let log = cl.state().join("work.log");
    let input = format!(
        r#"{{"n": 6, "width": 3, "size": 100000, "log": "{}"}}"#,
        log.display()
    );
    let run = "fanned";
    let (code, out, err) = cl.output(&[
        "run",
        "fault_job",
        "--name",
        run,
        "--input",
        &input,
        "--server",
        &url,
        "-o",
        "json",
    ]);
    assert_eq!(code, 0, "{out}\n{err}");
    let (code, embedded, err) = cl.output(&[
        "run",
        "fault_job",
        "--name",
        run,
        "--input",
        &input,
        "-o",
        "json",
    ]);
    assert_eq!(code, 0, "{embedded}\n{err}");
    let cluster_out: Value = serde_json::from_str(out.trim()).unwrap();
    let embedded_out: Value = serde_json::from_str(embedded.trim()).unwrap();
    assert_eq!(cluster_out["output"], embedded_out["output"]);

    // `weir ui` on the embedded state.
    let ui_log = cl.log("ui");
    let ui = cl.command(&["ui", "--port", "0"], &ui_log).spawn().unwrap();
    cl.others.push(ui);
    let mut ui_url = String::new();
    wait_for("weir ui listening", || {
        let text = std::fs::read_to_string(&ui_log).unwrap_or_default();
        // Only a whole line: the line may be read while it is being written.
        match text
            .split("weir ui: ")
            .nth(1)
            .filter(|rest| rest.contains('\n'))
        {
            Some(rest) => {
                ui_url = rest.split('/').take(3).collect::<Vec<_>>().join("/");
                true
            }
            None => false,
        }
    });

    // Every page of the run reads the same on both (times aside).
    let bearer = format!("Bearer {token}");
    let served = pages_of_run(&url, "/ui/api", run, &[("Authorization", &bearer)]);
    let local = pages_of_run(&ui_url, "/api", run, &[]);
    assert_eq!(served.len(), local.len());
    for ((path, s), (_, l)) in served.iter().zip(&local) {
        assert_eq!(
            comparable(s),
            comparable(l),
            "{path}:\nserve {s}\nweir ui {l}"
        );
    }
    // ...and shows what the run did: the group's counts, an offloaded output read from the
    // cluster's object store, the ungrouped trace and cached calls.
    let page = |p: &str| &served.iter().find(|(path, _)| path == p).unwrap().1;
    let detail = page(&format!("/runs/{run}"));
    assert_eq!(detail["status"], "succeeded", "{detail}");
    assert_eq!(detail["counts"]["succeeded"], 10, "{detail}");
    let children = page(&format!("/runs/{run}/actions/a0/children"));
    assert_eq!(children["groups"][0]["total"], 6, "{children}");
    assert_eq!(children["ungrouped"], 3, "{children}");
    let member = served
        .iter()
        .find(|(_, d)| {
            d["output"].is_object()
                && d["task"]
                    .as_str()
                    .is_some_and(|t| t.ends_with("fault_child"))
        })
        .map(|(_, d)| d)
        .unwrap();
    assert!(
        member["output"]["size"].as_u64().unwrap() >= 100_000,
        "{member}"
    );
    assert!(member["output"]["offloaded"].is_string(), "{member}");
    assert_eq!(member["output"]["hash_checked"], true, "{member}");
    // 100 000 characters: more than a preview shows.
    assert_eq!(member["output"]["truncated"], true, "{member}");
    assert!(
        member["output"]["preview"]
            .as_str()
            .unwrap()
            .starts_with("\"0000")
    );

    // Without the token: 401, JSON for the API, a page saying how to log in otherwise.
    let refused = get(&url, "/ui/api/runs", &[]);
    assert_eq!(refused.status, 401, "{}", refused.body);
    assert!(
        refused.json()["error"]
            .as_str()
            .unwrap()
            .contains("/ui/login")
    );
    let refused = get(&url, "/ui/", &[]);
    assert_eq!(refused.status, 401);
    assert!(
        refused.body.contains("action=\"/ui/login\""),
        "{}",
        refused.body
    );
    for path in [
        "/ui",
        "/ui/assets/app.js",
        "/ui/api/runs/fanned/actions/a0",
        "/ui/nope",
    ] {
        assert_eq!(get(&url, path, &[]).status, 401, "{path}");
    }
    // A wrong token or a forged cookie: 401.
    let wrong = [("Authorization", "Bearer wrong")];
    assert_eq!(get(&url, "/ui/api/runs", &wrong).status, 401);
    let forged = [("Cookie", "weir_ui_session=00")];
    assert_eq!(get(&url, "/ui/api/runs", &forged).status, 401);
    assert_eq!(get(&url, "/ui/login?token=wrong", &[]).status, 401);
    let form = [("Content-Type", "application/x-www-form-urlencoded")];
    assert_eq!(
        request(&url, "POST", "/ui/login", &form, "token=wrong").status,
        401
    );

    // Logging in: the form sets a session cookie (not the token) and sends the browser to the
    // UI; the cookie opens the pages and the API.
    let login = request(&url, "POST", "/ui/login", &form, &format!("token={token}"));
    assert_eq!(login.status, 303, "{}", login.body);
    assert_eq!(login.header("location"), Some("/ui/"));
    let cookie = login.header("set-cookie").unwrap().to_string();
    for attribute in ["HttpOnly", "SameSite=Strict", "Path=/ui"] {
        assert!(cookie.contains(attribute), "{cookie}");
    }
    assert!(!cookie.contains(&token), "{cookie}");
    let session = cookie.split(';').next().unwrap().to_string();
    let with_cookie = [("Cookie", session.as_str())];
    let page = get(&url, "/ui/", &with_cookie);
    assert_eq!(page.status, 200);
    assert!(page.body.contains("src=\"assets/app.js\""), "{}", page.body);
    assert_eq!(get(&url, "/ui/assets/app.js", &with_cookie).status, 200);
    let runs = get(&url, "/ui/api/runs", &with_cookie);
    assert_eq!(runs.status, 200, "{}", runs.body);
    assert_eq!(runs.json()["runs"][0]["name"], run);
    let moved = get(&url, "/ui", &with_cookie);
    assert_eq!(moved.status, 308);
    assert_eq!(moved.header("location"), Some("/ui/"));
    // A login link does the same; other cookies alongside are fine.
    let link = get(&url, &format!("/ui/login?token={token}"), &[]);
    assert_eq!(link.status, 303);
    assert_eq!(link.header("set-cookie").unwrap(), cookie);
    let several = format!("theme=dark; {session}");
    assert_eq!(
        get(&url, "/ui/api/runs", &[("Cookie", several.as_str())]).status,
        200
    );
    // The cookie is not the cluster token: the control plane's own routes refuse it.
    assert_eq!(get(&url, "/v1/runs", &with_cookie).status, 401);
    assert_eq!(
        get(&url, "/metrics", &[("Authorization", &bearer)]).status,
        200
    );
}
