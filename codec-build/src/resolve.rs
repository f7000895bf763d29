//! Loads a set of IDL files with their includes, resolves names across files
//! and checks the rules the grammar alone cannot (duplicates, unknown types,
//! enum ranges, default values).

use std::collections::{HashMap, HashSet};
use std::fs;
use std::path::{Path, PathBuf};

use crate::ast::{
    BaseType, Definition, Document, Enum, Field, Ident, Service, Struct, StructKind, Type,
};
use crate::error::{Error, Pos, SemanticError, SemanticErrorKind, Warning};
use crate::parser::parse;

/// How deep typedef chains and constant references may nest before they are
/// taken for a cycle.
const MAX_ALIAS_DEPTH: usize = 64;

/// Every file reached from the roots, each parsed once, in dependency order
/// (a file comes after all the files it includes).
#[derive(Debug, Clone)]
pub struct Program {
    /// The files; indices are stable and used by [`DefId`].
    pub files: Vec<File>,
    /// Indices of the files named as roots, in the order given.
    pub roots: Vec<usize>,
}

/// One parsed IDL file.
#[derive(Debug, Clone)]
pub struct File {
    /// The path it was read from.
    pub path: PathBuf,
    /// The Rust module name its code goes into.
    pub module: String,
    /// Its syntax tree.
    pub doc: Document,
    /// Include alias (the included file's stem) to file index.
    pub includes: HashMap<String, usize>,
}

/// A definition in some file of a [`Program`].
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct DefId {
    /// Index into [`Program::files`].
    pub file: usize,
    /// The definition's name as written in its file.
    pub name: String,
}

/// A type with typedefs followed and names resolved.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum RType {
    /// A base type.
    Base(BaseType),
    /// `list<T>`.
    List(Box<RType>),
    /// `set<T>`.
    Set(Box<RType>),
    /// `map<K, V>`.
    Map(Box<RType>, Box<RType>),
    /// An enum.
    Enum(DefId),
    /// A struct, union or exception.
    Struct(DefId),
}

impl Program {
    /// Reads `roots` and everything they include, then checks the whole set.
    ///
    /// Each include is looked up next to the including file, then in each of
    /// `include_dirs` in order.
    pub fn load(
        roots: &[PathBuf],
        include_dirs: &[PathBuf],
        warnings: &mut Vec<Warning>,
    ) -> Result<Program, Error> {
        let mut loader = Loader {
            include_dirs,
            files: Vec::new(),
            by_path: HashMap::new(),
            stack: Vec::new(),
            warnings,
        };
        let mut root_ids = Vec::new();
        for root in roots {
            let id = loader.load(root, None)?;
            if !root_ids.contains(&id) {
                root_ids.push(id);
            }
        }
        let program = Program {
            files: loader.files,
            roots: root_ids,
        };
        program.check()?;
        Ok(program)
    }

    /// Builds a program from one in-memory document (used by tests).
    pub fn from_document(path: PathBuf, doc: Document) -> Result<Program, Error> {
        let module = module_name(&path, &doc);
        let program = Program {
            files: vec![File {
                path,
                module,
                doc,
                includes: HashMap::new(),
            }],
            roots: vec![0],
        };
        program.check()?;
        Ok(program)
    }

    /// The file at `index`.
    ///
    /// # Panics
    ///
    /// If `index` is not an index into [`Program::files`]; indices in
    /// [`DefId`]s and [`Program::roots`] from this program always are.
    pub fn file(&self, index: usize) -> &File {
        &self.files[index]
    }

    pub(crate) fn error(&self, file: usize, pos: Pos, kind: SemanticErrorKind) -> SemanticError {
        SemanticError {
            file: self
                .files
                .get(file)
                .map(|f| f.path.clone())
                .unwrap_or_default(),
            pos,
            kind,
        }
    }

    /// Finds the definition `name` as seen from `file`: local, or
    /// `alias.Name` from an included file.
    pub fn lookup(&self, file: usize, name: &str) -> Option<(usize, &Definition)> {
        let local = |f: usize, n: &str| {
            self.files
                .get(f)?
                .doc
                .definitions
                .iter()
                .find(|d| d.name().name == n)
                .map(|d| (f, d))
        };
        if let Some(found) = local(file, name) {
            return Some(found);
        }
        let (alias, rest) = name.split_once('.')?;
        let target = *self.files.get(file)?.includes.get(alias)?;
        local(target, rest)
    }

    /// The definition a [`DefId`] names.
    pub fn definition(&self, id: &DefId) -> Option<&Definition> {
        self.lookup(id.file, &id.name).map(|(_, d)| d)
    }

    /// The struct, union or exception a [`DefId`] names.
    pub fn struct_def(&self, id: &DefId) -> Option<&Struct> {
        match self.definition(id)? {
            Definition::Struct(s) => Some(s),
            _ => None,
        }
    }

    /// The enum a [`DefId`] names.
    pub fn enum_def(&self, id: &DefId) -> Option<&Enum> {
        match self.definition(id)? {
            Definition::Enum(e) => Some(e),
            _ => None,
        }
    }

