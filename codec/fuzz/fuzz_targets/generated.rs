//! Any bytes through decoders generated from idl/interop.thrift, in both protocols.
#![no_main]

use bytes::Bytes;
use netpoll_codec::thrift::{BinaryReader, CompactReader, Message};
use libfuzzer_sys::fuzz_target;

mod generated {
    #![allow(missing_docs)]
    include!(concat!(env!("OUT_DIR"), "/interop.rs"));
}
use generated::interop::{AllTypes, InteropFailWithResult, InteropRoundtripArgs};

fuzz_target!(|data: &[u8]| {
    let bytes = Bytes::copy_from_slice(data);
    if let Ok(v) = AllTypes::decode(&mut BinaryReader::new(bytes.clone())) {
        // Whatever decodes must re-encode.
        let mut w = netpoll_codec::thrift::BinaryWriter::default();
        v.encode(&mut w).expect("a decoded value encodes");
    }
    let _ = AllTypes::decode(&mut CompactReader::new(bytes.clone()));
    let _ = InteropRoundtripArgs::decode(&mut BinaryReader::new(bytes.clone()));
    let _ = InteropRoundtripArgs::decode(&mut CompactReader::new(bytes.clone()));
    let _ = InteropFailWithResult::decode(&mut BinaryReader::new(bytes.clone()));
    let _ = InteropFailWithResult::decode(&mut CompactReader::new(bytes));
});
