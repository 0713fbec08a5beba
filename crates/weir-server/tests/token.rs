//! The UI mounted under a path and behind a token (`token_router`, what `weir serve` does) over
//! a read model given to it: its pages and API answer under the path only with the token or
//! the session cookie of `/login`, and an offloaded payload is read from the object store the
//! read model's settings name.

use std::sync::{Arc, LazyLock};

use axum::Router;
use axum::body::Body;
use axum::http::{Request, StatusCode, header};
use http_body_util::BodyExt;
use serde_json::Value;
use tower::ServiceExt;
use weir::prelude::*;

static ENV: LazyLock<TaskEnvironment> = LazyLock::new(|| TaskEnvironment::new("t"));

#[weir::task(env = ENV)]
async fn measure(data: Vec<u64>) -> Result<u64> {
    Ok(data.len() as u64)
}

const TOKEN: &str = "the cluster token";

/// A state with one run whose input is offloaded, and the token router over its read model.
async fn app() -> (tempfile::TempDir, Router) {
    let dir = tempfile::tempdir().unwrap();
    let runner = weir::Runner::embedded(dir.path()).await.unwrap();
    let data: Vec<u64> = (0..10_000).map(|i| i << 33).collect();
    let out = runner
        .with_context(RunContext::new().name("one"))
        .run(measure(data))
        .await
        .unwrap()
        .wait()
        .await
        .unwrap();
    assert_eq!(out, 10_000);
    // As `serve` does: the object store is recorded in the state (an embedded state records
    // one only when it is not `<state-dir>/blobs`).
    let blobs = format!("file://{}", dir.path().join("blobs").display());
    let store = runner.engine().store();
    store
        .set_setting(weir_blob::BLOB_URL_SETTING, &blobs)
        .await
        .unwrap();
    runner.engine().flush().unwrap();
    let reads = Arc::new(weir_store::UiReader::open(dir.path()).unwrap());
    let router = weir_server::token_router(reads, TOKEN, "/ui", weir_server::Options::default());
    (dir, router)
}

/// `method uri` with `headers`: status, headers, body text.
async fn send(
    app: &Router,
    method: &str,
    uri: &str,
    headers: &[(header::HeaderName, &str)],
    body: &str,
) -> (StatusCode, axum::http::HeaderMap, String) {
    let mut req = Request::builder().method(method).uri(uri);
    for (name, value) in headers {
        req = req.header(name, *value);
    }
    let res = app
        .clone()
        .oneshot(req.body(Body::from(body.to_string())).unwrap())
        .await
        .unwrap();
    let (parts, body) = res.into_parts();
    let bytes = body.collect().await.unwrap().to_bytes();
    (
        parts.status,
        parts.headers,
        String::from_utf8_lossy(&bytes).into_owned(),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_mounted_ui_needs_the_token_or_its_session_cookie() {
    let (_dir, app) = app().await;
    // Nothing without credentials: JSON for the API, a login page otherwise.
    let (status, _, body) = send(&app, "GET", "/ui/api/runs", &[], "").await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    let error: Value = serde_json::from_str(&body).unwrap();
    assert!(
        error["error"].as_str().unwrap().contains("/ui/login"),
        "{body}"
    );
    let (status, _, body) = send(&app, "GET", "/ui/", &[], "").await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert!(
        body.contains("<form method=\"post\" action=\"/ui/login\">"),
        "{body}"
    );
    let wrong = [(header::AUTHORIZATION, "Bearer nope")];
    let (status, _, _) = send(&app, "GET", "/ui/api/runs", &wrong, "").await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    // Nothing is served outside the mount.
    let bearer = format!("Bearer {TOKEN}");
    let auth = [(header::AUTHORIZATION, bearer.as_str())];
    let (status, _, _) = send(&app, "GET", "/api/runs", &auth, "").await;
    assert_eq!(status, StatusCode::NOT_FOUND);

    // The token as a bearer header: the API, with an offloaded input read from the object
    // store recorded in the state.
    let (status, _, body) = send(&app, "GET", "/ui/api/runs/one/actions/a0", &auth, "").await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let detail: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(detail["output"]["value"], 10_000, "{detail}");
    assert!(detail["inputs"]["offloaded"].is_string(), "{detail}");
    assert_eq!(detail["inputs"]["hash_checked"], true, "{detail}");
    let (status, _, body) = send(&app, "GET", "/ui/api/nope", &auth, "").await;
    assert_eq!(status, StatusCode::NOT_FOUND, "{body}");

    // The login form: a cookie that is not the token, accepted on pages and the API.
    let form = [(header::CONTENT_TYPE, "application/x-www-form-urlencoded")];
    let (status, _, _) = send(&app, "POST", "/ui/login", &form, "token=nope").await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    let body = format!("token={}", TOKEN.replace(' ', "+"));
    let (status, headers, _) = send(&app, "POST", "/ui/login", &form, &body).await;
    assert_eq!(status, StatusCode::SEE_OTHER);
    assert_eq!(headers[header::LOCATION], "/ui/");
    let cookie = headers[header::SET_COOKIE].to_str().unwrap().to_string();
    assert!(
        cookie.contains("; Path=/ui; HttpOnly; SameSite=Strict"),
        "{cookie}"
    );
    assert!(!cookie.contains("cluster"), "{cookie}");
    let session = cookie.split(';').next().unwrap();
    let with_cookie = [(header::COOKIE, session)];
    let (status, _, body) = send(&app, "GET", "/ui/", &with_cookie, "").await;
    assert_eq!(status, StatusCode::OK);
    assert!(body.contains("<script src=\"assets/app.js\">"), "{body}");
    let (status, _, body) = send(&app, "GET", "/ui/api/runs", &with_cookie, "").await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let runs: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(runs["runs"][0]["name"], "one");
    // The login link sets the same cookie.
    let (status, headers, _) = send(
        &app,
        "GET",
        "/ui/login?token=the%20cluster%20token",
        &[],
        "",
    )
    .await;
    assert_eq!(status, StatusCode::SEE_OTHER);
    assert_eq!(headers[header::SET_COOKIE].to_str().unwrap(), cookie);
}
