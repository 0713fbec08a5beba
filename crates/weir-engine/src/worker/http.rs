//! The HTTP transport of the worker protocol, both ends: the server (an axum router over any
//! [`WorkerApi`]: decode, call, encode) and the client ([`HttpClient`], a [`WorkerApi`] that
//! sends each call as a request). Bodies are MessagePack with named fields; a refusal travels
//! as an HTTP status ([`Refusal`]) and an [`ErrorReply`].

use std::sync::Arc;

use axum::Router;
use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use serde::{Serialize, de::DeserializeOwned};

use super::api::{ApiFuture, WorkerApi};
use super::protocol::*;
use super::{Error, Refusal};

const LEASE: &str = "/v1/lease";
const HEARTBEAT: &str = "/v1/heartbeat";
const COMPLETE: &str = "/v1/complete";
const SUBMIT: &str = "/v1/submit";
const RESULTS: &str = "/v1/results";
const CANCEL: &str = "/v1/cancel";
const TRACE_LOOKUP: &str = "/v1/trace/lookup";
const TRACE_RECORD: &str = "/v1/trace/record";

// ---- server ----

type Api = State<Arc<dyn WorkerApi>>;

/// The router of the worker API over `api`.
pub(crate) fn router(api: Arc<dyn WorkerApi>) -> Router {
    Router::new()
        .route(LEASE, post(lease))
        .route(HEARTBEAT, post(heartbeat))
        .route(COMPLETE, post(complete))
        .route(SUBMIT, post(submit))
        .route(RESULTS, post(results))
        .route(CANCEL, post(cancel))
        .route(TRACE_LOOKUP, post(trace_lookup))
        .route(TRACE_RECORD, post(trace_record))
        .layer(DefaultBodyLimit::max(1 << 30))
        .with_state(api)
}

/// One handler per message: decode the body, call the same-named method, encode its answer.
macro_rules! handlers {
    ($($method:ident),* $(,)?) => {$(
        async fn $method(State(api): Api, body: Bytes) -> Response {
            match rmp_serde::from_slice(&body) {
                Ok(req) => reply(api.$method(req).await),
                Err(e) => refuse(StatusCode::BAD_REQUEST, format!("bad message: {e}")),
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
        Refusal::Conflict => StatusCode::CONFLICT,
        Refusal::BadRequest => StatusCode::BAD_REQUEST,
        Refusal::Internal => StatusCode::INTERNAL_SERVER_ERROR,
    }
}

fn reason_of(status: StatusCode) -> Refusal {
    match status {
        StatusCode::CONFLICT => Refusal::Conflict,
        StatusCode::BAD_REQUEST => Refusal::BadRequest,
        _ => Refusal::Internal,
    }
}

// ---- client ----

/// The worker protocol over HTTP/1 on loopback (keep-alive pool).
pub(crate) struct HttpClient {
    http: Client<HttpConnector, Full<Bytes>>,
    base: String,
}

impl HttpClient {
    /// A client of the engine at `base` (`http://127.0.0.1:PORT`); connects lazily.
    pub(crate) fn new(base: String) -> HttpClient {
        let http = Client::builder(TokioExecutor::new())
            .pool_max_idle_per_host(64)
            .build_http();
        HttpClient { http, base }
    }

    /// One request: MessagePack in, MessagePack out.
    async fn post<Req: Serialize, Resp: DeserializeOwned>(
        &self,
        path: &str,
        body: &Req,
    ) -> Result<Resp, Error> {
        let codec = |e: String| Error::Codec {
            what: path.into(),
            message: e,
        };
        let bytes = rmp_serde::to_vec_named(body).map_err(|e| codec(e.to_string()))?;
        let url = format!("{}{path}", self.base);
        let req = hyper::Request::post(&url)
            .header("content-type", "application/msgpack")
            .body(Full::new(Bytes::from(bytes)))
            .map_err(|e| codec(e.to_string()))?;
        let unreachable = |e: String| Error::Unreachable {
            url: url.clone(),
            message: e,
        };
        let resp = self
            .http
            .request(req)
            .await
            .map_err(|e| unreachable(format!("{e:?}")))?;
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
