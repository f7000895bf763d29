//! gRPC server reflection (`grpc.reflection.v1.ServerReflection` and its older name
//! `grpc.reflection.v1alpha.ServerReflection`), as tonic-reflection offers: tools such as
//! grpcurl and grpcio's reflection client list a server's services and fetch their
//! `.proto` descriptors to call them without the files.
//!
//! [`ServerBuilder::reflection`](super::ServerBuilder::reflection) turns it on: the server
//! then serves the descriptors its Protobuf services were compiled with (generated code
//! embeds them). The stream answers each request as it arrives, on the connection's core.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use prost::Message;

use super::service::{Call, Idl, MethodInfo, Service};
use super::stream::{OpenStream, Opened, Outbound, StreamCall, StreamHandler, StreamKind};
use crate::Status;

/// `ServerReflectionRequest`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct ReflectionRequest {
    /// `host` (unused).
    #[prost(string, tag = "1")]
    pub host: String,
    /// What is asked.
    #[prost(oneof = "Request", tags = "3, 4, 5, 6, 7")]
    pub request: Option<Request>,
}

/// The `message_request` of a [`ReflectionRequest`].
#[derive(Clone, PartialEq, prost::Oneof)]
pub enum Request {
    /// The file of this name.
    #[prost(string, tag = "3")]
    FileByFilename(String),
    /// The file that defines this fully qualified symbol.
    #[prost(string, tag = "4")]
    FileContainingSymbol(String),
    /// The file that defines an extension (none are served).
    #[prost(message, tag = "5")]
    FileContainingExtension(ExtensionRequest),
    /// The extension numbers of a type (none are served).
    #[prost(string, tag = "6")]
    AllExtensionNumbersOfType(String),
    /// The services served.
    #[prost(string, tag = "7")]
    ListServices(String),
}

/// `ExtensionRequest`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct ExtensionRequest {
    /// The extended type.
    #[prost(string, tag = "1")]
    pub containing_type: String,
    /// The extension's number.
    #[prost(int32, tag = "2")]
    pub extension_number: i32,
}

/// `ServerReflectionResponse`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct ReflectionResponse {
    /// `valid_host`.
    #[prost(string, tag = "1")]
    pub valid_host: String,
    /// The request answered.
    #[prost(message, optional, tag = "2")]
    pub original_request: Option<ReflectionRequest>,
    /// The answer.
    #[prost(oneof = "Response", tags = "4, 5, 6, 7")]
    pub response: Option<Response>,
}

/// The `message_response` of a [`ReflectionResponse`].
#[derive(Clone, PartialEq, prost::Oneof)]
pub enum Response {
    /// Encoded `FileDescriptorProto`s.
    #[prost(message, tag = "4")]
    FileDescriptor(FileDescriptorResponse),
    /// Extension numbers.
    #[prost(message, tag = "5")]
    AllExtensionNumbers(ExtensionNumberResponse),
    /// The services.
    #[prost(message, tag = "6")]
    ListServices(ListServiceResponse),
    /// Why the request could not be answered.
    #[prost(message, tag = "7")]
    Error(ErrorResponse),
}

/// `FileDescriptorResponse`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct FileDescriptorResponse {
    /// Each an encoded `FileDescriptorProto`: the file asked for, then what it imports.
    #[prost(bytes = "vec", repeated, tag = "1")]
    pub file_descriptor_proto: Vec<Vec<u8>>,
}

/// `ExtensionNumberResponse`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct ExtensionNumberResponse {
    /// The type.
    #[prost(string, tag = "1")]
    pub base_type_name: String,
    /// Its extension numbers.
    #[prost(int32, repeated, tag = "2")]
    pub extension_number: Vec<i32>,
}

/// `ListServiceResponse`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct ListServiceResponse {
    /// The services.
    #[prost(message, repeated, tag = "1")]
    pub service: Vec<ServiceResponse>,
}

/// `ServiceResponse`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct ServiceResponse {
    /// The fully qualified name.
    #[prost(string, tag = "1")]
    pub name: String,
}

/// `ErrorResponse`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct ErrorResponse {
    /// A gRPC status code.
    #[prost(int32, tag = "1")]
    pub error_code: i32,
    /// Why.
    #[prost(string, tag = "2")]
    pub error_message: String,
}

/// What reflection serves: the services, and the files that define them.
#[derive(Debug, Default)]
struct Index {
    services: Vec<String>,
    /// Each file, encoded, and the files it imports.
    files: HashMap<String, (Vec<u8>, Vec<String>)>,
    /// Each fully qualified symbol (package, messages, enums, services, methods) and the
    /// file that defines it.
    symbols: HashMap<String, String>,
}

impl Index {
    fn add_set(&mut self, set: &[u8]) {
        let Ok(set) = prost_types::FileDescriptorSet::decode(set) else {
            tracing::warn!("a service's file descriptor set does not decode; not reflected");
            return;
        };
        for file in set.file {
            let name = file.name().to_owned();
            if self.files.contains_key(&name) {
                continue;
            }
            let package = file.package().to_owned();
            let qualify = |n: &str| {
                if package.is_empty() {
                    n.to_owned()
                } else {
                    format!("{package}.{n}")
                }
            };
            let mut symbols = Vec::new();
            if !package.is_empty() {
                symbols.push(package.clone());
            }
            fn messages(prefix: &str, m: &[prost_types::DescriptorProto], out: &mut Vec<String>) {
                for d in m {
                    let n = format!("{prefix}.{}", d.name());
                    for e in &d.enum_type {
                        out.push(format!("{n}.{}", e.name()));
                    }
                    messages(&n, &d.nested_type, out);
                    out.push(n);
                }
            }
            let root = if package.is_empty() {
                String::new()
            } else {
                package.clone()
            };
            let mut nested = Vec::new();
            messages(&root, &file.message_type, &mut nested);
            symbols.extend(
                nested
                    .into_iter()
                    .map(|s| s.trim_start_matches('.').to_owned()),
            );
            symbols.extend(file.enum_type.iter().map(|e| qualify(e.name())));
            for svc in &file.service {
                let full = qualify(svc.name());
                symbols.extend(svc.method.iter().map(|m| format!("{full}.{}", m.name())));
                symbols.push(full);
            }
            for s in symbols {
                self.symbols.entry(s).or_insert_with(|| name.clone());
            }
            let deps = file.dependency.clone();
            self.files.insert(name, (file.encode_to_vec(), deps));
        }
    }

