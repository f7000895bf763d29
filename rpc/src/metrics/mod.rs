//! [`Metrics`]: per-method call metrics of a server or a client, as a [`Middleware`],
//! rendered in Prometheus' text format ([`Metrics::render`], served by [`serve`]).
//!
//! Names and labels follow OpenTelemetry's RPC semantic conventions as Prometheus exposes
//! them:
//!
//! - `rpc_server_call_duration_seconds` / `rpc_client_call_duration_seconds`: histograms
//!   with exactly the labels `rpc_system`, `rpc_service`, `rpc_method` and `status`
//!   (`ok`, or the [`ErrorKind`] name of the failure). Their `_count` is
//!   the number of calls, and errors by kind are the counts with another `status`.
//! - `rpc_{server,client}_calls_in_flight`: calls started and not ended.
//! - `rpc_{server,client}_request_bytes_total`, `..._response_bytes_total`: frame sizes.
//!
//! `rpc_system` is `apache_thrift` for Thrift payloads, `kitex_protobuf` for Kitex
//! Protobuf, and `grpc` for gRPC.
//!
//! A server call's duration runs from the event-loop turn its request arrived in to when
//! its reply is handed on to be sent: for a call answered at once, the end of the pass
//! over its connection's input that wrote the reply (the replies written in one pass
//! leave together, and share one clock read); for a deferred reply, when it is written.
//! A client call's runs from the call to its reply or failure.
//!
//! # Cost
//!
//! Each thread (each core) counts into series of its own, found through a thread-local
//! table: the per-call path touches no atomic another core writes, and takes no lock.
//! The series of every thread are summed only when the metrics are rendered (scraped).

mod http;

use std::cell::RefCell;
use std::collections::{BTreeMap, HashMap};
use std::fmt::Write as _;
use std::hash::{BuildHasherDefault, Hasher};
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock, Weak};
use std::time::Instant;

pub use http::{serve, MetricsServer};

use crate::wire::Payload;
use crate::{CallInfo, ErrorKind, Metadata, Middleware, Outcome, Side, Status};

/// Upper bounds of the duration buckets, in seconds (sub-millisecond first: RPCs here are
/// fast), then OpenTelemetry's defaults up to 10 s.
pub const BUCKETS: [f64; 17] = [
    0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0,
    2.5, 5.0, 10.0,
];

/// One status's duration histogram.
#[derive(Debug, Default)]
struct Hist {
    /// Per bucket (not cumulative), plus one for +Inf.
    buckets: [AtomicU64; BUCKETS.len() + 1],
    sum_ns: AtomicU64,
}

/// The counts of one (side, system, service, method) on one thread.
#[derive(Debug)]
struct Series {
    side: Side,
    system: &'static str,
    service: String,
    method: String,
    in_flight: AtomicI64,
    request_bytes: AtomicU64,
    response_bytes: AtomicU64,
    /// Index 0: ok; then one per row of `ErrorKind::TABLE`; last: any other kind.
    by_status: Vec<OnceLock<Hist>>,
    /// Holds the counts of threads that exited (see `LocalTable`).
    retired: bool,
}

fn status_count() -> usize {
    ErrorKind::TABLE.len() + 2
}

fn status_index(error: Option<ErrorKind>) -> usize {
    match error {
        None => 0,
        Some(k) => ErrorKind::TABLE
            .iter()
            .position(|r| r.kind == k)
            .map_or(status_count() - 1, |i| i + 1),
    }
}

fn status_name(i: usize) -> &'static str {
    match i {
        0 => "ok",
        i if i <= ErrorKind::TABLE.len() => ErrorKind::TABLE[i - 1].name,
        _ => "other",
    }
}

fn system(p: Payload, t: crate::wire::Transport) -> &'static str {
    match p {
        _ if t == crate::wire::Transport::Custom(crate::server::GRPC_TRANSPORT) => "grpc",
        Payload::Protobuf => "kitex_protobuf",
        _ => "apache_thrift",
    }
}

