//! Regression tests for the client half of the soundness review (`review-soundness.md`,
//! findings 2, 9, 14 and 18) and for the client's bounds, against a real `echo_server`
//! process (or a raw listener that never reads, where the test needs a stuck server).

mod common;

use std::io::Read;
use std::net::TcpListener;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use common::EchoServer;
use examples::gen::{echo, interop};
use netpoll_codec::frame::{self, Protocol, Split};
use netpoll_rpc::client::{ClientBuilder, ClientTransport};
use netpoll_rpc::CallError;

const WAIT: Duration = Duration::from_secs(20);

/// Finding 2: a client connection with much output queued stopped reading replies, the
/// server then stopped reading requests, and each waited for the other forever. Client
/// connections now never stop reading. 64 concurrent 1 MiB calls on one connection all
/// complete, and so does a small call after them.
#[test]
fn finding_02_many_large_calls_on_one_connection_do_not_deadlock() {
    let server = EchoServer::start(&[]);
    let c = echo::EchoClient::from_builder(
        ClientBuilder::new(server.addr)
            .connections(1)
            .max_queued_bytes(256 << 20)
            .call_timeout(Some(Duration::from_secs(30))),
    )
    .unwrap();
    let (tx, rx) = mpsc::channel();
    let payload = Bytes::from(vec![0x33u8; 1 << 20]);
    for _ in 0..64 {
        let tx = tx.clone();
        c.echo_with(payload.clone(), move |r| {
            let _ = tx.send(r.map(|b| b.len()));
        });
    }
    for i in 0..64 {
        let r = rx
            .recv_timeout(WAIT)
            .unwrap_or_else(|_| panic!("call {i} never completed"));
        assert_eq!(r.expect("1 MiB echo"), 1 << 20);
    }
    assert_eq!(&c.echo(Bytes::from_static(b"small")).unwrap()[..], b"small");
}

/// Finding 9: when one call's callback panicked, the connection's handler was leaked with
/// every other call's completion inside it, and blocking callers hung forever whatever
/// their timeout. Now the handler is dropped and its calls fail.
#[test]
fn finding_09_a_panicking_callback_fails_the_other_calls_instead_of_stranding_them() {
    let server = EchoServer::start(&[]);
    let one = interop::InteropClient::from_builder(
        ClientBuilder::new(server.addr)
            .connections(1)
            .call_timeout(Some(Duration::from_secs(60))),
    )
    .unwrap();
    // Replies come back in call order: the callback's call goes first and its reply
    // (after 100 ms) arrives while the blocking call (3 s) is still waiting.
    one.delayed_echo_with(Bytes::from_static(b"p"), 100, |_| {
        panic!("a callback that panics")
    });
    let blocking = one.clone();
    let (done_tx, done_rx) = mpsc::channel();
    std::thread::spawn(move || {
        let _ = done_tx.send(blocking.delayed_echo(Bytes::from_static(b"z"), 3000));
    });
    let t0 = Instant::now();
    let r = done_rx
        .recv_timeout(WAIT)
        .expect("the blocking call was stranded");
    assert!(
        matches!(r, Err(CallError::ConnectionLost(_))),
        "expected ConnectionLost, got {r:?}"
    );
    assert!(t0.elapsed() < Duration::from_secs(2), "{:?}", t0.elapsed());
    // The client recovers on a new connection.
    one.ping().expect("a new connection");
}

/// Finding 14: dropping the last handle of a client from one of its own callbacks made
/// its runtime join its own thread (a panic), and a oneway call followed by a drop was
/// lost. Both work now.
#[test]
fn finding_14_dropping_a_client_from_its_callback_and_after_a_oneway() {
    let server = EchoServer::start(&[]);
    let c = interop::InteropClient::connect(server.addr).unwrap();
    let last = c.clone();
    drop(c);
    let (tx, rx) = mpsc::channel();
    let keep = last.clone();
    last.ping_with(move |r| {
        drop(keep); // the last handle, dropped on the client's own core
        let _ = tx.send(r.is_ok());
    });
    drop(last);
    assert_eq!(
        rx.recv_timeout(WAIT),
        Ok(true),
        "the callback did not finish"
    );

    let check = interop::InteropClient::connect(server.addr).unwrap();
    let before = check.fired_total().unwrap();
    let c = interop::InteropClient::connect(server.addr).unwrap();
    c.fire(7);
    drop(c);
    let deadline = Instant::now() + WAIT;
    while check.fired_total().unwrap() != before + 7 && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
    }
    assert_eq!(
        check.fired_total().unwrap(),
        before + 7,
        "the oneway call was lost"
    );
}

