//! Recursive-descent parser for the Apache Thrift IDL grammar.

use std::path::{Path, PathBuf};

use crate::ast::{
    Annotation, BaseType, Const, ConstValue, Definition, Document, Enum, EnumValue, Field,
    Function, Ident, Include, Namespace, Requiredness, Service, Struct, StructKind, Type, Typedef,
};
use crate::error::{Error, SemanticError, SemanticErrorKind, SyntaxError, Warning};
use crate::lexer::{tokenize, Token, TokenKind};

/// Parses the text of one Thrift file. `file` is used in errors only.
///
/// Warnings (e.g. fields without ids) are appended to `warnings`.
pub fn parse(file: &Path, src: &str, warnings: &mut Vec<Warning>) -> Result<Document, Error> {
    let tokens = tokenize(src).map_err(|e| SyntaxError {
        file: file.to_owned(),
        pos: e.pos,
        expected: e.expected,
        found: e.found,
    })?;
    let mut parser = Parser {
        tokens,
        at: 0,
        depth: 0,
        file: file.to_owned(),
        warnings,
    };
    parser.document()
}

/// How deeply types and constant values may nest; deeper input is rejected
/// rather than risking the stack.
const MAX_NESTING: usize = 100;

struct Parser<'w> {
    tokens: Vec<Token>,
    at: usize,
    /// Current nesting of types and constant values.
    depth: usize,
    file: PathBuf,
    warnings: &'w mut Vec<Warning>,
}

type PResult<T> = Result<T, Error>;

const EOF: Token = Token {
    kind: TokenKind::Eof,
    pos: crate::error::Pos { line: 0, column: 0 },
    doc: None,
};

