//! Thrift types as Rust types, and the trait bounds they can derive.
//!
//! | Thrift | Rust |
//! |---|---|
//! | `bool`, `byte`/`i8`, `i16`, `i32`, `i64`, `double` | `bool`, `i8`, `i16`, `i32`, `i64`, `f64` |
//! | `string` | `netpoll_codec::ByteString` |
//! | `binary` | `bytes::Bytes` |
//! | `list<T>` | `Vec<T>` |
//! | `set<T>` | `HashSet<T>` if `T: Hash + Eq`, else `Vec<T>` |
//! | `map<K, V>` | `HashMap<K, V>` if `K: Hash + Eq`, else `Vec<(K, V)>` |
//! | enum | a newtype over `i32` |
//! | struct, exception | the struct (boxed where it would contain itself) |
//! | union | a Rust enum |

use crate::ast::BaseType;
use crate::resolve::{DefId, RType};

use super::names::type_name;
use super::Ctx;

impl Ctx<'_> {
    /// The Rust path of a definition, seen from the file being generated.
    pub fn def_path(&self, id: &DefId) -> String {
        let name = type_name(&id.name);
        if id.file == self.file {
            name
        } else {
            format!("super::{}::{name}", self.program.file(id.file).module)
        }
    }

    /// The Rust type for `ty`.
    pub fn rust_type(&self, ty: &RType) -> String {
        match ty {
            RType::Base(b) => match b {
                BaseType::Bool => "bool".to_owned(),
                BaseType::I8 => "i8".to_owned(),
                BaseType::I16 => "i16".to_owned(),
                BaseType::I32 => "i32".to_owned(),
                BaseType::I64 => "i64".to_owned(),
                BaseType::Double => "f64".to_owned(),
                BaseType::String => format!("{}::ByteString", self.runtime),
                BaseType::Binary => format!("{}::bytes::Bytes", self.runtime),
                BaseType::Uuid => "[u8; 16]".to_owned(),
            },
            RType::List(t) => format!("::std::vec::Vec<{}>", self.rust_type(t)),
            RType::Set(t) if self.is_hashable(t) => {
                format!("::std::collections::HashSet<{}>", self.rust_type(t))
            }
            RType::Set(t) => format!("::std::vec::Vec<{}>", self.rust_type(t)),
            RType::Map(k, v) if self.is_hashable(k) => format!(
                "::std::collections::HashMap<{}, {}>",
                self.rust_type(k),
                self.rust_type(v)
            ),
            RType::Map(k, v) => format!(
                "::std::vec::Vec<({}, {})>",
                self.rust_type(k),
                self.rust_type(v)
            ),
            RType::Enum(id) | RType::Struct(id) => self.def_path(id),
        }
    }

    /// Whether the Rust type for `ty` implements `Eq`.
    pub fn is_eq(&self, ty: &RType) -> bool {
        self.derives(ty, &mut Vec::new(), false)
    }

    /// Whether the Rust type for `ty` implements `Hash` and `Eq`.
    pub fn is_hashable(&self, ty: &RType) -> bool {
        self.derives(ty, &mut Vec::new(), true)
    }

    /// `Eq` fails only through `f64`; `Hash` also fails through hash
    /// containers. A struct on the `visiting` stack is assumed to pass: a
    /// cycle adds no field that is not checked elsewhere.
    fn derives(&self, ty: &RType, visiting: &mut Vec<DefId>, hash: bool) -> bool {
        match ty {
            RType::Base(b) => *b != BaseType::Double,
            RType::List(t) => self.derives(t, visiting, hash),
            RType::Set(t) => !hash && self.derives(t, visiting, hash),
            RType::Map(k, v) => {
                !hash && self.derives(k, visiting, hash) && self.derives(v, visiting, hash)
            }
            RType::Enum(_) => true,
            RType::Struct(id) => {
                if visiting.contains(id) {
                    return true;
                }
                let Some(def) = self.program.struct_def(id) else {
                    return false;
                };
                visiting.push(id.clone());
                let ok = def.fields.iter().all(|f| {
                    self.program
                        .resolve_type(id.file, &f.ty)
                        .is_ok_and(|t| self.derives(&t, visiting, hash))
                });
                visiting.pop();
                ok
            }
        }
    }

    /// Whether a field of type `ty` inside struct `owner` must be boxed:
    /// `ty` is a struct that contains `owner` again without a container's
    /// indirection in between.
    pub fn needs_box(&self, owner: &DefId, ty: &RType) -> bool {
        match ty {
            RType::Struct(id) => self.reaches(id, owner, &mut Vec::new()),
            _ => false,
        }
    }

    fn reaches(&self, from: &DefId, to: &DefId, visited: &mut Vec<DefId>) -> bool {
        if from == to {
            return true;
        }
        if visited.contains(from) {
            return false;
        }
        visited.push(from.clone());
        let Some(def) = self.program.struct_def(from) else {
            return false;
        };
        def.fields.iter().any(|f| {
            matches!(
                self.program.resolve_type(from.file, &f.ty),
                Ok(RType::Struct(next)) if self.reaches(&next, to, visited)
            )
        })
    }

    /// The wire type constant for `ty`.
    pub fn ttype(&self, ty: &RType) -> String {
        let name = match ty {
            RType::Base(b) => match b {
                BaseType::Bool => "Bool",
                BaseType::I8 => "I8",
                BaseType::I16 => "I16",
                BaseType::I32 => "I32",
                BaseType::I64 => "I64",
                BaseType::Double => "Double",
                BaseType::String | BaseType::Binary => "Binary",
                BaseType::Uuid => "Uuid",
            },
            RType::List(_) => "List",
            RType::Set(_) => "Set",
            RType::Map(..) => "Map",
            RType::Enum(_) => "I32",
            RType::Struct(_) => "Struct",
        };
        format!("{}::thrift::TType::{name}", self.runtime)
    }
}
