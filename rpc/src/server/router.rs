//! Finding the service and method of a call by its name (and TTHeader's `isn`).

use std::collections::HashMap;
use std::hash::{BuildHasherDefault, Hasher};
use std::sync::Arc;

use bytes::Bytes;

use super::service::accepts;
use super::Service;
use crate::wire::Payload;

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

/// Where a call goes: a service of the router and the index of its method, found once
/// (when a gRPC stream's headers come) and used again when the call is served.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Route {
    pub(crate) service: usize,
    pub(crate) method: usize,
}

/// The services of a server and their methods.
pub(crate) struct Router {
    services: Vec<Arc<dyn Service>>,
    /// Method name to `(service, method)` indexes, in registration order.
    by_method: FastMap<Box<str>, Vec<(usize, usize)>>,
}

impl Router {
    pub(crate) fn new(services: Vec<Arc<dyn Service>>) -> Result<Router, String> {
        if services.is_empty() {
            return Err("no service registered".into());
        }
        for (i, a) in services.iter().enumerate() {
            if services[..i]
                .iter()
                .any(|b| b.name() == a.name() && b.idl() == a.idl())
            {
                return Err(format!(
                    "{:?} service {} registered twice",
                    a.idl(),
                    a.name()
                ));
            }
        }
        let mut by_method: FastMap<Box<str>, Vec<(usize, usize)>> = FastMap::default();
        for (si, s) in services.iter().enumerate() {
            for (mi, m) in s.methods().iter().enumerate() {
                by_method.entry(m.name.into()).or_default().push((si, mi));
            }
        }
        Ok(Router {
            services,
            by_method,
        })
    }

    /// The Protobuf service whose full name (`package.Service`) is `service`, and the
    /// index of its method `method`: how a gRPC path is routed.
    pub(crate) fn find_full(&self, service: &str, method: &str) -> Option<Route> {
        self.by_method
            .get(method)?
            .iter()
            .copied()
            .find(|&(si, _)| {
                let s = &self.services[si];
                s.idl() == super::Idl::Protobuf && s.full_name() == service
            })
            .map(|(si, mi)| Route {
                service: si,
                method: mi,
            })
    }

    /// The service and method index a [`Route`] found.
    pub(crate) fn at(&self, route: Route) -> (&Arc<dyn Service>, usize) {
        (&self.services[route.service], route.method)
    }

    /// The service and method index for `method` arriving as `payload`. When several
    /// services have the method, those accepting the payload are preferred, then the one
    /// `isn` names (looked up only then), then the first registered.
    pub(crate) fn find(
        &self,
        method: &str,
        payload: Payload,
        isn: impl FnOnce() -> Option<Bytes>,
    ) -> Option<(&Arc<dyn Service>, usize)> {
        let routes = self.by_method.get(method)?;
        let pick = |(si, mi): (usize, usize)| (&self.services[si], mi);
        if let [only] = routes[..] {
            return Some(pick(only));
        }
        let fits = |r: &&(usize, usize)| accepts(self.services[r.0].idl(), payload);
        let mut fitting = routes.iter().filter(fits);
        let first = fitting.clone().next().or(routes.first()).copied()?;
        if fitting.clone().nth(1).is_some() {
            if let Some(isn) = isn() {
                if let Some(r) = fitting.find(|r| self.services[r.0].name().as_bytes() == &isn[..])
                {
                    return Some(pick(*r));
                }
            }
        }
        Some(pick(first))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::server::{Call, Idl, MethodInfo};

    struct Svc {
        name: &'static str,
        idl: Idl,
        methods: &'static [MethodInfo],
    }

    impl Service for Svc {
        fn name(&self) -> &'static str {
            self.name
        }
        fn idl(&self) -> Idl {
            self.idl
        }
        fn methods(&self) -> &'static [MethodInfo] {
            self.methods
        }
        fn call(&self, _index: usize, _call: Call<'_, '_, '_>) {}
    }

    const ECHO: &[MethodInfo] = &[
        MethodInfo {
            name: "ping",
            oneway: false,
            kind: super::super::StreamKind::Unary,
        },
        MethodInfo {
            name: "echo",
            oneway: false,
            kind: super::super::StreamKind::Unary,
        },
    ];

    fn svc(name: &'static str, idl: Idl) -> Arc<dyn Service> {
        Arc::new(Svc {
            name,
            idl,
            methods: ECHO,
        })
    }

    fn pick(
        r: &Router,
        method: &str,
        payload: Payload,
        isn: Option<&'static str>,
    ) -> Option<(&'static str, usize)> {
        r.find(method, payload, || {
            isn.map(|s| Bytes::from_static(s.as_bytes()))
        })
        .map(|(s, i)| (s.name(), i))
    }

    #[test]
    fn routes_by_method_then_payload_then_isn_then_registration() {
        let r = Router::new(vec![
            svc("A", Idl::Thrift),
            svc("B", Idl::Thrift),
            svc("P", Idl::Protobuf),
        ])
        .unwrap();
        assert_eq!(pick(&r, "nope", Payload::ThriftBinary, None), None);
        // Protobuf payloads go to the Protobuf service whatever isn says.
        assert_eq!(
            pick(&r, "echo", Payload::Protobuf, Some("A")),
            Some(("P", 1))
        );
        // Thrift: isn decides between Thrift services, else the first registered.
        assert_eq!(
            pick(&r, "echo", Payload::ThriftBinary, Some("B")),
            Some(("B", 1))
        );
        assert_eq!(
            pick(&r, "ping", Payload::ThriftCompact, None),
            Some(("A", 0))
        );
        assert_eq!(
            pick(&r, "ping", Payload::ThriftCompact, Some("Z")),
            Some(("A", 0))
        );
    }

    #[test]
    fn a_service_set_must_be_valid() {
        assert!(Router::new(Vec::new()).is_err());
        assert!(Router::new(vec![svc("A", Idl::Thrift), svc("A", Idl::Thrift)]).is_err());
        // The same name in both IDLs is fine (Kitex serves both on one port).
        assert!(Router::new(vec![svc("A", Idl::Thrift), svc("A", Idl::Protobuf)]).is_ok());
    }
}
