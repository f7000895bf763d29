//! The binary and compact protocols: bytes computed by hand from the specifications,
//! round trips, and hostile input (which must give errors, never panics or large
//! allocations).

use bytes::{Bytes, BytesMut};
use netpoll_codec::thrift::*;
use netpoll_codec::ByteString;
use proptest::prelude::*;

fn header(name: &str, kind: MessageType, seq_id: i32) -> MessageHeader {
    MessageHeader {
        name: ByteString::from(name),
        kind,
        seq_id,
    }
}

// ----- known answers --------------------------------------------------------------------

#[test]
fn binary_strict_message_header() {
    let mut w = BinaryWriter::default();
    w.write_message_begin(&header("ping", MessageType::Call, 1))
        .expect("encode");
    assert_eq!(
        &w.buf[..],
        b"\x80\x01\x00\x01\x00\x00\x00\x04ping\x00\x00\x00\x01"
    );
    assert_eq!(
        BinaryLen.message_begin_len(&header("ping", MessageType::Call, 1)),
        w.buf.len()
    );
    let mut r = BinaryReader::new(w.buf.freeze());
    assert_eq!(
        r.read_message_begin().expect("decode"),
        header("ping", MessageType::Call, 1)
    );
    r.expect_end().expect("nothing left");
}

#[test]
fn binary_old_versionless_message_header_is_read() {
    // name length, name, type byte, sequence id (what old Apache clients send).
    let bytes = Bytes::from_static(b"\x00\x00\x00\x04ping\x02\x00\x00\x00\x07");
    let mut r = BinaryReader::new(bytes);
    assert_eq!(
        r.read_message_begin().expect("decode"),
        header("ping", MessageType::Reply, 7)
    );
}

#[test]
fn binary_rejects_unknown_version_and_type() {
    let mut r = BinaryReader::new(Bytes::from_static(
        b"\x80\x02\x00\x01\x00\x00\x00\x00\x00\x00\x00\x00",
    ));
    assert!(matches!(
        r.read_message_begin(),
        Err(DecodeError::BadMessageHeader(_))
    ));
    let mut r = BinaryReader::new(Bytes::from_static(
        b"\x80\x01\x00\x09\x00\x00\x00\x00\x00\x00\x00\x00",
    ));
    assert!(matches!(
        r.read_message_begin(),
        Err(DecodeError::BadMessageHeader(_))
    ));
}

#[test]
fn compact_message_header() {
    let mut w = CompactWriter::default();
    w.write_message_begin(&header("ping", MessageType::Call, 300))
        .expect("encode");
    // 0x82, (CALL << 5) | version 1, varint 300 = ac 02, varint length 4, name.
    assert_eq!(&w.buf[..], b"\x82\x21\xac\x02\x04ping");
    assert_eq!(
        CompactLen::default().message_begin_len(&header("ping", MessageType::Call, 300)),
        w.buf.len()
    );
    let mut r = CompactReader::new(w.buf.freeze());
    assert_eq!(
        r.read_message_begin().expect("decode"),
        header("ping", MessageType::Call, 300)
    );
}

/// struct { 1: i32 = 5, 2: bool = true, 20: i64 = -1, 21: bool = false, 22: list<i32> = [1, 2, 3] }
fn write_sample<W: ProtocolWrite>(w: &mut W) {
    w.write_struct_begin("S").expect("w");
    w.write_field_begin(TType::I32, 1).expect("w");
    w.write_i32(5).expect("w");
    w.write_field_begin(TType::Bool, 2).expect("w");
    w.write_bool(true).expect("w");
    w.write_field_begin(TType::I64, 20).expect("w");
    w.write_i64(-1).expect("w");
    w.write_field_begin(TType::Bool, 21).expect("w");
    w.write_bool(false).expect("w");
    w.write_field_begin(TType::List, 22).expect("w");
    w.write_list_begin(ListHeader {
        elem: TType::I32,
        len: 3,
    })
    .expect("w");
    for v in [1, 2, 3] {
        w.write_i32(v).expect("w");
    }
    w.write_field_stop().expect("w");
    w.write_struct_end().expect("w");
}

#[test]
fn compact_field_headers_deltas_and_bool_folding() {
    let mut w = CompactWriter::default();
    write_sample(&mut w);
    let expected: &[u8] = &[
        0x15, 0x0a, // delta 1, i32; zigzag(5) = 10
        0x11, // delta 1, bool true folded into the type nibble
        0x06, 0x28, 0x01, // delta 18 > 15: long form, i64, zigzag(20) = 40; zigzag(-1) = 1
        0x12, // delta 1, bool false
        0x19, 0x35, 0x02, 0x04, 0x06, // delta 1, list; 3 x i32 in the short form; 1, 2, 3
        0x00, // stop
    ];
    assert_eq!(&w.buf[..], expected);
}

