//! Compiles the generated code in `tests/golden/` and round-trips values
//! through the binary and compact protocols; `roundtrip/apache.rs` and
//! `roundtrip/volo.rs` check it against Apache Thrift's generated code and
//! against bytes captured from Volo.
//!
//! The generated code names its runtime `::codec`: the real `codec` crate,
//! a dev-dependency.
#![forbid(unsafe_code)]
#![deny(missing_docs, missing_debug_implementations)]

include!("golden/interop.rs");
include!("golden/echo.rs");
include!("golden/shared.rs");
include!("golden/kitchen_sink.rs");

use bytes::{BufMut, Bytes, BytesMut};
use interop::{AllTypes, Color, Inner, InteropError};
use netpoll_codec::thrift::{
    BinaryLen, BinaryReader, BinaryWriter, CompactLen, CompactReader, CompactWriter, DecodeError,
    Message, ProtocolRead, TType,
};
use netpoll_codec::ByteString;

fn full() -> AllTypes {
    AllTypes {
        b: true,
        i8v: -8,
        i16v: -1600,
        i32v: 1 << 30,
        i64v: -(1 << 60),
        dbl: 3.25,
        str: ByteString::from("héllo"),
        bin: Bytes::from_static(b"\x00\x01\xff"),
        ints: vec![1, -2, 3],
        tags: ["a", "b"].into_iter().map(ByteString::from).collect(),
        counts: [("x".into(), 1), ("y".into(), -1)].into_iter().collect(),
        inner: Inner {
            id: 7,
            label: Some("seven".into()),
        },
        inners: vec![
            Inner { id: 1, label: None },
            Inner {
                id: 2,
                label: Some("two".into()),
            },
        ],
        nested: [(1, vec!["p".into(), "q".into()]), (2, vec![])]
            .into_iter()
            .collect(),
        color: Color::BLUE,
        maybe: Some("maybe".into()),
        with_default: "not the default".into(),
        small: 127,
    }
}

/// Encodes with the binary protocol, checking `encoded_len` is exact.
fn binary<M: Message>(m: &M) -> Bytes {
    let mut w = BinaryWriter::default();
    m.encode(&mut w).expect("encodes");
    assert_eq!(m.encoded_len(&mut BinaryLen), w.buf.len(), "binary size");
    w.buf.freeze()
}

/// Encodes with the compact protocol, checking `encoded_len` is exact.
fn compact<M: Message>(m: &M) -> Bytes {
    let mut w = CompactWriter::default();
    m.encode(&mut w).expect("encodes");
    let len = m.encoded_len(&mut CompactLen::default());
    assert_eq!(len, w.buf.len(), "compact size");
    w.buf.freeze()
}

fn from_binary<M: Message>(b: Bytes) -> Result<M, DecodeError> {
    let mut r = BinaryReader::new(b);
    let m = M::decode(&mut r)?;
    r.expect_end()?;
    Ok(m)
}

fn from_compact<M: Message>(b: Bytes) -> Result<M, DecodeError> {
    let mut r = CompactReader::new(b);
    let m = M::decode(&mut r)?;
    r.expect_end()?;
    Ok(m)
}

#[test]
fn all_types_round_trip_binary_and_compact() {
    let v = full();
    assert_eq!(from_binary::<AllTypes>(binary(&v)), Ok(v.clone()));
    assert_eq!(from_compact::<AllTypes>(compact(&v)), Ok(v.clone()));
    let d = AllTypes::default();
    assert_eq!(from_binary::<AllTypes>(binary(&d)), Ok(d.clone()));
    assert_eq!(from_compact::<AllTypes>(compact(&d)), Ok(d));
}

#[test]
fn defaults_honour_the_idl() {
    let d = AllTypes::default();
    assert_eq!(&*d.with_default, "default");
    assert_eq!(d.maybe, None);
    assert_eq!(d.color, Color(0));
    // An empty struct on the wire decodes to the IDL defaults.
    let empty = Bytes::from_static(&[0]);
    let v: AllTypes = from_binary(empty.clone()).expect("decodes");
    assert_eq!(&*v.with_default, "default");
    assert_eq!(v, AllTypes::default());
    let v: AllTypes = from_compact(empty).expect("decodes");
    assert_eq!(v, AllTypes::default());
}

