//! The extension points at work, with the small implementations in
//! `examples/src/extensions`: a framing of our own on the same port as the built-in
//! protocols, and middleware on server and client.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::sync::Arc;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use examples::extensions::framing::MagicFraming;
use examples::extensions::middleware::{CallStats, Deny};
use examples::gen::{echo, interop};
use netpoll_codec::frame::Split;
use netpoll_codec::thrift::MessageType;
use netpoll_codec::ByteString;
use netpoll_rpc::client::{ClientBuilder, ClientTransport};
use netpoll_rpc::server::Framing;
use netpoll_rpc::wire::{self, Envelope, Headers, Payload, Transport};
use netpoll_rpc::CallError;

fn npf1_call(addr: std::net::SocketAddr, payload: Payload, seq: i32, msg: &'static [u8]) -> Bytes {
    let env = Envelope {
        transport: Transport::Buffered,
        payload,
        method: ByteString::from_static("echo"),
        seq_id: seq,
        header_seq: seq,
        kind: MessageType::Call,
    };
    let mut message = BytesMut::new();
    let args = echo::EchoEchoArgs {
        msg: Bytes::from_static(msg),
    };
    wire::write_thrift(
        &env,
        &mut message,
        MessageType::Call,
        &args,
        &Headers::default(),
    )
    .unwrap();
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    // Byte by byte at first: detection must wait for the whole magic.
    let framed = MagicFraming::frame(payload, &message);
    for b in &framed[..3] {
        s.write_all(std::slice::from_ref(b)).unwrap();
        std::thread::sleep(Duration::from_millis(5));
    }
    s.write_all(&framed[3..]).unwrap();
    let mut buf = BytesMut::new();
    let frame = loop {
        let mut chunk = [0u8; 4096];
        let n = s.read(&mut chunk).unwrap();
        assert!(n > 0, "closed");
        buf.extend_from_slice(&chunk[..n]);
        if let Split::Frame(len) = MagicFraming.split(&buf, 1 << 20).unwrap() {
            break buf.split_to(len).freeze();
        }
    };
    let (p, m) = MagicFraming.unwrap(frame).unwrap();
    assert_eq!(p, payload);
    let parsed = wire::parse_message(Transport::Buffered, p, m).unwrap();
    assert_eq!(parsed.envelope.seq_id, seq);
    let r: echo::EchoEchoResult = wire::decode_thrift(p, parsed.body).unwrap();
    r.success.unwrap()
}

#[test]
fn a_framing_of_our_own_is_served_beside_the_built_in_protocols() {
    let server = examples::echo_service::builder()
        .addr("127.0.0.1:0")
        .cores(1)
        .framing(MagicFraming)
        .start()
        .unwrap();
    for payload in [Payload::ThriftBinary, Payload::ThriftCompact] {
        assert_eq!(
            &npf1_call(server.local_addr(), payload, 7, b"npf1")[..],
            b"npf1"
        );
    }
    for t in [ClientTransport::Framed, ClientTransport::TTHeader] {
        let c =
            echo::EchoClient::from_builder(ClientBuilder::new(server.local_addr()).transport(t))
                .unwrap();
        assert_eq!(
            &c.echo(Bytes::from_static(b"built-in")).unwrap()[..],
            b"built-in"
        );
    }
}

