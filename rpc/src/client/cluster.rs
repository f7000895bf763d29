//! [`Cluster`]: the instances of one service as a client sees them. It keeps the list a
//! resolver gives (watched, or resolved again from time to time), a [`Channel`] and live
//! state per instance (calls in flight, latency average, circuit breaker, connect
//! failures), and the balancer's picker over the current list.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock, Weak};
use std::time::{Duration, Instant};

use netpoll::RuntimeHandle;

use super::percore::{Here, PerCore};
use super::policy::{Breaker, BreakerConfig};
use super::{Channel, ChannelConfig, ReplyFraming};
use crate::discovery::{
    Addr, Instance, InstanceState, Load, LoadBalancer, Pick, Picker, Resolver, States, WatchGuard,
};
use crate::CallInfo;

/// How long an instance whose connect failed is passed over.
const DOWN_FOR: Duration = Duration::from_secs(1);

/// Ids of clusters, for the snapshot caches.
static NEXT_CLUSTER: AtomicU64 = AtomicU64::new(1);

/// Clusters whose current list a thread keeps a copy of: a thread calling more services
/// than this takes the lock for some of them.
const SNAPSHOT_CACHE: usize = 8;

thread_local! {
    /// This thread's references to clusters' instance lists: (cluster id, version, list).
    /// Weak: a list the cluster replaced or dropped is not kept alive here (its channels
    /// hold runtime handles and descriptors); taking one is one reference count, as
    /// cloning a strong one would be.
    static SNAPSHOTS: std::cell::RefCell<Vec<(u64, u64, std::sync::Weak<Snapshot>)>> =
        const { std::cell::RefCell::new(Vec::new()) };
}

/// One instance and this client's state of it.
pub(crate) struct Endpoint {
    pub(crate) addr: Addr,
    pub(crate) channel: Channel,
    /// Calls in flight, latency and answers, counted per core of the client's runtime.
    live: PerCore<Live>,
    pub(crate) breaker: Breaker,
    /// Until when (ms since the cluster started) the instance is passed over after a
    /// failed connect.
    down_until_ms: AtomicU64,
}

/// What one core (or the shared slot) counted of an instance.
#[derive(Debug, Default)]
struct Live {
    /// Calls sent and not ended (wrapping: a core may end calls the shared slot counted).
    in_flight: AtomicU64,
    /// Latency moving average, in nanoseconds.
    ewma_ns: AtomicU64,
    /// Calls that ended with a reply from it.
    answered: AtomicU64,
}

impl Endpoint {
    /// A call goes to it, counted in slot `counted`: the sending thread's own core's slot
    /// if the call stays on that core until it ends, else the shared one (see
    /// [`Channel::route`]).
    pub(crate) fn started(&self, counted: Here) {
        let s = self.live.at(counted);
        s.add(&s.value.in_flight, 1);
    }

    /// A call counted in `counted` ended after `latency`, on the thread whose slot is
    /// `here`; `replied` if the instance answered.
    pub(crate) fn ended(&self, counted: Here, here: Here, latency: Duration, replied: bool) {
        // A call counted in a core's slot is sent on that core's own connection and ends
        // there, seen from that core. It can end seen from no core: a core that stops
        // abnormally fails its calls while dropping its connections, after it stopped
        // calling itself a core. This thread may then not write that slot: the shared
        // slot takes the decrement, so that the sum over slots stays right (one core's
        // view is one call high, the others' one low).
        let from = if counted == here {
            counted
        } else {
            Here::SHARED
        };
        if from != counted {
            tracing::debug!(instance = %self.addr, "a call ended away from the core that counted it");
        }
        let c = self.live.at(from);
        c.sub(&c.value.in_flight, 1);
        let s = self.live.at(here);
        if replied {
            s.add(&s.value.answered, 1);
        }
        // EWMA with weight 1/8 per sample (in the shared slot, racy updates only lose a
        // sample).
        let sample = latency.as_nanos().min(u64::MAX as u128) as u64;
        let old = s.value.ewma_ns.load(Ordering::Relaxed);
        let new = if old == 0 {
            sample
        } else {
            old - old / 8 + sample / 8
        };
        s.value.ewma_ns.store(new.max(1), Ordering::Relaxed);
    }

