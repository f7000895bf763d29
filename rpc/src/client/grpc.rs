//! gRPC over HTTP/2 for the client: the HTTP/2 state of one client connection.
//!
//! A call arrives here as the TTHeader frame every Protobuf client writes (its string
//! headers are the call's metadata, its payload a Kitex Protobuf message naming the
//! method); it leaves as one HTTP/2 stream: HEADERS (`:path /{package.Service}/{Method}`,
//! `grpc-timeout`, the metadata) and DATA (the message behind gRPC's prefix). The reply
//! is gathered (bounded by the client's largest frame) and handed back as a TTHeader frame
//! carrying a Kitex Protobuf REPLY, or an EXCEPTION whose status keeps the exact gRPC
//! code, so that the typed client reads it as it reads any other; the response's custom
//! metadata comes back as backward values (`call_meta`).
//!
//! Flow control is kept both ways: requests wait for the server's windows; what the
//! server sends is credited back as it is received (each stream holds at most one reply,
//! bounded by the largest frame). Streams over the server's `MAX_CONCURRENT_STREAMS` wait
//! here, in order, for others to end. A GOAWAY fails the calls the server did not take
//! as never sent (so they are retried elsewhere); PING and SETTINGS are answered.

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;
use std::time::Duration;

use bytes::{Buf, Bytes, BytesMut};
use netpoll::{Conn, Input};
use netpoll_codec::frame::{str_key, KitexPbHeader, TTHeader, TTHeaderBuilder};
use netpoll_codec::h2::conn::{self as h2c, conn_err, ConnError, HeaderBlocks};
use netpoll_codec::h2::frame::{self as h2f, code, flag, kind, setting, Split};
use netpoll_codec::h2::{grpc, hpack};
use netpoll_codec::thrift::MessageType;
use netpoll_codec::ByteString;

use super::stream::{Op, Shared, RECV_QUEUE};
use crate::{CallError, ErrorKind};

/// Timer tokens of streaming calls' deadlines: this bit, and the stream id.
pub(crate) const STREAM_TIMER: u64 = 1 << 40;

/// The timer token of the flush of what streaming calls sent in one loop turn.
pub(crate) const FLUSH_TIMER: u64 = 1 << 41;

/// The per-stream receive window we advertise.
const STREAM_WINDOW: u32 = 1 << 20;
/// The connection receive window we keep open.
const CONN_WINDOW: u32 = 16 << 20;
/// The largest response header list we take.
const MAX_HEADER_LIST: usize = 64 * 1024;

/// Where a gRPC client's calls go: the service's full name (for `:path`), the
/// `:authority` and `:scheme`, and the largest reply message taken. Made by
/// [`ClientBuilder::grpc`](super::ClientBuilder::grpc); opaque.
#[derive(Debug, Clone)]
pub struct GrpcTarget {
    pub(crate) full_name: std::sync::Arc<str>,
    /// `:authority`; the server's address when `None`.
    pub(crate) authority: Option<String>,
    pub(crate) tls: bool,
    pub(crate) max_message: usize,
    /// Request messages are gzip-compressed.
    pub(crate) gzip: bool,
}

/// One call's stream.
#[derive(Debug)]
struct Stream {
    seq: i32,
    method: ByteString,
    /// Request DATA not sent yet.
    out: BytesMut,
    /// Our side ends once `out` is sent.
    close: bool,
    /// END_STREAM went out.
    closed: bool,
    /// A streaming call's handle: replies go to it, and so does the end.
    shared: Option<Arc<Shared>>,
    /// Bytes of replies read but not credited back to the server (a streaming call's
    /// reader is behind).
    uncredited: u32,
    /// A streaming call's deadline.
    timer: Option<netpoll::TimerId>,
    send_window: i64,
    /// Waiting for window (listed in `blocked`).
    blocked: bool,
    /// The response's HEADERS came.
    headers: bool,
    /// The response is gzip-compressed.
    gzip: bool,
    /// The response's messages, as they arrive.
    body: BytesMut,
    /// Bytes received since the stream's window was last topped up.
    unacked: u32,
    /// What the server may still send on it; below zero it ignored flow control.
    recv_window: i64,
    /// The response's custom metadata (headers and trailers).
    meta: Vec<(String, Vec<u8>)>,
    status: Option<u8>,
    message: String,
    /// `grpc-status-details-bin`, decoded.
    details: Bytes,
    http_status: Option<u16>,
}

/// A call waiting for the server to allow one more stream.
#[derive(Debug)]
struct Waiting {
    seq: i32,
    frame: Bytes,
    timeout: Option<Duration>,
}

/// A call's outcome: the reply frame, or the failure.
pub(crate) type Outcome = (i32, Result<Bytes, CallError>);

