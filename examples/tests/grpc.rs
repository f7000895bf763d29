//! gRPC on the echo server's port, from outside: gRPC's own Python library (`grpcio`) and
//! grpc-go (Debian's `golang-google-grpc-dev`) as clients, in plain text and over TLS, and
//! raw HTTP/2 peers that misbehave. `scripts/test.sh` installs them; under `CI` a missing
//! peer fails the test, elsewhere the test says why it skipped.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use bytes::BytesMut;
use netpoll_codec::h2::frame::{self as h2f, flag, kind, Split};
use netpoll_codec::h2::hpack;

mod common;
use common::{pem, EchoServer};

fn idl() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .join("idl")
}

fn script() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/interop/grpc_peer.py")
}

/// Whether grpcio is there; `false` (with the reason) outside CI.
fn have_grpcio() -> bool {
    let ok = Command::new("python3")
        .args(["-c", "import grpc, grpc_tools"])
        .status()
        .is_ok_and(|s| s.success());
    if !ok {
        let why = "the gRPC peer needs `python3 -m pip install grpcio grpcio-tools` \
                   (scripts/test.sh installs them)";
        assert!(std::env::var_os("CI").is_none(), "{why}");
        eprintln!("SKIPPED: {why}");
    }
    ok
}

fn run_peer(args: &[&str]) {
    let out = Command::new("python3")
        .arg(script())
        .arg(idl())
        .args(args)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success() && stdout.contains("all checks passed"),
        "grpc_peer.py {args:?}:\n{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Runs `peer` against `echo_server` (messages up to 8 MiB) in plain text, then over TLS
/// with the test PKI's server certificate: its arguments are the address and, over TLS,
/// the CA's file.
fn plain_and_tls(peer: impl Fn(&[&str])) {
    let server = EchoServer::start(&["--max-frame", "8388608"]);
    peer(&[&server.addr.to_string()]);
    let (cert, key) = (pem("server.pem"), pem("server.key"));
    let tls = EchoServer::start(&[
        "--max-frame",
        "8388608",
        "--tls-cert",
        &cert,
        "--tls-key",
        &key,
    ]);
    peer(&[&tls.addr.to_string(), &pem("ca.pem")]);
}

#[test]
fn grpcio_calls_and_streams_over_a_unix_socket() {
    if !have_grpcio() {
        return;
    }
    let dir = std::env::temp_dir().join(format!("grpc-unix-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("echo.sock");
    let _ = std::fs::remove_file(&path);
    let _server = EchoServer::start(&["--max-frame", "8388608", "--unix", path.to_str().unwrap()]);
    let target = format!("unix:{}", path.display());
    run_peer(&["client", &target]);
    run_peer(&["streams", &target]);
}

#[test]
fn grpcio_calls_our_server_in_plain_text_and_over_tls() {
    if !have_grpcio() {
        return;
    }
    plain_and_tls(|args| run_peer(&[&["client"], args].concat()));
}

#[test]
fn grpcio_streams_every_shape_in_plain_text_and_over_tls() {
    if !have_grpcio() {
        return;
    }
    plain_and_tls(|args| run_peer(&[&["streams"], args].concat()));
}

/// Builds the grpc-go client (`tests/interop/grpc_go`) against Debian's
/// golang-google-grpc-dev (GOPATH mode, Go 1.19); `None` (with the reason) outside CI when
/// Go or the package is missing.
fn grpc_go_client() -> Option<PathBuf> {
    let gopath = "/usr/share/gocode";
    let have = Command::new("go")
        .arg("version")
        .output()
        .is_ok_and(|o| o.status.success())
        && Path::new(gopath)
            .join("src/google.golang.org/grpc")
            .is_dir();
    if !have {
        let why = "the grpc-go peer needs `apt-get install golang-go golang-google-grpc-dev` \
                   (scripts/test.sh installs them)";
        assert!(std::env::var_os("CI").is_none(), "{why}");
        eprintln!("SKIPPED: {why}");
        return None;
    }
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/interop/grpc_go/main.go");
    let bin = Path::new(env!("CARGO_TARGET_TMPDIR")).join("grpc_go_client");
    let out = Command::new("go")
        .args(["build", "-o"])
        .arg(&bin)
        .arg(&src)
        .env("GO111MODULE", "off")
        .env("GOPATH", gopath)
        .env(
            "GOCACHE",
            Path::new(env!("CARGO_TARGET_TMPDIR")).join("go-cache"),
        )
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "go build: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    Some(bin)
}

#[test]
fn grpc_go_calls_and_streams_in_plain_text_and_over_tls() {
    let Some(client) = grpc_go_client() else {
        return;
    };
    let run = |args: &[&str]| {
        let out = Command::new(&client).args(args).output().unwrap();
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(
            out.status.success() && stdout.contains("all checks passed"),
            "grpc-go {args:?}:\n{stdout}{}",
            String::from_utf8_lossy(&out.stderr)
        );
    };
    plain_and_tls(run);
}

/// Our gRPC client's checks against a server of `echo.proto` that behaves as
/// `grpc_peer.py serve` says (statuses on request, a slow reply, metadata sent back).
fn client_checks(addr: std::net::SocketAddr, trailer: bool) {
    use examples::gen::pb::echo::{EchoClient, EchoReply, EchoRequest};
    use netpoll_rpc::client::ClientBuilder;
    use netpoll_rpc::ErrorKind;
    let c = EchoClient::from_builder(ClientBuilder::new(addr).grpc().max_frame(16 << 20)).unwrap();
    for n in [0usize, 1, 128, 100_000, 4 << 20] {
        let msg = bytes::Bytes::from((0..n).map(|i| (i * 7 % 251) as u8).collect::<Vec<u8>>());
        let r = c.echo(EchoRequest { msg: msg.clone() }).unwrap();
        assert_eq!(r.msg, msg, "{n} bytes");
    }
    for (code, kind) in [
        (3, ErrorKind::InvalidArgument),
        (7, ErrorKind::PermissionDenied),
        (9, ErrorKind::FailedPrecondition),
        (16, ErrorKind::Unauthenticated),
    ] {
        let e = c
            .echo(EchoRequest {
                msg: format!("status:{code}").into(),
            })
            .unwrap_err();
        assert_eq!(e.kind(), kind, "{e}");
        assert!(
            e.to_string().contains(&format!("status {code} on purpose")),
            "{e}"
        );
    }
    let e = c
        .client()
        .call::<_, EchoReply>("Nope", EchoRequest::default())
        .unwrap_err();
    assert_eq!(e.kind(), ErrorKind::UnknownMethod, "{e}");
    // gzip requests (the server answers them in gzip).
    let gz = EchoClient::from_builder(
        ClientBuilder::new(addr)
            .grpc()
            .send_gzip(true)
            .max_frame(16 << 20),
    )
    .unwrap();
    for n in [0usize, 100_000, 4 << 20] {
        let msg = bytes::Bytes::from((0..n).map(|i| (i % 13) as u8).collect::<Vec<u8>>());
        assert_eq!(
            gz.echo(EchoRequest { msg: msg.clone() }).unwrap().msg,
            msg,
            "gzip {n} B"
        );
    }
    let (r, back) = c
        .with_transient("tenant", "acme")
        .client()
        .call_meta::<_, EchoReply>("Echo", EchoRequest { msg: "meta".into() })
        .unwrap();
    assert_eq!(&r.msg[..], b"meta");
    let got: Vec<(&str, &[u8])> = back
        .iter()
        .filter(|(k, _)| k.starts_with("x-tenant"))
        .collect();
    let mut want = vec![("x-tenant", &b"acme"[..])];
    if trailer {
        want.push(("x-tenant-trailer", &b"acme"[..]));
    }
    assert_eq!(got, want, "{back:?}");
    let e = c
        .with_timeout(Some(Duration::from_millis(100)))
        .echo(EchoRequest {
            msg: "sleep".into(),
        })
        .unwrap_err();
    assert_eq!(e.kind(), ErrorKind::DeadlineExceeded, "{e}");
    let (tx, rx) = std::sync::mpsc::channel();
    for i in 0..300u32 {
        let tx = tx.clone();
        let msg = bytes::Bytes::from(i.to_be_bytes().to_vec());
        c.echo_with(EchoRequest { msg: msg.clone() }, move |r| {
            tx.send(r.map(|r| r.msg == msg)).unwrap();
        });
    }
    for _ in 0..300 {
        assert!(rx.recv_timeout(Duration::from_secs(10)).unwrap().unwrap());
    }
}

#[test]
fn our_grpc_client_calls_and_streams_with_grpcio() {
    use std::io::BufRead;
    if !have_grpcio() {
        return;
    }
    let mut peer = Command::new("python3")
        .arg(script())
        .arg(idl())
        .arg("serve")
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut line = String::new();
    std::io::BufReader::new(peer.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    let port: u16 = line
        .trim()
        .strip_prefix("port ")
        .and_then(|p| p.parse().ok())
        .unwrap_or_else(|| panic!("grpc_peer.py serve said {line:?}"));
    let outcome = std::panic::catch_unwind(|| {
        let addr = std::net::SocketAddr::from(([127, 0, 0, 1], port));
        client_checks(addr, true);
        stream_client_checks(addr);
    });
    drop(peer.stdin.take()); // it stops when its input closes
    let _ = peer.wait();
    if let Err(p) = outcome {
        std::panic::resume_unwind(p);
    }
}

#[test]
fn our_grpc_client_calls_our_server() {
    use examples::gen::pb::echo::{EchoClient, EchoRequest};
    use examples::gen::pb::streamer::{SleepRequest, StreamerClient};
    use netpoll_rpc::client::ClientBuilder;
    let server = EchoServer::start(&["--max-frame", "8388608"]);
    let c = EchoClient::from_builder(ClientBuilder::new(server.addr).grpc().max_frame(8 << 20))
        .unwrap();
    for n in [0usize, 100, 4 << 20] {
        let msg = bytes::Bytes::from(vec![b'o'; n]);
        assert_eq!(c.echo(EchoRequest { msg: msg.clone() }).unwrap().msg, msg);
    }
    let gz = EchoClient::from_builder(
        ClientBuilder::new(server.addr)
            .grpc()
            .send_gzip(true)
            .max_frame(8 << 20),
    )
    .unwrap();
    for n in [0usize, 100, 4 << 20] {
        let msg = bytes::Bytes::from(vec![b'z'; n]);
        assert_eq!(gz.echo(EchoRequest { msg: msg.clone() }).unwrap().msg, msg);
    }
    // The server's deadline and ours: DEADLINE_EXCEEDED either way.
    let s = StreamerClient::from_builder(ClientBuilder::new(server.addr).grpc()).unwrap();
    let e = s
        .with_timeout(Some(Duration::from_millis(100)))
        .sleep(SleepRequest {
            ms: 1000,
            msg: "late".into(),
        })
        .unwrap_err();
    assert_eq!(e.kind(), netpoll_rpc::ErrorKind::DeadlineExceeded, "{e}");
    let r = s
        .sleep(SleepRequest {
            ms: 10,
            msg: "in time".into(),
        })
        .unwrap();
    assert_eq!(&r.msg[..], b"in time");
    // Status details come back with the status.
    let e = s
        .sleep(SleepRequest {
            ms: -1,
            msg: "x".into(),
        })
        .unwrap_err();
    match &e {
        netpoll_rpc::CallError::Status(st) => {
            assert_eq!(st.kind(), netpoll_rpc::ErrorKind::InvalidArgument);
            assert_eq!(
                st.details(),
                Some(&b"\x08\x03\x12\x17ms must not be negative"[..])
            );
        }
        e => panic!("{e}"),
    }
    // Metadata both ways, text and binary: the server's Sleep sends it back.
    let (r, back) = s
        .with_header("x-echo-back", "ours")
        .with_header("x-echo-back-bin", vec![0u8, 1, 255])
        .client()
        .call_meta::<_, examples::gen::pb::streamer::Chunk>(
            "Sleep",
            SleepRequest {
                ms: 0,
                msg: "meta".into(),
            },
        )
        .unwrap();
    assert_eq!(&r.msg[..], b"meta");
    let got: Vec<(&str, &[u8])> = back
        .iter()
        .filter(|(k, _)| k.starts_with("x-echo"))
        .collect();
    assert_eq!(
        got,
        vec![
            ("x-echo-back", &b"ours"[..]),
            ("x-echo-back-bin", &[0u8, 1, 255][..])
        ],
        "{back:?}"
    );
    // A streaming handler's metadata, text and binary: in its headers, and with a
    // status that refuses the stream at once.
    let meta = |m: &[(String, bytes::Bytes)]| -> Vec<(String, Vec<u8>)> {
        m.iter()
            .filter(|(k, _)| k.starts_with("x-echo"))
            .map(|(k, v)| (k.clone(), v.to_vec()))
            .collect()
    };
    let want = vec![
        ("x-echo-back".to_owned(), b"ours".to_vec()),
        ("x-echo-back-bin".to_owned(), vec![0u8, 1, 255]),
    ];
    let tagged = s
        .with_header("x-echo-back", "ours")
        .with_header("x-echo-back-bin", vec![0u8, 1, 255]);
    let chat = tagged.chat().unwrap();
    chat.send(&examples::gen::pb::streamer::Chunk { msg: "m".into() })
        .unwrap();
    assert_eq!(&chat.recv().unwrap().unwrap().msg[..], b"m");
    assert_eq!(meta(&chat.metadata()), want);
    chat.close_send();
    assert!(chat.recv().unwrap().is_none());
    let refused = tagged
        .repeat(examples::gen::pb::streamer::RepeatRequest {
            msg: "x".into(),
            count: -1,
        })
        .unwrap();
    let e = refused.recv().unwrap_err();
    assert_eq!(e.kind(), netpoll_rpc::ErrorKind::InvalidArgument, "{e}");
    assert_eq!(meta(&refused.metadata()), want);
    // A unary call of a server-streaming method that replies twice: not a unary reply.
    let e = s
        .client()
        .call::<_, examples::gen::pb::streamer::Chunk>(
            "Repeat",
            examples::gen::pb::streamer::RepeatRequest {
                msg: "x".into(),
                count: 2,
            },
        )
        .unwrap_err();
    assert!(
        matches!(e, netpoll_rpc::CallError::Protocol(_))
            && e.to_string().contains("exactly one message"),
        "{e}"
    );
}

#[test]
fn health_watch_streams_each_change_of_status() {
    use netpoll_rpc::server::{Health, Server, ServingStatus};
    use std::io::BufRead;
    if !have_grpcio() {
        return;
    }
    let health = Health::new();
    health.set("echo.Echo", ServingStatus::Serving);
    let server = Server::builder()
        .addr("127.0.0.1:0")
        .cores(1)
        .service(health.clone())
        .start()
        .unwrap();
    let mut peer = Command::new("python3")
        .arg(script())
        .arg(idl())
        .args(["watch", &server.local_addr().to_string()])
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines = std::io::BufReader::new(peer.stdout.take().unwrap()).lines();
    let mut seen = String::new();
    for line in lines.by_ref() {
        let line = line.unwrap();
        seen.push_str(&line);
        seen.push('\n');
        if line == "watching" {
            break;
        }
    }
    health.set("echo.Echo", ServingStatus::NotServing);
    std::thread::sleep(Duration::from_millis(100));
    health.set("other.Service", ServingStatus::NotServing); // not watched: not sent
    health.set("echo.Echo", ServingStatus::Serving);
    for line in lines.by_ref() {
        let line = line.unwrap();
        seen.push_str(&line);
        seen.push('\n');
        if line == "changed" {
            break;
        }
    }
    // A graceful shutdown ends the watch (it would otherwise keep the server until the
    // end of its grace period).
    let started = std::time::Instant::now();
    server.shutdown(Duration::from_secs(5));
    let took = started.elapsed();
    for line in lines {
        seen.push_str(&line.unwrap());
        seen.push('\n');
    }
    let status = peer.wait().unwrap();
    assert!(
        status.success() && seen.contains("all checks passed"),
        "{seen}"
    );
    assert!(took < Duration::from_secs(2), "the shutdown took {took:?}");
}

#[test]
fn grpcio_reflection_client_finds_every_service() {
    if !have_grpcio() {
        return;
    }
    let server = EchoServer::start(&[]);
    run_peer(&["reflect", &server.addr.to_string()]);
}

#[test]
fn a_deadline_that_expires_ends_the_call_and_spares_the_connection() {
    if !have_grpcio() {
        return;
    }
    let server = EchoServer::start(&["--echo-delay-ms", "500"]);
    run_peer(&["deadline", &server.addr.to_string()]);
}

// ----- raw HTTP/2 peers --------------------------------------------------------------------

/// A raw HTTP/2 client: the preface and an empty SETTINGS, then whatever the test writes.
fn raw(addr: std::net::SocketAddr) -> TcpStream {
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let mut out = BytesMut::new();
    out.extend_from_slice(h2f::PREFACE);
    h2f::write_settings(&mut out, &[]);
    s.write_all(&out).unwrap();
    s
}

/// Reads frames until EOF (or 5 s): each frame's header and payload.
fn frames_until_close(s: &mut TcpStream) -> (Vec<(h2f::FrameHeader, Vec<u8>)>, bool) {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 65536];
    let closed = loop {
        match s.read(&mut chunk) {
            Ok(0) => break true,
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => break true,
            Err(_) => break false,
        }
    };
    let mut frames = Vec::new();
    let mut at = 0;
    while let Ok(Split::Frame(h, n)) = h2f::split(&buf[at..], 1 << 24) {
        frames.push((h, buf[at + h2f::HEADER_LEN..at + n].to_vec()));
        at += n;
    }
    (frames, closed)
}

fn request_block(path: &str) -> Vec<u8> {
    let mut b = Vec::new();
    for (n, v) in [
        (":method", "POST"),
        (":scheme", "http"),
        (":path", path),
        (":authority", "x"),
        ("content-type", "application/grpc"),
        ("te", "trailers"),
    ] {
        hpack::encode(&mut b, n.as_bytes(), v.as_bytes(), false);
    }
    b
}

/// The DATA of an echo call: `EchoRequest { msg }` (`msg` under 128 bytes) behind gRPC's
/// message prefix.
fn echo_message(msg: &[u8]) -> BytesMut {
    let mut m = BytesMut::new();
    netpoll_codec::h2::grpc::write_prefix(&mut m, false, 2 + msg.len());
    m.extend_from_slice(&[0x0a, msg.len() as u8]);
    m.extend_from_slice(msg);
    m
}

/// An echo call of `ok` on `stream`: its HEADERS, then its DATA, which ends the stream.
fn ok_call(out: &mut BytesMut, stream: u32) {
    h2f::write_headers(
        out,
        stream,
        &request_block("/echo.Echo/Echo"),
        false,
        16_384,
    );
    h2f::write_data(out, stream, &echo_message(b"ok"), true);
}

fn goaway_code(frames: &[(h2f::FrameHeader, Vec<u8>)]) -> Option<u32> {
    frames
        .iter()
        .find(|(h, _)| h.kind == kind::GOAWAY)
        .map(|(_, p)| u32::from_be_bytes([p[4], p[5], p[6], p[7]]))
}

#[test]
fn hostile_http2_peers_are_refused_with_bounded_cost() {
    let server = EchoServer::start(&[]);
    // Not the preface after its first bytes.
    let mut s = TcpStream::connect(server.addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    s.write_all(b"PRI * HTTP/2.0\r\n\r\nXX\r\n\r\n").unwrap();
    let (frames, closed) = frames_until_close(&mut s);
    assert!(closed, "a bad preface must close the connection");
    assert_eq!(goaway_code(&frames), Some(h2f::code::PROTOCOL_ERROR));

    // A CONTINUATION flood: a header block that never ends.
    let mut s = raw(server.addr);
    let mut out = BytesMut::new();
    h2f::write_header(&mut out, 3, kind::HEADERS, 0, 1);
    out.extend_from_slice(&[0x82, 0x86, 0x84]);
    for _ in 0..8 {
        h2f::write_header(&mut out, 16_000, kind::CONTINUATION, 0, 1);
        out.extend_from_slice(&vec![0x40; 16_000]);
    }
    let _ = s.write_all(&out);
    let (frames, closed) = frames_until_close(&mut s);
    assert!(closed);
    assert_eq!(goaway_code(&frames), Some(h2f::code::ENHANCE_YOUR_CALM));

    // An HPACK bomb: one large table entry named a thousand times. The stream is refused
    // (RESOURCE_EXHAUSTED), the connection goes on.
    let mut s = raw(server.addr);
    let mut block = Vec::new();
    hpack::write_int(&mut block, 0x40, 6, 0);
    block.extend_from_slice(&[1, b'x']);
    hpack::write_int(&mut block, 0, 7, 4000);
    block.extend_from_slice(&[b'v'; 4000]);
    block.extend_from_slice(&request_block("/echo.Echo/Echo"));
    block.extend(std::iter::repeat_n(0x80 | 62, 1000));
    let mut out = BytesMut::new();
    h2f::write_headers(&mut out, 1, &block, true, 16_384);
    // Then a good call on stream 3.
    ok_call(&mut out, 3);
    h2f::write_goaway(&mut out, 0, h2f::code::NO_ERROR, b"");
    s.write_all(&out).unwrap();
    s.shutdown(std::net::Shutdown::Write).unwrap();
    let (frames, _) = frames_until_close(&mut s);
    let st = statuses(&frames);
    assert!(st.contains(&(1, "8".into())), "{st:?}");
    assert!(st.contains(&(3, "0".into())), "{st:?}");
    let data: Vec<_> = frames
        .iter()
        .filter(|(h, _)| h.kind == kind::DATA)
        .collect();
    assert_eq!(data.len(), 1);
    assert_eq!(&data[0].1[5..], &[0x0a, 0x02, b'o', b'k']);

    // Cancelling streams at a normal pace is fine: 500 opened and reset, then a PING.
    let mut s = raw(server.addr);
    let mut out = BytesMut::new();
    for i in 0..500u32 {
        let id = 1 + 2 * i;
        h2f::write_headers(
            &mut out,
            id,
            &request_block("/echo.Echo/Echo"),
            false,
            16_384,
        );
        h2f::write_rst_stream(&mut out, id, h2f::code::CANCEL);
    }
    h2f::write_ping(&mut out, false, *b"alive?!!");
    s.write_all(&out).unwrap();
    let mut buf = vec![0u8; 1 << 16];
    let mut got = Vec::new();
    while !got.windows(8).any(|w| w == b"alive?!!") {
        let n = s.read(&mut buf).expect("the server answers the PING");
        assert!(n > 0, "closed");
        got.extend_from_slice(&buf[..n]);
    }

    // Rapid reset (CVE-2023-44487): 5000 streams opened and reset at once.
    let mut s = raw(server.addr);
    let mut out = BytesMut::new();
    for i in 0..5000u32 {
        let id = 1 + 2 * i;
        h2f::write_headers(
            &mut out,
            id,
            &request_block("/echo.Echo/Echo"),
            false,
            16_384,
        );
        h2f::write_rst_stream(&mut out, id, h2f::code::CANCEL);
    }
    let _ = s.write_all(&out);
    let (frames, closed) = frames_until_close(&mut s);
    assert!(closed);
    assert_eq!(goaway_code(&frames), Some(h2f::code::ENHANCE_YOUR_CALM));

    // A PING flood, and a SETTINGS flood.
    for flood in [kind::PING, kind::SETTINGS] {
        let mut s = raw(server.addr);
        let mut out = BytesMut::new();
        for _ in 0..20_000 {
            if flood == kind::PING {
                h2f::write_ping(&mut out, false, *b"pingping");
            } else {
                h2f::write_settings(&mut out, &[]);
            }
        }
        let _ = s.write_all(&out);
        let (frames, closed) = frames_until_close(&mut s);
        assert!(closed, "flood of type {flood}");
        assert_eq!(goaway_code(&frames), Some(h2f::code::ENHANCE_YOUR_CALM));
    }

    // None of it disturbed a well-behaved connection.
    let mut s = raw(server.addr);
    let mut out = BytesMut::new();
    ok_call(&mut out, 1);
    h2f::write_goaway(&mut out, 0, h2f::code::NO_ERROR, b"");
    s.write_all(&out).unwrap();
    s.shutdown(std::net::Shutdown::Write).unwrap();
    let (frames, _) = frames_until_close(&mut s);
    assert!(statuses(&frames).contains(&(1, "0".into())));
}

#[test]
fn the_server_answers_deadline_exceeded_at_the_deadline_and_drops_the_late_reply() {
    let server = EchoServer::start(&["--echo-delay-ms", "400"]);
    let mut s = raw(server.addr);
    let mut block = request_block("/echo.Echo/Echo");
    hpack::encode(&mut block, b"grpc-timeout", b"100m", false);
    let msg = echo_message(b"hi");
    let mut out = BytesMut::new();
    h2f::write_headers(&mut out, 1, &block, false, 16_384);
    h2f::write_data(&mut out, 1, &msg, true);
    let t0 = std::time::Instant::now();
    s.write_all(&out).unwrap();
    // Read until the trailers of stream 1, then a while longer for a late reply.
    s.set_read_timeout(Some(Duration::from_millis(700)))
        .unwrap();
    let (frames, _) = frames_until_close(&mut s);
    let trailers = frames
        .iter()
        .find(|(h, _)| h.kind == kind::HEADERS && h.stream == 1 && h.has(flag::END_STREAM))
        .expect("stream 1 answered");
    let mut status = String::new();
    hpack::Decoder::new(4096, 1 << 20)
        .decode(&trailers.1, |n, v| {
            if n == b"grpc-status" {
                status = String::from_utf8_lossy(v).into_owned();
            }
        })
        .unwrap();
    assert_eq!(status, "4", "DEADLINE_EXCEEDED");
    assert!(t0.elapsed() >= Duration::from_millis(100));
    assert!(
        !frames
            .iter()
            .any(|(h, _)| h.kind == kind::DATA && h.stream == 1),
        "the handler's late reply must be dropped"
    );
}

#[test]
fn a_stream_answered_early_is_forgotten_once_the_client_ends_it() {
    // An unknown method is answered at once (trailers only) while the client is still
    // sending; when the client ends the stream, nothing of it may be left, or a graceful
    // stop would wait for it until its deadline.
    let mut server = EchoServer::start(&[]);
    let mut s = raw(server.addr);
    let mut out = BytesMut::new();
    h2f::write_headers(
        &mut out,
        1,
        &request_block("/echo.Echo/Nope"),
        false,
        16_384,
    );
    s.write_all(&out).unwrap();
    let mut head = [0u8; 9];
    // Read up to the trailers of stream 1.
    loop {
        s.read_exact(&mut head).unwrap();
        let h = h2f::FrameHeader::parse(&head).unwrap();
        let mut p = vec![0u8; h.len as usize];
        s.read_exact(&mut p).unwrap();
        if h.kind == kind::HEADERS && h.stream == 1 {
            assert!(h.has(flag::END_STREAM));
            break;
        }
    }
    let mut out = BytesMut::new();
    h2f::write_data(&mut out, 1, &[0, 0, 0, 0, 0], true);
    s.write_all(&out).unwrap();
    std::thread::sleep(Duration::from_millis(100));
    let t0 = std::time::Instant::now();
    assert!(server.terminate().success());
    assert!(
        t0.elapsed() < Duration::from_secs(3),
        "the stop waited {:?} for a stream that had ended",
        t0.elapsed()
    );
}

/// The `grpc-status` of each stream's last HEADERS (its trailers), in order.
fn statuses(frames: &[(h2f::FrameHeader, Vec<u8>)]) -> Vec<(u32, String)> {
    let mut d = hpack::Decoder::new(4096, 1 << 20);
    frames
        .iter()
        .filter(|(h, _)| h.kind == kind::HEADERS)
        .filter_map(|(h, p)| {
            let mut status = None;
            d.decode(p, |n, v| {
                if n == b"grpc-status" {
                    status = Some(String::from_utf8_lossy(v).into_owned());
                }
            })
            .unwrap();
            status.map(|s| (h.stream, s))
        })
        .collect()
}

#[test]
fn an_oversized_header_list_costs_its_stream_only() {
    let server = EchoServer::start(&[]);
    let mut s = raw(server.addr);
    // Stream 1: a 17 KB header (over the 16 KiB list limit) and no END_STREAM, as a
    // client with a large token sends; then its DATA. Stream 3: a good call.
    let mut block = request_block("/echo.Echo/Echo");
    hpack::encode(&mut block, b"authorization", &[b't'; 17_000], false);
    let mut out = BytesMut::new();
    h2f::write_headers(&mut out, 1, &block, false, 16_384);
    h2f::write_data(&mut out, 1, &echo_message(b"ok"), true);
    ok_call(&mut out, 3);
    h2f::write_goaway(&mut out, 0, h2f::code::NO_ERROR, b"");
    s.write_all(&out).unwrap();
    s.shutdown(std::net::Shutdown::Write).unwrap();
    let (frames, _) = frames_until_close(&mut s);
    assert_eq!(goaway_code(&frames), None, "the connection must go on");
    let st = statuses(&frames);
    assert!(st.contains(&(1, "8".into())), "{st:?}");
    assert!(st.contains(&(3, "0".into())), "{st:?}");
    assert!(frames
        .iter()
        .any(|(h, _)| h.kind == kind::RST_STREAM && h.stream == 1));
}

#[test]
fn a_client_that_ignores_flow_control_is_stopped() {
    let server = EchoServer::start(&["--max-frame", "8388608"]);
    let rss_before = server.rss_mib();
    let mut s = raw(server.addr);
    // 48 streams of 8 MB each, never ended: far beyond the windows we open.
    let chunk = vec![0u8; 16_000];
    let mut out = BytesMut::new();
    let mut sent = 0usize;
    'outer: for i in 0..48u32 {
        let id = 1 + 2 * i;
        out.clear();
        h2f::write_headers(
            &mut out,
            id,
            &request_block("/echo.Echo/Echo"),
            false,
            16_384,
        );
        if s.write_all(&out).is_err() {
            break;
        }
        for _ in 0..512 {
            out.clear();
            h2f::write_data(&mut out, id, &chunk, false);
            if s.write_all(&out).is_err() {
                break 'outer; // closed on us: good
            }
            sent += chunk.len();
        }
    }
    let _ = s.shutdown(std::net::Shutdown::Write);
    let (frames, closed) = frames_until_close(&mut s);
    assert!(closed);
    assert_eq!(
        goaway_code(&frames),
        Some(h2f::code::FLOW_CONTROL_ERROR),
        "after {sent} bytes"
    );
    let grew = server.rss_mib() - rss_before;
    assert!(grew < 100.0, "the server grew by {grew:.0} MiB");
}

/// Reads what arrives within `wait`, appending whole frames to `frames` (a partial frame
/// stays in `buf`).
fn read_frames(
    s: &mut TcpStream,
    buf: &mut Vec<u8>,
    frames: &mut Vec<(h2f::FrameHeader, Vec<u8>)>,
    wait: Duration,
) {
    s.set_read_timeout(Some(wait)).unwrap();
    let mut chunk = [0u8; 65536];
    while let Ok(n) = s.read(&mut chunk) {
        if n == 0 {
            break;
        }
        buf.extend_from_slice(&chunk[..n]);
    }
    let mut at = 0;
    while let Ok(Split::Frame(h, n)) = h2f::split(&buf[at..], 1 << 24) {
        frames.push((h, buf[at + h2f::HEADER_LEN..at + n].to_vec()));
        at += n;
    }
    buf.drain(..at);
}

#[test]
fn a_streaming_client_that_does_not_read_its_replies_is_held_to_its_windows() {
    let server = EchoServer::start(&[]);
    let rss_before = server.rss_mib();
    let mut s = TcpStream::connect(server.addr).unwrap();
    let mut out = BytesMut::new();
    out.extend_from_slice(h2f::PREFACE);
    // A window of 0: the client takes none of the server's replies.
    h2f::write_settings(&mut out, &[(h2f::setting::INITIAL_WINDOW_SIZE, 0)]);
    h2f::write_headers(
        &mut out,
        1,
        &request_block("/streamer.Streamer/Chat"),
        false,
        16_384,
    );
    s.write_all(&out).unwrap();
    // `Chunk { msg }` of 1000 bytes, behind its prefix.
    let mut message = BytesMut::new();
    netpoll_codec::h2::grpc::write_prefix(&mut message, false, 1003);
    message.extend_from_slice(&[0x0a, 0xe8, 0x07]);
    message.extend_from_slice(&[b'c'; 1000]);
    // Send as much as the server's windows allow, as a well-behaved client does.
    let (mut conn_window, mut stream_window) = (65_535i64, 65_535i64);
    let (mut buf, mut frames) = (Vec::new(), Vec::new());
    let mut sent = 0usize;
    let mut seen = 0;
    loop {
        while conn_window >= message.len() as i64 && stream_window >= message.len() as i64 {
            out.clear();
            h2f::write_data(&mut out, 1, &message, false);
            s.write_all(&out).unwrap();
            conn_window -= message.len() as i64;
            stream_window -= message.len() as i64;
            sent += 1;
        }
        read_frames(&mut s, &mut buf, &mut frames, Duration::from_millis(300));
        let before = (conn_window, stream_window);
        for (h, p) in &frames[seen..] {
            match h.kind {
                kind::SETTINGS if !h.has(flag::ACK) => {
                    for (id, v) in h2f::settings(p).unwrap() {
                        if id == h2f::setting::INITIAL_WINDOW_SIZE {
                            stream_window += i64::from(v) - 65_535;
                        }
                    }
                }
                kind::WINDOW_UPDATE => {
                    let inc = i64::from(h2f::window_increment(p).unwrap());
                    match h.stream {
                        0 => conn_window += inc,
                        1 => stream_window += inc,
                        _ => {}
                    }
                }
                kind::GOAWAY | kind::RST_STREAM => panic!("the stream was ended: {h:?}"),
                _ => {}
            }
        }
        seen = frames.len();
        if before == (conn_window, stream_window) {
            break; // no more credit: the server holds the client back
        }
    }
    let sent_bytes = sent * message.len();
    assert!(
        ((1 << 20) - message.len()..(1 << 20) + (256 << 10)).contains(&sent_bytes),
        "the client could send {sent_bytes} bytes without reading a reply"
    );
    let grew = server.rss_mib() - rss_before;
    assert!(grew < 30.0, "the server grew by {grew:.0} MiB");
    // Now it reads: every message comes back, in order, then OK.
    out.clear();
    h2f::write_window_update(&mut out, 0, 64 << 20);
    h2f::write_window_update(&mut out, 1, 64 << 20);
    h2f::write_data(&mut out, 1, &[], true);
    s.write_all(&out).unwrap();
    let mut body = Vec::new();
    let mut ended = false;
    for _ in 0..100 {
        read_frames(&mut s, &mut buf, &mut frames, Duration::from_millis(100));
        for (h, p) in &frames[seen..] {
            if h.stream == 1 && h.kind == kind::DATA {
                body.extend_from_slice(p);
            }
            ended |= h.stream == 1 && h.kind == kind::HEADERS && h.has(flag::END_STREAM);
        }
        seen = frames.len();
        if ended {
            break;
        }
    }
    assert!(ended, "the stream did not end");
    assert_eq!(body.len(), sent * message.len(), "every message comes back");
    assert!(body.chunks(message.len()).all(|m| m == &message[..]));
    let st = statuses(&frames);
    assert_eq!(st, vec![(1, "0".to_owned())]);
}

#[test]
fn a_server_stream_to_a_client_that_does_not_read_holds_bounded_memory() {
    let server = EchoServer::start(&[]);
    let rss_before = server.rss_mib();
    let mut s = TcpStream::connect(server.addr).unwrap();
    let mut out = BytesMut::new();
    out.extend_from_slice(h2f::PREFACE);
    // Windows as large as HTTP/2 allows: only the socket holds the server back.
    h2f::write_settings(
        &mut out,
        &[(h2f::setting::INITIAL_WINDOW_SIZE, h2f::MAX_WINDOW)],
    );
    h2f::write_window_update(&mut out, 0, h2f::MAX_WINDOW - 65_535);
    h2f::write_headers(
        &mut out,
        1,
        &request_block("/streamer.Streamer/Repeat"),
        false,
        16_384,
    );
    // RepeatRequest { msg: 1000 bytes, count: 1_000_000 }: a gigabyte of replies.
    let mut req = vec![0x0a, 0xe8, 0x07];
    req.extend_from_slice(&[b'r'; 1000]);
    req.extend_from_slice(&[0x10, 0xc0, 0x84, 0x3d]);
    let mut message = BytesMut::new();
    netpoll_codec::h2::grpc::write_prefix(&mut message, false, req.len());
    message.extend_from_slice(&req);
    h2f::write_data(&mut out, 1, &message, true);
    s.write_all(&out).unwrap();
    std::thread::sleep(Duration::from_millis(1500));
    let grew = server.rss_mib() - rss_before;
    assert!(grew < 40.0, "the server grew by {grew:.0} MiB");
    // The client gives up on it; the connection still serves a call.
    out.clear();
    h2f::write_rst_stream(&mut out, 1, h2f::code::CANCEL);
    ok_call(&mut out, 3);
    s.write_all(&out).unwrap();
    let (mut buf, mut frames) = (Vec::new(), Vec::new());
    let mut answered = false;
    for _ in 0..200 {
        read_frames(&mut s, &mut buf, &mut frames, Duration::from_millis(50));
        answered = statuses(&frames).contains(&(3, "0".to_owned()));
        if answered {
            break;
        }
        frames.retain(|(h, _)| h.stream != 1); // the cancelled stream's replies
    }
    assert!(
        answered,
        "the call after the cancelled stream was not answered"
    );
}

// ----- streaming handlers that fail, and streams that are cancelled -----------------------

mod probe {
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::Arc;

    use examples::gen::pb::streamer::{Chunk, RepeatRequest, SleepRequest, Streamer};
    use netpoll_rpc::server::{OpenStream, Outbound, StreamHandler};
    use netpoll_rpc::{CallContext, ErrorKind, Reply, Status};

    /// `Repeat` never finishes (it waits for room forever) and counts its cancellations;
    /// `Concat` refuses; `Chat` panics at its first message.
    pub struct Probe {
        pub cancels: Arc<AtomicUsize>,
    }

    struct Forever(Arc<AtomicUsize>);

    impl StreamHandler<(), Chunk> for Forever {
        fn on_writable(&mut self, out: &mut Outbound<'_, Chunk>) {
            let chunk = Chunk {
                msg: vec![1u8; 1000].into(),
            };
            while out.send(&chunk) {}
        }

        fn on_cancel(&mut self, _why: &Status) {
            self.0.fetch_add(1, Ordering::SeqCst);
        }
    }

    struct Panics;

    impl StreamHandler<Chunk, Chunk> for Panics {
        fn on_message(&mut self, _msg: Chunk, _out: &mut Outbound<'_, Chunk>) {
            panic!("chat handler fails");
        }
    }

    impl Streamer for Probe {
        fn repeat(&self, _ctx: &CallContext<'_>, _req: RepeatRequest) -> OpenStream<(), Chunk> {
            Ok(Box::new(Forever(self.cancels.clone())))
        }

        fn concat(&self, _ctx: &CallContext<'_>) -> OpenStream<Chunk, Chunk> {
            Err(Status::new(ErrorKind::Unavailable, "concat is closed"))
        }

        fn chat(&self, _ctx: &CallContext<'_>) -> OpenStream<Chunk, Chunk> {
            Ok(Box::new(Panics))
        }

        fn sleep(&self, _ctx: &CallContext<'_>, req: SleepRequest) -> Reply<Chunk> {
            Reply::ok(Chunk { msg: req.msg })
        }
    }
}

#[test]
fn failing_and_cancelled_stream_handlers() {
    use std::sync::atomic::Ordering;
    let cancels = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let server = netpoll_rpc::server::Server::builder()
        .addr("127.0.0.1:0")
        .cores(1)
        .service(examples::gen::pb::streamer::StreamerServer::new(
            probe::Probe {
                cancels: cancels.clone(),
            },
        ))
        .start()
        .unwrap();
    let addr = server.local_addr();
    let mut s = raw(addr);
    let mut out = BytesMut::new();
    // A panicking handler: INTERNAL, with what it said.
    h2f::write_headers(
        &mut out,
        1,
        &request_block("/streamer.Streamer/Chat"),
        false,
        16_384,
    );
    h2f::write_data(&mut out, 1, &echo_message(b"hi"), false);
    // A refused stream: its status, in trailers only.
    h2f::write_headers(
        &mut out,
        3,
        &request_block("/streamer.Streamer/Concat"),
        false,
        16_384,
    );
    // A stream that never ends, reset by the client.
    h2f::write_headers(
        &mut out,
        5,
        &request_block("/streamer.Streamer/Repeat"),
        false,
        16_384,
    );
    h2f::write_data(&mut out, 5, &echo_message(b"r"), true);
    s.write_all(&out).unwrap();
    let (mut buf, mut frames) = (Vec::new(), Vec::new());
    for _ in 0..50 {
        read_frames(&mut s, &mut buf, &mut frames, Duration::from_millis(50));
        let st = statuses(&frames);
        if st.iter().any(|(id, _)| *id == 1) && st.iter().any(|(id, _)| *id == 3) {
            break;
        }
    }
    let st = statuses(&frames);
    assert!(st.contains(&(1, "13".to_owned())), "{st:?}");
    assert!(st.contains(&(3, "14".to_owned())), "{st:?}");
    let mut d = hpack::Decoder::new(4096, 1 << 20);
    let mut messages = Vec::new();
    for (h, p) in frames.iter().filter(|(h, _)| h.kind == kind::HEADERS) {
        d.decode(p, |n, v| {
            if n == b"grpc-message" {
                messages.push((h.stream, netpoll_codec::h2::grpc::decode_message(v)));
            }
        })
        .unwrap();
    }
    assert!(
        messages
            .iter()
            .any(|(id, m)| *id == 1 && m.contains("panicked: chat handler fails")),
        "{messages:?}"
    );
    assert_eq!(cancels.load(Ordering::SeqCst), 0);
    out.clear();
    h2f::write_rst_stream(&mut out, 5, h2f::code::CANCEL);
    s.write_all(&out).unwrap();
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    while cancels.load(Ordering::SeqCst) < 1 && std::time::Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(10));
    }
    assert_eq!(
        cancels.load(Ordering::SeqCst),
        1,
        "a reset cancels the handler"
    );
    // Another that never ends, on a connection that goes away.
    out.clear();
    h2f::write_headers(
        &mut out,
        7,
        &request_block("/streamer.Streamer/Repeat"),
        false,
        16_384,
    );
    h2f::write_data(&mut out, 7, &echo_message(b"r"), true);
    s.write_all(&out).unwrap();
    std::thread::sleep(Duration::from_millis(100));
    drop(s);
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    while cancels.load(Ordering::SeqCst) < 2 && std::time::Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(10));
    }
    assert_eq!(
        cancels.load(Ordering::SeqCst),
        2,
        "a closed connection cancels it"
    );
    server.shutdown(Duration::from_secs(1));
}

