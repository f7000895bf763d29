//! netpoll's behaviour through its public API, with real sockets on 127.0.0.1.
//!
//! Peers are blocking std sockets on test threads unless a test is about outbound
//! connections. Frames are length-prefixed: a 4-byte big-endian length, then the payload.

use std::cell::RefCell;
use std::io::{ErrorKind, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpStream};
use std::rc::Rc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{mpsc, Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use netpoll::{CloseReason, Conn, Core, Handler, Input, PoolStats, Runtime};

mod common;
use common::{connect, frame, on_core, read_frame, whole_frame, FrameEcho, IO_TIMEOUT};

// ----- helpers --------------------------------------------------------------------------

fn pattern(len: usize, seed: u8) -> Vec<u8> {
    (0..len)
        .map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed))
        .collect()
}

/// Polls `check` on core `core` until it holds or the deadline passes.
fn eventually(rt: &Runtime, core: usize, what: &str, check: fn(&mut Core) -> bool) {
    let deadline = Instant::now() + IO_TIMEOUT;
    while Instant::now() < deadline {
        if on_core(rt, core, check) {
            return;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    panic!("timed out waiting for: {what}");
}

fn echo_server(cores: usize) -> (Runtime, SocketAddr) {
    let rt = Runtime::builder().cores(cores).build().expect("runtime");
    let addr = rt
        .handle()
        .listen("127.0.0.1:0", |_| Box::new(FrameEcho))
        .expect("listen");
    (rt, addr)
}

// ----- tests ----------------------------------------------------------------------------

#[test]
fn echo_with_many_connections_across_cores() {
    let (rt, addr) = echo_server(2);
    let threads: Vec<_> = (0..8)
        .map(|t| {
            std::thread::spawn(move || {
                let mut conns: Vec<TcpStream> = (0..25).map(|_| connect(addr)).collect();
                for round in 0..40u32 {
                    for (i, c) in conns.iter_mut().enumerate() {
                        let mut batch = Vec::new();
                        for k in 0..5u32 {
                            batch.extend(frame(&pattern(
                                100 + k as usize,
                                (t * 31 + i as u32 + round + k) as u8,
                            )));
                        }
                        c.write_all(&batch).expect("write");
                    }
                    for (i, c) in conns.iter_mut().enumerate() {
                        for k in 0..5u32 {
                            let got = read_frame(c).expect("reply");
                            assert_eq!(
                                got,
                                pattern(100 + k as usize, (t * 31 + i as u32 + round + k) as u8)
                            );
                        }
                    }
                }
            })
        })
        .collect();
    for t in threads {
        t.join().expect("client thread");
    }
    rt.shutdown(Duration::from_millis(500));
}

#[test]
fn payloads_from_zero_bytes_to_eight_mebibytes() {
    let (rt, addr) = echo_server(1);
    let mut s = connect(addr);
    let sizes = [
        0,
        1,
        100,
        16 * 1024 - 1,
        16 * 1024,
        16 * 1024 + 1,
        64 * 1024,
        1 << 20,
        8 << 20,
    ];
    for (i, &n) in sizes.iter().enumerate() {
        let p = pattern(n, i as u8);
        let f = frame(&p);
        // Write from another thread: an 8 MiB frame does not fit the socket buffers, and
        // the echo comes back while it is still being written.
        let mut w = s.try_clone().expect("clone");
        let writer = std::thread::spawn(move || w.write_all(&f).expect("write"));
        let got = read_frame(&mut s).expect("reply");
        writer.join().expect("writer");
        assert_eq!(got.len(), n, "size {n}");
        assert!(got == p, "payload of {n} bytes corrupted");
    }
    rt.shutdown(Duration::from_millis(500));
}

#[test]
fn half_close_still_gets_every_reply_then_eof() {
    let (rt, addr) = echo_server(1);
    let mut s = connect(addr);
    let frames: Vec<Vec<u8>> = (0..20).map(|i| pattern(1000 + i, i as u8)).collect();
    for f in &frames {
        s.write_all(&frame(f)).expect("write");
    }
    s.shutdown(Shutdown::Write).expect("half-close");
    for f in &frames {
        assert_eq!(&read_frame(&mut s).expect("reply after half-close"), f);
    }
    let mut rest = Vec::new();
    assert_eq!(
        s.read_to_end(&mut rest).expect("eof"),
        0,
        "EOF after the last reply"
    );
    rt.shutdown(Duration::from_millis(500));
}

/// Records how its connection ended.
struct Recorder {
    closed: mpsc::Sender<String>,
}

impl Handler for Recorder {
    fn on_data(&mut self, conn: &mut Conn<'_>, input: &mut Input<'_>) {
        FrameEcho.on_data(conn, input);
    }

    fn on_close(&mut self, _core: &mut Core, reason: CloseReason) {
        let _ = self.closed.send(format!("{reason:?}"));
    }
}

#[test]
fn abrupt_reset_mid_message() {
    let rt = Runtime::builder().cores(1).build().expect("runtime");
    let (tx, rx) = mpsc::channel();
    let tx = Mutex::new(tx);
    let addr = rt
        .handle()
        .listen("127.0.0.1:0", move |_| {
            Box::new(Recorder {
                closed: tx.lock().expect("lock").clone(),
            })
        })
        .expect("listen");
    let s = connect(addr);
    let mut half = frame(&pattern(1000, 1));
    half.truncate(500);
    (&s).write_all(&half).expect("write");
    // SO_LINGER 0: close sends RST.
    socket2::SockRef::from(&s)
        .set_linger(Some(Duration::ZERO))
        .expect("linger");
    drop(s);
    let reason = rx
        .recv_timeout(IO_TIMEOUT)
        .expect("server saw the connection end");
    assert!(
        reason.contains("Io") || reason.contains("PeerClosed"),
        "reason: {reason}"
    );
    eventually(&rt, 0, "the reset connection is freed", |c| {
        c.connection_count() == 0
    });
    // Still serving.
    let mut s = connect(addr);
    s.write_all(&frame(b"still here")).expect("write");
    assert_eq!(read_frame(&mut s).expect("reply"), b"still here");
    rt.shutdown(Duration::from_millis(500));
}

/// Keeps every frame it receives (so pool buffers stay lent) and echoes it.
struct Hoarder {
    kept: Vec<Bytes>,
}

impl Handler for Hoarder {
    fn on_data(&mut self, conn: &mut Conn<'_>, input: &mut Input<'_>) {
        while let Some(total) = whole_frame(input) {
            let f = input.split_to(total);
            conn.write(&f);
            self.kept.push(f);
        }
    }
}

#[test]
fn buffer_ring_exhaustion_loses_nothing_and_buffers_come_back() {
    let rt = Runtime::builder()
        .cores(1)
        .buffer_size(4096)
        .buffer_count(4)
        .max_buffers(4)
        .build()
        .expect("runtime");
    let addr = rt
        .handle()
        .listen("127.0.0.1:0", |_| Box::new(Hoarder { kept: Vec::new() }))
        .expect("listen");
    let clients: Vec<_> = (0..16)
        .map(|c| {
            std::thread::spawn(move || {
                let mut s = connect(addr);
                for i in 0..200 {
                    let p = pattern(300 + (i % 7) * 50, (c * 7 + i) as u8);
                    s.write_all(&frame(&p)).expect("write");
                    assert_eq!(read_frame(&mut s).expect("reply"), p, "conn {c} frame {i}");
                }
                s
            })
        })
        .collect();
    let streams: Vec<TcpStream> = clients
        .into_iter()
        .map(|t| t.join().expect("client"))
        .collect();
    let stats: PoolStats = on_core(&rt, 0, |c| c.pool_stats());
    assert_eq!(stats.buffers, 4, "the pool may not grow past max_buffers");
    // Closing the connections drops the hoarded views; every buffer returns to the ring.
    drop(streams);
    eventually(&rt, 0, "all pool buffers back in the ring", |c| {
        let s = c.pool_stats();
        s.lent == 0 && s.in_ring == s.buffers
    });
    rt.shutdown(Duration::from_millis(500));
}

/// Sends each frame's view to another thread.
struct Exporter {
    out: mpsc::Sender<Bytes>,
}

impl Handler for Exporter {
    fn on_data(&mut self, conn: &mut Conn<'_>, input: &mut Input<'_>) {
        while let Some(total) = whole_frame(input) {
            let f = input.split_to(total);
            conn.write(&f[..4]);
            let _ = self.out.send(f);
        }
    }
}

#[test]
fn views_sent_to_another_thread_return_their_buffers() {
    let rt = Runtime::builder().cores(1).build().expect("runtime");
    let (tx, rx) = mpsc::channel::<Bytes>();
    let tx = Mutex::new(tx);
    let addr = rt
        .handle()
        .listen("127.0.0.1:0", move |_| {
            Box::new(Exporter {
                out: tx.lock().expect("lock").clone(),
            })
        })
        .expect("listen");
    let mut s = connect(addr);
    let p = pattern(5000, 9);
    for _ in 0..50 {
        s.write_all(&frame(&p)).expect("write");
        let mut ack = [0u8; 4];
        s.read_exact(&mut ack).expect("ack");
    }
    let held: Vec<Bytes> = (0..50)
        .map(|_| rx.recv_timeout(IO_TIMEOUT).expect("view"))
        .collect();
    let checker = std::thread::spawn(move || {
        for v in &held {
            assert_eq!(&v[4..], &pattern(5000, 9)[..]);
        }
        drop(held); // the last references die on this thread
    });
    checker.join().expect("checker");
    eventually(
        &rt,
        0,
        "buffers dropped on another thread are reclaimed",
        |c| c.pool_stats().lent == 0,
    );
    rt.shutdown(Duration::from_millis(500));
}

/// Echo that records its id and the most output it ever had queued.
struct Watched {
    max_pending: Arc<AtomicUsize>,
    id: Arc<Mutex<Option<netpoll::ConnId>>>,
}

impl Handler for Watched {
    fn on_open(&mut self, conn: &mut Conn<'_>) {
        *self.id.lock().expect("lock") = Some(conn.id());
    }

    fn on_data(&mut self, conn: &mut Conn<'_>, input: &mut Input<'_>) {
        FrameEcho.on_data(conn, input);
        self.max_pending
            .fetch_max(conn.pending_output(), Ordering::SeqCst);
    }
}

#[test]
fn a_peer_that_never_reads_cannot_grow_server_memory() {
    const HIGH_WATER: usize = 256 * 1024;
    let rt = Runtime::builder()
        .cores(1)
        .high_water_mark(HIGH_WATER)
        .build()
        .expect("runtime");
    let max_pending = Arc::new(AtomicUsize::new(0));
    let id = Arc::new(Mutex::new(None));
    let (m, i) = (max_pending.clone(), id.clone());
    let addr = rt
        .handle()
        .listen("127.0.0.1:0", move |_| {
            Box::new(Watched {
                max_pending: m.clone(),
                id: i.clone(),
            })
        })
        .expect("listen");
    let s = connect(addr);
    s.set_write_timeout(Some(Duration::from_millis(200)))
        .expect("timeout");
    let f = frame(&pattern(1000, 3));
    let mut sent = 0usize;
    let mut stalled = false;
    let until = Instant::now() + Duration::from_secs(2);
    while Instant::now() < until {
        // Continue the current frame where the last (possibly partial) write stopped.
        match (&s).write(&f[sent % f.len()..]) {
            Ok(n) => sent += n,
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {
                stalled = true
            }
            Err(e) => panic!("write: {e}"),
        }
    }
    // The handler is not called while its connection is paused, so ask from a task.
    let conn_id = id.lock().expect("lock").expect("connection opened");
    let blocked = on_core(&rt, 0, move |core| {
        core.conn(conn_id).is_some_and(|c| c.is_write_blocked())
    });
    assert!(
        blocked,
        "the server did not pause reading a peer that never reads"
    );
    // Once paused, a connection still processes what was already received before the
    // pause took effect: at most the receive data in flight (a few pool buffers, or one
    // direct receive), echoed. 4 MiB above the high-water mark is a generous bound; the
    // client pushed far more than that.
    let bound = HIGH_WATER + 4 * 1024 * 1024;
    let max = max_pending.load(Ordering::SeqCst);
    assert!(
        max <= bound,
        "queued output reached {max} bytes (bound {bound})"
    );
    // Back-pressure reached the client: its writes blocked, because the server stopped
    // reading instead of buffering without bound.
    assert!(stalled, "the client was never blocked ({sent} bytes sent)");
    // Now read everything back: the server resumes and drains.
    s.shutdown(Shutdown::Write).expect("half-close");
    s.set_read_timeout(Some(IO_TIMEOUT)).expect("timeout");
    let mut total = 0usize;
    let mut buf = vec![0u8; 1 << 16];
    loop {
        match (&s).read(&mut buf) {
            Ok(0) => break,
            Ok(n) => total += n,
            Err(e) => panic!("read: {e}"),
        }
    }
    assert_eq!(
        total,
        sent - sent % f.len(),
        "every whole frame is echoed once the peer reads"
    );
    rt.shutdown(Duration::from_millis(500));
}

#[test]
fn cross_thread_handoff_latency() {
    let rt = Runtime::builder().cores(1).build().expect("runtime");
    let n = 10_000;
    let (tx, rx) = mpsc::channel();
    let mut lat = Vec::with_capacity(n);
    for _ in 0..n {
        let sent = Instant::now();
        let tx = tx.clone();
        rt.handle()
            .spawn(0, move |_| tx.send(sent.elapsed()).expect("send"))
            .expect("spawn");
        // One at a time: the core is idle each time, so this measures the wake-up path.
        lat.push(rx.recv_timeout(IO_TIMEOUT).expect("task ran"));
    }
    lat.sort();
    println!(
        "hand-off to an idle core, {n} tasks: median {:?}, p99 {:?}, max {:?}",
        lat[n / 2],
        lat[n * 99 / 100],
        lat[n - 1]
    );
    // From four threads at once, each task runs exactly once.
    let ran = Arc::new(AtomicU64::new(0));
    let senders: Vec<_> = (0..4)
        .map(|_| {
            let (h, ran) = (rt.handle().clone(), ran.clone());
            std::thread::spawn(move || {
                for _ in 0..25_000 {
                    let ran = ran.clone();
                    h.spawn(0, move |_| {
                        ran.fetch_add(1, Ordering::Relaxed);
                    })
                    .expect("spawn");
                }
            })
        })
        .collect();
    for s in senders {
        s.join().expect("sender");
    }
    let deadline = Instant::now() + IO_TIMEOUT;
    while ran.load(Ordering::Relaxed) < 100_000 && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(5));
    }
    std::thread::sleep(Duration::from_millis(50));
    assert_eq!(ran.load(Ordering::Relaxed), 100_000);
    rt.shutdown(Duration::from_millis(500));
}

