//! Regression tests for the soundness review of netpoll (`review-soundness.md`, findings
//! 1, 6, 11, 12 and 13), through the public API over real loopback sockets. The peers are
//! blocking std sockets acting from outside, as a hostile or broken client would.

use std::io::{ErrorKind, Read, Write};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use netpoll::{CloseReason, Conn, ConnId, Core, Handler, Input, Runtime};

mod common;
use common::{connect, on_core, IO_TIMEOUT};

/// CPU time (user + system, in clock ticks) of this process's thread named `name`.
fn thread_cpu_ticks(name: &str) -> u64 {
    for task in std::fs::read_dir("/proc/self/task")
        .expect("tasks")
        .flatten()
    {
        let comm = std::fs::read_to_string(task.path().join("comm")).unwrap_or_default();
        if comm.trim() == name {
            let stat = std::fs::read_to_string(task.path().join("stat")).expect("stat");
            // Fields after the command name (which is in parentheses): utime is the 12th,
            // stime the 13th of those.
            let rest = &stat[stat.rfind(')').expect("comm") + 2..];
            let f: Vec<&str> = rest.split_whitespace().collect();
            return f[11].parse::<u64>().unwrap() + f[12].parse::<u64>().unwrap();
        }
    }
    panic!("no thread named {name}");
}

// ----- finding 1 ------------------------------------------------------------------------

/// Keeps the first view (so the one pool buffer stays lent and every later receive is a
/// direct one), then closes from inside `on_data` without consuming anything.
struct KeepFirstThenClose {
    kept: Vec<Bytes>,
    calls: usize,
}

impl Handler for KeepFirstThenClose {
    fn on_data(&mut self, conn: &mut Conn<'_>, input: &mut Input<'_>) {
        self.calls += 1;
        if self.calls == 1 {
            let n = input.len();
            self.kept.push(input.split_to(n));
        } else {
            conn.close();
        }
    }
}

/// Finding 1: a handler closing its connection from `on_data` while the assembled input
/// was lent to it made the core arm a direct receive into the stand-in buffer, which was
/// then freed: the peer's next bytes landed in freed heap memory. Checked in a release
/// build by canaries allocated right after that free: the peer's bytes must never appear
/// in them, and the core must keep running. The receive buffer is now owned by the
/// receive operation, so the bytes land in memory nobody else can have.
#[test]
fn finding_01_direct_receive_never_writes_freed_memory() {
    let rt = Runtime::builder()
        .cores(1)
        .buffer_count(1)
        .max_buffers(1)
        .build()
        .expect("runtime");
    let addr = rt
        .handle()
        .listen("127.0.0.1:0", |_| {
            Box::new(KeepFirstThenClose {
                kept: Vec::new(),
                calls: 0,
            })
        })
        .expect("listen");
    let mut s = connect(addr);
    s.write_all(&[1u8; 100]).expect("first bytes");
    std::thread::sleep(Duration::from_millis(100));
    s.write_all(&[2u8; 100]).expect("second bytes");
    // The server closes gracefully: FIN.
    let mut b = [0u8; 16];
    assert_eq!(s.read(&mut b).expect("read FIN"), 0, "expected FIN");
    // Canaries, allocated on the core right after the handler's stand-in would have been
    // freed, in its size class.
    let canaries: Arc<Mutex<Vec<Vec<u8>>>> = Arc::new(Mutex::new(Vec::new()));
    let c = canaries.clone();
    on_core(&rt, 0, move |_| {
        let mut v = c.lock().unwrap();
        for _ in 0..64 {
            v.push(vec![0u8; 16 * 1024]);
        }
    });
    s.write_all(&[0xAB; 16 * 1024])
        .expect("the peer's next bytes");
    std::thread::sleep(Duration::from_millis(300));
    let touched = on_core(&rt, 0, move |_| {
        canaries
            .lock()
            .unwrap()
            .iter()
            .map(|v| v.iter().filter(|&&b| b != 0).count())
            .sum::<usize>()
    });
    assert_eq!(
        touched, 0,
        "the kernel wrote the peer's bytes into freed memory"
    );
    drop(s);
    // The core survived and still serves.
    assert!(rt.handle().spawn(0, |_| {}).is_ok());
    rt.shutdown(Duration::from_millis(500));
}

// ----- finding 11 -----------------------------------------------------------------------

/// Keeps every byte it is given as views, so pool buffers never come back.
struct Hoard {
    kept: Vec<Bytes>,
    total: Arc<AtomicUsize>,
}

