//! Calls from inside a handler: a gateway whose handler calls the hello service behind
//! it. The backend sees the caller's remaining time and persistent metadata; a blocking
//! call made on a netpoll core fails at once, saying why.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use examples::gateway::Gateway;
use examples::gen::pb::hello::{register_hello, Hello, HelloClient, Request, Response};
use netpoll_rpc::client::ClientBuilder;
use netpoll_rpc::server::Server;
use netpoll_rpc::{CallContext, CallError, Reply, Status};

/// What the backend saw of each call.
#[derive(Debug, Default, Clone)]
struct Seen {
    timeout: Option<Duration>,
    user: Option<String>,
    transient: Option<String>,
    trace: Option<netpoll_rpc::trace::TraceContext>,
}

#[derive(Clone, Default)]
struct Backend(Arc<Mutex<Vec<Seen>>>);

impl Hello for Backend {
    fn say_hello(&self, ctx: &CallContext<'_>, req: Request) -> Reply<Response> {
        let text = |v: Option<bytes::Bytes>| v.map(|v| String::from_utf8_lossy(&v).into_owned());
        self.0.lock().unwrap().push(Seen {
            timeout: ctx.timeout(),
            user: text(ctx.persistent("user")),
            transient: text(ctx.transient("hop")),
            trace: ctx.trace(),
        });
        ctx.send_back("served-by", "backend");
        Reply::ok(Response {
            message: format!("Hello {}", req.name),
        })
    }
}

/// A handler that calls its backend the blocking way, on its core.
struct Blocking(HelloClient);

impl Hello for Blocking {
    fn say_hello(&self, _ctx: &CallContext<'_>, req: Request) -> Reply<Response> {
        match self.0.say_hello(req) {
            Ok(r) => Reply::ok(r),
            Err(e) => Reply::err(Status::from(e)),
        }
    }
}

#[test]
fn a_gateway_calls_its_backend_with_the_callers_deadline_and_metadata() {
    let seen = Backend::default();
    let backend = register_hello(Server::builder().addr("127.0.0.1:0").cores(1), seen.clone())
        .start()
        .unwrap();
    let to_backend = HelloClient::new(
        "hello-service",
        ClientBuilder::default()
            .host_ports([backend.local_addr()])
            .call_timeout(Some(Duration::from_secs(30))),
    )
    .unwrap();
    let gateway = register_hello(
        Server::builder().addr("127.0.0.1:0").cores(1),
        Gateway {
            backend: to_backend.clone(),
        },
    )
    .start()
    .unwrap();
    let client = HelloClient::new(
        "gateway",
        ClientBuilder::default()
            .host_ports([gateway.local_addr()])
            .call_timeout(Some(Duration::from_secs(2))),
    )
    .unwrap();
    let caller_trace = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01";
    let client = client
        .with_persistent("user", "alice")
        .with_transient("hop", "gateway only")
        .with_header("traceparent", caller_trace)
        .with_header("tracestate", "congo=t61rcWkgMzE");
    let r = client
        .say_hello(Request {
            name: "Kitex".into(),
        })
        .unwrap();
    assert_eq!(r.message, "Hello Kitex", "relayed by the gateway");
    let s = seen.0.lock().unwrap()[0].clone();
    let t = s.timeout.expect("the backend call carries a deadline");
    assert!(
        t <= Duration::from_secs(2) && t > Duration::from_millis(1500),
        "the caller's 2 s, less the time spent, not the gateway client's 30 s: {t:?}"
    );
    assert_eq!(
        s.user.as_deref(),
        Some("alice"),
        "persistent metadata travels on"
    );
    assert_eq!(s.transient, None, "transient values stop at the gateway");
    // The backend's call is in the caller's trace. The gateway records no span (no
    // tracing middleware), so its parent is the caller's span, passed on unchanged as
    // W3C trace context has a hop without a span do: a made-up id would be a parent no
    // one recorded (tests/tracing.rs covers the hop with spans).
    let t = s.trace.expect("the trace context travels on");
    assert_eq!(t.trace_id_hex(), "0af7651916cd43dd8448eb211c80319c");
    assert_eq!(t.span_id, [0xb7, 0xad, 0x6b, 0x71, 0x69, 0x20, 0x33, 0x31]);
    assert!(t.sampled());
    assert_eq!(t.state.as_deref(), Some("congo=t61rcWkgMzE"));

    // Called directly, the backend gets the transient value, and its value sent back
    // reaches the caller.
    let direct = to_backend.with_transient("hop", "one");
    let (r, back): (Response, _) = direct
        .client()
        .call_meta("SayHello", Request { name: "B".into() })
        .unwrap();
    assert_eq!(r.message, "Hello B");
    assert_eq!(
        back.iter().collect::<Vec<_>>(),
        [("served-by", &b"backend"[..])],
        "backward values come back"
    );
    assert_eq!(seen.0.lock().unwrap()[1].transient.as_deref(), Some("one"));
    // The same from async code.
    let rt = tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap();
    let (r, back): (Response, _) = rt
        .block_on(
            direct
                .client()
                .call_meta_async("SayHello", Request { name: "C".into() }),
        )
        .unwrap();
    assert_eq!(r.message, "Hello C");
    assert_eq!(back.iter().count(), 1);

    // A handler calling the blocking way on its core is refused at once.
    let blocking = register_hello(
        Server::builder().addr("127.0.0.1:0").cores(1),
        Blocking(to_backend),
    )
    .start()
    .unwrap();
    let c = HelloClient::connect(blocking.local_addr()).unwrap();
    let t0 = std::time::Instant::now();
    match c.say_hello(Request { name: "x".into() }) {
        Err(CallError::Application(e)) => assert!(
            e.message.contains("blocking call on an event-loop thread"),
            "{e:?}"
        ),
        other => panic!("expected the refusal, got {other:?}"),
    }
    assert!(t0.elapsed() < Duration::from_secs(1), "refused at once");
}
