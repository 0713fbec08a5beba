//! `weir._weir`: the native module of weir's Python package.
//!
//! It registers Python functions as weir tasks (`weir_engine::registry::register`), runs them
//! on weir's engine (embedded: SQLite + local object store), and carries a task body's child
//! calls and traces to the engine. The Python layer (`python/weir`) builds the Flyte-shaped API
//! on it. See `bridge` for how engine threads and the Python event loop talk.

mod batch;
mod bridge;
mod engine;
mod values;

use std::sync::{Arc, OnceLock};
use std::time::Duration;

use pyo3::exceptions::{PyException, PyRuntimeError, PyValueError};
use pyo3::prelude::*;
use pyo3::types::{PyBytes, PyList, PyTuple};
use weir_core::ErrorKind;
use weir_core::spec::{
    Cache, CacheBehavior, Resources, RetryPolicy, ReusePolicy, TaskEnvironment, Timeouts,
};
use weir_engine::registry::{DynamicTask, TaskConfig, TaskDef};
use weir_engine::{CapturedContext, Error, TraceStart};

use bridge::{CancelOnDrop, Event, bridge};

pyo3::create_exception!(
    _weir,
    TaskFailed,
    PyException,
    "A task, trace or run failed: args are (kind, message)."
);

/// The tokio runtime of the engines this process opens.
fn runtime() -> &'static tokio::runtime::Runtime {
    static RT: OnceLock<tokio::runtime::Runtime> = OnceLock::new();
    RT.get_or_init(|| {
        tokio::runtime::Builder::new_multi_thread()
            .enable_all()
            .thread_name("weir-engine")
            .build()
            .expect("the tokio runtime of weir's Python front")
    })
}

fn failed(e: &Error) -> PyErr {
    TaskFailed::new_err((e.kind().as_str(), e.to_string(), child_json(e)))
}

/// The failed child's record behind an error, as JSON: handed back with the error of a body
/// that let it through, so that the parent is retried only when the child's kind allows it.
fn child_json(e: &Error) -> Option<String> {
    e.child().and_then(|f| serde_json::to_string(f).ok())
}

fn kind_from(name: &str) -> ErrorKind {
    match name {
        "non_recoverable" => ErrorKind::NonRecoverable,
        "timeout" => ErrorKind::Timeout,
        "deadline" => ErrorKind::Deadline,
        "too_large" => ErrorKind::TooLarge,
        "codec" => ErrorKind::Codec,
        "child_failed" => ErrorKind::ChildFailed,
        "cancelled" => ErrorKind::Cancelled,
        "system" => ErrorKind::System,
        "panic" => ErrorKind::Panic,
        _ => ErrorKind::User,
    }
}

/// A Python error payload `(kind, message[, child failure JSON])` as an engine error.
fn error_from(payload: &Bound<'_, PyAny>) -> Error {
    if let Ok((_, _, Some(child))) = payload.extract::<(String, String, Option<String>)>() {
        if let Ok(failure) = serde_json::from_str::<weir_core::Failure>(&child) {
            return Error::from_child(failure);
        }
    }
    match payload.extract::<(String, String)>() {
        Ok((kind, message)) => Error::with_kind(kind_from(&kind), message),
        Err(_) => match payload.extract::<(String, String, Option<String>)>() {
            Ok((kind, message, _)) => Error::with_kind(kind_from(&kind), message),
            Err(_) => Error::with_kind(ErrorKind::User, payload.to_string()),
        },
    }
}

/// A registered task.
#[pyclass(frozen, module = "weir._weir")]
struct Task {
    def: &'static TaskDef,
}

#[pymethods]
impl Task {
    /// `<env>.<name>`.
    #[getter]
    fn full_name(&self) -> &str {
        self.def.full_name()
    }
}

/// A reuse policy from Python: `(min replicas, max replicas, concurrency, idle_ttl s,
/// scaledown_ttl s)`.
type ReuseSpec = (usize, usize, usize, Option<f64>, Option<f64>);

/// Cache settings from Python: `(behavior, version, ignored_inputs, salt)`.
type CacheSpec = (String, Option<String>, Vec<String>, String);

