//! Authentication of the UI when it is served on a network (`weir serve`): every route needs
//! the cluster token, as every other route of the control plane does.
//!
//! A browser cannot send `Authorization: Bearer TOKEN` on a page load, so the token is
//! presented once, at `BASE/login` (a form, or `?token=` for a link), and exchanged for a
//! session cookie: `HttpOnly` (scripts cannot read it), `SameSite=Strict` (other sites' pages
//! cannot make the browser send it), `Path=BASE`. The cookie holds a key derived from the token
//! (blake3 `derive_key`), not the token: someone who reads it can browse the UI but cannot act
//! as a client or a worker. Every replica started with the same token accepts it, and changing
//! the token ends every session. Scripts and tests may send the bearer header instead.
//!
//! Why no `Host` check (which `weir ui` has, against DNS rebinding): `serve` listens on
//! addresses other machines reach under names of their own, so no list of names can be known.
//! A page of another site that rebinds its name to this server gets nothing without the token:
//! the browser sends the cookie only to the name it was set for, never to the attacker's.

use std::sync::Arc;

use axum::Form;
use axum::extract::{Query, Request, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::middleware::Next;
use axum::response::{Html, IntoResponse, Redirect, Response};
use serde::Deserialize;
use serde_json::json;

/// Name of the session cookie.
const COOKIE: &str = "weir_ui_session";

/// Whether a token that is not the cluster token is known to the server (a project's token:
/// valid, but not for this UI, which shows every project's runs).
pub type OtherToken = Arc<
    dyn Fn(String) -> std::pin::Pin<Box<dyn std::future::Future<Output = bool> + Send>>
        + Send
        + Sync,
>;

/// What the UI's routes accept: the cluster token, or the session cookie derived from it.
#[derive(Clone)]
pub(crate) struct TokenAuth(Arc<Keys>, Option<OtherToken>);

/// Why a token known to the server is refused here.
const ONLY_CLUSTER: &str = "this token is valid but is not the cluster token: the web UI shows every project's runs, so it needs the cluster token (a UI per project is not yet)";

struct Keys {
    /// blake3 of the token (compared in constant time, as `blake3::Hash` does).
    token: blake3::Hash,
    /// The session cookie's value.
    session: blake3::Hash,
    /// Where the UI is mounted (`/ui`).
    base: String,
}

impl TokenAuth {
    pub(crate) fn new(token: &str, base: &str, other: Option<OtherToken>) -> TokenAuth {
        TokenAuth(
            Arc::new(Keys {
                token: blake3::hash(token.as_bytes()),
                session: blake3::Hash::from(blake3::derive_key(
                    "weir ui session cookie v1",
                    token.as_bytes(),
                )),
                base: base.to_string(),
            }),
            other,
        )
    }

    /// Whether `token` is another valid token of the server (then 403, not 401).
    async fn other_known(&self, token: &str) -> bool {
        match &self.1 {
            Some(known) => known(token.to_string()).await,
            None => false,
        }
    }

    fn bearer(headers: &HeaderMap) -> Option<String> {
        headers
            .get_all(header::AUTHORIZATION)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .find_map(|v| v.strip_prefix("Bearer "))
            .map(str::to_string)
    }

    /// 403 for a valid token of another kind: JSON for the API, a page otherwise.
    fn forbid(&self, path: &str) -> Response {
        if path.starts_with(&format!("{}/api", self.0.base)) {
            return (
                StatusCode::FORBIDDEN,
                axum::Json(json!({ "error": ONLY_CLUSTER })),
            )
                .into_response();
        }
        (StatusCode::FORBIDDEN, self.login_page(ONLY_CLUSTER)).into_response()
    }

    fn admits_token(&self, presented: &str) -> bool {
        blake3::hash(presented.as_bytes()) == self.0.token
    }

    fn admits(&self, headers: &HeaderMap) -> bool {
        let bearer = headers
            .get_all(header::AUTHORIZATION)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .filter_map(|v| v.strip_prefix("Bearer "))
            .any(|t| self.admits_token(t));
        bearer
            || headers
                .get_all(header::COOKIE)
                .iter()
                .filter_map(|v| v.to_str().ok())
                .flat_map(|v| v.split(';'))
                .filter_map(|c| c.trim().strip_prefix(COOKIE)?.strip_prefix('='))
                .filter_map(|v| blake3::Hash::from_hex(v).ok())
                .any(|h| h == self.0.session)
    }

    /// The answer to a request without credentials: JSON for the API, a page saying how to
    /// log in for everything else.
    fn refuse(&self, path: &str) -> Response {
        let base = &self.0.base;
        if path.starts_with(&format!("{base}/api")) {
            let message = format!(
                "the weir UI needs the cluster token: send `Authorization: Bearer TOKEN`, or log in at {base}/login"
            );
            return (
                StatusCode::UNAUTHORIZED,
                axum::Json(json!({ "error": message })),
            )
                .into_response();
        }
        (
            StatusCode::UNAUTHORIZED,
            self.login_page("This weir UI needs the cluster token."),
        )
            .into_response()
    }

    fn login_page(&self, why: &str) -> Html<String> {
        Html(format!(
            r#"<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>weir: log in</title>
<meta name="viewport" content="width=device-width, initial-scale=1"></head>
<body style="font-family: system-ui, sans-serif; max-width: 40em; margin: 3em auto">
<h1>weir</h1>
<p>{why}</p>
<p>Paste the token <code>weir serve</code> was started with (its <code>--token-file</code>,
by default <code>&lt;state-dir&gt;/cluster-token</code>). The browser keeps a session cookie
derived from it, not the token.</p>
<form method="post" action="{base}/login">
<input type="password" name="token" autocomplete="off" size="70" autofocus required>
<button type="submit">Log in</button>
</form>
</body></html>
"#,
            base = self.0.base
        ))
    }

    /// Sets the session cookie and sends the browser to the UI, or refuses a wrong token.
    async fn log_in(&self, token: &str) -> Response {
        if !self.admits_token(token) && self.other_known(token).await {
            return (StatusCode::FORBIDDEN, self.login_page(ONLY_CLUSTER)).into_response();
        }
        if !self.admits_token(token) {
            return (
                StatusCode::UNAUTHORIZED,
                self.login_page("That is not this server's cluster token."),
            )
                .into_response();
        }
        let base = &self.0.base;
        let cookie = format!(
            "{COOKIE}={}; Path={base}; HttpOnly; SameSite=Strict",
            self.0.session.to_hex()
        );
        let mut res = Redirect::to(&format!("{base}/")).into_response();
        match HeaderValue::from_str(&cookie) {
            Ok(v) => {
                res.headers_mut().insert(header::SET_COOKIE, v);
            }
            Err(_) => return StatusCode::INTERNAL_SERVER_ERROR.into_response(),
        }
        res.headers_mut()
            .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
        res
    }
}

/// Middleware: 401 unless the request carries the token or the session cookie.
pub(crate) async fn check(State(auth): State<TokenAuth>, req: Request, next: Next) -> Response {
    if auth.admits(req.headers()) {
        return next.run(req).await;
    }
    if let Some(token) = TokenAuth::bearer(req.headers())
        && auth.other_known(&token).await
    {
        return auth.forbid(req.uri().path());
    }
    auth.refuse(req.uri().path())
}

#[derive(Deserialize)]
pub(crate) struct Login {
    token: Option<String>,
}

/// `GET BASE/login`: the form, or with `?token=` (a link) logs in.
pub(crate) async fn login_get(State(auth): State<TokenAuth>, Query(q): Query<Login>) -> Response {
    match q.token {
        Some(t) => auth.log_in(&t).await,
        None => auth
            .login_page("Log in with the cluster token.")
            .into_response(),
    }
}

/// `POST BASE/login` (form field `token`): logs in.
pub(crate) async fn login_post(State(auth): State<TokenAuth>, Form(f): Form<Login>) -> Response {
    auth.log_in(f.token.as_deref().unwrap_or("")).await
}
