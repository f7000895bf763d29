//! Thrift reply framing on the replies a Volo server really sent.

use netpoll_rpc::client::{ReplyFraming, ReplySplit, ThriftFraming};

fn fixture(name: &str) -> Vec<u8> {
    let path = format!(
        "{}/../codec/tests/fixtures/volo/{name}",
        env!("CARGO_MANIFEST_DIR")
    );
    std::fs::read(&path).unwrap_or_else(|e| panic!("{path}: {e}"))
}

fn seqs(framing: &ThriftFraming, mut stream: &[u8]) -> Vec<i32> {
    let mut out = Vec::new();
    while !stream.is_empty() {
        match framing.split(stream) {
            ReplySplit::Reply { len, seq } => {
                out.push(seq);
                stream = &stream[len..];
            }
            other => panic!("unexpected {other:?}"),
        }
    }
    out
}

#[test]
fn volo_replies_split_with_their_sequence_ids() {
    for (file, framing) in [
        (
            "volo-ttheader-interop-conn0.reply.bin",
            ThriftFraming::ttheader(1 << 20),
        ),
        (
            "volo-framed-interop-conn0.reply.bin",
            ThriftFraming::framed_binary(1 << 20),
        ),
    ] {
        let s = seqs(&framing, &fixture(file));
        assert!(s.len() >= 8, "{file}: {s:?}");
        // One connection, calls made one after another: increasing sequence ids.
        assert!(s.windows(2).all(|w| w[0] < w[1]), "{file}: {s:?}");
    }
}

#[test]
fn partial_and_oversized_replies() {
    let reply = fixture("volo-framed-echo-conn0.reply.bin");
    let f = ThriftFraming::framed_binary(1 << 20);
    assert!(matches!(f.split(&reply[..3]), ReplySplit::NeedMore(4)));
    assert!(matches!(f.split(&reply[..10]), ReplySplit::NeedMore(n) if n > 10));
    let tiny = ThriftFraming::framed_binary(64);
    // The 20,000-byte echo reply is over a 64-byte limit.
    let mut stream = &reply[..];
    let mut saw_too_large = false;
    while !stream.is_empty() {
        match tiny.split(stream) {
            ReplySplit::Reply { len, .. } => stream = &stream[len..],
            ReplySplit::Invalid(_) => {
                saw_too_large = true;
                break;
            }
            ReplySplit::NeedMore(_) => panic!("whole stream given"),
        }
    }
    assert!(saw_too_large);
    assert!(matches!(
        f.split(b"\x00\x00\x00\x04\xde\xad\xbe\xef"),
        ReplySplit::Invalid(_)
    ));
}

#[test]
fn compact_and_versionless_headers_give_their_sequence_ids() {
    use netpoll_codec::thrift::{
        ApplicationException, ApplicationExceptionKind, MessageHeader, MessageType,
    };
    let header = MessageHeader {
        name: "echo".into(),
        kind: MessageType::Exception,
        seq_id: 300,
    };
    let body = ApplicationException::new(ApplicationExceptionKind::UnknownMethod, "no");
    let mut out = bytes::BytesMut::new();
    netpoll_codec::frame::encode_framed(&mut out, &header, &body, true).expect("encode");
    let f = ThriftFraming::framed_compact(1 << 20);
    assert!(matches!(f.split(&out), ReplySplit::Reply { len, seq: 300 } if len == out.len()));
    // Versionless binary: name length, name, type byte, sequence id, then the struct.
    let old: &[u8] = b"\x00\x00\x00\x0e\x00\x00\x00\x04echo\x02\x00\x00\x00\x07\x00";
    let f = ThriftFraming::framed_binary(1 << 20);
    assert!(matches!(
        f.split(old),
        ReplySplit::Reply { len: 18, seq: 7 }
    ));
}