/// A unary echo request on `stream` with `grpc-encoding: gzip`, whose message is `message`
/// behind a prefix with the compressed flag `flag`.
fn gzip_call(out: &mut BytesMut, stream: u32, encoding: Option<&str>, flag: bool, message: &[u8]) {
    let mut block = request_block("/echo.Echo/Echo");
    if let Some(e) = encoding {
        hpack::encode(&mut block, b"grpc-encoding", e.as_bytes(), false);
    }
    h2f::write_headers(out, stream, &block, false, 16_384);
    let mut m = BytesMut::new();
    netpoll_codec::h2::grpc::write_prefix(&mut m, flag, message.len());
    m.extend_from_slice(message);
    let chunks: Vec<&[u8]> = m.chunks(16_384).collect();
    for (i, c) in chunks.iter().enumerate() {
        h2f::write_data(out, stream, c, i + 1 == chunks.len());
    }
}

#[test]
fn gzip_requests_are_inflated_within_the_limit_and_answered_in_gzip() {
    let server = EchoServer::start(&["--max-frame", "1048576"]);
    let mut s = raw(server.addr);
    // EchoRequest { msg: 100 000 x 'z' }, gzipped.
    let mut plain = vec![0x0a, 0xa0, 0x8d, 0x06];
    plain.extend_from_slice(&[b'z'; 100_000]);
    let mut z = Vec::new();
    netpoll_codec::h2::grpc::gzip(&plain, &mut z);
    // A bomb: 64 MiB of zeros in less than the 1 MiB a message may have.
    let mut bomb = Vec::new();
    netpoll_codec::h2::grpc::gzip(&vec![0u8; 64 << 20], &mut bomb);
    assert!(bomb.len() < 1 << 20, "{} bytes", bomb.len());
    let mut out = BytesMut::new();
    gzip_call(&mut out, 1, Some("gzip"), true, &z);
    gzip_call(&mut out, 3, Some("gzip"), true, &bomb);
    gzip_call(&mut out, 5, None, true, &z); // compressed, but no grpc-encoding
    gzip_call(&mut out, 7, Some("gzip"), true, b"not gzip at all");
    gzip_call(&mut out, 9, Some("snappy"), true, &z);
    s.write_all(&out).unwrap();
    let rss_before = server.rss_mib();
    let (mut buf, mut frames) = (Vec::new(), Vec::new());
    for _ in 0..100 {
        read_frames(&mut s, &mut buf, &mut frames, Duration::from_millis(50));
        if statuses(&frames).len() == 5 {
            break;
        }
    }
    let mut st = statuses(&frames);
    st.sort();
    assert_eq!(
        st,
        [(1, "0"), (3, "8"), (5, "13"), (7, "13"), (9, "12")]
            .map(|(i, c)| (i, c.to_owned()))
            .to_vec()
    );
    assert!(
        server.rss_mib() - rss_before < 30.0,
        "the bomb was inflated"
    );
    // The reply is gzip too, and says so.
    let mut d = hpack::Decoder::new(4096, 1 << 20);
    let mut encoding = None;
    let mut body = Vec::new();
    for (h, p) in frames.iter().filter(|(h, _)| h.stream == 1) {
        match h.kind {
            kind::HEADERS => d
                .decode(p, |n, v| {
                    if n == b"grpc-encoding" {
                        encoding = Some(v.to_vec());
                    }
                })
                .unwrap(),
            kind::DATA => body.extend_from_slice(p),
            _ => {}
        }
    }
    assert_eq!(encoding.as_deref(), Some(&b"gzip"[..]));
    assert_eq!(body[0], 1, "the compressed flag");
    let back = netpoll_codec::h2::grpc::gunzip(&body[5..], 1 << 20).unwrap();
    assert_eq!(back, plain);
}

