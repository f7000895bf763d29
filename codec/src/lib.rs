//! Thrift (binary, compact) and Kitex Protobuf messages in length-prefixed
//! frames (Framed, Buffered, TTHeader, Kitex Protobuf), decoded in place.
//!
//! This crate knows nothing of sockets: bytes in, frames and messages out.
#![forbid(unsafe_code)]
#![deny(missing_docs, missing_debug_implementations)]
