//! Sending: one send per connection per loop turn, partial writes resumed, the output
//! high-water mark, and the write-progress timeout.

use std::mem;
use std::os::fd::AsRawFd;

use bytes::BytesMut;

use super::lifecycle::Life;
use super::state::SendOp;
use super::{Core, TimerTarget, KEEP_BUFFER_MAX};
use crate::sys::Op;
use crate::token::{self, Op as Kind};
use crate::CloseReason;

impl Core {
    /// Sends what each connection wrote this turn: one send per connection.
    pub(super) fn flush(&mut self) {
        let mut dirty = mem::take(&mut self.dirty);
        for &slot in &dirty {
            let Some(c) = self.conns.get_mut(slot as usize) else {
                continue;
            };
            c.dirty = false;
            match c.lc.phase() {
                Life::Open | Life::Draining => {}
                // Written before the connect completed: sent once it does.
                Life::Connecting => continue,
                Life::Lingering | Life::Closing => {
                    c.out.clear();
                    continue;
                }
            }
            if let Some(tls) = c.tls.as_deref_mut() {
                if let SendOp::Idle { spare } = &mut c.send {
                    // Encrypt what was written into the send buffer; the plain text the
                    // session does not take yet (during the handshake) stays queued.
                    let mut buf = mem::take(spare);
                    let draining = c.lc.is(Life::Draining);
                    if let Err(e) = tls.seal(&mut c.out, &mut buf, draining) {
                        let during = tls.is_handshaking();
                        c.send = SendOp::Idle { spare: buf };
                        let reason = crate::TlsError::close_reason(
                            std::io::ErrorKind::InvalidData,
                            during,
                            e,
                        );
                        self.abort(slot, reason);
                        continue;
                    }
                    if buf.is_empty() {
                        c.send = SendOp::Idle { spare: buf };
                        if draining {
                            // Nothing left to say (a failure with no alert to send, say):
                            // the close goes on without waiting for a send.
                            self.check_drained(slot);
                            continue;
                        }
                    } else {
                        c.last_send = self.now;
                        self.start_send(slot, buf, 0);
                    }
                }
            } else if !c.out.is_empty() {
                if let SendOp::Idle { spare } = &mut c.send {
                    let buf = mem::replace(&mut c.out, mem::take(spare));
                    c.last_send = self.now;
                    self.start_send(slot, buf, 0);
                }
            }
            let c = &mut self.conns[slot as usize];
            let (outbound, pending) = (c.outbound, c.pending_output());
            if c.lc.output_queued(outbound, pending, self.cfg.high_water) {
                // Stop reading a peer that does not drain our output.
                self.cancel_multishot(slot);
            }
        }
        dirty.clear();
        self.dirty = dirty;
    }

    /// Hands `buf[sent..]` to the kernel; the send operation owns `buf` until it completes.
    fn start_send(&mut self, slot: u32, buf: BytesMut, sent: usize) {
        let c = &mut self.conns[slot as usize];
        debug_assert!(matches!(c.send, SendOp::Idle { .. }));
        let rest = &buf[sent..];
        let op = Op::Send {
            fd: c.fd.as_raw_fd(),
            buf: rest.as_ptr(),
            len: rest.len().min(u32::MAX as usize) as u32,
        };
        let user_data = token::encode(Kind::Send, slot, c.gen);
        // Moving a `BytesMut` moves its handle, not its heap storage: the pointer holds.
        // Whatever spare buffer the idle state held was moved out by the caller.
        c.send = SendOp::Busy { buf, sent };
        // SAFETY: the bytes sent belong to the buffer now owned by `SendOp::Busy`, which
        // only the completion (`on_send`) takes out; writers append to `out`, a different
        // buffer; the slot is not freed while that state is set (`kernel_busy`).
        unsafe { self.push(op, user_data) };
        self.kernel_ops += 1;
        self.arm_write_timer(slot);
    }

    pub(super) fn on_send(&mut self, slot: u32, gen: u32, res: i32) {
        let now = self.now;
        let Some(c) = self.conn_state(slot, gen) else {
            return;
        };
        let SendOp::Busy { mut buf, sent } = mem::replace(
            &mut c.send,
            SendOp::Idle {
                spare: BytesMut::new(),
            },
        ) else {
            unreachable!("a send completed without its state")
        };
        self.kernel_ops -= 1;
        let c = &mut self.conns[slot as usize];
        if c.lc.is(Life::Closing) {
            self.closing.push((slot, gen));
            return;
        }
        if res < 0 {
            self.fail(slot, res);
            return;
        }
        if res > 0 {
            c.last_send = now;
        }
        let sent = sent + res as usize;
        if sent < buf.len() {
            self.start_send(slot, buf, sent); // partial write: resume where the kernel stopped
            return;
        }
        buf.clear();
        if buf.capacity() > KEEP_BUFFER_MAX {
            buf = BytesMut::new();
        }
        c.send = SendOp::Idle { spare: buf };
        if !c.out.is_empty() || c.tls_owes_output() {
            self.mark_dirty(slot);
        }
        let c = &mut self.conns[slot as usize];
        let pending = c.pending_output();
        if c.lc.output_sent(pending, self.cfg.high_water) {
            // The peer drained enough of our output: read again.
            self.restart_reading(slot);
        }
        if self.conns[slot as usize].lc.is(Life::Draining) {
            self.check_drained(slot);
        }
    }

    /// Watches a connection with output in flight: if the peer takes none of it for the
    /// write timeout, the connection is aborted. One timer per connection at most.
    fn arm_write_timer(&mut self, slot: u32) {
        let Some(limit) = self.cfg.write_timeout else {
            return;
        };
        let c = &self.conns[slot as usize];
        if c.write_timer.is_some() {
            return;
        }
        let at = c.last_send + limit;
        let id = self.slot_id(slot);
        let timer = self.timers.insert(at, TimerTarget::WriteProgress(id));
        self.conns[slot as usize].write_timer = Some(timer);
    }

    pub(super) fn check_write_progress(&mut self, slot: u32) {
        let Some(limit) = self.cfg.write_timeout else {
            return;
        };
        let now = self.now;
        let c = &mut self.conns[slot as usize];
        c.write_timer = None;
        // Only a send the kernel has not finished counts: bytes written this turn and not
        // yet handed over are not stuck (the next flush starts a send and re-arms).
        if matches!(c.lc.phase(), Life::Closing | Life::Lingering) || !c.send_busy() {
            return;
        }
        if now >= c.last_send + limit {
            tracing::debug!(
                core = self.id,
                pending = c.pending_output(),
                "peer took no output for the write timeout; aborting"
            );
            // Drop what the kernel still buffers too: the peer sees a reset, not a
            // truncated stream that looks complete.
            let _ = socket2::SockRef::from(&c.fd).set_linger(Some(std::time::Duration::ZERO));
            self.abort(slot, CloseReason::WriteTimedOut);
        } else {
            self.arm_write_timer(slot);
        }
    }
}
