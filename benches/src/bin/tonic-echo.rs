//! tonic's gRPC server for `idl/echo.proto`, on a current-thread tokio runtime (one core,
//! as our server runs in the comparisons), so that `rpc-bench --protocol grpc` and other
//! gRPC clients can load it exactly as they load ours.
//!
//! ```text
//! taskset -c 0 target/release/tonic-echo --addr 127.0.0.1:9800
//! ```

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let addr = args
        .iter()
        .position(|a| a == "--addr")
        .and_then(|i| args.get(i + 1))
        .cloned()
        .unwrap_or_else(|| "127.0.0.1:9800".into());
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("tokio runtime");
    rt.block_on(async move {
        let listener = tokio::net::TcpListener::bind(&addr)
            .await
            .unwrap_or_else(|e| {
                eprintln!("tonic-echo: {addr}: {e}");
                std::process::exit(1)
            });
        println!(
            "tonic-echo: listening on {}",
            listener.local_addr().unwrap()
        );
        benches::tonic_echo::serve(listener, std::future::pending())
            .await
            .expect("tonic server");
    });
}
