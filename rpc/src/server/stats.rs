//! Why server connections closed: one counter per reason, readable from any thread
//! ([`Server::close_counts`](super::Server::close_counts)).

use std::sync::atomic::{AtomicU64, Ordering};

/// Why a server connection closed. The discriminants index the counters, so the order is
/// that of [`CloseCause::ALL`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum CloseCause {
    PeerClosed,
    IdleTimeout,
    ReadTimeout,
    WriteTimeout,
    FrameTooLarge,
    BadFrame,
    UnknownProtocol,
    Shutdown,
    IoError,
    Panic,
    Tls,
    Other,
}

impl CloseCause {
    const ALL: [CloseCause; 12] = [
        CloseCause::PeerClosed,
        CloseCause::IdleTimeout,
        CloseCause::ReadTimeout,
        CloseCause::WriteTimeout,
        CloseCause::FrameTooLarge,
        CloseCause::BadFrame,
        CloseCause::UnknownProtocol,
        CloseCause::Shutdown,
        CloseCause::IoError,
        CloseCause::Panic,
        CloseCause::Tls,
        CloseCause::Other,
    ];

    pub(crate) fn name(self) -> &'static str {
        match self {
            CloseCause::PeerClosed => "peer_closed",
            CloseCause::IdleTimeout => "idle_timeout",
            CloseCause::ReadTimeout => "read_timeout",
            CloseCause::WriteTimeout => "write_timeout",
            CloseCause::FrameTooLarge => "frame_too_large",
            CloseCause::BadFrame => "bad_frame",
            CloseCause::UnknownProtocol => "unknown_protocol",
            CloseCause::Shutdown => "shutdown",
            CloseCause::IoError => "io_error",
            CloseCause::Panic => "panic",
            CloseCause::Tls => "tls",
            CloseCause::Other => "other",
        }
    }
}

/// How many server connections closed, by reason, since the server started.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct CloseCounts {
    /// The peer closed its side and every call was answered.
    pub peer_closed: u64,
    /// Nothing arrived and nothing was in flight for the idle timeout.
    pub idle_timeout: u64,
    /// A frame started and did not finish within the read timeout.
    pub read_timeout: u64,
    /// The peer took none of our output for the write timeout.
    pub write_timeout: u64,
    /// A frame declared a size over the maximum.
    pub frame_too_large: u64,
    /// A frame, or the message envelope in it, could not be read.
    pub bad_frame: u64,
    /// The first bytes were not a protocol served here.
    pub unknown_protocol: u64,
    /// Closed by the server's shutdown.
    pub shutdown: u64,
    /// A send or receive failed (reset, broken pipe, ...).
    pub io_error: u64,
    /// The connection's handler panicked (a bug; handlers' own panics are answered).
    pub panic: u64,
    /// TLS failed: a handshake (a bad or missing client certificate, a peer not speaking
    /// TLS, a handshake that timed out) or a record.
    pub tls: u64,
    /// Anything else.
    pub other: u64,
    /// Refused at accept because the server had `max_connections` already.
    pub refused: u64,
}

impl CloseCounts {
    /// The counters as `(reason, count)` pairs, for exporting as metrics.
    pub fn iter(&self) -> impl Iterator<Item = (&'static str, u64)> {
        let c = *self;
        CloseCause::ALL
            .into_iter()
            .map(move |cause| (cause.name(), c.get(cause)))
            .chain(std::iter::once(("refused", c.refused)))
    }

    fn get(&self, cause: CloseCause) -> u64 {
        match cause {
            CloseCause::PeerClosed => self.peer_closed,
            CloseCause::IdleTimeout => self.idle_timeout,
            CloseCause::ReadTimeout => self.read_timeout,
            CloseCause::WriteTimeout => self.write_timeout,
            CloseCause::FrameTooLarge => self.frame_too_large,
            CloseCause::BadFrame => self.bad_frame,
            CloseCause::UnknownProtocol => self.unknown_protocol,
            CloseCause::Shutdown => self.shutdown,
            CloseCause::IoError => self.io_error,
            CloseCause::Panic => self.panic,
            CloseCause::Tls => self.tls,
            CloseCause::Other => self.other,
        }
    }
}

#[derive(Debug, Default)]
pub(crate) struct ServerStats {
    closes: [AtomicU64; CloseCause::ALL.len()],
}

impl ServerStats {
    pub(crate) fn count(&self, cause: CloseCause) {
        self.closes[cause as usize].fetch_add(1, Ordering::Relaxed);
    }

    pub(crate) fn snapshot(&self, refused: u64) -> CloseCounts {
        let v = |c: CloseCause| self.closes[c as usize].load(Ordering::Relaxed);
        CloseCounts {
            peer_closed: v(CloseCause::PeerClosed),
            idle_timeout: v(CloseCause::IdleTimeout),
            read_timeout: v(CloseCause::ReadTimeout),
            write_timeout: v(CloseCause::WriteTimeout),
            frame_too_large: v(CloseCause::FrameTooLarge),
            bad_frame: v(CloseCause::BadFrame),
            unknown_protocol: v(CloseCause::UnknownProtocol),
            shutdown: v(CloseCause::Shutdown),
            io_error: v(CloseCause::IoError),
            panic: v(CloseCause::Panic),
            tls: v(CloseCause::Tls),
            other: v(CloseCause::Other),
            refused,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_cause_has_its_own_counter() {
        for (i, c) in CloseCause::ALL.into_iter().enumerate() {
            assert_eq!(c as usize, i, "{c:?}");
        }
        let s = ServerStats::default();
        s.count(CloseCause::IdleTimeout);
        s.count(CloseCause::Other);
        let counts = s.snapshot(3);
        assert_eq!(
            (counts.idle_timeout, counts.other, counts.refused),
            (1, 1, 3)
        );
        assert_eq!(counts.iter().map(|(_, n)| n).sum::<u64>(), 5);
    }
}
