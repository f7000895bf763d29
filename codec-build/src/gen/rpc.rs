//! Services for the `rpc` crate: per service, a trait with one synchronous method per
//! function, a `{Service}Server` implementing `rpc::server::Service` around an
//! implementation, a `register_{service}` function, and a typed `{Service}Client`.

use crate::ast::{Function, Requiredness, Service};
use crate::error::SemanticError;

use super::names::{field_name, screaming_snake, snake_case, type_name, upper_camel};
use super::writer::Code;
use super::Ctx;

/// A function with its Rust names and types resolved.
struct Fun<'a> {
    f: &'a Function,
    /// The Rust method name.
    name: String,
    /// `{Service}{Method}` prefix of the generated structs.
    prefix: String,
    /// `(rust name, rust type)` per parameter.
    params: Vec<(String, String)>,
    /// The Rust type of the result (`()` for void).
    ret: String,
    /// `(variant, rust type, field name)` per declared exception.
    throws: Vec<(String, String, String)>,
}

impl Fun<'_> {
    fn error_type(&self, rpc: &str) -> String {
        if self.throws.is_empty() {
            format!("{rpc}::Status")
        } else {
            format!("{}Error", self.prefix)
        }
    }

    fn client_error(&self, rpc: &str) -> String {
        if self.throws.is_empty() {
            format!("{rpc}::CallError")
        } else {
            format!("{rpc}::CallError<{}Error>", self.prefix)
        }
    }
}

