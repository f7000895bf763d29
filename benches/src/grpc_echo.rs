//! `echo.Echo/Echo` over gRPC (HTTP/2, h2c with prior knowledge): a client connection's
//! HTTP/2 state for the load generator. Each call is a stream (ids 1, 3, 5, ...: the call's
//! sequence number is `stream / 2`); requests respect the server's flow-control windows
//! (the rest waits for WINDOW_UPDATE); replies are checked as they arrive, frame by frame,
//! against the expected reply bytes, and a call counts once its trailers say
//! `grpc-status: 0`. No allocation per call beyond the map entry of its stream.

use std::collections::{HashMap, VecDeque};

use bytes::{Buf, BufMut, Bytes, BytesMut};
use netpoll_codec::h2::frame::{self as h2f, flag, kind, setting, Split};
use netpoll_codec::h2::{grpc, hpack};

use crate::protocol::{Decoded, Protocol, ReplyError, Session};

/// The receive window we open, per stream and for the connection.
const WINDOW: u32 = 1 << 30;

/// gRPC echo (`idl/echo.proto`).
#[derive(Debug, Clone)]
pub struct GrpcEcho {
    /// Largest reply message accepted.
    pub max_frame: usize,
}

impl Protocol for GrpcEcho {
    fn name(&self) -> &'static str {
        "grpc"
    }

    fn encode(&self, _seq: u32, _payload: &[u8], _out: &mut BytesMut) {
        unreachable!("gRPC calls go through a session")
    }

    fn decode(&self, _input: &[u8]) -> Result<Decoded, ReplyError> {
        unreachable!("gRPC replies go through a session")
    }

    fn session(&self, payload: &[u8]) -> Option<Box<dyn Session>> {
        Some(Box::new(GrpcSession::new(payload, self.max_frame)))
    }
}

/// What a stream has received so far.
struct Stream {
    /// Bytes of the reply message matched so far.
    matched: usize,
    /// Everything matched.
    ok: bool,
}

struct GrpcSession {
    /// The first request's header block: the headers that never change are added to the
    /// server's table, as gRPC clients do.
    first_headers: Vec<u8>,
    /// Every later request's: those headers by index.
    request_headers: Vec<u8>,
    /// Whether a request was sent (so the table holds the headers).
    indexed: bool,
    /// A request's DATA payload: the gRPC message of `EchoRequest { msg: payload }`; the
    /// reply's is the same bytes (`EchoReply` has the same shape).
    message: Bytes,
    max_frame: usize,
    decoder: hpack::Decoder,
    streams: HashMap<u32, Stream>,
    /// Request data waiting for window: stream and what is left of its message.
    waiting: VecDeque<(u32, Bytes)>,
    conn_window: i64,
    stream_windows: HashMap<u32, i64>,
    initial_window: i64,
    peer_max_frame: usize,
    /// Received DATA not yet given back to the server's connection window.
    unacked: u32,
    /// The stream whose trailers are being read (its header block may continue).
    continuation: Option<(u32, bool, Vec<u8>)>,
}

