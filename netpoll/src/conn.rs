//! Connections: their per-core state, and [`Conn`], the handle a handler acts through.

use std::io;
use std::net::SocketAddr;
use std::os::fd::{AsFd, OwnedFd};
use std::time::Instant;

use bytes::BytesMut;

use crate::core::TimerTarget;
use crate::{CloseReason, Core, Handler, TimerId};

/// Identifies a connection: the core that owns it, its slot there and a generation, so that
/// an id kept after its connection closed never reaches a newer connection in that slot.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct ConnId {
    pub(crate) core: u16,
    pub(crate) slot: u32,
    pub(crate) gen: u32,
}

impl ConnId {
    /// The index of the core that owns the connection.
    pub fn core(&self) -> usize {
        self.core as usize
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Life {
    /// Outbound connect in flight.
    Connecting,
    /// Reading and writing.
    Open,
    /// Closed by us: pending output is being sent, input is discarded.
    Draining,
    /// Output sent and FIN sent; waiting for the peer's FIN (or a timeout) before closing,
    /// so unread input does not turn our close into a reset that destroys sent data.
    Lingering,
    /// Waiting for the kernel to hand back every buffer before the slot is freed.
    Closing,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum RecvOp {
    None,
    /// Multishot receive into the pool.
    Multi,
    /// Single receive into `acc`'s spare capacity: the kernel owns that memory.
    Direct,
}

pub(crate) struct ConnState {
    pub(crate) fd: OwnedFd,
    pub(crate) gen: u32,
    pub(crate) life: Life,
    pub(crate) handler: Option<Box<dyn Handler>>,
    /// Bytes of a message that spans receive buffers (or input held while paused).
    pub(crate) acc: BytesMut,
    /// Bytes the handler needs in `acc` before it is called again (0: unknown).
    pub(crate) need: usize,
    /// Output written this turn.
    pub(crate) out: BytesMut,
    /// Output owned by the kernel while `send_busy`.
    pub(crate) inflight: BytesMut,
    pub(crate) sent: usize,
    pub(crate) send_busy: bool,
    pub(crate) recv: RecvOp,
    pub(crate) recv_cancel_sent: bool,
    /// Reading paused because too much output is queued.
    pub(crate) paused: bool,
    pub(crate) dirty: bool,
    pub(crate) eof: bool,
    /// EOF arrived while input was held back (paused): the handler hears of it after that
    /// input has been delivered.
    pub(crate) eof_pending: bool,
    /// The peer address a connect is in flight to (the kernel reads it until completion).
    pub(crate) connect_addr: Option<Box<socket2::SockAddr>>,
    pub(crate) connect_timer: Option<TimerId>,
    pub(crate) connect_timed_out: bool,
    pub(crate) linger_timer: Option<TimerId>,
    pub(crate) reason: Option<CloseReason>,
}

impl ConnState {
    pub(crate) fn new(
        fd: OwnedFd,
        gen: u32,
        handler: Box<dyn Handler>,
        out: BytesMut,
        inflight: BytesMut,
    ) -> Self {
        ConnState {
            fd,
            gen,
            life: Life::Open,
            handler: Some(handler),
            acc: BytesMut::new(),
            need: 0,
            out,
            inflight,
            sent: 0,
            send_busy: false,
            recv: RecvOp::None,
            recv_cancel_sent: false,
            paused: false,
            dirty: false,
            eof: false,
            eof_pending: false,
            connect_addr: None,
            connect_timer: None,
            connect_timed_out: false,
            linger_timer: None,
            reason: None,
        }
    }

    /// Output queued and not yet acknowledged by the kernel.
    pub(crate) fn pending_output(&self) -> usize {
        self.out.len() + (self.inflight.len() - self.sent)
    }

    /// Whether the kernel still owns memory of this connection.
    pub(crate) fn kernel_busy(&self) -> bool {
        self.send_busy || self.recv != RecvOp::None || self.connect_addr.is_some()
    }
}

/// A connection as seen from its handler (or from a task on its core): write to it, close
/// it, set timers on it, or reach the rest of the core.
pub struct Conn<'a> {
    pub(crate) core: &'a mut Core,
    pub(crate) slot: u32,
}

impl std::fmt::Debug for Conn<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Conn").field("id", &self.id()).finish()
    }
}

impl Conn<'_> {
    fn state(&self) -> &ConnState {
        // The core hands out a `Conn` only for a live slot, and slots are freed only by the
        // core itself outside handler calls.
        &self.core.conns[self.slot as usize]
    }

    /// This connection's id.
    pub fn id(&self) -> ConnId {
        ConnId {
            core: self.core.id as u16,
            slot: self.slot,
            gen: self.state().gen,
        }
    }

    /// The core that owns this connection: open other connections, set core timers, reach
    /// other connections by id.
    pub fn core(&mut self) -> &mut Core {
        self.core
    }

    /// The loop's clock, read once per turn.
    pub fn now(&self) -> Instant {
        self.core.now
    }

    /// The connection's write buffer. Whatever is appended here is sent at the end of the
    /// loop turn, together with everything else written to this connection in the turn
    /// (or, for an outbound connection still connecting, as soon as it connects).
    /// Encoders can reserve, write and patch length prefixes in place.
    pub fn output(&mut self) -> &mut BytesMut {
        self.core.mark_dirty(self.slot);
        &mut self.core.conns[self.slot as usize].out
    }

    /// Appends `data` to the connection's output.
    pub fn write(&mut self, data: &[u8]) {
        self.output().extend_from_slice(data);
    }

    /// Bytes written and not yet handed to the kernel's socket buffer.
    pub fn pending_output(&self) -> usize {
        self.state().pending_output()
    }

    /// Whether reading is paused because the peer is not draining our output.
    pub fn is_write_blocked(&self) -> bool {
        self.state().paused
    }

    /// Whether the connection is open for reading and writing.
    pub fn is_open(&self) -> bool {
        self.state().life == crate::conn::Life::Open
    }

    /// Closes the connection gracefully: pending output is sent, then FIN; further input is
    /// discarded. [`Handler::on_close`] follows once everything is released.
    pub fn close(&mut self) {
        let slot = self.slot;
        self.core.close_gracefully(slot, CloseReason::Local);
    }

    /// Closes the connection now, dropping pending output.
    pub fn abort(&mut self) {
        let slot = self.slot;
        self.core.abort(slot, CloseReason::Local);
    }

    /// Sets a timer; at `deadline` the handler's [`Handler::on_timer`] gets `token`.
    /// Timers of a closed connection never fire.
    pub fn set_timer(&mut self, deadline: Instant, token: u64) -> TimerId {
        let id = self.id();
        self.core
            .timers
            .insert(deadline, TimerTarget::Conn(id, token))
    }

    /// Cancels a timer; returns whether it had not fired yet.
    pub fn cancel_timer(&mut self, timer: TimerId) -> bool {
        self.core.timers.cancel(timer).is_some()
    }

    /// The peer's address.
    pub fn peer_addr(&self) -> io::Result<SocketAddr> {
        socket2::SockRef::from(&self.state().fd.as_fd())
            .peer_addr()?
            .as_socket()
            .ok_or_else(|| io::Error::new(io::ErrorKind::Unsupported, "not an IP socket"))
    }

    /// The local address.
    pub fn local_addr(&self) -> io::Result<SocketAddr> {
        socket2::SockRef::from(&self.state().fd.as_fd())
            .local_addr()?
            .as_socket()
            .ok_or_else(|| io::Error::new(io::ErrorKind::Unsupported, "not an IP socket"))
    }
}
