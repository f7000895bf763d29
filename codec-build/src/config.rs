//! The `build.rs` entry point: which IDL to read, where to write Rust.

use std::env;
use std::fs;
use std::path::{Path, PathBuf};

use crate::error::{Error, Warning};
use crate::gen::{generate_file, GenOptions};
use crate::resolve::Program;

/// Settings for one compilation of Thrift files to Rust.
///
/// ```no_run
/// // build.rs
/// fn main() -> Result<(), Box<dyn std::error::Error>> {
///     netpoll_codec_build::Config::new()
///         .include_dir("idl")
///         .compile(&["idl/interop.thrift"])?;
///     Ok(())
/// }
/// ```
#[derive(Debug, Clone)]
pub struct Config {
    include_dirs: Vec<PathBuf>,
    out_dir: Option<PathBuf>,
    runtime: String,
    service_types: bool,
    rpc: Option<String>,
    cargo_directives: bool,
}

impl Default for Config {
    fn default() -> Self {
        Self::new()
    }
}

/// The Rust code for a set of IDL files, before it is written anywhere.
#[derive(Debug, Clone)]
pub struct Generated {
    /// `(module name, source)` for each file read, includes first.
    pub modules: Vec<(String, String)>,
    /// Every IDL file read, roots and includes.
    pub files_read: Vec<PathBuf>,
    /// Dubious but legal constructs found on the way.
    pub warnings: Vec<Warning>,
}

impl Config {
    /// The defaults: no include directories, output to `$OUT_DIR`, runtime
    /// crate `::codec`, service argument/result structs generated, cargo
    /// directives printed.
    pub fn new() -> Self {
        Self {
            include_dirs: Vec::new(),
            out_dir: None,
            runtime: "::netpoll_codec".to_owned(),
            service_types: true,
            rpc: None,
            cargo_directives: true,
        }
    }

    /// Adds a directory in which `include "x.thrift"` is looked up (after
    /// the including file's own directory).
    pub fn include_dir(&mut self, dir: impl AsRef<Path>) -> &mut Self {
        self.include_dirs.push(dir.as_ref().to_owned());
        self
    }

    /// Writes the generated files to `dir` instead of `$OUT_DIR`.
    pub fn out_dir(&mut self, dir: impl AsRef<Path>) -> &mut Self {
        self.out_dir = Some(dir.as_ref().to_owned());
        self
    }

    /// The path by which generated code names the codec runtime crate
    /// (default `::codec`), for crates that rename or re-export it.
    pub fn runtime_crate(&mut self, path: impl Into<String>) -> &mut Self {
        self.runtime = path.into();
        self
    }

    /// Whether to generate `{Service}{Method}Args` and `{Service}{Method}Result`
    /// structs for each service function (default true).
    pub fn service_types(&mut self, enabled: bool) -> &mut Self {
        self.service_types = enabled;
        self
    }

    /// Also generates, for each service, what the `rpc` crate serves and calls: a trait
    /// with one synchronous method per function, a `{Service}Server` around an
    /// implementation, `register_{service}`, a typed `{Service}Client`, and a
    /// `{Service}{Method}Error` enum for functions that declare exceptions. `rpc_crate` is
    /// the path by which generated code names the `rpc` crate (usually `::rpc`).
    /// Implies [`service_types`](Config::service_types).
    pub fn services(&mut self, rpc_crate: impl Into<String>) -> &mut Self {
        self.rpc = Some(rpc_crate.into());
        self.service_types = true;
        self
    }

    /// Whether [`Config::compile`] prints `cargo:rerun-if-changed` for every
    /// IDL file read and `cargo:warning` for every warning (default true).
    pub fn cargo_directives(&mut self, enabled: bool) -> &mut Self {
        self.cargo_directives = enabled;
        self
    }

    /// Parses and checks `files` with their includes and returns the Rust
    /// code, one module per Thrift file, without writing anything.
    pub fn generate(&self, files: &[impl AsRef<Path>]) -> Result<Generated, Error> {
        let roots: Vec<PathBuf> = files.iter().map(|f| f.as_ref().to_owned()).collect();
        let mut warnings = Vec::new();
        let program = Program::load(&roots, &self.include_dirs, &mut warnings)?;
        let options = GenOptions {
            runtime: self.runtime.clone(),
            service_types: self.service_types,
            rpc: self.rpc.clone(),
        };
        let mut modules = Vec::new();
        for (index, file) in program.files.iter().enumerate() {
            modules.push((
                file.module.clone(),
                crate::gen::format_source(generate_file(&program, index, &options)?),
            ));
        }
        Ok(Generated {
            modules,
            files_read: program.files.iter().map(|f| f.path.clone()).collect(),
            warnings,
        })
    }

    /// Generates code for `files` and writes `<module>.rs` for each Thrift
    /// file read into the output directory; returns the paths written.
    ///
    /// Include a module in the crate with
    /// `include!(concat!(env!("OUT_DIR"), "/interop.rs"));`, which declares
    /// `pub mod interop`. Modules generated from files that include one
    /// another refer to each other as siblings (`super::shared::Type`), so
    /// include them side by side.
    pub fn compile(&self, files: &[impl AsRef<Path>]) -> Result<Vec<PathBuf>, Error> {
        let out_dir = match &self.out_dir {
            Some(dir) => dir.clone(),
            None => env::var_os("OUT_DIR")
                .map(PathBuf::from)
                .ok_or(Error::MissingOutDir)?,
        };
        let generated = match self.generate(files) {
            Ok(g) => g,
            Err(e) => {
                if self.cargo_directives {
                    for f in files {
                        println!("cargo:rerun-if-changed={}", f.as_ref().display());
                    }
                }
                return Err(e);
            }
        };
        if self.cargo_directives {
            for f in &generated.files_read {
                println!("cargo:rerun-if-changed={}", f.display());
            }
            for w in &generated.warnings {
                println!("cargo:warning={w}");
            }
        }
        fs::create_dir_all(&out_dir).map_err(|source| Error::Io {
            path: out_dir.clone(),
            source,
        })?;
        let mut written = Vec::new();
        for (module, source) in &generated.modules {
            let path = out_dir.join(format!("{module}.rs"));
            // Leaving an unchanged file alone keeps its mtime, so cargo does
            // not rebuild the crate for nothing.
            if fs::read_to_string(&path).ok().as_deref() != Some(source.as_str()) {
                fs::write(&path, source).map_err(|source| Error::Io {
                    path: path.clone(),
                    source,
                })?;
            }
            written.push(path);
        }
        Ok(written)
    }
}

/// Compiles `files` with the default [`Config`]: no include directories,
/// output to `$OUT_DIR`.
///
/// ```no_run
/// // build.rs
/// fn main() -> Result<(), netpoll_codec_build::Error> {
///     netpoll_codec_build::compile(&["idl/echo.thrift"])?;
///     Ok(())
/// }
/// ```
pub fn compile(files: &[impl AsRef<Path>]) -> Result<Vec<PathBuf>, Error> {
    Config::new().compile(files)
}
