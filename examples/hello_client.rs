//! The quick start's client: a client of `hello-service`, whose instance is at
//! 127.0.0.1:8888, calls `Hello.SayHello` and prints the response. Start `hello_server`
//! first (or pass `--addr HOST:PORT`). With `--resolver HOST:PORT` it finds the service
//! in etcd instead (see `hello_server --registry`). With `--otlp http://HOST:4318` it runs
//! the OpenTelemetry middleware and exports its span there (see `hello_server --otlp`).

use examples::gen::pb::hello::{HelloClient, Request};
use netpoll_rpc::balance::P2c;
use netpoll_rpc::client::ClientBuilder;
use netpoll_rpc::otel::{Exporter, OpenTelemetry};
use netpoll_rpc::registry::EtcdResolver;

fn flag(name: &str) -> Option<String> {
    std::env::args().skip_while(|a| a != name).nth(1)
}

fn main() {
    let options = match flag("--resolver") {
        // The advanced part: find `hello-service` in etcd, balance with p2c.
        Some(etcd) => ClientBuilder::default()
            .resolver(EtcdResolver::new(&etcd))
            .load_balancer(P2c),
        None => {
            let addr = flag("--addr").unwrap_or_else(|| "127.0.0.1:8888".to_owned());
            ClientBuilder::default().host_ports([addr])
        }
    };
    // Observability: the call's span, exported over OTLP/HTTP (`--otlp URL`).
    let telemetry = flag("--otlp").map(|url| {
        let t = Exporter::new(&url).service_name("hello-client").install();
        t.unwrap_or_else(|e| {
            eprintln!("hello_client: --otlp {url}: {e}");
            std::process::exit(2)
        })
    });
    let options = match telemetry {
        Some(_) => options.middleware(OpenTelemetry::default()),
        None => options,
    };
    let client = HelloClient::new("hello-service", options).expect("client");
    let result = client.say_hello(Request {
        name: "Kitex".into(),
    });
    // The span leaves before the process does.
    drop(telemetry);
    match result {
        Ok(resp) => println!("Response: {}", resp.message),
        Err(e) => {
            eprintln!("hello_client: {e}");
            std::process::exit(1);
        }
    }
}
