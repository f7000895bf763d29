//! The generated argument and result structs against bytes a Volo client and
//! server really exchanged (`codec/tests/fixtures/volo/`):
//! every call and reply decodes to the values the Volo peer sent, and
//! survives our re-encoding, over both TTHeader (Volo's default) and Framed.

use std::path::Path;

use super::*;
use interop::{
    InteropDelayedEchoArgs, InteropDelayedEchoResult, InteropFailWithArgs, InteropFailWithResult,
    InteropFireArgs, InteropFiredTotalArgs, InteropFiredTotalResult, InteropPingArgs,
    InteropPingResult, InteropRoundtripArgs, InteropRoundtripResult,
};

const CALL: u32 = 1;
const REPLY: u32 = 2;
const ONEWAY: u32 = 4;

/// `(message type, method name, body)` of each message in a captured stream, split with
/// codec's own framing (TTHeader or Framed, detected from the first bytes).
fn messages(file: &str) -> Vec<(u32, String, Bytes)> {
    use netpoll_codec::frame::{self, Protocol, Split, TTHeader};
    use netpoll_codec::thrift::ProtocolRead;
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../codec/tests/fixtures/volo")
        .join(file);
    let data = Bytes::from(
        std::fs::read(&path).unwrap_or_else(|e| panic!("fixture {}: {e}", path.display())),
    );
    let proto = frame::detect(&data)
        .expect("a known protocol")
        .expect("enough bytes");
    let mut rest = data;
    let mut out = Vec::new();
    while !rest.is_empty() {
        let Split::Frame(n) =
            frame::split(proto, &rest, frame::DEFAULT_MAX_FRAME).expect("a valid frame")
        else {
            panic!("{file} ends inside a frame");
        };
        let f = rest.split_to(n);
        let msg = match proto {
            Protocol::TTHeader => TTHeader::parse(f)
                .expect("a valid TTHeader frame")
                .message(),
            Protocol::FramedBinary => f.slice(4..),
            other => panic!("{file}: unexpected protocol {other:?}"),
        };
        let mut r = netpoll_codec::thrift::BinaryReader::new(msg.clone());
        let h = r
            .read_message_begin()
            .expect("a strict binary message header");
        out.push((h.kind as u32, h.name.to_string(), msg.slice(r.position()..)));
    }
    out
}

/// Decodes `body` as `M`, and checks our encoding of it decodes the same.
fn decode<M: Message + PartialEq + std::fmt::Debug>(body: Bytes) -> M {
    let value: M = from_binary(body).expect("Volo's bytes decode");
    assert_eq!(from_binary::<M>(binary(&value)).as_ref(), Ok(&value));
    assert_eq!(from_compact::<M>(compact(&value)).as_ref(), Ok(&value));
    value
}

#[test]
fn volo_interop_calls_and_replies_decode() {
    for transport in ["framed", "ttheader"] {
        interop_calls_and_replies_decode(
            messages(&format!("volo-{transport}-interop-conn0.request.bin")),
            messages(&format!("volo-{transport}-interop-conn0.reply.bin")),
        );
    }
}

fn interop_calls_and_replies_decode(
    calls: Vec<(u32, String, Bytes)>,
    replies: Vec<(u32, String, Bytes)>,
) {
    let full = super::apache::canonical().swap_remove(0);
    let mut roundtrips = Vec::new();
    let mut fail_codes = Vec::new();
    let mut fires = Vec::new();
    for (mtype, name, body) in calls {
        match (mtype, name.as_str()) {
            (CALL, "roundtrip") => roundtrips.push(decode::<InteropRoundtripArgs>(body).v),
            (CALL, "fail_with") => fail_codes.push(decode::<InteropFailWithArgs>(body).code),
            (CALL, "delayed_echo") => drop(decode::<InteropDelayedEchoArgs>(body)),
            (CALL, "ping") => assert_eq!(decode::<InteropPingArgs>(body), InteropPingArgs {}),
            (CALL, "fired_total") => drop(decode::<InteropFiredTotalArgs>(body)),
            (ONEWAY, "fire") => fires.push(decode::<InteropFireArgs>(body).x),
            other => panic!("unexpected call {other:?}"),
        }
    }
    assert_eq!(roundtrips, vec![full.clone(), AllTypes::default()]);
    assert_eq!(fail_codes, vec![0, 7]);
    assert_eq!(fires, vec![5, -2]);

    let mut echoed = Vec::new();
    let mut failures = Vec::new();
    for (mtype, name, body) in replies {
        assert_eq!(mtype, REPLY, "{name}");
        match name.as_str() {
            "roundtrip" => {
                let r = decode::<InteropRoundtripResult>(body);
                echoed.push(r.success.expect("roundtrip returns a value"));
            }
            "fail_with" => failures.push(decode::<InteropFailWithResult>(body)),
            "delayed_echo" => assert!(decode::<InteropDelayedEchoResult>(body).success.is_some()),
            "ping" => assert_eq!(decode::<InteropPingResult>(body), InteropPingResult {}),
            "fired_total" => {
                assert!(decode::<InteropFiredTotalResult>(body).success.is_some());
            }
            other => panic!("unexpected reply {other}"),
        }
    }
    assert_eq!(echoed, vec![full, AllTypes::default()]);
    assert_eq!(failures.len(), 2);
    assert_eq!(failures[0].success, Some(0));
    assert_eq!(failures[0].err, None);
    assert_eq!(failures[1].success, None);
    let err = failures[1].err.as_ref().expect("fail_with(7) throws");
    assert_eq!(err.code, 7);
    assert_eq!(&*err.message, "boom");
}

#[test]
fn volo_echo_calls_and_replies_decode() {
    for transport in ["framed", "ttheader"] {
        echo_calls_and_replies_decode(
            messages(&format!("volo-{transport}-echo-conn0.request.bin")),
            messages(&format!("volo-{transport}-echo-conn0.reply.bin")),
        );
    }
}

fn echo_calls_and_replies_decode(
    calls: Vec<(u32, String, Bytes)>,
    replies: Vec<(u32, String, Bytes)>,
) {
    assert_eq!(calls.len(), replies.len());
    let mut sizes = Vec::new();
    for ((_, call_name, call), (_, reply_name, reply)) in calls.into_iter().zip(replies) {
        assert_eq!((call_name.as_str(), reply_name.as_str()), ("echo", "echo"));
        let args = decode::<echo::EchoEchoArgs>(call);
        let result = decode::<echo::EchoEchoResult>(reply);
        assert_eq!(result.success.as_ref(), Some(&args.msg));
        sizes.push(args.msg.len());
    }
    sizes.sort_unstable();
    assert_eq!(sizes, vec![0, 10, 20_000]);
}
