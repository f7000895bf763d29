//! Any bytes through the binary protocol decoders: errors are fine, panics are not.
#![no_main]

use bytes::Bytes;
use netpoll_codec::thrift::{ApplicationException, BinaryReader, Message, ProtocolRead, TType};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let bytes = Bytes::copy_from_slice(data);
    let mut r = BinaryReader::new(bytes.clone());
    if r.read_message_begin().is_ok() {
        let _ = r.skip(TType::Struct);
        let _ = r.expect_end();
    }
    let _ = BinaryReader::new(bytes.clone()).skip(TType::Struct);
    let _ = BinaryReader::new(bytes.clone()).skip(TType::Map);
    let _ = ApplicationException::decode(&mut BinaryReader::new(bytes));
});
