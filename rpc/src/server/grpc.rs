//! gRPC over HTTP/2 (h2c with prior knowledge, or over TLS) on the server's port: the
//! HTTP/2 connection state of one connection.
//!
//! A stream's HEADERS name the method (`:path` `/{package}.{Service}/{Method}`). A unary
//! (or server-streaming) request's DATA is gathered (bounded by the server's largest
//! frame) until the client ends the stream, then the call is served like any other: its
//! message is handed to the service as a Kitex Protobuf message of transport
//! [`GRPC_TRANSPORT`], whose reply this module turns back into HEADERS, DATA and trailers
//! (or trailers alone for an error). A client- or bidirectional-streaming call opens at
//! its HEADERS, and its handler ([`StreamHandler`](super::StreamHandler)) is handed each
//! message as it is whole; what handlers write queues per stream and leaves as flow
//! control allows. Frames are split off the connection's input in place; memory per
//! connection and per stream is bounded (flow-control windows we advertise, credited back
//! only as requests are handed over; reply queues; at most [`MAX_STREAMS`] streams;
//! header blocks at most [`MAX_HEADER_BLOCK`]).

use std::collections::HashMap;
use std::hash::BuildHasherDefault;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::{Buf, Bytes, BytesMut};
use netpoll::{Conn, Input};
use netpoll_codec::frame::{KitexPbHeader, TTHeader, TTHeaderBuilder};
pub(crate) use netpoll_codec::h2::conn::ConnError;
use netpoll_codec::h2::conn::{self as h2c, conn_err, HeaderBlocks};
use netpoll_codec::h2::frame::{self as h2f, code, flag, kind, setting, FrameHeader, Split};
use netpoll_codec::h2::{grpc, hpack};
use netpoll_codec::thrift::{ApplicationException, ApplicationExceptionKind, MessageType};

use super::router::{Fnv, Route};
use super::stats::CloseCause;
use super::stream::{self, Push, PushFn, RawOut, RawStream, Remote, StreamKind};
use super::Shared;
use crate::middleware::Running;
use crate::{ErrorKind, Status};

/// Timer tokens of stream deadlines: this bit, and the stream id.
pub(crate) const DEADLINE_TIMER: u64 = 1 << 40;

/// The timer token of a retry of queued replies held back by the connection's output.
pub(crate) const FLUSH_TIMER: u64 = 1 << 41;

/// Reply bytes a streaming handler may queue on one stream before it is told to wait.
const STREAM_QUEUE: usize = 64 * 1024;

/// Reply bytes all streams of a connection may queue before their handlers wait.
const CONN_QUEUE: usize = 1 << 20;

/// Output a connection may have waiting for the socket before queued stream replies
/// stop joining it (they are retried after [`FLUSH_RETRY`]).
const OUTPUT_HIGH: usize = 4 << 20;

/// How soon replies held back by a full output are retried.
const FLUSH_RETRY: Duration = Duration::from_millis(5);

/// The custom transport number gRPC calls carry in their envelope.
pub(crate) const GRPC_TRANSPORT: u16 = u16::MAX;

/// Streams a client may have open at once (`SETTINGS_MAX_CONCURRENT_STREAMS`).
pub(crate) const MAX_STREAMS: u32 = 1024;

/// The largest header block (HEADERS and its CONTINUATIONs) accepted.
pub(crate) const MAX_HEADER_BLOCK: usize = 64 * 1024;

/// The largest decoded header list (`SETTINGS_MAX_HEADER_LIST_SIZE`).
const MAX_HEADER_LIST: usize = 16 * 1024;

/// Frames that make us work without carrying calls (PING, SETTINGS, PRIORITY, empty DATA,
/// unknown types) a client may send per second: beyond, the connection is closed with
/// ENHANCE_YOUR_CALM (ping and SETTINGS floods).
const CONTROL_PER_SEC: u32 = 10_000;

/// Streams a client may reset per second before we answer them: beyond, the connection
/// is closed with ENHANCE_YOUR_CALM (rapid reset, CVE-2023-44487).
const RESETS_PER_SEC: u32 = 1_000;

/// The per-stream receive window we advertise (`SETTINGS_INITIAL_WINDOW_SIZE`).
const STREAM_WINDOW: u32 = 1 << 20;

/// The connection receive window we keep open.
const CONN_WINDOW: u32 = 16 << 20;

/// One stream.
struct Stream {
    /// How its method streams.
    kind: StreamKind,
    /// The request as its DATA arrives (a gRPC message: prefix, then the message). For a
    /// client- or bidirectional-streaming call, the messages not yet handed to its
    /// handler.
    data: BytesMut,
    /// The caller's `grpc-timeout`.
    timeout: Option<Duration>,
    /// When its HEADERS arrived.
    arrived: Instant,
    /// The client ended its side.
    remote_closed: bool,
    /// Answered already (an early error): its further DATA is dropped.
    answered: bool,
    /// How much more we may send on it.
    send_window: i64,
    /// How much more the client may send on it.
    recv_window: i64,
    /// Replies queued: framed messages (DATA payload) not sent yet.
    out: BytesMut,
    /// The final status, sent once `out` is empty.
    done: Option<Done>,
    /// Our HEADERS were sent.
    headers_sent: bool,
    /// Bytes received on it since its window was last topped up.
    unacked: u32,
    /// Bytes of its request held in `data` (given back to the connection window when
    /// they leave it). For a client- or bidirectional-streaming call: bytes not yet
    /// credited to the stream's window.
    buffered: u32,
    /// For a client- or bidirectional-streaming call: bytes held in `data` not yet
    /// credited to the connection window (what a partial message holds).
    conn_held: u32,
    /// Its reply waits for window (it is in `blocked`).
    blocked: bool,
    /// Its service and method.
    route: Route,
    /// Its request's custom metadata, as the call's headers.
    meta: Option<TTHeader>,
    /// Its deadline's timer, while its reply is deferred.
    timer: Option<netpoll::TimerId>,
    /// A streaming call's handler, while it runs (taken out during its events).
    handler: Option<Box<dyn RawStream>>,
    /// Its handler saw no room: it is told when room comes back (it is in `writers`).
    wants_room: bool,
    /// Its handler was told of the client's end.
    end_told: bool,
    /// A streaming call's middlewares and metrics, ended with the stream.
    call: Option<Box<StreamEnd>>,
    /// How the call failed, for its end.
    error: Option<ErrorKind>,
    /// Reply bytes queued on it.
    sent: usize,
    /// Set when it ends, for the senders made for it on other threads.
    closed: Option<Arc<AtomicBool>>,
    /// Its client sent gzip-compressed messages (`grpc-encoding: gzip`): its replies are
    /// compressed too, as grpc-go's servers do.
    gzip: bool,
    /// Response metadata the handler sent back, for our HEADERS (HPACK-encoded).
    extra_headers: Option<Vec<u8>>,
}

impl std::fmt::Debug for Stream {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Stream")
            .field("kind", &self.kind)
            .field("remote_closed", &self.remote_closed)
            .field("queued", &self.out.len())
            .finish()
    }
}

impl Drop for Stream {
    /// A stream dropped without being ended (its connection's state torn down by a
    /// panic): its senders learn it ended, and its call ends for middleware and metrics.
    fn drop(&mut self) {
        if let Some(c) = &self.closed {
            c.store(true, Ordering::Release);
        }
        if let Some(call) = self.call.take() {
            let error = self.error.or(Some(ErrorKind::Unavailable));
            let sent = self.sent;
            let ended =
                std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| call.end(error, sent)));
            if ended.is_err() {
                tracing::warn!("a middleware panicked ending a stream's call");
            }
        }
    }
}

/// How a stream ends once its queued messages are sent.
#[derive(Debug)]
enum Done {
    Ok,
    /// A code, its message, and status details (possibly empty).
    Status(u8, String, Bytes),
}

/// What ends a streaming call for its middlewares and metrics.
#[derive(Debug)]
pub(crate) struct StreamEnd {
    pub(crate) running: Option<Running>,
    pub(crate) metrics: Option<crate::metrics::Metrics>,
    pub(crate) envelope: crate::wire::Envelope,
    pub(crate) headers: Option<TTHeader>,
    pub(crate) service: &'static str,
    pub(crate) peer: Option<std::net::SocketAddr>,
    pub(crate) request_bytes: usize,
    pub(crate) start: Instant,
    pub(crate) deadline: Option<Instant>,
}

