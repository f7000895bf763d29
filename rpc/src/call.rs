//! One description of a call for server, client and middleware alike ([`CallInfo`],
//! [`Outcome`]), and one table of error kinds ([`ErrorKind`]) with their Thrift, Kitex
//! Protobuf and gRPC codes.

use std::net::SocketAddr;
use std::time::Instant;

use netpoll_codec::frame::TTHeader;
use netpoll_codec::thrift::ApplicationExceptionKind;

use crate::trace::TraceContext;
use crate::wire::{Payload, Transport};

/// What kind of failure ended a call: one vocabulary for servers, clients, middleware
/// and metrics, whatever the protocol. [`ErrorKind::TABLE`] maps each kind to the codes
/// each protocol puts on the wire.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum ErrorKind {
    /// A failure of no more specific kind.
    Unknown,
    /// The server has no such service or method.
    UnknownMethod,
    /// The message type was not what the method takes (CALL vs ONEWAY, say).
    InvalidMessageType,
    /// A reply named another method.
    WrongMethodName,
    /// A reply's sequence id matched no call.
    BadSequenceId,
    /// A reply carried no result.
    MissingResult,
    /// The handler failed (returned an error status, or panicked).
    Internal,
    /// The request or reply could not be decoded.
    Protocol,
    /// A transform (compression) the peer does not support.
    InvalidTransform,
    /// A protocol the peer does not serve for this method.
    InvalidProtocol,
    /// A client type the server does not support.
    UnsupportedClientType,
    /// The caller's deadline passed.
    DeadlineExceeded,
    /// The peer could not be reached, or the connection was lost.
    Unavailable,
    /// A bound was reached (queue full, request too large).
    ResourceExhausted,
    /// The method answered with one of its declared exceptions.
    Declared,
    /// The server refused the call without running it: it is over a limit. Safe to retry
    /// on another instance.
    Overloaded,
    /// What the call names does not exist (gRPC NOT_FOUND; Thrift has no such type and
    /// sends `INTERNAL_ERROR`).
    NotFound,
    /// The call was cancelled: the caller gave up on it (gRPC CANCELLED), or a stream
    /// ended before its handler finished it.
    Cancelled,
    /// The caller's request is not valid for the method (gRPC INVALID_ARGUMENT; Thrift
    /// sends `INTERNAL_ERROR`).
    InvalidArgument,
    /// What the call would create exists already (gRPC ALREADY_EXISTS).
    AlreadyExists,
    /// The caller may not do this (gRPC PERMISSION_DENIED).
    PermissionDenied,
    /// The system is not in a state the call needs (gRPC FAILED_PRECONDITION).
    FailedPrecondition,
    /// The call was aborted, typically by a concurrency conflict (gRPC ABORTED).
    Aborted,
    /// A value past the valid range (gRPC OUT_OF_RANGE).
    OutOfRange,
    /// Unrecoverable data loss (gRPC DATA_LOSS).
    DataLoss,
    /// The caller did not prove who it is (gRPC UNAUTHENTICATED).
    Unauthenticated,
    /// A Thrift exception type this table does not know, kept as it came.
    Other(i32),
}

/// One row of [`ErrorKind::TABLE`].
#[derive(Debug, Clone, Copy)]
pub struct ErrorCodes {
    /// The kind.
    pub kind: ErrorKind,
    /// Its name in metrics and logs (`snake_case`).
    pub name: &'static str,
    /// The `TApplicationException` type (and Kitex Protobuf `ErrorProto` type) it is sent
    /// as. Thrift has no type for some kinds; they are sent as `INTERNAL_ERROR` (6).
    pub thrift: i32,
    /// The gRPC status code it maps to.
    pub grpc: u8,
}

