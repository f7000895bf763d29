//! Structs and exceptions: the Rust struct, its `Default`, and for
//! exceptions `Display` and `Error`.

use crate::ast::{Requiredness, Struct, StructKind};
use crate::error::SemanticError;
use crate::resolve::{DefId, RType};

use super::names::{field_name, type_name};
use super::writer::Code;
use super::Ctx;

/// A field with everything generation needs resolved.
#[derive(Debug)]
pub(crate) struct FieldInfo<'a> {
    pub field: &'a crate::ast::Field,
    /// The Rust field name.
    pub name: String,
    pub ty: RType,
    /// Boxed because the struct would otherwise contain itself.
    pub boxed: bool,
    /// The IDL default as a Rust expression of the (unboxed) type.
    pub default: Option<String>,
    /// Whether that expression is a constant cheap enough to evaluate even
    /// when unused (clippy asks for `unwrap_or` over `unwrap_or_else` then).
    pub cheap_default: bool,
}

impl FieldInfo<'_> {
    /// Whether the Rust field is an `Option`.
    pub fn is_optional(&self) -> bool {
        self.field.requiredness == Requiredness::Optional
    }
}

impl Ctx<'_> {
    /// Resolves the fields of `s`; `owner` is `None` for synthesized structs
    /// (service arguments and results), which nothing can contain.
    pub fn field_infos<'s>(
        &self,
        s: &'s Struct,
        owner: Option<&DefId>,
    ) -> Result<Vec<FieldInfo<'s>>, SemanticError> {
        let mut seen: Vec<(String, &str)> = Vec::new();
        for field in &s.fields {
            let rust = if s.kind == StructKind::Union {
                type_name(&field.name.name)
            } else {
                field_name(&field.name.name)
            };
            self.check_unique(&mut seen, rust, &field.name)?;
        }
        s.fields
            .iter()
            .map(|field| {
                let ty = self.program.resolve_type(self.file, &field.ty)?;
                let (default, cheap_default) = match &field.default {
                    Some(v) => {
                        let value = self.program.const_value(self.file, &ty, v)?;
                        (Some(self.value_expr(&ty, &value)), self.is_cheap(&value))
                    }
                    None => (None, false),
                };
                Ok(FieldInfo {
                    field,
                    name: field_name(&field.name.name),
                    boxed: owner.is_some_and(|o| self.needs_box(o, &ty)),
                    ty,
                    default,
                    cheap_default,
                })
            })
            .collect()
    }

    /// Fails if `rust`, the Rust name generated for `ident`, was already
    /// generated for another IDL name (e.g. `fooBar` and `foo_bar`).
    pub fn check_unique<'n>(
        &self,
        seen: &mut Vec<(String, &'n str)>,
        rust: String,
        ident: &'n crate::ast::Ident,
    ) -> Result<(), SemanticError> {
        if let Some((_, other)) = seen.iter().find(|(r, _)| *r == rust) {
            return Err(self.program.error(
                self.file,
                ident.pos,
                crate::error::SemanticErrorKind::DuplicateName {
                    name: format!(
                        "{rust} (the Rust name of both `{other}` and `{}`)",
                        ident.name
                    ),
                },
            ));
        }
        seen.push((rust, &ident.name));
        Ok(())
    }

    /// The Rust type of a field as declared in the struct.
    pub fn field_type(&self, info: &FieldInfo<'_>) -> String {
        let mut ty = self.rust_type(&info.ty);
        if info.boxed {
            ty = format!("::std::boxed::Box<{ty}>");
        }
        if info.is_optional() {
            ty = format!("::std::option::Option<{ty}>");
        }
        ty
    }

    /// The expression a field takes in `Default::default()`.
    pub fn field_default(&self, info: &FieldInfo<'_>) -> String {
        let Some(value) = &info.default else {
            return "::std::default::Default::default()".to_owned();
        };
        let value = if info.boxed {
            format!("::std::boxed::Box::new({value})")
        } else {
            value.clone()
        };
        if info.is_optional() {
            format!("::std::option::Option::Some({value})")
        } else {
            value
        }
    }

    /// The derives every generated struct or union gets.
    pub fn derive_attr(&self, fields: &[FieldInfo<'_>], default: bool) -> String {
        let mut derives = vec!["Debug", "Clone", "PartialEq"];
        if fields.iter().all(|f| self.is_eq(&f.ty)) {
            derives.push("Eq");
            if fields.iter().all(|f| self.is_hashable(&f.ty)) {
                derives.push("Hash");
            }
        }
        if default {
            derives.push("Default");
        }
        format!("#[derive({})]", derives.join(", "))
    }

    /// Writes a struct or exception with its `Default` and, for exceptions,
    /// `Display` and `Error`, then its wire impls.
    pub fn gen_struct(
        &self,
        code: &mut Code,
        s: &Struct,
        owner: Option<&DefId>,
    ) -> Result<(), SemanticError> {
        let name = type_name(&s.name.name);
        let fields = self.field_infos(s, owner)?;
        let derive_default = fields.iter().all(|f| f.default.is_none());
        code.doc(s.doc.as_deref());
        if s.doc.is_none() {
            let kind = if s.kind == StructKind::Exception {
                "exception"
            } else {
                "struct"
            };
            code.line(format!("/// The Thrift {kind} `{}`.", s.name.name));
        }
        code.line(self.derive_attr(&fields, derive_default));
        if fields.is_empty() {
            code.line(format!("pub struct {name} {{}}"));
        } else {
            code.open(format!("pub struct {name} {{"));
        }
        for f in &fields {
            code.doc(f.field.doc.as_deref());
            if f.field.doc.is_none() {
                let req = match f.field.requiredness {
                    Requiredness::Required => "required ",
                    Requiredness::Optional => "optional ",
                    Requiredness::Default => "",
                };
                code.line(format!(
                    "/// Field {}: {req}`{}`.",
                    f.field.id, f.field.name.name
                ));
            }
            code.line(format!("pub {}: {},", f.name, self.field_type(f)));
        }
        if !fields.is_empty() {
            code.close("}");
        }
        if !derive_default {
            code.line("");
            code.open(format!("impl ::std::default::Default for {name} {{"));
            code.open("fn default() -> Self {");
            code.open("Self {");
            for f in &fields {
                code.line(format!("{}: {},", f.name, self.field_default(f)));
            }
            code.close("}");
            code.close("}");
            code.close("}");
        }
        if s.kind == StructKind::Exception {
            self.gen_exception_traits(code, &name, &fields);
        }
        code.line("");
        self.gen_struct_message(code, s, &name, &fields);
        Ok(())
    }

    fn gen_exception_traits(&self, code: &mut Code, name: &str, fields: &[FieldInfo<'_>]) {
        let message = fields.iter().find(|f| {
            f.name == "message"
                && f.ty == RType::Base(crate::ast::BaseType::String)
                && !f.is_optional()
        });
        code.line("");
        code.open(format!("impl ::std::fmt::Display for {name} {{"));
        code.open("fn fmt(&self, f: &mut ::std::fmt::Formatter<'_>) -> ::std::fmt::Result {");
        match message {
            Some(_) => code.line(format!("write!(f, \"{name}: {{}}\", &*self.message)")),
            None => code.line("::std::fmt::Debug::fmt(self, f)"),
        }
        code.close("}");
        code.close("}");
        code.line("");
        code.line(format!("impl ::std::error::Error for {name} {{}}"));
    }
}
