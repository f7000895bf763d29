//! TLS through netpoll's public API (feature `tls`), with real sockets on 127.0.0.1: a
//! blocking rustls client against a netpoll listener, netpoll's own TLS client, and peers
//! that do not speak TLS, stall, or fail.
#![cfg(feature = "tls")]

use std::io::{ErrorKind, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::PathBuf;
use std::sync::mpsc;
use std::time::{Duration, Instant};

use netpoll::tls::{rustls, TlsAcceptor, TlsConnector};
use netpoll::{CloseReason, Conn, Core, Handler, Input, Runtime};

mod common;
use common::{connect, frame, on_core, read_frame, FrameEcho, IO_TIMEOUT};

/// A self-signed certificate for `localhost` and 127.0.0.1, written as PEM files.
struct Pki {
    dir: PathBuf,
}

impl Pki {
    fn new(tag: &str) -> Pki {
        let dir = std::env::temp_dir().join(format!("netpoll-tls-{tag}-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let ck = rcgen::generate_simple_self_signed(vec!["localhost".into(), "127.0.0.1".into()])
            .unwrap();
        std::fs::write(dir.join("cert.pem"), ck.cert.pem()).unwrap();
        std::fs::write(dir.join("key.pem"), ck.signing_key.serialize_pem()).unwrap();
        Pki { dir }
    }
    fn cert(&self) -> PathBuf {
        self.dir.join("cert.pem")
    }
    fn key(&self) -> PathBuf {
        self.dir.join("key.pem")
    }
    fn acceptor(&self) -> TlsAcceptor {
        TlsAcceptor::builder(self.cert(), self.key())
            .unwrap()
            .build()
            .unwrap()
    }
    fn connector(&self) -> TlsConnector {
        TlsConnector::builder(self.cert()).unwrap().build().unwrap()
    }
    /// A blocking rustls client.
    fn client(&self, addr: SocketAddr) -> rustls::StreamOwned<rustls::ClientConnection, TcpStream> {
        let conn = rustls::ClientConnection::new(
            self.connector().config().clone(),
            "localhost".try_into().unwrap(),
        )
        .unwrap();
        rustls::StreamOwned::new(conn, connect(addr))
    }
}

impl Drop for Pki {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// Waits until at least `n` connections closed for TLS failures (a connection is counted
/// when it is released, after its close completes).
fn wait_tls_failed(rt: &Runtime, n: u64) -> u64 {
    let start = Instant::now();
    loop {
        let got = rt.handle().close_counts().tls_failed;
        if got >= n || start.elapsed() > IO_TIMEOUT {
            return got;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

fn runtime() -> Runtime {
    Runtime::builder().cores(1).build().expect("runtime")
}

/// A one-core runtime echoing frames on a TLS listener with `acceptor`.
fn tls_echo(acceptor: TlsAcceptor) -> (Runtime, SocketAddr) {
    let rt = runtime();
    let addr = rt
        .handle()
        .listen_tls("127.0.0.1:0", acceptor, |_| Box::new(FrameEcho))
        .unwrap();
    (rt, addr)
}

/// Reads until EOF or an error; returns whether the server closed within the timeout.
fn closed_by_server(s: &mut TcpStream) -> bool {
    let mut buf = [0u8; 4096];
    let start = Instant::now();
    while start.elapsed() < IO_TIMEOUT {
        match s.read(&mut buf) {
            Ok(0) => return true,
            Ok(_) => {}
            Err(e) if e.kind() == ErrorKind::ConnectionReset => return true,
            Err(e) if e.kind() == ErrorKind::WouldBlock || e.kind() == ErrorKind::TimedOut => {
                return false
            }
            Err(_) => return true,
        }
    }
    false
}

#[test]
fn frames_small_and_large_echo_over_tls() {
    let pki = Pki::new("echo");
    let (rt, addr) = tls_echo(pki.acceptor());
    let mut s = pki.client(addr);
    // 64 pipelined small frames, then one of 1 MiB.
    let mut batch = Vec::new();
    for i in 0..64u32 {
        batch.extend(frame(&i.to_be_bytes()));
    }
    s.write_all(&batch).unwrap();
    for i in 0..64u32 {
        assert_eq!(read_frame(&mut s).unwrap(), i.to_be_bytes());
    }
    let big: Vec<u8> = (0..1 << 20).map(|i| (i * 7) as u8).collect();
    s.write_all(&frame(&big)).unwrap();
    assert_eq!(read_frame(&mut s).unwrap(), big);
    assert_eq!(
        s.conn.protocol_version(),
        Some(rustls::ProtocolVersion::TLSv1_3)
    );
    drop(s);
    rt.shutdown(Duration::from_secs(1));
}

/// Reports the first frame it reads, and how its connection ended.
struct Probe {
    first: Option<Vec<u8>>,
    tx: mpsc::Sender<Result<Vec<u8>, String>>,
}

impl Handler for Probe {
    fn on_open(&mut self, conn: &mut Conn<'_>) {
        // Written before the handshake completes: it must wait for it, then go.
        conn.write(&frame(b"hello over tls"));
    }
    fn on_data(&mut self, conn: &mut Conn<'_>, input: &mut Input<'_>) {
        if let Ok(f) = read_frame(&mut std::io::Cursor::new(input.chunk())) {
            input.advance(4 + f.len());
            if self.first.is_none() {
                self.first = Some(f.clone());
                let _ = self.tx.send(Ok(f));
                conn.close();
            }
        }
    }
    fn on_close(&mut self, _core: &mut Core, reason: CloseReason) {
        if self.first.is_none() {
            let _ = self.tx.send(Err(reason.to_string()));
        }
    }
}

fn connect_tls(
    rt: &Runtime,
    addr: SocketAddr,
    tls: TlsConnector,
    name: &str,
) -> Result<Vec<u8>, String> {
    let (tx, rx) = mpsc::channel();
    let name = name.to_owned();
    on_core(rt, 0, move |core| {
        let probe = Box::new(Probe { first: None, tx });
        core.connect_tls(addr, Some(IO_TIMEOUT), probe, &tls, &name)
            .map(|_| ())
            .map_err(|e| e.to_string())
    })?;
    rx.recv_timeout(IO_TIMEOUT).expect("an answer or a close")
}

#[test]
fn netpoll_client_talks_to_netpoll_server_and_checks_the_name() {
    let pki = Pki::new("client");
    let (rt, addr) = tls_echo(pki.acceptor());
    assert_eq!(
        connect_tls(&rt, addr, pki.connector(), "localhost").unwrap(),
        b"hello over tls"
    );
    assert_eq!(
        connect_tls(&rt, addr, pki.connector(), "127.0.0.1").unwrap(),
        b"hello over tls"
    );
    let err = connect_tls(&rt, addr, pki.connector(), "wrong.example").unwrap_err();
    assert!(
        err.contains("TLS") && err.contains("not valid for name"),
        "{err}"
    );
    // A server whose certificate this client does not trust.
    let other = Pki::new("client-other");
    let err = connect_tls(&rt, addr, other.connector(), "localhost").unwrap_err();
    assert!(err.contains("invalid peer certificate"), "{err}");
    assert!(wait_tls_failed(&rt, 2) >= 2);
    rt.shutdown(Duration::from_secs(1));
}

#[test]
fn plain_text_and_garbage_are_refused_without_disturbing_others() {
    let pki = Pki::new("refuse");
    let (rt, addr) = tls_echo(pki.acceptor());
    let mut good = pki.client(addr);
    good.write_all(&frame(b"before")).unwrap();
    assert_eq!(read_frame(&mut good).unwrap(), b"before");

    // A plain-text frame on the TLS port: an alert, then the server closes.
    let mut plain = connect(addr);
    plain.write_all(&frame(b"plain text")).unwrap();
    assert!(closed_by_server(&mut plain), "plain text was not refused");
    // Garbage that looks like the start of a handshake record.
    let mut junk = connect(addr);
    junk.write_all(&[0x16, 0x03, 0x01, 0x00, 0x05, 1, 2, 3, 4, 5])
        .unwrap();
    assert!(closed_by_server(&mut junk), "garbage was not refused");
    // A peer that closes mid-record.
    let mut half = connect(addr);
    half.write_all(&[0x16, 0x03, 0x01, 0x02, 0x00, 1, 0])
        .unwrap();
    half.shutdown(std::net::Shutdown::Write).unwrap();
    assert!(closed_by_server(&mut half));

    good.write_all(&frame(b"after")).unwrap();
    assert_eq!(read_frame(&mut good).unwrap(), b"after");
    drop((plain, junk, half));
    assert!(wait_tls_failed(&rt, 2) >= 2);
    rt.shutdown(Duration::from_secs(1));
}

#[test]
fn a_stalled_handshake_is_closed_at_its_deadline() {
    let pki = Pki::new("stall");
    let rt = runtime();
    let acceptor = pki.acceptor().handshake_timeout(Duration::from_millis(300));
    let addr = rt
        .handle()
        .listen_tls("127.0.0.1:0", acceptor, |_| Box::new(FrameEcho))
        .unwrap();
    let start = Instant::now();
    let mut silent = connect(addr);
    // Half a ClientHello, then nothing.
    silent.write_all(&[0x16, 0x03, 0x01]).unwrap();
    assert!(closed_by_server(&mut silent));
    let waited = start.elapsed();
    assert!(
        waited >= Duration::from_millis(250) && waited < Duration::from_secs(5),
        "{waited:?}"
    );
    drop(silent);
    assert_eq!(wait_tls_failed(&rt, 1), 1);
    // A handshake that completes is not cut at the deadline.
    let mut s = pki.client(addr);
    s.write_all(&frame(b"x")).unwrap();
    assert_eq!(read_frame(&mut s).unwrap(), b"x");
    std::thread::sleep(Duration::from_millis(500));
    s.write_all(&frame(b"y")).unwrap();
    assert_eq!(read_frame(&mut s).unwrap(), b"y");
    rt.shutdown(Duration::from_secs(1));
}

#[test]
fn a_port_that_allows_plain_text_serves_both() {
    let pki = Pki::new("both");
    let (rt, addr) = tls_echo(pki.acceptor().allow_plaintext(true));
    let mut plain = connect(addr);
    plain.write_all(&frame(b"plain")).unwrap();
    assert_eq!(read_frame(&mut plain).unwrap(), b"plain");
    let mut tls = pki.client(addr);
    tls.write_all(&frame(b"tls")).unwrap();
    assert_eq!(read_frame(&mut tls).unwrap(), b"tls");
    rt.shutdown(Duration::from_secs(1));
}

#[test]
fn a_graceful_close_sends_close_notify() {
    struct CloseAfterEcho;
    impl Handler for CloseAfterEcho {
        fn on_data(&mut self, conn: &mut Conn<'_>, input: &mut Input<'_>) {
            let n = input.len();
            conn.write(&input.chunk()[..n]);
            input.advance(n);
            conn.close();
        }
    }
    let pki = Pki::new("notify");
    let rt = runtime();
    let addr = rt
        .handle()
        .listen_tls("127.0.0.1:0", pki.acceptor(), |_| Box::new(CloseAfterEcho))
        .unwrap();
    let mut s = pki.client(addr);
    s.write_all(b"bye").unwrap();
    let mut got = Vec::new();
    // `read_to_end` succeeds only on a clean close: `close_notify`, not a bare FIN.
    s.read_to_end(&mut got).unwrap();
    assert_eq!(got, b"bye");
    rt.shutdown(Duration::from_secs(1));
}

#[test]
fn a_burst_of_handshakes_beyond_the_per_turn_budget_all_complete() {
    let pki = Pki::new("burst");
    let (rt, addr) = tls_echo(pki.acceptor());
    let mut established = pki.client(addr);
    established.write_all(&frame(b"first")).unwrap();
    assert_eq!(read_frame(&mut established).unwrap(), b"first");
    // 128 ClientHellos at once: more than a turn's budget, so most wait for later turns.
    let barrier = std::sync::Arc::new(std::sync::Barrier::new(128));
    let clients: Vec<_> = (0..128u32)
        .map(|i| {
            let (barrier, config) = (barrier.clone(), pki.connector().config().clone());
            std::thread::spawn(move || {
                let conn =
                    rustls::ClientConnection::new(config, "localhost".try_into().unwrap()).unwrap();
                barrier.wait();
                let mut s = rustls::StreamOwned::new(conn, connect(addr));
                s.write_all(&frame(&i.to_be_bytes())).unwrap();
                read_frame(&mut s).unwrap() == i.to_be_bytes()
            })
        })
        .collect();
    // The established connection is served meanwhile.
    for i in 0..50u32 {
        established.write_all(&frame(&i.to_be_bytes())).unwrap();
        assert_eq!(read_frame(&mut established).unwrap(), i.to_be_bytes());
    }
    for c in clients {
        assert!(c.join().unwrap(), "a client got a wrong echo");
    }
    rt.shutdown(Duration::from_secs(1));
}

// ----- regressions from the review of the TLS layer --------------------------------------

/// Reports how its connection ended.
struct Ends {
    tx: mpsc::Sender<String>,
    first_write: Vec<u8>,
    close_at_once: bool,
}

impl Handler for Ends {
    fn on_open(&mut self, conn: &mut Conn<'_>) {
        conn.write(&self.first_write);
        if self.close_at_once {
            conn.close();
        }
    }
    fn on_data(&mut self, _conn: &mut Conn<'_>, input: &mut Input<'_>) {
        let n = input.len();
        input.advance(n);
    }
    fn on_close(&mut self, _core: &mut Core, reason: CloseReason) {
        let _ = self.tx.send(reason.to_string());
    }
}

#[test]
fn a_fatal_alert_with_output_still_queued_closes_at_once() {
    let pki = Pki::new("alert");
    let config = pki.acceptor().config().clone();
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    // A server that completes the handshake, takes nothing for a while (so our output
    // queues up), answers junk with a fatal alert and keeps the socket open.
    let server = std::thread::spawn(move || {
        let (mut sock, _) = listener.accept().unwrap();
        let mut sc = rustls::ServerConnection::new(config).unwrap();
        while sc.is_handshaking() {
            sc.complete_io(&mut sock).unwrap();
        }
        std::thread::sleep(Duration::from_millis(300));
        let junk = vec![0x17u8; 40000];
        let mut rest = &junk[..];
        while sc.read_tls(&mut rest).unwrap_or(0) > 0 && sc.process_new_packets().is_ok() {}
        while sc.wants_write() {
            sc.write_tls(&mut sock).unwrap();
        }
        std::thread::sleep(Duration::from_secs(3));
    });
    let rt = runtime();
    let (tx, rx) = mpsc::channel();
    let tls = pki.connector();
    on_core(&rt, 0, move |core| {
        let h = Ends {
            tx,
            first_write: vec![7u8; 64 << 20],
            close_at_once: false,
        };
        core.connect_tls(addr, None, Box::new(h), &tls, "localhost")
            .unwrap();
    });
    let why = rx
        .recv_timeout(Duration::from_secs(2))
        .expect("closed at once, not at the peer's FIN");
    assert!(why.contains("alert"), "{why}");
    server.join().unwrap();
    rt.shutdown(Duration::from_secs(1));
}

#[test]
fn output_written_and_closed_during_the_handshake_is_sent() {
    struct Collect(mpsc::Sender<Vec<u8>>);
    impl Handler for Collect {
        fn on_data(&mut self, _conn: &mut Conn<'_>, input: &mut Input<'_>) {
            let _ = self.0.send(input.chunk().to_vec());
            let n = input.len();
            input.advance(n);
        }
    }
    let pki = Pki::new("closewrite");
    let rt = runtime();
    let (tx, rx) = mpsc::channel();
    let addr = rt
        .handle()
        .listen_tls("127.0.0.1:0", pki.acceptor(), move |_| {
            Box::new(Collect(tx.clone()))
        })
        .unwrap();
    let (ended_tx, ended) = mpsc::channel();
    let tls = pki.connector();
    on_core(&rt, 0, move |core| {
        let h = Ends {
            tx: ended_tx,
            first_write: frame(b"oneway"),
            close_at_once: true,
        };
        core.connect_tls(addr, None, Box::new(h), &tls, "localhost")
            .unwrap();
    });
    assert_eq!(rx.recv_timeout(IO_TIMEOUT).unwrap(), frame(b"oneway"));
    assert_eq!(ended.recv_timeout(IO_TIMEOUT).unwrap(), "closed locally");
    rt.shutdown(Duration::from_secs(1));
}

#[test]
fn a_request_and_fin_behind_the_handshake_budget_are_served() {
    let pki = Pki::new("halfclose");
    let (rt, addr) = tls_echo(pki.acceptor());
    let barrier = std::sync::Arc::new(std::sync::Barrier::new(128));
    let clients: Vec<_> = (0..128u32)
        .map(|i| {
            let (barrier, config) = (barrier.clone(), pki.connector().config().clone());
            std::thread::spawn(move || {
                let conn =
                    rustls::ClientConnection::new(config, "localhost".try_into().unwrap()).unwrap();
                barrier.wait();
                let mut s = rustls::StreamOwned::new(conn, connect(addr));
                s.write_all(&frame(&i.to_be_bytes())).unwrap();
                s.flush().unwrap();
                // Finished, the request and FIN, close together.
                s.sock.shutdown(std::net::Shutdown::Write).unwrap();
                read_frame(&mut s)
                    .map(|f| f == i.to_be_bytes())
                    .unwrap_or(false)
            })
        })
        .collect();
    let ok = clients
        .into_iter()
        .filter_map(|c| c.join().ok())
        .filter(|&b| b)
        .count();
    assert_eq!(ok, 128);
    rt.shutdown(Duration::from_secs(1));
}

#[test]
fn close_notify_without_a_fin_ends_the_input() {
    let pki = Pki::new("notifyin");
    let (rt, addr) = tls_echo(pki.acceptor());
    let mut s = pki.client(addr);
    s.write_all(&frame(b"x")).unwrap();
    assert_eq!(read_frame(&mut s).unwrap(), b"x");
    // As OpenSSL's two-way shutdown does: close_notify, the socket left open.
    s.conn.send_close_notify();
    s.flush().unwrap();
    let mut rest = Vec::new();
    // The server takes it as the end, closes, and says close_notify back.
    s.read_to_end(&mut rest).unwrap();
    assert!(rest.is_empty());
    rt.shutdown(Duration::from_secs(1));
}

#[test]
fn sni_chooses_the_certificate_by_name_with_a_default() {
    let default = Pki::new("sni-default");
    let dir = std::env::temp_dir().join(format!("netpoll-tls-sni-a-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let a = rcgen::generate_simple_self_signed(vec!["a.example".into()]).unwrap();
    std::fs::write(dir.join("cert.pem"), a.cert.pem()).unwrap();
    std::fs::write(dir.join("key.pem"), a.signing_key.serialize_pem()).unwrap();
    let acceptor = TlsAcceptor::builder(default.cert(), default.key())
        .unwrap()
        .sni("A.example", dir.join("cert.pem"), dir.join("key.pem"))
        .unwrap()
        .build()
        .unwrap();
    let (rt, addr) = tls_echo(acceptor);
    let trusting_a = TlsConnector::builder(dir.join("cert.pem"))
        .unwrap()
        .build()
        .unwrap();
    // Asking for a.example gets its certificate; asking for localhost (or nothing) gets
    // the default, which a client trusting only a.example's refuses.
    assert_eq!(
        connect_tls(&rt, addr, trusting_a.clone(), "a.example").unwrap(),
        b"hello over tls"
    );
    assert_eq!(
        connect_tls(&rt, addr, default.connector(), "localhost").unwrap(),
        b"hello over tls"
    );
    assert_eq!(
        connect_tls(&rt, addr, default.connector(), "127.0.0.1").unwrap(),
        b"hello over tls"
    );
    let e = connect_tls(&rt, addr, trusting_a, "localhost").unwrap_err();
    assert!(e.contains("invalid peer certificate"), "{e}");
    rt.shutdown(Duration::from_secs(1));
    let _ = std::fs::remove_dir_all(&dir);
}