impl StreamEnd {
    /// The call, as middleware and metrics describe calls.
    pub(crate) fn info(&self) -> crate::CallInfo<'_> {
        crate::CallInfo {
            side: crate::Side::Server,
            service: self.service,
            method: &self.envelope.method,
            transport: self.envelope.transport,
            payload: self.envelope.payload,
            peer: self.peer,
            seq_id: self.envelope.seq_id,
            request_bytes: self.request_bytes,
            start: self.start,
            deadline: self.deadline,
            headers: self.headers.as_ref(),
            trace: None,
        }
    }

    fn end(mut self, error: Option<ErrorKind>, response_bytes: usize) {
        let outcome = crate::Outcome {
            error,
            response_bytes,
        };
        let running = self.running.take();
        let info = self.info();
        if let Some(m) = &self.metrics {
            m.ended(&info, &outcome, true);
        }
        if let Some(r) = running {
            r.end(&info, &outcome);
        }
    }
}

/// A call whose request is whole, ready to be served.
#[derive(Debug)]
pub(crate) struct Ready {
    pub(crate) stream: u32,
    /// How its method streams: a streaming call is ready when its stream opens (with its
    /// request, for server streaming).
    pub(crate) kind: StreamKind,
    /// The request's custom metadata (`traceparent`, `RPC_TRANSIT_*`, ...), in the form
    /// middleware and handlers read headers in.
    pub(crate) meta: Option<TTHeader>,
    /// The service and method `:path` named.
    pub(crate) route: Route,
    /// The request message (protobuf, without gRPC's prefix; empty for client and
    /// bidirectional streaming, whose messages go to the stream's handler).
    pub(crate) message: Bytes,
    pub(crate) arrived: Instant,
    pub(crate) timeout: Option<Duration>,
}

/// The HTTP/2 state of one gRPC connection.
pub(crate) struct H2 {
    started: bool,
    preface_seen: bool,
    decoder: hpack::Decoder,
    streams: HashMap<u32, Stream, BuildHasherDefault<Fnv>>,
    last_stream: u32,
    /// A header block being gathered: its stream, whether it ends the stream, the block.
    continuation: HeaderBlocks,
    peer_max_frame: usize,
    peer_initial_window: i64,
    conn_send_window: i64,
    /// Bytes received since the connection window was last topped up.
    conn_unacked: u32,
    /// The connection receive window we keep open: what one connection can make us
    /// hold of requests not yet served.
    conn_window: u32,
    /// What the client may still send on the connection; below zero it ignored flow
    /// control.
    conn_recv_window: i64,
    /// The header block of a reply's HEADERS (`:status 200`, `content-type`).
    reply_headers: Vec<u8>,
    /// The same for gzip-compressed replies (`grpc-encoding: gzip`).
    gzip_headers: Vec<u8>,
    /// The header block of a successful reply's trailers (`grpc-status: 0`).
    ok_trailers: Vec<u8>,
    /// Streams with a reply waiting for window.
    blocked: Vec<u32>,
    /// Streams whose handlers wait for room.
    writers: Vec<u32>,
    /// Bytes queued on all streams.
    queued: usize,
    /// The largest request message taken.
    max_message: usize,
    /// Armed while queued replies wait for the connection's output to drain.
    flush_timer: Option<netpoll::TimerId>,
    /// How senders on other threads reach this connection's streams.
    rt: Option<netpoll::RuntimeHandle>,
    push: PushFn,
    goaway: bool,
    /// When the flood counters' current second ends, and what it has seen.
    second_ends: Option<Instant>,
    control_frames: u32,
    resets: u32,
    /// Reused for replies the services write.
    pub(crate) scratch: BytesMut,
    /// Reused for the calls a read makes ready.
    pub(crate) ready: Vec<Ready>,
    /// Reused for a request's custom metadata while its headers are decoded.
    meta: Metadata,
}

impl std::fmt::Debug for H2 {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("H2")
            .field("streams", &self.streams.len())
            .field("last_stream", &self.last_stream)
            .finish()
    }
}

impl H2 {
    pub(crate) fn new(push: PushFn) -> H2 {
        let mut reply_headers = Vec::new();
        hpack::encode(&mut reply_headers, b":status", b"200", false);
        hpack::encode(
            &mut reply_headers,
            b"content-type",
            b"application/grpc",
            true,
        );
        let mut gzip_headers = reply_headers.clone();
        hpack::encode(&mut gzip_headers, b"grpc-encoding", b"gzip", false);
        let mut ok_trailers = Vec::new();
        hpack::encode(&mut ok_trailers, b"grpc-status", b"0", false);
        H2 {
            started: false,
            preface_seen: false,
            decoder: hpack::Decoder::new(4096, MAX_HEADER_LIST),
            streams: HashMap::default(),
            last_stream: 0,
            continuation: HeaderBlocks::new(MAX_HEADER_BLOCK),
            peer_max_frame: h2f::DEFAULT_MAX_FRAME as usize,
            peer_initial_window: i64::from(h2f::DEFAULT_WINDOW),
            conn_send_window: i64::from(h2f::DEFAULT_WINDOW),
            conn_unacked: 0,
            conn_window: CONN_WINDOW,
            conn_recv_window: i64::from(CONN_WINDOW),
            reply_headers,
            gzip_headers,
            ok_trailers,
            blocked: Vec::new(),
            writers: Vec::new(),
            queued: 0,
            max_message: usize::MAX,
            flush_timer: None,
            rt: None,
            push,
            goaway: false,
            second_ends: None,
            control_frames: 0,
            resets: 0,
            scratch: BytesMut::new(),
            ready: Vec::new(),
            meta: Metadata::default(),
        }
    }

    /// Whether `stream` is still open (not reset or answered).
    pub(crate) fn has_stream(&self, stream: u32) -> bool {
        self.streams.contains_key(&stream)
    }

    /// Whether every stream is done (for a graceful close).
    pub(crate) fn idle(&self) -> bool {
        self.streams.is_empty()
    }

    /// Whether a call is being served: a stream opened or answered, not a request still
    /// arriving (which alone must not keep an idle connection open).
    pub(crate) fn serving(&self) -> bool {
        self.streams
            .values()
            .any(|s| s.answered || s.call.is_some())
    }

    /// Reads what `input` holds: answers the connection's frames, gathers requests, and
    /// appends the calls whose requests are whole to `ready`.
    pub(crate) fn read(
        &mut self,
        conn: &mut Conn<'_>,
        input: &mut Input<'_>,
        shared: &Shared,
        ready: &mut Vec<Ready>,
    ) -> Result<(), ConnError> {
        if !self.started {
            self.started = true;
            self.max_message = shared.max_frame;
            self.rt = Some(shared.rt.clone());
            let out = conn.output();
            h2f::write_settings(
                out,
                &[
                    (setting::MAX_CONCURRENT_STREAMS, MAX_STREAMS),
                    (setting::INITIAL_WINDOW_SIZE, STREAM_WINDOW),
                    (setting::MAX_HEADER_LIST_SIZE, MAX_HEADER_LIST as u32),
                    (setting::ENABLE_PUSH, 0),
                ],
            );
            // Room for two of the largest requests, at least the default.
            let window = (2 * shared.max_frame as u64 + (1 << 20))
                .clamp(u64::from(CONN_WINDOW), u64::from(h2f::MAX_WINDOW));
            self.conn_window = window as u32;
            self.conn_recv_window = window as i64;
            h2f::write_window_update(out, 0, self.conn_window - h2f::DEFAULT_WINDOW);
        }
        if !self.preface_seen {
            let n = h2f::PREFACE.len();
            if input.len() < n {
                if !h2f::PREFACE.starts_with(input.chunk()) {
                    return Err(conn_err(code::PROTOCOL_ERROR, "not the HTTP/2 preface"));
                }
                input.need(n);
                return Ok(());
            }
            if &input.chunk()[..n] != h2f::PREFACE {
                return Err(conn_err(code::PROTOCOL_ERROR, "not the HTTP/2 preface"));
            }
            input.advance(n);
            self.preface_seen = true;
        }
        let now = conn.now();
        loop {
            let split = h2f::split(input.chunk(), h2f::DEFAULT_MAX_FRAME)
                .map_err(|_| conn_err(code::FRAME_SIZE_ERROR, "frame over our maximum size"))?;
            let (h, len) = match split {
                Split::Frame(h, len) => (h, len),
                Split::NeedMore(n) => {
                    input.need(n);
                    break;
                }
            };
            // Read in place: the frame's bytes leave the input once it is handled.
            let payload = &input.chunk()[h2f::HEADER_LEN..len];
            self.frame(conn, h, payload, now, shared, ready)?;
            input.advance(len);
        }
        // Handlers are woken and windows topped up by the caller, once the calls this
        // read made ready are served too (`settle`).
        Ok(())
    }

