//! The `rpc-bench` load generator and the comparisons with gRPC (tonic).
//!
//! [`load::run`] drives echo calls over netpoll connections from dedicated client cores,
//! in a closed loop (a fixed number of calls in flight per connection) or an open loop
//! (calls sent on a fixed schedule, latency measured from the intended send time so that
//! coordinated omission is corrected, as wrk2 does). Every reply is checked.
#![forbid(unsafe_code)]
#![deny(missing_docs)]

pub mod echo;
pub mod governed;
pub mod grpc_echo;
pub mod load;
pub mod plot;
pub mod protocol;
pub mod tonic_echo;
pub mod wire_echo;
