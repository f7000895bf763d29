//! Encode and decode of the echo and AllTypes messages: our codec (binary and compact)
//! against Apache Thrift's Rust library (`thrift` 0.17, code from Apache's compiler) and
//! against prost for the Protobuf echo message.
//!
//! ```text
//! cargo bench -p benches --bench codec
//! ```
//!
//! Before the timings, a counting allocator prints heap allocations and bytes allocated
//! per operation for each case.

use std::alloc::{GlobalAlloc, Layout, System};
use std::collections::{BTreeMap, BTreeSet};
use std::hint::black_box;
use std::sync::atomic::{AtomicU64, Ordering};

use bytes::{Bytes, BytesMut};
use codec::thrift::{BinaryReader, BinaryWriter, CompactReader, CompactWriter, Message};
use criterion::{criterion_group, criterion_main, Criterion, Throughput};

// ----- allocation counting --------------------------------------------------------------

struct Counting;

static ALLOCS: AtomicU64 = AtomicU64::new(0);
static BYTES: AtomicU64 = AtomicU64::new(0);

// SAFETY: delegates to the system allocator unchanged; only counts.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        ALLOCS.fetch_add(1, Ordering::Relaxed);
        BYTES.fetch_add(layout.size() as u64, Ordering::Relaxed);
        // SAFETY: forwarded with the caller's guarantees.
        unsafe { System.alloc(layout) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: forwarded with the caller's guarantees.
        unsafe { System.dealloc(ptr, layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        ALLOCS.fetch_add(1, Ordering::Relaxed);
        BYTES.fetch_add(new_size as u64, Ordering::Relaxed);
        // SAFETY: forwarded with the caller's guarantees.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static ALLOCATOR: Counting = Counting;

/// Allocations and bytes allocated per call of `f`, after one warm-up call.
fn allocs_per_op(mut f: impl FnMut()) -> (f64, f64) {
    f();
    const N: u64 = 1000;
    let (a0, b0) = (
        ALLOCS.load(Ordering::Relaxed),
        BYTES.load(Ordering::Relaxed),
    );
    for _ in 0..N {
        f();
    }
    let (a1, b1) = (
        ALLOCS.load(Ordering::Relaxed),
        BYTES.load(Ordering::Relaxed),
    );
    ((a1 - a0) as f64 / N as f64, (b1 - b0) as f64 / N as f64)
}

// ----- the three implementations ---------------------------------------------------------

#[allow(missing_docs, dead_code, clippy::all)]
mod ours {
    include!(concat!(env!("OUT_DIR"), "/echo.rs"));
    include!(concat!(env!("OUT_DIR"), "/interop.rs"));
}

#[allow(
    missing_docs,
    dead_code,
    unused_imports,
    unused_extern_crates,
    clippy::all
)]
mod apache_interop {
    include!("../src/apache/interop.rs");
}

#[allow(
    missing_docs,
    dead_code,
    unused_imports,
    unused_extern_crates,
    clippy::all
)]
mod apache_echo {
    include!("../src/apache/echo.rs");

    use thrift::protocol::{TBinaryInputProtocol, TBinaryOutputProtocol};

    /// Encodes the echo call's arguments with Apache's generated code.
    pub fn encode(msg: &[u8], out: &mut Vec<u8>) {
        let args = EchoEchoArgs { msg: msg.to_vec() };
        let mut p = TBinaryOutputProtocol::new(out, true);
        args.write_to_out_protocol(&mut p).expect("encode");
    }

    /// Decodes them; returns the payload length.
    pub fn decode(buf: &[u8]) -> usize {
        let mut p = TBinaryInputProtocol::new(buf, true);
        EchoEchoArgs::read_from_in_protocol(&mut p)
            .expect("decode")
            .msg
            .len()
    }
}

/// `echo.proto`'s request, as prost-build with the `bytes` option generates it.
#[derive(Clone, PartialEq, prost::Message)]
struct EchoRequest {
    #[prost(bytes = "bytes", tag = "1")]
    msg: Bytes,
}

fn ours_all_types() -> ours::interop::AllTypes {
    use ours::interop::{AllTypes, Color, Inner};
    AllTypes {
        b: true,
        i8v: -8,
        i16v: -1600,
        i32v: 1 << 30,
        i64v: -(1 << 60),
        dbl: 3.25,
        str: "héllo, world".into(),
        bin: Bytes::from(vec![0xab; 64]),
        ints: (0..16).collect(),
        tags: ["a", "bb", "ccc"].into_iter().map(Into::into).collect(),
        counts: [("x".into(), 1), ("y".into(), -1)].into_iter().collect(),
        inner: Inner {
            id: 7,
            label: Some("seven".into()),
        },
        inners: (0..4).map(|id| Inner { id, label: None }).collect(),
        nested: [(1, vec!["p".into(), "q".into()])].into_iter().collect(),
        color: Color::BLUE,
        maybe: Some("here".into()),
        with_default: "default".into(),
        small: 3,
    }
}

