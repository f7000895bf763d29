//! Our RPC against gRPC (tonic), in the same run, on the same `idl/echo.proto`.
//!
//! Each side uses its own best client; both servers run on one thread pinned to CPU 0
//! and both clients on one thread pinned to CPU 1:
//! - ours: `examples::echo_service` (Kitex Protobuf) on a one-core netpoll runtime; the
//!   generated `EchoClient` on a one-core client runtime, driven from its completion
//!   callbacks (the next call is issued on the client core as a reply arrives);
//! - tonic: its generated server on a current-thread tokio runtime; its generated client
//!   on another, driven by tasks (one per call in flight).
//!
//! - ours over gRPC (`ours-grpc`): our server as above, its gRPC port, called by tonic's
//!   client exactly as tonic's server is: the two gRPC servers compared by one client.
//!
//! Groups: `unary_latency/{128B,16KiB,1MiB}` (one call in flight), and
//! `throughput_16x32/{128B,16KiB}` and `throughput_4x4/1MiB` (connections x calls in
//! flight each; criterion's element throughput is calls per second). Every reply's
//! payload is checked. `scripts/benchmarks-md.py` turns the results into BENCHMARKS.md's
//! table.
//!
//! ```text
//! cargo bench -p benches --bench rpc_vs_tonic
//! ```

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{mpsc, Arc};
use std::time::{Duration, Instant};

use bytes::Bytes;
use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use examples::gen::pb::echo as ours;
use netpoll_rpc::client::{ClientBuilder, ClientTransport};

use benches::tonic_echo::grpc;

const SERVER_CPU: usize = 0;
const CLIENT_CPU: usize = 1;

fn pin(cpu: usize) {
    let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
    // SAFETY: a zeroed cpu_set_t is a valid empty set; CPU_SET and sched_setaffinity get a
    // pointer to it that is valid for the call.
    unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        libc::CPU_SET(cpu % cpus, &mut set);
        libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &set);
    }
}

// ----- ours ---------------------------------------------------------------------------

struct Ours {
    _server: netpoll_rpc::server::Server,
    _client_rt: netpoll::Runtime,
    client: ours::EchoClient,
}

impl Ours {
    fn start(connections: usize) -> Ours {
        let server = examples::echo_service::builder()
            .addr("127.0.0.1:0")
            .cores(1)
            .cpus(vec![SERVER_CPU])
            .start()
            .expect("our server");
        let rt = netpoll::Runtime::builder()
            .cores(1)
            .cpus(vec![CLIENT_CPU])
            .build()
            .expect("client runtime");
        let client = ours::EchoClient::from_builder(
            ClientBuilder::new(server.local_addr())
                .transport(ClientTransport::Framed)
                .connections(connections)
                .call_timeout(Some(Duration::from_secs(30)))
                .runtime(rt.handle().clone()),
        )
        .expect("our client");
        Ours {
            _server: server,
            _client_rt: rt,
            client,
        }
    }

    /// `calls` echo calls, `inflight` at a time, each next call issued from the previous
    /// one's completion on the client core. Returns the elapsed time.
    fn run(&self, calls: u64, inflight: usize, payload: &Bytes) -> Duration {
        struct Loop {
            client: ours::EchoClient,
            payload: Bytes,
            issued: AtomicU64,
            done: AtomicU64,
            calls: u64,
            finished: mpsc::SyncSender<()>,
        }
        fn issue(l: Arc<Loop>) {
            if l.issued.fetch_add(1, Ordering::Relaxed) >= l.calls {
                return;
            }
            let req = ours::EchoRequest {
                msg: l.payload.clone(),
            };
            let me = l.clone();
            l.client.echo_with(req, move |r| {
                let ok = r.is_ok_and(|r| r.msg == me.payload);
                assert!(ok, "our echo failed or changed the payload");
                if me.done.fetch_add(1, Ordering::Relaxed) + 1 == me.calls {
                    let _ = me.finished.send(());
                } else {
                    issue(me);
                }
            });
        }
        let (tx, rx) = mpsc::sync_channel(1);
        let l = Arc::new(Loop {
            client: self.client.clone(),
            payload: payload.clone(),
            issued: AtomicU64::new(0),
            done: AtomicU64::new(0),
            calls,
            finished: tx,
        });
        let t0 = Instant::now();
        for _ in 0..inflight.min(calls as usize) {
            issue(l.clone());
        }
        rx.recv().expect("all calls done");
        t0.elapsed()
    }
}

// ----- tonic --------------------------------------------------------------------------

struct Tonic {
    rt: tokio::runtime::Runtime,
    clients: Vec<grpc::echo_client::EchoClient<tonic::transport::Channel>>,
    _stop: Option<tokio::sync::oneshot::Sender<()>>,
    _ours: Option<netpoll_rpc::server::Server>,
}

impl Tonic {
    /// tonic's client against our server, over gRPC: the same client as [`Tonic::start`]'s,
    /// so that the two servers are compared by one client.
    fn against_ours(connections: usize) -> Tonic {
        let server = examples::echo_service::builder()
            .addr("127.0.0.1:0")
            .cores(1)
            .cpus(vec![SERVER_CPU])
            .max_frame(64 << 20)
            .start()
            .expect("our server");
        let mut t = Tonic::clients(server.local_addr(), connections);
        t._ours = Some(server);
        t
    }

