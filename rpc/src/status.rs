//! [`Status`]: an error a handler returns instead of a result, sent to the caller as a
//! Thrift `TApplicationException` or a Kitex Protobuf `ErrorProto`.

use std::fmt;

use netpoll_codec::thrift::{ApplicationException, ApplicationExceptionKind};

use crate::ErrorKind;

/// An application-level error of a call. On the wire it becomes a Thrift EXCEPTION message
/// carrying a `TApplicationException`, or a Kitex Protobuf EXCEPTION carrying `ErrorProto`,
/// with [`kind`](Status::kind)'s type and [`message`](Status::message) as the text.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Status {
    kind: ErrorKind,
    message: String,
    /// gRPC's status details (`grpc-status-details-bin`: an encoded `google.rpc.Status`),
    /// when there are any.
    details: Option<bytes::Bytes>,
}

impl Status {
    /// A status of the given kind (an [`ErrorKind`], or a Thrift exception type).
    pub fn new(kind: impl Into<ErrorKind>, message: impl Into<String>) -> Status {
        Status {
            kind: kind.into(),
            message: message.into(),
            details: None,
        }
    }

    /// `INTERNAL_ERROR`: the handler failed.
    pub fn internal(message: impl Into<String>) -> Status {
        Status::new(ApplicationExceptionKind::InternalError, message)
    }

    /// `UNKNOWN_METHOD`: no handler for the method.
    pub fn unknown_method(message: impl Into<String>) -> Status {
        Status::new(ApplicationExceptionKind::UnknownMethod, message)
    }

    /// `PROTOCOL_ERROR`: the call could not be decoded.
    pub fn protocol_error(message: impl Into<String>) -> Status {
        Status::new(ApplicationExceptionKind::ProtocolError, message)
    }

    /// The caller's deadline passed before the call could be served: sent as
    /// `INTERNAL_ERROR` with a message saying so (Thrift has no timeout type).
    pub fn deadline_exceeded(message: impl Into<String>) -> Status {
        Status::new(ErrorKind::DeadlineExceeded, message)
    }

    /// The server is over a limit (concurrent calls, calls per second) and refused the
    /// call without running it: retry elsewhere. On the wire (Thrift and Kitex Protobuf
    /// alike) an `INTERNAL_ERROR` (type 6) whose message starts with
    /// [`OVERLOADED_PREFIX`], which clients read back as [`ErrorKind::Overloaded`].
    pub fn overloaded(message: impl Into<String>) -> Status {
        Status::new(ErrorKind::Overloaded, message)
    }

    /// What the call names does not exist: gRPC `NOT_FOUND` (Thrift `INTERNAL_ERROR`).
    pub fn not_found(message: impl Into<String>) -> Status {
        Status::new(ErrorKind::NotFound, message)
    }

    /// `UNKNOWN` (type 0): a failure of no more specific kind.
    pub fn unknown(message: impl Into<String>) -> Status {
        Status::new(ApplicationExceptionKind::Unknown, message)
    }

    /// The error's kind.
    pub fn kind(&self) -> ErrorKind {
        self.kind
    }

    /// The error's text.
    pub fn message(&self) -> &str {
        &self.message
    }

    /// The same status with gRPC status details: the bytes of an encoded
    /// `google.rpc.Status` (with its `details` of `Any` messages), sent over gRPC as
    /// `grpc-status-details-bin`. Thrift and Kitex Protobuf have no place for them.
    pub fn with_details(mut self, details: impl Into<bytes::Bytes>) -> Status {
        self.details = Some(details.into());
        self
    }

    /// The gRPC status details, if the status has any.
    pub fn details(&self) -> Option<&[u8]> {
        self.details.as_deref()
    }

    /// The `TApplicationException` this status is sent as.
    pub fn to_exception(&self) -> ApplicationException {
        if self.kind == ErrorKind::Overloaded && !self.message.starts_with(OVERLOADED_PREFIX) {
            let m = format!("{OVERLOADED_PREFIX}{}", self.message);
            return ApplicationException::new(self.kind.into(), m.as_str());
        }
        ApplicationException::new(self.kind.into(), self.message.as_str())
    }
}

/// How an overload refusal's message starts on the wire (see [`Status::overloaded`]).
/// Kitex's own (`request over limit: ...`), so that the two recognise each other's.
pub const OVERLOADED_PREFIX: &str = "request over limit: ";

/// The status a gRPC code and message stand for, the overload marker included.
pub(crate) fn from_grpc(code: u8, message: String) -> Status {
    let mut kind = ErrorKind::from_grpc_code(code);
    if kind == ErrorKind::Unavailable && message.starts_with(OVERLOADED_PREFIX) {
        kind = ErrorKind::Overloaded;
    }
    Status::new(kind, message)
}

/// The same, with status details when the bytes are not empty.
pub(crate) fn from_grpc_with(code: u8, message: String, details: bytes::Bytes) -> Status {
    let s = from_grpc(code, message);
    if details.is_empty() {
        s
    } else {
        s.with_details(details)
    }
}

/// The kind an application exception stands for, the overload marker included.
pub(crate) fn exception_kind(e: &ApplicationException) -> ErrorKind {
    let k = ErrorKind::from(e.kind);
    if k == ErrorKind::Internal && e.message.starts_with(OVERLOADED_PREFIX) {
        ErrorKind::Overloaded
    } else {
        k
    }
}

impl From<ApplicationException> for Status {
    fn from(e: ApplicationException) -> Status {
        Status::new(exception_kind(&e), &*e.message)
    }
}

impl fmt::Display for Status {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.kind, self.message)
    }
}

impl std::error::Error for Status {}