fn apache_all_types() -> apache_interop::AllTypes {
    use apache_interop::{AllTypes, Color, Inner};
    AllTypes {
        b: Some(true),
        i8v: Some(-8),
        i16v: Some(-1600),
        i32v: Some(1 << 30),
        i64v: Some(-(1 << 60)),
        dbl: Some(thrift::OrderedFloat(3.25)),
        str: Some("héllo, world".into()),
        bin: Some(vec![0xab; 64]),
        ints: Some((0..16).collect()),
        tags: Some(
            ["a", "bb", "ccc"]
                .into_iter()
                .map(String::from)
                .collect::<BTreeSet<_>>(),
        ),
        counts: Some(
            [("x".to_string(), 1), ("y".to_string(), -1)]
                .into_iter()
                .collect::<BTreeMap<_, _>>(),
        ),
        inner: Some(Inner {
            id: 7,
            label: Some("seven".into()),
        }),
        inners: Some((0..4).map(|id| Inner { id, label: None }).collect()),
        nested: Some(
            [(1, vec!["p".to_string(), "q".to_string()])]
                .into_iter()
                .collect(),
        ),
        color: Some(Color::BLUE),
        maybe: Some("here".into()),
        with_default: Some("default".into()),
        small: Some(3),
    }
}

fn encode_ours<M: Message>(m: &M, out: &mut BytesMut, compact: bool) {
    out.clear();
    if compact {
        m.encode(&mut CompactWriter::new(&mut *out))
            .expect("encode");
    } else {
        m.encode(&mut BinaryWriter::new(&mut *out)).expect("encode");
    }
}

// ----- benches -------------------------------------------------------------------------

fn echo(c: &mut Criterion) {
    use prost::Message as _;
    let payload = vec![0x5a; 128];
    let ours_msg = ours::echo::EchoEchoArgs {
        msg: Bytes::from(payload.clone()),
    };
    let pb_msg = EchoRequest {
        msg: Bytes::from(payload.clone()),
    };
    let mut buf = BytesMut::with_capacity(1024);
    let mut vec_buf = Vec::with_capacity(1024);
    encode_ours(&ours_msg, &mut buf, false);
    let ours_bin = buf.clone().freeze();
    encode_ours(&ours_msg, &mut buf, true);
    let ours_compact = buf.clone().freeze();
    apache_echo::encode(&payload, &mut vec_buf);
    let apache_bin = vec_buf.clone();
    let pb_bytes = Bytes::from(pb_msg.encode_to_vec());
    let mut pb_buf = BytesMut::with_capacity(1024);

    report(
        "echo 128 B",
        &mut [
            ("ours binary encode", &mut || {
                encode_ours(black_box(&ours_msg), &mut buf, false)
            }),
            ("ours binary decode", &mut || {
                drop(black_box(ours::echo::EchoEchoArgs::decode(
                    &mut BinaryReader::new(ours_bin.clone()),
                )))
            }),
            ("ours compact decode", &mut || {
                drop(black_box(ours::echo::EchoEchoArgs::decode(
                    &mut CompactReader::new(ours_compact.clone()),
                )))
            }),
            ("apache binary encode", &mut || {
                vec_buf.clear();
                apache_echo::encode(black_box(&payload), &mut vec_buf)
            }),
            ("apache binary decode", &mut || {
                black_box(apache_echo::decode(&apache_bin));
            }),
            ("prost encode", &mut || {
                pb_buf.clear();
                pb_msg.encode(&mut pb_buf).expect("encode")
            }),
            ("prost decode", &mut || {
                drop(black_box(EchoRequest::decode(pb_bytes.clone())))
            }),
        ],
    );

    let mut g = c.benchmark_group("echo 128 B");
    g.throughput(Throughput::Elements(1));
    g.bench_function("ours binary encode", |b| {
        b.iter(|| encode_ours(black_box(&ours_msg), &mut buf, false))
    });
    g.bench_function("ours compact encode", |b| {
        b.iter(|| encode_ours(black_box(&ours_msg), &mut buf, true))
    });
    g.bench_function("ours binary decode", |b| {
        b.iter(|| {
            ours::echo::EchoEchoArgs::decode(&mut BinaryReader::new(black_box(ours_bin.clone())))
        })
    });
    g.bench_function("ours compact decode", |b| {
        b.iter(|| {
            ours::echo::EchoEchoArgs::decode(&mut CompactReader::new(black_box(
                ours_compact.clone(),
            )))
        })
    });
    g.bench_function("apache binary encode", |b| {
        b.iter(|| {
            vec_buf.clear();
            apache_echo::encode(black_box(&payload), &mut vec_buf)
        })
    });
    g.bench_function("apache binary decode", |b| {
        b.iter(|| apache_echo::decode(black_box(&apache_bin)))
    });
    g.bench_function("prost encode", |b| {
        b.iter(|| {
            buf.clear();
            black_box(&pb_msg).encode(&mut buf).expect("encode")
        })
    });
    g.bench_function("prost decode", |b| {
        b.iter(|| EchoRequest::decode(black_box(pb_bytes.clone())))
    });
    g.finish();
}

