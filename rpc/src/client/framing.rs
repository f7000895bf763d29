//! How a client finds reply frames and their sequence ids in a connection's input.

/// The outcome of looking at the start of a connection's unconsumed input.
#[derive(Debug, Clone, PartialEq, Eq)]
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
    /// The input is not a valid reply stream.
    Invalid(String),
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
}

/// Whether a TTHeader frame carries the `crrst` string header. Frames whose header holds
/// only the protocol id and transform count (no info blocks) are answered without parsing.
pub(crate) fn ttheader_crrst(frame: &bytes::Bytes) -> bool {
    // Header size in 4-byte words at offset 12; one word is the protocol id, the transform
    // count and padding only.
    let words = frame
        .get(12..14)
        .map_or(0, |w| u16::from_be_bytes([w[0], w[1]]));
    if words <= 1 {
        return false;
    }
    codec::frame::TTHeader::parse(frame.clone()).is_ok_and(|t| t.str_header("crrst").is_some())
}