/// Our streaming client's checks against a server of `stream.proto` that behaves as its
/// comments say (ours, grpcio's, tonic's).
pub fn stream_client_checks(addr: std::net::SocketAddr) {
    use examples::gen::pb::streamer::{Chunk, RepeatRequest, StreamerClient};
    use netpoll_rpc::client::ClientBuilder;
    use netpoll_rpc::ErrorKind;
    let c = StreamerClient::from_builder(ClientBuilder::new(addr).grpc().max_frame(8 << 20))
        .unwrap()
        .with_timeout(Some(Duration::from_secs(30)));
    // Server streaming: many, none, large.
    for (count, size) in [(5000, 100), (0, 10), (100, 200_000)] {
        let msg = bytes::Bytes::from(vec![b's'; size]);
        let s = c
            .repeat(RepeatRequest {
                msg: msg.clone(),
                count,
            })
            .unwrap();
        let mut n = 0;
        while let Some(m) = s.recv().unwrap() {
            assert_eq!(m.msg, msg);
            n += 1;
        }
        assert_eq!(n, count, "Repeat {count} x {size}");
    }
    let e = c
        .repeat(RepeatRequest {
            msg: "x".into(),
            count: -1,
        })
        .unwrap()
        .recv()
        .unwrap_err();
    assert_eq!(e.kind(), ErrorKind::InvalidArgument, "{e}");
    // Client streaming.
    let s = c.concat().unwrap();
    let mut want = Vec::new();
    for i in 0..3000 {
        let p = format!("{i},");
        want.extend_from_slice(p.as_bytes());
        s.send(&Chunk { msg: p.into() }).unwrap();
    }
    assert_eq!(&s.finish().unwrap().msg[..], &want[..]);
    // Bidirectional: in lock step, then a writer thread and a reader at once.
    let s = c.chat().unwrap();
    for i in 0..300 {
        let m = bytes::Bytes::from(format!("step {i}"));
        s.send(&Chunk { msg: m.clone() }).unwrap();
        assert_eq!(s.recv().unwrap().unwrap().msg, m);
    }
    s.close_send();
    assert!(s.recv().unwrap().is_none());
    let s = std::sync::Arc::new(c.chat().unwrap());
    let writer = {
        let s = s.clone();
        std::thread::spawn(move || {
            for i in 0..5000 {
                s.send(&Chunk {
                    msg: format!("chat {i}").into(),
                })
                .unwrap();
            }
            s.close_send();
        })
    };
    for i in 0..5000 {
        assert_eq!(
            s.recv().unwrap().unwrap().msg,
            bytes::Bytes::from(format!("chat {i}"))
        );
    }
    assert!(s.recv().unwrap().is_none());
    writer.join().unwrap();
    // A deadline mid-stream.
    let s = c
        .with_timeout(Some(Duration::from_millis(300)))
        .chat()
        .unwrap();
    s.send(&Chunk {
        msg: "before".into(),
    })
    .unwrap();
    assert_eq!(&s.recv().unwrap().unwrap().msg[..], b"before");
    let e = s.recv().unwrap_err();
    assert_eq!(e.kind(), ErrorKind::DeadlineExceeded, "{e}");
    // A large stream dropped after a few replies; the connection goes on.
    let s = c
        .repeat(RepeatRequest {
            msg: vec![1u8; 10_000].into(),
            count: 1_000_000,
        })
        .unwrap();
    for _ in 0..10 {
        s.recv().unwrap().unwrap();
    }
    drop(s);
    let s = c.concat().unwrap();
    s.send(&Chunk {
        msg: "still here".into(),
    })
    .unwrap();
    assert_eq!(&s.finish().unwrap().msg[..], b"still here");
    // gzip-compressed messages, both ways, on a bidirectional stream.
    let gz = StreamerClient::from_builder(ClientBuilder::new(addr).grpc().send_gzip(true))
        .unwrap()
        .with_timeout(Some(Duration::from_secs(30)));
    let s = gz.chat().unwrap();
    for i in 0..500 {
        let m = bytes::Bytes::from(format!("gzip {i} ").repeat(40));
        s.send(&Chunk { msg: m.clone() }).unwrap();
        assert_eq!(s.recv().unwrap().unwrap().msg, m);
    }
    s.close_send();
    assert!(s.recv().unwrap().is_none());
}