impl Ctx<'_> {
    fn funs<'s>(&self, s: &'s Service) -> Result<Vec<Fun<'s>>, SemanticError> {
        s.functions
            .iter()
            .map(|f| {
                let mut params = Vec::new();
                for p in &f.params {
                    let ty = self.rust_type(&self.program.resolve_type(self.file, &p.ty)?);
                    let ty = if p.requiredness == Requiredness::Optional {
                        format!("::std::option::Option<{ty}>")
                    } else {
                        ty
                    };
                    params.push((field_name(&p.name.name), ty));
                }
                let ret = match &f.returns {
                    Some(t) => self.rust_type(&self.program.resolve_type(self.file, t)?),
                    None => "()".to_owned(),
                };
                let mut throws = Vec::new();
                for t in &f.throws {
                    let ty = self.rust_type(&self.program.resolve_type(self.file, &t.ty)?);
                    throws.push((upper_camel(&t.name.name), ty, field_name(&t.name.name)));
                }
                Ok(Fun {
                    f,
                    name: field_name(&f.name.name),
                    prefix: format!("{}{}", type_name(&s.name.name), upper_camel(&f.name.name)),
                    params,
                    ret,
                    throws,
                })
            })
            .collect()
    }

    /// Writes the trait, server, registration function and client of `s`.
    pub fn gen_rpc_service(
        &self,
        code: &mut Code,
        s: &Service,
        rpc: &str,
    ) -> Result<(), SemanticError> {
        let funs = self.funs(s)?;
        let svc = type_name(&s.name.name);
        let idl = &s.name.name;
        let snake = snake_case(&s.name.name);
        let rt = self.runtime;
        let methods_const = format!("__{}_METHODS", screaming_snake(&s.name.name));

        // Declared-exception enums.
        for f in funs.iter().filter(|f| !f.throws.is_empty()) {
            code.line("");
            code.line(format!(
                "/// The errors of `{idl}.{}`: its declared exceptions, or a status.",
                f.f.name.name
            ));
            code.line("#[derive(Debug, Clone, PartialEq)]");
            code.open(format!("pub enum {}Error {{", f.prefix));
            for (variant, ty, field) in &f.throws {
                code.line(format!("/// The declared exception `{field}`."));
                code.line(format!("{variant}({ty}),"));
            }
            code.line("/// An application error, sent as a `TApplicationException`.");
            code.line(format!("Status({rpc}::Status),"));
            code.close("}");
            code.line("");
            code.open(format!(
                "impl ::std::convert::From<{rpc}::Status> for {}Error {{",
                f.prefix
            ));
            code.open(format!("fn from(s: {rpc}::Status) -> Self {{"));
            code.line("Self::Status(s)");
            code.close("}");
            code.close("}");
            code.line("");
            code.open(format!(
                "impl {rpc}::server::ReplyError for {}Error {{",
                f.prefix
            ));
            code.open(format!("fn error_kind(&self) -> {rpc}::ErrorKind {{"));
            code.open("match self {");
            code.line("Self::Status(s) => s.kind(),");
            code.line(format!("_ => {rpc}::ErrorKind::Declared,"));
            code.close("}");
            code.close("}");
            code.close("}");
            let mut tys: Vec<&String> = f.throws.iter().map(|t| &t.1).collect();
            tys.sort();
            for (variant, ty, _) in &f.throws {
                if tys.iter().filter(|t| **t == ty).count() == 1 {
                    code.line("");
                    code.open(format!(
                        "impl ::std::convert::From<{ty}> for {}Error {{",
                        f.prefix
                    ));
                    code.open(format!("fn from(e: {ty}) -> Self {{"));
                    code.line(format!("Self::{variant}(e)"));
                    code.close("}");
                    code.close("}");
                }
            }
        }

        // The trait.
        code.line("");
        code.doc(s.doc.as_deref());
        code.line(format!(
            "/// The `{idl}` service: implement it, and serve it with [`{svc}Server`]. Methods \
             run on the core that owns the connection and must not block it: to wait, take \
             the reply with `ctx.defer()`."
        ));
        code.open(format!("pub trait {svc}: Send + Sync + 'static {{"));
        for f in &funs {
            code.doc(f.f.doc.as_deref());
            if f.f.doc.is_none() {
                code.line(format!("/// `{idl}.{}`.", f.f.name.name));
            }
            let params: String = f
                .params
                .iter()
                .map(|(n, t)| format!(", {n}: {t}"))
                .collect();
            if f.f.oneway {
                code.line(format!(
                    "fn {}(&self, ctx: &{rpc}::CallContext<'_>{params});",
                    f.name
                ));
            } else {
                code.line(format!(
                    "fn {}(&self, ctx: &{rpc}::CallContext<'_>{params}) -> {rpc}::Reply<{}, {}>;",
                    f.name,
                    f.ret,
                    f.error_type(rpc)
                ));
            }
        }
        code.close("}");

        // Reply encoders.
        for f in funs.iter().filter(|f| !f.f.oneway) {
            code.line("");
            code.line("#[allow(non_snake_case)]");
            code.open(format!(
                "fn __{}_reply(env: &{rpc}::wire::Envelope, r: ::std::result::Result<{}, {}>, \
                 out: &mut {rpc}::__private::BytesMut, h: &{rpc}::wire::Headers<'_>) {{",
                f.prefix,
                f.ret,
                f.error_type(rpc)
            ));
            let all_none = |set: Option<&str>| -> String {
                let mut fields = Vec::new();
                if f.f.returns.is_some() {
                    fields.push(if set == Some("success") {
                        "success: ::std::option::Option::Some(v)".to_owned()
                    } else {
                        "success: ::std::option::Option::None".to_owned()
                    });
                }
                for (_, _, name) in &f.throws {
                    fields.push(if set == Some(name.as_str()) {
                        format!("{name}: ::std::option::Option::Some(e)")
                    } else {
                        format!("{name}: ::std::option::Option::None")
                    });
                }
                format!("{}Result {{ {} }}", f.prefix, fields.join(", "))
            };
            code.open("let r = match r {");
            let ok_binding = if f.f.returns.is_some() { "v" } else { "()" };
            code.line(format!(
                "::std::result::Result::Ok({ok_binding}) => ::std::result::Result::Ok({}),",
                all_none(Some("success"))
            ));
            if f.throws.is_empty() {
                code.line("::std::result::Result::Err(s) => ::std::result::Result::Err(s),");
            } else {
                for (variant, _, name) in &f.throws {
                    code.line(format!(
                        "::std::result::Result::Err({}Error::{variant}(e)) => ::std::result::Result::Ok({}),",
                        f.prefix,
                        all_none(Some(name))
                    ));
                }
                code.line(format!(
                    "::std::result::Result::Err({}Error::Status(s)) => ::std::result::Result::Err(s),",
                    f.prefix
                ));
            }
            code.close("};");
            code.line(format!(
                "{rpc}::server::encode_thrift_reply(env, out, h, r)"
            ));
            code.close("}");
        }

        // The server.
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
        code.line("");
        code.open(format!(
            "const {methods_const}: &[{rpc}::server::MethodInfo] = &["
        ));
        for f in &funs {
            code.line(format!(
                "{rpc}::server::MethodInfo {{ name: \"{}\", oneway: {} }},",
                f.f.name.name, f.f.oneway
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
        code.open(format!("fn idl(&self) -> {rpc}::server::Idl {{"));
        code.line(format!("{rpc}::server::Idl::Thrift"));
        code.close("}");
        code.open(format!(
            "fn methods(&self) -> &'static [{rpc}::server::MethodInfo] {{"
        ));
        code.line(methods_const.clone());
        code.close("}");
        code.open(format!(
            "fn call(&self, index: usize, call: {rpc}::server::Call<'_, '_, '_>) {{"
        ));
        code.open("match index {");
        for (i, f) in funs.iter().enumerate() {
            let args: Vec<String> = f.params.iter().map(|(n, _)| format!(", a.{n}")).collect();
            let args = args.concat();
            let a = if f.params.is_empty() { "_a" } else { "a" };
            if f.f.oneway {
                code.line(format!(
                    "{i} => call.thrift_oneway(|ctx, {a}: {}Args| self.0.{}(ctx{args})),",
                    f.prefix, f.name
                ));
            } else {
                code.line(format!(
                    "{i} => call.thrift(|ctx, {a}: {p}Args| self.0.{}(ctx{args}), __{p}_reply),",
                    f.name,
                    p = f.prefix
                ));
            }
        }
        code.line(format!(
            "_ => call.fail({rpc}::Status::unknown_method(\"no such method\")),"
        ));
        code.close("}");
        code.close("}");
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

        // Result unpacking for the client.
        for f in funs.iter().filter(|f| !f.f.oneway) {
            code.line("");
            code.line("#[allow(non_snake_case)]");
            code.open(format!(
                "fn __{p}_unpack({r}: {p}Result) -> ::std::result::Result<{}, {}> {{",
                f.ret,
                f.client_error(rpc),
                p = f.prefix,
                r = if f.f.returns.is_none() && f.throws.is_empty() {
                    "_r"
                } else {
                    "r"
                }
            ));
            if f.f.returns.is_some() {
                code.open("if let ::std::option::Option::Some(v) = r.success {");
                code.line("return ::std::result::Result::Ok(v);");
                code.close("}");
            }
            for (variant, _, name) in &f.throws {
                code.open(format!(
                    "if let ::std::option::Option::Some(e) = r.{name} {{"
                ));
                code.line(format!(
                    "return ::std::result::Result::Err({rpc}::CallError::Declared({}Error::{variant}(e)));",
                    f.prefix
                ));
                code.close("}");
            }
            if f.f.returns.is_some() {
                code.line(format!(
                    "::std::result::Result::Err({rpc}::CallError::Application({rt}::thrift::ApplicationException::new({rt}::thrift::ApplicationExceptionKind::MissingResult, \"{}: the reply has no result\")))",
                    f.f.name.name
                ));
            } else {
                code.line("::std::result::Result::Ok(())");
            }
            code.close("}");
        }

        // The client.
        code.line("");
        code.line(format!(
            "/// A client of the `{idl}` service: blocking methods callable from any thread, \
             and `_with` methods that hand the result to a callback (for many calls in flight)."
        ));
        code.line("#[derive(Debug, Clone)]");
        code.line(format!(
            "pub struct {svc}Client({rpc}::client::ThriftClient);"
        ));
        code.line("");
        code.open(format!("impl {svc}Client {{"));
        code.line("/// A client of the server at `addr` with the defaults (TTHeader, binary).");
        code.open(format!(
            "pub fn connect(addr: impl ::std::net::ToSocketAddrs) -> ::std::result::Result<Self, {rpc}::client::ClientError> {{"
        ));
        code.line(format!(
            "{rpc}::client::ClientBuilder::new(addr).thrift(\"{idl}\").map(Self)"
        ));
        code.close("}");
        code.line("/// A client with the settings of `builder`.");
        code.open(format!(
            "pub fn from_builder(builder: {rpc}::client::ClientBuilder) -> ::std::result::Result<Self, {rpc}::client::ClientError> {{"
        ));
        code.line(format!("builder.thrift(\"{idl}\").map(Self)"));
        code.close("}");
        code.line("/// The same client with another per-call deadline.");
        code.open("pub fn with_timeout(&self, timeout: ::std::option::Option<::std::time::Duration>) -> Self {");
        code.line("Self(self.0.with_timeout(timeout))");
        code.close("}");
        for f in &funs {
            let params: String = f
                .params
                .iter()
                .map(|(n, t)| format!(", {n}: {t}"))
                .collect();
            let fields: Vec<&str> = f.params.iter().map(|(n, _)| n.as_str()).collect();
            let args = format!("{}Args {{ {} }}", f.prefix, fields.join(", "));
            let wire_name = &f.f.name.name;
            code.doc(f.f.doc.as_deref());
            if f.f.oneway {
                code.line(format!(
                    "/// Sends `{idl}.{wire_name}` (oneway: nothing comes back)."
                ));
                code.open(format!("pub fn {}(&self{params}) {{", f.name));
                code.line(format!("self.0.oneway(\"{wire_name}\", {args})"));
                code.close("}");
                continue;
            }
            let widen = if f.throws.is_empty() {
                ""
            } else {
                ".map_err(|e| e.widen())"
            };
            code.line(format!(
                "/// Calls `{idl}.{wire_name}` and waits for its result."
            ));
            code.open(format!(
                "pub fn {}(&self{params}) -> ::std::result::Result<{}, {}> {{",
                f.name,
                f.ret,
                f.client_error(rpc)
            ));
            code.line(format!(
                "let r: {}Result = self.0.call(\"{wire_name}\", {args}){widen}?;",
                f.prefix
            ));
            code.line(format!("__{}_unpack(r)", f.prefix));
            code.close("}");
            code.line(format!(
                "/// Calls `{idl}.{wire_name}` and returns at once; `done` gets the result on \
                 the connection's core."
            ));
            code.open(format!(
                "pub fn {}_with(&self{params}, done: impl FnOnce(::std::result::Result<{}, {}>) + Send + 'static) {{",
                f.name,
                f.ret,
                f.client_error(rpc)
            ));
            code.line(format!(
                "self.0.call_with(\"{wire_name}\", {args}, move |r: ::std::result::Result<{p}Result, {rpc}::CallError>| done(r{widen}.and_then(__{p}_unpack)))",
                p = f.prefix
            ));
            code.close("}");
        }
        code.close("}");
        Ok(())
    }
}
