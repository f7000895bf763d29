//! Thrift (binary, compact) and Kitex Protobuf messages in length-prefixed frames
//! (Framed, Buffered, TTHeader, Kitex Protobuf), decoded in place; and HTTP/2's frames and
//! HPACK, for gRPC ([`h2`]).
//!
//! This crate knows nothing of sockets: bytes in, frames and messages out. Decoded strings
//! and binaries are zero-copy views ([`ByteString`], [`bytes::Bytes`]) of the receive
//! buffer. No input makes a decoder panic: every length is checked against the bytes left
//! before use, nesting is limited, and errors are typed.
#![forbid(unsafe_code)]
#![deny(missing_docs, missing_debug_implementations)]

pub use bytes;

mod byte_string;
pub mod envelope;
pub mod frame;
pub mod h2;
pub mod thrift;

pub use byte_string::ByteString;