#[test]
fn our_streaming_client_with_our_server() {
    let server = EchoServer::start(&["--max-frame", "8388608"]);
    stream_client_checks(server.addr);
}

/// Sends `message`-sized DATA on `streams` as far as the server's windows allow (reading
/// its WINDOW_UPDATEs), until it gives no more credit; the bytes sent.
fn send_while_credited(
    s: &mut TcpStream,
    streams: &[u32],
    chunk: &[u8],
    buf: &mut Vec<u8>,
    frames: &mut Vec<(h2f::FrameHeader, Vec<u8>)>,
) -> usize {
    let (mut conn_window, mut windows) = (65_535i64, vec![65_535i64; streams.len()]);
    let mut seen = 0;
    let mut sent = 0;
    loop {
        let mut out = BytesMut::new();
        for (i, &id) in streams.iter().enumerate() {
            while conn_window >= chunk.len() as i64 && windows[i] >= chunk.len() as i64 {
                h2f::write_data(&mut out, id, chunk, false);
                conn_window -= chunk.len() as i64;
                windows[i] -= chunk.len() as i64;
                sent += chunk.len();
            }
        }
        s.write_all(&out).unwrap();
        read_frames(s, buf, frames, Duration::from_millis(300));
        let before = (conn_window, windows.clone());
        for (h, p) in &frames[seen..] {
            match h.kind {
                kind::SETTINGS if !h.has(flag::ACK) => {
                    for (id, v) in h2f::settings(p).unwrap() {
                        if id == h2f::setting::INITIAL_WINDOW_SIZE {
                            windows.iter_mut().for_each(|w| *w += i64::from(v) - 65_535);
                        }
                    }
                }
                kind::WINDOW_UPDATE => {
                    let inc = i64::from(h2f::window_increment(p).unwrap());
                    match streams.iter().position(|&id| id == h.stream) {
                        _ if h.stream == 0 => conn_window += inc,
                        Some(i) => windows[i] += inc,
                        None => {}
                    }
                }
                kind::GOAWAY => panic!("the connection was ended: {h:?}"),
                _ => {}
            }
        }
        seen = frames.len();
        if before.0 == conn_window && before.1 == windows {
            return sent;
        }
    }
}

