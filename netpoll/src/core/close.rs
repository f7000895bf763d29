//! Closing: draining output, sending FIN and lingering for the peer's, aborting, and
//! releasing a slot once the kernel has handed back everything of it.

use std::mem;
use std::os::fd::AsRawFd;
use std::panic::{self, AssertUnwindSafe};
use std::time::Duration;

use super::lifecycle::{Drained, Life, OnClose};
use super::state::SendOp;
use super::{Core, TimerTarget};
use crate::sys::{Driver, Op};
use crate::token::{self, Op as Kind};
use crate::{sys, CloseReason};

/// How long a gracefully closed connection waits for the peer's FIN after sending its own.
const LINGER: Duration = Duration::from_secs(2);
/// Buffers of closed connections up to this size are kept for new connections; larger ones
/// go back to the allocator.
const SPARE_BUFFER_MAX: usize = 64 * 1024;

impl Core {
    pub(crate) fn close_gracefully(&mut self, slot: u32, reason: CloseReason) {
        let c = &mut self.conns[slot as usize];
        if let Some(tls) = c.tls.as_deref_mut() {
            if tls.is_handshaking() && !tls.failed() && c.lc.is(Life::Open) {
                if c.out.is_empty() {
                    // Nothing was said over TLS yet: there is nothing to drain.
                    self.abort(slot, reason);
                } else {
                    // Plain text waits for the handshake: the close follows it.
                    tls.set_close_after_handshake();
                    c.reason.get_or_insert(reason);
                }
                return;
            }
            // The `close_notify` (or the alert of a failure) goes out with the last output.
            self.mark_dirty(slot);
        }
        let c = &mut self.conns[slot as usize];
        match c.lc.close() {
            OnClose::Drain => {
                c.reason.get_or_insert(reason);
                c.acc.clear(); // input is discarded from now on
                self.check_drained(slot);
            }
            OnClose::Abort => self.abort(slot, reason),
            OnClose::Nothing => {}
        }
    }

    /// A draining connection whose output is all sent sends FIN, then lingers for the
    /// peer's FIN so that unread input does not turn the close into a reset.
    pub(super) fn check_drained(&mut self, slot: u32) {
        let c = &mut self.conns[slot as usize];
        let (pending, busy) = (c.pending_output(), c.send_busy());
        let step = c.lc.drained(pending, busy);
        if step == Drained::NotYet {
            return;
        }
        if step == Drained::Abort || sys::shutdown_write(&c.fd).is_err() {
            let reason = c.reason.take().unwrap_or(CloseReason::Local);
            self.abort(slot, reason);
            return;
        }
        let id = self.slot_id(slot);
        let timer = self
            .timers
            .insert(self.now + LINGER, TimerTarget::Linger(id));
        self.conns[slot as usize].linger_timer = Some(timer);
        self.arm_recv(slot);
    }

    /// Closes a connection now: cancels its operations and frees it once the kernel has
    /// returned everything.
    pub(crate) fn abort(&mut self, slot: u32, reason: CloseReason) {
        let c = &mut self.conns[slot as usize];
        if !c.lc.abort() {
            return;
        }
        c.reason.get_or_insert(reason);
        let timers = [
            c.connect_timer.take(),
            c.linger_timer.take(),
            c.write_timer.take(),
            c.tls.as_deref_mut().and_then(|t| t.take_timer()),
        ];
        let (busy, fd, gen) = (c.kernel_busy(), c.fd.as_raw_fd(), c.gen);
        for t in timers.into_iter().flatten() {
            self.timers.cancel(t);
        }
        if busy {
            // SAFETY: a cancellation names no userspace memory.
            unsafe { self.push(Op::CancelFd { fd }, token::encode(Kind::Cancel, slot, gen)) };
        }
        self.closing.push((slot, token::gen_bits(gen)));
    }

    /// Frees closing connections the kernel no longer holds anything of.
    pub(super) fn release_closed(&mut self) {
        let mut i = 0;
        while i < self.closing.len() {
            let (slot, gen) = self.closing[i];
            let (ready, stale) = match self.conn_state(slot, gen) {
                Some(c) if c.lc.is(Life::Closing) => (!c.kernel_busy(), false),
                _ => (false, true),
            };
            if ready || stale {
                self.closing.swap_remove(i);
            } else {
                i += 1;
            }
            if ready {
                self.release(slot);
            }
        }
    }

    fn release(&mut self, slot: u32) {
        let mut c = self.conns.remove(slot as usize);
        self.driver.forget(c.fd.as_raw_fd());
        drop(c.fd); // closes the socket
        let spare = match mem::replace(
            &mut c.send,
            SendOp::Idle {
                spare: Default::default(),
            },
        ) {
            SendOp::Idle { spare } => spare,
            SendOp::Busy { .. } => unreachable!("released with a send in flight"),
        };
        let mut freed = c.acc.capacity();
        for mut buf in [mem::take(&mut c.out), spare] {
            if buf.capacity() <= SPARE_BUFFER_MAX && self.spare.len() < 256 {
                buf.clear();
                self.spare.push(buf);
            } else {
                freed += buf.capacity();
            }
        }
        self.note_freed(freed);
        let reason = c.reason.take().unwrap_or(CloseReason::Local);
        self.remote.stats.count_close(&reason);
        tracing::debug!(core = self.id, %reason, "connection closed");
        if let Some(mut handler) = c.handler.take() {
            if panic::catch_unwind(AssertUnwindSafe(|| handler.on_close(self, reason))).is_err() {
                tracing::warn!(core = self.id, "on_close panicked");
            }
        }
    }
}
