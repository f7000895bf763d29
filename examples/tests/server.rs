//! The server end to end, over real loopback sockets: every transport and payload, errors,
//! reply order, deferred replies, limits, timeouts and graceful shutdown. Requests are
//! written by a raw client (tests/common) so that nothing of our client is assumed.

mod common;

use std::io::Write;
use std::time::{Duration, Instant};

use bytes::Bytes;
use common::{exception, reply, thrift_shapes, Raw};
use examples::gen::{echo, hello_thrift, interop, pb};
use netpoll_codec::thrift::{ApplicationExceptionKind, MessageType};
use netpoll_rpc::server::Server;
use netpoll_rpc::wire::{Payload, Transport};
use netpoll_rpc::{CallContext, Reply};

/// `SayHello` panics when asked to.
struct Panicky;

impl hello_thrift::Hello for Panicky {
    fn say_hello(
        &self,
        _ctx: &CallContext<'_>,
        req: hello_thrift::Request,
    ) -> Reply<hello_thrift::Response> {
        if &*req.name == "panic" {
            panic!("asked to panic");
        }
        Reply::ok(hello_thrift::Response { message: req.name })
    }
}

fn start(b: netpoll_rpc::server::ServerBuilder) -> Server {
    b.service(hello_thrift::HelloServer::new(Panicky))
        .addr("127.0.0.1:0")
        .cores(1)
        .start()
        .expect("server starts")
}

fn server() -> Server {
    start(examples::echo_service::builder())
}

fn echo_args(msg: &'static [u8]) -> echo::EchoEchoArgs {
    echo::EchoEchoArgs {
        msg: Bytes::from_static(msg),
    }
}

#[test]
fn every_thrift_transport_and_protocol_serves_every_method() {
    let s = server();
    for (t, p) in thrift_shapes() {
        let what = format!("{t:?} {p:?}");
        let mut c = Raw::connect(s.local_addr(), t, p);
        c.send_thrift("echo", 1, &echo_args(b"hi"), 0);
        let r: echo::EchoEchoResult = reply(c.read().expect("reply"));
        assert_eq!(r.success.as_deref(), Some(&b"hi"[..]), "{what}");

        let v = interop::AllTypes {
            str: "h\u{e9}llo".into(),
            ints: vec![1, -2, 3],
            inner: interop::Inner {
                id: 7,
                label: Some("x".into()),
            },
            ..Default::default()
        };
        c.send_thrift(
            "roundtrip",
            2,
            &interop::InteropRoundtripArgs { v: v.clone() },
            0,
        );
        let parsed = c.read().expect("reply");
        assert_eq!(parsed.envelope.seq_id, 2, "{what}");
        let r: interop::InteropRoundtripResult = reply(parsed);
        assert_eq!(r.success, Some(v), "{what}");

        c.send_thrift(
            "fail_with",
            3,
            &interop::InteropFailWithArgs {
                code: 7,
                message: "boom".into(),
            },
            0,
        );
        let r: interop::InteropFailWithResult = reply(c.read().expect("reply"));
        assert_eq!(r.success, None, "{what}");
        let e = r.err.expect("declared exception");
        assert_eq!((e.code, &*e.message), (7, "boom"), "{what}");

        // Unknown method: UNKNOWN_METHOD, and the connection stays usable.
        c.send_thrift("no_such_method", 4, &interop::InteropPingArgs {}, 0);
        let parsed = c.read().expect("reply");
        assert_eq!(parsed.envelope.seq_id, 4);
        assert_eq!(
            exception(parsed).kind,
            ApplicationExceptionKind::UnknownMethod,
            "{what}"
        );
        c.send_thrift("ping", 5, &interop::InteropPingArgs {}, 0);
        let _: interop::InteropPingResult = reply(c.read().expect("reply after unknown"));
    }
}

