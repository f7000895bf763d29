//! Small implementations of the framework's extension points, each the smallest that
//! shows the trait at work (the real ones come with service governance and observability):
//!
//! - [`framing::MagicFraming`]: a protocol of our own, served on the same port as the
//!   built-in ones and detected the same way ([`netpoll_rpc::server::Framing`]).
//! - [`middleware::CallStats`] and [`middleware::Deny`]: code around every call of a
//!   server or client ([`netpoll_rpc::Middleware`]).
//! - [`discovery::HostPorts`] and [`discovery::RoundRobin`]: finding a service's
//!   instances and choosing one per call ([`netpoll_rpc::discovery`]).

pub mod discovery;
pub mod framing;
pub mod middleware;
