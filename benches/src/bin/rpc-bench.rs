//! `rpc-bench`: load-tests an echo service and reports throughput and latency percentiles.
//!
//! ```text
//! rpc-bench --addr 127.0.0.1:PORT --protocol framed --connections 16 --inflight 32 \
//!           --payload 128 --duration 10s --warmup 1s [--rate N] [--json]
//! ```

use std::io::IsTerminal;
use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use benches::governed::{self, GovernedConfig};
use benches::load::{self, LoadConfig, Progress};
use benches::protocol::{Protocol, RawFramed};
use benches::wire_echo::{KitexPbEcho, ThriftEcho, ThriftTransport};

const USAGE: &str = "\
rpc-bench: load-test an echo service

  --addr HOST:PORT        server to load (required)
  --protocol NAME         the echo service (idl/echo.thrift, idl/echo.proto) over:
                          framed (default), buffered, ttheader (Thrift, with Kitex's
                          headers), kitex-protobuf, grpc (h2c, one stream per call,
                          --inflight streams per connection); or raw (4-byte length + payload,
                          echoed in order: netpoll without RPC)
  --thrift-protocol P     binary (default) or compact, for framed/buffered/ttheader
  --connections N         connections in all (default 16)
  --inflight N            calls in flight per connection (default 32); in open loop,
                          the most calls a connection lets queue up
  --payload BYTES         payload size (default 128)
  --duration T            measured time, e.g. 10s, 500ms (default 10s)
  --warmup T              time before measuring (default 1s)
  --rate N                open loop: N calls per second in all, latency measured from
                          each call's intended send time (coordinated omission corrected)
  --threads N             client cores (default 1)
  --cpus LIST             pin client cores to these CPUs, e.g. 1 or 2,3
  --busy-poll-us US       client cores spin this long before sleeping
  --json                  print one JSON object instead of the table
  --embedded              start our echo server (examples/echo_server's services; for
                          raw, a netpoll echo) in this process on the CPUs the client
                          does not use (default: server on CPU 0, client on CPU 1)
  --sweep STEPS           find the closed-loop maximum, then run open loop at STEPS
                          evenly spaced rates up to it; prints a table and writes a
                          latency-vs-throughput plot
  --plot FILE             where --sweep writes its SVG (default rpc-bench-sweep.svg)
  --tls-ca FILE           speak TLS, trusting the CA certificates of this PEM file
  --tls-name NAME         the name the server's certificate must be valid for
                          (default localhost)
  --tls-cert FILE --tls-key FILE
                          the client certificate and key to present (mTLS)

The governed path (the framework's own client instead of the raw one; Thrift binary echo
over --protocol framed or ttheader; --connections is per instance; closed loop only):
  --resolver URL          static://h1:p1,h2:p2 or etcd://HOST:PORT (replaces --addr)
  --service NAME          the service to look up (default echo-service)
  --lb NAME               p2c (default), wrr, random, hash (a key per call)
  --retry N               retries per call, on any retryable failure (default 0)
  The JSON gains \"retries\" and \"instances\": {\"host:port\": calls, ...}.
";

/// `--tls-*`.
struct TlsFlags {
    ca: Option<String>,
    name: String,
    cert: Option<String>,
    key: Option<String>,
}

impl TlsFlags {
    fn connector(self) -> Result<Option<(netpoll::tls::TlsConnector, String)>, String> {
        let Some(ca) = self.ca else {
            if self.cert.is_some() || self.key.is_some() {
                return Err("--tls-cert and --tls-key need --tls-ca".into());
            }
            return Ok(None);
        };
        let tls_err = |e: std::io::Error| format!("TLS: {e}");
        let mut b = netpoll::tls::TlsConnector::builder(&ca).map_err(tls_err)?;
        match (self.cert, self.key) {
            (Some(c), Some(k)) => b = b.identity(&c, &k).map_err(tls_err)?,
            (None, None) => {}
            _ => return Err("--tls-cert and --tls-key go together".into()),
        }
        Ok(Some((b.build().map_err(tls_err)?, self.name)))
    }
}

