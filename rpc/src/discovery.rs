//! Finding a service's instances ([`Resolver`]) and choosing one for each call
//! ([`LoadBalancer`]), as Kitex's resolver and load balancer do. Service governance
//! builds discovery (etcd), balancing (p2c, weighted, consistent hashing), retries and
//! circuit breaking on these traits.

use std::any::Any;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use crate::{CallInfo, Cause, Outcome};

/// One instance of a service: where it listens, how much of the load it should take,
/// and what it says of itself.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Instance {
    /// Its address.
    pub addr: SocketAddr,
    /// Its share of the load relative to the others (Kitex's default is 10).
    pub weight: u32,
    /// Key/value tags (cluster, zone, version...).
    pub tags: Vec<(String, String)>,
}

impl Instance {
    /// An instance at `addr` with the default weight (10) and no tags.
    pub fn new(addr: SocketAddr) -> Instance {
        Instance {
            addr,
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
    /// The index of the instance (in the list the picker was made for) to send `call` to,
    /// or `None` if none may take it now.
    fn pick(&self, call: &CallInfo<'_>) -> Option<usize>;

    /// How a call sent to instance `index` ended, and how long it took (for balancers that
    /// follow load or latency). Default: ignored.
    fn report(&self, index: usize, outcome: &Outcome, latency: Duration) {
        let _ = (index, outcome, latency);
    }
}
