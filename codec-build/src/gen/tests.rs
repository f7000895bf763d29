use std::path::{Path, PathBuf};

use super::*;
use crate::error::{Error, SemanticErrorKind};
use crate::parser::parse;

fn generate(src: &str) -> Result<String, Error> {
    let path = PathBuf::from("t.thrift");
    let doc = parse(&path, src, &mut Vec::new())?;
    let program = Program::from_document(path, doc)?;
    let options = GenOptions {
        runtime: "::netpoll_codec".to_owned(),
        service_types: true,
        rpc: None,
    };
    Ok(generate_file(&program, 0, &options)?)
}

fn gen_ok(src: &str) -> String {
    generate(src).unwrap_or_else(|e| panic!("generation failed: {e}"))
}

fn duplicate_name(src: &str) -> String {
    match generate(src) {
        Err(Error::Semantic(e)) => match e.kind {
            SemanticErrorKind::DuplicateName { name } => name,
            other => panic!("expected a duplicate name, got {other:?}"),
        },
        other => panic!("expected an error, got {other:?}"),
    }
}

#[test]
fn module_name_comes_from_the_rs_namespace_or_the_file() {
    assert!(gen_ok("namespace rs a.b\nstruct S {}").contains("pub mod a_b {"));
    assert!(gen_ok("struct S {}").contains("pub mod t {"));
}

#[test]
fn names_are_converted_and_escaped() {
    let code = gen_ok(
        "struct my_struct { 1: i32 fooBar, 2: string type, 3: i32 self }\n\
         enum kind { lowValue }\n\
         union pick { 1: i32 first_choice }",
    );
    for item in [
        "pub struct MyStruct {",
        "pub foo_bar: i32,",
        "pub r#type: ::netpoll_codec::ByteString,",
        "pub self_: i32,",
        "pub struct Kind(pub i32);",
        "pub const LOW_VALUE: Self = Self(0);",
        "FirstChoice(i32),",
    ] {
        assert!(code.contains(item), "missing `{item}` in\n{code}");
    }
}

#[test]
fn rust_name_collisions_are_errors() {
    assert!(duplicate_name("struct S { 1: i32 fooBar, 2: i32 foo_bar }").contains("foo_bar"));
    assert!(duplicate_name("enum E { lowValue, LOW_VALUE }").contains("LOW_VALUE"));
    assert!(duplicate_name("struct foo {} struct Foo {}").contains("Foo"));
    assert!(duplicate_name("struct SPingArgs {} service S { void ping() }").contains("SPingArgs"));
}

#[test]
fn enum_named_values_keeps_its_constant() {
    let code = gen_ok("enum E { VALUES, OTHER }");
    assert!(code.contains("pub const VALUES: Self = Self(0);"));
    assert!(!code.contains("pub const VALUES: &'static [Self]"));
}

#[test]
fn derives_follow_the_field_types() {
    let code = gen_ok(
        "struct Hashable { 1: i32 a, 2: list<string> b }\n\
         struct NoHash { 1: map<i32, i32> m }\n\
         struct NoEq { 1: double d }\n\
         struct Nested { 1: NoEq inner }",
    );
    assert!(code.contains(
        "#[derive(Debug, Clone, PartialEq, Eq, Hash, Default)]\n    pub struct Hashable"
    ));
    assert!(code.contains("#[derive(Debug, Clone, PartialEq, Eq, Default)]\n    pub struct NoHash"));
    assert!(code.contains("#[derive(Debug, Clone, PartialEq, Default)]\n    pub struct NoEq"));
    assert!(code.contains("#[derive(Debug, Clone, PartialEq, Default)]\n    pub struct Nested"));
}