    /// Calls it answered, over every core.
    fn answered(&self) -> u64 {
        self.live
            .all()
            .map(|l| l.answered.load(Ordering::Relaxed))
            .fold(0, u64::wrapping_add)
    }

    /// Its load as the thread with slot `here` sees it: the calls in flight that thread's
    /// core sent (a core's picks balance its own calls, as a client of its own would)
    /// plus those other threads sent; and the latency that core measured, or any core's
    /// before it measured one.
    fn load(&self, here: Here) -> Load {
        let count = |l: &Live| l.in_flight.load(Ordering::Relaxed);
        let in_flight = if here == Here::SHARED {
            self.live.all().map(count).fold(0, u64::wrapping_add)
        } else {
            count(self.live.at(here).value).wrapping_add(count(self.live.at(Here::SHARED).value))
        };
        let mut latency = self.live.at(here).value.ewma_ns.load(Ordering::Relaxed);
        if latency == 0 {
            latency = self
                .live
                .all()
                .map(|l| l.ewma_ns.load(Ordering::Relaxed))
                .find(|&n| n != 0)
                .unwrap_or(0);
        }
        Load {
            // Wrapped below zero only for an instant (a core ended a call of the shared
            // slot's before the shared slot counted it): none.
            in_flight: u32::try_from(in_flight).unwrap_or(if in_flight > u64::MAX / 2 {
                0
            } else {
                u32::MAX
            }),
            latency: Duration::from_nanos(latency),
        }
    }
}

/// One instance list with its channels and picker.
pub(crate) struct Snapshot {
    pub(crate) instances: Arc<[Instance]>,
    pub(crate) endpoints: Vec<Arc<Endpoint>>,
    pub(crate) picker: Box<dyn Picker>,
    start: Instant,
}

/// A snapshot as one thread sees its instances' load.
struct View<'a> {
    snap: &'a Snapshot,
    here: Here,
}

impl Snapshot {
    fn now_ms(&self) -> u64 {
        netpoll::now()
            .saturating_duration_since(self.start)
            .as_millis() as u64
    }

    /// The instance for `call`, skipping `tried` ones, as the thread with slot `here`
    /// sees their load; if the picker finds none usable, any usable one; `None` if there
    /// is none.
    pub(crate) fn pick(
        &self,
        call: &CallInfo<'_>,
        key: Option<u64>,
        tried: &[usize],
        here: Here,
    ) -> Option<usize> {
        if self.endpoints.is_empty() {
            return None;
        }
        let view = View { snap: self, here };
        let p = Pick {
            call,
            key,
            state: States::Live(&view),
            tried,
        };
        match self.picker.pick(&p) {
            Some(i) if p.usable(i) => Some(i),
            _ => (0..self.endpoints.len()).find(|&i| p.usable(i)),
        }
    }

    /// Passes over `index` for a while: its connect failed.
    pub(crate) fn mark_down(&self, index: usize) {
        if let Some(e) = self.endpoints.get(index) {
            e.down_until_ms.store(
                self.now_ms() + DOWN_FOR.as_millis() as u64,
                Ordering::Relaxed,
            );
        }
    }
}

impl InstanceState for View<'_> {
    fn len(&self) -> usize {
        self.snap.endpoints.len()
    }

    fn load(&self, index: usize) -> Load {
        self.snap.endpoints[index].load(self.here)
    }

    fn available(&self, index: usize) -> bool {
        let e = &self.snap.endpoints[index];
        // Never marked down (the common case): no clock to read.
        let down = e.down_until_ms.load(Ordering::Relaxed);
        (down == 0 || down <= self.snap.now_ms()) && !e.breaker.is_open(netpoll::now())
    }
}

/// The instances of one service and their channels.
pub(crate) struct Cluster {
    pub(crate) service: String,
    rt: RuntimeHandle,
    framing: Arc<dyn ReplyFraming>,
    cfg: ChannelConfig,
    lb: Arc<dyn LoadBalancer>,
    breaker: Arc<BreakerConfig>,
    current: RwLock<Arc<Snapshot>>,
    /// Bumped each time `current` changes: a thread's cached copy of the list is good
    /// while this has not moved (see [`Cluster::snapshot`]).
    version: AtomicU64,
    /// Tells this cluster's entries in the threads' snapshot caches from other clusters'.
    id: u64,
    start: Instant,
    /// Keeps the resolver's watch alive.
    watch: Mutex<Option<WatchGuard>>,
    /// Tells the refresh thread (if any) to stop.
    stopped: Arc<AtomicBool>,
}

