//! Streaming calls (gRPC's client, server and bidirectional streaming), in the shape of
//! the synchronous, owning-core model: a streaming handler is an object the framework
//! tells of each event of its stream, on the core that owns the connection, and that
//! writes into an [`Outbound`] which applies back-pressure.
//!
//! - A **server-streaming** method gets its request when the stream opens, and writes
//!   replies in [`StreamHandler::on_writable`]: called once the stream is open, then each
//!   time the outbound has room again after it was full. It writes until
//!   [`Outbound::send`] says there is no more room, and returns.
//! - A **client-streaming** method is told of each request message
//!   ([`on_message`](StreamHandler::on_message)) and of the end of the client's side
//!   ([`on_end`](StreamHandler::on_end)), where it sends its one reply.
//! - A **bidirectional** method gets both, and may write whenever it is called.
//!
//! No handler blocks its core, and no stream has a thread. While a stream's outbound is
//! full, the messages its client sends wait, unread, in the stream's receive window (which
//! is not credited back until they are handed over), so a client that does not read its
//! replies cannot make the server hold more than the windows it advertises.
//!
//! A stream ends when its handler calls [`Outbound::finish`] (a status, sent as gRPC
//! trailers after every queued message), or is cancelled: the client reset it, its
//! deadline (`grpc-timeout`) passed, or the connection closed. A cancelled handler is told
//! ([`on_cancel`](StreamHandler::on_cancel)) and dropped.

use std::marker::PhantomData;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use bytes::{Bytes, BytesMut};
use netpoll::{ConnId, Core, RuntimeHandle};

use super::context::CallContext;
use super::service::run_handler;
use crate::middleware::Running;
use crate::Status;

/// How a method streams.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StreamKind {
    /// One request, one reply (or none, for a oneway method).
    Unary,
    /// The client sends a stream of messages; the server replies once.
    Client,
    /// The client sends one request; the server replies with a stream.
    Server,
    /// Both sides stream.
    Bidi,
}

/// What a streaming method's handler returns: the object that handles the stream's
/// events, or a status that ends the call at once.
pub type OpenStream<Req, Resp> = Result<Box<dyn StreamHandler<Req, Resp>>, Status>;

/// The events of one stream, as they happen, on the core that owns the connection. Each
/// has a default: ignore messages, finish with OK at the client's end, write nothing when
/// writable, ignore a cancellation.
pub trait StreamHandler<Req, Resp>: 'static {
    /// A request message arrived (client and bidirectional streaming).
    fn on_message(&mut self, msg: Req, out: &mut Outbound<'_, Resp>) {
        let _ = (msg, out);
    }

    /// The client sent its last message (client and bidirectional streaming). The default
    /// finishes the stream with OK, unless it is finished already.
    fn on_end(&mut self, out: &mut Outbound<'_, Resp>) {
        if !out.is_finished() {
            out.finish(Ok(()));
        }
    }

    /// The outbound has room: called once when the stream opens, then each time room comes
    /// back after [`Outbound::send`] returned `false`.
    fn on_writable(&mut self, out: &mut Outbound<'_, Resp>) {
        let _ = out;
    }

    /// The server is shutting down gracefully: no new streams come, and what is still
    /// open when its grace period ends is closed. A stream that would go on for long (a
    /// subscription, a watch) should finish now. The default does nothing.
    fn on_shutdown(&mut self, out: &mut Outbound<'_, Resp>) {
        let _ = out;
    }

    /// The stream ended before the handler finished it: the client reset it, its deadline
    /// passed, or the connection closed. Nothing more can be sent.
    fn on_cancel(&mut self, why: &Status) {
        let _ = why;
    }
}

/// Where a streaming handler writes its replies: messages, then a final status. Messages
/// are queued on the stream and leave as HTTP/2 flow control allows.
pub struct Outbound<'a, Resp> {
    raw: &'a mut dyn RawOut,
    _resp: PhantomData<fn(&Resp)>,
}

impl<Resp> std::fmt::Debug for Outbound<'_, Resp> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Outbound")
            .field("has_room", &self.raw.has_room())
            .field("finished", &self.raw.is_finished())
            .finish()
    }
}

impl<Resp: prost::Message> Outbound<'_, Resp> {
    /// Queues `msg`. Returns whether there is still room: on `false`, stop writing and
    /// wait for [`StreamHandler::on_writable`] (a message sent anyway is still queued). A
    /// message sent after [`finish`](Self::finish) is dropped.
    pub fn send(&mut self, msg: &Resp) -> bool {
        let gzip = self.raw.gzip();
        let Some(queue) = self.raw.queue() else {
            return false;
        };
        let n = crate::wire::frame_grpc_message(msg, gzip, queue);
        self.raw.queued(n)
    }
}

