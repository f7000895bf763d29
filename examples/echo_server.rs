//! The echo server every benchmark and interop test uses: `idl/echo.thrift` and
//! `idl/interop.thrift` (Thrift over TTHeader, Framed or Buffered, binary or compact) and
//! `idl/echo.proto` (Kitex Protobuf) on one port.
//!
//! ```text
//! cargo build --release --examples
//! target/release/examples/echo_server --addr 127.0.0.1:9000 --cores 1 [--cpus 0] [--busy-poll-us N]
//! ```

use std::time::Duration;

fn flag(args: &[String], name: &str) -> Option<String> {
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1).cloned())
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if args.iter().any(|a| a == "--help" || a == "-h") {
        println!(
            "usage: echo_server [--addr HOST:PORT] [--cores N] [--cpus 0,1] [--busy-poll-us N]"
        );
        return;
    }
    let addr = flag(&args, "--addr").unwrap_or_else(|| "127.0.0.1:9000".to_owned());
    let parse = |name: &str| -> Option<usize> {
        flag(&args, name).map(|v| {
            v.parse().unwrap_or_else(|_| {
                eprintln!("echo_server: {name} wants a number, got {v:?}");
                std::process::exit(2)
            })
        })
    };
    let mut b = examples::echo_service::builder().addr(addr.as_str());
    if let Some(n) = parse("--cores") {
        b = b.cores(n);
    }
    if let Some(cpus) = flag(&args, "--cpus") {
        let cpus: Result<Vec<usize>, _> = cpus.split(',').map(str::parse).collect();
        match cpus {
            Ok(c) if !c.is_empty() => b = b.cpus(c),
            _ => {
                eprintln!("echo_server: --cpus wants a list like 0,1");
                std::process::exit(2)
            }
        }
    }
    if let Some(us) = parse("--busy-poll-us") {
        b = b.busy_poll(Duration::from_micros(us as u64));
    }
    let server = match b.start() {
        Ok(s) => s,
        Err(e) => {
            eprintln!("echo_server: {e}");
            std::process::exit(1);
        }
    };
    println!("echo_server: listening on {}", server.local_addr());
    loop {
        std::thread::park();
    }
}