#[test]
fn kitex_protobuf_alone_and_in_ttheader() {
    let s = server();
    for t in [
        Transport::KitexProtobuf,
        Transport::TTHeader {
            framed_payload: false,
        },
    ] {
        let mut c = Raw::connect(s.local_addr(), t, Payload::Protobuf);
        c.send_pb(
            "Echo",
            9,
            &pb::echo::EchoRequest {
                msg: Bytes::from_static(b"pb"),
            },
        );
        let parsed = c.read().expect("reply");
        assert_eq!(parsed.envelope.kind, MessageType::Reply);
        assert_eq!(parsed.envelope.seq_id, 9);
        let r: pb::echo::EchoReply = prost::Message::decode(parsed.body).unwrap();
        assert_eq!(&r.msg[..], b"pb");
        // The Kitex Protobuf equivalent of UNKNOWN_METHOD.
        c.send_pb("Nope", 10, &pb::echo::EchoRequest::default());
        let parsed = c.read().expect("reply");
        assert_eq!(parsed.envelope.kind, MessageType::Exception);
        let e: netpoll_codec::frame::ErrorProto = prost::Message::decode(parsed.body).unwrap();
        assert_eq!(e.type_id, 1, "{e:?}");
        // A Protobuf call of a Thrift-only method is refused, not misread.
        c.send_pb("ping", 11, &pb::echo::EchoRequest::default());
        let parsed = c.read().expect("reply");
        assert_eq!(parsed.envelope.kind, MessageType::Exception);
        c.send_pb(
            "Echo",
            12,
            &pb::echo::EchoRequest {
                msg: Bytes::from_static(b"again"),
            },
        );
        let parsed = c.read().expect("reply");
        assert_eq!(parsed.envelope.kind, MessageType::Reply);
    }
}

#[test]
fn undecodable_arguments_get_protocol_error_and_the_connection_survives() {
    let s = server();
    let mut c = Raw::connect(s.local_addr(), Transport::Framed, Payload::ThriftBinary);
    // A frame whose header parses but whose body is a binary field of length -1.
    let mut f = Vec::new();
    let body: &[u8] = &[
        0x80, 0x01, 0x00, 0x01, 0, 0, 0, 4, b'e', b'c', b'h', b'o', 0, 0, 0, 1, 11, 0, 1, 0xff,
        0xff, 0xff, 0xff,
    ];
    f.extend_from_slice(&(body.len() as u32).to_be_bytes());
    f.extend_from_slice(body);
    c.stream.write_all(&f).unwrap();
    let parsed = c.read().expect("reply");
    assert_eq!(
        exception(parsed).kind,
        ApplicationExceptionKind::ProtocolError
    );
    c.send_thrift("echo", 2, &echo_args(b"ok"), 0);
    let r: echo::EchoEchoResult = reply(c.read().expect("reply"));
    assert_eq!(r.success.as_deref(), Some(&b"ok"[..]));
}

#[test]
fn garbage_and_oversized_frames_close_the_connection_only() {
    let s = start(examples::echo_service::builder().max_frame(4096));
    let mut c = Raw::connect(s.local_addr(), Transport::Framed, Payload::ThriftBinary);
    c.stream
        .write_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        .unwrap();
    assert!(c.closed(), "unknown protocol must close the connection");

    let mut c = Raw::connect(s.local_addr(), Transport::Framed, Payload::ThriftBinary);
    c.stream
        .write_all(&[0, 0x10, 0, 0, 0x80, 0x01, 0, 1])
        .unwrap();
    assert!(
        c.closed(),
        "a frame over max_frame must close the connection"
    );

    let mut c = Raw::connect(s.local_addr(), Transport::Framed, Payload::ThriftBinary);
    c.stream
        .write_all(&[0, 0, 0, 6, 0x80, 0x01, 0, 1, 0xff, 0xff])
        .unwrap();
    assert!(
        c.closed(),
        "an unreadable message header must close the connection"
    );

    // The server is unharmed.
    let mut c = Raw::connect(s.local_addr(), Transport::Framed, Payload::ThriftBinary);
    c.send_thrift("echo", 1, &echo_args(b"still here"), 0);
    let r: echo::EchoEchoResult = reply(c.read().expect("reply"));
    assert_eq!(r.success.as_deref(), Some(&b"still here"[..]));
}

#[test]
fn a_panicking_handler_gets_internal_error_and_the_server_keeps_serving() {
    let s = server();
    let mut c = Raw::connect(
        s.local_addr(),
        Transport::TTHeader {
            framed_payload: false,
        },
        Payload::ThriftBinary,
    );
    let req = |m: &'static str| hello_thrift::HelloSayHelloArgs {
        req: hello_thrift::Request { name: m.into() },
    };
    c.send_thrift("SayHello", 1, &req("panic"), 0);
    let e = exception(c.read().expect("reply"));
    assert_eq!(e.kind, ApplicationExceptionKind::InternalError);
    assert!(e.message.contains("asked to panic"), "{e:?}");
    c.send_thrift("SayHello", 2, &req("fine"), 0);
    let r: hello_thrift::HelloSayHelloResult = reply(c.read().expect("reply"));
    assert_eq!(&*r.success.unwrap().message, "fine");
}

