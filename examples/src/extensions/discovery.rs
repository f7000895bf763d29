//! The smallest resolver and load balancer: [`HostPorts`], a fixed list of instances per
//! service (Kitex's `WithHostPorts`), and [`RoundRobin`].

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use netpoll_rpc::discovery::{Instance, LoadBalancer, Pick, Picker, ResolveError, Resolver};

/// Instances given by hand, per service.
#[derive(Debug, Default, Clone)]
pub struct HostPorts {
    services: HashMap<String, Vec<Instance>>,
}

impl HostPorts {
    /// Adds `addrs` as instances of `service`.
    pub fn with(mut self, service: &str, addrs: &[SocketAddr]) -> Self {
        self.services
            .entry(service.to_owned())
            .or_default()
            .extend(addrs.iter().copied().map(Instance::new));
        self
    }
}

impl Resolver for HostPorts {
    fn name(&self) -> &'static str {
        "host-ports"
    }

    fn resolve(&self, service: &str) -> Result<Vec<Instance>, ResolveError> {
        match self.services.get(service) {
            Some(list) if !list.is_empty() => Ok(list.clone()),
            _ => Err(ResolveError {
                service: service.to_owned(),
                cause: netpoll_rpc::reason("no host ports given for this service"),
            }),
        }
    }
}

/// Each instance in turn.
#[derive(Debug, Default, Clone, Copy)]
pub struct RoundRobin;

struct Turns {
    len: usize,
    next: AtomicUsize,
}

impl LoadBalancer for RoundRobin {
    fn name(&self) -> &'static str {
        "round-robin"
    }

    fn picker(&self, instances: Arc<[Instance]>) -> Box<dyn Picker> {
        Box::new(Turns {
            len: instances.len(),
            next: AtomicUsize::new(0),
        })
    }
}

impl Picker for Turns {
    fn pick(&self, pick: &Pick<'_>) -> Option<usize> {
        // The next instance that may take the call.
        let start = self.next.fetch_add(1, Ordering::Relaxed);
        (0..self.len)
            .map(|i| (start + i) % self.len)
            .find(|&i| pick.usable(i))
    }
}
