//! Encoding and decoding of values against the `netpoll_codec::thrift` protocol
//! traits. Every call the generated code makes into the runtime is spelled
//! here.

use crate::ast::BaseType;
use crate::resolve::RType;

use super::writer::Code;
use super::Ctx;

/// An expression naming a value to encode.
#[derive(Debug, Clone)]
pub(crate) enum Place {
    /// A place of type `T` (e.g. `self.id`).
    Value(String),
    /// An expression of type `&T` (e.g. a loop variable).
    Ref(String),
}

impl Place {
    /// The value itself (for `Copy` types).
    fn copied(&self) -> String {
        match self {
            Place::Value(p) => p.clone(),
            Place::Ref(r) => format!("*{r}"),
        }
    }

    /// A reference to the value.
    fn by_ref(&self) -> String {
        match self {
            Place::Value(p) => format!("&{p}"),
            Place::Ref(r) => r.clone(),
        }
    }

    /// The expression for method calls and field access (auto-deref).
    fn recv(&self) -> &str {
        match self {
            Place::Value(p) | Place::Ref(p) => p,
        }
    }
}

impl Ctx<'_> {
    /// `<Type as Message>`.
    pub fn as_message(&self, path: &str) -> String {
        format!("<{path} as {}::thrift::Message>", self.runtime)
    }

    /// A decode error for a struct missing required field `field`.
    pub fn missing_field(&self, owner: &str, field: &str) -> String {
        format!(
            "{}::thrift::DecodeError::MissingField {{ owner: {owner:?}, field: {field:?} }}",
            self.runtime
        )
    }

    /// A decode error for a union with no field or more than one field set.
    /// The count is in a local named `fields_set`.
    pub fn union_error(&self, owner: &str) -> String {
        format!(
            "{}::thrift::DecodeError::InvalidUnion {{ owner: {owner:?}, fields_set }}",
            self.runtime
        )
    }

    /// The single-expression decoder of a scalar, enum or struct, or `None`
    /// for containers, which need statements.
    pub fn decode_expr(&self, ty: &RType) -> Option<String> {
        Some(match ty {
            RType::Base(b) => match b {
                BaseType::Bool => "r.read_bool()?".to_owned(),
                BaseType::I8 => "r.read_i8()?".to_owned(),
                BaseType::I16 => "r.read_i16()?".to_owned(),
                BaseType::I32 => "r.read_i32()?".to_owned(),
                BaseType::I64 => "r.read_i64()?".to_owned(),
                BaseType::Double => "r.read_double()?".to_owned(),
                BaseType::String => "r.read_string()?".to_owned(),
                BaseType::Binary => "r.read_binary()?".to_owned(),
                BaseType::Uuid => "r.read_uuid()?".to_owned(),
            },
            RType::Enum(id) => format!("{}(r.read_i32()?)", self.def_path(id)),
            RType::Struct(id) => format!("{}::decode(r)?", self.as_message(&self.def_path(id))),
            RType::List(_) | RType::Set(_) | RType::Map(..) => return None,
        })
    }

    /// Writes statements ending in `let {dest} = <decoded value>;`.
    pub fn gen_decode(&self, code: &mut Code, ty: &RType, dest: &str, depth: usize) {
        if let Some(expr) = self.decode_expr(ty) {
            code.line(format!("let {dest} = {expr};"));
            return;
        }
        let rt = self.runtime;
        let header = format!("header{depth}");
        let (begin, end, len) = match ty {
            RType::List(_) => ("read_list_begin", "read_list_end", "len"),
            RType::Set(_) => ("read_set_begin", "read_set_end", "len"),
            _ => ("read_map_begin", "read_map_end", "len"),
        };
        code.line(format!("let {header} = r.{begin}()?;"));
        // Pre-allocate no more memory than the bytes left in the frame could fill.
        let elem_ty = match ty {
            RType::List(e) | RType::Set(e) => self.rust_type(e),
            RType::Map(k, v) => format!("({}, {})", self.rust_type(k), self.rust_type(v)),
            _ => "u8".to_owned(),
        };
        let capacity =
            format!("{rt}::thrift::capacity_for::<{elem_ty}>({header}.{len}, r.remaining())");
        match ty {
            RType::List(elem) | RType::Set(elem) => {
                code.line(format!(
                    "{rt}::thrift::expect_elem({header}.elem, {}, {header}.len)?;",
                    self.ttype(elem)
                ));
                let hashed = matches!(ty, RType::Set(_)) && self.is_hashable(elem);
                let (container, add) = if hashed {
                    ("::std::collections::HashSet", "insert")
                } else {
                    ("::std::vec::Vec", "push")
                };
                code.line(format!(
                    "let mut {dest} = {container}::with_capacity({capacity});"
                ));
                code.open(format!("for _ in 0..{header}.len {{"));
                let item = self.decode_expr(elem).unwrap_or_else(|| {
                    let item = format!("item{depth}");
                    self.gen_decode(code, elem, &item, depth + 1);
                    item
                });
                code.line(format!("{dest}.{add}({item});"));
                code.close("}");
            }
            RType::Map(k, v) => {
                code.line(format!(
                    "{rt}::thrift::expect_elem({header}.key, {}, {header}.len)?;",
                    self.ttype(k)
                ));
                code.line(format!(
                    "{rt}::thrift::expect_elem({header}.value, {}, {header}.len)?;",
                    self.ttype(v)
                ));
                let hashed = self.is_hashable(k);
                let container = if hashed {
                    "::std::collections::HashMap"
                } else {
                    "::std::vec::Vec"
                };
                code.line(format!(
                    "let mut {dest} = {container}::with_capacity({capacity});"
                ));
                code.open(format!("for _ in 0..{header}.len {{"));
                // Keys are decoded before values: `insert(k, v)` evaluates its
                // arguments in order, but a statement is clearer when the value
                // needs statements of its own.
                let key = format!("key{depth}");
                let value = format!("value{depth}");
                let (key, value) = match (self.decode_expr(k), self.decode_expr(v)) {
                    (Some(k), Some(v)) => (k, v),
                    _ => {
                        self.gen_decode(code, k, &key, depth + 1);
                        self.gen_decode(code, v, &value, depth + 1);
                        (key, value)
                    }
                };
                if hashed {
                    code.line(format!("{dest}.insert({key}, {value});"));
                } else {
                    code.line(format!("{dest}.push(({key}, {value}));"));
                }
                code.close("}");
            }
            _ => {}
        }
        code.line(format!("r.{end}()?;"));
    }

    /// Writes statements encoding `place` (of the Rust type for `ty`) into
    /// `sink`.
    pub fn gen_encode(&self, code: &mut Code, sink: Sink, ty: &RType, place: &Place, depth: usize) {
        let rt = self.runtime;
        match ty {
            RType::Base(b) => {
                let (op, arg) = match b {
                    BaseType::Bool => ("bool", place.copied()),
                    BaseType::I8 => ("i8", place.copied()),
                    BaseType::I16 => ("i16", place.copied()),
                    BaseType::I32 => ("i32", place.copied()),
                    BaseType::I64 => ("i64", place.copied()),
                    BaseType::Double => ("double", place.copied()),
                    BaseType::String => ("string", place.by_ref()),
                    BaseType::Binary => ("binary", place.by_ref()),
                    BaseType::Uuid => ("uuid", place.by_ref()),
                };
                code.line(sink.op(op, &arg));
            }
            RType::Enum(_) => code.line(sink.op("i32", &format!("{}.0", place.recv()))),
            RType::Struct(id) => {
                let message = self.as_message(&self.def_path(id));
                code.line(match sink {
                    Sink::Encode => format!("{message}::encode({}, w)?;", place.by_ref()),
                    Sink::Len => format!("len += {message}::encoded_len({}, l);", place.by_ref()),
                });
            }
            RType::List(elem) | RType::Set(elem) => {
                let kind = if matches!(ty, RType::List(_)) {
                    "list"
                } else {
                    "set"
                };
                let header = format!(
                    "{rt}::thrift::ListHeader {{ elem: {}, len: {}.len() }}",
                    self.ttype(elem),
                    place.recv()
                );
                code.line(sink.op(&format!("{kind}_begin"), &header));
                let item = format!("item{depth}");
                code.open(format!("for {item} in {}.iter() {{", place.recv()));
                self.gen_encode(code, sink, elem, &Place::Ref(item), depth + 1);
                code.close("}");
                code.line(sink.op(&format!("{kind}_end"), ""));
            }
            RType::Map(k, v) => {
                let header = format!(
                    "{rt}::thrift::MapHeader {{ key: {}, value: {}, len: {}.len() }}",
                    self.ttype(k),
                    self.ttype(v),
                    place.recv()
                );
                code.line(sink.op("map_begin", &header));
                let key = format!("key{depth}");
                let value = format!("value{depth}");
                code.open(format!(
                    "for ({key}, {value}) in {}.iter() {{",
                    place.recv()
                ));
                self.gen_encode(code, sink, k, &Place::Ref(key), depth + 1);
                self.gen_encode(code, sink, v, &Place::Ref(value), depth + 1);
                code.close("}");
                code.line(sink.op("map_end", ""));
            }
        }
    }
}

/// Where encoding statements go: a `ProtocolWrite` (`w`), or a size count
/// against a `ProtocolLen` (`l`, summed into `len`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Sink {
    /// `w.write_<op>(args)?;`
    Encode,
    /// `len += l.<op>_len(args);`
    Len,
}

impl Sink {
    /// The statement performing protocol operation `op` (e.g. `i32`,
    /// `field_begin`) with `args`.
    pub fn op(self, op: &str, args: &str) -> String {
        match self {
            Sink::Encode => format!("w.write_{op}({args})?;"),
            Sink::Len => format!("len += l.{op}_len({args});"),
        }
    }
}
