//! Any bytes through the HTTP/2 layer a gRPC connection runs: frame splitting and payload
//! reading, HPACK decoding (one decoder across blocks, so the dynamic table carries state
//! from one to the next, with small table and list limits), Huffman strings, gRPC message
//! prefixes and timeouts. Errors are fine, panics are not; the list limit must hold.
#![no_main]

use libfuzzer_sys::fuzz_target;
use netpoll_codec::h2::{frame, grpc, hpack, huffman};

fuzz_target!(|data: &[u8]| {
    let mut at = 0;
    while let Ok(frame::Split::Frame(h, n)) = frame::split(&data[at..], 1 << 14) {
        let payload = &data[at + frame::HEADER_LEN..at + n];
        let _ = frame::content(&h, payload);
        if let Ok(s) = frame::settings(payload) {
            s.for_each(drop);
        }
        let _ = frame::window_increment(payload);
        let _ = frame::error_code(payload);
        at += n;
    }
    let mut d = hpack::Decoder::new(256, 1024);
    for block in data.split(|&b| b == 0xff) {
        let mut list = 0usize;
        let r = d.decode(block, |n, v| list += hpack::entry_size(n, v));
        assert!(list <= 1024 || r.is_err());
        assert!(d.table_size() <= 256);
    }
    let mut out = Vec::new();
    if huffman::decode(data, &mut out).is_ok() {
        let mut again = Vec::new();
        huffman::encode(&out, &mut again);
        let mut back = Vec::new();
        huffman::decode(&again, &mut back).unwrap();
        assert_eq!(back, out);
    }
    let _ = grpc::message(data, 1 << 20);
    let _ = grpc::parse_timeout(data);
    let _ = grpc::decode_message(data);
});
