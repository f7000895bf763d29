//! Framing against bytes a Volo client and server really exchanged
//! (`tests/fixtures/volo/`, captured by `interop/volo-peer capture`), plus limits,
//! detection, hostile input and random chunking.

use bytes::{Bytes, BytesMut};
use netpoll_codec::frame::{
    self, int_key, FrameError, PayloadProtocol, Protocol, Split, TTHeader, TTHeaderBuilder,
};
use netpoll_codec::thrift::{BinaryReader, MessageType, ProtocolRead};
use proptest::prelude::*;

fn fixture(name: &str) -> Bytes {
    let path = format!("{}/tests/fixtures/volo/{name}", env!("CARGO_MANIFEST_DIR"));
    Bytes::from(std::fs::read(&path).unwrap_or_else(|e| panic!("{path}: {e}")))
}

/// Splits a whole stream into frames, checking the protocol the stream starts with.
fn frames(stream: &Bytes, expect: Protocol) -> Vec<Bytes> {
    let proto = frame::detect(stream)
        .expect("known protocol")
        .expect("enough bytes");
    assert_eq!(proto, expect);
    let mut rest = stream.clone();
    let mut out = Vec::new();
    while !rest.is_empty() {
        match frame::split(proto, &rest, frame::DEFAULT_MAX_FRAME).expect("valid frame") {
            Split::Frame(n) => out.push(rest.split_to(n)),
            Split::NeedMore(_) => panic!("stream ends inside a frame"),
        }
    }
    out
}

/// (message type, method, seq) of a Thrift message.
fn thrift_header(message: Bytes) -> (MessageType, String, i32) {
    let h = BinaryReader::new(message)
        .read_message_begin()
        .expect("message header");
    (h.kind, h.name.to_string(), h.seq_id)
}

#[test]
fn volo_ttheader_frames_parse_with_their_headers() {
    for service in ["echo", "interop"] {
        let requests = frames(
            &fixture(&format!("volo-ttheader-{service}-conn0.request.bin")),
            Protocol::TTHeader,
        );
        let replies = frames(
            &fixture(&format!("volo-ttheader-{service}-conn0.reply.bin")),
            Protocol::TTHeader,
        );
        assert!(!requests.is_empty());
        for f in &requests {
            let h = TTHeader::parse(f.clone()).expect("valid TTHeader");
            assert_eq!(h.payload_protocol(), PayloadProtocol::ThriftBinary);
            assert!(h.payload_framed(), "Volo sends TTHeader + Framed");
            let (kind, method, seq) = thrift_header(h.message());
            assert!(matches!(kind, MessageType::Call | MessageType::Oneway));
            assert_eq!(seq, h.seq_id(), "TTHeader and Thrift sequence ids agree");
            let to_method = h
                .int_header(int_key::TO_METHOD)
                .expect("Volo sends ToMethod");
            assert_eq!(&to_method[..], method.as_bytes());
            let isn = h.str_header("isn").expect("Volo sends isn");
            assert_eq!(
                &isn[..],
                if service == "echo" {
                    &b"Echo"[..]
                } else {
                    &b"Interop"[..]
                }
            );
            assert!(h.int_header(int_key::TO_SERVICE).is_some());
            assert!(h.int_header(12345).is_none());
            assert!(h.int_headers().count() >= 3);
        }
        // Every call but the oneway ones has its reply, in order on this connection.
        let calls: Vec<(String, i32)> = requests
            .iter()
            .map(|f| TTHeader::parse(f.clone()).expect("valid"))
            .map(|h| thrift_header(h.message()))
            .filter(|(k, _, _)| *k == MessageType::Call)
            .map(|(_, m, s)| (m, s))
            .collect();
        let answered: Vec<(String, i32)> = replies
            .iter()
            .map(|f| thrift_header(TTHeader::parse(f.clone()).expect("valid").message()))
            .map(|(k, m, s)| {
                assert_eq!(k, MessageType::Reply);
                (m, s)
            })
            .collect();
        assert_eq!(calls, answered, "{service}: replies answer the calls");
    }
}

#[test]
fn volo_framed_frames_split_and_carry_messages() {
    for service in ["echo", "interop"] {
        for dir in ["request", "reply"] {
            let fs = frames(
                &fixture(&format!("volo-framed-{service}-conn0.{dir}.bin")),
                Protocol::FramedBinary,
            );
            assert!(!fs.is_empty());
            for f in fs {
                let (kind, method, _) = thrift_header(f.slice(4..));
                assert!(!method.is_empty());
                assert_eq!(dir == "reply", kind == MessageType::Reply, "{method}");
            }
        }
    }
}