    /// Resolves a type written in `file`.
    pub fn resolve_type(&self, file: usize, ty: &Type) -> Result<RType, SemanticError> {
        self.resolve_type_depth(file, ty, 0)
    }

    fn resolve_type_depth(
        &self,
        file: usize,
        ty: &Type,
        depth: usize,
    ) -> Result<RType, SemanticError> {
        let inner = |t: &Type| self.resolve_type_depth(file, t, depth).map(Box::new);
        Ok(match ty {
            Type::Base(b) => RType::Base(*b),
            Type::List(t) => RType::List(inner(t)?),
            Type::Set(t) => RType::Set(inner(t)?),
            Type::Map(k, v) => RType::Map(inner(k)?, inner(v)?),
            Type::Named(ident) => {
                let unknown = || {
                    self.error(
                        file,
                        ident.pos,
                        SemanticErrorKind::UnknownReference {
                            name: ident.name.clone(),
                        },
                    )
                };
                let (def_file, def) = self.lookup(file, &ident.name).ok_or_else(unknown)?;
                let id = DefId {
                    file: def_file,
                    name: def.name().name.clone(),
                };
                match def {
                    Definition::Enum(_) => RType::Enum(id),
                    Definition::Struct(_) => RType::Struct(id),
                    Definition::Typedef(t) if depth < MAX_ALIAS_DEPTH => {
                        self.resolve_type_depth(def_file, &t.ty, depth + 1)?
                    }
                    Definition::Typedef(_) => {
                        return Err(self.error(
                            file,
                            ident.pos,
                            SemanticErrorKind::WrongKind {
                                name: ident.name.clone(),
                                expected: "a type (typedef cycle)",
                            },
                        ))
                    }
                    Definition::Const(_) | Definition::Service(_) => {
                        return Err(self.error(
                            file,
                            ident.pos,
                            SemanticErrorKind::WrongKind {
                                name: ident.name.clone(),
                                expected: "a type",
                            },
                        ))
                    }
                }
            }
        })
    }

    /// Checks every file; the first problem found is returned.
    fn check(&self) -> Result<(), SemanticError> {
        for file in 0..self.files.len() {
            let mut names = HashSet::new();
            for def in &self.file(file).doc.definitions {
                let name = def.name();
                if !names.insert(name.name.as_str()) {
                    return Err(duplicate(self, file, name));
                }
                match def {
                    Definition::Typedef(t) => {
                        self.resolve_type(file, &t.ty)?;
                    }
                    Definition::Const(c) => {
                        let ty = self.resolve_type(file, &c.ty)?;
                        self.const_value(file, &ty, &c.value)?;
                    }
                    Definition::Enum(e) => self.check_enum(file, e)?,
                    Definition::Struct(s) => {
                        self.check_fields(file, &s.name.name, &s.fields)?;
                    }
                    Definition::Service(s) => self.check_service(file, s)?,
                }
            }
        }
        Ok(())
    }

    fn check_enum(&self, file: usize, e: &Enum) -> Result<(), SemanticError> {
        let mut names = HashSet::new();
        for v in &e.values {
            if !names.insert(v.name.name.as_str()) {
                return Err(duplicate(self, file, &v.name));
            }
            if i32::try_from(v.value).is_err() {
                return Err(self.error(
                    file,
                    v.name.pos,
                    SemanticErrorKind::EnumValueOutOfRange {
                        name: v.name.name.clone(),
                        value: v.value,
                    },
                ));
            }
        }
        Ok(())
    }

    /// Checks fields (or parameters, or exceptions): unique ids and names,
    /// known types, default values that fit.
    pub(crate) fn check_fields(
        &self,
        file: usize,
        owner: &str,
        fields: &[Field],
    ) -> Result<(), SemanticError> {
        let mut ids = HashSet::new();
        let mut names = HashSet::new();
        for field in fields {
            if !ids.insert(field.id) {
                return Err(self.error(
                    file,
                    field.name.pos,
                    SemanticErrorKind::DuplicateFieldId {
                        owner: owner.to_owned(),
                        id: field.id,
                    },
                ));
            }
            if !names.insert(field.name.name.as_str()) {
                return Err(duplicate(self, file, &field.name));
            }
            let ty = self.resolve_type(file, &field.ty)?;
            if let Some(default) = &field.default {
                self.const_value(file, &ty, default)?;
            }
        }
        Ok(())
    }