    /// Tops the receive windows up once half of them was used.
    fn top_up(&mut self, conn: &mut Conn<'_>) {
        if self.conn_unacked >= self.conn_window / 2 {
            h2f::write_window_update(conn.output(), 0, self.conn_unacked);
            self.conn_recv_window += i64::from(self.conn_unacked);
            self.conn_unacked = 0;
        }
    }

    fn frame(
        &mut self,
        conn: &mut Conn<'_>,
        h: FrameHeader,
        payload: &[u8],
        now: Instant,
        shared: &Shared,
        ready: &mut Vec<Ready>,
    ) -> Result<(), ConnError> {
        self.continuation.check(&h)?;
        // Compared, not subtracted: this runs for every frame.
        if self.second_ends.is_none_or(|end| now >= end) {
            self.second_ends = Some(now + Duration::from_secs(1));
            self.control_frames = 0;
            self.resets = 0;
        }
        let control = match h.kind {
            kind::PING | kind::SETTINGS => !h.has(flag::ACK),
            kind::PRIORITY => true,
            kind::DATA => h.len == 0 && !h.has(flag::END_STREAM),
            kind::HEADERS | kind::CONTINUATION | kind::WINDOW_UPDATE | kind::RST_STREAM => false,
            kind::GOAWAY | kind::PUSH_PROMISE => false,
            _ => true,
        };
        if control {
            self.control_frames += 1;
            if self.control_frames > CONTROL_PER_SEC {
                return Err(conn_err(code::ENHANCE_YOUR_CALM, "too many control frames"));
            }
        }
        match h.kind {
            kind::SETTINGS => {
                let Some(set) = h2c::read_settings(&h, payload)? else {
                    return Ok(());
                };
                let mut grew = false;
                if let Some(v) = set.initial_window {
                    let delta = i64::from(v) - self.peer_initial_window;
                    self.peer_initial_window = i64::from(v);
                    for s in self.streams.values_mut() {
                        s.send_window += delta;
                    }
                    grew = delta > 0;
                }
                if let Some(v) = set.max_frame {
                    self.peer_max_frame = v as usize;
                }
                h2f::write_settings_ack(conn.output());
                if grew {
                    self.flush_blocked(conn);
                }
            }
            kind::PING => h2c::answer_ping(&h, payload, conn.output())?,
            kind::WINDOW_UPDATE => {
                let inc = h2c::window_update(&h, payload, &mut self.conn_send_window)?;
                if h.stream == 0 {
                    self.flush_blocked(conn);
                } else if let Some(s) = self.streams.get_mut(&h.stream) {
                    s.send_window += inc;
                    if !s.out.is_empty() {
                        // Still listed in `blocked` if it stays blocked: not listed twice.
                        self.flush(conn, h.stream);
                    }
                }
            }
            kind::HEADERS => {
                if let Some((stream, end_stream, block)) = self.continuation.headers(&h, payload)? {
                    self.headers(conn, stream, end_stream, &block, now, shared, ready)?;
                }
            }
            kind::CONTINUATION => {
                if let Some((stream, end_stream, block)) =
                    self.continuation.continuation(&h, payload)?
                {
                    self.headers(conn, stream, end_stream, &block, now, shared, ready)?;
                }
            }
            kind::DATA => {
                let len = h.len;
                self.conn_recv_window -= i64::from(len);
                if self.conn_recv_window < 0 {
                    return Err(conn_err(code::FLOW_CONTROL_ERROR, "DATA beyond the window"));
                }
                let data = h2f::content(&h, payload)
                    .map_err(|_| conn_err(code::PROTOCOL_ERROR, "bad DATA padding"))?;
                let Some(s) = self.streams.get_mut(&h.stream) else {
                    if h.stream == 0 || h.stream > self.last_stream {
                        return Err(conn_err(code::PROTOCOL_ERROR, "DATA on an idle stream"));
                    }
                    // A stream reset or answered meanwhile: its data is dropped.
                    self.conn_unacked += len;
                    return Ok(());
                };
                if s.remote_closed {
                    return Err(conn_err(code::STREAM_CLOSED, "DATA after END_STREAM"));
                }
                s.recv_window -= i64::from(len);
                if s.recv_window < 0 {
                    return Err(conn_err(
                        code::FLOW_CONTROL_ERROR,
                        "DATA beyond the stream window",
                    ));
                }
                let end = h.has(flag::END_STREAM);
                if matches!(s.kind, StreamKind::Client | StreamKind::Bidi) {
                    // Kept until its handler takes it; credited back then (see `pump`).
                    let keep = s.done.is_none();
                    if keep {
                        s.data.extend_from_slice(data);
                        s.buffered += data.len() as u32;
                        s.conn_held += data.len() as u32;
                    }
                    let held = if keep { data.len() as u32 } else { 0 };
                    s.unacked += len - held;
                    self.conn_unacked += len - held;
                    s.remote_closed |= end;
                    self.pump(conn, h.stream);
                    return Ok(());
                }
                s.unacked += len;
                if !s.answered {
                    if s.data.len() + data.len() > shared.max_frame + grpc::PREFIX_LEN {
                        s.answered = true;
                        self.conn_unacked += len;
                        let why = format!("request message larger than {} bytes", shared.max_frame);
                        self.trailers_only(conn, h.stream, 8, &why); // RESOURCE_EXHAUSTED
                        h2f::write_rst_stream(conn.output(), h.stream, code::CANCEL);
                        self.end_stream(conn, h.stream);
                        return Ok(());
                    }
                    s.data.extend_from_slice(data);
                    s.buffered += data.len() as u32;
                }
                // Padding and dropped data go back to the connection window now, the
                // request's own bytes when they leave our buffer (so what one connection
                // makes us hold is bounded by the window we advertise).
                let held = if s.answered { 0 } else { data.len() as u32 };
                self.conn_unacked += len - held;
                if end {
                    s.remote_closed = true;
                    self.request_done(conn, h.stream, ready);
                } else {
                    self.stream_top_up(conn, h.stream);
                }
            }
            kind::RST_STREAM => {
                h2f::error_code(payload)
                    .map_err(|_| conn_err(code::FRAME_SIZE_ERROR, "bad RST_STREAM"))?;
                if self.streams.get(&h.stream).is_some_and(|s| !s.answered) {
                    // A stream reset before its request was even whole: what a rapid reset
                    // does (a call cancelled while its handler runs is not counted).
                    self.resets += 1;
                    if self.resets > RESETS_PER_SEC {
                        return Err(conn_err(code::ENHANCE_YOUR_CALM, "too many streams reset"));
                    }
                }
                self.cancel(
                    h.stream,
                    &Status::new(ErrorKind::Cancelled, "the client reset the stream"),
                );
                self.end_stream(conn, h.stream);
            }
            kind::GOAWAY => {
                self.goaway = true;
            }
            kind::PUSH_PROMISE => {
                return Err(conn_err(code::PROTOCOL_ERROR, "PUSH_PROMISE from a client"));
            }
            // PRIORITY and unknown types are ignored.
            _ => {}
        }
        Ok(())
    }

