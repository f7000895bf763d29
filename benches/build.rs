fn main() {
    // Our generated types for the benchmarks (and, later, the bench client's protocols).
    codec_build::compile(&["../idl/echo.thrift", "../idl/interop.thrift"])
        .expect("generate IDL types");
    // echo.proto through prost, without protoc; in its own directory (its package is
    // also called `echo`).
    let out = std::path::PathBuf::from(
        std::env::var_os("OUT_DIR").expect("OUT_DIR is set for build scripts"),
    )
    .join("pb");
    codec_build::compile_protos_to(&["../idl/echo.proto"], &["../idl"], &out)
        .expect("generate echo.proto");
}
