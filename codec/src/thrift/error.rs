//! Errors of Thrift decoding and encoding.

use std::fmt;

use super::TType;

/// Why bytes could not be decoded as a Thrift value. A decoder returns one of these for
/// any input it cannot decode; it never panics.
/// [`ProtocolRead::position`](super::ProtocolRead::position) tells where the reader stopped.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum DecodeError {
    /// The input ended inside a value (a length or count promised more bytes than are left).
    Eof,
    /// A malformed value: the text says which.
    Invalid(&'static str),
    /// Values were nested deeper than the reader's limit.
    DepthLimit,
    /// A required field was absent.
    MissingField {
        /// The struct.
        owner: &'static str,
        /// The field.
        field: &'static str,
    },
    /// A union had no field or several.
    InvalidUnion {
        /// The union.
        owner: &'static str,
        /// How many fields were set.
        fields_set: usize,
    },
    /// A non-empty container held elements of another type than declared.
    UnexpectedElemType {
        /// The declared type.
        expected: TType,
        /// The type on the wire.
        found: TType,
    },
    /// A message header had an unknown protocol version or message type.
    BadMessageHeader(&'static str),
    /// Bytes remained after a complete message.
    TrailingBytes(usize),
}

impl fmt::Display for DecodeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DecodeError::Eof => f.write_str("unexpected end of input"),
            DecodeError::Invalid(what) => write!(f, "invalid {what}"),
            DecodeError::DepthLimit => f.write_str("values nested too deeply"),
            DecodeError::MissingField { owner, field } => {
                write!(f, "required field {owner}.{field} is missing")
            }
            DecodeError::InvalidUnion { owner, fields_set } => {
                write!(
                    f,
                    "union {owner} must have exactly one field set, found {fields_set}"
                )
            }
            DecodeError::UnexpectedElemType { expected, found } => {
                write!(f, "container elements are {found:?}, expected {expected:?}")
            }
            DecodeError::BadMessageHeader(what) => write!(f, "bad message header: {what}"),
            DecodeError::TrailingBytes(n) => write!(f, "{n} bytes after the end of the message"),
        }
    }
}

impl std::error::Error for DecodeError {}

/// Why a value could not be encoded.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum EncodeError {
    /// A string, binary or container is longer than the protocol can express (2^31 - 1).
    TooLong,
    /// Structs nested deeper than the writer's limit.
    TooDeep,
}

impl fmt::Display for EncodeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            EncodeError::TooLong => f.write_str("value too long for the protocol"),
            EncodeError::TooDeep => f.write_str("structs nested too deeply"),
        }
    }
}

impl std::error::Error for EncodeError {}
