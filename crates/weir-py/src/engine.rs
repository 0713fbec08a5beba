//! The embedded engine and its runs, as the Python layer opens and waits on them.

use pyo3::exceptions::{PyRuntimeError, PyValueError};
use pyo3::prelude::*;
use pyo3::types::PyBytes;
use weir_engine::{CacheLookupScope, EngineOptions, RunContext};

use crate::bridge::{Event, bridge};
use crate::{Task, failed, runtime};

/// An engine: embedded, with its state in a directory.
#[pyclass(frozen, module = "weir._weir")]
pub(crate) struct Engine {
    engine: weir_engine::Engine,
}

#[pymethods]
impl Engine {
    /// Opens (creating if needed) the embedded engine whose state is in `state_dir`. With a
    /// `worker` command (`[python, "-m", "weir", "--import", ...]`), environments with a reuse
    /// policy run in worker processes started with it; the others in this process.
    #[staticmethod]
    #[pyo3(signature = (state_dir, worker=None))]
    fn open(py: Python<'_>, state_dir: String, worker: Option<Vec<String>>) -> PyResult<Engine> {
        let mut options = EngineOptions::new(std::path::Path::new(&state_dir));
        if let Some(mut command) = worker {
            if command.is_empty() {
                return Err(PyValueError::new_err("an empty worker command"));
            }
            options.executor = weir_engine::worker::ExecutorKind::Reusable;
            options.workers = options.workers.with_env_overrides();
            options.workers.program = Some(command.remove(0).into());
            options.workers.program_args = command;
        }
        let opened = py.detach(move || {
            runtime().block_on(async move { weir::Runner::with_options(options).await })
        });
        match opened {
            Ok(runner) => Ok(Engine {
                engine: runner.engine().clone(),
            }),
            Err(e) => Err(PyRuntimeError::new_err(e.to_string())),
        }
    }

    /// Starts a run of `task` on canonical `inputs`.
    #[pyo3(signature = (task, inputs, name=None, overwrite_cache=false, disable_cache=false, cache_lookup_scope="global", max_action_concurrency=None))]
    #[allow(clippy::too_many_arguments)]
    fn start_run(
        &self,
        py: Python<'_>,
        task: &Task,
        inputs: Vec<u8>,
        name: Option<String>,
        overwrite_cache: bool,
        disable_cache: bool,
        cache_lookup_scope: &str,
        max_action_concurrency: Option<usize>,
    ) -> PyResult<Run> {
        let scope = match cache_lookup_scope {
            "global" => CacheLookupScope::Global,
            "project-domain" | "project_domain" => CacheLookupScope::ProjectDomain,
            other => {
                return Err(PyValueError::new_err(format!(
                    "cache_lookup_scope {other:?}: use \"global\" or \"project-domain\""
                )));
            }
        };
        let mut context = RunContext::new()
            .overwrite_cache(overwrite_cache)
            .disable_cache(disable_cache)
            .cache_lookup_scope(scope);
        if let Some(n) = name {
            context = context.name(n);
        }
        if let Some(n) = max_action_concurrency {
            context = context.max_action_concurrency(n);
        }
        let engine = self.engine.clone();
        let def = task.def;
        let started = py.detach(move || {
            runtime().block_on(async move { engine.start_run(def, inputs, context).await })
        });
        match started {
            Ok(handle) => Ok(Run { handle }),
            Err(e) => Err(PyRuntimeError::new_err(e.to_string())),
        }
    }

    /// Resumes run `name` after its process died: what succeeded is not run again.
    fn resume(&self, py: Python<'_>, name: String) -> PyResult<Run> {
        let engine = self.engine.clone();
        let resumed = py.detach(move || {
            runtime().block_on(async move { engine.resume_run(&name, false).await })
        });
        match resumed {
            Ok(handle) => Ok(Run { handle }),
            Err(e) => Err(PyRuntimeError::new_err(e.to_string())),
        }
    }
}

/// A run started or resumed.
#[pyclass(frozen, module = "weir._weir")]
pub(crate) struct Run {
    handle: weir_engine::RunHandle,
}

#[pymethods]
impl Run {
    /// The run's name.
    #[getter]
    fn name(&self) -> &str {
        self.handle.name()
    }

    /// Whether it finished.
    fn is_done(&self) -> bool {
        self.handle.is_done()
    }

    /// Aborts it.
    fn abort(&self) {
        self.handle.abort()
    }

    /// Waits for the run's output (canonical bytes); raises `TaskFailed` when it failed.
    fn wait<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyBytes>> {
        let handle = self.handle.clone();
        let result = py.detach(move || runtime().block_on(async move { handle.wait_raw().await }));
        match result {
            Ok(bytes) => Ok(PyBytes::new(py, &bytes)),
            Err(e) => Err(failed(&e)),
        }
    }

    /// Waits without blocking: a `done` event for the returned token carries the output.
    fn wait_token(&self) -> u64 {
        let token = bridge().token();
        let handle = self.handle.clone();
        runtime().spawn(async move {
            let result = handle.wait_raw().await;
            bridge().push(Event::Done { token, result });
        });
        token
    }
}
