//! Governance policies of a client: [`RetryPolicy`] (failure retries with backoff, per
//! method, under a [`RetryBudget`] shared by every method) and [`BreakerConfig`] for the circuit breakers kept per instance and per method.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use super::percore::{Here, PerCore};
use crate::CallError;

/// Which failures a method's calls are retried on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RetryOn {
    /// Only failures that prove the call never reached a server: a connect failure, an
    /// instance with its breaker open, a full send queue, or an overloaded server that
    /// refused it. The default: always safe.
    Unsent,
    /// Also failures after which the call may have run: a timeout, a lost connection.
    /// For idempotent methods.
    Failures,
}

/// How failed calls are tried again. Retries go to another instance when one exists.
#[derive(Debug, Clone)]
pub struct RetryPolicy {
    /// Tries after the first. Default 2. A connect that failed does not count while the
    /// call has instances it has not tried (it reached no server); 0 turns that off too.
    pub max_retries: u32,
    /// Wait before the first retry; doubled each retry (with jitter), up to
    /// `max_backoff`. Retries of unsent calls go at once. Default 10 ms.
    pub backoff: Duration,
    /// The longest wait between tries. Default 200 ms.
    pub max_backoff: Duration,
    /// Which failures are retried, unless a method says otherwise.
    pub retry_on: RetryOn,
    /// The longest one try may take, within the call's deadline (default `None`: a try
    /// may take all of it, and then a timed-out try leaves no time to retry).
    pub try_timeout: Option<Duration>,
    /// Per-method overrides (IDL method name).
    pub methods: HashMap<String, RetryOn>,
    /// Backup requests: if no reply came within this delay, send a copy of the call to
    /// another instance and take the first reply (the other is dropped). It costs one
    /// retry from the budget. `None` (default): off. Only for idempotent methods.
    pub backup_after: Option<Duration>,
    /// Backup requests after the client's own latency at this quantile (0.99: a copy
    /// goes out when a call is slower than 99% of recent ones), once it has seen 100
    /// replies; `backup_after` (or 10 ms) until then. `None` (default): a fixed delay only.
    pub backup_quantile: Option<f64>,
    /// Retries may add at most this fraction of the calls made
    /// (over the last 10 s, shared by every method), plus `min_retries_per_sec`: under a
    /// failure storm retries stop instead of multiplying the load. Default 0.1.
    pub budget_ratio: f64,
    /// Retries always allowed per second whatever the ratio. Default 10.
    pub min_retries_per_sec: u32,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        RetryPolicy {
            max_retries: 2,
            backoff: Duration::from_millis(10),
            max_backoff: Duration::from_millis(200),
            retry_on: RetryOn::Unsent,
            try_timeout: None,
            methods: HashMap::new(),
            backup_after: None,
            backup_quantile: None,
            budget_ratio: 0.1,
            min_retries_per_sec: 10,
        }
    }
}

impl RetryPolicy {
    /// No retries at all, not even of unsent calls.
    pub fn none() -> Self {
        RetryPolicy {
            max_retries: 0,
            ..RetryPolicy::default()
        }
    }

    /// Retries `method` on every retryable failure (it is idempotent).
    pub fn idempotent(mut self, method: &str) -> Self {
        self.methods.insert(method.to_owned(), RetryOn::Failures);
        self
    }

    /// What failures of `method` are retried.
    pub fn retry_on(&self, method: &str) -> RetryOn {
        if self.methods.is_empty() {
            return self.retry_on;
        }
        self.methods.get(method).copied().unwrap_or(self.retry_on)
    }

    /// Whether a call of `method` that failed with `e` may be tried again.
    pub(crate) fn allows<E>(&self, method: &str, e: &CallError<E>) -> bool {
        if unsent(e) {
            return true;
        }
        self.retry_on(method) == RetryOn::Failures
            && matches!(e, CallError::Timeout | CallError::ConnectionLost(_))
    }