    /// A whole header block opened a stream (or ended one, as trailers).
    #[allow(clippy::too_many_arguments)]
    fn headers(
        &mut self,
        conn: &mut Conn<'_>,
        stream: u32,
        end_stream: bool,
        block: &[u8],
        now: Instant,
        shared: &Shared,
        ready: &mut Vec<Ready>,
    ) -> Result<(), ConnError> {
        let new_stream = !self.streams.contains_key(&stream);
        if stream == 0 || stream % 2 == 0 {
            return Err(conn_err(code::PROTOCOL_ERROR, "bad stream id"));
        }
        if new_stream && stream <= self.last_stream {
            // Trailers on a stream we ended (answered early, or past its deadline) while
            // the client was still sending: decoded, to keep the table in step, and
            // ignored (RFC 9113 §5.1).
            return self
                .decoder
                .decode(block, |_, _| {})
                .map_err(|_| conn_err(code::COMPRESSION_ERROR, "bad header block"));
        }
        if new_stream {
            self.last_stream = stream;
        }
        // `:path` is routed as it is decoded (`/{package}.{Service}/{Method}`): no copy of
        // it is kept, except to name an unknown one.
        let mut path_seen = false;
        let mut found = None;
        let mut unknown = String::new();
        let router = &shared.router;
        let mut timeout = None;
        let mut grpc_content = false;
        let mut encoding_ok = true;
        let mut gzip = false;
        let meta = &mut self.meta;
        meta.clear();
        let decoded = self.decoder.decode(block, |n, v| match n {
            b":path" => {
                path_seen = true;
                found = std::str::from_utf8(v).ok().and_then(|p| {
                    let (svc, method) = p.strip_prefix('/')?.split_once('/')?;
                    router.find_full(svc, method)
                });
                if found.is_none() {
                    unknown = String::from_utf8_lossy(v).into_owned();
                }
            }
            b"content-type" => grpc_content = v.starts_with(b"application/grpc"),
            b"grpc-timeout" => timeout = grpc::parse_timeout(v),
            b"grpc-encoding" => {
                gzip = v == b"gzip";
                encoding_ok = gzip || v == b"identity";
            }
            // HTTP's own headers, not the call's metadata: `content-length` describes the
            // body (h2load and proxies send it; grpc clients do not).
            b"te" | b"user-agent" | b"grpc-accept-encoding" | b"content-length" => {}
            n if n.first() == Some(&b':') => {}
            n => meta.push(n, v),
        });
        match decoded {
            Ok(()) => {}
            Err(hpack::HpackError::ListTooLarge) => {
                // The table is still in step: only this stream is refused.
                self.refuse(conn, stream, end_stream, 8, "header list too large");
                return Ok(());
            }
            Err(_) => return Err(conn_err(code::COMPRESSION_ERROR, "bad header block")),
        }
        if let Some(s) = self.streams.get_mut(&stream) {
            // Trailers from the client: they end its side.
            if !end_stream {
                return Err(conn_err(
                    code::PROTOCOL_ERROR,
                    "trailers without END_STREAM",
                ));
            }
            s.remote_closed = true;
            self.request_done(conn, stream, ready);
            return Ok(());
        }
        if self.goaway || self.streams.len() >= MAX_STREAMS as usize {
            h2f::write_rst_stream(conn.output(), stream, code::REFUSED_STREAM);
            return Ok(());
        }
        if !path_seen || !grpc_content {
            self.refuse(conn, stream, end_stream, 3, "not a gRPC request"); // INVALID_ARGUMENT
            return Ok(());
        }
        let Some(at) = found else {
            let why = format!("unknown method {unknown}");
            self.refuse(conn, stream, end_stream, 12, &why); // UNIMPLEMENTED
            return Ok(());
        };
        if !encoding_ok {
            self.refuse(
                conn,
                stream,
                end_stream,
                12,
                "only gzip and identity encodings are served",
            );
            return Ok(());
        }
        let (service, method) = router.at(at);
        let kind = service.methods()[method].kind;
        let mut s = Stream {
            kind,
            data: BytesMut::new(),
            timeout,
            arrived: now,
            remote_closed: end_stream,
            answered: false,
            send_window: self.peer_initial_window,
            recv_window: i64::from(STREAM_WINDOW),
            out: BytesMut::new(),
            done: None,
            headers_sent: false,
            unacked: 0,
            buffered: 0,
            conn_held: 0,
            blocked: false,
            route: at,
            meta: self.meta.headers(stream),
            timer: None,
            handler: None,
            wants_room: false,
            end_told: false,
            call: None,
            error: None,
            sent: 0,
            closed: None,
            gzip,
            extra_headers: None,
        };
        if matches!(kind, StreamKind::Client | StreamKind::Bidi) {
            // The call opens now, without a message; its messages follow, to its handler.
            ready.push(Ready {
                stream,
                kind,
                meta: s.meta.take(),
                route: at,
                message: Bytes::new(),
                arrived: now,
                timeout,
            });
            self.streams.insert(stream, s);
            return Ok(());
        }
        self.streams.insert(stream, s);
        if end_stream {
            self.request_done(conn, stream, ready);
        }
        Ok(())
    }

    /// The client ended a stream: its request is whole, or malformed.
    fn request_done(&mut self, conn: &mut Conn<'_>, stream: u32, ready: &mut Vec<Ready>) {
        let Some(s) = self.streams.get_mut(&stream) else {
            return;
        };
        if matches!(s.kind, StreamKind::Client | StreamKind::Bidi) {
            // Its handler is told, after the messages before the end.
            self.pump(conn, stream);
            return;
        }
        if s.answered {
            // Answered early (an error) while the client was still sending: now both
            // sides are done.
            if s.done.is_none() {
                self.end_stream(conn, stream);
            }
            return;
        }
        let body = &s.data[..];
        let whole = match grpc::message(body, usize::MAX) {
            Ok(grpc::Message::Whole { compressed, len })
                if len + grpc::PREFIX_LEN == body.len() =>
            {
                Some(compressed)
            }
            _ => None,
        };
        let failure = match whole {
            None => Some((13, "the request must be exactly one message".to_owned())), // INTERNAL, as gRPC does
            Some(true) if !s.gzip => {
                Some((13, "a compressed message without grpc-encoding".to_owned()))
            }
            Some(true) => match grpc::gunzip(&body[grpc::PREFIX_LEN..], self.max_message) {
                Ok(plain) => {
                    // A prefix's room, then the message as it was sent.
                    let mut data = BytesMut::with_capacity(grpc::PREFIX_LEN + plain.len());
                    data.extend_from_slice(&[0; grpc::PREFIX_LEN]);
                    data.extend_from_slice(&plain);
                    s.data = data;
                    None
                }
                Err(grpc::GzipError::TooLarge) => Some((
                    8, // RESOURCE_EXHAUSTED
                    format!("request message larger than {} bytes", self.max_message),
                )),
                Err(grpc::GzipError::Corrupt) => {
                    Some((13, "the request does not gunzip".to_owned()))
                }
            },
            Some(false) => None,
        };
        if let Some((code, why)) = failure {
            s.answered = true;
            self.trailers_only(conn, stream, code, &why);
            self.end_stream(conn, stream);
            return;
        }
        // The message, without its prefix.
        self.conn_unacked += std::mem::take(&mut s.buffered);
        let mut data = std::mem::take(&mut s.data);
        data.advance(grpc::PREFIX_LEN);
        s.answered = true;
        ready.push(Ready {
            stream,
            kind: s.kind,
            meta: s.meta.take(),
            route: s.route,
            message: data.freeze(),
            arrived: s.arrived,
            timeout: s.timeout,
        });
    }

    /// Refuses a stream at its headers: trailers alone, then (if the client is still
    /// sending) RST_STREAM(NO_ERROR), so that it stops (RFC 9113 §8.1); the stream is
    /// forgotten.
    fn refuse(&mut self, conn: &mut Conn<'_>, stream: u32, ended: bool, status: u8, why: &str) {
        self.trailers_only(conn, stream, status, why);
        if !ended {
            h2f::write_rst_stream(conn.output(), stream, code::NO_ERROR);
        }
        self.end_stream(conn, stream);
    }

    /// Answers `stream` with trailers alone (an error before any message).
    fn trailers_only(&mut self, conn: &mut Conn<'_>, stream: u32, status: u8, message: &str) {
        let block = status_block(true, status, message);
        h2f::write_headers(conn.output(), stream, &block, true, self.peer_max_frame);
        if let Some(s) = self.streams.get_mut(&stream) {
            s.answered = true;
            if s.remote_closed {
                self.end_stream(conn, stream);
            }
        }
    }