impl std::fmt::Debug for Cluster {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let s = self.snapshot();
        f.debug_struct("Cluster")
            .field("service", &self.service)
            .field("balancer", &self.lb.name())
            .field(
                "instances",
                &s.endpoints
                    .iter()
                    .map(|e| e.addr.to_string())
                    .collect::<Vec<_>>(),
            )
            .finish()
    }
}

pub(crate) struct ClusterConfig {
    pub(crate) service: String,
    pub(crate) rt: RuntimeHandle,
    pub(crate) framing: Arc<dyn ReplyFraming>,
    pub(crate) channel: ChannelConfig,
    pub(crate) resolver: Arc<dyn Resolver>,
    pub(crate) lb: Arc<dyn LoadBalancer>,
    pub(crate) breaker: Arc<BreakerConfig>,
}

impl Cluster {
    /// Resolves the service and follows its changes.
    pub(crate) fn start(c: ClusterConfig) -> Arc<Cluster> {
        let start = netpoll::now();
        let empty: Arc<[Instance]> = Arc::from(Vec::new());
        let cluster = Arc::new(Cluster {
            service: c.service,
            rt: c.rt,
            framing: c.framing,
            cfg: c.channel,
            lb: c.lb.clone(),
            breaker: c.breaker,
            current: RwLock::new(Arc::new(Snapshot {
                picker: c.lb.picker(empty.clone()),
                instances: empty,
                endpoints: Vec::new(),
                start,
            })),
            version: AtomicU64::new(0),
            id: NEXT_CLUSTER.fetch_add(1, Ordering::Relaxed),
            start,
            watch: Mutex::new(None),
            stopped: Arc::new(AtomicBool::new(false)),
        });
        let resolver = c.resolver;
        match resolver.resolve(&cluster.service) {
            Ok(list) => cluster.update(list),
            Err(e) => {
                tracing::warn!(service = %cluster.service, resolver = resolver.name(), error = %e,
                "cannot resolve the service yet; calls fail until it resolves")
            }
        }
        let weak = Arc::downgrade(&cluster);
        let on_change: crate::discovery::OnChange = Arc::new(move |list| {
            if let Some(c) = weak.upgrade() {
                c.update(list);
            }
        });
        match resolver.watch(&cluster.service, on_change) {
            Ok(Some(guard)) => {
                *cluster.watch.lock().unwrap_or_else(|p| p.into_inner()) = Some(guard);
            }
            Ok(None) => {
                if let Some(every) = resolver.refresh_interval() {
                    refresh_thread(
                        Arc::downgrade(&cluster),
                        resolver,
                        every,
                        cluster.stopped.clone(),
                    );
                }
            }
            Err(e) => {
                tracing::warn!(service = %cluster.service, error = %e, "cannot watch the service; resolving every 5 s instead");
                refresh_thread(
                    Arc::downgrade(&cluster),
                    resolver,
                    Duration::from_secs(5),
                    cluster.stopped.clone(),
                );
            }
        }
        cluster
    }

    /// The current instance list. Each thread keeps a copy of the lists it used last,
    /// checked against the cluster's version: on the call path, one load instead of a
    /// lock.
    pub(crate) fn snapshot(&self) -> Arc<Snapshot> {
        let version = self.version.load(Ordering::Acquire);
        let cached = SNAPSHOTS.with(|c| {
            let c = c.borrow();
            c.iter()
                .find(|e| e.0 == self.id && e.1 == version)
                .and_then(|e| e.2.upgrade())
        });
        if let Some(s) = cached {
            return s;
        }
        // Read the version again under the lock: the list and its version then match
        // (a writer changes both under the write lock).
        let (snap, version) = {
            let cur = self.current.read().unwrap_or_else(|p| p.into_inner());
            (cur.clone(), self.version.load(Ordering::Acquire))
        };
        SNAPSHOTS.with(|c| {
            let mut c = c.borrow_mut();
            c.retain(|e| e.0 != self.id);
            if c.len() >= SNAPSHOT_CACHE {
                c.remove(0);
            }
            c.push((self.id, version, Arc::downgrade(&snap)));
        });
        snap
    }

