//! The code generated for the project's IDL, checked against the files in
//! `tests/golden/` (which `tests/roundtrip.rs` compiles and runs).
//!
//! After an intended change to the generator, refresh them with
//! `UPDATE_GOLDEN=1 cargo test -p netpoll-codec-build --test golden`.

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

/// `haystack` contains `needle`, whatever the line breaks, indentation and trailing
/// commas (the output is formatted, so long items wrap).
fn has(haystack: &str, needle: &str) -> bool {
    let squash = |s: &str| {
        s.split_whitespace()
            .collect::<String>()
            .replace(",>", ">")
            .replace(",)", ")")
            .replace(",}", "}")
            .replace(",]", "]")
    };
    squash(haystack).contains(squash(needle).trim_end_matches(','))
}

fn generate() -> Vec<(String, String)> {
    let generated = netpoll_codec_build::Config::new()
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
        "pub label: ::std::option::Option<::netpoll_codec::ByteString>,",
        "pub struct AllTypes {",
        "pub tags: ::std::collections::HashSet<::netpoll_codec::ByteString>,",
        "pub nested: ::std::collections::HashMap<i32, ::std::vec::Vec<::netpoll_codec::ByteString>>,",
        "with_default: ::netpoll_codec::ByteString::from_static(\"default\"),",
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
        assert!(has(interop, item), "missing `{item}`");
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
        "pub msg: ::netpoll_codec::bytes::Bytes,",
        "pub struct EchoEchoResult {",
        "pub success: ::std::option::Option<::netpoll_codec::bytes::Bytes>,",
    ] {
        assert!(has(echo, item), "missing `{item}`");
    }
}

/// Compares `source` with the golden file at `path`, or rewrites it with `UPDATE_GOLDEN`.
fn check_golden(path: PathBuf, source: &str) {
    if std::env::var_os("UPDATE_GOLDEN").is_some() {
        fs::create_dir_all(path.parent().unwrap()).expect("golden dir");
        fs::write(&path, source).expect("write golden file");
        return;
    }
    let expected = fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("{}: {e}; run with UPDATE_GOLDEN=1", path.display()));
    assert!(
        expected == source,
        "{} is stale; rerun with UPDATE_GOLDEN=1 and review the diff",
        path.display()
    );
}

/// The generated server and client of a Thrift service (with `extends` across files) and
/// of a Protobuf service, checked against `tests/golden/rpc/` (which `tests/services.rs`
/// compiles and runs).
#[test]
fn service_golden_files_are_current() {
    let generated = netpoll_codec_build::Config::new()
        .services("::netpoll_rpc")
        .generate(&[test_idl("kitchen_sink.thrift")])
        .unwrap_or_else(|e| panic!("generation failed: {e}"));
    assert!(generated.warnings.is_empty(), "{:?}", generated.warnings);
    for (module, source) in &generated.modules {
        check_golden(golden(&format!("rpc/{module}")), source);
    }
    let out = std::env::temp_dir().join(format!("codec-build-golden-{}", std::process::id()));
    let written = netpoll_codec_build::compile_proto_services(
        &[idl("echo.proto")],
        &[idl("")],
        "::netpoll_rpc",
        Some(&out),
    )
    .expect("protobuf services");
    assert_eq!(written.len(), 1);
    let source = fs::read_to_string(&written[0]).expect("read generated protobuf");
    let _ = fs::remove_dir_all(&out);
    check_golden(golden("rpc/pb_echo"), &source);
    // Every streaming shape (server, client, bidirectional) next to a unary method.
    let written = netpoll_codec_build::compile_proto_services(
        &[idl("stream.proto")],
        &[idl("")],
        "::netpoll_rpc",
        Some(&out),
    )
    .expect("protobuf services");
    let source = fs::read_to_string(&written[0]).expect("read generated protobuf");
    let _ = fs::remove_dir_all(&out);
    check_golden(golden("rpc/pb_stream"), &source);
}
