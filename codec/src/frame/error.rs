//! Errors of framing.

use std::fmt;

use crate::thrift::{DecodeError, EncodeError};

/// Why bytes are not a valid frame. Each variant says what was wrong.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum FrameError {
    /// The first bytes match no protocol this crate speaks.
    UnknownProtocol {
        /// Up to eight first bytes, for the log.
        first_bytes: [u8; 8],
    },
    /// A protocol recognised but not served.
    Unsupported(&'static str),
    /// A frame larger than the configured maximum (known from its length prefix).
    TooLarge {
        /// The frame's size in bytes.
        size: usize,
        /// The limit.
        max: usize,
    },
    /// A length field the protocol forbids (TTHeader's must be below 0x3FFFFFFF).
    BadLength(usize),
    /// A magic number that is not the protocol's.
    BadMagic {
        /// Where.
        offset: usize,
        /// What was found.
        found: u32,
    },
    /// A header field or block is malformed; the text says which and the offset where.
    BadHeader {
        /// What was wrong.
        what: &'static str,
        /// The byte offset in the frame.
        offset: usize,
    },
    /// The message inside the frame is malformed.
    Malformed(DecodeError),
    /// Encoding failed.
    Encode(EncodeError),
}

impl fmt::Display for FrameError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            FrameError::UnknownProtocol { first_bytes } => {
                write!(f, "unknown protocol; first bytes {first_bytes:02x?}")
            }
            FrameError::Unsupported(what) => write!(f, "unsupported: {what}"),
            FrameError::TooLarge { size, max } => {
                write!(f, "frame of {size} bytes exceeds the {max} byte limit")
            }
            FrameError::BadLength(n) => write!(f, "invalid frame length {n:#x}"),
            FrameError::BadMagic { offset, found } => {
                write!(f, "bad magic {found:#x} at offset {offset}")
            }
            FrameError::BadHeader { what, offset } => {
                write!(f, "bad header at offset {offset}: {what}")
            }
            FrameError::Malformed(e) => write!(f, "malformed message: {e}"),
            FrameError::Encode(e) => write!(f, "cannot encode: {e}"),
        }
    }
}

impl std::error::Error for FrameError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            FrameError::Malformed(e) => Some(e),
            _ => None,
        }
    }
}

impl From<DecodeError> for FrameError {
    fn from(e: DecodeError) -> Self {
        FrameError::Malformed(e)
    }
}

impl From<EncodeError> for FrameError {
    fn from(e: EncodeError) -> Self {
        FrameError::Encode(e)
    }
}
