//! The worker's side of the transport: an HTTP/1 client (keep-alive pool) on loopback, and the
//! loops that batch child submissions, cancellations and completions and long-poll results.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use parking_lot::Mutex;
use serde::{Serialize, de::DeserializeOwned};
use tokio::sync::{mpsc, oneshot};
use weir_core::{ActionId, ErrorKind, Failure};

use super::Error as ProtocolError;
use super::protocol::*;
use crate::call::{RemoteRun, TaskCtx};
use crate::registry::TaskDef;
use crate::{Error, Result};

type ResultTx = oneshot::Sender<std::result::Result<serde_bytes::ByteBuf, RemoteError>>;

/// A cheap cloneable handle on the worker's connection to the engine.
#[derive(Clone)]
pub(crate) struct WorkerClient {
    inner: Arc<ClientInner>,
}

struct ClientInner {
    http: Client<HttpConnector, Full<Bytes>>,
    base: String,
    worker: String,
    next_call: AtomicU64,
    pending: Mutex<HashMap<u64, ResultTx>>,
    submit_tx: mpsc::UnboundedSender<ChildCall>,
    cancel_tx: mpsc::UnboundedSender<u64>,
    complete_tx: mpsc::UnboundedSender<Completion>,
    /// Completions queued but not yet acknowledged by the engine.
    unsent: AtomicUsize,
}

/// Most messages of one kind in one request.
const BATCH: usize = 4096;

impl WorkerClient {
    /// Connects (lazily) to the engine at `base` (`http://127.0.0.1:PORT`) and starts the
    /// batching loops.
    pub(crate) fn start(base: String, worker: String) -> WorkerClient {
        let http = Client::builder(TokioExecutor::new())
            .pool_max_idle_per_host(64)
            .build_http();
        let (submit_tx, submit_rx) = mpsc::unbounded_channel();
        let (cancel_tx, cancel_rx) = mpsc::unbounded_channel();
        let (complete_tx, complete_rx) = mpsc::unbounded_channel();
        let client = WorkerClient {
            inner: Arc::new(ClientInner {
                http,
                base,
                worker,
                next_call: AtomicU64::new(1),
                pending: Mutex::new(HashMap::new()),
                submit_tx,
                cancel_tx,
                complete_tx,
                unsent: AtomicUsize::new(0),
            }),
        };
        tokio::spawn(client.clone().submit_loop(submit_rx));
        tokio::spawn(client.clone().cancel_loop(cancel_rx));
        tokio::spawn(client.clone().complete_loop(complete_rx));
        tokio::spawn(client.clone().results_loop());
        client
    }

    pub(crate) fn worker(&self) -> &str {
        &self.inner.worker
    }

    /// One request: MessagePack in, MessagePack out.
    pub(crate) async fn post<Req: Serialize, Resp: DeserializeOwned>(
        &self,
        path: &str,
        body: &Req,
    ) -> std::result::Result<Resp, ProtocolError> {
        let bytes = rmp_serde::to_vec_named(body).map_err(|e| ProtocolError::Codec {
            what: path.into(),
            message: e.to_string(),
        })?;
        let url = format!("{}{path}", self.inner.base);
        let req = hyper::Request::post(&url)
            .header("content-type", "application/msgpack")
            .body(Full::new(Bytes::from(bytes)))
            .map_err(|e| ProtocolError::Codec {
                what: path.into(),
                message: e.to_string(),
            })?;
        let unreachable = |e: String| ProtocolError::Unreachable {
            url: url.clone(),
            message: e,
        };
        let resp = self
            .inner
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
            return Err(ProtocolError::Refused {
                path: path.into(),
                status: status.as_u16(),
                message,
            });
        }
        rmp_serde::from_slice(&body).map_err(|e| ProtocolError::Codec {
            what: path.into(),
            message: e.to_string(),
        })
    }

    /// Queues a completion (sent in the next batch).
    pub(crate) fn complete(&self, completion: Completion) {
        self.inner.unsent.fetch_add(1, Ordering::AcqRel);
        let _ = self.inner.complete_tx.send(completion);
    }

    /// Completions not yet acknowledged.
    pub(crate) fn unsent_completions(&self) -> usize {
        self.inner.unsent.load(Ordering::Acquire)
    }

    async fn submit_loop(self, mut rx: mpsc::UnboundedReceiver<ChildCall>) {
        let mut buf = Vec::new();
        while rx.recv_many(&mut buf, BATCH).await > 0 {
            let calls = std::mem::take(&mut buf);
            let ids: Vec<u64> = calls.iter().map(|c| c.call).collect();
            let batch = SubmitBatch {
                worker: self.inner.worker.clone(),
                calls,
            };
            if let Err(e) = self.post::<_, ()>("/v1/submit", &batch).await {
                let failure = system_error(format!("child call not submitted: {e}"));
                let mut pending = self.inner.pending.lock();
                for id in ids {
                    if let Some(tx) = pending.remove(&id) {
                        let _ = tx.send(Err(failure.clone()));
                    }
                }
            }
        }
    }

    async fn cancel_loop(self, mut rx: mpsc::UnboundedReceiver<u64>) {
        let mut buf = Vec::new();
        while rx.recv_many(&mut buf, BATCH).await > 0 {
            let calls = std::mem::take(&mut buf);
            let msg = CancelCalls {
                worker: self.inner.worker.clone(),
                calls,
            };
            if let Err(e) = self.post::<_, ()>("/v1/cancel", &msg).await {
                tracing::warn!(error = %e, "could not cancel child calls");
            }
        }
    }

    async fn complete_loop(self, mut rx: mpsc::UnboundedReceiver<Completion>) {
        let mut buf = Vec::new();
        while rx.recv_many(&mut buf, BATCH).await > 0 {
            let completions = std::mem::take(&mut buf);
            let n = completions.len();
            let batch = CompleteBatch {
                worker: self.inner.worker.clone(),
                completions,
            };
            // Retried until the engine answers: a completion is only lost with the process.
            let mut tries = 0;
            loop {
                match self.post::<_, CompleteReply>("/v1/complete", &batch).await {
                    Ok(reply) => {
                        for (lease, why) in reply.rejected {
                            eprintln!("[weir] completion of lease {lease} rejected: {why}");
                        }
                        break;
                    }
                    Err(e) if tries < 20 => {
                        tries += 1;
                        tracing::warn!(error = %e, "completion not delivered, retrying");
                        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
                    }
                    Err(e) => {
                        eprintln!("[weir] completions lost: {e}");
                        break;
                    }
                }
            }
            self.inner.unsent.fetch_sub(n, Ordering::AcqRel);
        }
    }

    async fn results_loop(self) {
        let req = ResultsRequest {
            worker: self.inner.worker.clone(),
        };
        loop {
            match self.post::<_, ResultsReply>("/v1/results", &req).await {
                Ok(reply) => {
                    let mut pending = self.inner.pending.lock();
                    for r in reply.results {
                        if let Some(tx) = pending.remove(&r.call) {
                            let _ = tx.send(r.outcome);
                        }
                    }
                    if reply.shutdown {
                        return;
                    }
                }
                Err(e) => {
                    tracing::debug!(error = %e, "results poll failed");
                    tokio::time::sleep(std::time::Duration::from_millis(100)).await;
                }
            }
        }
    }
}

