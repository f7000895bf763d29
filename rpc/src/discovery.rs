//! Finding a service's instances ([`Resolver`]) and choosing one for each call
//! ([`LoadBalancer`]), as Kitex's resolver and load balancer do.
//!
//! Resolvers here: [`StaticResolver`] (a fixed list, Kitex's `WithHostPorts`) and
//! [`DnsResolver`]; etcd is in [`crate::registry`]. Balancers are in [`crate::balance`].

use std::any::Any;
use std::net::{SocketAddr, ToSocketAddrs};
use std::sync::Arc;
use std::time::Duration;

pub use netpoll::Addr;

use crate::{CallInfo, Cause, Outcome};

/// Addresses a client can be given: `host:port` (resolved), `unix:/path` (a Unix domain
/// socket), a [`SocketAddr`] or an [`Addr`]. Like [`ToSocketAddrs`], with Unix sockets.
pub trait ToAddrs {
    /// The addresses this names (a host name may resolve to several).
    fn to_addrs(&self) -> std::io::Result<Vec<Addr>>;
}

impl ToAddrs for str {
    fn to_addrs(&self) -> std::io::Result<Vec<Addr>> {
        match self.strip_prefix("unix:") {
            Some(_) => self
                .parse::<Addr>()
                .map(|a| vec![a])
                .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidInput, e)),
            None => Ok(self.to_socket_addrs()?.map(Addr::Tcp).collect()),
        }
    }
}

impl ToAddrs for String {
    fn to_addrs(&self) -> std::io::Result<Vec<Addr>> {
        self.as_str().to_addrs()
    }
}

impl ToAddrs for Addr {
    fn to_addrs(&self) -> std::io::Result<Vec<Addr>> {
        Ok(vec![self.clone()])
    }
}

impl ToAddrs for SocketAddr {
    fn to_addrs(&self) -> std::io::Result<Vec<Addr>> {
        Ok(vec![Addr::Tcp(*self)])
    }
}

impl ToAddrs for (&str, u16) {
    fn to_addrs(&self) -> std::io::Result<Vec<Addr>> {
        Ok(self.to_socket_addrs()?.map(Addr::Tcp).collect())
    }
}

impl ToAddrs for (std::net::IpAddr, u16) {
    fn to_addrs(&self) -> std::io::Result<Vec<Addr>> {
        Ok(vec![Addr::Tcp(SocketAddr::from(*self))])
    }
}

impl ToAddrs for ([u8; 4], u16) {
    fn to_addrs(&self) -> std::io::Result<Vec<Addr>> {
        Ok(vec![Addr::Tcp(SocketAddr::from(*self))])
    }
}

impl ToAddrs for (String, u16) {
    fn to_addrs(&self) -> std::io::Result<Vec<Addr>> {
        (self.0.as_str(), self.1).to_addrs()
    }
}

impl ToAddrs for (std::net::Ipv4Addr, u16) {
    fn to_addrs(&self) -> std::io::Result<Vec<Addr>> {
        Ok(vec![Addr::Tcp(SocketAddr::from(*self))])
    }
}

impl ToAddrs for (std::net::Ipv6Addr, u16) {
    fn to_addrs(&self) -> std::io::Result<Vec<Addr>> {
        Ok(vec![Addr::Tcp(SocketAddr::from(*self))])
    }
}

impl ToAddrs for std::net::SocketAddrV4 {
    fn to_addrs(&self) -> std::io::Result<Vec<Addr>> {
        Ok(vec![Addr::Tcp(SocketAddr::V4(*self))])
    }
}

impl ToAddrs for std::net::SocketAddrV6 {
    fn to_addrs(&self) -> std::io::Result<Vec<Addr>> {
        Ok(vec![Addr::Tcp(SocketAddr::V6(*self))])
    }
}

impl ToAddrs for [SocketAddr] {
    fn to_addrs(&self) -> std::io::Result<Vec<Addr>> {
        Ok(self.iter().copied().map(Addr::Tcp).collect())
    }
}

impl<T: ToAddrs + ?Sized> ToAddrs for &T {
    fn to_addrs(&self) -> std::io::Result<Vec<Addr>> {
        (**self).to_addrs()
    }
}

/// One instance of a service: where it listens, how much of the load it should take,
/// and what it says of itself.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Instance {
    /// Its address: TCP, or a Unix domain socket.
    pub addr: Addr,
    /// Its share of the load relative to the others (Kitex's default is 10).
    pub weight: u32,
    /// Key/value tags (cluster, zone, version...).
    pub tags: Vec<(String, String)>,
}

impl Instance {
    /// An instance at `addr` with the default weight (10) and no tags.
    pub fn new(addr: impl Into<Addr>) -> Instance {
        Instance {
            addr: addr.into(),
            weight: 10,
            tags: Vec::new(),
        }
    }

