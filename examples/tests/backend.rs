//! The epoll backend where io_uring cannot be used: `echo_server` started under a seccomp
//! filter that refuses io_uring as Docker's default profile does falls back to epoll on
//! its own and serves every protocol, in plain text and over TLS; `NETPOLL_BACKEND`
//! chooses a backend, and a bad value is refused with a message that names the choices.
//! And Unix domain sockets: every protocol, plain and TLS, on whichever backend the tests
//! run on (CI runs them on both).

mod common;

use std::process::Command;
use std::time::Duration;

use bytes::Bytes;
use common::{pem, reply, thrift_shapes, EchoServer, Raw};
use examples::gen::{echo, pb};
use netpoll_rpc::client::{ClientBuilder, ClientTransport};
use netpoll_rpc::tls::TlsConnector;

/// Every protocol `echo_server` speaks, against the server at `target` (`host:port` or
/// `unix:/path`): Thrift in each transport and protocol (raw, over TCP at `raw`), Thrift
/// through our client, Kitex Protobuf framed and in TTHeader, gRPC unary and streaming,
/// and TLS (TTHeader and gRPC) when `tls` (its plain text is allowed too).
fn every_protocol(target: &str, raw: Option<std::net::SocketAddr>, tls: bool) {
    for (t, p) in raw.map(|_| thrift_shapes()).unwrap_or_default() {
        let addr = raw.unwrap();
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
        let c = echo::EchoClient::from_builder(ClientBuilder::new(target).transport(t)).unwrap();
        assert_eq!(c.echo(big.clone()).unwrap(), big, "Thrift over {t:?}");
        let c =
            pb::echo::EchoClient::from_builder(ClientBuilder::new(target).transport(t)).unwrap();
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
    grpc(ClientBuilder::new(target));
    if tls {
        let connector = || {
            TlsConnector::builder(pem("ca.pem"))
                .unwrap()
                .build()
                .unwrap()
        };
        let b = ClientBuilder::new(target)
            .connect_timeout(Duration::from_secs(5))
            .tls(connector(), "localhost")
            .unwrap();
        let c = echo::EchoClient::from_builder(b).unwrap();
        assert_eq!(c.echo(big.clone()).unwrap(), big, "Thrift over TLS");
        grpc(
            ClientBuilder::new(target)
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
    every_protocol(&server.addr.to_string(), Some(server.addr), true);
}

#[test]
fn netpoll_backend_chooses_and_a_bad_value_is_refused() {
    for (value, want) in [("epoll", "epoll"), ("io_uring", "io_uring")] {
        let server = EchoServer::start_with_env(&[("NETPOLL_BACKEND", value)], &[]);
        assert_eq!(server.backend, want);
        every_protocol(&server.addr.to_string(), Some(server.addr), false);
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

/// A fresh path for a Unix domain socket.
fn socket_path(name: &str) -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!("echo-sockets-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join(format!("{name}.sock"));
    let _ = std::fs::remove_file(&path);
    path
}

#[test]
fn a_unix_socket_serves_every_protocol_plain_and_over_tls() {
    let path = socket_path("every-protocol");
    let (cert, key) = (pem("server.pem"), pem("server.key"));
    // Two cores: core 0 accepts, and hands every other connection (TLS ones too) over.
    let mut server = EchoServer::start_cores(
        2,
        &[
            "--unix",
            path.to_str().unwrap(),
            "--tls-cert",
            &cert,
            "--tls-key",
            &key,
            "--tls-allow-plaintext",
        ],
    );
    let target = format!("unix:{}", path.display());
    every_protocol(&target, None, true);
    // A graceful stop removes the socket file.
    assert!(server.terminate().success());
    assert!(!path.exists(), "{} was left behind", path.display());
    // A path that is taken is refused, clearly.
    std::fs::write(&path, b"not a socket").unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_echo_server"))
        .args(["--addr", "127.0.0.1:0", "--unix", path.to_str().unwrap()])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("in use"), "{err}");
    let _ = std::fs::remove_file(&path);
}

#[test]
fn a_stopping_server_removes_only_its_own_socket_file() {
    let path = socket_path("replaced");
    let p = path.to_str().unwrap();
    let mut old = EchoServer::start(&["--unix", p]);
    // An operator replaces it: removes the path, and a new server binds it.
    std::fs::remove_file(&path).unwrap();
    let new = EchoServer::start(&["--unix", p]);
    assert!(old.terminate().success());
    assert!(path.exists(), "the old server removed the new one's socket");
    let c = echo::EchoClient::from_builder(ClientBuilder::new(format!("unix:{p}"))).unwrap();
    assert_eq!(&c.echo(Bytes::from_static(b"new")).unwrap()[..], b"new");
    drop(new);
    // A server that fails to start after binding the path leaves no file behind (here
    // its registry cannot be reached).
    let _ = std::fs::remove_file(&path);
    let out = Command::new(env!("CARGO_BIN_EXE_echo_server"))
        .args(["--addr", "127.0.0.1:0", "--unix", p])
        .args(["--registry", "etcd://127.0.0.1:1", "--service", "nowhere"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(!path.exists(), "a failed start left {p}");
}