    /// A service's reply (a Kitex Protobuf message of [`GRPC_TRANSPORT`]): sent on its
    /// stream as HEADERS, DATA and trailers, or as trailers alone for an error. A stream
    /// reset meanwhile takes nothing.
    pub(crate) fn reply(&mut self, conn: &mut Conn<'_>, message: &[u8]) {
        let parsed = crate::wire::read_grpc_meta(message).and_then(|(meta, m)| {
            KitexPbHeader::split_message(m)
                .ok()
                .map(|(kind, seq_id, b)| (meta, kind, seq_id, b))
        });
        let Some((meta, reply_kind, seq_id, body)) = parsed else {
            tracing::warn!("a gRPC reply could not be read back; dropped");
            return;
        };
        let stream = seq_id as u32;
        let Some(s) = self.streams.get_mut(&stream) else {
            return;
        };
        // What the handler sends back: response metadata, in our HEADERS.
        s.extra_headers = metadata_block(&meta);
        if reply_kind == MessageType::Exception {
            let e: crate::wire::GrpcStatus = prost::Message::decode(body).unwrap_or_default();
            let code = if e.code != 0 {
                e.code.min(16) as u8
            } else {
                let exception = ApplicationException::new(
                    ApplicationExceptionKind::from_i32(e.type_id),
                    e.message.as_str(),
                );
                crate::status::exception_kind(&exception).grpc_code()
            };
            let mut block = status_block(true, code, &e.message);
            details_header(&mut block, &e.details);
            if let Some(extra) = s.extra_headers.take() {
                block.extend_from_slice(&extra);
            }
            let out = conn.output();
            h2f::write_headers(out, stream, &block, true, self.peer_max_frame);
            if !s.remote_closed {
                h2f::write_rst_stream(out, stream, code::NO_ERROR);
            }
            self.end_stream(conn, stream);
            return;
        }
        // A client pinging while replies flow (grpc-go's bandwidth estimator does, once a
        // round trip) is not flooding: the control frame count starts again.
        self.control_frames = 0;
        let framed = grpc::PREFIX_LEN + body.len();
        let room = self
            .conn_send_window
            .min(s.send_window)
            .min(self.peer_max_frame as i64);
        if !s.gzip && !s.headers_sent && s.out.is_empty() && framed as i64 <= room {
            // The whole reply fits the windows (the usual case): HEADERS, one DATA frame
            // and the trailers go straight to the connection's output, with no queue.
            let out = conn.output();
            let block = with_extra(&self.reply_headers, s.extra_headers.take());
            h2f::write_headers(out, stream, &block, false, self.peer_max_frame);
            h2f::write_header(out, framed, kind::DATA, 0, stream);
            grpc::write_prefix(out, false, body.len());
            out.extend_from_slice(body);
            h2f::write_headers(out, stream, &self.ok_trailers, true, self.peer_max_frame);
            if !s.remote_closed {
                h2f::write_rst_stream(out, stream, code::NO_ERROR);
            }
            s.headers_sent = true;
            self.conn_send_window -= framed as i64;
            s.send_window -= framed as i64;
            self.end_stream(conn, stream);
            return;
        }
        let mut data;
        if s.gzip {
            let mut z = Vec::new();
            grpc::gzip(body, &mut z);
            data = BytesMut::with_capacity(grpc::PREFIX_LEN + z.len());
            grpc::write_prefix(&mut data, true, z.len());
            data.extend_from_slice(&z);
        } else {
            data = BytesMut::with_capacity(grpc::PREFIX_LEN + body.len());
            grpc::write_prefix(&mut data, false, body.len());
            data.extend_from_slice(body);
        }
        self.queued += data.len();
        s.out = data;
        s.done = Some(Done::Ok);
        self.flush(conn, stream);
    }

    /// Sends what a stream has queued as far as the windows allow; once the queue is
    /// empty, its final status (which ends the stream).
    fn flush(&mut self, conn: &mut Conn<'_>, stream: u32) {
        let Some(s) = self.streams.get_mut(&stream) else {
            return;
        };
        // What waits for the socket: before this flush, and what it adds.
        let pending = conn.pending_output();
        let out = conn.output();
        let start = out.len();
        if !s.headers_sent && (!s.out.is_empty() || matches!(s.done, Some(Done::Ok))) {
            let headers = if s.gzip {
                &self.gzip_headers
            } else {
                &self.reply_headers
            };
            let block = with_extra(headers, s.extra_headers.take());
            h2f::write_headers(out, stream, &block, false, self.peer_max_frame);
            s.headers_sent = true;
        }
        while !s.out.is_empty() {
            let room = self
                .conn_send_window
                .min(s.send_window)
                .min(self.peer_max_frame as i64);
            let output_full =
                s.kind != StreamKind::Unary && pending + (out.len() - start) >= OUTPUT_HIGH;
            if room <= 0 || output_full {
                if !s.blocked {
                    s.blocked = true;
                    self.blocked.push(stream);
                }
                if output_full && self.flush_timer.is_none() {
                    let at = conn.now() + FLUSH_RETRY;
                    self.flush_timer = Some(conn.set_timer(at, FLUSH_TIMER));
                }
                return;
            }
            let n = (room as usize).min(s.out.len());
            h2f::write_data(out, stream, &s.out[..n], false);
            s.out.advance(n); // no split: that would make the buffer shared (an allocation)
            self.queued -= n;
            self.conn_send_window -= n as i64;
            s.send_window -= n as i64;
        }
        let Some(done) = s.done.take() else {
            return;
        };
        match done {
            Done::Ok => {
                h2f::write_headers(out, stream, &self.ok_trailers, true, self.peer_max_frame)
            }
            Done::Status(code, message, details) => {
                let mut block = status_block(!s.headers_sent, code, &message);
                details_header(&mut block, &details);
                if let Some(extra) = s.extra_headers.take() {
                    // Trailers only: the metadata goes with the status.
                    block.extend_from_slice(&extra);
                }
                h2f::write_headers(out, stream, &block, true, self.peer_max_frame);
            }
        }
        if !s.remote_closed {
            // The client has not ended its side: the stream ends with a reset.
            h2f::write_rst_stream(out, stream, code::NO_ERROR);
        }
        self.end_stream(conn, stream);
    }

    /// Sends replies that waited for window.
    fn flush_blocked(&mut self, conn: &mut Conn<'_>) {
        if self.blocked.is_empty() {
            return;
        }
        for stream in std::mem::take(&mut self.blocked) {
            if let Some(s) = self.streams.get_mut(&stream) {
                s.blocked = false;
                self.flush(conn, stream);
            }
        }
    }

    /// The retry of replies held back by a full output.
    pub(crate) fn flush_timer(&mut self, conn: &mut Conn<'_>) {
        self.flush_timer = None;
        self.flush_blocked(conn);
        self.settle(conn);
    }

    /// Tops a stream's receive window up once half of it was used.
    fn stream_top_up(&mut self, conn: &mut Conn<'_>, stream: u32) {
        if let Some(s) = self.streams.get_mut(&stream) {
            if s.unacked >= STREAM_WINDOW / 2 && !s.remote_closed {
                h2f::write_window_update(conn.output(), stream, s.unacked);
                s.recv_window += i64::from(s.unacked);
                s.unacked = 0;
            }
        }
    }