#[test]
fn partial_messages_hold_the_connection_window_and_a_truncated_one_fails() {
    let server = EchoServer::start(&[]); // messages up to 16 MiB
    let rss_before = server.rss_mib();
    let mut s = TcpStream::connect(server.addr).unwrap();
    let mut out = BytesMut::new();
    out.extend_from_slice(h2f::PREFACE);
    h2f::write_settings(&mut out, &[]);
    // Eight Chat streams, each announcing a 15 MiB message and never finishing it.
    let streams: Vec<u32> = (0..8).map(|i| 1 + 2 * i).collect();
    for &id in &streams {
        h2f::write_headers(
            &mut out,
            id,
            &request_block("/streamer.Streamer/Chat"),
            false,
            16_384,
        );
        let mut prefix = BytesMut::new();
        netpoll_codec::h2::grpc::write_prefix(&mut prefix, false, 15 << 20);
        h2f::write_data(&mut out, id, &prefix, false);
    }
    s.write_all(&out).unwrap();
    let (mut buf, mut frames) = (Vec::new(), Vec::new());
    let sent = send_while_credited(&mut s, &streams, &[7u8; 16_000], &mut buf, &mut frames);
    // The connection window (twice the largest message and 1 MiB) holds them back.
    assert!(
        sent < 40 << 20,
        "{} MiB of partial messages taken",
        sent >> 20
    );
    let grew = server.rss_mib() - rss_before;
    assert!(grew < 80.0, "the server grew by {grew:.0} MiB");
    drop(s);
    // A client that ends its side inside a message: INTERNAL, not a hang.
    let mut s = raw(server.addr);
    let mut out = BytesMut::new();
    h2f::write_headers(
        &mut out,
        1,
        &request_block("/streamer.Streamer/Concat"),
        false,
        16_384,
    );
    let mut m = BytesMut::new();
    netpoll_codec::h2::grpc::write_prefix(&mut m, false, 100);
    m.extend_from_slice(&[0x0a, 8, 1, 2, 3, 4, 5, 6, 7, 8]);
    h2f::write_data(&mut out, 1, &m, true);
    s.write_all(&out).unwrap();
    let (mut buf, mut frames) = (Vec::new(), Vec::new());
    for _ in 0..40 {
        read_frames(&mut s, &mut buf, &mut frames, Duration::from_millis(50));
        if !statuses(&frames).is_empty() {
            break;
        }
    }
    assert_eq!(statuses(&frames), vec![(1, "13".to_owned())]);
}

