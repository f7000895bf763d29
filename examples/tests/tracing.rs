//! OpenTelemetry traces across calls, from real processes: this test's client calls echo
//! server A, whose handler relays the call to echo server B (a call made within the one
//! served). Every process exports its spans over OTLP/HTTP to a receiver that decodes
//! them with OpenTelemetry's own protobuf definitions (`opentelemetry-proto`, Python), and
//! the spans must form one trace with the right parent links.

mod common;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use bytes::Bytes;
use common::{pem, EchoServer};
use examples::gen::echo::EchoClient;
use netpoll_rpc::client::ClientBuilder;
use netpoll_rpc::otel::{Exporter, OpenTelemetry};
use netpoll_rpc::trace::TraceContext;
use serde_json::Value;

/// The Python OTLP receiver, killed on drop.
struct Receiver {
    child: Child,
    addr: String,
}

impl Receiver {
    fn start() -> Receiver {
        Self::start_with(&[])
    }

    fn start_with(args: &[&str]) -> Receiver {
        let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/otlp_receiver.py");
        let mut child = Command::new("python3")
            .arg(script)
            .args(args)
            .stdout(Stdio::piped())
            .spawn()
            .expect("python3 (scripts/test.sh installs opentelemetry-proto)");
        let mut line = String::new();
        BufReader::new(child.stdout.take().expect("stdout"))
            .read_line(&mut line)
            .expect("read");
        let addr = line
            .trim()
            .strip_prefix("listening on ")
            .unwrap_or_else(|| {
                panic!("the receiver said {line:?}: is opentelemetry-proto installed?")
            })
            .to_owned();
        Receiver { child, addr }
    }

    fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Every span received so far.
    fn spans(&self) -> Vec<Value> {
        let mut s = TcpStream::connect(&self.addr).expect("receiver");
        write!(
            s,
            "GET /spans HTTP/1.1\r\nHost: {}\r\nConnection: close\r\n\r\n",
            self.addr
        )
        .unwrap();
        let mut out = String::new();
        s.read_to_string(&mut out).unwrap();
        let body = out.split_once("\r\n\r\n").expect("response").1;
        serde_json::from_str::<Vec<Value>>(body).expect("JSON")
    }

    /// Every span received so far, from a receiver serving HTTPS.
    fn spans_tls(&self, ca: &str) -> Vec<Value> {
        use netpoll_rpc::tls::{rustls, TlsConnector};
        let connector = TlsConnector::builder(ca).unwrap().build().unwrap();
        let conn = rustls::ClientConnection::new(
            connector.config().clone(),
            "localhost".try_into().unwrap(),
        )
        .unwrap();
        let mut s =
            rustls::StreamOwned::new(conn, TcpStream::connect(&self.addr).expect("receiver"));
        write!(
            s,
            "GET /spans HTTP/1.1\r\nHost: {}\r\nConnection: close\r\n\r\n",
            self.addr
        )
        .unwrap();
        let mut out = Vec::new();
        let _ = s.read_to_end(&mut out);
        let out = String::from_utf8_lossy(&out);
        let body = out.split_once("\r\n\r\n").expect("response").1;
        serde_json::from_str::<Vec<Value>>(body).expect("JSON")
    }

