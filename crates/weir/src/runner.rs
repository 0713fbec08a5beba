//! `weir::Runner`: start runs from code (SPEC §2.6).

use std::path::Path;

use serde::de::DeserializeOwned;
use weir_engine::{Engine, EngineError, EngineOptions, Run, RunContext, TaskCall};

/// Starts and resumes runs. Embedded by default: state in a directory (SQLite + local object
/// store), tasks executed in this process.
#[derive(Clone, Debug)]
pub struct Runner {
    engine: Engine,
    context: RunContext,
}

impl Runner {
    /// An embedded runner with its state in `state_dir` (created if needed), e.g. `".weir"`.
    pub async fn embedded(state_dir: impl AsRef<Path>) -> Result<Runner, EngineError> {
        Runner::with_options(EngineOptions::new(state_dir.as_ref())).await
    }

    /// An embedded runner with explicit engine options.
    pub async fn with_options(options: EngineOptions) -> Result<Runner, EngineError> {
        let engine = match tokio::task::spawn_blocking(move || Engine::open(options)).await {
            Ok(opened) => opened?,
            Err(e) => std::panic::resume_unwind(e.into_panic()),
        };
        Ok(Runner {
            engine,
            context: RunContext::default(),
        })
    }

    /// A runner that submits runs to a control plane (`weir serve`) at `servers` (a URL, or
    /// several replicas' comma-separated) with the cluster `token`; the runs' actions execute
    /// on its workers of this binary's version (`<binary> worker --server URL --env NAME`).
    pub fn remote(servers: &str, token: &str) -> Result<crate::RemoteRunner, EngineError> {
        crate::RemoteRunner::new(servers, token)
    }

    /// A runner on an existing engine.
    pub fn from_engine(engine: Engine) -> Runner {
        Runner {
            engine,
            context: RunContext::default(),
        }
    }

    /// The same runner with a run context for the runs it starts.
    pub fn with_context(&self, context: RunContext) -> Runner {
        Runner {
            engine: self.engine.clone(),
            context,
        }
    }

    /// The engine.
    pub fn engine(&self) -> &Engine {
        &self.engine
    }

    /// Starts a run of a task call: `runner.run(my_task(args)).await?`, then `run.wait().await?`.
    pub async fn run<O: DeserializeOwned>(&self, call: TaskCall<O>) -> Result<Run<O>, EngineError> {
        let (def, inputs) = call.into_parts();
        let inputs = inputs.map_err(|e| {
            EngineError::Encode(format!(
                "cannot encode the inputs of task {}: {e}",
                def.full_name()
            ))
        })?;
        Ok(self
            .engine
            .start_run(def, inputs, self.context.clone())
            .await?
            .typed())
    }

    /// Resumes a run whose process died; succeeded actions are not run again.
    pub async fn resume<O: DeserializeOwned>(&self, name: &str) -> Result<Run<O>, EngineError> {
        Ok(self.engine.resume_run(name, false).await?.typed())
    }
}
