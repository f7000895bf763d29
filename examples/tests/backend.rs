//! The epoll backend where io_uring cannot be used: `echo_server` started under a seccomp
//! filter that refuses io_uring as Docker's default profile does falls back to epoll on
//! its own and serves every protocol, in plain text and over TLS; `NETPOLL_BACKEND`
//! chooses a backend, and a bad value is refused with a message that names the choices.

mod common;

use std::process::Command;
use std::time::Duration;

use bytes::Bytes;
use common::{pem, reply, thrift_shapes, EchoServer, Raw};
use examples::gen::{echo, pb};
use netpoll_rpc::client::{ClientBuilder, ClientTransport};
use netpoll_rpc::tls::TlsConnector;

/// Every protocol `echo_server` speaks, against the server at `addr`: Thrift in each
/// transport and protocol (raw), Kitex Protobuf framed and in TTHeader, gRPC unary and
/// streaming, and TLS (TTHeader and gRPC) when `tls` (its plain text is allowed too).
fn every_protocol(addr: std::net::SocketAddr, tls: bool) {
    for (t, p) in thrift_shapes() {
        let mut c = Raw::connect(addr, t, p);
        c.send_thrift(
            "echo",
            1,
            &echo::EchoEchoArgs {
                msg: Bytes::from_static(b"epoll"),
            },
            0,
        );
        let r: echo::EchoEchoResult = reply(c.read().expect("reply"));
        assert_eq!(r.success.as_deref(), Some(&b"epoll"[..]), "{t:?} {p:?}");
    }
    let big = Bytes::from((0..1 << 20).map(|i| (i % 251) as u8).collect::<Vec<u8>>());
    for t in [ClientTransport::Framed, ClientTransport::TTHeader] {
        let c = pb::echo::EchoClient::from_builder(ClientBuilder::new(addr).transport(t)).unwrap();
        let r = c.echo(pb::echo::EchoRequest { msg: big.clone() }).unwrap();
        assert_eq!(r.msg, big, "Kitex Protobuf over {t:?}");
    }
    let grpc = |b: ClientBuilder| {
        let c = pb::echo::EchoClient::from_builder(b.clone().grpc()).unwrap();
        let r = c.echo(pb::echo::EchoRequest { msg: big.clone() }).unwrap();
        assert_eq!(r.msg, big, "gRPC unary");
        let s = pb::streamer::StreamerClient::from_builder(b.grpc())
            .unwrap()
            .chat()
            .unwrap();
        for i in 0..200 {
            let m = Bytes::from(format!("chat {i}"));
            s.send(&pb::streamer::Chunk { msg: m.clone() }).unwrap();
            assert_eq!(s.recv().unwrap().unwrap().msg, m);
        }
        s.close_send();
        assert!(s.recv().unwrap().is_none());
    };
    grpc(ClientBuilder::new(addr));
    if tls {
        let connector = || {
            TlsConnector::builder(pem("ca.pem"))
                .unwrap()
                .build()
                .unwrap()
        };
        let b = ClientBuilder::new(addr)
            .connect_timeout(Duration::from_secs(5))
            .tls(connector(), "localhost")
            .unwrap();
        let c = echo::EchoClient::from_builder(b).unwrap();
        assert_eq!(c.echo(big.clone()).unwrap(), big, "Thrift over TLS");
        grpc(
            ClientBuilder::new(addr)
                .tls(connector(), "localhost")
                .unwrap(),
        );
    }
}

#[test]
fn where_io_uring_is_blocked_the_server_runs_on_epoll_and_serves_every_protocol() {
    let (cert, key) = (pem("server.pem"), pem("server.key"));
    let server = EchoServer::start_without_io_uring(&[
        "--tls-cert",
        &cert,
        "--tls-key",
        &key,
        "--tls-allow-plaintext",
    ]);
    assert_eq!(
        server.backend, "epoll",
        "chosen on its own, io_uring refused"
    );
    every_protocol(server.addr, true);
}

#[test]
fn netpoll_backend_chooses_and_a_bad_value_is_refused() {
    for (value, want) in [("epoll", "epoll"), ("io_uring", "io_uring")] {
        let server = EchoServer::start_with_env(&[("NETPOLL_BACKEND", value)], &[]);
        assert_eq!(server.backend, want);
        every_protocol(server.addr, false);
    }
    let out = Command::new(env!("CARGO_BIN_EXE_echo_server"))
        .args(["--addr", "127.0.0.1:0", "--cores", "1"])
        .env("NETPOLL_BACKEND", "kqueue")
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("NETPOLL_BACKEND must be io_uring, epoll or auto"),
        "{err}"
    );
}
