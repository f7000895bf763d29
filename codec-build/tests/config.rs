//! The `build.rs` API: files written, errors reported.

use std::fs;
use std::path::PathBuf;

fn idl(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join(name)
}

fn temp_dir(test: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("codec-build-cfg-{}-{test}", std::process::id()));
    let _ = fs::remove_dir_all(&dir);
    dir
}

#[test]
fn compile_writes_one_file_per_module_including_includes() {
    let out = temp_dir("writes");
    let written = netpoll_codec_build::Config::new()
        .out_dir(&out)
        .cargo_directives(false)
        .compile(&[idl("tests/idl/kitchen_sink.thrift")])
        .expect("compiles");
    let names: Vec<String> = written
        .iter()
        .filter_map(|p| p.file_name())
        .map(|n| n.to_string_lossy().into_owned())
        .collect();
    assert_eq!(names, vec!["shared.rs", "kitchen_sink.rs"]);
    let source = fs::read_to_string(out.join("kitchen_sink.rs")).expect("written");
    assert!(source.contains("pub mod kitchen_sink {"));
    assert!(source.contains("super::shared::Point"));

    // A second run with the same input leaves the files untouched.
    let before = fs::metadata(out.join("shared.rs"))
        .and_then(|m| m.modified())
        .expect("mtime");
    std::thread::sleep(std::time::Duration::from_millis(20));
    netpoll_codec_build::Config::new()
        .out_dir(&out)
        .cargo_directives(false)
        .compile(&[idl("tests/idl/kitchen_sink.thrift")])
        .expect("compiles again");
    let after = fs::metadata(out.join("shared.rs"))
        .and_then(|m| m.modified())
        .expect("mtime");
    assert_eq!(before, after);
    let _ = fs::remove_dir_all(out);
}

#[test]
fn without_out_dir_outside_build_rs_is_an_error() {
    if std::env::var_os("OUT_DIR").is_some() {
        return;
    }
    let err = netpoll_codec_build::Config::new()
        .cargo_directives(false)
        .compile(&[idl("../idl/echo.thrift")])
        .unwrap_err();
    assert!(
        matches!(err, netpoll_codec_build::Error::MissingOutDir),
        "{err}"
    );
}

#[test]
fn errors_name_the_file_and_position() {
    let dir = temp_dir("errors");
    fs::create_dir_all(&dir).expect("mkdir");
    let bad = dir.join("bad.thrift");
    fs::write(&bad, "struct S {\n  1: i32 a\n  1: i32 b\n}\n").expect("write");
    let err = netpoll_codec_build::Config::new()
        .out_dir(&dir)
        .cargo_directives(false)
        .compile(&[&bad])
        .unwrap_err();
    let message = err.to_string();
    assert!(
        message.ends_with("bad.thrift:3:10: duplicate field id 1 in `S`"),
        "{message}"
    );

    fs::write(&bad, "struct S {\n  1: i32\n}\n").expect("write");
    let err = netpoll_codec_build::Config::new()
        .out_dir(&dir)
        .compile(&[&bad])
        .unwrap_err();
    let message = err.to_string();
    assert!(
        message.ends_with("bad.thrift:3:1: expected the field's name, found `}`"),
        "{message}"
    );
    let _ = fs::remove_dir_all(dir);
}

#[test]
fn implicit_field_ids_warn() {
    let dir = temp_dir("warn");
    fs::create_dir_all(&dir).expect("mkdir");
    let file = dir.join("w.thrift");
    fs::write(&file, "struct S { i32 a }").expect("write");
    let generated = netpoll_codec_build::Config::new()
        .generate(&[&file])
        .expect("generates");
    assert_eq!(generated.warnings.len(), 1);
    assert!(generated.warnings[0].to_string().contains("implicit id -1"));
    let _ = fs::remove_dir_all(dir);
}
