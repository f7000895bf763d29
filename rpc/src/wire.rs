//! Messages on the wire, as `codec` reads and writes them ([`netpoll_codec::envelope`]), plus
//! [`write_status`]: an error reply carrying a [`crate::Status`].

pub use netpoll_codec::envelope::{
    decode_thrift, parse, parse_message, peek_seq_id, write_thrift, Envelope, Headers, Parsed,
    Payload, Transport, WireError, WriteError,
};

/// Appends a Protobuf message in `env`'s shape (`netpoll_codec::envelope::write_pb`). A
/// reply on the gRPC transport is first preceded by the metadata it sends back (its
/// `RPC_BACKWARD_*` headers, which the gRPC connection sends as response metadata).
pub fn write_pb<M: prost::Message>(
    env: &Envelope,
    out: &mut BytesMut,
    kind: MessageType,
    body: &M,
    h: &Headers<'_>,
) -> Result<(), WriteError> {
    if env.transport == Transport::Custom(crate::server::GRPC_TRANSPORT) {
        write_grpc_meta(out, h);
    }
    netpoll_codec::envelope::write_pb(env, out, kind, body, h)
}

/// The metadata section of a gRPC reply between the service layer and the connection: a
/// count, then each name (without `RPC_BACKWARD_`) and value, length-prefixed.
fn write_grpc_meta(out: &mut BytesMut, h: &Headers<'_>) {
    use bytes::BufMut;
    let back = || {
        h.strs.iter().filter_map(|(k, v)| {
            k.strip_prefix(crate::client::BACKWARD_PREFIX)
                .map(|k| (k, *v))
        })
    };
    out.put_u16(back().count().min(usize::from(u16::MAX)) as u16);
    for (k, v) in back().take(usize::from(u16::MAX)) {
        out.put_u16(k.len() as u16);
        out.put_slice(k.as_bytes());
        out.put_u32(v.len() as u32);
        out.put_slice(v);
    }
}

/// The metadata a gRPC reply sends back: names and values, read in place.
pub(crate) type ReplyMeta<'a> = Vec<(std::borrow::Cow<'a, str>, &'a [u8])>;

/// Splits a gRPC reply into the metadata it sends back and its message, in place.
pub(crate) fn read_grpc_meta(mut reply: &[u8]) -> Option<(ReplyMeta<'_>, &[u8])> {
    fn take<'a>(b: &mut &'a [u8], n: usize) -> Option<&'a [u8]> {
        let (head, rest) = b.split_at_checked(n)?;
        *b = rest;
        Some(head)
    }
    let n = u16::from_be_bytes(take(&mut reply, 2)?.try_into().ok()?);
    let mut meta = Vec::new();
    for _ in 0..n {
        let kl = usize::from(u16::from_be_bytes(take(&mut reply, 2)?.try_into().ok()?));
        let k = String::from_utf8_lossy(take(&mut reply, kl)?);
        let vl = u32::from_be_bytes(take(&mut reply, 4)?.try_into().ok()?) as usize;
        meta.push((k, take(&mut reply, vl)?));
    }
    Some((meta, reply))
}

/// Metadata as it may travel in HTTP/2: a valid lower-case name that neither HTTP/2 nor
/// gRPC reserves, and a value in base64 for `-bin` names or printable ASCII otherwise;
/// `None` when it cannot.
pub(crate) fn grpc_metadata(name: &str, v: &[u8]) -> Option<(String, Vec<u8>)> {
    let name = name.to_ascii_lowercase();
    let valid = !name.is_empty()
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"-_.".contains(&b));
    let reserved = name.starts_with("grpc-")
        || [
            "te",
            "content-type",
            "user-agent",
            "connection",
            "host",
            "keep-alive",
            "proxy-connection",
            "transfer-encoding",
            "upgrade",
        ]
        .contains(&name.as_str());
    if !valid || reserved {
        return None;
    }
    if name.ends_with("-bin") {
        let v = netpoll_codec::h2::grpc::base64_encode(v).into_bytes();
        return Some((name, v));
    }
    v.iter()
        .all(|b| (0x20..0x7f).contains(b))
        .then(|| (name, v.to_vec()))
}

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
    /// The status details (`grpc-status-details-bin`), if any.
    #[prost(bytes = "bytes", tag = "4")]
    pub details: bytes::Bytes,
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
            details: status
                .details()
                .map(bytes::Bytes::copy_from_slice)
                .unwrap_or_default(),
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