#[test]
fn a_request_still_arriving_does_not_keep_an_idle_connection_open() {
    let server = EchoServer::start(&["--idle-timeout-ms", "300"]);
    let mut s = raw(server.addr);
    let mut out = BytesMut::new();
    // HEADERS of a unary call whose message never comes.
    h2f::write_headers(
        &mut out,
        1,
        &request_block("/echo.Echo/Echo"),
        false,
        16_384,
    );
    s.write_all(&out).unwrap();
    let started = std::time::Instant::now();
    let (frames, closed) = frames_until_close(&mut s);
    assert!(closed, "the idle connection was not closed");
    assert!(started.elapsed() < Duration::from_secs(3));
    assert_eq!(goaway_code(&frames), Some(h2f::code::NO_ERROR));
}

// ----- our gRPC client against a hand-written HTTP/2 server that misbehaves ---------------

/// A raw HTTP/2 server for one client connection: reads its frames, writes what a test
/// says.
struct RawServer {
    s: TcpStream,
    buf: Vec<u8>,
    frames: Vec<(h2f::FrameHeader, Vec<u8>)>,
}

impl RawServer {
    fn accept(l: &std::net::TcpListener) -> RawServer {
        let (s, _) = l.accept().unwrap();
        let mut r = RawServer {
            s,
            buf: Vec::new(),
            frames: Vec::new(),
        };
        let mut out = BytesMut::new();
        h2f::write_settings(&mut out, &[]);
        r.s.write_all(&out).unwrap();
        r
    }