/// Sets connection timers when it opens and records them as they fire.
struct TimerConn {
    fired: Rc<RefCell<Vec<u64>>>,
    report: mpsc::Sender<Vec<u64>>,
}

impl Handler for TimerConn {
    fn on_open(&mut self, conn: &mut Conn<'_>) {
        let now = conn.now();
        let deadlines = [30u64, 10, 50, 20, 20, 40, 5];
        for (i, ms) in deadlines.iter().enumerate() {
            // token = ms * 10 + insertion index, so ties show their order
            conn.set_timer(now + Duration::from_millis(*ms), ms * 10 + i as u64);
        }
        let cancelled = conn.set_timer(now + Duration::from_millis(15), 9999);
        assert!(conn.cancel_timer(cancelled));
        conn.set_timer(now + Duration::from_millis(80), 0);
    }

    fn on_data(&mut self, _conn: &mut Conn<'_>, input: &mut Input<'_>) {
        input.advance(input.len());
    }

    fn on_timer(&mut self, conn: &mut Conn<'_>, token: u64) {
        if token == 0 {
            let _ = self.report.send(self.fired.borrow().clone());
            conn.close();
        } else {
            self.fired.borrow_mut().push(token);
        }
    }
}

#[test]
fn timers_fire_in_deadline_order_and_cancelled_ones_never() {
    let rt = Runtime::builder().cores(1).build().expect("runtime");
    let (tx, rx) = mpsc::channel();
    let tx = Mutex::new(tx);
    let addr = rt
        .handle()
        .listen("127.0.0.1:0", move |_| {
            Box::new(TimerConn {
                fired: Rc::default(),
                report: tx.lock().expect("lock").clone(),
            })
        })
        .expect("listen");
    let _peer = connect(addr);
    let fired = rx.recv_timeout(IO_TIMEOUT).expect("timers fired");
    assert_eq!(fired, vec![56, 101, 203, 204, 300, 405, 502]);
    // Core timers, in order, and one cancelled.
    let order = on_core(&rt, 0, |core| {
        let log: Rc<RefCell<Vec<u32>>> = Rc::default();
        let now = Instant::now();
        for (i, ms) in [25u64, 5, 15, 5].iter().enumerate() {
            let log = log.clone();
            core.set_timer(now + Duration::from_millis(*ms), move |_| {
                log.borrow_mut().push(i as u32)
            });
        }
        let log2 = log.clone();
        let t = core.set_timer(now + Duration::from_millis(10), move |_| {
            log2.borrow_mut().push(99)
        });
        assert!(core.cancel_timer(t));
        let (tx, rx) = mpsc::channel();
        let log3 = log.clone();
        core.set_timer(now + Duration::from_millis(40), move |_| {
            let _ = tx.send(log3.borrow().clone());
        });
        rx
    });
    assert_eq!(
        order.recv_timeout(IO_TIMEOUT).expect("core timers"),
        vec![1, 3, 2, 0]
    );
    rt.shutdown(Duration::from_millis(500));
}