/// The HTTP/2 state of one gRPC client connection.
#[derive(Debug)]
pub(crate) struct H2Client {
    target: std::sync::Arc<GrpcTarget>,
    authority: String,
    started: bool,
    decoder: hpack::Decoder,
    next_stream: u32,
    streams: HashMap<u32, Stream>,
    by_seq: HashMap<i32, u32>,
    waiting: VecDeque<Waiting>,
    blocked: Vec<u32>,
    continuation: HeaderBlocks,
    peer_max_frame: usize,
    peer_initial_window: i64,
    peer_max_streams: usize,
    conn_send_window: i64,
    conn_recv_window: i64,
    conn_unacked: u32,
    /// The server's GOAWAY: the last stream it took (or ours, when stream ids run out).
    goaway: Option<u32>,
    /// Request bytes held here: not yet let out by the windows, or waiting for a stream.
    held: usize,
    /// Streams whose handles sent messages this loop turn: flushed together at its end,
    /// so that what is sent at once shares DATA frames.
    dirty: Vec<u32>,
}

impl H2Client {
    pub(crate) fn new(
        target: std::sync::Arc<GrpcTarget>,
        addr: &crate::discovery::Addr,
    ) -> H2Client {
        // A Unix socket has no host to name: "localhost", as grpc-go sends.
        let authority = match addr {
            crate::discovery::Addr::Tcp(a) => a.to_string(),
            crate::discovery::Addr::Unix(_) => "localhost".to_owned(),
        };
        H2Client {
            authority: target.authority.clone().unwrap_or(authority),
            target,
            started: false,
            decoder: hpack::Decoder::new(4096, MAX_HEADER_LIST),
            next_stream: 1,
            streams: HashMap::new(),
            by_seq: HashMap::new(),
            waiting: VecDeque::new(),
            blocked: Vec::new(),
            continuation: HeaderBlocks::new(MAX_HEADER_LIST * 2),
            peer_max_frame: h2f::DEFAULT_MAX_FRAME as usize,
            peer_initial_window: i64::from(h2f::DEFAULT_WINDOW),
            peer_max_streams: usize::MAX,
            conn_send_window: i64::from(h2f::DEFAULT_WINDOW),
            conn_recv_window: i64::from(CONN_WINDOW),
            conn_unacked: 0,
            goaway: None,
            held: 0,
            dirty: Vec::new(),
        }
    }

    /// Whether no call is in flight or waiting.
    pub(crate) fn no_streams(&self) -> bool {
        self.streams.is_empty() && self.waiting.is_empty()
    }

    /// Whether the server said it takes no new streams.
    pub(crate) fn going_away(&self) -> bool {
        self.goaway.is_some()
    }

    /// Request bytes held by the HTTP/2 state (counted against the client's queue bound).
    pub(crate) fn held(&self) -> usize {
        self.held
    }

    /// Forgets a stream: the bytes it held, and its call's sequence id.
    fn take_stream(&mut self, id: u32) -> Option<Stream> {
        let s = self.streams.remove(&id)?;
        self.by_seq.remove(&s.seq);
        self.held -= s.out.len();
        Some(s)
    }

    /// The connection preface, our settings and the connection window, once (as soon as
    /// the connection is open: a server speaks only after our preface).
    pub(crate) fn start(&mut self, out: &mut BytesMut) {
        if self.started {
            return;
        }
        self.started = true;
        out.extend_from_slice(h2f::PREFACE);
        h2f::write_settings(
            out,
            &[
                (setting::ENABLE_PUSH, 0),
                (setting::INITIAL_WINDOW_SIZE, STREAM_WINDOW),
                (setting::MAX_HEADER_LIST_SIZE, MAX_HEADER_LIST as u32),
            ],
        );
        h2f::write_window_update(out, 0, CONN_WINDOW - h2f::DEFAULT_WINDOW);
    }

    /// Sends call `seq`, whose request is the TTHeader `frame`: on a new stream, or
    /// queued until the server allows one more.
    pub(crate) fn send(
        &mut self,
        conn: &mut Conn<'_>,
        seq: i32,
        frame: Bytes,
        timeout: Option<Duration>,
    ) -> Result<(), CallError> {
        self.start(conn.output());
        if self.goaway.is_some() {
            return Err(not_taken("the server is going away"));
        }
        if self.streams.len() >= self.peer_max_streams {
            self.held += frame.len();
            self.waiting.push_back(Waiting {
                seq,
                frame,
                timeout,
            });
            return Ok(());
        }
        self.open(conn, seq, frame, timeout)
    }