    /// Hands a streaming call's handler the messages that arrived, while it has room, and
    /// then the client's end. Messages it has no room for wait, and are not credited back
    /// to the client's windows until they are handed over.
    fn pump(&mut self, conn: &mut Conn<'_>, stream: u32) {
        loop {
            let Some(s) = self.streams.get(&stream) else {
                return;
            };
            if s.handler.is_none() {
                break;
            }
            if !room(s, self.queued) {
                self.wait_for_room(stream);
                self.flush(conn, stream);
                return;
            }
            let s = self.streams.get_mut(&stream).expect("looked up above");
            match grpc::message(&s.data, self.max_message) {
                Ok(grpc::Message::Whole {
                    compressed: false,
                    len,
                }) => {
                    let mut m = s.data.split_to(grpc::PREFIX_LEN + len).freeze();
                    m.advance(grpc::PREFIX_LEN);
                    self.event(conn, stream, |h, out| h.message(m, out));
                }
                Ok(grpc::Message::NeedMore(_)) => break,
                Ok(grpc::Message::Whole { len, .. }) => {
                    let z = s.data.split_to(grpc::PREFIX_LEN + len);
                    let plain = if s.gzip {
                        grpc::gunzip(&z[grpc::PREFIX_LEN..], self.max_message)
                    } else {
                        Err(grpc::GzipError::Corrupt)
                    };
                    match plain {
                        Ok(m) => self.event(conn, stream, |h, out| h.message(m.into(), out)),
                        Err(e) => {
                            let (kind, code, why) = match e {
                                grpc::GzipError::TooLarge => (
                                    ErrorKind::ResourceExhausted,
                                    8,
                                    "a request message inflates beyond the limit",
                                ),
                                grpc::GzipError::Corrupt => (
                                    ErrorKind::Protocol,
                                    13,
                                    "a compressed message that does not gunzip, or without grpc-encoding",
                                ),
                            };
                            self.fail(conn, stream, kind, code, why);
                            break;
                        }
                    }
                }
                Err(grpc::MessageError::TooLarge(n)) => {
                    let why = format!(
                        "request message of {n} bytes, over the limit of {}",
                        self.max_message
                    );
                    self.fail(conn, stream, ErrorKind::ResourceExhausted, 8, &why);
                    break;
                }
                Err(grpc::MessageError::BadFlag(_)) => {
                    self.fail(conn, stream, ErrorKind::Protocol, 13, "bad message prefix");
                    break;
                }
            }
        }
        // What the handler sent for these messages leaves together.
        self.flush(conn, stream);
        let Some(s) = self.streams.get_mut(&stream) else {
            return;
        };
        // Not held back: what is left is less than one message (at most the largest
        // allowed), and is credited with the rest, so that a message larger than the
        // window can still arrive. A stream not open yet keeps what came (bounded by the
        // window).
        let truncated =
            s.remote_closed && !s.data.is_empty() && s.done.is_none() && s.handler.is_some();
        if s.handler.is_some() || s.done.is_some() {
            if s.done.is_some() {
                s.data.clear();
            }
            // The stream's window takes all of it (a message larger than the window can
            // still arrive); the connection's only what left `data`: partial messages
            // hold the connection window, so what a connection makes us hold stays
            // within the window we advertise.
            s.unacked += std::mem::take(&mut s.buffered);
            let left = s.conn_held - s.data.len() as u32;
            s.conn_held -= left;
            self.conn_unacked += left;
        }
        if truncated {
            let why = "the client ended its side inside a message";
            self.fail(conn, stream, ErrorKind::Protocol, 13, why);
            return;
        }
        let end = s.remote_closed && s.data.is_empty() && !s.end_told && s.handler.is_some();
        if end {
            s.end_told = true;
        }
        self.stream_top_up(conn, stream);
        if end {
            self.run(conn, stream, |h, out| h.end(out));
        }
    }

    /// Lists a stream's handler to be told when room comes back.
    fn wait_for_room(&mut self, stream: u32) {
        if let Some(s) = self.streams.get_mut(&stream) {
            if !s.wants_room {
                s.wants_room = true;
                self.writers.push(stream);
            }
        }
    }

    /// Tells the handlers that waited for room, and have it now.
    fn wake(&mut self, conn: &mut Conn<'_>) {
        if self.writers.is_empty() {
            return;
        }
        for id in std::mem::take(&mut self.writers) {
            let Some(s) = self.streams.get_mut(&id) else {
                continue;
            };
            if s.handler.is_none() {
                s.wants_room = false;
                continue;
            }
            if !room(s, self.queued) {
                self.writers.push(id); // still waiting
                continue;
            }
            s.wants_room = false;
            self.pump(conn, id);
            if self
                .streams
                .get(&id)
                .is_some_and(|s| s.handler.is_some() && !s.wants_room && room(s, self.queued))
            {
                self.run(conn, id, |h, out| h.writable(out));
            }
        }
        // A handler whose replies all left at once (the windows had room) waits for room
        // it already has: it is told on the next loop turn, so that one fast stream does
        // not hold the core.
        let ready = self.writers.iter().any(|id| {
            self.streams
                .get(id)
                .is_some_and(|s| s.handler.is_some() && room(s, self.queued))
        });
        if ready && self.flush_timer.is_none() {
            self.flush_timer = Some(conn.set_timer(conn.now(), FLUSH_TIMER));
        }
    }

    /// Runs one event of a stream's handler; what it sends stays queued until the caller
    /// flushes. A handler that finished its stream, or panicked, is dropped.
    fn event(
        &mut self,
        conn: &mut Conn<'_>,
        stream: u32,
        f: impl FnOnce(&mut dyn RawStream, &mut dyn RawOut),
    ) {
        let Some(mut h) = self.streams.get_mut(&stream).and_then(|s| s.handler.take()) else {
            return;
        };
        let mut out = Out {
            h2: self,
            conn,
            stream,
        };
        let alive = stream::event(&mut out, |o| f(&mut *h, o));
        if let Some(s) = self.streams.get_mut(&stream) {
            if alive && s.done.is_none() {
                s.handler = Some(h);
            }
        }
    }

    /// [`event`](Self::event), then what the handler sent leaves (as the windows allow).
    fn run(
        &mut self,
        conn: &mut Conn<'_>,
        stream: u32,
        f: impl FnOnce(&mut dyn RawStream, &mut dyn RawOut),
    ) {
        self.event(conn, stream, f);
        self.flush(conn, stream);
    }

    /// Finishes a stream with an error from the connection's side.
    fn fail(&mut self, conn: &mut Conn<'_>, stream: u32, kind: ErrorKind, code: u8, why: &str) {
        if let Some(s) = self.streams.get_mut(&stream) {
            if s.done.is_none() {
                s.error = Some(kind);
                s.done = Some(Done::Status(code, why.to_owned(), Bytes::new()));
                if let Some(mut h) = s.handler.take() {
                    stream::cancel(&mut *h, &Status::new(kind, why));
                }
                self.flush(conn, stream);
            }
        }
    }

    /// A streaming call's stream opened (or was refused) by its service.
    pub(crate) fn attach(
        &mut self,
        conn: &mut Conn<'_>,
        stream: u32,
        handler: Result<Box<dyn RawStream>, Status>,
        call: Box<StreamEnd>,
        back: &[(String, Bytes)],
    ) {
        let Some(s) = self.streams.get_mut(&stream) else {
            call.end(Some(ErrorKind::Cancelled), 0);
            return;
        };
        s.call = Some(call);
        s.answered = true;
        s.extra_headers = metadata_block(back);
        match handler {
            Err(status) => {
                s.error = Some(status.kind());
                let details = status
                    .details()
                    .map(Bytes::copy_from_slice)
                    .unwrap_or_default();
                s.done = Some(Done::Status(
                    status.kind().grpc_code(),
                    status.message().to_owned(),
                    details,
                ));
                s.data.clear();
                self.flush(conn, stream);
                self.pump(conn, stream);
            }
            Ok(h) => {
                s.handler = Some(h);
                // A server-streaming call's request was its whole input.
                s.end_told = s.kind == StreamKind::Server;
                if s.kind == StreamKind::Bidi {
                    // Our headers at once, as tonic's server sends them: a client may wait
                    // for them before it sends its first message.
                    let base = if s.gzip {
                        &self.gzip_headers
                    } else {
                        &self.reply_headers
                    };
                    let block = with_extra(base, s.extra_headers.take());
                    h2f::write_headers(conn.output(), stream, &block, false, self.peer_max_frame);
                    s.headers_sent = true;
                }
                self.run(conn, stream, |h, out| h.writable(out));
                self.pump(conn, stream);
            }
        }
    }

    /// What a [`StreamSender`](super::StreamSender) sent from another thread arrives.
    pub(crate) fn push(&mut self, conn: &mut Conn<'_>, stream: u32, push: Push) {
        let Some(s) = self.streams.get_mut(&stream) else {
            return; // ended meanwhile
        };
        if s.done.is_some() {
            return;
        }
        match push {
            Push::Message(m) => {
                if s.out.len() + m.len() > CONN_QUEUE.max(m.len()) || self.queued > CONN_QUEUE * 4 {
                    let why = "the stream's sender outran its client";
                    self.abort(conn, stream, ErrorKind::ResourceExhausted, 8, why);
                    return;
                }
                s.out.extend_from_slice(&m);
                s.sent += m.len();
                self.queued += m.len();
                self.flush(conn, stream);
            }
            Push::Finish(result) => {
                // Finished by its sender: the handler is done with, not cancelled.
                drop(s.handler.take());
                let mut out = Out {
                    h2: self,
                    conn,
                    stream,
                };
                out.finish(result);
            }
        }
        self.settle(conn);
    }

