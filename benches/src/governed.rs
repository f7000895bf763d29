//! Load through the framework's own typed client — the governed path: a service name, a
//! resolver (`static://h1:p1,h2:p2` or `etcd://HOST:PORT`), a balancer, retries and
//! breakers — instead of `rpc-bench`'s raw client. Calls are `Echo.echo` (idl/echo.thrift)
//! over TTHeader or Framed; `connections x inflight` calls are kept in flight in all,
//! each completion sending the next from the client's core.

use std::cell::RefCell;
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use examples::gen::echo::EchoClient;
use hdrhistogram::Histogram;
use netpoll_rpc::balance::{ConsistentHash, P2c, WeightedRandom, WeightedRoundRobin};
use netpoll_rpc::client::{ClientBuilder, ClientTransport, RetryOn, RetryPolicy};
use netpoll_rpc::discovery::StaticResolver;
use netpoll_rpc::registry::EtcdResolver;

use crate::load::{new_histogram, ErrorKind, LoadConfig, Progress, Report};

/// The governed client's settings.
#[derive(Debug, Clone)]
pub struct GovernedConfig {
    /// `static://h1:p1,h2:p2` or `etcd://HOST:PORT`.
    pub resolver: String,
    /// The service name to look up.
    pub service: String,
    /// `p2c` (default), `wrr`, `random` or `hash` (keyed by a per-call counter).
    pub lb: String,
    /// Retries per call (timeouts and lost connections included: echo is idempotent).
    pub retry: u32,
    /// TTHeader (true) or Framed.
    pub ttheader: bool,
}

/// What a governed run adds to the usual report.
#[derive(Debug)]
pub struct GovernedReport {
    /// The usual numbers.
    pub report: Report,
    /// Retries the client made.
    pub retries: u64,
    /// Calls each instance answered (over the whole run).
    pub instances: Vec<(netpoll_rpc::discovery::Addr, u64)>,
}

struct Shared {
    client: EchoClient,
    payload: Bytes,
    recording: AtomicBool,
    stopping: AtomicBool,
    in_flight: AtomicU64,
    keyed: AtomicU64,
    hash: bool,
    errors: Mutex<BTreeMap<ErrorKind, u64>>,
    progress: Arc<Progress>,
}

/// What one client core measured: kept on the core (as the raw client does), so that the
/// harness adds no lock or shared counter of its own to each call; merged at the end.
struct CoreStats {
    latency: Histogram<u64>,
    calls: u64,
    bytes: u64,
}

/// Replies a core counted and has not yet added to the shared progress counter: added
/// every [`PROGRESS_EVERY`] replies, so the harness adds no shared atomic per call (as the
/// raw client adds its replies once per batch).
const PROGRESS_EVERY: u64 = 256;

thread_local! {
    static STATS: RefCell<Option<CoreStats>> = const { RefCell::new(None) };
    /// Replies counted on this core since the progress counter last heard of them.
    static UNREPORTED: std::cell::Cell<u64> = const { std::cell::Cell::new(0) };
}

fn send(s: &Arc<Shared>) {
    if s.stopping.load(Ordering::Relaxed) {
        return;
    }
    s.in_flight.fetch_add(1, Ordering::Relaxed);
    issue(s);
}

/// Makes one call, counted in `in_flight` already; its completion makes the next one in
/// its place (still counted), or once the run stops, uncounts itself.
fn issue(s: &Arc<Shared>) {
    let me = s.clone();
    // The loop clock, as the raw client reads one clock per batch of replies: on a
    // client core it costs no clock read (elsewhere, at the start, it reads one).
    let t0 = netpoll::now();
    // A keyed handle only for consistent hashing; otherwise the shared one, as a caller
    // holding a client would call it.
    let keyed = s
        .hash
        .then(|| s.client.with_key(s.keyed.fetch_add(1, Ordering::Relaxed)));
    keyed
        .as_ref()
        .unwrap_or(&s.client)
        .echo_with(s.payload.clone(), move |r| {
            let n = UNREPORTED.with(|u| {
                let n = u.get() + 1;
                u.set(if n >= PROGRESS_EVERY { 0 } else { n });
                n
            });
            if n >= PROGRESS_EVERY {
                me.progress.replies.fetch_add(n, Ordering::Relaxed);
            }
            let recording = me.recording.load(Ordering::Relaxed);
            match r {
                Ok(b) if b.len() == me.payload.len() => {
                    if recording {
                        let ns = netpoll::now().saturating_duration_since(t0).as_nanos() as u64;
                        STATS.with(|s| {
                            let mut s = s.borrow_mut();
                            let st = s.get_or_insert_with(|| CoreStats {
                                latency: new_histogram(),
                                calls: 0,
                                bytes: 0,
                            });
                            let _ = st.latency.record(ns.max(1));
                            st.calls += 1;
                            st.bytes += b.len() as u64;
                        });
                    }
                }
                Ok(_) => error(&me, ErrorKind::PayloadMismatch),
                Err(e) => {
                    let kind = match e {
                        netpoll_rpc::CallError::Connect(_)
                        | netpoll_rpc::CallError::NoInstance(_) => ErrorKind::Connect,
                        netpoll_rpc::CallError::Decode(_) | netpoll_rpc::CallError::Protocol(_) => {
                            ErrorKind::Decode
                        }
                        _ => ErrorKind::Lost,
                    };
                    error(&me, kind);
                }
            }
            if me.stopping.load(Ordering::Relaxed) {
                me.in_flight.fetch_sub(1, Ordering::Relaxed);
            } else {
                issue(&me);
            }
        });
}

