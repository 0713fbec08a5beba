//! Phase timings read back (SPEC §9.3): per-task aggregates of where a run's time went, and
//! `weir advise`'s rules, which turn them into concrete advice with numbers. Pure functions over
//! action records: the CLI and the web UI feed them pages of a run's actions.
//!
//! The rules follow the overhead model (every call costs uploads, downloads, a queue wait and a
//! start on top of its run time):
//! - `batch`: a task with many sibling actions whose run time is small against its overhead:
//!   group `k` items per action so that each action runs at least 10× its overhead;
//! - `trace`: a short step called a few times per parent, costing more than it runs: a
//!   `#[weir::trace]` runs in its caller's process, checkpointed;
//! - `reuse`: an environment whose actions take longer to start (5 ms or more: a process, a
//!   worker) than they run;
//! - `concurrency`: actions that mostly wait in the queue while few run at once;
//! - `reference`: large payloads passed inline (copied through the state store).

use std::collections::HashMap;

use serde::Serialize;
use weir_core::ActionStatus;
use weir_core::phases::Phases;

use crate::{ActionKind, ActionRecord};

/// The phases of an action as shown: its recorded ones, with the queue wait taken from its
/// queued and start times where the recorder could not measure it (cluster mode's workers).
pub fn shown_phases(r: &ActionRecord) -> Option<Phases> {
    let mut p = r.phases?;
    if p.queue == 0
        && let Some(s) = r.started_at
    {
        p.queue = ((s - r.queued_at).max(0) as u64).saturating_sub(p.upload);
    }
    Some(p)
}

/// Percentiles of one phase over a task's actions (µs).
#[derive(Clone, Copy, Debug, Default, Serialize, PartialEq)]
pub struct Spread {
    /// Median.
    pub p50: u64,
    /// 95th percentile.
    pub p95: u64,
    /// Mean.
    pub mean: u64,
    /// Actions that recorded this phase (`deliver` is sampled).
    pub recorded: u64,
}

/// Where a task's actions' time went.
#[derive(Clone, Debug, Serialize)]
pub struct TaskSummary {
    /// Full task name.
    pub task: String,
    /// Its environment (the part of the name before the last `.`).
    pub env: String,
    /// Actions that ran (and recorded their phases).
    pub count: u64,
    /// Each phase, in [`Phases::NAMES`] order.
    pub phases: Vec<(String, Spread)>,
    /// Share of the actions' time that was not `exec` (queue wait included).
    pub overhead_share: f64,
    /// Mean per-action cost that batching saves: every phase but `exec` and `queue` (µs).
    pub cost_us: u64,
    /// Time from the first action's queueing to the last one's end (µs).
    pub span_us: i64,
    /// Most actions of this task under one parent.
    pub max_siblings: u64,
    /// Actions per parent, on average.
    pub per_parent: f64,
}

/// Accumulates a run's actions, page by page.
#[derive(Default, Debug)]
pub struct Summarizer {
    tasks: HashMap<String, Acc>,
}

#[derive(Default, Debug)]
struct Acc {
    values: Vec<[u64; 7]>,
    first: Option<i64>,
    last: Option<i64>,
    parents: HashMap<u64, u64>,
}

impl Summarizer {
    /// Adds a page of actions (tasks that ran; traces, cache hits and recovered actions have
    /// no phases).
    pub fn add(&mut self, actions: &[ActionRecord]) {
        for r in actions {
            if r.kind != ActionKind::Task || r.status == ActionStatus::Cancelled {
                continue;
            }
            let Some(p) = shown_phases(r) else { continue };
            let acc = self.tasks.entry(r.task.clone()).or_default();
            acc.values.push(p.values());
            acc.first = Some(acc.first.map_or(r.queued_at, |f| f.min(r.queued_at)));
            if let Some(e) = r.ended_at {
                acc.last = Some(acc.last.map_or(e, |l| l.max(e)));
            }
            if r.id != r.parent {
                *acc.parents.entry(r.parent.0).or_default() += 1;
            }
        }
    }

