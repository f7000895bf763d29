//! Any bytes through what a server and a client run on a connection's input: protocol
//! detection, frame splitting (one-shot and incremental, which must agree), envelope
//! parsing down to the body, sequence-id peeks, TTHeader and Kitex Protobuf header parsing.
//! Errors are fine, panics are not.
#![no_main]

use bytes::Bytes;
use netpoll_codec::envelope;
use netpoll_codec::frame::{self, KitexPbHeader, Protocol, Split, Splitter, TTHeader};
use libfuzzer_sys::fuzz_target;

const PROTOCOLS: [Protocol; 6] = [
    Protocol::FramedBinary,
    Protocol::FramedCompact,
    Protocol::TTHeader,
    Protocol::KitexProtobuf,
    Protocol::BufferedBinary,
    Protocol::BufferedCompact,
];

fuzz_target!(|data: &[u8]| {
    let _ = frame::detect(data);
    // The first byte chooses where an incremental split cuts the input in two.
    let cut = data.first().map_or(0, |b| *b as usize).min(data.len());
    for p in PROTOCOLS {
        let whole = frame::split(p, data, 1 << 20);
        if let Ok(Split::Frame(n)) = whole {
            assert!(n <= data.len(), "a frame cannot be longer than the input");
            let f = Bytes::copy_from_slice(&data[..n]);
            // What the server does with a whole frame, and what the client peeks.
            let _ = envelope::peek_seq_id(p, &f);
            if let Ok(parsed) = envelope::parse(p, f) {
                assert!(parsed.body.len() <= n);
            }
        }
        if let Ok(Split::NeedMore(need)) = whole {
            assert!(need == 0 || need > data.len(), "need {need} of {}", data.len());
        }
        // Incrementally, as a connection receives it: the same answer at the end.
        let mut s = Splitter::default();
        let first = s.split(p, &data[..cut], 1 << 20);
        let resumed = match first {
            Ok(Split::NeedMore(_)) => s.split(p, data, 1 << 20),
            _ => Splitter::default().split(p, data, 1 << 20),
        };
        match (&whole, &resumed) {
            (Ok(a), Ok(b)) => assert_eq!(a, b, "{p:?}: one-shot and incremental disagree"),
            (Err(_), Err(_)) => {}
            (a, b) => panic!("{p:?}: one-shot {a:?}, incremental {b:?}"),
        }
    }
    let bytes = Bytes::copy_from_slice(data);
    if let Ok(h) = TTHeader::parse(bytes.clone()) {
        let _ = h.int_headers().count();
        let _ = h.str_headers().count();
        let _ = h.acl_token();
        let _ = h.message();
        let _ = h.rpc_timeout();
    }
    let _ = frame::has_str_header(&bytes, frame::str_key::CONNECTION_RESET);
    let _ = KitexPbHeader::parse(&bytes);
    let _ = KitexPbHeader::peek_seq_id(data);
    // Read in place, a message the parser takes says the same; what the reader in place
    // refuses, the parser refuses too (it also checks the name is UTF-8).
    let parsed = KitexPbHeader::parse_message(bytes.clone())
        .ok()
        .map(|(h, b)| (h.kind, h.seq_id, b.to_vec()));
    let split = KitexPbHeader::split_message(data)
        .ok()
        .map(|(k, s, b)| (k, s, b.to_vec()));
    assert!(parsed.is_none() || parsed == split);
    assert!(split.is_some() || parsed.is_none());
});