#[test]
fn middleware_runs_around_calls_on_both_sides_and_can_reject_them() {
    let server_stats = Arc::new(CallStats::default());
    let client_stats = Arc::new(CallStats::default());
    let server = examples::echo_service::builder()
        .addr("127.0.0.1:0")
        .cores(1)
        .middleware(server_stats.clone())
        .middleware(Deny("fail_with"))
        .start()
        .unwrap();
    let b = ClientBuilder::new(server.local_addr()).middleware(client_stats.clone());
    let e = echo::EchoClient::from_builder(b.clone()).unwrap();
    let i = interop::InteropClient::from_builder(b.clone()).unwrap();
    for _ in 0..3 {
        e.echo(Bytes::from_static(b"x")).unwrap();
    }
    assert_eq!(
        &i.delayed_echo(Bytes::from_static(b"later"), 30).unwrap()[..],
        b"later"
    );
    match i.fail_with(1, "no".into()) {
        Err(CallError::Application(a)) => assert!(a.message.contains("not allowed"), "{a:?}"),
        other => panic!("expected the server's middleware to reject it, got {other:?}"),
    }

    let echo_s = server_stats.method("echo");
    assert_eq!(echo_s.calls, 3);
    assert!(echo_s.errors.is_empty());
    assert_eq!(
        echo_s.ids_seen,
        ["echo-0", "echo-1", "echo-2"],
        "call ids travel in headers"
    );
    // A deferred reply ends the call when it is written.
    assert_eq!(server_stats.method("delayed_echo").calls, 1);
    // Rejected by the middleware after it: ended with the rejection's kind.
    let denied = server_stats.method("fail_with");
    assert_eq!(denied.calls, 1);
    assert_eq!(denied.errors.get("resource_exhausted"), Some(&1));

    let echo_c = client_stats.method("echo");
    assert_eq!(echo_c.calls, 3);
    // Both sides describe each call alike: the same sequence ids and frame sizes.
    assert_eq!(echo_c.seq_ids, echo_s.seq_ids);
    assert!(echo_c.request_bytes > 0);
    assert_eq!(echo_c.request_bytes, echo_s.request_bytes);
    assert_eq!(echo_c.response_bytes, echo_s.response_bytes);
    assert_eq!(client_stats.method("fail_with").errors.len(), 1);

    // A client-side middleware rejects before sending: the server never sees the call.
    let denied_here = interop::InteropClient::from_builder(b.middleware(Deny("ping"))).unwrap();
    assert!(matches!(denied_here.ping(), Err(CallError::Application(_))));
    assert_eq!(server_stats.method("ping").calls, 0);
}

/// A framing of our own that carries whole TTHeader frames: their headers reach the
/// server's middleware (and come back in the reply, inside the same framing).
#[test]
fn a_framing_of_our_own_carries_ttheader_metadata() {
    use examples::extensions::framing::TTHEADER_INSIDE;
    use examples::extensions::middleware::CALL_ID;
    use netpoll_codec::frame::Protocol;

    let stats = Arc::new(CallStats::default());
    let server = examples::echo_service::builder()
        .addr("127.0.0.1:0")
        .cores(1)
        .framing(MagicFraming)
        .middleware(stats.clone())
        .start()
        .unwrap();
    let env = Envelope {
        transport: Transport::TTHeader {
            framed_payload: false,
        },
        payload: Payload::ThriftBinary,
        method: ByteString::from_static("echo"),
        seq_id: 5,
        header_seq: 5,
        kind: MessageType::Call,
    };
    let mut tt = BytesMut::new();
    let h = Headers {
        strs: &[(CALL_ID, b"inside-npf1")],
        ..Headers::default()
    };
    let args = echo::EchoEchoArgs {
        msg: Bytes::from_static(b"wrapped"),
    };
    wire::write_thrift(&env, &mut tt, MessageType::Call, &args, &h).unwrap();
    let mut s = TcpStream::connect(server.local_addr()).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    s.write_all(&MagicFraming::frame_ttheader(&tt)).unwrap();
    let mut buf = BytesMut::new();
    let frame = loop {
        if let Split::Frame(len) = MagicFraming.split(&buf, 1 << 20).unwrap() {
            break buf.split_to(len).freeze();
        }
        let mut chunk = [0u8; 4096];
        let n = s.read(&mut chunk).unwrap();
        assert!(n > 0, "closed");
        buf.extend_from_slice(&chunk[..n]);
    };
    assert_eq!(
        frame[4], TTHEADER_INSIDE,
        "the reply is a TTHeader frame too"
    );
    let p = wire::parse(Protocol::TTHeader, frame.slice(9..)).unwrap();
    assert_eq!(p.envelope.seq_id, 5);
    let back = p.ttheader.and_then(|t| t.str_header(CALL_ID));
    assert_eq!(back.as_deref(), Some(&b"inside-npf1"[..]));
    let r: echo::EchoEchoResult = wire::decode_thrift(p.envelope.payload, p.body).unwrap();
    assert_eq!(&r.success.unwrap()[..], b"wrapped");
    assert_eq!(stats.method("echo").ids_seen, ["inside-npf1"]);
}