#[test]
fn unknown_fields_and_mismatched_types_are_skipped() {
    let mut b = BytesMut::new();
    // 99: list<map<i32, string>> — unknown id.
    b.put_u8(15);
    b.put_i16(99);
    b.put_u8(13);
    b.put_i32(1);
    b.put_u8(8);
    b.put_u8(11);
    b.put_i32(1);
    b.put_i32(5);
    b.put_i32(2);
    b.put_slice(b"hi");
    // 4: i32v sent as a string — known id, wrong type: skipped.
    b.put_u8(11);
    b.put_i16(4);
    b.put_i32(1);
    b.put_slice(b"x");
    // 5: i64v, correct.
    b.put_u8(10);
    b.put_i16(5);
    b.put_i64(42);
    // 100: a nested struct.
    b.put_u8(12);
    b.put_i16(100);
    b.put_u8(2);
    b.put_i16(1);
    b.put_u8(1);
    b.put_u8(0);
    b.put_u8(0);
    let v: AllTypes = from_binary(b.freeze()).expect("decodes");
    assert_eq!(v.i64v, 42);
    assert_eq!(v.i32v, 0);
    assert_eq!(&*v.with_default, "default");
}

#[test]
fn unknown_enum_values_survive() {
    let v = AllTypes {
        color: Color(12345),
        ..AllTypes::default()
    };
    let back: AllTypes = from_compact(compact(&v)).expect("decodes");
    assert_eq!(back.color, Color(12345));
    assert_eq!(back.color.name(), None);
    assert_eq!(format!("{:?}", back.color), "Color(12345)");
    assert_eq!(format!("{:?}", Color::RED), "Color::RED");
    assert_eq!(Color::VALUES.len(), 3);
}

#[test]
fn missing_required_field_is_an_error() {
    let empty = Bytes::from_static(&[0]);
    assert_eq!(
        from_binary::<Inner>(empty),
        Err(DecodeError::MissingField {
            owner: "Inner",
            field: "id"
        })
    );
}

#[test]
fn container_element_type_mismatch_is_an_error() {
    let mut b = BytesMut::new();
    b.put_u8(15);
    b.put_i16(9);
    b.put_u8(11);
    b.put_i32(1);
    b.put_i32(0);
    b.put_u8(0);
    assert!(matches!(
        from_binary::<AllTypes>(b.freeze()),
        Err(DecodeError::UnexpectedElemType {
            expected: TType::I32,
            ..
        })
    ));
}

#[test]
fn truncated_input_never_panics() {
    for bytes in [binary(&full()), compact(&full())] {
        for end in 0..bytes.len() {
            let _ = from_binary::<AllTypes>(bytes.slice(..end));
            let _ = from_compact::<AllTypes>(bytes.slice(..end));
        }
    }
}

#[test]
fn service_args_and_results() {
    let args = interop::InteropFailWithArgs {
        code: 3,
        message: "boom".into(),
    };
    let back: interop::InteropFailWithArgs = from_binary(binary(&args)).expect("decodes");
    assert_eq!(back, args);

    let err = InteropError {
        code: 3,
        message: "boom".into(),
    };
    assert_eq!(err.to_string(), "InteropError: boom");
    let result = interop::InteropFailWithResult {
        success: None,
        err: Some(err),
    };
    let back: interop::InteropFailWithResult = from_compact(compact(&result)).expect("decodes");
    assert_eq!(back, result);

    // `void` results are empty structs; echo's result carries binary.
    let ping: interop::InteropPingResult = from_binary(Bytes::from_static(&[0])).expect("ok");
    assert_eq!(ping, interop::InteropPingResult {});
    let echo = echo::EchoEchoResult {
        success: Some(Bytes::from_static(b"pong")),
    };
    assert_eq!(from_binary::<echo::EchoEchoResult>(binary(&echo)), Ok(echo));
}

mod kitchen_sink_tests {
    use super::*;
    use kitchen_sink::{Everything, Node, Shape, Weekday};
    use shared::{Level, Point};

    fn everything() -> Everything {
        Everything {
            id: 9,
            note: None,
            measures: vec![1.5, -0.0],
            by_measure: vec![(0.5, "half".into())],
            points: vec![Point { x: 1.0, y: 2.0 }],
            schedule: [(Weekday::SUNDAY, [7, 8].into_iter().collect())]
                .into_iter()
                .collect(),
            level: Level(99),
            shape: Shape::Nested(Box::new(Shape::Polygon(vec![Point { x: 0.0, y: 1.0 }]))),
            deep: Some(vec![vec![[("k".into(), Bytes::from_static(b"v"))]
                .into_iter()
                .collect()]]),
            clock: [("t".into(), 1)].into_iter().collect(),
            r#type: "kind".into(),
            self_: -1,
            at: 123,
            flag: false,
            origin: Point { x: 9.0, y: 9.0 },
            tree: Some(Node {
                name: "root".into(),
                children: vec![Node {
                    name: "leaf".into(),
                    children: vec![],
                    parent: None,
                }],
                parent: Some(Box::new(Node {
                    name: "up".into(),
                    children: vec![],
                    parent: None,
                })),
            }),
            bits: vec![true, false, true],
            tiny: 0,
            short_one: 0,
            ratio: 0.25,
            fallback: Shape::Point(Point { x: 3.0, y: 4.0 }),
            r#where: None,
            trace: [7; 16],
            seen: Some([[1; 16], [2; 16]].into_iter().collect()),
        }
    }

