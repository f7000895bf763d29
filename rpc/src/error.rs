//! Errors of RPC calls.

use std::convert::Infallible;
use std::fmt;
use std::io;
use std::sync::Arc;

use netpoll_codec::thrift::ApplicationException;

/// The underlying error of a [`CallError`], kept whole (its own `source()` chain
/// included) and shared, because one failure (a lost connection, say) fails every call
/// that was waiting on it.
pub type Cause = Arc<dyn std::error::Error + Send + Sync>;

/// A cause that is a plain statement, for failures with no underlying error.
#[derive(Debug, Clone)]
pub struct Reason(pub String);

impl fmt::Display for Reason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for Reason {}

/// Makes a [`Cause`] of an error.
pub fn cause(e: impl std::error::Error + Send + Sync + 'static) -> Cause {
    Arc::new(e)
}

/// Makes a [`Cause`] of a statement.
pub fn reason(why: impl Into<String>) -> Cause {
    Arc::new(Reason(why.into()))
}

/// Why a call failed. `E` is the method's declared exceptions (a generated enum), or
/// [`Infallible`] for methods that declare none and for the untyped transport. Each variant
/// says whether trying again can help ([`is_retryable`](CallError::is_retryable)).
#[derive(Debug)]
#[non_exhaustive]
pub enum CallError<E = Infallible> {
    /// No reply arrived before the call's deadline. A late reply is dropped. Retrying may
    /// help if the server was only slow.
    Timeout,
    /// The connection could not be established (refused, unreachable, timed out).
    /// Retrying helps once the server is back.
    Connect(io::Error),
    /// The connection closed while the call was in flight; the call may or may not have
    /// been executed. Retrying is safe only for idempotent calls.
    ConnectionLost(Cause),
    /// The peer sent bytes that are not a valid reply frame; the connection was closed.
    Protocol(Cause),
    /// The server answered with an application exception (unknown method, a handler's
    /// error status, a panic reported as INTERNAL_ERROR, ...).
    Application(ApplicationException),
    /// The server answered with one of the method's declared exceptions.
    Declared(E),
    /// A gRPC server answered with a status other than OK: its code (as an
    /// [`ErrorKind`](crate::ErrorKind)) and message.
    Status(crate::Status),
    /// The reply frame was well formed but its body does not decode as the method's result.
    Decode(Cause),
    /// The request is too large to send (over the frame limit or a length field).
    TooLarge(Cause),
    /// The connection already has this many bytes of requests queued that the server has
    /// not taken, at or over the client's limit: the call was not sent. Retrying later,
    /// or elsewhere, may help.
    QueueFull {
        /// Bytes queued on the connection.
        queued: usize,
        /// The limit (`ChannelConfig::max_queued_bytes`).
        limit: usize,
    },
    /// The runtime the client runs on has stopped.
    RuntimeStopped,
    /// A blocking call was made on an event-loop thread, where waiting would stall every
    /// connection of that core. Use the callback form there.
    WouldBlockCore,
    /// No instance of the service can take the call: none is known, or every one is
    /// failing to connect or has its circuit breaker open.
    NoInstance(Cause),
    /// The circuit breaker of the method (or of every instance tried) is open: the call
    /// was not sent. It closes again after probes succeed.
    CircuitOpen(Cause),
}

impl<E> CallError<E> {
    /// The kind of the failure, in the vocabulary servers, middleware and metrics share.
    pub fn kind(&self) -> crate::ErrorKind {
        use crate::ErrorKind as K;
        match self {
            CallError::Timeout => K::DeadlineExceeded,
            CallError::Connect(_) | CallError::ConnectionLost(_) | CallError::RuntimeStopped => {
                K::Unavailable
            }
            CallError::Protocol(_) | CallError::Decode(_) => K::Protocol,
            CallError::Application(e) => crate::status::exception_kind(e),
            CallError::Declared(_) => K::Declared,
            CallError::Status(s) => s.kind(),
            CallError::TooLarge(_) | CallError::QueueFull { .. } => K::ResourceExhausted,
            CallError::WouldBlockCore => K::Internal,
            CallError::NoInstance(_) | CallError::CircuitOpen(_) => K::Unavailable,
        }
    }