#[test]
fn binary_sample_bytes() {
    let mut w = BinaryWriter::default();
    write_sample(&mut w);
    let expected: &[u8] = &[
        8, 0, 1, 0, 0, 0, 5, // i32 field 1
        2, 0, 2, 1, // bool field 2
        10, 0, 20, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, // i64 field 20
        2, 0, 21, 0, // bool field 21
        15, 0, 22, 8, 0, 0, 0, 3, 0, 0, 0, 1, 0, 0, 0, 2, 0, 0, 0, 3, // list<i32>
        0,
    ];
    assert_eq!(&w.buf[..], expected);
}

#[test]
fn compact_bools_in_containers_are_one_and_two() {
    let mut w = CompactWriter::default();
    w.write_list_begin(ListHeader {
        elem: TType::Bool,
        len: 2,
    })
    .expect("w");
    w.write_bool(true).expect("w");
    w.write_bool(false).expect("w");
    assert_eq!(&w.buf[..], &[0x21, 0x01, 0x02]);
    let mut r = CompactReader::new(w.buf.freeze());
    assert_eq!(
        r.read_list_begin().expect("r"),
        ListHeader {
            elem: TType::Bool,
            len: 2
        }
    );
    assert!(r.read_bool().expect("r"));
    assert!(!r.read_bool().expect("r"));
}

fn read_sample<R: ProtocolRead>(r: &mut R) {
    r.read_struct_begin().expect("r");
    let f = r.read_field_begin().expect("r").expect("field");
    assert_eq!((f.ttype, f.id), (TType::I32, 1));
    assert_eq!(r.read_i32().expect("r"), 5);
    let f = r.read_field_begin().expect("r").expect("field");
    assert_eq!((f.ttype, f.id), (TType::Bool, 2));
    assert!(r.read_bool().expect("r"));
    let f = r.read_field_begin().expect("r").expect("field");
    assert_eq!((f.ttype, f.id), (TType::I64, 20));
    assert_eq!(r.read_i64().expect("r"), -1);
    let f = r.read_field_begin().expect("r").expect("field");
    assert_eq!((f.ttype, f.id), (TType::Bool, 21));
    assert!(!r.read_bool().expect("r"));
    let f = r.read_field_begin().expect("r").expect("field");
    assert_eq!((f.ttype, f.id), (TType::List, 22));
    let h = r.read_list_begin().expect("r");
    assert_eq!(
        h,
        ListHeader {
            elem: TType::I32,
            len: 3
        }
    );
    for v in [1, 2, 3] {
        assert_eq!(r.read_i32().expect("r"), v);
    }
    assert_eq!(r.read_field_begin().expect("r"), None);
    r.read_struct_end().expect("r");
    r.expect_end().expect("nothing left");
}

#[test]
fn both_protocols_read_back_what_they_wrote() {
    let mut w = BinaryWriter::default();
    write_sample(&mut w);
    read_sample(&mut BinaryReader::new(w.buf.freeze()));
    let mut w = CompactWriter::default();
    write_sample(&mut w);
    read_sample(&mut CompactReader::new(w.buf.freeze()));
}

#[test]
fn writers_append_to_a_borrowed_buffer() {
    let mut out = BytesMut::from(&b"prefix"[..]);
    BinaryWriter::new(&mut out).write_i32(7).expect("w");
    CompactWriter::new(&mut out).write_i32(7).expect("w");
    assert_eq!(&out[..], b"prefix\x00\x00\x00\x07\x0e");
}

#[test]
fn strings_and_binaries_are_zero_copy_views() {
    let mut w = BinaryWriter::default();
    w.write_string("héllo").expect("w");
    let input = w.buf.freeze();
    let mut r = BinaryReader::new(input.clone());
    let s = r.read_string().expect("r");
    assert_eq!(s, "héllo");
    assert_eq!(
        s.as_bytes().as_ptr(),
        input[4..].as_ptr(),
        "the string points into the input"
    );
    let mut r = BinaryReader::new(Bytes::from_static(b"\x00\x00\x00\x02\xff\xfe"));
    assert_eq!(
        r.read_string(),
        Err(DecodeError::Invalid("UTF-8 in a string"))
    );
}

#[test]
fn application_exception_round_trips_in_both_protocols() {
    let e = ApplicationException::new(ApplicationExceptionKind::UnknownMethod, "no method frob");
    let mut w = BinaryWriter::default();
    e.encode(&mut w).expect("w");
    assert_eq!(e.encoded_len(&mut BinaryLen), w.buf.len());
    assert_eq!(
        ApplicationException::decode(&mut BinaryReader::new(w.buf.freeze())).expect("r"),
        e
    );
    let odd = ApplicationException::new(ApplicationExceptionKind::Other(99), "");
    let mut w = CompactWriter::default();
    odd.encode(&mut w).expect("w");
    assert_eq!(odd.encoded_len(&mut CompactLen::default()), w.buf.len());
    assert_eq!(
        ApplicationException::decode(&mut CompactReader::new(w.buf.freeze())).expect("r"),
        odd
    );
}

