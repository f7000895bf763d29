//! The io_uring backend: the ring ([`Driver`]), its setup and probing (`ring`), and the
//! kernel-provided receive buffer pool (`bufring`). Everything that names io_uring lives
//! here; the core hands the driver backend-neutral [`Op`]s and reads back
//! [`Completion`]s, so another backend (epoll) is another implementation of the same
//! few calls.

pub(crate) mod bufring;
pub(crate) mod ring;

use std::collections::VecDeque;
use std::io;
use std::os::fd::RawFd;
use std::time::Duration;

use io_uring::{cqueue, opcode, squeue, types, IoUring};

use crate::BuildError;

/// One operation, as the core asks for it.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Op {
    /// Accept connections on a listener until cancelled.
    AcceptMulti { fd: RawFd },
    /// Receive into buffers of the pool's group until cancelled or out of buffers.
    RecvMulti { fd: RawFd, group: u16 },
    /// Receive once into `len` bytes at `buf`.
    Recv { fd: RawFd, buf: *mut u8, len: u32 },
    /// Send `len` bytes at `buf` (never raising SIGPIPE).
    Send { fd: RawFd, buf: *const u8, len: u32 },
    /// Connect to the socket address of `len` bytes at `addr`.
    Connect {
        fd: RawFd,
        addr: *const libc::sockaddr,
        len: libc::socklen_t,
    },
    /// Read `len` bytes into `buf` (the wake-up eventfd).
    Read { fd: RawFd, buf: *mut u8, len: u32 },
    /// Cancel the operation submitted with `target` as its user data.
    Cancel { target: u64 },
    /// Cancel every operation on `fd`.
    CancelFd { fd: RawFd },
}

/// One completion, decoded.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Completion {
    /// The user data the operation was pushed with.
    pub(crate) user_data: u64,
    /// The result: a count, or a negative errno.
    pub(crate) result: i32,
    /// More completions of the same (multishot) operation follow.
    pub(crate) more: bool,
    /// The pool buffer a receive filled, if any.
    pub(crate) buffer: Option<u16>,
}

/// A core's io_uring instance and the entries waiting for room in its submission queue.
pub(crate) struct Driver {
    ring: IoUring,
    backlog: VecDeque<squeue::Entry>,
}

impl Driver {
    /// A ring with `entries` submission slots (see [`ring::setup`]).
    pub(crate) fn new(entries: u32) -> Result<Driver, BuildError> {
        Ok(Driver {
            ring: ring::setup(entries)?,
            backlog: VecDeque::new(),
        })
    }

    /// How many completions the ring holds at once.
    pub(crate) fn completion_capacity(&self) -> usize {
        self.ring.params().cq_entries() as usize
    }

    /// The ring's submitter, for registering the buffer pool.
    pub(crate) fn submitter(&self) -> io_uring::Submitter<'_> {
        self.ring.submitter()
    }

    /// Queues `op`, handing queued entries to the kernel if the queue is full. Entries
    /// reach the kernel in the order they were pushed.
    ///
    /// # Safety
    ///
    /// Every buffer, address or structure `op` points to must stay valid, and must not be
    /// touched by userspace in a way the operation forbids, until the operation's final
    /// completion arrives.
    pub(crate) unsafe fn push(&mut self, op: Op, user_data: u64) {
        let entry = build(op).user_data(user_data);
        if self.backlog.is_empty() {
            // SAFETY: forwarded from this function's contract.
            if unsafe { self.ring.submission().push(&entry) }.is_ok() {
                return;
            }
            let _ = self.ring.submit();
            // SAFETY: as above.
            if unsafe { self.ring.submission().push(&entry) }.is_ok() {
                return;
            }
        }
        // Behind entries still waiting for room: keep their order, so that a cancellation
        // never reaches the kernel before the operation it cancels.
        self.backlog.push_back(entry);
    }

    /// Moves queued entries into the submission queue as room allows.
    pub(crate) fn drain_backlog(&mut self) {
        while let Some(entry) = self.backlog.front() {
            // SAFETY: the entry was queued by `push`, whose caller vouched for it.
            if unsafe { self.ring.submission().push(entry) }.is_err() {
                if self.ring.submit().is_err() {
                    return;
                }
                continue;
            }
            self.backlog.pop_front();
        }
    }

    /// Submits queued entries and runs deferred completion work without waiting.
    ///
    /// With `DEFER_TASKRUN`, completions are posted only by an `io_uring_enter` that asks
    /// for events; a plain submit (no wait) would leave them pending indefinitely.
    pub(crate) fn submit_and_reap(&mut self) -> io::Result<usize> {
        const IORING_ENTER_GETEVENTS: u32 = 1;
        let queued = self.ring.submission().len() as u32;
        // SAFETY: every queued entry was pushed through `push`, whose callers vouched for
        // the memory it names; no argument pointer is passed.
        unsafe {
            self.ring
                .submitter()
                .enter::<libc::sigset_t>(queued, 0, IORING_ENTER_GETEVENTS, None)
        }
    }

    /// Submits queued entries and waits for a completion, for at most `timeout`.
    pub(crate) fn wait(&mut self, timeout: Option<Duration>) -> io::Result<usize> {
        match timeout {
            None => self.ring.submit_and_wait(1),
            Some(t) => {
                let ts = types::Timespec::from(t);
                let args = types::SubmitArgs::new().timespec(&ts);
                self.ring.submitter().submit_with_args(1, &args)
            }
        }
    }

    /// Whether completions are waiting to be read.
    pub(crate) fn has_completions(&mut self) -> bool {
        !self.ring.completion().is_empty()
    }

    /// Appends the completions that arrived to `out`.
    pub(crate) fn completions(&mut self, out: &mut Vec<Completion>) {
        out.extend(self.ring.completion().map(|c| Completion {
            user_data: c.user_data(),
            result: c.result(),
            more: cqueue::more(c.flags()),
            buffer: cqueue::buffer_select(c.flags()),
        }));
    }
}

/// The submission entry of `op` (without its user data).
fn build(op: Op) -> squeue::Entry {
    match op {
        Op::AcceptMulti { fd } => opcode::AcceptMulti::new(types::Fd(fd))
            .flags(libc::SOCK_CLOEXEC)
            .build(),
        Op::RecvMulti { fd, group } => opcode::RecvMulti::new(types::Fd(fd), group).build(),
        Op::Recv { fd, buf, len } => opcode::Recv::new(types::Fd(fd), buf, len).build(),
        Op::Send { fd, buf, len } => opcode::Send::new(types::Fd(fd), buf, len)
            .flags(libc::MSG_NOSIGNAL)
            .build(),
        Op::Connect { fd, addr, len } => opcode::Connect::new(types::Fd(fd), addr, len).build(),
        Op::Read { fd, buf, len } => opcode::Read::new(types::Fd(fd), buf, len).build(),
        Op::Cancel { target } => {
            opcode::AsyncCancel2::new(types::CancelBuilder::user_data(target)).build()
        }
        Op::CancelFd { fd } => {
            opcode::AsyncCancel2::new(types::CancelBuilder::fd(types::Fd(fd)).all()).build()
        }
    }
}