    /// Whether sending the same call again might succeed.
    pub fn is_retryable(&self) -> bool {
        matches!(
            self,
            CallError::Timeout
                | CallError::Connect(_)
                | CallError::ConnectionLost(_)
                | CallError::QueueFull { .. }
                | CallError::NoInstance(_)
                | CallError::CircuitOpen(_)
        ) || self.kind() == crate::ErrorKind::Overloaded
    }
}

impl<E: fmt::Debug> From<CallError<E>> for crate::Status {
    /// A failed downstream call as the status of the call being served (a gateway's
    /// handler answering with what its backend said): the same kind, and the error's text.
    fn from(e: CallError<E>) -> crate::Status {
        match e {
            CallError::Application(a) => crate::Status::from(a),
            CallError::Status(s) => s,
            e => crate::Status::new(e.kind(), e.to_string()),
        }
    }
}

impl CallError {
    /// The same error, typed for a method whose declared exceptions are `E`.
    pub fn widen<E>(self) -> CallError<E> {
        match self {
            CallError::Timeout => CallError::Timeout,
            CallError::Connect(e) => CallError::Connect(e),
            CallError::ConnectionLost(s) => CallError::ConnectionLost(s),
            CallError::Protocol(s) => CallError::Protocol(s),
            CallError::Application(a) => CallError::Application(a),
            CallError::Declared(never) => match never {},
            CallError::Status(s) => CallError::Status(s),
            CallError::Decode(s) => CallError::Decode(s),
            CallError::TooLarge(s) => CallError::TooLarge(s),
            CallError::QueueFull { queued, limit } => CallError::QueueFull { queued, limit },
            CallError::RuntimeStopped => CallError::RuntimeStopped,
            CallError::WouldBlockCore => CallError::WouldBlockCore,
            CallError::NoInstance(c) => CallError::NoInstance(c),
            CallError::CircuitOpen(c) => CallError::CircuitOpen(c),
        }
    }
}

impl<E: fmt::Debug> fmt::Display for CallError<E> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            CallError::Timeout => f.write_str("call timed out"),
            CallError::Connect(e) => write!(f, "cannot connect: {e}"),
            CallError::ConnectionLost(why) => write!(f, "connection lost during the call: {why}"),
            CallError::Protocol(why) => write!(f, "invalid reply: {why}"),
            CallError::Application(e) => write!(f, "server error: {e}"),
            CallError::Declared(e) => write!(f, "declared exception: {e:?}"),
            CallError::Status(s) => {
                write!(f, "server error: {} ({})", s.message(), s.kind().name())
            }
            CallError::Decode(why) => write!(f, "cannot decode the reply: {why}"),
            CallError::TooLarge(why) => write!(f, "request too large: {why}"),
            CallError::QueueFull { queued, limit } => write!(
                f,
                "the connection's send queue is full: {queued} bytes queued, limit {limit}; \
                 the server is not keeping up"
            ),
            CallError::RuntimeStopped => f.write_str("the client's runtime has stopped"),
            CallError::WouldBlockCore => {
                f.write_str("blocking call on an event-loop thread (use the callback form there)")
            }
            CallError::NoInstance(why) => write!(f, "no instance can take the call: {why}"),
            CallError::CircuitOpen(why) => write!(f, "circuit breaker open: {why}"),
        }
    }
}

impl<E: fmt::Debug> std::error::Error for CallError<E> {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            CallError::Connect(e) => Some(e),
            CallError::Application(e) => Some(e),
            CallError::ConnectionLost(c)
            | CallError::Protocol(c)
            | CallError::Decode(c)
            | CallError::TooLarge(c)
            | CallError::NoInstance(c)
            | CallError::CircuitOpen(c) => Some(&**c),
            _ => None,
        }
    }
}