    /// Reads until a frame of `kind` arrives (the preface first); its header.
    fn until(&mut self, kind: u8) -> h2f::FrameHeader {
        for _ in 0..100 {
            if self.buf.starts_with(h2f::PREFACE) {
                self.buf.drain(..h2f::PREFACE.len());
            }
            read_frames(
                &mut self.s,
                &mut self.buf,
                &mut self.frames,
                Duration::from_millis(30),
            );
            if let Some((h, _)) = self.frames.iter().find(|(h, _)| h.kind == kind) {
                return *h;
            }
        }
        panic!("no frame of kind {kind} came: {:?}", self.frames);
    }

    fn send(&mut self, out: &BytesMut) {
        self.s.write_all(out).unwrap();
    }
}

/// A response's HEADERS (status 200, gRPC).
fn response_headers(out: &mut BytesMut, id: u32) {
    let mut b = Vec::new();
    hpack::encode(&mut b, b":status", b"200", false);
    hpack::encode(&mut b, b"content-type", b"application/grpc", false);
    h2f::write_headers(out, id, &b, false, 16_384);
}

/// Trailers with `status`.
fn response_trailers(out: &mut BytesMut, id: u32, status: &str) {
    let mut b = Vec::new();
    hpack::encode(&mut b, b"grpc-status", status.as_bytes(), false);
    h2f::write_headers(out, id, &b, true, 16_384);
}

