//! Receiving: multishot receive into the pool, direct receive into a buffer the operation
//! owns, delivery to handlers, and stopping and restarting reading (back-pressure, or the
//! handler's own request).

use std::io;
use std::mem;
use std::os::fd::AsRawFd;

use bytes::{Buf, Bytes, BytesMut};

use super::lifecycle::{Life, OnEof};
use super::state::RecvOp;
use super::{Core, KEEP_BUFFER_MAX};
use crate::sys::Op;
use crate::token::{self, Op as Kind};
use crate::{CloseReason, Input};

/// Smallest receive into a connection's own buffer when the pool is empty.
const DIRECT_RECV_MIN: usize = 16 * 1024;
/// A message still missing at least this many bytes is received straight into the
/// connection's buffer rather than through pool buffers and a copy...
const DIRECT_RECV_LARGE: usize = 128 * 1024;
/// ...once at least this much of it has arrived. Memory reserved for a message grows with
/// the bytes that arrived (at most doubling per receive), never with the length its header
/// declares, so a peer that declares large frames and sends little costs little.
const DIRECT_RECV_PROVEN: usize = 64 * 1024;

impl Core {
    pub(super) fn arm_recv(&mut self, slot: u32) {
        let c = &mut self.conns[slot as usize];
        if !matches!(c.recv, RecvOp::Idle) || !c.lc.wants_recv() {
            return;
        }
        if c.tls.as_deref().is_some_and(|t| t.has_backlog()) {
            return; // waiting for handshake budget: read again once served
        }
        let fd = c.fd.as_raw_fd();
        let missing = c.need.saturating_sub(c.acc.len());
        // A TLS connection's input buffer holds plain text: its ciphertext never goes there.
        let tls = c.tls.is_some();
        let large = c.lc.is(Life::Open)
            && !tls
            && missing >= DIRECT_RECV_LARGE
            && c.acc.len() >= DIRECT_RECV_PROVEN;
        if self.pool.in_ring() > 0 && !self.pool_dry && !large {
            c.recv = RecvOp::Multi { cancelling: false };
            let op = Op::RecvMulti {
                fd,
                group: self.pool.group(),
            };
            let user_data = token::encode(Kind::Recv, slot, c.gen);
            // SAFETY: multishot receive writes only into pool buffers, which the pool keeps
            // alive and untouched while they are published.
            unsafe { self.push(op, user_data) };
        } else {
            // Either the pool is empty (every buffer is lent), and receiving into the
            // connection's own buffer keeps it from stalling; or a large message is being
            // assembled, and receiving it in place saves a copy. In the second case read no
            // further than the message, so the ones after it arrive zero-copy again.
            // The operation takes the bytes assembled so far with it and receives after
            // them; they come back with its completion.
            let mut buf = if tls {
                BytesMut::new()
            } else {
                mem::take(&mut c.acc)
            };
            let (want, cap) = if large {
                let w = missing.min(buf.len().max(DIRECT_RECV_MIN));
                (w, w)
            } else {
                (DIRECT_RECV_MIN, usize::MAX)
            };
            buf.reserve(want);
            let spare = buf.spare_capacity_mut();
            let len = spare.len().min(cap).min(u32::MAX as usize) as u32;
            let ptr = spare.as_mut_ptr();
            let op = Op::Recv {
                fd,
                buf: ptr.cast(),
                len,
            };
            let user_data = token::encode(Kind::RecvDirect, slot, c.gen);
            // Moving a `BytesMut` moves its handle, not its heap storage: `ptr` stays valid.
            c.recv = RecvOp::Direct { buf };
            // SAFETY: the spare capacity written to belongs to the buffer now owned by
            // `RecvOp::Direct`, which only the completion (`on_recv_direct`) takes out; the
            // slot is not freed while that state is set (`kernel_busy`), and a core dropped
            // with the operation in flight leaks the buffer.
            unsafe { self.push(op, user_data) };
        }
        self.kernel_ops += 1;
    }

    pub(super) fn on_recv(
        &mut self,
        slot: u32,
        gen: u32,
        res: i32,
        more: bool,
        buffer: Option<u16>,
    ) {
        let view = match (res, buffer) {
            (n, Some(bid)) if n > 0 => self.pool.take(bid, n as usize),
            (_, Some(bid)) => {
                self.pool.put_back_unused(bid);
                None
            }
            _ => None,
        };
        let now = self.now;
        let Some(c) = self.conn_state(slot, gen) else {
            return;
        };
        if !more {
            c.recv = RecvOp::Idle;
            self.kernel_ops -= 1;
        }
        match res {
            n if n > 0 => match view {
                Some(view) => {
                    self.conns[slot as usize].last_recv = now;
                    self.deliver(slot, view);
                }
                None => self.abort(
                    slot,
                    CloseReason::Io(io::Error::other("kernel returned an unknown buffer id")),
                ),
            },
            0 => self.on_eof(slot),
            e if e == -libc::ENOBUFS => {
                // The ring ran dry. The data waits in the socket; grow the pool if allowed,
                // and otherwise receive directly until buffers come back (re-arming a
                // multishot receive would only be answered ENOBUFS again, at once).
                self.last_grow = self.now;
                if self.pool.reclaim() == 0 {
                    if self.pool.can_grow() {
                        self.pool.grow(self.cfg.buffer_count);
                        self.pool.publish();
                    } else {
                        self.pool_dry = true;
                    }
                }
            }
            e if e == -libc::ECANCELED => {}
            e => self.fail(slot, e),
        }
        if !more {
            self.after_recv_ended(slot, gen);
        }
    }

