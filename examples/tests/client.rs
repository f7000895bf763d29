//! The generated clients against our server over every client transport: typed results,
//! declared exceptions, application errors, timeouts, oneway calls and pipelining.

use std::sync::mpsc;
use std::time::Duration;

use bytes::Bytes;
use examples::gen::{echo, interop, pb};
use netpoll_codec::thrift::ApplicationExceptionKind;
use netpoll_rpc::client::{ClientBuilder, ClientTransport};
use netpoll_rpc::CallError;

fn server() -> netpoll_rpc::server::Server {
    examples::echo_service::builder()
        .addr("127.0.0.1:0")
        .cores(1)
        .start()
        .expect("server starts")
}

const TRANSPORTS: [ClientTransport; 3] = [
    ClientTransport::TTHeader,
    ClientTransport::TTHeaderFramed,
    ClientTransport::Framed,
];

#[test]
fn thrift_clients_call_every_method_over_every_transport() {
    let s = server();
    for t in TRANSPORTS {
        for compact in [false, true] {
            let what = format!("{t:?} compact={compact}");
            let b = ClientBuilder::new(s.local_addr())
                .transport(t)
                .compact(compact);
            let c = interop::InteropClient::from_builder(b.clone()).unwrap();
            let v = interop::AllTypes {
                i64v: -5,
                tags: ["a".into(), "b".into()].into_iter().collect(),
                ..Default::default()
            };
            assert_eq!(c.roundtrip(v.clone()).unwrap(), v, "{what}");
            assert_eq!(c.fail_with(0, "ok".into()).unwrap(), 0, "{what}");
            match c.fail_with(3, "bad".into()) {
                Err(CallError::Declared(interop::InteropFailWithError::Err(e))) => {
                    assert_eq!((e.code, &*e.message), (3, "bad"), "{what}")
                }
                other => panic!("{what}: expected the declared exception, got {other:?}"),
            }
            c.ping().unwrap();
            let before = c.fired_total().unwrap();
            c.fire(2);
            c.fire(3);
            // Oneway calls on one connection run in order, before the next call.
            assert_eq!(c.fired_total().unwrap(), before + 5, "{what}");
            let late = c.delayed_echo(Bytes::from_static(b"zz"), 20).unwrap();
            assert_eq!(&late[..], b"zz");

            let e = echo::EchoClient::from_builder(b).unwrap();
            assert_eq!(
                &e.echo(Bytes::from_static(b"hey")).unwrap()[..],
                b"hey",
                "{what}"
            );
        }
    }
}

#[test]
fn protobuf_clients_over_kitex_protobuf_and_ttheader() {
    let s = server();
    for t in [ClientTransport::Framed, ClientTransport::TTHeader] {
        let c = pb::echo::EchoClient::from_builder(ClientBuilder::new(s.local_addr()).transport(t))
            .unwrap();
        let r = c
            .echo(pb::echo::EchoRequest {
                msg: Bytes::from_static(b"proto"),
            })
            .unwrap();
        assert_eq!(&r.msg[..], b"proto", "{t:?}");
    }
}

#[test]
fn a_call_past_its_deadline_times_out_and_the_client_recovers() {
    let s = server();
    let c = interop::InteropClient::connect(s.local_addr()).unwrap();
    let quick = c.with_timeout(Some(Duration::from_millis(50)));
    match quick.delayed_echo(Bytes::from_static(b"x"), 300) {
        Err(CallError::Timeout) => {}
        other => panic!("expected a timeout, got {other:?}"),
    }
    // The late reply is dropped; the next call gets its own reply.
    assert_eq!(c.fail_with(0, "".into()).unwrap(), 0);
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(c.fail_with(0, "".into()).unwrap(), 0);
}

