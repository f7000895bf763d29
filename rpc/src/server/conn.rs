//! One server connection: protocol detection, framing, dispatch, bounds on what one peer
//! may have in flight, deferred replies, timeouts and graceful shutdown.

use std::cell::{Cell, RefCell};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;

use bytes::{Bytes, BytesMut};
use netpoll::{CloseReason, Conn, ConnId, Core, Handler, Input, TimerId};
use netpoll_codec::frame::{self, Protocol, Split, Splitter};
use netpoll_codec::thrift::{ApplicationExceptionKind, MessageType};

use super::context::{CallContext, WriteReply};
use super::framing::{Detect, Framing, Inner};
use super::grpc::{StreamEnd, DEADLINE_TIMER, FLUSH_TIMER, GRPC_TRANSPORT, H2};
use super::order::{Deferrals, Order, Sink};
use super::service::{accepts, Call};
use super::stats::CloseCause;
use super::stream::{Push, StreamCall, StreamKind};
use super::Shared;
use crate::middleware;
use crate::wire::{self, Headers, Transport};
use crate::Status;

const IDLE_TIMER: u64 = 1;
const READ_TIMER: u64 = 2;
const DRAIN_READ_TIMER: u64 = 3;

/// How long a draining connection reads after it stops being throttled, for calls the
/// peer sent that the throttle left in the socket, before it closes.
const DRAIN_READ: std::time::Duration = std::time::Duration::from_millis(20);

const NO_HEADERS: Headers<'static> = Headers {
    flags: 0,
    ints: &[],
    strs: &[],
};
const CRRST: Headers<'static> = Headers {
    flags: 0,
    ints: &[],
    strs: &[(frame::str_key::CONNECTION_RESET, b"1")],
};

/// What `serve` needs of a gRPC call beyond its message.
struct GrpcCall<'a> {
    h2: &'a mut H2,
    /// Its stream: the call's sequence id.
    stream: u32,
    timeout: Option<std::time::Duration>,
    /// The service and method its path named.
    route: super::router::Route,
    /// Its metadata, as headers.
    meta: Option<netpoll_codec::frame::TTHeader>,
    /// How its method streams.
    kind: StreamKind,
}

/// What a connection speaks.
#[derive(Debug, Clone, Copy)]
enum Proto {
    /// A built-in protocol.
    Builtin(Protocol),
    /// The application's framing with this index.
    Custom(u16),
    /// gRPC over HTTP/2.
    Grpc,
}

/// The handler of one server connection.
pub(crate) struct ServerConn {
    shared: Arc<Shared>,
    protocol: Option<Proto>,
    splitter: Splitter,
    peer: Option<SocketAddr>,
    /// The certificate the client presented over TLS (mTLS), DER; read once.
    peer_certificate: Option<std::rc::Rc<[u8]>>,
    order: Order,
    /// Deferred replies not delivered yet.
    deferred: Deferrals,
    /// Close once nothing is in flight (shutdown, or the peer finished sending).
    draining: bool,
    last_active: Instant,
    /// When the first byte of the frame being received arrived (for the read timeout).
    partial_since: Option<Instant>,
    /// When the oldest byte not yet served arrived: a partial frame, or whole frames left
    /// unread while reading was paused. A call's deadline counts from its arrival.
    pending_since: Option<Instant>,
    /// The unserved input is whole frames held back while throttled (all arrived by
    /// `pending_since`), not just the start of one frame.
    held_frames: bool,
    idle_timer: Option<TimerId>,
    read_timer: Option<TimerId>,
    /// Why this side closed the connection, if it did.
    cause: Option<CloseCause>,
    /// Draining, it stopped being throttled: it reads what the throttle left in the socket
    /// for a moment before closing.
    drain_reading: bool,
    /// The server's middlewares, in an `Arc` of this connection's own: each call clones
    /// it, and a shared one would be a counter every core writes.
    mw: middleware::Stack,
    /// The HTTP/2 state, on a gRPC connection.
    grpc: Option<Box<H2>>,
}