    /// [`trace`](Self::trace) from a receiver serving HTTPS.
    fn trace_tls(&self, trace_id: &str, n: usize, ca: &str) -> Vec<Value> {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let t: Vec<Value> = self
                .spans_tls(ca)
                .into_iter()
                .filter(|s| s["trace_id"] == trace_id)
                .collect();
            if t.len() >= n || Instant::now() > deadline {
                return t;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// The spans of trace `trace_id` once there are `n` of them (or what came in 20 s).
    fn trace(&self, trace_id: &str, n: usize) -> Vec<Value> {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let t: Vec<Value> = self
                .spans()
                .into_iter()
                .filter(|s| s["trace_id"] == trace_id)
                .collect();
            if t.len() >= n || Instant::now() > deadline {
                return t;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

impl Drop for Receiver {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn find<'a>(spans: &'a [Value], service: &str, kind: &str) -> &'a Value {
    spans
        .iter()
        .find(|s| s["service"] == service && s["kind"] == kind)
        .unwrap_or_else(|| panic!("no {kind} span of {service} in {spans:#?}"))
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

#[test]
fn a_call_through_two_servers_is_one_trace() {
    let rx = Receiver::start();
    let otlp = rx.url();
    let b = EchoServer::start(&["--otlp", &otlp, "--service", "echo-b"]);
    let a = EchoServer::start(&[
        "--otlp",
        &otlp,
        "--service",
        "echo-a",
        "--forward",
        &b.addr.to_string(),
        "--echo-log",
    ]);

    // This process exports its client spans too (one test per binary: one subscriber).
    let telemetry = Exporter::new(&otlp)
        .service_name("test-client")
        .batch_delay(Duration::from_millis(200))
        .install()
        .expect("exporter");
    let client = EchoClient::new(
        "echo",
        ClientBuilder::default()
            .host_ports([a.addr.to_string()])
            .middleware(OpenTelemetry::default()),
    )
    .expect("client");

    // 1. A new trace, started by the client: four spans, parent to child.
    //    test-client (client) -> A (server) -> A (client) -> B (server).
    let msg = Bytes::from_static(b"traced");
    // The trace id is the client span's: read it from A's server span once exported.
    assert_eq!(client.echo(msg.clone()).expect("call"), msg);
    telemetry.flush();
    let deadline = Instant::now() + Duration::from_secs(20);
    let root = loop {
        let spans = rx.spans();
        if let Some(s) = spans.iter().find(|s| s["service"] == "test-client") {
            break s.clone();
        }
        assert!(
            Instant::now() < deadline,
            "no client span exported: {spans:#?}"
        );
        std::thread::sleep(Duration::from_millis(100));
    };
    let trace_id = root["trace_id"].as_str().unwrap().to_owned();
    let spans = rx.trace(&trace_id, 4);
    assert_eq!(spans.len(), 4, "{spans:#?}");
    let a_server = find(&spans, "echo-a", "server");
    let a_client = find(&spans, "echo-a", "client");
    let b_server = find(&spans, "echo-b", "server");
    assert_eq!(root["kind"], "client");
    assert_eq!(
        root["parent_span_id"], "",
        "the client's span starts the trace"
    );
    assert_eq!(a_server["parent_span_id"], root["span_id"]);
    assert_eq!(
        a_client["parent_span_id"], a_server["span_id"],
        "{spans:#?}"
    );
    assert_eq!(b_server["parent_span_id"], a_client["span_id"]);
    // The handler's log is inside its call's span (A's handler logs each call).
    assert!(
        a_server["events"]
            .as_array()
            .is_some_and(|e| e.iter().any(|e| e == "echo handler")),
        "A's server span carries its handler's log: {a_server:#?}"
    );
    // Names and attributes as OpenTelemetry's RPC conventions have them.
    for s in &spans {
        assert_eq!(s["name"], "Echo/echo", "{s:#?}");
        assert_eq!(s["attributes"]["rpc.system"], "apache_thrift", "{s:#?}");
        assert_eq!(s["attributes"]["rpc.service"], "Echo", "{s:#?}");
        assert_eq!(s["attributes"]["rpc.method"], "echo", "{s:#?}");
        assert_ne!(s["status"], 2, "no span failed: {s:#?}");
    }
    assert_eq!(
        root["attributes"]["server.port"].as_i64(),
        Some(i64::from(a.addr.port())),
        "{root:#?}"
    );
    assert_eq!(
        b_server["attributes"]["network.peer.address"], "127.0.0.1",
        "{b_server:#?}"
    );

    // 2. A caller's trace context (a sampled caller of our own making): A's server span
    //    joins it under the caller's span id.
    let caller = TraceContext::new_root(true);
    client
        .with_trace(caller.clone())
        .echo(msg.clone())
        .expect("call");
    let spans = rx.trace(&hex(&caller.trace_id), 4);
    assert_eq!(spans.len(), 4, "{spans:#?}");
    let ours = find(&spans, "test-client", "client");
    assert_eq!(ours["parent_span_id"], hex(&caller.span_id));

    // 3. Kitex's form of the same metadata (`RPC_TRANSIT_traceparent`), from a client
    //    without the middleware: A's server span is the caller's child.
    let kitex = TraceContext::new_root(true);
    let plain = EchoClient::new(
        "echo",
        ClientBuilder::default().host_ports([a.addr.to_string()]),
    )
    .expect("client");
    plain
        .with_header("RPC_TRANSIT_traceparent", kitex.traceparent())
        .echo(msg.clone())
        .expect("call");
    let spans = rx.trace(&hex(&kitex.trace_id), 3);
    assert_eq!(spans.len(), 3, "A's two spans and B's: {spans:#?}");
    assert_eq!(
        find(&spans, "echo-a", "server")["parent_span_id"],
        hex(&kitex.span_id)
    );

    // 4. An unsampled caller is followed: no span anywhere in its trace. A sampled call
    //    made after it shows its spans have had time to arrive.
    let unsampled = TraceContext::new_root(false);
    client
        .with_trace(unsampled.clone())
        .echo(msg.clone())
        .expect("call");
    let after = TraceContext::new_root(true);
    client.with_trace(after.clone()).echo(msg).expect("call");
    assert_eq!(rx.trace(&hex(&after.trace_id), 4).len(), 4);
    let lost = hex(&unsampled.trace_id);
    assert!(
        rx.spans().iter().all(|s| s["trace_id"] != lost.as_str()),
        "an unsampled caller's trace got spans"
    );

    // 4b. A server that starts a trace decides once for the whole trace: the calls its
    //     handler makes follow that decision (at 50%, a call whose server span was not
    //     sampled must leave no span downstream either: no trace without its root).
    let b0 = EchoServer::start(&["--otlp", &otlp, "--service", "echo-b0"]);
    let a0 = EchoServer::start(&[
        "--otlp",
        &otlp,
        "--otlp-sample",
        "0.5",
        "--service",
        "echo-a0",
        "--forward",
        &b0.addr.to_string(),
    ]);
    let plain0 = EchoClient::new(
        "echo",
        ClientBuilder::default().host_ports([a0.addr.to_string()]),
    )
    .expect("client");
    for _ in 0..40 {
        plain0.echo(Bytes::from_static(b"x")).expect("call");
    }
    let barrier = TraceContext::new_root(true);
    client
        .with_trace(barrier.clone())
        .echo(Bytes::from_static(b"x"))
        .expect("call");
    assert_eq!(rx.trace(&hex(&barrier.trace_id), 4).len(), 4);
    std::thread::sleep(Duration::from_millis(1500));
    let spans = rx.spans();
    let roots: Vec<&Value> = spans
        .iter()
        .filter(|s| s["service"] == "echo-a0" && s["kind"] == "server")
        .collect();
    assert!(
        (5..=35).contains(&roots.len()),
        "{} of 40 sampled at 50%",
        roots.len()
    );
    for s in spans
        .iter()
        .filter(|s| s["service"] == "echo-b0" || s["service"] == "echo-a0")
    {
        assert!(
            roots.iter().any(|r| r["trace_id"] == s["trace_id"]),
            "a span of a trace whose root was not sampled: {s:#?}"
        );
    }

    // 5. A failed call: both spans say so, with the kind of failure.
    let c = EchoServer::start(&["--otlp", &otlp, "--service", "echo-c", "--echo-fail"]);
    let failing = EchoClient::new(
        "echo",
        ClientBuilder::default()
            .host_ports([c.addr.to_string()])
            .middleware(OpenTelemetry::default()),
    )
    .expect("client");
    let failed = TraceContext::new_root(true);
    assert!(failing
        .with_trace(failed.clone())
        .echo(Bytes::from_static(b"x"))
        .is_err());
    telemetry.flush();
    let spans = rx.trace(&hex(&failed.trace_id), 2);
    assert_eq!(spans.len(), 2, "{spans:#?}");
    for (service, kind) in [("test-client", "client"), ("echo-c", "server")] {
        let s = find(&spans, service, kind);
        assert_eq!(s["status"], 2, "status ERROR: {s:#?}");
        assert_eq!(s["attributes"]["error.type"], "internal", "{s:#?}");
    }
    drop(telemetry);
}

#[test]
fn a_grpc_call_joins_its_callers_trace() {
    // grpcio sends W3C trace context as gRPC metadata (`traceparent`), as OpenTelemetry's
    // gRPC instrumentation does: the server span is the caller's child.
    let ok = Command::new("python3")
        .args(["-c", "import grpc, grpc_tools"])
        .status()
        .is_ok_and(|s| s.success());
    if !ok {
        assert!(std::env::var_os("CI").is_none(), "grpcio is missing");
        eprintln!("SKIPPED: grpcio is missing (scripts/test.sh installs it)");
        return;
    }
    let rx = Receiver::start();
    let url = rx.url();
    let server = EchoServer::start(&["--otlp", &url, "--service", "echo-grpc"]);
    let caller = TraceContext::new_root(true);
    let idl = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .join("idl");
    let out = Command::new("python3")
        .arg(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/tests/interop/grpc_peer.py"
        ))
        .arg(&idl)
        .args(["trace", &server.addr.to_string(), &caller.traceparent()])
        .output()
        .unwrap();
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("all checks passed"),
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let spans = rx.trace(&hex(&caller.trace_id), 2);
    let span = find(&spans, "echo-grpc", "server");
    assert_eq!(span["parent_span_id"], hex(&caller.span_id));
    assert_eq!(span["attributes"]["rpc.system"], "grpc");
    // The unary call, and the stream: its span lasts until the stream ends.
    let methods: Vec<_> = spans
        .iter()
        .filter(|s| s["parent_span_id"] == hex(&caller.span_id))
        .map(|s| {
            (
                s["attributes"]["rpc.service"].clone(),
                s["attributes"]["rpc.method"].clone(),
            )
        })
        .collect();
    assert!(
        methods.contains(&("Echo".into(), "Echo".into())),
        "{methods:?}"
    );
    assert!(
        methods.contains(&("Streamer".into(), "Repeat".into())),
        "{methods:?}"
    );
}

#[test]
fn spans_are_exported_over_https() {
    let rx = Receiver::start_with(&["--tls", &pem("server.pem"), &pem("server.key")]);
    let url = format!("https://{}", rx.addr.replace("127.0.0.1", "localhost"));
    let server = EchoServer::start(&[
        "--otlp",
        &url,
        "--otlp-tls-ca",
        &pem("ca.pem"),
        "--service",
        "echo-https",
    ]);
    let client = EchoClient::new(
        "echo",
        ClientBuilder::default().host_ports([server.addr.to_string()]),
    )
    .expect("client");
    let caller = TraceContext::new_root(true);
    client
        .with_header("traceparent", caller.traceparent())
        .echo(Bytes::from_static(b"over https"))
        .expect("call");
    // The receiver's own /spans answers over TLS too: read them with a TLS client.
    let spans = rx.trace_tls(&hex(&caller.trace_id), 1, &pem("ca.pem"));
    assert!(!spans.is_empty(), "no span arrived over HTTPS");
    assert_eq!(
        find(&spans, "echo-https", "server")["parent_span_id"],
        hex(&caller.span_id)
    );
}