fn cache_from(spec: CacheSpec) -> PyResult<Cache> {
    let (behavior, version, ignored, salt) = spec;
    let behavior = match (behavior.as_str(), version) {
        ("disable", _) => CacheBehavior::Disable,
        ("auto", None) => CacheBehavior::Auto,
        ("auto" | "override", Some(v)) => CacheBehavior::Override(v),
        ("override", None) => {
            return Err(PyValueError::new_err(
                "cache behavior \"override\" needs version_override",
            ));
        }
        (other, _) => {
            return Err(PyValueError::new_err(format!(
                "unknown cache behavior {other:?}: use \"auto\", \"override\" or \"disable\""
            )));
        }
    };
    Ok(Cache {
        behavior,
        ignored_inputs: ignored,
        salt,
    })
}

/// Registers a Python function as a task. Its body runs on the Python loop: the engine asks
/// for it with a `start` event naming `<env>.<name>`.
#[pyfunction]
#[pyo3(signature = (name, module, env_name, params, source_hash, interface, retries=0, timeout_s=None, cache=None, env_cache=None, inline_limit=None, env_inline_limit=None, resources=None, reuse=None))]
#[allow(clippy::too_many_arguments)]
fn register_task(
    name: String,
    module: String,
    env_name: String,
    params: Vec<String>,
    source_hash: String,
    interface: String,
    retries: u32,
    timeout_s: Option<f64>,
    cache: Option<CacheSpec>,
    env_cache: Option<CacheSpec>,
    inline_limit: Option<u64>,
    env_inline_limit: Option<u64>,
    resources: Option<(Option<f64>, Option<String>, Option<String>)>,
    reuse: Option<ReuseSpec>,
) -> PyResult<Task> {
    let mut env = TaskEnvironment::new(env_name.clone());
    if let Some((min, max, concurrency, idle_ttl, scaledown_ttl)) = reuse {
        if min > max || max == 0 || concurrency == 0 {
            return Err(PyValueError::new_err(format!(
                "ReusePolicy of environment {env_name}: replicas ({min}, {max}) and concurrency {concurrency} must be at least 1, with min <= max"
            )));
        }
        let mut policy = ReusePolicy::new()
            .replicas(min..=max)
            .concurrency(concurrency);
        if let Some(s) = idle_ttl {
            policy = policy.idle_ttl(Duration::from_secs_f64(s));
        }
        if let Some(s) = scaledown_ttl {
            policy = policy.scaledown_ttl(Duration::from_secs_f64(s));
        }
        env = env.reuse(policy);
    }
    if let Some(c) = env_cache {
        env = env.cache(cache_from(c)?);
    }
    if let Some(n) = env_inline_limit {
        env = env.max_inline_io(n);
    }
    if let Some((cpu, memory, gpu)) = resources {
        let mut r = Resources::new();
        if let Some(c) = cpu {
            r = r.cpu(c);
        }
        if let Some(m) = memory {
            r = r.memory(m);
        }
        if let Some(g) = gpu {
            r = r.gpu(g);
        }
        env = env.resources(r);
    }
    let mut timeouts = Timeouts::new();
    if let Some(t) = timeout_s {
        if !(t > 0.0 && t.is_finite()) {
            return Err(PyValueError::new_err(format!(
                "timeout of task {name} must be a positive number of seconds, not {t}"
            )));
        }
        timeouts = timeouts.max_runtime(Duration::from_secs_f64(t));
    }
    let config = TaskConfig {
        retry: RetryPolicy::retries(retries),
        timeouts,
        max_inline_io: inline_limit,
        cache: cache.map(cache_from).transpose()?,
        short_name: None,
    };
    let full: Arc<str> = format!("{env_name}.{name}").into();
    let invoke: weir_engine::registry::DynInvoke = Arc::new(move |inputs| {
        let task = full.clone();
        Box::pin(async move {
            let ctx = weir_engine::capture_context().ok_or_else(|| {
                Error::with_kind(
                    ErrorKind::System,
                    "a Python task ran outside a task context",
                )
            })?;
            let b = bridge();
            let token = b.token();
            let (tx, rx) = tokio::sync::oneshot::channel();
            b.starts.lock().insert(token, tx);
            let mut guard = CancelOnDrop { token, armed: true };
            b.push(Event::Start {
                token,
                task,
                ctx,
                handle: tokio::runtime::Handle::current(),
                inputs,
            });
            let result = rx.await;
            guard.armed = false;
            result.unwrap_or_else(|_| {
                Err(Error::with_kind(
                    ErrorKind::System,
                    "the Python loop stopped before the task finished",
                ))
            })
        })
    });
    let def = weir_engine::registry::register(DynamicTask {
        name,
        module,
        env,
        config,
        params,
        source_hash,
        interface,
        invoke,
    })
    .map_err(|e| PyValueError::new_err(e.to_string()))?;
    Ok(Task { def })
}

