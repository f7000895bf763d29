//! The services behind the examples and the end-to-end tests: generated code for the
//! shared IDL (`idl/echo.thrift`, `idl/interop.thrift`, `idl/echo.proto`) and the quick
//! start (`examples/idl/hello.proto` and its Thrift twin), the echo server's handlers, and
//! small implementations of the extension points ([`extensions`]).
#![forbid(unsafe_code)]
#![deny(missing_docs, missing_debug_implementations)]

pub mod echo_service;
pub mod extensions;
pub mod gateway;

/// Code generated from the IDL by `codec-build` (see `build.rs`).
#[allow(missing_docs, clippy::all)]
pub mod gen {
    netpoll_rpc::include_thrift!("echo");
    netpoll_rpc::include_thrift!("interop");
    netpoll_rpc::include_thrift!("hello_thrift");

    /// Protobuf packages.
    pub mod pb {
        /// Package `echo` (`idl/echo.proto`).
        pub mod echo {
            netpoll_rpc::include_proto!("pb/echo");
        }
        /// Package `streamer` (`idl/stream.proto`): its unary `Sleep` so far.
        pub mod streamer {
            netpoll_rpc::include_proto!("pb/streamer");
        }
        /// Package `hello` (`examples/idl/hello.proto`).
        pub mod hello {
            netpoll_rpc::include_proto!("pb/hello");
        }
    }
}
