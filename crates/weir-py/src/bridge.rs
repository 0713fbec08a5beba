//! The bridge between the engine's tokio threads and the Python event loop that runs task
//! bodies.
//!
//! Engine threads never take the GIL on the hot path: they push an [`Event`] on a queue and,
//! when the queue was empty, write one byte to a socket the Python loop watches
//! (`loop.add_reader`). The loop then takes every queued event at once ([`drain`]) with the GIL
//! it already holds. Calls the other way (a task body awaiting a child, finishing, recording a
//! trace) are short native calls that spawn on the engine's runtime and answer with an event.

use std::collections::HashMap;
use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};

use parking_lot::Mutex;
use tokio::sync::oneshot;
use weir_engine::{CapturedContext, Error, OpenTrace};

/// Something the Python loop must do.
pub enum Event {
    /// Run task `task`'s body on `inputs` in context `ctx`; answer with `complete(token, ..)`.
    Start {
        token: u64,
        task: Arc<str>,
        ctx: CapturedContext,
        handle: tokio::runtime::Handle,
        inputs: Arc<[u8]>,
    },
    /// The engine gave up on the body started as `token` (timeout, cancellation): cancel it.
    Cancel { token: u64 },
    /// A child call, a trace record or a run finished.
    Done {
        token: u64,
        result: Result<Arc<[u8]>, Error>,
    },
    /// A trace was opened: replay its recorded output or failure, or run it.
    TraceOpened {
        token: u64,
        result: Result<weir_engine::TraceStart, Error>,
        /// The runtime of the engine the trace belongs to: its record is written there.
        handle: tokio::runtime::Handle,
    },
}

/// Where the result of a Python task body goes.
pub type BodyResult = oneshot::Sender<Result<Vec<u8>, Error>>;

/// The queue and its wake-up socket.
pub struct Bridge {
    queue: Mutex<Vec<Event>>,
    /// Whether the queue holds events: read without the lock by [`Bridge::spin_wait`].
    pending: std::sync::atomic::AtomicBool,
    wake_tx: UnixStream,
    wake_rx: UnixStream,
    next: AtomicU64,
    /// Bodies started and not yet finished: where their result goes.
    pub starts: Mutex<HashMap<u64, BodyResult>>,
    /// Child calls in flight, to abort when the Python side gives up on one.
    pub calls: Mutex<HashMap<u64, tokio::task::AbortHandle>>,
    /// Traces opened and being run.
    pub traces: Mutex<HashMap<u64, (OpenTrace, tokio::runtime::Handle)>>,
}

static BRIDGE: OnceLock<Bridge> = OnceLock::new();

/// The process's bridge.
pub fn bridge() -> &'static Bridge {
    BRIDGE.get_or_init(|| {
        let (wake_tx, wake_rx) = UnixStream::pair().expect("a socket pair for the Python bridge");
        wake_tx
            .set_nonblocking(true)
            .expect("a non-blocking socket");
        wake_rx
            .set_nonblocking(true)
            .expect("a non-blocking socket");
        Bridge {
            queue: Mutex::new(Vec::new()),
            pending: std::sync::atomic::AtomicBool::new(false),
            wake_tx,
            wake_rx,
            next: AtomicU64::new(1),
            starts: Mutex::new(HashMap::new()),
            calls: Mutex::new(HashMap::new()),
            traces: Mutex::new(HashMap::new()),
        }
    })
}

impl Bridge {
    /// A fresh token.
    pub fn token(&self) -> u64 {
        self.next.fetch_add(1, Ordering::Relaxed)
    }

    /// Queues an event and wakes the loop if it may be asleep.
    pub fn push(&self, event: Event) {
        let mut queue = self.queue.lock();
        let was_empty = queue.is_empty();
        queue.push(event);
        self.pending.store(true, Ordering::Release);
        drop(queue);
        if was_empty {
            // A full socket means a wake-up is already pending.
            let _ = (&self.wake_tx).write(&[1]);
        }
    }

    /// Every queued event, after clearing the wake-up bytes.
    pub fn drain(&self) -> Vec<Event> {
        let mut buf = [0u8; 256];
        while let Ok(n) = (&self.wake_rx).read(&mut buf) {
            if n < buf.len() {
                break;
            }
        }
        let mut queue = self.queue.lock();
        self.pending.store(false, Ordering::Release);
        std::mem::take(&mut *queue)
    }

    /// Waits up to `max` for an event without sleeping in the kernel (the loop calls it before it would sleep
    /// in `epoll`): a thread woken from sleep costs tens of microseconds on a small VM, and a
    /// chain of tasks pays it at every hand-over. True when events are pending.
    pub fn spin_wait(&self, max: std::time::Duration) -> bool {
        let start = std::time::Instant::now();
        loop {
            if self.pending.load(Ordering::Acquire) {
                return true;
            }
            if start.elapsed() >= max {
                return false;
            }
            // Yields rather than spins: on a machine of two cores the engine's threads must
            // get the CPU this thread would burn.
            std::thread::yield_now();
        }
    }

    /// The socket the Python loop watches.
    pub fn wake_fd(&self) -> i32 {
        use std::os::fd::AsRawFd;
        self.wake_rx.as_raw_fd()
    }
}

/// Cancels the Python body of `token` when the engine drops the attempt's future before the
/// body finished (a timeout, a cancelled run).
pub struct CancelOnDrop {
    pub token: u64,
    pub armed: bool,
}

impl Drop for CancelOnDrop {
    fn drop(&mut self) {
        if self.armed {
            let b = bridge();
            b.starts.lock().remove(&self.token);
            b.push(Event::Cancel { token: self.token });
        }
    }
}
