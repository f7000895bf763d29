//! A connection's state on its core. Its fields are private to the core; everything else
//! (the [`Conn`](crate::Conn) handle) goes through methods.
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

use std::os::fd::OwnedFd;
use std::time::Instant;

use bytes::BytesMut;

use super::lifecycle::{Life, Lifecycle};
use crate::tls::Session;
use crate::{CloseReason, Handler, TimerId};

/// The receive operation of a connection.
#[derive(Debug)]
pub(super) enum RecvOp {
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
pub(super) enum SendOp {
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
pub(super) enum ConnectOp {
    /// None in flight.
    Idle,
    /// The kernel reads the address until the completion.
    InFlight(Box<socket2::SockAddr>),
}

pub(crate) struct ConnState {
    pub(super) fd: OwnedFd,
    pub(super) gen: u64,
    pub(super) lc: Lifecycle,
    pub(super) outbound: bool,
    pub(super) handler: Option<Box<dyn Handler>>,
    /// Bytes of a message that spans receive buffers (or input held while paused). Never
    /// seen by the kernel.
    pub(super) acc: BytesMut,
    /// Bytes the handler needs in `acc` before it is called again (0: unknown).
    pub(super) need: usize,
    /// Output written and not yet handed to the kernel.
    pub(super) out: BytesMut,
    pub(super) send: SendOp,
    pub(super) recv: RecvOp,
    pub(super) connect: ConnectOp,
    pub(super) dirty: bool,
    /// When bytes last arrived (or the connection opened).
    pub(super) last_recv: Instant,
    /// When the kernel last took some of our output (or output was first queued).
    pub(super) last_send: Instant,
    pub(super) write_timer: Option<TimerId>,
    pub(super) connect_timer: Option<TimerId>,
    pub(super) connect_timed_out: bool,
    pub(super) linger_timer: Option<TimerId>,
    pub(super) reason: Option<CloseReason>,
    /// The TLS session, on a TLS connection.
    pub(crate) tls: Option<Box<Session>>,
}

impl ConnState {
    pub(super) fn new(
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
            lc: Lifecycle::open(),
            outbound: false,
            handler: Some(handler),
            acc: BytesMut::new(),
            need: 0,
            out,
            send: SendOp::Idle { spare },
            recv: RecvOp::Idle,
            connect: ConnectOp::Idle,
            dirty: false,
            last_recv: now,
            last_send: now,
            write_timer: None,
            connect_timer: None,
            connect_timed_out: false,
            linger_timer: None,
            reason: None,
            tls: None,
        }
    }

    /// Output queued and not yet acknowledged by the kernel.
    pub(super) fn pending_output(&self) -> usize {
        let inflight = match &self.send {
            SendOp::Idle { .. } => 0,
            SendOp::Busy { buf, sent } => buf.len() - sent,
        };
        // TLS records not yet written out (or a `close_notify` still owed) count as one byte.
        let tls = self
            .tls
            .as_ref()
            .is_some_and(|t| t.owes_output(self.lc.is(Life::Draining)));
        self.out.len() + inflight + usize::from(tls)
    }

    /// Whether the TLS session has records to send (or owes a `close_notify`).
    pub(super) fn tls_owes_output(&self) -> bool {
        self.tls
            .as_ref()
            .is_some_and(|t| t.owes_output(self.lc.is(Life::Draining)))
    }

    /// Whether a send is in flight.
    pub(super) fn send_busy(&self) -> bool {
        matches!(self.send, SendOp::Busy { .. })
    }

    /// Whether the kernel still owns memory of this connection (or may still complete an
    /// operation on it).
    pub(super) fn kernel_busy(&self) -> bool {
        !matches!(
            (&self.send, &self.recv, &self.connect),
            (SendOp::Idle { .. }, RecvOp::Idle, ConnectOp::Idle)
        )
    }

    /// The connection's generation (see [`ConnId`](crate::ConnId)).
    pub(crate) fn gen(&self) -> u64 {
        self.gen
    }

    /// When bytes last arrived.
    pub(crate) fn last_received(&self) -> Instant {
        self.last_recv
    }

    /// Output written and not yet handed to the kernel.
    pub(crate) fn unsent(&mut self) -> &mut BytesMut {
        &mut self.out
    }

    /// Bytes received and not yet handed to the handler.
    pub(crate) fn unread_len(&self) -> usize {
        self.acc.len()
    }

    /// How many bytes of output are not yet handed to the kernel.
    pub(crate) fn unsent_len(&self) -> usize {
        self.out.len()
    }

    /// Output queued and not yet acknowledged by the kernel.
    pub(crate) fn queued_output(&self) -> usize {
        self.pending_output()
    }

    /// Reading is paused because the peer does not drain our output.
    pub(crate) fn write_blocked(&self) -> bool {
        self.lc.paused()
    }

    /// Reading is paused by the handler.
    pub(crate) fn reading_held(&self) -> bool {
        self.lc.held()
    }

    /// Open for reading and writing.
    pub(crate) fn is_open(&self) -> bool {
        self.lc.is(Life::Open)
    }

    /// The socket.
    pub(crate) fn fd(&self) -> &OwnedFd {
        &self.fd
    }
}
