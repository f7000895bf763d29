//! Kitex-style RPC servers and clients generated from Thrift and Protobuf IDL, served on
//! `netpoll` through `codec`.
//!
//! - [`server`]: one port serves Framed, Buffered, TTHeader and Kitex Protobuf; handlers
//!   are synchronous functions on the core that owns the connection, and may reply later
//!   through a [`server::Deferred`] handle.
//! - [`client`]: a small pool of multiplexed connections per address, blocking calls from
//!   any thread and callback calls for pipelining, deadlines on the loop's timers.
//! - [`wire`]: envelopes (transport, payload encoding, ids) shared by both sides.
//!
//! Generated code (`codec-build` with services enabled) implements
//! [`server::Service`] and wraps [`client::ThriftClient`] / [`client::PbClient`].
#![forbid(unsafe_code)]
#![deny(missing_docs, missing_debug_implementations)]

pub mod balance;
mod call;
pub mod client;
pub mod discovery;
mod error;
mod http;
pub mod metrics;
mod middleware;
#[cfg(feature = "otel")]
pub mod otel;
pub mod registry;
pub mod server;
mod status;
#[cfg(feature = "tls")]
pub mod tls;
pub mod trace;
pub mod wire;

pub use call::{CallInfo, ErrorCodes, ErrorKind, Outcome, Side};
pub use error::{cause, reason, CallError, Cause, Reason};
pub use middleware::{Metadata, Middleware};
pub use server::{CallContext, Deferred, Reply};
pub use status::{Status, OVERLOADED_PREFIX};

/// Includes the code `codec-build` generated from a Thrift file into `OUT_DIR`: give
/// the module name (the file's `rs` namespace, or its stem). It declares `pub mod <name>`.
///
/// ```ignore
/// netpoll_rpc::include_thrift!("echo"); // pub mod echo { ... }
/// ```
#[macro_export]
macro_rules! include_thrift {
    ($module:literal) => {
        include!(concat!(env!("OUT_DIR"), "/", $module, ".rs"));
    };
}

/// Includes the code `codec-build` generated for a Protobuf package into `OUT_DIR` (or
/// into a directory under it: `"dir/package"`), in the manner of tonic's `include_proto!`.
///
/// ```ignore
/// pub mod hello {
///     netpoll_rpc::include_proto!("hello");
/// }
/// ```
#[macro_export]
macro_rules! include_proto {
    ($package:literal) => {
        include!(concat!(env!("OUT_DIR"), "/", $package, ".rs"));
    };
}

/// Re-exports for generated code.
#[doc(hidden)]
pub mod __private {
    pub use bytes::{Bytes, BytesMut};
    pub use netpoll_codec;
    pub use prost;
}
