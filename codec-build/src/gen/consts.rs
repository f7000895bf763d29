//! Constants and default values as Rust expressions and items.

use crate::ast::{BaseType, Const, Requiredness};
use crate::error::SemanticError;
use crate::resolve::{DefId, RType};
use crate::value::Value;

use super::names::{const_name, field_name, type_name};
use super::writer::Code;
use super::Ctx;

impl Ctx<'_> {
    /// Writes a `pub const` for scalars and strings, or a `pub fn` building
    /// the value for containers and structs (they cannot be `const`).
    pub fn gen_const(&self, code: &mut Code, c: &Const) -> Result<(), SemanticError> {
        let ty = self.program.resolve_type(self.file, &c.ty)?;
        let value = self.program.const_value(self.file, &ty, &c.value)?;
        code.doc(c.doc.as_deref());
        if c.doc.is_none() {
            code.line(format!("/// The Thrift constant `{}`.", c.name.name));
        }
        match (&ty, &value) {
            (RType::Base(BaseType::String), Value::String(s)) => {
                code.line(format!(
                    "pub const {}: &str = {s:?};",
                    const_name(&c.name.name)
                ));
            }
            (RType::Base(BaseType::Binary), Value::String(s)) => code.line(format!(
                "pub const {}: &[u8] = b\"{}\";",
                const_name(&c.name.name),
                s.as_bytes().escape_ascii()
            )),
            (RType::Base(_) | RType::Enum(_), _) => code.line(format!(
                "pub const {}: {} = {};",
                const_name(&c.name.name),
                self.rust_type(&ty),
                self.value_expr(&ty, &value)
            )),
            _ => {
                code.open(format!(
                    "pub fn {}() -> {} {{",
                    field_name(&c.name.name),
                    self.rust_type(&ty)
                ));
                code.line(self.value_expr(&ty, &value));
                code.close("}");
            }
        }
        Ok(())
    }

    /// A Rust expression of type `rust_type(ty)` for `value`.
    pub fn value_expr(&self, ty: &RType, value: &Value) -> String {
        let rt = self.runtime;
        match (ty, value) {
            (_, Value::Bool(b)) => b.to_string(),
            (RType::Base(BaseType::Double), Value::Int(i)) => format!("{:?}", *i as f64),
            (_, Value::Int(i)) => i.to_string(),
            (_, Value::Double(d)) => format!("{d:?}"),
            (RType::Base(BaseType::Binary), Value::String(s)) => format!(
                "{rt}::bytes::Bytes::from_static(b\"{}\")",
                s.as_bytes().escape_ascii()
            ),
            (_, Value::Uuid(bytes)) => {
                let bytes: Vec<String> = bytes.iter().map(|b| format!("{b:#04x}")).collect();
                format!("[{}]", bytes.join(", "))
            }
            (_, Value::String(s)) => format!("{rt}::ByteString::from_static({s:?})"),
            (_, Value::Enum { def, value, name }) => match name {
                Some(n) => format!("{}::{}", self.def_path(def), const_name(n)),
                None => format!("{}({value})", self.def_path(def)),
            },
            (RType::List(elem), Value::List(items)) => self.vec_expr(elem, items),
            (RType::Set(elem), Value::List(items)) if self.is_hashable(elem) => {
                if items.is_empty() {
                    "::std::collections::HashSet::new()".to_owned()
                } else {
                    let items: Vec<String> =
                        items.iter().map(|v| self.value_expr(elem, v)).collect();
                    format!("::std::collections::HashSet::from([{}])", items.join(", "))
                }
            }
            (RType::Set(elem), Value::List(items)) => self.vec_expr(elem, items),
            (RType::Map(k, v), Value::Map(entries)) => {
                let hashed = self.is_hashable(k);
                if entries.is_empty() {
                    return if hashed {
                        "::std::collections::HashMap::new()".to_owned()
                    } else {
                        "::std::vec::Vec::new()".to_owned()
                    };
                }
                let pairs: Vec<String> = entries
                    .iter()
                    .map(|(ek, ev)| {
                        format!("({}, {})", self.value_expr(k, ek), self.value_expr(v, ev))
                    })
                    .collect();
                if hashed {
                    format!("::std::collections::HashMap::from([{}])", pairs.join(", "))
                } else {
                    format!("::std::vec![{}]", pairs.join(", "))
                }
            }
            (_, Value::Struct { def, fields }) => self.struct_expr(def, fields),
            // `const_value` only builds values that fit their type.
            _ => "::std::default::Default::default()".to_owned(),
        }
    }

    /// Whether `value_expr` of `value` is a literal, a constant path or a
    /// struct literal of those: no call, no allocation.
    pub fn is_cheap(&self, value: &Value) -> bool {
        match value {
            Value::Bool(_)
            | Value::Int(_)
            | Value::Double(_)
            | Value::Uuid(_)
            | Value::Enum { .. } => true,
            Value::String(_) | Value::List(_) | Value::Map(_) => false,
            Value::Struct { def, fields } => self.program.struct_def(def).is_some_and(|s| {
                (s.kind == crate::ast::StructKind::Union || fields.len() == s.fields.len())
                    && fields.iter().all(|(index, v)| {
                        self.is_cheap(v)
                            && self
                                .program
                                .resolve_type(def.file, &s.fields[*index].ty)
                                .is_ok_and(|t| !self.needs_box(def, &t))
                    })
            }),
        }
    }

    fn vec_expr(&self, elem: &RType, items: &[Value]) -> String {
        if items.is_empty() {
            return "::std::vec::Vec::new()".to_owned();
        }
        let items: Vec<String> = items.iter().map(|v| self.value_expr(elem, v)).collect();
        format!("::std::vec![{}]", items.join(", "))
    }

    fn struct_expr(&self, def: &DefId, fields: &[(usize, Value)]) -> String {
        let Some(s) = self.program.struct_def(def) else {
            return "::std::default::Default::default()".to_owned();
        };
        let path = self.def_path(def);
        let field_expr = |index: usize, value: &Value| {
            let field = &s.fields[index];
            let ty = self
                .program
                .resolve_type(def.file, &field.ty)
                .unwrap_or(RType::Base(BaseType::Bool));
            let mut expr = self.value_expr(&ty, value);
            if self.needs_box(def, &ty) {
                expr = format!("::std::boxed::Box::new({expr})");
            }
            (field, expr)
        };
        if s.kind == crate::ast::StructKind::Union {
            if let Some((index, value)) = fields.first() {
                let (field, expr) = field_expr(*index, value);
                return format!("{path}::{}({expr})", type_name(&field.name.name));
            }
        }
        let mut parts = Vec::new();
        for (index, value) in fields {
            let (field, expr) = field_expr(*index, value);
            let expr = if field.requiredness == Requiredness::Optional {
                format!("::std::option::Option::Some({expr})")
            } else {
                expr
            };
            parts.push(format!("{}: {expr}", field_name(&field.name.name)));
        }
        if fields.len() < s.fields.len() {
            parts.push("..::std::default::Default::default()".to_owned());
        }
        format!("{path} {{ {} }}", parts.join(", "))
    }
}
