//! The load generator: echo calls over netpoll connections, closed or open loop, every
//! reply checked, latency recorded in HdrHistograms (one per client core, merged at the end).

use std::cell::RefCell;
use std::collections::{BTreeMap, VecDeque};
use std::fmt;
use std::net::SocketAddr;
use std::rc::Rc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;
use netpoll::{CloseReason, Conn, Core, Handler, Input, Runtime};

use crate::protocol::{Decoded, Protocol};

/// What to run.
#[derive(Debug, Clone)]
pub struct LoadConfig {
    /// The server.
    pub addr: SocketAddr,
    /// Connections in all.
    pub connections: usize,
    /// Calls in flight per connection (closed loop), or the most a connection lets queue
    /// up (open loop).
    pub inflight: usize,
    /// Payload bytes per call.
    pub payload: usize,
    /// Time before measuring.
    pub warmup: Duration,
    /// Time measured.
    pub duration: Duration,
    /// Open loop: calls per second in all, sent on schedule whatever the replies do.
    pub rate: Option<f64>,
    /// Client cores (threads).
    pub threads: usize,
    /// CPUs to pin the client cores to.
    pub cpus: Option<Vec<usize>>,
    /// Spin before sleeping (see `netpoll::Builder::busy_poll`).
    pub busy_poll: Duration,
    /// TLS to the server: the connector and the name its certificate must be valid for.
    pub tls: Option<(netpoll::tls::TlsConnector, String)>,
}

/// Kinds of failure, counted separately.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum ErrorKind {
    /// A reply could not be parsed.
    Decode,
    /// A reply answered no outstanding call.
    UnexpectedSeq,
    /// A reply's payload differed from the request's.
    PayloadMismatch,
    /// A connection could not be established.
    Connect,
    /// A connection closed with calls outstanding (each lost call counts once).
    Lost,
}

impl fmt::Display for ErrorKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            ErrorKind::Decode => "decode",
            ErrorKind::UnexpectedSeq => "unexpected-seq",
            ErrorKind::PayloadMismatch => "payload-mismatch",
            ErrorKind::Connect => "connect",
            ErrorKind::Lost => "lost",
        })
    }
}

/// The outcome of a run.
#[derive(Debug)]
pub struct Report {
    /// Calls answered correctly within the measured window.
    pub calls: u64,
    /// Reply bytes received within the window.
    pub bytes: u64,
    /// The measured window.
    pub elapsed: Duration,
    /// Latency in nanoseconds (from the intended send time in open loop).
    pub latency: Histogram<u64>,
    /// Failures by kind, over the whole run.
    pub errors: BTreeMap<ErrorKind, u64>,
}

impl Report {
    /// Calls per second.
    pub fn qps(&self) -> f64 {
        self.calls as f64 / self.elapsed.as_secs_f64().max(1e-9)
    }

    /// All failures.
    pub fn error_count(&self) -> u64 {
        self.errors.values().sum()
    }

    /// A latency quantile in microseconds.
    pub fn quantile_us(&self, q: f64) -> f64 {
        self.latency.value_at_quantile(q) as f64 / 1000.0
    }
}

/// Counters the progress line reads while the run goes on.
#[derive(Debug, Default)]
pub struct Progress {
    /// Replies received (all, including warm-up).
    pub replies: AtomicU64,
    /// Failures so far.
    pub errors: AtomicU64,
}

struct Shared {
    recording: AtomicBool,
    stopping: AtomicBool,
    progress: Arc<Progress>,
}

struct CoreStats {
    latency: Histogram<u64>,
    calls: u64,
    bytes: u64,
    errors: BTreeMap<ErrorKind, u64>,
}

impl CoreStats {
    fn new() -> Self {
        CoreStats {
            latency: new_histogram(),
            calls: 0,
            bytes: 0,
            errors: BTreeMap::new(),
        }
    }
}

pub(crate) fn new_histogram() -> Histogram<u64> {
    // 1 ns to 100 s at 3 significant digits.
    Histogram::new_with_bounds(1, 100_000_000_000, 3)
        .expect("1 ns..100 s at 3 significant digits is a valid configuration")
}

