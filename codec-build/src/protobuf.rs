//! `.proto` files to Rust with prost, without `protoc`: protox parses the files in pure
//! Rust and prost-build generates the types, with every `bytes` field as `bytes::Bytes`
//! so that decoding borrows from the frame instead of copying.

use std::fmt;
use std::path::{Path, PathBuf};

/// Why `.proto` compilation failed.
#[derive(Debug)]
#[non_exhaustive]
pub enum ProtoError {
    /// A `.proto` file could not be read or parsed (the message has file and position).
    Parse(String),
    /// prost-build could not write the generated code.
    Generate(std::io::Error),
    /// `OUT_DIR` is not set (call from a build script, or use [`compile_protos_to`]).
    MissingOutDir,
}

impl fmt::Display for ProtoError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ProtoError::Parse(e) => write!(f, "cannot compile .proto: {e}"),
            ProtoError::Generate(e) => write!(f, "cannot generate protobuf code: {e}"),
            ProtoError::MissingOutDir => {
                f.write_str("OUT_DIR is not set; call from build.rs or use compile_protos_to")
            }
        }
    }
}

impl std::error::Error for ProtoError {}

/// Compiles `protos` (looked up in `includes`) into `$OUT_DIR`, one `<package>.rs` per
/// protobuf package, and prints `cargo:rerun-if-changed` for each input.
///
/// ```no_run
/// // build.rs
/// netpoll_codec_build::compile_protos(&["idl/echo.proto"], &["idl"]).expect("protobuf");
/// // src/lib.rs: include!(concat!(env!("OUT_DIR"), "/echo.rs"));
/// ```
pub fn compile_protos(
    protos: &[impl AsRef<Path>],
    includes: &[impl AsRef<Path>],
) -> Result<Vec<PathBuf>, ProtoError> {
    let out = std::env::var_os("OUT_DIR").ok_or(ProtoError::MissingOutDir)?;
    compile_protos_to(protos, includes, Path::new(&out))
}

/// Like [`compile_protos`], into `out_dir`. Returns the files written.
pub fn compile_protos_to(
    protos: &[impl AsRef<Path>],
    includes: &[impl AsRef<Path>],
    out_dir: &Path,
) -> Result<Vec<PathBuf>, ProtoError> {
    generate(protos, includes, out_dir, None)
}

/// Like [`compile_protos`], and also generates, for each service, what the `rpc` crate
/// serves and calls over Kitex Protobuf: a trait with one synchronous method per RPC, a
/// `{Service}Server`, `register_{service}` and a typed `{Service}Client`. `rpc_crate` is
/// how generated code names the `rpc` crate (usually `::rpc`). `out_dir`: `None` for
/// `$OUT_DIR`.
///
/// ```no_run
/// // build.rs
/// netpoll_codec_build::compile_proto_services(&["idl/hello.proto"], &["idl"], "::netpoll_rpc", None)
///     .expect("protobuf services");
/// ```
pub fn compile_proto_services(
    protos: &[impl AsRef<Path>],
    includes: &[impl AsRef<Path>],
    rpc_crate: &str,
    out_dir: Option<&Path>,
) -> Result<Vec<PathBuf>, ProtoError> {
    let env_out = std::env::var_os("OUT_DIR");
    let out = match (out_dir, &env_out) {
        (Some(d), _) => d,
        (None, Some(d)) => Path::new(d),
        (None, None) => return Err(ProtoError::MissingOutDir),
    };
    generate(protos, includes, out, Some(rpc_crate))
}

fn generate(
    protos: &[impl AsRef<Path>],
    includes: &[impl AsRef<Path>],
    out_dir: &Path,
    rpc: Option<&str>,
) -> Result<Vec<PathBuf>, ProtoError> {
    let fds = protox::compile(protos, includes).map_err(|e| ProtoError::Parse(format!("{e:?}")))?;
    let descriptor = std::sync::Arc::new(prost::Message::encode_to_vec(&fds));
    std::fs::create_dir_all(out_dir).map_err(ProtoError::Generate)?;
    let packages: Vec<String> = fds.file.iter().map(|f| f.package().to_string()).collect();
    let mut config = prost_build::Config::new();
    config.bytes(["."]).out_dir(out_dir);
    if let Some(rpc) = rpc {
        config.service_generator(Box::new(crate::protobuf_rpc::RpcServices {
            rpc: rpc.to_owned(),
            descriptor,
        }));
    }
    config.compile_fds(fds).map_err(ProtoError::Generate)?;
    for p in protos {
        println!("cargo:rerun-if-changed={}", p.as_ref().display());
    }
    let mut written: Vec<PathBuf> = packages
        .into_iter()
        .map(|p| {
            out_dir.join(format!(
                "{}.rs",
                if p.is_empty() { "_".to_string() } else { p }
            ))
        })
        .collect();
    written.sort();
    written.dedup();
    Ok(written)
}
