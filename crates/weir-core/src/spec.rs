//! Task environments and per-task policies (SPEC §2.1, §2.5, §6.1, §7.1).

use std::ops::RangeInclusive;
use std::time::Duration;

/// Default inline limit per input set and per output: 10 MiB (SPEC §5.1).
pub const DEFAULT_MAX_INLINE_IO: u64 = 10 * 1024 * 1024;

/// Payloads up to this size are kept in the state store's rows; larger ones go to the object
/// store: 64 KiB (SPEC §5.3).
pub const DEFAULT_INLINE_STORE_THRESHOLD: usize = 64 * 1024;

/// A named group of tasks sharing configuration. Build it once, e.g. in a
/// `static ENV: LazyLock<TaskEnvironment>`.
///
/// ```
/// use weir_core::spec::{ReusePolicy, TaskEnvironment};
/// let env = TaskEnvironment::new("etl").reuse(ReusePolicy::new().replicas(2..=8).concurrency(4));
/// assert_eq!(env.name(), "etl");
/// ```
#[derive(Clone, Debug)]
pub struct TaskEnvironment {
    name: String,
    resources: Resources,
    reuse: Option<ReusePolicy>,
    cache: CachePolicy,
    max_inline_io: u64,
    max_concurrency: Option<usize>,
}

impl TaskEnvironment {
    /// A new environment with defaults: no reuse policy (a fresh worker per action when worker
    /// processes are used), cache disabled, inline limit 10 MiB, no concurrency bound.
    pub fn new(name: impl Into<String>) -> Self {
        TaskEnvironment {
            name: name.into(),
            resources: Resources::default(),
            reuse: None,
            cache: Cache::disable(),
            max_inline_io: DEFAULT_MAX_INLINE_IO,
            max_concurrency: None,
        }
    }
    /// Resources requested by each worker of this environment.
    pub fn resources(mut self, r: Resources) -> Self {
        self.resources = r;
        self
    }
    /// Keep workers alive and reuse them (SPEC §7).
    pub fn reuse(mut self, p: ReusePolicy) -> Self {
        self.reuse = Some(p);
        self
    }
    /// Default cache behaviour of the environment's tasks (a task's own setting wins).
    pub fn cache(mut self, c: impl Into<CachePolicy>) -> Self {
        self.cache = c.into();
        self
    }
    /// Inline limit in bytes for inputs and outputs of this environment's tasks.
    pub fn max_inline_io(mut self, bytes: u64) -> Self {
        self.max_inline_io = bytes;
        self
    }
    /// At most this many of the environment's actions run at once, in process and in worker
    /// processes (default: unbounded; with a reuse policy at most `max replicas × concurrency`
    /// in any case).
    pub fn max_concurrency(mut self, n: usize) -> Self {
        self.max_concurrency = Some(n.max(1));
        self
    }

    /// The environment's name.
    pub fn name(&self) -> &str {
        &self.name
    }
    /// Requested resources.
    pub fn resources_spec(&self) -> &Resources {
        &self.resources
    }
    /// The reuse policy, if any.
    pub fn reuse_policy(&self) -> Option<&ReusePolicy> {
        self.reuse.as_ref()
    }
    /// The default cache policy.
    pub fn cache_policy(&self) -> &CachePolicy {
        &self.cache
    }
    /// Inline limit in bytes.
    pub fn inline_limit(&self) -> u64 {
        self.max_inline_io
    }
    /// The `max_concurrency` setting (see `weir_engine`'s environment bound for the effective
    /// limit with a reuse policy).
    pub fn concurrency_limit(&self) -> Option<usize> {
        self.max_concurrency
    }
}

/// Resources requested per worker. Recorded and shown; the embedded engine does not enforce them.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Resources {
    /// CPU cores.
    pub cpu: Option<f64>,
    /// Memory, e.g. `"16Gi"`.
    pub memory: Option<String>,
    /// GPU, e.g. `"A10G:1"`.
    pub gpu: Option<String>,
}

impl Resources {
    /// No requests.
    pub fn new() -> Self {
        Self::default()
    }
    /// CPU cores.
    pub fn cpu(mut self, cores: impl Into<f64>) -> Self {
        self.cpu = Some(cores.into());
        self
    }
    /// Memory, e.g. `"16Gi"`.
    pub fn memory(mut self, m: impl Into<String>) -> Self {
        self.memory = Some(m.into());
        self
    }
    /// GPU kind and count, e.g. `"A10G:1"`.
    pub fn gpu(mut self, g: impl Into<String>) -> Self {
        self.gpu = Some(g.into());
        self
    }
}

/// Where reusable workers are shared.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum ReuseScope {
    /// Shared by all runs (default).
    #[default]
    Global,
    /// One set of workers per run.
    Run,
}

/// How workers of an environment are kept and reused (SPEC §7.1).
#[derive(Clone, Debug, PartialEq)]
pub struct ReusePolicy {
    /// Minimum and maximum replicas. Default `2..=2`.
    pub replicas: RangeInclusive<usize>,
    /// Actions one replica runs at once. Default 1.
    pub concurrency: usize,
    /// Stop the environment after this long without work. Default 30 s.
    pub idle_ttl: Duration,
    /// Remove a replica idle this long (down to `min`). Default 30 s.
    pub scaledown_ttl: Duration,
    /// Sharing scope. Default global.
    pub scope: ReuseScope,
}

