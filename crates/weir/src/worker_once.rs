//! Worker-scoped singletons (SPEC §7.3).

use std::future::Future;

/// A value created once per worker process and shared by every task running there: a loaded
/// model, a connection pool, a shared [`crate::batch::TokenBatcher`].
///
/// In the embedded in-process mode the worker is the engine's process; with worker processes it
/// lives as long as the worker. Initialization runs once even when many tasks ask at the same
/// time; the others wait for it.
///
/// ```
/// use weir::WorkerOnce;
/// static MODEL: WorkerOnce<String> = WorkerOnce::new();
/// # async fn demo() {
/// let model = MODEL.get_or_init(|| async { "weights".to_string() }).await;
/// assert_eq!(model, "weights");
/// # }
/// ```
#[derive(Debug)]
pub struct WorkerOnce<T> {
    cell: tokio::sync::OnceCell<T>,
}

impl<T> WorkerOnce<T> {
    /// An empty cell, usable in a `static`.
    pub const fn new() -> Self {
        WorkerOnce {
            cell: tokio::sync::OnceCell::const_new(),
        }
    }

    /// The value, created by `init` on first use.
    pub async fn get_or_init<F, Fut>(&self, init: F) -> &T
    where
        F: FnOnce() -> Fut,
        Fut: Future<Output = T>,
    {
        self.cell.get_or_init(init).await
    }

    /// The value, created by the fallible `init` on first use; a failure leaves the cell empty so
    /// a later call tries again.
    pub async fn get_or_try_init<E, F, Fut>(&self, init: F) -> Result<&T, E>
    where
        F: FnOnce() -> Fut,
        Fut: Future<Output = Result<T, E>>,
    {
        self.cell.get_or_try_init(init).await
    }

    /// The value if it was created.
    pub fn get(&self) -> Option<&T> {
        self.cell.get()
    }
}

impl<T> Default for WorkerOnce<T> {
    fn default() -> Self {
        Self::new()
    }
}
