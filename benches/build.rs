fn main() {
    // Our generated types for the benchmarks (and, later, the bench client's protocols).
    codec_build::compile(&["../idl/echo.thrift", "../idl/interop.thrift"])
        .expect("generate IDL types");
}