    /// A new stream's id, and its HEADERS from a call's TTHeader frame: the method, and
    /// the request message.
    fn request(
        &mut self,
        conn: &mut Conn<'_>,
        frame: Bytes,
        timeout: Option<Duration>,
    ) -> Result<(u32, ByteString, Bytes), CallError> {
        let bad = |e: &dyn std::fmt::Display| CallError::Protocol(crate::reason(e.to_string()));
        let tt = TTHeader::parse(frame).map_err(|e| bad(&e))?;
        let (header, body) = KitexPbHeader::parse_message(tt.message()).map_err(|e| bad(&e))?;
        let id = self.next_stream;
        if id > (1 << 31) - 1 {
            return Err(not_taken("the connection ran out of stream ids"));
        }
        self.next_stream += 2;
        if self.next_stream > (1 << 31) - 1 - 1000 {
            // Nearly out of ids: the connection takes no new calls (a new one is opened)
            // and closes once these are answered.
            self.goaway.get_or_insert(id);
        }
        let mut block = Vec::with_capacity(256);
        let path = format!("/{}/{}", self.target.full_name, &*header.method);
        for (n, v) in [
            (&b":method"[..], &b"POST"[..]),
            (b":scheme", if self.target.tls { b"https" } else { b"http" }),
            (b":path", path.as_bytes()),
            (b":authority", self.authority.as_bytes()),
            (b"content-type", b"application/grpc"),
            (b"te", b"trailers"),
            (b"grpc-accept-encoding", b"identity,gzip"),
            (b"user-agent", b"netpoll-rpc"),
        ] {
            hpack::encode(&mut block, n, v, false);
        }
        if self.target.gzip {
            hpack::encode(&mut block, b"grpc-encoding", b"gzip", false);
        }
        if let Some(t) = timeout.or_else(|| tt.rpc_timeout()) {
            let mut v = Vec::new();
            grpc::format_timeout(t, &mut v);
            hpack::encode(&mut block, b"grpc-timeout", &v, false);
        }
        for (k, v) in tt.str_headers() {
            match metadata(k, v) {
                Some((name, v)) => hpack::encode(&mut block, name.as_bytes(), &v, false),
                None => tracing::debug!(
                    name = %String::from_utf8_lossy(k),
                    "header cannot travel as gRPC metadata; not sent"
                ),
            }
        }
        h2f::write_headers(conn.output(), id, &block, false, self.peer_max_frame);
        Ok((id, header.method, body))
    }

    fn new_stream(&self, seq: i32, method: ByteString, out: BytesMut, close: bool) -> Stream {
        Stream {
            seq,
            method,
            out,
            close,
            closed: false,
            shared: None,
            uncredited: 0,
            timer: None,
            send_window: self.peer_initial_window,
            blocked: false,
            headers: false,
            gzip: false,
            body: BytesMut::new(),
            unacked: 0,
            recv_window: i64::from(STREAM_WINDOW),
            meta: Vec::new(),
            status: None,
            message: String::new(),
            details: Bytes::new(),
            http_status: None,
        }
    }

    fn open(
        &mut self,
        conn: &mut Conn<'_>,
        seq: i32,
        frame: Bytes,
        timeout: Option<Duration>,
    ) -> Result<(), CallError> {
        let (id, method, body) = self.request(conn, frame, timeout)?;
        let data = if self.target.gzip {
            let mut z = Vec::new();
            grpc::gzip(&body, &mut z);
            let mut data = BytesMut::with_capacity(grpc::PREFIX_LEN + z.len());
            grpc::write_prefix(&mut data, true, z.len());
            data.extend_from_slice(&z);
            data
        } else {
            let mut data = BytesMut::with_capacity(grpc::PREFIX_LEN + body.len());
            grpc::write_prefix(&mut data, false, body.len());
            data.extend_from_slice(&body);
            data
        };
        let stream = self.new_stream(seq, method, data, true);
        self.held += stream.out.len();
        self.streams.insert(id, stream);
        self.by_seq.insert(seq, id);
        self.flush(conn, id);
        Ok(())
    }

    /// Opens a streaming call (its TTHeader frame carries the method and metadata, and no
    /// message): its replies go to `shared`, which learns the stream's id.
    pub(crate) fn open_stream(
        &mut self,
        conn: &mut Conn<'_>,
        frame: Bytes,
        timeout: Option<Duration>,
        shared: Arc<Shared>,
    ) -> Result<(), CallError> {
        self.start(conn.output());
        if self.goaway.is_some() {
            return Err(not_taken("the server is going away"));
        }
        if self.streams.len() >= self.peer_max_streams {
            return Err(not_taken(
                "the server allows no more streams on the connection",
            ));
        }
        let (id, method, _) = self.request(conn, frame, timeout)?;
        let mut stream = self.new_stream(-1, method, BytesMut::new(), false);
        if let Some(t) = timeout {
            stream.timer = Some(conn.set_timer(conn.now() + t, STREAM_TIMER | u64::from(id)));
        }
        shared.lock().at = Some((conn.id(), id));
        stream.shared = Some(shared);
        self.streams.insert(id, stream);
        Ok(())
    }

    /// What a streaming call's handle asks.
    pub(crate) fn stream_op(
        &mut self,
        conn: &mut Conn<'_>,
        id: u32,
        op: Op,
        done: &mut Vec<Outcome>,
    ) {
        let Some(s) = self.streams.get_mut(&id) else {
            return;
        };
        match op {
            Op::Send(m) => {
                if s.close {
                    // Sent after our end: dropped (the handle stops waiting for it).
                    if let Some(sh) = &s.shared {
                        let mut st = sh.lock();
                        st.queued = st.queued.saturating_sub(m.len());
                    }
                    return;
                }
                s.out.extend_from_slice(&m);
                self.held += m.len();
                if self.dirty.is_empty() {
                    // Flushed at the next turn, with whatever else is sent by then.
                    conn.set_timer(conn.now(), FLUSH_TIMER);
                }
                if !self.dirty.contains(&id) {
                    self.dirty.push(id);
                }
            }
            Op::Close => {
                s.close = true;
                self.flush(conn, id);
            }
            Op::Credit => {
                let shared = s.shared.clone();
                let behind = shared.as_ref().is_some_and(|sh| {
                    sh.state
                        .lock()
                        .unwrap_or_else(|p| p.into_inner())
                        .inbox_bytes
                        >= RECV_QUEUE
                });
                if !behind && s.uncredited > 0 {
                    s.unacked += std::mem::take(&mut s.uncredited);
                    if let Some(sh) = shared {
                        sh.state
                            .lock()
                            .unwrap_or_else(|p| p.into_inner())
                            .uncredited = 0;
                    }
                    self.top_up_stream(conn, id);
                }
            }
            Op::Cancel => {
                self.end(conn, id, code::CANCEL);
                // A stream slot came free.
                self.open_waiting(conn, done);
            }
        }
    }

