//! tonic's generated gRPC client against our server (`examples::echo_service`, in this
//! process): unary echo from 0 bytes to 4 MiB, many calls in flight on one connection, and
//! tonic's deadline against a slow handler (DEADLINE_EXCEEDED, and the connection goes on).

use std::time::Duration;

use bytes::Bytes;

use benches::tonic_echo::grpc;

fn rt() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
}

/// A tonic server on its own thread (a current-thread tokio runtime), serving what
/// `router` adds, until [`stop`](TonicServer::stop).
struct TonicServer {
    addr: std::net::SocketAddr,
    stop: tokio::sync::oneshot::Sender<()>,
    thread: std::thread::JoinHandle<()>,
}

impl TonicServer {
    fn start(
        router: impl FnOnce(tonic::transport::Server) -> tonic::transport::server::Router
            + Send
            + 'static,
    ) -> TonicServer {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        listener.set_nonblocking(true).unwrap();
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let thread = std::thread::spawn(move || {
            rt().block_on(async move {
                let listener = tokio::net::TcpListener::from_std(listener).unwrap();
                let incoming = tonic::transport::server::TcpIncoming::from(listener);
                router(tonic::transport::Server::builder())
                    .serve_with_incoming_shutdown(incoming, async {
                        let _ = stopped.await;
                    })
                    .await
                    .unwrap();
            });
        });
        TonicServer { addr, stop, thread }
    }

    fn stop(self) {
        let _ = self.stop.send(());
        self.thread.join().unwrap();
    }
}

async fn client(
    addr: std::net::SocketAddr,
) -> grpc::echo_client::EchoClient<tonic::transport::Channel> {
    let ch = tonic::transport::Endpoint::from_shared(format!("http://{addr}"))
        .unwrap()
        .connect()
        .await
        .expect("tonic connects to our server");
    grpc::echo_client::EchoClient::new(ch)
        .max_decoding_message_size(64 << 20)
        .max_encoding_message_size(64 << 20)
}

#[test]
fn tonic_calls_our_grpc_server() {
    let server = examples::echo_service::builder()
        .addr("127.0.0.1:0")
        .cores(1)
        .max_frame(8 << 20)
        .start()
        .unwrap();
    let addr = server.local_addr();
    rt().block_on(async move {
        let mut c = client(addr).await;
        for n in [0usize, 1, 128, 100_000, 1 << 20, 4 << 20] {
            let msg = Bytes::from((0..n).map(|i| (i * 13 % 251) as u8).collect::<Vec<u8>>());
            let r = c
                .echo(grpc::EchoRequest { msg: msg.clone() })
                .await
                .unwrap();
            assert_eq!(r.into_inner().msg, msg, "{n} bytes");
        }
        // 500 calls in flight on the one connection.
        let mut set = tokio::task::JoinSet::new();
        for i in 0..500u32 {
            let mut c = c.clone();
            set.spawn(async move {
                let msg = Bytes::from(i.to_be_bytes().to_vec());
                let r = c
                    .echo(grpc::EchoRequest { msg: msg.clone() })
                    .await
                    .unwrap();
                assert_eq!(r.into_inner().msg, msg);
            });
        }
        while let Some(r) = set.join_next().await {
            r.unwrap();
        }
    });
    server.shutdown(Duration::from_secs(1));
}

#[test]
fn tonic_deadline_against_a_slow_handler() {
    let echo = examples::echo_service::EchoHandler {
        delay: Duration::from_millis(400),
        ..Default::default()
    };
    let server = examples::echo_service::builder_with(echo)
        .addr("127.0.0.1:0")
        .cores(1)
        .start()
        .unwrap();
    let addr = server.local_addr();
    rt().block_on(async move {
        let mut c = client(addr).await;
        let mut req = tonic::Request::new(grpc::EchoRequest {
            msg: Bytes::from_static(b"late"),
        });
        req.set_timeout(Duration::from_millis(50));
        let e = c.echo(req).await.unwrap_err();
        // tonic's own timer and the server's (which answers DEADLINE_EXCEEDED at the
        // deadline it was sent) race: tonic calls its own expiry CANCELLED.
        assert!(
            matches!(
                e.code(),
                tonic::Code::DeadlineExceeded | tonic::Code::Cancelled
            ),
            "{e:?}"
        );
        let r = c
            .echo(grpc::EchoRequest {
                msg: Bytes::from_static(b"in time"),
            })
            .await
            .unwrap();
        assert_eq!(&r.into_inner().msg[..], b"in time");
    });
    server.shutdown(Duration::from_secs(1));
}

