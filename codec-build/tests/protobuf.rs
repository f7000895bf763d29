//! `.proto` compilation without protoc: echo.proto's `bytes` fields become `Bytes`.

#[test]
fn echo_proto_compiles_with_bytes_fields() {
    let dir = std::env::temp_dir().join(format!("codec-build-proto-{}", std::process::id()));
    let idl = concat!(env!("CARGO_MANIFEST_DIR"), "/../idl");
    let written =
        netpoll_codec_build::compile_protos_to(&[format!("{idl}/echo.proto")], &[idl], &dir)
            .expect("compile");
    assert_eq!(written, vec![dir.join("echo.rs")]);
    let code = std::fs::read_to_string(dir.join("echo.rs")).expect("generated file");
    assert!(code.contains("pub struct EchoRequest"), "{code}");
    assert!(
        code.contains("::prost::bytes::Bytes"),
        "bytes fields are Bytes: {code}"
    );
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn a_broken_proto_is_a_clear_error() {
    let dir = std::env::temp_dir().join(format!("codec-build-badproto-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("dir");
    std::fs::write(
        dir.join("bad.proto"),
        "syntax = \"proto3\";\nmessage M { int32 = 1; }\n",
    )
    .expect("write");
    let err =
        netpoll_codec_build::compile_protos_to(&[dir.join("bad.proto")], &[&dir], &dir.join("out"))
            .expect_err("must fail");
    assert!(
        matches!(err, netpoll_codec_build::ProtoError::Parse(_)),
        "{err}"
    );
    let _ = std::fs::remove_dir_all(dir);
}
