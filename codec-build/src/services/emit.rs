//! Renders a [`ServiceDesc`]: the service trait, its reply encoders, `{Service}Server`,
//! `register_{service}`, the client's result unpacking and `{Service}Client`.

use super::{Idl, MethodDesc, ServiceDesc, Shape, Streaming};
use crate::gen::writer::Code;

/// Appends the `rpc` items of `s` to `code`. `rpc` and `rt` are how generated code names
/// the `rpc` and `codec` crates.
pub(crate) fn emit(code: &mut Code, s: &ServiceDesc, rpc: &str, rt: &str) {
    let all: Vec<&MethodDesc> = s.methods.iter().collect();
    let unary: Vec<&MethodDesc> = s
        .methods
        .iter()
        .filter(|m| m.streaming == Streaming::Unary)
        .collect();
    trait_(code, s, &all, rpc);
    reply_encoders(code, s, &unary, rpc);
    server(code, s, &all, rpc);
    unpackers(code, s, &unary, rpc, rt);
    client(code, s, &all, rpc);
}

/// Bytes as the inside of a byte string literal.
fn escape_bytes(b: &[u8]) -> String {
    let mut s = String::with_capacity(b.len() * 2);
    for &c in b {
        match c {
            b'"' => s.push_str("\\\""),
            b'\\' => s.push_str("\\\\"),
            0x20..=0x7e => s.push(c as char),
            _ => s.push_str(&format!("\\x{c:02x}")),
        }
    }
    s
}

fn params(m: &MethodDesc) -> String {
    m.params
        .iter()
        .map(|(n, t)| format!(", {n}: {t}"))
        .collect()
}

fn trait_(code: &mut Code, s: &ServiceDesc, methods: &[&MethodDesc], rpc: &str) {
    let (svc, idl) = (&s.rust_name, &s.wire_name);
    code.line("");
    code.doc(s.doc.as_deref());
    code.line(format!(
        "/// The `{idl}` service: implement it, and serve it with [`{svc}Server`]. Methods \
         run on the core that owns the connection and must not block it: to wait, take \
         the reply with `ctx.defer()`."
    ));
    code.open(format!("pub trait {svc}: Send + Sync + 'static {{"));
    for m in methods {
        code.doc(m.doc.as_deref());
        if m.doc.is_none() {
            code.line(format!("/// `{idl}.{}`.", m.wire_name));
        }
        let p = params(m);
        let input = m.params.first().map(|(_, t)| t.as_str()).unwrap_or("()");
        if m.streaming == Streaming::Server {
            code.line(format!(
                "fn {}(&self, ctx: &{rpc}::CallContext<'_>{p}) -> {rpc}::server::OpenStream<(), {}>;",
                m.rust_name, m.ret
            ));
        } else if m.streaming != Streaming::Unary {
            code.line(format!(
                "fn {}(&self, ctx: &{rpc}::CallContext<'_>) -> {rpc}::server::OpenStream<{input}, {}>;",
                m.rust_name, m.ret
            ));
        } else if m.oneway {
            code.line(format!(
                "fn {}(&self, ctx: &{rpc}::CallContext<'_>{p});",
                m.rust_name
            ));
        } else {
            code.line(format!(
                "fn {}(&self, ctx: &{rpc}::CallContext<'_>{p}) -> {rpc}::Reply<{}, {}>;",
                m.rust_name,
                m.ret,
                m.error_type(rpc)
            ));
        }
    }
    code.close("}");
}

