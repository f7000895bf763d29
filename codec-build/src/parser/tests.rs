use super::*;
use crate::ast::Requiredness;
use crate::error::Pos;

fn doc(src: &str) -> Document {
    let mut warnings = Vec::new();
    match parse(Path::new("t.thrift"), src, &mut warnings) {
        Ok(d) => d,
        Err(e) => panic!("parse failed: {e}"),
    }
}

fn syntax_error(src: &str) -> SyntaxError {
    let mut warnings = Vec::new();
    match parse(Path::new("t.thrift"), src, &mut warnings) {
        Err(Error::Syntax(e)) => e,
        other => panic!("expected a syntax error, got {other:?}"),
    }
}

fn only_struct(d: &Document) -> &Struct {
    match &d.definitions[..] {
        [Definition::Struct(s)] => s,
        other => panic!("expected one struct, got {other:?}"),
    }
}

#[test]
fn headers() {
    let d = doc(r#"
        include "shared.thrift"
        cpp_include "foo.h"
        namespace rs my.module
        namespace * fallback
        namespace py 'pkg'
    "#);
    assert_eq!(d.includes.len(), 1);
    assert_eq!(d.includes[0].path, "shared.thrift");
    assert_eq!(d.namespace("rs"), Some("my.module"));
    assert_eq!(d.namespace("py"), Some("pkg"));
    assert_eq!(d.namespace("go"), Some("fallback"));
}

#[test]
fn typedef_and_base_types() {
    let d = doc("typedef i64 Id (a = \"b\")\ntypedef byte B; typedef uuid U; typedef binary Blob");
    let Definition::Typedef(t) = &d.definitions[0] else {
        panic!("not a typedef")
    };
    assert_eq!(t.ty, Type::Base(BaseType::I64));
    assert_eq!(t.name.name, "Id");
    assert_eq!(t.annotations[0].key, "a");
    let Definition::Typedef(t) = &d.definitions[1] else {
        panic!("not a typedef")
    };
    assert_eq!(t.ty, Type::Base(BaseType::I8));
    assert_eq!(d.definitions.len(), 4);
}

#[test]
fn constants() {
    let d = doc(r#"
        const i32 A = 1
        const double B = 2.5;
        const string C = 'single'
        const string D = "double",
        const Color E = Color.RED
        const list<i32> F = [1, 2; 3]
        const map<string, list<i32>> G = {"a": [1], 'b': []}
        const i64 H = -0x10
    "#);
    let values: Vec<&ConstValue> = d
        .definitions
        .iter()
        .map(|def| match def {
            Definition::Const(c) => &c.value,
            _ => panic!("not a const"),
        })
        .collect();
    assert!(matches!(values[0], ConstValue::Int(1, _)));
    assert!(matches!(values[1], ConstValue::Double(v, _) if *v == 2.5));
    assert!(matches!(values[2], ConstValue::String(s, _) if s == "single"));
    assert!(matches!(values[3], ConstValue::String(s, _) if s == "double"));
    assert!(matches!(values[4], ConstValue::Ident(i) if i.name == "Color.RED"));
    assert!(matches!(values[5], ConstValue::List(items, _) if items.len() == 3));
    assert!(matches!(values[6], ConstValue::Map(entries, _) if entries.len() == 2));
    assert!(matches!(values[7], ConstValue::Int(-16, _)));
}

#[test]
fn enums_auto_increment() {
    let d = doc("enum E { A, B = 5, C, D = -1 (x), E }");
    let Definition::Enum(e) = &d.definitions[0] else {
        panic!("not an enum")
    };
    let values: Vec<(&str, i64)> = e
        .values
        .iter()
        .map(|v| (v.name.name.as_str(), v.value))
        .collect();
    assert_eq!(
        values,
        vec![("A", 0), ("B", 5), ("C", 6), ("D", -1), ("E", 0)]
    );
}

#[test]
fn struct_fields() {
    let d = doc(r#"
        /** The doc. */
        struct S {
            1: required i32 a,
            2: optional string b = "x";
            3: list<map<string, set<i64>>> c (anno = "1")
            4: i16 d = 7
        } (final = "true")
    "#);
    let s = only_struct(&d);
    assert_eq!(s.kind, StructKind::Struct);
    assert_eq!(s.doc.as_deref(), Some("The doc."));
    assert_eq!(s.annotations.len(), 1);
    assert_eq!(s.fields.len(), 4);
    assert_eq!(s.fields[0].requiredness, Requiredness::Required);
    assert_eq!(s.fields[1].requiredness, Requiredness::Optional);
    assert_eq!(s.fields[2].requiredness, Requiredness::Default);
    assert_eq!(
        s.fields[2].ty,
        Type::List(Box::new(Type::Map(
            Box::new(Type::Base(BaseType::String)),
            Box::new(Type::Set(Box::new(Type::Base(BaseType::I64)))),
        )))
    );
    assert_eq!(s.fields[2].annotations[0].value, "1");
    assert!(matches!(s.fields[3].default, Some(ConstValue::Int(7, _))));
}

#[test]
fn union_and_exception() {
    let d = doc("union U { 1: i32 a; 2: string b } exception E { 1: string msg }");
    assert!(matches!(&d.definitions[0], Definition::Struct(s) if s.kind == StructKind::Union));
    assert!(matches!(&d.definitions[1], Definition::Struct(s) if s.kind == StructKind::Exception));
}

#[test]
fn implicit_field_ids_are_negative_with_a_warning() {
    let mut warnings = Vec::new();
    let d = parse(
        Path::new("t.thrift"),
        "struct S { i32 a, 5: i32 b, i32 c }",
        &mut warnings,
    )
    .expect("parses");
    let s = only_struct(&d);
    let ids: Vec<i16> = s.fields.iter().map(|f| f.id).collect();
    assert_eq!(ids, vec![-1, 5, -2]);
    assert!(s.fields[0].implicit_id);
    assert_eq!(warnings.len(), 2);
    assert!(warnings[0].message.contains("`a`"));
}

#[test]
fn services() {
    let d = doc(r#"
        service Base { void ping() }
        service S extends Base {
            i32 add(1: i32 a, 2: i32 b) throws (1: E e),
            oneway void fire(1: i64 x);
            list<string> names()
        } (x = "y")
    "#);
    let Definition::Service(s) = &d.definitions[1] else {
        panic!("not a service")
    };
    assert_eq!(s.extends.as_ref().map(|e| e.name.as_str()), Some("Base"));
    assert_eq!(s.functions.len(), 3);
    assert_eq!(s.functions[0].params.len(), 2);
    assert_eq!(s.functions[0].throws.len(), 1);
    assert!(s.functions[1].oneway);
    assert_eq!(s.functions[1].returns, None);
    assert!(matches!(s.functions[2].returns, Some(Type::List(_))));
}

#[test]
fn legacy_syntax_is_accepted() {
    let d = doc(r#"
        struct S xsd_all {
            1: map cpp_type "std::map" <i32, i32> m,
            2: list<i32> cpp_type "std::vector" l,
            3: S & self_ref xsd_optional xsd_nillable
        }
    "#);
    assert_eq!(only_struct(&d).fields.len(), 3);
}

#[test]
fn error_positions_and_expectations() {
    let e = syntax_error("struct S {\n  1: i32\n}");
    assert_eq!(e.pos, Pos { line: 3, column: 1 });
    assert_eq!(e.expected, "the field's name");
    assert_eq!(e.found, "`}`");

    let e = syntax_error("struct S { 1: i32 a");
    assert_eq!(e.found, "end of file");

    let e = syntax_error("blah");
    assert!(e.expected.contains("definition"), "{e}");

    let e = syntax_error("struct S { 1: void a }");
    assert!(e.expected.contains("void"), "{e}");

    let e = syntax_error("struct S {} namespace rs x");
    assert!(e.expected.contains("headers"), "{e}");

    let e = syntax_error("enum E { A = 'x' }");
    assert_eq!(e.expected, "an integer enum value");

    let e = syntax_error("const i32 X = ");
    assert_eq!(e.expected, "a constant value");

    let e = syntax_error("const list<i32> X = [1, 2");
    assert!(e.expected.contains("list item"), "{e}");

    let e = syntax_error("struct S { 1: i32 a = \"unterminated }");
    assert!(e.expected.contains("closing the string"), "{e}");
}

#[test]
fn field_id_out_of_range_is_an_error() {
    let mut warnings = Vec::new();
    for src in [
        "struct S { 0: i32 a }",
        "struct S { 40000: i32 a }",
        "struct S { -3: i32 a }",
    ] {
        let err = parse(Path::new("t.thrift"), src, &mut warnings).unwrap_err();
        assert!(
            matches!(
                err,
                Error::Semantic(SemanticError {
                    kind: SemanticErrorKind::FieldIdOutOfRange { .. },
                    ..
                })
            ),
            "{src}: {err}"
        );
    }
}

#[test]
fn never_panics_on_garbage() {
    let mut warnings = Vec::new();
    let samples = [
        "",
        "{",
        "}",
        "struct",
        "struct {",
        "service S { void",
        "enum E {",
        "const",
        "typedef",
        "map<",
        "struct S { 1: map<i32 a }",
        "include",
        "namespace",
        "struct S { 1: i32 a = [ }",
        "((((",
        "\u{0}",
        "struct S { 1: i32 a = {1: }",
        "service S extends { }",
        "union U { 1: list<list<list<",
        "x.y.z",
    ];
    for s in samples {
        let _ = parse(Path::new("t.thrift"), s, &mut warnings);
    }
    // Every prefix of a real file.
    let real = include_str!("../../../idl/interop.thrift");
    for end in (0..real.len()).filter(|&i| real.is_char_boundary(i)) {
        let _ = parse(Path::new("t.thrift"), &real[..end], &mut warnings);
    }
}

#[test]
fn parses_the_project_idl() {
    let d = doc(include_str!("../../../idl/interop.thrift"));
    assert_eq!(d.namespace("rs"), Some("interop"));
    assert_eq!(d.definitions.len(), 5);
    let d = doc(include_str!("../../../idl/echo.thrift"));
    assert_eq!(d.definitions.len(), 1);
}

#[test]
fn deep_nesting_is_an_error_not_a_stack_overflow() {
    let deep_type = format!(
        "typedef {}i32{} T",
        "list<".repeat(100_000),
        ">".repeat(100_000)
    );
    let e = syntax_error(&deep_type);
    assert!(e.expected.contains("nesting"), "{e}");
    let deep_value = format!("const list<i32> X = {}", "[".repeat(100_000));
    let e = syntax_error(&deep_value);
    assert!(e.expected.contains("nesting"), "{e}");
}