fn delayed(ms: i32) -> interop::InteropDelayedEchoArgs {
    interop::InteropDelayedEchoArgs {
        msg: Bytes::from_static(b"late"),
        delay_ms: ms,
    }
}

#[test]
fn replies_keep_call_order_unless_the_caller_allows_otherwise() {
    let s = server();
    // Framed: the fast call's reply waits behind the deferred one.
    let mut c = Raw::connect(s.local_addr(), Transport::Framed, Payload::ThriftBinary);
    c.send_thrift("delayed_echo", 1, &delayed(150), 0);
    c.send_thrift("echo", 2, &echo_args(b"fast"), 0);
    c.send_thrift("echo", 3, &echo_args(b"faster"), 0);
    let seqs: Vec<i32> = (0..3)
        .map(|_| c.read().expect("reply").envelope.seq_id)
        .collect();
    assert_eq!(seqs, [1, 2, 3]);

    // TTHeader with the out-of-order flag: the fast replies come first.
    let mut c = Raw::connect(
        s.local_addr(),
        Transport::TTHeader {
            framed_payload: false,
        },
        Payload::ThriftBinary,
    );
    c.send_thrift("delayed_echo", 1, &delayed(150), 1);
    c.send_thrift("echo", 2, &echo_args(b"fast"), 1);
    let seqs: Vec<i32> = (0..2)
        .map(|_| c.read().expect("reply").envelope.header_seq)
        .collect();
    assert_eq!(seqs, [2, 1]);
}

#[test]
fn a_deferred_reply_does_not_block_its_core() {
    let s = server(); // one core
    let mut slow = Raw::connect(s.local_addr(), Transport::Framed, Payload::ThriftBinary);
    let mut fast = Raw::connect(s.local_addr(), Transport::Framed, Payload::ThriftBinary);
    let t0 = Instant::now();
    slow.send_thrift("delayed_echo", 1, &delayed(400), 0);
    for i in 0..50 {
        fast.send_thrift("echo", i, &echo_args(b"x"), 0);
        let _: echo::EchoEchoResult = reply(fast.read().expect("reply"));
    }
    assert!(
        t0.elapsed() < Duration::from_millis(300),
        "echo calls waited for the delayed one"
    );
    let r: interop::InteropDelayedEchoResult = reply(slow.read().expect("reply"));
    assert_eq!(r.success.as_deref(), Some(&b"late"[..]));
    assert!(t0.elapsed() >= Duration::from_millis(400));
}

#[test]
fn pipelined_calls_all_come_back_with_their_ids() {
    let s = server();
    for (t, p) in thrift_shapes() {
        let mut c = Raw::connect(s.local_addr(), t, p);
        let mut batch = bytes::BytesMut::new();
        for i in 0..2000 {
            let env = c.envelope("echo", i, MessageType::Call);
            netpoll_rpc::wire::write_thrift(
                &env,
                &mut batch,
                MessageType::Call,
                &echo_args(b"0123456789"),
                &Default::default(),
            )
            .unwrap();
        }
        c.stream.write_all(&batch).unwrap();
        for i in 0..2000 {
            let parsed = c.read().expect("reply");
            assert_eq!(parsed.envelope.seq_id, i);
            let r: echo::EchoEchoResult = reply(parsed);
            assert_eq!(r.success.as_deref(), Some(&b"0123456789"[..]));
        }
    }
}

#[test]
fn graceful_shutdown_finishes_calls_in_flight_and_sets_crrst() {
    let s = server();
    let mut c = Raw::connect(
        s.local_addr(),
        Transport::TTHeader {
            framed_payload: true,
        },
        Payload::ThriftBinary,
    );
    c.send_thrift("delayed_echo", 1, &delayed(300), 0);
    std::thread::sleep(Duration::from_millis(50));
    let t0 = Instant::now();
    let stopper = std::thread::spawn(move || s.shutdown(Duration::from_secs(5)));
    let parsed = c.read().expect("the call in flight is answered");
    let tt = parsed.ttheader.as_ref().expect("TTHeader reply");
    assert_eq!(tt.str_header("crrst").as_deref(), Some(&b"1"[..]));
    let r: interop::InteropDelayedEchoResult = reply(parsed);
    assert_eq!(r.success.as_deref(), Some(&b"late"[..]));
    assert!(c.closed(), "the connection closes once drained");
    stopper.join().unwrap();
    assert!(
        t0.elapsed() < Duration::from_secs(3),
        "shutdown waited for the grace period"
    );
}