impl ServerConn {
    pub(crate) fn new(shared: Arc<Shared>, now: Instant) -> Self {
        let mw = if shared.middleware.is_empty() {
            shared.middleware.clone()
        } else {
            shared.middleware.iter().cloned().collect()
        };
        ServerConn {
            mw,
            shared,
            protocol: None,
            splitter: Splitter::default(),
            peer: None,
            peer_certificate: None,
            grpc: None,
            order: Order::default(),
            deferred: Deferrals::default(),
            draining: false,
            last_active: now,
            partial_since: None,
            pending_since: None,
            held_frames: false,
            idle_timer: None,
            read_timer: None,
            cause: None,
            drain_reading: false,
        }
    }

    fn headers(conn: &mut Conn<'_>) -> &'static Headers<'static> {
        if conn.core().is_shutting_down() {
            &CRRST
        } else {
            &NO_HEADERS
        }
    }

    /// Closes gracefully, recording why.
    fn close(&mut self, conn: &mut Conn<'_>, cause: CloseCause) {
        self.cause.get_or_insert(cause);
        conn.close();
    }

    /// Closes at once, recording why.
    fn abort(&mut self, conn: &mut Conn<'_>, cause: CloseCause) {
        self.cause.get_or_insert(cause);
        conn.abort();
    }

    /// Whether this peer has as much in flight as it may: calls whose replies are not
    /// written yet, or held replies plus queued output over the high-water mark.
    ///
    /// Every state this returns true in has a deferred reply outstanding (only those hold
    /// replies back), whose delivery checks again; queued output alone is netpoll's own
    /// back-pressure, which resumes by itself as the peer drains.
    fn over_limit(&self, conn: &Conn<'_>) -> bool {
        let limits = &self.shared.limits;
        let held = self.order.held_bytes();
        self.order.in_flight() as usize + self.deferred.unordered >= limits.max_in_flight
            || (held > 0 && held + conn.pending_output() > limits.high_water)
    }

    /// Stops reading while over the limit; reads again once under it. The connection is
    /// throttled exactly when its reading is paused: nothing else pauses it.
    fn throttle(&mut self, conn: &mut Conn<'_>) -> bool {
        let over = self.over_limit(conn);
        let throttled = conn.is_reading_paused();
        if over && !throttled {
            conn.pause_reading();
        } else if !over && throttled {
            conn.resume_reading();
        }
        over
    }