    fn start(connections: usize) -> Tonic {
        let (addr_tx, addr_rx) = mpsc::channel::<SocketAddr>();
        let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
        std::thread::spawn(move || {
            pin(SERVER_CPU);
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("server runtime");
            rt.block_on(async move {
                let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
                addr_tx.send(listener.local_addr().unwrap()).unwrap();
                benches::tonic_echo::serve(listener, async {
                    let _ = stop_rx.await;
                })
                .await
                .expect("tonic server");
            });
        });
        let addr = addr_rx.recv().expect("tonic server address");
        let mut t = Tonic::clients(addr, connections);
        t._stop = Some(stop_tx);
        t
    }

    /// tonic's clients of the server at `addr`, on a current-thread runtime on the client
    /// CPU: one HTTP/2 connection each.
    fn clients(addr: SocketAddr, connections: usize) -> Tonic {
        pin(CLIENT_CPU);
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("client runtime");
        let clients = rt.block_on(async {
            let mut v = Vec::new();
            for _ in 0..connections {
                // One Endpoint each: separate HTTP/2 connections.
                let ch = tonic::transport::Endpoint::from_shared(format!("http://{addr}"))
                    .unwrap()
                    .tcp_nodelay(true)
                    .connect()
                    .await
                    .expect("tonic connect");
                v.push(
                    grpc::echo_client::EchoClient::new(ch)
                        .max_decoding_message_size(64 << 20)
                        .max_encoding_message_size(64 << 20),
                );
            }
            v
        });
        Tonic {
            rt,
            clients,
            _stop: None,
            _ours: None,
        }
    }

    /// `calls` echo calls, `per_conn` tasks per connection each calling in a loop.
    fn run(&self, calls: u64, per_conn: usize, payload: &Bytes) -> Duration {
        let left = Arc::new(AtomicU64::new(calls));
        self.rt.block_on(async {
            let t0 = Instant::now();
            let mut tasks = tokio::task::JoinSet::new();
            for c in &self.clients {
                for _ in 0..per_conn {
                    let mut c = c.clone();
                    let left = left.clone();
                    let payload = payload.clone();
                    tasks.spawn(async move {
                        while left
                            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |n| {
                                n.checked_sub(1)
                            })
                            .is_ok()
                        {
                            let r = c
                                .echo(grpc::EchoRequest {
                                    msg: payload.clone(),
                                })
                                .await
                                .expect("tonic echo");
                            assert!(r.into_inner().msg == payload, "tonic changed the payload");
                        }
                    });
                }
            }
            while tasks.join_next().await.is_some() {}
            t0.elapsed()
        })
    }
}

// ----- the benches --------------------------------------------------------------------

fn payload(size: usize) -> Bytes {
    Bytes::from((0..size).map(|i| (i * 31 % 251) as u8).collect::<Vec<u8>>())
}

fn sizes() -> [(&'static str, usize); 3] {
    [("128B", 128), ("16KiB", 16 << 10), ("1MiB", 1 << 20)]
}

fn unary_latency(c: &mut Criterion) {
    let mut g = c.benchmark_group("unary_latency");
    g.sample_size(20)
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(3));
    let o = Ours::start(1);
    let t = Tonic::start(1);
    let og = Tonic::against_ours(1);
    for (name, size) in sizes() {
        let p = payload(size);
        g.bench_with_input(BenchmarkId::new("ours", name), &p, |b, p| {
            b.iter_custom(|iters| o.run(iters, 1, p))
        });
        g.bench_with_input(BenchmarkId::new("tonic", name), &p, |b, p| {
            b.iter_custom(|iters| t.run(iters, 1, p))
        });
        g.bench_with_input(BenchmarkId::new("ours-grpc", name), &p, |b, p| {
            b.iter_custom(|iters| og.run(iters, 1, p))
        });
    }
    g.finish();
}

fn throughput(c: &mut Criterion) {
    for (group, conns, per_conn, cases) in [
        (
            "throughput_16x32",
            16,
            32,
            &[("128B", 128usize), ("16KiB", 16 << 10)][..],
        ),
        ("throughput_4x4", 4, 4, &[("1MiB", 1 << 20)][..]),
    ] {
        let mut g = c.benchmark_group(group);
        g.sample_size(10)
            .warm_up_time(Duration::from_secs(1))
            .measurement_time(Duration::from_secs(4));
        let o = Ours::start(conns);
        let t = Tonic::start(conns);
        let og = Tonic::against_ours(conns);
        for &(name, size) in cases {
            let p = payload(size);
            // One criterion iteration is one call; each sample runs many, in flight.
            g.throughput(Throughput::Elements(1));
            g.bench_with_input(BenchmarkId::new("ours", name), &p, |b, p| {
                b.iter_custom(|iters| o.run(iters, conns * per_conn, p))
            });
            g.bench_with_input(BenchmarkId::new("tonic", name), &p, |b, p| {
                b.iter_custom(|iters| t.run(iters, per_conn, p))
            });
            g.bench_with_input(BenchmarkId::new("ours-grpc", name), &p, |b, p| {
                b.iter_custom(|iters| og.run(iters, per_conn, p))
            });
        }
        g.finish();
    }
}

criterion_group!(benches, unary_latency, throughput);
criterion_main!(benches);