struct Cli {
    load: LoadConfig,
    protocol: String,
    thrift_protocol: String,
    json: bool,
    embedded: bool,
    sweep: Option<usize>,
    plot: String,
    governed: Option<GovernedConfig>,
}

fn parse_duration(s: &str) -> Result<Duration, String> {
    let (num, unit) = match s.find(|c: char| !(c.is_ascii_digit() || c == '.')) {
        Some(i) => s.split_at(i),
        None => (s, "s"),
    };
    let v: f64 = num.parse().map_err(|_| format!("bad duration {s:?}"))?;
    let secs = match unit {
        "s" => v,
        "ms" => v / 1e3,
        "us" => v / 1e6,
        "m" => v * 60.0,
        _ => return Err(format!("bad duration unit in {s:?} (use s, ms, us or m)")),
    };
    if !(0.0..=86_400.0).contains(&secs) {
        return Err(format!("duration {s:?} out of range"));
    }
    Ok(Duration::from_secs_f64(secs))
}

fn parse() -> Result<Cli, String> {
    let mut addr: Option<SocketAddr> = None;
    let mut cli = Cli {
        load: LoadConfig {
            addr: SocketAddr::from(([127, 0, 0, 1], 0)),
            connections: 16,
            inflight: 32,
            payload: 128,
            warmup: Duration::from_secs(1),
            duration: Duration::from_secs(10),
            rate: None,
            threads: 1,
            cpus: None,
            busy_poll: Duration::ZERO,
            tls: None,
        },
        protocol: "framed".into(),
        thrift_protocol: "binary".into(),
        json: false,
        embedded: false,
        sweep: None,
        plot: "rpc-bench-sweep.svg".into(),
        governed: None,
    };
    let mut g = GovernedConfig {
        resolver: String::new(),
        service: "echo-service".into(),
        lb: "p2c".into(),
        retry: 0,
        ttheader: false,
    };
    let mut tls = TlsFlags {
        ca: None,
        name: "localhost".into(),
        cert: None,
        key: None,
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let mut val = || it.next().ok_or_else(|| format!("{flag} needs a value"));
        let int = |v: String| {
            v.parse::<usize>()
                .map_err(|_| format!("{flag}: not a whole number: {v:?}"))
        };
        let l = &mut cli.load;
        match flag.as_str() {
            "--addr" => addr = Some(val()?.parse().map_err(|e| format!("--addr: {e}"))?),
            "--protocol" => cli.protocol = val()?,
            "--thrift-protocol" => cli.thrift_protocol = val()?,
            "--connections" => l.connections = int(val()?)?,
            "--inflight" => l.inflight = int(val()?)?,
            "--payload" => l.payload = int(val()?)?,
            "--duration" => l.duration = parse_duration(&val()?)?,
            "--warmup" => l.warmup = parse_duration(&val()?)?,
            "--rate" => {
                l.rate = Some(
                    val()?
                        .parse()
                        .map_err(|_| "--rate: not a number".to_string())?,
                )
            }
            "--threads" => l.threads = int(val()?)?,
            "--cpus" => {
                let cpus = val()?
                    .split(',')
                    .map(|c| c.trim().parse::<usize>())
                    .collect::<Result<Vec<_>, _>>();
                l.cpus =
                    Some(cpus.map_err(|_| "--cpus: expected a list like 1 or 2,3".to_string())?);
            }
            "--busy-poll-us" => l.busy_poll = Duration::from_micros(int(val()?)? as u64),
            "--json" => cli.json = true,
            "--embedded" => cli.embedded = true,
            "--sweep" => cli.sweep = Some(int(val()?)?.max(1)),
            "--plot" => cli.plot = val()?,
            "--resolver" => g.resolver = val()?,
            "--service" => g.service = val()?,
            "--lb" => g.lb = val()?,
            "--retry" => g.retry = int(val()?)? as u32,
            "--tls-ca" => tls.ca = Some(val()?),
            "--tls-name" => tls.name = val()?,
            "--tls-cert" => tls.cert = Some(val()?),
            "--tls-key" => tls.key = Some(val()?),
            "-h" | "--help" => {
                print!("{USAGE}");
                std::process::exit(0);
            }
            other => return Err(format!("unknown flag {other} (see --help)")),
        }
    }
    cli.load.tls = tls.connector()?;
    if !g.resolver.is_empty() {
        if addr.is_some() || cli.embedded || cli.sweep.is_some() || cli.load.rate.is_some() {
            return Err("--resolver excludes --addr, --embedded, --sweep and --rate".into());
        }
        g.ttheader = match cli.protocol.as_str() {
            "framed" => false,
            "ttheader" => true,
            other => return Err(format!("--resolver runs framed or ttheader, not {other:?}")),
        };
        cli.governed = Some(g);
        return Ok(cli);
    }
    match (addr, cli.embedded) {
        (Some(a), false) => cli.load.addr = a,
        (None, true) => {}
        (Some(_), true) => return Err("--addr and --embedded exclude each other".into()),
        (None, false) => return Err("--addr or --embedded is required (see --help)".into()),
    }
    if cli.load.connections == 0 || cli.load.inflight == 0 || cli.load.threads == 0 {
        return Err("--connections, --inflight and --threads must be positive".into());
    }
    if cli.load.payload > 64 << 20 {
        return Err("--payload above 64 MiB is not supported".into());
    }
    Ok(cli)
}

