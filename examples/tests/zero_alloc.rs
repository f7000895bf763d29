//! The framework makes no heap allocation per call in steady state: an echo handler served
//! over Framed binary, TTHeader and Kitex Protobuf, 100,000 pipelined calls each, with a
//! counting allocator that counts per thread. Only the server core's count is checked.

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use examples::gen::{echo, pb};
use netpoll_codec::frame::{self, Protocol, Split};
use netpoll_codec::thrift::MessageType;
use netpoll_codec::ByteString;
use netpoll_rpc::wire::{self, Envelope, Headers, Payload, Transport};

struct Counting;

thread_local! {
    static ALLOCS: Cell<u64> = const { Cell::new(0) };
}

fn count() {
    // `try_with`: allocations during thread teardown are not counted rather than panicking.
    let _ = ALLOCS.try_with(|c| c.set(c.get() + 1));
}

// SAFETY: delegates every call to the system allocator unchanged; only counts.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        count();
        // SAFETY: forwarded with the caller's guarantees.
        unsafe { System.alloc(layout) }
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        count();
        // SAFETY: forwarded with the caller's guarantees.
        unsafe { System.alloc_zeroed(layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        count();
        // SAFETY: forwarded with the caller's guarantees.
        unsafe { System.realloc(ptr, layout, new_size) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: forwarded with the caller's guarantees.
        unsafe { System.dealloc(ptr, layout) }
    }
}

#[global_allocator]
static ALLOCATOR: Counting = Counting;

fn core_allocs(s: &netpoll_rpc::server::Server) -> u64 {
    let (tx, rx) = std::sync::mpsc::sync_channel(1);
    s.runtime()
        .spawn(0, move |_| {
            let _ = tx.send(ALLOCS.with(Cell::get));
        })
        .expect("core running");
    rx.recv_timeout(Duration::from_secs(10)).expect("task ran")
}

/// 32 pipelined echo calls of 128 B each, as one write.
fn batch(transport: Transport, payload: Payload) -> Vec<u8> {
    batch_with(transport, payload, &Headers::default())
}

/// [`batch`] with `headers` on every call.
fn batch_with(transport: Transport, payload: Payload, headers: &Headers<'_>) -> Vec<u8> {
    let mut out = BytesMut::new();
    for seq in 0..32 {
        let method = if payload == Payload::Protobuf {
            "Echo"
        } else {
            "echo"
        };
        let env = Envelope {
            transport,
            payload,
            method: ByteString::from_static(method),
            seq_id: seq,
            header_seq: seq,
            kind: MessageType::Call,
        };
        let msg = Bytes::from(vec![b'x'; 128]);
        if payload == Payload::Protobuf {
            wire::write_pb(
                &env,
                &mut out,
                MessageType::Call,
                &pb::echo::EchoRequest { msg },
                headers,
            )
        } else {
            wire::write_thrift(
                &env,
                &mut out,
                MessageType::Call,
                &echo::EchoEchoArgs { msg },
                headers,
            )
        }
        .unwrap();
    }
    out.to_vec()
}

fn run(s: &mut TcpStream, protocol: Protocol, batch: &[u8], calls: usize) {
    let mut buf = vec![0u8; 1 << 16];
    let mut have = 0;
    for _ in 0..calls / 32 {
        s.write_all(batch).unwrap();
        let mut replies = 0;
        while replies < 32 {
            match frame::split(protocol, &buf[..have], 1 << 20).unwrap() {
                Split::Frame(n) => {
                    let p = wire::parse(protocol, Bytes::copy_from_slice(&buf[..n])).unwrap();
                    assert_eq!(p.envelope.kind, MessageType::Reply);
                    buf.copy_within(n..have, 0);
                    have -= n;
                    replies += 1;
                }
                Split::NeedMore(_) => {
                    let n = s.read(&mut buf[have..]).unwrap();
                    assert!(n > 0, "server closed");
                    have += n;
                }
            }
        }
    }
}

#[test]
fn steady_state_calls_allocate_nothing_on_the_server_core() {
    let server = examples::echo_service::builder()
        .addr("127.0.0.1:0")
        .cores(1)
        .start()
        .unwrap();
    for (transport, payload, protocol) in [
        (
            Transport::Framed,
            Payload::ThriftBinary,
            Protocol::FramedBinary,
        ),
        (
            Transport::TTHeader {
                framed_payload: false,
            },
            Payload::ThriftBinary,
            Protocol::TTHeader,
        ),
        (
            Transport::Framed,
            Payload::ThriftCompact,
            Protocol::FramedCompact,
        ),
        (
            Transport::KitexProtobuf,
            Payload::Protobuf,
            Protocol::KitexProtobuf,
        ),
    ] {
        let mut s = TcpStream::connect(server.local_addr()).unwrap();
        s.set_nodelay(true).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        let b = batch(transport, payload);
        run(&mut s, protocol, &b, 20_000);
        let before = core_allocs(&server);
        run(&mut s, protocol, &b, 100_000);
        let after = core_allocs(&server);
        println!(
            "{transport:?} {payload:?}: {} allocations on the core for 100,000 calls",
            after - before
        );
        assert_eq!(
            after - before,
            0,
            "{transport:?} {payload:?}: the core allocated per call"
        );
    }
}

/// The tracing middleware costs an unsampled call no allocation: calls that start a trace
/// (sampled at 0%) and calls whose caller did not sample its span.
#[test]
fn unsampled_calls_through_the_tracing_middleware_allocate_nothing() {
    use netpoll_rpc::otel::{OpenTelemetry, Sampler};
    let server = examples::echo_service::builder()
        .middleware(OpenTelemetry::with_sampler(Sampler::ParentBased(0.0)))
        .addr("127.0.0.1:0")
        .cores(1)
        .start()
        .unwrap();
    let tt = Transport::TTHeader {
        framed_payload: false,
    };
    let unsampled: &[(&str, &[u8])] = &[
        (
            "traceparent",
            b"00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-00",
        ),
        ("tracestate", b"congo=t61rcWkgMzE"),
    ];
    for (what, headers) in [
        ("a new trace", Headers::default()),
        (
            "an unsampled caller",
            Headers {
                strs: unsampled,
                ..Headers::default()
            },
        ),
    ] {
        let mut s = TcpStream::connect(server.local_addr()).unwrap();
        s.set_nodelay(true).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        let b = batch_with(tt, Payload::ThriftBinary, &headers);
        run(&mut s, Protocol::TTHeader, &b, 20_000);
        let before = core_allocs(&server);
        run(&mut s, Protocol::TTHeader, &b, 100_000);
        let after = core_allocs(&server);
        println!(
            "{what}: {} allocations on the core for 100,000 calls",
            after - before
        );
        assert_eq!(after - before, 0, "{what}: the core allocated per call");
    }
}

/// Over TLS the core allocates only what rustls does per record (it decrypts into, and
/// encrypts from, buffers of its own): with 32 pipelined calls a batch, a small fixed
/// number per batch, nothing per call from netpoll or the server.
#[test]
fn tls_adds_only_rustls_own_allocations_per_record() {
    use netpoll_rpc::tls::{rustls, TlsAcceptor, TlsConnector};
    let dir = std::env::temp_dir().join(format!("zero-alloc-pki-{}", std::process::id()));
    let ok = std::process::Command::new(env!("CARGO_BIN_EXE_tls_certs"))
        .arg(&dir)
        .output()
        .is_ok_and(|o| o.status.success());
    assert!(ok, "tls_certs failed");
    let acceptor = TlsAcceptor::builder(dir.join("server.pem"), dir.join("server.key"))
        .unwrap()
        .build()
        .unwrap();
    let connector = TlsConnector::builder(dir.join("ca.pem"))
        .unwrap()
        .build()
        .unwrap();
    let server = examples::echo_service::builder()
        .tls(acceptor)
        .addr("127.0.0.1:0")
        .cores(1)
        .start()
        .unwrap();
    let conn =
        rustls::ClientConnection::new(connector.config().clone(), "localhost".try_into().unwrap())
            .unwrap();
    let sock = TcpStream::connect(server.local_addr()).unwrap();
    sock.set_nodelay(true).unwrap();
    sock.set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let mut s = rustls::StreamOwned::new(conn, sock);
    let b = batch(Transport::Framed, Payload::ThriftBinary);
    let mut run_tls = |calls: usize| {
        let mut buf = vec![0u8; 1 << 16];
        let mut have = 0;
        for _ in 0..calls / 32 {
            s.write_all(&b).unwrap();
            let mut replies = 0;
            while replies < 32 {
                match frame::split(Protocol::FramedBinary, &buf[..have], 1 << 20).unwrap() {
                    Split::Frame(n) => {
                        buf.copy_within(n..have, 0);
                        have -= n;
                        replies += 1;
                    }
                    Split::NeedMore(_) => {
                        let n = s.read(&mut buf[have..]).unwrap();
                        assert!(n > 0, "server closed");
                        have += n;
                    }
                }
            }
        }
    };
    run_tls(20_000);
    let before = core_allocs(&server);
    run_tls(100_000);
    let per_batch = (core_allocs(&server) - before) as f64 / (100_000 / 32) as f64;
    println!("TLS: {per_batch:.2} allocations on the core per batch of 32 calls");
    // rustls: the plain text of each record received, and the records sent (a batch is
    // one or two records each way): a handful per batch, far below one per call.
    assert!(
        per_batch <= 8.0,
        "{per_batch:.2} allocations per batch of 32 calls"
    );
    let _ = std::fs::remove_dir_all(&dir);
}
