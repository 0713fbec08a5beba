//! The HTTP transport of the worker protocol, both ends: the server (an axum router over any
//! [`WorkerApi`]: decode, call, encode) and the client ([`HttpClient`], a [`WorkerApi`] that
//! sends each call as a request). Bodies are MessagePack with named fields; a refusal travels
//! as an HTTP status ([`Refusal`]) and an [`ErrorReply`].

use std::sync::Arc;

use axum::Router;
use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, Extension, State};
use axum::http::header::AUTHORIZATION;
use axum::http::{HeaderMap, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use serde::{Serialize, de::DeserializeOwned};

use super::api::{ApiFuture, WorkerApi};
use super::auth::Credentials;
use super::protocol::*;
use super::{Error, Refusal};

const REGISTER: &str = "/v1/register";
const LEASE: &str = "/v1/lease";
const HEARTBEAT: &str = "/v1/heartbeat";
const COMPLETE: &str = "/v1/complete";
const SUBMIT: &str = "/v1/submit";
const RESULTS: &str = "/v1/results";
const CANCEL: &str = "/v1/cancel";
const TRACE_LOOKUP: &str = "/v1/trace/lookup";
const TRACE_RECORD: &str = "/v1/trace/record";

// ---- server ----

/// The server's state: the engine's implementation and the credentials it checks.
#[derive(Clone)]
struct Server {
    api: Arc<dyn WorkerApi>,
}

/// The worker a request's token names (set by [`authenticate`]).
#[derive(Clone)]
struct Caller(String);

/// The router of the worker API over `api`. Every route but `register` requires a worker
/// token that `credentials` knows; bodies over `body_limit` bytes are refused (413) unread.
pub(crate) fn router(
    api: Arc<dyn WorkerApi>,
    credentials: Arc<Credentials>,
    body_limit: usize,
) -> Router {
    let authenticated = Router::new()
        .route(LEASE, post(lease))
        .route(HEARTBEAT, post(heartbeat))
        .route(COMPLETE, post(complete))
        .route(SUBMIT, post(submit))
        .route(RESULTS, post(results))
        .route(CANCEL, post(cancel))
        .route(TRACE_LOOKUP, post(trace_lookup))
        .route(TRACE_RECORD, post(trace_record))
        .route_layer(middleware::from_fn_with_state(credentials, authenticate));
    Router::new()
        .route(REGISTER, post(register))
        .merge(authenticated)
        .layer(DefaultBodyLimit::max(body_limit))
        .with_state(Server { api })
}

/// The bearer credential of a request, if any.
fn bearer(headers: &HeaderMap) -> Option<&str> {
    headers
        .get(AUTHORIZATION)?
        .to_str()
        .ok()?
        .strip_prefix("Bearer ")
}

/// Admits a request whose token names a worker, before its body is read; 401 otherwise.
async fn authenticate(
    State(credentials): State<Arc<Credentials>>,
    mut req: axum::extract::Request,
    next: Next,
) -> Response {
    match bearer(req.headers()).and_then(|t| credentials.identify(t)) {
        Some(worker) => {
            req.extensions_mut().insert(Caller(worker));
            next.run(req).await
        }
        None => refuse(
            StatusCode::UNAUTHORIZED,
            "this request needs the token the engine issued to a worker at registration (Authorization: Bearer TOKEN)".into(),
        ),
    }
}

/// Decodes a request and checks it against its caller: it must name the worker its token
/// names, and batch at most [`MAX_BATCH`] messages.
fn decode<R: Request + DeserializeOwned>(
    caller: &str,
    body: &[u8],
) -> Result<R, (StatusCode, String)> {
    let req: R = rmp_serde::from_slice(body)
        .map_err(|e| (StatusCode::BAD_REQUEST, format!("bad message: {e}")))?;
    if req.worker() != caller {
        let message = format!(
            "the request names worker {:?} but its token is worker {caller:?}'s",
            req.worker()
        );
        return Err((StatusCode::FORBIDDEN, message));
    }
    if req.items() > MAX_BATCH {
        let message = format!(
            "{} messages in one request, over the cap of {MAX_BATCH}",
            req.items()
        );
        return Err((StatusCode::PAYLOAD_TOO_LARGE, message));
    }
    Ok(req)
}

/// One handler per message: decode the body, check it against the caller, call the
/// same-named method, encode its answer.
macro_rules! handlers {
    ($($method:ident),* $(,)?) => {$(
        async fn $method(
            State(s): State<Server>,
            Extension(Caller(caller)): Extension<Caller>,
            body: Bytes,
        ) -> Response {
            match decode(&caller, &body) {
                Ok(req) => reply(s.api.$method(req).await),
                Err((status, message)) => refuse(status, message),
            }
        }
    )*};
}

handlers!(
    lease,
    heartbeat,
    complete,
    submit,
    results,
    cancel,
    trace_lookup,
    trace_record
);

/// Registration: the admission secret is the bearer credential.
async fn register(State(s): State<Server>, headers: HeaderMap, body: Bytes) -> Response {
    let Some(secret) = bearer(&headers) else {
        let message =
            "registration needs the engine's admission secret (Authorization: Bearer SECRET)";
        return refuse(StatusCode::UNAUTHORIZED, message.into());
    };
    match rmp_serde::from_slice::<Register>(&body) {
        Ok(req) => reply(s.api.register(req, secret).await),
        Err(e) => refuse(StatusCode::BAD_REQUEST, format!("bad message: {e}")),
    }
}

fn reply<T: Serialize>(answer: Result<T, Error>) -> Response {
    match answer {
        Ok(value) => match rmp_serde::to_vec_named(&value) {
            Ok(body) => (StatusCode::OK, body).into_response(),
            Err(e) => refuse(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()),
        },
        Err(Error::Refused {
            reason, message, ..
        }) => refuse(status_of(reason), message),
        Err(e) => refuse(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()),
    }
}

fn refuse(status: StatusCode, message: String) -> Response {
    let body = rmp_serde::to_vec_named(&ErrorReply { message }).unwrap_or_default();
    (status, body).into_response()
}

fn status_of(reason: Refusal) -> StatusCode {
    match reason {
        Refusal::Unauthorized => StatusCode::UNAUTHORIZED,
        Refusal::Forbidden => StatusCode::FORBIDDEN,
        Refusal::TooLarge => StatusCode::PAYLOAD_TOO_LARGE,
        Refusal::Conflict => StatusCode::CONFLICT,
        Refusal::BadRequest => StatusCode::BAD_REQUEST,
        Refusal::Internal => StatusCode::INTERNAL_SERVER_ERROR,
    }
}

fn reason_of(status: StatusCode) -> Refusal {
    match status {
        StatusCode::UNAUTHORIZED => Refusal::Unauthorized,
        StatusCode::FORBIDDEN => Refusal::Forbidden,
        StatusCode::PAYLOAD_TOO_LARGE => Refusal::TooLarge,
        StatusCode::CONFLICT => Refusal::Conflict,
        StatusCode::BAD_REQUEST => Refusal::BadRequest,
        _ => Refusal::Internal,
    }
}

// ---- client ----

/// The worker protocol over HTTP/1 on loopback (keep-alive pool).
pub(crate) struct HttpClient {
    /// The pool, or why there is none (an unreadable `WEIR_TLS_CA`): every request says so.
    http: Result<Client<crate::tls::Connector, Full<Bytes>>, String>,
    base: String,
    /// The worker's token, once registered.
    token: parking_lot::RwLock<Option<String>>,
}

impl HttpClient {
    /// A client of the engine at `base` (`http://127.0.0.1:PORT`); connects lazily.
    pub(crate) fn new(base: String) -> HttpClient {
        let http = crate::tls::client(&base, 64);
        HttpClient {
            http,
            base,
            token: parking_lot::RwLock::new(None),
        }
    }

    /// One request: MessagePack in, MessagePack out.
    async fn post<Req: Serialize, Resp: DeserializeOwned>(
        &self,
        path: &str,
        body: &Req,
    ) -> Result<Resp, Error> {
        let token = self.token.read().clone().unwrap_or_default();
        self.post_as(path, body, &token).await
    }

    /// One request with `credential` as its bearer token.
    async fn post_as<Req: Serialize, Resp: DeserializeOwned>(
        &self,
        path: &str,
        body: &Req,
        credential: &str,
    ) -> Result<Resp, Error> {
        let codec = |e: String| Error::Codec {
            what: path.into(),
            message: e,
        };
        let bytes = rmp_serde::to_vec_named(body).map_err(|e| codec(e.to_string()))?;
        let url = format!("{}{path}", self.base);
        let req = hyper::Request::post(&url)
            .header("content-type", "application/msgpack")
            .header(AUTHORIZATION, format!("Bearer {credential}"))
            .body(Full::new(Bytes::from(bytes)))
            .map_err(|e| codec(e.to_string()))?;
        let unreachable = |e: String| Error::Unreachable {
            url: url.clone(),
            message: e,
        };
        let http = self.http.as_ref().map_err(|e| unreachable(e.clone()))?;
        let resp = http
            .request(req)
            .await
            .map_err(|e| unreachable(crate::tls::describe(&e)))?;
        let status = resp.status();
        let body = resp
            .into_body()
            .collect()
            .await
            .map_err(|e| unreachable(e.to_string()))?
            .to_bytes();
        if !status.is_success() {
            let message = rmp_serde::from_slice::<ErrorReply>(&body)
                .map(|r| r.message)
                .unwrap_or_else(|_| String::from_utf8_lossy(&body).into_owned());
            return Err(Error::Refused {
                request: path.into(),
                reason: reason_of(status),
                message,
            });
        }
        rmp_serde::from_slice(&body).map_err(|e| codec(e.to_string()))
    }
}

impl WorkerApi for HttpClient {
    fn register<'a>(&'a self, req: Register, secret: &'a str) -> ApiFuture<'a, Registered> {
        Box::pin(async move {
            let reply: Registered = self.post_as(REGISTER, &req, secret).await?;
            *self.token.write() = Some(reply.token.clone());
            Ok(reply)
        })
    }
    fn lease(&self, req: LeaseRequest) -> ApiFuture<'_, LeaseResponse> {
        Box::pin(async move { self.post(LEASE, &req).await })
    }
    fn heartbeat(&self, req: Heartbeat) -> ApiFuture<'_, HeartbeatReply> {
        Box::pin(async move { self.post(HEARTBEAT, &req).await })
    }
    fn complete(&self, req: CompleteBatch) -> ApiFuture<'_, CompleteReply> {
        Box::pin(async move { self.post(COMPLETE, &req).await })
    }
    fn submit(&self, req: SubmitBatch) -> ApiFuture<'_, ()> {
        Box::pin(async move { self.post(SUBMIT, &req).await })
    }
    fn results(&self, req: ResultsRequest) -> ApiFuture<'_, ResultsReply> {
        Box::pin(async move { self.post(RESULTS, &req).await })
    }
    fn cancel(&self, req: CancelCalls) -> ApiFuture<'_, ()> {
        Box::pin(async move { self.post(CANCEL, &req).await })
    }
    fn trace_lookup(&self, req: TraceLookup) -> ApiFuture<'_, Checkpoint> {
        Box::pin(async move { self.post(TRACE_LOOKUP, &req).await })
    }
    fn trace_record(&self, req: TraceRecord) -> ApiFuture<'_, ()> {
        Box::pin(async move { self.post(TRACE_RECORD, &req).await })
    }
}