// ----- hostile input --------------------------------------------------------------------

#[test]
fn huge_counts_in_small_frames_are_errors_not_allocations() {
    // A list claiming 2^31 - 1 elements, a map claiming as many entries, and a binary
    // claiming 2 GiB, each in a frame of 40 bytes.
    let mut list = vec![15u8, 8, 0x7f, 0xff, 0xff, 0xff];
    list.resize(40, 0);
    let mut r = BinaryReader::new(Bytes::from(list));
    assert_eq!(r.read_list_begin(), Err(DecodeError::Eof));
    let mut map = vec![8u8, 8, 0x7f, 0xff, 0xff, 0xff];
    map.resize(40, 0);
    assert_eq!(
        BinaryReader::new(Bytes::from(map)).read_map_begin(),
        Err(DecodeError::Eof)
    );
    let mut bin = vec![0x7fu8, 0xff, 0xff, 0xff];
    bin.resize(40, 0);
    assert_eq!(
        BinaryReader::new(Bytes::from(bin)).read_binary(),
        Err(DecodeError::Eof)
    );
    // Compact: a list of 2^31 i32 in long form, and a negative binary length.
    let mut r = CompactReader::new(Bytes::from_static(&[
        0xf5, 0xff, 0xff, 0xff, 0xff, 0x07, 0, 0, 0,
    ]));
    assert_eq!(r.read_list_begin(), Err(DecodeError::Eof));
    let mut r = BinaryReader::new(Bytes::from_static(&[0xff, 0xff, 0xff, 0xfe, 0, 0]));
    assert!(matches!(r.read_binary(), Err(DecodeError::Invalid(_))));
}

#[test]
fn deep_nesting_is_an_error_not_a_stack_overflow() {
    // 200,000 nested lists of lists, in both protocols, skipped on a thread with a 2 MiB
    // stack (the default for spawned threads).
    let binary: Vec<u8> = std::iter::repeat_n([15u8, 0, 0, 0, 1], 200_000)
        .flatten()
        .collect();
    let compact: Vec<u8> = std::iter::repeat_n(0x19u8, 200_000).collect();
    let t = std::thread::Builder::new()
        .stack_size(2 << 20)
        .spawn(move || {
            let mut r = BinaryReader::new(Bytes::from(binary));
            let b = r.skip(TType::List);
            let mut r = CompactReader::new(Bytes::from(compact));
            let c = r.skip(TType::List);
            (b, c)
        })
        .expect("spawn");
    let (b, c) = t.join().expect("no stack overflow");
    assert_eq!(b, Err(DecodeError::DepthLimit));
    assert_eq!(c, Err(DecodeError::DepthLimit));
}

#[test]
fn every_truncation_of_a_valid_struct_is_an_error() {
    for proto in ["binary", "compact"] {
        let full = if proto == "binary" {
            let mut w = BinaryWriter::default();
            write_sample(&mut w);
            w.buf.freeze()
        } else {
            let mut w = CompactWriter::default();
            write_sample(&mut w);
            w.buf.freeze()
        };
        for cut in 0..full.len() {
            let part = full.slice(..cut);
            let r = if proto == "binary" {
                BinaryReader::new(part).skip(TType::Struct)
            } else {
                CompactReader::new(part).skip(TType::Struct)
            };
            assert!(r.is_err(), "{proto}: {cut} of {} bytes decoded", full.len());
        }
    }
}

proptest! {
    #[test]
    fn random_bytes_never_panic(data in proptest::collection::vec(any::<u8>(), 0..512)) {
        let bytes = Bytes::from(data);
        let _ = BinaryReader::new(bytes.clone()).skip(TType::Struct);
        let _ = CompactReader::new(bytes.clone()).skip(TType::Struct);
        let _ = BinaryReader::new(bytes.clone()).read_message_begin();
        let _ = CompactReader::new(bytes.clone()).read_message_begin();
        let _ = ApplicationException::decode(&mut BinaryReader::new(bytes.clone()));
        let _ = ApplicationException::decode(&mut CompactReader::new(bytes));
    }

    #[test]
    fn integers_round_trip_with_exact_sizes(a in any::<i16>(), b in any::<i32>(), c in any::<i64>(), d in any::<f64>()) {
        let mut w = CompactWriter::default();
        let mut l = CompactLen::default();
        w.write_i16(a).expect("w");
        w.write_i32(b).expect("w");
        w.write_i64(c).expect("w");
        w.write_double(d).expect("w");
        let len = l.i16_len(a) + l.i32_len(b) + l.i64_len(c) + l.double_len(d);
        prop_assert_eq!(len, w.buf.len());
        let mut r = CompactReader::new(w.buf.freeze());
        prop_assert_eq!(r.read_i16().expect("r"), a);
        prop_assert_eq!(r.read_i32().expect("r"), b);
        prop_assert_eq!(r.read_i64().expect("r"), c);
        prop_assert_eq!(r.read_double().expect("r").to_bits(), d.to_bits());
    }
}
