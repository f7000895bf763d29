//! Submission and completion plumbing: operations handed to the backend's driver in
//! order, and completions dispatched to the connections and listeners they belong to.

use std::mem;
use std::time::Instant;

use super::state::RecvOp;
use super::Core;
use crate::sys::{Driver, Op};
use crate::token::{self, Op as Kind};

impl Core {
    /// Hands `op` to the driver with `user_data`.
    ///
    /// # Safety
    ///
    /// Every buffer, address or structure `op` points to must stay valid, and must not be
    /// touched by userspace in a way the operation forbids, until the operation's final
    /// completion arrives.
    pub(super) unsafe fn push(&mut self, op: Op, user_data: u64) {
        // SAFETY: forwarded from this function's contract.
        unsafe { self.driver.push(op, user_data) }
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
            if self.driver.submit_and_reap().is_err() {
                return true; // let the blocking path report or retry
            }
            if self.driver.has_completions() || !self.rx.is_empty() {
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
        self.cancel_op_as(target, token::encode(Kind::Cancel, 0, 0));
    }

    pub(super) fn cancel_op_as(&mut self, target: u64, user_data: u64) {
        // SAFETY: a cancellation names no userspace memory.
        unsafe { self.push(Op::Cancel { target }, user_data) };
    }

    pub(super) fn complete(&mut self) {
        let mut cqes = mem::take(&mut self.cqes);
        cqes.clear();
        self.driver.completions(&mut cqes);
        for c in &cqes {
            let Some((kind, slot, gen)) = token::decode(c.user_data) else {
                continue;
            };
            match kind {
                Kind::Accept => self.on_accept(slot, c.result, c.more),
                Kind::Recv => self.on_recv(slot, gen, c.result, c.more, c.buffer),
                Kind::RecvDirect => self.on_recv_direct(slot, gen, c.result),
                Kind::Send => self.on_send(slot, gen, c.result),
                Kind::Connect => self.on_connect(slot, gen, c.result),
                Kind::Wake => {
                    self.kernel_ops -= 1;
                    self.wake_armed = false;
                    if !self.shutting_down || !self.conns.is_empty() || !self.listeners.is_empty() {
                        self.arm_wake();
                    }
                }
                Kind::CancelRecv => {
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
                Kind::Cancel => {}
            }
        }
        self.cqes = cqes;
    }
}