    /// Sends what streaming calls' handles sent since the last flush.
    pub(crate) fn flush_dirty(&mut self, conn: &mut Conn<'_>) {
        for id in std::mem::take(&mut self.dirty) {
            self.flush(conn, id);
        }
    }

    /// A streaming call's deadline passed.
    pub(crate) fn stream_deadline(
        &mut self,
        conn: &mut Conn<'_>,
        id: u32,
        done: &mut Vec<Outcome>,
    ) {
        if let Some(s) = self.streams.get_mut(&id) {
            s.timer = None;
            if let Some(sh) = &s.shared {
                sh.end(Err(CallError::Timeout));
            }
            self.end(conn, id, code::CANCEL);
            self.open_waiting(conn, done);
        }
    }

    /// Tops a stream's receive window up once half of it was used.
    fn top_up_stream(&mut self, conn: &mut Conn<'_>, id: u32) {
        if let Some(s) = self.streams.get_mut(&id) {
            if s.unacked >= STREAM_WINDOW / 2 {
                h2f::write_window_update(conn.output(), id, s.unacked);
                s.recv_window += i64::from(s.unacked);
                s.unacked = 0;
            }
        }
    }

    /// The connection is gone: every streaming call ends with `why`.
    pub(crate) fn close_streams(&mut self, why: &crate::Cause) {
        self.held = 0;
        self.by_seq.clear();
        for (_, s) in self.streams.drain() {
            if let Some(sh) = s.shared {
                sh.end(Err(CallError::ConnectionLost(why.clone())));
            }
        }
    }

    /// Sends as much of a stream's request as the windows allow, and ends our side once
    /// it is all sent and the end was asked for.
    fn flush(&mut self, conn: &mut Conn<'_>, id: u32) {
        let Some(s) = self.streams.get_mut(&id) else {
            return;
        };
        if s.closed {
            return;
        }
        let out = conn.output();
        let before = s.out.len();
        while !s.out.is_empty() {
            let room = self
                .conn_send_window
                .min(s.send_window)
                .min(self.peer_max_frame as i64);
            if room <= 0 {
                if !s.blocked {
                    s.blocked = true;
                    self.blocked.push(id);
                }
                break;
            }
            let n = (room as usize).min(s.out.len());
            let last = n == s.out.len() && s.close;
            h2f::write_data(out, id, &s.out[..n], last);
            s.out.advance(n); // no split: that would make the buffer shared (an allocation)
            self.held -= n;
            self.conn_send_window -= n as i64;
            s.send_window -= n as i64;
            s.closed = last;
        }
        if s.out.is_empty() && s.close && !s.closed {
            h2f::write_data(out, id, &[], true);
            s.closed = true;
        }
        let sent = before - s.out.len();
        if let (Some(sh), true) = (&s.shared, sent > 0) {
            let mut st = sh.lock();
            st.queued = st.queued.saturating_sub(sent);
            drop(st);
            sh.cond.notify_all();
        }
    }

    fn flush_blocked(&mut self, conn: &mut Conn<'_>) {
        for id in std::mem::take(&mut self.blocked) {
            if let Some(s) = self.streams.get_mut(&id) {
                s.blocked = false;
                self.flush(conn, id);
            }
        }
    }

    /// Call `seq` timed out: its stream is reset (or it leaves the queue).
    pub(crate) fn cancel(&mut self, conn: &mut Conn<'_>, seq: i32, done: &mut Vec<Outcome>) {
        if let Some(&id) = self.by_seq.get(&seq) {
            if self.take_stream(id).is_some() {
                h2f::write_rst_stream(conn.output(), id, code::CANCEL);
            }
            self.open_waiting(conn, done);
        } else if let Some(i) = self.waiting.iter().position(|w| w.seq == seq) {
            if let Some(w) = self.waiting.remove(i) {
                self.held -= w.frame.len();
            }
        }
    }

    /// Opens queued calls while the server allows more streams; those that cannot be
    /// sent fail into `done`.
    fn open_waiting(&mut self, conn: &mut Conn<'_>, done: &mut Vec<Outcome>) {
        while self.streams.len() < self.peer_max_streams && self.goaway.is_none() {
            let Some(w) = self.waiting.pop_front() else {
                return;
            };
            self.held -= w.frame.len();
            if let Err(e) = self.open(conn, w.seq, w.frame, w.timeout) {
                done.push((w.seq, Err(e)));
            }
        }
    }

