//! [`Limiter`]: server-side limits on concurrent calls and on calls per second, for the
//! whole server and per method. A call over a limit is refused at once, before its
//! handler runs, with [`Status::overloaded`] (on the wire: `INTERNAL_ERROR` with a
//! message starting `request over limit: `, Kitex's own form), which clients treat as
//! safe to retry on another instance.
//!
//! Register it as a middleware: `ServerBuilder::middleware(Limiter::new().qps(10_000))`.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use crate::{CallInfo, Metadata, Middleware, Outcome, Status};

/// Limits of one scope (the server, or one method).
#[derive(Debug, Default)]
struct Scope {
    max_concurrent: Option<usize>,
    concurrent: AtomicUsize,
    bucket: Option<Mutex<Bucket>>,
}

/// A token bucket refilled continuously at `rate` per second, holding at most `rate / 10`
/// (a tenth of a second's worth, at least 1): bursts stay small, so the total over any
/// second stays within about 10% of the rate.
#[derive(Debug)]
struct Bucket {
    rate: f64,
    capacity: f64,
    tokens: f64,
    last: Instant,
}

impl Bucket {
    fn new(rate: u32) -> Bucket {
        let capacity = (rate as f64 / 10.0).max(1.0);
        Bucket {
            rate: rate as f64,
            capacity,
            tokens: capacity,
            last: Instant::now(),
        }
    }

    fn take(&mut self, now: Instant) -> bool {
        let dt = now.saturating_duration_since(self.last).as_secs_f64();
        self.last = now;
        self.tokens = (self.tokens + dt * self.rate).min(self.capacity);
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            true
        } else {
            false
        }
    }
}

impl Scope {
    fn new(max_concurrent: Option<usize>, qps: Option<u32>) -> Scope {
        Scope {
            max_concurrent,
            concurrent: AtomicUsize::new(0),
            bucket: qps.map(|q| Mutex::new(Bucket::new(q))),
        }
    }

    /// Admits a call, or says which limit it is over.
    fn admit(&self, now: Instant) -> Result<(), &'static str> {
        if let Some(max) = self.max_concurrent {
            if self.concurrent.fetch_add(1, Ordering::AcqRel) >= max {
                self.concurrent.fetch_sub(1, Ordering::AcqRel);
                return Err(CONCURRENCY);
            }
        }
        if let Some(b) = &self.bucket {
            if !b.lock().unwrap_or_else(|p| p.into_inner()).take(now) {
                self.release();
                return Err("request too frequent");
            }
        }
        Ok(())
    }

    fn release(&self) {
        if self.max_concurrent.is_some() {
            self.concurrent.fetch_sub(1, Ordering::AcqRel);
        }
    }
}

/// Server-side limits on concurrent calls and calls per second, for the whole server and
/// per method. A call over a limit is refused at once, before its handler runs, with
/// [`Status::overloaded`] (on the wire: `INTERNAL_ERROR` with a message starting
/// `request over limit: `), which clients treat as safe to retry on another instance.
/// Register it as a middleware: `ServerBuilder::middleware(Limiter::new().qps(10_000))`.
#[derive(Debug, Clone, Default)]
pub struct Limiter {
    /// Calls refused, by limit: concurrency, calls per second.
    rejected: Arc<[AtomicU64; 2]>,
    server: Arc<Scope>,
    methods: Arc<HashMap<String, Scope>>,
    pending_methods: HashMap<String, (Option<usize>, Option<u32>)>,
    pending_server: (Option<usize>, Option<u32>),
}

impl Limiter {
    /// No limits yet.
    pub fn new() -> Limiter {
        Limiter::default()
    }

    /// At most `n` calls of the server running at once (replies not yet written).
    pub fn max_concurrent(mut self, n: usize) -> Self {
        self.pending_server.0 = Some(n);
        self.rebuild()
    }

    /// At most `n` calls per second admitted by the server.
    pub fn qps(mut self, n: u32) -> Self {
        self.pending_server.1 = Some(n.max(1));
        self.rebuild()
    }

