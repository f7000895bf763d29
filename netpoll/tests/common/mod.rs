//! Helpers shared by netpoll's loopback tests: a blocking client, a task on a core, and a
//! length-prefixed echo (a 4-byte big-endian length, then the payload).
#![allow(dead_code)] // each test binary uses some of them

use std::io::Read;
use std::net::{SocketAddr, TcpStream};
use std::sync::mpsc;
use std::time::Duration;

use netpoll::{Conn, Core, Handler, Input, Runtime};

/// How long a test waits for anything before calling it a hang.
pub const IO_TIMEOUT: Duration = Duration::from_secs(10);

/// A blocking client connection with timeouts and no Nagle delay.
pub fn connect(addr: SocketAddr) -> TcpStream {
    let s = TcpStream::connect(addr).expect("connect");
    s.set_read_timeout(Some(IO_TIMEOUT)).expect("timeout");
    s.set_write_timeout(Some(IO_TIMEOUT)).expect("timeout");
    s.set_nodelay(true).expect("nodelay");
    s
}

/// Runs `f` on core `core` and returns its result.
pub fn on_core<T: Send + 'static>(
    rt: &Runtime,
    core: usize,
    f: impl FnOnce(&mut Core) -> T + Send + 'static,
) -> T {
    let (tx, rx) = mpsc::channel();
    rt.handle()
        .spawn(core, move |c| {
            let _ = tx.send(f(c));
        })
        .expect("core running");
    rx.recv_timeout(IO_TIMEOUT).expect("task ran")
}

/// Echoes every frame; asks netpoll to assemble a frame before calling again.
pub struct FrameEcho;

impl Handler for FrameEcho {
    fn on_data(&mut self, conn: &mut Conn<'_>, input: &mut Input<'_>) {
        while let Some(total) = whole_frame(input) {
            let frame = input.split_to(total);
            conn.write(&frame);
        }
    }
}

/// The length of the whole frame at the start of `input`, or `None` after declaring what
/// is needed.
pub fn whole_frame(input: &mut Input<'_>) -> Option<usize> {
    let buf = input.chunk();
    if buf.len() < 4 {
        input.need(4);
        return None;
    }
    let total = 4 + u32::from_be_bytes([buf[0], buf[1], buf[2], buf[3]]) as usize;
    if buf.len() < total {
        input.need(total);
        return None;
    }
    Some(total)
}

/// `payload` behind its 4-byte big-endian length.
pub fn frame(payload: &[u8]) -> Vec<u8> {
    let mut f = (payload.len() as u32).to_be_bytes().to_vec();
    f.extend_from_slice(payload);
    f
}

/// Reads one length-prefixed frame's payload.
pub fn read_frame(s: &mut impl Read) -> std::io::Result<Vec<u8>> {
    let mut head = [0u8; 4];
    s.read_exact(&mut head)?;
    let mut body = vec![0u8; u32::from_be_bytes(head) as usize];
    s.read_exact(&mut body)?;
    Ok(body)
}
