//! gRPC's standard health checking service, `grpc.health.v1.Health`
//! (<https://github.com/grpc/grpc/blob/master/doc/health-checking.md>): load balancers and
//! orchestrators ask it whether the server, or one of its services, is serving.
//!
//! `Check` is served; `Watch` (a server stream) answers UNIMPLEMENTED until streaming
//! exists. Register it with [`ServerBuilder::service`](super::ServerBuilder::service) and
//! keep a clone to change statuses:
//!
//! ```no_run
//! # use netpoll_rpc::server::{Health, Server, ServingStatus};
//! let health = Health::new(); // "" (the whole server) is SERVING
//! health.set("echo.Echo", ServingStatus::Serving);
//! let builder = Server::builder().service(health.clone());
//! // ... later, draining:
//! health.set("", ServingStatus::NotServing);
//! # let _ = builder;
//! ```

use std::collections::HashMap;
use std::sync::{Arc, RwLock};

use super::service::{encode_pb_reply, Call, Idl, MethodInfo, Service};
use crate::{Reply, Status};

/// `grpc.health.v1.HealthCheckRequest`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct HealthCheckRequest {
    /// The service asked about (`package.Service`); empty for the server as a whole.
    #[prost(string, tag = "1")]
    pub service: String,
}

/// `grpc.health.v1.HealthCheckResponse`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct HealthCheckResponse {
    /// A [`ServingStatus`].
    #[prost(enumeration = "ServingStatus", tag = "1")]
    pub status: i32,
}

/// `grpc.health.v1.HealthCheckResponse.ServingStatus`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, prost::Enumeration)]
#[repr(i32)]
pub enum ServingStatus {
    /// UNKNOWN.
    Unknown = 0,
    /// SERVING.
    Serving = 1,
    /// NOT_SERVING.
    NotServing = 2,
    /// SERVICE_UNKNOWN (used by `Watch` only).
    ServiceUnknown = 3,
}

/// The health service, and the statuses it reports: clones share them.
#[derive(Clone, Debug)]
pub struct Health {
    statuses: Arc<RwLock<HashMap<String, ServingStatus>>>,
}

impl Default for Health {
    fn default() -> Self {
        Health::new()
    }
}

impl Health {
    /// Reports the server as a whole (service `""`) SERVING, and nothing else yet.
    pub fn new() -> Health {
        let mut m = HashMap::new();
        m.insert(String::new(), ServingStatus::Serving);
        Health {
            statuses: Arc::new(RwLock::new(m)),
        }
    }

    /// Sets what `Check` reports for `service` (`package.Service`, or `""`).
    pub fn set(&self, service: &str, status: ServingStatus) {
        self.statuses
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .insert(service.to_owned(), status);
    }

    /// What `Check` reports for `service`: `None` when it is not known (NOT_FOUND).
    pub fn get(&self, service: &str) -> Option<ServingStatus> {
        self.statuses
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .get(service)
            .copied()
    }
}

const METHODS: &[MethodInfo] = &[
    MethodInfo {
        name: "Check",
        oneway: false,
    },
    MethodInfo {
        name: "Watch",
        oneway: false,
    },
];

fn reply(
    env: &crate::wire::Envelope,
    r: Result<HealthCheckResponse, Status>,
    out: &mut bytes::BytesMut,
    h: &crate::wire::Headers<'_>,
) {
    encode_pb_reply(env, out, h, r)
}

impl Service for Health {
    fn name(&self) -> &'static str {
        "Health"
    }

    fn full_name(&self) -> &'static str {
        "grpc.health.v1.Health"
    }

    fn idl(&self) -> Idl {
        Idl::Protobuf
    }

    fn methods(&self) -> &'static [MethodInfo] {
        METHODS
    }

    fn call(&self, index: usize, call: Call<'_, '_, '_>) {
        match index {
            0 => call.protobuf(
                |_ctx, req: HealthCheckRequest| match self.get(&req.service) {
                    Some(s) => Reply::ok(HealthCheckResponse { status: s as i32 }),
                    None => Reply::err(Status::not_found(format!(
                        "no health status for service {:?}",
                        req.service
                    ))),
                },
                reply,
            ),
            _ => call.fail(Status::unknown_method(
                "grpc.health.v1.Health/Watch needs server streaming, which is not served yet",
            )),
        }
    }
}
