//! Clients. [`ThriftClient`] and [`PbClient`] are the typed clients generated service
//! clients wrap; [`Channel`] below them is the protocol-agnostic transport: connection
//! pools on netpoll cores, calls multiplexed by sequence id, deadlines on the loop's
//! timers, with a [`ReplyFraming`] to find reply frames.

mod channel;
mod conn;
mod framing;
mod pb_framing;
mod thrift_framing;
mod typed;

pub use channel::{Channel, ChannelConfig};
pub use conn::{Done, Encode};
pub use framing::{ReplyFraming, ReplySplit};
pub use pb_framing::KitexPbFraming;
pub use thrift_framing::ThriftFraming;
pub use typed::{ClientBuilder, ClientError, ClientTransport, PbClient, ThriftClient};