impl GrpcSession {
    fn new(payload: &[u8], max_frame: usize) -> GrpcSession {
        let (mut first_headers, mut request_headers) = (Vec::new(), Vec::new());
        for block in [&mut first_headers, &mut request_headers] {
            hpack::encode(block, b":method", b"POST", false);
            hpack::encode(block, b":scheme", b"http", false);
        }
        let indexed: [(&[u8], &[u8]); 4] = [
            (b":path", b"/echo.Echo/Echo"),
            (b":authority", b"rpc-bench"),
            (b"content-type", b"application/grpc"),
            (b"te", b"trailers"),
        ];
        for (n, v) in indexed {
            hpack::encode_with_indexing(&mut first_headers, n, v, true);
        }
        // Added in that order, the first is now the oldest: index 62 + 3.
        for i in (62..66).rev() {
            hpack::write_int(&mut request_headers, 0x80, 7, i);
        }
        // EchoRequest { msg = 1: payload }, behind gRPC's 5-byte prefix.
        let mut pb = BytesMut::new();
        pb.put_u8(0x0a);
        let mut n = payload.len();
        while n >= 0x80 {
            pb.put_u8(n as u8 | 0x80);
            n >>= 7;
        }
        pb.put_u8(n as u8);
        pb.extend_from_slice(payload);
        let mut message = BytesMut::new();
        grpc::write_prefix(&mut message, false, pb.len());
        message.extend_from_slice(&pb);
        GrpcSession {
            first_headers,
            request_headers,
            indexed: false,
            message: message.freeze(),
            max_frame,
            decoder: hpack::Decoder::new(4096, 64 << 10),
            streams: HashMap::new(),
            waiting: VecDeque::new(),
            conn_window: i64::from(h2f::DEFAULT_WINDOW),
            stream_windows: HashMap::new(),
            initial_window: i64::from(h2f::DEFAULT_WINDOW),
            peer_max_frame: h2f::DEFAULT_MAX_FRAME as usize,
            unacked: 0,
            continuation: None,
        }
    }

    /// Sends what the windows allow of the waiting request data.
    fn send_waiting(&mut self, out: &mut BytesMut) {
        while let Some((stream, mut data)) = self.waiting.pop_front() {
            let sw = self
                .stream_windows
                .entry(stream)
                .or_insert(self.initial_window);
            while !data.is_empty() {
                let room = self.conn_window.min(*sw).min(self.peer_max_frame as i64);
                if room <= 0 {
                    break;
                }
                let n = (room as usize).min(data.len());
                let end = n == data.len();
                h2f::write_data(out, stream, &data[..n], end);
                data.advance(n);
                self.conn_window -= n as i64;
                *sw -= n as i64;
            }
            if !data.is_empty() {
                self.waiting.push_front((stream, data));
                return;
            }
            self.stream_windows.remove(&stream);
        }
    }

    /// A whole header block of `stream`: the response headers, or (with END_STREAM) its
    /// trailers, which end the call.
    fn headers(
        &mut self,
        stream: u32,
        end: bool,
        block: &[u8],
        len: usize,
    ) -> Result<Decoded, ReplyError> {
        let mut status = None;
        self.decoder
            .decode(block, |n, v| {
                if n == b"grpc-status" {
                    status = Some(v.to_vec());
                }
            })
            .map_err(|e| ReplyError(format!("response headers: {e}")))?;
        if !end {
            return Ok(Decoded::Skip(len));
        }
        let s = self
            .streams
            .remove(&stream)
            .ok_or_else(|| ReplyError(format!("trailers on unknown stream {stream}")))?;
        if status.as_deref() != Some(b"0") {
            return Err(ReplyError(format!(
                "stream {stream} ended with grpc-status {:?}",
                status.map(|s| String::from_utf8_lossy(&s).into_owned())
            )));
        }
        let ok = s.ok && s.matched == self.message.len();
        Ok(Decoded::Done {
            len,
            seq: stream / 2,
            ok,
        })
    }
}

impl Session for GrpcSession {
    fn open(&mut self, out: &mut BytesMut) {
        out.extend_from_slice(h2f::PREFACE);
        h2f::write_settings(
            out,
            &[
                (setting::ENABLE_PUSH, 0),
                (setting::INITIAL_WINDOW_SIZE, WINDOW),
            ],
        );
        h2f::write_window_update(out, 0, WINDOW - h2f::DEFAULT_WINDOW);
    }

    fn encode(&mut self, seq: u32, out: &mut BytesMut) {
        let stream = seq.wrapping_mul(2).wrapping_add(1) & 0x7fff_ffff;
        let block = if self.indexed {
            &self.request_headers
        } else {
            self.indexed = true;
            &self.first_headers
        };
        h2f::write_headers(out, stream, block, false, self.peer_max_frame);
        self.streams.insert(
            stream,
            Stream {
                matched: 0,
                ok: true,
            },
        );
        self.waiting.push_back((stream, self.message.clone()));
        self.send_waiting(out);
    }

