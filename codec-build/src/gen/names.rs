//! Thrift names turned into Rust names: `UpperCamel` types, `snake_case`
//! fields, `SCREAMING_SNAKE` constants, keywords escaped.

/// Rust keywords that `r#` can escape.
const KEYWORDS: &[&str] = &[
    "as", "async", "await", "break", "const", "continue", "dyn", "else", "enum", "extern", "false",
    "fn", "for", "gen", "if", "impl", "in", "let", "loop", "match", "mod", "move", "mut", "pub",
    "ref", "return", "static", "struct", "trait", "true", "type", "unsafe", "use", "where",
    "while", "abstract", "become", "box", "do", "final", "macro", "override", "priv", "try",
    "typeof", "unsized", "virtual", "yield",
];

/// Keywords that cannot be raw identifiers; they get a trailing `_`.
const RESERVED: &[&str] = &["self", "Self", "super", "crate", "_"];

/// Splits `name` into lowercase words at `_` and case changes
/// (`HTTPServer2go` -> `http`, `server2go`).
fn words(name: &str) -> Vec<String> {
    let chars: Vec<char> = name.chars().collect();
    let mut words = Vec::new();
    let mut current = String::new();
    for (i, &c) in chars.iter().enumerate() {
        if c == '_' || !c.is_alphanumeric() {
            if !current.is_empty() {
                words.push(std::mem::take(&mut current));
            }
            continue;
        }
        if c.is_uppercase() && !current.is_empty() {
            let prev = chars.get(i.wrapping_sub(1)).copied().unwrap_or('_');
            let next_lower = chars.get(i + 1).is_some_and(|n| n.is_lowercase());
            if prev.is_lowercase() || prev.is_ascii_digit() || (prev.is_uppercase() && next_lower) {
                words.push(std::mem::take(&mut current));
            }
        }
        current.extend(c.to_lowercase());
    }
    if !current.is_empty() {
        words.push(current);
    }
    words
}

/// `snake_case`, without keyword escaping.
pub(crate) fn snake_case(name: &str) -> String {
    words(name).join("_")
}

/// `UpperCamelCase`, without keyword escaping.
pub(crate) fn upper_camel(name: &str) -> String {
    words(name)
        .iter()
        .map(|w| {
            let mut chars = w.chars();
            match chars.next() {
                Some(first) => first.to_uppercase().chain(chars).collect::<String>(),
                None => String::new(),
            }
        })
        .collect()
}

/// `SCREAMING_SNAKE_CASE`.
pub(crate) fn screaming_snake(name: &str) -> String {
    snake_case(name).to_uppercase()
}

/// `name` made usable as a Rust identifier.
pub(crate) fn escape_keyword(name: &str) -> String {
    let name = if name.starts_with(|c: char| c.is_ascii_digit()) {
        format!("_{name}")
    } else {
        name.to_owned()
    };
    if RESERVED.contains(&name.as_str()) {
        format!("{name}_")
    } else if KEYWORDS.contains(&name.as_str()) {
        format!("r#{name}")
    } else {
        name
    }
}

/// A Rust type name for a Thrift definition.
pub(crate) fn type_name(name: &str) -> String {
    escape_keyword(&upper_camel(name))
}

/// A Rust field or function name for a Thrift field.
pub(crate) fn field_name(name: &str) -> String {
    escape_keyword(&snake_case(name))
}

/// A Rust constant name.
pub(crate) fn const_name(name: &str) -> String {
    escape_keyword(&screaming_snake(name))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cases() {
        assert_eq!(snake_case("with_default"), "with_default");
        assert_eq!(snake_case("fooBar"), "foo_bar");
        assert_eq!(snake_case("HTTPServer"), "http_server");
        assert_eq!(snake_case("i16v"), "i16v");
        assert_eq!(upper_camel("fail_with"), "FailWith");
        assert_eq!(upper_camel("AllTypes"), "AllTypes");
        assert_eq!(upper_camel("delayed_echo"), "DelayedEcho");
        assert_eq!(screaming_snake("Red"), "RED");
        assert_eq!(screaming_snake("RED"), "RED");
        assert_eq!(screaming_snake("lightBlue"), "LIGHT_BLUE");
        assert_eq!(field_name("type"), "r#type");
        assert_eq!(field_name("self"), "self_");
        assert_eq!(type_name("self"), "Self_");
    }
}
