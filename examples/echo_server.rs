//! The echo server every benchmark, interop and hostile-peer test uses: `idl/echo.thrift`
//! and `idl/interop.thrift` (Thrift over TTHeader, Framed or Buffered, binary or compact)
//! and `idl/echo.proto` (Kitex Protobuf) on one port.
//!
//! ```text
//! cargo build --release -p examples --bin echo_server
//! target/release/echo_server --addr 127.0.0.1:9000 --cores 1 [--cpus 0] [--busy-poll-us N]
//! ```
//!
//! Every bound of the server can be set from the command line (`--help`), so that tests
//! can run it as a separate process and act on it from outside, as a peer would.

use std::time::Duration;

use netpoll_rpc::client::ClientBuilder;
use netpoll_rpc::otel::{Exporter, OpenTelemetry, Sampler};

const USAGE: &str =
    "usage: echo_server [--addr HOST:PORT] [--unix PATH] [--cores N] [--cpus 0,1] [--busy-poll-us N]
       [--buffer-count N] [--max-connections N] [--max-frame BYTES] [--max-in-flight N] [--high-water BYTES]
       [--idle-timeout-ms MS] [--read-timeout-ms MS] [--write-timeout-ms MS (0: none)]
       [--limit-qps N] [--limit-concurrency N]
       [--registry etcd://HOST:PORT --service NAME [--weight N] [--advertise HOST:PORT]
        [--lease-ttl-s N] [--deregister-delay-ms MS]]
       [--echo-delay-ms MS] [--echo-fail]   (a slow or failing instance, for tests)
       [--echo-log]            (log every Echo.echo call, at info, for tests)
       [--echo-peer-cert]      (Echo.echo of \"peer-certificate\" answers the client's
                                TLS certificate, DER, for tests)
       [--metrics HOST:PORT]   (Prometheus text format at /metrics)
       (--unix PATH: also serve on the Unix domain socket PATH, removed at exit;
        NETPOLL_BACKEND=io_uring|epoll|auto chooses the I/O backend)
       [--forward HOST:PORT]   (relay every Echo.echo call to the echo server there)
       [--tls-cert FILE --tls-key FILE [--tls-client-ca FILE [--tls-client-optional]]
        [--tls-allow-plaintext] [--tls-handshake-timeout-ms MS]]
                               (every protocol over TLS; PEM files; mTLS against the CA
                                bundle; plain text refused unless allowed)
       [--otlp http(s)://HOST:PORT [--otlp-sample RATIO] [--otlp-tls-ca FILE]]
                               (server spans, and client spans of relayed calls, exported
                                over OTLP/HTTP as service --service NAME; parent-based
                                sampling, RATIO of new traces)";

fn flag(args: &[String], name: &str) -> Option<String> {
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1).cloned())
}