    /// The value of tag `key`, if set.
    pub fn tag(&self, key: &str) -> Option<&str> {
        self.tags
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }
}

/// Why instances could not be found.
#[derive(Debug, Clone)]
pub struct ResolveError {
    /// The service looked up.
    pub service: String,
    /// What went wrong.
    pub cause: Cause,
}

impl std::fmt::Display for ResolveError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "cannot resolve {}: {}", self.service, self.cause)
    }
}

impl std::error::Error for ResolveError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        Some(&*self.cause)
    }
}

/// Called with the whole instance list of a service each time it changes.
pub type OnChange = Arc<dyn Fn(Vec<Instance>) + Send + Sync>;

/// Keeps a watch alive; dropping it stops the watch.
pub type WatchGuard = Box<dyn Any + Send>;

/// Finds the instances of a service by name.
pub trait Resolver: Send + Sync + 'static {
    /// A name for logs.
    fn name(&self) -> &'static str;

    /// The instances of `service` now.
    fn resolve(&self, service: &str) -> Result<Vec<Instance>, ResolveError>;

    /// Tells `on_change` the whole list each time it changes, until the guard is dropped.
    /// `Ok(None)` (the default): this resolver cannot watch; callers resolve again from
    /// time to time instead.
    fn watch(
        &self,
        service: &str,
        on_change: OnChange,
    ) -> Result<Option<WatchGuard>, ResolveError> {
        let _ = (service, on_change);
        Ok(None)
    }

    /// How often a client resolves again when the resolver cannot watch; `None`: never
    /// (the list is fixed). Default 5 s.
    fn refresh_interval(&self) -> Option<Duration> {
        Some(Duration::from_secs(5))
    }
}

/// Chooses the instance for each call. A balancer makes a [`Picker`] for each instance
/// list (when the list changes), so that picking is cheap.
pub trait LoadBalancer: Send + Sync + 'static {
    /// A name for logs.
    fn name(&self) -> &'static str;

    /// A picker over `instances` (never empty).
    fn picker(&self, instances: Arc<[Instance]>) -> Box<dyn Picker>;
}

/// Picks instances from one instance list.
pub trait Picker: Send + Sync {
    /// The index of the instance (in the list the picker was made for) to send the call
    /// to, or `None` if none may take it. A picker should pick only instances
    /// [`Pick::usable`] says may take the call (not already tried by this call, not
    /// failing to connect, breaker not open); the client falls back to any usable one.
    fn pick(&self, pick: &Pick<'_>) -> Option<usize>;

    /// How a call sent to instance `index` ended, and how long it took (for balancers that
    /// keep their own statistics). Default: ignored.
    fn report(&self, index: usize, outcome: &Outcome, latency: Duration) {
        let _ = (index, outcome, latency);
    }
}

/// What a [`Picker`] knows of one call and of the instances' state when it picks.
pub struct Pick<'a> {
    /// The call.
    pub call: &'a CallInfo<'a>,
    /// The key the caller gave for consistent hashing, if any.
    pub key: Option<u64>,
    pub(crate) state: States<'a>,
    pub(crate) tried: &'a [usize],
}

/// Where a [`Pick`] reads the instances' state from.
#[derive(Clone, Copy)]
pub(crate) enum States<'a> {
    Live(&'a dyn InstanceState),
    Fixed(&'a [Load]),
}

impl States<'_> {
    fn len(&self) -> usize {
        match self {
            States::Live(s) => s.len(),
            States::Fixed(l) => l.len(),
        }
    }
    fn load(&self, i: usize) -> Load {
        match self {
            States::Live(s) => s.load(i),
            States::Fixed(l) => l[i],
        }
    }
    fn available(&self, i: usize) -> bool {
        match self {
            States::Live(s) => s.available(i),
            States::Fixed(_) => true,
        }
    }
}

impl std::fmt::Debug for Pick<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Pick")
            .field("method", &self.call.method)
            .field("key", &self.key)
            .field("tried", &self.tried)
            .finish()
    }
}

/// The live state of the instances of one list, as the client keeps it.
pub(crate) trait InstanceState {
    fn len(&self) -> usize;
    fn load(&self, index: usize) -> Load;
    fn available(&self, index: usize) -> bool;
}

/// The load of one instance as this client sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Load {
    /// Calls sent to it and not yet ended.
    pub in_flight: u32,
    /// Moving average of its calls' latency (zero before the first reply).
    pub latency: Duration,
}