struct LoadConn {
    proto: Arc<dyn Protocol>,
    /// The connection's own protocol state, for stateful protocols (gRPC).
    session: Option<Box<dyn crate::protocol::Session>>,
    payload: Arc<[u8]>,
    inflight: usize,
    next_seq: u32,
    /// Calls sent and not answered: sequence id and the time latency is measured from.
    outstanding: VecDeque<(u32, Instant)>,
    shared: Arc<Shared>,
    stats: Rc<RefCell<CoreStats>>,
    /// Open loop: the interval between calls on this connection and the next intended time.
    schedule: Option<(Duration, Instant)>,
    /// Open loop: the pending wake-up, at most one per connection.
    timer: Option<(netpoll::TimerId, Instant)>,
    /// Open loop: wake-ups are aligned to a grid from this instant, so that the
    /// connections of a core wake in the same loop turn and share one flush.
    epoch: Instant,
}

/// Granularity of open-loop wake-ups. Latency still counts from each call's exact
/// intended time; the grid only batches the sending.
const PACING_GRID: Duration = Duration::from_micros(10);

fn align_up(t: Instant, epoch: Instant) -> Instant {
    let grid = PACING_GRID.as_nanos();
    let since = t.saturating_duration_since(epoch).as_nanos();
    let ticks = since.div_ceil(grid);
    epoch + Duration::from_nanos((ticks * grid).min(u64::MAX as u128) as u64)
}

impl LoadConn {
    fn error(&self, kind: ErrorKind, n: u64) {
        *self.stats.borrow_mut().errors.entry(kind).or_default() += n;
        self.shared.progress.errors.fetch_add(n, Ordering::Relaxed);
    }

    fn send(&mut self, conn: &mut Conn<'_>, at: Instant) {
        let seq = self.next_seq;
        self.next_seq = self.next_seq.wrapping_add(1);
        match self.session.as_mut() {
            Some(s) => s.encode(seq, conn.output()),
            None => self.proto.encode(seq, &self.payload, conn.output()),
        }
        self.outstanding.push_back((seq, at));
    }

    /// A reply to call `seq` (`None`: the oldest) arrived, `ok` if it carried the payload
    /// back: counts it. Returns whether it answered a call sent.
    fn answered(
        &mut self,
        seq: Option<u32>,
        ok: bool,
        len: usize,
        now: Instant,
        recording: bool,
    ) -> bool {
        let pos = match seq {
            None => (!self.outstanding.is_empty()).then_some(0),
            Some(s) => self.outstanding.iter().position(|&(o, _)| o == s),
        };
        let Some(pos) = pos else {
            self.error(ErrorKind::UnexpectedSeq, 1);
            return false;
        };
        let (_, sent) = self.outstanding.remove(pos).unwrap_or((0, now));
        if !ok {
            self.error(ErrorKind::PayloadMismatch, 1);
        } else if recording {
            let mut stats = self.stats.borrow_mut();
            let ns = now
                .saturating_duration_since(sent)
                .as_nanos()
                .min(u64::MAX as u128) as u64;
            let _ = stats.latency.record(ns.max(1));
            stats.calls += 1;
            stats.bytes += len as u64;
        }
        true
    }

    /// Open loop: sends every call whose intended time has come, then waits for the next.
    fn send_due(&mut self, conn: &mut Conn<'_>) {
        let Some((interval, mut next)) = self.schedule else {
            return;
        };
        if self.shared.stopping.load(Ordering::Relaxed) {
            return;
        }
        let now = Instant::now();
        while next <= now && self.outstanding.len() < self.inflight {
            self.send(conn, next);
            next += interval;
        }
        self.schedule = Some((interval, next));
        // When the queue is full the next call is overdue: it goes out as soon as a reply
        // frees a place (see `on_data`), and its latency still counts from `next`.
        let wake = align_up(next, self.epoch);
        if next > now && self.timer.is_none_or(|(_, at)| at != wake) {
            if let Some((old, _)) = self.timer.take() {
                conn.cancel_timer(old);
            }
            self.timer = Some((conn.set_timer(wake, 0), wake));
        }
    }
}

