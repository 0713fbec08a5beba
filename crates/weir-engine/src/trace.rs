//! Traces (SPEC §6.4): checkpointed function calls inside a task, and the durable helpers
//! built on them.

use std::borrow::Cow;
use std::future::Future;
use std::sync::Arc;

use futures::stream::{self, BoxStream, Stream, StreamExt};
use serde::{Serialize, de::DeserializeOwned};
use tokio::sync::oneshot;
use weir_core::{ActionId, ActionStatus, CallKey, ErrorKind, Failure, codec, ids::inputs_hash};
use weir_store::{ActionKind, Store, WriteOp, now_us};

use crate::call::{TaskCtx, current};
use crate::{Error, Result};

tokio::task_local! {
    static IN_TRACE: &'static str;
}

/// The trace the current code runs in, if any.
pub(crate) fn in_trace() -> Option<&'static str> {
    IN_TRACE.try_with(|name| *name).ok()
}

/// What a trace found when it looked for its checkpoint.
enum Recorded {
    Output(Vec<u8>),
    Failure(Failure),
    Nothing,
}

struct TraceSlot {
    ctx: Arc<TaskCtx>,
    id: ActionId,
    name: &'static str,
    inputs: Vec<u8>,
}

impl TraceSlot {
    /// Derives the trace's id from the calling attempt and looks for a checkpoint.
    async fn open(
        ctx: Arc<TaskCtx>,
        name: &'static str,
        inputs: Vec<u8>,
    ) -> Result<(TraceSlot, Recorded)> {
        let hash = inputs_hash(&inputs);
        let seq = ctx.next_seq(name, hash, &None);
        let id = ActionId::derive(
            ctx.action,
            &CallKey {
                task: name,
                inputs_hash: hash,
                seq,
                group: None,
            },
        );
        let mut recorded = Recorded::Nothing;
        if ctx.run.recovering() || ctx.attempt > 1 {
            let engine = &ctx.engine;
            let rec = engine
                .store()
                .action(ctx.run.id, id)
                .map_err(|e| Error::with_kind(ErrorKind::System, e))?;
            if let Some(rec) = rec {
                match (rec.status, rec.output, rec.error) {
                    (ActionStatus::Succeeded, Some(out), _) => {
                        recorded = Recorded::Output(engine.load_payload(&out).await?.to_vec())
                    }
                    // A recoverable failure runs the trace again; any other is re-raised.
                    (ActionStatus::Failed, _, Some(f)) if !f.kind.is_retryable() => {
                        recorded = Recorded::Failure(f)
                    }
                    _ => {}
                }
            }
        }
        Ok((
            TraceSlot {
                ctx,
                id,
                name,
                inputs,
            },
            recorded,
        ))
    }

    /// Records the outcome as a checkpoint and waits for its commit.
    async fn record(
        self,
        started_at: i64,
        outcome: std::result::Result<Vec<u8>, Failure>,
    ) -> Result<()> {
        let engine = self.ctx.engine.clone();
        let run = &self.ctx.run;
        let inputs = engine
            .store_payload_pub(|| format!("{}/{}/inputs", run.name, self.id), &self.inputs)
            .await?;
        let (status, output, error) = match outcome {
            Ok(bytes) => {
                let p = engine
                    .store_payload_pub(|| format!("{}/{}/1/outputs", run.name, self.id), &bytes)
                    .await?;
                (ActionStatus::Succeeded, Some(p), None)
            }
            Err(f) => (ActionStatus::Failed, None, Some(f)),
        };
        let store = engine.store();
        store.write(
            WriteOp::InsertAction {
                run: run.id,
                id: self.id,
                parent: self.ctx.action,
                task: Cow::Borrowed(self.name),
                group: None,
                kind: ActionKind::Trace,
                inputs,
                queued_at: started_at,
            },
            None,
        );
        store.write(
            WriteOp::StartAttempt {
                run: run.id,
                id: self.id,
                attempt: 1,
                started_at,
            },
            None,
        );
        let (tx, rx) = oneshot::channel();
        store.write(
            WriteOp::FinishAction {
                run: run.id,
                id: self.id,
                status,
                output,
                error,
                cache_hit: false,
                ended_at: now_us(),
            },
            Some(Box::new(move |r| {
                let _ = tx.send(r);
            })),
        );
        match rx.await {
            Ok(Ok(())) => Ok(()),
            Ok(Err(e)) => Err(Error::with_kind(
                ErrorKind::System,
                format!("could not record trace {}: {e}", self.name),
            )),
            Err(_) => Err(Error::with_kind(
                ErrorKind::System,
                format!(
                    "could not record trace {}: the state writer stopped",
                    self.name
                ),
            )),
        }
    }

    fn failure(&self, e: &Error) -> Failure {
        e.to_failure(self.id.to_string(), self.name.to_string())
    }
}

fn rebuild(f: Failure) -> Error {
    let mut e = Error::with_kind(f.kind, f.message);
    for c in f.chain {
        e = e.context_below(c);
    }
    e
}

fn encode_error(name: &str, e: codec::Error) -> Error {
    Error::with_kind(ErrorKind::Codec, format!("trace {name}: {e}"))
}