    /// A deferred reply arrives (on this core).
    pub(crate) fn deliver(
        &mut self,
        conn: &mut Conn<'_>,
        slot: Option<u64>,
        write: impl FnOnce(&mut BytesMut, &Headers<'_>),
    ) {
        self.deferred.remove(slot);
        let headers = Self::headers(conn);
        let framing = framing_of(&self.shared, self.protocol);
        Sink {
            conn,
            order: &mut self.order,
            deferred: &mut self.deferred,
            headers,
            framing,
            grpc: self.grpc.as_deref_mut(),
        }
        .reply(slot, write);
        if conn.is_reading_paused() && !self.throttle(conn) && self.draining && !self.drain_reading
        {
            // Calls the throttle left unread may still be in the socket: read them before
            // closing.
            self.drain_reading = true;
            conn.set_timer(conn.now() + DRAIN_READ, DRAIN_READ_TIMER);
        }
        self.close_if_drained(conn);
    }

    /// Closes a draining connection once every call it received is answered, including
    /// calls still unread because the connection was throttled.
    fn close_if_drained(&mut self, conn: &mut Conn<'_>) {
        if self.draining
            && self.deferred.all == 0
            && self.order.in_flight() == 0
            && !conn.is_reading_paused()
            && !self.held_frames
            && !self.drain_reading
            && conn.unread_len() == 0
            && self.grpc.as_ref().is_none_or(|h| h.idle())
        {
            conn.close();
        }
    }

    fn arm_read_timer(&mut self, conn: &mut Conn<'_>, since: Instant) {
        if let (Some(limit), None) = (self.shared.read_timeout, self.read_timer) {
            self.read_timer = Some(conn.set_timer(since + limit, READ_TIMER));
        }
    }

    /// Serves one whole frame whose first byte arrived at `arrived`.
    fn serve(
        &mut self,
        conn: &mut Conn<'_>,
        protocol: Proto,
        frame: Bytes,
        arrived: Instant,
        headers: &'static Headers<'static>,
        grpc: Option<GrpcCall<'_>>,
    ) -> Result<(), CloseCause> {
        let frame_len = frame.len();
        let shared = &*self.shared;
        let (grpc, grpc_timeout, grpc_route, grpc_meta, kind) = match grpc {
            Some(g) => (
                Some(g.h2),
                g.timeout,
                Some((g.route, g.stream)),
                g.meta,
                g.kind,
            ),
            None => (None, None, None, None, StreamKind::Unary),
        };
        // A frame whose envelope cannot be read cannot be answered: close.
        let (parsed, framing) = match protocol {
            Proto::Builtin(p) => (
                wire::parse(p, frame).map_err(|_| CloseCause::BadFrame)?,
                None,
            ),
            Proto::Custom(i) => {
                let f = &*shared.framings[usize::from(i)];
                let parsed = match f.open(frame).map_err(|_| CloseCause::BadFrame)? {
                    Inner::Message(payload, message) => {
                        wire::parse_message(Transport::Custom(i), payload, message)
                    }
                    Inner::Frame(p, inner) => wire::parse(p, inner),
                }
                .map_err(|_| CloseCause::BadFrame)?;
                (parsed, Some(f))
            }
            Proto::Grpc => {
                // The HTTP/2 layer routed it and took the message out of its stream: the
                // envelope is made, not read, and the stream's id is its sequence id.
                let Some((route, stream)) = grpc_route else {
                    return Err(CloseCause::BadFrame);
                };
                let (svc, index) = shared.router.at(route);
                let stream = stream as i32;
                let parsed = wire::Parsed {
                    envelope: wire::Envelope {
                        transport: Transport::Custom(GRPC_TRANSPORT),
                        payload: wire::Payload::Protobuf,
                        method: netpoll_codec::ByteString::from_static(svc.methods()[index].name),
                        seq_id: stream,
                        header_seq: stream,
                        kind: MessageType::Call,
                    },
                    body: frame,
                    // Its metadata, read as headers by middleware and handlers.
                    ttheader: grpc_meta,
                };
                (parsed, None)
            }
        };
        let env = &parsed.envelope;
        let tt = parsed.ttheader.as_ref();
        // gRPC streams are independent: their replies go in any order.
        let out_of_order =
            grpc.is_some() || tt.is_some_and(|t| t.flags() & frame::flags::OUT_OF_ORDER != 0);
        let mut sink = Sink {
            conn,
            order: &mut self.order,
            deferred: &mut self.deferred,
            headers,
            framing,
            grpc,
        };
        if !matches!(env.kind, MessageType::Call | MessageType::Oneway) {
            let slot = (!out_of_order).then(|| sink.order.take());
            let s = Status::new(
                ApplicationExceptionKind::InvalidMessageType,
                format!("a server takes calls, not {:?} messages", env.kind),
            );
            sink.reply(slot, |out, h| wire::write_status(env, out, &s, h));
            return Ok(());
        }
        let route = match grpc_route {
            // Routed by its path already.
            Some((route, _)) => Some(shared.router.at(route)),
            None => shared.router.find(&env.method, env.payload, || {
                tt.and_then(|t| t.str_header(frame::str_key::IDL_SERVICE_NAME))
            }),
        };
        // The caller expects a reply exactly when it sent a CALL.
        let wants_reply = env.kind == MessageType::Call;
        let slot = (wants_reply && !out_of_order).then(|| sink.order.take());
        let (svc, index) = match route {
            Some((svc, i)) if accepts(svc.idl(), env.payload) => (svc, i),
            found => {
                if wants_reply {
                    let s = match found {
                        Some((svc, _)) => Status::new(
                            ApplicationExceptionKind::InvalidProtocol,
                            format!(
                                "{}.{} is not served over {:?}",
                                svc.name(),
                                env.method,
                                env.payload
                            ),
                        ),
                        None => Status::unknown_method(format!("unknown method {}", &*env.method)),
                    };
                    sink.reply(slot, |out, h| wire::write_status(env, out, &s, h));
                }
                return Ok(());
            }
        };
        let method = &svc.methods()[index];
        if method.kind != kind {
            // A streaming method called as a unary one (over Thrift's or Kitex's framing).
            let s = Status::new(
                ApplicationExceptionKind::InvalidProtocol,
                format!("{} streams: call it over gRPC", &*env.method),
            );
            sink.reply(slot, |out, h| wire::write_status(env, out, &s, h));
            return Ok(());
        }
        if method.oneway == wants_reply {
            // The message type disagrees with the IDL. A CALL to a oneway method is
            // answered (its caller waits); a ONEWAY to a two-way method is dropped (its
            // caller reads nothing). Neither runs the handler.
            if wants_reply {
                let s = Status::new(
                    ApplicationExceptionKind::InvalidMessageType,
                    format!("{} is oneway: send it as ONEWAY, not CALL", &*env.method),
                );
                sink.reply(slot, |out, h| wire::write_status(env, out, &s, h));
            } else {
                tracing::debug!(
                    method = &*env.method,
                    "ONEWAY message to a two-way method dropped"
                );
            }
            return Ok(());
        }
        let peer = self.peer;
        let ctx = CallContext {
            peer_certificate: self.peer_certificate.clone(),
            envelope: env,
            service: svc.name(),
            ttheader: tt,
            timeout: tt.and_then(|t| t.rpc_timeout()).or(grpc_timeout),
            peer,
            request_bytes: frame_len,
            deliver: deliver_reply,
            received: arrived,
            rt: &shared.rt,
            conn: sink.conn.id(),
            slot,
            oneway: !wants_reply,
            encoder: Cell::new(None),
            deferred: Cell::new(false),
            mw: RefCell::new(None),
            span: Cell::new(None),
            back: RefCell::new(crate::Metadata::default()),
            metrics: shared.metrics.as_ref(),
        };
        // A caller that stopped waiting is not served: its deadline is when the request's
        // first byte arrived plus the timeout it sent.
        if let Some(deadline) = ctx.deadline() {
            if netpoll::now() >= deadline {
                let mut bytes = 0;
                if wants_reply {
                    let s = Status::deadline_exceeded(format!(
                        "the caller's {:?} timeout passed before the handler ran",
                        ctx.timeout().unwrap_or_default()
                    ));
                    sink.reply(slot, |out, h| {
                        let before = out.len();
                        wire::write_status(env, out, &s, h);
                        bytes = out.len() - before;
                    });
                }
                answered_early(&ctx, crate::ErrorKind::DeadlineExceeded, bytes);
                return Ok(());
            }
        }
        // Middlewares see the call before its handler, and may answer it instead.
        if !self.mw.is_empty() {
            let mut meta = crate::Metadata::default();
            match middleware::start(&self.mw, &ctx.info(), &mut meta) {
                Ok(running) => {
                    ctx.span.set(meta.trace.take().map(|t| t.ids()));
                    *ctx.mw.borrow_mut() = running.map(|mut r| {
                        r.reply = meta;
                        r
                    })
                }
                Err(status) => {
                    let mut bytes = 0;
                    if wants_reply {
                        sink.reply(slot, |out, h| {
                            let before = out.len();
                            meta.with_headers(h, |h| wire::write_status(env, out, &status, h));
                            bytes = out.len() - before;
                        });
                    }
                    answered_early(&ctx, status.kind(), bytes);
                    return Ok(());
                }
            }
        }
        if kind != StreamKind::Unary {
            // A stream opens: its handler runs until the stream ends.
            let metrics = ctx.metrics.cloned();
            if let Some(m) = &metrics {
                m.started(&ctx.info());
            }
            let (deadline, request_bytes) = (ctx.deadline(), ctx.request_bytes);
            let opened = svc.open(
                index,
                StreamCall {
                    ctx,
                    body: parsed.body.clone(),
                },
            );
            let stream = parsed.envelope.seq_id as u32;
            let end = Box::new(StreamEnd {
                running: opened.running,
                metrics,
                envelope: parsed.envelope,
                headers: parsed.ttheader,
                service: svc.name(),
                peer,
                request_bytes,
                start: arrived,
                deadline,
            });
            if let Some(h2) = sink.grpc {
                h2.attach(sink.conn, stream, opened.handler, end, &opened.back);
            }
            return Ok(());
        }
        let call = Call {
            ctx: &ctx,
            body: parsed.body.clone(),
            sink: &mut sink,
        };
        svc.call(index, call);
        Ok(())
    }

    /// Serves the whole frames of `input`, as far as the bounds allow.
    fn read(&mut self, conn: &mut Conn<'_>, input: &mut Input<'_>) {
        let now = conn.now();
        self.last_active = now;
        let protocol = match self.protocol {
            Some(p) => p,
            None => match self.detect(input.chunk()) {
                Err(()) => {
                    // Not a protocol served here: nothing can be answered.
                    self.abort(conn, CloseCause::UnknownProtocol);
                    return;
                }
                Ok(Some(p)) => {
                    self.protocol = Some(p);
                    // Over TLS the handshake is done by the first bytes of a call.
                    #[cfg(feature = "tls")]
                    {
                        self.peer_certificate = conn
                            .tls()
                            .and_then(|t| t.peer_certificates())
                            .and_then(|chain| chain.first())
                            .map(|c| std::rc::Rc::from(c.as_ref()));
                    }
                    p
                }
                Ok(None) => {
                    input.need(input.len() + 1);
                    self.partial_since.get_or_insert(now);
                    self.arm_read_timer(conn, now);
                    return;
                }
            },
        };
        let headers = Self::headers(conn);
        if let Proto::Grpc = protocol {
            return self.read_grpc(conn, input, headers);
        }
        // The first frame began with the oldest unserved byte; the frames after it arrived
        // now, unless they were held back whole while throttled.
        let oldest = self.pending_since.take().unwrap_or(now);
        let resumed = self.held_frames;
        let later = if resumed { oldest } else { now };
        self.held_frames = false;
        let mut arrived = oldest;
        loop {
            if self.throttle(conn) {
                // Too much in flight: the rest waits, unread, until replies go out. It is
                // not a slow sender, so the read timeout does not run meanwhile.
                if !input.is_empty() {
                    self.pending_since = Some(arrived);
                    self.held_frames = true;
                }
                self.partial_since = None;
                return;
            }
            let max = self.shared.max_frame;
            let split = match protocol {
                Proto::Builtin(p) => self.splitter.split(p, input.chunk(), max),
                Proto::Custom(i) => self.shared.framings[usize::from(i)].split(input.chunk(), max),
                Proto::Grpc => unreachable!("gRPC connections are read by read_grpc"),
            };
            match split {
                Ok(Split::Frame(len)) => {
                    let frame = input.split_to(len);
                    // A frame finished: the read timeout restarts with the next one.
                    self.partial_since = None;
                    let at = arrived;
                    arrived = later;
                    if let Err(cause) = self.serve(conn, protocol, frame, at, headers, None) {
                        self.close(conn, cause);
                        return;
                    }
                }
                Ok(Split::NeedMore(n)) => {
                    input.need(n);
                    if input.is_empty() {
                        self.partial_since = None;
                    } else {
                        self.pending_since = Some(arrived);
                        // A frame held while throttled was not slow to arrive: its read
                        // timeout starts when reading resumed.
                        let start = if resumed { now } else { arrived };
                        let since = *self.partial_since.get_or_insert(start);
                        self.arm_read_timer(conn, since);
                    }
                    return;
                }
                Err(e) => {
                    // Too large, or not a frame: the stream cannot be resynchronised.
                    tracing::debug!(peer = ?self.peer, error = %e, "bad frame; closing");
                    let cause = match e {
                        frame::FrameError::TooLarge { .. } => CloseCause::FrameTooLarge,
                        _ => CloseCause::BadFrame,
                    };
                    self.close(conn, cause);
                    return;
                }
            }
        }
    }
}

impl ServerConn {
    /// Reads a gRPC connection's input: HTTP/2 frames, and the calls whose requests are
    /// whole, served in the order they completed.
    fn read_grpc(
        &mut self,
        conn: &mut Conn<'_>,
        input: &mut Input<'_>,
        headers: &'static Headers<'static>,
    ) {
        // HTTP/2 keeps its own state of partial frames; the Thrift read timeout does not
        // apply (a preface split over two reads started it).
        self.partial_since = None;
        self.pending_since = None;
        if self.throttle(conn) {
            return; // the rest waits, unread, until replies go out
        }
        let mut h2 = self
            .grpc
            .take()
            .unwrap_or_else(|| Box::new(H2::new(push_stream)));
        let mut ready = std::mem::take(&mut h2.ready);
        let read = h2.read(conn, input, &self.shared, &mut ready);
        for call in ready.drain(..) {
            if !h2.has_stream(call.stream) {
                continue; // reset by the client in the same read: not served
            }
            let r = self.serve(
                conn,
                Proto::Grpc,
                call.message,
                call.arrived,
                headers,
                Some(GrpcCall {
                    h2: &mut h2,
                    stream: call.stream,
                    timeout: call.timeout,
                    route: call.route,
                    meta: call.meta,
                    kind: call.kind,
                }),
            );
            if let Err(cause) = r {
                self.grpc = Some(h2); // closing: the list's room is not kept
                self.close(conn, cause);
                return;
            }
            h2.served(conn, call.stream, call.timeout.map(|t| call.arrived + t));
        }
        h2.ready = ready;
        // Streams opened above may have taken what arrived with them.
        h2.settle(conn);
        if let Err(e) = read {
            h2.go_away(conn, &e);
            self.grpc = Some(h2);
            self.close(conn, H2::cause(&e));
            return;
        }
        self.grpc = Some(h2);
        self.throttle(conn);
    }