impl Handler for LoadConn {
    fn on_open(&mut self, conn: &mut Conn<'_>) {
        if let Some(s) = self.session.as_mut() {
            s.open(conn.output());
        }
        if self.schedule.is_some() {
            self.send_due(conn);
        } else {
            let now = Instant::now();
            for _ in 0..self.inflight {
                self.send(conn, now);
            }
        }
    }

    fn on_data(&mut self, conn: &mut Conn<'_>, input: &mut Input<'_>) {
        let now = Instant::now();
        let recording = self.shared.recording.load(Ordering::Relaxed);
        let stopping = self.shared.stopping.load(Ordering::Relaxed);
        let mut replies = 0;
        loop {
            let decoded = match self.session.as_mut() {
                Some(s) => s.decode(input.chunk(), conn.output()),
                None => self.proto.decode(input.chunk()),
            };
            match decoded {
                Ok(Decoded::NeedMore(n)) => {
                    input.need(n);
                    break;
                }
                Ok(Decoded::Skip(len)) => input.advance(len),
                Ok(Decoded::Done { len, seq, ok }) => {
                    input.advance(len);
                    let bytes = self.payload.len();
                    if self.answered(Some(seq), ok, bytes, now, recording) {
                        replies += 1;
                        if self.schedule.is_none() && !stopping {
                            self.send(conn, now);
                        }
                    }
                }
                Ok(Decoded::Reply { len, seq, payload }) => {
                    let ok = input.chunk().get(payload) == Some(&self.payload[..]);
                    input.advance(len);
                    if self.answered(seq, ok, len, now, recording) {
                        replies += 1;
                        if self.schedule.is_none() && !stopping {
                            self.send(conn, now);
                        }
                    }
                }
                Err(e) => {
                    if self.outstanding.len() < 2
                        || self.shared.progress.errors.load(Ordering::Relaxed) < 10
                    {
                        eprintln!("rpc-bench: bad reply: {e}");
                    }
                    self.error(ErrorKind::Decode, 1);
                    conn.abort();
                    break;
                }
            }
        }
        self.shared
            .progress
            .replies
            .fetch_add(replies, Ordering::Relaxed);
        if self.schedule.is_some() {
            self.send_due(conn);
        }
    }

    fn on_timer(&mut self, conn: &mut Conn<'_>, _token: u64) {
        self.timer = None;
        self.send_due(conn);
    }

    fn on_close(&mut self, _core: &mut Core, reason: CloseReason) {
        match reason {
            CloseReason::ConnectFailed(e) => {
                eprintln!("rpc-bench: connect failed: {e}");
                self.error(ErrorKind::Connect, 1);
            }
            CloseReason::ConnectTimedOut => {
                eprintln!("rpc-bench: connect timed out");
                self.error(ErrorKind::Connect, 1);
            }
            CloseReason::Tls(e) => {
                eprintln!("rpc-bench: TLS: {e}");
                self.error(ErrorKind::Connect, self.outstanding.len().max(1) as u64);
            }
            _ if self.shared.stopping.load(Ordering::Relaxed) => {}
            reason => {
                eprintln!("rpc-bench: connection closed: {reason}");
                self.error(ErrorKind::Lost, self.outstanding.len().max(1) as u64);
            }
        }
    }
}

