//! Submission and completion plumbing: queueing entries (in order, even when the
//! submission queue is full), entering the kernel, and dispatching completions.

use std::mem;
use std::time::Instant;

use io_uring::{opcode, squeue, types};

use super::state::RecvOp;
use super::Core;
use crate::token::{self, Op};

impl Core {
    /// Queues a submission, handing queued ones to the kernel if the queue is full.
    /// Entries reach the kernel in the order they were pushed.
    ///
    /// # Safety
    ///
    /// Every buffer, address or structure the entry points to must stay valid, and must
    /// not be touched by userspace in a way the operation forbids, until the operation's
    /// final completion arrives.
    pub(super) unsafe fn push(&mut self, entry: squeue::Entry) {
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

    pub(super) fn drain_backlog(&mut self) {
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
    pub(super) fn submit_and_reap(&mut self) -> std::io::Result<usize> {
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

    /// Spins for up to the configured busy-poll time, reaping completions without sleeping.
    /// Returns whether there is something to do. Waking a sleeping thread costs tens of
    /// microseconds on some machines; spinning trades CPU for that latency.
    pub(super) fn busy_poll(&mut self, deadline: Option<Instant>) -> bool {
        let start = Instant::now();
        let mut until = start + self.cfg.busy_poll;
        if let Some(d) = deadline {
            until = until.min(d);
        }
        loop {
            if self.submit_and_reap().is_err() {
                return true; // let the blocking path report or retry
            }
            if !self.ring.completion().is_empty() || !self.rx.is_empty() {
                return true;
            }
            if Instant::now() >= until {
                return false;
            }
            std::hint::spin_loop();
        }
    }

    /// Asks the kernel to cancel the operation whose `user_data` is `target`.
    pub(super) fn cancel_op(&mut self, target: u64) {
        self.cancel_op_as(target, token::encode(Op::Cancel, 0, 0));
    }

    pub(super) fn cancel_op_as(&mut self, target: u64, user_data: u64) {
        let entry = opcode::AsyncCancel2::new(types::CancelBuilder::user_data(target))
            .build()
            .user_data(user_data);
        // SAFETY: a cancellation names no userspace memory.
        unsafe { self.push(entry) };
    }

    pub(super) fn complete(&mut self) {
        let mut cqes = mem::take(&mut self.cqes);
        cqes.clear();
        cqes.extend(
            self.ring
                .completion()
                .map(|c| (c.user_data(), c.result(), c.flags())),
        );
        for &(user_data, res, flags) in &cqes {
            let Some((op, slot, gen)) = token::decode(user_data) else {
                continue;
            };
            match op {
                Op::Accept => self.on_accept(slot, res, flags),
                Op::Recv => self.on_recv(slot, gen, res, flags),
                Op::RecvDirect => self.on_recv_direct(slot, gen, res),
                Op::Send => self.on_send(slot, gen, res),
                Op::Connect => self.on_connect(slot, gen, res),
                Op::Wake => {
                    self.kernel_ops -= 1;
                    self.wake_armed = false;
                    if !self.shutting_down || !self.conns.is_empty() || !self.listeners.is_empty() {
                        self.arm_wake();
                    }
                }
                Op::CancelRecv => {
                    // The cancellation is over, whether it found the receive or not (it
                    // may not have been submitted yet, or it was between completions).
                    // If the receive is still running, the next bytes it delivers while
                    // reading is stopped ask again.
                    if let Some(c) = self.conn_state(slot, gen) {
                        if let RecvOp::Multi { cancelling } = &mut c.recv {
                            *cancelling = false;
                        }
                    }
                }
                Op::Cancel => {}
            }
        }
        self.cqes = cqes;
    }
}