fn protocol(name: &str, thrift: &str, payload: usize) -> Result<Arc<dyn Protocol>, String> {
    let max_frame = payload.max(1024) * 2;
    let compact = match thrift {
        "binary" => false,
        "compact" => true,
        other => return Err(format!("--thrift-protocol {other:?}: binary or compact")),
    };
    let thrift = |transport| -> Arc<dyn Protocol> {
        Arc::new(ThriftEcho {
            transport,
            compact,
            max_frame,
        })
    };
    match name {
        "raw" => Ok(Arc::new(RawFramed { max_frame })),
        "framed" => Ok(thrift(ThriftTransport::Framed)),
        "buffered" => Ok(thrift(ThriftTransport::Buffered)),
        "ttheader" => Ok(thrift(ThriftTransport::TTHeader)),
        "kitex-protobuf" => Ok(Arc::new(KitexPbEcho { max_frame })),
        "grpc" => Ok(Arc::new(benches::grpc_echo::GrpcEcho { max_frame })),
        other => Err(format!(
            "unknown protocol {other:?}; supported: framed, buffered, ttheader, kitex-protobuf, grpc, raw"
        )),
    }
}

/// The in-process server of `--embedded`.
#[allow(dead_code)] // held only to keep the server running
enum Embedded {
    Raw(netpoll::Runtime),
    Rpc(Box<netpoll_rpc::server::Server>),
}

