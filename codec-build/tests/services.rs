//! Compiles the generated servers and clients in `tests/golden/rpc/` (a Thrift service
//! that extends another, across included files, and a Protobuf service) against the real
//! `rpc` crate, and runs them: every method served and called, inherited ones included.
#![forbid(unsafe_code)]

include!("golden/rpc/shared.rs");
include!("golden/rpc/kitchen_sink.rs");

/// The Protobuf package `echo`.
pub mod pb {
    include!("golden/rpc/pb_echo.rs");
}

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use kitchen_sink::{Everything, Node, NotFound, Store, StoreClient, StoreFetchError};
use netpoll_rpc::client::ClientBuilder;
use netpoll_rpc::{CallContext, CallError, Reply};

#[derive(Default)]
struct MyStore {
    logged: Arc<AtomicUsize>,
}

impl Store for MyStore {
    fn ping(&self, _ctx: &CallContext<'_>) -> Reply<()> {
        Reply::ok(())
    }

    fn fetch(
        &self,
        _ctx: &CallContext<'_>,
        id: i64,
        _min_level: Option<shared::Level>,
    ) -> Reply<Everything, StoreFetchError> {
        if id == 0 {
            return Reply::err(StoreFetchError::Missing(NotFound {
                what: "zero".into(),
            }));
        }
        Reply::ok(Everything {
            id,
            ..Default::default()
        })
    }

    fn log(&self, _ctx: &CallContext<'_>, _line: netpoll_codec::ByteString) {
        self.logged.fetch_add(1, Ordering::SeqCst);
    }

    fn trees(&self, _ctx: &CallContext<'_>) -> Reply<Vec<Node>> {
        Reply::ok(vec![Node::default()])
    }
}

struct MyEcho;

impl pb::Echo for MyEcho {
    fn echo(&self, _ctx: &CallContext<'_>, req: pb::EchoRequest) -> Reply<pb::EchoReply> {
        Reply::ok(pb::EchoReply { msg: req.msg })
    }
}

#[test]
fn generated_servers_and_clients_serve_and_call_every_method() {
    let store = MyStore::default();
    let logged = store.logged.clone();
    let server = kitchen_sink::register_store(
        pb::register_echo(netpoll_rpc::server::Server::builder(), MyEcho),
        store,
    )
    .addr("127.0.0.1:0")
    .cores(1)
    .start()
    .expect("server");
    let c = StoreClient::connect(server.local_addr()).expect("client");
    // Inherited from `Base` through `extends`.
    c.ping().expect("ping");
    assert_eq!(c.fetch(7, None).expect("fetch").id, 7);
    match c.fetch(0, Some(shared::Level::HIGH)) {
        Err(CallError::Declared(StoreFetchError::Missing(e))) => assert_eq!(&*e.what, "zero"),
        other => panic!("expected the declared exception, got {other:?}"),
    }
    assert_eq!(c.trees().expect("trees").len(), 1);
    c.log("a line".into());
    c.ping().expect("ping after the oneway");
    assert_eq!(logged.load(Ordering::SeqCst), 1);

    let pb = pb::EchoClient::from_builder(ClientBuilder::new(server.local_addr())).expect("pb");
    let reply = pb
        .echo(pb::EchoRequest {
            msg: bytes::Bytes::from_static(b"proto"),
        })
        .expect("echo");
    assert_eq!(&reply.msg[..], b"proto");
}