    /// Reads the server's frames; the calls that ended go to `done`.
    pub(crate) fn read(
        &mut self,
        conn: &mut Conn<'_>,
        input: &mut Input<'_>,
        done: &mut Vec<Outcome>,
    ) -> Result<(), ConnError> {
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
            self.frame(conn, h, payload, done)?;
            input.advance(len);
        }
        if self.conn_unacked >= CONN_WINDOW / 2 {
            h2f::write_window_update(conn.output(), 0, self.conn_unacked);
            self.conn_recv_window += i64::from(self.conn_unacked);
            self.conn_unacked = 0;
        }
        self.open_waiting(conn, done);
        Ok(())
    }

    fn frame(
        &mut self,
        conn: &mut Conn<'_>,
        h: h2f::FrameHeader,
        payload: &[u8],
        done: &mut Vec<Outcome>,
    ) -> Result<(), ConnError> {
        self.continuation.check(&h)?;
        match h.kind {
            kind::SETTINGS => {
                let Some(set) = h2c::read_settings(&h, payload)? else {
                    return Ok(());
                };
                if let Some(v) = set.initial_window {
                    let delta = i64::from(v) - self.peer_initial_window;
                    self.peer_initial_window = i64::from(v);
                    for s in self.streams.values_mut() {
                        s.send_window += delta;
                    }
                }
                if let Some(v) = set.max_frame {
                    self.peer_max_frame = v as usize;
                }
                if let Some(v) = set.max_streams {
                    self.peer_max_streams = v as usize;
                }
                h2f::write_settings_ack(conn.output());
                self.flush_blocked(conn);
            }
            kind::PING => h2c::answer_ping(&h, payload, conn.output())?,
            kind::WINDOW_UPDATE => {
                let inc = h2c::window_update(&h, payload, &mut self.conn_send_window)?;
                if h.stream == 0 {
                    self.flush_blocked(conn);
                } else if let Some(s) = self.streams.get_mut(&h.stream) {
                    s.send_window += inc;
                    if !s.out.is_empty() {
                        self.flush(conn, h.stream);
                    }
                }
            }
            kind::HEADERS => {
                if let Some((stream, end, block)) = self.continuation.headers(&h, payload)? {
                    self.headers(conn, stream, end, &block, done)?;
                }
            }
            kind::CONTINUATION => {
                if let Some((stream, end, block)) = self.continuation.continuation(&h, payload)? {
                    self.headers(conn, stream, end, &block, done)?;
                }
            }
            kind::DATA => {
                let len = h.len;
                self.conn_recv_window -= i64::from(len);
                if self.conn_recv_window < 0 {
                    return Err(conn_err(code::FLOW_CONTROL_ERROR, "DATA beyond the window"));
                }
                // What we hold is bounded by the largest reply, not by the windows: credit
                // it back at once.
                self.conn_unacked += len;
                let data = h2f::content(&h, payload)
                    .map_err(|_| conn_err(code::PROTOCOL_ERROR, "bad DATA padding"))?;
                let max = self.target.max_message + grpc::PREFIX_LEN;
                let Some(s) = self.streams.get_mut(&h.stream) else {
                    return Ok(()); // a stream we cancelled
                };
                s.recv_window -= i64::from(len);
                if s.recv_window < 0 {
                    // The server ignored the stream's window: the call fails, not the rest.
                    let seq = s.seq;
                    let streaming = s.shared.is_some();
                    let e = CallError::Protocol(crate::reason(
                        "the server sent beyond the stream's flow-control window",
                    ));
                    if let Some(sh) = &s.shared {
                        sh.end(Err(CallError::Protocol(crate::reason(
                            "the server sent beyond the stream's flow-control window",
                        ))));
                    }
                    self.end(conn, h.stream, code::FLOW_CONTROL_ERROR);
                    if !streaming {
                        done.push((seq, Err(e)));
                    }
                    return Ok(());
                }
                if s.shared.is_some() {
                    self.stream_data(conn, h.stream, data, len, h.has(flag::END_STREAM));
                    return Ok(());
                }
                if s.body.len() + data.len() > max {
                    let seq = s.seq;
                    self.end(conn, h.stream, code::CANCEL);
                    done.push((
                        seq,
                        Err(CallError::Status(crate::Status::new(
                            ErrorKind::ResourceExhausted,
                            format!("the reply is larger than {} bytes", self.target.max_message),
                        ))),
                    ));
                    return Ok(());
                }
                s.body.extend_from_slice(data);
                s.unacked += len;
                if h.has(flag::END_STREAM) {
                    // No trailers: not a gRPC response.
                    let seq = s.seq;
                    self.end(conn, h.stream, code::NO_ERROR);
                    let e = CallError::Protocol(crate::reason(
                        "the response ended without gRPC trailers",
                    ));
                    done.push((seq, Err(e)));
                } else if s.unacked >= STREAM_WINDOW / 2 {
                    h2f::write_window_update(conn.output(), h.stream, s.unacked);
                    s.recv_window += i64::from(s.unacked);
                    s.unacked = 0;
                }
            }
            kind::RST_STREAM => {
                let code = h2f::error_code(payload)
                    .map_err(|_| conn_err(code::FRAME_SIZE_ERROR, "bad RST_STREAM"))?;
                if let Some(s) = self.take_stream(h.stream) {
                    if let Some(t) = s.timer {
                        conn.cancel_timer(t);
                    }
                    let e = if code == code::REFUSED_STREAM {
                        not_taken("the server refused the stream")
                    } else {
                        CallError::ConnectionLost(crate::reason(format!(
                            "the server reset the call's stream (HTTP/2 error {code})"
                        )))
                    };
                    match s.shared {
                        Some(sh) => sh.end(Err(e)),
                        None => done.push((s.seq, Err(e))),
                    }
                }
            }
            kind::GOAWAY => {
                if payload.len() < 8 {
                    return Err(conn_err(code::FRAME_SIZE_ERROR, "bad GOAWAY"));
                }
                let last = u32::from_be_bytes([payload[0], payload[1], payload[2], payload[3]])
                    & 0x7fff_ffff;
                self.goaway = Some(last);
                // Streams the server did not take fail as never sent, and so does the queue.
                let dropped: Vec<u32> = self
                    .streams
                    .keys()
                    .copied()
                    .filter(|&id| id > last)
                    .collect();
                for id in dropped {
                    if let Some(s) = self.take_stream(id) {
                        let e = not_taken("the server went away before taking the call");
                        match s.shared {
                            Some(sh) => sh.end(Err(e)),
                            None => done.push((s.seq, Err(e))),
                        }
                    }
                }
                self.held -= self.waiting.iter().map(|w| w.frame.len()).sum::<usize>();
                for w in self.waiting.drain(..) {
                    done.push((w.seq, Err(not_taken("the server is going away"))));
                }
            }
            kind::PUSH_PROMISE => {
                return Err(conn_err(
                    code::PROTOCOL_ERROR,
                    "PUSH_PROMISE, which we disabled",
                ));
            }
            _ => {}
        }
        Ok(())
    }

    /// A whole header block: the response's headers, or its trailers (which end it).
    fn headers(
        &mut self,
        conn: &mut Conn<'_>,
        id: u32,
        end: bool,
        block: &[u8],
        done: &mut Vec<Outcome>,
    ) -> Result<(), ConnError> {
        let mut fields: Vec<(Vec<u8>, Vec<u8>)> = Vec::new();
        let decoded = self
            .decoder
            .decode(block, |n, v| fields.push((n.to_vec(), v.to_vec())));
        let failure = match decoded {
            Ok(()) => None,
            // The table is still in step: only this stream fails.
            Err(hpack::HpackError::ListTooLarge) => Some(CallError::Status(crate::Status::new(
                ErrorKind::ResourceExhausted,
                format!("the server's header list is over {MAX_HEADER_LIST} bytes"),
            ))),
            Err(_) => return Err(conn_err(code::COMPRESSION_ERROR, "bad header block")),
        };
        let Some(s) = self.streams.get_mut(&id) else {
            return Ok(()); // cancelled
        };
        // Informational (1xx) headers are skipped; after the response's headers, only
        // trailers (which end the stream) may come.
        let informational = fields
            .iter()
            .any(|(n, v)| n == b":status" && v.first() == Some(&b'1'));
        let failure = failure.or_else(|| {
            (s.headers && !end && !informational).then(|| {
                CallError::Protocol(crate::reason("a second header block before the trailers"))
            })
        });
        if let Some(e) = failure {
            let seq = s.seq;
            match &s.shared {
                Some(sh) => sh.end(Err(e)),
                None => done.push((seq, Err(e))),
            }
            self.end(conn, id, code::PROTOCOL_ERROR);
            return Ok(());
        }
        if informational {
            return Ok(());
        }
        let first = !s.headers;
        s.headers = true;
        let mut meta_bytes: usize = s.meta.iter().map(|(k, v)| k.len() + v.len()).sum();
        for (n, v) in fields {
            match &n[..] {
                b":status" => {
                    s.http_status = std::str::from_utf8(&v).ok().and_then(|v| v.parse().ok())
                }
                b"grpc-status" => {
                    s.status = std::str::from_utf8(&v).ok().and_then(|v| v.parse().ok())
                }
                b"grpc-message" => s.message = grpc::decode_message(&v),
                b"grpc-status-details-bin" => {
                    s.details = grpc::base64_decode(&v).map(Bytes::from).unwrap_or_default()
                }
                b"grpc-encoding" if first => s.gzip = v == b"gzip",
                b"content-type" | b"grpc-accept-encoding" | b"date" | b"server" => {}
                n if n.first() == Some(&b':') => {}
                // Kept for `call_meta` (a unary call) or the stream's handle, within the
                // header-list bound.
                n if meta_bytes + n.len() + v.len() <= MAX_HEADER_LIST => {
                    meta_bytes += n.len() + v.len();
                    let v = if n.ends_with(b"-bin") {
                        grpc::base64_decode(&v).unwrap_or(v)
                    } else {
                        v
                    };
                    s.meta.push((String::from_utf8_lossy(n).into_owned(), v));
                }
                _ => {}
            }
        }
        if let Some(sh) = &s.shared {
            // A stream's handle reads its metadata as it comes.
            if !s.meta.is_empty() {
                let meta = std::mem::take(&mut s.meta);
                sh.lock()
                    .meta
                    .extend(meta.into_iter().map(|(k, v)| (k, Bytes::from(v))));
            }
        }
        if !end {
            return Ok(());
        }
        let s = self.take_stream(id).expect("looked up above");
        if let Some(t) = s.timer {
            conn.cancel_timer(t);
        }
        if let Some(sh) = &s.shared {
            let result = if s.http_status != Some(200) {
                Err(http_error(s.http_status))
            } else {
                match s.status {
                    Some(0) if s.body.is_empty() => Ok(()),
                    Some(0) => Err(CallError::Protocol(crate::reason(
                        "the stream ended inside a message",
                    ))),
                    Some(code) => Err(CallError::Status(crate::status::from_grpc_with(
                        code,
                        s.message.clone(),
                        s.details.clone(),
                    ))),
                    None => Err(CallError::Protocol(crate::reason(
                        "the response has no grpc-status",
                    ))),
                }
            };
            sh.end(result);
            return Ok(());
        }
        let seq = s.seq;
        done.push((seq, self.reply(s)));
        Ok(())
    }

    /// The reply frame of a finished stream, or its failure.
    fn reply(&self, s: Stream) -> Result<Bytes, CallError> {
        if s.http_status != Some(200) {
            return Err(http_error(s.http_status));
        }
        let Some(status) = s.status else {
            return Err(CallError::Protocol(crate::reason(
                "the response has no grpc-status",
            )));
        };
        let mut body = s.body.freeze();
        let (kind, message) = if status == 0 {
            let (compressed, len) = match grpc::message(&body, usize::MAX) {
                Ok(grpc::Message::Whole { compressed, len })
                    if grpc::PREFIX_LEN + len == body.len() =>
                {
                    (compressed, len)
                }
                _ => {
                    return Err(CallError::Protocol(crate::reason(
                        "a unary reply must be exactly one message",
                    )))
                }
            };
            body.advance(grpc::PREFIX_LEN);
            if compressed {
                if !s.gzip {
                    return Err(CallError::Protocol(crate::reason(
                        "a compressed reply without grpc-encoding",
                    )));
                }
                body = grpc::gunzip(&body, self.target.max_message)
                    .map_err(|e| CallError::Decode(crate::reason(format!("{e:?}"))))?
                    .into();
            }
            debug_assert!(compressed || body.len() == len);
            (MessageType::Reply, body)
        } else {
            let e = crate::wire::GrpcStatus {
                type_id: crate::status::from_grpc(status, String::new())
                    .kind()
                    .thrift_type(),
                message: s.message,
                code: u32::from(status),
                details: s.details,
            };
            (
                MessageType::Exception,
                Bytes::from(prost::Message::encode_to_vec(&e)),
            )
        };
        // The response's metadata, as the backward values `call_meta` returns.
        let back: Vec<(String, Vec<u8>)> = s
            .meta
            .into_iter()
            .map(|(k, v)| (format!("{}{k}", super::typed::BACKWARD_PREFIX), v))
            .collect();
        let strs: Vec<(&str, &[u8])> = back.iter().map(|(k, v)| (k.as_str(), &v[..])).collect();
        let b = TTHeaderBuilder {
            seq_id: s.seq,
            protocol_id: 4,
            strs: &strs,
            ..TTHeaderBuilder::default()
        };
        let mut out = BytesMut::with_capacity(64 + message.len());
        let start = b
            .begin(&mut out)
            .map_err(|e| CallError::Protocol(crate::cause(e)))?;
        KitexPbHeader {
            kind,
            method: s.method,
            seq_id: s.seq,
        }
        .write_message_header(&mut out, message.len());
        out.extend_from_slice(&message);
        TTHeaderBuilder::finish(&mut out, start)
            .map_err(|e| CallError::Protocol(crate::cause(e)))?;
        Ok(out.freeze())
    }

    /// Forgets a stream, resetting it with `code` unless it ended cleanly. A streaming
    /// call's handle not told yet is told it was cancelled.
    fn end(&mut self, conn: &mut Conn<'_>, id: u32, reset: u32) {
        if let Some(s) = self.take_stream(id) {
            if reset != code::NO_ERROR {
                h2f::write_rst_stream(conn.output(), id, reset);
            }
            if let Some(t) = s.timer {
                conn.cancel_timer(t);
            }
            if let Some(sh) = s.shared {
                sh.end(Err(CallError::Status(crate::Status::new(
                    ErrorKind::Cancelled,
                    "the stream was reset",
                ))));
            }
        }
    }

    /// DATA of a streaming call: its whole messages go to the reader; the window is
    /// credited back at once while the reader keeps up, and as it reads otherwise.
    fn stream_data(&mut self, conn: &mut Conn<'_>, id: u32, data: &[u8], len: u32, end: bool) {
        let max = self.target.max_message;
        let Some(s) = self.streams.get_mut(&id) else {
            return;
        };
        let Some(sh) = s.shared.clone() else {
            return;
        };
        s.body.extend_from_slice(data);
        let mut failure = None;
        let mut st = sh.lock();
        loop {
            match grpc::message(&s.body, max) {
                Ok(grpc::Message::Whole { compressed, len }) => {
                    let mut m = s.body.split_to(grpc::PREFIX_LEN + len).freeze();
                    m.advance(grpc::PREFIX_LEN);
                    if compressed {
                        match (s.gzip, grpc::gunzip(&m, max)) {
                            (true, Ok(plain)) => m = plain.into(),
                            _ => {
                                failure = Some("a compressed reply that does not gunzip");
                                break;
                            }
                        }
                    }
                    // Counted as on the wire (prefix included): empty messages count too.
                    st.inbox_bytes += grpc::PREFIX_LEN + m.len();
                    st.inbox.push_back(m);
                }
                Ok(grpc::Message::NeedMore(_)) => break,
                Err(_) => {
                    failure = Some("a reply message over the limit, or a bad prefix");
                    break;
                }
            }
        }
        drop(st);
        // A callback stream takes its replies now (and so credits them at once).
        sh.deliver();
        let mut st = sh.lock();
        if st.inbox_bytes < RECV_QUEUE {
            s.unacked += len + std::mem::take(&mut s.uncredited);
            st.uncredited = 0;
        } else {
            s.uncredited += len;
            st.uncredited = s.uncredited;
        }
        drop(st);
        sh.cond.notify_all();
        if let Some(why) = failure {
            sh.end(Err(CallError::Protocol(crate::reason(why))));
            self.end(conn, id, code::CANCEL);
        } else if end {
            sh.end(Err(CallError::Protocol(crate::reason(
                "the response ended without gRPC trailers",
            ))));
            self.end(conn, id, code::NO_ERROR);
        } else {
            self.top_up_stream(conn, id);
        }
    }

    /// Ends the connection on our side: GOAWAY with `e`'s code.
    pub(crate) fn go_away(&mut self, conn: &mut Conn<'_>, e: &ConnError) {
        tracing::debug!(code = e.code, why = e.why, "gRPC connection error; GOAWAY");
        h2f::write_goaway(conn.output(), 0, e.code, e.why.as_bytes());
    }
}

