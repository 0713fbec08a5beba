//! What a control plane's worker prints, kept per attempt: the process's stdout and stderr go
//! through pipes read by a thread of their own, which copies every byte to where they went
//! before (the worker's terminal or log file) and to the buffer of each attempt running at that
//! moment. When an attempt ends, the bytes written until then are read out of the pipes and the
//! attempt's buffer travels with its completion ([`AttemptOutput`]).
//!
//! The process's file descriptors are shared by everything in it, so with several slots the
//! output of attempts running at the same time is interleaved (each attempt's buffer holds all
//! of it; [`AttemptOutput::overlapping`] says how many others ran). A buffer keeps the last
//! [`OUTPUT_CAP`] bytes. When stdout and stderr went to the same file (a terminal, a log with
//! `2>&1`) one pipe takes both, so their lines keep their order; otherwise each has its own. An engine's own workers do not capture: their stdout and stderr go to
//! a file of the state directory already (`get logs`).

use std::collections::{HashMap, VecDeque};

use weir_core::clock::now_us;

use super::protocol::{AttemptOutput, OUTPUT_CAP};

/// One running attempt's output so far.
struct Buffer {
    bytes: VecDeque<u8>,
    dropped: u64,
    /// Whether the last byte dropped ended a line (the kept bytes start a whole one).
    dropped_a_line: bool,
    overlapping: u32,
    started_at: i64,
}

impl Buffer {
    fn push(&mut self, chunk: &[u8]) {
        // Only the last OUTPUT_CAP bytes of a chunk can stay.
        let skip = chunk.len().saturating_sub(OUTPUT_CAP);
        self.bytes.extend(&chunk[skip..]);
        let over = self.bytes.len().saturating_sub(OUTPUT_CAP);
        if over > 0 {
            // With `skip`, every byte held before goes, and the chunk's skipped ones after them.
            let last = if skip > 0 {
                chunk[skip - 1]
            } else {
                self.bytes[over - 1]
            };
            self.dropped_a_line = last == b'\n';
            self.bytes.drain(..over);
        }
        self.dropped += (skip + over) as u64;
    }

    /// What the attempt printed; `None` when it printed nothing.
    fn finish(self, ended_at: i64) -> Option<AttemptOutput> {
        if self.bytes.is_empty() && self.dropped == 0 {
            return None;
        }
        let mut text = Vec::from(self.bytes);
        let mut dropped = self.dropped;
        // What was cut starts mid-line: the kept part starts at the next whole line.
        if dropped > 0
            && !self.dropped_a_line
            && let Some(newline) = text.iter().position(|b| *b == b'\n')
        {
            text.drain(..=newline);
            dropped += newline as u64 + 1;
        }
        Some(AttemptOutput {
            text,
            dropped,
            overlapping: self.overlapping,
            started_at: self.started_at,
            ended_at,
            pid: std::process::id(),
        })
    }
}

/// The attempts running in the process, each with its output so far: what every byte printed
/// goes to. Plain state.
#[derive(Default)]
pub(crate) struct Attempts {
    running: HashMap<u64, Buffer>,
}

impl Attempts {
    /// The attempt of `lease` starts: it overlaps every attempt running now.
    pub(crate) fn begin(&mut self, lease: u64, now: i64) {
        for other in self.running.values_mut() {
            other.overlapping += 1;
        }
        let buffer = Buffer {
            bytes: VecDeque::new(),
            dropped: 0,
            dropped_a_line: false,
            overlapping: self.running.len() as u32,
            started_at: now,
        };
        self.running.insert(lease, buffer);
    }

    /// Bytes the process printed: every running attempt's.
    pub(crate) fn append(&mut self, chunk: &[u8]) {
        for buffer in self.running.values_mut() {
            buffer.push(chunk);
        }
    }

    /// The attempt of `lease` ended: what it printed, if anything.
    pub(crate) fn end(&mut self, lease: u64, now: i64) -> Option<AttemptOutput> {
        self.running.remove(&lease)?.finish(now)
    }
}