    /// What a new connection speaks, from its first bytes: the application's framings
    /// look first, then the built-in protocols. `Ok(None)`: not enough bytes yet.
    fn detect(&self, head: &[u8]) -> Result<Option<Proto>, ()> {
        let mut undecided = false;
        for (i, f) in self.shared.framings.iter().enumerate() {
            match f.detect(head) {
                Detect::Yes => return Ok(Some(Proto::Custom(i as u16))),
                Detect::NeedMore => undecided = true,
                Detect::No => {}
            }
        }
        match frame::detect(head) {
            Ok(Some(Protocol::Http2)) if !undecided => Ok(Some(Proto::Grpc)),
            Err(_) if !undecided => Err(()),
            Ok(Some(Protocol::Http2)) | Err(_) | Ok(None) => Ok(None),
            Ok(Some(_)) if undecided => Ok(None),
            Ok(Some(p)) => Ok(Some(Proto::Builtin(p))),
        }
    }
}

/// The connection's framing, when it is one of the application's own.
fn framing_of(shared: &Shared, protocol: Option<Proto>) -> Option<&dyn Framing> {
    match protocol {
        Some(Proto::Custom(i)) => shared.framings.get(usize::from(i)).map(|f| &**f),
        _ => None,
    }
}

/// Delivers a deferred reply to its server connection (the `Deliver` of its calls).
fn deliver_reply(core: &mut Core, conn: ConnId, slot: Option<u64>, write: WriteReply) {
    core.with_handler::<ServerConn, _>(conn, |h, c| h.deliver(c, slot, write));
}

/// Hands what a stream's sender sent from another thread to its server connection.
fn push_stream(core: &mut Core, conn: ConnId, stream: u32, push: Push) {
    core.with_handler::<ServerConn, _>(conn, |h, c| {
        if let Some(h2) = h.grpc.as_deref_mut() {
            h2.push(c, stream, push);
        }
        h.close_if_drained(c);
    });
}

impl Handler for ServerConn {
    fn on_open(&mut self, conn: &mut Conn<'_>) {
        self.peer = conn.peer_addr().ok();
        tracing::debug!(peer = ?self.peer, "server connection opened");
        self.last_active = conn.now();
        if let Some(idle) = self.shared.idle_timeout {
            self.idle_timer = Some(conn.set_timer(conn.now() + idle, IDLE_TIMER));
        }
    }

