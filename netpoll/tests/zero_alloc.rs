//! The steady-state receive → consume → send path of an echo makes no heap allocation.
//!
//! A counting global allocator counts allocations per thread. An echo server core serves
//! a pipelined client (on the test thread, plain std sockets); after a warm-up, the core's
//! allocation count must not change while it echoes 100,000 more messages.

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;

use netpoll::{Conn, Handler, Input, Runtime};

struct Counting;

thread_local! {
    static ALLOCS: Cell<u64> = const { Cell::new(0) };
}

fn count() {
    // `try_with`: allocations during thread teardown are not counted rather than panicking.
    let _ = ALLOCS.try_with(|c| c.set(c.get() + 1));
}

// SAFETY: delegates every call to the system allocator unchanged; only counts.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        count();
        // SAFETY: forwarded with the caller's guarantees.
        unsafe { System.alloc(layout) }
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        count();
        // SAFETY: forwarded with the caller's guarantees.
        unsafe { System.alloc_zeroed(layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        count();
        // SAFETY: forwarded with the caller's guarantees.
        unsafe { System.realloc(ptr, layout, new_size) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: forwarded with the caller's guarantees.
        unsafe { System.dealloc(ptr, layout) }
    }
}

#[global_allocator]
static ALLOCATOR: Counting = Counting;

struct Echo;

impl Handler for Echo {
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
            // Zero-copy frame view, written back: the path an RPC server takes.
            let frame = input.split_to(total);
            conn.write(&frame);
        }
    }
}

/// Allocations made so far on core 0's thread.
fn core_allocs(rt: &Runtime) -> u64 {
    // A bounded channel allocates when created (here), never when sending (on the core).
    let (tx, rx) = std::sync::mpsc::sync_channel(1);
    rt.handle()
        .spawn(0, move |_| {
            let n = ALLOCS.with(Cell::get);
            let _ = tx.send(n);
        })
        .expect("core running");
    rx.recv_timeout(Duration::from_secs(10)).expect("task ran")
}

fn pipelined_echo(s: &mut TcpStream, messages: usize) {
    const BATCH: usize = 32;
    let mut frame = [0u8; 4 + 128];
    frame[..4].copy_from_slice(&128u32.to_be_bytes());
    let batch: Vec<u8> = frame
        .iter()
        .copied()
        .cycle()
        .take(frame.len() * BATCH)
        .collect();
    let mut replies = vec![0u8; batch.len()];
    for _ in 0..messages / BATCH {
        s.write_all(&batch).expect("write");
        s.read_exact(&mut replies).expect("read");
        assert!(replies == batch, "echo differs");
    }
}

#[test]
fn steady_state_echo_allocates_nothing_on_the_core() {
    let rt = Runtime::builder().cores(1).build().expect("runtime");
    let addr = rt
        .handle()
        .listen("127.0.0.1:0", |_| Box::new(Echo))
        .expect("listen");
    let mut s = TcpStream::connect(addr).expect("connect");
    s.set_read_timeout(Some(Duration::from_secs(10)))
        .expect("timeout");
    s.set_nodelay(true).expect("nodelay");
    pipelined_echo(&mut s, 20_000);
    let before = core_allocs(&rt);
    pipelined_echo(&mut s, 100_000);
    let after = core_allocs(&rt);
    println!(
        "core allocations while echoing 100,000 messages: {}",
        after - before
    );
    assert_eq!(
        after - before,
        0,
        "the core allocated during steady-state echo"
    );
    rt.shutdown(Duration::from_millis(200));
}
