//! Kitex-style RPC servers and clients generated from Thrift and Protobuf IDL,
//! served on `netpoll` through `codec`. Under construction: see the issues.
#![forbid(unsafe_code)]
#![deny(missing_docs, missing_debug_implementations)]
