//! The typed syntax tree of one Thrift IDL file, as written (names unresolved).

use crate::error::Pos;

/// A parsed Thrift file.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Document {
    /// `include "x.thrift"` statements, in order.
    pub includes: Vec<Include>,
    /// `namespace <scope> <name>` statements, in order.
    pub namespaces: Vec<Namespace>,
    /// Typedefs, constants, enums, structs, unions, exceptions and services.
    pub definitions: Vec<Definition>,
}

impl Document {
    /// The namespace declared for `scope` (e.g. `"rs"`), or for `*`.
    pub fn namespace(&self, scope: &str) -> Option<&str> {
        let find = |s: &str| {
            self.namespaces
                .iter()
                .find(|n| n.scope == s)
                .map(|n| n.name.as_str())
        };
        find(scope).or_else(|| find("*"))
    }
}

/// `include "path"`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Include {
    /// The path as written.
    pub path: String,
    /// Where the statement starts.
    pub pos: Pos,
}

/// `namespace scope name`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Namespace {
    /// The language, e.g. `rs`, `py`, or `*`.
    pub scope: String,
    /// The namespace itself, e.g. `a.b.c`.
    pub name: String,
}

/// A name and where it is written.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ident {
    /// The name; may be dotted (`shared.Type`).
    pub name: String,
    /// Where it is written.
    pub pos: Pos,
}

/// `(key = "value", ...)` after a type, field or definition.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Annotation {
    /// The key.
    pub key: String,
    /// The value; `(flag)` without a value has `"1"`, as Apache Thrift does.
    pub value: String,
}

/// A top-level definition.
#[derive(Debug, Clone, PartialEq)]
pub enum Definition {
    /// `typedef T Name`.
    Typedef(Typedef),
    /// `const T NAME = value`.
    Const(Const),
    /// `enum Name { ... }`.
    Enum(Enum),
    /// `struct`, `union` or `exception`.
    Struct(Struct),
    /// `service Name [extends Base] { ... }`.
    Service(Service),
}

impl Definition {
    /// The definition's name.
    pub fn name(&self) -> &Ident {
        match self {
            Definition::Typedef(d) => &d.name,
            Definition::Const(d) => &d.name,
            Definition::Enum(d) => &d.name,
            Definition::Struct(d) => &d.name,
            Definition::Service(d) => &d.name,
        }
    }
}

/// A type as written.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Type {
    /// A base type.
    Base(BaseType),
    /// `list<T>`.
    List(Box<Type>),
    /// `set<T>`.
    Set(Box<Type>),
    /// `map<K, V>`.
    Map(Box<Type>, Box<Type>),
    /// A reference to a typedef, enum, struct, union or exception.
    Named(Ident),
}

/// The Thrift base types.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum BaseType {
    /// `bool`.
    Bool,
    /// `byte` or `i8`.
    I8,
    /// `i16`.
    I16,
    /// `i32`.
    I32,
    /// `i64`.
    I64,
    /// `double`.
    Double,
    /// `string`: UTF-8 text.
    String,
    /// `binary`: raw bytes.
    Binary,
    /// `uuid`: 16 bytes.
    Uuid,
}

impl BaseType {
    /// The base type spelled `name`, if any.
    pub fn from_name(name: &str) -> Option<Self> {
        Some(match name {
            "bool" => Self::Bool,
            "byte" | "i8" => Self::I8,
            "i16" => Self::I16,
            "i32" => Self::I32,
            "i64" => Self::I64,
            "double" => Self::Double,
            "string" => Self::String,
            "binary" => Self::Binary,
            "uuid" => Self::Uuid,
            _ => return None,
        })
    }
}

/// `typedef T Name`.
#[derive(Debug, Clone, PartialEq)]
pub struct Typedef {
    /// The aliased type.
    pub ty: Type,
    /// The new name.
    pub name: Ident,
    /// Annotations after the definition.
    pub annotations: Vec<Annotation>,
    /// The doc comment before it.
    pub doc: Option<String>,
}

/// `const T NAME = value`.
#[derive(Debug, Clone, PartialEq)]
pub struct Const {
    /// The declared type.
    pub ty: Type,
    /// The constant's name.
    pub name: Ident,
    /// The value.
    pub value: ConstValue,
    /// The doc comment before it.
    pub doc: Option<String>,
}

