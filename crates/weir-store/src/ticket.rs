//! Commit tickets: what a write returns instead of running the caller's code on the writer.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use tokio::sync::oneshot;

use crate::Error;

/// The commit of a write: resolves once the transaction holding it (and every write queued
/// before it) has committed, or with the error that made it fail. Dropping a ticket does not
/// cancel the write. Await it in async code; [`Ticket::wait`] blocks.
#[derive(Debug)]
pub struct Ticket(State);

#[derive(Debug)]
enum State {
    Ready(Option<Result<(), Arc<Error>>>),
    Pending(oneshot::Receiver<Result<(), Arc<Error>>>),
}

/// The tickets of a write whose commit is seen before it is on disk
/// ([`crate::Store::commit_staged`]). Await `visible` first: once it resolves, readers (and
/// every later write) see the write; `durable` then resolves once its commit is on disk.
#[derive(Debug)]
pub struct Staged {
    /// The commit, seen by readers.
    pub visible: Ticket,
    /// The commit, on disk (meaningful only after `visible` resolved).
    pub durable: Ticket,
}

/// The writer's half of a [`Ticket`].
#[derive(Debug)]
pub struct Promise(oneshot::Sender<Result<(), Arc<Error>>>);

impl Ticket {
    /// A ticket and the promise that resolves it.
    pub fn new() -> (Ticket, Promise) {
        let (tx, rx) = oneshot::channel();
        (Ticket(State::Pending(rx)), Promise(tx))
    }

    /// A ticket that is already resolved.
    pub fn ready(result: Result<(), Arc<Error>>) -> Ticket {
        Ticket(State::Ready(Some(result)))
    }

    /// Blocks the thread until the commit (for synchronous callers; never inside a task that
    /// the writer's progress depends on).
    pub fn wait(self) -> Result<(), Arc<Error>> {
        futures::executor::block_on(self)
    }
}

impl Promise {
    /// Resolves the ticket (a dropped ticket is fine).
    pub fn resolve(self, result: Result<(), Arc<Error>>) {
        let _ = self.0.send(result);
    }

    /// Whether nobody waits for this commit any more.
    pub fn is_abandoned(&self) -> bool {
        self.0.is_closed()
    }
}

impl Future for Ticket {
    type Output = Result<(), Arc<Error>>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        match &mut self.get_mut().0 {
            State::Ready(r) => Poll::Ready(r.take().unwrap_or(Ok(()))),
            State::Pending(rx) => match Pin::new(rx).poll(cx) {
                Poll::Ready(Ok(r)) => Poll::Ready(r),
                Poll::Ready(Err(_)) => Poll::Ready(Err(Arc::new(Error::WriterGone))),
                Poll::Pending => Poll::Pending,
            },
        }
    }
}