impl<'a> Pick<'a> {
    /// A pick for `call` over instances whose state is `state` (for tests of pickers).
    #[doc(hidden)]
    pub fn for_test(call: &'a CallInfo<'a>, key: Option<u64>, loads: &'a [Load]) -> Pick<'a> {
        Pick {
            call,
            key,
            state: States::Fixed(loads),
            tried: &[],
        }
    }

    /// Whether instance `index` may take the call: this call has not tried it already,
    /// it is not failing to connect, and its breaker is not open.
    pub fn usable(&self, index: usize) -> bool {
        index < self.state.len() && !self.tried.contains(&index) && self.state.available(index)
    }

    /// The load of instance `index`.
    pub fn load(&self, index: usize) -> Load {
        self.state.load(index)
    }

    /// How many instances the list has.
    pub fn len(&self) -> usize {
        self.state.len()
    }

    /// Whether the list is empty.
    pub fn is_empty(&self) -> bool {
        self.state.len() == 0
    }
}

/// A fixed list of instances, the same for every service name (Kitex's `WithHostPorts`):
/// `host:port` entries, each with an optional weight.
#[derive(Debug, Clone)]
pub struct StaticResolver {
    instances: Vec<Instance>,
}

impl StaticResolver {
    /// Instances at `addrs` (each `host:port`, resolved now, or `unix:/path`), with the
    /// default weight.
    pub fn new<A: ToAddrs>(addrs: impl IntoIterator<Item = A>) -> Result<Self, ResolveError> {
        let mut instances = Vec::new();
        for a in addrs {
            instances.push(Instance::new(first_addr(a)?));
        }
        Ok(StaticResolver { instances })
    }

    /// Instances with weights.
    pub fn weighted<A: ToAddrs>(
        addrs: impl IntoIterator<Item = (A, u32)>,
    ) -> Result<Self, ResolveError> {
        let mut instances = Vec::new();
        for (a, w) in addrs {
            instances.push(Instance {
                weight: w,
                ..Instance::new(first_addr(a)?)
            });
        }
        Ok(StaticResolver { instances })
    }

    /// Parses `h1:p1,h2:p2` (optionally `h:p#weight`), the form of `static://` URLs.
    pub fn parse(list: &str) -> Result<Self, ResolveError> {
        let mut instances = Vec::new();
        for item in list.split(',').map(str::trim).filter(|s| !s.is_empty()) {
            let (addr, weight) = match item.split_once('#') {
                Some((a, w)) => (
                    a,
                    w.parse::<u32>().map_err(|e| ResolveError {
                        service: list.to_owned(),
                        cause: crate::reason(format!("bad weight in {item:?}: {e}")),
                    })?,
                ),
                None => (item, 10),
            };
            instances.push(Instance {
                weight,
                ..Instance::new(first_addr(addr)?)
            });
        }
        Ok(StaticResolver { instances })
    }
}

fn first_addr(a: impl ToAddrs) -> Result<Addr, ResolveError> {
    let err = |cause| ResolveError {
        service: String::new(),
        cause,
    };
    a.to_addrs()
        .map_err(|e| err(crate::cause(e)))?
        .into_iter()
        .next()
        .ok_or_else(|| err(crate::reason("the name resolved to no address")))
}

impl Resolver for StaticResolver {
    fn name(&self) -> &'static str {
        "static"
    }

    fn resolve(&self, _service: &str) -> Result<Vec<Instance>, ResolveError> {
        Ok(self.instances.clone())
    }

    fn refresh_interval(&self) -> Option<Duration> {
        None
    }
}

/// Instances found by resolving host names in DNS (A and AAAA records, through the
/// system resolver), looked up again every [`interval`](DnsResolver::interval) (5 s by
/// default). Each name is `host:port`; every address it resolves to is an instance.
#[derive(Debug, Clone)]
pub struct DnsResolver {
    names: Vec<String>,
    interval: Duration,
}

impl DnsResolver {
    /// Resolves `names` (each `host:port`).
    pub fn new(names: impl IntoIterator<Item = impl Into<String>>) -> Self {
        DnsResolver {
            names: names.into_iter().map(Into::into).collect(),
            interval: Duration::from_secs(5),
        }
    }

    /// How often the names are looked up again.
    pub fn interval(mut self, every: Duration) -> Self {
        self.interval = every.max(Duration::from_millis(10));
        self
    }
}

impl Resolver for DnsResolver {
    fn name(&self) -> &'static str {
        "dns"
    }

    fn resolve(&self, service: &str) -> Result<Vec<Instance>, ResolveError> {
        let mut out = Vec::new();
        let mut last_err = None;
        for name in &self.names {
            match name.to_socket_addrs() {
                Ok(addrs) => out.extend(addrs.map(Instance::new)),
                Err(e) => last_err = Some(e),
            }
        }
        match (out.is_empty(), last_err) {
            (true, Some(e)) => Err(ResolveError {
                service: service.to_owned(),
                cause: crate::cause(e),
            }),
            _ => {
                out.sort_by(|a, b| a.addr.cmp(&b.addr));
                out.dedup_by(|a, b| a.addr == b.addr);
                Ok(out)
            }
        }
    }

    fn refresh_interval(&self) -> Option<Duration> {
        Some(self.interval)
    }
}