#[test]
fn ttheader_builder_round_trips_headers_and_payload() {
    let mut out = BytesMut::new();
    let ints: &[(u16, &[u8])] = &[
        (int_key::TO_METHOD, b"echo"),
        (int_key::RPC_TIMEOUT, b"250"),
    ];
    let strs: &[(&str, &[u8])] = &[("isn", b"Echo"), ("crrst", b"1")];
    let b = TTHeaderBuilder {
        seq_id: 42,
        flags: 1,
        protocol_id: 0,
        ints,
        strs,
    };
    let start = b.begin(&mut out).expect("header");
    let inner = frame::reserve_length(&mut out);
    out.extend_from_slice(b"\x80\x01\x00\x02\x00\x00\x00\x04echo\x00\x00\x00\x2a\x00");
    frame::patch_length(&mut out, inner).expect("inner length");
    TTHeaderBuilder::finish(&mut out, start).expect("length");
    let f = out.freeze();
    assert_eq!(frame::detect(&f).expect("ok"), Some(Protocol::TTHeader));
    assert_eq!(
        frame::split(Protocol::TTHeader, &f, 1 << 20).expect("ok"),
        Split::Frame(f.len())
    );
    let h = TTHeader::parse(f).expect("parse");
    assert_eq!((h.seq_id(), h.flags()), (42, 1));
    assert_eq!(
        h.int_header(int_key::RPC_TIMEOUT).as_deref(),
        Some(&b"250"[..])
    );
    assert_eq!(h.str_header("crrst").as_deref(), Some(&b"1"[..]));
    assert_eq!(h.str_headers().count(), 2);
    assert_eq!(
        thrift_header(h.message()),
        (MessageType::Reply, "echo".into(), 42)
    );
}

#[test]
fn detection_follows_the_wire_table() {
    assert_eq!(
        frame::detect(b"\x80\x01\x00\x01"),
        Ok(Some(Protocol::BufferedBinary))
    );
    assert_eq!(
        frame::detect(b"\x82\x21"),
        Ok(Some(Protocol::BufferedCompact))
    );
    assert_eq!(
        frame::detect(b"\x00\x00\x00\x10\x80\x01\x00\x01"),
        Ok(Some(Protocol::FramedBinary))
    );
    assert_eq!(
        frame::detect(b"\x00\x00\x00\x10\x82\x21\x01\x04"),
        Ok(Some(Protocol::FramedCompact))
    );
    assert_eq!(
        frame::detect(b"\x00\x00\x00\x10\x10\x00\x00\x00"),
        Ok(Some(Protocol::TTHeader))
    );
    assert_eq!(
        frame::detect(b"\x00\x00\x00\x10\x90\x01\x00\x01"),
        Ok(Some(Protocol::KitexProtobuf))
    );
    assert_eq!(
        frame::detect(b"PRI * HTTP/2.0\r\n"),
        Ok(Some(Protocol::Http2))
    );
    assert_eq!(frame::detect(b"PRI * HT"), Ok(None));
    assert_eq!(frame::detect(b"\x00\x00\x00"), Ok(None));
    assert!(matches!(
        frame::detect(b"GET / HTTP/1.1\r\n"),
        Err(FrameError::UnknownProtocol { .. })
    ));
}

#[test]
fn oversized_frames_are_refused_from_the_length_prefix() {
    // Only the length has arrived: refused before anything is buffered.
    let r = frame::split(Protocol::FramedBinary, b"\x01\x00\x00\x00", 16 << 20);
    assert_eq!(
        r,
        Err(FrameError::TooLarge {
            size: 4 + 0x0100_0000,
            max: 16 << 20
        })
    );
    let r = frame::split(Protocol::TTHeader, b"\x3f\xff\xff\xff\x10\x00", usize::MAX);
    assert_eq!(r, Err(FrameError::BadLength(0x3fff_ffff)));
    assert_eq!(
        frame::split(Protocol::FramedBinary, b"\x00\x00", 100),
        Ok(Split::NeedMore(4))
    );
    assert_eq!(
        frame::split(Protocol::FramedBinary, b"\x00\x00\x00\x08abc", 100),
        Ok(Split::NeedMore(12))
    );
}

#[test]
fn buffered_messages_split_by_parsing() {
    let call = b"\x80\x01\x00\x01\x00\x00\x00\x04ping\x00\x00\x00\x01\x00";
    let mut two = call.to_vec();
    two.extend_from_slice(call);
    assert_eq!(
        frame::split(Protocol::BufferedBinary, &two, 1 << 20),
        Ok(Split::Frame(call.len()))
    );
    // Unframed: the answer is "need more", with a lower bound on the message's length.
    for cut in 0..call.len() {
        match frame::split(Protocol::BufferedBinary, &call[..cut], 1 << 20) {
            Ok(Split::NeedMore(n)) => assert!(n > cut && n <= call.len(), "cut {cut}: {n}"),
            other => panic!("cut {cut}: {other:?}"),
        }
    }
    let bad = b"\x80\x01\x00\x01\x00\x00\x00\x04ping\x00\x00\x00\x01\x07";
    assert!(matches!(
        frame::split(Protocol::BufferedBinary, bad, 1 << 20),
        Err(FrameError::Malformed(_))
    ));
}