/// An attempt whose output is being kept; dropped unfinished (a cancelled attempt), it keeps
/// nothing.
pub(crate) struct Capturing {
    lease: u64,
    ended: bool,
}

impl Capturing {
    /// What the attempt printed (none when nothing), read out of the pipes up to now.
    pub(crate) fn end(mut self) -> Option<AttemptOutput> {
        self.ended = true;
        imp::with_attempts(|a| a.end(self.lease, now_us())).flatten()
    }
}

impl Drop for Capturing {
    fn drop(&mut self) {
        if !self.ended {
            imp::with_attempts(|a| a.end(self.lease, now_us()));
        }
    }
}

/// Starts keeping what the process prints for the attempt of `lease`; `None` when the process
/// does not capture its output (see [`install`]).
pub(crate) fn begin(lease: u64) -> Option<Capturing> {
    imp::with_attempts(|a| a.begin(lease, now_us()))?;
    Some(Capturing {
        lease,
        ended: false,
    })
}

/// Sends the process's stdout and stderr through the capture, until the returned guard is
/// dropped (then they go straight where they went before, and what the pipes hold is copied
/// there first). Once per process; `None` (with a warning) where it cannot be done.
pub(crate) fn install() -> Option<Installed> {
    imp::install().map(|()| Installed(()))
}

/// The capture of the process's output; dropping it gives stdout and stderr back.
pub(crate) struct Installed(());

impl Drop for Installed {
    fn drop(&mut self) {
        imp::uninstall();
    }
}

#[cfg(unix)]
mod imp {
    use std::io::Write;
    use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
    use std::sync::{Arc, OnceLock};

    use nix::errno::Errno;
    use nix::fcntl::{FcntlArg, OFlag, fcntl};
    use nix::poll::{PollFd, PollFlags, PollTimeout, poll};
    use nix::unistd::{dup, dup2_stderr, dup2_stdout, pipe, read, write};
    use parking_lot::Mutex;

    use super::Attempts;

    /// One pipe: its reading end (non-blocking, read only under the lock of
    /// `Capture::attempts`, so that whoever holds it has read everything written before) and
    /// where the bytes went before.
    struct Tee {
        read: OwnedFd,
        original: OwnedFd,
    }

    struct Capture {
        attempts: Mutex<Attempts>,
        /// One pipe for stdout and stderr when they went to the same file (a terminal, or
        /// `>log 2>&1`): their lines keep their order. Otherwise stdout's, then stderr's (each
        /// to its own destination; lines written close together to both may swap).
        tees: Vec<Tee>,
        /// What descriptors 1 and 2 were, to put back.
        restore: [OwnedFd; 2],
    }

    static CAPTURE: OnceLock<Arc<Capture>> = OnceLock::new();

    /// `f` on the running attempts, after reading what the pipes hold; `None` when the
    /// process does not capture.
    pub(super) fn with_attempts<T>(f: impl FnOnce(&mut Attempts) -> T) -> Option<T> {
        let capture = CAPTURE.get()?;
        // Rust's stdout keeps a line in memory until its end: what was printed is in the pipe.
        let _ = std::io::stdout().flush();
        let mut attempts = capture.attempts.lock();
        let mut buf = vec![0u8; 64 << 10];
        for tee in &capture.tees {
            drain(tee, &mut attempts, &mut buf);
        }
        Some(f(&mut attempts))
    }

    pub(super) fn install() -> Option<()> {
        if CAPTURE.get().is_some() {
            return None;
        }
        match capture() {
            Ok(capture) => {
                let capture = Arc::new(capture);
                if CAPTURE.set(capture.clone()).is_err() {
                    return None;
                }
                let spawned = std::thread::Builder::new()
                    .name("weir-output".into())
                    .spawn(move || pump(&capture));
                if let Err(e) = spawned {
                    // Nobody would read the pipes: give the descriptors back at once.
                    uninstall();
                    tracing::warn!(error = %e, "cannot capture the worker's output");
                    return None;
                }
                Some(())
            }
            Err(e) => {
                tracing::warn!(error = %e, "cannot capture the worker's output; attempts' logs are not kept");
                None
            }
        }
    }