    fn decode(&mut self, input: &[u8], out: &mut BytesMut) -> Result<Decoded, ReplyError> {
        let split = h2f::split(input, (self.max_frame + 64).max(1 << 14) as u32)
            .map_err(|e| ReplyError(format!("frame of {} bytes", e.0)))?;
        let (h, len) = match split {
            Split::Frame(h, len) => (h, len),
            Split::NeedMore(n) => return Ok(Decoded::NeedMore(n)),
        };
        let payload = &input[h2f::HEADER_LEN..len];
        let skip = Decoded::Skip(len);
        if let Some((stream, end, mut block)) = self.continuation.take() {
            if h.kind != kind::CONTINUATION || h.stream != stream {
                return Err(ReplyError("header block interrupted".into()));
            }
            block.extend_from_slice(payload);
            if !h.has(flag::END_HEADERS) {
                self.continuation = Some((stream, end, block));
                return Ok(skip);
            }
            return self.headers(stream, end, &block, len);
        }
        match h.kind {
            kind::SETTINGS if !h.has(flag::ACK) => {
                let values = h2f::settings(payload).map_err(|e| ReplyError(e.0.into()))?;
                for (id, v) in values {
                    match id {
                        setting::INITIAL_WINDOW_SIZE => {
                            let delta = i64::from(v) - self.initial_window;
                            self.initial_window = i64::from(v);
                            for w in self.stream_windows.values_mut() {
                                *w += delta;
                            }
                        }
                        setting::MAX_FRAME_SIZE => self.peer_max_frame = v as usize,
                        _ => {}
                    }
                }
                h2f::write_settings_ack(out);
                self.send_waiting(out);
            }
            kind::PING if !h.has(flag::ACK) => {
                let data: [u8; 8] = payload
                    .try_into()
                    .map_err(|_| ReplyError("PING not 8 bytes".into()))?;
                h2f::write_ping(out, true, data);
            }
            kind::WINDOW_UPDATE => {
                let inc =
                    i64::from(h2f::window_increment(payload).map_err(|e| ReplyError(e.0.into()))?);
                if h.stream == 0 {
                    self.conn_window += inc;
                } else if let Some(w) = self.stream_windows.get_mut(&h.stream) {
                    *w += inc;
                }
                self.send_waiting(out);
            }
            kind::GOAWAY => {
                let code = h2f::error_code(payload.get(4..).unwrap_or(&[])).unwrap_or(0);
                if code != h2f::code::NO_ERROR {
                    return Err(ReplyError(format!("GOAWAY with error {code}")));
                }
            }
            kind::RST_STREAM => {
                return Err(ReplyError(format!("stream {} reset", h.stream)));
            }
            kind::HEADERS => {
                let block = h2f::content(&h, payload).map_err(|e| ReplyError(e.0.into()))?;
                let end = h.has(flag::END_STREAM);
                if !h.has(flag::END_HEADERS) {
                    self.continuation = Some((h.stream, end, block.to_vec()));
                    return Ok(skip);
                }
                return self.headers(h.stream, end, block, len);
            }
            kind::DATA => {
                let mut data = payload;
                if h.has(flag::PADDED) {
                    let pad = usize::from(*data.first().unwrap_or(&0));
                    data = data.get(1..data.len().saturating_sub(pad)).unwrap_or(&[]);
                }
                let s = self
                    .streams
                    .get_mut(&h.stream)
                    .ok_or_else(|| ReplyError(format!("DATA on unknown stream {}", h.stream)))?;
                let want = self.message.get(s.matched..s.matched + data.len());
                s.ok &= want == Some(data);
                s.matched += data.len();
                self.unacked += h.len;
                if self.unacked >= WINDOW / 2 {
                    h2f::write_window_update(out, 0, self.unacked);
                    self.unacked = 0;
                }
            }
            _ => {}
        }
        Ok(skip)
    }
}