/// tonic's generated client of `idl/stream.proto`, every shape, against our server:
/// thousands of messages each way, interleaved replies, an error status, and a stream
/// dropped by the client while the server still sends.
#[test]
fn tonic_streams_every_shape_with_our_server() {
    use benches::tonic_echo::stream::{streamer_client::StreamerClient, Chunk, RepeatRequest};
    let server = examples::echo_service::builder()
        .addr("127.0.0.1:0")
        .cores(1)
        .max_frame(8 << 20)
        .start()
        .unwrap();
    let addr = server.local_addr();
    rt().block_on(async move {
        let ch = tonic::transport::Endpoint::from_shared(format!("http://{addr}"))
            .unwrap()
            .connect()
            .await
            .unwrap();
        let mut c = StreamerClient::new(ch).max_decoding_message_size(16 << 20);
        // Server streaming.
        let msg = Bytes::from_static(b"tonic repeat");
        let mut s = c
            .repeat(RepeatRequest {
                msg: msg.clone(),
                count: 10_000,
            })
            .await
            .unwrap()
            .into_inner();
        let mut n = 0;
        while let Some(m) = s.message().await.unwrap() {
            assert_eq!(m.msg, msg);
            n += 1;
        }
        assert_eq!(n, 10_000);
        let e = c
            .repeat(RepeatRequest { msg, count: -5 })
            .await
            .map(|_| ())
            .unwrap_err();
        assert_eq!(e.code(), tonic::Code::InvalidArgument, "{e:?}");
        // Client streaming.
        let parts: Vec<Bytes> = (0..5000).map(|i| Bytes::from(format!("{i},"))).collect();
        let joined: Vec<u8> = parts.iter().flat_map(|b| b.iter().copied()).collect();
        let reqs = tokio_stream::iter(parts.into_iter().map(|msg| Chunk { msg }));
        let r = c.concat(reqs).await.unwrap().into_inner();
        assert_eq!(r.msg, joined);
        // Bidirectional, in lock step: each reply read before the next message is sent.
        let (tx, rx) = tokio::sync::mpsc::channel::<Chunk>(1);
        let mut replies = c
            .chat(tokio_stream::wrappers::ReceiverStream::new(rx))
            .await
            .unwrap()
            .into_inner();
        for i in 0..500u32 {
            let msg = Bytes::from(i.to_be_bytes().to_vec());
            tx.send(Chunk { msg: msg.clone() }).await.unwrap();
            assert_eq!(replies.message().await.unwrap().unwrap().msg, msg);
        }
        drop(tx);
        assert!(replies.message().await.unwrap().is_none(), "ends with OK");
        // A large server stream dropped after a few messages: the connection goes on.
        let mut s = c
            .repeat(RepeatRequest {
                msg: Bytes::from(vec![7u8; 10_000]),
                count: 1_000_000,
            })
            .await
            .unwrap()
            .into_inner();
        for _ in 0..10 {
            s.message().await.unwrap().unwrap();
        }
        drop(s);
        let r = c
            .concat(tokio_stream::iter(vec![Chunk {
                msg: Bytes::from_static(b"still here"),
            }]))
            .await
            .unwrap();
        assert_eq!(&r.into_inner().msg[..], b"still here");
    });
    server.shutdown(Duration::from_secs(1));
}

/// A tonic server of `echo.proto` for our client's tests: echoes, except that a message
/// `status:N` is answered with gRPC status N, `sleep` replies after 500 ms, and the
/// request's `rpc-transit-tenant` metadata comes back as `x-tenant` (a header) and
/// `x-tenant-trailer` (a trailer is not reachable through tonic's unary API, so both are
/// headers).
#[derive(Debug, Default)]
struct Probe;

