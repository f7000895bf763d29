//! The echo server's handlers: `Echo` (Thrift and Protobuf) and `Interop`, behaving as the
//! IDL's comments say, and [`serve`] to run them all on one port.

use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use netpoll_codec::ByteString;
use netpoll_rpc::server::{
    OpenStream, Outbound, Server, ServerBuilder, ServerError, StreamHandler,
};
use netpoll_rpc::{CallContext, Reply};

use crate::gen::pb::streamer::{Chunk, RepeatRequest};
use crate::gen::{echo, interop, pb};

/// `echo.thrift`: returns the message unchanged (a zero-copy view of the request). For
/// governance tests it can be made slow (the reply leaves after a timer, without blocking
/// the core) or failing (every call answered `INTERNAL_ERROR`); for tracing tests, the
/// first tier of a two-tier service (every call relayed to another echo server).
#[derive(Debug, Clone, Default)]
pub struct EchoHandler {
    /// Reply this long after the call arrived.
    pub delay: Duration,
    /// Fail every call.
    pub fail: bool,
    /// Relay every call to this echo service (from the handler, without blocking the
    /// core: the call is made within the one served, and its reply completes it).
    pub forward: Option<echo::EchoClient>,
    /// Log every call (an `info` event through `tracing`, inside the call's span when
    /// tracing is on), for tests.
    pub log: bool,
    /// Answer a call whose message is `peer-certificate` with the certificate the client
    /// presented over TLS (DER; empty if none), for TLS tests.
    pub identify: bool,
}

impl echo::Echo for EchoHandler {
    fn echo(&self, ctx: &CallContext<'_>, msg: Bytes) -> Reply<Bytes> {
        if self.log {
            tracing::info!(bytes = msg.len(), "echo handler");
        }
        if self.identify && &msg[..] == b"peer-certificate" {
            let der = ctx.peer_certificate().unwrap_or_default();
            return Reply::ok(Bytes::copy_from_slice(der));
        }
        if self.fail {
            return Reply::err(netpoll_rpc::Status::internal(
                "this instance fails on purpose",
            ));
        }
        if let Some(next) = &self.forward {
            let (later, reply) = ctx.defer();
            next.within(ctx)
                .echo_with(msg, move |r| later.complete(r.map_err(Into::into)));
            return reply;
        }
        if self.delay.is_zero() {
            return Reply::ok(msg);
        }
        let (later, reply) = ctx.defer();
        let delay = self.delay;
        let _ = ctx.runtime().spawn(ctx.core(), move |core| {
            let at = core.now() + delay;
            core.set_timer(at, move |_| later.complete(Ok(msg)));
        });
        reply
    }
}

/// `echo.proto`: the same over Kitex Protobuf and gRPC; slow on request, as
/// [`EchoHandler`] is.
#[derive(Debug, Clone, Copy, Default)]
pub struct PbEchoHandler {
    /// Reply this long after the call arrived.
    pub delay: Duration,
}

impl pb::echo::Echo for PbEchoHandler {
    fn echo(
        &self,
        ctx: &CallContext<'_>,
        req: pb::echo::EchoRequest,
    ) -> Reply<pb::echo::EchoReply> {
        let reply = pb::echo::EchoReply { msg: req.msg };
        if self.delay.is_zero() {
            return Reply::ok(reply);
        }
        let (later, deferred) = ctx.defer();
        let delay = self.delay;
        let _ = ctx.runtime().spawn(ctx.core(), move |core| {
            let at = core.now() + delay;
            core.set_timer(at, move |_| later.complete(Ok(reply)));
        });
        deferred
    }
}

/// `stream.proto`'s `Streamer`, every call shape: `Repeat` streams `count` copies of its
/// message as fast as the client reads them, `Concat` joins what the client streams,
/// `Chat` echoes each message as it arrives, and `Sleep` replies after its delay (a
/// negative delay is INVALID_ARGUMENT with status details). Each sends the request's
/// `x-echo-back` and `x-echo-back-bin` metadata back as the response's. None blocks the
/// core.
#[derive(Debug, Clone, Copy, Default)]
pub struct StreamerHandler;

/// Metadata `x-echo-back` (and `x-echo-back-bin`) comes back as the response's metadata.
fn echo_back(ctx: &CallContext<'_>) {
    if let Some(tt) = ctx.ttheader() {
        for key in ["x-echo-back", "x-echo-back-bin"] {
            if let Some(v) = tt.str_header(key) {
                ctx.send_back(key, v);
            }
        }
    }
}

/// `Repeat`'s stream: the replies still to send.
struct Repeat {
    msg: Bytes,
    left: i64,
}

impl StreamHandler<(), Chunk> for Repeat {
    fn on_writable(&mut self, out: &mut Outbound<'_, Chunk>) {
        let chunk = Chunk {
            msg: self.msg.clone(),
        };
        while self.left > 0 {
            self.left -= 1;
            if !out.send(&chunk) {
                return; // more when the client has read some
            }
        }
        out.finish(Ok(()));
    }
}

/// `Concat`'s stream: what arrived so far.
#[derive(Default)]
struct Concat {
    joined: Vec<u8>,
}

/// The most `Concat` joins before it refuses the call.
const CONCAT_LIMIT: usize = 64 << 20;

impl StreamHandler<Chunk, Chunk> for Concat {
    fn on_message(&mut self, msg: Chunk, out: &mut Outbound<'_, Chunk>) {
        if self.joined.len() + msg.msg.len() > CONCAT_LIMIT {
            out.finish(Err(netpoll_rpc::Status::new(
                netpoll_rpc::ErrorKind::ResourceExhausted,
                format!("Concat joins at most {CONCAT_LIMIT} bytes"),
            )));
            return;
        }
        self.joined.extend_from_slice(&msg.msg);
    }