/// Replies 100 ms late; on shutdown closes once its replies are written.
struct Deferred {
    waiting: Vec<(u64, Bytes)>,
    next: u64,
    shutting_down: bool,
}

impl Handler for Deferred {
    fn on_data(&mut self, conn: &mut Conn<'_>, input: &mut Input<'_>) {
        while let Some(total) = whole_frame(input) {
            self.next += 1;
            self.waiting.push((self.next, input.split_to(total)));
            let at = conn.now() + Duration::from_millis(100);
            conn.set_timer(at, self.next);
        }
    }

    fn on_timer(&mut self, conn: &mut Conn<'_>, token: u64) {
        if let Some(i) = self.waiting.iter().position(|(t, _)| *t == token) {
            let (_, f) = self.waiting.remove(i);
            conn.write(&f);
        }
        if self.shutting_down && self.waiting.is_empty() {
            conn.close();
        }
    }

    fn on_shutdown(&mut self, conn: &mut Conn<'_>) {
        self.shutting_down = true;
        if self.waiting.is_empty() {
            conn.close();
        }
    }
}

#[test]
fn graceful_shutdown_lets_in_flight_replies_finish() {
    let rt = Runtime::builder().cores(1).build().expect("runtime");
    let addr = rt
        .handle()
        .listen("127.0.0.1:0", |_| {
            Box::new(Deferred {
                waiting: Vec::new(),
                next: 0,
                shutting_down: false,
            })
        })
        .expect("listen");
    let mut s = connect(addr);
    let frames: Vec<Vec<u8>> = (0..50).map(|i| pattern(200, i as u8)).collect();
    for f in &frames {
        s.write_all(&frame(f)).expect("write");
    }
    std::thread::sleep(Duration::from_millis(30)); // let the server read them
    let started = Instant::now();
    let stopper = std::thread::spawn(move || rt.shutdown(Duration::from_secs(3)));
    for f in &frames {
        assert_eq!(&read_frame(&mut s).expect("reply during shutdown"), f);
    }
    let mut rest = Vec::new();
    assert_eq!(s.read_to_end(&mut rest).expect("eof"), 0);
    stopper.join().expect("shutdown");
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "shutdown waited for the deadline: {:?}",
        started.elapsed()
    );
}