    /// Takes a new instance list: instances that stay keep their channel and state, new
    /// ones get a channel (connected on first use), and those that left are retired
    /// (their connections close once their calls are answered).
    pub(crate) fn update(&self, mut list: Vec<Instance>) {
        list.sort_by(|a, b| a.addr.cmp(&b.addr));
        list.dedup_by(|a, b| a.addr == b.addr);
        let old = self.snapshot();
        if *old.instances == *list {
            return;
        }
        let mut known: HashMap<Addr, Arc<Endpoint>> = old
            .endpoints
            .iter()
            .map(|e| (e.addr.clone(), e.clone()))
            .collect();
        let endpoints: Vec<Arc<Endpoint>> = list
            .iter()
            .map(|i| {
                known.remove(&i.addr).unwrap_or_else(|| {
                    Arc::new(Endpoint {
                        addr: i.addr.clone(),
                        channel: Channel::new(
                            self.rt.clone(),
                            i.addr.clone(),
                            self.framing.clone(),
                            self.cfg.clone(),
                        ),
                        live: PerCore::new(self.rt.cores()),
                        breaker: Breaker::new(self.breaker.clone(), self.rt.cores()),
                        down_until_ms: AtomicU64::new(0),
                    })
                })
            })
            .collect();
        tracing::info!(
            service = %self.service,
            instances = ?list.iter().map(|i| i.addr.to_string()).collect::<Vec<_>>(),
            "instances changed"
        );
        let instances: Arc<[Instance]> = list.into();
        let snap = Arc::new(Snapshot {
            picker: self.lb.picker(instances.clone()),
            instances,
            endpoints,
            start: self.start,
        });
        {
            let mut cur = self.current.write().unwrap_or_else(|p| p.into_inner());
            *cur = snap;
            self.version.fetch_add(1, Ordering::Release);
        }
        for gone in known.into_values() {
            gone.channel.retire();
        }
    }

    /// The slot this thread counts in, among the client runtime's cores.
    pub(crate) fn here(&self) -> Here {
        Here::of(&self.rt)
    }

    /// Calls answered by each instance so far.
    pub(crate) fn answered(&self) -> Vec<(Addr, u64)> {
        self.snapshot()
            .endpoints
            .iter()
            .map(|e| (e.addr.clone(), e.answered()))
            .collect()
    }

    /// Runs `f` soon on a core of the client's runtime (the caller's, if it is on one),
    /// and never inside the caller's own call: a call that fails before it is sent (no
    /// instance, an open breaker, a deadline already past) reports it this way, so that a
    /// callback that calls again on every failure cannot recurse without bound, and the
    /// callback runs on a core as documented. Dropped if the runtime stops.
    pub(crate) fn soon(&self, f: impl FnOnce() + Send + 'static) {
        let core = self.rt.local_core().unwrap_or(0);
        let _ = self.rt.spawn(core, move |_: &mut netpoll::Core| f());
    }

    /// Runs `f` after `delay`, on a core of the client's runtime (dropped if it stops).
    pub(crate) fn after(&self, delay: Duration, f: impl FnOnce() + Send + 'static) {
        let _ = self.rt.spawn(0, move |c: &mut netpoll::Core| {
            let at = c.now() + delay;
            c.set_timer(at, move |_| f());
        });
    }

    /// Connects to every instance now (before the first call).
    pub(crate) fn warm_up(&self) {
        for e in &self.snapshot().endpoints {
            e.channel.warm_up();
        }
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        // This thread's cached list goes with it (other threads' go as newer clusters
        // push them out of their caches).
        let _ = SNAPSHOTS.try_with(|c| {
            if let Ok(mut c) = c.try_borrow_mut() {
                c.retain(|e| e.0 != self.id);
            }
        });
        self.stopped.store(true, Ordering::Relaxed);
    }
}