    fn on_data(&mut self, conn: &mut Conn<'_>, input: &mut Input<'_>) {
        self.read(conn, input);
        if self.shared.metrics.is_some() {
            // The replies of this pass leave now: their calls' durations end here.
            crate::metrics::end_pass();
        }
        if self.draining {
            // Input held while throttled may have been the last thing to answer.
            self.close_if_drained(conn);
        }
    }

    fn on_read_closed(&mut self, conn: &mut Conn<'_>) {
        self.draining = true;
        self.cause.get_or_insert(CloseCause::PeerClosed);
        self.close_if_drained(conn);
    }

    fn on_timer(&mut self, conn: &mut Conn<'_>, token: u64) {
        let now = conn.now();
        if token == FLUSH_TIMER {
            if let Some(h2) = self.grpc.as_deref_mut() {
                h2.flush_timer(conn);
            }
            self.close_if_drained(conn);
            return;
        }
        if token & DEADLINE_TIMER != 0 {
            if let Some(h2) = self.grpc.as_deref_mut() {
                h2.deadline(conn, token as u32);
            }
            self.close_if_drained(conn);
            return;
        }
        match token {
            IDLE_TIMER => {
                self.idle_timer = None;
                let Some(idle) = self.shared.idle_timeout else {
                    return;
                };
                // Bytes of a frame still arriving count as activity.
                self.last_active = self.last_active.max(conn.last_received());
                // Open gRPC streams count as calls in flight.
                let busy = self.deferred.all > 0
                    || self.order.in_flight() > 0
                    || self.grpc.as_ref().is_some_and(|h| h.serving());
                if !busy && now >= self.last_active + idle {
                    if let Some(h2) = self.grpc.as_deref_mut() {
                        h2.shutdown(conn); // GOAWAY first: a call racing the close is retried
                    }
                    self.close(conn, CloseCause::IdleTimeout);
                } else {
                    let at = if busy {
                        now + idle
                    } else {
                        self.last_active + idle
                    };
                    self.idle_timer = Some(conn.set_timer(at, IDLE_TIMER));
                }
            }
            DRAIN_READ_TIMER => {
                self.drain_reading = false;
                self.close_if_drained(conn);
            }
            READ_TIMER => {
                self.read_timer = None;
                let (Some(limit), Some(since)) = (self.shared.read_timeout, self.partial_since)
                else {
                    return;
                };
                if now >= since + limit {
                    // A frame started and did not finish in time.
                    self.abort(conn, CloseCause::ReadTimeout);
                } else {
                    self.read_timer = Some(conn.set_timer(since + limit, READ_TIMER));
                }
            }
            _ => {}
        }
    }