    /// The wait before retry number `n` (1-based) after failure `e`.
    pub(crate) fn delay<E>(&self, n: u32, e: &CallError<E>) -> Duration {
        if unsent(e) {
            return Duration::ZERO;
        }
        let exp = self
            .backoff
            .saturating_mul(1u32 << (n.saturating_sub(1)).min(16));
        let d = exp.min(self.max_backoff);
        // Full jitter on half of it: spreads retries of many callers.
        let half = d / 2;
        half + half.mul_f64((crate::balance::random() >> 11) as f64 / (1u64 << 53) as f64)
    }
}

/// Whether `e` proves the call never reached a server's handler.
pub(crate) fn unsent<E>(e: &CallError<E>) -> bool {
    match e {
        CallError::Connect(_)
        | CallError::QueueFull { .. }
        | CallError::NoInstance(_)
        | CallError::CircuitOpen(_) => true,
        CallError::Application(a) => {
            crate::status::exception_kind(a) == crate::ErrorKind::Overloaded
        }
        CallError::Status(s) => s.kind() == crate::ErrorKind::Overloaded,
        _ => false,
    }
}

/// Milliseconds from a process-wide epoch to `now` (saturating at 0 before it). A thread
/// keeps its last answer: within one loop turn, where every call sees the same loop clock
/// ([`netpoll::now`]), only the first call computes it.
pub(crate) fn epoch_ms(now: Instant) -> u64 {
    thread_local! {
        static LAST: std::cell::Cell<Option<(Instant, u64)>> = const { std::cell::Cell::new(None) };
    }
    LAST.with(|last| match last.get() {
        Some((at, ms)) if at == now => ms,
        _ => {
            let ms = now.saturating_duration_since(epoch()).as_millis() as u64;
            last.set(Some((now, ms)));
            ms
        }
    })
}

/// The epoch of [`epoch_ms`]: the first time it was asked for (by the first breaker or
/// budget made, before any instant they are given).
fn epoch() -> Instant {
    static EPOCH: std::sync::OnceLock<Instant> = std::sync::OnceLock::new();
    *EPOCH.get_or_init(Instant::now)
}

/// Counts calls and retries over a sliding window of 10 one-second buckets, shared by
/// every method of a client, and says whether one more retry fits. Calls are counted per
/// core ([`PerCore`]: no read-modify-write on shared memory per call); a retry, which is
/// rare, adds the cores' buckets up.
#[derive(Debug)]
pub(crate) struct RetryBudget {
    ratio: f64,
    min_per_sec: u32,
    /// (second, calls, retries) per bucket, per core.
    buckets: PerCore<[Bucket; 10]>,
}

#[derive(Debug, Default)]
struct Bucket {
    second: AtomicU64,
    calls: AtomicU64,
    retries: AtomicU64,
}

impl RetryBudget {
    /// A budget for a client on `cores` cores.
    pub(crate) fn new(ratio: f64, min_per_sec: u32, cores: usize) -> Self {
        epoch();
        RetryBudget {
            ratio,
            min_per_sec,
            buckets: PerCore::new(cores),
        }
    }

    /// The current bucket of the thread whose slot is `here`, emptied if it held an
    /// older second; with the slot, to count in it.
    fn bucket(&self, here: Here) -> (crate::client::percore::Slot<'_, [Bucket; 10]>, usize) {
        let sec = epoch_ms(netpoll::now()) / 1000;
        let slot = self.buckets.at(here);
        let i = (sec % 10) as usize;
        let b = &slot.value[i];
        let seen = b.second.load(Ordering::Relaxed);
        if seen != sec && slot.replace(&b.second, seen, sec) {
            b.calls.store(0, Ordering::Relaxed);
            b.retries.store(0, Ordering::Relaxed);
        }
        (slot, i)
    }

    /// A first try was made, on the thread whose slot is `here`.
    pub(crate) fn call(&self, here: Here) {
        let (slot, i) = self.bucket(here);
        slot.add(&slot.value[i].calls, 1);
    }