/// Finding 18: when a core died (its ring failed), the connections it owned were leaked
/// with the completions of blocking callers inside, and those callers hung forever. The
/// core now drops its handlers as it dies, and their calls fail.
#[test]
fn finding_18_calls_fail_when_their_core_dies() {
    let server = EchoServer::start(&[]);
    let rt = netpoll::Runtime::builder().cores(1).build().unwrap();
    let c = interop::InteropClient::from_builder(
        ClientBuilder::new(server.addr)
            .runtime(rt.handle().clone())
            .call_timeout(Some(Duration::from_secs(60))),
    )
    .unwrap();
    c.ping().unwrap();
    let (tx, rx) = mpsc::channel();
    let blocking = c.clone();
    std::thread::spawn(move || {
        let _ = tx.send(blocking.delayed_echo(Bytes::from_static(b"z"), 5000));
    });
    std::thread::sleep(Duration::from_millis(200));
    rt.handle().spawn(0, |core| core.inject_failure()).unwrap();
    let r = rx.recv_timeout(WAIT).expect("the blocking call hung");
    assert!(r.is_err(), "{r:?}");
    // Later calls fail at once too.
    assert!(c.ping().is_err());
}

/// The client's queue is bounded: against a server that reads nothing, calls past the
/// limit fail at once with `QueueFull`, and a call that timed out before its request
/// reached the kernel takes its bytes back, leaving the stream whole.
#[test]
fn a_stuck_server_meets_a_bounded_queue_and_timed_out_requests_are_withdrawn() {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let accepted = std::thread::spawn(move || listener.accept().unwrap().0);
    let c = echo::EchoClient::from_builder(
        ClientBuilder::new(addr)
            .transport(ClientTransport::Framed)
            .connections(1)
            .max_queued_bytes(8 << 20)
            .call_timeout(Some(Duration::from_millis(500))),
    )
    .unwrap();
    let (tx, rx) = mpsc::channel();
    let n = 48;
    for _ in 0..n {
        let tx = tx.clone();
        c.echo_with(Bytes::from(vec![1u8; 1 << 20]), move |r| {
            let _ = tx.send(r);
        });
    }
    let mut full = 0;
    let mut timed_out = 0;
    for _ in 0..n {
        match rx.recv_timeout(WAIT).expect("every call ends") {
            Err(CallError::QueueFull { queued, limit }) => {
                assert!(queued >= limit);
                full += 1;
            }
            Err(CallError::Timeout) => timed_out += 1,
            other => panic!("unexpected {other:?}"),
        }
    }
    assert!(full > 0, "no call was refused ({timed_out} timed out)");
    // Now the server reads: what it gets is whole frames only, and less than was queued
    // (requests that timed out before reaching the kernel were withdrawn).
    let mut s = accepted.join().unwrap();
    s.set_read_timeout(Some(Duration::from_millis(500)))
        .unwrap();
    let mut got = BytesMut::new();
    let mut b = vec![0u8; 1 << 16];
    while let Ok(k) = s.read(&mut b) {
        if k == 0 {
            break;
        }
        got.extend_from_slice(&b[..k]);
    }
    let mut frames = 0;
    while !got.is_empty() {
        match frame::split(Protocol::FramedBinary, &got, 64 << 20).expect("a whole frame") {
            Split::Frame(k) => {
                let _ = got.split_to(k);
                frames += 1;
            }
            Split::NeedMore(_) => panic!("a torn frame after {frames} frames"),
        }
    }
    assert!(
        frames < n - full,
        "{frames} frames arrived of {} sent",
        n - full
    );
}

/// Timed-out requests are withdrawn in O(log n) each: with tens of thousands queued on a
/// connection the server does not read, they all time out and fail promptly (a shift of
/// the whole queue per withdrawal took 10 s for 80,000 calls).
#[test]
fn withdrawing_many_timed_out_requests_is_fast() {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let accepted = std::thread::spawn(move || listener.accept().unwrap().0);
    let c = echo::EchoClient::from_builder(
        ClientBuilder::new(addr)
            .transport(ClientTransport::Framed)
            .connections(1)
            .max_queued_bytes(64 << 20)
            .call_timeout(Some(Duration::from_millis(300))),
    )
    .unwrap();
    let n = 80_000;
    let (tx, rx) = mpsc::channel();
    let t0 = Instant::now();
    for _ in 0..n {
        let tx = tx.clone();
        c.echo_with(Bytes::from_static(&[7u8; 200]), move |r| {
            let _ = tx.send(r.is_err());
        });
    }
    for i in 0..n {
        assert_eq!(rx.recv_timeout(WAIT), Ok(true), "call {i}");
    }
    let took = t0.elapsed();
    let _server_side = accepted.join().unwrap();
    assert!(
        took < Duration::from_secs(4),
        "{n} calls took {took:?} to time out"
    );
}

