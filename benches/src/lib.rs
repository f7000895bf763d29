//! Load-test client (`rpc-bench`) and criterion comparisons with gRPC.
#![forbid(unsafe_code)]
#![deny(missing_docs)]
