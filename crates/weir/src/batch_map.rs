//! Batched `map`: k items per action (`weir::map(task, items).batch(k)` or `.auto_batch()`),
//! for work whose items are too small to pay an action's overhead each.
//!
//! The task takes a `Vec` of items and returns a `Vec` of results, one per item, in order (the
//! guide's `process_batch`); the map cuts the items into batches, runs one action per batch and
//! hands back per-item results in input order, flattened.
//!
//! # How `.auto_batch()` chooses k
//! It runs two probe batches first, one of 1 item and one of `p` items (p = 16, fewer when there
//! are fewer items), and times each call from the parent's side: `t1 = o + w` and `tp = o + p·w`,
//! where `o` is the overhead of an action (everything that is not the task's own work: admission,
//! queueing, start, payloads, the result's way back) and `w` the work per item. So
//! `w = (tp − t1) / (p − 1)` and `o = t1 − w`, and k is the smallest batch whose work is at least
//! ten times its overhead, `k = ⌈10·o / w⌉`, bounded by 1 and by what still leaves `spread`
//! batches to run side by side (`(n − 1 − p) / spread`, spread = the map's concurrency, or 16;
//! at most 100 000). The probes' results are part of the output. The chosen k is recorded as a
//! trace (`weir.auto_batch`, keyed by the task's name and the number of items), so a retried or
//! resumed parent makes the same batches, hence the same action ids, and replays them.

use std::future::{Future, IntoFuture};
use std::pin::Pin;
use std::time::{Duration, Instant};

use futures::StreamExt;
use serde::de::DeserializeOwned;
use weir_engine::{CapturedContext, TaskCall, with_context};

use crate::map::Map;
use crate::{Error, Result};

/// Items in the larger probe batch of `.auto_batch()`.
const PROBE: usize = 16;

/// How many batches `.auto_batch()` keeps for running side by side when the map has no
/// concurrency limit.
const SPREAD: usize = 16;

/// The largest batch `.auto_batch()` chooses.
const MAX_AUTO: usize = 100_000;

/// How items are cut into batches.
#[derive(Clone, Copy, Debug)]
pub(crate) enum Size {
    Fixed(usize),
    Auto,
}

/// A batched `map`; see [`Map::batch`] and [`Map::auto_batch`].
#[must_use = "a map does nothing until awaited"]
pub struct BatchMap<F, It> {
    pub(crate) map: Map<F, It>,
    pub(crate) size: Size,
}

impl<F, It> std::fmt::Debug for BatchMap<F, It> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BatchMap")
            .field("map", &self.map)
            .field("size", &self.size)
            .finish()
    }
}

impl<F, It> BatchMap<F, It> {
    /// At most `n` batches run at once (default: all); as [`Map::concurrency`].
    pub fn concurrency(mut self, n: usize) -> Self {
        self.map = self.map.concurrency(n);
        self
    }

    /// Names the batches' group; as [`Map::group`].
    pub fn group(mut self, name: impl Into<String>) -> Self {
        self.map = self.map.group(name);
        self
    }
}

/// A fail-fast batched `map`; see [`BatchMap::fail_fast`].
#[must_use = "a map does nothing until awaited"]
#[derive(Debug)]
pub struct BatchMapFailFast<F, It>(BatchMap<F, It>);

/// The batch size `.auto_batch()` takes for per-action overhead `o` and per-item work `w`
/// (seconds), `n` items in all of which `probed` ran in the probes, at most `spread` batches
/// side by side. See the module's docs.
pub fn auto_batch_size(o: f64, w: f64, n: usize, probed: usize, spread: usize) -> usize {
    let rest = n.saturating_sub(probed);
    let cap = (rest / spread.max(1)).clamp(1, MAX_AUTO);
    if w.is_nan() || w <= 0.0 {
        // No measurable work per item: as large as the cap allows.
        return cap;
    }
    let k = (10.0 * o.max(0.0) / w).ceil();
    if k.is_finite() && k >= 1.0 {
        (k as usize).clamp(1, cap)
    } else {
        1
    }
}

