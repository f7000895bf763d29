//! How a client finds reply frames and their sequence ids in a connection's input.

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
}

/// Whether a TTHeader frame carries the `crrst` string header.
pub(crate) fn ttheader_crrst(frame: &bytes::Bytes) -> bool {
    codec::frame::has_str_header(frame, codec::frame::str_key::CONNECTION_RESET)
}
