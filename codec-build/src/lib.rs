//! Build-time Thrift IDL parser and Rust code generator for the `codec`
//! runtime, used from `build.rs` the way `prost-build` is.
//!
//! ```no_run
//! // build.rs
//! fn main() -> Result<(), netpoll_codec_build::Error> {
//!     netpoll_codec_build::Config::new()
//!         .include_dir("idl")
//!         .compile(&["idl/interop.thrift", "idl/echo.thrift"])?;
//!     Ok(())
//! }
//! ```
//!
//! ```ignore
//! // src/lib.rs: each Thrift file becomes `pub mod <rs namespace or file stem>`
//! // (`netpoll_rpc::include_thrift!("interop")` does the same for crates that use `rpc`).
//! include!(concat!(env!("OUT_DIR"), "/interop.rs"));
//! include!(concat!(env!("OUT_DIR"), "/echo.rs"));
//!
//! let v = interop::AllTypes::default();
//! assert_eq!(&*v.with_default, "default");
//! ```
//!
//! # What is generated
//!
//! | Thrift | Rust |
//! |---|---|
//! | `bool`, `byte`/`i8`, `i16`, `i32`, `i64`, `double` | `bool`, `i8`, `i16`, `i32`, `i64`, `f64` |
//! | `string` / `binary` | `netpoll_codec::ByteString` / `bytes::Bytes` (via `netpoll_codec::bytes`) |
//! | `list<T>` | `Vec<T>` |
//! | `set<T>` | `HashSet<T>` when `T` is `Hash + Eq`, else `Vec<T>` (doubles, structs with maps, ...) |
//! | `map<K, V>` | `HashMap<K, V>` when `K` is `Hash + Eq`, else `Vec<(K, V)>` |
//! | `enum` | `pub struct Color(pub i32)` with `Color::RED`-style constants: unknown values survive |
//! | `struct`, `exception` | a struct; `optional` fields are `Option<T>`; `Box` breaks recursion |
//! | `union` | an enum with one tuple variant per field |
//! | `typedef` | `pub type` |
//! | `const` | `pub const` for scalars, enums and strings (`&str`), else `pub fn` building the value |
//!
//! Structs, exceptions, unions and the per-method `{Service}{Method}Args` and
//! `{Service}{Method}Result` structs implement `netpoll_codec::thrift::Message`.
//! Decoders skip unknown fields and fields whose wire type does not match,
//! fill absent default-requiredness fields with their IDL default, and fail
//! on missing required fields and on unions with zero or several fields set.
//!
//! # What generated code needs from the runtime (`netpoll_codec::thrift`)
//!
//! Generated code names the runtime by path (`::codec` unless
//! [`Config::runtime_crate`] says otherwise) and uses exactly this:
//!
//! - `ByteString` (`Deref<Target = str>`, `Hash + Eq + Default + Clone + Debug`,
//!   `const fn from_static(&'static str)`) and a re-export `bytes` (for `Bytes`).
//! - In `thrift`: `enum TType { Bool, I8, I16, I32, I64, Double, Binary, Struct,
//!   Map, Set, List, Uuid, .. }` (usable in patterns); `FieldHeader { ttype, id: i16 }`;
//!   `ListHeader { elem: TType, len: usize }` (lists and sets);
//!   `MapHeader { key: TType, value: TType, len: usize }`.
//! - `trait Message { fn decode<R: ProtocolRead>(&mut R) -> Result<Self, DecodeError>;
//!   fn encode<W: ProtocolWrite>(&self, &mut W) -> Result<(), EncodeError>;
//!   fn encoded_len<L: ProtocolLen>(&self, &mut L) -> usize; }`.
//! - `ProtocolRead`: `read_struct_begin/end`, `read_field_begin -> Option<FieldHeader>`
//!   (`None` on STOP), `read_field_end`, `read_bool/i8/i16/i32/i64/double`,
//!   `read_string -> ByteString`, `read_binary -> Bytes`, `read_uuid -> [u8; 16]`,
//!   `read_list_begin/read_set_begin -> ListHeader`, `read_map_begin -> MapHeader`,
//!   their `_end`s, `skip(TType)` and `remaining() -> usize`; all fallible with
//!   `DecodeError`, which must have the variants
//!   `MissingField { owner: &'static str, field: &'static str }` and
//!   `InvalidUnion { owner: &'static str, fields_set: usize }`.
//! - `ProtocolWrite`: the `write_` mirrors (`write_struct_begin(&'static str)`,
//!   `write_field_begin(TType, i16)`, `write_field_stop`, `write_string(&str)`,
//!   `write_binary(&[u8])`, `write_uuid(&[u8; 16])`, `write_list_begin(ListHeader)`, ...),
//!   fallible with `EncodeError`.
//! - `ProtocolLen`: the `_len` mirrors (`struct_begin_len(&'static str)`,
//!   `field_begin_len(TType, i16)`, `i32_len(i32)`, `list_begin_len(ListHeader)`, ...)
//!   returning `usize`, taking `&mut self` so the compact protocol can track
//!   field-id deltas and folded bools.
//! - Free functions `expect_elem(found: TType, expected: TType, len: usize)
//!   -> Result<(), DecodeError>` (a non-empty container of the wrong element
//!   type is an error) and `capacity_for::<T>(len: usize, remaining: usize) -> usize`
//!   (bounds `with_capacity` by the bytes left).
//!
//! `tests/roundtrip.rs` compiles the generated code against the `codec` crate
//! and runs it, including against Apache Thrift and Volo peers.
//!
//! # Not supported
//!
//! Type annotations are parsed and dropped; definition and field annotations
//! are kept in the [`ast`] but do not change the generated code.
#![forbid(unsafe_code)]
#![deny(missing_docs, missing_debug_implementations)]

pub mod ast;
mod config;
mod error;
mod gen;
mod lexer;
mod parser;
mod protobuf;
mod protobuf_rpc;
mod resolve;
mod services;
mod value;

pub use config::{compile, Config, Generated};
pub use error::{Error, Pos, SemanticError, SemanticErrorKind, SyntaxError, Warning};
pub use parser::parse;
pub use protobuf::{compile_proto_services, compile_protos, compile_protos_to, ProtoError};
pub use resolve::{DefId, File, Program, RType};
pub use value::Value;
