//! The two-tier example: a gateway serving `Hello.SayHello` whose handler calls the hello
//! service (`hello_server`) behind it.
//!
//! ```text
//! cargo run --release --example hello_server &                  # the backend, :8888
//! cargo run --release --example gateway &                       # the gateway, :8889
//! cargo run --release --example hello_client -- --addr 127.0.0.1:8889
//! ```
//!
//! `--backend HOST:PORT` (default 127.0.0.1:8888), or `--resolver HOST:PORT` to find
//! `hello-service` in etcd; `--addr` is where the gateway listens; `--otlp URL` exports
//! the spans of both its sides (the call served, the call it makes within it).

use std::time::Duration;

use examples::gateway::Gateway;
use examples::gen::pb::hello::{register_hello, HelloClient};
use netpoll_rpc::client::ClientBuilder;
use netpoll_rpc::otel::{Exporter, OpenTelemetry};
use netpoll_rpc::registry::EtcdResolver;
use netpoll_rpc::server::Server;

fn flag(name: &str) -> Option<String> {
    std::env::args().skip_while(|a| a != name).nth(1)
}

fn main() {
    let telemetry = flag("--otlp").map(|url| {
        let t = Exporter::new(&url).service_name("gateway").install();
        t.unwrap_or_else(|e| {
            eprintln!("gateway: --otlp {url}: {e}");
            std::process::exit(2)
        })
    });
    let options = match flag("--resolver") {
        Some(etcd) => ClientBuilder::default().resolver(EtcdResolver::new(&etcd)),
        None => ClientBuilder::default()
            .host_ports([flag("--backend").unwrap_or_else(|| "127.0.0.1:8888".into())]),
    };
    let mut options = options.caller("gateway");
    let addr = flag("--addr").unwrap_or_else(|| "127.0.0.1:8889".to_owned());
    let mut server = Server::builder().addr(addr.as_str()).cores(1);
    if telemetry.is_some() {
        options = options.middleware(OpenTelemetry::default());
        server = server.middleware(OpenTelemetry::default());
    }
    let backend = HelloClient::new("hello-service", options).expect("client");
    let ran = register_hello(server, Gateway { backend }).run(
        Duration::from_secs(5),
        |s| println!("gateway: serving Hello on {}", s.local_addr()),
        |_| {},
    );
    drop(telemetry);
    if let Err(e) = ran {
        eprintln!("gateway: {e}");
        std::process::exit(1);
    }
}