fn reply_encoders(code: &mut Code, s: &ServiceDesc, methods: &[&MethodDesc], rpc: &str) {
    for m in methods.iter().filter(|m| !m.oneway) {
        let local = m.local(&s.rust_name);
        code.line("");
        code.line("#[allow(non_snake_case)]");
        code.open(format!(
            "fn __{local}_reply(env: &{rpc}::wire::Envelope, r: ::std::result::Result<{}, {}>, \
             out: &mut {rpc}::__private::BytesMut, h: &{rpc}::wire::Headers<'_>) {{",
            m.ret,
            m.error_type(rpc)
        ));
        match &m.shape {
            Shape::Protobuf => {
                code.line(format!("{rpc}::server::encode_pb_reply(env, out, h, r)"));
            }
            Shape::Thrift {
                types,
                returns,
                throws,
                ..
            } => {
                let result = |set: Option<&str>| -> String {
                    let mut fields = Vec::new();
                    if *returns {
                        fields.push(if set == Some("success") {
                            "success: ::std::option::Option::Some(v)".to_owned()
                        } else {
                            "success: ::std::option::Option::None".to_owned()
                        });
                    }
                    for (_, _, name) in throws {
                        fields.push(if set == Some(name.as_str()) {
                            format!("{name}: ::std::option::Option::Some(e)")
                        } else {
                            format!("{name}: ::std::option::Option::None")
                        });
                    }
                    format!("{types}Result {{ {} }}", fields.join(", "))
                };
                code.open("let r = match r {");
                let ok = if *returns { "v" } else { "()" };
                code.line(format!(
                    "::std::result::Result::Ok({ok}) => ::std::result::Result::Ok({}),",
                    result(Some("success"))
                ));
                if throws.is_empty() {
                    code.line("::std::result::Result::Err(s) => ::std::result::Result::Err(s),");
                } else {
                    for (variant, _, name) in throws {
                        code.line(format!(
                            "::std::result::Result::Err({types}Error::{variant}(e)) => ::std::result::Result::Ok({}),",
                            result(Some(name))
                        ));
                    }
                    code.line(format!(
                        "::std::result::Result::Err({types}Error::Status(s)) => ::std::result::Result::Err(s),"
                    ));
                }
                code.close("};");
                code.line(format!(
                    "{rpc}::server::encode_thrift_reply(env, out, h, r)"
                ));
            }
        }
        code.close("}");
    }
}

fn server(code: &mut Code, s: &ServiceDesc, methods: &[&MethodDesc], rpc: &str) {
    let (svc, idl, snake) = (&s.rust_name, &s.wire_name, &s.snake);
    let methods_const = format!("__{}_METHODS", snake.to_uppercase());
    code.line("");
    code.line(format!(
        "/// Serves an implementation of [`{svc}`]: register it with \
         `ServerBuilder::service` or [`register_{snake}`]."
    ));
    code.line(format!("pub struct {svc}Server<S>(S);"));
    code.line("");
    code.open(format!("impl<S: {svc}> {svc}Server<S> {{"));
    code.line("/// Wraps an implementation.");
    code.open("pub fn new(service: S) -> Self {");
    code.line("Self(service)");
    code.close("}");
    code.close("}");
    code.line("");
    code.open(format!("impl<S> ::std::fmt::Debug for {svc}Server<S> {{"));
    code.open("fn fmt(&self, f: &mut ::std::fmt::Formatter<'_>) -> ::std::fmt::Result {");
    code.line(format!("f.write_str(\"{svc}Server\")"));
    code.close("}");
    code.close("}");
    if let Some(d) = &s.descriptor {
        code.line("");
        code.line(format!(
            "/// The `FileDescriptorSet` `{svc}` was compiled from, for gRPC server reflection."
        ));
        code.line(format!(
            "const __{}_DESCRIPTOR: &[u8] = b\"{}\";",
            snake.to_uppercase(),
            escape_bytes(d)
        ));
    }
    code.line("");
    code.open(format!(
        "const {methods_const}: &[{rpc}::server::MethodInfo] = &["
    ));
    for m in methods {
        let kind = match m.streaming {
            Streaming::Unary => "Unary",
            Streaming::Client => "Client",
            Streaming::Server => "Server",
            Streaming::Bidi => "Bidi",
        };
        code.line(format!(
            "{rpc}::server::MethodInfo {{ name: \"{}\", oneway: {}, kind: {rpc}::server::StreamKind::{kind} }},",
            m.wire_name, m.oneway
        ));
    }
    code.close("];");
    code.line("");
    code.open(format!(
        "impl<S: {svc}> {rpc}::server::Service for {svc}Server<S> {{"
    ));
    code.open("fn name(&self) -> &'static str {");
    code.line(format!("\"{idl}\""));
    code.close("}");
    if s.full_name != s.wire_name {
        code.open("fn full_name(&self) -> &'static str {");
        code.line(format!("\"{}\"", s.full_name));
        code.close("}");
    }
    code.open(format!("fn idl(&self) -> {rpc}::server::Idl {{"));
    code.line(match s.idl {
        Idl::Thrift => format!("{rpc}::server::Idl::Thrift"),
        Idl::Protobuf => format!("{rpc}::server::Idl::Protobuf"),
    });
    code.close("}");
    code.open(format!(
        "fn methods(&self) -> &'static [{rpc}::server::MethodInfo] {{"
    ));
    code.line(methods_const.clone());
    code.close("}");
    if s.descriptor.is_some() {
        code.open("fn file_descriptor_set(&self) -> ::std::option::Option<&'static [u8]> {");
        code.line(format!(
            "::std::option::Option::Some(__{}_DESCRIPTOR)",
            snake.to_uppercase()
        ));
        code.close("}");
    }
    code.open(format!(
        "fn call(&self, index: usize, call: {rpc}::server::Call<'_, '_, '_>) {{"
    ));
    code.open("match index {");
    for (i, m) in methods.iter().enumerate() {
        if m.streaming != Streaming::Unary {
            continue;
        }
        let local = m.local(svc);
        match &m.shape {
            Shape::Thrift { types, .. } => {
                let args: String = m.params.iter().map(|(n, _)| format!(", a.{n}")).collect();
                let a = if m.params.is_empty() { "_a" } else { "a" };
                if m.oneway {
                    code.line(format!(
                        "{i} => call.thrift_oneway(|ctx, {a}: {types}Args| self.0.{}(ctx{args})),",
                        m.rust_name
                    ));
                } else {
                    code.line(format!(
                        "{i} => call.thrift(|ctx, {a}: {types}Args| self.0.{}(ctx{args}), &(__{local}_reply as {rpc}::server::ReplyEncoder<_, _>)),",
                        m.rust_name
                    ));
                }
            }
            Shape::Protobuf => {
                let input = &m.params[0].1;
                code.line(format!(
                    "{i} => call.protobuf(|ctx, req: {input}| self.0.{}(ctx, req), &(__{local}_reply as {rpc}::server::ReplyEncoder<_, _>)),",
                    m.rust_name
                ));
            }
        }
    }
    code.line(format!(
        "_ => call.fail({rpc}::Status::unknown_method(\"no such method\")),"
    ));
    code.close("}");
    code.close("}");
    if methods.iter().any(|m| m.streaming != Streaming::Unary) {
        code.open(format!(
            "fn open(&self, index: usize, call: {rpc}::server::StreamCall<'_>) -> {rpc}::server::Opened {{"
        ));
        code.open("match index {");
        for (i, m) in methods.iter().enumerate() {
            match m.streaming {
                Streaming::Unary => {}
                Streaming::Server => {
                    let input = &m.params[0].1;
                    code.line(format!(
                        "{i} => call.server_streaming(|ctx, req: {input}| self.0.{}(ctx, req)),",
                        m.rust_name
                    ));
                }
                Streaming::Client | Streaming::Bidi => code.line(format!(
                    "{i} => call.streaming(|ctx| self.0.{}(ctx)),",
                    m.rust_name
                )),
            }
        }
        code.line(format!(
            "_ => call.fail({rpc}::Status::unknown_method(\"no such streaming method\")),"
        ));
        code.close("}");
        code.close("}");
    }
    code.close("}");
    code.line("");
    code.line(format!(
        "/// Registers an implementation of [`{svc}`] on a server being built."
    ));
    code.open(format!(
        "pub fn register_{snake}<S: {svc}>(builder: {rpc}::server::ServerBuilder, service: S) -> {rpc}::server::ServerBuilder {{"
    ));
    code.line(format!("builder.service({svc}Server::new(service))"));
    code.close("}");
}