    /// Tells a stream's handler, if it still runs, that the stream was cancelled.
    fn cancel(&mut self, stream: u32, why: &Status) {
        if let Some(s) = self.streams.get_mut(&stream) {
            if let Some(mut h) = s.handler.take() {
                s.error = Some(why.kind());
                stream::cancel(&mut *h, why);
            } else if s.call.is_some() && (s.done.is_none() || !s.out.is_empty()) {
                // Not finished, or finished with replies the client never took.
                s.error = Some(why.kind());
            }
        }
    }

    /// The connection is closing: every handler still running is cancelled, and every
    /// streaming call ends.
    pub(crate) fn close_all(&mut self) {
        let why = Status::new(ErrorKind::Unavailable, "the connection closed");
        for (_, mut s) in self.streams.drain() {
            if let Some(c) = &s.closed {
                c.store(true, Ordering::Release);
            }
            if let Some(mut h) = s.handler.take() {
                s.error = Some(why.kind());
                stream::cancel(&mut *h, &why);
            }
            if let Some(call) = s.call.take() {
                let error = if s.done.is_some() || s.error.is_none() {
                    s.error.or(Some(ErrorKind::Unavailable))
                } else {
                    s.error
                };
                call.end(error, s.sent);
            }
        }
    }

    /// Ends the connection: GOAWAY with `code` (the last stream we saw) before closing.
    pub(crate) fn go_away(&mut self, conn: &mut Conn<'_>, e: &ConnError) {
        tracing::debug!(code = e.code, why = e.why, "gRPC connection error; GOAWAY");
        h2f::write_goaway(conn.output(), self.last_stream, e.code, e.why.as_bytes());
        self.goaway = true;
    }

    /// A graceful shutdown: GOAWAY naming the last stream taken; it and those before it
    /// are still answered, and streaming handlers are told (a watch finishes).
    pub(crate) fn shutdown(&mut self, conn: &mut Conn<'_>) {
        if !self.goaway && self.started {
            h2f::write_goaway(conn.output(), self.last_stream, code::NO_ERROR, b"");
        }
        self.goaway = true;
        let open: Vec<u32> = self
            .streams
            .iter()
            .filter(|(_, s)| s.handler.is_some())
            .map(|(id, _)| *id)
            .collect();
        for id in open {
            self.run(conn, id, |h, out| h.shutdown(out));
        }
        self.settle(conn);
    }

    /// After a call was served: one still unanswered (deferred) with a deadline gets a
    /// timer, at which it is answered DEADLINE_EXCEEDED (its reply, if it comes later, is
    /// dropped).
    pub(crate) fn served(&mut self, conn: &mut Conn<'_>, stream: u32, deadline: Option<Instant>) {
        if let (Some(at), Some(s)) = (deadline, self.streams.get_mut(&stream)) {
            s.timer = Some(conn.set_timer(at, DEADLINE_TIMER | u64::from(stream)));
        }
    }

    /// Forgets a stream (answered, or reset), and its deadline's timer; a streaming call
    /// ends for its middlewares and metrics.
    fn end_stream(&mut self, conn: &mut Conn<'_>, stream: u32) {
        if let Some(mut s) = self.streams.remove(&stream) {
            if let Some(c) = &s.closed {
                c.store(true, Ordering::Release);
            }
            self.conn_unacked += if matches!(s.kind, StreamKind::Client | StreamKind::Bidi) {
                std::mem::take(&mut s.conn_held)
            } else {
                std::mem::take(&mut s.buffered)
            };
            self.queued -= s.out.len();
            if let Some(t) = s.timer {
                conn.cancel_timer(t);
            }
            if let Some(mut h) = s.handler.take() {
                let why = Status::new(ErrorKind::Cancelled, "the stream ended");
                s.error.get_or_insert(ErrorKind::Cancelled);
                stream::cancel(&mut *h, &why);
            }
            if let Some(call) = s.call.take() {
                call.end(s.error, s.sent);
            }
        }
    }

    /// A stream's deadline passed: its handler (if it still runs) is cancelled, and the
    /// client told DEADLINE_EXCEEDED. A stream finished but held back by a client that
    /// does not read ends too.
    pub(crate) fn deadline(&mut self, conn: &mut Conn<'_>, stream: u32) {
        let Some(s) = self.streams.get_mut(&stream) else {
            return;
        };
        s.timer = None;
        let why = "the deadline passed before the reply";
        self.abort(conn, stream, ErrorKind::DeadlineExceeded, 4, why);
        self.settle(conn);
    }

    /// Ends a stream at once with a status (the deadline passed, a sender outran its
    /// client): its handler is cancelled and its queued replies dropped. The status goes
    /// as trailers unless a reply may be half sent (then only RST_STREAM(CANCEL) says it).
    fn abort(&mut self, conn: &mut Conn<'_>, stream: u32, kind: ErrorKind, code: u8, why: &str) {
        self.cancel(stream, &Status::new(kind, why));
        let Some(s) = self.streams.get_mut(&stream) else {
            return;
        };
        s.error = Some(kind);
        let half_sent = !s.out.is_empty() && s.headers_sent;
        self.queued -= s.out.len();
        s.out.clear();
        s.done = None;
        let out = conn.output();
        if half_sent {
            h2f::write_rst_stream(out, stream, code::CANCEL);
        } else {
            let mut block = status_block(!s.headers_sent, code, why);
            if let Some(extra) = s.extra_headers.take() {
                // Trailers only: the response's metadata goes with the status.
                block.extend_from_slice(&extra);
            }
            h2f::write_headers(out, stream, &block, true, self.peer_max_frame);
            if !s.remote_closed {
                // As after any whole response: the client is told to stop sending,
                // without an error that would hide the status (gRPC clients read
                // RST_STREAM CANCEL as CANCELLED).
                h2f::write_rst_stream(out, stream, code::NO_ERROR);
            }
        }
        self.end_stream(conn, stream);
    }

    /// After any work that may have freed room or taken requests: handlers that waited
    /// are told, and the receive windows topped up.
    pub(crate) fn settle(&mut self, conn: &mut Conn<'_>) {
        self.wake(conn);
        self.top_up(conn);
    }

    /// The close cause a connection error counts as.
    pub(crate) fn cause(_e: &ConnError) -> CloseCause {
        CloseCause::BadFrame
    }
}

/// Whether a stream's handler may queue more, with `queued` bytes queued on the
/// connection.
fn room(s: &Stream, queued: usize) -> bool {
    s.out.len() < STREAM_QUEUE && queued < CONN_QUEUE
}

/// Appends `grpc-status-details-bin` (base64) when there are details.
fn details_header(block: &mut Vec<u8>, details: &[u8]) {
    if !details.is_empty() {
        let v = grpc::base64_encode(details);
        hpack::encode(block, b"grpc-status-details-bin", v.as_bytes(), false);
    }
}

/// A status as a header block: trailers, or (`head`) a whole trailers-only response.
fn status_block(head: bool, status: u8, message: &str) -> Vec<u8> {
    let mut block = Vec::with_capacity(64 + message.len());
    if head {
        hpack::encode(&mut block, b":status", b"200", false);
        hpack::encode(&mut block, b"content-type", b"application/grpc", true);
    }
    hpack::encode(
        &mut block,
        b"grpc-status",
        status.to_string().as_bytes(),
        false,
    );
    if !message.is_empty() {
        let mut m = Vec::new();
        grpc::encode_message(message, &mut m);
        hpack::encode(&mut block, b"grpc-message", &m, true);
    }
    block
}

/// One stream's side of the connection, as a streaming handler writes into it.
struct Out<'a, 'c> {
    h2: &'a mut H2,
    conn: &'a mut Conn<'c>,
    stream: u32,
}

impl RawOut for Out<'_, '_> {
    fn queue(&mut self) -> Option<&mut BytesMut> {
        self.h2
            .streams
            .get_mut(&self.stream)
            .filter(|s| s.done.is_none())
            .map(|s| &mut s.out)
    }

    fn queued(&mut self, n: usize) -> bool {
        // Sent when the handler's event ends (`run`): what it sends at once shares DATA
        // frames instead of one frame per message (gRPC messages are often tiny, and a
        // peer may count frames).
        self.h2.queued += n;
        if let Some(s) = self.h2.streams.get_mut(&self.stream) {
            s.sent += n;
        }
        let room = self.has_room();
        if !room {
            self.h2.wait_for_room(self.stream);
        }
        room
    }