impl ErrorKind {
    /// Every kind with its codes: the one place they are defined.
    pub const TABLE: &'static [ErrorCodes] = &[
        row(ErrorKind::Unknown, "unknown", 0, 2),
        row(ErrorKind::UnknownMethod, "unknown_method", 1, 12),
        row(ErrorKind::InvalidMessageType, "invalid_message_type", 2, 13),
        row(ErrorKind::WrongMethodName, "wrong_method_name", 3, 13),
        row(ErrorKind::BadSequenceId, "bad_sequence_id", 4, 13),
        row(ErrorKind::MissingResult, "missing_result", 5, 13),
        row(ErrorKind::Internal, "internal", 6, 13),
        row(ErrorKind::Protocol, "protocol", 7, 13),
        row(ErrorKind::InvalidTransform, "invalid_transform", 8, 12),
        row(ErrorKind::InvalidProtocol, "invalid_protocol", 9, 12),
        row(
            ErrorKind::UnsupportedClientType,
            "unsupported_client_type",
            10,
            12,
        ),
        row(ErrorKind::DeadlineExceeded, "deadline_exceeded", 6, 4),
        row(ErrorKind::Unavailable, "unavailable", 6, 14),
        row(ErrorKind::ResourceExhausted, "resource_exhausted", 6, 8),
        row(ErrorKind::Declared, "declared", 0, 2),
        row(ErrorKind::Overloaded, "overloaded", 6, 14),
        row(ErrorKind::NotFound, "not_found", 6, 5),
        row(ErrorKind::Cancelled, "cancelled", 6, 1),
        row(ErrorKind::InvalidArgument, "invalid_argument", 6, 3),
        row(ErrorKind::AlreadyExists, "already_exists", 6, 6),
        row(ErrorKind::PermissionDenied, "permission_denied", 6, 7),
        row(ErrorKind::FailedPrecondition, "failed_precondition", 6, 9),
        row(ErrorKind::Aborted, "aborted", 6, 10),
        row(ErrorKind::OutOfRange, "out_of_range", 6, 11),
        row(ErrorKind::DataLoss, "data_loss", 6, 15),
        row(ErrorKind::Unauthenticated, "unauthenticated", 6, 16),
    ];

    fn codes(self) -> Option<&'static ErrorCodes> {
        Self::TABLE.iter().find(|r| r.kind == self)
    }

    /// The name of the kind in metrics and logs.
    pub fn name(self) -> &'static str {
        self.codes().map_or("other", |c| c.name)
    }

    /// The Thrift `TApplicationException` type (also Kitex Protobuf's `ErrorProto` type)
    /// this kind is sent as.
    pub fn thrift_type(self) -> i32 {
        match self {
            ErrorKind::Other(t) => t,
            k => k.codes().map_or(0, |c| c.thrift),
        }
    }

    /// The gRPC status code this kind maps to.
    pub fn grpc_code(self) -> u8 {
        self.codes().map_or(2, |c| c.grpc)
    }

    /// The kind a gRPC status code (other than OK) stands for.
    pub fn from_grpc_code(code: u8) -> ErrorKind {
        match code {
            1 => ErrorKind::Cancelled,
            3 => ErrorKind::InvalidArgument,
            4 => ErrorKind::DeadlineExceeded,
            5 => ErrorKind::NotFound,
            6 => ErrorKind::AlreadyExists,
            7 => ErrorKind::PermissionDenied,
            8 => ErrorKind::ResourceExhausted,
            9 => ErrorKind::FailedPrecondition,
            10 => ErrorKind::Aborted,
            11 => ErrorKind::OutOfRange,
            12 => ErrorKind::UnknownMethod,
            13 => ErrorKind::Internal,
            14 => ErrorKind::Unavailable,
            15 => ErrorKind::DataLoss,
            16 => ErrorKind::Unauthenticated,
            _ => ErrorKind::Unknown,
        }
    }

    /// The kind a Thrift `TApplicationException` type (or `ErrorProto` type) stands for.
    /// Types shared by several kinds (6) read as [`ErrorKind::Internal`].
    pub fn from_thrift_type(t: i32) -> ErrorKind {
        match t {
            0 => ErrorKind::Unknown,
            1 => ErrorKind::UnknownMethod,
            2 => ErrorKind::InvalidMessageType,
            3 => ErrorKind::WrongMethodName,
            4 => ErrorKind::BadSequenceId,
            5 => ErrorKind::MissingResult,
            6 => ErrorKind::Internal,
            7 => ErrorKind::Protocol,
            8 => ErrorKind::InvalidTransform,
            9 => ErrorKind::InvalidProtocol,
            10 => ErrorKind::UnsupportedClientType,
            t => ErrorKind::Other(t),
        }
    }
}

