//! How much a record weighs in a batch's cost budget.

use std::sync::Arc;

/// A record that can estimate its own cost (for example its size in bytes or pixels).
///
/// [`DynamicBatcher`](crate::DynamicBatcher) needs its record type to implement this trait; the
/// default method returns `None`, so opting in is one line, and the batcher then uses its other
/// sources of cost. The precedence is: the cost given to
/// [`submit_with_cost`](crate::DynamicBatcher::submit_with_cost), then the builder's
/// [`cost_estimator`](crate::DynamicBatcherBuilder::cost_estimator), then
/// [`estimate_cost`](CostEstimator::estimate_cost), then the builder's
/// [`default_cost`](crate::DynamicBatcherBuilder::default_cost).
///
/// ```
/// use weir_batch::CostEstimator;
///
/// struct Image { pixels: u64 }
/// impl CostEstimator for Image {
///     fn estimate_cost(&self) -> Option<u64> { Some(self.pixels / 1024) }
/// }
///
/// struct Row(u32);
/// impl CostEstimator for Row {} // every row costs the default
/// ```
pub trait CostEstimator {
    /// The record's cost, or `None` to let the batcher fall back to its default cost.
    fn estimate_cost(&self) -> Option<u64> {
        None
    }
}

/// A record that can estimate its size in tokens, for [`TokenBatcher`](crate::TokenBatcher).
///
/// `estimate_tokens()` wins over [`estimate_cost()`](CostEstimator::estimate_cost) when both
/// return a value. The default method returns `None`.
pub trait TokenEstimator: CostEstimator {
    /// The record's size in tokens, or `None` to fall back to `estimate_cost()` and then to the
    /// batcher's default.
    fn estimate_tokens(&self) -> Option<u64> {
        None
    }
}

macro_rules! no_estimate {
    ($($ty:ty),* $(,)?) => {
        $(
            impl CostEstimator for $ty {}
            impl TokenEstimator for $ty {}
        )*
    };
}

no_estimate!(
    (),
    bool,
    char,
    u8,
    u16,
    u32,
    u64,
    u128,
    usize,
    i8,
    i16,
    i32,
    i64,
    i128,
    isize,
    f32,
    f64,
    String,
    &'static str,
);

impl<T> CostEstimator for Vec<T> {}
impl<T> TokenEstimator for Vec<T> {}

impl<T: CostEstimator + ?Sized> CostEstimator for Box<T> {
    fn estimate_cost(&self) -> Option<u64> {
        (**self).estimate_cost()
    }
}
impl<T: TokenEstimator + ?Sized> TokenEstimator for Box<T> {
    fn estimate_tokens(&self) -> Option<u64> {
        (**self).estimate_tokens()
    }
}
impl<T: CostEstimator + ?Sized> CostEstimator for Arc<T> {
    fn estimate_cost(&self) -> Option<u64> {
        (**self).estimate_cost()
    }
}
impl<T: TokenEstimator + ?Sized> TokenEstimator for Arc<T> {
    fn estimate_tokens(&self) -> Option<u64> {
        (**self).estimate_tokens()
    }
}

/// A text prompt for LLM-style batching, with optional caller metadata (a task id, the prompt's
/// index in its chunk, ...) that travels with it to `process_fn`.
///
/// It estimates `chars / 4 + 1` tokens, the usual rough rule of four characters per token.
///
/// ```
/// use weir_batch::{Prompt, TokenEstimator};
///
/// let plain = Prompt::new("What is 2+2?");
/// assert_eq!(plain.estimate_tokens(), Some(4)); // 12 chars / 4 + 1
///
/// let tagged = Prompt::with_metadata("Hello", ("chunk_007", 3));
/// assert_eq!(tagged.metadata, Some(("chunk_007", 3)));
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Hash, Default)]
pub struct Prompt<M = ()> {
    /// The prompt text.
    pub text: String,
    /// Caller data carried with the prompt; the batcher never looks at it.
    pub metadata: Option<M>,
}

impl Prompt {
    /// A prompt without metadata.
    pub fn new(text: impl Into<String>) -> Self {
        Prompt {
            text: text.into(),
            metadata: None,
        }
    }
}

impl<M> Prompt<M> {
    /// A prompt carrying `metadata`.
    pub fn with_metadata(text: impl Into<String>, metadata: M) -> Self {
        Prompt {
            text: text.into(),
            metadata: Some(metadata),
        }
    }
}

impl<M> CostEstimator for Prompt<M> {}

impl<M> TokenEstimator for Prompt<M> {
    fn estimate_tokens(&self) -> Option<u64> {
        let chars = self.text.chars().count() as u64;
        Some(chars / 4 + 1)
    }
}

/// Reads a record's own estimate, as `DynamicBatcher` does.
pub(crate) fn record_cost<R: CostEstimator>(record: &R) -> Option<u64> {
    record.estimate_cost()
}

/// Reads a record's own estimate, as `TokenBatcher` does: tokens first, then cost.
pub(crate) fn record_tokens<R: TokenEstimator>(record: &R) -> Option<u64> {
    record.estimate_tokens().or_else(|| record.estimate_cost())
}