/// Never closes by itself.
struct Stubborn;

impl Handler for Stubborn {
    fn on_data(&mut self, _conn: &mut Conn<'_>, input: &mut Input<'_>) {
        input.advance(input.len());
    }

    fn on_shutdown(&mut self, _conn: &mut Conn<'_>) {}
}

#[test]
fn shutdown_grace_expires_and_connections_are_closed() {
    let rt = Runtime::builder().cores(1).build().expect("runtime");
    let addr = rt
        .handle()
        .listen("127.0.0.1:0", |_| Box::new(Stubborn))
        .expect("listen");
    let mut s = connect(addr);
    s.write_all(b"hello").expect("write");
    std::thread::sleep(Duration::from_millis(30));
    let started = Instant::now();
    rt.shutdown(Duration::from_millis(300));
    let took = started.elapsed();
    assert!(
        took >= Duration::from_millis(250) && took < Duration::from_millis(1500),
        "shutdown took {took:?}"
    );
    let mut buf = [0u8; 8];
    assert!(
        matches!(s.read(&mut buf), Ok(0) | Err(_)),
        "connection closed by shutdown"
    );
}

/// Panics on the payload "boom"; echoes otherwise.
struct Fragile;

impl Handler for Fragile {
    fn on_data(&mut self, conn: &mut Conn<'_>, input: &mut Input<'_>) {
        while let Some(total) = whole_frame(input) {
            let f = input.split_to(total);
            assert!(&f[4..] != b"boom", "handler panics on purpose");
            conn.write(&f);
        }
    }
}

#[test]
fn a_panicking_handler_loses_only_its_connection() {
    let rt = Runtime::builder().cores(1).build().expect("runtime");
    let addr = rt
        .handle()
        .listen("127.0.0.1:0", |_| Box::new(Fragile))
        .expect("listen");
    let mut good = connect(addr);
    let mut bad = connect(addr);
    bad.write_all(&frame(b"boom")).expect("write");
    let mut buf = [0u8; 8];
    assert!(
        matches!(bad.read(&mut buf), Ok(0) | Err(_)),
        "the panicking connection is closed"
    );
    good.write_all(&frame(b"fine")).expect("write");
    assert_eq!(read_frame(&mut good).expect("reply"), b"fine");
    let mut again = connect(addr);
    again.write_all(&frame(b"new")).expect("write");
    assert_eq!(read_frame(&mut again).expect("reply"), b"new");
    rt.shutdown(Duration::from_millis(500));
}

/// Outbound: sends one frame when connected, reports the echo or the failure.
struct Dialer {
    report: mpsc::Sender<Result<Vec<u8>, String>>,
}

impl Handler for Dialer {
    fn on_open(&mut self, conn: &mut Conn<'_>) {
        conn.write(&frame(b"dialed"));
    }