/// A response whose HTTP status is not 200, as gRPC maps HTTP statuses to its codes
/// (a proxy's 503 is UNAVAILABLE, and retried as such).
fn http_error(status: Option<u16>) -> CallError {
    let code = match status {
        Some(400) => 13,
        Some(401) => 16,
        Some(403) => 7,
        Some(404) => 12,
        Some(429 | 502 | 503 | 504) => 14,
        _ => 2,
    };
    CallError::Status(crate::Status::new(
        ErrorKind::from_grpc_code(code),
        format!("HTTP status {status:?} instead of 200"),
    ))
}

/// A call the server never took: as safe to retry elsewhere as a failed connect.
fn not_taken(why: &'static str) -> CallError {
    CallError::Connect(std::io::Error::new(
        std::io::ErrorKind::ConnectionRefused,
        why,
    ))
}

/// The gRPC metadata of a TTHeader string header of a call, or `None` for those that are
/// TTHeader's own or cannot travel as metadata: Kitex's metainfo (`RPC_TRANSIT_k`,
/// `RPC_PERSIST_k`) travels as `rpc-transit-k` and `rpc-persist-k` (HTTP/2 names are
/// lower case), the rest as it is, lower-cased ([`crate::wire::grpc_metadata`]).
fn metadata(k: &[u8], v: &[u8]) -> Option<(String, Vec<u8>)> {
    let k = std::str::from_utf8(k).ok()?;
    if k == str_key::IDL_SERVICE_NAME {
        return None;
    }
    let name = [
        ("RPC_TRANSIT_", "rpc-transit-"),
        ("RPC_PERSIST_", "rpc-persist-"),
    ]
    .iter()
    .find_map(|(upper, lower)| k.strip_prefix(upper).map(|rest| format!("{lower}{rest}")))
    .unwrap_or_else(|| k.to_owned());
    crate::wire::grpc_metadata(&name, v)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn metadata_names_and_values() {
        let name = |k: &[u8]| metadata(k, b"v").map(|(n, _)| n);
        assert_eq!(
            name(b"RPC_TRANSIT_Tenant").as_deref(),
            Some("rpc-transit-tenant")
        );
        assert_eq!(
            name(b"RPC_PERSIST_user").as_deref(),
            Some("rpc-persist-user")
        );
        assert_eq!(name(b"traceparent").as_deref(), Some("traceparent"));
        assert_eq!(name(b"isn"), None);
        assert_eq!(name(b"bad name"), None);
        assert_eq!(name(b"RPC_TRANSIT_bad key"), None);
        assert_eq!(name(b"Content-Type"), None);
        assert_eq!(name(b"grpc-timeout"), None);
        assert_eq!(metadata(b"x-nl", b"a\r\nb"), None);
        assert_eq!(
            metadata(b"x-bin", &[0, 255]).map(|(_, v)| v).as_deref(),
            Some(&b"AP8"[..])
        );
    }
}
