//! Constant and default values checked against their declared types.

use crate::ast::{BaseType, ConstValue, Definition, StructKind};
use crate::error::{SemanticError, SemanticErrorKind};
use crate::resolve::{DefId, Program, RType};

/// A constant value that is known to fit its type.
#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    /// A `bool`.
    Bool(bool),
    /// An `i8`, `i16`, `i32` or `i64`, within its range.
    Int(i64),
    /// A `double`.
    Double(f64),
    /// A `string` or `binary` (as written).
    String(String),
    /// A `uuid`, parsed from its 36-character text form.
    Uuid([u8; 16]),
    /// An enum value: its number and, when it is a declared value, its name.
    Enum {
        /// The enum.
        def: DefId,
        /// The value's number.
        value: i32,
        /// The declared name with that number, if any.
        name: Option<String>,
    },
    /// A list or set.
    List(Vec<Value>),
    /// A map.
    Map(Vec<(Value, Value)>),
    /// A struct, union or exception: the fields given, by declaration index.
    Struct {
        /// The struct.
        def: DefId,
        /// `(index of the field in the definition, value)`.
        fields: Vec<(usize, Value)>,
    },
}

impl Program {
    /// Checks `value` (written in `file`) against `ty` and returns it typed.
    pub fn const_value(
        &self,
        file: usize,
        ty: &RType,
        value: &ConstValue,
    ) -> Result<Value, SemanticError> {
        self.const_value_depth(file, ty, value, 0)
    }

    fn const_value_depth(
        &self,
        file: usize,
        ty: &RType,
        value: &ConstValue,
        depth: usize,
    ) -> Result<Value, SemanticError> {
        let invalid = |reason: String| {
            self.error(
                file,
                value.pos(),
                SemanticErrorKind::InvalidConstValue { reason },
            )
        };
        if depth > 64 {
            return Err(invalid("constants nest too deeply (a cycle?)".to_owned()));
        }
        // A reference to another constant stands for that constant's value.
        if let ConstValue::Ident(ident) = value {
            if let Some((def_file, Definition::Const(c))) = self.lookup(file, &ident.name) {
                let declared = self.resolve_type(def_file, &c.ty)?;
                if !compatible(&declared, ty) {
                    return Err(invalid(format!(
                        "constant `{}` has a different type",
                        ident.name
                    )));
                }
                return self.const_value_depth(def_file, ty, &c.value, depth + 1);
            }
        }
        let recurse = |t: &RType, v: &ConstValue| self.const_value_depth(file, t, v, depth + 1);
        Ok(match (ty, value) {
            (RType::Base(BaseType::Bool), ConstValue::Int(i, _)) if *i == 0 || *i == 1 => {
                Value::Bool(*i == 1)
            }
            (RType::Base(BaseType::Bool), ConstValue::Ident(id))
                if id.name == "true" || id.name == "false" =>
            {
                Value::Bool(id.name == "true")
            }
            (
                RType::Base(b @ (BaseType::I8 | BaseType::I16 | BaseType::I32 | BaseType::I64)),
                ConstValue::Int(i, _),
            ) => {
                let fits = match b {
                    BaseType::I8 => i8::try_from(*i).is_ok(),
                    BaseType::I16 => i16::try_from(*i).is_ok(),
                    BaseType::I32 => i32::try_from(*i).is_ok(),
                    _ => true,
                };
                if !fits {
                    return Err(invalid(format!("{i} is out of range for {b:?}")));
                }
                Value::Int(*i)
            }
            (RType::Base(BaseType::Double), ConstValue::Int(i, _)) => Value::Double(*i as f64),
            (RType::Base(BaseType::Double), ConstValue::Double(d, _)) => Value::Double(*d),
            (RType::Base(BaseType::String | BaseType::Binary), ConstValue::String(s, _)) => {
                Value::String(s.clone())
            }
            (RType::Base(BaseType::Uuid), ConstValue::String(s, _)) => {
                Value::Uuid(parse_uuid(s).ok_or_else(|| invalid(format!("`{s}` is not a UUID")))?)
            }
            (RType::Enum(def), ConstValue::Int(i, _)) => {
                let value =
                    i32::try_from(*i).map_err(|_| invalid(format!("{i} does not fit in i32")))?;
                let name = self.enum_def(def).and_then(|e| {
                    e.values
                        .iter()
                        .find(|v| v.value == i64::from(value))
                        .map(|v| v.name.name.clone())
                });
                Value::Enum {
                    def: def.clone(),
                    value,
                    name,
                }
            }
            (RType::Enum(def), ConstValue::Ident(id)) => {
                self.enum_value(file, def, &id.name).ok_or_else(|| {
                    invalid(format!(
                        "`{}` is not a value of enum `{}`",
                        id.name, def.name
                    ))
                })?
            }
            (RType::List(elem) | RType::Set(elem), ConstValue::List(items, _)) => Value::List(
                items
                    .iter()
                    .map(|v| recurse(elem, v))
                    .collect::<Result<_, _>>()?,
            ),
            (RType::Map(k, v), ConstValue::Map(entries, _)) => Value::Map(
                entries
                    .iter()
                    .map(|(ek, ev)| Ok((recurse(k, ek)?, recurse(v, ev)?)))
                    .collect::<Result<_, SemanticError>>()?,
            ),
            (RType::Struct(def), ConstValue::Map(entries, _)) => {
                let Some(s) = self.struct_def(def) else {
                    return Err(invalid(format!("`{}` is not a struct", def.name)));
                };
                let mut fields = Vec::new();
                for (key, v) in entries {
                    let ConstValue::String(name, _) = key else {
                        return Err(invalid(
                            "struct constant keys must be field names in quotes".to_owned(),
                        ));
                    };
                    let Some(index) = s.fields.iter().position(|f| &f.name.name == name) else {
                        return Err(invalid(format!("`{}` has no field `{name}`", def.name)));
                    };
                    if fields.iter().any(|(i, _)| *i == index) {
                        return Err(invalid(format!("field `{name}` is given twice")));
                    }
                    let field_ty = self.resolve_type(def.file, &s.fields[index].ty)?;
                    fields.push((index, recurse(&field_ty, v)?));
                }
                if s.kind == StructKind::Union && fields.len() != 1 {
                    return Err(invalid(format!(
                        "a union constant sets exactly one field; this one sets {}",
                        fields.len()
                    )));
                }
                Value::Struct {
                    def: def.clone(),
                    fields,
                }
            }
            _ => {
                return Err(invalid(format!(
                    "this value does not fit type {}",
                    describe(ty)
                )))
            }
        })
    }