/// Resolves the service every `every` on a thread of its own while the cluster lives; a
/// failed resolve keeps the last list.
fn refresh_thread(
    cluster: Weak<Cluster>,
    resolver: Arc<dyn Resolver>,
    every: Duration,
    stopped: Arc<AtomicBool>,
) {
    let spawned = std::thread::Builder::new()
        .name("rpc-resolve".into())
        .spawn(move || loop {
            // Sleep in short steps so a dropped client does not keep the thread long.
            let until = netpoll::now() + every;
            while netpoll::now() < until {
                if stopped.load(Ordering::Relaxed) {
                    return;
                }
                std::thread::sleep((until - netpoll::now()).min(Duration::from_millis(100)));
            }
            let Some(c) = cluster.upgrade() else { return };
            match resolver.resolve(&c.service) {
                Ok(list) => c.update(list),
                Err(e) => tracing::warn!(service = %c.service, error = %e, "resolve failed; keeping the last instances"),
            }
        });
    if let Err(e) = spawned {
        tracing::warn!(error = %e, "cannot start the resolver thread; the instance list stays as it is");
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::client::FrameReplies;

    /// Calls counted on two cores and from a thread of no core: each core's view is its
    /// own calls plus the other threads', the total is every call, and all of it goes
    /// back to zero as the calls end where they were counted.
    #[test]
    fn in_flight_counts_per_core_add_up_and_return_to_zero() {
        let rt = netpoll::Runtime::builder()
            .cores(2)
            .build()
            .expect("runtime");
        let h = rt.handle().clone();
        let ep = Arc::new(Endpoint {
            addr: "127.0.0.1:9"
                .parse::<std::net::SocketAddr>()
                .unwrap()
                .into(),
            channel: Channel::new(
                h.clone(),
                "127.0.0.1:9".parse::<std::net::SocketAddr>().unwrap(),
                Arc::new(FrameReplies::framed_binary(1 << 20)),
                ChannelConfig::default(),
            ),
            live: PerCore::new(2),
            breaker: Breaker::new(Arc::new(BreakerConfig::default()), 2),
            down_until_ms: AtomicU64::new(0),
        });
        let on = |core: usize, f: Box<dyn FnOnce(Here) -> Load + Send>| {
            let (tx, rx) = std::sync::mpsc::channel();
            let h2 = h.clone();
            h.spawn(core, move |_| {
                let _ = tx.send(f(Here::of(&h2)));
            })
            .unwrap();
            rx.recv().unwrap()
        };
        // Core 0 sends 3, core 1 sends 2, the test thread 4 (shared slot).
        let e = ep.clone();
        on(
            0,
            Box::new(move |here| {
                (0..3).for_each(|_| e.started(here));
                e.load(here)
            }),
        );
        let e = ep.clone();
        let core1 = on(
            1,
            Box::new(move |here| {
                (0..2).for_each(|_| e.started(here));
                e.load(here)
            }),
        );
        (0..4).for_each(|_| ep.started(Here::SHARED));
        assert_eq!(core1.in_flight, 2, "before the shared slot counted");
        let e = ep.clone();
        assert_eq!(on(0, Box::new(move |here| e.load(here))).in_flight, 3 + 4);
        assert_eq!(
            ep.load(Here::SHARED).in_flight,
            9,
            "off the cores: every call"
        );
        // They end: the cores' on their core, the shared ones on core 1.
        let e = ep.clone();
        on(
            0,
            Box::new(move |here| {
                (0..3).for_each(|_| e.ended(here, here, Duration::from_micros(50), true));
                e.load(here)
            }),
        );
        let e = ep.clone();
        on(
            1,
            Box::new(move |here| {
                (0..2).for_each(|_| e.ended(here, here, Duration::from_micros(50), true));
                (0..4).for_each(|_| e.ended(Here::SHARED, here, Duration::from_micros(50), true));
                e.load(here)
            }),
        );
        assert_eq!(ep.load(Here::SHARED).in_flight, 0);
        assert_eq!(ep.answered(), 9);
        assert_eq!(ep.load(Here::SHARED).latency, Duration::from_micros(50));
        rt.shutdown(Duration::from_secs(1));
    }
}