/// The bucket bounds in nanoseconds.
const BOUNDS_NS: [u64; 17] = [
    50_000,
    100_000,
    250_000,
    500_000,
    1_000_000,
    2_500_000,
    5_000_000,
    10_000_000,
    25_000_000,
    50_000_000,
    100_000_000,
    250_000_000,
    500_000_000,
    1_000_000_000,
    2_500_000_000,
    5_000_000_000,
    10_000_000_000,
];

/// Adds `n` to a counter only this thread writes: a load and a store, not a locked
/// read-modify-write (the reader, a scrape on another thread, sees one value or the next).
fn bump(c: &AtomicU64, n: u64) {
    c.store(c.load(Ordering::Relaxed).wrapping_add(n), Ordering::Relaxed);
}

/// [`bump`] for the in-flight gauge, which may go down.
fn bump_gauge(c: &AtomicI64, n: i64) {
    c.store(c.load(Ordering::Relaxed) + n, Ordering::Relaxed);
}

impl Series {
    fn new(
        side: Side,
        system: &'static str,
        service: String,
        method: String,
        retired: bool,
    ) -> Self {
        Series {
            side,
            system,
            service,
            method,
            in_flight: AtomicI64::new(0),
            request_bytes: AtomicU64::new(0),
            response_bytes: AtomicU64::new(0),
            by_status: (0..status_count()).map(|_| OnceLock::new()).collect(),
            retired,
        }
    }

    fn same_key(&self, o: &Series) -> bool {
        self.side == o.side
            && self.system == o.system
            && self.service == o.service
            && self.method == o.method
    }

    /// Adds `o`'s counts to this series (a retired one, under the registry's lock).
    fn fold(&self, o: &Series) {
        bump_gauge(&self.in_flight, o.in_flight.load(Ordering::Relaxed));
        bump(&self.request_bytes, o.request_bytes.load(Ordering::Relaxed));
        bump(
            &self.response_bytes,
            o.response_bytes.load(Ordering::Relaxed),
        );
        for (mine, theirs) in self.by_status.iter().zip(&o.by_status) {
            if let Some(t) = theirs.get() {
                let m = mine.get_or_init(Hist::default);
                for (a, b) in m.buckets.iter().zip(&t.buckets) {
                    bump(a, b.load(Ordering::Relaxed));
                }
                bump(&m.sum_ns, t.sum_ns.load(Ordering::Relaxed));
            }
        }
    }

    fn add(&self, d: std::time::Duration, error: Option<ErrorKind>) {
        let h = self.by_status[status_index(error)].get_or_init(Hist::default);
        let ns = d.as_nanos().min(u64::MAX as u128) as u64;
        let b = BOUNDS_NS.partition_point(|&le| le < ns);
        bump(&h.buckets[b], 1);
        bump(&h.sum_ns, ns);
    }
}

static NEXT_ID: AtomicU64 = AtomicU64::new(1);

/// This thread's series, by a hash of (metrics id, side, service, method): the metrics
/// id and the series of each key. The key is a hash already: it is used as it is.
type Local = HashMap<u64, Vec<(u64, Arc<Series>, Weak<Registry>)>, BuildHasherDefault<KeyHasher>>;

/// Every series of one [`Metrics`]: those of live threads, and one per key holding what
/// threads that exited counted (`retired`).
type Registry = Mutex<Vec<Arc<Series>>>;

/// A thread's series; when the thread exits, their counts are folded into the retired
/// series of their key and they leave the registry, so that threads that come and go
/// (a client called from short-lived threads) do not grow it.
#[derive(Default)]
struct LocalTable(Local);

impl Drop for LocalTable {
    fn drop(&mut self) {
        for (_, s, registry) in self.0.drain().flat_map(|(_, v)| v) {
            let Some(registry) = registry.upgrade() else {
                continue;
            };
            let mut all = registry.lock().unwrap_or_else(|p| p.into_inner());
            all.retain(|x| !Arc::ptr_eq(x, &s));
            let into = match all.iter().find(|r| r.retired && r.same_key(&s)) {
                Some(r) => r.clone(),
                None => {
                    let r = Arc::new(Series::new(
                        s.side,
                        s.system,
                        s.service.clone(),
                        s.method.clone(),
                        true,
                    ));
                    all.push(r.clone());
                    r
                }
            };
            // Retired series are written only here, under the registry's lock.
            into.fold(&s);
        }
    }
}