    /// `Enum.VALUE`, `alias.Enum.VALUE` or a bare `VALUE` of enum `def`.
    fn enum_value(&self, file: usize, def: &DefId, written: &str) -> Option<Value> {
        let (prefix, value_name) = match written.rsplit_once('.') {
            Some((prefix, name)) => (Some(prefix), name),
            None => (None, written),
        };
        if let Some(prefix) = prefix {
            let (f, d) = self.lookup(file, prefix)?;
            if f != def.file || d.name().name != def.name {
                return None;
            }
        }
        let e = self.enum_def(def)?;
        let v = e.values.iter().find(|v| v.name.name == value_name)?;
        Some(Value::Enum {
            def: def.clone(),
            value: i32::try_from(v.value).ok()?,
            name: Some(v.name.name.clone()),
        })
    }
}

/// Parses `xxxxxxxx-xxxx-xxxx-xxxx-xxxxxxxxxxxx` (hex digits, any case).
fn parse_uuid(text: &str) -> Option<[u8; 16]> {
    let bytes = text.as_bytes();
    if bytes.len() != 36 || [8, 13, 18, 23].iter().any(|&i| bytes[i] != b'-') {
        return None;
    }
    let hex: Vec<u8> = bytes.iter().copied().filter(|&b| b != b'-').collect();
    let mut out = [0u8; 16];
    for (i, pair) in hex.chunks(2).enumerate() {
        let pair = std::str::from_utf8(pair).ok()?;
        *out.get_mut(i)? = u8::from_str_radix(pair, 16).ok()?;
    }
    (hex.len() == 32).then_some(out)
}

/// Whether a constant of type `declared` may stand where `wanted` is needed.
fn compatible(declared: &RType, wanted: &RType) -> bool {
    match (declared, wanted) {
        (RType::Base(a), RType::Base(b)) => {
            let int = |t: &BaseType| {
                matches!(
                    t,
                    BaseType::I8 | BaseType::I16 | BaseType::I32 | BaseType::I64
                )
            };
            a == b || (int(a) && (int(b) || *b == BaseType::Double))
        }
        _ => declared == wanted,
    }
}

fn describe(ty: &RType) -> String {
    match ty {
        RType::Base(b) => format!("{b:?}").to_lowercase(),
        RType::List(t) => format!("list<{}>", describe(t)),
        RType::Set(t) => format!("set<{}>", describe(t)),
        RType::Map(k, v) => format!("map<{}, {}>", describe(k), describe(v)),
        RType::Enum(d) | RType::Struct(d) => d.name.clone(),
    }
}