/// A connection keeps its calls' deadlines in one queue while they come in order; a call
/// with a shorter timeout than the one before it must still time out on its own time,
/// and the longer one still get its reply.
#[test]
fn a_shorter_deadline_behind_a_longer_one_times_out_on_time() {
    let s = server();
    let c = interop::InteropClient::connect(s.local_addr()).unwrap();
    let long = c.with_timeout(Some(Duration::from_secs(5)));
    let slow = std::thread::spawn(move || long.delayed_echo(Bytes::from_static(b"slow"), 600));
    std::thread::sleep(Duration::from_millis(50));
    let quick = c.with_timeout(Some(Duration::from_millis(100)));
    let t0 = std::time::Instant::now();
    match quick.delayed_echo(Bytes::from_static(b"x"), 400) {
        Err(CallError::Timeout) => {}
        other => panic!("expected a timeout, got {other:?}"),
    }
    let took = t0.elapsed();
    assert!(
        took < Duration::from_millis(350),
        "the 100 ms call timed out after {took:?}"
    );
    assert_eq!(&slow.join().unwrap().unwrap()[..], b"slow");
    // Several calls with one timeout time out in turn, each on its own time.
    let quick = c.with_timeout(Some(Duration::from_millis(80)));
    let calls: Vec<_> = (0..4u64)
        .map(|i| {
            let q = quick.clone();
            std::thread::spawn(move || {
                std::thread::sleep(Duration::from_millis(30 * i));
                let t0 = std::time::Instant::now();
                let r = q.delayed_echo(Bytes::from_static(b"y"), 500);
                (
                    r.is_err_and(|e| matches!(e, CallError::Timeout)),
                    t0.elapsed(),
                )
            })
        })
        .collect();
    for h in calls {
        let (timed_out, took) = h.join().unwrap();
        assert!(timed_out && took < Duration::from_millis(350), "{took:?}");
    }
    assert_eq!(c.fail_with(0, "".into()).unwrap(), 0);
}

#[test]
fn application_errors_and_connect_failures_are_typed() {
    // A Thrift client of a method the server does not have: UNKNOWN_METHOD.
    let s = examples::echo_service::builder()
        .addr("127.0.0.1:0")
        .cores(1)
        .start()
        .unwrap();
    let hello = examples::gen::hello_thrift::HelloClient::connect(s.local_addr()).unwrap();
    match hello.say_hello(examples::gen::hello_thrift::Request::default()) {
        Err(CallError::Application(e)) => {
            assert_eq!(e.kind, ApplicationExceptionKind::UnknownMethod)
        }
        other => panic!("expected UNKNOWN_METHOD, got {other:?}"),
    }
    let addr = s.local_addr();
    drop(s);
    let c = echo::EchoClient::connect(addr).unwrap();
    match c.echo(Bytes::new()) {
        Err(e @ CallError::Connect(_)) => assert!(e.is_retryable()),
        other => panic!("expected a connect error, got {other:?}"),
    }
}

#[test]
fn many_calls_in_flight_from_one_thread() {
    let s = server();
    let c =
        echo::EchoClient::from_builder(ClientBuilder::new(s.local_addr()).connections(4)).unwrap();
    let (tx, rx) = mpsc::channel();
    let n = 20_000;
    for i in 0..n {
        let tx = tx.clone();
        let msg = Bytes::from(format!("m{i}"));
        c.echo_with(msg.clone(), move |r| {
            let _ = tx.send(r.map(|got| got == msg));
        });
    }
    for _ in 0..n {
        assert!(rx.recv_timeout(Duration::from_secs(10)).unwrap().unwrap());
    }
}

/// A server that answers each connection's first call with TTHeader's `crrst` set (as a
/// server shutting down does) and says how many connections it accepted.
#[test]
fn a_reply_with_crrst_moves_the_client_to_a_new_connection() {
    use std::io::{Read, Write};
    use std::net::TcpListener;

    use netpoll_codec::frame::{Protocol, Split};
    use netpoll_codec::thrift::MessageType;
    use netpoll_rpc::wire::{self, Headers};

    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let server = std::thread::spawn(move || {
        let mut accepted = 0;
        for stream in listener.incoming().take(2) {
            let mut s = stream.unwrap();
            accepted += 1;
            let mut buf = Vec::new();
            let mut chunk = [0u8; 4096];
            let frame = loop {
                if let Ok(Split::Frame(n)) =
                    netpoll_codec::frame::split(Protocol::TTHeader, &buf, 1 << 20)
                {
                    break Bytes::copy_from_slice(&buf[..n]);
                }
                let n = s.read(&mut chunk).unwrap();
                assert!(n > 0, "client closed before calling");
                buf.extend_from_slice(&chunk[..n]);
            };
            let p = wire::parse(Protocol::TTHeader, frame).unwrap();
            let args: echo::EchoEchoArgs = wire::decode_thrift(p.envelope.payload, p.body).unwrap();
            let mut out = bytes::BytesMut::new();
            let h = Headers {
                strs: &[("crrst", b"1")],
                ..Headers::default()
            };
            let result = echo::EchoEchoResult {
                success: Some(args.msg),
            };
            wire::write_thrift(&p.envelope, &mut out, MessageType::Reply, &result, &h).unwrap();
            s.write_all(&out).unwrap();
            // The client closes a retired connection once its calls are answered.
            let mut rest = [0u8; 16];
            assert_eq!(
                s.read(&mut rest).unwrap_or(0),
                0,
                "the retired connection stays open"
            );
        }
        accepted
    });
    let c = echo::EchoClient::connect(addr).unwrap();
    assert_eq!(&c.echo(Bytes::from_static(b"one")).unwrap()[..], b"one");
    assert_eq!(&c.echo(Bytes::from_static(b"two")).unwrap()[..], b"two");
    assert_eq!(server.join().unwrap(), 2);
}