/// Registers a trace name; returns it.
#[pyfunction]
fn register_trace(name: &str, module: &str) -> PyResult<String> {
    weir_engine::registry::register_trace(name, module)
        .map(str::to_string)
        .map_err(|e| PyValueError::new_err(e.to_string()))
}

fn trace_name(name: &str) -> PyResult<&'static str> {
    weir_engine::registry::trace_name(name).ok_or_else(|| {
        PyValueError::new_err(format!(
            "trace {name} is not registered (decorate it with @weir.trace)"
        ))
    })
}

/// The context of a running task attempt, handed to its Python body.
#[pyclass(frozen, module = "weir._weir")]
struct Context {
    ctx: CapturedContext,
    handle: tokio::runtime::Handle,
}

#[pymethods]
impl Context {
    /// `(run, action, task, attempt)`.
    fn info(&self) -> (String, String, String, u32) {
        let i = self.ctx.info();
        (i.run, i.action.to_string(), i.task, i.attempt)
    }

    /// Calls `task` as a child with canonical `inputs`; the result arrives as a `done` event
    /// for the returned token.
    #[pyo3(signature = (task, inputs, group=None))]
    fn call(&self, task: &Task, inputs: Vec<u8>, group: Option<String>) -> u64 {
        let b = bridge();
        let token = b.token();
        let ctx = self.ctx.clone();
        let def = task.def;
        let mut calls = b.calls.lock();
        let join = self.handle.spawn(async move {
            let result = ctx.call(def, inputs, group.map(Into::into)).await;
            let b = bridge();
            b.calls.lock().remove(&token);
            b.push(Event::Done { token, result });
        });
        calls.insert(token, join.abort_handle());
        token
    }

    /// Calls `task` as a child and blocks this thread (not the loop's) until it finished: for
    /// plain `def` task bodies, which run on threads of their own.
    #[pyo3(signature = (task, inputs, group=None))]
    fn call_blocking<'py>(
        &self,
        py: Python<'py>,
        task: &Task,
        inputs: Vec<u8>,
        group: Option<String>,
    ) -> PyResult<Bound<'py, PyBytes>> {
        let ctx = self.ctx.clone();
        let def = task.def;
        let handle = self.handle.clone();
        let result =
            py.detach(move || handle.block_on(ctx.call(def, inputs, group.map(Into::into))));
        match result {
            Ok(bytes) => Ok(PyBytes::new(py, &bytes)),
            Err(e) => Err(failed(&e)),
        }
    }

    /// Uploads the file (or, with `dir`, the directory tree) at `path` into the engine's object
    /// store as reference data; a `done` event for the returned token carries the reference
    /// (canonical bytes of a `weir::File` / `weir::Dir`).
    fn upload(&self, path: String, dir: bool) -> u64 {
        let token = bridge().token();
        let ctx = self.ctx.clone();
        self.handle.spawn(async move {
            let result = ctx
                .scope(async {
                    let encoded = if dir {
                        weir::Dir::from_path(&path)
                            .await
                            .map(|d| weir_core::codec::encode(&d))?
                    } else {
                        weir::File::from_path(&path)
                            .await
                            .map(|f| weir_core::codec::encode(&f))?
                    };
                    encoded.map(Arc::from).map_err(|e| {
                        Error::with_kind(
                            ErrorKind::Codec,
                            format!("cannot encode a reference: {e}"),
                        )
                    })
                })
                .await;
            bridge().push(Event::Done { token, result });
        });
        token
    }

    /// Downloads the file or directory `reference` (canonical bytes of a `weir::File` or
    /// `weir::Dir`) to `path`, checking its hash; a `done` event for the returned token says
    /// when it is there.
    fn download(&self, reference: Vec<u8>, path: String) -> PyResult<u64> {
        enum Ref {
            File(weir::File),
            Dir(weir::Dir),
        }
        let parsed = weir_core::codec::decode::<weir::File>(&reference)
            .map(Ref::File)
            .or_else(|_| weir_core::codec::decode::<weir::Dir>(&reference).map(Ref::Dir))
            .map_err(|e| PyValueError::new_err(format!("not a File or Dir reference: {e}")))?;
        let token = bridge().token();
        let ctx = self.ctx.clone();
        self.handle.spawn(async move {
            let result = ctx
                .scope(async {
                    match parsed {
                        Ref::File(f) => f.download(&path).await,
                        Ref::Dir(d) => d.download(&path).await,
                    }
                })
                .await
                .map(|()| Arc::from(&[][..]));
            bridge().push(Event::Done { token, result });
        });
        Ok(token)
    }

    /// Opens trace `name` with canonical `inputs`: a `trace` event for the returned token says
    /// whether to replay or run it.
    fn open_trace(&self, name: &str, inputs: Vec<u8>) -> PyResult<u64> {
        let name = trace_name(name)?;
        let b = bridge();
        let token = b.token();
        let ctx = self.ctx.clone();
        let handle = self.handle.clone();
        self.handle.spawn(async move {
            let result = ctx.open_trace(name, inputs).await;
            bridge().push(Event::TraceOpened {
                token,
                result,
                handle,
            });
        });
        Ok(token)
    }
}