#[test]
fn our_client_holds_a_misbehaving_server_to_the_protocol() {
    use examples::gen::pb::streamer::{Chunk, RepeatRequest, StreamerClient};
    use netpoll_rpc::client::ClientBuilder;
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = l.local_addr().unwrap();
    // A warmed-up connection opens with the preface, before anything the server sends
    // is answered.
    let c = StreamerClient::from_builder(ClientBuilder::new(addr).grpc().warm_up(true)).unwrap();
    let mut srv = RawServer::accept(&l);
    let mut first = [0u8; 24];
    srv.s.read_exact(&mut first).unwrap();
    assert_eq!(&first, h2f::PREFACE);
    // A server that sends far beyond the stream's window (1 MiB) to a reader that does
    // not read: the client resets the stream instead of holding it all.
    let s = c
        .with_timeout(Some(Duration::from_secs(10)))
        .repeat(RepeatRequest::default())
        .unwrap();
    let h = srv.until(kind::HEADERS);
    let mut out = BytesMut::new();
    response_headers(&mut out, h.stream);
    let mut body = BytesMut::new();
    while body.len() + 105 <= 16_000 {
        // Chunk { msg: 98 bytes }.
        netpoll_codec::h2::grpc::write_prefix(&mut body, false, 100);
        body.extend_from_slice(&[0x0a, 98]);
        body.extend_from_slice(&[b'y'; 98]);
    }
    for _ in 0..(4 << 20) / body.len() {
        h2f::write_data(&mut out, h.stream, &body, false);
    }
    srv.send(&out);
    let rst = srv.until(kind::RST_STREAM);
    assert_eq!(rst.stream, h.stream);
    let mut n = 0;
    let e = loop {
        match s.recv() {
            Ok(Some(_)) => n += 1,
            Ok(None) => panic!("the stream ended OK"),
            Err(e) => break e,
        }
    };
    assert!(n * 105 <= (3 << 20) / 2, "{n} messages were held");
    assert!(e.to_string().contains("flow-control window"), "{e}");
    // A client-streaming reply followed by an error status: finish() fails.
    let s = c.concat().unwrap();
    s.send(&Chunk { msg: "a".into() }).unwrap();
    srv.frames.clear();
    let h = srv.until(kind::HEADERS);
    let mut out = BytesMut::new();
    response_headers(&mut out, h.stream);
    let mut m = BytesMut::new();
    netpoll_codec::h2::grpc::write_prefix(&mut m, false, 3);
    m.extend_from_slice(&[0x0a, 1, b'p']);
    h2f::write_data(&mut out, h.stream, &m, false);
    response_trailers(&mut out, h.stream, "13");
    srv.send(&out);
    let e = s.finish().unwrap_err();
    assert_eq!(e.kind(), netpoll_rpc::ErrorKind::Internal, "{e}");
    // A proxy's 503 is UNAVAILABLE (retried as such), not a protocol error.
    let s = c.concat().unwrap();
    srv.frames.clear();
    let h = srv.until(kind::HEADERS);
    let mut b = Vec::new();
    hpack::encode(&mut b, b":status", b"503", false);
    let mut out = BytesMut::new();
    h2f::write_headers(&mut out, h.stream, &b, true, 16_384);
    srv.send(&out);
    let e = s.finish().unwrap_err();
    assert_eq!(e.kind(), netpoll_rpc::ErrorKind::Unavailable, "{e}");
}

/// A streaming call opened on a netpoll core (as a handler streaming to another service
/// would): blocking sends are refused there, the callback form and `try_send` work, and
/// the replies and the end arrive as events.
#[test]
fn a_callback_stream_runs_on_a_netpoll_core() {
    use examples::gen::pb::streamer::{Chunk, RepeatRequest, StreamerClient};
    use netpoll_rpc::client::{ClientBuilder, StreamEvent};
    let server = EchoServer::start(&[]);
    let rt = netpoll::Runtime::builder().cores(1).build().unwrap();
    let c = StreamerClient::from_builder(
        ClientBuilder::new(server.addr)
            .grpc()
            .runtime(rt.handle().clone()),
    )
    .unwrap();
    let (events, got) = std::sync::mpsc::channel();
    let (handles, handle) = std::sync::mpsc::channel();
    rt.handle()
        .spawn(0, move |_core| {
            let blocking = c.chat().unwrap();
            let refused = blocking.send(&Chunk { msg: "x".into() });
            assert!(
                matches!(refused, Err(netpoll_rpc::CallError::WouldBlockCore)),
                "{refused:?}"
            );
            blocking.cancel();
            let s = c
                .client()
                .stream_with::<Chunk, Chunk>("Chat", move |e| {
                    let _ = events.send(e);
                })
                .unwrap();
            for i in 0..100 {
                let sent = s.try_send(&Chunk {
                    msg: format!("cb {i}").into(),
                });
                assert!(sent.unwrap(), "the queue is far from full");
            }
            s.close_send();
            handles.send(s).unwrap(); // kept: dropping it would cancel the stream
        })
        .unwrap();
    let _s = handle.recv_timeout(Duration::from_secs(10)).unwrap();
    for i in 0..100 {
        match got.recv_timeout(Duration::from_secs(10)).unwrap() {
            StreamEvent::Message(m) => assert_eq!(m.msg, bytes::Bytes::from(format!("cb {i}"))),
            StreamEvent::End(e) => panic!("ended early: {e:?}"),
        }
    }
    match got.recv_timeout(Duration::from_secs(10)).unwrap() {
        StreamEvent::End(Ok(())) => {}
        other => panic!("{other:?}"),
    }
    assert!(
        got.recv_timeout(Duration::from_millis(200)).is_err(),
        "told twice"
    );
    // A status ends the events; so does our cancel, once, whichever thread it is on.
    let c = StreamerClient::from_builder(ClientBuilder::new(server.addr).grpc()).unwrap();
    let (tx, got) = std::sync::mpsc::channel();
    let refused = c
        .client()
        .stream_with::<RepeatRequest, Chunk>("Repeat", move |e| {
            let _ = tx.send(e);
        })
        .unwrap();
    let request = |count| RepeatRequest {
        msg: "r".into(),
        count,
    };
    assert!(refused.try_send(&request(-1)).unwrap());
    refused.close_send();
    match got.recv_timeout(Duration::from_secs(10)).unwrap() {
        StreamEvent::End(Err(e)) => {
            assert_eq!(e.kind(), netpoll_rpc::ErrorKind::InvalidArgument, "{e}")
        }
        other => panic!("{other:?}"),
    }
    let (tx, got) = std::sync::mpsc::channel();
    let long = c
        .client()
        .stream_with::<RepeatRequest, Chunk>("Repeat", move |e| {
            let _ = tx.send(e);
        })
        .unwrap();
    assert!(long.try_send(&request(1_000_000)).unwrap());
    long.close_send();
    assert!(matches!(
        got.recv_timeout(Duration::from_secs(10)).unwrap(),
        StreamEvent::Message(_)
    ));
    long.cancel();
    let ends: Vec<_> = std::iter::from_fn(|| got.recv_timeout(Duration::from_millis(500)).ok())
        .filter(|e| matches!(e, StreamEvent::End(_)))
        .collect();
    assert_eq!(ends.len(), 1, "{ends:?}");
    assert!(
        matches!(&ends[0], StreamEvent::End(Err(e)) if e.kind() == netpoll_rpc::ErrorKind::Cancelled),
        "{ends:?}"
    );
}