/// Thrift results arrive packed in `{Method}Result` structs: unpack them for the client.
fn unpackers(code: &mut Code, s: &ServiceDesc, methods: &[&MethodDesc], rpc: &str, rt: &str) {
    for m in methods.iter().filter(|m| !m.oneway) {
        let Shape::Thrift {
            types,
            returns,
            throws,
            ..
        } = &m.shape
        else {
            continue;
        };
        let local = m.local(&s.rust_name);
        code.line("");
        code.line("#[allow(non_snake_case)]");
        code.open(format!(
            "fn __{local}_unpack({r}: {types}Result) -> ::std::result::Result<{}, {}> {{",
            m.ret,
            m.client_error(rpc),
            r = if !returns && throws.is_empty() {
                "_r"
            } else {
                "r"
            }
        ));
        if *returns {
            code.open("if let ::std::option::Option::Some(v) = r.success {");
            code.line("return ::std::result::Result::Ok(v);");
            code.close("}");
        }
        for (variant, _, name) in throws {
            code.open(format!(
                "if let ::std::option::Option::Some(e) = r.{name} {{"
            ));
            code.line(format!(
                "return ::std::result::Result::Err({rpc}::CallError::Declared({types}Error::{variant}(e)));"
            ));
            code.close("}");
        }
        if *returns {
            code.line(format!(
                "::std::result::Result::Err({rpc}::CallError::Application({rt}::thrift::ApplicationException::new({rt}::thrift::ApplicationExceptionKind::MissingResult, \"{}: the reply has no result\")))",
                m.wire_name
            ));
        } else {
            code.line("::std::result::Result::Ok(())");
        }
        code.close("}");
    }
}

