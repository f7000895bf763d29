//! Thrift IDL tokens: identifiers, literals, punctuation; comments skipped
//! and `/** doc */` comments attached to the token that follows them.

use std::fmt;

use crate::error::Pos;

/// What a token is.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum TokenKind {
    /// A name or keyword; may contain dots (`shared.Type`, `Color.RED`).
    Ident(String),
    /// An integer literal, decimal or `0x` hex, with optional sign.
    Int(i64),
    /// A floating-point literal.
    Double(f64),
    /// A string literal with escapes resolved.
    Str(String),
    /// One of `{ } ( ) [ ] < > , ; : = *`.
    Punct(char),
    /// End of input.
    Eof,
}

impl fmt::Display for TokenKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            TokenKind::Ident(s) => write!(f, "`{s}`"),
            TokenKind::Int(i) => write!(f, "integer `{i}`"),
            TokenKind::Double(d) => write!(f, "number `{d}`"),
            TokenKind::Str(s) => write!(f, "string {s:?}"),
            TokenKind::Punct(c) => write!(f, "`{c}`"),
            TokenKind::Eof => f.write_str("end of file"),
        }
    }
}

/// A token, where it starts and the doc comment right before it.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Token {
    pub kind: TokenKind,
    pub pos: Pos,
    pub doc: Option<String>,
}

/// A lexical error: where, and what the lexer expected.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct LexError {
    pub pos: Pos,
    pub expected: String,
    pub found: String,
}

/// Splits IDL text into tokens.
pub(crate) fn tokenize(src: &str) -> Result<Vec<Token>, LexError> {
    let mut lexer = Lexer {
        chars: src.chars().collect(),
        at: 0,
        pos: Pos { line: 1, column: 1 },
    };
    let mut tokens = Vec::new();
    loop {
        let doc = lexer.skip_trivia()?;
        let pos = lexer.pos;
        let kind = lexer.next_kind()?;
        let eof = kind == TokenKind::Eof;
        tokens.push(Token { kind, pos, doc });
        if eof {
            return Ok(tokens);
        }
    }
}

struct Lexer {
    chars: Vec<char>,
    at: usize,
    pos: Pos,
}

impl Lexer {
    fn peek(&self) -> Option<char> {
        self.chars.get(self.at).copied()
    }

    fn peek_at(&self, ahead: usize) -> Option<char> {
        self.chars.get(self.at + ahead).copied()
    }

    fn bump(&mut self) -> Option<char> {
        let c = self.peek()?;
        self.at += 1;
        if c == '\n' {
            self.pos.line += 1;
            self.pos.column = 1;
        } else {
            self.pos.column += 1;
        }
        Some(c)
    }

    fn error(&self, pos: Pos, expected: &str) -> LexError {
        let found = match self.peek() {
            Some(c) => format!("`{}`", c.escape_debug()),
            None => "end of file".to_owned(),
        };
        LexError {
            pos,
            expected: expected.to_owned(),
            found,
        }
    }

    /// Skips whitespace and comments; returns the last doc comment seen.
    fn skip_trivia(&mut self) -> Result<Option<String>, LexError> {
        let mut doc = None;
        loop {
            match (self.peek(), self.peek_at(1)) {
                (Some(c), _) if c.is_whitespace() => {
                    self.bump();
                }
                (Some('#'), _) | (Some('/'), Some('/')) => {
                    while let Some(c) = self.bump() {
                        if c == '\n' {
                            break;
                        }
                    }
                }
                (Some('/'), Some('*')) => {
                    let start = self.pos;
                    self.bump();
                    self.bump();
                    let is_doc = self.peek() == Some('*') && self.peek_at(1) != Some('/');
                    let mut text = String::new();
                    loop {
                        match self.bump() {
                            Some('*') if self.peek() == Some('/') => {
                                self.bump();
                                break;
                            }
                            Some(c) => text.push(c),
                            None => return Err(self.error(start, "`*/` closing the comment")),
                        }
                    }
                    if is_doc {
                        doc = Some(clean_doc(&text));
                    }
                }
                _ => return Ok(doc),
            }
        }
    }

    fn next_kind(&mut self) -> Result<TokenKind, LexError> {
        let start = self.pos;
        let Some(c) = self.peek() else {
            return Ok(TokenKind::Eof);
        };
        match c {
            '{' | '}' | '(' | ')' | '[' | ']' | '<' | '>' | ',' | ';' | ':' | '=' | '*' | '&' => {
                self.bump();
                Ok(TokenKind::Punct(c))
            }
            '"' | '\'' => self.string(start, c),
            c if c.is_ascii_alphabetic() || c == '_' => {
                let mut s = String::new();
                while let Some(c) = self.peek() {
                    if c.is_ascii_alphanumeric() || c == '_' || c == '.' {
                        s.push(c);
                        self.bump();
                    } else {
                        break;
                    }
                }
                Ok(TokenKind::Ident(s))
            }
            c if c.is_ascii_digit()
                || ((c == '+' || c == '-' || c == '.')
                    && self.peek_at(1).is_some_and(|d| d.is_ascii_digit())) =>
            {
                self.number(start)
            }
            _ => Err(self.error(start, "a token")),
        }
    }

