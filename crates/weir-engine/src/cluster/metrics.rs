//! `/metrics`: what an autoscaler or a dashboard reads of the control plane.

use super::runs::{Refusal, internal};
use super::{ControlPlane, spec};

impl ControlPlane {
    /// `/metrics` in Prometheus' text format: queue depth, actions by status, leases,
    /// completions, mean dispatch latency, and the desired workers per environment.
    pub(super) async fn metrics(&self) -> Result<String, Refusal> {
        let inner = &self.inner;
        let m = inner.store.queue_metrics().await.map_err(internal)?;
        let mut out = String::new();
        let mut line = |s: String| {
            out.push_str(&s);
            out.push('\n');
        };
        line("# TYPE weir_queue_depth gauge".into());
        for q in &m {
            line(format!(
                "weir_queue_depth{{queue=\"{}\",state=\"waiting\"}} {}",
                q.queue, q.waiting
            ));
            line(format!(
                "weir_queue_depth{{queue=\"{}\",state=\"leased\"}} {}",
                q.queue, q.leased
            ));
        }
        line("# TYPE weir_desired_workers gauge".into());
        for q in &m {
            let (env, version) = q.queue.split_once('@').unwrap_or((&q.queue, ""));
            // The rule of the process executor: enough workers for what is queued and
            // leased at the policy's slots each, within its replica range (1 slot without one).
            let reuse = inner.specs(version).await.ok().and_then(|s| {
                let (_, env) = spec::unqualified(env, |e| s.values().any(|t| t.env == e));
                s.values().find(|t| t.env == env).and_then(|t| t.reuse)
            });
            let (lo, hi, slots) = reuse.unwrap_or((0, usize::MAX, 1));
            let want = (q.waiting + q.leased)
                .div_ceil(slots as u64)
                .clamp(lo as u64, hi as u64);
            line(format!(
                "weir_desired_workers{{queue=\"{}\"}} {want}",
                q.queue
            ));
        }
        let c = &inner.counters;
        let ld = |a: &std::sync::atomic::AtomicU64| a.load(std::sync::atomic::Ordering::Relaxed);
        line("# TYPE weir_leased_total counter".into());
        line(format!("weir_leased_total {}", ld(&c.leased)));
        line("# TYPE weir_completed_total counter".into());
        line(format!("weir_completed_total {}", ld(&c.completed)));
        line("# TYPE weir_rejected_completions_total counter".into());
        line(format!(
            "weir_rejected_completions_total {}",
            ld(&c.rejected)
        ));
        line("# HELP weir_payload_bytes_proxied_total Payload bytes carried in worker API messages (inputs, outputs, child inputs and results, trace checkpoints).".into());
        line("# TYPE weir_payload_bytes_proxied_total counter".into());
        line(format!(
            "weir_payload_bytes_proxied_total {}",
            ld(&c.payload_proxied)
        ));
        line("# HELP weir_payload_bytes_direct_total Payload bytes workers read or wrote in the object store themselves (sizes of the references exchanged).".into());
        line("# TYPE weir_payload_bytes_direct_total counter".into());
        line(format!(
            "weir_payload_bytes_direct_total {}",
            ld(&c.payload_direct)
        ));
        line("# TYPE weir_dispatch_latency_seconds_mean gauge".into());
        let mean = ld(&c.dispatch_us) as f64 / ld(&c.leased).max(1) as f64 / 1e6;
        line(format!("weir_dispatch_latency_seconds_mean {mean:.6}"));
        Ok(out)
    }
}