    #[test]
    fn everything_round_trips() {
        let v = everything();
        assert_eq!(from_binary::<Everything>(binary(&v)), Ok(v.clone()));
        assert_eq!(from_compact::<Everything>(compact(&v)), Ok(v));
    }

    #[test]
    fn idl_defaults_and_constants() {
        let d = Everything::default();
        assert_eq!(d.id, 5);
        assert_eq!(d.note.as_deref(), Some("n/a"));
        assert_eq!(d.level, Level::HIGH);
        assert_eq!(d.origin, kitchen_sink::origin());
        assert_eq!(d.origin, Point { x: 0.0, y: 0.5 });
        assert!(d.flag);
        assert_eq!(d.tiny, -1);
        assert_eq!(d.short_one, 300);
        assert_eq!(d.ratio, 2.0);
        assert_eq!(d.schedule[&Weekday::MONDAY].len(), 2);
        assert_eq!(d.shape, Shape::CircleRadius(0.0));
        assert_eq!(d.fallback, Shape::CircleRadius(1.5));
        assert_eq!(d.r#where, Some(Point { x: 1.0, y: 2.0 }));
        assert_eq!(d.trace[0], 0x00);
        assert_eq!(d.trace[15], 0xff);
        assert_eq!(kitchen_sink::NIL, [0; 16]);
        assert_eq!(kitchen_sink::primes(), vec![2, 3, 5, 7]);
        assert_eq!(kitchen_sink::GREETING, "it's \"quoted\"");
        assert_eq!(kitchen_sink::LIMIT, shared::SHARED_LIMIT);
        assert_eq!(kitchen_sink::DEFAULT_LEVEL, Level::MEDIUM);
        assert_eq!(
            kitchen_sink::table()[&ByteString::from("none")],
            Vec::<i16>::new()
        );
        assert!(kitchen_sink::names().contains(&ByteString::from("a")));
    }

    #[test]
    fn union_with_no_field_or_two_fields_is_an_error() {
        assert_eq!(
            from_binary::<Shape>(Bytes::from_static(&[0])),
            Err(DecodeError::InvalidUnion {
                owner: "Shape",
                fields_set: 0
            })
        );
        let mut b = BytesMut::new();
        for id in [1i16, 1] {
            b.put_u8(4);
            b.put_i16(id);
            b.put_f64(1.0);
        }
        b.put_u8(0);
        assert_eq!(
            from_binary::<Shape>(b.freeze()),
            Err(DecodeError::InvalidUnion {
                owner: "Shape",
                fields_set: 2
            })
        );
    }

    #[test]
    fn deep_recursion_hits_the_depth_limit_instead_of_the_stack() {
        let mut shape = Shape::CircleRadius(1.0);
        for _ in 0..100 {
            shape = Shape::Nested(Box::new(shape));
        }
        assert_eq!(
            from_binary::<Shape>(binary(&shape)),
            Err(DecodeError::DepthLimit)
        );
    }

    #[test]
    fn service_types_include_inherited_shape() {
        let result = kitchen_sink::StoreFetchResult {
            success: None,
            missing: None,
            busy: Some(kitchen_sink::Overloaded { retry_after_ms: 5 }),
        };
        assert_eq!(
            from_compact::<kitchen_sink::StoreFetchResult>(compact(&result)),
            Ok(result)
        );
        let _ = kitchen_sink::BasePingResult {};
        let _ = kitchen_sink::StoreLogArgs { line: "x".into() };
    }

    #[test]
    fn names_that_shadow_generated_locals_still_work() {
        let r = kitchen_sink::R {
            r: Some(Box::new(kitchen_sink::R::default())),
            w: vec![kitchen_sink::W { l: 1, item0: 2 }],
            len: 3,
            value: 4,
            field: 5,
        };
        assert_eq!(from_binary::<kitchen_sink::R>(binary(&r)), Ok(r.clone()));
        assert_eq!(from_compact::<kitchen_sink::R>(compact(&r)), Ok(r));
    }
}

#[path = "roundtrip/apache.rs"]
mod apache;
#[path = "roundtrip/volo.rs"]
mod volo;
