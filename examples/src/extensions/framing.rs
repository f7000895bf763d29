//! A framing of the application's own: `b"NPF1"`, a payload byte (0: binary Thrift,
//! 2: compact Thrift, 4: Kitex Protobuf, as TTHeader numbers them; or 0x10: a whole
//! TTHeader frame, whose headers and deadline then reach the server), a 4-byte big-endian
//! length, then the message. Registered with `ServerBuilder::framing`, it is served on
//! the same port as Framed, Buffered, TTHeader and Kitex Protobuf, by the same services.

use bytes::{Buf, BufMut, Bytes, BytesMut};
use netpoll_codec::frame::{FrameError, Protocol, Split};
use netpoll_rpc::server::{Detect, Framing, Inner};
use netpoll_rpc::wire::Payload;

/// The magic a connection of this framing starts with.
pub const MAGIC: &[u8; 4] = b"NPF1";
/// Magic, payload byte, length.
const HEADER: usize = 9;
/// The payload byte of a frame carrying a whole TTHeader frame.
pub const TTHEADER_INSIDE: u8 = 0x10;

/// `NPF1` framing; see the module docs.
#[derive(Debug, Clone, Copy, Default)]
pub struct MagicFraming;

fn payload_id(p: Payload) -> u8 {
    match p {
        Payload::ThriftBinary => 0,
        Payload::ThriftCompact => 2,
        Payload::Protobuf => 4,
    }
}

impl MagicFraming {
    /// Wraps a message (a client's request): what a peer of this framing sends.
    pub fn frame(payload: Payload, message: &[u8]) -> Vec<u8> {
        Self::frame_with(payload_id(payload), message)
    }

    /// Wraps a whole TTHeader frame (with its headers).
    pub fn frame_ttheader(ttheader_frame: &[u8]) -> Vec<u8> {
        Self::frame_with(TTHEADER_INSIDE, ttheader_frame)
    }

    fn frame_with(id: u8, message: &[u8]) -> Vec<u8> {
        let mut out = Vec::with_capacity(HEADER + message.len());
        out.extend_from_slice(MAGIC);
        out.push(id);
        out.extend_from_slice(&(message.len() as u32).to_be_bytes());
        out.extend_from_slice(message);
        out
    }
}

impl Framing for MagicFraming {
    fn name(&self) -> &'static str {
        "npf1"
    }

    fn detect(&self, head: &[u8]) -> Detect {
        let n = head.len().min(MAGIC.len());
        if head[..n] != MAGIC[..n] {
            Detect::No
        } else if n < MAGIC.len() {
            Detect::NeedMore
        } else {
            Detect::Yes
        }
    }

    fn split(&self, buf: &[u8], max_frame: usize) -> Result<Split, FrameError> {
        let Some(head) = buf.get(..HEADER) else {
            return Ok(Split::NeedMore(HEADER));
        };
        if &head[..4] != MAGIC {
            return Err(FrameError::BadMagic {
                offset: 0,
                found: u32::from_be_bytes([head[0], head[1], head[2], head[3]]),
            });
        }
        let len = u32::from_be_bytes([head[5], head[6], head[7], head[8]]) as usize;
        let total = HEADER + len;
        if total > max_frame {
            return Err(FrameError::TooLarge {
                size: total,
                max: max_frame,
            });
        }
        Ok(if buf.len() < total {
            Split::NeedMore(total)
        } else {
            Split::Frame(total)
        })
    }

    fn unwrap(&self, mut frame: Bytes) -> Result<(Payload, Bytes), FrameError> {
        if frame.len() < HEADER {
            return Err(FrameError::BadLength(frame.len()));
        }
        frame.advance(4);
        let payload = match frame.get_u8() {
            0 => Payload::ThriftBinary,
            2 => Payload::ThriftCompact,
            4 => Payload::Protobuf,
            _ => {
                return Err(FrameError::BadHeader {
                    what: "NPF1 payload byte",
                    offset: 4,
                })
            }
        };
        frame.advance(4);
        Ok((payload, frame))
    }

    fn open(&self, frame: Bytes) -> Result<Inner, FrameError> {
        if frame.get(4) == Some(&TTHEADER_INSIDE) {
            return Ok(Inner::Frame(Protocol::TTHeader, frame.slice(HEADER..)));
        }
        self.unwrap(frame).map(|(p, m)| Inner::Message(p, m))
    }

    fn begin_reply(&self, out: &mut BytesMut) -> usize {
        let start = out.len();
        out.put_slice(MAGIC);
        out.put_u8(0); // the payload byte, filled in by finish_reply
        out.put_u32(0);
        start
    }

    fn finish_reply(&self, out: &mut BytesMut, start: usize) -> Result<(), FrameError> {
        let len = out.len() - start - HEADER;
        let len32 = u32::try_from(len).map_err(|_| FrameError::BadLength(len))?;
        // The reply is in the request's encoding; read it back from the message's first
        // byte: 0x80 (strict binary), 0x82 (compact), 0x90 (Kitex Protobuf magic), or
        // TTHeader's magic 0x1000 after its length.
        let body = &out[start + HEADER..];
        let id = match body.first() {
            Some(0x82) => 2,
            Some(0x90) => 4,
            Some(0x80) => 0,
            _ if body.get(4..6) == Some(&[0x10, 0x00]) => TTHEADER_INSIDE,
            _ => 0,
        };
        out[start + 4] = id;
        out[start + 5..start + HEADER].copy_from_slice(&len32.to_be_bytes());
        Ok(())
    }
}