impl Parser<'_> {
    fn peek(&self) -> &Token {
        // The lexer always ends the stream with Eof; the fallback is never used.
        self.tokens
            .get(self.at)
            .or_else(|| self.tokens.last())
            .unwrap_or(&EOF)
    }

    fn bump(&mut self) -> Token {
        let tok = self.peek().clone();
        if self.at < self.tokens.len() {
            self.at += 1;
        }
        tok
    }

    fn error<T>(&self, expected: &str) -> PResult<T> {
        let tok = self.peek();
        Err(SyntaxError {
            file: self.file.clone(),
            pos: tok.pos,
            expected: expected.to_owned(),
            found: tok.kind.to_string(),
        }
        .into())
    }

    fn is_punct(&self, c: char) -> bool {
        self.peek().kind == TokenKind::Punct(c)
    }

    fn is_keyword(&self, word: &str) -> bool {
        matches!(&self.peek().kind, TokenKind::Ident(s) if s == word)
    }

    fn eat_punct(&mut self, c: char) -> bool {
        let found = self.is_punct(c);
        if found {
            self.bump();
        }
        found
    }

    fn eat_keyword(&mut self, word: &str) -> bool {
        let found = self.is_keyword(word);
        if found {
            self.bump();
        }
        found
    }

    fn expect_punct(&mut self, c: char) -> PResult<()> {
        if self.eat_punct(c) {
            Ok(())
        } else {
            self.error(&format!("`{c}`"))
        }
    }

    fn expect_ident(&mut self, what: &str) -> PResult<Ident> {
        match &self.peek().kind {
            TokenKind::Ident(name) => {
                let ident = Ident {
                    name: name.clone(),
                    pos: self.peek().pos,
                };
                self.bump();
                Ok(ident)
            }
            _ => self.error(what),
        }
    }

    fn expect_literal(&mut self, what: &str) -> PResult<String> {
        match &self.peek().kind {
            TokenKind::Str(s) => {
                let s = s.clone();
                self.bump();
                Ok(s)
            }
            _ => self.error(what),
        }
    }

    /// The optional `,` or `;` after list items.
    fn list_separator(&mut self) {
        if !self.eat_punct(',') {
            self.eat_punct(';');
        }
    }

    fn document(&mut self) -> PResult<Document> {
        let mut doc = Document::default();
        loop {
            let pos = self.peek().pos;
            if self.eat_keyword("include") {
                let path = self.expect_literal("the quoted path of the included file")?;
                doc.includes.push(Include { path, pos });
            } else if self.eat_keyword("cpp_include") {
                self.expect_literal("the quoted path of the C++ header")?;
            } else if self.eat_keyword("namespace") {
                let scope = if self.eat_punct('*') {
                    "*".to_owned()
                } else {
                    self.expect_ident("a namespace scope (a language name or `*`)")?
                        .name
                };
                let name = match &self.peek().kind {
                    TokenKind::Ident(_) => self.expect_ident("a namespace")?.name,
                    TokenKind::Str(_) => self.expect_literal("a namespace")?,
                    _ => return self.error("a namespace"),
                };
                self.annotations()?;
                doc.namespaces.push(Namespace { scope, name });
            } else {
                break;
            }
            self.list_separator();
        }
        while self.peek().kind != TokenKind::Eof {
            doc.definitions.push(self.definition()?);
            self.list_separator();
        }
        Ok(doc)
    }

    fn definition(&mut self) -> PResult<Definition> {
        let doc = self.peek().doc.clone();
        let keyword = match &self.peek().kind {
            TokenKind::Ident(k) => k.clone(),
            _ => return self.error("a definition (struct, enum, service, ...)"),
        };
        let kind = match keyword.as_str() {
            "struct" => StructKind::Struct,
            "union" => StructKind::Union,
            "exception" => StructKind::Exception,
            "typedef" => return self.typedef(doc),
            "const" => return self.constant(doc),
            "enum" => return self.enumeration(doc),
            "service" => return self.service(doc),
            "include" | "namespace" | "cpp_include" => {
                return self.error("a definition (headers must come before definitions)")
            }
            _ => return self.error("a definition (struct, enum, service, ...)"),
        };
        self.bump();
        let name = self.expect_ident("a name")?;
        self.eat_keyword("xsd_all");
        self.expect_punct('{')?;
        let fields = self.fields('}', &name.name)?;
        let annotations = self.annotations()?;
        Ok(Definition::Struct(Struct {
            kind,
            name,
            fields,
            annotations,
            doc,
        }))
    }

    fn typedef(&mut self, doc: Option<String>) -> PResult<Definition> {
        self.bump();
        let ty = self.field_type()?;
        let name = self.expect_ident("the typedef's name")?;
        let annotations = self.annotations()?;
        Ok(Definition::Typedef(Typedef {
            ty,
            name,
            annotations,
            doc,
        }))
    }

    fn constant(&mut self, doc: Option<String>) -> PResult<Definition> {
        self.bump();
        let ty = self.field_type()?;
        let name = self.expect_ident("the constant's name")?;
        self.expect_punct('=')?;
        let value = self.const_value()?;
        Ok(Definition::Const(Const {
            ty,
            name,
            value,
            doc,
        }))
    }

    fn enumeration(&mut self, doc: Option<String>) -> PResult<Definition> {
        self.bump();
        let name = self.expect_ident("the enum's name")?;
        self.expect_punct('{')?;
        let mut values = Vec::new();
        let mut next: i64 = 0;
        while !self.eat_punct('}') {
            let doc = self.peek().doc.clone();
            let value_name = self.expect_ident("an enum value name or `}`")?;
            let value = if self.eat_punct('=') {
                match self.bump().kind {
                    TokenKind::Int(v) => v,
                    _ => {
                        self.at -= 1;
                        return self.error("an integer enum value");
                    }
                }
            } else {
                next
            };
            next = value.saturating_add(1);
            let annotations = self.annotations()?;
            values.push(EnumValue {
                name: value_name,
                value,
                annotations,
                doc,
            });
            self.list_separator();
        }
        let annotations = self.annotations()?;
        Ok(Definition::Enum(Enum {
            name,
            values,
            annotations,
            doc,
        }))
    }

    fn service(&mut self, doc: Option<String>) -> PResult<Definition> {
        self.bump();
        let name = self.expect_ident("the service's name")?;
        let extends = if self.eat_keyword("extends") {
            Some(self.expect_ident("the name of the extended service")?)
        } else {
            None
        };
        self.expect_punct('{')?;
        let mut functions = Vec::new();
        while !self.eat_punct('}') {
            functions.push(self.function()?);
            self.list_separator();
        }
        let annotations = self.annotations()?;
        Ok(Definition::Service(Service {
            name,
            extends,
            functions,
            annotations,
            doc,
        }))
    }

    fn function(&mut self) -> PResult<Function> {
        let doc = self.peek().doc.clone();
        let oneway = self.eat_keyword("oneway");
        let returns = if self.eat_keyword("void") {
            None
        } else if matches!(self.peek().kind, TokenKind::Ident(_)) {
            Some(self.field_type()?)
        } else {
            return self.error("a return type, `void`, or `}`");
        };
        let name = self.expect_ident("the function's name")?;
        self.expect_punct('(')?;
        let params = self.fields(')', &name.name)?;
        let throws = if self.eat_keyword("throws") {
            self.expect_punct('(')?;
            self.fields(')', &name.name)?
        } else {
            Vec::new()
        };
        let annotations = self.annotations()?;
        Ok(Function {
            name,
            oneway,
            returns,
            params,
            throws,
            annotations,
            doc,
        })
    }

    /// Fields up to and including `close`, with Apache's implicit ids.
    fn fields(&mut self, close: char, owner: &str) -> PResult<Vec<Field>> {
        let mut fields = Vec::new();
        let mut next_implicit: i16 = -1;
        while !self.eat_punct(close) {
            if self.peek().kind == TokenKind::Eof {
                return self.error(&format!("a field or `{close}`"));
            }
            fields.push(self.field(owner, &mut next_implicit)?);
            self.list_separator();
        }
        Ok(fields)
    }

    fn field(&mut self, owner: &str, next_implicit: &mut i16) -> PResult<Field> {
        let start = self.peek().clone();
        let explicit_id = match start.kind {
            TokenKind::Int(id) => {
                self.bump();
                self.expect_punct(':')?;
                if !(1..=i64::from(i16::MAX)).contains(&id) {
                    return Err(SemanticError {
                        file: self.file.clone(),
                        pos: start.pos,
                        kind: SemanticErrorKind::FieldIdOutOfRange { id },
                    }
                    .into());
                }
                // The range check above makes this lossless.
                Some(id as i16)
            }
            _ => None,
        };
        let requiredness = if self.eat_keyword("required") {
            Requiredness::Required
        } else if self.eat_keyword("optional") {
            Requiredness::Optional
        } else {
            Requiredness::Default
        };
        let ty = self.field_type()?;
        self.eat_punct('&');
        let name = self.expect_ident("the field's name")?;
        let id = match explicit_id {
            Some(id) => id,
            None => {
                let id = *next_implicit;
                *next_implicit = next_implicit.checked_sub(1).ok_or_else(|| SemanticError {
                    file: self.file.clone(),
                    pos: start.pos,
                    kind: SemanticErrorKind::FieldIdOutOfRange {
                        id: i64::from(id) - 1,
                    },
                })?;
                self.warnings.push(Warning {
                    file: self.file.clone(),
                    pos: start.pos,
                    message: format!(
                        "no field id for `{}` in `{owner}`; using implicit id {id}, \
                         which breaks if fields are reordered",
                        name.name
                    ),
                });
                id
            }
        };
        let default = if self.eat_punct('=') {
            Some(self.const_value()?)
        } else {
            None
        };
        for xsd in ["xsd_optional", "xsd_nillable"] {
            self.eat_keyword(xsd);
        }
        if self.eat_keyword("xsd_attrs") {
            self.expect_punct('{')?;
            self.fields('}', owner)?;
        }
        let annotations = self.annotations()?;
        Ok(Field {
            id,
            implicit_id: explicit_id.is_none(),
            requiredness,
            ty,
            name,
            default,
            annotations,
            doc: start.doc,
        })
    }

    fn field_type(&mut self) -> PResult<Type> {
        self.nested(Self::field_type_inner)
    }

    /// Runs `parse` one nesting level deeper, failing past [`MAX_NESTING`].
    fn nested<T>(&mut self, parse: fn(&mut Self) -> PResult<T>) -> PResult<T> {
        if self.depth >= MAX_NESTING {
            return self.error(&format!("at most {MAX_NESTING} levels of nesting"));
        }
        self.depth += 1;
        let result = parse(self);
        self.depth -= 1;
        result
    }

    fn field_type_inner(&mut self) -> PResult<Type> {
        let ident = self.expect_ident("a type")?;
        let ty = match ident.name.as_str() {
            "list" => {
                self.expect_punct('<')?;
                let elem = self.field_type()?;
                self.expect_punct('>')?;
                self.cpp_type()?;
                Type::List(Box::new(elem))
            }
            "set" => {
                self.cpp_type()?;
                self.expect_punct('<')?;
                let elem = self.field_type()?;
                self.expect_punct('>')?;
                Type::Set(Box::new(elem))
            }
            "map" => {
                self.cpp_type()?;
                self.expect_punct('<')?;
                let key = self.field_type()?;
                self.expect_punct(',')?;
                let value = self.field_type()?;
                self.expect_punct('>')?;
                Type::Map(Box::new(key), Box::new(value))
            }
            "void" => {
                self.at -= 1;
                return self.error("a type (`void` is only a return type)");
            }
            name => match BaseType::from_name(name) {
                Some(base) => Type::Base(base),
                None => Type::Named(ident),
            },
        };
        // Annotations on types (e.g. `i64 (js.type = "Long")`) are accepted
        // and dropped: nothing in Rust generation depends on them.
        self.annotations()?;
        Ok(ty)
    }

    fn cpp_type(&mut self) -> PResult<()> {
        if self.eat_keyword("cpp_type") {
            self.expect_literal("the quoted C++ type")?;
        }
        Ok(())
    }

    fn annotations(&mut self) -> PResult<Vec<Annotation>> {
        let mut annotations = Vec::new();
        if !self.eat_punct('(') {
            return Ok(annotations);
        }
        while !self.eat_punct(')') {
            let key = self.expect_ident("an annotation key or `)`")?.name;
            let value = if self.eat_punct('=') {
                match self.bump().kind {
                    TokenKind::Str(s) => s,
                    TokenKind::Int(i) => i.to_string(),
                    TokenKind::Ident(s) => s,
                    _ => {
                        self.at -= 1;
                        return self.error("a quoted annotation value");
                    }
                }
            } else {
                "1".to_owned()
            };
            annotations.push(Annotation { key, value });
            self.list_separator();
        }
        Ok(annotations)
    }

    fn const_value(&mut self) -> PResult<ConstValue> {
        self.nested(Self::const_value_inner)
    }

    fn const_value_inner(&mut self) -> PResult<ConstValue> {
        let tok = self.bump();
        Ok(match tok.kind {
            TokenKind::Int(i) => ConstValue::Int(i, tok.pos),
            TokenKind::Double(d) => ConstValue::Double(d, tok.pos),
            TokenKind::Str(s) => ConstValue::String(s, tok.pos),
            TokenKind::Ident(name) => ConstValue::Ident(Ident { name, pos: tok.pos }),
            TokenKind::Punct('[') => {
                let mut items = Vec::new();
                while !self.eat_punct(']') {
                    if self.peek().kind == TokenKind::Eof {
                        return self.error("a list item or `]`");
                    }
                    items.push(self.const_value()?);
                    self.list_separator();
                }
                ConstValue::List(items, tok.pos)
            }
            TokenKind::Punct('{') => {
                let mut entries = Vec::new();
                while !self.eat_punct('}') {
                    if self.peek().kind == TokenKind::Eof {
                        return self.error("a map entry or `}`");
                    }
                    let key = self.const_value()?;
                    self.expect_punct(':')?;
                    let value = self.const_value()?;
                    entries.push((key, value));
                    self.list_separator();
                }
                ConstValue::Map(entries, tok.pos)
            }
            _ => {
                self.at -= 1;
                return self.error("a constant value");
            }
        })
    }
}

#[cfg(test)]
mod tests;
