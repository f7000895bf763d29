//! The client transport: connection pools on netpoll cores, calls multiplexed by sequence
//! id, deadlines on the loop's timers. Protocol-agnostic: a [`ReplyFraming`] finds reply
//! frames; callers encode requests and decode replies.

mod channel;
mod conn;
mod framing;
mod thrift_framing;

pub use channel::{Channel, ChannelConfig};
pub use conn::{Done, Encode};
pub use framing::{ReplyFraming, ReplySplit};
pub use thrift_framing::ThriftFraming;
