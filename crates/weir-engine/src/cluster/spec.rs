//! What the control plane knows of a task without its code: the settings of each task of a
//! code version, sent by the binary that has the code (a worker registering, a client
//! submitting a run) and kept in the store under the version, so that every replica decides
//! retries, caching and inline limits as the embedded engine would.

use std::collections::HashMap;
use std::sync::OnceLock;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use weir_core::cache::CacheKeyParts;
use weir_core::spec::RetryPolicy;

use crate::registry::{self, TaskDef};

/// The settings of one task, as the control plane needs them.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct TaskSpec {
    /// Full name (`env.task`).
    pub name: String,
    /// Its environment.
    pub env: String,
    /// Retries after the first attempt.
    pub retries: u32,
    /// Backoff: first wait (µs), growth, largest wait (µs).
    pub backoff: (u64, f64, u64),
    /// The task's `max_runtime` (µs): enforced by the worker running the attempt.
    pub max_runtime_us: Option<u64>,
    /// Whether the task has a `max_queued` or `deadline` timeout.
    pub has_timeouts: bool,
    /// Inline limit of inputs and output (bytes).
    pub inline_limit: u64,
    /// The cache version, parameters left out of the key and salt, when cached.
    pub cache: Option<(String, Vec<String>, String)>,
    /// Parameter names and types and the output type (part of cache keys).
    pub interface: String,
    /// The environment's `max_concurrency`, if any.
    pub max_concurrency: Option<usize>,
    /// The environment's reuse policy: fewest and most workers, slots per worker.
    pub reuse: Option<(usize, usize, usize)>,
}

impl TaskSpec {
    /// The spec of a registered task.
    pub fn of(def: &TaskDef) -> TaskSpec {
        let config = def.config();
        let env = def.environment();
        let policy = config.cache.as_ref().unwrap_or(env.cache_policy());
        let cache = crate::decide::cache_version(false, policy, def.source_hash)
            .map(|v| (v, policy.ignored_inputs.clone(), policy.salt.clone()));
        let t = &config.timeouts;
        TaskSpec {
            name: def.full_name().to_string(),
            env: env.name().to_string(),
            retries: config.retry.retries,
            backoff: (
                config.retry.base.as_micros() as u64,
                config.retry.factor,
                config.retry.cap.as_micros() as u64,
            ),
            max_runtime_us: t.max_runtime.map(|d| d.as_micros() as u64),
            has_timeouts: t.max_queued.is_some() || t.deadline.is_some(),
            inline_limit: def.inline_limit(),
            cache,
            interface: def.interface.to_string(),
            max_concurrency: env.concurrency_limit(),
            reuse: env
                .reuse_policy()
                .map(|p| (*p.replicas.start(), *p.replicas.end(), p.concurrency.max(1))),
        }
    }

    /// The retry policy.
    pub fn retry(&self) -> RetryPolicy {
        RetryPolicy {
            retries: self.retries,
            base: Duration::from_micros(self.backoff.0),
            factor: self.backoff.1,
            cap: Duration::from_micros(self.backoff.2),
        }
    }

    /// The cache key and version of a call with `inputs`, or `None` when not cached.
    pub fn cache_key(&self, inputs: &[u8]) -> Result<Option<(String, String)>, String> {
        let Some((version, ignored, salt)) = &self.cache else {
            return Ok(None);
        };
        let ignored: Vec<&str> = ignored.iter().map(String::as_str).collect();
        let key = weir_core::cache::cache_key(&CacheKeyParts {
            task: &self.name,
            env: &self.env,
            inputs,
            ignored_inputs: &ignored,
            interface: &self.interface,
            salt,
            version,
        })
        .map_err(|e| format!("cache key of task {}: {e}", self.name))?;
        Ok(Some((key, version.clone())))
    }

    /// Why the control plane cannot run this task as its settings say, if it cannot.
    pub fn unsupported(&self) -> Option<String> {
        if self.has_timeouts {
            return Some(format!(
                "task {} has a max_queued or deadline timeout; cluster mode enforces max_runtime (in the worker) but not these yet, so it refuses the task rather than ignore them",
                self.name
            ));
        }
        None
    }
}

/// The specs of every task registered in this binary.
pub fn local_specs() -> Vec<TaskSpec> {
    registry::tasks().map(TaskSpec::of).collect()
}

/// The specs of a version by task name.
pub(crate) type Specs = HashMap<String, TaskSpec>;

/// The code version of this binary: the blake3 hash of its file (first 16 hex digits). A run
/// records the version it was submitted with, and only workers of that version lease its
/// actions.
pub fn binary_version() -> Result<String, String> {
    static VERSION: OnceLock<Result<String, String>> = OnceLock::new();
    VERSION
        .get_or_init(|| {
            let exe = std::env::current_exe()
                .map_err(|e| format!("cannot find this program's file: {e}"))?;
            version_of(&exe)
        })
        .clone()
}

/// The code version of the program at `path` (see [`binary_version`]).
pub fn version_of(path: &std::path::Path) -> Result<String, String> {
    let mut hasher = blake3::Hasher::new();
    hasher
        .update_reader(
            std::fs::File::open(path)
                .map_err(|e| format!("cannot read {} to hash its version: {e}", path.display()))?,
        )
        .map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    Ok(hasher.finalize().to_hex()[..16].to_string())
}