    fn on_end(&mut self, out: &mut Outbound<'_, Chunk>) {
        let msg = Bytes::from(std::mem::take(&mut self.joined));
        out.send(&Chunk { msg });
        out.finish(Ok(()));
    }
}

/// `Chat`'s stream: each message back as it arrives (while the client reads, the next
/// messages wait in its window).
struct Chat;

impl StreamHandler<Chunk, Chunk> for Chat {
    fn on_message(&mut self, msg: Chunk, out: &mut Outbound<'_, Chunk>) {
        out.send(&msg);
    }
}

impl pb::streamer::Streamer for StreamerHandler {
    fn repeat(&self, ctx: &CallContext<'_>, req: RepeatRequest) -> OpenStream<(), Chunk> {
        echo_back(ctx);
        if req.count < 0 {
            return Err(netpoll_rpc::Status::new(
                netpoll_rpc::ErrorKind::InvalidArgument,
                format!("count must not be negative, not {}", req.count),
            ));
        }
        Ok(Box::new(Repeat {
            msg: req.msg,
            left: i64::from(req.count),
        }))
    }

    fn concat(&self, ctx: &CallContext<'_>) -> OpenStream<Chunk, Chunk> {
        echo_back(ctx);
        Ok(Box::<Concat>::default())
    }

    fn chat(&self, ctx: &CallContext<'_>) -> OpenStream<Chunk, Chunk> {
        echo_back(ctx);
        Ok(Box::new(Chat))
    }

    fn sleep(
        &self,
        ctx: &CallContext<'_>,
        req: pb::streamer::SleepRequest,
    ) -> Reply<pb::streamer::Chunk> {
        if req.ms < 0 {
            // INVALID_ARGUMENT with gRPC status details: an encoded `google.rpc.Status`
            // carrying the same code and message.
            let message = "ms must not be negative";
            let mut details = vec![0x08, 3, 0x12, message.len() as u8];
            details.extend_from_slice(message.as_bytes());
            return Reply::err(
                netpoll_rpc::Status::new(netpoll_rpc::ErrorKind::InvalidArgument, message)
                    .with_details(details),
            );
        }
        echo_back(ctx);
        let (later, reply) = ctx.defer();
        let delay = Duration::from_millis(u64::try_from(req.ms).unwrap_or(0));
        let chunk = pb::streamer::Chunk { msg: req.msg };
        let _ = ctx.runtime().spawn(ctx.core(), move |core| {
            let at = core.now() + delay;
            core.set_timer(at, move |_| later.complete(Ok(chunk)));
        });
        reply
    }
}

/// `interop.thrift`, as its comments say.
#[derive(Debug, Clone, Default)]
pub struct InteropHandler {
    fired: Arc<AtomicI64>,
}

impl interop::Interop for InteropHandler {
    fn roundtrip(&self, _ctx: &CallContext<'_>, v: interop::AllTypes) -> Reply<interop::AllTypes> {
        Reply::ok(v)
    }

    fn fail_with(
        &self,
        _ctx: &CallContext<'_>,
        code: i32,
        message: ByteString,
    ) -> Reply<i32, interop::InteropFailWithError> {
        if code == 0 {
            Reply::ok(code)
        } else {
            Reply::err(interop::InteropError { code, message })
        }
    }

    fn delayed_echo(&self, ctx: &CallContext<'_>, msg: Bytes, delay_ms: i32) -> Reply<Bytes> {
        // Waits on the core's timer, not on the core: other calls go on meanwhile.
        let (later, reply) = ctx.defer();
        let delay = Duration::from_millis(u64::try_from(delay_ms).unwrap_or(0));
        let _ = ctx.runtime().spawn(ctx.core(), move |core| {
            let at = core.now() + delay;
            core.set_timer(at, move |_| later.complete(Ok(msg)));
        });
        reply
    }

    fn ping(&self, _ctx: &CallContext<'_>) -> Reply<()> {
        Reply::ok(())
    }

    fn fire(&self, _ctx: &CallContext<'_>, x: i64) {
        self.fired.fetch_add(x, Ordering::Relaxed);
    }

    fn fired_total(&self, _ctx: &CallContext<'_>) -> Reply<i64> {
        Reply::ok(self.fired.load(Ordering::Relaxed))
    }
}

/// A server builder with every echo service registered: Thrift `Echo` and `Interop`, and
/// Protobuf `Echo`, on one port.
pub fn builder() -> ServerBuilder {
    builder_with(EchoHandler::default())
}

/// [`builder`] with an `Echo` handler of the given behaviour.
pub fn builder_with(echo: EchoHandler) -> ServerBuilder {
    let delay = echo.delay;
    // gRPC's health service: the server and its echo service report SERVING.
    let health = netpoll_rpc::server::Health::new();
    health.set("echo.Echo", netpoll_rpc::server::ServingStatus::Serving);
    Server::builder()
        .service(health)
        .service(echo::EchoServer::new(echo))
        .service(interop::InteropServer::new(InteropHandler::default()))
        .service(pb::echo::EchoServer::new(PbEchoHandler { delay }))
        .service(pb::streamer::StreamerServer::new(StreamerHandler))
        .reflection(true)
}

/// Starts the echo server on `addr` with `cores` cores.
pub fn serve(addr: &str, cores: usize) -> Result<Server, ServerError> {
    builder().addr(addr).cores(cores).start()
}
