//! The Thrift twin of the quick start: `hello.thrift`'s `Hello.SayHello` on
//! 127.0.0.1:8888, served over every Thrift transport (TTHeader, Framed, Buffered; binary
//! or compact).
//!
//! ```text
//! cargo run --release --example hello_thrift_server   # then, in another terminal:
//! cargo run --release --example hello_thrift_client   # prints "Response: Hello Kitex"
//! ```

use examples::gen::hello_thrift::{register_hello, Hello, Request, Response};
use netpoll_rpc::server::Server;
use netpoll_rpc::{CallContext, Reply};

struct HelloImpl;

impl Hello for HelloImpl {
    fn say_hello(&self, _ctx: &CallContext<'_>, req: Request) -> Reply<Response> {
        Reply::ok(Response {
            message: format!("Hello {}", &*req.name).into(),
        })
    }
}

fn main() {
    let addr = std::env::args()
        .skip_while(|a| a != "--addr")
        .nth(1)
        .unwrap_or_else(|| "127.0.0.1:8888".to_owned());
    let server =
        match register_hello(Server::builder().addr(addr.as_str()).cores(1), HelloImpl).start() {
            Ok(s) => s,
            Err(e) => {
                eprintln!("hello_thrift_server: {e}");
                std::process::exit(1);
            }
        };
    println!(
        "hello_thrift_server: serving Hello on {}",
        server.local_addr()
    );
    loop {
        std::thread::park();
    }
}