    /// Whether two descriptors lead to the same file.
    fn same_file(a: BorrowedFd<'_>, b: BorrowedFd<'_>) -> bool {
        use std::os::unix::fs::MetadataExt;
        let meta = |fd: BorrowedFd<'_>| {
            let file = std::fs::File::from(fd.try_clone_to_owned().ok()?);
            file.metadata().ok().map(|m| (m.dev(), m.ino()))
        };
        matches!((meta(a), meta(b)), (Some(x), Some(y)) if x == y)
    }

    /// Points stdout and stderr at pipes; puts back what it changed when it fails.
    fn capture() -> Result<Capture, Errno> {
        let _ = std::io::stdout().flush();
        let (stdout, stderr) = (std::io::stdout(), std::io::stderr());
        let restore = [dup(stdout.as_fd())?, dup(stderr.as_fd())?];
        let (tees, pipes) = if same_file(stdout.as_fd(), stderr.as_fd()) {
            let (tee, pipe) = tee(stdout.as_fd())?;
            (vec![tee], [pipe.try_clone().map_err(io_errno)?, pipe])
        } else {
            let (out, out_pipe) = tee(stdout.as_fd())?;
            let (err, err_pipe) = tee(stderr.as_fd())?;
            (vec![out, err], [out_pipe, err_pipe])
        };
        dup2_stdout(&pipes[0])?;
        if let Err(e) = dup2_stderr(&pipes[1]) {
            let _ = dup2_stdout(&restore[0]);
            return Err(e);
        }
        // The pipes' writing ends are now only descriptors 1 and 2 (and what children inherit).
        Ok(Capture {
            attempts: Mutex::default(),
            tees,
            restore,
        })
    }

    fn io_errno(e: std::io::Error) -> Errno {
        Errno::from_raw(e.raw_os_error().unwrap_or(0))
    }

    /// A pipe for `fd` and a copy of `fd`; the pipe's writing end to put in its place.
    fn tee(fd: BorrowedFd<'_>) -> Result<(Tee, OwnedFd), Errno> {
        let (read, write) = pipe()?;
        let original = dup(fd)?;
        fcntl(&read, FcntlArg::F_SETFL(OFlag::O_NONBLOCK))?;
        Ok((Tee { read, original }, write))
    }

    pub(super) fn uninstall() {
        let Some(capture) = CAPTURE.get() else {
            return;
        };
        let _ = std::io::stdout().flush();
        let mut attempts = capture.attempts.lock();
        let _ = dup2_stdout(&capture.restore[0]);
        let _ = dup2_stderr(&capture.restore[1]);
        let mut buf = vec![0u8; 64 << 10];
        for tee in &capture.tees {
            drain(tee, &mut attempts, &mut buf);
        }
    }

    /// Copies what the pipes receive, as it comes, until they are closed.
    fn pump(capture: &Capture) {
        let mut open = vec![true; capture.tees.len()];
        let mut buf = vec![0u8; 64 << 10];
        while open.iter().any(|o| *o) {
            let which: Vec<usize> = (0..open.len()).filter(|i| open[*i]).collect();
            let mut fds: Vec<PollFd> = which
                .iter()
                .map(|i| PollFd::new(capture.tees[*i].read.as_fd(), PollFlags::POLLIN))
                .collect();
            match poll(&mut fds, PollTimeout::NONE) {
                Ok(_) | Err(Errno::EINTR) => {}
                Err(_) => return,
            }
            drop(fds);
            let mut attempts = capture.attempts.lock();
            for i in which {
                open[i] = drain(&capture.tees[i], &mut attempts, &mut buf);
            }
        }
    }

    /// Reads what `tee`'s pipe holds, copying it to the original descriptor and to the
    /// running attempts; false once the pipe is closed (no writer left).
    fn drain(tee: &Tee, attempts: &mut Attempts, buf: &mut [u8]) -> bool {
        loop {
            match read(&tee.read, buf) {
                Ok(0) => return false,
                Ok(n) => {
                    copy(&tee.original, &buf[..n]);
                    attempts.append(&buf[..n]);
                }
                Err(Errno::EINTR) => {}
                Err(Errno::EAGAIN) => return true,
                Err(_) => return false,
            }
        }
    }

    /// Writes all of `bytes` where they went before; a destination gone (a closed terminal)
    /// or stuck for a second drops them (the attempts still keep them).
    fn copy(fd: &OwnedFd, mut bytes: &[u8]) {
        while !bytes.is_empty() {
            match write(fd, bytes) {
                Ok(n) => bytes = &bytes[n..],
                Err(Errno::EINTR) => {}
                Err(Errno::EAGAIN) => {
                    let mut fds = [PollFd::new(fd.as_fd(), PollFlags::POLLOUT)];
                    if !matches!(poll(&mut fds, PollTimeout::from(1000u16)), Ok(1..)) {
                        return;
                    }
                }
                Err(_) => return,
            }
        }
    }
}

