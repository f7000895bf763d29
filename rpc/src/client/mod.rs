//! Clients. [`Client`] (generic over [`Thrift`] or [`Protobuf`] payloads) is the typed
//! client generated service clients wrap; [`Channel`] below it is the protocol-agnostic
//! transport: connection pools on netpoll cores, calls multiplexed by sequence id,
//! deadlines on the loop's timers, with a [`ReplyFraming`] to find reply frames.

mod channel;
mod cluster;
mod conn;
mod framing;
mod grpc;
mod percore;
mod policy;
mod seqtable;
mod stream;
mod typed;

pub use channel::{Channel, ChannelConfig};
pub use conn::{Done, Encode};
pub use framing::{FrameReplies, KitexPbFraming, ReplyFraming, ReplySplit, ThriftFraming};
pub use grpc::GrpcTarget;
pub use policy::{BreakerConfig, RetryOn, RetryPolicy};
pub use stream::{ClientStream, StreamEvent, RECV_QUEUE, SEND_QUEUE};
pub use typed::{
    CallFuture, Client, ClientBuilder, ClientError, ClientTransport, PayloadCodec, PbClient,
    Protobuf, Request, Response, Thrift, ThriftClient, BACKWARD_PREFIX, PERSIST_PREFIX,
    TRANSIT_PREFIX,
};