/// Cancels a child call whose caller stopped waiting.
struct CancelGuard {
    client: WorkerClient,
    call: u64,
    armed: bool,
}

impl Drop for CancelGuard {
    fn drop(&mut self) {
        if self.armed {
            self.client.inner.pending.lock().remove(&self.call);
            let _ = self.client.inner.cancel_tx.send(self.call);
        }
    }
}

fn system_error(message: String) -> RemoteError {
    RemoteError {
        kind: ErrorKind::System,
        message,
        chain: vec![],
        child: None,
    }
}

/// Converts a task error for the wire.
pub(crate) fn to_remote(e: &Error) -> RemoteError {
    RemoteError {
        kind: e.kind(),
        message: e.message().to_string(),
        chain: e.chain().to_vec(),
        child: e.child().cloned(),
    }
}

/// Rebuilds a task error from the wire.
pub(crate) fn from_remote(r: RemoteError) -> Error {
    match r.child {
        Some(child) if r.kind == ErrorKind::ChildFailed => Error::from_child(child),
        _ => {
            let mut e = Error::with_kind(r.kind, r.message);
            for c in r.chain {
                e = e.context_below(c);
            }
            e
        }
    }
}

impl RemoteRun {
    /// A child call from a task in this worker: the id is derived here, the action is created
    /// (or attached to, or recovered) by the engine; the outcome comes back through results.
    pub(crate) async fn submit_child(
        &self,
        ctx: &TaskCtx,
        id: ActionId,
        def: &'static TaskDef,
        inputs: Vec<u8>,
        group: Option<Arc<str>>,
    ) -> Result<Arc<[u8]>> {
        let client = &self.client;
        let call = client.inner.next_call.fetch_add(1, Ordering::Relaxed);
        let (tx, rx) = oneshot::channel();
        client.inner.pending.lock().insert(call, tx);
        let mut guard = CancelGuard {
            client: client.clone(),
            call,
            armed: true,
        };
        let _ = client.inner.submit_tx.send(ChildCall {
            call,
            run: self.run_id,
            parent: ctx.action,
            id,
            task: def.full_name().to_string(),
            inputs,
            group: group.map(|g| g.to_string()),
            check_store: ctx.check_store,
        });
        let outcome = rx.await;
        guard.armed = false;
        match outcome {
            Ok(Ok(bytes)) => Ok(Arc::from(bytes.into_vec())),
            Ok(Err(e)) => Err(from_remote(e)),
            Err(_) => Err(Error::with_kind(
                ErrorKind::Cancelled,
                format!("action {id} ({}) was cancelled", def.full_name()),
            )),
        }
    }

    /// Looks a trace checkpoint up through the engine.
    pub(crate) async fn lookup_checkpoint(&self, id: ActionId) -> Result<Checkpoint> {
        let msg = TraceLookup {
            worker: self.client.worker().to_string(),
            run: self.run_id,
            id,
        };
        self.client
            .post("/v1/trace/lookup", &msg)
            .await
            .map_err(|e| Error::with_kind(ErrorKind::System, e))
    }

    /// Records a trace checkpoint through the engine (answered after the commit).
    pub(crate) async fn record_checkpoint(
        &self,
        id: ActionId,
        parent: ActionId,
        name: &str,
        inputs: Vec<u8>,
        started_at: i64,
        outcome: std::result::Result<Vec<u8>, Failure>,
    ) -> Result<()> {
        let msg = TraceRecord {
            worker: self.client.worker().to_string(),
            run: self.run_id,
            id,
            parent,
            name: name.to_string(),
            inputs,
            started_at,
            outcome: outcome.map(serde_bytes::ByteBuf::from),
        };
        self.client
            .post::<_, ()>("/v1/trace/record", &msg)
            .await
            .map_err(|e| Error::with_kind(ErrorKind::System, format!("trace {name}: {e}")))
    }
}
