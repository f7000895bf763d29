//! Frames: finding whole messages in a connection's bytes, and telling protocols apart.
//!
//! [`detect`] looks at a new connection's first bytes, as Kitex does. [`split`] then finds
//! each whole frame in the bytes received so far: it answers [`Split::NeedMore`] (with how
//! many bytes are needed, when known), [`Split::Frame`] (its length), or a typed
//! [`FrameError`]. The maximum frame size is enforced from the length prefix, before
//! anything is buffered.

mod error;
mod framed;
mod kitex_pb;
mod splitter;
mod ttheader;

pub use error::FrameError;
pub use framed::{encode_framed, patch_length, reserve_length};
pub use kitex_pb::{ErrorProto, KitexPbHeader, KITEX_PB_MAGIC};
pub use splitter::Splitter;
pub use ttheader::{
    decode_timeout, flags, has_str_header, info_id, int_key, str_key, IntHeaders, PayloadProtocol,
    StrHeaders, TTHeader, TTHeaderBuilder, TimeoutValue, TTHEADER_MAGIC, TTHEADER_MAX_LENGTH,
};

/// The big-endian u32 at `at`, if `b` holds it.
pub(crate) fn be32(b: &[u8], at: usize) -> Option<u32> {
    b.get(at..at.checked_add(4)?)
        .map(|s| u32::from_be_bytes([s[0], s[1], s[2], s[3]]))
}

/// Default largest frame: 16 MiB.
pub const DEFAULT_MAX_FRAME: usize = 16 << 20;

/// The wire protocol of a connection, from its first bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Protocol {
    /// Unframed strict binary Thrift (Apache's "buffered" transport).
    BufferedBinary,
    /// Unframed compact Thrift.
    BufferedCompact,
    /// 4-byte length, then a strict binary Thrift message.
    FramedBinary,
    /// 4-byte length, then a compact Thrift message.
    FramedCompact,
    /// Kitex's TTHeader (payload: Thrift or Kitex Protobuf).
    TTHeader,
    /// Kitex Protobuf (4-byte length, magic 0x9001).
    KitexProtobuf,
    /// HTTP/2 (gRPC): recognised, not served yet.
    Http2,
}

/// The HTTP/2 connection preface's first bytes.
const H2_PREFACE: &[u8] = b"PRI * HTTP/2.0";
const BINARY_VERSION_1: u16 = 0x8001;
const COMPACT_ID: u8 = 0x82;

/// Decides a connection's protocol from its first bytes (the table in the wire-format
/// notes). `Ok(None)`: not enough bytes yet.
pub fn detect(buf: &[u8]) -> Result<Option<Protocol>, FrameError> {
    if buf.len() >= 2 && u16::from_be_bytes([buf[0], buf[1]]) == BINARY_VERSION_1 {
        return Ok(Some(Protocol::BufferedBinary));
    }
    if buf.first() == Some(&COMPACT_ID) {
        return Ok(Some(Protocol::BufferedCompact));
    }
    if buf.first() == Some(&b'P') {
        let n = buf.len().min(H2_PREFACE.len());
        if buf[..n] == H2_PREFACE[..n] {
            return Ok((n == H2_PREFACE.len()).then_some(Protocol::Http2));
        }
    }
    if buf.len() < 6 {
        // Bytes 4.. decide; a compact framed message needs only byte 4.
        if buf.len() == 5 && buf[4] == COMPACT_ID {
            return Ok(Some(Protocol::FramedCompact));
        }
        return Ok(None);
    }
    let second = u16::from_be_bytes([buf[4], buf[5]]);
    match second {
        BINARY_VERSION_1 => Ok(Some(Protocol::FramedBinary)),
        TTHEADER_MAGIC => Ok(Some(Protocol::TTHeader)),
        KITEX_PB_MAGIC => Ok(Some(Protocol::KitexProtobuf)),
        _ if buf[4] == COMPACT_ID => Ok(Some(Protocol::FramedCompact)),
        _ => Err(FrameError::UnknownProtocol {
            first_bytes: first8(buf),
        }),
    }
}

fn first8(buf: &[u8]) -> [u8; 8] {
    let mut out = [0u8; 8];
    let n = buf.len().min(8);
    out[..n].copy_from_slice(&buf[..n]);
    out
}

/// What [`split`] found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Split {
    /// The frame is not complete: at least this many bytes are needed in all (for an
    /// unframed message, a lower bound that grows as more of it is walked; 0 if unknown).
    NeedMore(usize),
    /// A whole frame of this many bytes starts the input.
    Frame(usize),
}

/// Finds the first whole frame of `protocol` in `buf`, refusing frames over `max_frame`
/// bytes as soon as their length is known.
pub fn split(protocol: Protocol, buf: &[u8], max_frame: usize) -> Result<Split, FrameError> {
    match protocol {
        Protocol::FramedBinary | Protocol::FramedCompact | Protocol::KitexProtobuf => {
            split_length_prefixed(buf, max_frame, 0)
        }
        Protocol::TTHeader => split_length_prefixed(buf, max_frame, TTHEADER_MAX_LENGTH),
        Protocol::BufferedBinary => split_unframed(buf, max_frame, false),
        Protocol::BufferedCompact => split_unframed(buf, max_frame, true),
        Protocol::Http2 => Err(FrameError::Unsupported("HTTP/2 (gRPC) is not served yet")),
    }
}

/// A 4-byte big-endian length, then that many bytes. `hard_limit` (if not 0) is a limit
/// the protocol itself sets on the length field.
fn split_length_prefixed(
    buf: &[u8],
    max_frame: usize,
    hard_limit: usize,
) -> Result<Split, FrameError> {
    let Some(head) = buf.get(..4) else {
        return Ok(Split::NeedMore(4));
    };
    let len = u32::from_be_bytes([head[0], head[1], head[2], head[3]]) as usize;
    if hard_limit != 0 && len >= hard_limit {
        return Err(FrameError::BadLength(len));
    }
    let total = 4 + len;
    if total > max_frame {
        return Err(FrameError::TooLarge {
            size: total,
            max: max_frame,
        });
    }
    if buf.len() < total {
        return Ok(Split::NeedMore(total));
    }
    Ok(Split::Frame(total))
}

/// An unframed message ends where its walk ends. One-shot: a connection that receives a
/// message in pieces keeps a [`Splitter`] instead, which resumes where it stopped.
fn split_unframed(buf: &[u8], max_frame: usize, compact: bool) -> Result<Split, FrameError> {
    let protocol = if compact {
        Protocol::BufferedCompact
    } else {
        Protocol::BufferedBinary
    };
    Splitter::default().split(protocol, buf, max_frame)
}