fn main() {
    let cli = match parse() {
        Ok(c) => c,
        Err(e) => {
            eprintln!("rpc-bench: {e}");
            std::process::exit(2);
        }
    };
    let proto = match protocol(&cli.protocol, &cli.thrift_protocol, cli.load.payload) {
        Ok(p) => p,
        Err(e) => {
            eprintln!("rpc-bench: {e}");
            std::process::exit(2);
        }
    };
    let mut cli = cli;
    let _server = if cli.embedded {
        let all: Vec<usize> =
            (0..std::thread::available_parallelism().map_or(1, |n| n.get())).collect();
        let client = cli
            .load
            .cpus
            .clone()
            .unwrap_or_else(|| vec![*all.get(1).unwrap_or(&0)]);
        cli.load.cpus = Some(client.clone());
        let server_cpus: Vec<usize> = all
            .iter()
            .copied()
            .filter(|c| !client.contains(c))
            .collect();
        let server_cpus = if server_cpus.is_empty() {
            vec![0]
        } else {
            server_cpus
        };
        let started = if cli.protocol == "raw" {
            benches::echo::start(server_cpus.clone(), cli.load.payload.max(1024) * 2)
                .map(|(rt, addr)| (Embedded::Raw(rt), addr))
        } else {
            examples::echo_service::builder()
                .addr("127.0.0.1:0")
                .cores(server_cpus.len())
                .cpus(server_cpus.clone())
                .start()
                .map(|s| {
                    let addr = s.local_addr();
                    (Embedded::Rpc(Box::new(s)), addr)
                })
                .map_err(|e| e.into())
        };
        match started {
            Ok((server, addr)) => {
                eprintln!("embedded echo server on {addr}, CPUs {server_cpus:?}; client on CPUs {client:?}");
                cli.load.addr = addr;
                Some(server)
            }
            Err(e) => {
                eprintln!("rpc-bench: embedded server: {e}");
                std::process::exit(1);
            }
        }
    } else {
        None
    };
    if let Some(steps) = cli.sweep {
        std::process::exit(sweep(&cli, proto, steps));
    }
    let progress = Arc::new(Progress::default());
    let show = !cli.json && std::io::stderr().is_terminal();
    let p = progress.clone();
    let mut last = (Duration::ZERO, 0u64);
    let tick = move |elapsed: Duration| {
        if !show {
            return;
        }
        let n = p.replies.load(Ordering::Relaxed);
        let dt = (elapsed - last.0).as_secs_f64().max(1e-9);
        eprint!(
            "\r{:6.1}s  {:>12.0} calls/s  errors {}   ",
            elapsed.as_secs_f64(),
            (n - last.1) as f64 / dt,
            p.errors.load(Ordering::Relaxed)
        );
        last = (elapsed, n);
    };
    let (report, extra) = match &cli.governed {
        None => load::run(&cli.load, proto, progress, tick)
            .map(|r| (r, None))
            .map_err(|e| e.to_string()),
        Some(g) => governed::run(&cli.load, g, progress, tick).map(|r| {
            let instances: Vec<String> = r
                .instances
                .iter()
                .map(|(a, n)| format!("\"{a}\": {n}"))
                .collect();
            (
                r.report,
                Some((r.retries, format!("{{{}}}", instances.join(", ")))),
            )
        }),
    }
    .unwrap_or_else(|e| {
        eprintln!("\nrpc-bench: {e}");
        std::process::exit(1);
    });
    if show {
        eprintln!();
    }
    let errors: Vec<String> = report
        .errors
        .iter()
        .map(|(k, v)| format!("\"{k}\": {v}"))
        .collect();
    if cli.json {
        println!(
            "{{\"protocol\": \"{}\", \"connections\": {}, \"inflight\": {}, \"payload\": {}, \"rate\": {}, \
             \"qps\": {:.1}, \"bytes_per_sec\": {:.1}, \"p50_us\": {:.1}, \"p90_us\": {:.1}, \"p99_us\": {:.1}, \
             \"p999_us\": {:.1}, \"max_us\": {:.1}, \"calls\": {}, \"errors\": {}, \"errors_by_kind\": {{{}}}{}}}",
            cli.protocol,
            cli.load.connections,
            cli.load.inflight,
            cli.load.payload,
            cli.load.rate.map_or("null".to_string(), |r| format!("{r}")),
            report.qps(),
            report.bytes as f64 / report.elapsed.as_secs_f64().max(1e-9),
            report.quantile_us(0.5),
            report.quantile_us(0.9),
            report.quantile_us(0.99),
            report.quantile_us(0.999),
            report.latency.max() as f64 / 1000.0,
            report.calls,
            report.error_count(),
            errors.join(", "),
            extra.as_ref().map_or(String::new(), |(r, i)| format!(
                ", \"retries\": {r}, \"instances\": {i}"
            ))
        );
    } else {
        println!(
            "{} x {} in flight, {} B, {}: {:.0} calls/s, {:.1} MB/s over {:.1}s",
            cli.load.connections,
            cli.load.inflight,
            cli.load.payload,
            cli.load
                .rate
                .map_or("closed loop".to_string(), |r| format!("open loop at {r}/s")),
            report.qps(),
            report.bytes as f64 / report.elapsed.as_secs_f64().max(1e-9) / 1e6,
            report.elapsed.as_secs_f64()
        );
        println!(
            "latency us: p50 {:.1}  p90 {:.1}  p99 {:.1}  p999 {:.1}  max {:.1}",
            report.quantile_us(0.5),
            report.quantile_us(0.9),
            report.quantile_us(0.99),
            report.quantile_us(0.999),
            report.latency.max() as f64 / 1000.0
        );
        println!(
            "errors: {}{}",
            report.error_count(),
            if errors.is_empty() {
                String::new()
            } else {
                format!(" ({})", errors.join(", "))
            }
        );
        if let Some((retries, instances)) = &extra {
            println!("retries {retries}; calls by instance {instances}");
        }
    }
    if report.error_count() > 0 {
        std::process::exit(1);
    }
}

