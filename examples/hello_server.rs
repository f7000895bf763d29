//! The quick start's server: `hello.proto`'s `Hello.SayHello` on 127.0.0.1:8888, over
//! Kitex Protobuf (alone or in TTHeader), as Kitex's quick start serves it.
//!
//! ```text
//! cargo run --release --example hello_server      # then, in another terminal:
//! cargo run --release --example hello_client      # prints "Response: Hello Kitex"
//! ```
//!
//! The advanced part, with etcd at 127.0.0.1:2379: `hello_server --registry
//! 127.0.0.1:2379` registers as `hello-service`, and `hello_client --resolver
//! 127.0.0.1:2379` finds it there, balancing with p2c. With `--otlp http://HOST:4318` on
//! both, server and client run the OpenTelemetry middleware and export their spans to
//! that collector: one call, one linked trace.

use examples::gen::pb::hello::{register_hello, Hello, Request, Response};
use netpoll_rpc::otel::{Exporter, OpenTelemetry};
use netpoll_rpc::registry::EtcdRegistry;
use netpoll_rpc::server::Server;
use netpoll_rpc::{CallContext, Reply};
use std::time::Duration;

struct HelloImpl;

impl Hello for HelloImpl {
    fn say_hello(&self, _ctx: &CallContext<'_>, req: Request) -> Reply<Response> {
        Reply::ok(Response {
            message: format!("Hello {}", req.name),
        })
    }
}

fn flag(name: &str) -> Option<String> {
    std::env::args().skip_while(|a| a != name).nth(1)
}

fn main() {
    let addr = flag("--addr").unwrap_or_else(|| "127.0.0.1:8888".to_owned());
    let mut builder = Server::builder().addr(addr.as_str()).cores(1);
    // Observability: spans of every call, exported over OTLP/HTTP (`--otlp URL`).
    let telemetry = flag("--otlp").map(|url| {
        let t = Exporter::new(&url).service_name("hello-service").install();
        t.unwrap_or_else(|e| {
            eprintln!("hello_server: --otlp {url}: {e}");
            std::process::exit(2)
        })
    });
    if telemetry.is_some() {
        builder = builder.middleware(OpenTelemetry::default());
    }
    // The advanced part: register in etcd as `hello-service` (`--registry 127.0.0.1:2379`).
    if let Some(etcd) = flag("--registry") {
        builder = builder.registry(EtcdRegistry::new(&etcd), "hello-service");
    }
    // Serves until SIGTERM or Ctrl-C, then stops gracefully (deregistering first).
    let ran = register_hello(builder, HelloImpl).run(
        Duration::from_secs(5),
        |server| println!("hello_server: serving Hello on {}", server.local_addr()),
        |_| {},
    );
    drop(telemetry);
    if let Err(e) = ran {
        eprintln!("hello_server: {e}");
        std::process::exit(1);
    }
}
