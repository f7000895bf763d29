//! `TApplicationException`: the error a Thrift server sends instead of a reply.

use std::fmt;

use super::*;

/// What kind of failure an [`ApplicationException`] reports. Unknown values are kept.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ApplicationExceptionKind {
    /// 0: unspecified.
    Unknown,
    /// 1: the server has no such method.
    UnknownMethod,
    /// 2: the message type was not CALL or ONEWAY.
    InvalidMessageType,
    /// 3: the reply named another method.
    WrongMethodName,
    /// 4: the reply's sequence id matched no call.
    BadSequenceId,
    /// 5: the reply carried no result.
    MissingResult,
    /// 6: the handler failed.
    InternalError,
    /// 7: the request could not be decoded.
    ProtocolError,
    /// 8: an unsupported transform.
    InvalidTransform,
    /// 9: an unsupported protocol.
    InvalidProtocol,
    /// 10: an unsupported client type.
    UnsupportedClientType,
    /// Any other value.
    Other(i32),
}

impl ApplicationExceptionKind {
    /// The wire value.
    pub fn to_i32(self) -> i32 {
        match self {
            Self::Unknown => 0,
            Self::UnknownMethod => 1,
            Self::InvalidMessageType => 2,
            Self::WrongMethodName => 3,
            Self::BadSequenceId => 4,
            Self::MissingResult => 5,
            Self::InternalError => 6,
            Self::ProtocolError => 7,
            Self::InvalidTransform => 8,
            Self::InvalidProtocol => 9,
            Self::UnsupportedClientType => 10,
            Self::Other(v) => v,
        }
    }

    /// The kind for a wire value.
    pub fn from_i32(v: i32) -> Self {
        match v {
            0 => Self::Unknown,
            1 => Self::UnknownMethod,
            2 => Self::InvalidMessageType,
            3 => Self::WrongMethodName,
            4 => Self::BadSequenceId,
            5 => Self::MissingResult,
            6 => Self::InternalError,
            7 => Self::ProtocolError,
            8 => Self::InvalidTransform,
            9 => Self::InvalidProtocol,
            10 => Self::UnsupportedClientType,
            v => Self::Other(v),
        }
    }
}

/// Thrift's `TApplicationException`: `struct { 1: string message, 2: i32 type }`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApplicationException {
    /// What went wrong, for people.
    pub message: ByteString,
    /// What went wrong, for programs.
    pub kind: ApplicationExceptionKind,
}

impl ApplicationException {
    /// An exception of `kind` saying `message`.
    pub fn new(kind: ApplicationExceptionKind, message: impl Into<ByteString>) -> Self {
        ApplicationException {
            message: message.into(),
            kind,
        }
    }
}

impl fmt::Display for ApplicationException {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "application exception ({:?}): {}",
            self.kind, self.message
        )
    }
}

impl std::error::Error for ApplicationException {}

impl Message for ApplicationException {
    fn decode<R: ProtocolRead>(r: &mut R) -> Result<Self, DecodeError> {
        let mut message = ByteString::default();
        let mut kind = ApplicationExceptionKind::Unknown;
        r.read_struct_begin()?;
        while let Some(f) = r.read_field_begin()? {
            match (f.id, f.ttype) {
                (1, TType::Binary) => message = r.read_string()?,
                (2, TType::I32) => kind = ApplicationExceptionKind::from_i32(r.read_i32()?),
                (_, t) => r.skip(t)?,
            }
            r.read_field_end()?;
        }
        r.read_struct_end()?;
        Ok(ApplicationException { message, kind })
    }

    fn encode<W: ProtocolWrite>(&self, w: &mut W) -> Result<(), EncodeError> {
        w.write_struct_begin("TApplicationException")?;
        w.write_field_begin(TType::Binary, 1)?;
        w.write_string(&self.message)?;
        w.write_field_end()?;
        w.write_field_begin(TType::I32, 2)?;
        w.write_i32(self.kind.to_i32())?;
        w.write_field_end()?;
        w.write_field_stop()?;
        w.write_struct_end()
    }

    fn encoded_len<L: ProtocolLen>(&self, l: &mut L) -> usize {
        l.struct_begin_len("TApplicationException")
            + l.field_begin_len(TType::Binary, 1)
            + l.string_len(&self.message)
            + l.field_end_len()
            + l.field_begin_len(TType::I32, 2)
            + l.i32_len(self.kind.to_i32())
            + l.field_end_len()
            + l.field_stop_len()
            + l.struct_end_len()
    }
}
