fn main() {
    // Our generated types for the benchmarks (and, later, the bench client's protocols).
    netpoll_codec_build::compile(&["../idl/echo.thrift", "../idl/interop.thrift"])
        .expect("generate IDL types");
    // echo.proto through prost, without protoc; in its own directory (its package is
    // also called `echo`).
    let out = std::path::PathBuf::from(
        std::env::var_os("OUT_DIR").expect("OUT_DIR is set for build scripts"),
    )
    .join("pb");
    netpoll_codec_build::compile_protos_to(&["../idl/echo.proto"], &["../idl"], &out)
        .expect("generate echo.proto");
    // tonic's client and server for the same echo.proto (the gRPC comparison), also
    // without protoc.
    let tonic_out = out.with_file_name("tonic");
    std::fs::create_dir_all(&tonic_out).expect("create OUT_DIR/tonic");
    let fds = protox::compile(["../idl/echo.proto", "../idl/stream.proto"], ["../idl"])
        .expect("parse echo.proto and stream.proto");
    tonic_prost_build::configure()
        .bytes(".")
        .out_dir(&tonic_out)
        .compile_fds(fds)
        .expect("generate tonic echo");
}
