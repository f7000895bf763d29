use super::*;
use crate::value::Value;

/// A fresh directory holding `files`.
fn write_files(test: &str, files: &[(&str, &str)]) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("codec-build-{}-{test}", std::process::id()));
    let _ = fs::remove_dir_all(&dir);
    for (name, src) in files {
        let path = dir.join(name);
        if let Some(parent) = path.parent() {
            fs::create_dir_all(parent).expect("create test dir");
        }
        fs::write(path, src).expect("write test file");
    }
    dir
}

fn load_one(src: &str) -> Result<Program, Error> {
    let mut warnings = Vec::new();
    let path = PathBuf::from("t.thrift");
    let doc = parse(&path, src, &mut warnings)?;
    Program::from_document(path, doc)
}

fn semantic(src: &str) -> SemanticErrorKind {
    match load_one(src) {
        Err(Error::Semantic(e)) => e.kind,
        other => panic!("expected a semantic error, got {other:?}"),
    }
}

#[test]
fn duplicate_field_ids() {
    assert_eq!(
        semantic("struct S { 1: i32 a, 1: i32 b }"),
        SemanticErrorKind::DuplicateFieldId {
            owner: "S".into(),
            id: 1
        }
    );
    assert!(matches!(
        semantic("service X { void f(1: i32 a, 1: i32 b) }"),
        SemanticErrorKind::DuplicateFieldId { .. }
    ));
}

#[test]
fn duplicate_names() {
    for src in [
        "struct S {} struct S {}",
        "struct S { 1: i32 a, 2: i32 a }",
        "enum E { A, A }",
        "service X { void f() void f() }",
    ] {
        assert!(
            matches!(semantic(src), SemanticErrorKind::DuplicateName { .. }),
            "{src}"
        );
    }
}

#[test]
fn unknown_and_wrong_kind_references() {
    assert_eq!(
        semantic("struct S { 1: Missing m }"),
        SemanticErrorKind::UnknownReference {
            name: "Missing".into()
        }
    );
    assert!(matches!(
        semantic("service X {} struct S { 1: X x }"),
        SemanticErrorKind::WrongKind { .. }
    ));
    assert!(matches!(
        semantic("struct S {} service X extends S {}"),
        SemanticErrorKind::WrongKind { .. }
    ));
    assert!(matches!(
        semantic("struct S {} service X { void f() throws (1: S s) }"),
        SemanticErrorKind::WrongKind { .. }
    ));
    assert!(matches!(
        semantic("typedef A B typedef B A struct S { 1: A a }"),
        SemanticErrorKind::WrongKind { .. }
    ));
    assert!(matches!(
        semantic("service X { oneway i32 f() }"),
        SemanticErrorKind::WrongKind { .. }
    ));
}

#[test]
fn enum_values_must_fit_i32() {
    assert!(matches!(
        semantic("enum E { A = 2147483647, B }"),
        SemanticErrorKind::EnumValueOutOfRange {
            value: 2147483648,
            ..
        }
    ));
    assert!(load_one("enum E { A = -2147483648 }").is_ok());
}

#[test]
fn default_values_are_checked() {
    for src in [
        "struct S { 1: i8 a = 300 }",
        "struct S { 1: string a = 1 }",
        "struct S { 1: bool a = 2 }",
        "enum E { A } struct S { 1: E e = E.B }",
        "struct S { 1: list<i32> a = {1: 2} }",
        "struct T { 1: i32 x } struct S { 1: T t = {\"y\": 1} }",
        "union U { 1: i32 a, 2: i32 b } const U X = {\"a\": 1, \"b\": 2}",
        "const i32 A = B const i32 B = A",
    ] {
        assert!(
            matches!(semantic(src), SemanticErrorKind::InvalidConstValue { .. }),
            "{src}"
        );
    }
}

#[test]
fn typed_constant_values() {
    let program = load_one(
        r#"
        enum Color { RED = 1, GREEN }
        const i32 ONE = 1
        const double D = ONE
        const Color C = Color.GREEN
        const bool T = true
        const map<Color, list<i32>> M = {Color.RED: [ONE, 2]}
        struct P { 1: i32 x, 2: Color c = RED }
        const P ORIGIN = {"x": 0, "c": 2}
        "#,
    )
    .expect("valid");
    let value = |name: &str| {
        let Some((_, Definition::Const(c))) = program.lookup(0, name) else {
            panic!("no const {name}")
        };
        let ty = program.resolve_type(0, &c.ty).expect("type resolves");
        program.const_value(0, &ty, &c.value).expect("value fits")
    };
    assert_eq!(value("D"), Value::Double(1.0));
    assert!(matches!(value("C"), Value::Enum { value: 2, name: Some(n), .. } if n == "GREEN"));
    assert_eq!(value("T"), Value::Bool(true));
    assert!(matches!(value("M"), Value::Map(entries) if entries.len() == 1));
    assert!(matches!(value("ORIGIN"), Value::Struct { fields, .. } if fields.len() == 2));
}

#[test]
fn includes_resolve_relative_then_include_dirs() {
    let dir = write_files(
        "includes",
        &[
            ("main/a.thrift", "include \"b.thrift\"\ninclude \"c.thrift\"\nstruct A { 1: b.B b, 2: c.C c, 3: c.E e = c.E.X }"),
            ("main/b.thrift", "namespace rs bee\nstruct B {}"),
            ("lib/c.thrift", "enum E { X } struct C {}"),
        ],
    );
    let mut warnings = Vec::new();
    let program = Program::load(
        &[dir.join("main/a.thrift")],
        &[dir.join("lib")],
        &mut warnings,
    )
    .expect("loads");
    assert_eq!(program.files.len(), 3);
    assert_eq!(program.roots, vec![2]);
    let modules: Vec<&str> = program.files.iter().map(|f| f.module.as_str()).collect();
    assert_eq!(modules, vec!["bee", "c", "a"]);
    let _ = fs::remove_dir_all(dir);
}

#[test]
fn include_errors() {
    let dir = write_files(
        "include-errors",
        &[
            ("missing.thrift", "include \"nope.thrift\""),
            ("x.thrift", "include \"y.thrift\""),
            ("y.thrift", "include \"x.thrift\""),
            (
                "z.thrift",
                "include \"w.thrift\"\nstruct Z { 1: w.Missing m }",
            ),
            ("w.thrift", "struct W {}"),
        ],
    );
    let mut warnings = Vec::new();
    let kind = |file: &str| match Program::load(&[dir.join(file)], &[], &mut Vec::new()) {
        Err(Error::Semantic(e)) => e.kind,
        other => panic!("expected an error, got {other:?}"),
    };
    assert!(matches!(
        kind("missing.thrift"),
        SemanticErrorKind::IncludeNotFound { .. }
    ));
    assert!(matches!(
        kind("x.thrift"),
        SemanticErrorKind::IncludeCycle { .. }
    ));
    assert!(matches!(
        kind("z.thrift"),
        SemanticErrorKind::UnknownReference { .. }
    ));
    assert!(matches!(
        Program::load(&[dir.join("absent.thrift")], &[], &mut warnings),
        Err(Error::Io { .. })
    ));
    let _ = fs::remove_dir_all(dir);
}

#[test]
fn error_messages_name_file_line_and_column() {
    let err = load_one("struct S {\n  1: Missing m\n}").unwrap_err();
    assert_eq!(err.to_string(), "t.thrift:2:6: unknown name `Missing`");
}