/// The queue of an environment's actions for one code version.
/// The concurrency limit of environment `env` in cluster mode: its `max_concurrency` (the
/// least any of its tasks declares), over the queues of all its code versions.
pub(crate) fn cap_of<'a>(
    project: &str,
    env: &str,
    specs: impl IntoIterator<Item = &'a TaskSpec>,
) -> Option<weir_store::Cap> {
    let limit = specs
        .into_iter()
        .filter(|s| s.env == env)
        .filter_map(|s| s.max_concurrency)
        .min()?;
    Some(weir_store::Cap {
        group: queue_name(&qualified(project, env), ""),
        limit: limit.min(u32::MAX as usize) as u32,
    })
}

pub(crate) fn queue_name(env: &str, version: &str) -> String {
    format!("{env}@{version}")
}

/// The name an environment's queues and workers go by in `project`: the environment's own in
/// the default project (as before projects had tokens), `PROJECT/ENV` in any other, so a
/// worker of one project never leases another's actions.
pub(crate) fn qualified(project: &str, env: &str) -> String {
    if project == weir_store::DEFAULT_PROJECT {
        env.to_string()
    } else {
        format!("{project}/{env}")
    }
}

/// The project and environment of a [`qualified`] name; `is_env` says whether a name is an
/// environment of the code version (so an environment whose own name holds a `/` is read as
/// the default project's).
pub(crate) fn unqualified(name: &str, is_env: impl Fn(&str) -> bool) -> (&str, &str) {
    match name.split_once('/') {
        Some((project, env)) if !is_env(name) => (project, env),
        _ => (weir_store::DEFAULT_PROJECT, name),
    }
}

/// The store setting that holds a version's specs.
pub(crate) fn setting_key(version: &str) -> String {
    format!("cluster.specs.{version}")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec() -> TaskSpec {
        TaskSpec {
            name: "e.t".into(),
            env: "e".into(),
            retries: 2,
            backoff: (1_000, 2.0, 10_000),
            max_runtime_us: None,
            has_timeouts: false,
            inline_limit: 1 << 20,
            cache: None,
            interface: "(x: u32) -> u32".into(),
            max_concurrency: None,
            reuse: None,
        }
    }

    #[test]
    fn specs_keep_the_retry_policy_and_key_only_cached_tasks() {
        let s = spec();
        assert_eq!(s.retry().delay(0), Duration::from_millis(1));
        assert_eq!(s.retry().delay(5), Duration::from_millis(10));
        let inputs = weir_core::codec::encode(&serde_json::json!({"x": 1})).unwrap();
        assert_eq!(s.cache_key(&inputs).unwrap(), None);
        let cached = TaskSpec {
            cache: Some(("v1".into(), vec![], String::new())),
            ..spec()
        };
        let (key, version) = cached.cache_key(&inputs).unwrap().unwrap();
        assert_eq!(version, "v1");
        let other = weir_core::codec::encode(&serde_json::json!({"x": 2})).unwrap();
        assert_ne!(cached.cache_key(&other).unwrap().unwrap().0, key);
    }

    #[test]
    fn settings_cluster_mode_cannot_honour_are_named() {
        assert_eq!(spec().unsupported(), None);
        let timed = TaskSpec {
            has_timeouts: true,
            ..spec()
        };
        assert!(timed.unsupported().unwrap().contains("deadline"));
        let bounded_runtime = TaskSpec {
            max_runtime_us: Some(1_000),
            ..spec()
        };
        assert_eq!(bounded_runtime.unsupported(), None);
        let bounded = TaskSpec {
            max_concurrency: Some(3),
            ..spec()
        };
        assert_eq!(
            bounded.unsupported(),
            None,
            "enforced by the lease (cap_of)"
        );
    }

    #[test]
    fn an_environments_cap_is_the_least_max_concurrency_of_its_tasks() {
        let with = |env: &str, n: Option<usize>| TaskSpec {
            env: env.into(),
            max_concurrency: n,
            ..spec()
        };
        let specs = [
            with("a", Some(5)),
            with("a", Some(3)),
            with("b", Some(1)),
            with("a", None),
        ];
        let cap = cap_of("default", "a", &specs).unwrap();
        assert_eq!((cap.group.as_str(), cap.limit), ("a@", 3));
        let cap = cap_of("p1", "a", &specs).unwrap();
        assert_eq!((cap.group.as_str(), cap.limit), ("p1/a@", 3));
        assert_eq!(cap_of("default", "c", &specs), None);
        assert_eq!(cap_of("default", "b", &[with("b", None)]), None);
    }

    #[test]
    fn projects_other_than_the_default_have_queues_of_their_own() {
        assert_eq!(qualified("default", "gpu"), "gpu");
        assert_eq!(qualified("p1", "gpu"), "p1/gpu");
        let envs = ["gpu", "a/b"];
        let is_env = |e: &str| envs.contains(&e);
        assert_eq!(unqualified("gpu", is_env), ("default", "gpu"));
        assert_eq!(unqualified("p1/gpu", is_env), ("p1", "gpu"));
        assert_eq!(unqualified("a/b", is_env), ("default", "a/b"));
        assert_eq!(unqualified("p1/a/b", is_env), ("p1", "a/b"));
    }
}