impl<I, O, F, It> BatchMap<F, It>
where
    F: FnMut(Vec<I>) -> TaskCall<Vec<O>> + Send + 'static,
    It: Iterator<Item = I> + Send + 'static,
    I: Send + 'static,
    O: DeserializeOwned + Send + 'static,
{
    /// Returns the first failure (a batch that failed, or one that returned another number of
    /// results than it had items) and cancels the batches still running.
    pub fn fail_fast(self) -> BatchMapFailFast<F, It> {
        BatchMapFailFast(self)
    }

    /// Runs the batches: per batch, its item count and its outcome, in input order.
    async fn run(self, fail_fast: bool) -> Vec<(usize, Result<Vec<O>>)> {
        let BatchMap { map, size } = self;
        let (mut task, inputs, concurrency, group, ctx) = map.into_parts();
        let mut items: std::collections::VecDeque<I> = inputs.collect();
        let n = items.len();
        let mut group: Option<std::sync::Arc<str>> = group.map(Into::into);
        let mut call = |batch: Vec<I>| {
            let call = with_context(&ctx, || task(batch));
            let name = group
                .get_or_insert_with(|| format!("{}_map", call.task().short_name()).into())
                .clone();
            call.group(name)
        };
        let mut done: Vec<(usize, Result<Vec<O>>)> = Vec::new();
        let k = match size {
            Size::Fixed(k) => k,
            Size::Auto if n <= 2 => n.max(1),
            Size::Auto => {
                let p = PROBE.min(n - 1);
                let one: Vec<I> = items.drain(..1).collect();
                let first = call(one);
                let task_name = first.task().full_name().to_string();
                let t1 = timed(first).await;
                let probe: Vec<I> = items.drain(..p).collect();
                let tp = timed(call(probe)).await;
                let failed = t1.1.is_err() || tp.1.is_err();
                let (o, w) = overhead_and_work(t1.0, tp.0, p);
                let spread = concurrency.unwrap_or(SPREAD);
                let chosen = auto_batch_size(o, w, n, 1 + p, spread);
                done.push((1, t1.1));
                done.push((p, tp.1));
                if failed && fail_fast {
                    return done;
                }
                match record_choice(&ctx, &task_name, n, chosen).await {
                    Ok(k) => k,
                    Err(e) => {
                        let e = Error::with_kind(
                            e.kind(),
                            format!("auto_batch of {task_name}: recording the batch size: {e}"),
                        );
                        done.push((items.len(), Err(e)));
                        return done;
                    }
                }
            }
        };
        let mut batches = Vec::new();
        while !items.is_empty() {
            let take = k.min(items.len());
            batches.push(items.drain(..take).collect::<Vec<I>>());
        }
        let first = done.len();
        let lens: Vec<usize> = batches.iter().map(Vec::len).collect();
        let calls = batches.into_iter().enumerate().map(|(b, batch)| {
            let c = call(batch);
            async move { (b, c.await) }
        });
        let mut stream =
            futures::stream::iter(calls).buffer_unordered(concurrency.unwrap_or(usize::MAX));
        let mut slots: Vec<Option<Result<Vec<O>>>> = (0..lens.len()).map(|_| None).collect();
        while let Some((b, r)) = stream.next().await {
            let r = r.and_then(|v| checked(v, lens[b]));
            let stop = fail_fast && r.is_err();
            slots[b] = Some(r);
            if stop {
                // Dropping the stream cancels the batches still running.
                break;
            }
        }
        drop(stream);
        done.extend(slots.into_iter().zip(lens).filter_map(|(s, len)| {
            s.map(|r| (len, r))
                .or((!fail_fast).then(|| (len, Err(Error::msg("a batch produced no result")))))
        }));
        // The probes' results were not length-checked yet.
        for (len, r) in done.iter_mut().take(first) {
            if let Ok(v) = r
                && v.len() != *len
            {
                let got = v.len();
                *r = Err(wrong_count(got, *len));
            }
        }
        done
    }
}

/// Times one call from the parent's side.
async fn timed<O: DeserializeOwned + Send + 'static>(
    call: TaskCall<Vec<O>>,
) -> (Duration, Result<Vec<O>>) {
    let start = Instant::now();
    let r = call.await;
    (start.elapsed(), r)
}

/// `(o, w)` in seconds from the times of a 1-item and a `p`-item batch.
fn overhead_and_work(t1: Duration, tp: Duration, p: usize) -> (f64, f64) {
    let (t1, tp) = (t1.as_secs_f64(), tp.as_secs_f64());
    let w = if p > 1 {
        ((tp - t1) / (p - 1) as f64).max(0.0)
    } else {
        t1
    };
    ((t1 - w).max(0.0), w)
}

/// The batch size as first chosen, recorded as a trace of the calling task: replayed by a
/// retried or resumed parent.
async fn record_choice(
    ctx: &Option<CapturedContext>,
    task: &str,
    n: usize,
    chosen: usize,
) -> Result<usize> {
    if ctx.is_none() {
        return Ok(chosen);
    }
    let inputs = weir_core::codec::encode(&(task, n as u64));
    weir_engine::trace_call("weir.auto_batch", inputs, async move { Ok(chosen as u64) })
        .await
        .map(|k| k.max(1) as usize)
}

