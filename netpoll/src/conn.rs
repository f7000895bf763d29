//! Connections: [`ConnId`], and [`Conn`], the handle a handler acts through.

use std::io;
use std::net::SocketAddr;
use std::os::fd::AsFd;
use std::time::Instant;

use bytes::BytesMut;

use crate::core::{ConnState, TimerTarget};
use crate::{CloseReason, Core, TimerId};

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

    /// The id as two words (generation; core and slot), for keeping it in atomics.
    pub fn to_bits(self) -> (u64, u64) {
        (self.gen, (self.core as u64) << 32 | self.slot as u64)
    }

    /// The id [`to_bits`](ConnId::to_bits) gave these words for. Words that did not come
    /// from it name no connection: looking one up finds nothing, as for a closed one.
    pub fn from_bits(gen: u64, place: u64) -> ConnId {
        ConnId {
            core: (place >> 32) as u16,
            slot: place as u32,
            gen,
        }
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
            gen: self.state().gen(),
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
        self.state().last_received()
    }

    /// The connection's write buffer. Whatever is appended here is sent at the end of the
    /// loop turn, together with everything else written to this connection in the turn
    /// (or, for an outbound connection still connecting, as soon as it connects).
    /// Encoders can reserve, write and patch length prefixes in place.
    pub fn output(&mut self) -> &mut BytesMut {
        self.core.mark_dirty(self.slot);
        self.core.conns[self.slot as usize].unsent()
    }

    /// Appends `data` to the connection's output.
    pub fn write(&mut self, data: &[u8]) {
        self.output().extend_from_slice(data);
    }

    /// Bytes written and not yet handed to the kernel's socket buffer.
    pub fn pending_output(&self) -> usize {
        self.state().queued_output()
    }

    /// Bytes written and not yet given to the kernel at all (neither sent nor being sent):
    /// the tail of the output a writer may still take back with
    /// [`unsent_output`](Conn::unsent_output).
    pub fn unsent_len(&self) -> usize {
        self.state().unsent_len()
    }

    /// The output not yet handed to the kernel, for a writer that wants to take back bytes
    /// it queued (a call that timed out before it was sent, say). Unlike
    /// [`output`](Conn::output) this does not schedule a send.
    pub fn unsent_output(&mut self) -> &mut BytesMut {
        self.core.conns[self.slot as usize].unsent()
    }

    /// Bytes received and not yet handed to the handler (held while reading was paused,
    /// or the start of a message still arriving). Inside [`Handler::on_data`](crate::Handler::on_data)
    /// the input being handled is not counted.
    pub fn unread_len(&self) -> usize {
        self.state().unread_len()
    }

    /// Whether reading is paused because the peer is not draining our output.
    pub fn is_write_blocked(&self) -> bool {
        self.state().write_blocked()
    }

    /// Stops reading from this connection until [`resume_reading`](Conn::resume_reading):
    /// bytes already received stay queued and [`Handler::on_data`](crate::Handler::on_data) is not called. The
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
        self.state().reading_held()
    }

    /// Whether the connection is open for reading and writing.
    pub fn is_open(&self) -> bool {
        self.state().is_open()
    }

    /// Closes the connection gracefully: pending output is sent, then FIN; further input is
    /// discarded. [`Handler::on_close`](crate::Handler::on_close) follows once everything is released.
    pub fn close(&mut self) {
        let slot = self.slot;
        self.core.close_gracefully(slot, CloseReason::Local);
    }

    /// Closes the connection now, dropping pending output.
    pub fn abort(&mut self) {
        let slot = self.slot;
        self.core.abort(slot, CloseReason::Local);
    }

    /// Sets a timer; at `deadline` the handler's [`Handler::on_timer`](crate::Handler::on_timer) gets `token`.
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

    /// Whether the connection speaks TLS.
    pub fn is_tls(&self) -> bool {
        self.state().tls.is_some()
    }

    /// The connection's TLS session: protocol, ALPN, the peer's certificates.
    #[cfg(feature = "tls")]
    pub fn tls(&self) -> Option<crate::tls::TlsInfo<'_>> {
        self.state().tls.as_deref().map(|t| t.info())
    }

    /// The peer's address.
    pub fn peer_addr(&self) -> io::Result<SocketAddr> {
        socket2::SockRef::from(&self.state().fd().as_fd())
            .peer_addr()?
            .as_socket()
            .ok_or_else(|| io::Error::new(io::ErrorKind::Unsupported, "not an IP socket"))
    }

    /// The local address.
    pub fn local_addr(&self) -> io::Result<SocketAddr> {
        socket2::SockRef::from(&self.state().fd().as_fd())
            .local_addr()?
            .as_socket()
            .ok_or_else(|| io::Error::new(io::ErrorKind::Unsupported, "not an IP socket"))
    }
}
