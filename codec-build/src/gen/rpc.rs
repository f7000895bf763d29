//! Services for the `rpc` crate: per service, a trait with one synchronous method per
//! function, a `{Service}Server` implementing `netpoll_rpc::server::Service` around an
//! implementation, a `register_{service}` function, and a typed `{Service}Client`.

use crate::ast::{Definition, Requiredness, Service};
use crate::error::SemanticError;
use crate::services::{Idl, MethodDesc, ServiceDesc, Shape, Streaming};

use super::names::{field_name, snake_case, type_name, upper_camel};
use super::writer::Code;
use super::Ctx;

impl Ctx<'_> {
    /// The methods of service `s` of file `file` as this file's module sees them: those
    /// it inherits (`extends`, followed up the chain) first, then its own.
    fn methods(
        &self,
        file: usize,
        s: &Service,
        child: &str,
        depth: usize,
        out: &mut Vec<MethodDesc>,
    ) -> Result<(), SemanticError> {
        if depth > 64 {
            return Ok(()); // a cycle of `extends` the checker let through
        }
        if let Some(base) = &s.extends {
            if let Some((bfile, Definition::Service(b))) = self.program.lookup(file, &base.name) {
                self.methods(bfile, b, child, depth + 1, out)?;
            }
        }
        let module = if file == self.file {
            String::new()
        } else {
            format!("super::{}::", self.program.file(file).module)
        };
        for f in &s.functions {
            let mut params = Vec::new();
            for p in &f.params {
                let ty = self.rust_type(&self.program.resolve_type(file, &p.ty)?);
                let ty = if p.requiredness == Requiredness::Optional {
                    format!("::std::option::Option<{ty}>")
                } else {
                    ty
                };
                params.push((field_name(&p.name.name), ty));
            }
            let ret = match &f.returns {
                Some(t) => self.rust_type(&self.program.resolve_type(file, t)?),
                None => "()".to_owned(),
            };
            let mut throws = Vec::new();
            for t in &f.throws {
                let ty = self.rust_type(&self.program.resolve_type(file, &t.ty)?);
                throws.push((upper_camel(&t.name.name), ty, field_name(&t.name.name)));
            }
            let own = format!("{}{}", type_name(&s.name.name), upper_camel(&f.name.name));
            out.push(MethodDesc {
                rust_name: field_name(&f.name.name),
                wire_name: f.name.name.clone(),
                doc: f.doc.clone(),
                params,
                ret,
                oneway: f.oneway,
                streaming: Streaming::Unary,
                shape: Shape::Thrift {
                    types: format!("{module}{own}"),
                    local: format!("{child}{}", upper_camel(&f.name.name)),
                    returns: f.returns.is_some(),
                    throws,
                },
            });
        }
        Ok(())
    }

    /// Writes the declared-exception enums of `s`'s own functions, then the trait, server,
    /// registration function and client of `s` (with the methods it inherits).
    pub fn gen_rpc_service(
        &self,
        code: &mut Code,
        s: &Service,
        rpc: &str,
    ) -> Result<(), SemanticError> {
        let svc = type_name(&s.name.name);
        let idl = &s.name.name;
        let mut methods = Vec::new();
        self.methods(self.file, s, &svc, 0, &mut methods)?;
        let own = &methods[methods.len() - s.functions.len()..];
        for (m, f) in own.iter().zip(&s.functions) {
            let Shape::Thrift { types, throws, .. } = &m.shape else {
                continue;
            };
            if throws.is_empty() {
                continue;
            }
            code.line("");
            code.line(format!(
                "/// The errors of `{idl}.{}`: its declared exceptions, or a status.",
                f.name.name
            ));
            code.line("#[derive(Debug, Clone, PartialEq)]");
            code.open(format!("pub enum {}Error {{", types));
            for (variant, ty, field) in throws {
                code.line(format!("/// The declared exception `{field}`."));
                code.line(format!("{variant}({ty}),"));
            }
            code.line("/// An application error, sent as a `TApplicationException`.");
            code.line(format!("Status({rpc}::Status),"));
            code.close("}");
            code.line("");
            code.open(format!(
                "impl ::std::convert::From<{rpc}::Status> for {}Error {{",
                types
            ));
            code.open(format!("fn from(s: {rpc}::Status) -> Self {{"));
            code.line("Self::Status(s)");
            code.close("}");
            code.close("}");
            code.line("");
            code.open(format!(
                "impl {rpc}::server::ReplyError for {}Error {{",
                types
            ));
            code.open(format!("fn error_kind(&self) -> {rpc}::ErrorKind {{"));
            code.open("match self {");
            code.line("Self::Status(s) => s.kind(),");
            code.line(format!("_ => {rpc}::ErrorKind::Declared,"));
            code.close("}");
            code.close("}");
            code.close("}");
            let mut tys: Vec<&String> = throws.iter().map(|t| &t.1).collect();
            tys.sort();
            for (variant, ty, _) in throws {
                if tys.iter().filter(|t| **t == ty).count() == 1 {
                    code.line("");
                    code.open(format!(
                        "impl ::std::convert::From<{ty}> for {}Error {{",
                        types
                    ));
                    code.open(format!("fn from(e: {ty}) -> Self {{"));
                    code.line(format!("Self::{variant}(e)"));
                    code.close("}");
                    code.close("}");
                }
            }
        }
        let desc = ServiceDesc {
            descriptor: None,
            idl: Idl::Thrift,
            wire_name: idl.clone(),
            full_name: idl.clone(),
            rust_name: svc.clone(),
            snake: snake_case(&s.name.name),
            doc: s.doc.clone(),
            methods,
        };
        let mut seen = std::collections::HashSet::new();
        for m in &desc.methods {
            if !seen.insert(m.wire_name.as_str()) {
                return Err(self.program.error(
                    self.file,
                    s.name.pos,
                    crate::error::SemanticErrorKind::DuplicateName {
                        name: m.wire_name.clone(),
                    },
                ));
            }
        }
        crate::services::emit(code, &desc, rpc, self.runtime);
        Ok(())
    }
}