/// A stuck server's connection with a full send queue, on `rt`, and callbacks that make a
/// new call on it whatever the outcome of the last (so `QueueFull` after `QueueFull`, each
/// failing at once on the core; no retries or breakers in the way), until told to stop.
/// Returns the stop flag, the number of `QueueFull` outcomes so far, the client, and the
/// stuck server's side of the connection (to keep it open).
fn reissue_on_a_full_queue(rt: &netpoll::Runtime) -> Stuck {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let accepted = std::thread::spawn(move || listener.accept().unwrap().0);
    let client = echo::EchoClient::from_builder(
        ClientBuilder::new(addr)
            .runtime(rt.handle().clone())
            .transport(ClientTransport::Framed)
            .connections(1)
            .retry(netpoll_rpc::client::RetryPolicy::none())
            .circuit_breaker(None)
            .max_queued_bytes(1 << 20)
            .call_timeout(Some(Duration::from_secs(60))),
    )
    .unwrap();
    let stop = Arc::new(AtomicBool::new(false));
    let full = Arc::new(AtomicU64::new(0));
    fn again(c: echo::EchoClient, stop: Arc<AtomicBool>, full: Arc<AtomicU64>) {
        let next = c.clone();
        c.echo_with(Bytes::from(vec![9u8; 256 << 10]), move |r| {
            if matches!(r, Err(CallError::QueueFull { .. })) {
                full.fetch_add(1, Ordering::Relaxed);
            }
            if !stop.load(Ordering::Relaxed) {
                again(next, stop, full);
            }
        });
    }
    for _ in 0..32 {
        again(client.clone(), stop.clone(), full.clone());
    }
    // Until the kernel's buffers are full too (the first refusals come while they still
    // take what is queued): then the queue stays full for good.
    let t0 = Instant::now();
    while full.load(Ordering::Relaxed) < 10_000 {
        assert!(
            t0.elapsed() < WAIT,
            "the stuck connection's queue never filled"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
    Stuck {
        stop,
        full,
        client,
        _accepted: accepted,
    }
}

struct Stuck {
    stop: Arc<AtomicBool>,
    full: Arc<AtomicU64>,
    client: echo::EchoClient,
    _accepted: std::thread::JoinHandle<std::net::TcpStream>,
}

impl Drop for Stuck {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

/// A client of `server` whose connections run on `rt`.
fn client_on(rt: &netpoll::Runtime, server: &EchoServer) -> echo::EchoClient {
    echo::EchoClient::from_builder(
        ClientBuilder::new(server.addr)
            .runtime(rt.handle().clone())
            .call_timeout(Some(Duration::from_secs(5))),
    )
    .unwrap()
}

/// Calls a core makes to its own connections wait for the end of the loop turn; a call
/// that fails at once there (a full queue) and whose callback calls again must not keep
/// the core from its I/O: the next try waits for the next turn. Another client on the
/// same core goes on working meanwhile.
#[test]
fn a_callback_that_reissues_on_a_full_queue_does_not_starve_its_core() {
    let rt = netpoll::Runtime::builder().cores(1).build().unwrap();
    let stuck = reissue_on_a_full_queue(&rt);
    let server = EchoServer::start(&[]);
    let healthy = client_on(&rt, &server);
    let (tx, rx) = mpsc::channel();
    for _ in 0..20 {
        let tx = tx.clone();
        healthy.echo_with(Bytes::from_static(b"still here"), move |r| {
            let _ = tx.send(r);
        });
    }
    for i in 0..20 {
        let r = rx
            .recv_timeout(WAIT)
            .unwrap_or_else(|_| panic!("call {i} on the busy core never completed"));
        assert_eq!(&r.unwrap()[..], b"still here");
    }
    let before = stuck.full.load(Ordering::Relaxed);
    std::thread::sleep(Duration::from_millis(100));
    assert!(stuck.full.load(Ordering::Relaxed) > before);
}

/// A callback that panics while the core sends the calls it made to itself loses only
/// its own call: the calls queued behind it are still sent, and later ones too.
#[test]
fn a_callback_panicking_among_queued_calls_spares_the_others() {
    let rt = netpoll::Runtime::builder().cores(1).build().unwrap();
    let stuck = reissue_on_a_full_queue(&rt);
    let server = EchoServer::start(&[]);
    let healthy = client_on(&rt, &server);
    assert_eq!(
        &healthy.echo(Bytes::from_static(b"warm")).unwrap()[..],
        b"warm"
    );
    let (tx, rx) = mpsc::channel();
    let panicked = Arc::new(AtomicU64::new(0));
    for round in 0..3 {
        // From a reply callback on the core: a call whose callback panics (it fails at
        // once: its queue is full), then a healthy call queued behind it in the same turn.
        let (doomed, next, tx) = (stuck.client.clone(), healthy.clone(), tx.clone());
        let count = panicked.clone();
        healthy.echo_with(Bytes::from_static(b"go"), move |_| {
            doomed.echo_with(Bytes::from(vec![2u8; 1024]), move |r| {
                count.fetch_add(1, Ordering::Relaxed);
                panic!("a callback that panics on {:?}", r.err());
            });
            next.echo_with(Bytes::from_static(b"behind"), move |r| {
                let _ = tx.send(r);
            });
        });
        let r = rx
            .recv_timeout(WAIT)
            .unwrap_or_else(|_| panic!("round {round}: the call behind the panic was lost"));
        assert_eq!(&r.unwrap()[..], b"behind");
        assert_eq!(
            panicked.load(Ordering::Relaxed),
            round + 1,
            "the doomed call did not fail at once"
        );
    }
}