#[tonic::async_trait]
impl grpc::echo_server::Echo for Probe {
    async fn echo(
        &self,
        req: tonic::Request<grpc::EchoRequest>,
    ) -> Result<tonic::Response<grpc::EchoReply>, tonic::Status> {
        let tenant = req.metadata().get("rpc-transit-tenant").cloned();
        let msg = req.into_inner().msg;
        if let Some(code) = msg.strip_prefix(b"status:") {
            let code: i32 = std::str::from_utf8(code).unwrap().parse().unwrap();
            return Err(tonic::Status::new(
                tonic::Code::from_i32(code),
                format!("status {code} on purpose"),
            ));
        }
        if &msg[..] == b"sleep" {
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
        let mut reply = tonic::Response::new(grpc::EchoReply { msg });
        if let Some(t) = tenant {
            reply.metadata_mut().insert("x-tenant", t);
        }
        Ok(reply)
    }
}

#[test]
fn our_grpc_client_calls_tonic() {
    use examples::gen::pb::echo::{EchoClient, EchoRequest};
    use netpoll_rpc::client::ClientBuilder;
    let server = TonicServer::start(|mut b| {
        b.add_service(
            grpc::echo_server::EchoServer::new(Probe)
                .max_decoding_message_size(64 << 20)
                .max_encoding_message_size(64 << 20),
        )
    });
    let addr = server.addr;
    let c = EchoClient::from_builder(ClientBuilder::new(addr).grpc().max_frame(16 << 20)).unwrap();
    for n in [0usize, 1, 128, 100_000, 1 << 20, 4 << 20] {
        let msg = Bytes::from((0..n).map(|i| (i * 7 % 251) as u8).collect::<Vec<u8>>());
        let r = c.echo(EchoRequest { msg: msg.clone() }).unwrap();
        assert_eq!(r.msg, msg, "{n} bytes");
    }
    // Every gRPC code comes back as its kind, with its message.
    for (code, kind) in [
        (3, netpoll_rpc::ErrorKind::InvalidArgument),
        (5, netpoll_rpc::ErrorKind::NotFound),
        (7, netpoll_rpc::ErrorKind::PermissionDenied),
        (12, netpoll_rpc::ErrorKind::UnknownMethod),
        (14, netpoll_rpc::ErrorKind::Unavailable),
        (16, netpoll_rpc::ErrorKind::Unauthenticated),
    ] {
        let e = c
            .echo(EchoRequest {
                msg: Bytes::from(format!("status:{code}")),
            })
            .unwrap_err();
        assert_eq!(e.kind(), kind, "{e}");
        assert!(
            e.to_string().contains(&format!("status {code} on purpose")),
            "{e}"
        );
    }
    // An unknown method: tonic's UNIMPLEMENTED.
    let e = c
        .client()
        .call::<_, examples::gen::pb::echo::EchoReply>("Nope", EchoRequest::default())
        .unwrap_err();
    assert_eq!(e.kind(), netpoll_rpc::ErrorKind::UnknownMethod, "{e}");
    // Metadata both ways: a transient value out, the server's reply metadata back.
    let (r, back) = c
        .with_transient("tenant", "acme")
        .client()
        .call_meta::<_, examples::gen::pb::echo::EchoReply>(
            "Echo",
            EchoRequest {
                msg: Bytes::from_static(b"meta"),
            },
        )
        .unwrap();
    assert_eq!(&r.msg[..], b"meta");
    let tenant: Vec<_> = back.iter().filter(|(k, _)| *k == "x-tenant").collect();
    assert_eq!(tenant, vec![("x-tenant", &b"acme"[..])], "{back:?}");
    // A deadline: the call times out, tonic sees it cancelled, the connection goes on.
    let e = c
        .with_timeout(Some(Duration::from_millis(100)))
        .echo(EchoRequest {
            msg: Bytes::from_static(b"sleep"),
        })
        .unwrap_err();
    assert_eq!(e.kind(), netpoll_rpc::ErrorKind::DeadlineExceeded, "{e}");
    // 500 calls in flight on the one connection.
    let (tx, rx) = std::sync::mpsc::channel();
    for i in 0..500u32 {
        let tx = tx.clone();
        let msg = Bytes::from(i.to_be_bytes().to_vec());
        c.echo_with(EchoRequest { msg: msg.clone() }, move |r| {
            tx.send(r.map(|r| r.msg == msg)).unwrap();
        });
    }
    for _ in 0..500 {
        assert!(rx.recv_timeout(Duration::from_secs(10)).unwrap().unwrap());
    }
    server.stop();
}

#[test]
fn our_gzip_requests_with_tonic() {
    use examples::gen::pb::echo::{EchoClient, EchoRequest};
    use examples::gen::pb::streamer::{Chunk, StreamerClient};
    use netpoll_rpc::client::ClientBuilder;
    use tonic::codec::CompressionEncoding::Gzip;
    // tonic takes and sends gzip only when told to: the proof that what we send is.
    let server = TonicServer::start(|mut b| {
        b.add_service(
            grpc::echo_server::EchoServer::new(Probe)
                .accept_compressed(Gzip)
                .send_compressed(Gzip)
                .max_decoding_message_size(64 << 20)
                .max_encoding_message_size(64 << 20),
        )
        .add_service(
            benches::tonic_echo::stream::streamer_server::StreamerServer::new(TonicStreamer)
                .accept_compressed(Gzip)
                .send_compressed(Gzip),
        )
    });
    let gz = || ClientBuilder::new(server.addr).grpc().send_gzip(true);
    let c = EchoClient::from_builder(gz().max_frame(16 << 20)).unwrap();
    for n in [0usize, 1, 100_000, 4 << 20] {
        let msg = Bytes::from((0..n).map(|i| (i % 7) as u8).collect::<Vec<u8>>());
        assert_eq!(
            c.echo(EchoRequest { msg: msg.clone() }).unwrap().msg,
            msg,
            "{n} B"
        );
    }
    let s = StreamerClient::from_builder(gz()).unwrap();
    let st = s.concat().unwrap();
    let mut want = Vec::new();
    for i in 0..2000 {
        let p = format!("{i},");
        want.extend_from_slice(p.as_bytes());
        st.send(&Chunk { msg: p.into() }).unwrap();
    }
    assert_eq!(&st.finish().unwrap().msg[..], &want[..]);
    let st = s.chat().unwrap();
    for i in 0..200 {
        let m = Bytes::from(format!("gzip {i}").repeat(50));
        st.send(&Chunk { msg: m.clone() }).unwrap();
        assert_eq!(st.recv().unwrap().unwrap().msg, m);
    }
    st.close_send();
    assert!(st.recv().unwrap().is_none());
    server.stop();
    // A tonic server that does not accept gzip refuses our compressed requests, and takes
    // the same client's plain ones.
    let plain =
        TonicServer::start(|mut b| b.add_service(grpc::echo_server::EchoServer::new(Probe)));
    let c =
        EchoClient::from_builder(ClientBuilder::new(plain.addr).grpc().send_gzip(true)).unwrap();
    let e = c.echo(EchoRequest { msg: "z".into() }).unwrap_err();
    assert_eq!(e.kind(), netpoll_rpc::ErrorKind::UnknownMethod, "{e}");
    assert!(e.to_string().contains("gzip"), "{e}");
    let c = EchoClient::from_builder(ClientBuilder::new(plain.addr).grpc()).unwrap();
    assert_eq!(
        &c.echo(EchoRequest { msg: "z".into() }).unwrap().msg[..],
        b"z"
    );
    plain.stop();
}

/// tonic's server of `stream.proto`, as its comments say.
#[derive(Debug, Default)]
struct TonicStreamer;

type BoxStream<T> =
    std::pin::Pin<Box<dyn tokio_stream::Stream<Item = Result<T, tonic::Status>> + Send>>;

#[tonic::async_trait]
impl benches::tonic_echo::stream::streamer_server::Streamer for TonicStreamer {
    type RepeatStream = BoxStream<benches::tonic_echo::stream::Chunk>;
    type ChatStream = BoxStream<benches::tonic_echo::stream::Chunk>;