#[test]
fn sets_and_maps_fall_back_to_vec_for_unhashable_keys() {
    let code = gen_ok(
        "struct P { 1: double x }\n\
         struct S { 1: set<double> a, 2: map<double, i32> b, 3: set<P> c, 4: set<i64> d, 5: map<P, i32> e }",
    );
    assert!(code.contains("pub a: ::std::vec::Vec<f64>,"));
    assert!(code.contains("pub b: ::std::vec::Vec<(f64, i32)>,"));
    assert!(code.contains("pub c: ::std::vec::Vec<P>,"));
    assert!(code.contains("pub d: ::std::collections::HashSet<i64>,"));
    assert!(code.contains("pub e: ::std::vec::Vec<(P, i32)>,"));
}

#[test]
fn recursion_is_boxed_only_where_needed() {
    let code = gen_ok(
        "struct A { 1: optional B b, 2: list<A> many }\n\
         struct B { 1: optional A a }\n\
         struct C { 1: A a }",
    );
    assert!(code.contains("pub b: ::std::option::Option<::std::boxed::Box<B>>,"));
    assert!(code.contains("pub many: ::std::vec::Vec<A>,"));
    assert!(code.contains("pub a: ::std::option::Option<::std::boxed::Box<A>>,"));
    assert!(code.contains("pub a: A,"));
}

#[test]
fn constants() {
    let code = gen_ok(
        "enum E { A = 3 }\n\
         const i8 SMALL = -5\n\
         const double D = 1\n\
         const string S = \"a\\\"b\"\n\
         const binary B = \"\\n\"\n\
         const E X = E.A\n\
         const E UNKNOWN = 9\n\
         const uuid U = \"00000000-0000-0000-0000-0000000000ff\"\n\
         const list<string> L = [\"x\"]\n\
         const map<i32, E> M = {}",
    );
    for item in [
        "pub const SMALL: i8 = -5;",
        "pub const D: f64 = 1.0;",
        "pub const S: &str = \"a\\\"b\";",
        "pub const B: &[u8] = b\"\\n\";",
        "pub const X: E = E::A;",
        "pub const UNKNOWN: E = E(9);",
        "0xff];",
        "pub fn l() -> ::std::vec::Vec<::netpoll_codec::ByteString> {",
        "::std::vec![::netpoll_codec::ByteString::from_static(\"x\")]",
        "::std::collections::HashMap::new()",
    ] {
        assert!(code.contains(item), "missing `{item}` in\n{code}");
    }
}

#[test]
fn invalid_uuid_constant_is_an_error() {
    assert!(matches!(
        generate("const uuid U = \"not-a-uuid\""),
        Err(Error::Semantic(_))
    ));
}

#[test]
fn decoders_handle_requiredness() {
    let code = gen_ok(
        "struct S { 1: required i32 a, 2: optional i32 b, 3: i32 c, 4: i32 d = 4, 5: required string e = \"x\" }",
    );
    for item in [
        "a: f_a.ok_or(::netpoll_codec::thrift::DecodeError::MissingField { owner: \"S\", field: \"a\" })?,",
        "b: f_b,",
        "c: f_c.unwrap_or_default(),",
        "d: f_d.unwrap_or(4),",
        "e: f_e.ok_or(",
        "(_, ttype) => r.skip(ttype)?,",
    ] {
        assert!(code.contains(item), "missing `{item}` in\n{code}");
    }
}

#[test]
fn implicit_negative_ids_are_matched_and_written() {
    let code = gen_ok("struct S { i32 a, i64 b }");
    assert!(code.contains("(-1, ::netpoll_codec::thrift::TType::I32) => f_a ="));
    assert!(code.contains("w.write_field_begin(::netpoll_codec::thrift::TType::I64, -2)?;"));
}

#[test]
fn services_get_args_and_result_structs() {
    let code = gen_ok(
        "exception E {}\n\
         service S {\n\
           i32 get(1: i32 k) throws (1: E e),\n\
           void put(1: i32 k, 2: i32 v),\n\
           oneway void fire()\n\
         }",
    );
    for item in [
        "pub struct SGetArgs {",
        "pub struct SGetResult {",
        "pub success: ::std::option::Option<i32>,",
        "pub e: ::std::option::Option<E>,",
        "pub struct SPutResult {}",
        "pub struct SFireArgs {}",
    ] {
        assert!(code.contains(item), "missing `{item}` in\n{code}");
    }
    assert!(!code.contains("SFireResult"));
}

