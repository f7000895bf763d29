//! Finding the service and method of a call by its name (and TTHeader's `isn`).

use std::collections::HashMap;
use std::hash::{BuildHasherDefault, Hasher};
use std::sync::Arc;

use bytes::Bytes;

use super::Service;

/// FNV-1a: method names are short, and the default SipHash costs more than the lookup.
#[derive(Default)]
pub(crate) struct Fnv(u64);

impl Hasher for Fnv {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        let mut h = if self.0 == 0 {
            0xcbf2_9ce4_8422_2325
        } else {
            self.0
        };
        for b in bytes {
            h ^= u64::from(*b);
            h = h.wrapping_mul(0x0100_0000_01b3);
        }
        self.0 = h;
    }
}

type FastMap<K, V> = HashMap<K, V, BuildHasherDefault<Fnv>>;

/// A method's place: service index and method index.
#[derive(Debug, Clone, Copy)]
struct Route {
    service: usize,
    method: usize,
    /// Another service has a method of the same name.
    clash: bool,
}

/// The services of a server and their methods.
pub(crate) struct Router {
    services: Vec<Arc<dyn Service>>,
    by_method: FastMap<Box<str>, Route>,
    by_service: FastMap<Box<str>, FastMap<Box<str>, usize>>,
}

impl Router {
    pub(crate) fn new(services: Vec<Arc<dyn Service>>) -> Result<Router, String> {
        if services.is_empty() {
            return Err("no service registered".into());
        }
        let mut by_method: FastMap<Box<str>, Route> = FastMap::default();
        let mut by_service: FastMap<Box<str>, FastMap<Box<str>, usize>> = FastMap::default();
        for (si, s) in services.iter().enumerate() {
            let methods = by_service.entry(s.name().into()).or_default();
            if !methods.is_empty() {
                return Err(format!("service {} registered twice", s.name()));
            }
            for (mi, m) in s.methods().iter().enumerate() {
                methods.insert(m.name.into(), mi);
                by_method
                    .entry(m.name.into())
                    .and_modify(|r| r.clash = true)
                    .or_insert(Route {
                        service: si,
                        method: mi,
                        clash: false,
                    });
            }
        }
        Ok(Router {
            services,
            by_method,
            by_service,
        })
    }

    /// The service and method index for `method`. `isn` (looked up only when several
    /// services have the method) names the service.
    pub(crate) fn find(
        &self,
        method: &str,
        isn: impl FnOnce() -> Option<Bytes>,
    ) -> Option<(&Arc<dyn Service>, usize)> {
        let r = *self.by_method.get(method)?;
        if r.clash {
            if let Some(isn) = isn() {
                let by_isn = std::str::from_utf8(&isn)
                    .ok()
                    .and_then(|name| self.by_service.get(name))
                    .and_then(|methods| {
                        let mi = *methods.get(method)?;
                        let si = self
                            .services
                            .iter()
                            .position(|s| s.name().as_bytes() == &isn[..])?;
                        Some((&self.services[si], mi))
                    });
                if by_isn.is_some() {
                    return by_isn;
                }
            }
        }
        Some((&self.services[r.service], r.method))
    }
}