/// Closed loop to find the maximum, then open loop at `steps` rates up to it.
fn sweep(cli: &Cli, proto: Arc<dyn Protocol>, steps: usize) -> i32 {
    let run =
        |cfg: &LoadConfig| load::run(cfg, proto.clone(), Arc::new(Progress::default()), |_| {});
    let mut cfg = cli.load.clone();
    cfg.rate = None;
    let max = match run(&cfg) {
        Ok(r) if r.error_count() == 0 => r.qps(),
        Ok(r) => {
            eprintln!(
                "rpc-bench: {} errors while finding the maximum rate",
                r.error_count()
            );
            return 1;
        }
        Err(e) => {
            eprintln!("rpc-bench: {e}");
            return 1;
        }
    };
    println!("closed-loop maximum: {max:.0} calls/s");
    println!(
        "{:>12} {:>12} {:>10} {:>10} {:>10} {:>7}",
        "target/s", "achieved/s", "p50 us", "p99 us", "p999 us", "errors"
    );
    let mut points = Vec::with_capacity(steps);
    let mut failed = 0;
    for i in 1..=steps {
        let target = max * i as f64 / steps as f64;
        cfg.rate = Some(target);
        // Open loop lets calls queue: allow enough of them that the schedule, not the
        // queue limit, decides when calls go out.
        cfg.inflight = cli.load.inflight.max(1024);
        match run(&cfg) {
            Ok(r) => {
                let p = benches::plot::SweepPoint {
                    target,
                    qps: r.qps(),
                    p50_us: r.quantile_us(0.5),
                    p99_us: r.quantile_us(0.99),
                    p999_us: r.quantile_us(0.999),
                };
                println!(
                    "{:>12.0} {:>12.0} {:>10.1} {:>10.1} {:>10.1} {:>7}",
                    target,
                    p.qps,
                    p.p50_us,
                    p.p99_us,
                    p.p999_us,
                    r.error_count()
                );
                failed += r.error_count();
                points.push(p);
            }
            Err(e) => {
                eprintln!("rpc-bench: {e}");
                return 1;
            }
        }
    }
    let title = format!(
        "{} echo, {} B, {} connections",
        cli.protocol, cli.load.payload, cli.load.connections
    );
    match std::fs::write(&cli.plot, benches::plot::sweep_svg(&title, &points)) {
        Ok(()) => println!("plot written to {}", cli.plot),
        Err(e) => {
            eprintln!("rpc-bench: writing {}: {e}", cli.plot);
            return 1;
        }
    }
    i32::from(failed > 0)
}