    /// The summaries, by task name.
    pub fn finish(self) -> Vec<TaskSummary> {
        let mut out: Vec<TaskSummary> = self
            .tasks
            .into_iter()
            .map(|(task, mut acc)| {
                let n = acc.values.len();
                let mut phases = Vec::with_capacity(7);
                let mut totals = [0u64; 7];
                for (i, name) in Phases::NAMES.iter().enumerate() {
                    // A phase not recorded for some actions (`deliver`, sampled) is summarized
                    // over those that have it, and counted at its mean for the others.
                    let mut col: Vec<u64> = acc
                        .values
                        .iter()
                        .map(|v| v[i])
                        .filter(|&v| v != Phases::NOT_RECORDED)
                        .collect();
                    col.sort_unstable();
                    let m = col.len().max(1);
                    let sum: u64 = col.iter().sum();
                    let mean = sum / m as u64;
                    totals[i] = mean * n as u64;
                    let at = |q: f64| {
                        col.get(((col.len() as f64 - 1.0).max(0.0) * q).round() as usize)
                            .copied()
                            .unwrap_or(0)
                    };
                    phases.push((
                        name.to_string(),
                        Spread {
                            p50: at(0.5),
                            p95: at(0.95),
                            mean,
                            recorded: col.len() as u64,
                        },
                    ));
                }
                acc.values.clear();
                let all: u64 = totals.iter().sum();
                let exec = totals[4];
                let cost = all - exec - totals[1];
                let parents = acc.parents.len().max(1) as f64;
                TaskSummary {
                    env: task.rsplit_once('.').map_or("", |(e, _)| e).to_string(),
                    task,
                    count: n as u64,
                    phases,
                    overhead_share: if all == 0 {
                        0.0
                    } else {
                        (all - exec) as f64 / all as f64
                    },
                    cost_us: cost / n as u64,
                    span_us: acc.last.unwrap_or(0) - acc.first.unwrap_or(0),
                    max_siblings: acc.parents.values().copied().max().unwrap_or(1),
                    per_parent: acc.parents.values().sum::<u64>() as f64 / parents,
                }
            })
            .collect();
        out.sort_by(|a, b| a.task.cmp(&b.task));
        out
    }
}

impl TaskSummary {
    /// The spread of phase `name`.
    pub fn phase(&self, name: &str) -> Spread {
        self.phases
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, s)| *s)
            .unwrap_or_default()
    }
}

/// One piece of advice.
#[derive(Clone, Debug, Serialize)]
pub struct Advice {
    /// The rule: `batch`, `trace`, `reuse`, `concurrency` or `reference`.
    pub rule: &'static str,
    /// The task it is about (none for an environment-wide one).
    pub task: Option<String>,
    /// The environment.
    pub env: String,
    /// What to do, with the numbers.
    pub message: String,
    /// The numbers, for tools.
    pub numbers: serde_json::Value,
}

/// What [`advise`] needs of a run besides its tasks' summaries.
#[derive(Clone, Debug, Default)]
pub struct RunFacts {
    /// The run's duration (µs), when it ended.
    pub duration_us: Option<i64>,
    /// Payload sizes seen per task (the larger of inputs and output, for a sample of its
    /// actions): values passed by value, inline or offloaded (a `weir::File` in them is a small
    /// reference, not its bytes).
    pub inline_sizes: HashMap<String, Vec<u64>>,
}

/// Sibling actions of a task from which batching is worth it.
pub const BATCH_MIN_SIBLINGS: u64 = 64;
/// Each batched action should run at least this many times its overhead.
pub const BATCH_RUN_TO_OVERHEAD: u64 = 10;
/// Largest batch advised.
pub const BATCH_MAX: u64 = 10_000;
/// Inline payloads from this size on are better passed by reference.
pub const LARGE_INLINE: u64 = 1 << 20;

