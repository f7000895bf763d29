//! [`Service`]: what generated code implements to serve an IDL service, and the
//! [`Call`] it is handed for each request.

use std::panic::{catch_unwind, AssertUnwindSafe};

use bytes::{Bytes, BytesMut};
use netpoll_codec::thrift::{Message, MessageType};

use super::context::{CallContext, Reply, ReplyEncoder, ReplyError, ReplyInner};
use super::order::Sink;
use super::stream::{Opened, StreamCall, StreamKind};
use crate::middleware::Running;
use crate::wire::{self, Envelope, Headers, Payload};
use crate::{ErrorKind, Outcome, Status};

/// Which IDL a service comes from, which decides the payloads it accepts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Idl {
    /// Thrift: binary or compact payloads.
    Thrift,
    /// Protobuf: Kitex Protobuf payloads.
    Protobuf,
}

/// One method of a service.
#[derive(Debug, Clone, Copy)]
pub struct MethodInfo {
    /// The name callers use on the wire.
    pub name: &'static str,
    /// Whether callers expect no reply.
    pub oneway: bool,
    /// How it streams. Streaming methods are served over gRPC only, through
    /// [`Service::open`].
    pub kind: StreamKind,
}

/// A served IDL service. Generated code implements it (as `{Service}Server`) around the
/// user's implementation of the service's trait; register it with
/// [`ServerBuilder::service`](super::ServerBuilder::service).
pub trait Service: Send + Sync + 'static {
    /// The IDL service name (what TTHeader's `isn` names).
    fn name(&self) -> &'static str;
    /// The fully qualified name: `package.Service` for Protobuf, as gRPC paths
    /// (`/package.Service/Method`) name it. Defaults to [`name`](Service::name).
    fn full_name(&self) -> &'static str {
        self.name()
    }
    /// Thrift or Protobuf.
    fn idl(&self) -> Idl;
    /// The methods, indexed as [`call`](Service::call) receives them.
    fn methods(&self) -> &'static [MethodInfo];
    /// Runs method `index` for `call`, on the core that owns the connection.
    fn call(&self, index: usize, call: Call<'_, '_, '_>);
    /// The encoded `FileDescriptorSet` the service was compiled from (Protobuf services;
    /// generated code supplies it), for gRPC server reflection. Default: none.
    fn file_descriptor_set(&self) -> Option<&'static [u8]> {
        None
    }
    /// Opens a stream of streaming method `index` (one whose
    /// [`kind`](MethodInfo::kind) is not [`StreamKind::Unary`]). The default refuses it.
    fn open(&self, index: usize, call: StreamCall<'_>) -> Opened {
        let _ = index;
        call.fail(Status::unknown_method(
            "this service has no streaming methods",
        ))
    }
}

/// One request being served: decode its arguments, run the handler, reply. Generated code
/// calls exactly one of its methods.
#[derive(Debug)]
pub struct Call<'a, 'c, 'n> {
    /// Borrowed, not owned: the context is large, and a call is handed by value through
    /// the service's dispatch and the generated code (each hand-off was a copy of it).
    pub(crate) ctx: &'a CallContext<'a>,
    pub(crate) body: Bytes,
    pub(crate) sink: &'a mut Sink<'c, 'n>,
}

