//! `weir::map`: fan a task out over inputs (SPEC §2.3).

use std::future::{Future, IntoFuture};
use std::pin::Pin;

use futures::StreamExt;
use serde::de::DeserializeOwned;
use weir_engine::{CapturedContext, TaskCall, capture_context, with_context};

use crate::batch_map::{BatchMap, Size};
use crate::{Error, Result};

/// Calls `task` once per input, concurrently, and returns the results in input order.
///
/// Await it for per-item results (`Vec<Result<O>>`: failures in place), or call
/// [`Map::fail_fast`] for `Result<Vec<O>>` that returns the first failure and cancels the
/// children still running. Bind extra arguments with a closure:
/// `weir::map(|x| scale(x, 10), inputs)`. Children form one group, named `"<task>_map"` unless
/// [`Map::group`] says otherwise; [`Map::concurrency`] bounds how many run at once.
///
/// For items too small to be worth an action each, [`Map::batch`] and [`Map::auto_batch`] run
/// a task that takes a `Vec` of items, k items per action.
pub fn map<F, It>(task: F, inputs: It) -> Map<F, It::IntoIter>
where
    It: IntoIterator,
{
    Map {
        task,
        inputs: inputs.into_iter(),
        concurrency: None,
        group: None,
        ctx: capture_context(),
    }
}

/// A pending `map`; see [`map`].
#[must_use = "a map does nothing until awaited"]
pub struct Map<F, It> {
    task: F,
    inputs: It,
    concurrency: Option<usize>,
    group: Option<String>,
    ctx: Option<CapturedContext>,
}

impl<F, It> std::fmt::Debug for Map<F, It> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Map")
            .field("concurrency", &self.concurrency)
            .field("group", &self.group)
            .finish()
    }
}

impl<F, It> Map<F, It> {
    /// At most `n` children run at once (default: all).
    pub fn concurrency(mut self, n: usize) -> Self {
        self.concurrency = Some(n.max(1));
        self
    }

    /// Names the children's group.
    pub fn group(mut self, name: impl Into<String>) -> Self {
        self.group = Some(name.into());
        self
    }

    /// Runs `k` items per action: the task takes a `Vec` of items and returns a `Vec` with one
    /// result per item, in order (`weir::map(process_batch, items).batch(100)`); the map
    /// returns per-item results in input order, flattened. A batch that fails fails each of
    /// its items; one that returns another number of results than it had items fails with a
    /// non-recoverable error. The last batch may be smaller.
    ///
    /// # Panics
    /// When `k` is 0 (as `slice::chunks` does).
    pub fn batch(self, k: usize) -> BatchMap<F, It> {
        assert!(k > 0, "weir::map(..).batch(k): k must be at least 1");
        BatchMap {
            map: self,
            size: Size::Fixed(k),
        }
    }

    /// As [`Map::batch`], with k chosen from the task's measured overhead and work per item
    /// (two probe batches first) so that a batch's work is about ten times its overhead; the
    /// choice is recorded, so a resumed run makes the same batches. See
    /// [`auto_batch_size`](crate::auto_batch_size) for the rule and its bounds.
    pub fn auto_batch(self) -> BatchMap<F, It> {
        BatchMap {
            map: self,
            size: Size::Auto,
        }
    }

    /// The parts, for the batched map.
    #[allow(clippy::type_complexity)]
    pub(crate) fn into_parts(
        self,
    ) -> (
        F,
        It,
        Option<usize>,
        Option<String>,
        Option<CapturedContext>,
    ) {
        (
            self.task,
            self.inputs,
            self.concurrency,
            self.group,
            self.ctx,
        )
    }
}

impl<I, O, F, It> Map<F, It>
where
    F: FnMut(I) -> TaskCall<O> + Send + 'static,
    It: Iterator<Item = I> + Send + 'static,
    I: Send + 'static,
    O: DeserializeOwned + Send + 'static,
{
    /// Returns the first failure and cancels the rest.
    pub fn fail_fast(self) -> MapFailFast<F, It> {
        MapFailFast(self)
    }

    /// The children as a stream of `(input index, result)` in completion order, and a size hint.
    fn calls(
        self,
    ) -> (
        impl futures::Stream<Item = (usize, Result<O>)> + Send,
        usize,
    ) {
        let Map {
            mut task,
            inputs,
            concurrency,
            group,
            ctx,
        } = self;
        let (low, _) = inputs.size_hint();
        let mut group: Option<std::sync::Arc<str>> = group.map(Into::into);
        let calls = inputs.enumerate().map(move |(i, input)| {
            let call = with_context(&ctx, || task(input));
            let name = group
                .get_or_insert_with(|| format!("{}_map", call.task().short_name()).into())
                .clone();
            let call = call.group(name);
            async move { (i, call.await) }
        });
        (
            futures::stream::iter(calls).buffer_unordered(concurrency.unwrap_or(usize::MAX)),
            low,
        )
    }

    async fn per_item(self) -> Vec<Result<O>> {
        let (mut stream, hint) = self.calls();
        let mut slots: Vec<Option<Result<O>>> = Vec::with_capacity(hint);
        while let Some((i, r)) = stream.next().await {
            place(&mut slots, i, r);
        }
        slots
            .into_iter()
            .map(|s| s.unwrap_or_else(|| Err(Error::msg("map child produced no result"))))
            .collect()
    }

    async fn first_failure(self) -> Result<Vec<O>> {
        let (mut stream, hint) = self.calls();
        let mut slots: Vec<Option<O>> = Vec::with_capacity(hint);
        while let Some((i, r)) = stream.next().await {
            // `?` drops the stream, which cancels the children still running.
            place(&mut slots, i, r?);
        }
        slots
            .into_iter()
            .map(|s| s.ok_or_else(|| Error::msg("map child produced no result")))
            .collect()
    }
}

/// Puts a result at its input index.
fn place<T>(slots: &mut Vec<Option<T>>, i: usize, value: T) {
    if slots.len() <= i {
        slots.resize_with(i + 1, || None);
    }
    slots[i] = Some(value);
}

impl<I, O, F, It> IntoFuture for Map<F, It>
where
    F: FnMut(I) -> TaskCall<O> + Send + 'static,
    It: Iterator<Item = I> + Send + 'static,
    I: Send + 'static,
    O: DeserializeOwned + Send + 'static,
{
    type Output = Vec<Result<O>>;
    type IntoFuture = Pin<Box<dyn Future<Output = Vec<Result<O>>> + Send>>;

    fn into_future(self) -> Self::IntoFuture {
        Box::pin(self.per_item())
    }
}

/// A fail-fast `map`; see [`Map::fail_fast`].
#[must_use = "a map does nothing until awaited"]
#[derive(Debug)]
pub struct MapFailFast<F, It>(Map<F, It>);

impl<I, O, F, It> IntoFuture for MapFailFast<F, It>
where
    F: FnMut(I) -> TaskCall<O> + Send + 'static,
    It: Iterator<Item = I> + Send + 'static,
    I: Send + 'static,
    O: DeserializeOwned + Send + 'static,
{
    type Output = Result<Vec<O>>;
    type IntoFuture = Pin<Box<dyn Future<Output = Result<Vec<O>>> + Send>>;

    fn into_future(self) -> Self::IntoFuture {
        Box::pin(self.0.first_failure())
    }
}