/// A constant value as written; its meaning depends on the declared type.
#[derive(Debug, Clone, PartialEq)]
pub enum ConstValue {
    /// An integer literal.
    Int(i64, Pos),
    /// A floating-point literal.
    Double(f64, Pos),
    /// A string literal.
    String(String, Pos),
    /// A reference to a constant or enum value (`Color.RED`), or `true`/`false`.
    Ident(Ident),
    /// `[a, b, ...]`.
    List(Vec<ConstValue>, Pos),
    /// `{k: v, ...}`; also used for struct constants.
    Map(Vec<(ConstValue, ConstValue)>, Pos),
}

impl ConstValue {
    /// Where the value is written.
    pub fn pos(&self) -> Pos {
        match self {
            ConstValue::Int(_, p)
            | ConstValue::Double(_, p)
            | ConstValue::String(_, p)
            | ConstValue::List(_, p)
            | ConstValue::Map(_, p) => *p,
            ConstValue::Ident(i) => i.pos,
        }
    }
}

/// `enum Name { A, B = 2, ... }`.
#[derive(Debug, Clone, PartialEq)]
pub struct Enum {
    /// The enum's name.
    pub name: Ident,
    /// Its values, explicit or auto-incremented.
    pub values: Vec<EnumValue>,
    /// Annotations after the definition.
    pub annotations: Vec<Annotation>,
    /// The doc comment before it.
    pub doc: Option<String>,
}

/// One value of an enum.
#[derive(Debug, Clone, PartialEq)]
pub struct EnumValue {
    /// The value's name.
    pub name: Ident,
    /// Its number: as written, or previous + 1 (0 for the first).
    pub value: i64,
    /// Annotations after the value.
    pub annotations: Vec<Annotation>,
    /// The doc comment before it.
    pub doc: Option<String>,
}

/// Which of the three struct-like definitions.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StructKind {
    /// `struct`.
    Struct,
    /// `union`: exactly one field set.
    Union,
    /// `exception`: a struct that is also an error.
    Exception,
}

/// `struct`, `union` or `exception`.
#[derive(Debug, Clone, PartialEq)]
pub struct Struct {
    /// Which kind.
    pub kind: StructKind,
    /// The name.
    pub name: Ident,
    /// The fields, in declaration order.
    pub fields: Vec<Field>,
    /// Annotations after the definition.
    pub annotations: Vec<Annotation>,
    /// The doc comment before it.
    pub doc: Option<String>,
}

/// Whether a field must, may or should be present on the wire.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Requiredness {
    /// `required`: decoding fails without it.
    Required,
    /// `optional`: may be absent.
    Optional,
    /// Neither keyword: always written, defaulted when absent.
    Default,
}

/// A field of a struct, a function parameter or a declared exception.
#[derive(Debug, Clone, PartialEq)]
pub struct Field {
    /// The field id; negative when implicit (Apache numbers those -1, -2, ...).
    pub id: i16,
    /// Whether the id was left out in the IDL.
    pub implicit_id: bool,
    /// Required, optional or default.
    pub requiredness: Requiredness,
    /// The field type.
    pub ty: Type,
    /// The field name.
    pub name: Ident,
    /// The default value, if any.
    pub default: Option<ConstValue>,
    /// Annotations after the field.
    pub annotations: Vec<Annotation>,
    /// The doc comment before it.
    pub doc: Option<String>,
}

/// `service Name [extends Base] { functions }`.
#[derive(Debug, Clone, PartialEq)]
pub struct Service {
    /// The name.
    pub name: Ident,
    /// The service extended, if any.
    pub extends: Option<Ident>,
    /// Its functions.
    pub functions: Vec<Function>,
    /// Annotations after the definition.
    pub annotations: Vec<Annotation>,
    /// The doc comment before it.
    pub doc: Option<String>,
}

/// One function of a service.
#[derive(Debug, Clone, PartialEq)]
pub struct Function {
    /// The name.
    pub name: Ident,
    /// `oneway`: the client expects no reply.
    pub oneway: bool,
    /// The return type; `None` for `void`.
    pub returns: Option<Type>,
    /// The parameters, as fields.
    pub params: Vec<Field>,
    /// The declared exceptions, as fields.
    pub throws: Vec<Field>,
    /// Annotations after the function.
    pub annotations: Vec<Annotation>,
    /// The doc comment before it.
    pub doc: Option<String>,
}
