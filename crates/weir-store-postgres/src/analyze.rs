//! Fresh planner statistics while the tables are young.
//!
//! The store's statements find rows by key, and its largest writes join a batch of keys
//! (arrays) to `actions` or `queue`. PostgreSQL plans them from the tables' statistics, which
//! autovacuum gathers a minute or more after the tables have grown. Until then the planner
//! guesses: a batch update of a run's actions went through `actions_by_parent` on the run
//! alone, reading every action of the run for each key (a fresh deployment's first run of
//! 10 000 actions read 600–1 600 rows per action). So the writer analyzes the two tables each
//! time the rows it has written double (from 1 000 to 16 M; beyond that autovacuum's
//! schedule is as good), on a connection of its own, one analysis at a time.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use crate::{Inner, open_client};

/// Rows written before the first analysis.
const FIRST: u64 = 1_000;
/// No analysis after this many rows.
const LAST: u64 = 16_000_000;

/// When the writer next analyzes.
pub(crate) struct Schedule {
    written: u64,
    next: u64,
    running: Arc<AtomicBool>,
}

impl Default for Schedule {
    fn default() -> Schedule {
        Schedule {
            written: 0,
            next: FIRST,
            running: Arc::default(),
        }
    }
}

impl Schedule {
    /// Counts `rows` committed writes; starts an analysis when their number has doubled.
    pub(crate) fn written(&mut self, inner: &Arc<Inner>, rows: usize) {
        self.written += rows as u64;
        if self.written < self.next || self.next > LAST {
            return;
        }
        if self.running.swap(true, Ordering::AcqRel) {
            return; // the last one is still running: the next commit tries again
        }
        self.next = self.written.saturating_mul(2);
        let (inner, running) = (inner.clone(), self.running.clone());
        tokio::spawn(async move {
            let result = async {
                let client = open_client(&inner.config).await?;
                client.batch_execute("ANALYZE actions, queue").await
            }
            .await;
            if let Err(e) = result {
                tracing::warn!(error = %e, "analyzing the store's tables failed (retried later)");
            }
            running.store(false, Ordering::Release);
        });
    }
}