fn client(code: &mut Code, s: &ServiceDesc, methods: &[&MethodDesc], rpc: &str) {
    let (svc, idl) = (&s.rust_name, &s.wire_name);
    let (inner, build, defaults) = match s.idl {
        Idl::Thrift => (
            "ThriftClient",
            format!("thrift(\"{idl}\")"),
            "TTHeader, binary",
        ),
        Idl::Protobuf => (
            "PbClient",
            format!("protobuf_service(\"{idl}\", \"{}\")", s.full_name),
            "TTHeader",
        ),
    };
    code.line("");
    code.line(format!(
        "/// A client of the `{idl}` service: blocking methods callable from any thread, \
         and `_with` methods that hand the result to a callback (for many calls in flight)."
    ));
    code.line("#[derive(Debug, Clone)]");
    code.line(format!("pub struct {svc}Client({rpc}::client::{inner});"));
    code.line("");
    code.open(format!("impl {svc}Client {{"));
    code.line(format!(
        "/// A client of the server at `addr` (`host:port` or `unix:/path`) with the defaults ({defaults})."
    ));
    code.open(format!(
        "pub fn connect(addr: impl {rpc}::discovery::ToAddrs) -> ::std::result::Result<Self, {rpc}::client::ClientError> {{"
    ));
    code.line(format!(
        "{rpc}::client::ClientBuilder::new(addr).{build}.map(Self)"
    ));
    code.close("}");
    code.line(
        "/// A client of the service registered as `service` (found by the builder's \
         resolver, or its host ports), as Kitex's `NewClient(service, options...)`.",
    );
    code.open(format!(
        "pub fn new(service: &str, builder: {rpc}::client::ClientBuilder) -> ::std::result::Result<Self, {rpc}::client::ClientError> {{"
    ));
    code.line(format!("builder.destination(service).{build}.map(Self)"));
    code.close("}");
    code.line("/// A client with the settings of `builder`.");
    code.open(format!(
        "pub fn from_builder(builder: {rpc}::client::ClientBuilder) -> ::std::result::Result<Self, {rpc}::client::ClientError> {{"
    ));
    code.line(format!("builder.{build}.map(Self)"));
    code.close("}");
    code.line("/// The untyped client underneath (for its statistics, or keyed calls).");
    code.open(format!(
        "pub fn client(&self) -> &{rpc}::client::{inner} {{"
    ));
    code.line("&self.0");
    code.close("}");
    code.line("/// The same client with another per-call deadline.");
    code.open(
        "pub fn with_timeout(&self, timeout: ::std::option::Option<::std::time::Duration>) -> Self {",
    );
    code.line("Self(self.0.with_timeout(timeout))");
    code.close("}");
    code.line(
        "/// The same client for calls made while serving `ctx`: they get at most its \
         caller's remaining time, carry its persistent metadata on, and join its trace.",
    );
    code.open(format!(
        "pub fn within(&self, ctx: &{rpc}::server::CallContext<'_>) -> Self {{"
    ));
    code.line("Self(self.0.within(ctx))");
    code.close("}");
    code.line(
        "/// The same client, making its calls as children of span `parent` (W3C trace context).",
    );
    code.open(format!(
        "pub fn with_trace(&self, parent: {rpc}::trace::TraceContext) -> Self {{"
    ));
    code.line("Self(self.0.with_trace(parent))");
    code.close("}");
    for (name, doc) in [
        (
            "with_header",
            "sending string header `key: value` with every call",
        ),
        (
            "with_transient",
            "sending `key: value` to the next hop only (`RPC_TRANSIT_`)",
        ),
        (
            "with_persistent",
            "sending `key: value` down the call chain (`RPC_PERSIST_`)",
        ),
    ] {
        code.line(format!("/// The same client, {doc}."));
        code.open(format!(
            "pub fn {name}(&self, key: &str, value: impl ::std::convert::Into<{rpc}::__private::Bytes>) -> Self {{"
        ));
        code.line(format!("Self(self.0.{name}(key, value))"));
        code.close("}");
    }
    code.line("/// The same client, with `key` for consistent hashing on its calls.");
    code.open("pub fn with_key(&self, key: u64) -> Self {");
    code.line("Self(self.0.with_key(key))");
    code.close("}");
    for m in methods.iter().filter(|m| m.streaming != Streaming::Unary) {
        let wire = &m.wire_name;
        let input = m.params.first().map(|(_, t)| t.as_str()).unwrap_or("()");
        let ty = format!("{rpc}::client::ClientStream<{input}, {}>", m.ret);
        code.doc(m.doc.as_deref());
        if m.streaming == Streaming::Server {
            code.line(format!(
                "/// Calls `{idl}.{wire}` over gRPC: sends `req`, then read the replies with \
                 `recv` (from any thread but a netpoll core)."
            ));
            code.open(format!(
                "pub fn {}(&self, req: {input}) -> ::std::result::Result<{ty}, {rpc}::CallError> {{",
                m.rust_name
            ));
            code.line(format!("let s = self.0.stream(\"{wire}\")?;"));
            code.line("s.send(&req)?;");
            code.line("s.close_send();");
            code.line("::std::result::Result::Ok(s)");
        } else {
            code.line(format!(
                "/// Opens `{idl}.{wire}` over gRPC: `send` the requests, `close_send`, and \
                 `recv` the replies (or `finish` for the one reply of client streaming)."
            ));
            code.open(format!(
                "pub fn {}(&self) -> ::std::result::Result<{ty}, {rpc}::CallError> {{",
                m.rust_name
            ));
            code.line(format!("self.0.stream(\"{wire}\")"));
        }
        code.close("}");
    }
    for m in methods.iter().filter(|m| m.streaming == Streaming::Unary) {
        let p = params(m);
        let wire = &m.wire_name;
        let (request, widen, unpack) = match &m.shape {
            Shape::Thrift { types, throws, .. } => {
                let fields: Vec<&str> = m.params.iter().map(|(n, _)| n.as_str()).collect();
                (
                    format!("{types}Args {{ {} }}", fields.join(", ")),
                    if throws.is_empty() {
                        ""
                    } else {
                        ".map_err(|e| e.widen())"
                    },
                    Some((types.clone(), m.local(svc))),
                )
            }
            Shape::Protobuf => (m.params[0].0.clone(), "", None),
        };
        code.doc(m.doc.as_deref());
        if m.oneway {
            code.line(format!(
                "/// Sends `{idl}.{wire}` (oneway: nothing comes back)."
            ));
            code.open(format!("pub fn {}(&self{p}) {{", m.rust_name));
            code.line(format!("self.0.oneway(\"{wire}\", {request})"));
            code.close("}");
            continue;
        }
        let err = m.client_error(rpc);
        code.line(format!(
            "/// Calls `{idl}.{wire}` and waits for its result."
        ));
        code.open(format!(
            "pub fn {}(&self{p}) -> ::std::result::Result<{}, {err}> {{",
            m.rust_name, m.ret
        ));
        match &unpack {
            Some((types, local)) => {
                code.line(format!(
                    "let r: {types}Result = self.0.call(\"{wire}\", {request}){widen}?;"
                ));
                code.line(format!("__{local}_unpack(r)"));
            }
            None => code.line(format!("self.0.call(\"{wire}\", {request})")),
        }
        code.close("}");
        code.line(format!(
            "/// Calls `{idl}.{wire}` and returns at once; `done` gets the result on the \
             connection's core."
        ));
        code.open(format!(
            "pub fn {}_with(&self{p}, done: impl FnOnce(::std::result::Result<{}, {err}>) + Send + 'static) {{",
            m.rust_name, m.ret
        ));
        match &unpack {
            Some((types, local)) => code.line(format!(
                "self.0.call_with(\"{wire}\", {request}, move |r: ::std::result::Result<{types}Result, {rpc}::CallError>| done(r{widen}.and_then(__{local}_unpack)))"
            )),
            None => code.line(format!("self.0.call_with(\"{wire}\", {request}, done)")),
        }
        code.close("}");
        code.line(format!(
            "/// Calls `{idl}.{wire}`; the future resolves to its result (await it from any \
             executor)."
        ));
        code.open(format!(
            "pub async fn {}_async(&self{p}) -> ::std::result::Result<{}, {err}> {{",
            m.rust_name, m.ret
        ));
        match &unpack {
            Some((types, local)) => {
                code.line(format!(
                    "let r: {types}Result = self.0.call_async(\"{wire}\", {request}).await{widen}?;"
                ));
                code.line(format!("__{local}_unpack(r)"));
            }
            None => code.line(format!("self.0.call_async(\"{wire}\", {request}).await")),
        }
        code.close("}");
    }
    code.close("}");
}