    fn string(&mut self, start: Pos, quote: char) -> Result<TokenKind, LexError> {
        self.bump();
        let mut s = String::new();
        loop {
            match self.bump() {
                Some(c) if c == quote => return Ok(TokenKind::Str(s)),
                Some('\\') => {
                    let escaped = match self.bump() {
                        Some('n') => '\n',
                        Some('r') => '\r',
                        Some('t') => '\t',
                        Some('0') => '\0',
                        Some(c @ ('\\' | '"' | '\'')) => c,
                        Some(c) => {
                            s.push('\\');
                            c
                        }
                        None => break,
                    };
                    s.push(escaped);
                }
                Some(c) => s.push(c),
                None => break,
            }
        }
        Err(self.error(start, &format!("`{quote}` closing the string literal")))
    }

    fn number(&mut self, start: Pos) -> Result<TokenKind, LexError> {
        let mut text = String::new();
        if let Some(sign @ ('+' | '-')) = self.peek() {
            text.push(sign);
            self.bump();
        }
        let digits_start = text.len();
        if self.peek() == Some('0') && matches!(self.peek_at(1), Some('x' | 'X')) {
            self.bump();
            self.bump();
            let mut hex = String::new();
            while let Some(c) = self.peek().filter(char::is_ascii_hexdigit) {
                hex.push(c);
                self.bump();
            }
            let magnitude = i128::from_str_radix(&hex, 16)
                .map_err(|_| self.error(start, "hexadecimal digits"))?;
            let value = if text.starts_with('-') {
                -magnitude
            } else {
                magnitude
            };
            return i64::try_from(value)
                .map(TokenKind::Int)
                .map_err(|_| self.literal_error(start, &format!("0x{hex}")));
        }
        let mut is_double = false;
        while let Some(c) = self.peek() {
            let exponent_sign = (c == '+' || c == '-')
                && text.len() > digits_start
                && matches!(text.chars().last(), Some('e' | 'E'));
            if c.is_ascii_digit() || exponent_sign {
                text.push(c);
            } else if c == '.' || c == 'e' || c == 'E' {
                is_double = true;
                text.push(c);
            } else {
                break;
            }
            self.bump();
        }
        if is_double {
            text.parse::<f64>()
                .map(TokenKind::Double)
                .map_err(|_| self.literal_error(start, &text))
        } else {
            text.parse::<i64>()
                .map(TokenKind::Int)
                .map_err(|_| self.literal_error(start, &text))
        }
    }

    fn literal_error(&self, pos: Pos, text: &str) -> LexError {
        LexError {
            pos,
            expected: "a number that fits in 64 bits".to_owned(),
            found: format!("`{text}`"),
        }
    }
}

/// Strips the leading `*` decoration of each doc-comment line.
fn clean_doc(text: &str) -> String {
    let lines: Vec<&str> = text
        .lines()
        .map(|l| {
            let t = l.trim();
            t.strip_prefix('*').map_or(t, str::trim_start).trim_end()
        })
        .collect();
    let first = lines
        .iter()
        .position(|l| !l.is_empty())
        .unwrap_or(lines.len());
    let last = lines
        .iter()
        .rposition(|l| !l.is_empty())
        .map_or(0, |i| i + 1);
    lines.get(first..last).unwrap_or_default().join("\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn kinds(src: &str) -> Vec<TokenKind> {
        tokenize(src)
            .expect("lexes")
            .into_iter()
            .map(|t| t.kind)
            .collect()
    }

    #[test]
    fn skips_all_comment_styles() {
        let k = kinds("# hash\n// line\n/* block\n */ struct");
        assert_eq!(k, vec![TokenKind::Ident("struct".into()), TokenKind::Eof]);
    }

    #[test]
    fn keeps_doc_comments() {
        let toks = tokenize("/**\n * Hello\n * world\n */\nstruct").expect("lexes");
        assert_eq!(toks[0].doc.as_deref(), Some("Hello\nworld"));
    }

    #[test]
    fn numbers() {
        assert_eq!(
            kinds("1 -2 +3 0x1F -0x10 1.5 -2e3 .5"),
            vec![
                TokenKind::Int(1),
                TokenKind::Int(-2),
                TokenKind::Int(3),
                TokenKind::Int(31),
                TokenKind::Int(-16),
                TokenKind::Double(1.5),
                TokenKind::Double(-2000.0),
                TokenKind::Double(0.5),
                TokenKind::Eof,
            ]
        );
    }

    #[test]
    fn strings_with_both_quotes_and_escapes() {
        assert_eq!(
            kinds(r#""a\"b" 'c\'d' "e\nf""#),
            vec![
                TokenKind::Str("a\"b".into()),
                TokenKind::Str("c'd".into()),
                TokenKind::Str("e\nf".into()),
                TokenKind::Eof,
            ]
        );
    }

    #[test]
    fn dotted_identifiers() {
        assert_eq!(
            kinds("shared.Type"),
            vec![TokenKind::Ident("shared.Type".into()), TokenKind::Eof]
        );
    }

    #[test]
    fn positions() {
        let toks = tokenize("a\n  b").expect("lexes");
        assert_eq!(toks[1].pos, Pos { line: 2, column: 3 });
    }

    #[test]
    fn errors() {
        let e = tokenize("\"open").unwrap_err();
        assert_eq!(e.pos, Pos { line: 1, column: 1 });
        assert!(tokenize("/* open").is_err());
        assert!(tokenize("99999999999999999999").is_err());
        assert!(tokenize("0xFFFFFFFFFFFFFFFFFF").is_err());
        assert!(tokenize("@").is_err());
    }
}
