//! Messages on the wire, as `codec` reads and writes them ([`netpoll_codec::envelope`]), plus
//! [`write_status`]: an error reply carrying a [`crate::Status`].

pub use netpoll_codec::envelope::{
    decode_thrift, parse, parse_message, peek_seq_id, write_pb, write_thrift, Envelope, Headers,
    Parsed, Payload, Transport, WireError, WriteError,
};

use bytes::BytesMut;
use netpoll_codec::frame;
use netpoll_codec::thrift::MessageType;

use crate::Status;

/// A status on the gRPC transport: Kitex's `ErrorProto` plus the gRPC status code
/// (field 3), so that the code survives the trip through the service layer.
#[derive(Clone, PartialEq, prost::Message)]
pub(crate) struct GrpcStatus {
    /// The Thrift exception type (as `ErrorProto`).
    #[prost(int32, tag = "1")]
    pub type_id: i32,
    /// The message.
    #[prost(string, tag = "2")]
    pub message: String,
    /// The gRPC status code.
    #[prost(uint32, tag = "3")]
    pub code: u32,
}

/// Appends an EXCEPTION reply carrying `status`: a `TApplicationException` for Thrift, an
/// `ErrorProto` for Kitex Protobuf.
pub fn write_status(env: &Envelope, out: &mut BytesMut, status: &Status, h: &Headers<'_>) {
    let r = if env.payload.is_thrift() {
        write_thrift(env, out, MessageType::Exception, &status.to_exception(), h)
    } else if env.transport == Transport::Custom(crate::server::GRPC_TRANSPORT) {
        // Read back into trailers by the gRPC connection, which needs the exact code.
        let e = GrpcStatus {
            type_id: status.kind().thrift_type(),
            message: status.message().to_owned(),
            code: u32::from(status.kind().grpc_code()),
        };
        write_pb(env, out, MessageType::Exception, &e, h)
    } else {
        let e = frame::ErrorProto {
            type_id: status.kind().thrift_type(),
            message: status.message().to_owned(),
        };
        write_pb(env, out, MessageType::Exception, &e, h)
    };
    // An exception is small and well-formed: only an absurd message could fail.
    debug_assert!(r.is_ok(), "writing a status failed: {r:?}");
}

/// Appends `msg` behind its gRPC prefix, gzip-compressed if `gzip`; the bytes appended.
pub(crate) fn frame_grpc_message<M: prost::Message>(
    msg: &M,
    gzip: bool,
    out: &mut BytesMut,
) -> usize {
    use netpoll_codec::h2::grpc;
    let len = msg.encoded_len();
    if gzip {
        let mut plain = Vec::with_capacity(len);
        // A Vec grows as needed: encoding cannot fail.
        let _ = msg.encode(&mut plain);
        let mut z = Vec::new();
        grpc::gzip(&plain, &mut z);
        out.reserve(grpc::PREFIX_LEN + z.len());
        grpc::write_prefix(out, true, z.len());
        out.extend_from_slice(&z);
        return grpc::PREFIX_LEN + z.len();
    }
    out.reserve(grpc::PREFIX_LEN + len);
    grpc::write_prefix(out, false, len);
    // The buffer has room for the whole message, reserved above.
    let _ = msg.encode(out);
    grpc::PREFIX_LEN + len
}

#[cfg(test)]
mod tests {
    use super::*;
    use netpoll_codec::ByteString;

    fn env(protocol: frame::Protocol) -> Envelope {
        let (transport, payload) = match protocol {
            frame::Protocol::FramedBinary => (Transport::Framed, Payload::ThriftBinary),
            _ => (Transport::KitexProtobuf, Payload::Protobuf),
        };
        Envelope {
            transport,
            payload,
            method: ByteString::from_static("m"),
            seq_id: 41,
            header_seq: 41,
            kind: MessageType::Call,
        }
    }

    #[test]
    fn protobuf_messages_round_trip() {
        let status = Status::unknown_method("nope");
        for transport in [
            Transport::KitexProtobuf,
            Transport::TTHeader {
                framed_payload: false,
            },
        ] {
            let env = Envelope {
                transport,
                ..env(frame::Protocol::KitexProtobuf)
            };
            let mut out = BytesMut::new();
            write_status(&env, &mut out, &status, &Headers::default());
            let p = match transport {
                Transport::KitexProtobuf => frame::Protocol::KitexProtobuf,
                _ => frame::Protocol::TTHeader,
            };
            let parsed = parse(p, out.freeze()).unwrap();
            assert_eq!(parsed.envelope.kind, MessageType::Exception);
            let e: frame::ErrorProto = prost::Message::decode(parsed.body).unwrap();
            assert_eq!(e.type_id, 1);
            assert_eq!(e.message, "nope");
        }
    }
}