impl<Resp> Outbound<'_, Resp> {
    /// Whether a message sent now would stay within the stream's bounds.
    pub fn has_room(&self) -> bool {
        self.raw.has_room()
    }

    /// Ends the stream: `Ok` or an error status, sent as trailers after the queued
    /// messages. Only the first call counts.
    pub fn finish(&mut self, result: Result<(), Status>) {
        self.raw.finish(result);
    }

    /// Whether the stream was finished.
    pub fn is_finished(&self) -> bool {
        self.raw.is_finished()
    }

    /// A handle that sends on this stream from any thread (for a stream fed by events
    /// elsewhere: a subscription, a watch). Its messages join the stream's queue on the
    /// connection's core, without back-pressure: a sender that outruns its client by more
    /// than the connection's queue bound ends the stream with RESOURCE_EXHAUSTED.
    pub fn sender(&mut self) -> StreamSender<Resp> {
        StreamSender {
            remote: Arc::new(self.raw.remote()),
            _resp: PhantomData,
        }
    }
}

/// What a [`StreamSender`] hands its stream's core.
#[derive(Debug)]
pub(crate) enum Push {
    /// A framed message (prefix included).
    Message(Bytes),
    Finish(Result<(), Status>),
}

/// Hands a [`Push`] to stream `stream` of connection `conn` on its core; supplied by the
/// server connection, so that this module needs nothing of its type.
pub(crate) type PushFn = fn(&mut Core, ConnId, u32, Push);

/// Where a [`StreamSender`]'s messages go.
#[derive(Debug)]
pub(crate) struct Remote {
    pub(crate) rt: RuntimeHandle,
    pub(crate) conn: ConnId,
    pub(crate) stream: u32,
    pub(crate) push: PushFn,
    /// Set when the stream ends.
    pub(crate) closed: Arc<AtomicBool>,
    /// Its messages are gzip-compressed.
    pub(crate) gzip: bool,
}

/// Sends on one stream from any thread: see [`Outbound::sender`]. Clones send on the same
/// stream.
pub struct StreamSender<Resp> {
    remote: Arc<Remote>,
    _resp: PhantomData<fn(&Resp)>,
}

impl<Resp> Clone for StreamSender<Resp> {
    fn clone(&self) -> Self {
        StreamSender {
            remote: self.remote.clone(),
            _resp: PhantomData,
        }
    }
}

impl<Resp> std::fmt::Debug for StreamSender<Resp> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StreamSender")
            .field("stream", &self.remote.stream)
            .field("closed", &self.is_closed())
            .finish()
    }
}

impl<Resp: prost::Message> StreamSender<Resp> {
    /// Queues `msg` on the stream. `false` when the stream has ended (then nothing is
    /// sent); `true` does not promise delivery, as the stream may end meanwhile.
    pub fn send(&self, msg: &Resp) -> bool {
        if self.is_closed() {
            return false;
        }
        let mut buf = BytesMut::new();
        crate::wire::frame_grpc_message(msg, self.remote.gzip, &mut buf);
        self.post(Push::Message(buf.freeze()))
    }
}

impl<Resp> StreamSender<Resp> {
    /// Ends the stream with `result` after what was sent before.
    pub fn finish(&self, result: Result<(), Status>) {
        self.post(Push::Finish(result));
    }

    /// Whether the stream has ended (finished, cancelled, or its connection closed).
    pub fn is_closed(&self) -> bool {
        self.remote.closed.load(Ordering::Acquire)
    }

    fn post(&self, push: Push) -> bool {
        let r = &self.remote;
        let (conn, stream, deliver) = (r.conn, r.stream, r.push);
        r.rt.spawn(conn.core(), move |core| deliver(core, conn, stream, push))
            .is_ok()
    }
}

/// What the connection gives a handler to write into (one stream's queue and status).
pub(crate) trait RawOut {
    /// The stream's queue of DATA payload, to append one framed message to; `None` once
    /// finished.
    fn queue(&mut self) -> Option<&mut BytesMut>;
    /// `n` bytes were appended to the queue: send what the windows allow. Whether there
    /// is still room.
    fn queued(&mut self, n: usize) -> bool;
    fn has_room(&self) -> bool;
    fn finish(&mut self, result: Result<(), Status>);
    fn is_finished(&self) -> bool;
    /// Whether messages are gzip-compressed.
    fn gzip(&self) -> bool;
    /// Where a [`StreamSender`] of this stream posts.
    fn remote(&mut self) -> Remote;
}

/// A stream's handler with its message types erased, as the connection holds it.
pub(crate) trait RawStream {
    fn message(&mut self, msg: Bytes, out: &mut dyn RawOut);
    fn end(&mut self, out: &mut dyn RawOut);
    fn writable(&mut self, out: &mut dyn RawOut);
    fn shutdown(&mut self, out: &mut dyn RawOut);
    fn cancel(&mut self, why: &Status);
}

struct Typed<Req, Resp>(Box<dyn StreamHandler<Req, Resp>>);

fn outbound<Resp>(raw: &mut dyn RawOut) -> Outbound<'_, Resp> {
    Outbound {
        raw,
        _resp: PhantomData,
    }
}

