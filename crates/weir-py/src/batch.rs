//! `weir.extras.DynamicBatcher` on `weir-batch`: the Rust batcher assembles batches (cost
//! budget, size cap, timeout, queue backpressure, prefetch) and keeps the statistics; the
//! Python side keeps the records and their futures and runs the user's `process_fn` on its
//! loop. One record crosses as an id; one batch is one call into Python.

use std::sync::Arc;
use std::time::Duration;

use pyo3::exceptions::{PyRuntimeError, PyValueError};
use pyo3::prelude::*;
use pyo3::types::PyDict;
use weir_batch::{BatchOptions, CostEstimator, DynamicBatcher};

use crate::runtime;

/// A record: its id on the Python side.
struct Rec(u64);

impl CostEstimator for Rec {}

/// The Python loop and the method that runs one batch there:
/// `dispatch(batch_token, ids)`, answered with `Batcher.batch_done`.
struct Target {
    loop_: Py<PyAny>,
    dispatch: Py<PyAny>,
}

/// Batches in flight in Python: where their outcome goes.
type Waiting = parking_lot::Mutex<
    std::collections::HashMap<u64, tokio::sync::oneshot::Sender<Result<(), String>>>,
>;

/// A running batcher.
#[pyclass(frozen, module = "weir._weir")]
pub struct Batcher {
    inner: DynamicBatcher<Rec, ()>,
    waiting: Arc<Waiting>,
}

#[pymethods]
impl Batcher {
    /// Starts a batcher whose batches run as `dispatch(token, ids)` on `loop_`.
    #[new]
    #[pyo3(signature = (loop_, dispatch, target_batch_cost, max_batch_size, min_batch_size, batch_timeout_s, max_queue_size, prefetch_batches, default_cost))]
    #[allow(clippy::too_many_arguments)]
    fn new(
        loop_: Py<PyAny>,
        dispatch: Py<PyAny>,
        target_batch_cost: u64,
        max_batch_size: usize,
        min_batch_size: usize,
        batch_timeout_s: f64,
        max_queue_size: usize,
        prefetch_batches: usize,
        default_cost: u64,
    ) -> PyResult<Batcher> {
        if !(batch_timeout_s >= 0.0 && batch_timeout_s.is_finite()) {
            return Err(PyValueError::new_err(format!(
                "batch_timeout_s must be >= 0 seconds, not {batch_timeout_s}"
            )));
        }
        for (name, value) in [
            ("max_batch_size", max_batch_size),
            ("max_queue_size", max_queue_size),
            ("prefetch_batches", prefetch_batches),
        ] {
            if value == 0 {
                return Err(PyValueError::new_err(format!("{name} must be at least 1")));
            }
        }
        if min_batch_size == 0 || min_batch_size > max_batch_size {
            return Err(PyValueError::new_err(format!(
                "min_batch_size must be between 1 and max_batch_size ({max_batch_size}), not {min_batch_size}"
            )));
        }
        let mut options = BatchOptions::default();
        options.target_batch_cost = target_batch_cost;
        options.max_batch_size = max_batch_size;
        options.min_batch_size = min_batch_size;
        options.batch_timeout = Duration::from_secs_f64(batch_timeout_s);
        options.max_queue_size = max_queue_size;
        options.prefetch_batches = prefetch_batches;
        options.default_cost = default_cost;
        let target = Arc::new(Target { loop_, dispatch });
        let waiting: Arc<Waiting> = Arc::default();
        let batch_waiting = waiting.clone();
        let mut next = 0u64;
        let _entered = runtime().enter();
        let inner = DynamicBatcher::<Rec, ()>::builder()
            .with_options(options)
            .start(move |batch: Vec<Rec>| {
                next += 1;
                let token = next;
                let n = batch.len();
                let (tx, rx) = tokio::sync::oneshot::channel();
                batch_waiting.lock().insert(token, tx);
                let target = target.clone();
                let ids: Vec<u64> = batch.into_iter().map(|r| r.0).collect();
                let sent = Python::attach(|py| {
                    target.loop_.call_method1(
                        py,
                        "call_soon_threadsafe",
                        (target.dispatch.clone_ref(py), token, ids),
                    )
                });
                async move {
                    if let Err(e) = sent {
                        return Err(format!("the batch's event loop is gone: {e}"));
                    }
                    match rx.await {
                        Ok(Ok(())) => Ok(vec![(); n]),
                        Ok(Err(message)) => Err(message),
                        Err(_) => Err("the batch was dropped by its event loop".to_string()),
                    }
                }
            });
        Ok(Batcher { inner, waiting })
    }

