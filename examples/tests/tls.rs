//! TLS end to end, with real processes: `echo_server --tls-*` against Apache Thrift's Python
//! client on Python's `ssl` (`TSSLSocket`), with and without client certificates; our
//! client against a TLS Volo server and a TLS Volo client against our server; and bad
//! certificates and hostile peers, each of which must get a clear error and a closed
//! connection without disturbing the others.
//!
//! Certificates come from the `tls_certs` binary (a CA, server and client certificates, an
//! expired server certificate and a foreign CA's client certificate).

use std::io::{Read, Write};
use std::net::{Shutdown, SocketAddr, TcpStream};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use bytes::Bytes;
use examples::gen::echo;
use netpoll_rpc::client::{ClientBuilder, ClientTransport};
use netpoll_rpc::tls::{rustls, TlsConnector};
use netpoll_rpc::CallError;

mod common;
use common::peers::{generated, peer_script, volo_peer, wait_listening, Peer};
use common::{free_addr, http_get, pem, EchoServer};

/// `echo_server` serving TLS with the test server certificate (or `cert`), plus `flags`.
fn tls_server(cert: &str, flags: &[&str]) -> EchoServer {
    let (c, k) = (pem(&format!("{cert}.pem")), pem(&format!("{cert}.key")));
    let mut all = vec!["--tls-cert", &c, "--tls-key", &k];
    all.extend_from_slice(flags);
    EchoServer::start(&all)
}

fn connector(ca: &str, identity: bool) -> TlsConnector {
    let mut b = TlsConnector::builder(pem(ca)).unwrap();
    if identity {
        b = b.identity(pem("client.pem"), pem("client.key")).unwrap();
    }
    b.build().unwrap()
}

fn our_client(
    addr: SocketAddr,
    tls: TlsConnector,
    name: &str,
    t: ClientTransport,
) -> echo::EchoClient {
    let b = ClientBuilder::new(addr)
        .transport(t)
        .connect_timeout(Duration::from_secs(5))
        .tls(tls, name)
        .unwrap();
    echo::EchoClient::from_builder(b).unwrap()
}

/// One Echo call from Python over TLS: `Ok(())`, or the error Python reported.
fn python_echo(
    gen: &Path,
    addr: SocketAddr,
    ca: &str,
    cert: Option<&str>,
    name: &str,
) -> Result<(), String> {
    let (c, k) = match cert {
        Some(c) => (pem(&format!("{c}.pem")), pem(&format!("{c}.key"))),
        None => ("-".into(), "-".into()),
    };
    let out = Command::new("python3")
        .arg(peer_script())
        .arg(gen)
        .args([
            "tls-echo",
            "127.0.0.1",
            &addr.port().to_string(),
            &pem(ca),
            &c,
            &k,
            name,
        ])
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout).trim().to_owned();
    if out.status.success() && stdout == "OK" {
        Ok(())
    } else {
        Err(format!("{stdout}{}", String::from_utf8_lossy(&out.stderr)))
    }
}

