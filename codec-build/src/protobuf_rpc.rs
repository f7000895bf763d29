//! Protobuf services for the `rpc` crate, through prost-build's `ServiceGenerator`: each
//! service becomes a [`ServiceDesc`] and is rendered by the same emitter as Thrift
//! services (trait, `{Service}Server`, `register_{service}`, `{Service}Client`), over
//! Kitex Protobuf.

use prost_build::{Service, ServiceGenerator};

use crate::gen::names::snake_case;
use crate::gen::writer::Code;
use crate::services::{emit, Idl, MethodDesc, ServiceDesc, Shape, Streaming};

/// Writes the `rpc` items of each service.
#[derive(Debug)]
pub(crate) struct RpcServices {
    /// How generated code names the `rpc` crate.
    pub rpc: String,
    /// The encoded `FileDescriptorSet` of the files compiled (for server reflection).
    pub descriptor: std::sync::Arc<Vec<u8>>,
}

/// A comment's lines as one doc comment.
fn doc(lines: &[String]) -> Option<String> {
    (!lines.is_empty()).then(|| lines.join("\n"))
}

/// The description of a protobuf service.
pub(crate) fn describe(s: &Service, descriptor: Option<std::sync::Arc<Vec<u8>>>) -> ServiceDesc {
    ServiceDesc {
        descriptor,
        idl: Idl::Protobuf,
        wire_name: s.proto_name.clone(),
        full_name: if s.package.is_empty() {
            s.proto_name.clone()
        } else {
            format!("{}.{}", s.package, s.proto_name)
        },
        rust_name: s.name.clone(),
        snake: snake_case(&s.name),
        doc: doc(&s.comments.leading),
        methods: s
            .methods
            .iter()
            .map(|m| MethodDesc {
                rust_name: m.name.clone(),
                wire_name: m.proto_name.clone(),
                doc: doc(&m.comments.leading),
                params: vec![("req".to_owned(), m.input_type.clone())],
                ret: m.output_type.clone(),
                oneway: false,
                streaming: match (m.client_streaming, m.server_streaming) {
                    (false, false) => Streaming::Unary,
                    (true, false) => Streaming::Client,
                    (false, true) => Streaming::Server,
                    (true, true) => Streaming::Bidi,
                },
                shape: Shape::Protobuf,
            })
            .collect(),
    }
}

impl ServiceGenerator for RpcServices {
    fn generate(&mut self, s: Service, buf: &mut String) {
        let mut code = Code::default();
        // Generated protobuf code names `prost` through the `rpc` crate's re-export.
        let rt = format!("{}::__private::netpoll_codec", self.rpc);
        emit(
            &mut code,
            &describe(&s, Some(self.descriptor.clone())),
            &self.rpc,
            &rt,
        );
        buf.push_str(&code.finish());
    }
}