    pub(super) fn on_recv_direct(&mut self, slot: u32, gen: u32, res: i32) {
        let now = self.now;
        let Some(c) = self.conn_state(slot, gen) else {
            return;
        };
        let RecvOp::Direct { mut buf } = mem::replace(&mut c.recv, RecvOp::Idle) else {
            unreachable!("a direct receive completed without its state")
        };
        let tls = c.tls.is_some();
        self.kernel_ops -= 1;
        if tls {
            // Ciphertext, in a buffer of its own: opened like a pool buffer's.
            match res {
                n if n > 0 => {
                    let n = (n as usize).min(buf.capacity() - buf.len());
                    // SAFETY: the kernel initialised `n` bytes of the spare capacity it was
                    // given (never more than that capacity), and has finished with it.
                    unsafe { buf.set_len(buf.len() + n) };
                    self.conns[slot as usize].last_recv = now;
                    self.deliver(slot, buf.freeze());
                }
                0 => self.on_eof(slot),
                e if e == -libc::ECANCELED => {}
                e => self.fail(slot, e),
            }
            self.after_recv_ended(slot, gen);
            return;
        }
        match res {
            n if n > 0 => {
                let n = (n as usize).min(buf.capacity() - buf.len());
                // SAFETY: the kernel initialised `n` bytes of the spare capacity it was
                // given (never more than that capacity), and has finished with it.
                unsafe { buf.set_len(buf.len() + n) };
                let c = &mut self.conns[slot as usize];
                c.last_recv = now;
                // Give the bytes back to the connection, after any that arrived meanwhile.
                if c.acc.is_empty() {
                    c.acc = buf;
                } else {
                    c.acc.extend_from_slice(&buf);
                }
                if c.lc.delivering() {
                    if c.need == 0 || c.acc.len() >= c.need {
                        self.call_data_acc(slot);
                    }
                } else if !c.lc.is(Life::Open) {
                    c.acc.clear(); // closing: input is discarded
                }
            }
            other => {
                let c = &mut self.conns[slot as usize];
                if c.acc.is_empty() {
                    c.acc = buf;
                } else {
                    c.acc.extend_from_slice(&buf);
                }
                match other {
                    0 => self.on_eof(slot),
                    e if e == -libc::ECANCELED => {}
                    e => self.fail(slot, e),
                }
            }
        }
        self.after_recv_ended(slot, gen);
    }

    /// A receive operation ended: re-arm it, or let a closing connection be released.
    fn after_recv_ended(&mut self, slot: u32, gen: u32) {
        let Some(c) = self.conn_state(slot, gen) else {
            return;
        };
        if c.lc.is(Life::Closing) {
            self.closing.push((slot, gen));
        } else {
            self.arm_recv(slot);
        }
    }

    pub(super) fn on_eof(&mut self, slot: u32) {
        if self.conns[slot as usize].tls.is_some() && self.tls_eof(slot) {
            return;
        }
        self.input_ended(slot);
    }

    /// The peer's input ended (its FIN, or a TLS `close_notify`).
    pub(super) fn input_ended(&mut self, slot: u32) {
        let c = &mut self.conns[slot as usize];
        let held_input = !c.acc.is_empty();
        match c.lc.peer_closed(held_input) {
            // Input received before the FIN is still held back: it is delivered first.
            OnEof::Defer | OnEof::Ignore => {}
            OnEof::Notify => {
                c.reason.get_or_insert(CloseReason::PeerClosed);
                self.call_handler(slot, |h, c| h.on_read_closed(c));
            }
            OnEof::Abort => self.abort(slot, CloseReason::PeerClosed),
            OnEof::CheckDrained => self.check_drained(slot),
        }
    }

    pub(super) fn fail(&mut self, slot: u32, neg_errno: i32) {
        let c = &self.conns[slot as usize];
        if !c.lc.is(Life::Closing) {
            self.abort(
                slot,
                CloseReason::Io(io::Error::from_raw_os_error(-neg_errno)),
            );
        }
    }