fn all_types(c: &mut Criterion) {
    use thrift::protocol::{
        TBinaryInputProtocol, TBinaryOutputProtocol, TCompactInputProtocol, TCompactOutputProtocol,
        TSerializable,
    };
    let ours_v = ours_all_types();
    let apache_v = apache_all_types();
    let mut buf = BytesMut::with_capacity(4096);
    encode_ours(&ours_v, &mut buf, false);
    let ours_bin = buf.clone().freeze();
    encode_ours(&ours_v, &mut buf, true);
    let ours_compact = buf.clone().freeze();
    let mut vec_buf: Vec<u8> = Vec::with_capacity(4096);
    apache_v
        .write_to_out_protocol(&mut TBinaryOutputProtocol::new(&mut vec_buf, true))
        .expect("encode");
    let apache_bin = vec_buf.clone();
    vec_buf.clear();
    apache_v
        .write_to_out_protocol(&mut TCompactOutputProtocol::new(&mut vec_buf))
        .expect("encode");
    let apache_compact = vec_buf.clone();
    // Same wire format: each side decodes the other's bytes.
    assert_eq!(
        ours::interop::AllTypes::decode(&mut BinaryReader::new(Bytes::from(apache_bin.clone())))
            .expect("ours reads apache"),
        ours_v
    );
    assert_eq!(
        apache_interop::AllTypes::read_from_in_protocol(&mut TCompactInputProtocol::new(
            &ours_compact[..]
        ))
        .expect("apache reads ours"),
        apache_v
    );

    report(
        "AllTypes",
        &mut [
            ("ours binary encode", &mut || {
                encode_ours(black_box(&ours_v), &mut buf, false)
            }),
            ("ours binary decode", &mut || {
                drop(black_box(ours::interop::AllTypes::decode(
                    &mut BinaryReader::new(ours_bin.clone()),
                )))
            }),
            ("ours compact decode", &mut || {
                drop(black_box(ours::interop::AllTypes::decode(
                    &mut CompactReader::new(ours_compact.clone()),
                )))
            }),
            ("apache binary encode", &mut || {
                vec_buf.clear();
                apache_v
                    .write_to_out_protocol(&mut TBinaryOutputProtocol::new(&mut vec_buf, true))
                    .expect("encode")
            }),
            ("apache binary decode", &mut || {
                drop(black_box(apache_interop::AllTypes::read_from_in_protocol(
                    &mut TBinaryInputProtocol::new(&apache_bin[..], true),
                )))
            }),
        ],
    );

    let mut g = c.benchmark_group("AllTypes");
    g.throughput(Throughput::Elements(1));
    g.bench_function("ours binary encode", |b| {
        b.iter(|| encode_ours(black_box(&ours_v), &mut buf, false))
    });
    g.bench_function("ours compact encode", |b| {
        b.iter(|| encode_ours(black_box(&ours_v), &mut buf, true))
    });
    g.bench_function("ours binary decode", |b| {
        b.iter(|| {
            ours::interop::AllTypes::decode(&mut BinaryReader::new(black_box(ours_bin.clone())))
        })
    });
    g.bench_function("ours compact decode", |b| {
        b.iter(|| {
            ours::interop::AllTypes::decode(&mut CompactReader::new(black_box(
                ours_compact.clone(),
            )))
        })
    });
    g.bench_function("apache binary encode", |b| {
        b.iter(|| {
            vec_buf.clear();
            black_box(&apache_v)
                .write_to_out_protocol(&mut TBinaryOutputProtocol::new(&mut vec_buf, true))
                .expect("encode")
        })
    });
    g.bench_function("apache compact encode", |b| {
        b.iter(|| {
            vec_buf.clear();
            black_box(&apache_v)
                .write_to_out_protocol(&mut TCompactOutputProtocol::new(&mut vec_buf))
                .expect("encode")
        })
    });
    g.bench_function("apache binary decode", |b| {
        b.iter(|| {
            apache_interop::AllTypes::read_from_in_protocol(&mut TBinaryInputProtocol::new(
                black_box(&apache_bin[..]),
                true,
            ))
        })
    });
    g.bench_function("apache compact decode", |b| {
        b.iter(|| {
            apache_interop::AllTypes::read_from_in_protocol(&mut TCompactInputProtocol::new(
                black_box(&apache_compact[..]),
            ))
        })
    });
    g.finish();
}

/// Prints allocations per operation for each case.
fn report(group: &str, cases: &mut [(&str, &mut dyn FnMut())]) {
    println!("{group}: heap allocations per operation");
    for (name, f) in cases.iter_mut() {
        let (allocs, bytes) = allocs_per_op(f);
        println!("  {name:<24} {allocs:>6.1} allocs  {bytes:>8.0} bytes");
    }
}

criterion_group!(benches, echo, all_types);
criterion_main!(benches);
