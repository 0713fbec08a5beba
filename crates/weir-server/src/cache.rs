//! Cached aggregates. Counting a run of 1 000 000 actions reads every row, so results are kept:
//! for good once the run has settled, and otherwise for `max(MIN_AGE, 4 × the time the
//! computation took)`, which bounds the share of the machine a live view can take.

use std::collections::HashMap;
use std::hash::Hash;
use std::sync::Arc;
use std::time::{Duration, Instant};

use parking_lot::Mutex;

/// Shortest time a live aggregate is reused.
const MIN_AGE: Duration = Duration::from_millis(450);
/// Most entries per kind of aggregate.
const MAX_ENTRIES: usize = 256;

struct Entry<V> {
    value: Arc<V>,
    at: Instant,
    cost: Duration,
    settled: bool,
}

/// One kind of cached aggregate.
pub(crate) struct Slot<K, V> {
    entries: Mutex<HashMap<K, Entry<V>>>,
    // One computation at a time per kind: concurrent requests for the same aggregate wait for
    // the first and reuse its result instead of reading the run again.
    computing: tokio::sync::Mutex<()>,
}

impl<K: Hash + Eq + Clone + Send + 'static, V: Send + Sync + 'static> Slot<K, V> {
    pub(crate) fn new() -> Self {
        Slot {
            entries: Mutex::new(HashMap::new()),
            computing: tokio::sync::Mutex::new(()),
        }
    }

    fn cached(&self, key: &K, settled: bool) -> Option<Arc<V>> {
        let entries = self.entries.lock();
        let e = entries.get(key)?;
        let fresh = e.at.elapsed() < MIN_AGE.max(e.cost * 4);
        ((e.settled && settled) || fresh).then(|| e.value.clone())
    }

    /// The cached value of `key`, or `compute`'s (run on a blocking thread). `settled`: the
    /// run is over and its rows no longer change, so the value may be kept for good.
    pub(crate) async fn get<E>(
        &self,
        key: K,
        settled: bool,
        compute: impl FnOnce() -> Result<V, E> + Send + 'static,
    ) -> Result<Arc<V>, E>
    where
        E: From<tokio::task::JoinError> + Send + 'static,
    {
        if let Some(v) = self.cached(&key, settled) {
            return Ok(v);
        }
        let _computing = self.computing.lock().await;
        if let Some(v) = self.cached(&key, settled) {
            return Ok(v);
        }
        let started = Instant::now();
        let value = tokio::task::spawn_blocking(compute).await??;
        let value = Arc::new(value);
        let mut entries = self.entries.lock();
        if entries.len() >= MAX_ENTRIES
            && let Some(oldest) = entries
                .iter()
                .min_by_key(|(_, e)| e.at)
                .map(|(k, _)| k.clone())
        {
            entries.remove(&oldest);
        }
        entries.insert(
            key,
            Entry {
                value: value.clone(),
                at: Instant::now(),
                cost: started.elapsed(),
                settled,
            },
        );
        Ok(value)
    }
}
