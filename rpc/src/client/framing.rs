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
}
