//! The Thrift twin of the quick start's client: calls `Hello.SayHello` over TTHeader on
//! 127.0.0.1:8888 (or `--addr HOST:PORT`) and prints the response.

use examples::gen::hello_thrift::{HelloClient, Request};

fn main() {
    let addr = std::env::args()
        .skip_while(|a| a != "--addr")
        .nth(1)
        .unwrap_or_else(|| "127.0.0.1:8888".to_owned());
    let client = HelloClient::connect(addr.as_str()).expect("client");
    match client.say_hello(Request {
        name: "Kitex".into(),
    }) {
        Ok(resp) => println!("Response: {}", &*resp.message),
        Err(e) => {
            eprintln!("hello_thrift_client: {e}");
            std::process::exit(1);
        }
    }
}