impl Handler for Hoard {
    fn on_data(&mut self, _conn: &mut Conn<'_>, input: &mut Input<'_>) {
        let n = input.len();
        self.total.fetch_add(n, Ordering::SeqCst);
        self.kept.push(input.split_to(n));
    }
}

/// Finding 11: with every pool buffer lent and the pool at its maximum, the core could
/// re-arm multishot receives that the kernel answers with ENOBUFS at once, spinning at
/// 100% CPU. Now ENOBUFS at the maximum switches to direct receives until buffers come
/// back: every byte still arrives, and the idle core sleeps. (The review's trigger, a
/// buffer counted as in the ring but never published, cannot be forced from outside; the
/// put-back now publishes, and this test pins the behaviour at the maximum.)
#[test]
fn finding_11_an_exhausted_pool_at_its_maximum_does_not_spin() {
    let rt = Runtime::builder()
        .cores(1)
        .buffer_count(2)
        .max_buffers(2)
        .buffer_size(4096)
        .thread_name("enobufs")
        .build()
        .expect("runtime");
    let total = Arc::new(AtomicUsize::new(0));
    let t = total.clone();
    let addr = rt
        .handle()
        .listen("127.0.0.1:0", move |_| {
            Box::new(Hoard {
                kept: Vec::new(),
                total: t.clone(),
            })
        })
        .expect("listen");
    let mut s = connect(addr);
    let chunk = vec![7u8; 64 * 1024];
    for _ in 0..16 {
        s.write_all(&chunk).expect("send");
    }
    let deadline = Instant::now() + IO_TIMEOUT;
    while total.load(Ordering::SeqCst) < 16 * chunk.len() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(5));
    }
    assert_eq!(total.load(Ordering::SeqCst), 16 * chunk.len(), "bytes lost");
    let stats = on_core(&rt, 0, |c| c.pool_stats());
    assert_eq!(stats.in_ring, 0, "the test meant to exhaust the pool");
    // Idle with the pool dry: the core must sleep, not spin.
    let before = thread_cpu_ticks("enobufs-0");
    std::thread::sleep(Duration::from_secs(1));
    let used = thread_cpu_ticks("enobufs-0") - before;
    assert!(
        used < 20,
        "the core used {used} ticks of CPU in 1 s while idle"
    );
    // And a little more input still arrives.
    s.write_all(&chunk).expect("send");
    let deadline = Instant::now() + IO_TIMEOUT;
    while total.load(Ordering::SeqCst) < 17 * chunk.len() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(5));
    }
    assert_eq!(total.load(Ordering::SeqCst), 17 * chunk.len());
    rt.shutdown(Duration::from_millis(200));
}

// ----- finding 12 -----------------------------------------------------------------------

/// Pauses reading on the first bytes and records its connection.
struct PauseAtOnce {
    id: Arc<Mutex<Option<ConnId>>>,
    seen: Arc<AtomicUsize>,
}

impl Handler for PauseAtOnce {
    fn on_data(&mut self, conn: &mut Conn<'_>, input: &mut Input<'_>) {
        *self.id.lock().unwrap() = Some(conn.id());
        self.seen.fetch_add(input.len(), Ordering::SeqCst);
        input.advance(input.len());
        conn.pause_reading();
    }
}

/// Finding 12: a paused connection whose multishot cancel missed kept appending input
/// without bound. Cancels are now retried whenever bytes arrive while reading is stopped,
/// and queued submissions keep their order. From outside: a peer flooding a connection
/// whose handler stopped reading is blocked by TCP flow control (the server holds at
/// most a few buffers), and everything it sent is delivered once reading resumes.
#[test]
fn finding_12_a_paused_connection_stops_taking_input() {
    let rt = Runtime::builder().cores(1).build().expect("runtime");
    let id = Arc::new(Mutex::new(None));
    let seen = Arc::new(AtomicUsize::new(0));
    let (i, n) = (id.clone(), seen.clone());
    let addr = rt
        .handle()
        .listen("127.0.0.1:0", move |_| {
            Box::new(PauseAtOnce {
                id: i.clone(),
                seen: n.clone(),
            })
        })
        .expect("listen");
    let s = connect(addr);
    s.set_write_timeout(Some(Duration::from_millis(300)))
        .expect("timeout");
    let chunk = vec![9u8; 64 * 1024];
    let mut sent = 0usize;
    let mut blocked = false;
    let until = Instant::now() + Duration::from_secs(3);
    while Instant::now() < until && sent < 512 << 20 {
        match (&s).write(&chunk) {
            Ok(k) => sent += k,
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {
                blocked = true;
                break;
            }
            Err(e) => panic!("write: {e}"),
        }
    }
    assert!(blocked, "the peer was never blocked ({sent} bytes taken)");
    assert!(
        sent < 64 << 20,
        "a paused connection took {sent} bytes from its peer"
    );
    // Resume until everything sent has been seen.
    let conn = id.lock().unwrap().expect("opened");
    let deadline = Instant::now() + IO_TIMEOUT;
    while seen.load(Ordering::SeqCst) < sent && Instant::now() < deadline {
        on_core(&rt, 0, move |core| {
            if let Some(mut c) = core.conn(conn) {
                c.resume_reading();
            }
        });
        std::thread::sleep(Duration::from_millis(2));
    }
    assert_eq!(seen.load(Ordering::SeqCst), sent, "input lost while paused");
    rt.shutdown(Duration::from_millis(200));
}

