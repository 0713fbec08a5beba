//! The whole-run aggregation behind the timeline and the utilization chart, fed plain rows, so
//! that every backend's [`super::ReadModel::run_activity`] computes the same lanes and buckets.

use weir_core::ActionId;

use super::{StatusCounts, UiActivity, UiEnvUsage, UiLane, UiRun};

/// One action as the aggregation needs it (the columns of the `actions` table).
#[derive(Clone, Copy, Debug)]
pub struct ActivityRow<'a> {
    /// Creation order (`seq`).
    pub seq: i64,
    /// Action id.
    pub id: i64,
    /// Parent id (the root is its own parent).
    pub parent: i64,
    /// Group name.
    pub group: Option<&'a str>,
    /// Full task name.
    pub task: &'a str,
    /// Status code ([`weir_core::ActionStatus::code`]).
    pub status: i64,
    /// Queue time (µs).
    pub queued_at: i64,
    /// Start of the latest attempt (µs).
    pub started_at: Option<i64>,
    /// End (µs).
    pub ended_at: Option<i64>,
}

/// Aggregates the rows of one run into lanes and per-environment busy time: create it with
/// [`ActivityBuilder::for_run`], [`ActivityBuilder::add`] every action of the run in creation
/// order, then [`ActivityBuilder::finish`].
pub struct ActivityBuilder {
    t1: i64,
    t0: i64,
    bucket_us: i64,
    buckets: usize,
    counts: StatusCounts,
    lanes: Vec<UiLane>,
    /// Lanes by parent id, then scanned by group name (a parent has few groups).
    lanes_by_parent: std::collections::HashMap<i64, Vec<usize>>,
    envs: Vec<UiEnvUsage>,
    /// Per environment: a difference array of whole buckets covered.
    covered: Vec<Vec<i64>>,
}

impl ActivityBuilder {
    /// The aggregation of `run` in `buckets` equal time buckets from its creation to its end
    /// (or `now`, while it runs).
    pub fn for_run(run: &UiRun, buckets: usize, now: i64) -> Self {
        let buckets = buckets.max(1);
        let t0 = run.created_at;
        let t1 = run.ended_at.unwrap_or(now).max(t0 + 1);
        let bucket_us = ((t1 - t0) as f64 / buckets as f64).ceil().max(1.0) as i64;
        Self::new(t0, t1, bucket_us, buckets)
    }

    fn new(t0: i64, t1: i64, bucket_us: i64, buckets: usize) -> Self {
        ActivityBuilder {
            t0,
            t1,
            bucket_us,
            buckets,
            counts: StatusCounts::default(),
            lanes: Vec::new(),
            lanes_by_parent: Default::default(),
            envs: Vec::new(),
            covered: Vec::new(),
        }
    }