/// Finishes the body started as `token`: `ok` with canonical output bytes, or not with a
/// `(kind, message)` payload.
#[pyfunction]
fn complete(token: u64, ok: bool, payload: &Bound<'_, PyAny>) -> PyResult<()> {
    let result = if ok {
        Ok(payload.extract::<Vec<u8>>()?)
    } else {
        Err(error_from(payload))
    };
    if let Some(tx) = bridge().starts.lock().remove(&token) {
        let _ = tx.send(result);
    }
    Ok(())
}

/// Records the outcome of the trace opened as `token`; a `done` event for the returned token
/// says when it is committed.
#[pyfunction]
fn finish_trace(token: u64, ok: bool, payload: &Bound<'_, PyAny>) -> PyResult<u64> {
    let outcome = if ok {
        Ok(payload.extract::<Vec<u8>>()?)
    } else {
        Err(error_from(payload))
    };
    let b = bridge();
    let (open, handle) = b
        .traces
        .lock()
        .remove(&token)
        .ok_or_else(|| PyRuntimeError::new_err(format!("no open trace {token}")))?;
    let done = b.token();
    handle.spawn(async move {
        let result = open.finish(outcome).await.map(|()| Arc::from(&[][..]));
        bridge().push(Event::Done {
            token: done,
            result,
        });
    });
    Ok(done)
}

/// Drops the trace opened as `token` without recording it (its body was cancelled, or a
/// generator's consumer stopped early): a retry runs it again.
#[pyfunction]
fn abandon_trace(token: u64) {
    bridge().traces.lock().remove(&token);
}

/// Abandons the child call `token` (its Python future was cancelled): the child is cancelled.
#[pyfunction]
fn cancel_call(token: u64) {
    if let Some(h) = bridge().calls.lock().remove(&token) {
        h.abort();
    }
}

/// Waits up to `max_us` microseconds for an event without sleeping, with the GIL released.
#[pyfunction]
fn spin_wait(py: Python<'_>, max_us: u64) -> bool {
    py.detach(move || bridge().spin_wait(Duration::from_micros(max_us)))
}

/// The socket the Python loop watches for events.
#[pyfunction]
fn wake_fd() -> i32 {
    bridge().wake_fd()
}

fn error_payload<'py>(py: Python<'py>, e: &Error) -> PyResult<Bound<'py, PyTuple>> {
    (e.kind().as_str(), e.to_string(), child_json(e)).into_pyobject(py)
}