/// Runs an async trace body (generated by `#[weir::trace]`).
#[doc(hidden)]
pub async fn trace_call<T, F>(
    name: &'static str,
    inputs: std::result::Result<Vec<u8>, codec::Error>,
    body: F,
) -> Result<T>
where
    T: Serialize + DeserializeOwned,
    F: Future<Output = Result<T>>,
{
    let Some(ctx) = current() else {
        return body.await;
    };
    let inputs = inputs.map_err(|e| encode_error(name, e))?;
    let (slot, recorded) = TraceSlot::open(ctx, name, inputs).await?;
    match recorded {
        Recorded::Output(bytes) => return codec::decode(&bytes).map_err(|e| encode_error(name, e)),
        Recorded::Failure(f) => return Err(rebuild(f)),
        Recorded::Nothing => {}
    }
    let started = now_us();
    let result = IN_TRACE.scope(name, body).await;
    match result {
        Ok(value) => {
            let bytes = codec::encode(&value).map_err(|e| encode_error(name, e))?;
            slot.record(started, Ok(bytes)).await?;
            Ok(value)
        }
        Err(e) => {
            let f = slot.failure(&e);
            slot.record(started, Err(f)).await?;
            Err(e)
        }
    }
}

/// Runs an infallible async trace body. A failure to record the checkpoint panics (the
/// function has no way to return it); make traces return `Result` to handle it.
#[doc(hidden)]
pub async fn trace_call_infallible<T, F>(
    name: &'static str,
    inputs: std::result::Result<Vec<u8>, codec::Error>,
    body: F,
) -> T
where
    T: Serialize + DeserializeOwned,
    F: Future<Output = T>,
{
    match trace_call(name, inputs, async move { Ok(body.await) }).await {
        Ok(v) => v,
        Err(e) => panic!("trace {name} could not be checkpointed: {e}"),
    }
}

/// Wraps a stream trace (generated by `#[weir::trace]` on a fn returning `impl Stream`): items
/// pass through while being buffered; at the end they are recorded; on replay the recorded
/// items are yielded and the stream is not run again.
#[doc(hidden)]
pub fn trace_stream<T, S, F>(
    name: &'static str,
    inputs: std::result::Result<Vec<u8>, codec::Error>,
    make: F,
) -> BoxStream<'static, T>
where
    T: Serialize + DeserializeOwned + Send + 'static,
    S: Stream<Item = T> + Send + 'static,
    F: FnOnce() -> S + Send + 'static,
{
    let Some(ctx) = current() else {
        return make().boxed();
    };
    enum State<T, F> {
        Start(Arc<TaskCtx>, std::result::Result<Vec<u8>, codec::Error>, F),
        Replay(std::vec::IntoIter<T>),
        Live(TraceSlot, BoxStream<'static, T>, Vec<rmpv::Value>, i64),
        Done,
    }
    stream::unfold(State::Start(ctx, inputs, make), move |state| async move {
        let mut state = state;
        loop {
            match state {
                State::Start(ctx, inputs, make) => {
                    let inputs = match inputs {
                        Ok(i) => i,
                        Err(e) => panic!("trace {name}: cannot encode its inputs: {e}"),
                    };
                    let (slot, recorded) = match TraceSlot::open(ctx, name, inputs).await {
                        Ok(x) => x,
                        Err(e) => panic!("trace {name}: {e}"),
                    };
                    state = match recorded {
                        Recorded::Output(bytes) => match codec::decode::<Vec<T>>(&bytes) {
                            Ok(items) => State::Replay(items.into_iter()),
                            Err(e) => panic!("trace {name}: recorded items do not decode: {e}"),
                        },
                        _ => State::Live(slot, make().boxed(), Vec::new(), now_us()),
                    };
                }
                State::Replay(mut items) => {
                    return items.next().map(|item| (item, State::Replay(items)));
                }
                State::Live(slot, mut inner, mut buffered, started) => match inner.next().await {
                    Some(item) => {
                        let value = codec::encode(&item)
                            .ok()
                            .and_then(|b| rmpv::decode::read_value(&mut b.as_slice()).ok())
                            .unwrap_or(rmpv::Value::Nil);
                        buffered.push(value);
                        return Some((item, State::Live(slot, inner, buffered, started)));
                    }
                    None => {
                        let mut bytes = Vec::new();
                        let _ =
                            rmpv::encode::write_value(&mut bytes, &rmpv::Value::Array(buffered));
                        if let Err(e) = slot.record(started, Ok(bytes)).await {
                            panic!("trace {name}: {e}");
                        }
                        state = State::Done;
                    }
                },
                State::Done => return None,
            }
        }
    })
    .boxed()
}

/// Durable time helpers built on traces: after a crash and resume they replay what they
/// recorded, so a sleep only waits for what is left of it.
pub mod durable {
    use std::time::{Duration, SystemTime, UNIX_EPOCH};

    use super::trace_call;
    use crate::Result;

    /// The current time, recorded on first execution and replayed after recovery.
    pub async fn now() -> Result<SystemTime> {
        let us: i64 = trace_call("weir.durable.now", weir_core::codec::encode(&()), async {
            Ok(weir_store::now_us())
        })
        .await?;
        Ok(UNIX_EPOCH + Duration::from_micros(us as u64))
    }

    /// Sleeps for `d`, durably: the wake-up time is recorded when the sleep starts, so a task
    /// resumed after a crash sleeps only for the remainder.
    pub async fn sleep(d: Duration) -> Result<()> {
        let millis = d.as_millis() as u64;
        let wake_at_us: i64 = trace_call(
            "weir.durable.sleep",
            weir_core::codec::encode(&millis),
            async move { Ok(weir_store::now_us() + d.as_micros() as i64) },
        )
        .await?;
        let left = wake_at_us - weir_store::now_us();
        if left > 0 {
            tokio::time::sleep(Duration::from_micros(left as u64)).await;
        }
        Ok(())
    }
}