    /// Adds one action.
    pub fn add(&mut self, r: ActivityRow<'_>) {
        let ActivityRow {
            seq,
            id,
            parent,
            group: grp,
            task,
            status,
            queued_at,
            started_at,
            ended_at,
        } = r;
        self.counts.add(status, 1);

        // The root is its own parent: it gets a lane of its own, keyed apart from its children.
        let lane_parent = if id == parent { -1 } else { parent };
        let slots = self.lanes_by_parent.entry(lane_parent).or_default();
        let lanes = &mut self.lanes;
        let found = match grp {
            Some(_) => slots
                .iter()
                .copied()
                .find(|&i| lanes[i].group.as_deref() == grp),
            // Ungrouped calls get a lane each, until their parent has made more than
            // MAX_SINGLE_LANES: then they fold into one lane.
            None => {
                let singles: Vec<usize> = slots
                    .iter()
                    .copied()
                    .filter(|&i| lanes[i].group.is_none())
                    .collect();
                match singles.as_slice() {
                    [only] if lanes[*only].action.is_none() => Some(*only), // folded already
                    s if s.len() < MAX_SINGLE_LANES => None,
                    [keep, rest @ ..] => {
                        for &j in rest {
                            let other = std::mem::replace(&mut lanes[j], empty_lane());
                            merge_lane(&mut lanes[*keep], &other);
                        }
                        lanes[*keep].action = None;
                        slots.retain(|i| !rest.contains(i));
                        Some(*keep)
                    }
                    [] => None,
                }
            }
        };
        let lane = match found {
            Some(i) => &mut lanes[i],
            None => {
                slots.push(lanes.len());
                lanes.push(UiLane {
                    parent: ActionId(parent as u64),
                    group: grp.map(str::to_string),
                    task: Some(task.to_string()),
                    action: Some(ActionId(id as u64)),
                    count: 0,
                    counts: StatusCounts::default(),
                    first_seq: seq,
                    queued_at,
                    started_at: None,
                    ended_at: None,
                });
                lanes.last_mut().expect("just pushed")
            }
        };
        lane.count += 1;
        lane.counts.add(status, 1);
        if lane.count > 1 {
            lane.action = None;
            if lane.task.as_deref().is_some_and(|t| t != task) {
                lane.task = None;
            }
        }
        lane.first_seq = lane.first_seq.min(seq);
        lane.queued_at = lane.queued_at.min(queued_at);
        lane.started_at = min_opt(lane.started_at, started_at);
        lane.ended_at = ended_at.max(lane.ended_at);

        let Some(started) = started_at else {
            return;
        };
        // Busy time, relative to t0, clipped to [t0, t1]; a running action counts until t1.
        let s = (started.clamp(self.t0, self.t1) - self.t0) as f64;
        let end = ended_at.unwrap_or(self.t1).max(started).min(self.t1);
        let e = (end.max(self.t0) - self.t0) as f64;
        let env = task.split_once('.').map_or(task, |(env, _)| env);
        let i = match self.envs.iter().position(|u| u.env == env) {
            Some(i) => i,
            None => {
                self.envs.push(UiEnvUsage {
                    env: env.to_string(),
                    busy_us: vec![0.0; self.buckets],
                    total_busy_us: 0.0,
                    actions: 0,
                });
                self.covered.push(vec![0; self.buckets + 1]);
                self.envs.len() - 1
            }
        };
        let usage = &mut self.envs[i];
        usage.actions += 1;
        usage.total_busy_us += e - s;
        let width = self.bucket_us as f64;
        let last = self.buckets - 1;
        let b0 = ((s / width) as usize).min(last);
        let b1 = ((e / width) as usize).min(last);
        if b0 == b1 {
            usage.busy_us[b0] += e - s;
        } else {
            usage.busy_us[b0] += (b0 + 1) as f64 * width - s;
            usage.busy_us[b1] += e - b1 as f64 * width;
            self.covered[i][b0 + 1] += 1;
            self.covered[i][b1] -= 1;
        }
    }

    /// The lanes (by first start, then creation) and the environments (by name).
    pub fn finish(mut self) -> UiActivity {
        let width = self.bucket_us as f64;
        for (usage, diff) in self.envs.iter_mut().zip(&self.covered) {
            let mut whole = 0;
            for (b, busy) in usage.busy_us.iter_mut().enumerate() {
                whole += diff[b];
                *busy += whole as f64 * width;
            }
        }
        self.envs.sort_by(|a, b| a.env.cmp(&b.env));
        self.lanes.retain(|l| l.count > 0); // lanes merged into others
        self.lanes
            .sort_by_key(|l| (l.started_at.is_none(), l.started_at, l.first_seq));
        UiActivity {
            t0: self.t0,
            t1: self.t1,
            bucket_us: self.bucket_us,
            counts: self.counts,
            lanes: self.lanes,
            envs: self.envs,
        }
    }
}

/// Most lanes of single ungrouped calls per parent before they fold into one.
const MAX_SINGLE_LANES: usize = 20;

fn empty_lane() -> UiLane {
    UiLane {
        parent: ActionId::ROOT,
        group: None,
        task: None,
        action: None,
        count: 0,
        counts: StatusCounts::default(),
        first_seq: i64::MAX,
        queued_at: i64::MAX,
        started_at: None,
        ended_at: None,
    }
}

fn merge_lane(into: &mut UiLane, other: &UiLane) {
    into.count += other.count;
    for (a, b) in into.counts.0.iter_mut().zip(other.counts.0) {
        *a += b;
    }
    if into.task != other.task {
        into.task = None;
    }
    into.first_seq = into.first_seq.min(other.first_seq);
    into.queued_at = into.queued_at.min(other.queued_at);
    into.started_at = min_opt(into.started_at, other.started_at);
    into.ended_at = into.ended_at.max(other.ended_at);
}

fn min_opt(a: Option<i64>, b: Option<i64>) -> Option<i64> {
    match (a, b) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    }
}
