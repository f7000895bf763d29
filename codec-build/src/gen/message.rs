//! The `Message` impls (decode and encode) of structs, exceptions and unions.

use crate::ast::Requiredness;

use super::names::type_name;
use super::structs::FieldInfo;
use super::wire::{Place, Sink};
use super::writer::Code;
use super::Ctx;

/// The local variable a decoder collects field `name` in.
fn local(name: &str) -> String {
    format!("f_{}", name.trim_start_matches("r#"))
}

impl Ctx<'_> {
    fn open_message_impl(&self, code: &mut Code, name: &str) {
        let rt = self.runtime;
        code.open(format!("impl {rt}::thrift::Message for {name} {{"));
    }

    fn open_decode(&self, code: &mut Code) {
        let rt = self.runtime;
        code.open(format!("fn decode<__R: {rt}::thrift::ProtocolRead>("));
        code.line("r: &mut __R,");
        code.close(format!(
            ") -> ::std::result::Result<Self, {rt}::thrift::DecodeError> {{"
        ));
        code.indent();
    }

    /// Opens `encode` (for `Sink::Encode`) or `encoded_len` (for
    /// `Sink::Len`) and writes the struct header.
    fn open_encode(&self, code: &mut Code, sink: Sink, idl_name: &str) {
        let rt = self.runtime;
        match sink {
            Sink::Encode => {
                code.open(format!("fn encode<__W: {rt}::thrift::ProtocolWrite>("));
                code.line("&self,");
                code.line("w: &mut __W,");
                code.close(format!(
                    ") -> ::std::result::Result<(), {rt}::thrift::EncodeError> {{"
                ));
                code.indent();
                code.line(sink.op("struct_begin", &format!("{idl_name:?}")));
            }
            Sink::Len => {
                code.open(format!(
                    "fn encoded_len<__L: {rt}::thrift::ProtocolLen>(&self, l: &mut __L) -> usize {{"
                ));
                code.line(format!("let mut len = l.struct_begin_len({idl_name:?});"));
            }
        }
    }

    fn close_encode(&self, code: &mut Code, sink: Sink) {
        code.line(sink.op("field_stop", ""));
        code.line(sink.op("struct_end", ""));
        match sink {
            Sink::Encode => code.line("::std::result::Result::Ok(())"),
            Sink::Len => code.line("len"),
        }
        code.close("}");
    }

    /// Writes one field: header, value, end.
    fn gen_field_encode(&self, code: &mut Code, sink: Sink, f: &FieldInfo<'_>, place: Place) {
        code.line(sink.op(
            "field_begin",
            &format!("{}, {}", self.ttype(&f.ty), f.field.id),
        ));
        self.gen_encode(code, sink, &f.ty, &self.boxed_place(f, place), 0);
        code.line(sink.op("field_end", ""));
    }

    /// Writes a match arm decoding field `f` and storing it with `store`,
    /// whose `{}` stands for the decoded value.
    fn decode_arm(&self, code: &mut Code, f: &FieldInfo<'_>, store: &str) {
        let pattern = format!("({}, {})", f.field.id, self.ttype(&f.ty));
        let simple = self.decode_expr(&f.ty).filter(|_| !f.boxed);
        if let (Some(expr), false) = (&simple, store.contains('\n')) {
            code.line(format!(
                "{pattern} => {},",
                store.replace("{}", expr).trim_end_matches(';')
            ));
            return;
        }
        code.open(format!("{pattern} => {{"));
        let value = match simple {
            Some(expr) => expr,
            None => {
                self.gen_decode(code, &f.ty, "value", 0);
                "value".to_owned()
            }
        };
        let value = if f.boxed {
            format!("::std::boxed::Box::new({value})")
        } else {
            value
        };
        for line in store.replace("{}", &value).lines() {
            code.line(line);
        }
        code.close("}");
    }

    /// Writes the `Message` impl of a struct or exception.
    pub fn gen_struct_message(
        &self,
        code: &mut Code,
        s: &crate::ast::Struct,
        name: &str,
        fields: &[FieldInfo<'_>],
    ) {
        self.open_message_impl(code, name);
        self.open_decode(code);
        code.line("r.read_struct_begin()?;");
        for f in fields {
            code.line(format!(
                "let mut {} = ::std::option::Option::None;",
                local(&f.name)
            ));
        }
        code.open("while let ::std::option::Option::Some(field) = r.read_field_begin()? {");
        if fields.is_empty() {
            code.line("r.skip(field.ttype)?;");
        } else {
            code.open("match (field.id, field.ttype) {");
            for f in fields {
                self.decode_arm(
                    code,
                    f,
                    &format!("{} = ::std::option::Option::Some({{}});", local(&f.name)),
                );
            }
            code.line("(_, ttype) => r.skip(ttype)?,");
            code.close("}");
        }
        code.line("r.read_field_end()?;");
        code.close("}");
        code.line("r.read_struct_end()?;");
        if fields.is_empty() {
            code.line("::std::result::Result::Ok(Self {})");
        } else {
            code.open("::std::result::Result::Ok(Self {");
        }
        for f in fields {
            let l = local(&f.name);
            let expr = match f.field.requiredness {
                Requiredness::Optional => l,
                Requiredness::Required => format!(
                    "{l}.ok_or({})?",
                    self.missing_field(&s.name.name, &f.field.name.name)
                ),
                Requiredness::Default => match &f.default {
                    None => format!("{l}.unwrap_or_default()"),
                    Some(d) if f.boxed => {
                        format!("{l}.unwrap_or_else(|| ::std::boxed::Box::new({d}))")
                    }
                    Some(d) if f.cheap_default => format!("{l}.unwrap_or({d})"),
                    Some(d) => format!("{l}.unwrap_or_else(|| {d})"),
                },
            };
            if expr == f.name {
                code.line(format!("{},", f.name));
            } else {
                code.line(format!("{}: {expr},", f.name));
            }
        }
        if !fields.is_empty() {
            code.close("})");
        }
        code.close("}");
        code.line("");
        for sink in [Sink::Encode, Sink::Len] {
            if sink == Sink::Len {
                code.line("");
            }
            self.open_encode(code, sink, &s.name.name);
            for f in fields {
                if f.is_optional() {
                    code.open(format!(
                        "if let ::std::option::Option::Some(value) = &self.{} {{",
                        f.name
                    ));
                    self.gen_field_encode(code, sink, f, Place::Ref("value".into()));
                    code.close("}");
                } else {
                    let place = Place::Value(format!("self.{}", f.name));
                    self.gen_field_encode(code, sink, f, place);
                }
            }
            self.close_encode(code, sink);
        }
        code.close("}");
    }

    /// A boxed field's place, dereferenced to the boxed value.
    fn boxed_place(&self, f: &FieldInfo<'_>, place: Place) -> Place {
        if !f.boxed {
            return place;
        }
        match place {
            Place::Value(p) => Place::Ref(format!("&*{p}")),
            Place::Ref(r) => Place::Ref(format!("&**{r}")),
        }
    }

    /// Writes the `Message` impl of a union.
    pub fn gen_union_message(
        &self,
        code: &mut Code,
        s: &crate::ast::Struct,
        name: &str,
        fields: &[FieldInfo<'_>],
    ) {
        self.open_message_impl(code, name);
        self.open_decode(code);
        code.line("r.read_struct_begin()?;");
        code.line("let mut result: ::std::option::Option<Self> = ::std::option::Option::None;");
        code.line("let mut fields_set = 0usize;");
        code.open("while let ::std::option::Option::Some(field) = r.read_field_begin()? {");
        code.open("match (field.id, field.ttype) {");
        for f in fields {
            let variant = type_name(&f.field.name.name);
            self.decode_arm(
                code,
                f,
                &format!(
                    "result = ::std::option::Option::Some(Self::{variant}({{}}));\nfields_set += 1;"
                ),
            );
        }
        code.line("(_, ttype) => r.skip(ttype)?,");
        code.close("}");
        code.line("r.read_field_end()?;");
        code.close("}");
        code.line("r.read_struct_end()?;");
        code.open("match result {");
        code.line("::std::option::Option::Some(value) if fields_set == 1 => ::std::result::Result::Ok(value),");
        code.line(format!(
            "_ => ::std::result::Result::Err({}),",
            self.union_error(&s.name.name)
        ));
        code.close("}");
        code.close("}");
        code.line("");
        for sink in [Sink::Encode, Sink::Len] {
            if sink == Sink::Len {
                code.line("");
            }
            self.open_encode(code, sink, &s.name.name);
            if !fields.is_empty() {
                code.open("match self {");
                for f in fields {
                    let variant = type_name(&f.field.name.name);
                    code.open(format!("Self::{variant}(value) => {{"));
                    self.gen_field_encode(code, sink, f, Place::Ref("value".into()));
                    code.close("}");
                }
                code.close("}");
            }
            self.close_encode(code, sink);
        }
        code.close("}");
    }
}
