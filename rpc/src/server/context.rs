//! What a handler sees of its call ([`CallContext`]), what it answers ([`Reply`]), and how
//! it answers later without blocking its core ([`Deferred`]).

use std::any::Any;
use std::cell::{Cell, RefCell};
use std::marker::PhantomData;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use netpoll::{ConnId, Core, RuntimeHandle};
use netpoll_codec::frame::TTHeader;

use crate::middleware::Running;
use crate::wire::{Envelope, Headers};
use crate::{ErrorKind, Status};

/// Encodes a method's outcome as a whole reply frame in the call's envelope. Generated code
/// supplies one per method.
pub type ReplyEncoder<T, E> = fn(&Envelope, Result<T, E>, &mut BytesMut, &Headers<'_>);

/// What kind of failure a handler's error is, for middleware and metrics: implemented for
/// [`Status`] and for the generated `{Service}{Method}Error` enums, whose declared
/// exceptions are [`ErrorKind::Declared`].
pub trait ReplyError {
    /// The kind.
    fn error_kind(&self) -> ErrorKind;
}

impl ReplyError for Status {
    fn error_kind(&self) -> ErrorKind {
        self.kind()
    }
}

/// A handler's answer: a result now, or later through a [`Deferred`] handle.
#[must_use = "a handler's reply must be returned"]
#[derive(Debug)]
pub struct Reply<T, E = Status>(pub(crate) ReplyInner<T, E>);

#[derive(Debug)]
pub(crate) enum ReplyInner<T, E> {
    Ready(Result<T, E>),
    Deferred,
}

impl<T, E> Reply<T, E> {
    /// A successful result.
    pub fn ok(value: T) -> Self {
        Reply(ReplyInner::Ready(Ok(value)))
    }

    /// A failure: a declared exception or a [`Status`].
    pub fn err(error: impl Into<E>) -> Self {
        Reply(ReplyInner::Ready(Err(error.into())))
    }

    /// The result, unless the reply was deferred.
    pub fn into_result(self) -> Option<Result<T, E>> {
        match self.0 {
            ReplyInner::Ready(r) => Some(r),
            ReplyInner::Deferred => None,
        }
    }
}

impl<T, E> From<Result<T, E>> for Reply<T, E> {
    fn from(r: Result<T, E>) -> Self {
        Reply(ReplyInner::Ready(r))
    }
}

/// Writes a reply (or holds it in its place) into a connection's output.
pub(crate) type WriteReply = Box<dyn FnOnce(&mut BytesMut, &Headers<'_>)>;

/// Hands a deferred reply to connection `conn` on its core, in its in-order `slot`. The
/// server connection that created the call supplies it, so that this module needs nothing
/// of the connection's type.
pub(crate) type Deliver = fn(&mut Core, ConnId, Option<u64>, WriteReply);

/// Where a deferred reply goes, and what the middlewares need to end the call.
#[derive(Debug)]
pub(crate) struct Target {
    pub(crate) deliver: Deliver,
    pub(crate) rt: RuntimeHandle,
    pub(crate) conn: ConnId,
    pub(crate) envelope: Envelope,
    /// The reply's place in the connection's in-order queue (`None`: out of order allowed).
    pub(crate) slot: Option<u64>,
    pub(crate) service: &'static str,
    pub(crate) peer: Option<SocketAddr>,
    pub(crate) request_bytes: usize,
    pub(crate) received: Instant,
    pub(crate) deadline: Option<Instant>,
    pub(crate) mw: Option<Running>,
    pub(crate) back: crate::Metadata,
    pub(crate) metrics: Option<crate::metrics::Metrics>,
}

/// The call a handler is running: its method, ids and headers, and the way to reply later.
#[derive(Debug)]
pub struct CallContext<'a> {
    pub(crate) envelope: &'a Envelope,
    pub(crate) service: &'static str,
    pub(crate) ttheader: Option<&'a TTHeader>,
    /// The caller's timeout, read once from the TTHeader.
    pub(crate) timeout: Option<Duration>,
    pub(crate) peer: Option<SocketAddr>,
    /// The client's certificate (DER), on a TLS connection whose client presented one.
    pub(crate) peer_certificate: Option<std::rc::Rc<[u8]>>,
    pub(crate) request_bytes: usize,
    pub(crate) deliver: Deliver,
    pub(crate) received: Instant,
    pub(crate) rt: &'a RuntimeHandle,
    pub(crate) conn: ConnId,
    pub(crate) slot: Option<u64>,
    pub(crate) oneway: bool,
    /// The method's [`ReplyEncoder`] as `Any` (so that [`defer`](Self::defer) can check
    /// its types), set once the call's types are known. A `'static` borrow: setting it then
    /// copies nothing of the (large) context, where a borrow of the caller's own value
    /// tied the context to that value's lifetime and made every call copy it.
    pub(crate) encoder: Cell<Option<&'static dyn Any>>,
    pub(crate) deferred: Cell<bool>,
    /// The middlewares that started the call, until it ends.
    pub(crate) mw: RefCell<Option<Running>>,
    /// The span a middleware opened to serve the call (its ids: its `tracestate` is the
    /// caller's, read again when asked for; kept small, as this is on every call).
    pub(crate) span: Cell<Option<crate::trace::SpanIds>>,
    /// Values the handler sends back with the reply (`RPC_BACKWARD_*` headers).
    pub(crate) back: RefCell<crate::Metadata>,
    /// The server's metrics, if it counts calls.
    pub(crate) metrics: Option<&'a crate::metrics::Metrics>,
}

impl CallContext<'_> {
    /// The call, described as server, client and middleware all describe calls.
    pub fn info(&self) -> crate::CallInfo<'_> {
        crate::CallInfo {
            side: crate::Side::Server,
            service: self.service,
            method: &self.envelope.method,
            transport: self.envelope.transport,
            payload: self.envelope.payload,
            peer: self.peer,
            seq_id: self.envelope.seq_id,
            request_bytes: self.request_bytes,
            start: self.received,
            deadline: self.deadline(),
            headers: self.ttheader,
            trace: None,
        }
    }

    /// A value the caller sent for this hop only (Kitex's transient metainfo: TTHeader
    /// string header `RPC_TRANSIT_{key}`).
    pub fn transient(&self, key: &str) -> Option<Bytes> {
        self.header(crate::client::TRANSIT_PREFIX, key)
    }

    /// A value that travels down the whole call chain (Kitex's persistent metainfo:
    /// `RPC_PERSIST_{key}`); calls made with a client `within(ctx)` carry it on.
    pub fn persistent(&self, key: &str) -> Option<Bytes> {
        self.header(crate::client::PERSIST_PREFIX, key)
    }

    fn header(&self, prefix: &str, key: &str) -> Option<Bytes> {
        let tt = self.ttheader?;
        tt.str_headers()
            .find(|(k, _)| {
                k.len() == prefix.len() + key.len()
                    && k.starts_with(prefix.as_bytes())
                    && &k[prefix.len()..] == key.as_bytes()
            })
            .map(|(_, v)| Bytes::copy_from_slice(v))
    }

    /// The W3C trace context of this call: the span a tracing middleware opened to serve
    /// it ([`Metadata::set_trace`](crate::Metadata::set_trace)), else the caller's (TTHeader
    /// `traceparent` and `tracestate`, if it sent a valid one). Calls made with a client
    /// [`within`](crate::client::Client::within) this call are its children.
    pub fn trace(&self) -> Option<crate::trace::TraceContext> {
        match self.span.get() {
            Some(ids) => Some(ids.with_state(self.caller_trace().and_then(|t| t.state))),
            None => self.caller_trace(),
        }
    }

    /// The caller's W3C trace context (TTHeader `traceparent` and `tracestate`), if it
    /// sent a valid one.
    pub fn caller_trace(&self) -> Option<crate::trace::TraceContext> {
        crate::trace::TraceContext::from_ttheader(self.ttheader?)
    }

    /// Sends `key: value` back to the caller with the reply (Kitex's backward metainfo:
    /// `RPC_BACKWARD_{key}`; a client reads them with `call_meta`). For a deferred reply,
    /// values sent back before `defer()` go with it.
    pub fn send_back(&self, key: &str, value: impl Into<Bytes>) {
        self.back.borrow_mut().insert(
            format!("{}{key}", crate::client::BACKWARD_PREFIX),
            value.into(),
        );
    }

    /// The method name as called.
    pub fn method(&self) -> &str {
        &self.envelope.method
    }

    /// The IDL name of the service handling the call.
    pub fn service(&self) -> &'static str {
        self.service
    }

    /// The call's sequence id.
    pub fn seq_id(&self) -> i32 {
        self.envelope.seq_id
    }

    /// How the call arrived (transport, encoding, ids).
    pub fn envelope(&self) -> &Envelope {
        self.envelope
    }

    /// The TTHeader the call came in, for its key/value headers (None for other transports).
    pub fn ttheader(&self) -> Option<&TTHeader> {
        self.ttheader
    }

    /// The caller's address.
    pub fn peer_addr(&self) -> Option<SocketAddr> {
        self.peer
    }

    /// The certificate the client presented over TLS (mTLS; see
    /// `tls::TlsAcceptorBuilder::client_ca`, feature `tls`), in
    /// DER, verified against the server's client CA: for authorising by identity. `None`
    /// on plain connections and for clients that presented none.
    pub fn peer_certificate(&self) -> Option<&[u8]> {
        self.peer_certificate.as_deref()
    }

    /// The core running the handler (and owning the connection).
    pub fn core(&self) -> usize {
        self.conn.core()
    }

    /// The runtime serving the call, to start client calls or tasks on its cores.
    pub fn runtime(&self) -> &RuntimeHandle {
        self.rt
    }

    /// The caller's timeout (TTHeader key 12, milliseconds), if it sent one.
    pub fn timeout(&self) -> Option<Duration> {
        self.timeout
    }

    /// When the caller stops waiting: arrival plus [`timeout`](Self::timeout).
    pub fn deadline(&self) -> Option<Instant> {
        self.timeout().map(|t| self.received + t)
    }

    /// Takes over the reply: returns a [`Deferred`] handle to complete later (from any
    /// thread, or from a callback on this core) and the [`Reply`] the handler returns now.
    /// The core goes on serving other calls meanwhile. For a oneway call the handle's
    /// completion is ignored.
    ///
    /// The types are those of the method's reply and are inferred from the handler's
    /// return type.
    ///
    /// # Panics
    ///
    /// If called twice for one call, or with types other than the method's (only possible
    /// by naming them explicitly). A handler's panic is answered with INTERNAL_ERROR.
    pub fn defer<T: Send + 'static, E: ReplyError + Send + 'static>(
        &self,
    ) -> (Deferred<T, E>, Reply<T, E>) {
        assert!(!self.deferred.replace(true), "defer() called twice");
        if self.oneway {
            return (
                Deferred {
                    target: None,
                    encode: None,
                    _types: PhantomData,
                },
                Reply(ReplyInner::Deferred),
            );
        }
        let encode = self
            .encoder
            .get()
            .and_then(|e| e.downcast_ref::<ReplyEncoder<T, E>>())
            .copied();
        assert!(
            encode.is_some(),
            "defer() with types other than the method's reply"
        );
        (
            Deferred {
                target: Some(Target {
                    deliver: self.deliver,
                    rt: self.rt.clone(),
                    conn: self.conn,
                    envelope: self.envelope.clone(),
                    slot: self.slot,
                    service: self.service,
                    peer: self.peer,
                    request_bytes: self.request_bytes,
                    received: self.received,
                    deadline: self.deadline(),
                    mw: self.mw.borrow_mut().take(),
                    back: std::mem::take(&mut *self.back.borrow_mut()),
                    metrics: self.metrics.map(|m| {
                        m.started(&self.info());
                        m.clone()
                    }),
                }),
                encode,
                _types: PhantomData,
            },
            Reply(ReplyInner::Deferred),
        )
    }
}