const fn row(kind: ErrorKind, name: &'static str, thrift: i32, grpc: u8) -> ErrorCodes {
    ErrorCodes {
        kind,
        name,
        thrift,
        grpc,
    }
}

impl From<ApplicationExceptionKind> for ErrorKind {
    fn from(k: ApplicationExceptionKind) -> ErrorKind {
        ErrorKind::from_thrift_type(k.to_i32())
    }
}

impl From<ErrorKind> for ApplicationExceptionKind {
    fn from(k: ErrorKind) -> ApplicationExceptionKind {
        ApplicationExceptionKind::from_i32(k.thrift_type())
    }
}

impl std::fmt::Display for ErrorKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ErrorKind::Other(t) => write!(f, "exception type {t}"),
            k => f.write_str(k.name()),
        }
    }
}

/// Which side of a call is describing it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Side {
    /// The server serving it.
    Server,
    /// The client making it.
    Client,
}

/// One call, described the same way on the server and on the client: what is called,
/// how, with whom, until when, and with which metadata.
#[derive(Debug, Clone, Copy)]
pub struct CallInfo<'a> {
    /// Which side describes the call.
    pub side: Side,
    /// The IDL service name.
    pub service: &'a str,
    /// The method name as called.
    pub method: &'a str,
    /// How the call is framed.
    pub transport: Transport,
    /// How it is encoded.
    pub payload: Payload,
    /// The other side's address, when known.
    pub peer: Option<SocketAddr>,
    /// The call's sequence id on its connection.
    pub seq_id: i32,
    /// Bytes of the request frame.
    pub request_bytes: usize,
    /// When the call started: on a server, the loop turn its frame arrived in; on a
    /// client, when it was made. A call's duration is measured from here.
    pub start: Instant,
    /// When the caller stops waiting, if it said.
    pub deadline: Option<Instant>,
    /// The TTHeader carrying the call's metadata (key/value headers), for TTHeader calls.
    /// On a server, the caller's trace context is there
    /// ([`TraceContext::from_ttheader`](crate::trace::TraceContext::from_ttheader)).
    pub headers: Option<&'a TTHeader>,
    /// On a client: the span the call is made within (the call being served, for a client
    /// made [`within`](crate::client::Client::within) it, or the one given to
    /// [`with_trace`](crate::client::Client::with_trace)), whose child it is. `None` on a
    /// server.
    pub trace: Option<&'a TraceContext>,
}

/// How a call ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Outcome {
    /// `None` when it succeeded, else the kind of failure.
    pub error: Option<ErrorKind>,
    /// Bytes of the reply frame (0 when there was none).
    pub response_bytes: usize,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grpc_codes_round_trip() {
        for code in 1..=16u8 {
            assert_eq!(ErrorKind::from_grpc_code(code).grpc_code(), code, "{code}");
        }
    }

    #[test]
    fn every_kind_has_one_row_and_thrift_types_round_trip() {
        for (i, r) in ErrorKind::TABLE.iter().enumerate() {
            assert_eq!(
                ErrorKind::TABLE.iter().filter(|x| x.kind == r.kind).count(),
                1,
                "{:?} twice",
                r.kind
            );
            assert!(!r.name.is_empty(), "row {i}");
        }
        for t in 0..=10 {
            assert_eq!(ErrorKind::from_thrift_type(t).thrift_type(), t);
        }
        assert_eq!(ErrorKind::from_thrift_type(99), ErrorKind::Other(99));
        assert_eq!(ErrorKind::Other(99).thrift_type(), 99);
        assert_eq!(ErrorKind::DeadlineExceeded.grpc_code(), 4);
        assert_eq!(ErrorKind::UnknownMethod.grpc_code(), 12);
        assert_eq!(ErrorKind::Unavailable.grpc_code(), 14);
        let k: ErrorKind = ApplicationExceptionKind::ProtocolError.into();
        assert_eq!(k, ErrorKind::Protocol);
    }
}
