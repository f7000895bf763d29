//! Helpers shared by netpoll's loopback tests.

use std::net::{SocketAddr, TcpStream};
use std::sync::mpsc;
use std::time::Duration;

use netpoll::{Core, Runtime};

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