    /// Takes one retry from the budget, if it has room (on the thread whose slot is
    /// `here`).
    pub(crate) fn try_retry(&self, here: Here) -> bool {
        let now = epoch_ms(netpoll::now()) / 1000;
        let (mut calls, mut retries) = (0u64, 0u64);
        for b in self.buckets.all().flatten() {
            if now.saturating_sub(b.second.load(Ordering::Relaxed)) < 10 {
                calls = calls.wrapping_add(b.calls.load(Ordering::Relaxed));
                retries = retries.wrapping_add(b.retries.load(Ordering::Relaxed));
            }
        }
        let allowed = calls as f64 * self.ratio + self.min_per_sec as f64 * 10.0;
        if (retries as f64) < allowed {
            let (slot, i) = self.bucket(here);
            slot.add(&slot.value[i].retries, 1);
            true
        } else {
            false
        }
    }
}

/// When a circuit breaker opens and how it closes again.
#[derive(Debug, Clone)]
pub struct BreakerConfig {
    /// Open when at least this fraction of the calls in the window failed. Default 0.5.
    pub error_rate: f64,
    /// ... and the window holds at least this many calls. Default 20.
    pub min_samples: u64,
    /// The window errors are counted over. Default 10 s.
    pub window: Duration,
    /// How long it stays open before it lets a probe through. Default 5 s.
    pub cooldown: Duration,
    /// Probes in a row that must succeed to close it. Default 3.
    pub probes: u32,
}

impl Default for BreakerConfig {
    fn default() -> Self {
        BreakerConfig {
            error_rate: 0.5,
            min_samples: 20,
            window: Duration::from_secs(10),
            cooldown: Duration::from_secs(5),
            probes: 3,
        }
    }
}

impl BreakerConfig {
    /// A breaker that never opens (breakers turned off).
    pub(crate) fn off() -> Self {
        BreakerConfig {
            error_rate: f64::INFINITY,
            ..BreakerConfig::default()
        }
    }
}

/// A circuit breaker: closed (calls pass, failures counted), open (calls fail at once)
/// and half-open (one probe at a time; enough successes close it, a failure reopens it).
///
/// The closed state, where a breaker spends nearly all its time, is counted per core
/// ([`PerCore`]): a call through a healthy breaker takes no lock and does no
/// read-modify-write on shared memory. A failure adds the cores' windows up to decide
/// whether the breaker opens.
#[derive(Debug)]
pub(crate) struct Breaker {
    cfg: Arc<BreakerConfig>,
    /// Not closed (open or half-open): the slow path decides.
    tripped: AtomicBool,
    /// Closed state: each core's window (when it started, [`epoch_ms`]) and counts.
    windows: PerCore<Window>,
    /// When the breaker last closed ([`epoch_ms`]): windows that started before count
    /// nothing (a core resets its own when it next records).
    closed_ms: AtomicU64,
    state: Mutex<BreakerState>,
}

/// One core's count of calls and errors since `since_ms`.
#[derive(Debug, Default)]
struct Window {
    since_ms: AtomicU64,
    calls: AtomicU64,
    errors: AtomicU64,
}

#[derive(Debug)]
enum BreakerState {
    Closed,
    Open { until: Instant },
    HalfOpen { probing: bool, passed: u32 },
}