    async fn repeat(
        &self,
        req: tonic::Request<benches::tonic_echo::stream::RepeatRequest>,
    ) -> Result<tonic::Response<Self::RepeatStream>, tonic::Status> {
        let r = req.into_inner();
        if r.count < 0 {
            return Err(tonic::Status::invalid_argument(
                "count must not be negative",
            ));
        }
        let chunk = benches::tonic_echo::stream::Chunk { msg: r.msg };
        let items = (0..r.count).map(move |_| Ok(chunk.clone()));
        Ok(tonic::Response::new(Box::pin(tokio_stream::iter(items))))
    }

    async fn concat(
        &self,
        req: tonic::Request<tonic::Streaming<benches::tonic_echo::stream::Chunk>>,
    ) -> Result<tonic::Response<benches::tonic_echo::stream::Chunk>, tonic::Status> {
        let mut s = req.into_inner();
        let mut all = Vec::new();
        while let Some(c) = s.message().await? {
            all.extend_from_slice(&c.msg);
        }
        Ok(tonic::Response::new(benches::tonic_echo::stream::Chunk {
            msg: all.into(),
        }))
    }

    async fn chat(
        &self,
        req: tonic::Request<tonic::Streaming<benches::tonic_echo::stream::Chunk>>,
    ) -> Result<tonic::Response<Self::ChatStream>, tonic::Status> {
        Ok(tonic::Response::new(Box::pin(req.into_inner())))
    }

