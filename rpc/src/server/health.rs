//! gRPC's standard health checking service, `grpc.health.v1.Health`
//! (<https://github.com/grpc/grpc/blob/master/doc/health-checking.md>): load balancers and
//! orchestrators ask it whether the server, or one of its services, is serving.
//!
//! `Check` answers at once; `Watch` (a server stream) sends the current status, then each
//! change as [`Health::set`] makes it (SERVICE_UNKNOWN for a service never set). Register it with [`ServerBuilder::service`](super::ServerBuilder::service) and
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
use std::sync::{Arc, Mutex, RwLock};

use super::context::ReplyEncoder;
use super::service::{encode_pb_reply, Call, Idl, MethodInfo, Service};
use super::stream::{
    OpenStream, Opened, Outbound, StreamCall, StreamHandler, StreamKind, StreamSender,
};
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
    /// `Watch` streams: the service each watches, the status it was last sent, and where
    /// to send changes.
    watchers: Arc<Mutex<Vec<Watcher>>>,
}

#[derive(Debug)]
struct Watcher {
    service: String,
    last: ServingStatus,
    sender: StreamSender<HealthCheckResponse>,
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
            watchers: Arc::default(),
        }
    }

    /// Sets what `Check` reports for `service` (`package.Service`, or `""`).
    pub fn set(&self, service: &str, status: ServingStatus) {
        // The change and its notice under one lock: two changes at once reach watchers
        // in the order they were stored.
        let mut watchers = self.watchers.lock().unwrap_or_else(|p| p.into_inner());
        self.statuses
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .insert(service.to_owned(), status);
        watchers.retain(|w| !w.sender.is_closed());
        for w in watchers.iter_mut().filter(|w| w.service == service) {
            if w.last != status {
                w.last = status;
                w.sender.send(&HealthCheckResponse {
                    status: status as i32,
                });
            }
        }
    }

    /// What `Watch` reports for `service`.
    fn watched(&self, service: &str) -> ServingStatus {
        self.get(service).unwrap_or(ServingStatus::ServiceUnknown)
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
        kind: StreamKind::Unary,
    },
    MethodInfo {
        name: "Watch",
        oneway: false,
        kind: StreamKind::Server,
    },
];

/// One `Watch` stream: it sends the current status when it opens, and is listed to be
/// sent the changes.
struct Watch {
    health: Health,
    service: String,
    listed: bool,
}

impl StreamHandler<(), HealthCheckResponse> for Watch {
    /// The server is going away: the watcher hears NOT_SERVING, then the stream ends
    /// UNAVAILABLE, as gRPC's health servers do.
    fn on_shutdown(&mut self, out: &mut Outbound<'_, HealthCheckResponse>) {
        out.send(&HealthCheckResponse {
            status: ServingStatus::NotServing as i32,
        });
        out.finish(Err(Status::new(
            crate::ErrorKind::Unavailable,
            "the server is shutting down",
        )));
    }

    fn on_writable(&mut self, out: &mut Outbound<'_, HealthCheckResponse>) {
        if self.listed {
            return;
        }
        self.listed = true;
        // Under the watchers' lock, so that no change falls between the status sent and
        // the listing.
        let mut watchers = self
            .health
            .watchers
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        let status = self.health.watched(&self.service);
        out.send(&HealthCheckResponse {
            status: status as i32,
        });
        watchers.retain(|w| !w.sender.is_closed());
        watchers.push(Watcher {
            service: std::mem::take(&mut self.service),
            last: status,
            sender: out.sender(),
        });
    }
}

/// `grpc/health/v1/health.proto` as a `FileDescriptorSet`, for server reflection: the
/// two messages, `ServingStatus`, and the service with `Check` and the streaming `Watch`.
fn descriptor_set() -> Vec<u8> {
    use prost::Message;
    use prost_types::field_descriptor_proto::{Label, Type};
    use prost_types::{
        DescriptorProto, EnumDescriptorProto, EnumValueDescriptorProto, FieldDescriptorProto,
        FileDescriptorProto, FileDescriptorSet, MethodDescriptorProto, ServiceDescriptorProto,
    };
    let field = |name: &str, ty: Type, type_name: Option<&str>| FieldDescriptorProto {
        name: Some(name.to_owned()),
        number: Some(1),
        label: Some(Label::Optional as i32),
        r#type: Some(ty as i32),
        type_name: type_name.map(str::to_owned),
        json_name: Some(name.to_owned()),
        ..Default::default()
    };
    let status = EnumDescriptorProto {
        name: Some("ServingStatus".to_owned()),
        value: ["UNKNOWN", "SERVING", "NOT_SERVING", "SERVICE_UNKNOWN"]
            .iter()
            .enumerate()
            .map(|(i, n)| EnumValueDescriptorProto {
                name: Some((*n).to_owned()),
                number: Some(i as i32),
                ..Default::default()
            })
            .collect(),
        ..Default::default()
    };
    let method = |name: &str, streaming: bool| MethodDescriptorProto {
        name: Some(name.to_owned()),
        input_type: Some(".grpc.health.v1.HealthCheckRequest".to_owned()),
        output_type: Some(".grpc.health.v1.HealthCheckResponse".to_owned()),
        client_streaming: Some(false),
        server_streaming: Some(streaming),
        ..Default::default()
    };
    let file = FileDescriptorProto {
        name: Some("grpc/health/v1/health.proto".to_owned()),
        package: Some("grpc.health.v1".to_owned()),
        message_type: vec![
            DescriptorProto {
                name: Some("HealthCheckRequest".to_owned()),
                field: vec![field("service", Type::String, None)],
                ..Default::default()
            },
            DescriptorProto {
                name: Some("HealthCheckResponse".to_owned()),
                field: vec![field(
                    "status",
                    Type::Enum,
                    Some(".grpc.health.v1.HealthCheckResponse.ServingStatus"),
                )],
                enum_type: vec![status],
                ..Default::default()
            },
        ],
        service: vec![ServiceDescriptorProto {
            name: Some("Health".to_owned()),
            method: vec![method("Check", false), method("Watch", true)],
            ..Default::default()
        }],
        syntax: Some("proto3".to_owned()),
        ..Default::default()
    };
    FileDescriptorSet { file: vec![file] }.encode_to_vec()
}

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

    fn file_descriptor_set(&self) -> Option<&'static [u8]> {
        static SET: std::sync::OnceLock<Vec<u8>> = std::sync::OnceLock::new();
        Some(SET.get_or_init(descriptor_set))
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
                &(reply as ReplyEncoder<_, _>),
            ),
            _ => call.fail(Status::unknown_method(
                "grpc.health.v1.Health/Watch streams: call it over gRPC",
            )),
        }
    }

    fn open(&self, index: usize, call: StreamCall<'_>) -> Opened {
        match index {
            1 => call.server_streaming(
                |_ctx, req: HealthCheckRequest| -> OpenStream<(), HealthCheckResponse> {
                    Ok(Box::new(Watch {
                        health: self.clone(),
                        service: req.service,
                        listed: false,
                    }))
                },
            ),
            _ => call.fail(Status::unknown_method("no such streaming method")),
        }
    }
}
