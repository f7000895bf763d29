//! The code generated for the project's IDL, checked against the files in
//! `tests/golden/` (which `tests/roundtrip.rs` compiles and runs).
//!
//! After an intended change to the generator, refresh them with
//! `UPDATE_GOLDEN=1 cargo test -p codec-build --test golden`.

use std::fs;
use std::path::PathBuf;

fn idl(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../idl")
        .join(name)
}

fn golden(module: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join(format!("tests/golden/{module}.rs"))
}

fn test_idl(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/idl")
        .join(name)
}

fn generate() -> Vec<(String, String)> {
    let generated = codec_build::Config::new()
        .generate(&[
            idl("interop.thrift"),
            idl("echo.thrift"),
            test_idl("kitchen_sink.thrift"),
        ])
        .unwrap_or_else(|e| panic!("generation failed: {e}"));
    assert!(generated.warnings.is_empty(), "{:?}", generated.warnings);
    assert_eq!(generated.files_read.len(), 4);
    generated.modules
}

#[test]
fn golden_files_are_current() {
    for (module, source) in generate() {
        let path = golden(&module);
        if std::env::var_os("UPDATE_GOLDEN").is_some() {
            fs::write(&path, &source).expect("write golden file");
            continue;
        }
        let expected = fs::read_to_string(&path)
            .unwrap_or_else(|e| panic!("{}: {e}; run with UPDATE_GOLDEN=1", path.display()));
        assert!(
            expected == source,
            "{} is stale; rerun with UPDATE_GOLDEN=1 and review the diff",
            path.display()
        );
    }
}

#[test]
fn interop_contains_the_expected_items() {
    let modules = generate();
    let interop = &modules
        .iter()
        .find(|(m, _)| m == "interop")
        .expect("interop module")
        .1;
    for item in [
        "pub mod interop {",
        "pub struct Color(pub i32);",
        "pub const BLUE: Self = Self(42);",
        "pub struct Inner {",
        "pub id: i32,",
        "pub label: ::std::option::Option<::codec::ByteString>,",
        "pub struct AllTypes {",
        "pub tags: ::std::collections::HashSet<::codec::ByteString>,",
        "pub nested: ::std::collections::HashMap<i32, ::std::vec::Vec<::codec::ByteString>>,",
        "with_default: ::codec::ByteString::from_static(\"default\"),",
        "pub struct InteropError {",
        "impl ::std::error::Error for InteropError {}",
        "pub struct InteropRoundtripArgs {",
        "pub struct InteropFailWithResult {",
        "pub success: ::std::option::Option<i32>,",
        "pub err: ::std::option::Option<InteropError>,",
        "pub struct InteropPingResult {",
        "pub struct InteropFireArgs {",
        "DecodeError::MissingField { owner: \"Inner\", field: \"id\" }",
    ] {
        assert!(interop.contains(item), "missing `{item}`");
    }
    // A oneway function has no reply, hence no result struct.
    assert!(!interop.contains("InteropFireResult"));
}

#[test]
fn echo_contains_the_expected_items() {
    let modules = generate();
    let echo = &modules.iter().find(|(m, _)| m == "echo").expect("echo").1;
    for item in [
        "pub mod echo {",
        "pub struct EchoEchoArgs {",
        "pub msg: ::codec::bytes::Bytes,",
        "pub struct EchoEchoResult {",
        "pub success: ::std::option::Option<::codec::bytes::Bytes>,",
    ] {
        assert!(echo.contains(item), "missing `{item}`");
    }
}
