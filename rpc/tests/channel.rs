//! The client transport against a real netpoll server on loopback.
//!
//! Frames in these tests are `[u32 length][i32 seq][payload]` (the length counts seq and
//! payload). The server echoes each frame, except for payloads that ask it to misbehave:
//! `sleep:N` replies after N ms, `close` drops the connection, `garbage` answers with an
//! invalid frame, `oneway` is counted and gets no reply, `count` replies with that count.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{mpsc, Arc};
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use netpoll::{Conn, Handler, Input, Runtime};
use netpoll_rpc::client::{Channel, ChannelConfig, ReplyFraming, ReplySplit};
use netpoll_rpc::CallError;

const MAX_FRAME: usize = 1 << 20;

struct TestFraming;

impl ReplyFraming for TestFraming {
    fn split(&self, input: &[u8]) -> ReplySplit {
        let Some(head) = input.get(..8) else {
            return ReplySplit::NeedMore(8);
        };
        let len = u32::from_be_bytes([head[0], head[1], head[2], head[3]]) as usize;
        if !(4..=MAX_FRAME).contains(&len) {
            return ReplySplit::Invalid(netpoll_rpc::reason(format!("frame length {len}")));
        }
        if input.len() < 4 + len {
            return ReplySplit::NeedMore(4 + len);
        }
        ReplySplit::Reply {
            len: 4 + len,
            seq: i32::from_be_bytes([head[4], head[5], head[6], head[7]]),
        }
    }
}

fn encode(
    payload: Vec<u8>,
) -> impl FnOnce(&mut BytesMut, i32) -> Result<(), CallError> + Send + 'static {
    move |out: &mut BytesMut, seq: i32| {
        out.extend_from_slice(&((payload.len() + 4) as u32).to_be_bytes());
        out.extend_from_slice(&seq.to_be_bytes());
        out.extend_from_slice(&payload);
        Ok(())
    }
}

fn payload_of(frame: &Bytes) -> &[u8] {
    &frame[8..]
}

struct TestServer {
    oneways: Arc<AtomicU64>,
    delayed: Vec<(u64, Vec<u8>)>,
    next_token: u64,
}

impl Handler for TestServer {
    fn on_data(&mut self, conn: &mut Conn<'_>, input: &mut Input<'_>) {
        loop {
            let buf = input.chunk();
            if buf.len() < 4 {
                input.need(4);
                return;
            }
            let total = 4 + u32::from_be_bytes([buf[0], buf[1], buf[2], buf[3]]) as usize;
            if buf.len() < total {
                input.need(total);
                return;
            }
            let frame = input.split_to(total);
            let payload = &frame[8..];
            if let Some(ms) = payload
                .strip_prefix(b"sleep:")
                .and_then(|s| std::str::from_utf8(s).ok()?.parse::<u64>().ok())
            {
                self.next_token += 1;
                self.delayed.push((self.next_token, frame.to_vec()));
                let at = conn.now() + Duration::from_millis(ms);
                conn.set_timer(at, self.next_token);
            } else if payload == b"close" {
                conn.abort();
                return;
            } else if payload == b"garbage" {
                conn.write(&[0xff; 16]);
            } else if payload == b"oneway" {
                self.oneways.fetch_add(1, Ordering::SeqCst);
            } else if payload == b"count" {
                let n = self.oneways.load(Ordering::SeqCst).to_string();
                conn.write(&((n.len() + 4) as u32).to_be_bytes());
                conn.write(&frame[4..8]);
                conn.write(n.as_bytes());
            } else {
                conn.write(&frame);
            }
        }
    }

    fn on_timer(&mut self, conn: &mut Conn<'_>, token: u64) {
        if let Some(i) = self.delayed.iter().position(|(t, _)| *t == token) {
            let (_, frame) = self.delayed.swap_remove(i);
            conn.write(&frame);
        }
    }
}

struct Fixture {
    server: Runtime,
    client: Runtime,
    addr: SocketAddr,
    oneways: Arc<AtomicU64>,
}

fn fixture() -> Fixture {
    let server = Runtime::builder()
        .cores(1)
        .thread_name("test-server")
        .build()
        .expect("server runtime");
    let oneways = Arc::new(AtomicU64::new(0));
    let o = oneways.clone();
    let addr = server
        .handle()
        .listen("127.0.0.1:0", move |_| {
            Box::new(TestServer {
                oneways: o.clone(),
                delayed: Vec::new(),
                next_token: 0,
            })
        })
        .expect("listen");
    let client = Runtime::builder()
        .cores(2)
        .thread_name("test-client")
        .build()
        .expect("client runtime");
    Fixture {
        server,
        client,
        addr,
        oneways,
    }
}

fn channel(f: &Fixture, connections: usize) -> Channel {
    let cfg = ChannelConfig {
        connections,
        ..ChannelConfig::default()
    };
    Channel::new(
        f.client.handle().clone(),
        f.addr,
        Arc::new(TestFraming),
        cfg,
    )
}

fn shutdown(f: Fixture) {
    f.client.shutdown(Duration::from_millis(200));
    f.server.shutdown(Duration::from_millis(200));
}

#[test]
fn blocking_calls_from_many_threads() {
    let f = fixture();
    let ch = channel(&f, 3);
    let threads: Vec<_> = (0..8)
        .map(|t| {
            let ch = ch.clone();
            std::thread::spawn(move || {
                for i in 0..300 {
                    let msg = format!("thread {t} call {i}").into_bytes();
                    let reply = ch.call(encode(msg.clone()), None).expect("call");
                    assert_eq!(payload_of(&reply), &msg[..]);
                }
            })
        })
        .collect();
    for t in threads {
        t.join().expect("caller thread");
    }
    shutdown(f);
}