impl Default for ReusePolicy {
    fn default() -> Self {
        ReusePolicy {
            replicas: 2..=2,
            concurrency: 1,
            idle_ttl: Duration::from_secs(30),
            scaledown_ttl: Duration::from_secs(30),
            scope: ReuseScope::Global,
        }
    }
}

impl ReusePolicy {
    /// The defaults listed on the fields.
    pub fn new() -> Self {
        Self::default()
    }
    /// Minimum and maximum replicas.
    pub fn replicas(mut self, r: RangeInclusive<usize>) -> Self {
        self.replicas = r;
        self
    }
    /// Actions per replica at once.
    pub fn concurrency(mut self, n: usize) -> Self {
        self.concurrency = n.max(1);
        self
    }
    /// Idle time before the environment stops.
    pub fn idle_ttl(mut self, d: Duration) -> Self {
        self.idle_ttl = d;
        self
    }
    /// Idle time before a replica above `min` is removed.
    pub fn scaledown_ttl(mut self, d: Duration) -> Self {
        self.scaledown_ttl = d;
        self
    }
    /// Sharing scope.
    pub fn scope(mut self, s: ReuseScope) -> Self {
        self.scope = s;
        self
    }
}

/// How a task's outputs are cached (SPEC §6.1).
#[derive(Clone, Debug, PartialEq, Eq, Default)]
pub enum CacheBehavior {
    /// Never cached (default).
    #[default]
    Disable,
    /// Cached; the version is derived from the task function's own source tokens.
    Auto,
    /// Cached under an explicit version string.
    Override(String),
}

/// Cache settings of a task or environment (SPEC §6.1): a behaviour, inputs left out of the
/// key, and a salt.
///
/// ```
/// use weir_core::spec::{Cache, CacheBehavior};
/// let c = Cache::override_version("v1").ignored_inputs(["run_label"]).salt("2026-11");
/// assert_eq!(c.behavior, CacheBehavior::Override("v1".into()));
/// assert_eq!(Cache::from("auto").behavior, CacheBehavior::Auto);
/// ```
#[derive(Clone, Debug, PartialEq, Eq, Default)]
pub struct Cache {
    /// Disable (default), auto or override.
    pub behavior: CacheBehavior,
    /// Parameters that do not take part in the key.
    pub ignored_inputs: Vec<String>,
    /// Mixed into the key; change it to invalidate entries.
    pub salt: String,
}

/// The name used by environments and task settings.
pub type CachePolicy = Cache;

impl Cache {
    /// Not cached.
    pub fn disable() -> Self {
        Cache::default()
    }
    /// Cached, versioned by the task's source.
    pub fn auto() -> Self {
        Cache {
            behavior: CacheBehavior::Auto,
            ..Default::default()
        }
    }
    /// Cached under an explicit version.
    pub fn override_version(version: impl Into<String>) -> Self {
        Cache {
            behavior: CacheBehavior::Override(version.into()),
            ..Default::default()
        }
    }
    /// Leaves these parameters out of the key.
    pub fn ignored_inputs<I: IntoIterator<Item = S>, S: Into<String>>(mut self, names: I) -> Self {
        self.ignored_inputs = names.into_iter().map(Into::into).collect();
        self
    }
    /// Sets the salt.
    pub fn salt(mut self, salt: impl Into<String>) -> Self {
        self.salt = salt.into();
        self
    }
    /// Whether outputs are cached.
    pub fn is_enabled(&self) -> bool {
        self.behavior != CacheBehavior::Disable
    }
}

impl From<&str> for Cache {
    /// `"disable"`, `"auto"`, anything else is an override version.
    fn from(s: &str) -> Self {
        match s {
            "disable" => Cache::disable(),
            "auto" => Cache::auto(),
            v => Cache::override_version(v),
        }
    }
}

/// Retry policy (SPEC §2.5): `retries` extra attempts with backoff
/// `min(base * factor^k, cap)` before attempt `k + 2`.
#[derive(Clone, Debug, PartialEq)]
pub struct RetryPolicy {
    /// Extra attempts after the first. Default 0.
    pub retries: u32,
    /// First backoff. Default 0 (retry at once).
    pub base: Duration,
    /// Growth per retry. Default 2.
    pub factor: f64,
    /// Largest backoff. Default 60 s.
    pub cap: Duration,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        RetryPolicy {
            retries: 0,
            base: Duration::ZERO,
            factor: 2.0,
            cap: Duration::from_secs(60),
        }
    }
}