    /// Queues record `id` with `cost`. True when it was accepted at once; otherwise the queue
    /// is full and `on_accepted(ok, message)` is called on `loop_` once it was (backpressure).
    fn submit(
        &self,
        id: u64,
        cost: u64,
        loop_: Py<PyAny>,
        on_accepted: Py<PyAny>,
    ) -> PyResult<bool> {
        use futures::FutureExt;
        let _entered = runtime().enter();
        let batcher = self.inner.clone();
        let mut submit = Box::pin(async move { batcher.submit_with_cost(Rec(id), cost).await });
        match (&mut submit).now_or_never() {
            Some(Ok(ticket)) => {
                // The ticket is held until the record's batch ran (dropping it would cancel
                // the record); its outcome reaches Python through the batch.
                runtime().spawn(async move {
                    let _ = ticket.await;
                });
                Ok(true)
            }
            Some(Err(e)) => Err(PyRuntimeError::new_err(e.to_string())),
            None => {
                runtime().spawn(async move {
                    let outcome = match submit.await {
                        Ok(ticket) => {
                            tokio::spawn(async move {
                                let _ = ticket.await;
                            });
                            (true, String::new())
                        }
                        Err(e) => (false, e.to_string()),
                    };
                    Python::attach(|py| {
                        let _ = loop_.call_method1(
                            py,
                            "call_soon_threadsafe",
                            (on_accepted, outcome.0, outcome.1),
                        );
                    });
                });
                Ok(false)
            }
        }
    }

    /// The outcome of batch `token`: its records' futures were resolved in Python.
    #[pyo3(signature = (token, error=None))]
    fn batch_done(&self, token: u64, error: Option<String>) {
        if let Some(tx) = self.waiting.lock().remove(&token) {
            let _ = tx.send(error.map_or(Ok(()), Err));
        }
    }

    /// Stops accepting records and waits until every submitted one was processed. Blocks the
    /// calling thread (call it off the loop, which must keep running the batches).
    fn stop(&self, py: Python<'_>) {
        let batcher = self.inner.clone();
        py.detach(move || runtime().block_on(async move { batcher.stop().await }));
    }

    /// Whether it accepts no more records.
    fn is_stopped(&self) -> bool {
        self.inner.is_stopped()
    }

    /// The counters, as a dict.
    fn stats<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyDict>> {
        let s = self.inner.stats();
        let d = PyDict::new(py);
        d.set_item("total_submitted", s.total_submitted)?;
        d.set_item("total_completed", s.total_completed)?;
        d.set_item("total_failed", s.total_failed)?;
        d.set_item("total_cancelled", s.total_cancelled)?;
        d.set_item("total_batches", s.total_batches)?;
        d.set_item("total_cost", s.total_cost)?;
        d.set_item("avg_batch_size", s.avg_batch_size)?;
        d.set_item("avg_batch_cost", s.avg_batch_cost)?;
        d.set_item("busy_time_s", s.busy_time.as_secs_f64())?;
        d.set_item("idle_time_s", s.idle_time.as_secs_f64())?;
        d.set_item("utilization", s.utilization)?;
        d.set_item("queued", s.queued)?;
        Ok(d)
    }
}