    async fn sleep(
        &self,
        req: tonic::Request<benches::tonic_echo::stream::SleepRequest>,
    ) -> Result<tonic::Response<benches::tonic_echo::stream::Chunk>, tonic::Status> {
        let r = req.into_inner();
        tokio::time::sleep(Duration::from_millis(r.ms.max(0) as u64)).await;
        Ok(tonic::Response::new(benches::tonic_echo::stream::Chunk {
            msg: r.msg,
        }))
    }
}

#[test]
fn our_streaming_client_with_tonic() {
    use examples::gen::pb::streamer::{Chunk, RepeatRequest, StreamerClient};
    use netpoll_rpc::client::ClientBuilder;
    let server = TonicServer::start(|mut b| {
        b.add_service(
            benches::tonic_echo::stream::streamer_server::StreamerServer::new(TonicStreamer),
        )
    });
    let addr = server.addr;
    let c = StreamerClient::from_builder(ClientBuilder::new(addr).grpc()).unwrap();
    let s = c
        .repeat(RepeatRequest {
            msg: Bytes::from_static(b"tonic"),
            count: 5000,
        })
        .unwrap();
    let mut n = 0;
    while let Some(m) = s.recv().unwrap() {
        assert_eq!(&m.msg[..], b"tonic");
        n += 1;
    }
    assert_eq!(n, 5000);
    let e = c
        .repeat(RepeatRequest {
            msg: Bytes::new(),
            count: -1,
        })
        .unwrap()
        .recv()
        .unwrap_err();
    assert_eq!(e.kind(), netpoll_rpc::ErrorKind::InvalidArgument, "{e}");
    let s = c.concat().unwrap();
    let mut want = Vec::new();
    for i in 0..3000 {
        let p = format!("{i},");
        want.extend_from_slice(p.as_bytes());
        s.send(&Chunk { msg: p.into() }).unwrap();
    }
    assert_eq!(&s.finish().unwrap().msg[..], &want[..]);
    let s = c.chat().unwrap();
    for i in 0..300 {
        let m = Bytes::from(format!("step {i}"));
        s.send(&Chunk { msg: m.clone() }).unwrap();
        assert_eq!(s.recv().unwrap().unwrap().msg, m);
    }
    s.close_send();
    assert!(s.recv().unwrap().is_none());
    server.stop();
}