#[test]
fn service_types_can_be_turned_off() {
    let path = Path::new("t.thrift");
    let doc = parse(path, "service S { void f() }", &mut Vec::new()).expect("parses");
    let program = Program::from_document(path.to_owned(), doc).expect("valid");
    let options = GenOptions {
        runtime: "crate::rt".to_owned(),
        service_types: false,
        rpc: None,
    };
    let code = generate_file(&program, 0, &options).expect("generates");
    assert!(!code.contains("SFArgs"));
}

/// A small deterministic generator (xorshift64*), so the test needs no crate.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n.max(1) as u64) as usize
    }
}

/// Mutated IDL (bytes replaced, deleted, duplicated, spliced) must yield an
/// error or code, never a panic, through parsing, checking and generation.
#[test]
fn mutated_idl_never_panics() {
    let seed_src = format!(
        "{}\n{}",
        include_str!("../../../idl/interop.thrift"),
        "typedef list<Inner> Inners\n\
         const map<string, list<Color>> M = {\"a\": [Color.RED, 2]}\n\
         union U { 1: Inner i, 2: U again, 3: set<double> ds }\n\
         struct R { 1: optional R next, 2: U u = {\"i\": {\"id\": 1}} }\n\
         const uuid ID = \"00000000-0000-0000-0000-000000000000\"\n\
         service Child extends Interop { oneway void f(1: R r) }",
    );
    assert!(generate(&seed_src).is_ok(), "the seed itself is valid");
    let alphabet = b"{}()[]<>,;:=*&\"'0123456789-+.xabcdefghijklmnopqrstuvwxyz_ \n";
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
    for _ in 0..3000 {
        let mut bytes = seed_src.as_bytes().to_vec();
        for _ in 0..=rng.below(4) {
            let at = rng.below(bytes.len());
            match rng.below(4) {
                0 => bytes[at] = alphabet[rng.below(alphabet.len())],
                1 => {
                    let end = (at + rng.below(16)).min(bytes.len());
                    bytes.drain(at..end);
                }
                2 => {
                    let end = (at + rng.below(32)).min(bytes.len());
                    let chunk = bytes[at..end].to_vec();
                    let to = rng.below(bytes.len());
                    bytes.splice(to..to, chunk);
                }
                _ => bytes.insert(at, alphabet[rng.below(alphabet.len())]),
            }
            if bytes.is_empty() {
                break;
            }
        }
        let src = String::from_utf8_lossy(&bytes);
        let _ = generate(&src);
    }
}

/// What the generator writes is Rust that parses (formatting relies on it, and a
/// generator bug shows here rather than in a user's build), services included.
#[test]
fn generated_code_parses_as_rust() {
    let src = format!(
        "{}\nservice Child extends Interop {{ i32 more(1: i32 x) throws (1: InteropError e) }}",
        include_str!("../../../idl/interop.thrift")
    );
    let path = PathBuf::from("t.thrift");
    let doc = parse(&path, &src, &mut Vec::new()).expect("parse");
    let program = Program::from_document(path, doc).expect("check");
    let options = GenOptions {
        runtime: "::netpoll_codec".to_owned(),
        service_types: true,
        rpc: Some("::netpoll_rpc".to_owned()),
    };
    let code = generate_file(&program, 0, &options).expect("generate");
    if let Err(e) = syn::parse_file(&code) {
        panic!("generated code does not parse: {e}\n{code}");
    }
    let formatted = format_source(code);
    assert!(formatted.starts_with("// @generated"));
    assert!(formatted.contains("pub trait Child"));
}