    /// The file `name` and every file it imports, each once, the file first.
    fn closure(&self, name: &str) -> Option<Vec<Vec<u8>>> {
        self.files.get(name)?;
        let mut out = Vec::new();
        let mut seen = HashSet::new();
        let mut todo = vec![name.to_owned()];
        while let Some(n) = todo.pop() {
            if !seen.insert(n.clone()) {
                continue;
            }
            if let Some((bytes, deps)) = self.files.get(&n) {
                out.push(bytes.clone());
                todo.extend(deps.iter().rev().cloned());
            }
        }
        Some(out)
    }

    fn answer(&self, req: ReflectionRequest) -> ReflectionResponse {
        let not_found = |what: String| {
            Response::Error(ErrorResponse {
                error_code: 5, // NOT_FOUND
                error_message: what,
            })
        };
        let response = match &req.request {
            Some(Request::ListServices(_)) => Response::ListServices(ListServiceResponse {
                service: self
                    .services
                    .iter()
                    .map(|name| ServiceResponse { name: name.clone() })
                    .collect(),
            }),
            Some(Request::FileByFilename(f)) => match self.closure(f) {
                Some(files) => Response::FileDescriptor(FileDescriptorResponse {
                    file_descriptor_proto: files,
                }),
                None => not_found(format!("no file {f:?}")),
            },
            Some(Request::FileContainingSymbol(sym)) => {
                match self.symbols.get(sym).and_then(|f| self.closure(f)) {
                    Some(files) => Response::FileDescriptor(FileDescriptorResponse {
                        file_descriptor_proto: files,
                    }),
                    None => not_found(format!("no symbol {sym:?}")),
                }
            }
            Some(Request::FileContainingExtension(e)) => not_found(format!(
                "no extension {} of {:?}",
                e.extension_number, e.containing_type
            )),
            Some(Request::AllExtensionNumbersOfType(t)) if self.symbols.contains_key(t) => {
                Response::AllExtensionNumbers(ExtensionNumberResponse {
                    base_type_name: t.clone(),
                    extension_number: Vec::new(),
                })
            }
            Some(Request::AllExtensionNumbersOfType(t)) => not_found(format!("no type {t:?}")),
            None => Response::Error(ErrorResponse {
                error_code: 3, // INVALID_ARGUMENT
                error_message: "an empty request".to_owned(),
            }),
        };
        ReflectionResponse {
            valid_host: req.host.clone(),
            original_request: Some(req),
            response: Some(response),
        }
    }
}

/// The reflection service, under one of its two names.
pub(crate) struct Reflection {
    index: Arc<Index>,
    full_name: &'static str,
}

impl Reflection {
    /// Both names of the service, serving what `services` were compiled from.
    pub(crate) fn for_services(services: &[Arc<dyn Service>]) -> [Reflection; 2] {
        let mut index = Index::default();
        let mut seen = HashSet::new();
        for s in services {
            if s.idl() != Idl::Protobuf {
                continue;
            }
            if let Some(set) = s.file_descriptor_set() {
                if seen.insert(set.as_ptr() as usize) {
                    index.add_set(set);
                }
            }
            index.services.push(s.full_name().to_owned());
        }
        for name in NAMES {
            index.services.push(name.to_owned());
        }
        index.services.sort();
        index.services.dedup();
        let index = Arc::new(index);
        NAMES.map(|full_name| Reflection {
            index: index.clone(),
            full_name,
        })
    }
}

const NAMES: [&str; 2] = [
    "grpc.reflection.v1.ServerReflection",
    "grpc.reflection.v1alpha.ServerReflection",
];

const METHODS: &[MethodInfo] = &[MethodInfo {
    name: "ServerReflectionInfo",
    oneway: false,
    kind: StreamKind::Bidi,
}];

/// One reflection stream: each request answered as it comes.
struct Answers(Arc<Index>);

impl StreamHandler<ReflectionRequest, ReflectionResponse> for Answers {
    fn on_message(&mut self, req: ReflectionRequest, out: &mut Outbound<'_, ReflectionResponse>) {
        out.send(&self.0.answer(req));
    }
}

impl Service for Reflection {
    fn name(&self) -> &'static str {
        // Two services of one simple name: each is known by its full name.
        self.full_name
    }

    fn full_name(&self) -> &'static str {
        self.full_name
    }

    fn idl(&self) -> Idl {
        Idl::Protobuf
    }

    fn methods(&self) -> &'static [MethodInfo] {
        METHODS
    }

    fn call(&self, _index: usize, call: Call<'_, '_, '_>) {
        call.fail(Status::unknown_method(
            "ServerReflectionInfo streams: call it over gRPC",
        ))
    }

    fn open(&self, index: usize, call: StreamCall<'_>) -> Opened {
        match index {
            0 => call.streaming(
                |_ctx| -> OpenStream<ReflectionRequest, ReflectionResponse> {
                    Ok(Box::new(Answers(self.index.clone())))
                },
            ),
            _ => call.fail(Status::unknown_method("no such streaming method")),
        }
    }
}
