//! One description of RPC services ([`ServiceDesc`]), built from Thrift (`gen::rpc`) and
//! from Protobuf (`protobuf_rpc`), and one emitter ([`emit`]) that renders, for either,
//! the same items: the service trait, `{Service}Server`, `register_{service}` and
//! `{Service}Client`. Where the two IDLs differ (how arguments travel, how results and
//! declared exceptions are packed), the description says so in [`Shape`].

mod emit;

pub(crate) use emit::emit;

/// Which IDL a service comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Idl {
    Thrift,
    Protobuf,
}

/// How a method streams.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Streaming {
    /// One request, one reply (or none, for a oneway method).
    Unary,
    /// The client sends a stream.
    Client,
    /// The server sends a stream.
    Server,
    /// Both do.
    Bidi,
}

/// One service, whatever its IDL.
#[derive(Debug, Clone)]
pub(crate) struct ServiceDesc {
    pub idl: Idl,
    /// The name callers use on the wire (TTHeader's `isn`).
    pub wire_name: String,
    /// The fully qualified name (`package.Service` for Protobuf, as gRPC paths name it).
    pub full_name: String,
    /// The Rust name of the trait (and prefix of the server and client types).
    pub rust_name: String,
    /// `register_{snake}`.
    pub snake: String,
    /// The doc comment.
    pub doc: Option<String>,
    /// The methods, inherited ones (Thrift `extends`) first.
    pub methods: Vec<MethodDesc>,
    /// The encoded `FileDescriptorSet` of the files the service was compiled from (its
    /// own and what they import), for gRPC server reflection; Protobuf only.
    pub descriptor: Option<std::sync::Arc<Vec<u8>>>,
}

/// One method of a service.
#[derive(Debug, Clone)]
pub(crate) struct MethodDesc {
    /// The Rust method name.
    pub rust_name: String,
    /// The name on the wire.
    pub wire_name: String,
    /// The doc comment.
    pub doc: Option<String>,
    /// `(rust name, rust type)` of each argument the handler and the client take.
    pub params: Vec<(String, String)>,
    /// The Rust type of a successful result (`()` for void).
    pub ret: String,
    /// Whether callers expect no reply.
    pub oneway: bool,
    pub streaming: Streaming,
    pub shape: Shape,
}

/// What differs between the IDLs for one method.
#[derive(Debug, Clone)]
pub(crate) enum Shape {
    /// Arguments travel in a generated `{prefix}Args` struct and results in a
    /// `{prefix}Result` struct (success field and one field per declared exception).
    Thrift {
        /// Path prefix of the `Args`, `Result` and `Error` types (qualified when the
        /// method is inherited from a service of another file).
        types: String,
        /// Unique prefix of the helper functions emitted for this service.
        local: String,
        /// Whether the function returns a value.
        returns: bool,
        /// `(variant, rust type, field name)` per declared exception.
        throws: Vec<(String, String, String)>,
    },
    /// The single request message is the argument; the response message is the result.
    Protobuf,
}

impl MethodDesc {
    /// The error type of the handler's reply.
    pub(crate) fn error_type(&self, rpc: &str) -> String {
        match &self.shape {
            Shape::Thrift { types, throws, .. } if !throws.is_empty() => format!("{types}Error"),
            _ => format!("{rpc}::Status"),
        }
    }

    /// The error type of the client's result.
    pub(crate) fn client_error(&self, rpc: &str) -> String {
        match &self.shape {
            Shape::Thrift { types, throws, .. } if !throws.is_empty() => {
                format!("{rpc}::CallError<{types}Error>")
            }
            _ => format!("{rpc}::CallError"),
        }
    }

    /// The helper-function prefix.
    pub(crate) fn local(&self, svc: &str) -> String {
        match &self.shape {
            Shape::Thrift { local, .. } => local.clone(),
            Shape::Protobuf => format!("{svc}_{}", self.rust_name),
        }
    }
}
