//! Errors of RPC calls.

use std::fmt;
use std::io;

/// Why a call failed. Each variant says whether trying again can help.
#[derive(Debug)]
#[non_exhaustive]
pub enum CallError {
    /// No reply arrived before the call's deadline. A late reply is dropped. Retrying may
    /// help if the server was only slow.
    Timeout,
    /// The connection could not be established (refused, unreachable, timed out).
    /// Retrying helps once the server is back.
    Connect(io::Error),
    /// The connection closed while the call was in flight; the call may or may not have
    /// been executed. Retrying is safe only for idempotent calls.
    ConnectionLost(String),
    /// The peer sent bytes that are not a valid reply frame; the connection was closed.
    Protocol(String),
    /// The runtime the client runs on has stopped.
    RuntimeStopped,
    /// A blocking call was made on an event-loop thread, where waiting would stall every
    /// connection of that core. Use the callback form there.
    WouldBlockCore,
}

impl CallError {
    /// Whether sending the same call again might succeed.
    pub fn is_retryable(&self) -> bool {
        matches!(
            self,
            CallError::Timeout | CallError::Connect(_) | CallError::ConnectionLost(_)
        )
    }
}

impl fmt::Display for CallError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            CallError::Timeout => f.write_str("call timed out"),
            CallError::Connect(e) => write!(f, "cannot connect: {e}"),
            CallError::ConnectionLost(why) => write!(f, "connection lost during the call: {why}"),
            CallError::Protocol(why) => write!(f, "invalid reply: {why}"),
            CallError::RuntimeStopped => f.write_str("the client's runtime has stopped"),
            CallError::WouldBlockCore => {
                f.write_str("blocking call on an event-loop thread (use the callback form there)")
            }
        }
    }
}

impl std::error::Error for CallError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            CallError::Connect(e) => Some(e),
            _ => None,
        }
    }
}