#[cfg(not(unix))]
mod imp {
    use super::Attempts;

    pub(super) fn with_attempts<T>(_: impl FnOnce(&mut Attempts) -> T) -> Option<T> {
        None
    }

    pub(super) fn install() -> Option<()> {
        None
    }

    pub(super) fn uninstall() {}
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_attempt_keeps_what_was_printed_while_it_ran_and_counts_who_ran_beside_it() {
        let mut a = Attempts::default();
        a.append(b"before anything\n");
        a.begin(1, 10);
        a.append(b"one\n");
        a.begin(2, 20);
        a.append(b"both\n");
        let first = a.end(1, 30).expect("printed");
        a.append(b"two alone\n");
        a.begin(3, 40);
        let second = a.end(2, 50).expect("printed");
        assert_eq!(first.text, b"one\nboth\n");
        assert_eq!((first.started_at, first.ended_at), (10, 30));
        assert_eq!((first.dropped, first.overlapping), (0, 1));
        assert_eq!(first.pid, std::process::id());
        assert_eq!(second.text, b"both\ntwo alone\n");
        assert_eq!(second.overlapping, 2, "attempts 1 and 3 ran beside it");
        // Nothing printed: nothing to send.
        assert_eq!(a.end(3, 60), None);
        assert_eq!(a.end(3, 60), None, "ended twice");
        assert!(a.running.is_empty());
    }

    #[test]
    fn an_attempt_keeps_the_last_bytes_from_a_whole_line_and_counts_the_rest() {
        let line = b"0123456789abcde\n"; // 16 bytes: OUTPUT_CAP holds whole lines
        let lines = OUTPUT_CAP / line.len() + 10;
        for (lease, last) in [(1, &b"last, unfinished"[..]), (2, &b"last\n"[..])] {
            let mut a = Attempts::default();
            a.begin(lease, 0);
            for _ in 0..lines {
                a.append(line);
            }
            a.append(last);
            let out = a.end(lease, 1).unwrap();
            let printed = (lines * line.len() + last.len()) as u64;
            assert_eq!(out.text.len() as u64 + out.dropped, printed);
            assert!(out.text.len() <= OUTPUT_CAP && out.text.len() > OUTPUT_CAP - line.len());
            assert!(out.text.starts_with(line), "starts at a whole line");
            assert!(out.text.ends_with(last));
            // Cut at the end of a line (16-byte lines, then 16 more bytes): none is lost.
            if last.len() == line.len() {
                assert_eq!(out.text.len(), OUTPUT_CAP);
            }
        }
        // A single chunk over the cap keeps its end, from a whole line.
        let mut a = Attempts::default();
        a.begin(3, 0);
        let mut big = vec![b'x'; OUTPUT_CAP + 5];
        big.extend(b"\ntail\n");
        a.append(&big);
        let out = a.end(3, 1).unwrap();
        assert_eq!(out.text, b"tail\n");
        assert_eq!(out.dropped, big.len() as u64 - 5);
    }
}