fn error(s: &Shared, kind: ErrorKind) {
    s.progress.errors.fetch_add(1, Ordering::Relaxed);
    *s.errors.lock().unwrap().entry(kind).or_default() += 1;
}

/// Runs `load` through the governed client; `tick` is called about every 100 ms.
pub fn run(
    load: &LoadConfig,
    g: &GovernedConfig,
    progress: Arc<Progress>,
    mut tick: impl FnMut(Duration),
) -> Result<GovernedReport, String> {
    let mut rt = netpoll::Runtime::builder()
        .cores(load.threads.max(1))
        .thread_name("rpc-bench-client");
    if let Some(cpus) = &load.cpus {
        rt = rt.cpus(cpus.clone());
    }
    if !load.busy_poll.is_zero() {
        rt = rt.busy_poll(load.busy_poll);
    }
    let rt = rt.build().map_err(|e| format!("client runtime: {e}"))?;
    let mut b = ClientBuilder::default()
        .runtime(rt.handle().clone())
        .connections(load.connections.max(1))
        .transport(if g.ttheader {
            ClientTransport::TTHeader
        } else {
            ClientTransport::Framed
        })
        .retry(RetryPolicy {
            max_retries: g.retry,
            retry_on: RetryOn::Failures,
            ..RetryPolicy::default()
        });
    b = if let Some(list) = g.resolver.strip_prefix("static://") {
        b.resolver(StaticResolver::parse(list).map_err(|e| e.to_string())?)
    } else if let Some(ep) = g.resolver.strip_prefix("etcd://") {
        b.resolver(EtcdResolver::new(ep))
    } else {
        return Err(format!(
            "--resolver {:?}: static://h1:p1,h2:p2 or etcd://HOST:PORT",
            g.resolver
        ));
    };
    b = match g.lb.as_str() {
        "p2c" => b.load_balancer(P2c),
        "wrr" => b.load_balancer(WeightedRoundRobin),
        "random" => b.load_balancer(WeightedRandom),
        "hash" => b.load_balancer(ConsistentHash::default()),
        other => return Err(format!("--lb {other:?}: p2c, wrr, random or hash")),
    };
    if let Some((connector, name)) = &load.tls {
        b = b
            .tls(connector.clone(), name)
            .map_err(|e| format!("TLS: {e}"))?;
    }
    let client = EchoClient::new(&g.service, b.warm_up(true)).map_err(|e| e.to_string())?;
    let shared = Arc::new(Shared {
        client,
        payload: Bytes::from(vec![b'x'; load.payload]),
        recording: AtomicBool::new(false),
        stopping: AtomicBool::new(false),
        in_flight: AtomicU64::new(0),
        keyed: AtomicU64::new(0),
        hash: g.lb == "hash",
        errors: Mutex::new(BTreeMap::new()),
        progress,
    });
    let window = load.connections.max(1) * load.inflight.max(1);
    for _ in 0..window {
        send(&shared);
    }
    let start = Instant::now();
    let mut next_tick = Duration::from_millis(100);
    let total = load.warmup + load.duration;
    let mut measured_from = None;
    while start.elapsed() < total {
        std::thread::sleep(Duration::from_millis(10));
        let e = start.elapsed();
        if measured_from.is_none() && e >= load.warmup {
            shared.recording.store(true, Ordering::Relaxed);
            measured_from = Some(Instant::now());
        }
        if e >= next_tick {
            tick(e);
            next_tick += Duration::from_millis(100);
        }
    }
    shared.recording.store(false, Ordering::Relaxed);
    let elapsed = measured_from.map_or(Duration::ZERO, |t| t.elapsed());
    shared.stopping.store(true, Ordering::Relaxed);
    let drain = Instant::now();
    while shared.in_flight.load(Ordering::Relaxed) > 0 && drain.elapsed() < Duration::from_secs(10)
    {
        std::thread::sleep(Duration::from_millis(5));
    }
    let retries = shared.client.client().retries();
    let instances = shared.client.client().answered_by_instance();
    let mut report = Report {
        calls: 0,
        bytes: 0,
        elapsed,
        latency: new_histogram(),
        errors: shared.errors.lock().unwrap().clone(),
    };
    for core in 0..load.threads.max(1) {
        let (tx, rx) = std::sync::mpsc::channel();
        rt.handle()
            .spawn(core, move |_| {
                let _ = tx.send(STATS.with(|s| s.borrow_mut().take()));
            })
            .map_err(|e| format!("collecting core {core}'s numbers: {e}"))?;
        if let Ok(Some(st)) = rx.recv_timeout(Duration::from_secs(5)) {
            let _ = report.latency.add(&st.latency);
            report.calls += st.calls;
            report.bytes += st.bytes;
        }
    }
    drop(shared);
    rt.shutdown(Duration::from_secs(1));
    Ok(GovernedReport {
        report,
        retries,
        instances,
    })
}
