//! Reaching a connection's handler by type from a task, and output queued before an
//! outbound connect completes.

use std::sync::mpsc;
use std::time::Duration;

use netpoll::{Conn, ConnId, Core, Handler, Input, Runtime};

/// Echoes whatever arrives.
struct Echo;

impl Handler for Echo {
    fn on_data(&mut self, conn: &mut Conn<'_>, input: &mut Input<'_>) {
        let n = input.len();
        conn.write(&input.chunk()[..n]);
        input.advance(n);
    }
}

/// Collects echoed bytes and reports them once `want` bytes arrived.
struct Collector {
    got: Vec<u8>,
    want: usize,
    done: mpsc::Sender<Vec<u8>>,
}

impl Handler for Collector {
    fn on_data(&mut self, _conn: &mut Conn<'_>, input: &mut Input<'_>) {
        self.got.extend_from_slice(input.chunk());
        input.advance(input.len());
        if self.got.len() >= self.want {
            let _ = self.done.send(std::mem::take(&mut self.got));
        }
    }
}

#[test]
fn tasks_reach_handlers_by_type_and_early_writes_are_sent() {
    let rt = Runtime::builder().cores(1).build().expect("runtime");
    let addr = rt
        .handle()
        .listen("127.0.0.1:0", |_| Box::new(Echo))
        .expect("listen");
    let (done_tx, done_rx) = mpsc::channel();
    let (id_tx, id_rx) = mpsc::channel::<ConnId>();
    rt.handle()
        .spawn(0, move |core: &mut Core| {
            let h = Collector {
                got: Vec::new(),
                want: 11,
                done: done_tx,
            };
            let id = core
                .connect(addr, Some(Duration::from_secs(2)), Box::new(h))
                .expect("connect");
            // Written while the connect is still in flight: must go out once it completes.
            core.conn(id)
                .expect("connecting connection is reachable")
                .write(b"early ");
            id_tx.send(id).expect("send id");
        })
        .expect("spawn");
    let id = id_rx
        .recv_timeout(Duration::from_secs(2))
        .expect("connection id");
    let (res_tx, res_rx) = mpsc::channel();
    rt.handle()
        .spawn(0, move |core: &mut Core| {
            let wrong = core.with_handler::<Echo, _>(id, |_, _| ()).is_some();
            let right = core.with_handler::<Collector, _>(id, |h, conn| {
                conn.write(b"later");
                h.want
            });
            res_tx.send((wrong, right)).expect("send result");
        })
        .expect("spawn");
    let (wrong, right) = res_rx
        .recv_timeout(Duration::from_secs(2))
        .expect("task ran");
    assert!(!wrong, "a handler of another type must not be handed out");
    assert_eq!(right, Some(11));
    let echoed = done_rx
        .recv_timeout(Duration::from_secs(5))
        .expect("echo arrived");
    assert_eq!(&echoed[..], b"early later");
    rt.shutdown(Duration::from_millis(200));
}