/// A server middleware's headers travel back with the reply: written at once, deferred,
/// or a rejection. Checked from a raw TTHeader socket.
#[test]
fn a_server_middleware_adds_headers_to_the_reply() {
    use examples::extensions::middleware::CALL_ID;
    use netpoll_codec::frame::Protocol;
    use netpoll_codec::thrift::Message;

    let server = examples::echo_service::builder()
        .addr("127.0.0.1:0")
        .cores(1)
        .middleware(CallStats::default())
        .middleware(Deny("fail_with"))
        .start()
        .unwrap();
    let mut s = TcpStream::connect(server.local_addr()).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let mut buf = BytesMut::new();
    let mut call =
        |method: &'static str, seq: i32, args: &dyn Fn(&Envelope, &mut BytesMut, &Headers<'_>)| {
            let env = Envelope {
                transport: Transport::TTHeader {
                    framed_payload: false,
                },
                payload: Payload::ThriftBinary,
                method: ByteString::from_static(method),
                seq_id: seq,
                header_seq: seq,
                kind: MessageType::Call,
            };
            let id = format!("raw-{seq}");
            let h = Headers {
                strs: &[(CALL_ID, id.as_bytes())],
                ..Headers::default()
            };
            let mut out = BytesMut::new();
            args(&env, &mut out, &h);
            s.write_all(&out).unwrap();
            let frame = loop {
                if let Split::Frame(n) =
                    netpoll_codec::frame::split(Protocol::TTHeader, &buf, 1 << 20).unwrap()
                {
                    break buf.split_to(n).freeze();
                }
                let mut chunk = [0u8; 4096];
                let n = s.read(&mut chunk).unwrap();
                assert!(n > 0, "closed");
                buf.extend_from_slice(&chunk[..n]);
            };
            let p = wire::parse(Protocol::TTHeader, frame).unwrap();
            assert_eq!(p.envelope.seq_id, seq);
            let got = p.ttheader.and_then(|t| t.str_header(CALL_ID));
            assert_eq!(
                got.as_deref(),
                Some(id.as_bytes()),
                "{method}: the reply's headers"
            );
            p.envelope.kind
        };
    fn write<M: Message>(m: M) -> impl Fn(&Envelope, &mut BytesMut, &Headers<'_>) {
        move |env, out, h| wire::write_thrift(env, out, MessageType::Call, &m, h).unwrap()
    }
    let echo = write(echo::EchoEchoArgs {
        msg: Bytes::from_static(b"hi"),
    });
    assert_eq!(call("echo", 1, &echo), MessageType::Reply);
    let later = write(interop::InteropDelayedEchoArgs {
        msg: Bytes::from_static(b"later"),
        delay_ms: 20,
    });
    assert_eq!(call("delayed_echo", 2, &later), MessageType::Reply);
    let fail = write(interop::InteropFailWithArgs {
        code: 1,
        message: "no".into(),
    });
    assert_eq!(call("fail_with", 3, &fail), MessageType::Exception);
}

