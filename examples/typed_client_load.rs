//! Load through the framework's own typed client: 2 threads keep 64 `echo` calls each
//! in flight for 5 s against an `echo_server`, and print the calls per second. It
//! measures the client's own cost (its governed path: resolver, balancer, breakers,
//! retry budget), so pin the client away from the server:
//!
//! ```text
//! taskset -c 0 target/release/echo_server --addr 127.0.0.1:9311 --cores 1 &
//! taskset -c 1 target/release/examples/typed_client_load 127.0.0.1:9311
//! ```

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{mpsc, Arc};
use std::time::{Duration, Instant};

use bytes::Bytes;
use examples::gen::echo::EchoClient;

fn main() {
    let addr = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "127.0.0.1:9311".to_owned());
    let client = EchoClient::connect(addr.as_str()).expect("client");
    let ok = Arc::new(AtomicU64::new(0));
    let stop = Arc::new(AtomicBool::new(false));
    let t0 = Instant::now();
    let threads: Vec<_> = (0..2)
        .map(|_| {
            let (c, ok, stop) = (client.clone(), ok.clone(), stop.clone());
            std::thread::spawn(move || {
                let (tx, rx) = mpsc::channel::<()>();
                let send = |tx: &mpsc::Sender<()>| {
                    let tx = tx.clone();
                    c.echo_with(Bytes::from_static(b"0123456789abcdef"), move |r| {
                        r.expect("echo");
                        let _ = tx.send(());
                    });
                };
                for _ in 0..64 {
                    send(&tx);
                }
                let mut in_flight = 64;
                while in_flight > 0 {
                    rx.recv().expect("a reply");
                    in_flight -= 1;
                    ok.fetch_add(1, Ordering::Relaxed);
                    if !stop.load(Ordering::Relaxed) {
                        send(&tx);
                        in_flight += 1;
                    }
                }
            })
        })
        .collect();
    std::thread::sleep(Duration::from_secs(5));
    stop.store(true, Ordering::Relaxed);
    for t in threads {
        t.join().expect("load thread");
    }
    let secs = t0.elapsed().as_secs_f64();
    println!("{:.0} calls/s", ok.load(Ordering::Relaxed) as f64 / secs);
}