    /// Hands newly received bytes to the handler; copies only what completes a message
    /// that began in an earlier buffer.
    pub(super) fn deliver(&mut self, slot: u32, mut view: Bytes) {
        if self.conns[slot as usize].tls.is_some() {
            match self.deliver_tls(slot, view) {
                Ok(()) => return,
                Err(plain) => view = plain, // a plain-text client on a port that takes both
            }
        }
        loop {
            let c = &mut self.conns[slot as usize];
            if !c.lc.is(Life::Open) {
                return; // closing: input is discarded
            }
            if c.lc.read_stopped() {
                // A multishot receive still running after reading stopped (its cancel has
                // not landed, or missed): keep the bytes and ask again.
                c.acc.extend_from_slice(&view);
                self.cancel_multishot(slot);
                return;
            }
            if c.acc.is_empty() {
                if view.is_empty() {
                    return;
                }
                let need = {
                    let mut input = Input::view(&mut view);
                    self.call_handler(slot, |h, c| h.on_data(c, &mut input));
                    input.needed()
                };
                let Some(c) = self.conns.get_mut(slot as usize) else {
                    return;
                };
                c.need = need;
                if !view.is_empty() && c.lc.is(Life::Open) {
                    // Trust the declared size only as far as twice what arrived.
                    let reserve = need.min(2 * view.len()).max(view.len());
                    c.acc.reserve(reserve);
                    c.acc.extend_from_slice(&view);
                    self.maybe_receive_in_place(slot);
                }
                return;
            }
            if view.is_empty() {
                return;
            }
            let want = if c.need > c.acc.len() {
                c.need - c.acc.len()
            } else {
                view.len()
            };
            let take = want.min(view.len());
            c.acc.extend_from_slice(&view[..take]);
            view.advance(take);
            if c.acc.len() >= c.need {
                self.call_data_acc(slot);
            } else {
                self.maybe_receive_in_place(slot);
            }
        }
    }

    /// Hands the assembled input to the handler.
    pub(super) fn call_data_acc(&mut self, slot: u32) {
        let mut acc = mem::take(&mut self.conns[slot as usize].acc);
        let need = {
            let mut input = Input::acc(&mut acc);
            self.call_handler(slot, |h, c| h.on_data(c, &mut input));
            input.needed()
        };
        if acc.is_empty() && acc.capacity() > KEEP_BUFFER_MAX {
            acc = BytesMut::new();
        }
        let Some(c) = self.conns.get_mut(slot as usize) else {
            return;
        };
        // Nothing else adds to `acc` while the handler runs (a receive armed meanwhile
        // took its own buffer), but keep any bytes after ours all the same.
        if !c.acc.is_empty() {
            acc.extend_from_slice(&c.acc);
        }
        if !c.lc.is(Life::Open) {
            acc.clear(); // closed by the handler: input is discarded from now on
        }
        c.acc = acc;
        c.need = need;
        self.maybe_receive_in_place(slot);
    }

    /// When the handler waits for a large message of which enough has arrived, stop the
    /// multishot receive so that the rest is received straight into the connection's
    /// buffer (see `arm_recv`).
    fn maybe_receive_in_place(&mut self, slot: u32) {
        let c = &self.conns[slot as usize];
        if c.lc.is(Life::Open)
            && c.tls.is_none()
            && c.acc.len() >= DIRECT_RECV_PROVEN
            && c.need.saturating_sub(c.acc.len()) >= DIRECT_RECV_LARGE
        {
            self.cancel_multishot(slot);
        }
    }

    /// Asks the kernel to stop the connection's multishot receive, unless it was asked
    /// already and has not answered yet.
    pub(super) fn cancel_multishot(&mut self, slot: u32) {
        let c = &mut self.conns[slot as usize];
        if let RecvOp::Multi { cancelling } = &mut c.recv {
            if !*cancelling {
                *cancelling = true;
                let gen = c.gen;
                let target = token::encode(Kind::Recv, slot, gen);
                self.cancel_op_as(target, token::encode(Kind::CancelRecv, slot, gen));
            }
        }
    }

    /// [`Conn::pause_reading`](crate::Conn::pause_reading).
    pub(crate) fn hold_reading(&mut self, slot: u32) {
        self.conns[slot as usize].lc.hold();
        self.cancel_multishot(slot);
    }

    /// [`Conn::resume_reading`](crate::Conn::resume_reading): the held input is delivered
    /// at the end of the turn, once the calling handler has returned.
    pub(crate) fn release_reading(&mut self, slot: u32) {
        let c = &mut self.conns[slot as usize];
        if c.lc.release() {
            let gen = c.gen;
            self.resumed.push((slot, gen));
        }
    }

    /// Delivers input held while reading was stopped, then EOF if it came meanwhile, and
    /// reads again.
    pub(super) fn restart_reading(&mut self, slot: u32) {
        let Some(c) = self.conns.get_mut(slot as usize) else {
            return;
        };
        if !c.lc.restart() {
            return;
        }
        if !c.acc.is_empty() && (c.need == 0 || c.acc.len() >= c.need) {
            self.call_data_acc(slot);
        }
        let Some(c) = self.conns.get_mut(slot as usize) else {
            return;
        };
        if c.lc.after_redelivery() {
            c.reason.get_or_insert(CloseReason::PeerClosed);
            self.call_handler(slot, |h, c| h.on_read_closed(c));
            return;
        }
        if !c.lc.delivering() {
            return; // stopped again by what was just delivered; EOF still waits
        }
        self.arm_recv(slot);
    }
}