/// The resolver and balancer traits, with the smallest implementations: the instances of
/// a service come from a list, and the client sends calls to each in turn.
#[test]
fn a_resolver_finds_instances_and_a_balancer_spreads_calls() {
    use examples::extensions::discovery::{HostPorts, RoundRobin};
    use netpoll_rpc::discovery::Resolver;

    let stats: Vec<_> = (0..3).map(|_| Arc::new(CallStats::default())).collect();
    let servers: Vec<_> = stats
        .iter()
        .map(|st| {
            examples::echo_service::builder()
                .addr("127.0.0.1:0")
                .cores(1)
                .middleware(st.clone())
                .start()
                .unwrap()
        })
        .collect();
    let addrs: Vec<_> = servers.iter().map(|s| s.local_addr()).collect();
    let resolver = HostPorts::default().with("echo-service", &addrs);
    assert!(resolver.resolve("Nope").is_err());
    let client = echo::EchoClient::from_builder(
        ClientBuilder::default()
            .destination("echo-service")
            .resolver(resolver)
            .load_balancer(RoundRobin),
    )
    .unwrap();
    for _ in 0..9 {
        client.echo(Bytes::from_static(b"rr")).unwrap();
    }
    let served: Vec<u64> = stats.iter().map(|s| s.method("echo").calls).collect();
    assert_eq!(served, [3, 3, 3], "each instance in turn");
    drop(servers);
}

/// A client's middlewares start and end its streams too: the call id reaches the server's
/// middleware, each stream ends once with its outcome (OK, a status, a cancellation), and
/// a middleware can refuse a stream before it opens.
#[test]
fn client_middleware_runs_around_streams() {
    use examples::gen::pb::streamer::{Chunk, RepeatRequest, StreamerClient};
    let server_stats = Arc::new(CallStats::default());
    let client_stats = Arc::new(CallStats::default());
    let server = examples::echo_service::builder()
        .addr("127.0.0.1:0")
        .cores(1)
        .middleware(server_stats.clone())
        .start()
        .unwrap();
    let b = ClientBuilder::new(server.local_addr())
        .grpc()
        .middleware(client_stats.clone());
    let c = StreamerClient::from_builder(b.clone()).unwrap();
    // OK.
    let s = c.chat().unwrap();
    s.send(&Chunk { msg: "a".into() }).unwrap();
    assert_eq!(&s.recv().unwrap().unwrap().msg[..], b"a");
    s.close_send();
    assert!(s.recv().unwrap().is_none());
    // Refused by the server's handler.
    let s = c
        .repeat(RepeatRequest {
            msg: "x".into(),
            count: -1,
        })
        .unwrap();
    assert!(s.recv().is_err());
    // Cancelled by us.
    let s = c
        .repeat(RepeatRequest {
            msg: "y".into(),
            count: 1_000_000,
        })
        .unwrap();
    s.recv().unwrap().unwrap();
    s.cancel();
    let chat = client_stats.method("Chat");
    assert_eq!((chat.calls, chat.errors.len()), (1, 0), "{chat:?}");
    let repeat = client_stats.method("Repeat");
    assert_eq!(repeat.calls, 2, "{repeat:?}");
    assert_eq!(
        repeat.errors.get("invalid_argument"),
        Some(&1),
        "{repeat:?}"
    );
    assert_eq!(repeat.errors.get("cancelled"), Some(&1), "{repeat:?}");
    // The call ids travelled with the streams.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
    while server_stats.method("Repeat").ids_seen.len() < 2 && std::time::Instant::now() < deadline {
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
    assert_eq!(server_stats.method("Chat").ids_seen, ["Chat-0"]);
    assert_eq!(
        server_stats.method("Repeat").ids_seen,
        ["Repeat-1", "Repeat-2"]
    );
    // A client middleware refuses a stream before it opens: the server never sees it.
    let denied = StreamerClient::from_builder(b.middleware(Deny("Concat"))).unwrap();
    assert!(matches!(denied.concat(), Err(CallError::Application(_))));
    assert!(server_stats.method("Concat").ids_seen.is_empty());
}
