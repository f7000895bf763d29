//! The quick start's server: `hello.proto`'s `Hello.SayHello` on 127.0.0.1:8888, over
//! Kitex Protobuf (alone or in TTHeader), as Kitex's quick start serves it.
//!
//! ```text
//! cargo run --release --example hello_server      # then, in another terminal:
//! cargo run --release --example hello_client      # prints "Response: Hello Kitex"
//! ```

use examples::gen::pb::hello::{register_hello, Hello, Request, Response};
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

fn main() {
    let addr = std::env::args()
        .skip_while(|a| a != "--addr")
        .nth(1)
        .unwrap_or_else(|| "127.0.0.1:8888".to_owned());
    // Serves until SIGTERM or Ctrl-C, then stops gracefully.
    let ran = register_hello(Server::builder().addr(addr.as_str()).cores(1), HelloImpl).run(
        Duration::from_secs(5),
        |server| println!("hello_server: serving Hello on {}", server.local_addr()),
        |_| {},
    );
    if let Err(e) = ran {
        eprintln!("hello_server: {e}");
        std::process::exit(1);
    }
}
