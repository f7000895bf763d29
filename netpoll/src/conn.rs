//! Connections: their per-core state, and [`Conn`], the handle a handler acts through.
//!
//! # Kernel-owned memory lives in the operation that uses it
//!
//! Every buffer or structure the kernel may read or write while an operation is in flight
//! is owned by that operation's state, not by the connection at large:
//!
//! * a direct receive owns its buffer ([`RecvOp::Direct`]);
//! * a send owns the bytes being sent ([`SendOp::Busy`]);
//! * a connect owns the peer address ([`ConnectOp::InFlight`]).
//!
//! Code that wants the memory has to `match` the operation out of its state, so nothing can
//! touch, drop or replace it while the kernel has it without the compiler seeing that
//! code. The buffers come back only in the completion handlers, which move them out of the
//! state. "Is the kernel busy on this connection?" is [`ConnState::kernel_busy`], a
//! `match` over those three states.

use std::io;
use std::net::SocketAddr;
use std::os::fd::{AsFd, OwnedFd};
use std::time::Instant;

use bytes::BytesMut;

use crate::core::TimerTarget;
use crate::{CloseReason, Core, Handler, TimerId};

/// Identifies a connection: the core that owns it, its slot there and a generation, so that
/// an id kept after its connection closed never reaches a newer connection in that slot.
///
/// The generation is a 64-bit per-core counter that never wraps in practice; only its low
/// 24 bits travel in io_uring's `user_data`, where the slot cannot be reused before every
/// completion of the old connection has arrived.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct ConnId {
    pub(crate) core: u16,
    pub(crate) slot: u32,
    pub(crate) gen: u64,
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

/// The receive operation of a connection.
#[derive(Debug)]
pub(crate) enum RecvOp {
    /// No receive in flight.
    Idle,
    /// Multishot receive into the pool: the kernel writes only into pool buffers.
    Multi {
        /// A cancellation was requested and its completion has not arrived yet.
        cancelling: bool,
    },
    /// Single receive into the spare capacity of `buf`, which the kernel owns until the
    /// completion; `buf` may already hold the first bytes of a message being assembled.
    Direct {
        /// The buffer the kernel writes into.
        buf: BytesMut,
    },
}

/// The send operation of a connection.
#[derive(Debug)]
pub(crate) enum SendOp {
    /// No send in flight; `spare` is an empty buffer kept for the next one.
    Idle {
        /// Reused as the next in-flight buffer.
        spare: BytesMut,
    },
    /// The kernel reads `buf[sent..]` until the completion.
    Busy {
        /// The bytes handed to the kernel.
        buf: BytesMut,
        /// How many of them it has acknowledged by earlier (partial) completions.
        sent: usize,
    },
}

/// The connect operation of an outbound connection.
#[derive(Debug)]
pub(crate) enum ConnectOp {
    /// None in flight.
    Idle,
    /// The kernel reads the address until the completion.
    InFlight(Box<socket2::SockAddr>),
}

pub(crate) struct ConnState {
    pub(crate) fd: OwnedFd,
    pub(crate) gen: u64,
    pub(crate) life: Life,
    pub(crate) outbound: bool,
    pub(crate) handler: Option<Box<dyn Handler>>,
    /// Bytes of a message that spans receive buffers (or input held while paused). Never
    /// seen by the kernel.
    pub(crate) acc: BytesMut,
    /// Bytes the handler needs in `acc` before it is called again (0: unknown).
    pub(crate) need: usize,
    /// Output written and not yet handed to the kernel.
    pub(crate) out: BytesMut,
    pub(crate) send: SendOp,
    pub(crate) recv: RecvOp,
    pub(crate) connect: ConnectOp,
    /// Reading paused because too much output is queued.
    pub(crate) paused: bool,
    /// Reading paused by the handler ([`Conn::pause_reading`]).
    pub(crate) held: bool,
    /// The handler resumed reading and the input held meanwhile is not delivered yet:
    /// EOF must wait for it.
    pub(crate) redeliver: bool,
    pub(crate) dirty: bool,
    pub(crate) eof: bool,
    /// EOF arrived while input was held back (paused): the handler hears of it after that
    /// input has been delivered.
    pub(crate) eof_pending: bool,
    /// When bytes last arrived (or the connection opened).
    pub(crate) last_recv: Instant,
    /// When the kernel last took some of our output (or output was first queued).
    pub(crate) last_send: Instant,
    pub(crate) write_timer: Option<TimerId>,
    pub(crate) connect_timer: Option<TimerId>,
    pub(crate) connect_timed_out: bool,
    pub(crate) linger_timer: Option<TimerId>,
    pub(crate) reason: Option<CloseReason>,
}

