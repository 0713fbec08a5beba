//! `Runner::remote`: start runs on a control plane (`weir serve`) from code. The run's
//! actions execute on the control plane's workers (of this binary's version); this process only
//! submits and follows.

use std::marker::PhantomData;
use std::time::Duration;

use serde::de::DeserializeOwned;
use weir_engine::cluster::{ClusterClient, RunSubmission, RunView, binary_version, local_specs};
use weir_engine::{EngineError, RunContext, TaskCall};

/// Starts runs on a control plane. Made by [`crate::Runner::remote`].
pub struct RemoteRunner {
    clients: Vec<ClusterClient>,
    context: RunContext,
}

impl std::fmt::Debug for RemoteRunner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RemoteRunner")
            .field("replicas", &self.clients.len())
            .finish()
    }
}

impl RemoteRunner {
    pub(crate) fn new(servers: &str, token: &str) -> Result<RemoteRunner, EngineError> {
        let clients: Vec<ClusterClient> = servers
            .split(',')
            .map(str::trim)
            .filter(|u| !u.is_empty())
            .map(|u| ClusterClient::new(u, token))
            .collect();
        if clients.is_empty() {
            return Err(EngineError::Config(
                "Runner::remote needs the URL of a control plane".into(),
            ));
        }
        Ok(RemoteRunner {
            clients,
            context: RunContext::default(),
        })
    }

    /// The same runner with a run context for the runs it starts.
    pub fn with_context(mut self, context: RunContext) -> RemoteRunner {
        self.context = context;
        self
    }

    /// Submits a run of a task call; `run.wait().await` follows it to its end.
    pub async fn run<O: DeserializeOwned>(
        &self,
        call: TaskCall<O>,
    ) -> Result<RemoteRun<'_, O>, EngineError> {
        let (def, inputs) = call.into_parts();
        let inputs = inputs.map_err(|e| {
            EngineError::Encode(format!(
                "cannot encode the inputs of task {}: {e}",
                def.full_name()
            ))
        })?;
        let sub = RunSubmission {
            task: def.full_name().to_string(),
            inputs,
            context: serde_json::to_string(&self.context)
                .map_err(|e| EngineError::Encode(e.to_string()))?,
            version: binary_version().map_err(EngineError::System)?,
            tasks: local_specs(),
            rerun: None,
        };
        let view = self.first(|c| Box::pin(c.submit(&sub))).await?;
        Ok(RemoteRun {
            runner: self,
            name: view.name,
            _output: PhantomData,
        })
    }

    /// Calls the first replica that answers.
    async fn first<'a, T>(
        &'a self,
        call: impl Fn(&'a ClusterClient) -> futures::future::BoxFuture<'a, Result<T, String>>,
    ) -> Result<T, EngineError> {
        let mut last = String::new();
        for c in &self.clients {
            match call(c).await {
                Err(e) if e.starts_with("cannot reach") => last = e,
                Ok(v) => return Ok(v),
                Err(e) if e.contains("HTTP 409") => return Err(EngineError::RunExists(e)),
                Err(e) if e.contains("HTTP 400") => return Err(EngineError::Config(e)),
                Err(e) => return Err(EngineError::System(e)),
            }
        }
        Err(EngineError::System(last))
    }
}

/// A run on a control plane.
pub struct RemoteRun<'r, O> {
    runner: &'r RemoteRunner,
    name: String,
    _output: PhantomData<fn() -> O>,
}

impl<O: DeserializeOwned> RemoteRun<'_, O> {
    /// The run's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The run as the control plane sees it now.
    pub async fn view(&self) -> Result<RunView, EngineError> {
        let name = &self.name;
        self.runner
            .first(|c| Box::pin(c.run(name, Duration::ZERO)))
            .await
    }

    /// Waits for the run to end: its output, or the error of what failed.
    pub async fn wait(&self) -> crate::Result<O> {
        let name = &self.name;
        let system = |e: EngineError| crate::Error::with_kind(crate::ErrorKind::System, e);
        let view = loop {
            let v = self
                .runner
                .first(|c| Box::pin(c.run(name, Duration::from_secs(5))))
                .await
                .map_err(system)?;
            if v.is_terminal() {
                break v;
            }
        };
        match (view.status.as_str(), view.output, view.error) {
            ("succeeded", Some(bytes), _) => weir_core::codec::decode(&bytes).map_err(|e| {
                crate::Error::with_kind(
                    crate::ErrorKind::Codec,
                    format!("the output of run {name}: {e}"),
                )
            }),
            (_, _, Some(f)) => Err(crate::Error::with_kind(f.kind, f.message)),
            (status, _, None) => Err(crate::Error::with_kind(
                crate::ErrorKind::Cancelled,
                format!("run {name} {status}"),
            )),
        }
    }

    /// Aborts the run.
    pub async fn abort(&self) -> Result<(), EngineError> {
        let name = &self.name;
        self.runner.first(|c| Box::pin(c.abort(name))).await?;
        Ok(())
    }
}
