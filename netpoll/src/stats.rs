//! Counters of a core that other threads may read: why its connections closed.

use std::sync::atomic::{AtomicU64, Ordering};

use crate::CloseReason;

/// How many connections closed, by reason, since the runtime started (over all cores, from
/// [`RuntimeHandle::close_counts`](crate::RuntimeHandle::close_counts)).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct CloseCounts {
    /// Closed by this side ([`Conn::close`](crate::Conn::close) or
    /// [`Conn::abort`](crate::Conn::abort)).
    pub local: u64,
    /// The peer closed its side first.
    pub peer_closed: u64,
    /// A send or receive failed (reset, broken pipe, ...).
    pub io_error: u64,
    /// An outbound connect failed.
    pub connect_failed: u64,
    /// An outbound connect timed out.
    pub connect_timed_out: u64,
    /// The peer took none of our output for the write timeout.
    pub write_timed_out: u64,
    /// Still open when the runtime's shutdown deadline passed.
    pub shutdown: u64,
    /// The handler panicked.
    pub handler_panicked: u64,
    /// Accepted and closed at once because the core had `max_connections` already.
    pub refused: u64,
    /// TLS failed (handshake, certificate, record, or a handshake that timed out).
    pub tls_failed: u64,
}

#[derive(Debug, Default)]
pub(crate) struct CoreStats {
    counts: [AtomicU64; 10],
}

impl CoreStats {
    pub(crate) fn count_close(&self, reason: &CloseReason) {
        let i = match reason {
            CloseReason::Local => 0,
            CloseReason::PeerClosed => 1,
            CloseReason::Io(_) => 2,
            CloseReason::ConnectFailed(_) => 3,
            CloseReason::ConnectTimedOut => 4,
            CloseReason::WriteTimedOut => 5,
            CloseReason::Shutdown => 6,
            CloseReason::HandlerPanicked => 7,
            CloseReason::Tls(_) => 9,
        };
        self.counts[i].fetch_add(1, Ordering::Relaxed);
    }

    pub(crate) fn count_refused(&self) {
        self.counts[8].fetch_add(1, Ordering::Relaxed);
    }

    pub(crate) fn add_to(&self, c: &mut CloseCounts) {
        let v = |i: usize| self.counts[i].load(Ordering::Relaxed);
        c.local += v(0);
        c.peer_closed += v(1);
        c.io_error += v(2);
        c.connect_failed += v(3);
        c.connect_timed_out += v(4);
        c.write_timed_out += v(5);
        c.shutdown += v(6);
        c.handler_panicked += v(7);
        c.refused += v(8);
        c.tls_failed += v(9);
    }
}
