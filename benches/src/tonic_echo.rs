//! tonic's gRPC server for `idl/echo.proto` (tonic-prost's generated code), for the
//! same-run comparisons: the `tonic-echo` binary and `benches/rpc_vs_tonic.rs`.

#[allow(missing_docs, clippy::all)]
pub mod grpc {
    include!(concat!(env!("OUT_DIR"), "/tonic/echo.rs"));
}

/// tonic's client and server of `idl/stream.proto` (every gRPC call shape), for the
/// streaming interop tests.
pub mod stream {
    #![allow(missing_docs, clippy::all)]
    include!(concat!(env!("OUT_DIR"), "/tonic/streamer.rs"));
}

/// Echoes the request's message.
#[derive(Debug, Clone, Copy, Default)]
pub struct EchoSvc;

#[tonic::async_trait]
impl grpc::echo_server::Echo for EchoSvc {
    async fn echo(
        &self,
        req: tonic::Request<grpc::EchoRequest>,
    ) -> Result<tonic::Response<grpc::EchoReply>, tonic::Status> {
        Ok(tonic::Response::new(grpc::EchoReply {
            msg: req.into_inner().msg,
        }))
    }
}

/// Serves [`EchoSvc`] on `listener` (messages up to 64 MiB) until `stop` resolves.
pub async fn serve(
    listener: tokio::net::TcpListener,
    stop: impl std::future::Future<Output = ()>,
) -> Result<(), tonic::transport::Error> {
    let incoming = tonic::transport::server::TcpIncoming::from(listener).with_nodelay(Some(true));
    tonic::transport::Server::builder()
        .add_service(
            grpc::echo_server::EchoServer::new(EchoSvc)
                .max_decoding_message_size(64 << 20)
                .max_encoding_message_size(64 << 20),
        )
        .serve_with_incoming_shutdown(incoming, stop)
        .await
}
