//! Kitex-style RPC servers and clients generated from Thrift and Protobuf IDL, served on
//! `netpoll` through `codec`.
//!
//! Under construction. What exists: the client transport ([`client::Channel`]): a small
//! pool of connections per address on netpoll cores, calls multiplexed by sequence id,
//! per-call deadlines enforced by the loop's timers (a late reply is dropped), reconnect
//! after failure, blocking calls from any thread and callback calls for pipelining.
#![forbid(unsafe_code)]
#![deny(missing_docs, missing_debug_implementations)]

pub mod client;
mod error;

pub use error::CallError;
