//! Per-method argument and result structs of services, which the RPC layer
//! encodes as call and reply bodies.

use crate::ast::{Field, Ident, Requiredness, Service, Struct, StructKind};
use crate::error::SemanticError;

use super::names::{type_name, upper_camel};
use super::writer::Code;
use super::Ctx;

impl Ctx<'_> {
    /// Writes `{Service}{Method}Args` for every function and
    /// `{Service}{Method}Result` for every two-way function.
    pub fn gen_service_types(&self, code: &mut Code, s: &Service) -> Result<(), SemanticError> {
        for f in &s.functions {
            let prefix = format!("{}{}", type_name(&s.name.name), upper_camel(&f.name.name));
            let args = Struct {
                kind: StructKind::Struct,
                name: Ident {
                    name: format!("{prefix}Args"),
                    pos: f.name.pos,
                },
                fields: f.params.clone(),
                annotations: Vec::new(),
                doc: Some(format!(
                    "The arguments of `{}.{}`: one field per parameter.",
                    s.name.name, f.name.name
                )),
            };
            code.line("");
            self.gen_struct(code, &args, None)?;
            if f.oneway {
                continue;
            }
            let mut fields = Vec::new();
            if let Some(ret) = &f.returns {
                fields.push(Field {
                    id: 0,
                    implicit_id: false,
                    requiredness: Requiredness::Optional,
                    ty: ret.clone(),
                    name: Ident {
                        name: "success".to_owned(),
                        pos: f.name.pos,
                    },
                    default: None,
                    annotations: Vec::new(),
                    doc: Some("Field 0: the return value, when the call succeeded.".to_owned()),
                });
            }
            for t in &f.throws {
                let mut t = t.clone();
                t.requiredness = Requiredness::Optional;
                t.default = None;
                if t.doc.is_none() {
                    t.doc = Some(format!(
                        "Field {}: set when the call threw `{}`.",
                        t.id, t.name.name
                    ));
                }
                fields.push(t);
            }
            let result = Struct {
                kind: StructKind::Struct,
                name: Ident {
                    name: format!("{prefix}Result"),
                    pos: f.name.pos,
                },
                fields,
                annotations: Vec::new(),
                doc: Some(format!(
                    "The reply of `{}.{}`: `success` or one declared exception \
                     (all unset for a `void` success).",
                    s.name.name, f.name.name
                )),
            };
            code.line("");
            self.gen_struct(code, &result, None)?;
        }
        Ok(())
    }
}
