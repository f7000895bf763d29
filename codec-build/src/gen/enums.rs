//! Thrift enums as `i32` newtypes: unknown wire values survive a round trip.

use crate::ast::Enum;
use crate::error::SemanticError;

use super::names::{const_name, type_name};
use super::writer::Code;
use super::Ctx;

impl Ctx<'_> {
    /// Writes the newtype, its constants and conversions.
    pub fn gen_enum(&self, code: &mut Code, e: &Enum) -> Result<(), SemanticError> {
        let mut names = Vec::new();
        for v in &e.values {
            self.check_unique(&mut names, const_name(&v.name.name), &v.name)?;
        }
        // `VALUES` is generated unless a value already has that name.
        let with_values = !names.iter().any(|(n, _)| n == "VALUES");
        let name = type_name(&e.name.name);
        code.doc(e.doc.as_deref());
        if e.doc.is_none() {
            code.line(format!("/// The Thrift enum `{}`.", e.name.name));
        }
        code.line("///");
        code.line("/// A newtype over the wire value, so that values this code does not know");
        code.line("/// (sent by a peer with a newer IDL) are kept rather than rejected.");
        code.line("#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Default)]");
        code.line(format!("pub struct {name}(pub i32);"));
        code.line("");
        code.open(format!("impl {name} {{"));
        let mut seen = Vec::new();
        for v in &e.values {
            code.doc(v.doc.as_deref());
            if v.doc.is_none() {
                code.line(format!("/// `{}` = {}.", v.name.name, v.value));
            }
            code.line(format!(
                "pub const {}: Self = Self({});",
                const_name(&v.name.name),
                v.value
            ));
        }
        if with_values {
            code.line("");
            code.line("/// The declared values, in IDL order.");
            let all: Vec<String> = e
                .values
                .iter()
                .map(|v| format!("Self::{}", const_name(&v.name.name)))
                .collect();
            code.line(format!(
                "pub const VALUES: &'static [Self] = &[{}];",
                all.join(", ")
            ));
        }
        code.line("");
        code.line(
            "/// The IDL name of this value, or `None` for a value the IDL does not declare.",
        );
        code.open("pub fn name(self) -> ::std::option::Option<&'static str> {");
        code.open("match self.0 {");
        for v in &e.values {
            if seen.contains(&v.value) {
                continue;
            }
            seen.push(v.value);
            code.line(format!(
                "{} => ::std::option::Option::Some({:?}),",
                v.value, v.name.name
            ));
        }
        code.line("_ => ::std::option::Option::None,");
        code.close("}");
        code.close("}");
        code.close("}");
        code.line("");
        code.open(format!("impl ::std::fmt::Debug for {name} {{"));
        code.open("fn fmt(&self, f: &mut ::std::fmt::Formatter<'_>) -> ::std::fmt::Result {");
        code.open("match self.name() {");
        code.line(format!(
            "::std::option::Option::Some(n) => write!(f, \"{name}::{{n}}\"),"
        ));
        code.line(format!(
            "::std::option::Option::None => write!(f, \"{name}({{}})\", self.0),"
        ));
        code.close("}");
        code.close("}");
        code.close("}");
        code.line("");
        code.open(format!("impl ::std::convert::From<i32> for {name} {{"));
        code.open("fn from(value: i32) -> Self {");
        code.line("Self(value)");
        code.close("}");
        code.close("}");
        code.line("");
        code.open(format!("impl ::std::convert::From<{name}> for i32 {{"));
        code.open(format!("fn from(value: {name}) -> Self {{"));
        code.line("value.0");
        code.close("}");
        code.close("}");
        Ok(())
    }
}