// ----- finding 13 -----------------------------------------------------------------------

/// Finding 13: ids carried only the 24 generation bits of `user_data`, so after 2^24
/// connections in a core an old id (a stale deferred reply's target, a channel's slot)
/// matched a new connection in the same slot. Ids now carry a 64-bit generation.
#[test]
fn finding_13_an_old_id_never_reaches_a_new_connection_in_its_slot() {
    let rt = Runtime::builder().cores(1).build().expect("runtime");
    let ids = Arc::new(Mutex::new(Vec::new()));
    let addr = {
        let ids = ids.clone();
        rt.handle()
            .listen("127.0.0.1:0", move |_| {
                struct Record(Arc<Mutex<Vec<ConnId>>>);
                impl Handler for Record {
                    fn on_open(&mut self, conn: &mut Conn<'_>) {
                        self.0.lock().unwrap().push(conn.id());
                    }
                    fn on_data(&mut self, _conn: &mut Conn<'_>, input: &mut Input<'_>) {
                        input.advance(input.len());
                    }
                }
                Box::new(Record(ids.clone()))
            })
            .expect("listen")
    };
    let first = connect(addr);
    let wait_ids = |n: usize| {
        let deadline = Instant::now() + IO_TIMEOUT;
        while ids.lock().unwrap().len() < n && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(2));
        }
        ids.lock().unwrap()[n - 1]
    };
    let old = wait_ids(1);
    drop(first);
    let deadline = Instant::now() + IO_TIMEOUT;
    while on_core(&rt, 0, |c| c.connection_count()) > 0 && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(2));
    }
    // 2^24 connections later, the next one takes the same slot with a generation whose
    // low 24 bits equal the old one's.
    on_core(&rt, 0, |c| c.skip_generations((1 << 24) - 1));
    let _second = connect(addr);
    let new = wait_ids(2);
    assert_ne!(old, new);
    let (reached, new_reached) = on_core(&rt, 0, move |c| {
        (c.conn(old).is_some(), c.conn(new).is_some())
    });
    assert!(new_reached, "the new connection is live");
    assert!(!reached, "an id of a closed connection reached a new one");
    rt.shutdown(Duration::from_millis(200));
}

// ----- finding 6 ------------------------------------------------------------------------

/// Writes 16 MiB as soon as it opens.
struct Flood;

impl Handler for Flood {
    fn on_open(&mut self, conn: &mut Conn<'_>) {
        conn.output().resize(16 << 20, 5);
    }
    fn on_data(&mut self, _conn: &mut Conn<'_>, input: &mut Input<'_>) {
        input.advance(input.len());
    }
    fn on_close(&mut self, _core: &mut Core, reason: CloseReason) {
        assert!(matches!(reason, CloseReason::WriteTimedOut), "{reason}");
    }
}

/// Finding 6 (netpoll's half): a peer that reads nothing pinned its connection, and its
/// queued output, forever. With a write timeout the connection is aborted once the peer
/// has taken nothing for that long, and the close is counted by reason.
#[test]
fn finding_06_a_peer_that_reads_nothing_is_closed_after_the_write_timeout() {
    let rt = Runtime::builder()
        .cores(1)
        .write_timeout(Some(Duration::from_millis(500)))
        .build()
        .expect("runtime");
    let addr = rt
        .handle()
        .listen("127.0.0.1:0", |_| Box::new(Flood))
        .expect("listen");
    let s = connect(addr);
    let start = Instant::now();
    let deadline = start + IO_TIMEOUT;
    while rt.handle().close_counts().write_timed_out == 0 && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(10));
    }
    let took = start.elapsed();
    assert_eq!(rt.handle().close_counts().write_timed_out, 1);
    assert!(took < Duration::from_secs(3), "closed after {took:?}");
    assert_eq!(on_core(&rt, 0, |c| c.connection_count()), 0);
    drop(s);
    rt.shutdown(Duration::from_millis(200));
}