/// A hasher for keys that are hashes already.
#[derive(Default)]
struct KeyHasher(u64);

impl Hasher for KeyHasher {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.0 = (self.0 << 8) ^ b as u64;
        }
    }
    fn write_u64(&mut self, v: u64) {
        self.0 = v;
    }
}

/// Most calls a pass holds before it reads the clock anyway.
const PASS_MAX: usize = 64;

/// The durations of calls answered in the pass being served (one connection's input),
/// waiting for its end: one clock read for all of them ([`Metrics::ended_in_pass`]).
#[derive(Default)]
struct Pass {
    /// The series the waiting calls belong to (calls come in runs of one method).
    series: Option<Arc<Series>>,
    /// When each call started, and how it ended.
    calls: Vec<(Instant, Option<ErrorKind>)>,
}

impl Pass {
    /// Ends the waiting calls' durations now.
    fn flush(&mut self) {
        if self.calls.is_empty() {
            return;
        }
        let now = Instant::now();
        if let Some(s) = &self.series {
            for (start, error) in self.calls.drain(..) {
                s.add(now.saturating_duration_since(start), error);
            }
        }
        self.calls.clear();
    }
}

thread_local! {
    static PASS: RefCell<Pass> = RefCell::new(Pass::default());
    static LOCAL: RefCell<LocalTable> = RefCell::new(LocalTable::default());
    /// The series this thread used last.
    static LAST: RefCell<Option<(u64, Arc<Series>)>> = const { RefCell::new(None) };
}

/// FNV-1a over the parts of a series' key.
fn key(id: u64, side: Side, service: &str, method: &str) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325 ^ id;
    let mut eat = |b: u8| {
        h ^= b as u64;
        h = h.wrapping_mul(0x0100_0000_01b3);
    };
    eat(side as u8);
    service.bytes().for_each(&mut eat);
    eat(0xff);
    method.bytes().for_each(&mut eat);
    h
}

/// A source of extra metrics text.
type Source = Arc<dyn Fn(&mut String) + Send + Sync>;

/// Per-method metrics of the calls of a server or a client; see the [module docs](self).
/// Clones share the counts.
#[derive(Clone)]
pub struct Metrics {
    id: u64,
    all: Arc<Registry>,
    /// Extra text appended to each rendering (a server's connection counters, say).
    extra: Arc<Mutex<Vec<Source>>>,
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Metrics").field("id", &self.id).finish()
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics::new()
    }
}

impl Metrics {
    /// Empty metrics; register them with `ServerBuilder::middleware` or
    /// `ClientBuilder::middleware` (or both).
    pub fn new() -> Metrics {
        Metrics {
            id: NEXT_ID.fetch_add(1, Ordering::Relaxed),
            all: Arc::new(Mutex::new(Vec::new())),
            extra: Arc::new(Mutex::new(Vec::new())),
        }
    }

    /// Adds `write` to every rendering: it appends metrics of its own in the text format
    /// (see [`Metrics::server_metrics`] for a server's).
    pub fn add_source(&self, write: impl Fn(&mut String) + Send + Sync + 'static) {
        self.extra
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push(Arc::new(write));
    }

    /// Runs `f` on this thread's series for `call`.
    fn with_series<R>(&self, call: &CallInfo<'_>, f: impl FnOnce(&Arc<Series>) -> R) -> R {
        let sys = system(call.payload, call.transport);
        let matches = |id: u64, s: &Series| {
            id == self.id
                && s.side == call.side
                && s.system == sys
                && s.method == call.method
                && s.service == call.service
        };
        // Calls come in runs of one method: the last series found answers most lookups
        // without hashing.
        let mut f = Some(f);
        let hit = LAST.with(|last| match &*last.borrow() {
            Some((id, s)) if matches(*id, s) => f.take().map(|f| f(s)),
            _ => None,
        });
        if let Some(r) = hit {
            return r;
        }
        let Some(f) = f else {
            unreachable!("f is taken only on a hit")
        };
        let k = key(self.id, call.side, call.service, call.method);
        let s = LOCAL.with(|l| {
            let mut l = l.borrow_mut();
            let bucket = l.0.entry(k).or_default();
            if let Some((_, s, _)) = bucket.iter().find(|(id, s, _)| {
                *id == self.id
                    && s.side == call.side
                    && s.system == sys
                    && s.service == call.service
                    && s.method == call.method
            }) {
                return s.clone();
            }
            let s = Arc::new(Series::new(
                call.side,
                sys,
                call.service.to_owned(),
                call.method.to_owned(),
                false,
            ));
            self.all
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .push(s.clone());
            bucket.push((self.id, s.clone(), Arc::downgrade(&self.all)));
            s
        });
        LAST.with(|last| *last.borrow_mut() = Some((self.id, s.clone())));
        f(&s)
    }