/// The client's futures under tokio (a current-thread runtime: nothing may block it):
/// many calls in flight at once, each resolved when its reply arrives, declared
/// exceptions included.
#[test]
fn async_calls_work_under_tokio() {
    let server = examples::echo_service::serve("127.0.0.1:0", 1).unwrap();
    let addr = server.local_addr();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()
        .unwrap();
    rt.block_on(async move {
        let c = interop::InteropClient::connect(addr).unwrap();
        let t0 = std::time::Instant::now();
        // 50 calls that each take 100 ms on the server, all in flight together.
        let calls: Vec<_> = (0..50)
            .map(|i| {
                let c = c.clone();
                tokio::spawn(async move {
                    let msg = Bytes::from(format!("m{i}"));
                    let got = c.delayed_echo_async(msg.clone(), 100).await.unwrap();
                    assert_eq!(got, msg);
                })
            })
            .collect();
        for h in calls {
            h.await.unwrap();
        }
        assert!(
            t0.elapsed() < std::time::Duration::from_millis(900),
            "the calls overlapped: {:?}",
            t0.elapsed()
        );
        // A declared exception arrives typed.
        match c.fail_with_async(7, "seven".into()).await {
            Err(netpoll_rpc::CallError::Declared(_)) => {}
            other => panic!("expected the declared exception, got {other:?}"),
        }
    });
}

/// Connection upkeep: a connection without calls is closed after the idle timeout (the
/// server sees the client leave), and the next call opens a new one. Warm-up connects
/// before the first call.
#[test]
fn idle_connections_close_and_warm_up_connects_early() {
    let server = examples::echo_service::serve("127.0.0.1:0", 1).unwrap();
    let c = echo::EchoClient::from_builder(
        ClientBuilder::new(server.local_addr())
            .idle_timeout(Some(Duration::from_millis(200)))
            .warm_up(true),
    )
    .unwrap();
    c.echo(Bytes::from_static(b"a")).unwrap();
    // Idle: the client closes its connection.
    let t0 = std::time::Instant::now();
    while server.close_counts().peer_closed == 0 {
        assert!(
            t0.elapsed() < Duration::from_secs(3),
            "the idle connection is closed"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    // The next call reconnects.
    assert_eq!(&c.echo(Bytes::from_static(b"b")).unwrap()[..], b"b");

    // Warm-up: the client connects when it is built, before any call.
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let _warm = echo::EchoClient::from_builder(
        ClientBuilder::new(listener.local_addr().unwrap()).warm_up(true),
    )
    .unwrap();
    listener.set_nonblocking(true).unwrap();
    let t0 = std::time::Instant::now();
    while listener.accept().is_err() {
        assert!(
            t0.elapsed() < Duration::from_secs(2),
            "a warmed-up client connects before its first call"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// A client whose instances come from DNS (the system resolver): `localhost:PORT`.
#[test]
fn a_dns_resolver_finds_the_service() {
    use netpoll_rpc::discovery::{DnsResolver, Resolver};
    let server = examples::echo_service::serve("127.0.0.1:0", 1).unwrap();
    let name = format!("localhost:{}", server.local_addr().port());
    let r = DnsResolver::new([name.clone()]).interval(Duration::from_millis(100));
    let found = r.resolve("echo").unwrap();
    assert!(
        found.iter().any(|i| i.addr == server.local_addr()),
        "{name} resolves to the server: {found:?}"
    );
    let c = echo::EchoClient::new("echo", ClientBuilder::default().resolver(r)).unwrap();
    for _ in 0..5 {
        assert_eq!(&c.echo(Bytes::from_static(b"dns")).unwrap()[..], b"dns");
    }
}
