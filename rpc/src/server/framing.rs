//! [`Framing`]: a protocol of the application's own, served on the same port as the
//! built-in ones and detected the same way, from a connection's first bytes. Its frames
//! carry ordinary Thrift or Kitex Protobuf messages, so every service and handler serves
//! it unchanged.

use bytes::{Bytes, BytesMut};
use netpoll_codec::frame::{FrameError, Protocol, Split};

use crate::wire::Payload;

/// What a framing makes of a new connection's first bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Detect {
    /// The connection speaks this framing.
    Yes,
    /// It does not.
    No,
    /// Not enough bytes to tell yet.
    NeedMore,
}

/// What one frame of a [`Framing`] holds.
#[derive(Debug, Clone)]
pub enum Inner {
    /// A message in this encoding (a Thrift message, or a Kitex Protobuf message without
    /// its length).
    Message(Payload, Bytes),
    /// A whole frame of a built-in protocol (TTHeader, Framed, ...), read as that protocol.
    Frame(Protocol, Bytes),
}

/// A framing served beside Framed, Buffered, TTHeader and Kitex Protobuf; register it
/// with [`ServerBuilder::framing`](super::ServerBuilder::framing).
///
/// Registered framings look at a new connection's first bytes before the built-in ones,
/// in registration order; the first to say [`Detect::Yes`] serves the connection.
pub trait Framing: Send + Sync + 'static {
    /// A name for logs.
    fn name(&self) -> &'static str;

    /// Whether a connection whose first bytes are `head` speaks this framing.
    fn detect(&self, head: &[u8]) -> Detect;

    /// Finds the first whole frame in `buf`, as
    /// [`netpoll_codec::frame::split`] does for the built-in protocols: refuse frames over
    /// `max_frame` bytes as soon as their length is known.
    fn split(&self, buf: &[u8], max_frame: usize) -> Result<Split, FrameError>;

    /// Takes the message out of a whole frame: its encoding, and the message itself (a
    /// Thrift message, or a Kitex Protobuf message without its length), as a view of
    /// `frame`.
    fn unwrap(&self, frame: Bytes) -> Result<(Payload, Bytes), FrameError>;

    /// What a whole frame holds: a bare message (the default: what
    /// [`unwrap`](Framing::unwrap) finds), or a whole frame of a built-in protocol, such as
    /// TTHeader, which then carries its metadata (headers, the caller's deadline) to
    /// middleware and handlers; its reply is a frame of the same protocol inside this
    /// framing's.
    fn open(&self, frame: Bytes) -> Result<Inner, FrameError> {
        self.unwrap(frame).map(|(p, m)| Inner::Message(p, m))
    }

    /// Starts a reply frame in `out` (before the message is written into it); returns
    /// what [`finish_reply`](Framing::finish_reply) needs, such as where a length goes.
    fn begin_reply(&self, out: &mut BytesMut) -> usize;

    /// Finishes the reply frame started at `start`, now that the message follows it.
    fn finish_reply(&self, out: &mut BytesMut, start: usize) -> Result<(), FrameError>;
}

impl std::fmt::Debug for dyn Framing {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_tuple("Framing").field(&self.name()).finish()
    }
}
