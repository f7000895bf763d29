//! The io_uring backend: the ring ([`Uring`]), its setup and probing (`ring`), and the
//! kernel-provided buffer ring the receive pool hands its buffers to (`bufring`).
//! Everything that names io_uring lives here; it implements [`Driver`], so another
//! backend (epoll) is another implementation of the same few calls.

pub(crate) mod bufring;
pub(crate) mod ring;

use std::collections::VecDeque;
use std::io;
use std::time::Duration;

use io_uring::{cqueue, opcode, squeue, types, IoUring};

use crate::sys::{Completion, Driver, Op};
use crate::BuildError;

/// A core's io_uring instance and the entries waiting for room in its submission queue.
pub(crate) struct Uring {
    ring: IoUring,
    backlog: VecDeque<squeue::Entry>,
}

impl Uring {
    /// A ring with `entries` submission slots (see [`ring::setup`]).
    pub(crate) fn new(entries: u32) -> Result<Uring, BuildError> {
        Ok(Uring {
            ring: ring::setup(entries)?,
            backlog: VecDeque::new(),
        })
    }
}

impl Driver for Uring {
    type Ring = bufring::BufRing;

    fn buffer_ring(&self, group: u16, max: usize) -> Result<Self::Ring, BuildError> {
        bufring::BufRing::register(&self.ring.submitter(), group, max).map_err(|e| {
            match e.raw_os_error() {
                Some(libc::EINVAL) => BuildError::Unsupported {
                    what: "provided buffer rings (IORING_REGISTER_PBUF_RING)",
                    needs: "Linux 5.19",
                },
                _ => BuildError::Io(e),
            }
        })
    }

    fn completion_capacity(&self) -> usize {
        self.ring.params().cq_entries() as usize
    }

    /// Entries that find the submission queue full are handed to the kernel first, then
    /// wait in a backlog, in order.
    unsafe fn push(&mut self, op: Op, user_data: u64) {
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

    fn drain_backlog(&mut self) {
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

    /// With `DEFER_TASKRUN`, completions are posted only by an `io_uring_enter` that asks
    /// for events; a plain submit (no wait) would leave them pending indefinitely.
    fn submit_and_reap(&mut self) -> io::Result<usize> {
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

    fn wait(&mut self, timeout: Option<Duration>) -> io::Result<usize> {
        match timeout {
            None => self.ring.submit_and_wait(1),
            Some(t) => {
                let ts = types::Timespec::from(t);
                let args = types::SubmitArgs::new().timespec(&ts);
                self.ring.submitter().submit_with_args(1, &args)
            }
        }
    }

    fn has_completions(&mut self) -> bool {
        !self.ring.completion().is_empty()
    }

    fn completions(&mut self, out: &mut Vec<Completion>) {
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
