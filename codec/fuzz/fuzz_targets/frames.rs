//! Any bytes through protocol detection, frame splitting, TTHeader and Kitex Protobuf
//! header parsing: errors are fine, panics are not.
#![no_main]

use bytes::Bytes;
use codec::frame::{self, KitexPbHeader, Protocol, Split, TTHeader};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = frame::detect(data);
    for p in [
        Protocol::FramedBinary,
        Protocol::FramedCompact,
        Protocol::TTHeader,
        Protocol::KitexProtobuf,
        Protocol::BufferedBinary,
        Protocol::BufferedCompact,
    ] {
        if let Ok(Split::Frame(n)) = frame::split(p, data, 1 << 20) {
            assert!(n <= data.len(), "a frame cannot be longer than the input");
        }
    }
    let bytes = Bytes::copy_from_slice(data);
    if let Ok(h) = TTHeader::parse(bytes.clone()) {
        let _ = h.int_headers().count();
        let _ = h.str_headers().count();
        let _ = h.acl_token();
        let _ = h.message();
    }
    let _ = KitexPbHeader::parse(&bytes);
});