impl ConnState {
    pub(crate) fn new(
        fd: OwnedFd,
        gen: u64,
        handler: Box<dyn Handler>,
        out: BytesMut,
        spare: BytesMut,
        now: Instant,
    ) -> Self {
        ConnState {
            fd,
            gen,
            life: Life::Open,
            outbound: false,
            handler: Some(handler),
            acc: BytesMut::new(),
            need: 0,
            out,
            send: SendOp::Idle { spare },
            recv: RecvOp::Idle,
            connect: ConnectOp::Idle,
            paused: false,
            held: false,
            redeliver: false,
            dirty: false,
            eof: false,
            eof_pending: false,
            last_recv: now,
            last_send: now,
            write_timer: None,
            connect_timer: None,
            connect_timed_out: false,
            linger_timer: None,
            reason: None,
        }
    }

    /// Output queued and not yet acknowledged by the kernel.
    pub(crate) fn pending_output(&self) -> usize {
        let inflight = match &self.send {
            SendOp::Idle { .. } => 0,
            SendOp::Busy { buf, sent } => buf.len() - sent,
        };
        self.out.len() + inflight
    }

    /// Whether a send is in flight.
    pub(crate) fn send_busy(&self) -> bool {
        matches!(self.send, SendOp::Busy { .. })
    }

    /// Whether the kernel still owns memory of this connection (or may still complete an
    /// operation on it).
    pub(crate) fn kernel_busy(&self) -> bool {
        !matches!(
            (&self.send, &self.recv, &self.connect),
            (SendOp::Idle { .. }, RecvOp::Idle, ConnectOp::Idle)
        )
    }

    /// Whether reading is stopped for now (back-pressure or the handler's request).
    pub(crate) fn read_stopped(&self) -> bool {
        self.paused || self.held
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

    /// When bytes last arrived on this connection (or when it opened), including bytes of
    /// a message not yet complete enough to be handed to the handler.
    pub fn last_received(&self) -> Instant {
        self.state().last_recv
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

    /// Bytes written and not yet given to the kernel at all (neither sent nor being sent):
    /// the tail of the output a writer may still take back with
    /// [`unsent_output`](Conn::unsent_output).
    pub fn unsent_len(&self) -> usize {
        self.state().out.len()
    }

    /// The output not yet handed to the kernel, for a writer that wants to take back bytes
    /// it queued (a call that timed out before it was sent, say). Unlike
    /// [`output`](Conn::output) this does not schedule a send.
    pub fn unsent_output(&mut self) -> &mut BytesMut {
        &mut self.core.conns[self.slot as usize].out
    }

    /// Whether reading is paused because the peer is not draining our output.
    pub fn is_write_blocked(&self) -> bool {
        self.state().paused
    }

    /// Stops reading from this connection until [`resume_reading`](Conn::resume_reading):
    /// bytes already received stay queued and [`Handler::on_data`] is not called. The
    /// peer's further bytes wait in the kernel's socket buffer, and TCP flow control slows
    /// the peer down. A handler uses it to bound the work it accepts from one peer.
    pub fn pause_reading(&mut self) {
        let slot = self.slot;
        self.core.hold_reading(slot);
    }

    /// Undoes [`pause_reading`](Conn::pause_reading). Input received meanwhile is handed
    /// to the handler after the current callback returns, in this loop turn.
    pub fn resume_reading(&mut self) {
        let slot = self.slot;
        self.core.release_reading(slot);
    }

    /// Whether the handler paused reading.
    pub fn is_reading_paused(&self) -> bool {
        self.state().held
    }

    /// Whether the connection is open for reading and writing.
    pub fn is_open(&self) -> bool {
        self.state().life == Life::Open
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
