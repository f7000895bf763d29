fn main() {
    // The generated decoders are fuzzed too: generate them the way users do.
    netpoll_codec_build::compile(&["../../idl/interop.thrift"]).expect("generate interop.thrift");
}
