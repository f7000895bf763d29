//! HTTP/2 as gRPC uses it, without I/O: frames ([`frame`]), what both ends of a
//! connection check alike ([`conn`]), header compression
//! ([`hpack`], with its [`huffman`] code), and gRPC's length-prefixed messages
//! ([`grpc`]). Frames are split off the receive buffer in place; their payloads are views
//! of it.

pub mod conn;
pub mod frame;
pub mod grpc;
pub mod hpack;
pub mod huffman;
