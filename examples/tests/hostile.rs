//! Hostile and broken peers against a real `echo_server` process, from outside, over
//! loopback sockets: the regression tests of the soundness review (`review-soundness.md`)
//! whose scenario is a peer's behaviour, and of the per-connection bounds. Each test starts
//! its own server with the bounds it needs and measures the process (CPU time, resident
//! memory, address space) through /proc, as an operator would.

mod common;

use std::io::{ErrorKind, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use common::{exception, reply, EchoServer, Raw};
use examples::gen::{echo, interop};
use netpoll_codec::frame::int_key;
use netpoll_codec::thrift::{ApplicationExceptionKind, Message, MessageType};
use netpoll_codec::ByteString;
use netpoll_rpc::wire::{self, Envelope, Headers, Payload, Transport};

/// One whole request frame.
fn frame<M: Message>(
    transport: Transport,
    method: &'static str,
    seq: i32,
    kind: MessageType,
    args: &M,
    h: &Headers<'_>,
) -> Vec<u8> {
    let env = Envelope {
        transport,
        payload: Payload::ThriftBinary,
        method: ByteString::from_static(method),
        seq_id: seq,
        header_seq: seq,
        kind,
    };
    let mut out = BytesMut::new();
    wire::write_thrift(&env, &mut out, kind, args, h).expect("encode");
    out.to_vec()
}

fn echo_args(len: usize) -> echo::EchoEchoArgs {
    echo::EchoEchoArgs {
        msg: Bytes::from(vec![0x5a; len]),
    }
}

fn delayed(ms: i32) -> interop::InteropDelayedEchoArgs {
    interop::InteropDelayedEchoArgs {
        msg: Bytes::from_static(b"slow"),
        delay_ms: ms,
    }
}

fn connect(addr: SocketAddr) -> TcpStream {
    let s = TcpStream::connect(addr).expect("connect");
    s.set_nodelay(true).expect("nodelay");
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    s
}

/// Reads until EOF or reset; returns the bytes read and whether it ended by reset.
fn read_to_close(s: &mut TcpStream) -> (usize, bool) {
    let mut total = 0;
    let mut b = vec![0u8; 1 << 16];
    loop {
        match s.read(&mut b) {
            Ok(0) => return (total, false),
            Ok(n) => total += n,
            Err(e) if e.kind() == ErrorKind::ConnectionReset => return (total, true),
            Err(e) => panic!("read: {e} after {total} bytes"),
        }
    }
}

/// Finding 3: splitting Buffered (unframed) Thrift copied and re-parsed everything
/// received on every arriving segment, so a peer trickling the end of a 4 MiB message one
/// byte at a time made the server burn 45% of a core. Now each byte is walked once (and
/// a string's declared length tells the server how much to wait for).
#[test]
fn finding_03_trickling_a_buffered_message_costs_no_cpu() {
    let server = EchoServer::start(&[]);
    let msg = frame(
        Transport::Buffered,
        "echo",
        1,
        MessageType::Call,
        &echo_args(4 << 20),
        &Headers::default(),
    );
    let mut s = connect(server.addr);
    let tail = 2000;
    s.write_all(&msg[..msg.len() - tail]).expect("send");
    std::thread::sleep(Duration::from_millis(200));
    let cpu0 = server.cpu_seconds();
    for b in &msg[msg.len() - tail..msg.len() - 1] {
        s.write_all(std::slice::from_ref(b)).expect("send a byte");
        std::thread::sleep(Duration::from_micros(200));
    }
    let used = server.cpu_seconds() - cpu0;
    println!(
        "finding 3: {used:.3} s of server CPU for {} one-byte segments",
        tail - 1
    );
    s.write_all(&msg[msg.len() - 1..]).expect("last byte");
    let mut raw = Raw::wrap(s, Transport::Buffered, Payload::ThriftBinary);
    let r: echo::EchoEchoResult = reply(raw.read().expect("reply"));
    assert_eq!(r.success.map(|b| b.len()), Some(4 << 20));
    assert!(
        used < 0.15,
        "the server used {used:.3} s of CPU on {} one-byte segments",
        tail - 1
    );
}

/// Finding 4: every reply pipelined behind a slow deferred call was held in memory, out
/// of sight of back-pressure: 700 MiB of calls grew the server by 1.45 GiB. Now a
/// connection may have a bounded number of calls in flight (held replies included, and
/// their bytes count toward the high-water mark): past it the server stops reading, TCP
/// pushes back on the peer, and every call is still answered, in order. Afterwards the
/// memory goes back.
///
/// "Idle" is measured after a little traffic has cycled through the receive pool: its
/// starting buffers (1024 x 16 KiB per core, a configured, fixed cost in the README's
/// bounds) become resident once the kernel has written into them, burst or not. What is
/// checked is that the burst's own memory goes back.
#[test]
fn finding_04_calls_behind_a_slow_one_are_bounded_and_memory_returns() {
    let server = EchoServer::start(&["--max-in-flight", "1024"]);
    {
        // Warm-up: twice round the pool's ring.
        let mut warm = Raw::connect(server.addr, Transport::Framed, Payload::ThriftBinary);
        for i in 0..2048 {
            warm.send_thrift("echo", i, &echo_args(15_000), 0);
            let _: echo::EchoEchoResult = reply(warm.read().expect("warm-up reply"));
        }
    }
    std::thread::sleep(Duration::from_millis(1500));
    let idle_rss = server.rss_mib();
    let s = connect(server.addr);
    let mut w = s.try_clone().expect("clone");
    let h = Headers::default();
    w.write_all(&frame(
        Transport::Framed,
        "delayed_echo",
        0,
        MessageType::Call,
        &delayed(1500),
        &h,
    ))
    .expect("slow call");
    let call = frame(
        Transport::Framed,
        "echo",
        1,
        MessageType::Call,
        &echo_args(1024),
        &h,
    );
    // 64 MiB of cheap calls, written by another thread (it blocks when the server stops
    // reading, as it should).
    let n = 64 * 1024;
    let writer = std::thread::spawn(move || {
        let mut batch = Vec::with_capacity(call.len() * 256);
        for _ in 0..256 {
            batch.extend_from_slice(&call);
        }
        for _ in 0..n / 256 {
            w.write_all(&batch).expect("pipeline");
        }
    });
    std::thread::sleep(Duration::from_millis(1000));
    let peak = server.rss_mib();
    // Every reply arrives: the slow one first, then the rest in order.
    let mut raw = Raw::wrap(
        s.try_clone().unwrap(),
        Transport::Framed,
        Payload::ThriftBinary,
    );
    let first = raw.read().expect("slow reply");
    assert_eq!(&*first.envelope.method, "delayed_echo");
    for _ in 0..n {
        let p = raw.read().expect("reply");
        assert_eq!(&*p.envelope.method, "echo");
    }
    writer.join().expect("writer");
    assert!(
        peak - idle_rss < 64.0,
        "the server grew by {:.1} MiB holding calls behind a slow one",
        peak - idle_rss
    );
    s.shutdown(Shutdown::Both).ok();
    drop(s);
    drop(raw);
    // Memory goes back: 5 s after the peer is gone, within 16 MiB of the idle start.
    std::thread::sleep(Duration::from_secs(5));
    let after = server.rss_mib();
    println!("finding 4: RSS idle {idle_rss:.1} MiB, throttled peak {peak:.1} MiB, 5 s after {after:.1} MiB");
    assert!(
        after - idle_rss < 16.0,
        "RSS {after:.1} MiB 5 s after the burst, {idle_rss:.1} MiB idle (peak {peak:.1})"
    );
}

/// Finding 5: the idle timeout saw only whole frames, so a large request arriving slowly
/// was closed as idle mid-frame. Bytes of a frame still arriving now count as activity.
#[test]
fn finding_05_the_idle_timeout_spares_a_frame_still_arriving() {
    let server = EchoServer::start(&["--idle-timeout-ms", "200"]);
    let msg = frame(
        Transport::Framed,
        "echo",
        1,
        MessageType::Call,
        &echo_args(1 << 20),
        &Headers::default(),
    );
    let mut s = connect(server.addr);
    for piece in msg.chunks(64 * 1024) {
        s.write_all(piece)
            .expect("a piece (the server closed mid-frame?)");
        std::thread::sleep(Duration::from_millis(50));
    }
    let mut raw = Raw::wrap(s, Transport::Framed, Payload::ThriftBinary);
    let r: echo::EchoEchoResult = reply(raw.read().expect("a reply, not a close"));
    assert_eq!(r.success.map(|b| b.len()), Some(1 << 20));
}

/// Finding 6: a peer that asks for replies and never reads pinned its connection (and
/// the replies) forever, even after the idle timeout closed it: a draining connection
/// waited for its output to drain. The write timeout now aborts it.
#[test]
fn finding_06_a_peer_that_never_reads_is_cut_off() {
    let server = EchoServer::start(&["--idle-timeout-ms", "200", "--write-timeout-ms", "1000"]);
    let mut s = connect(server.addr);
    let call = frame(
        Transport::Framed,
        "echo",
        1,
        MessageType::Call,
        &echo_args(1 << 20),
        &Headers::default(),
    );
    for _ in 0..8 {
        s.write_all(&call).expect("ask for 1 MiB");
    }
    // Never read, for long enough that the write timeout must have fired.
    std::thread::sleep(Duration::from_secs(3));
    let (got, reset) = read_to_close(&mut s);
    assert!(
        got < 8 << 20 && reset,
        "read {got} bytes (reset: {reset}): the connection was still open"
    );
}

/// Finding 7: a ONEWAY message sent to a two-way method that defers left a deferral
/// counted forever, so the connection never closed. A message type that disagrees with
/// the IDL now never runs the handler: a ONEWAY to a two-way method is dropped, a CALL to
/// a oneway method is answered INVALID_MESSAGE_TYPE.
#[test]
fn finding_07_message_types_that_disagree_with_the_idl() {
    let server = EchoServer::start(&["--idle-timeout-ms", "100"]);
    let mut s = connect(server.addr);
    s.write_all(&frame(
        Transport::Framed,
        "delayed_echo",
        1,
        MessageType::Oneway,
        &delayed(50),
        &Headers::default(),
    ))
    .expect("oneway to a two-way method");
    s.shutdown(Shutdown::Write).expect("half-close");
    let t0 = Instant::now();
    let (got, _) = read_to_close(&mut s);
    assert_eq!(got, 0, "a ONEWAY message got a reply");
    assert!(t0.elapsed() < Duration::from_secs(2), "{:?}", t0.elapsed());

    let mut raw = Raw::connect(server.addr, Transport::Framed, Payload::ThriftBinary);
    raw.stream
        .write_all(&frame(
            Transport::Framed,
            "fire",
            7,
            MessageType::Call,
            &interop::InteropFireArgs { x: 1 },
            &Headers::default(),
        ))
        .unwrap();
    let p = raw.read().expect("an answer to a CALL");
    assert_eq!(p.envelope.seq_id, 7);
    let e = exception(p);
    assert_eq!(e.kind, ApplicationExceptionKind::InvalidMessageType);
    // Nothing leaked: the connection still serves.
    raw.send_thrift("ping", 8, &interop::InteropPingArgs {}, 0);
    let _: interop::InteropPingResult = reply(raw.read().expect("ping"));
}

/// Finding 10: the read timeout restarted only when the input ended empty, so a client
/// pipelining Buffered calls (whose input always ends mid-frame) was aborted a read
/// timeout after it started. It now restarts with every whole frame.
///
/// Why this passes even with that fix undone: netpoll hands a handler input up to the
/// size the handler said it needs, and the splitter now states a lower bound for unframed
/// messages too, so deliveries end on frame boundaries and the input is empty between
/// frames. The fix still matters where a delivery carries more than one frame (a direct
/// receive while the pool is empty); this test pins the behaviour a peer sees.
#[test]
fn finding_10_the_read_timeout_spares_a_busy_pipelining_peer() {
    let server = EchoServer::start(&["--read-timeout-ms", "300"]);
    let call = frame(
        Transport::Buffered,
        "echo",
        1,
        MessageType::Call,
        &echo_args(1000),
        &Headers::default(),
    );
    let s = connect(server.addr);
    let mut w = s.try_clone().unwrap();
    let rounds = 120;
    let writer = std::thread::spawn(move || {
        // Each write ends half-way through a call; 1.2 s in all.
        // One write per round (the end of one call and the start of the next), so that
        // the server's input never ends on a frame boundary.
        let half = call.len() / 2;
        let mut seam = call[half..].to_vec();
        seam.extend_from_slice(&call[..half]);
        w.write_all(&call[..half]).unwrap();
        for _ in 0..rounds {
            std::thread::sleep(Duration::from_millis(10));
            w.write_all(&seam).unwrap();
        }
        w.write_all(&call[half..]).unwrap();
    });
    let mut raw = Raw::wrap(s, Transport::Buffered, Payload::ThriftBinary);
    for i in 0..=rounds {
        let _: echo::EchoEchoResult = reply(
            raw.read()
                .unwrap_or_else(|| panic!("closed after {i} replies")),
        );
    }
    writer.join().unwrap();
}

/// Finding 16: a 4-byte length reserved up to the maximum frame (16 MiB) per connection:
/// 1,000 peers that declared 16 MiB and sent 100 bytes took 14.6 GiB of address space.
/// Memory for a frame now grows with the bytes that arrived.
#[test]
fn finding_16_declared_frame_sizes_cost_only_what_arrived() {
    let server = EchoServer::start(&[]);
    std::thread::sleep(Duration::from_millis(200));
    let (rss0, vm0) = (server.rss_mib(), server.vsize_mib());
    let mut head = (16u32 << 20).wrapping_sub(100).to_be_bytes().to_vec();
    head.extend_from_slice(&[0x80, 0x01, 0x00, 0x01]);
    head.resize(100, 0x41);
    let conns: Vec<TcpStream> = (0..1000)
        .map(|_| {
            let mut s = connect(server.addr);
            s.write_all(&head).expect("declare 16 MiB, send 100 bytes");
            s
        })
        .collect();
    std::thread::sleep(Duration::from_millis(500));
    let (rss, vm) = (server.rss_mib(), server.vsize_mib());
    println!(
        "finding 16: 1,000 peers declaring 16 MiB: RSS +{:.1} MiB, address space +{:.1} MiB",
        rss - rss0,
        vm - vm0
    );
    drop(conns);
    assert!(rss - rss0 < 24.0, "RSS grew {:.1} MiB", rss - rss0);
    assert!(vm - vm0 < 64.0, "address space grew {:.1} MiB", vm - vm0);
}

/// A call whose caller-side deadline passed while it waited behind others is answered
/// with a timeout error without running its handler. TTHeader's timeout counts from the
/// moment the request arrived. Here calls wait because the connection may have only one
/// call in flight and the first one takes 600 ms.
#[test]
fn calls_whose_deadline_passed_are_not_run() {
    let server = EchoServer::start(&["--max-in-flight", "1"]);
    let tt = Transport::TTHeader {
        framed_payload: false,
    };
    let mut raw = Raw::connect(server.addr, tt, Payload::ThriftBinary);
    let mut batch = frame(
        tt,
        "delayed_echo",
        1,
        MessageType::Call,
        &delayed(600),
        &Headers::default(),
    );
    let short = [(int_key::RPC_TIMEOUT, &b"100"[..])];
    let long = [(int_key::RPC_TIMEOUT, &b"5000"[..])];
    for (seq, ints) in [(2, &short), (3, &long)] {
        let h = Headers {
            ints,
            ..Headers::default()
        };
        batch.extend(frame(
            tt,
            "echo",
            seq,
            MessageType::Call,
            &echo_args(10),
            &h,
        ));
    }
    // A timeout of 0 means none (Kitex's convention), not "already expired".
    let zero = [(int_key::RPC_TIMEOUT, &b"0"[..])];
    let h = Headers {
        ints: &zero,
        ..Headers::default()
    };
    batch.extend(frame(tt, "echo", 4, MessageType::Call, &echo_args(10), &h));
    raw.stream.write_all(&batch).unwrap();
    let p = raw.read().expect("slow reply");
    assert_eq!(p.envelope.seq_id, 1);
    let p = raw.read().expect("expired reply");
    assert_eq!(p.envelope.seq_id, 2);
    let e = exception(p);
    assert!(e.message.contains("timeout"), "{e:?}");
    let p = raw.read().expect("in-time reply");
    assert_eq!(p.envelope.seq_id, 3);
    let r: echo::EchoEchoResult = reply(p);
    assert_eq!(r.success.map(|b| b.len()), Some(10));
    let p = raw.read().expect("reply to the call without a timeout");
    assert_eq!(p.envelope.seq_id, 4);
    let _: echo::EchoEchoResult = reply(p);
}

/// A frame whose start arrived while the connection was throttled (too many calls in
/// flight) was not slow to arrive: its read timeout starts when reading resumes, not when
/// its first bytes came in.
#[test]
fn the_read_timeout_does_not_count_time_spent_throttled() {
    let server = EchoServer::start(&["--max-in-flight", "1", "--read-timeout-ms", "300"]);
    let mut raw = Raw::connect(server.addr, Transport::Framed, Payload::ThriftBinary);
    let h = Headers::default();
    let mut batch = frame(
        Transport::Framed,
        "delayed_echo",
        1,
        MessageType::Call,
        &delayed(1000),
        &h,
    );
    let next = frame(
        Transport::Framed,
        "echo",
        2,
        MessageType::Call,
        &echo_args(100),
        &h,
    );
    let half = next.len() / 2;
    batch.extend_from_slice(&next[..half]);
    raw.stream.write_all(&batch).unwrap();
    std::thread::sleep(Duration::from_millis(1100));
    raw.stream.write_all(&next[half..]).unwrap();
    assert_eq!(raw.read().expect("slow reply").envelope.seq_id, 1);
    let p = raw
        .read()
        .expect("the held call's reply, not a cut connection");
    assert_eq!(p.envelope.seq_id, 2);
}

/// Finding 17: `max_connections` was split by `available_parallelism()`, which counts a
/// cgroup CPU quota, while the runtime starts a core per allowed CPU; in a container with
/// a quota the limit was multiplied. Run here in a cgroup with a one-CPU quota on this
/// two-CPU machine: at most `max_connections` peers are served, whatever the split.
#[test]
fn finding_17_max_connections_holds_under_a_cpu_quota() {
    let dir = format!("/sys/fs/cgroup/cpu/netpoll-test-{}", std::process::id());
    if std::fs::create_dir(&dir).is_err() {
        println!("SKIPPED: cannot create a cgroup v1 cpu group at {dir} (needs root)");
        return;
    }
    std::fs::write(format!("{dir}/cpu.cfs_period_us"), "100000").unwrap();
    std::fs::write(format!("{dir}/cpu.cfs_quota_us"), "100000").unwrap();
    let server =
        EchoServer::start_in_cgroup(&format!("{dir}/cgroup.procs"), &["--max-connections", "2"]);
    let mut served = 0;
    let mut conns = Vec::new();
    for _ in 0..16 {
        let mut c = Raw::connect(server.addr, Transport::Framed, Payload::ThriftBinary);
        c.stream
            .set_read_timeout(Some(Duration::from_millis(500)))
            .unwrap();
        c.send_thrift("ping", 1, &interop::InteropPingArgs {}, 0);
        let mut b = [0u8; 64];
        if matches!(c.stream.read(&mut b), Ok(n) if n > 0) {
            served += 1;
        }
        conns.push(c);
    }
    drop(conns);
    drop(server);
    std::thread::sleep(Duration::from_millis(100));
    let _ = std::fs::remove_dir(&dir);
    assert!(served >= 1, "nothing was served");
    assert!(
        served <= 2,
        "{served} connections served with max_connections 2"
    );
}
