//! How a client finds reply frames and their sequence ids in a connection's input.

use netpoll_codec::frame::{self, Protocol, Split};

/// The outcome of looking at the start of a connection's unconsumed input.
#[derive(Debug, Clone)]
pub enum ReplySplit {
    /// Not a whole frame yet: at least this many bytes are needed (0 if unknown).
    NeedMore(usize),
    /// A whole reply frame of `len` bytes answering call `seq`.
    Reply {
        /// Bytes the frame occupies.
        len: usize,
        /// The sequence id of the call it answers.
        seq: i32,
    },
    /// The input is not a valid reply stream, and why.
    Invalid(crate::Cause),
}

/// Splits reply frames for one wire protocol (Framed or TTHeader Thrift, Kitex Protobuf).
pub trait ReplyFraming: Send + Sync + 'static {
    /// Examines the start of `input`.
    fn split(&self, input: &[u8]) -> ReplySplit;

    /// Whether a whole reply frame asks the client to stop using its connection (TTHeader's
    /// `crrst`, sent by a server shutting down gracefully). Default: never.
    fn asks_to_reconnect(&self, frame: &bytes::Bytes) -> bool {
        let _ = frame;
        false
    }

    /// For gRPC: where calls go over HTTP/2 (the connection then speaks HTTP/2, and
    /// [`split`](Self::split) is not used). Default: not gRPC.
    #[doc(hidden)]
    fn grpc(&self) -> Option<std::sync::Arc<super::GrpcTarget>> {
        None
    }
}

/// The framing of gRPC calls: HTTP/2 streams to `target`.
#[derive(Debug, Clone)]
pub(crate) struct GrpcReplies(pub(crate) std::sync::Arc<super::GrpcTarget>);

impl ReplyFraming for GrpcReplies {
    fn split(&self, _input: &[u8]) -> ReplySplit {
        ReplySplit::Invalid(crate::reason("gRPC replies are read by the HTTP/2 state"))
    }

    fn grpc(&self) -> Option<std::sync::Arc<super::GrpcTarget>> {
        Some(self.0.clone())
    }
}

/// Finds reply frames of one protocol and their sequence ids in place, with `codec`'s
/// splitting and peeks: the message header's id for Framed Thrift and Kitex Protobuf,
/// TTHeader's own sequence number inside TTHeader (as Kitex multiplexes). The full decode
/// of a reply is left to its caller.
#[derive(Debug, Clone, Copy)]
pub struct FrameReplies {
    protocol: Protocol,
    max_frame: usize,
}

/// The framing of Thrift replies (the same type as [`KitexPbFraming`]).
pub type ThriftFraming = FrameReplies;
/// The framing of Kitex Protobuf replies (the same type as [`ThriftFraming`]).
pub type KitexPbFraming = FrameReplies;

impl FrameReplies {
    /// Replies in `protocol`, refusing frames over `max_frame` bytes.
    pub fn new(protocol: Protocol, max_frame: usize) -> Self {
        FrameReplies {
            protocol,
            max_frame,
        }
    }

    /// Framed transport, strict binary Thrift.
    pub fn framed_binary(max_frame: usize) -> Self {
        Self::new(Protocol::FramedBinary, max_frame)
    }

    /// Framed transport, compact Thrift.
    pub fn framed_compact(max_frame: usize) -> Self {
        Self::new(Protocol::FramedCompact, max_frame)
    }

    /// TTHeader (bare or framed payload; Thrift binary or compact, or Kitex Protobuf).
    pub fn ttheader(max_frame: usize) -> Self {
        Self::new(Protocol::TTHeader, max_frame)
    }

    /// Kitex Protobuf's own framing.
    pub fn plain(max_frame: usize) -> Self {
        Self::new(Protocol::KitexProtobuf, max_frame)
    }
}

impl ReplyFraming for FrameReplies {
    fn split(&self, input: &[u8]) -> ReplySplit {
        match frame::split(self.protocol, input, self.max_frame) {
            Ok(Split::NeedMore(n)) => ReplySplit::NeedMore(n),
            Ok(Split::Frame(len)) => {
                match netpoll_codec::envelope::peek_seq_id(self.protocol, &input[..len]) {
                    Ok(seq) => ReplySplit::Reply { len, seq },
                    Err(why) => ReplySplit::Invalid(crate::reason(why)),
                }
            }
            Err(e) => ReplySplit::Invalid(crate::cause(e)),
        }
    }

    fn asks_to_reconnect(&self, frame: &bytes::Bytes) -> bool {
        self.protocol == Protocol::TTHeader
            && frame::has_str_header(frame, frame::str_key::CONNECTION_RESET)
    }
}