#[cfg(test)]
mod tests {
    //! The transport's checks over a real loopback listener and the real client: credentials,
    //! the worker a request names, and the caps.

    use super::*;

    /// Answers every message with its default; admits `secret` for any worker.
    struct Open;

    fn ok<T: Default + Send + 'static>() -> ApiFuture<'static, T> {
        Box::pin(async { Ok(T::default()) })
    }

    impl WorkerApi for Open {
        fn register<'a>(&'a self, _: Register, secret: &'a str) -> ApiFuture<'a, Registered> {
            let ok = secret == "secret";
            Box::pin(async move {
                if !ok {
                    return Err(Error::Refused {
                        request: "register".into(),
                        reason: Refusal::Unauthorized,
                        message: "wrong secret".into(),
                    });
                }
                Ok(Registered {
                    token: String::new(),
                    object_store: None,
                    reference_store: None,
                })
            })
        }
        fn lease(&self, _: LeaseRequest) -> ApiFuture<'_, LeaseResponse> {
            ok()
        }
        fn heartbeat(&self, _: Heartbeat) -> ApiFuture<'_, HeartbeatReply> {
            ok()
        }
        fn complete(&self, _: CompleteBatch) -> ApiFuture<'_, CompleteReply> {
            ok()
        }
        fn submit(&self, _: SubmitBatch) -> ApiFuture<'_, ()> {
            ok()
        }
        fn results(&self, _: ResultsRequest) -> ApiFuture<'_, ResultsReply> {
            ok()
        }
        fn cancel(&self, _: CancelCalls) -> ApiFuture<'_, ()> {
            ok()
        }
        fn trace_lookup(&self, _: TraceLookup) -> ApiFuture<'_, Checkpoint> {
            Box::pin(async { Ok(Checkpoint::Nothing) })
        }
        fn trace_record(&self, _: TraceRecord) -> ApiFuture<'_, ()> {
            ok()
        }
    }

    /// A server over [`Open`] with `w1`'s token issued; its URL and that token.
    async fn serve(body_limit: usize) -> (String, String) {
        let credentials = Arc::new(Credentials::new("secret"));
        let token = credentials.issue("w1").unwrap();
        let router = router(Arc::new(Open), credentials, body_limit);
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        tokio::spawn(async move { axum::serve(listener, router).await });
        (url, token)
    }

    fn reason<T: std::fmt::Debug>(r: Result<T, Error>) -> Refusal {
        match r {
            Err(Error::Refused { reason, .. }) => reason,
            r => panic!("not refused: {r:?}"),
        }
    }

    fn lease(worker: &str) -> LeaseRequest {
        LeaseRequest {
            worker: worker.into(),
            max: 1,
            received: None,
            direct: false,
        }
    }

    #[tokio::test]
    async fn every_request_needs_the_token_of_the_worker_it_names() {
        let (url, token) = serve(1 << 20).await;
        let c = HttpClient::new(url);
        // No token, a made-up one, the admission secret itself: 401 on every path.
        for credential in ["", "0123456789abcdef", "secret"] {
            for path in [
                LEASE,
                HEARTBEAT,
                COMPLETE,
                SUBMIT,
                RESULTS,
                CANCEL,
                TRACE_LOOKUP,
                TRACE_RECORD,
            ] {
                let r: Result<(), _> = c.post_as(path, &lease("w1"), credential).await;
                assert_eq!(
                    reason(r),
                    Refusal::Unauthorized,
                    "{path} with {credential:?}"
                );
            }
        }
        // w1's token naming another worker: 403.
        let r: Result<LeaseResponse, _> = c.post_as(LEASE, &lease("w2"), &token).await;
        assert_eq!(reason(r), Refusal::Forbidden);
        // Naming itself: served.
        let r: LeaseResponse = c.post_as(LEASE, &lease("w1"), &token).await.unwrap();
        assert!(r.actions.is_empty());
        // Registration checks the admission secret.
        let reg = || Register {
            worker: "w1".into(),
            cluster: None,
        };
        assert_eq!(
            reason(c.register(reg(), "guess").await),
            Refusal::Unauthorized
        );
        let r: Result<Registered, _> = c.post_as(REGISTER, &reg(), "").await;
        assert_eq!(reason(r), Refusal::Unauthorized);
        c.register(reg(), "secret").await.unwrap();
    }

    #[tokio::test]
    async fn bodies_and_batches_over_the_caps_are_refused() {
        let (url, token) = serve(64 << 10).await;
        let c = HttpClient::new(url);
        let too_many = CancelCalls {
            worker: "w1".into(),
            calls: (0..=MAX_BATCH as u64).collect(),
        };
        let r: Result<(), _> = c.post_as(CANCEL, &too_many, &token).await;
        assert_eq!(reason(r), Refusal::TooLarge);
        let at_cap = CancelCalls {
            worker: "w1".into(),
            calls: (0..MAX_BATCH as u64).collect(),
        };
        let r: Result<(), _> = c.post_as(CANCEL, &at_cap, &token).await;
        r.unwrap();
        let big = TraceRecord {
            worker: "w1".into(),
            run: weir_store::RunId(1),
            id: weir_core::ActionId(1),
            parent: weir_core::ActionId(2),
            name: "t".into(),
            inputs: vec![0; 65 << 10],
            started_at: 0,
            outcome: Ok(serde_bytes::ByteBuf::new()),
            inputs_ref: None,
            output_ref: None,
        };
        let r: Result<(), _> = c.post_as(TRACE_RECORD, &big, &token).await;
        assert_eq!(reason(r), Refusal::TooLarge);
    }

    #[test]
    fn the_body_limit_holds_a_trace_record_at_the_inline_limit() {
        assert!(body_limit(10 << 20) > 20 << 20);
        assert!(body_limit(0) > BATCH_BYTES);
        assert_eq!(body_limit(u64::MAX), usize::MAX);
    }
}