    /// The metrics in Prometheus' text exposition format (version 0.0.4).
    pub fn render(&self) -> String {
        // Side as 0 (server) / 1 (client), for ordering.
        type Key = (u8, &'static str, String, String);
        struct Sum {
            in_flight: i64,
            request_bytes: u64,
            response_bytes: u64,
            by_status: Vec<Option<([u64; BUCKETS.len() + 1], u64)>>,
        }
        let mut sums: BTreeMap<Key, Sum> = BTreeMap::new();
        for s in self.all.lock().unwrap_or_else(|p| p.into_inner()).iter() {
            let e = sums
                .entry((s.side as u8, s.system, s.service.clone(), s.method.clone()))
                .or_insert_with(|| Sum {
                    in_flight: 0,
                    request_bytes: 0,
                    response_bytes: 0,
                    by_status: vec![None; status_count()],
                });
            e.in_flight += s.in_flight.load(Ordering::Relaxed);
            e.request_bytes += s.request_bytes.load(Ordering::Relaxed);
            e.response_bytes += s.response_bytes.load(Ordering::Relaxed);
            for (i, h) in s.by_status.iter().enumerate() {
                if let Some(h) = h.get() {
                    let slot = e.by_status[i].get_or_insert(([0; BUCKETS.len() + 1], 0));
                    for (b, c) in h.buckets.iter().enumerate() {
                        slot.0[b] += c.load(Ordering::Relaxed);
                    }
                    slot.1 += h.sum_ns.load(Ordering::Relaxed);
                }
            }
        }
        let mut out = String::new();
        for side in [Side::Server, Side::Client] {
            let sname = match side {
                Side::Server => "server",
                Side::Client => "client",
            };
            let of_side: Vec<_> = sums.iter().filter(|(k, _)| k.0 == side as u8).collect();
            if of_side.is_empty() {
                continue;
            }
            let _ = writeln!(
                out,
                "# HELP rpc_{sname}_call_duration_seconds Duration of RPC calls, by outcome.\n\
                 # TYPE rpc_{sname}_call_duration_seconds histogram"
            );
            for ((_, system, service, method), sum) in &of_side {
                let labels = format!(
                    "rpc_system=\"{system}\",rpc_service=\"{}\",rpc_method=\"{}\"",
                    escape(service),
                    escape(method)
                );
                for (i, h) in sum.by_status.iter().enumerate() {
                    let Some((buckets, sum_ns)) = h else { continue };
                    let l = format!("{labels},status=\"{}\"", status_name(i));
                    let mut cumulative = 0;
                    for (b, le) in BUCKETS.iter().enumerate() {
                        cumulative += buckets[b];
                        let _ = writeln!(
                            out,
                            "rpc_{sname}_call_duration_seconds_bucket{{{l},le=\"{le}\"}} {cumulative}"
                        );
                    }
                    cumulative += buckets[BUCKETS.len()];
                    let _ = writeln!(
                        out,
                        "rpc_{sname}_call_duration_seconds_bucket{{{l},le=\"+Inf\"}} {cumulative}\n\
                         rpc_{sname}_call_duration_seconds_sum{{{l}}} {}\n\
                         rpc_{sname}_call_duration_seconds_count{{{l}}} {cumulative}",
                        *sum_ns as f64 / 1e9
                    );
                }
            }
            for (metric, kind, help) in [
                ("calls_in_flight", "gauge", "Calls started and not ended."),
                ("request_bytes_total", "counter", "Bytes of request frames."),
                ("response_bytes_total", "counter", "Bytes of reply frames."),
            ] {
                let _ = writeln!(
                    out,
                    "# HELP rpc_{sname}_{metric} {help}\n# TYPE rpc_{sname}_{metric} {kind}"
                );
                for ((_, system, service, method), sum) in &of_side {
                    let v = match metric {
                        "calls_in_flight" => sum.in_flight.max(0) as u64,
                        "request_bytes_total" => sum.request_bytes,
                        _ => sum.response_bytes,
                    };
                    let _ = writeln!(
                        out,
                        "rpc_{sname}_{metric}{{rpc_system=\"{system}\",rpc_service=\"{}\",rpc_method=\"{}\"}} {v}",
                        escape(service),
                        escape(method)
                    );
                }
            }
        }
        for f in self.extra.lock().unwrap_or_else(|p| p.into_inner()).iter() {
            f(&mut out);
        }
        out
    }

    /// A source for [`add_source`](Metrics::add_source) with a server's own metrics:
    /// connections closed by reason (`rpc_server_connections_closed_total{reason}`,
    /// connections refused at the limit included), and per core the connections open
    /// (`rpc_server_connections{core}`) and the receive buffer pool's use
    /// (`netpoll_buffer_pool_buffers{core,state}`: `in_ring`, `lent`, `total`). The per-core
    /// numbers are asked of each core when scraped (a core that does not answer within
    /// 200 ms is left out).
    pub fn server_metrics(server: &crate::server::Server) -> impl Fn(&mut String) + Send + Sync {
        let counts = server.close_counter();
        let rt = server.runtime().clone();
        move |out: &mut String| {
            let (tx, rx) = std::sync::mpsc::channel();
            for core in 0..rt.cores() {
                let tx = tx.clone();
                let _ = rt.spawn(core, move |c: &mut netpoll::Core| {
                    let _ = tx.send((c.id(), c.connection_count(), c.pool_stats()));
                });
            }
            drop(tx);
            let deadline = Instant::now() + std::time::Duration::from_millis(200);
            let mut cores = Vec::new();
            while let Ok(x) = rx.recv_timeout(deadline.saturating_duration_since(Instant::now())) {
                cores.push(x);
            }
            cores.sort_by_key(|c| c.0);
            let _ = writeln!(
                out,
                "# HELP rpc_server_connections Server connections open, per core.\n\
                 # TYPE rpc_server_connections gauge"
            );
            for (core, conns, _) in &cores {
                let _ = writeln!(out, "rpc_server_connections{{core=\"{core}\"}} {conns}");
            }
            let _ = writeln!(
                out,
                "# HELP netpoll_buffer_pool_buffers Receive buffers per core, by state.\n\
                 # TYPE netpoll_buffer_pool_buffers gauge"
            );
            for (core, _, p) in &cores {
                for (state, n) in [
                    ("in_ring", p.in_ring),
                    ("lent", p.lent),
                    ("total", p.buffers),
                ] {
                    let _ = writeln!(
                        out,
                        "netpoll_buffer_pool_buffers{{core=\"{core}\",state=\"{state}\"}} {n}"
                    );
                }
            }
            let _ = writeln!(
                out,
                "# HELP rpc_server_connections_closed_total Server connections closed, by reason.\n\
                 # TYPE rpc_server_connections_closed_total counter"
            );
            for (reason, n) in counts().iter() {
                let _ = writeln!(
                    out,
                    "rpc_server_connections_closed_total{{reason=\"{reason}\"}} {n}"
                );
            }
        }
    }
}

/// Escapes a label value (backslash, quote, newline).
fn escape(v: &str) -> String {
    v.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

impl Metrics {
    /// A call started: it is in flight until [`ended`](Self::ended). (A server calls
    /// this only for deferred replies: its other calls end in the turn they start.)
    pub(crate) fn started(&self, call: &CallInfo<'_>) {
        self.with_series(call, |s| bump_gauge(&s.in_flight, 1));
    }

    /// A call ended; `was_in_flight` if [`started`](Self::started) counted it. The end
    /// may run on another thread than the start (a client's reply arrives on its
    /// connection's core): it counts in that thread's series, and the in-flight count,
    /// summed over every thread's series, stays right.
    pub(crate) fn ended(&self, call: &CallInfo<'_>, outcome: &Outcome, was_in_flight: bool) {
        let d = Instant::now().saturating_duration_since(call.start);
        self.with_series(call, |here| {
            if was_in_flight {
                bump_gauge(&here.in_flight, -1);
            }
            bump(&here.request_bytes, call.request_bytes as u64);
            bump(&here.response_bytes, outcome.response_bytes as u64);
            here.add(d, outcome.error);
        });
    }
}

impl Metrics {
    /// A call its server answered at once, while serving a connection's input, ended.
    /// Its sizes count now; its duration ends when the pass does ([`end_pass`]): its
    /// reply leaves with the others written in the pass, when the pass ends, and one
    /// clock read serves them all (a read per call was most of what metrics cost).
    pub(crate) fn ended_in_pass(&self, call: &CallInfo<'_>, outcome: &Outcome) {
        self.with_series(call, |here| {
            bump(&here.request_bytes, call.request_bytes as u64);
            bump(&here.response_bytes, outcome.response_bytes as u64);
            PASS.with(|p| {
                let mut p = p.borrow_mut();
                let same = p.series.as_ref().is_some_and(|s| Arc::ptr_eq(s, here));
                if !same || p.calls.len() >= PASS_MAX {
                    p.flush();
                    if !same {
                        p.series = Some(here.clone());
                    }
                }
                if p.calls.capacity() == 0 {
                    p.calls.reserve_exact(PASS_MAX);
                }
                p.calls.push((call.start, outcome.error));
            });
        });
    }
}

/// Ends the durations of the calls answered in the pass that just ended on this thread
/// ([`Metrics::ended_in_pass`]).
pub(crate) fn end_pass() {
    PASS.with(|p| p.borrow_mut().flush());
}

impl Middleware for Metrics {
    /// Nothing: the end finds the call's series again and measures from
    /// [`CallInfo::start`], so that a call costs no allocation.
    type State = ();

    fn start(&self, call: &CallInfo<'_>, _meta: &mut Metadata) -> Result<(), Status> {
        self.started(call);
        Ok(())
    }

    fn end(&self, _: (), call: &CallInfo<'_>, outcome: &Outcome) {
        self.ended(call, outcome, true);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::Transport;

    fn call(start: Instant) -> CallInfo<'static> {
        CallInfo {
            side: Side::Client,
            service: "Echo",
            method: "echo",
            transport: Transport::Framed,
            payload: Payload::ThriftBinary,
            peer: None,
            seq_id: 0,
            request_bytes: 10,
            start,
            deadline: None,
            headers: None,
            trace: None,
        }
    }

    fn count(text: &str) -> u64 {
        text.lines()
            .find(|l| {
                l.starts_with("rpc_client_call_duration_seconds_count{")
                    && l.contains("status=\"ok\"")
            })
            .and_then(|l| l.rsplit(' ').next())
            .and_then(|n| n.parse().ok())
            .unwrap_or(0)
    }

    #[test]
    fn threads_that_exit_keep_their_counts_and_leave_no_series() {
        let m = Metrics::new();
        for _ in 0..50 {
            let m = m.clone();
            std::thread::spawn(move || {
                for _ in 0..3 {
                    let c = call(Instant::now());
                    m.start(&c, &mut Metadata::default()).unwrap();
                    let outcome = Outcome {
                        error: None,
                        response_bytes: 5,
                    };
                    Middleware::end(&m, (), &c, &outcome);
                }
            })
            .join()
            .unwrap();
        }
        assert_eq!(count(&m.render()), 150, "every call counted");
        let series = m.all.lock().unwrap().len();
        assert_eq!(
            series, 1,
            "one retired series holds the exited threads' counts"
        );
        assert!(m.render().contains("rpc_client_calls_in_flight{rpc_system=\"apache_thrift\",rpc_service=\"Echo\",rpc_method=\"echo\"} 0"));
        assert!(m.render().contains("rpc_client_request_bytes_total{rpc_system=\"apache_thrift\",rpc_service=\"Echo\",rpc_method=\"echo\"} 1500"));
    }
}