    fn on_data(&mut self, conn: &mut Conn<'_>, input: &mut Input<'_>) {
        if let Some(total) = whole_frame(input) {
            let f = input.split_to(total);
            let _ = self.report.send(Ok(f[4..].to_vec()));
            conn.close();
        }
    }

    fn on_close(&mut self, _core: &mut Core, reason: CloseReason) {
        if let CloseReason::ConnectFailed(e) = reason {
            let _ = self.report.send(Err(format!("{:?}", e.kind())));
        }
    }
}

#[test]
fn outbound_connects_succeed_and_fail_cleanly() {
    let (rt, addr) = echo_server(1);
    let closed = std::net::TcpListener::bind("127.0.0.1:0")
        .expect("bind")
        .local_addr()
        .expect("addr");
    let (tx, rx) = mpsc::channel();
    on_core(&rt, 0, move |core| {
        core.connect(
            addr,
            Some(IO_TIMEOUT),
            Box::new(Dialer { report: tx.clone() }),
        )
        .expect("connect");
        core.connect(closed, Some(IO_TIMEOUT), Box::new(Dialer { report: tx }))
            .expect("connect");
    });
    let mut results: Vec<Result<Vec<u8>, String>> = (0..2)
        .map(|_| rx.recv_timeout(IO_TIMEOUT).expect("result"))
        .collect();
    results.sort_by_key(|r| r.is_err());
    assert_eq!(results[0], Ok(b"dialed".to_vec()));
    assert_eq!(results[1], Err("ConnectionRefused".to_string()));
    rt.shutdown(Duration::from_millis(500));
}

/// The process's descriptors are compared before and after, which only means something
/// with no other test opening or closing any meanwhile: the check runs alone, in a child
/// process of this test binary.
#[test]
fn no_descriptor_leaks_after_shutdown() {
    let out = std::process::Command::new(std::env::current_exe().expect("test binary"))
        .args([
            "--ignored",
            "--exact",
            "descriptor_leak_check",
            "--test-threads=1",
        ])
        .output()
        .expect("run the check");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success() && stdout.contains("1 passed"),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Run by [`no_descriptor_leaks_after_shutdown`] in a process of its own.
#[test]
#[ignore = "run alone by no_descriptor_leaks_after_shutdown"]
fn descriptor_leak_check() {
    let before = netpoll::open_fds().expect("fds");
    {
        let (rt, addr) = echo_server(2);
        let mut streams: Vec<TcpStream> = (0..50).map(|_| connect(addr)).collect();
        for (i, s) in streams.iter_mut().enumerate() {
            s.write_all(&frame(&pattern(500, i as u8))).expect("write");
            assert_eq!(read_frame(s).expect("reply"), pattern(500, i as u8));
        }
        for s in streams.iter().take(10) {
            socket2::SockRef::from(s)
                .set_linger(Some(Duration::ZERO))
                .expect("linger");
        }
        streams.truncate(40); // ten resets
        let closed = std::net::TcpListener::bind("127.0.0.1:0")
            .expect("bind")
            .local_addr()
            .expect("addr");
        let (tx, rx) = mpsc::channel();
        on_core(&rt, 0, move |core| {
            core.connect(
                addr,
                Some(IO_TIMEOUT),
                Box::new(Dialer { report: tx.clone() }),
            )
            .expect("connect");
            core.connect(closed, Some(IO_TIMEOUT), Box::new(Dialer { report: tx }))
                .expect("connect");
        });
        for _ in 0..2 {
            let _dialed = rx.recv_timeout(IO_TIMEOUT).expect("dial result");
        }
        rt.shutdown(Duration::from_millis(500));
        drop(streams);
    }
    let deadline = Instant::now() + IO_TIMEOUT;
    loop {
        let after = netpoll::open_fds().expect("fds");
        if after == before {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "descriptors leaked: before {before:?}, after {after:?}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn a_unix_socket_is_shared_and_its_connections_spread_over_the_cores() {
    use std::os::unix::net::UnixStream;
    const CORES: usize = 3;
    const CONNS: usize = 30;
    let dir = std::env::temp_dir().join(format!("netpoll-unix-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("dir");
    let path = dir.join("echo.sock");
    let _ = std::fs::remove_file(&path);
    let rt = Runtime::builder().cores(CORES).build().expect("runtime");
    let served: Arc<Vec<AtomicUsize>> = Arc::new((0..CORES).map(|_| AtomicUsize::new(0)).collect());
    let counts = served.clone();
    rt.handle()
        .listen_unix(&path, move |core| {
            counts[core.id()].fetch_add(1, Ordering::SeqCst);
            Box::new(FrameEcho)
        })
        .expect("listen on the path");
    // A second listener on the same path is refused: the path is taken.
    assert!(rt
        .handle()
        .listen_unix(&path, |_| Box::new(FrameEcho))
        .is_err());
    let mut streams: Vec<UnixStream> = (0..CONNS)
        .map(|_| {
            let s = UnixStream::connect(&path).expect("connect");
            s.set_read_timeout(Some(IO_TIMEOUT)).expect("timeout");
            s
        })
        .collect();
    for (i, s) in streams.iter_mut().enumerate() {
        let msg = pattern(3000 + i, i as u8);
        s.write_all(&frame(&msg)).expect("write");
        assert_eq!(read_frame(s).expect("reply"), msg);
    }
    // Core 0 accepts; each connection is served by the next core in turn.
    let spread: Vec<usize> = served.iter().map(|n| n.load(Ordering::SeqCst)).collect();
    println!("{CONNS} connections over {CORES} cores: {spread:?}");
    assert_eq!(spread, vec![CONNS / CORES; CORES]);
    // Outbound: a core dials the path too.
    let (tx, rx) = mpsc::channel();
    let target = netpoll::Addr::unix(&path);
    on_core(&rt, 1, move |core| {
        core.connect(target, Some(IO_TIMEOUT), Box::new(Dialer { report: tx }))
            .expect("connect");
    });
    assert_eq!(
        rx.recv_timeout(IO_TIMEOUT).expect("result"),
        Ok(b"dialed".to_vec())
    );
    drop(streams);
    rt.shutdown(Duration::from_millis(500));
    let _ = std::fs::remove_dir_all(&dir);
}

/// A TCP read stops at urgent data's mark, short of what is queued: the rest must still be
/// read (a readiness backend must not take that short read for an empty socket).
#[test]
fn urgent_data_does_not_stall_a_connection() {
    let (rt, addr) = echo_server(1);
    let mut s = connect(addr);
    for round in 0..20u8 {
        let (a, b) = (pattern(100, round), pattern(200, round.wrapping_add(1)));
        s.write_all(&frame(&a)).expect("write");
        socket2::SockRef::from(&s)
            .send_out_of_band(b"!")
            .expect("urgent byte");
        s.write_all(&frame(&b)).expect("write");
        assert_eq!(read_frame(&mut s).expect("reply before the mark"), a);
        assert_eq!(read_frame(&mut s).expect("reply after the mark"), b);
    }
    rt.shutdown(Duration::from_millis(500));
}

/// A Unix socket whose backlog is full refuses a connect at once (EAGAIN, where TCP would
/// wait): the dialer is told it failed (or, where the backend waits, timed out), and is
/// never told it connected.
#[test]
fn a_unix_connect_to_a_full_backlog_fails() {
    use std::os::unix::net::UnixListener;
    let dir = std::env::temp_dir().join(format!("netpoll-backlog-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("dir");
    let path = dir.join("full.sock");
    let _ = std::fs::remove_file(&path);
    let listener = UnixListener::bind(&path).expect("bind");
    // Fill the backlog: non-blocking connects until one is refused.
    let mut held = Vec::new();
    loop {
        let s = socket2::Socket::new(socket2::Domain::UNIX, socket2::Type::STREAM, None)
            .expect("socket");
        s.set_nonblocking(true).expect("nonblocking");
        match s.connect(&socket2::SockAddr::unix(&path).expect("addr")) {
            Ok(()) => held.push(s),
            Err(e) if e.kind() == ErrorKind::WouldBlock => break,
            Err(e) => panic!("connect: {e}"),
        }
        assert!(held.len() < 100_000, "the backlog never filled");
    }
    let rt = Runtime::builder().cores(1).build().expect("runtime");
    let (tx, rx) = mpsc::channel();
    let target = netpoll::Addr::unix(&path);
    on_core(&rt, 0, move |core| {
        core.connect(
            target,
            Some(Duration::from_millis(300)),
            Box::new(Dialer { report: tx }),
        )
        .expect("connect");
    });
    // Dialer reports ConnectFailed as an error; a timed-out connect closes without a report.
    match rx.recv_timeout(Duration::from_secs(2)) {
        Ok(Ok(v)) => panic!("told it connected, and got {v:?}"),
        Ok(Err(kind)) => assert_eq!(kind, "WouldBlock"),
        Err(_) => {} // timed out (a backend that waits for room in the backlog)
    }
    drop(held);
    drop(listener);
    rt.shutdown(Duration::from_millis(500));
    let _ = std::fs::remove_dir_all(&dir);
}