#[test]
fn connection_limit_idle_and_read_timeouts() {
    let s = start(
        examples::echo_service::builder()
            .max_connections(2)
            .idle_timeout(Duration::from_millis(300))
            .read_timeout(Duration::from_millis(200)),
    );
    let mut a = Raw::connect(s.local_addr(), Transport::Framed, Payload::ThriftBinary);
    let mut b = Raw::connect(s.local_addr(), Transport::Framed, Payload::ThriftBinary);
    a.send_thrift("ping", 1, &interop::InteropPingArgs {}, 0);
    b.send_thrift("ping", 1, &interop::InteropPingArgs {}, 0);
    let _: interop::InteropPingResult = reply(a.read().unwrap());
    let _: interop::InteropPingResult = reply(b.read().unwrap());
    let mut third = Raw::connect(s.local_addr(), Transport::Framed, Payload::ThriftBinary);
    assert!(third.closed(), "a connection over the limit is closed");

    // Idle: closed after ~300 ms without calls.
    let t0 = Instant::now();
    assert!(a.closed());
    let idle = t0.elapsed();
    assert!(
        idle >= Duration::from_millis(200) && idle < Duration::from_secs(2),
        "{idle:?}"
    );
    drop(b);

    // Read timeout: half a frame, then silence.
    let mut c = Raw::connect(s.local_addr(), Transport::Framed, Payload::ThriftBinary);
    c.stream.write_all(&[0, 0, 0, 100, 0x80, 0x01]).unwrap();
    let t0 = Instant::now();
    assert!(c.closed());
    assert!(
        t0.elapsed() < Duration::from_millis(290),
        "{:?}",
        t0.elapsed()
    );
}

/// A graceful shutdown while a connection is throttled (it has as many calls in flight as
/// it may, behind a slow one) still answers the calls it received and had not read yet.
#[test]
fn graceful_shutdown_answers_calls_held_while_throttled() {
    let s = start(examples::echo_service::builder().max_in_flight_per_connection(1));
    let mut c = Raw::connect(s.local_addr(), Transport::Framed, Payload::ThriftBinary);
    c.send_thrift("delayed_echo", 1, &delayed(500), 0);
    c.send_thrift("echo", 2, &echo_args(b"held"), 0);
    std::thread::sleep(Duration::from_millis(100));
    let stopper = std::thread::spawn(move || s.shutdown(Duration::from_secs(5)));
    let first = c.read().expect("the slow reply");
    assert_eq!(first.envelope.seq_id, 1);
    let second = c.read().expect("the held call's reply");
    assert_eq!(second.envelope.seq_id, 2);
    let r: echo::EchoEchoResult = reply(second);
    assert_eq!(r.success.as_deref(), Some(&b"held"[..]));
    stopper.join().unwrap();
}

/// The echo server that the benchmarks measure (`echo_server`, a real process) serves
/// `Echo.echo` through the generated, typed path: its handler gets the decoded argument
/// and returns a typed result, which the generated encoder writes. A raw-bytes shortcut
/// (echoing the request's struct back as the reply's) would return the field the IDL does
/// not declare; the typed path skips it when decoding and answers with `EchoEchoResult`'s
/// own encoding, field 0 only.
#[test]
fn echo_server_answers_through_the_typed_path() {
    let server = common::EchoServer::start(&[]);
    let mut raw = Raw::connect(server.addr, Transport::Framed, Payload::ThriftBinary);
    let mut call = vec![0x80, 0x01, 0x00, 0x01, 0, 0, 0, 4]; // strict header, CALL
    call.extend_from_slice(b"echo");
    call.extend_from_slice(&7i32.to_be_bytes()); // sequence id
    call.extend_from_slice(&[0x08, 0x00, 0x63, 0, 0, 0, 42]); // i32 field 99: undeclared
    call.extend_from_slice(&[0x0b, 0x00, 0x01, 0, 0, 0, 5]); // binary field 1 (msg)
    call.extend_from_slice(b"typed");
    call.push(0x00); // stop
    let mut framed = (call.len() as u32).to_be_bytes().to_vec();
    framed.extend_from_slice(&call);
    raw.stream.write_all(&framed).expect("send");
    let p = raw.read().expect("a reply");
    assert_eq!(p.envelope.seq_id, 7);
    assert_eq!(p.envelope.kind, MessageType::Reply);
    let mut result = vec![0x0b, 0x00, 0x00, 0, 0, 0, 5]; // binary field 0 (success)
    result.extend_from_slice(b"typed");
    result.push(0x00);
    assert_eq!(
        &p.body[..],
        &result[..],
        "the reply is EchoEchoResult's encoding"
    );
}
