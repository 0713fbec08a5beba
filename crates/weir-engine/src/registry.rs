//! Tasks registered at compile time by `#[weir::task]` (collected with `inventory`), so that a
//! process of the same binary (the CLI, a resumed run, a worker) finds any task by name.

use std::sync::OnceLock;

use futures::future::BoxFuture;
use weir_core::spec::{CachePolicy, RetryPolicy, TaskEnvironment, Timeouts};

use crate::Error;

/// Per-task settings from the `#[weir::task(...)]` attribute.
#[derive(Clone, Debug, Default)]
pub struct TaskConfig {
    /// Retry policy (default: no retries).
    pub retry: RetryPolicy,
    /// Timeouts (default: none).
    pub timeouts: Timeouts,
    /// Inline limit; the environment's when unset.
    pub max_inline_io: Option<u64>,
    /// Cache policy; the environment's when unset.
    pub cache: Option<CachePolicy>,
    /// Display name; the function name when unset.
    pub short_name: Option<&'static str>,
}

/// Decodes canonical inputs, runs a task body, encodes its output.
pub type InvokeFn = fn(std::sync::Arc<[u8]>) -> BoxFuture<'static, Result<Vec<u8>, Error>>;

/// A registered task. Built by the macro as a `static`.
pub struct TaskDef {
    /// The function's name.
    pub name: &'static str,
    /// Module path of the function.
    pub module: &'static str,
    /// The task's environment.
    pub env: fn() -> &'static TaskEnvironment,
    /// Settings from the attribute.
    pub config: fn() -> TaskConfig,
    /// Decodes canonical inputs, runs the body and encodes the output canonically.
    pub invoke: InvokeFn,
    /// Parses JSON inputs (`{"param": value, ...}`) and encodes them canonically.
    pub inputs_from_json: fn(&str) -> Result<Vec<u8>, weir_core::codec::Error>,
    /// Names of the parameters, in order.
    pub params: &'static [&'static str],
    /// Hash of the function's source tokens: the `auto` cache version.
    pub source_hash: &'static str,
    /// Parameter names and types and the output type, as written: part of cache keys.
    pub interface: &'static str,
    /// Cached full name and settings.
    #[doc(hidden)]
    pub resolved: OnceLock<Resolved>,
}

/// Settings resolved once per task.
#[doc(hidden)]
#[derive(Debug)]
pub struct Resolved {
    pub full_name: String,
    pub config: TaskConfig,
    pub inline_limit: u64,
    pub env: &'static TaskEnvironment,
}

impl std::fmt::Debug for TaskDef {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TaskDef")
            .field("name", &self.full_name())
            .finish()
    }
}

impl TaskDef {
    #[doc(hidden)]
    pub fn resolved(&self) -> &Resolved {
        self.resolved.get_or_init(|| {
            let env = (self.env)();
            let config = (self.config)();
            Resolved {
                full_name: format!("{}.{}", env.name(), config.short_name.unwrap_or(self.name)),
                inline_limit: config.max_inline_io.unwrap_or(env.inline_limit()),
                config,
                env,
            }
        })
    }

    /// `<env>.<function>`.
    pub fn full_name(&self) -> &str {
        &self.resolved().full_name
    }

    /// The task's own name (function name or `short_name`).
    pub fn short_name(&self) -> &str {
        (self.config)().short_name.unwrap_or(self.name)
    }

    /// The environment.
    pub fn environment(&self) -> &'static TaskEnvironment {
        self.resolved().env
    }

    /// Resolved settings.
    pub fn config(&self) -> &TaskConfig {
        &self.resolved().config
    }

    /// Inline limit for inputs and outputs, in bytes.
    pub fn inline_limit(&self) -> u64 {
        self.resolved().inline_limit
    }

    /// Refuses `what` ("inputs" or "output") of `size` bytes over the task's inline limit.
    pub(crate) fn check_inline(&self, what: &str, size: usize) -> Result<(), Error> {
        let limit = self.inline_limit();
        if size as u64 > limit {
            let verb = if what.ends_with('s') { "are" } else { "is" };
            return Err(Error::with_kind(
                weir_core::ErrorKind::TooLarge,
                format!(
                    "the {what} of task {} {verb} {size} bytes, over its inline limit of {limit} bytes; raise max_inline_io on the task or environment, or pass the data as a File",
                    self.full_name()
                ),
            ));
        }
        Ok(())
    }
}

/// Submitted by the macro for each task.
#[doc(hidden)]
pub struct Registration(pub &'static TaskDef);

inventory::collect!(Registration);

/// All registered tasks.
pub fn tasks() -> impl Iterator<Item = &'static TaskDef> {
    inventory::iter::<Registration>.into_iter().map(|r| r.0)
}

/// The largest inline limit of any registered task (the default when there is none).
pub(crate) fn max_inline_limit() -> u64 {
    tasks()
        .map(TaskDef::inline_limit)
        .max()
        .unwrap_or(weir_core::spec::DEFAULT_MAX_INLINE_IO)
}

/// Submitted by `#[weir::trace]` for each trace function.
#[doc(hidden)]
#[derive(Debug)]
pub struct TraceRegistration {
    /// The function's name: the trace's name in ids and listings.
    pub name: &'static str,
    /// Module path of the function.
    pub module: &'static str,
}

inventory::collect!(TraceRegistration);

