//! Generates the services of the examples: the shared echo and interop IDL (Thrift and
//! Protobuf) and the quick start's hello service (Protobuf and its Thrift twin).
use std::path::PathBuf;

fn main() {
    netpoll_codec_build::Config::new()
        .services("::netpoll_rpc")
        .compile(&[
            "../idl/echo.thrift",
            "../idl/interop.thrift",
            "idl/hello.thrift",
        ])
        .expect("generate Thrift services");
    let out = PathBuf::from(std::env::var_os("OUT_DIR").expect("OUT_DIR is set for build scripts"));
    // Protobuf packages `echo`, `streamer` and `hello`, kept apart from the Thrift
    // modules. (`streamer`'s streaming methods are not generated yet: only `Sleep`.)
    netpoll_codec_build::compile_proto_services(
        &[
            "../idl/echo.proto",
            "../idl/stream.proto",
            "idl/hello.proto",
        ],
        &["../idl", "idl"],
        "::netpoll_rpc",
        Some(&out.join("pb")),
    )
    .expect("generate Protobuf services");
}