impl Call<'_, '_, '_> {
    /// The call's envelope.
    pub fn envelope(&self) -> &Envelope {
        self.ctx.envelope
    }

    /// Decodes Thrift arguments `A`, runs `handler`, and replies with `encode`. A body that
    /// does not decode is answered with PROTOCOL_ERROR; a panicking handler with
    /// INTERNAL_ERROR. `encode` is a static borrow of a fn pointer, which a constant
    /// expression gives: `&(my_reply as ReplyEncoder<_, _>)`.
    pub fn thrift<A: Message, T: Send + 'static, E: ReplyError + Send + 'static>(
        self,
        handler: impl FnOnce(&CallContext<'_>, A) -> Reply<T, E>,
        encode: &'static ReplyEncoder<T, E>,
    ) {
        let args = match wire::decode_thrift::<A>(self.ctx.envelope.payload, self.body.clone()) {
            Ok(a) => a,
            Err(e) => return self.fail(Status::protocol_error(format!("bad arguments: {e}"))),
        };
        self.run(|ctx| handler(ctx, args), encode)
    }

    /// Decodes Thrift arguments `A` of a oneway call and runs `handler`; nothing is sent
    /// back, whatever happens.
    pub fn thrift_oneway<A: Message>(self, handler: impl FnOnce(&CallContext<'_>, A)) {
        let error = match wire::decode_thrift::<A>(self.ctx.envelope.payload, self.body.clone()) {
            Ok(args) => {
                let ctx = self.ctx;
                run_handler(ctx, || handler(ctx, args))
                    .err()
                    .map(|_| ErrorKind::Internal)
            }
            Err(_) => Some(ErrorKind::Protocol),
        };
        finish(self.ctx, error, 0);
    }

    /// Decodes a protobuf request `A`, runs `handler`, and replies with `encode` (given as
    /// for [`thrift`](Self::thrift)).
    pub fn protobuf<
        A: prost::Message + Default,
        T: Send + 'static,
        E: ReplyError + Send + 'static,
    >(
        self,
        handler: impl FnOnce(&CallContext<'_>, A) -> Reply<T, E>,
        encode: &'static ReplyEncoder<T, E>,
    ) {
        let args = match A::decode(self.body.clone()) {
            Ok(a) => a,
            Err(e) => return self.fail(Status::protocol_error(format!("bad request: {e}"))),
        };
        self.run(|ctx| handler(ctx, args), encode)
    }

    /// Answers with an error status (or nothing, for a oneway call).
    pub fn fail(self, status: Status) {
        let mut bytes = 0;
        if !self.ctx.oneway {
            let env = self.ctx.envelope;
            reply(self.sink, self.ctx, |out, h| {
                let before = out.len();
                wire::write_status(env, out, &status, h);
                bytes = out.len() - before;
            });
        }
        finish(self.ctx, Some(status.kind()), bytes);
    }

    fn run<T: Send + 'static, E: ReplyError + Send + 'static>(
        self,
        handler: impl FnOnce(&CallContext<'_>) -> Reply<T, E>,
        encode: &'static ReplyEncoder<T, E>,
    ) {
        let ctx = self.ctx;
        ctx.encoder.set(Some(encode));
        let outcome = run_handler(ctx, || handler(ctx));
        let deferred = ctx.deferred.get();
        let env = ctx.envelope;
        let slot = ctx.slot;
        let mut bytes = 0;
        let error = match outcome {
            Ok(Reply(ReplyInner::Ready(r))) if !deferred => {
                let error = r.as_ref().err().map(ReplyError::error_kind);
                reply(self.sink, ctx, |out, h| {
                    let before = out.len();
                    encode(env, r, out, h);
                    bytes = out.len() - before;
                });
                error
            }
            // The Deferred handle owns the reply now (and answers even if dropped), and
            // ends the middlewares when it does. A oneway call's handle answers nothing,
            // so nothing waits for it.
            _ if deferred => {
                if !ctx.oneway {
                    self.sink.deferred(slot);
                }
                return;
            }
            Ok(_) => {
                reply(self.sink, ctx, |out, h| {
                    let s = Status::internal("handler returned a deferred reply it did not create");
                    let before = out.len();
                    wire::write_status(env, out, &s, h);
                    bytes = out.len() - before;
                });
                Some(ErrorKind::Internal)
            }
            Err(panic) => {
                let what = panic_message(&*panic);
                reply(self.sink, ctx, |out, h| {
                    let s = Status::internal(format!("handler panicked: {what}"));
                    let before = out.len();
                    wire::write_status(env, out, &s, h);
                    bytes = out.len() - before;
                });
                Some(ErrorKind::Internal)
            }
        };
        finish(ctx, error, bytes);
    }
}

/// Runs a handler, catching its panic, inside what the call's middlewares keep entered
/// while it runs (a span). The borrow of their states ends before it runs: the handler
/// may take the call over (`defer`).
pub(crate) fn run_handler<R>(
    ctx: &CallContext<'_>,
    handler: impl FnOnce() -> R,
) -> std::thread::Result<R> {
    let entered = ctx.mw.borrow().as_ref().map(Running::enter);
    let outcome = catch_unwind(AssertUnwindSafe(handler));
    drop(entered);
    outcome
}

/// Writes (or holds) the call's reply, with the headers its middlewares added.
fn reply(
    sink: &mut Sink<'_, '_>,
    ctx: &CallContext<'_>,
    write: impl FnOnce(&mut BytesMut, &Headers<'_>),
) {
    let mw = ctx.mw.borrow();
    let back = ctx.back.borrow();
    match (mw.as_ref().filter(|r| !r.reply.is_empty()), back.is_empty()) {
        (None, true) => sink.reply(ctx.slot, write),
        (Some(r), true) => sink.reply(ctx.slot, |out, h| {
            r.reply.with_headers(h, |h| write(out, h))
        }),
        (r, false) => {
            let mut all = r.map(|r| r.reply.clone()).unwrap_or_default();
            all.entries.extend(back.entries.iter().cloned());
            sink.reply(ctx.slot, |out, h| all.with_headers(h, |h| write(out, h)))
        }
    }
}

/// Ends the call for the middlewares that started it.
fn finish(ctx: &CallContext<'_>, error: Option<ErrorKind>, response_bytes: usize) {
    if let Some(kind) = error {
        tracing::debug!(
            service = ctx.service,
            method = ctx.method(),
            peer = ?ctx.peer,
            error = kind.name(),
            trace_id = ctx.trace().map(|t| t.trace_id_hex()).as_deref(),
            "call failed"
        );
    }
    // Looked at before it is taken: taking an empty one still copies the whole (large)
    // slot out, on every call of a server without middlewares.
    let running = if ctx.mw.borrow().is_some() {
        ctx.mw.borrow_mut().take()
    } else {
        None
    };
    if running.is_none() && ctx.metrics.is_none() {
        return;
    }
    let info = ctx.info();
    let outcome = Outcome {
        error,
        response_bytes,
    };
    if let Some(m) = ctx.metrics {
        m.ended_in_pass(&info, &outcome);
    }
    if let Some(running) = running {
        running.end(&info, &outcome);
    }
}

pub(crate) fn panic_message(p: &(dyn std::any::Any + Send)) -> String {
    if let Some(s) = p.downcast_ref::<&str>() {
        (*s).to_owned()
    } else if let Some(s) = p.downcast_ref::<String>() {
        s.clone()
    } else {
        "(no message)".to_owned()
    }
}

/// Writes a Thrift method's reply: `Ok` as a REPLY carrying the method's result struct,
/// `Err` as an EXCEPTION carrying the status. A result that cannot be encoded is answered
/// with INTERNAL_ERROR. Generated [`ReplyEncoder`]s call this.
pub fn encode_thrift_reply<R: Message>(
    env: &Envelope,
    out: &mut BytesMut,
    h: &Headers<'_>,
    result: Result<R, Status>,
) {
    match result {
        Ok(r) => {
            if let Err(e) = wire::write_thrift(env, out, MessageType::Reply, &r, h) {
                let s = Status::internal(format!("cannot encode the reply: {e}"));
                wire::write_status(env, out, &s, h);
            }
        }
        Err(s) => wire::write_status(env, out, &s, h),
    }
}

/// Writes a Protobuf method's reply: `Ok` as a REPLY carrying the message, `Err` as an
/// EXCEPTION carrying `ErrorProto`. Generated [`ReplyEncoder`]s call this.
pub fn encode_pb_reply<R: prost::Message>(
    env: &Envelope,
    out: &mut BytesMut,
    h: &Headers<'_>,
    result: Result<R, Status>,
) {
    match result {
        Ok(r) => {
            if let Err(e) = wire::write_pb(env, out, MessageType::Reply, &r, h) {
                let s = Status::internal(format!("cannot encode the reply: {e}"));
                wire::write_status(env, out, &s, h);
            }
        }
        Err(s) => wire::write_status(env, out, &s, h),
    }
}

/// Whether a service of `idl` accepts `payload`.
pub(crate) fn accepts(idl: Idl, payload: Payload) -> bool {
    match idl {
        Idl::Thrift => payload.is_thrift(),
        Idl::Protobuf => payload == Payload::Protobuf,
    }
}