/// Whether `name` is the full name of a task (`env.task`) or the name of a trace of this
/// binary (as actions record them).
pub(crate) fn is_task_or_trace(name: &str) -> bool {
    tasks().any(|d| d.full_name() == name)
        || inventory::iter::<TraceRegistration>
            .into_iter()
            .any(|t| t.name == name)
}

/// Two definitions that would share action ids.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "{what} {name:?} is defined twice: `{first}` and `{second}`; calls of the two with the same inputs would get the same action id, so weir refuses to run. Rename one, or give it another `short_name` or environment"
)]
pub struct DuplicateName {
    /// `task` or `trace`.
    pub what: &'static str,
    /// The shared name.
    pub name: String,
    /// One definition (`module::function`).
    pub first: String,
    /// The other.
    pub second: String,
}

/// Checks that no two tasks share a full name and no two traces a name (their ids hash the
/// name's text). Called when an engine opens.
pub fn check_unique_names() -> Result<(), DuplicateName> {
    let tasks = tasks().map(|d| {
        (
            d.full_name().to_string(),
            format!("{}::{}", d.module, d.name),
        )
    });
    let traces = inventory::iter::<TraceRegistration>
        .into_iter()
        .map(|t| (t.name.to_string(), format!("{}::{}", t.module, t.name)));
    first_duplicate("task", tasks)?;
    first_duplicate("trace", traces)
}

fn first_duplicate(
    what: &'static str,
    defs: impl Iterator<Item = (String, String)>,
) -> Result<(), DuplicateName> {
    let mut seen: std::collections::HashMap<String, String> = std::collections::HashMap::new();
    let mut found: Vec<DuplicateName> = Vec::new();
    for (name, path) in defs {
        match seen.get(&name) {
            // The same definition submitted twice (it cannot be, but never refuse it).
            Some(first) if *first == path => {}
            Some(first) => {
                let (first, second) = if *first < path {
                    (first.clone(), path)
                } else {
                    (path, first.clone())
                };
                found.push(DuplicateName {
                    what,
                    name,
                    first,
                    second,
                });
            }
            None => {
                seen.insert(name, path);
            }
        }
    }
    // Deterministic: the smallest name, whatever the link order.
    found.sort_by(|a, b| a.name.cmp(&b.name));
    match found.into_iter().next() {
        Some(d) => Err(d),
        None => Ok(()),
    }
}

/// A task error when looking one up.
#[derive(Debug, thiserror::Error)]
pub enum LookupError {
    /// No task of that name.
    #[error("unknown task {name:?}; registered tasks: {known}")]
    Unknown {
        /// The name given.
        name: String,
        /// The registered names.
        known: String,
    },
    /// A short name matching several tasks.
    #[error("task name {name:?} is ambiguous: {candidates}; use the full <env>.<task> name")]
    Ambiguous {
        /// The name given.
        name: String,
        /// The matching full names.
        candidates: String,
    },
}

/// Finds a task by full name (`env.task`) or, if unique, by its short name.
pub fn find_task(name: &str) -> Result<&'static TaskDef, LookupError> {
    if let Some(def) = tasks().find(|d| d.full_name() == name) {
        return Ok(def);
    }
    let matches: Vec<_> = tasks().filter(|d| d.short_name() == name).collect();
    match matches.len() {
        1 => Ok(matches[0]),
        0 => {
            let mut known: Vec<_> = tasks().map(|d| d.full_name().to_string()).collect();
            known.sort();
            Err(LookupError::Unknown {
                name: name.to_string(),
                known: if known.is_empty() {
                    "(none in this binary)".into()
                } else {
                    known.join(", ")
                },
            })
        }
        _ => Err(LookupError::Ambiguous {
            name: name.to_string(),
            candidates: matches
                .iter()
                .map(|d| d.full_name().to_string())
                .collect::<Vec<_>>()
                .join(", "),
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn defs(list: &[(&str, &str)]) -> impl Iterator<Item = (String, String)> {
        list.iter()
            .map(|(n, p)| (n.to_string(), p.to_string()))
            .collect::<Vec<_>>()
            .into_iter()
    }

    inventory::submit! { TraceRegistration { name: "lookup", module: "app::a" } }
    inventory::submit! { TraceRegistration { name: "lookup", module: "app::b" } }

    #[test]
    fn two_registered_traces_with_one_name_are_refused() {
        let err = check_unique_names().unwrap_err();
        assert_eq!(err.what, "trace");
        assert_eq!(err.name, "lookup");
        assert_eq!(
            (err.first.as_str(), err.second.as_str()),
            ("app::a::lookup", "app::b::lookup")
        );
    }

    #[test]
    fn a_name_defined_twice_is_refused_naming_both_definitions() {
        assert!(first_duplicate("task", defs(&[("e.a", "m::a"), ("e.b", "m::b")])).is_ok());
        let err = first_duplicate(
            "task",
            defs(&[
                ("e.fetch", "b::fetch"),
                ("e.x", "m::x"),
                ("e.fetch", "a::fetch"),
            ]),
        )
        .unwrap_err();
        assert_eq!(err.name, "e.fetch");
        assert_eq!(
            (err.first.as_str(), err.second.as_str()),
            ("a::fetch", "b::fetch")
        );
        let msg = err.to_string();
        assert!(
            msg.contains("a::fetch") && msg.contains("b::fetch") && msg.contains("task"),
            "{msg}"
        );
    }
}