impl Breaker {
    /// A closed breaker counted over `cores` cores (and other threads).
    pub(crate) fn new(cfg: Arc<BreakerConfig>, cores: usize) -> Self {
        epoch();
        Breaker {
            cfg,
            tripped: AtomicBool::new(false),
            windows: PerCore::new(cores),
            closed_ms: AtomicU64::new(0),
            state: Mutex::new(BreakerState::Closed),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, BreakerState> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Whether a call may go through now; a `true` in half-open state is the probe, and
    /// the caller must [`record`](Breaker::record) its end.
    pub(crate) fn allow(&self, now: Instant) -> bool {
        if !self.tripped.load(Ordering::Acquire) {
            return true;
        }
        let mut s = self.lock();
        match &mut *s {
            BreakerState::Closed => true,
            BreakerState::Open { until } if now < *until => false,
            BreakerState::Open { .. } => {
                *s = BreakerState::HalfOpen {
                    probing: true,
                    passed: 0,
                };
                true
            }
            BreakerState::HalfOpen { probing, .. } => !std::mem::replace(probing, true),
        }
    }

    /// Whether calls would be refused now (without taking a probe).
    pub(crate) fn is_open(&self, now: Instant) -> bool {
        if !self.tripped.load(Ordering::Acquire) {
            return false;
        }
        match &*self.lock() {
            BreakerState::Closed => false,
            BreakerState::Open { until } => now < *until,
            BreakerState::HalfOpen { probing, .. } => *probing,
        }
    }

    /// A call that passed ended, on the thread whose slot is `here`; `failed` if it
    /// failed in a way the breaker counts.
    pub(crate) fn record(&self, now: Instant, failed: bool, here: Here) {
        self.record_scaled(now, failed, 1, here);
    }

    /// As [`record`](Breaker::record), for a breaker over `n` instances (a method's): it
    /// needs `n` times the minimum sample before it opens, so that one failing instance
    /// trips its own breaker first and is taken out, instead of the method's.
    pub(crate) fn record_scaled(&self, now: Instant, failed: bool, n: usize, here: Here) {
        let cfg = &self.cfg;
        if !self.tripped.load(Ordering::Acquire) {
            // Closed: count in this core's current window (a new window, or one older
            // than the last close, starts from zero; in the shared slot a racing update
            // may land in either window, which is harmless).
            let w = self.windows.at(here);
            let ms = epoch_ms(now);
            let window_ms = cfg.window.as_millis() as u64;
            let closed = self.closed_ms.load(Ordering::Relaxed);
            let since = w.value.since_ms.load(Ordering::Relaxed);
            if (ms.saturating_sub(since) > window_ms || since < closed)
                && w.replace(&w.value.since_ms, since, ms.max(closed))
            {
                w.value.calls.store(0, Ordering::Relaxed);
                w.value.errors.store(0, Ordering::Relaxed);
            }
            w.add(&w.value.calls, 1);
            if !failed {
                return;
            }
            w.add(&w.value.errors, 1);
            // A failure: do the windows of every core, together, call for opening?
            let (calls, errors) = self
                .windows
                .all()
                .filter(|w| {
                    let since = w.since_ms.load(Ordering::Relaxed);
                    since >= closed && ms.saturating_sub(since) <= window_ms
                })
                .fold((0u64, 0u64), |(c, e), w| {
                    (
                        c.wrapping_add(w.calls.load(Ordering::Relaxed)),
                        e.wrapping_add(w.errors.load(Ordering::Relaxed)),
                    )
                });
            let min_samples = cfg.min_samples.saturating_mul(n.max(1) as u64);
            if calls >= min_samples && errors as f64 >= cfg.error_rate * calls as f64 {
                let mut s = self.lock();
                if matches!(*s, BreakerState::Closed) {
                    tracing::warn!(calls, errors, "circuit breaker opens");
                    *s = BreakerState::Open {
                        until: now + cfg.cooldown,
                    };
                    self.tripped.store(true, Ordering::Release);
                }
            }
            return;
        }
        let mut s = self.lock();
        if let BreakerState::HalfOpen { probing, passed } = &mut *s {
            *probing = false;
            if failed {
                *s = BreakerState::Open {
                    until: now + cfg.cooldown,
                };
            } else {
                *passed += 1;
                if *passed >= cfg.probes {
                    tracing::info!("circuit breaker closes");
                    *s = BreakerState::Closed;
                    // Every core's window starts again from zero.
                    self.closed_ms.store(epoch_ms(now), Ordering::Relaxed);
                    self.tripped.store(false, Ordering::Release);
                }
            }
        }
    }
}

/// The circuit breaker of each method of a client, made on the method's first call and
/// found on later calls without a lock: an open-addressed table of slots, each set once
/// and never changed, keyed by the method's name.
pub(crate) struct MethodBreakers {
    cfg: Arc<BreakerConfig>,
    /// Cores of the client's runtime (the breakers count per core).
    cores: usize,
    slots: Box<[std::sync::OnceLock<Box<NamedBreaker>>]>,
    /// Taken to fill a slot, so that two first calls of one method make one breaker.
    filling: Mutex<()>,
}

/// A method's name and its breaker.
type NamedBreaker = (&'static str, Breaker);

/// Methods a client keeps breakers for; the calls of methods beyond these go through the
/// instance breakers only (and a warning says so once).
const METHOD_SLOTS: usize = 1024;

/// Slots a lookup probes at most: a method is placed within this many of its home slot
/// or not at all, so that a full table costs a bounded scan, not 1024 string compares.
const METHOD_PROBES: usize = 64;

impl std::fmt::Debug for MethodBreakers {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MethodBreakers")
            .field("config", &self.cfg)
            .finish()
    }
}

impl MethodBreakers {
    pub(crate) fn new(cfg: Arc<BreakerConfig>, cores: usize) -> Self {
        epoch();
        MethodBreakers {
            cfg,
            cores,
            slots: (0..METHOD_SLOTS).map(|_| Default::default()).collect(),
            filling: Mutex::new(()),
        }
    }

    /// The slot of `method`'s breaker, made if it has none yet; `None` if the slots near
    /// its home are all taken (the table is nearly full).
    pub(crate) fn find(&self, method: &'static str) -> Option<u16> {
        // Where this thread last found a method: a caller mostly calls one method, from one
        // `&'static str`. Only a hint: it is taken if that slot of this table holds the
        // method's breaker (a name is in one slot of a table at most), else it is a miss.
        thread_local! {
            static HINT: std::cell::Cell<(usize, u16)> = const { std::cell::Cell::new((0, 0)) };
        }
        let (ptr, at) = HINT.with(std::cell::Cell::get);
        if ptr == method.as_ptr() as usize {
            let hit = self.slots.get(usize::from(at)).and_then(|s| s.get());
            if hit.is_some_and(|b| std::ptr::eq(b.0, method) || b.0 == method) {
                return Some(at);
            }
        }
        let found = self.search(method);
        if let Some(at) = found {
            HINT.with(|h| h.set((method.as_ptr() as usize, at)));
        }
        found
    }

    /// [`find`](Self::find) without the hint.
    fn search(&self, method: &'static str) -> Option<u16> {
        // FNV-1a over the name: the same name from any string gets the same breaker.
        let mut h = crate::server::router::Fnv::default();
        std::hash::Hasher::write(&mut h, method.as_bytes());
        let h = std::hash::Hasher::finish(&h);
        let start = h as usize % METHOD_SLOTS;
        for i in 0..METHOD_PROBES {
            let at = (start + i) % METHOD_SLOTS;
            let slot = &self.slots[at];
            let name = match slot.get() {
                Some(b) => b.0,
                None => {
                    let _filling = self.filling.lock().unwrap_or_else(|p| p.into_inner());
                    slot.get_or_init(|| {
                        Box::new((method, Breaker::new(self.cfg.clone(), self.cores)))
                    })
                    .0
                }
            };
            if std::ptr::eq(name, method) || name == method {
                return Some(at as u16);
            }
        }
        static WARNED: AtomicBool = AtomicBool::new(false);
        if !WARNED.swap(true, Ordering::Relaxed) {
            tracing::warn!(
                methods = METHOD_SLOTS,
                method,
                "a client calls more methods than it keeps breakers for: this one has none"
            );
        }
        None
    }

    /// The breaker in slot `at` (from [`find`](MethodBreakers::find)).
    pub(crate) fn get(&self, at: u16) -> &Breaker {
        &self.slots[at as usize]
            .get()
            .expect("a slot find returned is set")
            .1
    }
}

/// Whether failure `e` counts against a breaker: the instance or method failed, not the
/// caller's request (a declared exception or an unknown method is an answer).
pub(crate) fn counts_as_failure<E>(e: &CallError<E>) -> bool {
    use crate::ErrorKind as K;
    matches!(
        e.kind(),
        K::Unavailable | K::DeadlineExceeded | K::Internal | K::Overloaded
    ) && !matches!(e, CallError::CircuitOpen(_) | CallError::NoInstance(_))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_breaker_opens_on_errors_probes_and_closes() {
        let cfg = Arc::new(BreakerConfig {
            min_samples: 10,
            cooldown: Duration::from_millis(100),
            probes: 2,
            ..BreakerConfig::default()
        });
        let b = Breaker::new(cfg, 1);
        let t0 = Instant::now();
        for i in 0..9 {
            assert!(b.allow(t0));
            b.record(t0, i % 2 == 0, Here::SHARED);
        }
        assert!(b.allow(t0), "too few samples to open");
        b.record(t0, true, Here::SHARED); // 6 of 10 failed
        assert!(!b.allow(t0), "open");
        assert!(b.is_open(t0));
        let later = t0 + Duration::from_millis(150);
        assert!(b.allow(later), "a probe after the cooldown");
        assert!(!b.allow(later), "one probe at a time");
        b.record(later, false, Here::SHARED);
        assert!(b.allow(later));
        b.record(later, false, Here::SHARED);
        assert!(!b.is_open(later), "closed after two good probes");
        // A failed probe reopens it.
        for _ in 0..10 {
            b.record(later, true, Here::SHARED);
        }
        let again = later + Duration::from_millis(150);
        assert!(b.allow(again));
        b.record(again, true, Here::SHARED);
        assert!(!b.allow(again));
    }

    #[test]
    fn a_breaker_adds_up_the_windows_of_every_core() {
        let cfg = Arc::new(BreakerConfig {
            min_samples: 10,
            cooldown: Duration::from_millis(100),
            probes: 1,
            ..BreakerConfig::default()
        });
        let b = Breaker::new(cfg, 2);
        let t0 = Instant::now();
        // Core 0 sees only successes, core 1 only failures, another thread one of each.
        for _ in 0..4 {
            b.record(t0, false, Here::core(0));
        }
        b.record(t0, false, Here::SHARED);
        b.record(t0, true, Here::SHARED);
        for _ in 0..3 {
            b.record(t0, true, Here::core(1));
        }
        assert!(!b.is_open(t0), "9 calls: too few to open");
        b.record(t0, true, Here::core(1));
        assert!(b.is_open(t0), "10 calls, 5 failed, counted on three slots");
        // Closed again by a good probe: every slot's count starts over, so the failures
        // before it count for nothing.
        let later = t0 + Duration::from_millis(150);
        assert!(b.allow(later));
        b.record(later, false, Here::core(0));
        assert!(!b.is_open(later));
        for _ in 0..9 {
            b.record(later, true, Here::core(1));
        }
        assert!(!b.is_open(later), "9 calls since it closed");
        b.record(later, true, Here::core(0));
        assert!(b.is_open(later), "10 failed since it closed");
    }

    /// Calls spread thinly over many cores (one per core per second) at an error rate
    /// well under the threshold: every core's window sees its successes as they come, so
    /// the breaker stays closed.
    #[test]
    fn thin_traffic_over_many_cores_does_not_trip_a_breaker() {
        let b = Breaker::new(Arc::new(BreakerConfig::default()), 8);
        let t0 = Instant::now();
        for sec in 0..600u64 {
            let now = t0 + Duration::from_secs(sec);
            for core in 0..8u64 {
                let failed = (sec * 8 + core) % 7 == 0; // about 14%
                b.record(now, failed, Here::core(core as usize));
                assert!(!b.is_open(now), "open at {sec} s");
            }
        }
    }

    #[test]
    fn latency_quantiles_are_within_an_eighth() {
        let l = Latencies::new();
        for us in 1..=10_000u64 {
            l.record(Duration::from_micros(us));
        }
        let p99 = l.quantile(0.99, 100).unwrap().as_micros() as f64;
        assert!((9900.0..=9900.0 * 1.13).contains(&p99), "{p99}");
        let p50 = l.quantile(0.5, 100).unwrap().as_micros() as f64;
        assert!((5000.0..=5000.0 * 1.13).contains(&p50), "{p50}");
        assert!(Latencies::new().quantile(0.5, 1).is_none());
    }

    #[test]
    fn the_budget_caps_retries_at_its_ratio() {
        let budget = RetryBudget::new(0.1, 0, 1);
        for _ in 0..1000 {
            budget.call(Here::SHARED);
        }
        let granted = (0..1000).filter(|_| budget.try_retry(Here::SHARED)).count();
        assert_eq!(granted, 100);
    }

    #[test]
    fn only_unsent_failures_retry_by_default() {
        let p = RetryPolicy::default().idempotent("get");
        let refused = CallError::<std::convert::Infallible>::Connect(std::io::Error::from(
            std::io::ErrorKind::ConnectionRefused,
        ));
        assert!(p.allows("put", &refused));
        assert!(!p.allows("put", &CallError::<std::convert::Infallible>::Timeout));
        assert!(p.allows("get", &CallError::<std::convert::Infallible>::Timeout));
        assert_eq!(p.delay(1, &refused), Duration::ZERO);
        let d = p.delay(3, &CallError::<std::convert::Infallible>::Timeout);
        assert!(
            d >= Duration::from_millis(20) && d <= Duration::from_millis(40),
            "{d:?}"
        );
    }
}

/// The latencies of a client's calls, in log-linear buckets (8 per power of two of
/// microseconds, to about 1.1 hours), for latency quantiles without locks.
#[derive(Debug)]
pub(crate) struct Latencies {
    buckets: Vec<AtomicU64>,
    count: AtomicU64,
}

const SUB: u32 = 8;

impl Latencies {
    pub(crate) fn new() -> Self {
        Latencies {
            buckets: (0..32 * SUB).map(|_| AtomicU64::new(0)).collect(),
            count: AtomicU64::new(0),
        }
    }

    fn bucket(us: u64) -> usize {
        if us < SUB as u64 {
            return us as usize;
        }
        let exp = 63 - us.leading_zeros(); // >= 3
        let frac = (us >> (exp - 3)) & (SUB as u64 - 1);
        (((exp - 2) * SUB) as u64 + frac).min(32 * SUB as u64 - 1) as usize
    }

    /// The smallest latency of bucket `i` (microseconds).
    fn floor(i: usize) -> u64 {
        let i = i as u64;
        if i < SUB as u64 {
            return i;
        }
        let exp = i / SUB as u64 + 2;
        let frac = i % SUB as u64;
        (1 << exp) | (frac << (exp - 3))
    }

    pub(crate) fn record(&self, d: Duration) {
        let us = d.as_micros().min(u64::MAX as u128) as u64;
        self.buckets[Self::bucket(us)].fetch_add(1, Ordering::Relaxed);
        self.count.fetch_add(1, Ordering::Relaxed);
    }

    /// The latency at quantile `q` (an upper bound within 1/8), once `min` were seen.
    pub(crate) fn quantile(&self, q: f64, min: u64) -> Option<Duration> {
        let n = self.count.load(Ordering::Relaxed);
        if n < min {
            return None;
        }
        let target = (q.clamp(0.0, 1.0) * n as f64).ceil() as u64;
        let mut seen = 0;
        for (i, b) in self.buckets.iter().enumerate() {
            seen += b.load(Ordering::Relaxed);
            if seen >= target {
                return Some(Duration::from_micros(Self::floor(i + 1)));
            }
        }
        None
    }
}
