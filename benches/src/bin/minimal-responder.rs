//! The baseline the runtime is measured against: a minimal io_uring echo responder with no
//! framework. One thread, one ring; per connection a fixed receive buffer and an output
//! buffer; it splits length-prefixed frames, copies each reply into the output buffer and
//! sends once per connection per completion batch.
//!
//! ```text
//! cargo run --release -p benches --bin minimal-responder -- 127.0.0.1:9000 0
//! cargo run --release --example netpoll_echo -- --client-only 127.0.0.1:9000
//! ```
//! Arguments: listen address, the CPU to pin to (optional), and `thrift` (optional): then
//! each frame is taken as a Framed binary Thrift call of a method with one field and
//! answered as its REPLY (the same bytes with the message type and the field id patched:
//! what `Echo.echo` returns), so that RPC clients that check replies can be driven too.

use std::net::TcpListener;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};

use io_uring::{opcode, types, IoUring};

const RECV_BUF: usize = 64 * 1024;
const ACCEPT: u64 = u64::MAX;

struct Conn {
    fd: OwnedFd,
    inbuf: Vec<u8>,
    filled: usize,
    out: Vec<u8>,
    sending: Vec<u8>,
    sent: usize,
    send_busy: bool,
    recv_busy: bool,
    dead: bool,
}

fn main() -> std::io::Result<()> {
    let mut args = std::env::args().skip(1);
    let addr = args.next().unwrap_or_else(|| "127.0.0.1:9000".into());
    let cpu = args.next();
    let thrift = args.next().as_deref() == Some("thrift");
    if let Some(cpu) = cpu.and_then(|c| c.parse::<usize>().ok()) {
        // SAFETY: cpu_set_t is plain data; the call reads a live, correctly sized set.
        unsafe {
            let mut set: libc::cpu_set_t = std::mem::zeroed();
            libc::CPU_SET(cpu, &mut set);
            libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &set);
        }
    }
    let listener = TcpListener::bind(&addr)?;
    println!("minimal responder on {}", listener.local_addr()?);
    let mut ring: IoUring = IoUring::builder()
        .setup_single_issuer()
        .setup_defer_taskrun()
        .build(4096)?;
    let mut conns: Vec<Option<Conn>> = Vec::new();
    let accept = opcode::Accept::new(
        types::Fd(listener.as_raw_fd()),
        std::ptr::null_mut(),
        std::ptr::null_mut(),
    )
    .build()
    .user_data(ACCEPT);
    // SAFETY: accept with null address pointers names no memory.
    unsafe { ring.submission().push(&accept).expect("queue has room") };
    let mut cqes = Vec::with_capacity(16384);
    let mut dirty = Vec::new();
    loop {
        ring.submit_and_wait(1)?;
        cqes.clear();
        cqes.extend(
            ring.completion()
                .map(|c| (c.user_data(), c.result(), c.flags())),
        );
        for &(ud, res, _flags) in &cqes {
            if ud == ACCEPT {
                if res >= 0 {
                    // SAFETY: a non-negative accept result is a new descriptor we own.
                    let fd = unsafe { OwnedFd::from_raw_fd(res) };
                    let _ = socket2::SockRef::from(&fd).set_tcp_nodelay(true);
                    let idx = conns.iter().position(Option::is_none).unwrap_or_else(|| {
                        conns.push(None);
                        conns.len() - 1
                    });
                    conns[idx] = Some(Conn {
                        fd,
                        inbuf: vec![0; RECV_BUF],
                        filled: 0,
                        out: Vec::with_capacity(RECV_BUF),
                        sending: Vec::with_capacity(RECV_BUF),
                        sent: 0,
                        send_busy: false,
                        recv_busy: false,
                        dead: false,
                    });
                    arm_recv(&mut ring, &mut conns, idx);
                }
                // SAFETY: as above.
                unsafe {
                    while ring.submission().push(&accept).is_err() {
                        ring.submit()?;
                    }
                }
                continue;
            }
            let idx = (ud >> 1) as usize;
            let is_send = ud & 1 == 1;
            let Some(c) = conns.get_mut(idx).and_then(Option::as_mut) else {
                continue;
            };
            if is_send {
                c.send_busy = false;
                if res <= 0 {
                    c.dead = true;
                } else {
                    c.sent += res as usize;
                    if c.sent < c.sending.len() {
                        send(&mut ring, c, idx);
                        continue;
                    }
                    c.sending.clear();
                    c.sent = 0;
                    if !c.out.is_empty() {
                        dirty.push(idx);
                    }
                }
            } else {
                c.recv_busy = false;
                if res <= 0 {
                    c.dead = true;
                } else {
                    c.filled += res as usize;
                    let mut pos = 0;
                    while c.filled - pos >= 4 {
                        let b = &c.inbuf[pos..];
                        let total = 4 + u32::from_be_bytes([b[0], b[1], b[2], b[3]]) as usize;
                        if c.filled - pos < total {
                            if total > c.inbuf.len() {
                                c.inbuf.resize(total, 0);
                            }
                            break;
                        }
                        let start = c.out.len();
                        c.out.extend_from_slice(&c.inbuf[pos..pos + total]);
                        if thrift {
                            reply_in_place(&mut c.out[start..]);
                        }
                        pos += total;
                    }
                    c.inbuf.copy_within(pos..c.filled, 0);
                    c.filled -= pos;
                    if !c.out.is_empty() {
                        dirty.push(idx);
                    }
                    arm_recv(&mut ring, &mut conns, idx);
                }
            }
            if let Some(c) = conns.get_mut(idx).and_then(Option::as_mut) {
                if c.dead && !c.send_busy && !c.recv_busy {
                    conns[idx] = None;
                }
            }
        }
        for idx in dirty.drain(..) {
            if let Some(c) = conns.get_mut(idx).and_then(Option::as_mut) {
                if !c.send_busy && !c.out.is_empty() && !c.dead {
                    std::mem::swap(&mut c.out, &mut c.sending);
                    c.sent = 0;
                    send(&mut ring, c, idx);
                }
            }
        }
    }
}