    fn has_room(&self) -> bool {
        self.h2
            .streams
            .get(&self.stream)
            .is_some_and(|s| s.done.is_none() && room(s, self.h2.queued))
    }

    fn finish(&mut self, result: Result<(), Status>) {
        let Some(s) = self.h2.streams.get_mut(&self.stream) else {
            return;
        };
        if s.done.is_some() {
            return;
        }
        s.done = Some(match result {
            Ok(()) => Done::Ok,
            Err(status) => {
                s.error = Some(status.kind());
                let details = status
                    .details()
                    .map(Bytes::copy_from_slice)
                    .unwrap_or_default();
                Done::Status(
                    status.kind().grpc_code(),
                    status.message().to_owned(),
                    details,
                )
            }
        });
        // What the client still sends is dropped.
        if matches!(s.kind, StreamKind::Client | StreamKind::Bidi) {
            s.data.clear();
            s.unacked += std::mem::take(&mut s.buffered);
            self.h2.conn_unacked += std::mem::take(&mut s.conn_held);
        }
        self.h2.flush(self.conn, self.stream);
    }

    fn is_finished(&self) -> bool {
        self.h2
            .streams
            .get(&self.stream)
            .is_none_or(|s| s.done.is_some())
    }

    fn gzip(&self) -> bool {
        self.h2.streams.get(&self.stream).is_some_and(|s| s.gzip)
    }

    fn remote(&mut self) -> Remote {
        let closed = match self.h2.streams.get_mut(&self.stream) {
            Some(s) => s.closed.get_or_insert_with(Default::default).clone(),
            None => Arc::new(AtomicBool::new(true)),
        };
        Remote {
            rt: self
                .h2
                .rt
                .clone()
                .expect("a connection with streams has started"),
            conn: self.conn.id(),
            stream: self.stream,
            push: self.h2.push,
            closed,
            gzip: self.gzip(),
        }
    }
}

/// A request's custom metadata as its headers are decoded: names and values back to
/// back in one reused buffer, so that gathering them allocates nothing per header.
#[derive(Debug, Default)]
struct Metadata {
    buf: Vec<u8>,
    /// Where each header's name starts, where its value starts, and where it ends.
    at: Vec<(usize, usize, usize)>,
}

impl Metadata {
    fn clear(&mut self) {
        self.buf.clear();
        self.at.clear();
    }

    /// Keeps `name: value`: the name under its TTHeader name (see
    /// [`push_metainfo_name`]), a `-bin` value decoded from its base64 (kept as it came
    /// if it is not base64). Names that are not UTF-8 are dropped.
    fn push(&mut self, name: &[u8], value: &[u8]) {
        if std::str::from_utf8(name).is_err() {
            return;
        }
        let start = self.buf.len();
        push_metainfo_name(&mut self.buf, name);
        let mid = self.buf.len();
        match name.ends_with(b"-bin").then(|| grpc::base64_decode(value)) {
            Some(Some(bytes)) => self.buf.extend_from_slice(&bytes),
            _ => self.buf.extend_from_slice(value),
        }
        self.at.push((start, mid, self.buf.len()));
    }

    /// The metadata as a TTHeader of string headers, the form middleware (trace context)
    /// and handlers (`ctx.transient`, `ctx.persistent`) read headers in; `None` when
    /// there is none.
    fn headers(&self, stream: u32) -> Option<TTHeader> {
        if self.at.is_empty() {
            return None;
        }
        let strs: Vec<(&str, &[u8])> = self
            .at
            .iter()
            .filter_map(|&(a, m, e)| {
                let name = std::str::from_utf8(&self.buf[a..m]).ok()?;
                Some((name, &self.buf[m..e]))
            })
            .collect();
        let b = TTHeaderBuilder {
            seq_id: stream as i32,
            protocol_id: 4,
            strs: &strs,
            ..TTHeaderBuilder::default()
        };
        let mut out = BytesMut::with_capacity(64 + self.buf.len() + 4 * strs.len());
        let start = b.begin(&mut out).ok()?;
        // A frame carries a message: an empty Kitex Protobuf one stands in.
        KitexPbHeader {
            kind: MessageType::Call,
            method: netpoll_codec::ByteString::from_static(""),
            seq_id: stream as i32,
        }
        .write_message_header(&mut out, 0);
        TTHeaderBuilder::finish(&mut out, start).ok()?;
        TTHeader::parse(out.freeze()).ok()
    }
}

/// Appends a metadata name as handlers read it. HTTP/2 header names are lower case:
/// Kitex's metainfo arrives as `rpc-transit-KEY` or `rpc_transit_KEY` (and persist,
/// backward); it is read back under its TTHeader names (`RPC_TRANSIT_KEY`, ...), as
/// `ctx.transient` and `ctx.persistent` look for them. Other names stay as they are.
fn push_metainfo_name(out: &mut Vec<u8>, k: &[u8]) {
    for (lower, upper) in [
        (&b"rpc-transit-"[..], &b"RPC_TRANSIT_"[..]),
        (b"rpc_transit_", b"RPC_TRANSIT_"),
        (b"rpc-persist-", b"RPC_PERSIST_"),
        (b"rpc_persist_", b"RPC_PERSIST_"),
        (b"rpc-backward-", b"RPC_BACKWARD_"),
        (b"rpc_backward_", b"RPC_BACKWARD_"),
    ] {
        if let Some(rest) = k.strip_prefix(lower) {
            out.extend_from_slice(upper);
            out.extend_from_slice(rest);
            return;
        }
    }
    out.extend_from_slice(k);
}

/// The HPACK block of response metadata a handler sent back (names that cannot travel
/// as gRPC metadata are dropped); `None` when there is none.
fn metadata_block<K: AsRef<str>, V: AsRef<[u8]>>(meta: &[(K, V)]) -> Option<Vec<u8>> {
    if meta.is_empty() {
        return None;
    }
    let mut block = Vec::new();
    for (k, v) in meta {
        let (k, v) = (k.as_ref(), v.as_ref());
        match crate::wire::grpc_metadata(k, v) {
            Some((n, v)) => hpack::encode(&mut block, n.as_bytes(), &v, false),
            None => tracing::debug!(name = %k, "cannot travel as gRPC metadata; not sent"),
        }
    }
    Some(block)
}

/// `base` with the `extra` header fields after it.
fn with_extra(base: &[u8], extra: Option<Vec<u8>>) -> std::borrow::Cow<'_, [u8]> {
    match extra {
        None => std::borrow::Cow::Borrowed(base),
        Some(extra) => {
            let mut block = base.to_vec();
            block.extend_from_slice(&extra);
            std::borrow::Cow::Owned(block)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kitex_metainfo_names_are_read_back_under_their_ttheader_names() {
        let name = |k: &str| {
            let mut out = Vec::new();
            push_metainfo_name(&mut out, k.as_bytes());
            String::from_utf8(out).unwrap()
        };
        assert_eq!(name("rpc-transit-tenant"), "RPC_TRANSIT_tenant");
        assert_eq!(name("rpc_persist_user"), "RPC_PERSIST_user");
        assert_eq!(name("rpc-backward-x"), "RPC_BACKWARD_x");
        assert_eq!(name("traceparent"), "traceparent");
        assert_eq!(name("x-custom"), "x-custom");
    }

    #[test]
    fn metadata_gathers_names_values_and_binary_values() {
        let mut m = Metadata::default();
        assert!(m.headers(1).is_none());
        m.push(b"rpc-transit-tenant", b"t1");
        m.push(b"trace-bin", b"AP8=");
        m.push(b"odd-bin", b"not base64!");
        m.push(b"\xff", b"dropped");
        let h = m.headers(1).unwrap();
        assert_eq!(
            h.str_header("RPC_TRANSIT_tenant").as_deref(),
            Some(&b"t1"[..])
        );
        assert_eq!(h.str_header("trace-bin").as_deref(), Some(&[0u8, 255][..]));
        assert_eq!(
            h.str_header("odd-bin").as_deref(),
            Some(&b"not base64!"[..])
        );
        assert_eq!(h.str_headers().count(), 3);
        m.clear();
        assert!(m.headers(3).is_none());
    }
}