/// A reply to send later, from any thread: [`complete`](Deferred::complete) it with the
/// method's result. Replies on a connection keep the order of their calls unless the
/// caller allowed otherwise (TTHeader's out-of-order flag), so later calls' replies wait
/// for this one. Dropping the handle without completing it answers INTERNAL_ERROR.
pub struct Deferred<T, E = Status> {
    target: Option<Target>,
    encode: Option<ReplyEncoder<T, E>>,
    _types: PhantomData<fn(T, E)>,
}

impl<T, E> std::fmt::Debug for Deferred<T, E> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Deferred")
            .field("target", &self.target)
            .finish()
    }
}

impl<T, E> Deferred<T, E> {
    /// Sends `key: value` back to the caller with this reply (Kitex's backward metainfo,
    /// as [`CallContext::send_back`] does before the reply was deferred).
    pub fn send_back(&mut self, key: &str, value: impl Into<Bytes>) {
        if let Some(t) = &mut self.target {
            t.back.insert(
                format!("{}{key}", crate::client::BACKWARD_PREFIX),
                value.into(),
            );
        }
    }
}

impl<T: Send + 'static, E: ReplyError + Send + 'static> Deferred<T, E> {
    /// Sends the reply. It is encoded and written on the connection's core; if the
    /// connection has gone meanwhile, it is dropped.
    pub fn complete(mut self, result: Result<T, E>) {
        let (Some(target), Some(encode)) = (self.target.take(), self.encode) else {
            return;
        };
        let error = result.as_ref().err().map(ReplyError::error_kind);
        send(target, error, move |env, out, h| {
            encode(env, result, out, h)
        });
    }
}