#[test]
fn one_thread_keeps_many_calls_in_flight() {
    let f = fixture();
    let ch = channel(&f, 2);
    let (tx, rx) = mpsc::channel();
    let n = 20_000;
    for i in 0..n {
        let tx = tx.clone();
        let msg = (i as u32).to_be_bytes().to_vec();
        ch.call_with(encode(msg.clone()), None, move |r| {
            let ok = matches!(&r, Ok(frame) if payload_of(frame) == &msg[..]);
            let _ = tx.send(ok);
        });
    }
    let deadline = Instant::now() + Duration::from_secs(20);
    for _ in 0..n {
        let ok = rx
            .recv_timeout(deadline.saturating_duration_since(Instant::now()))
            .expect("every call completes");
        assert!(ok, "a reply did not match its call");
    }
    shutdown(f);
}

#[test]
fn timeout_then_late_reply_is_dropped_and_the_connection_still_works() {
    let f = fixture();
    let ch = channel(&f, 1);
    let started = Instant::now();
    let r = ch.call(
        encode(b"sleep:300".to_vec()),
        Some(Duration::from_millis(50)),
    );
    assert!(matches!(r, Err(CallError::Timeout)), "got {r:?}");
    assert!(
        started.elapsed() < Duration::from_millis(250),
        "timed out late: {:?}",
        started.elapsed()
    );
    // The late reply arrives on the same connection while this call is in flight.
    std::thread::sleep(Duration::from_millis(300));
    let reply = ch
        .call(encode(b"after".to_vec()), None)
        .expect("call after a timeout");
    assert_eq!(payload_of(&reply), b"after");
    shutdown(f);
}

#[test]
fn replies_may_come_back_out_of_order() {
    let f = fixture();
    let ch = channel(&f, 1);
    let (tx, rx) = mpsc::channel();
    let tx2 = tx.clone();
    ch.call_with(encode(b"sleep:150".to_vec()), None, move |r| {
        let _ = tx.send(("slow", r.map(|b| payload_of(&b).to_vec())));
    });
    ch.call_with(encode(b"fast".to_vec()), None, move |r| {
        let _ = tx2.send(("fast", r.map(|b| payload_of(&b).to_vec())));
    });
    let first = rx
        .recv_timeout(Duration::from_secs(5))
        .expect("first reply");
    let second = rx
        .recv_timeout(Duration::from_secs(5))
        .expect("second reply");
    assert_eq!(first.0, "fast");
    assert_eq!(first.1.expect("fast call"), b"fast");
    assert_eq!(second.0, "slow");
    assert_eq!(second.1.expect("slow call"), b"sleep:150");
    shutdown(f);
}

#[test]
fn lost_connection_fails_in_flight_calls_and_the_next_call_reconnects() {
    let f = fixture();
    let ch = channel(&f, 1);
    let r = ch.call(encode(b"close".to_vec()), None);
    assert!(matches!(r, Err(CallError::ConnectionLost(_))), "got {r:?}");
    assert!(r.as_ref().err().is_some_and(CallError::is_retryable));
    let reply = ch
        .call(encode(b"again".to_vec()), None)
        .expect("call on a new connection");
    assert_eq!(payload_of(&reply), b"again");
    shutdown(f);
}

#[test]
fn invalid_reply_is_a_protocol_error() {
    let f = fixture();
    let ch = channel(&f, 1);
    let r = ch.call(encode(b"garbage".to_vec()), None);
    assert!(matches!(r, Err(CallError::Protocol(_))), "got {r:?}");
    let reply = ch
        .call(encode(b"fine".to_vec()), None)
        .expect("call on a new connection");
    assert_eq!(payload_of(&reply), b"fine");
    shutdown(f);
}

#[test]
fn refused_connect_is_a_connect_error() {
    let f = fixture();
    // A port nobody listens on: bind one, note it, close it.
    let free = std::net::TcpListener::bind("127.0.0.1:0")
        .expect("bind")
        .local_addr()
        .expect("addr");
    let ch = Channel::new(
        f.client.handle().clone(),
        free,
        Arc::new(TestFraming),
        ChannelConfig::default(),
    );
    let r = ch.call(encode(b"x".to_vec()), None);
    assert!(matches!(r, Err(CallError::Connect(_))), "got {r:?}");
    shutdown(f);
}

#[test]
fn oneway_calls_get_no_reply_and_are_delivered_in_order() {
    let f = fixture();
    let ch = channel(&f, 1);
    for _ in 0..5 {
        ch.send_oneway(encode(b"oneway".to_vec()));
    }
    // Same connection, so the count request is read after the five oneway frames.
    let reply = ch.call(encode(b"count".to_vec()), None).expect("count");
    assert_eq!(payload_of(&reply), b"5");
    assert_eq!(f.oneways.load(Ordering::SeqCst), 5);
    shutdown(f);
}

#[test]
fn blocking_on_an_event_loop_thread_is_refused() {
    let f = fixture();
    let ch = channel(&f, 1);
    let (tx, rx) = mpsc::channel();
    f.client
        .handle()
        .spawn(0, move |_core| {
            let _ = tx.send(ch.call(encode(b"x".to_vec()), None));
        })
        .expect("spawn");
    let r = rx.recv_timeout(Duration::from_secs(5)).expect("task ran");
    assert!(matches!(r, Err(CallError::WouldBlockCore)), "got {r:?}");
    shutdown(f);
}