impl<Req, Resp> RawStream for Typed<Req, Resp>
where
    Req: prost::Message + Default + 'static,
    Resp: prost::Message + 'static,
{
    fn message(&mut self, msg: Bytes, out: &mut dyn RawOut) {
        match Req::decode(msg) {
            Ok(m) => self.0.on_message(m, &mut outbound(out)),
            Err(e) => out.finish(Err(Status::protocol_error(format!(
                "a request message does not decode: {e}"
            )))),
        }
    }

    fn end(&mut self, out: &mut dyn RawOut) {
        self.0.on_end(&mut outbound(out))
    }

    fn writable(&mut self, out: &mut dyn RawOut) {
        self.0.on_writable(&mut outbound(out))
    }

    fn shutdown(&mut self, out: &mut dyn RawOut) {
        self.0.on_shutdown(&mut outbound(out))
    }

    fn cancel(&mut self, why: &Status) {
        self.0.on_cancel(why)
    }
}

/// Runs one event of a stream's handler, catching its panic: a panicking handler finishes
/// its stream with INTERNAL (if it can still be finished) and is dropped (`false`).
pub(crate) fn event(out: &mut dyn RawOut, f: impl FnOnce(&mut dyn RawOut)) -> bool {
    match catch_unwind(AssertUnwindSafe(|| f(&mut *out))) {
        Ok(()) => true,
        Err(panic) => {
            let what = super::service::panic_message(&*panic);
            out.finish(Err(Status::internal(format!(
                "stream handler panicked: {what}"
            ))));
            false
        }
    }
}

/// Tells a handler its stream was cancelled, catching its panic (which has nothing left
/// to answer: it is logged).
pub(crate) fn cancel(h: &mut dyn RawStream, why: &Status) {
    if catch_unwind(AssertUnwindSafe(|| h.cancel(why))).is_err() {
        tracing::warn!("a stream handler panicked in on_cancel");
    }
}

/// A stream whose call is opening: its context, and its request for a server-streaming
/// method. Generated code calls one of its methods from [`Service::open`](super::Service::open).
#[derive(Debug)]
pub struct StreamCall<'a> {
    pub(crate) ctx: CallContext<'a>,
    pub(crate) body: Bytes,
}

/// An opened stream (or the status that refused it), for the connection to run.
pub struct Opened {
    pub(crate) handler: Result<Box<dyn RawStream>, Status>,
    /// The middlewares that started the call, to end with the stream.
    pub(crate) running: Option<Running>,
    /// What the handler sent back while opening ([`CallContext::send_back`]): the
    /// response's metadata, in its headers.
    pub(crate) back: Vec<(String, Bytes)>,
}

impl std::fmt::Debug for Opened {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Opened")
            .field("ok", &self.handler.is_ok())
            .finish()
    }
}

impl StreamCall<'_> {
    /// The call's context.
    pub fn context(&self) -> &CallContext<'_> {
        &self.ctx
    }

    /// Opens a server-streaming method: decodes its request `A` and runs `open`.
    pub fn server_streaming<A, R>(
        self,
        open: impl FnOnce(&CallContext<'_>, A) -> OpenStream<(), R>,
    ) -> Opened
    where
        A: prost::Message + Default,
        R: prost::Message + 'static,
    {
        match A::decode(self.body.clone()) {
            Ok(a) => self.run(|ctx| open(ctx, a)),
            Err(e) => self.fail(Status::protocol_error(format!("bad request: {e}"))),
        }
    }

    /// Opens a client- or bidirectional-streaming method: runs `open`, whose handler then
    /// gets the request messages.
    pub fn streaming<A, R>(self, open: impl FnOnce(&CallContext<'_>) -> OpenStream<A, R>) -> Opened
    where
        A: prost::Message + Default + 'static,
        R: prost::Message + 'static,
    {
        self.run(open)
    }

    /// Refuses the call with `status`.
    pub fn fail(self, status: Status) -> Opened {
        Opened {
            handler: Err(status),
            running: self.ctx.mw.borrow_mut().take(),
            back: sent_back(&self.ctx),
        }
    }

    fn run<A, R>(self, open: impl FnOnce(&CallContext<'_>) -> OpenStream<A, R>) -> Opened
    where
        A: prost::Message + Default + 'static,
        R: prost::Message + 'static,
    {
        let ctx = &self.ctx;
        let handler = match run_handler(ctx, || open(ctx)) {
            Ok(Ok(h)) => Ok(Box::new(Typed(h)) as Box<dyn RawStream>),
            Ok(Err(status)) => Err(status),
            Err(panic) => Err(Status::internal(format!(
                "stream handler panicked: {}",
                super::service::panic_message(&*panic)
            ))),
        };
        Opened {
            handler,
            running: ctx.mw.borrow_mut().take(),
            back: sent_back(ctx),
        }
    }
}

/// What a handler sent back through `ctx` (names without Kitex's backward prefix).
fn sent_back(ctx: &CallContext<'_>) -> Vec<(String, Bytes)> {
    let back = std::mem::take(&mut *ctx.back.borrow_mut());
    back.entries
        .into_iter()
        .filter_map(|(k, v)| {
            k.strip_prefix(crate::client::BACKWARD_PREFIX)
                .map(|k| (k.to_owned(), v))
        })
        .collect()
}
