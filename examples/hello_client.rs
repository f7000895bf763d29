//! The quick start's client: a client of `hello-service`, whose instance is at
//! 127.0.0.1:8888, calls `Hello.SayHello` and prints the response. Start `hello_server`
//! first (or pass `--addr HOST:PORT`).

use examples::gen::pb::hello::{HelloClient, Request};
use netpoll_rpc::client::ClientBuilder;

fn main() {
    let addr = std::env::args()
        .skip_while(|a| a != "--addr")
        .nth(1)
        .unwrap_or_else(|| "127.0.0.1:8888".to_owned());
    let client = HelloClient::new(
        "hello-service",
        ClientBuilder::default().host_ports([addr.as_str()]),
    )
    .expect("client");
    match client.say_hello(Request {
        name: "Kitex".into(),
    }) {
        Ok(resp) => println!("Response: {}", resp.message),
        Err(e) => {
            eprintln!("hello_client: {e}");
            std::process::exit(1);
        }
    }
}