fn wrong_count(got: usize, want: usize) -> Error {
    Error::non_recoverable(format!(
        "a batch of {want} items returned {got} results: a batched task returns one result per item, in order"
    ))
}

fn checked<O>(v: Vec<O>, want: usize) -> Result<Vec<O>> {
    match v.len() == want {
        true => Ok(v),
        false => Err(wrong_count(v.len(), want)),
    }
}

/// Per-item results from per-batch ones: a failed batch fails each of its items.
fn flatten<O>(batches: Vec<(usize, Result<Vec<O>>)>) -> Vec<Result<O>> {
    let mut out = Vec::new();
    for (len, r) in batches {
        match r {
            Ok(v) => out.extend(v.into_iter().map(Ok)),
            Err(e) => {
                for _ in 0..len {
                    out.push(Err(Error::with_kind(e.kind(), e.message())));
                }
            }
        }
    }
    out
}

impl<I, O, F, It> IntoFuture for BatchMap<F, It>
where
    F: FnMut(Vec<I>) -> TaskCall<Vec<O>> + Send + 'static,
    It: Iterator<Item = I> + Send + 'static,
    I: Send + 'static,
    O: DeserializeOwned + Send + 'static,
{
    type Output = Vec<Result<O>>;
    type IntoFuture = Pin<Box<dyn Future<Output = Vec<Result<O>>> + Send>>;

    fn into_future(self) -> Self::IntoFuture {
        Box::pin(async move { flatten(self.run(false).await) })
    }
}

impl<I, O, F, It> IntoFuture for BatchMapFailFast<F, It>
where
    F: FnMut(Vec<I>) -> TaskCall<Vec<O>> + Send + 'static,
    It: Iterator<Item = I> + Send + 'static,
    I: Send + 'static,
    O: DeserializeOwned + Send + 'static,
{
    type Output = Result<Vec<O>>;
    type IntoFuture = Pin<Box<dyn Future<Output = Result<Vec<O>>> + Send>>;

    fn into_future(self) -> Self::IntoFuture {
        Box::pin(async move {
            let mut out = Vec::new();
            for (_, r) in self.0.run(true).await {
                out.extend(r?);
            }
            Ok(out)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_batch_does_ten_times_its_overhead_in_work_within_bounds() {
        // 1 ms overhead, 20 µs per item: k = 500.
        assert_eq!(auto_batch_size(1e-3, 20e-6, 100_000, 17, 16), 500);
        // Bounded by what leaves 16 batches side by side.
        assert_eq!(auto_batch_size(1e-3, 20e-6, 1_000, 17, 16), 61);
        // Work already large against overhead: one item per action.
        assert_eq!(auto_batch_size(10e-6, 1.0, 100_000, 17, 16), 1);
        // No measurable work: the cap.
        assert_eq!(auto_batch_size(1e-3, 0.0, 100_000, 17, 16), 6_248);
        // Never zero, never over the maximum.
        assert_eq!(auto_batch_size(1e-3, 1e-9, 10, 9, 16), 1);
        assert_eq!(auto_batch_size(1.0, 1e-9, 1 << 40, 17, 1), MAX_AUTO);
    }

    #[test]
    fn overhead_and_work_come_from_the_two_probes() {
        let (o, w) = overhead_and_work(Duration::from_micros(120), Duration::from_micros(420), 16);
        assert!((w - 20e-6).abs() < 1e-9, "{w}");
        assert!((o - 100e-6).abs() < 1e-9, "{o}");
        // A larger batch measured faster than one item (noise): no work, overhead t1.
        let (o, w) = overhead_and_work(Duration::from_micros(120), Duration::from_micros(100), 16);
        assert_eq!(w, 0.0);
        assert!((o - 120e-6).abs() < 1e-9);
    }

    #[test]
    fn a_failed_batch_fails_each_of_its_items_in_place() {
        let out = flatten(vec![
            (2, Ok(vec![1, 2])),
            (2, Err(Error::msg("boom"))),
            (1, Ok(vec![5])),
        ]);
        assert_eq!(out.len(), 5);
        assert!(matches!(out[0], Ok(1)) && matches!(out[1], Ok(2)) && matches!(out[4], Ok(5)));
        assert!(out[2].as_ref().is_err_and(|e| e.message() == "boom"));
        assert!(out[3].is_err());
        assert!(checked(vec![1, 2, 3], 2).is_err());
    }
}