/// Every method from Python's Thrift client over TLS.
fn python_full_client(
    gen: &Path,
    addr: SocketAddr,
    transport: &str,
    protocol: &str,
    cert: Option<&str>,
) {
    let (c, k) = match cert {
        Some(c) => (pem(&format!("{c}.pem")), pem(&format!("{c}.key"))),
        None => ("-".into(), "-".into()),
    };
    let out = Command::new("python3")
        .arg(peer_script())
        .arg(gen)
        .args([
            "client",
            "127.0.0.1",
            &addr.port().to_string(),
            transport,
            protocol,
        ])
        .args([&pem("ca.pem"), &c, &k, "-"])
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success() && stdout.contains("all checks passed"),
        "Python over TLS, {transport}/{protocol}:\n{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

fn assert_err_contains(r: Result<(), String>, what: &str) {
    match r {
        Ok(()) => panic!("expected a failure ({what}), got success"),
        Err(e) => assert!(
            e.to_lowercase().contains(&what.to_lowercase()),
            "expected {what:?} in: {e}"
        ),
    }
}

#[test]
fn python_thrift_clients_over_tls_with_and_without_client_certificates() {
    let Some(gen) = generated() else { return };
    let server = tls_server("server", &[]);
    for (transport, protocol) in [("framed", "binary"), ("buffered", "compact")] {
        python_full_client(&gen, server.addr, transport, protocol, None);
    }
    python_echo(&gen, server.addr, "ca.pem", None, "localhost").unwrap();

    // mTLS: a certificate of the CA is required.
    let ca = pem("ca.pem");
    let mtls = tls_server("server", &["--tls-client-ca", &ca]);
    python_full_client(&gen, mtls.addr, "framed", "compact", Some("client"));
    assert_err_contains(
        python_echo(&gen, mtls.addr, "ca.pem", None, "-"),
        "certificate required",
    );
    assert_err_contains(
        python_echo(&gen, mtls.addr, "ca.pem", Some("foreign-client"), "-"),
        "unknown ca",
    );
    // The refusals disturbed nothing.
    python_echo(&gen, mtls.addr, "ca.pem", Some("client"), "-").unwrap();

    // Optional client certificates: none is fine, a foreign one is still refused.
    let optional = tls_server("server", &["--tls-client-ca", &ca, "--tls-client-optional"]);
    python_echo(&gen, optional.addr, "ca.pem", None, "-").unwrap();
    python_echo(&gen, optional.addr, "ca.pem", Some("client"), "-").unwrap();
    assert_err_contains(
        python_echo(&gen, optional.addr, "ca.pem", Some("foreign-client"), "-"),
        "unknown ca",
    );
}

#[test]
fn python_refuses_expired_untrusted_and_misnamed_server_certificates() {
    let Some(gen) = generated() else { return };
    let expired = tls_server("expired", &[]);
    assert_err_contains(
        python_echo(&gen, expired.addr, "ca.pem", None, "-"),
        "certificate has expired",
    );
    let server = tls_server("server", &[]);
    assert_err_contains(
        python_echo(&gen, server.addr, "foreign-ca.pem", None, "-"),
        "unable to get local issuer certificate",
    );
    assert_err_contains(
        python_echo(&gen, server.addr, "ca.pem", None, "wrong.example"),
        "hostname mismatch",
    );
    python_echo(&gen, server.addr, "ca.pem", None, "localhost").unwrap();
}

#[test]
fn a_port_that_allows_plain_text_serves_python_both_ways() {
    let Some(gen) = generated() else { return };
    let server = tls_server("server", &["--tls-allow-plaintext"]);
    python_echo(&gen, server.addr, "ca.pem", None, "-").unwrap();
    let out = Command::new("python3")
        .arg(peer_script())
        .arg(&gen)
        .args([
            "client",
            "127.0.0.1",
            &server.addr.port().to_string(),
            "framed",
            "binary",
        ])
        .output()
        .unwrap();
    assert!(String::from_utf8_lossy(&out.stdout).contains("all checks passed"));
}

fn call_err(r: Result<Bytes, CallError>) -> String {
    match r {
        Ok(_) => panic!("expected the call to fail"),
        Err(e) => {
            assert!(
                matches!(e, CallError::Connect(_)),
                "not a connect error: {e:?}"
            );
            assert!(
                e.is_retryable(),
                "a failed handshake sent nothing: retryable"
            );
            e.to_string()
        }
    }
}

/// The error of a Framed echo call from our client that TLS refuses.
fn refused(addr: SocketAddr, tls: TlsConnector, name: &str) -> String {
    call_err(our_client(addr, tls, name, ClientTransport::Framed).echo(Bytes::from_static(b"x")))
}

#[test]
fn our_client_over_tls_and_its_errors_for_bad_certificates() {
    let server = tls_server("server", &[]);
    let big = Bytes::from(vec![7u8; 1 << 20]);
    for t in [ClientTransport::TTHeader, ClientTransport::Framed] {
        for name in ["localhost", "127.0.0.1"] {
            let c = our_client(server.addr, connector("ca.pem", false), name, t);
            assert_eq!(&c.echo(Bytes::from_static(b"hi")).unwrap()[..], b"hi");
            assert_eq!(c.echo(big.clone()).unwrap(), big);
        }
    }
    let expired = tls_server("expired", &[]);
    let e = refused(expired.addr, connector("ca.pem", false), "localhost");
    assert!(e.contains("TLS") && e.contains("expired"), "{e}");

    let e = refused(server.addr, connector("ca.pem", false), "wrong.example");
    assert!(e.contains("not valid for name \"wrong.example\""), "{e}");

    let e = refused(server.addr, connector("foreign-ca.pem", false), "localhost");
    assert!(e.contains("UnknownIssuer"), "{e}");

    let ca = pem("ca.pem");
    let mtls = tls_server("server", &["--tls-client-ca", &ca, "--echo-peer-cert"]);
    let e = refused(mtls.addr, connector("ca.pem", false), "localhost");
    assert!(e.contains("CertificateRequired"), "{e}");
    let c = our_client(
        mtls.addr,
        connector("ca.pem", true),
        "localhost",
        ClientTransport::Framed,
    );
    assert_eq!(&c.echo(Bytes::from_static(b"mtls")).unwrap()[..], b"mtls");
    // The handler sees who called: the certificate the client presented.
    let der = netpoll_rpc::tls::load_certs(pem("client.pem")).unwrap();
    assert_eq!(
        &c.echo(Bytes::from_static(b"peer-certificate")).unwrap()[..],
        der[0].as_ref()
    );

    // TLS to a plain-text server.
    let plain = EchoServer::start(&[]);
    let e = refused(plain.addr, connector("ca.pem", false), "localhost");
    assert!(e.contains("TLS"), "{e}");
}

#[test]
fn volo_over_tls_both_ways() {
    let Some(peer) = volo_peer() else { return };
    let (ca, cert, key) = (pem("ca.pem"), pem("client.pem"), pem("client.key"));
    // Our client calls a Volo TLS server that requires client certificates.
    for (transport, ours) in [
        ("ttheader", ClientTransport::TTHeader),
        ("framed", ClientTransport::Framed),
    ] {
        let addr = free_addr();
        let (scert, skey) = (pem("server.pem"), pem("server.key"));
        let _volo = Peer(
            Command::new(&peer)
                .args([
                    "serve-tls",
                    "--transport",
                    transport,
                    "--echo",
                    &addr.to_string(),
                ])
                .args(["--cert", &scert, "--key", &skey, "--client-ca", &ca])
                .stdout(Stdio::null())
                .spawn()
                .unwrap(),
        );
        wait_listening(addr);
        let c = our_client(addr, connector("ca.pem", true), "localhost", ours);
        assert_eq!(
            &c.echo(Bytes::from_static(b"to volo")).unwrap()[..],
            b"to volo"
        );
        let big = Bytes::from(vec![3u8; 256 << 10]);
        assert_eq!(c.echo(big.clone()).unwrap(), big);
        // Without a certificate, Volo refuses us, and we say so.
        let c = our_client(addr, connector("ca.pem", false), "localhost", ours);
        let e = c.echo(Bytes::from_static(b"x")).unwrap_err().to_string();
        assert!(e.contains("CertificateRequired"), "{transport}: {e}");
    }
    // A Volo TLS client calls our server, with mTLS.
    let mtls = tls_server("server", &["--tls-client-ca", &ca]);
    for transport in ["ttheader", "framed"] {
        let out = Command::new(&peer)
            .args([
                "call-tls",
                "--transport",
                transport,
                "--echo",
                &mtls.addr.to_string(),
            ])
            .args(["--ca", &ca, "--cert", &cert, "--key", &key])
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "Volo TLS client over {transport}: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

/// Reads until the server closes the connection; how long that took, or `None` if it
/// stayed open for 5 s.
fn time_to_close(s: &mut TcpStream) -> Option<Duration> {
    let start = Instant::now();
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let mut buf = [0u8; 4096];
    loop {
        match s.read(&mut buf) {
            Ok(0) => return Some(start.elapsed()),
            Ok(_) => {}
            Err(e)
                if e.kind() == std::io::ErrorKind::WouldBlock
                    || e.kind() == std::io::ErrorKind::TimedOut =>
            {
                return None
            }
            Err(_) => return Some(start.elapsed()), // reset
        }
    }
}

fn open_fds(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd"))
        .unwrap()
        .count()
}

/// A rustls client that completes the handshake with the server, over a plain socket the
/// test then abuses.
fn handshaken(addr: SocketAddr) -> (rustls::ClientConnection, TcpStream) {
    let config = connector("ca.pem", false).config().clone();
    let mut tls = rustls::ClientConnection::new(config, "localhost".try_into().unwrap()).unwrap();
    let mut sock = TcpStream::connect(addr).unwrap();
    sock.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    while tls.is_handshaking() {
        tls.complete_io(&mut sock).unwrap();
    }
    (tls, sock)
}

#[test]
fn hostile_tls_peers_are_closed_and_others_go_on() {
    let server = tls_server(
        "server",
        &[
            "--tls-handshake-timeout-ms",
            "500",
            "--metrics",
            "127.0.0.1:0",
        ],
    );
    let metrics = server.metrics.expect("metrics address");
    let good = our_client(
        server.addr,
        connector("ca.pem", false),
        "localhost",
        ClientTransport::TTHeader,
    );
    assert_eq!(
        &good.echo(Bytes::from_static(b"before")).unwrap()[..],
        b"before"
    );
    let baseline = open_fds(server.pid());

    // Garbage instead of a ClientHello.
    let mut s = TcpStream::connect(server.addr).unwrap();
    s.write_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n").unwrap();
    assert!(time_to_close(&mut s).is_some(), "garbage: still open");
    // Plain-text Thrift on the TLS port.
    let mut s = TcpStream::connect(server.addr).unwrap();
    s.write_all(&[0, 0, 0, 5, 0x80, 1, 0, 1, 0]).unwrap();
    assert!(time_to_close(&mut s).is_some(), "plain text: still open");
    // A handshake that stalls after three bytes: closed at the deadline, not before.
    let mut s = TcpStream::connect(server.addr).unwrap();
    s.write_all(&[0x16, 0x03, 0x01]).unwrap();
    let waited = time_to_close(&mut s).expect("stalled handshake: still open after 5 s");
    assert!(
        waited >= Duration::from_millis(400),
        "closed after {waited:?}"
    );
    // A connection that says nothing at all.
    let mut silent = TcpStream::connect(server.addr).unwrap();
    assert!(
        time_to_close(&mut silent).is_some(),
        "silent peer: still open"
    );
    // A peer that closes in the middle of a record.
    let mut s = TcpStream::connect(server.addr).unwrap();
    s.write_all(&[0x16, 0x03, 0x01, 0x02, 0x00, 0x01, 0x00])
        .unwrap();
    s.shutdown(Shutdown::Write).unwrap();
    assert!(time_to_close(&mut s).is_some(), "half record: still open");
    // After a full handshake: half a record, then close.
    let (mut tls, mut sock) = handshaken(server.addr);
    tls.writer().write_all(&[0, 0, 0, 1, 0]).unwrap();
    let mut records = Vec::new();
    tls.write_tls(&mut records).unwrap();
    sock.write_all(&records[..records.len() / 2]).unwrap();
    sock.shutdown(Shutdown::Write).unwrap();
    assert!(
        time_to_close(&mut sock).is_some(),
        "mid-record close: still open"
    );
    // After a full handshake: a record whose ciphertext was tampered with.
    let (mut tls, mut sock) = handshaken(server.addr);
    tls.writer().write_all(&[0, 0, 0, 1, 0]).unwrap();
    let mut records = Vec::new();
    tls.write_tls(&mut records).unwrap();
    let last = records.len() - 1;
    records[last] ^= 0xff;
    sock.write_all(&records).unwrap();
    assert!(
        time_to_close(&mut sock).is_some(),
        "tampered record: still open"
    );

    // Nothing else was disturbed, and nothing leaked.
    assert_eq!(
        &good.echo(Bytes::from_static(b"after")).unwrap()[..],
        b"after"
    );
    let t0 = Instant::now();
    while open_fds(server.pid()) > baseline && t0.elapsed() < Duration::from_secs(5) {
        std::thread::sleep(Duration::from_millis(20));
    }
    assert_eq!(open_fds(server.pid()), baseline, "descriptors leaked");
    // The server counted the TLS failures (all but the close after a full handshake,
    // which is the peer's close).
    let (_, body) = http_get(metrics, "/metrics").expect("metrics");
    let tls: u64 = body
        .lines()
        .find_map(|l| l.strip_prefix("rpc_server_connections_closed_total{reason=\"tls\"} "))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or_else(|| panic!("no TLS close count in:\n{body}"));
    assert_eq!(tls, 6, "{body}");
}

#[test]
fn the_registry_and_resolver_reach_etcd_over_tls() {
    use netpoll_rpc::registry::{EtcdRegistry, EtcdResolver};
    let etcd = common::Etcd::start_tls(&pem("server.pem"), &pem("server.key"), &pem("ca.pem"));
    // Each member is verified against its own host (127.0.0.1 here).
    let tls = || connector("ca.pem", false);
    let server = examples::echo_service::builder()
        .addr("127.0.0.1:0")
        .cores(1)
        .registry(EtcdRegistry::new(&etcd.url()).tls(tls()), "echo-tls")
        .deregister_delay(Duration::ZERO)
        .start()
        .expect("registers in etcd over TLS");
    let client = echo::EchoClient::new(
        "echo-tls",
        ClientBuilder::default().resolver(EtcdResolver::new(&etcd.url()).tls(tls())),
    )
    .unwrap();
    let t0 = Instant::now();
    loop {
        match client.echo(Bytes::from_static(b"found over TLS")) {
            Ok(r) => {
                assert_eq!(&r[..], b"found over TLS");
                break;
            }
            Err(e) => {
                assert!(
                    t0.elapsed() < Duration::from_secs(10),
                    "never resolved: {e}"
                );
                std::thread::sleep(Duration::from_millis(50));
            }
        }
    }
    // An https:// endpoint without TLS is an error, not plain text.
    let plain = examples::echo_service::builder()
        .addr("127.0.0.1:0")
        .cores(1)
        .registry(EtcdRegistry::new(&etcd.url()), "echo-tls")
        .start();
    assert!(plain.is_err(), "registered over plain text with a TLS etcd");
    server.shutdown(Duration::from_secs(1));
}