impl<T, E> Drop for Deferred<T, E> {
    fn drop(&mut self) {
        if let Some(target) = self.target.take() {
            let status = Status::internal("the handler dropped its deferred reply");
            send(
                target,
                Some(crate::ErrorKind::Internal),
                move |env, out, h| crate::wire::write_status(env, out, &status, h),
            );
        }
    }
}

fn send(
    target: Target,
    error: Option<crate::ErrorKind>,
    write: impl FnOnce(&Envelope, &mut BytesMut, &Headers<'_>) + Send + 'static,
) {
    let Target {
        deliver,
        rt,
        conn,
        envelope,
        slot,
        service,
        peer,
        request_bytes,
        received,
        deadline,
        mw,
        back,
        metrics,
    } = target;
    // A stopped core has closed the connection already: nothing to answer (the
    // middlewares, dropped with the task, are not told).
    let _ = rt.spawn(conn.core(), move |core| {
        let envelope = std::rc::Rc::new(envelope);
        let written = std::rc::Rc::new(Cell::new(0usize));
        let (env, n) = (envelope.clone(), written.clone());
        let mut reply = mw.as_ref().map(|r| r.reply.clone()).unwrap_or_default();
        reply.entries.extend(back.entries);
        deliver(
            core,
            conn,
            slot,
            Box::new(move |out, hdrs| {
                let before = out.len();
                reply.with_headers(hdrs, |h| write(&env, out, h));
                n.set(out.len() - before);
            }),
        );
        if mw.is_some() || metrics.is_some() {
            let info = crate::CallInfo {
                side: crate::Side::Server,
                service,
                method: &envelope.method,
                transport: envelope.transport,
                payload: envelope.payload,
                peer,
                seq_id: envelope.seq_id,
                request_bytes,
                start: received,
                deadline,
                headers: None,
                trace: None,
            };
            let outcome = crate::Outcome {
                error,
                response_bytes: written.get(),
            };
            if let Some(m) = &metrics {
                m.ended(&info, &outcome, true);
            }
            if let Some(mw) = mw {
                mw.end(&info, &outcome);
            }
        }
    });
}