    fn check_service(&self, file: usize, s: &Service) -> Result<(), SemanticError> {
        if let Some(base) = &s.extends {
            match self.lookup(file, &base.name) {
                Some((_, Definition::Service(_))) => {}
                Some(_) => {
                    return Err(self.error(
                        file,
                        base.pos,
                        SemanticErrorKind::WrongKind {
                            name: base.name.clone(),
                            expected: "a service",
                        },
                    ))
                }
                None => {
                    return Err(self.error(
                        file,
                        base.pos,
                        SemanticErrorKind::UnknownReference {
                            name: base.name.clone(),
                        },
                    ))
                }
            }
        }
        let mut names = HashSet::new();
        for f in &s.functions {
            if !names.insert(f.name.name.as_str()) {
                return Err(duplicate(self, file, &f.name));
            }
            let owner = format!("{}.{}", s.name.name, f.name.name);
            if let Some(ret) = &f.returns {
                self.resolve_type(file, ret)?;
            }
            self.check_fields(file, &owner, &f.params)?;
            self.check_fields(file, &owner, &f.throws)?;
            for t in &f.throws {
                let is_exception = match self.resolve_type(file, &t.ty)? {
                    RType::Struct(id) => self
                        .struct_def(&id)
                        .is_some_and(|d| d.kind == StructKind::Exception),
                    _ => false,
                };
                if !is_exception {
                    return Err(self.error(
                        file,
                        t.name.pos,
                        SemanticErrorKind::WrongKind {
                            name: t.name.name.clone(),
                            expected: "of an exception type",
                        },
                    ));
                }
            }
            if f.oneway && (f.returns.is_some() || !f.throws.is_empty()) {
                return Err(self.error(
                    file,
                    f.name.pos,
                    SemanticErrorKind::WrongKind {
                        name: f.name.name.clone(),
                        expected: "a valid oneway function (it must return void and throw nothing)",
                    },
                ));
            }
        }
        Ok(())
    }
}

fn duplicate(program: &Program, file: usize, name: &Ident) -> SemanticError {
    program.error(
        file,
        name.pos,
        SemanticErrorKind::DuplicateName {
            name: name.name.clone(),
        },
    )
}

/// The Rust module for a file: its `rs` namespace (dots become `_`), else
/// the file stem.
pub(crate) fn module_name(path: &Path, doc: &Document) -> String {
    let raw = doc.namespace("rs").map(str::to_owned).unwrap_or_else(|| {
        path.file_stem()
            .map(|s| s.to_string_lossy().into_owned())
            .unwrap_or_default()
    });
    let name = crate::gen::names::snake_case(&raw.replace('.', "_"));
    if name.is_empty() {
        "thrift".to_owned()
    } else {
        crate::gen::names::escape_keyword(&name)
    }
}

struct Loader<'a> {
    include_dirs: &'a [PathBuf],
    files: Vec<File>,
    by_path: HashMap<PathBuf, usize>,
    stack: Vec<PathBuf>,
    warnings: &'a mut Vec<Warning>,
}

impl Loader<'_> {
    /// Loads `path` (already located) and its includes; returns its index.
    /// `from` names the including file and statement, for errors.
    fn load(&mut self, path: &Path, from: Option<(&Path, Pos, &str)>) -> Result<usize, Error> {
        let canonical = fs::canonicalize(path).map_err(|source| Error::Io {
            path: path.to_owned(),
            source,
        })?;
        if let Some(&id) = self.by_path.get(&canonical) {
            return Ok(id);
        }
        if self.stack.contains(&canonical) {
            let (from_path, pos, include) = from.unwrap_or((path, Pos::default(), ""));
            return Err(SemanticError {
                file: from_path.to_owned(),
                pos,
                kind: SemanticErrorKind::IncludeCycle {
                    include: include.to_owned(),
                },
            }
            .into());
        }
        let src = fs::read_to_string(path).map_err(|source| Error::Io {
            path: path.to_owned(),
            source,
        })?;
        let doc = parse(path, &src, self.warnings)?;
        self.stack.push(canonical.clone());
        let mut includes = HashMap::new();
        for inc in &doc.includes {
            let found = self.locate(path, &inc.path).ok_or_else(|| SemanticError {
                file: path.to_owned(),
                pos: inc.pos,
                kind: SemanticErrorKind::IncludeNotFound {
                    include: inc.path.clone(),
                },
            })?;
            let id = self.load(&found, Some((path, inc.pos, &inc.path)))?;
            let alias = Path::new(&inc.path)
                .file_stem()
                .map(|s| s.to_string_lossy().into_owned())
                .unwrap_or_default();
            includes.insert(alias, id);
        }
        self.stack.pop();
        let module = module_name(path, &doc);
        if self.files.iter().any(|f| f.module == module) {
            return Err(SemanticError {
                file: path.to_owned(),
                pos: Pos::default(),
                kind: SemanticErrorKind::DuplicateName {
                    name: format!("module {module} (two files map to one Rust module)"),
                },
            }
            .into());
        }
        let id = self.files.len();
        self.files.push(File {
            path: path.to_owned(),
            module,
            doc,
            includes,
        });
        self.by_path.insert(canonical, id);
        Ok(id)
    }

    fn locate(&self, including: &Path, include: &str) -> Option<PathBuf> {
        let beside = including.parent().map(|dir| dir.join(include));
        beside
            .into_iter()
            .chain(self.include_dirs.iter().map(|dir| dir.join(include)))
            .find(|candidate| candidate.is_file())
    }
}

#[cfg(test)]
mod tests;
