//! Build-time Thrift IDL parser and Rust code generator, used from `build.rs`.
#![forbid(unsafe_code)]
#![deny(missing_docs, missing_debug_implementations)]