/// The advice for a run from its tasks' measured phases; none for a well-tuned run.
pub fn advise(tasks: &[TaskSummary], facts: &RunFacts) -> Vec<Advice> {
    let mut out = Vec::new();
    let pct = |x: f64| format!("{:.0}%", x * 100.0);
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get()) as f64;
    for t in tasks {
        // The median: a few attempts preempted on a busy machine must not hide the typical one.
        let exec = t.phase("exec").p50.max(1);
        let cost = t.cost_us;
        let queue = t.phase("queue");
        let start = t.phase("start");
        // batch: many siblings, each running less than 10x what it costs.
        if t.max_siblings >= BATCH_MIN_SIBLINGS && exec * BATCH_RUN_TO_OVERHEAD < cost {
            let k = (BATCH_RUN_TO_OVERHEAD * cost)
                .div_ceil(exec)
                .clamp(2, BATCH_MAX)
                .min((t.max_siblings / 4).max(2));
            // The work stays (spread over as many actions at once as ran before, at least one
            // per core, at most one per batch); the overhead, which is what the span does not
            // spend working, shrinks k-fold.
            let work = (exec * t.count) as f64;
            let span = t.span_us.max(1) as f64;
            let at_once = (work / span).max(cores);
            let overhead_part = (span - work / at_once).max(0.0);
            let batches = t.count.div_ceil(k) as f64;
            let span_then = work / at_once.min(batches) + overhead_part / k as f64;
            let saved = (span - span_then).max(0.0);
            let (x, y) = match facts.duration_us {
                Some(d) => (d as f64, (d as f64 - saved).max(1.0)),
                None => (span, span_then),
            };
            out.push(Advice {
                rule: "batch",
                task: Some(t.task.clone()),
                env: t.env.clone(),
                message: format!(
                    "batch {}: its {} actions each run {} but cost {} in overhead ({} of their time); \
                     group ~{k} items per action (a task over a `Vec` of items: `weir::map(process_batch, items).batch({k})` \
                     or `.auto_batch()`; {} takes one): \
                     estimated run time {} -> {} ({:.1}x)",
                    t.task,
                    t.count,
                    fmt_us(exec),
                    fmt_us(cost),
                    pct(t.overhead_share),
                    short(&t.task),
                    fmt_us(x as u64),
                    fmt_us(y as u64),
                    x / y
                ),
                numbers: serde_json::json!({
                    "k": k, "actions": t.count, "exec_us": exec, "overhead_us": cost,
                    "estimated_before_us": x as u64, "estimated_after_us": y as u64,
                    "speedup": x / y,
                }),
            });
            continue;
        }
        // reuse: the start (a process per action) dominates (before `trace`: a step in an
        // environment of its own needs its own workers).
        if start.p50 >= 5_000 && start.p50 > exec {
            out.push(Advice {
                rule: "reuse",
                task: Some(t.task.clone()),
                env: t.env.clone(),
                message: format!(
                    "environment {}: its actions wait {} (median) to start, more than they run ({}); \
                     add a `ReusePolicy` (replicas, concurrency) so that workers stay up between actions",
                    t.env,
                    fmt_us(start.p50),
                    fmt_us(exec)
                ),
                numbers: serde_json::json!({ "start_p50_us": start.p50, "exec_us": exec }),
            });
            continue;
        }
        // trace: a short step a parent calls a few times, costing more than it runs.
        if t.max_siblings < BATCH_MIN_SIBLINGS
            && t.per_parent <= 8.0
            && exec < 10_000
            && cost > exec
            && t.count >= 2
        {
            let saved = (cost * t.count) as f64;
            out.push(Advice {
                rule: "trace",
                task: Some(t.task.clone()),
                env: t.env.clone(),
                message: format!(
                    "make {} a `#[weir::trace]`: it runs {} but costs {} as its own action \
                     ({} of {} calls); as a trace it runs in its caller, checkpointed (up to {} saved in all)",
                    t.task,
                    fmt_us(exec),
                    fmt_us(cost),
                    pct(t.overhead_share),
                    t.count,
                    fmt_us(saved as u64)
                ),
                numbers: serde_json::json!({
                    "actions": t.count, "exec_us": exec, "overhead_us": cost,
                }),
            });
            continue;
        }
        // concurrency: queue wait dominates while few actions ran at once.
        let running_at_once = if t.span_us > 0 {
            (exec * t.count) as f64 / t.span_us as f64
        } else {
            0.0
        };
        if queue.p50 > 2 * (exec + cost) && queue.p50 > 10_000 && running_at_once < cores {
            out.push(Advice {
                rule: "concurrency",
                task: Some(t.task.clone()),
                env: t.env.clone(),
                message: format!(
                    "{}: its actions wait {} (median) in the queue, {} of their time, while {:.1} \
                     run at once on average ({} cores here); raise `max_concurrency` of environment {} \
                     or `max_action_concurrency` on the run",
                    t.task,
                    fmt_us(queue.p50),
                    pct(queue.mean as f64 / (queue.mean + exec + cost).max(1) as f64),
                    running_at_once,
                    cores as u64,
                    t.env
                ),
                numbers: serde_json::json!({
                    "queue_p50_us": queue.p50, "running_at_once": running_at_once,
                }),
            });
        }
        // reference: large inline payloads.
        if let Some(sizes) = facts.inline_sizes.get(&t.task) {
            let mut s = sizes.clone();
            s.sort_unstable();
            if let Some(&median) = s.get(s.len() / 2)
                && median >= LARGE_INLINE
            {
                out.push(Advice {
                    rule: "reference",
                    task: Some(t.task.clone()),
                    env: t.env.clone(),
                    message: format!(
                        "{}: its payloads are {} (median) passed inline, copied through the state \
                         store for every call; pass a `weir::File` or `weir::DataFrame` by reference",
                        t.task,
                        fmt_bytes(median)
                    ),
                    numbers: serde_json::json!({ "payload_p50_bytes": median }),
                });
            }
        }
    }
    out
}

fn short(task: &str) -> &str {
    task.rsplit_once('.').map_or(task, |(_, n)| n)
}

/// `850µs`, `12.3ms`, `4.20s`.
pub fn fmt_us(us: u64) -> String {
    match us {
        0..1_000 => format!("{us}µs"),
        1_000..1_000_000 => format!("{:.1}ms", us as f64 / 1e3),
        _ => format!("{:.2}s", us as f64 / 1e6),
    }
}