impl RetryPolicy {
    /// `n` retries without backoff.
    pub fn retries(n: u32) -> Self {
        RetryPolicy {
            retries: n,
            ..Default::default()
        }
    }
    /// Exponential backoff starting at `base`.
    pub fn backoff(mut self, base: Duration, factor: f64, cap: Duration) -> Self {
        self.base = base;
        self.factor = factor;
        self.cap = cap;
        self
    }
    /// The wait before retry number `k` (0-based).
    pub fn delay(&self, k: u32) -> Duration {
        if self.base.is_zero() {
            return Duration::ZERO;
        }
        let secs = self.base.as_secs_f64() * self.factor.powi(k as i32);
        Duration::from_secs_f64(secs.min(self.cap.as_secs_f64()))
    }
}

impl From<u32> for RetryPolicy {
    fn from(n: u32) -> Self {
        RetryPolicy::retries(n)
    }
}

/// Timeouts (SPEC §2.5). All optional.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Timeouts {
    /// Longest run time of one attempt.
    pub max_runtime: Option<Duration>,
    /// Longest wait in the queue before an attempt starts.
    pub max_queued: Option<Duration>,
    /// Deadline for the whole action, across attempts and backoffs.
    pub deadline: Option<Duration>,
}

impl Timeouts {
    /// No timeouts.
    pub fn new() -> Self {
        Self::default()
    }
    /// Per-attempt runtime limit.
    pub fn max_runtime(mut self, d: Duration) -> Self {
        self.max_runtime = Some(d);
        self
    }
    /// Queue wait limit.
    pub fn max_queued(mut self, d: Duration) -> Self {
        self.max_queued = Some(d);
        self
    }
    /// Overall deadline.
    pub fn deadline(mut self, d: Duration) -> Self {
        self.deadline = Some(d);
        self
    }
}

impl From<Duration> for Timeouts {
    fn from(d: Duration) -> Self {
        Timeouts::new().max_runtime(d)
    }
}

/// Parses a short duration: `"250ms"`, `"30s"`, `"10m"`, `"2h"`, or a combination (`"1h30m"`).
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let s = s.trim();
    if s.is_empty() {
        return Err("empty duration".into());
    }
    let mut total = Duration::ZERO;
    let mut rest = s;
    while !rest.is_empty() {
        let digits = rest
            .find(|c: char| !c.is_ascii_digit())
            .unwrap_or(rest.len());
        if digits == 0 {
            return Err(format!(
                "invalid duration {s:?}: expected a number at {rest:?}"
            ));
        }
        let n: u64 = rest[..digits]
            .parse()
            .map_err(|e| format!("invalid duration {s:?}: {e}"))?;
        rest = &rest[digits..];
        let unit = rest
            .find(|c: char| c.is_ascii_digit())
            .unwrap_or(rest.len());
        let d = match &rest[..unit] {
            "ms" => Duration::from_millis(n),
            "s" => Duration::from_secs(n),
            "m" => Duration::from_secs(n * 60),
            "h" => Duration::from_secs(n * 3600),
            "d" => Duration::from_secs(n * 86400),
            u => {
                return Err(format!(
                    "invalid duration {s:?}: unknown unit {u:?} (use ms, s, m, h, d)"
                ));
            }
        };
        total += d;
        rest = &rest[unit..];
    }
    Ok(total)
}

/// Parses a byte size: `"10MiB"`, `"512KiB"`, `"1GiB"`, `"2MB"`, or a plain number of bytes.
pub fn parse_size(s: &str) -> Result<u64, String> {
    let s = s.trim();
    let digits = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
    let n: u64 = s[..digits]
        .parse()
        .map_err(|_| format!("invalid size {s:?}: expected a number"))?;
    let mult = match s[digits..].trim() {
        "" | "B" => 1,
        "KiB" | "Ki" => 1 << 10,
        "MiB" | "Mi" => 1 << 20,
        "GiB" | "Gi" => 1 << 30,
        "KB" | "K" => 1_000,
        "MB" | "M" => 1_000_000,
        "GB" | "G" => 1_000_000_000,
        u => {
            return Err(format!(
                "invalid size {s:?}: unknown unit {u:?} (use B, KiB, MiB, GiB, KB, MB, GB)"
            ));
        }
    };
    Ok(n * mult)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_sizes_and_backoff() {
        assert_eq!(parse_duration("10m").unwrap(), Duration::from_secs(600));
        assert_eq!(parse_duration("1h30m").unwrap(), Duration::from_secs(5400));
        assert_eq!(parse_duration("250ms").unwrap(), Duration::from_millis(250));
        assert!(parse_duration("10x").unwrap_err().contains("unknown unit"));
        assert!(parse_duration("m").is_err());
        assert_eq!(parse_size("10MiB").unwrap(), 10 << 20);
        assert_eq!(parse_size("123").unwrap(), 123);
        assert!(parse_size("1TB").is_err());
        let r = RetryPolicy::retries(5).backoff(
            Duration::from_millis(100),
            2.0,
            Duration::from_millis(500),
        );
        assert_eq!(r.delay(0), Duration::from_millis(100));
        assert_eq!(r.delay(2), Duration::from_millis(400));
        assert_eq!(r.delay(3), Duration::from_millis(500));
        assert_eq!(RetryPolicy::retries(1).delay(4), Duration::ZERO);
        assert_eq!(
            Cache::from("v1").behavior,
            CacheBehavior::Override("v1".into())
        );
    }
}