/// The server's TLS settings from `--tls-*`, if any; exits with a clear message when a
/// file cannot be used.
fn tls_acceptor(args: &[String]) -> Option<netpoll_rpc::tls::TlsAcceptor> {
    let (cert, key) = match (flag(args, "--tls-cert"), flag(args, "--tls-key")) {
        (None, None) => return None,
        (Some(c), Some(k)) => (c, k),
        _ => {
            eprintln!("echo_server: --tls-cert and --tls-key go together\n{USAGE}");
            std::process::exit(2)
        }
    };
    let fail = |e: std::io::Error| -> ! {
        eprintln!("echo_server: TLS: {e}");
        std::process::exit(2)
    };
    // ALPN `h2` for gRPC clients, which require it; clients that offer none go on.
    let mut b = netpoll_rpc::tls::TlsAcceptor::builder(&cert, &key)
        .unwrap_or_else(|e| fail(e))
        .alpn(["h2"]);
    if let Some(ca) = flag(args, "--tls-client-ca") {
        b = b
            .client_ca(&ca)
            .unwrap_or_else(|e| fail(e))
            .client_cert_optional(args.iter().any(|a| a == "--tls-client-optional"));
    }
    let mut acceptor = b
        .build()
        .unwrap_or_else(|e| fail(e))
        .allow_plaintext(args.iter().any(|a| a == "--tls-allow-plaintext"));
    if let Some(ms) = flag(args, "--tls-handshake-timeout-ms").and_then(|v| v.parse().ok()) {
        acceptor = acceptor.handshake_timeout(Duration::from_millis(ms));
    }
    Some(acceptor)
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if args.iter().any(|a| a == "--help" || a == "-h") {
        println!("{USAGE}");
        return;
    }
    let addr = flag(&args, "--addr").unwrap_or_else(|| "127.0.0.1:9000".to_owned());
    let parse = |name: &str| -> Option<usize> {
        flag(&args, name).map(|v| {
            v.parse().unwrap_or_else(|_| {
                eprintln!("echo_server: {name} wants a number, got {v:?}\n{USAGE}");
                std::process::exit(2)
            })
        })
    };
    let ms = |n: usize| Duration::from_millis(n as u64);
    // Tracing: spans of this process exported over OTLP/HTTP, on both sides of a call.
    let mut tracing_mw = None;
    let telemetry = flag(&args, "--otlp").map(|endpoint| {
        let ratio = flag(&args, "--otlp-sample").map_or(1.0, |r| {
            r.parse::<f64>()
                .ok()
                .filter(|r| (0.0..=1.0).contains(r))
                .unwrap_or_else(|| {
                    eprintln!("echo_server: --otlp-sample wants a ratio from 0 to 1, got {r:?}");
                    std::process::exit(2)
                })
        });
        tracing_mw = Some(OpenTelemetry::with_sampler(Sampler::ParentBased(ratio)));
        let service = flag(&args, "--service").unwrap_or_else(|| "echo_server".to_owned());
        let mut exporter = Exporter::new(&endpoint).service_name(&service);
        if let Some(ca) = flag(&args, "--otlp-tls-ca") {
            let connector = netpoll_rpc::tls::TlsConnector::builder(&ca)
                .and_then(|b| b.build())
                .unwrap_or_else(|e| {
                    eprintln!("echo_server: --otlp-tls-ca {ca}: {e}");
                    std::process::exit(2)
                });
            exporter = exporter.tls(connector);
        }
        exporter.install().unwrap_or_else(|e| {
            eprintln!("echo_server: --otlp {endpoint}: {e}");
            std::process::exit(2)
        })
    });
    if telemetry.is_none() {
        // Log lines to stderr (with --otlp the exporter's subscriber writes them): warnings
        // and errors, such as the runtime's line saying it fell back to epoll, unless
        // RUST_LOG names another level.
        let level = std::env::var("RUST_LOG")
            .ok()
            .and_then(|v| v.parse::<tracing::Level>().ok())
            .unwrap_or(tracing::Level::WARN);
        let _ = tracing_subscriber::fmt()
            .with_max_level(level)
            .with_writer(std::io::stderr)
            .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
            .try_init();
    }
    let forward = flag(&args, "--forward").map(|next| {
        let mut c = ClientBuilder::default().host_ports([next.as_str()]);
        if let Some(t) = tracing_mw {
            c = c.middleware(t);
        }
        examples::gen::echo::EchoClient::new("echo", c).unwrap_or_else(|e| {
            eprintln!("echo_server: --forward {next}: {e}");
            std::process::exit(2)
        })
    });
    let echo = examples::echo_service::EchoHandler {
        delay: ms(parse("--echo-delay-ms").unwrap_or(0)),
        fail: args.iter().any(|a| a == "--echo-fail"),
        forward,
        log: args.iter().any(|a| a == "--echo-log"),
        identify: args.iter().any(|a| a == "--echo-peer-cert"),
    };
    let mut b = examples::echo_service::builder_with(echo).addr(addr.as_str());
    if let Some(t) = tracing_mw {
        b = b.middleware(t);
    }
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
    if let Some(path) = flag(&args, "--unix") {
        b = b.unix(path);
    }
    if let Some(n) = parse("--buffer-count") {
        b = b.buffer_count(n);
    }
    if let Some(us) = parse("--busy-poll-us") {
        b = b.busy_poll(Duration::from_micros(us as u64));
    }
    if let Some(n) = parse("--max-connections") {
        b = b.max_connections(n);
    }
    if let Some(n) = parse("--max-frame") {
        b = b.max_frame(n);
    }
    if let Some(n) = parse("--max-in-flight") {
        b = b.max_in_flight_per_connection(n);
    }
    if let Some(n) = parse("--high-water") {
        b = b.high_water_mark(n);
    }
    if let Some(n) = parse("--idle-timeout-ms") {
        b = b.idle_timeout(ms(n));
    }
    if let Some(n) = parse("--read-timeout-ms") {
        b = b.read_timeout(ms(n));
    }
    if let Some(n) = parse("--write-timeout-ms") {
        b = b.write_timeout((n > 0).then(|| ms(n)));
    }
    let (qps, concurrency) = (parse("--limit-qps"), parse("--limit-concurrency"));
    let mut limiter = None;
    if qps.is_some() || concurrency.is_some() {
        let mut l = netpoll_rpc::server::Limiter::new();
        if let Some(n) = qps {
            l = l.qps(n as u32);
        }
        if let Some(n) = concurrency {
            l = l.max_concurrent(n);
        }
        b = b.middleware(l.clone());
        limiter = Some(l);
    }
    if let Some(registry) = flag(&args, "--registry") {
        let Some(endpoints) = registry.strip_prefix("etcd://") else {
            eprintln!("echo_server: --registry wants etcd://HOST:PORT\n{USAGE}");
            std::process::exit(2)
        };
        let Some(service) = flag(&args, "--service") else {
            eprintln!("echo_server: --registry needs --service NAME\n{USAGE}");
            std::process::exit(2)
        };
        let mut etcd = netpoll_rpc::registry::EtcdRegistry::new(endpoints);
        if let Some(s) = parse("--lease-ttl-s") {
            etcd = etcd.lease_ttl(Duration::from_secs(s as u64));
        }
        b = b.registry(etcd, &service);
        if let Some(a) = flag(&args, "--advertise") {
            match a.parse() {
                Ok(addr) => b = b.advertise(addr),
                Err(_) => {
                    eprintln!("echo_server: --advertise wants HOST:PORT, got {a:?}");
                    std::process::exit(2)
                }
            }
        }
        if let Some(w) = parse("--weight") {
            b = b.registry_weight(w as u32, Vec::new());
        }
        if let Some(ms) = parse("--deregister-delay-ms") {
            b = b.deregister_delay(Duration::from_millis(ms as u64));
        }
    }
    if let Some(acceptor) = tls_acceptor(&args) {
        b = b.tls(acceptor);
    }
    let metrics = flag(&args, "--metrics").map(|addr| (addr, netpoll_rpc::metrics::Metrics::new()));
    if let Some((_, m)) = &metrics {
        b = b.metrics(m.clone());
    }
    let mut endpoint = None;
    // Until SIGTERM or SIGINT, then a graceful stop: calls in flight are answered.
    let ran = b.run(
        Duration::from_secs(5),
        |server| {
            // The metrics endpoint first (its line before the listening one, which says
            // the server is ready): HOST:0 picks a free port, printed here.
            if let Some((addr, m)) = metrics {
                m.add_source(netpoll_rpc::metrics::Metrics::server_metrics(server));
                if let Some(l) = &limiter {
                    m.add_source(l.metrics_source());
                }
                match netpoll_rpc::metrics::serve(addr.as_str(), m) {
                    Ok(e) => {
                        println!("echo_server: metrics on {}", e.local_addr());
                        endpoint = Some(e);
                    }
                    Err(e) => {
                        eprintln!("echo_server: --metrics {addr}: {e}");
                        // exit runs no destructor: the socket file goes now.
                        if let Some(p) = server.unix_path() {
                            let _ = std::fs::remove_file(p);
                        }
                        std::process::exit(1);
                    }
                }
            }
            println!(
                "echo_server: {} listening on {}",
                server.runtime().backend(),
                server.local_addr()
            );
        },
        |_| {},
    );
    drop(endpoint);
    // Spans still queued leave now.
    drop(telemetry);
    if let Err(e) = ran {
        eprintln!("echo_server: {e}");
        std::process::exit(1);
    }
}
