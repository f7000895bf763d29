//! The consumer interface: what netpoll calls when something happens on a connection.

use std::any::Any;
use std::fmt;
use std::io;

use crate::{Conn, Core, Input};

/// A connection's consumer. netpoll calls it on the core that owns the connection; it
/// knows nothing of protocols. `codec` and `rpc` plug in here.
///
/// Everything a handler writes during one loop turn (through [`Conn::output`] or
/// [`Conn::write`]) leaves with one send per connection at the end of the turn.
///
/// The interface names no io_uring type, so that another backend (epoll) can drive the
/// same handlers.
///
/// Handlers are `Any`, so code running on the core can reach a connection's handler by its
/// concrete type with [`Core::with_handler`].
pub trait Handler: Any {
    /// The connection is established (accepted, or an outbound connect succeeded).
    fn on_open(&mut self, conn: &mut Conn<'_>) {
        let _ = conn;
    }

    /// New bytes arrived. Consume what can be processed now (with
    /// [`Input::split_to`] or [`Input::advance`]); bytes left unconsumed are kept and shown
    /// again, followed by newer bytes, on the next call.
    fn on_data(&mut self, conn: &mut Conn<'_>, input: &mut Input<'_>);

    /// The peer closed its sending side (EOF). Output can still be written. The default
    /// closes the connection once pending output is sent.
    fn on_read_closed(&mut self, conn: &mut Conn<'_>) {
        conn.close();
    }

    /// A timer set with [`Conn::set_timer`] fired.
    fn on_timer(&mut self, conn: &mut Conn<'_>, token: u64) {
        let _ = (conn, token);
    }

    /// The runtime is shutting down gracefully. The default closes the connection once
    /// pending output is sent; a handler with work in flight may finish it first (until
    /// the shutdown deadline, when every connection is closed).
    fn on_shutdown(&mut self, conn: &mut Conn<'_>) {
        conn.close();
    }

    /// The connection is gone: its descriptor is closed and every buffer it lent to the
    /// kernel has been returned. Called exactly once per connection that was opened or
    /// whose connect was attempted (not after a handler panicked).
    fn on_close(&mut self, core: &mut Core, reason: CloseReason) {
        let _ = (core, reason);
    }
}

/// Why a connection ended.
#[derive(Debug)]
#[non_exhaustive]
pub enum CloseReason {
    /// This side closed it ([`Conn::close`] or [`Conn::abort`]).
    Local,
    /// The peer closed its side and the connection was then closed.
    PeerClosed,
    /// A send or receive failed (reset by peer, broken pipe, ...).
    Io(io::Error),
    /// An outbound connect failed.
    ConnectFailed(io::Error),
    /// An outbound connect did not complete before its timeout.
    ConnectTimedOut,
    /// The peer took none of our output for the write timeout
    /// ([`Builder::write_timeout`](crate::Builder::write_timeout)).
    WriteTimedOut,
    /// The runtime shut down before the connection closed by itself.
    Shutdown,
    /// The handler panicked; the connection was aborted and the core kept running.
    HandlerPanicked,
    /// TLS failed: the handshake (a certificate that does not verify, a peer that is not
    /// speaking TLS, a handshake that timed out) or a record (corrupt, or an alert from
    /// the peer). The error wraps a [`TlsError`], which says whether the handshake had
    /// completed; its source is rustls's error where there is one.
    Tls(io::Error),
}

/// Why TLS failed on a connection: the error inside [`CloseReason::Tls`].
#[derive(Debug)]
pub struct TlsError {
    during_handshake: bool,
    source: Box<dyn std::error::Error + Send + Sync>,
}

impl TlsError {
    pub(crate) fn close_reason(
        kind: io::ErrorKind,
        during_handshake: bool,
        source: impl Into<Box<dyn std::error::Error + Send + Sync>>,
    ) -> CloseReason {
        CloseReason::Tls(io::Error::new(
            kind,
            TlsError {
                during_handshake,
                source: source.into(),
            },
        ))
    }

    /// The `TlsError` inside an error of [`CloseReason::Tls`].
    pub fn of(e: &io::Error) -> Option<&TlsError> {
        e.get_ref()?.downcast_ref()
    }

    /// Whether it failed before the handshake completed (on this side): nothing the
    /// handler wrote had been sent.
    pub fn during_handshake(&self) -> bool {
        self.during_handshake
    }
}

impl fmt::Display for TlsError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(&self.source, f)
    }
}

impl std::error::Error for TlsError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        Some(&*self.source)
    }
}

impl std::error::Error for CloseReason {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            CloseReason::Io(e) | CloseReason::ConnectFailed(e) | CloseReason::Tls(e) => Some(e),
            _ => None,
        }
    }
}

impl fmt::Display for CloseReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            CloseReason::Local => f.write_str("closed locally"),
            CloseReason::PeerClosed => f.write_str("closed by peer"),
            CloseReason::Io(e) => write!(f, "i/o error: {e}"),
            CloseReason::ConnectFailed(e) => write!(f, "connect failed: {e}"),
            CloseReason::ConnectTimedOut => f.write_str("connect timed out"),
            CloseReason::WriteTimedOut => f.write_str("write timed out (peer not reading)"),
            CloseReason::Shutdown => f.write_str("runtime shut down"),
            CloseReason::HandlerPanicked => f.write_str("handler panicked"),
            CloseReason::Tls(e) => write!(f, "TLS: {e}"),
        }
    }
}