/// Turns a Framed strict-binary Thrift CALL into its REPLY, in place: message type 1 -> 2,
/// and the first field's id -> 0 (the result struct's `success`). Frames of another shape
/// are left as they are.
fn reply_in_place(f: &mut [u8]) {
    // length(4) version+type(4) name-length(4) name seq(4) field-type(1) field-id(2)
    if f.len() < 12 || f[4] != 0x80 || f[5] != 0x01 {
        return;
    }
    let name = u32::from_be_bytes([f[8], f[9], f[10], f[11]]) as usize;
    let id = 12 + name + 4 + 1;
    if f.len() < id + 2 {
        return;
    }
    f[7] = 2;
    f[id] = 0;
    f[id + 1] = 0;
}

fn arm_recv(ring: &mut IoUring, conns: &mut [Option<Conn>], idx: usize) {
    let Some(c) = conns[idx].as_mut() else { return };
    let spare = &mut c.inbuf[c.filled..];
    let e = opcode::Recv::new(
        types::Fd(c.fd.as_raw_fd()),
        spare.as_mut_ptr(),
        spare.len() as u32,
    )
    .build()
    .user_data((idx as u64) << 1);
    c.recv_busy = true;
    // SAFETY: `inbuf` is not touched or resized while `recv_busy`; the connection is freed only
    // when neither operation is in flight.
    unsafe {
        while ring.submission().push(&e).is_err() {
            let _ = ring.submit();
        }
    }
}

fn send(ring: &mut IoUring, c: &mut Conn, idx: usize) {
    let rest = &c.sending[c.sent..];
    let e = opcode::Send::new(
        types::Fd(c.fd.as_raw_fd()),
        rest.as_ptr(),
        rest.len() as u32,
    )
    .flags(libc::MSG_NOSIGNAL)
    .build()
    .user_data(((idx as u64) << 1) | 1);
    c.send_busy = true;
    // SAFETY: `sending` is not modified while `send_busy`.
    unsafe {
        while ring.submission().push(&e).is_err() {
            let _ = ring.submit();
        }
    }
}