    fn on_shutdown(&mut self, conn: &mut Conn<'_>) {
        if let Some(h2) = self.grpc.as_deref_mut() {
            // No new streams; those open are answered first.
            h2.shutdown(conn);
        }
        self.draining = true;
        self.cause.get_or_insert(CloseCause::Shutdown);
        self.close_if_drained(conn);
    }

    fn on_close(&mut self, _core: &mut Core, reason: CloseReason) {
        if let Some(h2) = self.grpc.as_deref_mut() {
            h2.close_all();
        }
        let cause = match (&reason, self.cause) {
            // What netpoll saw decides when it is more specific than our intent.
            (CloseReason::WriteTimedOut, _) => CloseCause::WriteTimeout,
            (CloseReason::Io(_), _) => CloseCause::IoError,
            (CloseReason::HandlerPanicked, _) => CloseCause::Panic,
            (CloseReason::Tls(_), _) => CloseCause::Tls,
            (CloseReason::Shutdown, _) => CloseCause::Shutdown,
            (_, Some(c)) => c,
            (CloseReason::PeerClosed, None) => CloseCause::PeerClosed,
            _ => CloseCause::Other,
        };
        self.shared.stats.count(cause);
        tracing::debug!(peer = ?self.peer, cause = cause.name(), %reason, "server connection closed");
    }
}

/// A call answered before its handler ran (its deadline had passed, or a middleware
/// refused it): counted by the server's metrics like any other.
fn answered_early(ctx: &CallContext<'_>, kind: crate::ErrorKind, response_bytes: usize) {
    if let Some(m) = ctx.metrics {
        let outcome = crate::Outcome {
            error: Some(kind),
            response_bytes,
        };
        m.ended_in_pass(&ctx.info(), &outcome);
    }
}