/// Every pending event, as tuples: `("start", token, task, context, inputs)`,
/// `("cancel", token)`, `("done", token, ok, bytes | (kind, message))`,
/// `("trace", token, "replay" | "failed" | "run", payload)`.
#[pyfunction]
fn drain(py: Python<'_>) -> PyResult<Bound<'_, PyList>> {
    let events = bridge().drain();
    let out = PyList::empty(py);
    for event in events {
        let item: Bound<'_, PyTuple> = match event {
            Event::Start {
                token,
                task,
                ctx,
                handle,
                inputs,
            } => (
                "start",
                token,
                task.to_string(),
                Context { ctx, handle },
                PyBytes::new(py, &inputs),
            )
                .into_pyobject(py)?,
            Event::Cancel { token } => ("cancel", token).into_pyobject(py)?,
            Event::Done { token, result } => match result {
                Ok(bytes) => ("done", token, true, PyBytes::new(py, &bytes)).into_pyobject(py)?,
                Err(e) => ("done", token, false, error_payload(py, &e)?).into_pyobject(py)?,
            },
            Event::TraceOpened {
                token,
                result,
                handle,
            } => match result {
                Ok(TraceStart::Replay(bytes)) => {
                    ("trace", token, "replay", PyBytes::new(py, &bytes)).into_pyobject(py)?
                }
                Ok(TraceStart::Failed(e)) => {
                    ("trace", token, "failed", error_payload(py, &e)?).into_pyobject(py)?
                }
                Ok(TraceStart::Run(open)) => {
                    bridge().traces.lock().insert(token, (open, handle));
                    ("trace", token, "run", py.None()).into_pyobject(py)?
                }
                Err(e) => ("trace", token, "failed", error_payload(py, &e)?).into_pyobject(py)?,
            },
        };
        out.append(item)?;
    }
    Ok(out)
}

/// Encodes a Python value canonically (`what` names it in errors).
#[pyfunction]
#[pyo3(signature = (value, what="value"))]
fn encode<'py>(
    py: Python<'py>,
    value: &Bound<'py, PyAny>,
    what: &str,
) -> PyResult<Bound<'py, PyBytes>> {
    Ok(PyBytes::new(py, &values::encode(value, what)?))
}

/// Decodes MessagePack bytes into plain Python values.
#[pyfunction]
#[pyo3(signature = (data, what="value"))]
fn decode<'py>(py: Python<'py>, data: &[u8], what: &str) -> PyResult<Bound<'py, PyAny>> {
    values::decode(py, data, what)
}

/// Runs weir's command line with `argv` (without the program name); returns the exit code.
#[pyfunction]
fn cli(py: Python<'_>, argv: Vec<String>) -> i32 {
    py.detach(move || {
        i32::from(weir::cli::main_with(
            std::iter::once("weir".to_string()).chain(argv),
        ))
    })
}

/// The `weir._weir` module.
#[pymodule]
fn _weir(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add("TaskFailed", m.py().get_type::<TaskFailed>())?;
    m.add_class::<Task>()?;
    m.add_class::<Context>()?;
    m.add_class::<engine::Engine>()?;
    m.add_class::<engine::Run>()?;
    m.add_class::<batch::Batcher>()?;
    m.add_function(wrap_pyfunction!(register_task, m)?)?;
    m.add_function(wrap_pyfunction!(register_trace, m)?)?;
    m.add_function(wrap_pyfunction!(complete, m)?)?;
    m.add_function(wrap_pyfunction!(finish_trace, m)?)?;
    m.add_function(wrap_pyfunction!(cancel_call, m)?)?;
    m.add_function(wrap_pyfunction!(abandon_trace, m)?)?;
    m.add_function(wrap_pyfunction!(wake_fd, m)?)?;
    m.add_function(wrap_pyfunction!(spin_wait, m)?)?;
    m.add_function(wrap_pyfunction!(drain, m)?)?;
    m.add_function(wrap_pyfunction!(encode, m)?)?;
    m.add_function(wrap_pyfunction!(decode, m)?)?;
    m.add_function(wrap_pyfunction!(cli, m)?)?;
    Ok(())
}