#[test]
fn hostile_ttheader_frames_are_errors() {
    let good = frames(
        &fixture("volo-ttheader-interop-conn0.request.bin"),
        Protocol::TTHeader,
    )[0]
    .clone();
    for cut in 0..good.len() {
        // A frame whose LENGTH is patched to the truncated size must not parse.
        let mut f = good[..cut.max(4)].to_vec();
        let len = (f.len() - 4) as u32;
        f[..4].copy_from_slice(&len.to_be_bytes());
        let _ = TTHeader::parse(Bytes::from(f));
    }
    let mut f = good.to_vec();
    f[12] = 0xff; // header size past the frame
    assert!(TTHeader::parse(Bytes::from(f)).is_err());
    let mut f = good.to_vec();
    f[16] = 0x7e; // unknown info block
    assert!(matches!(
        TTHeader::parse(Bytes::from(f)),
        Err(FrameError::BadHeader { .. })
    ));
}

proptest! {
    #[test]
    fn random_chunking_yields_the_same_frames(cuts in proptest::collection::vec(1usize..300, 1..200)) {
        let stream = fixture("volo-ttheader-interop-conn0.request.bin");
        let whole = frames(&stream, Protocol::TTHeader);
        // Feed the stream in chunks, as a connection would receive it.
        let mut got = Vec::new();
        let mut buf = BytesMut::new();
        let mut pos = 0;
        let mut i = 0;
        while pos < stream.len() {
            let n = cuts[i % cuts.len()].min(stream.len() - pos);
            buf.extend_from_slice(&stream[pos..pos + n]);
            pos += n;
            i += 1;
            while let Split::Frame(len) = frame::split(Protocol::TTHeader, &buf, frame::DEFAULT_MAX_FRAME).expect("valid") {
                got.push(buf.split_to(len).freeze());
            }
        }
        prop_assert_eq!(got, whole);
    }

    #[test]
    fn random_bytes_never_panic(data in proptest::collection::vec(any::<u8>(), 0..400)) {
        let _ = frame::detect(&data);
        for p in [Protocol::FramedBinary, Protocol::TTHeader, Protocol::BufferedBinary, Protocol::BufferedCompact, Protocol::KitexProtobuf] {
            let _ = frame::split(p, &data, 1 << 16);
        }
        let b = Bytes::from(data);
        let _ = TTHeader::parse(b.clone());
        let _ = netpoll_codec::frame::KitexPbHeader::parse(&b);
    }
}

#[test]
fn kitex_protobuf_frames_round_trip() {
    use netpoll_codec::frame::{ErrorProto, KitexPbHeader};
    use prost::Message;
    let header = KitexPbHeader {
        kind: MessageType::Exception,
        method: "Echo".into(),
        seq_id: 9,
    };
    let body = ErrorProto {
        type_id: 1,
        message: "unknown method Echo".into(),
    };
    let mut out = BytesMut::new();
    header.encode(&mut out, &body).expect("encode");
    let f = out.freeze();
    assert_eq!(frame::detect(&f), Ok(Some(Protocol::KitexProtobuf)));
    assert_eq!(
        frame::split(Protocol::KitexProtobuf, &f, 1 << 20),
        Ok(Split::Frame(f.len()))
    );
    let (h, pb) = KitexPbHeader::parse(&f).expect("parse");
    assert_eq!(h, header);
    assert_eq!(ErrorProto::decode(pb).expect("protobuf"), body);
    let mut short = f.to_vec();
    short.truncate(10);
    assert!(KitexPbHeader::parse(&Bytes::from(short)).is_err());
}

/// `echo.proto`'s request, with `bytes` fields as `bytes::Bytes` (prost-build's `bytes`
/// option generates the same).
#[derive(Clone, PartialEq, prost::Message)]
struct EchoRequest {
    #[prost(bytes = "bytes", tag = "1")]
    msg: Bytes,
}

#[test]
fn protobuf_bytes_fields_borrow_from_the_frame() {
    use netpoll_codec::frame::KitexPbHeader;
    use prost::Message;
    let header = KitexPbHeader {
        kind: MessageType::Call,
        method: "Echo".into(),
        seq_id: 1,
    };
    let mut out = BytesMut::new();
    header
        .encode(
            &mut out,
            &EchoRequest {
                msg: Bytes::from(vec![7u8; 4096]),
            },
        )
        .expect("encode");
    let frame = out.freeze();
    let (_, body) = KitexPbHeader::parse(&frame).expect("parse");
    let req = EchoRequest::decode(body).expect("decode");
    assert_eq!(req.msg.len(), 4096);
    let range = frame.as_ptr_range();
    assert!(
        range.contains(&req.msg.as_ptr()),
        "the decoded bytes are a view of the frame, not a copy"
    );
}