fn fmt_bytes(b: u64) -> String {
    match b {
        0..1024 => format!("{b} B"),
        1024..1_048_576 => format!("{:.1} KiB", b as f64 / 1024.0),
        _ => format!("{:.1} MiB", b as f64 / 1_048_576.0),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use weir_core::ActionId;

    fn action(id: u64, parent: u64, task: &str, p: Phases, at: i64) -> ActionRecord {
        ActionRecord {
            id: ActionId(id),
            parent: ActionId(parent),
            task: task.into(),
            group: None,
            kind: ActionKind::Task,
            status: ActionStatus::Succeeded,
            attempts: 1,
            queued_at: at,
            started_at: Some(at + p.upload as i64 + p.queue as i64),
            ended_at: Some(at + p.values().iter().sum::<u64>() as i64),
            cache_hit: false,
            recovered: false,
            inputs: None,
            output: None,
            error: None,
            phases: Some(p),
        }
    }

    fn ph(queue: u64, start: u64, exec: u64, deliver: u64) -> Phases {
        Phases {
            upload: 5,
            queue,
            start,
            download: 2,
            exec,
            output: 3,
            deliver,
        }
    }

    fn summarize(actions: &[ActionRecord]) -> Vec<TaskSummary> {
        let mut s = Summarizer::default();
        s.add(actions);
        s.finish()
    }

    #[test]
    fn many_tiny_siblings_get_batch_advice_with_k_and_an_estimate() {
        let mut acts = vec![action(0, 0, "e.root", ph(0, 1, 1_000_000, 10), 0)];
        for i in 1..=1000 {
            acts.push(action(i, 0, "e.tiny", ph(0, 5, 20, 200), i as i64 * 30));
        }
        let tasks = summarize(&acts);
        let tiny = tasks.iter().find(|t| t.task == "e.tiny").unwrap();
        assert_eq!(tiny.count, 1000);
        assert_eq!(tiny.cost_us, 5 + 5 + 2 + 3 + 200);
        let advice = advise(&tasks, &RunFacts::default());
        assert_eq!(advice.len(), 1, "{advice:?}");
        let a = &advice[0];
        assert_eq!(a.rule, "batch");
        // 10 x 215 us of overhead / 20 us of work.
        assert_eq!(a.numbers["k"], 108);
        assert!(a.message.contains(".batch(108)"), "{}", a.message);
        assert!(
            a.numbers["speedup"].as_f64().unwrap() > 2.0,
            "{}",
            a.message
        );
    }

    #[test]
    fn a_short_step_called_once_per_parent_gets_trace_advice() {
        let mut acts = vec![];
        for i in 0..10u64 {
            let parent = 100 + i;
            acts.push(action(parent, parent, "e.work", ph(0, 5, 500_000, 100), 0));
            acts.push(action(200 + i, parent, "e.lookup", ph(0, 20, 40, 300), 0));
        }
        let advice = advise(&summarize(&acts), &RunFacts::default());
        let rules: Vec<_> = advice.iter().map(|a| (a.rule, a.task.clone())).collect();
        assert_eq!(rules, vec![("trace", Some("e.lookup".to_string()))]);
    }

    #[test]
    fn slow_starts_get_reuse_advice_and_long_queues_concurrency_advice() {
        let acts: Vec<_> = (1..=8)
            .map(|i| action(i, 0, "gpu.infer", ph(0, 900_000, 200_000, 100), 0))
            .collect();
        let advice = advise(&summarize(&acts), &RunFacts::default());
        assert_eq!(advice.len(), 1, "{advice:?}");
        assert_eq!((advice[0].rule, advice[0].env.as_str()), ("reuse", "gpu"));

        // One at a time over 8 s, each waiting seconds for its turn.
        let acts: Vec<_> = (0..8)
            .map(|i| {
                action(
                    i + 1,
                    0,
                    "etl.load",
                    ph(i * 1_000_000, 5, 1_000_000, 100),
                    0,
                )
            })
            .collect();
        let advice = advise(&summarize(&acts), &RunFacts::default());
        assert_eq!(advice.len(), 1, "{advice:?}");
        assert_eq!(advice[0].rule, "concurrency");
    }

    #[test]
    fn large_inline_payloads_get_reference_advice_and_a_tuned_run_none() {
        let acts: Vec<_> = (1..=4)
            .map(|i| action(i, 0, "e.big", ph(0, 5, 300_000, 100), 0))
            .collect();
        let tasks = summarize(&acts);
        assert!(advise(&tasks, &RunFacts::default()).is_empty());
        let facts = RunFacts {
            duration_us: None,
            inline_sizes: [("e.big".to_string(), vec![3 << 20; 4])].into(),
        };
        let advice = advise(&tasks, &facts);
        assert_eq!(advice.len(), 1);
        assert_eq!(advice[0].rule, "reference");
        assert!(
            advice[0].message.contains("3.0 MiB"),
            "{}",
            advice[0].message
        );
    }
}
