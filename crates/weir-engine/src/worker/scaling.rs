//! The scaling rule of an environment with a `ReusePolicy` (SPEC §7.2): a pure function from
//! the environment's state to one step, with its table-driven test.

use std::time::Duration;

use weir_core::spec::ReusePolicy;

/// A serving replica as the scaling rule sees it.
#[derive(Clone, Debug)]
pub(super) struct ReplicaView {
    pub(super) n: u64,
    /// Leased attempts not completed.
    pub(super) busy: usize,
    /// Started but not yet leasing (its slots count as free: they are coming).
    pub(super) starting: bool,
    /// Time since its last attempt completed (or since it started).
    pub(super) idle_for: Duration,
}

/// One scaling step of an active environment with a policy.
#[derive(Debug, PartialEq, Eq)]
pub(super) enum ScaleStep {
    Hold,
    /// Add a replica: more actions wait than there are free slots, below `max`.
    ScaleUp {
        free: usize,
    },
    /// No work for `idle_ttl`: retire every replica.
    StopEnvironment,
    /// A replica idle for `scaledown_ttl` while above `min`.
    Retire {
        n: u64,
    },
}

/// The scaling rule (SPEC §7.2), a pure function of the environment's state: at most one step
/// per tick, so a burst grows the pool gradually and a short lull retires one replica at a time.
pub(super) fn scale_step(
    policy: &ReusePolicy,
    (idle_ttl, scaledown_ttl): (Duration, Duration),
    queued: usize,
    replicas: &[ReplicaView],
    idle_for: Duration,
) -> ScaleStep {
    let free: usize = replicas
        .iter()
        .map(|r| {
            if r.starting {
                policy.concurrency
            } else {
                policy.concurrency.saturating_sub(r.busy)
            }
        })
        .sum();
    let in_flight: usize = replicas.iter().map(|r| r.busy).sum();
    if queued > free && replicas.len() < *policy.replicas.end() {
        return ScaleStep::ScaleUp { free };
    }
    if queued == 0 && in_flight == 0 && idle_for >= idle_ttl {
        return ScaleStep::StopEnvironment;
    }
    if replicas.len() > *policy.replicas.start()
        && let Some(r) = replicas
            .iter()
            .find(|r| r.busy == 0 && !r.starting && r.idle_for >= scaledown_ttl)
    {
        return ScaleStep::Retire { n: r.n };
    }
    ScaleStep::Hold
}

#[cfg(test)]
mod tests {
    use super::*;

    fn view(n: u64, busy: usize, idle_ms: u64) -> ReplicaView {
        ReplicaView {
            n,
            busy,
            starting: false,
            idle_for: Duration::from_millis(idle_ms),
        }
    }

    #[test]
    fn scaling_rule_follows_spec_7_2() {
        let policy = ReusePolicy::new().replicas(1..=3).concurrency(2);
        let ttls = (Duration::from_millis(800), Duration::from_millis(300));
        let busy = Duration::ZERO;
        // More waiting than free slots, below max: one more replica.
        let one_full = [view(1, 2, 0)];
        assert_eq!(
            scale_step(&policy, ttls, 3, &one_full, busy),
            ScaleStep::ScaleUp { free: 0 }
        );
        // A starting replica's slots count as free: no second spawn for the same backlog.
        let mut starting = view(2, 0, 0);
        starting.starting = true;
        assert_eq!(
            scale_step(&policy, ttls, 2, &[view(1, 2, 0), starting.clone()], busy),
            ScaleStep::Hold
        );
        // At max, actions wait in the queue (backpressure).
        let full = [view(1, 2, 0), view(2, 2, 0), view(3, 2, 0)];
        assert_eq!(scale_step(&policy, ttls, 100, &full, busy), ScaleStep::Hold);
        // Above min, a replica idle for scaledown_ttl retires; a busy or recent one does not.
        let lull = [view(1, 1, 0), view(2, 0, 100), view(3, 0, 400)];
        assert_eq!(
            scale_step(&policy, ttls, 0, &lull, busy),
            ScaleStep::Retire { n: 3 }
        );
        // Never below min.
        assert_eq!(
            scale_step(
                &policy,
                ttls,
                0,
                &[view(1, 0, 5_000)],
                Duration::from_millis(500)
            ),
            ScaleStep::Hold
        );
        // No work for idle_ttl: the environment stops, min or not.
        assert_eq!(
            scale_step(
                &policy,
                ttls,
                0,
                &[view(1, 0, 5_000)],
                Duration::from_millis(900)
            ),
            ScaleStep::StopEnvironment
        );
        // Work in flight keeps it running.
        assert_eq!(
            scale_step(&policy, ttls, 0, &[view(1, 1, 0)], Duration::from_secs(60)),
            ScaleStep::Hold
        );
    }
}
