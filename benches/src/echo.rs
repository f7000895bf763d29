//! An in-process echo server for `--embedded` runs: length-prefixed raw frames echoed in
//! order, on netpoll cores of their own.

use std::net::SocketAddr;

use netpoll::{Conn, Handler, Input, Runtime};

/// Echoes each length-prefixed frame (4-byte big-endian length, then the payload).
#[derive(Debug, Default)]
pub struct RawEcho {
    /// Largest frame accepted; a larger length prefix closes the connection.
    pub max_frame: usize,
}

impl Handler for RawEcho {
    fn on_data(&mut self, conn: &mut Conn<'_>, input: &mut Input<'_>) {
        loop {
            let buf = input.chunk();
            let Some(head) = buf.get(..4) else {
                input.need(4);
                return;
            };
            let len = u32::from_be_bytes([head[0], head[1], head[2], head[3]]) as usize;
            if len > self.max_frame {
                conn.abort();
                return;
            }
            if buf.len() < 4 + len {
                input.need(4 + len);
                return;
            }
            conn.write(&buf[..4 + len]);
            input.advance(4 + len);
        }
    }
}

/// Starts an echo server on `cpus` (one core each) listening on an ephemeral loopback port.
pub fn start(
    cpus: Vec<usize>,
    max_frame: usize,
) -> Result<(Runtime, SocketAddr), Box<dyn std::error::Error>> {
    let rt = Runtime::builder()
        .cores(cpus.len().max(1))
        .cpus(cpus)
        .thread_name("echo-server")
        .build()?;
    let addr = rt
        .handle()
        .listen("127.0.0.1:0", move |_| Box::new(RawEcho { max_frame }))?;
    Ok((rt, addr))
}
