//! The generated argument and result structs against bytes a Volo client and
//! server really exchanged (`codec/tests/fixtures/volo/`, Framed transport):
//! every call and reply decodes to the values the Volo peer sent, and
//! survives our re-encoding. Skipped, saying so, if the fixtures are absent.

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

/// `(message type, method name, body)` of each Framed strict-binary message.
fn messages(file: &str) -> Option<Vec<(u32, String, Bytes)>> {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../codec/tests/fixtures/volo")
        .join(file);
    let Ok(data) = std::fs::read(&path) else {
        eprintln!("skipped: no fixture {}", path.display());
        return None;
    };
    let mut data = Bytes::from(data);
    let mut out = Vec::new();
    let be32 = |b: &mut Bytes| u32::from_be_bytes(b.split_to(4)[..].try_into().expect("4 bytes"));
    while !data.is_empty() {
        let len = be32(&mut data) as usize;
        let mut msg = data.split_to(len);
        let version = be32(&mut msg);
        assert_eq!(version & 0xffff_0000, 0x8001_0000, "strict binary");
        let name_len = be32(&mut msg) as usize;
        let name = String::from_utf8(msg.split_to(name_len).to_vec()).expect("utf-8 name");
        let _seq = be32(&mut msg);
        out.push((version & 0xff, name, msg));
    }
    Some(out)
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
    let (Some(calls), Some(replies)) = (
        messages("volo-framed-interop-conn0.request.bin"),
        messages("volo-framed-interop-conn0.reply.bin"),
    ) else {
        return;
    };
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
    let (Some(calls), Some(replies)) = (
        messages("volo-framed-echo-conn0.request.bin"),
        messages("volo-framed-echo-conn0.reply.bin"),
    ) else {
        return;
    };
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