/// Runs one load and returns its report. `progress` is updated as replies arrive, for a
/// progress line; `on_tick` is called about once a second with the time since the start.
pub fn run(
    cfg: &LoadConfig,
    proto: Arc<dyn Protocol>,
    progress: Arc<Progress>,
    mut on_tick: impl FnMut(Duration),
) -> Result<Report, Box<dyn std::error::Error>> {
    if cfg.connections == 0 || cfg.inflight == 0 || cfg.threads == 0 {
        return Err("connections, inflight and threads must be positive".into());
    }
    let mut builder = Runtime::builder()
        .cores(cfg.threads)
        .thread_name("rpc-bench")
        .busy_poll(cfg.busy_poll);
    if let Some(cpus) = &cfg.cpus {
        builder = builder.cpus(cpus.clone());
    }
    let rt = builder.build()?;
    let shared = Arc::new(Shared {
        recording: AtomicBool::new(false),
        stopping: AtomicBool::new(false),
        progress,
    });
    let payload: Arc<[u8]> = (0..cfg.payload)
        .map(|i| (i % 251) as u8)
        .collect::<Vec<u8>>()
        .into();
    let per_conn_interval = cfg
        .rate
        .filter(|r| *r > 0.0)
        .map(|r| Duration::from_secs_f64(cfg.connections as f64 / r));
    let start = Instant::now();
    for core in 0..cfg.threads {
        let conns = (core..cfg.connections).step_by(cfg.threads).count();
        let (shared, proto, payload) = (shared.clone(), proto.clone(), payload.clone());
        let (addr, inflight, tls) = (cfg.addr, cfg.inflight, cfg.tls.clone());
        rt.handle().spawn(core, move |c: &mut Core| {
            let stats = Rc::new(RefCell::new(CoreStats::new()));
            STATS.with(|s| *s.borrow_mut() = Some(stats.clone()));
            for i in 0..conns {
                // Spread open-loop connections' first calls over one interval.
                let schedule = per_conn_interval.map(|iv| {
                    (
                        iv,
                        Instant::now() + iv.mul_f64(i as f64 / conns.max(1) as f64),
                    )
                });
                let handler = LoadConn {
                    session: proto.session(&payload),
                    proto: proto.clone(),
                    payload: payload.clone(),
                    inflight,
                    next_seq: 0,
                    outstanding: VecDeque::with_capacity(inflight),
                    shared: shared.clone(),
                    stats: stats.clone(),
                    schedule,
                    timer: None,
                    epoch: start,
                };
                let timeout = Some(Duration::from_secs(5));
                let connected = match &tls {
                    Some((connector, name)) => {
                        c.connect_tls(addr, timeout, Box::new(handler), connector, name)
                    }
                    None => c.connect(addr, timeout, Box::new(handler)),
                };
                if let Err(e) = connected {
                    eprintln!("rpc-bench: connect: {e}");
                    *stats
                        .borrow_mut()
                        .errors
                        .entry(ErrorKind::Connect)
                        .or_default() += 1;
                }
            }
        })?;
    }
    sleep_ticking(start, cfg.warmup, &mut on_tick);
    shared.recording.store(true, Ordering::SeqCst);
    let t0 = Instant::now();
    sleep_ticking(start, cfg.duration, &mut on_tick);
    shared.recording.store(false, Ordering::SeqCst);
    let elapsed = t0.elapsed();
    shared.stopping.store(true, Ordering::SeqCst);
    let mut report = Report {
        calls: 0,
        bytes: 0,
        elapsed,
        latency: new_histogram(),
        errors: BTreeMap::new(),
    };
    for core in 0..cfg.threads {
        let (tx, rx) = std::sync::mpsc::channel();
        rt.handle().spawn(core, move |_| {
            let snapshot = STATS.with(|s| {
                s.borrow().as_ref().map(|st| {
                    let st = st.borrow();
                    (st.latency.clone(), st.calls, st.bytes, st.errors.clone())
                })
            });
            let _ = tx.send(snapshot);
        })?;
        if let Ok(Some((latency, calls, bytes, errors))) = rx.recv_timeout(Duration::from_secs(5)) {
            let _ = report.latency.add(&latency);
            report.calls += calls;
            report.bytes += bytes;
            for (k, v) in errors {
                *report.errors.entry(k).or_default() += v;
            }
        }
    }
    rt.shutdown(Duration::from_millis(100));
    Ok(report)
}

thread_local! {
    /// The statistics of the client core running on this thread.
    static STATS: RefCell<Option<Rc<RefCell<CoreStats>>>> = const { RefCell::new(None) };
}

fn sleep_ticking(start: Instant, total: Duration, on_tick: &mut impl FnMut(Duration)) {
    let end = Instant::now() + total;
    loop {
        let now = Instant::now();
        if now >= end {
            return;
        }
        std::thread::sleep((end - now).min(Duration::from_secs(1)));
        on_tick(start.elapsed());
    }
}
