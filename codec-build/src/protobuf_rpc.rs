//! Protobuf services for the `rpc` crate, through prost-build's `ServiceGenerator`: per
//! service a trait, a `{Service}Server`, `register_{service}` and a `{Service}Client`, the
//! same shapes as for Thrift, over Kitex Protobuf.

use std::fmt::Write as _;

use prost_build::{Service, ServiceGenerator};

/// Writes the `rpc` items of each service.
#[derive(Debug)]
pub(crate) struct RpcServices {
    /// How generated code names the `rpc` crate.
    pub rpc: String,
}

fn doc(buf: &mut String, lines: &[String]) {
    for l in lines {
        let _ = writeln!(
            buf,
            "///{}",
            if l.is_empty() {
                String::new()
            } else {
                format!(" {}", l.trim_end())
            }
        );
    }
}

fn snake(name: &str) -> String {
    let mut out = String::new();
    for (i, c) in name.chars().enumerate() {
        if c.is_uppercase() {
            if i > 0 {
                out.push('_');
            }
            out.extend(c.to_lowercase());
        } else {
            out.push(c);
        }
    }
    out
}

impl ServiceGenerator for RpcServices {
    fn generate(&mut self, s: Service, buf: &mut String) {
        let rpc = &self.rpc;
        let svc = &s.name;
        let idl = &s.proto_name;
        let lower = snake(svc);
        let methods_const = format!("__{}_METHODS", lower.to_uppercase());
        let methods: Vec<_> = s
            .methods
            .iter()
            .filter(|m| !m.client_streaming && !m.server_streaming)
            .collect();
        let w = |buf: &mut String, text: String| {
            buf.push_str(&text);
            buf.push('\n');
        };
        for m in s
            .methods
            .iter()
            .filter(|m| m.client_streaming || m.server_streaming)
        {
            w(
                buf,
                format!(
                    "// `{idl}.{}` streams: not generated (streaming is not supported yet).",
                    m.proto_name
                ),
            );
        }

        doc(buf, &s.comments.leading);
        w(buf, format!("/// The `{idl}` service: implement it, and serve it with [`{svc}Server`]. Methods run on the core that owns the connection and must not block it: to wait, take the reply with `ctx.defer()`."));
        w(buf, format!("pub trait {svc}: Send + Sync + 'static {{"));
        for m in &methods {
            doc(buf, &m.comments.leading);
            w(buf, format!("    /// `{idl}.{}`.", m.proto_name));
            w(
                buf,
                format!(
                    "    fn {}(&self, ctx: &{rpc}::CallContext<'_>, req: {}) -> {rpc}::Reply<{}>;",
                    m.name, m.input_type, m.output_type
                ),
            );
        }
        w(buf, "}".into());

        for m in &methods {
            w(buf, "#[allow(non_snake_case)]".into());
            w(buf, format!("fn __{svc}_{}_reply(env: &{rpc}::wire::Envelope, r: ::std::result::Result<{}, {rpc}::Status>, out: &mut {rpc}::__private::BytesMut, h: &{rpc}::wire::Headers<'_>) {{", m.name, m.output_type));
            w(
                buf,
                format!("    {rpc}::server::encode_pb_reply(env, out, h, r)"),
            );
            w(buf, "}".into());
        }

        w(buf, format!("/// Serves an implementation of [`{svc}`]: register it with `ServerBuilder::service` or [`register_{lower}`]."));
        w(buf, format!("pub struct {svc}Server<S>(S);"));
        w(buf, format!("impl<S: {svc}> {svc}Server<S> {{"));
        w(buf, "    /// Wraps an implementation.".into());
        w(
            buf,
            "    pub fn new(service: S) -> Self {\n        Self(service)\n    }".into(),
        );
        w(buf, "}".into());
        w(buf, format!("impl<S> ::std::fmt::Debug for {svc}Server<S> {{\n    fn fmt(&self, f: &mut ::std::fmt::Formatter<'_>) -> ::std::fmt::Result {{\n        f.write_str(\"{svc}Server\")\n    }}\n}}"));
        w(
            buf,
            format!("const {methods_const}: &[{rpc}::server::MethodInfo] = &["),
        );
        for m in &methods {
            w(
                buf,
                format!(
                    "    {rpc}::server::MethodInfo {{ name: \"{}\", oneway: false }},",
                    m.proto_name
                ),
            );
        }
        w(buf, "];".into());
        w(
            buf,
            format!("impl<S: {svc}> {rpc}::server::Service for {svc}Server<S> {{"),
        );
        w(
            buf,
            format!("    fn name(&self) -> &'static str {{\n        \"{idl}\"\n    }}"),
        );
        w(buf, format!("    fn idl(&self) -> {rpc}::server::Idl {{\n        {rpc}::server::Idl::Protobuf\n    }}"));
        w(buf, format!("    fn methods(&self) -> &'static [{rpc}::server::MethodInfo] {{\n        {methods_const}\n    }}"));
        w(
            buf,
            format!("    fn call(&self, index: usize, call: {rpc}::server::Call<'_, '_, '_>) {{"),
        );
        w(buf, "        match index {".into());
        for (i, m) in methods.iter().enumerate() {
            w(buf, format!("            {i} => call.protobuf(|ctx, req: {}| self.0.{}(ctx, req), __{svc}_{}_reply),", m.input_type, m.name, m.name));
        }
        w(
            buf,
            format!(
                "            _ => call.fail({rpc}::Status::unknown_method(\"no such method\")),"
            ),
        );
        w(buf, "        }\n    }\n}".into());
        w(
            buf,
            format!("/// Registers an implementation of [`{svc}`] on a server being built."),
        );
        w(buf, format!("pub fn register_{lower}<S: {svc}>(builder: {rpc}::server::ServerBuilder, service: S) -> {rpc}::server::ServerBuilder {{\n    builder.service({svc}Server::new(service))\n}}"));

        w(buf, format!("/// A client of the `{idl}` service over Kitex Protobuf: blocking methods callable from any thread, and `_with` methods that hand the result to a callback (for many calls in flight)."));
        w(buf, "#[derive(Debug, Clone)]".into());
        w(
            buf,
            format!("pub struct {svc}Client({rpc}::client::PbClient);"),
        );
        w(buf, format!("impl {svc}Client {{"));
        w(
            buf,
            "    /// A client of the server at `addr` with the defaults (TTHeader).".into(),
        );
        w(buf, format!("    pub fn connect(addr: impl ::std::net::ToSocketAddrs) -> ::std::result::Result<Self, {rpc}::client::ClientError> {{\n        {rpc}::client::ClientBuilder::new(addr).protobuf(\"{idl}\").map(Self)\n    }}"));
        w(
            buf,
            "    /// A client with the settings of `builder`.".into(),
        );
        w(buf, format!("    pub fn from_builder(builder: {rpc}::client::ClientBuilder) -> ::std::result::Result<Self, {rpc}::client::ClientError> {{\n        builder.protobuf(\"{idl}\").map(Self)\n    }}"));
        w(
            buf,
            "    /// The same client with another per-call deadline.".into(),
        );
        w(buf, "    pub fn with_timeout(&self, timeout: ::std::option::Option<::std::time::Duration>) -> Self {\n        Self(self.0.with_timeout(timeout))\n    }".into());
        for m in &methods {
            w(
                buf,
                format!(
                    "    /// Calls `{idl}.{}` and waits for the response.",
                    m.proto_name
                ),
            );
            w(buf, format!("    pub fn {}(&self, req: {}) -> ::std::result::Result<{}, {rpc}::CallError> {{\n        self.0.call(\"{}\", req)\n    }}", m.name, m.input_type, m.output_type, m.proto_name));
            w(buf, format!("    /// Calls `{idl}.{}` and returns at once; `done` gets the response on the connection's core.", m.proto_name));
            w(buf, format!("    pub fn {}_with(&self, req: {}, done: impl FnOnce(::std::result::Result<{}, {rpc}::CallError>) + Send + 'static) {{\n        self.0.call_with(\"{}\", req, done)\n    }}", m.name, m.input_type, m.output_type, m.proto_name));
        }
        w(buf, "}".into());
    }
}
