//! How the load generator encodes echo requests and recognises replies, per wire protocol.

use std::fmt;
use std::ops::Range;

use bytes::BytesMut;

/// A decoded reply's place in the input.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decoded {
    /// More bytes are needed: at least this many in total from the start of the input.
    NeedMore(usize),
    /// One whole reply of `len` bytes.
    Reply {
        /// Bytes the reply occupies at the front of the input.
        len: usize,
        /// The sequence id it answers, or `None` for protocols whose replies come in order.
        seq: Option<u32>,
        /// Where the echoed payload lies within the input.
        payload: Range<usize>,
    },
    /// A [`Session`] read `len` bytes that completed no call (control frames, the start
    /// of a reply).
    Skip(usize),
    /// A [`Session`] read `len` bytes that completed call `seq`; `ok`: its reply was the
    /// expected one.
    Done {
        /// Bytes read.
        len: usize,
        /// The call's sequence number.
        seq: u32,
        /// Whether the reply carried the request's payload back.
        ok: bool,
    },
}

/// A reply that is not a well-formed echo reply.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReplyError(pub String);

impl fmt::Display for ReplyError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// An echo protocol the load generator can speak.
pub trait Protocol: Send + Sync + 'static {
    /// A short name for reports.
    fn name(&self) -> &'static str;
    /// Appends one echo request with sequence id `seq` carrying `payload`.
    fn encode(&self, seq: u32, payload: &[u8], out: &mut BytesMut);
    /// Recognises one reply at the front of `input`.
    fn decode(&self, input: &[u8]) -> Result<Decoded, ReplyError>;
    /// A connection's own state, for protocols that keep one (HTTP/2): when `Some`, the
    /// connection goes through it instead of [`encode`](Protocol::encode) and
    /// [`decode`](Protocol::decode). `payload` is what every call carries.
    fn session(&self, payload: &[u8]) -> Option<Box<dyn Session>> {
        let _ = payload;
        None
    }
}

/// One connection of a stateful protocol.
pub trait Session: Send {
    /// What the connection sends first.
    fn open(&mut self, out: &mut BytesMut);
    /// Appends call `seq` (or as much of it as the peer lets through now).
    fn encode(&mut self, seq: u32, out: &mut BytesMut);
    /// Reads what the front of `input` holds ([`Decoded::NeedMore`], [`Decoded::Skip`] or
    /// [`Decoded::Done`]), writing any answer the protocol owes (acknowledgements, window
    /// updates, request data that waited) to `out`.
    fn decode(&mut self, input: &[u8], out: &mut BytesMut) -> Result<Decoded, ReplyError>;
}

/// Length-prefixed raw messages (4-byte big-endian length, then the payload), echoed back
/// unchanged in order: what `netpoll_echo` and the minimal responder serve.
#[derive(Debug, Clone, Copy, Default)]
pub struct RawFramed {
    /// Largest reply accepted.
    pub max_frame: usize,
}

impl Protocol for RawFramed {
    fn name(&self) -> &'static str {
        "raw"
    }

    fn encode(&self, _seq: u32, payload: &[u8], out: &mut BytesMut) {
        out.extend_from_slice(&(payload.len() as u32).to_be_bytes());
        out.extend_from_slice(payload);
    }

    fn decode(&self, input: &[u8]) -> Result<Decoded, ReplyError> {
        let Some(head) = input.get(..4) else {
            return Ok(Decoded::NeedMore(4));
        };
        let len = u32::from_be_bytes([head[0], head[1], head[2], head[3]]) as usize;
        if len > self.max_frame {
            return Err(ReplyError(format!(
                "reply of {len} bytes exceeds the {} byte limit",
                self.max_frame
            )));
        }
        if input.len() < 4 + len {
            return Ok(Decoded::NeedMore(4 + len));
        }
        Ok(Decoded::Reply {
            len: 4 + len,
            seq: None,
            payload: 4..4 + len,
        })
    }
}
