//! Unions as Rust enums: exactly one field set, by construction.

use crate::ast::Struct;
use crate::error::SemanticError;
use crate::resolve::DefId;

use super::names::type_name;
use super::writer::Code;
use super::Ctx;

impl Ctx<'_> {
    /// Writes the enum, its `Default` (the first field with its default
    /// value) and its wire impls.
    pub fn gen_union(
        &self,
        code: &mut Code,
        s: &Struct,
        owner: Option<&DefId>,
    ) -> Result<(), SemanticError> {
        let name = type_name(&s.name.name);
        let fields = self.field_infos(s, owner)?;
        code.doc(s.doc.as_deref());
        if s.doc.is_none() {
            code.line(format!("/// The Thrift union `{}`.", s.name.name));
        }
        code.line(self.derive_attr(&fields, false));
        code.open(format!("pub enum {name} {{"));
        for f in &fields {
            code.doc(f.field.doc.as_deref());
            if f.field.doc.is_none() {
                code.line(format!(
                    "/// Field {}: `{}`.",
                    f.field.id, f.field.name.name
                ));
            }
            let mut ty = self.rust_type(&f.ty);
            if f.boxed {
                ty = format!("::std::boxed::Box<{ty}>");
            }
            code.line(format!("{}({ty}),", type_name(&f.field.name.name)));
        }
        code.close("}");
        if let Some(first) = fields.first() {
            code.line("");
            code.open(format!("impl ::std::default::Default for {name} {{"));
            code.open("fn default() -> Self {");
            let value = match &first.default {
                Some(d) if first.boxed => format!("::std::boxed::Box::new({d})"),
                Some(d) => d.clone(),
                None => "::std::default::Default::default()".to_owned(),
            };
            code.line(format!(
                "Self::{}({value})",
                type_name(&first.field.name.name)
            ));
            code.close("}");
            code.close("}");
        }
        code.line("");
        self.gen_union_message(code, s, &name, &fields);
        Ok(())
    }
}