    /// Limits of one method (its IDL name), on top of the server's.
    pub fn method(mut self, name: &str, max_concurrent: Option<usize>, qps: Option<u32>) -> Self {
        self.pending_methods
            .insert(name.to_owned(), (max_concurrent, qps.map(|q| q.max(1))));
        self.rebuild()
    }

    fn rebuild(mut self) -> Self {
        let (c, q) = self.pending_server;
        self.server = Arc::new(Scope::new(c, q));
        self.methods = Arc::new(
            self.pending_methods
                .iter()
                .map(|(k, &(c, q))| (k.clone(), Scope::new(c, q)))
                .collect(),
        );
        self
    }
}

/// What a call admitted by the [`Limiter`] holds until it ends.
#[derive(Debug)]
pub struct Admitted {
    method: Option<String>,
}

impl Middleware for Limiter {
    type State = Admitted;

    fn start(&self, call: &CallInfo<'_>, _meta: &mut Metadata) -> Result<Admitted, Status> {
        let now = netpoll::now();
        let method = self.methods.get(call.method);
        if let Some(m) = method {
            if let Err(why) = m.admit(now) {
                self.count(why);
                return Err(over(call, why));
            }
        }
        if let Err(why) = self.server.admit(now) {
            if let Some(m) = method {
                m.release();
            }
            self.count(why);
            return Err(over(call, why));
        }
        Ok(Admitted {
            method: method.map(|_| call.method.to_owned()),
        })
    }

    fn end(&self, admitted: Admitted, _call: &CallInfo<'_>, _outcome: &Outcome) {
        self.server.release();
        if let Some(m) = admitted.method.and_then(|m| self.methods.get(&m)) {
            m.release();
        }
    }
}

impl Limiter {
    /// A source for `Metrics::add_source`: the calls refused so far, by limit
    /// (`rpc_server_calls_rejected_total{reason="concurrency"|"qps"}`).
    pub fn metrics_source(&self) -> impl Fn(&mut String) + Send + Sync + 'static {
        let rejected = self.rejected.clone();
        move |out: &mut String| {
            out.push_str(
                "# HELP rpc_server_calls_rejected_total Calls refused by the server's limits.\n\
                 # TYPE rpc_server_calls_rejected_total counter\n",
            );
            for (i, reason) in ["concurrency", "qps"].into_iter().enumerate() {
                out.push_str(&format!(
                    "rpc_server_calls_rejected_total{{reason=\"{reason}\"}} {}\n",
                    rejected[i].load(Ordering::Relaxed)
                ));
            }
        }
    }

    fn count(&self, why: &str) {
        let i = usize::from(why != CONCURRENCY);
        self.rejected[i].fetch_add(1, Ordering::Relaxed);
    }
}

/// Why a call is refused for too many concurrent calls.
const CONCURRENCY: &str = "too many concurrent calls";

fn over(call: &CallInfo<'_>, why: &str) -> Status {
    tracing::debug!(method = call.method, why, "call refused: over a limit");
    Status::overloaded(why)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn a_bucket_admits_its_rate_with_a_small_burst() {
        let mut b = Bucket::new(1000);
        let t0 = Instant::now();
        let burst = (0..1000).filter(|_| b.take(t0)).count();
        assert_eq!(burst, 100, "a tenth of a second's worth at once");
        let mut admitted = 0;
        for ms in 1..=1000 {
            let t = t0 + Duration::from_millis(ms);
            admitted += (0..10).filter(|_| b.take(t)).count();
        }
        assert!((990..=1010).contains(&admitted), "{admitted} in one second");
    }

    #[test]
    fn concurrency_is_released_at_the_end() {
        let s = Scope::new(Some(2), None);
        let now = Instant::now();
        assert!(s.admit(now).is_ok());
        assert!(s.admit(now).is_ok());
        assert!(s.admit(now).is_err());
        s.release();
        assert!(s.admit(now).is_ok());
    }
}
