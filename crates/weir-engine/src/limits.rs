//! Concurrency bounds on attempts (SPEC §7.1, §9.2): an environment's, and a run's.
//!
//! An environment runs at most [`env_bound`] of its actions at once, in every executor: its
//! `max_concurrency`, and with a `ReusePolicy` at most `max replicas × concurrency` (the
//! guide's "200 concurrent tasks max" for `replicas=(2, 20), concurrency=10`). A run runs at
//! most `max_action_concurrency`. An attempt takes its environment's slot, then its run's, and
//! gives both back while it waits on children (a parent never holds a slot its children need).

use std::collections::HashMap;
use std::sync::Arc;

use parking_lot::Mutex;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use weir_core::spec::TaskEnvironment;

/// How many of an environment's actions may run at once; `None`: unbounded.
pub fn env_bound(env: &TaskEnvironment) -> Option<usize> {
    let by_policy = env
        .reuse_policy()
        .map(|p| (*p.replicas.end()).max(1) * p.concurrency.max(1));
    match (env.concurrency_limit(), by_policy) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    }
}

/// The slots of each bounded environment, created on first use.
#[derive(Default)]
pub(crate) struct EnvLimits {
    slots: Mutex<HashMap<String, Arc<Semaphore>>>,
    /// Attempts run in worker processes, whose pool already holds an environment with a
    /// policy to `max replicas × concurrency`: only `max_concurrency` needs a slot here.
    pooled: bool,
}

impl EnvLimits {
    pub(crate) fn new(pooled: bool) -> EnvLimits {
        EnvLimits {
            slots: Mutex::default(),
            pooled,
        }
    }

    /// The semaphore of `env`, or `None` when nothing here needs to bound it.
    pub(crate) fn of(&self, env: &TaskEnvironment) -> Option<Arc<Semaphore>> {
        if self.pooled && env.concurrency_limit().is_none() {
            return None;
        }
        let bound = env_bound(env)?;
        Some(
            self.slots
                .lock()
                .entry(env.name().to_string())
                .or_insert_with(|| Arc::new(Semaphore::new(bound)))
                .clone(),
        )
    }
}

/// The semaphores an attempt takes a slot of, in order.
#[derive(Clone, Default)]
pub(crate) struct Slots(Vec<Arc<Semaphore>>);

impl Slots {
    pub(crate) fn new(env: Option<Arc<Semaphore>>, run: Option<Arc<Semaphore>>) -> Slots {
        Slots(env.into_iter().chain(run).collect())
    }

    /// One slot of each, always in the same order (so two waiters cannot deadlock).
    pub(crate) async fn acquire(&self) -> Vec<OwnedSemaphorePermit> {
        let mut permits = Vec::with_capacity(self.0.len());
        for sem in &self.0 {
            if let Ok(p) = sem.clone().acquire_owned().await {
                permits.push(p);
            }
        }
        permits
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use weir_core::spec::ReusePolicy;

    #[test]
    fn the_bound_is_the_smaller_of_max_concurrency_and_the_policy() {
        assert_eq!(env_bound(&TaskEnvironment::new("a")), None);
        let policy = ReusePolicy::new().replicas(2..=20).concurrency(10);
        let env = TaskEnvironment::new("b").reuse(policy.clone());
        assert_eq!(env_bound(&env), Some(200));
        assert_eq!(env_bound(&env.clone().max_concurrency(5)), Some(5));
        assert_eq!(env_bound(&env.max_concurrency(500)), Some(200));
        assert_eq!(
            env_bound(&TaskEnvironment::new("c").max_concurrency(3)),
            Some(3)
        );
    }
}
