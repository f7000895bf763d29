//! Errors and warnings reported while reading, checking and compiling IDL.

use std::fmt;
use std::io;
use std::path::PathBuf;

/// A position in an IDL file: 1-based line and column (columns count chars).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct Pos {
    /// 1-based line number.
    pub line: u32,
    /// 1-based column number, in characters.
    pub column: u32,
}

impl fmt::Display for Pos {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.line, self.column)
    }
}

/// Everything that can stop a compilation.
#[derive(Debug)]
#[non_exhaustive]
pub enum Error {
    /// An IDL file could not be read, or an output file written.
    Io {
        /// The file being read or written.
        path: PathBuf,
        /// The underlying error.
        source: io::Error,
    },
    /// The IDL is not well-formed Thrift.
    Syntax(SyntaxError),
    /// The IDL parses but is not valid (duplicate ids, unknown types, ...).
    Semantic(SemanticError),
    /// No output directory was configured and `OUT_DIR` is not set (it is
    /// set by cargo for build scripts only).
    MissingOutDir,
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::Io { path, source } => write!(f, "{}: {source}", path.display()),
            Error::Syntax(e) => e.fmt(f),
            Error::Semantic(e) => e.fmt(f),
            Error::MissingOutDir => {
                f.write_str("no output directory: call Config::out_dir or run from build.rs")
            }
        }
    }
}

impl std::error::Error for Error {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            Error::Io { source, .. } => Some(source),
            Error::Syntax(e) => Some(e),
            Error::Semantic(e) => Some(e),
            Error::MissingOutDir => None,
        }
    }
}

impl From<SyntaxError> for Error {
    fn from(e: SyntaxError) -> Self {
        Error::Syntax(e)
    }
}

impl From<SemanticError> for Error {
    fn from(e: SemanticError) -> Self {
        Error::Semantic(e)
    }
}

/// A lexical or grammatical error: where it is and what was expected there.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SyntaxError {
    /// The file being parsed.
    pub file: PathBuf,
    /// Where the offending token starts.
    pub pos: Pos,
    /// What the parser would have accepted, e.g. "a field type".
    pub expected: String,
    /// What it found instead, e.g. "`}`" or "end of file".
    pub found: String,
}

impl fmt::Display for SyntaxError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}:{}: expected {}, found {}",
            self.file.display(),
            self.pos,
            self.expected,
            self.found
        )
    }
}

impl std::error::Error for SyntaxError {}

/// An IDL that parses but breaks a rule of the language.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SemanticError {
    /// The file holding the offending definition.
    pub file: PathBuf,
    /// Where the offending item starts.
    pub pos: Pos,
    /// What is wrong.
    pub kind: SemanticErrorKind,
}

impl fmt::Display for SemanticError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}: {}", self.file.display(), self.pos, self.kind)
    }
}

impl std::error::Error for SemanticError {}

/// The rule a [`SemanticError`] breaks.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum SemanticErrorKind {
    /// Two fields (or parameters, or exceptions) of one definition share an id.
    DuplicateFieldId {
        /// The definition holding both fields.
        owner: String,
        /// The shared id.
        id: i16,
    },
    /// Two items in one scope share a name (definitions, fields, enum values).
    DuplicateName {
        /// The repeated name.
        name: String,
    },
    /// A type, constant or service name that no definition declares.
    UnknownReference {
        /// The name as written.
        name: String,
    },
    /// A name that exists but denotes the wrong kind of thing, e.g. a service
    /// used as a field type.
    WrongKind {
        /// The name as written.
        name: String,
        /// What was needed there.
        expected: &'static str,
    },
    /// An enum value outside the i32 range.
    EnumValueOutOfRange {
        /// The enum value's name.
        name: String,
        /// The value it was given or would get by auto-increment.
        value: i64,
    },
    /// An explicit field id outside 1..=32767 (or a negative implicit range overflow).
    FieldIdOutOfRange {
        /// The id as written.
        id: i64,
    },
    /// An included file that is in no include directory.
    IncludeNotFound {
        /// The path as written in the `include` statement.
        include: String,
    },
    /// Files that include each other.
    IncludeCycle {
        /// The path as written in the `include` statement closing the cycle.
        include: String,
    },
    /// A constant or default value that does not fit its declared type.
    InvalidConstValue {
        /// Why it does not fit.
        reason: String,
    },
    /// A construct that parses but that this generator does not support.
    Unsupported {
        /// What is not supported.
        what: String,
    },
}

impl fmt::Display for SemanticErrorKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::DuplicateFieldId { owner, id } => {
                write!(f, "duplicate field id {id} in `{owner}`")
            }
            Self::DuplicateName { name } => write!(f, "`{name}` is defined more than once"),
            Self::UnknownReference { name } => write!(f, "unknown name `{name}`"),
            Self::WrongKind { name, expected } => {
                write!(f, "`{name}` is not {expected}")
            }
            Self::EnumValueOutOfRange { name, value } => {
                write!(f, "enum value `{name}` = {value} does not fit in i32")
            }
            Self::FieldIdOutOfRange { id } => {
                write!(f, "field id {id} is out of range (1..=32767)")
            }
            Self::IncludeNotFound { include } => {
                write!(f, "included file \"{include}\" not found")
            }
            Self::IncludeCycle { include } => {
                write!(f, "include cycle through \"{include}\"")
            }
            Self::InvalidConstValue { reason } => write!(f, "invalid constant: {reason}"),
            Self::Unsupported { what } => write!(f, "unsupported: {what}"),
        }
    }
}

/// Something legal but dubious in the IDL, e.g. a field without an id.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Warning {
    /// The file holding the item.
    pub file: PathBuf,
    /// Where the item starts.
    pub pos: Pos,
    /// What is dubious about it.
    pub message: String,
}

impl fmt::Display for Warning {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}: {}", self.file.display(), self.pos, self.message)
    }
}
