//! HTTP/2 frames (RFC 9113 §4, §6): the 9-byte header, splitting whole frames off a
//! buffer in place, reading the payloads the protocol defines, and writing frames.

use bytes::{BufMut, BytesMut};

/// What a client sends first (RFC 9113 §3.4), before its SETTINGS.
pub const PREFACE: &[u8; 24] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

/// The size of a frame header.
pub const HEADER_LEN: usize = 9;

/// The smallest `SETTINGS_MAX_FRAME_SIZE` (and the default).
pub const DEFAULT_MAX_FRAME: u32 = 16_384;

/// The default flow-control window (RFC 9113 §6.9.2).
pub const DEFAULT_WINDOW: u32 = 65_535;

/// The largest flow-control window.
pub const MAX_WINDOW: u32 = (1 << 31) - 1;

/// Frame types.
pub mod kind {
    /// DATA.
    pub const DATA: u8 = 0x0;
    /// HEADERS.
    pub const HEADERS: u8 = 0x1;
    /// PRIORITY.
    pub const PRIORITY: u8 = 0x2;
    /// RST_STREAM.
    pub const RST_STREAM: u8 = 0x3;
    /// SETTINGS.
    pub const SETTINGS: u8 = 0x4;
    /// PUSH_PROMISE.
    pub const PUSH_PROMISE: u8 = 0x5;
    /// PING.
    pub const PING: u8 = 0x6;
    /// GOAWAY.
    pub const GOAWAY: u8 = 0x7;
    /// WINDOW_UPDATE.
    pub const WINDOW_UPDATE: u8 = 0x8;
    /// CONTINUATION.
    pub const CONTINUATION: u8 = 0x9;
}

/// Frame flags.
pub mod flag {
    /// DATA, HEADERS: the last frame of the stream from this side.
    pub const END_STREAM: u8 = 0x1;
    /// SETTINGS, PING: an acknowledgement.
    pub const ACK: u8 = 0x1;
    /// HEADERS, CONTINUATION: the last frame of the header block.
    pub const END_HEADERS: u8 = 0x4;
    /// DATA, HEADERS: padded.
    pub const PADDED: u8 = 0x8;
    /// HEADERS: carries priority fields.
    pub const PRIORITY: u8 = 0x20;
}

/// SETTINGS identifiers.
pub mod setting {
    /// SETTINGS_HEADER_TABLE_SIZE.
    pub const HEADER_TABLE_SIZE: u16 = 0x1;
    /// SETTINGS_ENABLE_PUSH.
    pub const ENABLE_PUSH: u16 = 0x2;
    /// SETTINGS_MAX_CONCURRENT_STREAMS.
    pub const MAX_CONCURRENT_STREAMS: u16 = 0x3;
    /// SETTINGS_INITIAL_WINDOW_SIZE.
    pub const INITIAL_WINDOW_SIZE: u16 = 0x4;
    /// SETTINGS_MAX_FRAME_SIZE.
    pub const MAX_FRAME_SIZE: u16 = 0x5;
    /// SETTINGS_MAX_HEADER_LIST_SIZE.
    pub const MAX_HEADER_LIST_SIZE: u16 = 0x6;
}

/// Error codes (RFC 9113 §7).
pub mod code {
    /// NO_ERROR.
    pub const NO_ERROR: u32 = 0x0;
    /// PROTOCOL_ERROR.
    pub const PROTOCOL_ERROR: u32 = 0x1;
    /// INTERNAL_ERROR.
    pub const INTERNAL_ERROR: u32 = 0x2;
    /// FLOW_CONTROL_ERROR.
    pub const FLOW_CONTROL_ERROR: u32 = 0x3;
    /// SETTINGS_TIMEOUT.
    pub const SETTINGS_TIMEOUT: u32 = 0x4;
    /// STREAM_CLOSED.
    pub const STREAM_CLOSED: u32 = 0x5;
    /// FRAME_SIZE_ERROR.
    pub const FRAME_SIZE_ERROR: u32 = 0x6;
    /// REFUSED_STREAM.
    pub const REFUSED_STREAM: u32 = 0x7;
    /// CANCEL.
    pub const CANCEL: u32 = 0x8;
    /// COMPRESSION_ERROR.
    pub const COMPRESSION_ERROR: u32 = 0x9;
    /// ENHANCE_YOUR_CALM.
    pub const ENHANCE_YOUR_CALM: u32 = 0xb;
}

/// A frame's header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FrameHeader {
    /// Payload length.
    pub len: u32,
    /// Frame type ([`kind`]).
    pub kind: u8,
    /// Flags ([`flag`]).
    pub flags: u8,
    /// Stream identifier (0: the connection).
    pub stream: u32,
}

impl FrameHeader {
    /// Reads a frame header from the first 9 bytes of `b`, if there are 9.
    pub fn parse(b: &[u8]) -> Option<FrameHeader> {
        let h: &[u8; HEADER_LEN] = b.get(..HEADER_LEN)?.try_into().ok()?;
        Some(FrameHeader {
            len: u32::from_be_bytes([0, h[0], h[1], h[2]]),
            kind: h[3],
            flags: h[4],
            stream: u32::from_be_bytes([h[5], h[6], h[7], h[8]]) & 0x7fff_ffff,
        })
    }

    /// Whether `f` is set.
    pub fn has(&self, f: u8) -> bool {
        self.flags & f != 0
    }
}

/// What the start of a buffer holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Split {
    /// A whole frame of this many bytes (header included).
    Frame(FrameHeader, usize),
    /// Not yet a whole frame: at least this many bytes are needed.
    NeedMore(usize),
}

/// A frame longer than the maximum frame size we advertised.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FrameTooLarge(pub u32);

/// Finds the first whole frame in `buf`; refuses one over `max_frame` payload bytes as
/// soon as its header arrives.
pub fn split(buf: &[u8], max_frame: u32) -> Result<Split, FrameTooLarge> {
    let Some(h) = FrameHeader::parse(buf) else {
        return Ok(Split::NeedMore(HEADER_LEN));
    };
    if h.len > max_frame {
        return Err(FrameTooLarge(h.len));
    }
    let total = HEADER_LEN + h.len as usize;
    Ok(if buf.len() >= total {
        Split::Frame(h, total)
    } else {
        Split::NeedMore(total)
    })
}

/// A payload the protocol says is malformed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Malformed(pub &'static str);

/// The data of a DATA frame, or the header block fragment of a HEADERS frame, without
/// padding (and, for HEADERS, priority fields).
///
/// It borrows the payload: frames are read in place from the connection's input, and a
/// caller that keeps the content copies it where it belongs.
pub fn content<'a>(h: &FrameHeader, mut payload: &'a [u8]) -> Result<&'a [u8], Malformed> {
    let mut pad = 0usize;
    if h.has(flag::PADDED) {
        let Some((&p, rest)) = payload.split_first() else {
            return Err(Malformed("PADDED frame without a pad length"));
        };
        pad = usize::from(p);
        payload = rest;
    }
    if h.kind == kind::HEADERS && h.has(flag::PRIORITY) {
        payload = payload
            .get(5..)
            .ok_or(Malformed("HEADERS priority fields truncated"))?;
    }
    if pad > payload.len() {
        return Err(Malformed("padding longer than the payload"));
    }
    Ok(&payload[..payload.len() - pad])
}

/// The `(identifier, value)` pairs of a SETTINGS payload.
pub fn settings(payload: &[u8]) -> Result<impl Iterator<Item = (u16, u32)> + '_, Malformed> {
    if payload.len() % 6 != 0 {
        return Err(Malformed("SETTINGS length not a multiple of 6"));
    }
    Ok(payload.chunks_exact(6).map(|c| {
        (
            u16::from_be_bytes([c[0], c[1]]),
            u32::from_be_bytes([c[2], c[3], c[4], c[5]]),
        )
    }))
}

/// A WINDOW_UPDATE's increment (0 is a protocol error the caller reports).
pub fn window_increment(payload: &[u8]) -> Result<u32, Malformed> {
    let b: [u8; 4] = payload
        .try_into()
        .map_err(|_| Malformed("WINDOW_UPDATE length not 4"))?;
    Ok(u32::from_be_bytes(b) & 0x7fff_ffff)
}

/// A RST_STREAM's (or GOAWAY's) error code.
pub fn error_code(payload: &[u8]) -> Result<u32, Malformed> {
    let b: [u8; 4] = payload
        .get(..4)
        .and_then(|s| s.try_into().ok())
        .ok_or(Malformed("error code truncated"))?;
    Ok(u32::from_be_bytes(b))
}

/// Appends a frame header.
pub fn write_header(out: &mut BytesMut, len: usize, kind: u8, flags: u8, stream: u32) {
    debug_assert!(len < 1 << 24);
    let l = (len as u32).to_be_bytes();
    out.put_slice(&[l[1], l[2], l[3], kind, flags]);
    out.put_u32(stream & 0x7fff_ffff);
}

/// Appends a SETTINGS frame.
pub fn write_settings(out: &mut BytesMut, values: &[(u16, u32)]) {
    write_header(out, values.len() * 6, kind::SETTINGS, 0, 0);
    for &(id, v) in values {
        out.put_u16(id);
        out.put_u32(v);
    }
}

/// Appends a SETTINGS acknowledgement.
pub fn write_settings_ack(out: &mut BytesMut) {
    write_header(out, 0, kind::SETTINGS, flag::ACK, 0);
}

/// Appends a PING (or its acknowledgement).
pub fn write_ping(out: &mut BytesMut, ack: bool, data: [u8; 8]) {
    write_header(out, 8, kind::PING, if ack { flag::ACK } else { 0 }, 0);
    out.put_slice(&data);
}

/// Appends a WINDOW_UPDATE.
pub fn write_window_update(out: &mut BytesMut, stream: u32, increment: u32) {
    write_header(out, 4, kind::WINDOW_UPDATE, 0, stream);
    out.put_u32(increment & 0x7fff_ffff);
}

/// Appends a RST_STREAM.
pub fn write_rst_stream(out: &mut BytesMut, stream: u32, code: u32) {
    write_header(out, 4, kind::RST_STREAM, 0, stream);
    out.put_u32(code);
}

/// Appends a GOAWAY.
pub fn write_goaway(out: &mut BytesMut, last_stream: u32, code: u32, debug: &[u8]) {
    write_header(out, 8 + debug.len(), kind::GOAWAY, 0, 0);
    out.put_u32(last_stream & 0x7fff_ffff);
    out.put_u32(code);
    out.put_slice(debug);
}

/// Appends a header block as HEADERS and as many CONTINUATION frames as `max_frame`
/// requires.
pub fn write_headers(
    out: &mut BytesMut,
    stream: u32,
    block: &[u8],
    end_stream: bool,
    max_frame: usize,
) {
    let max_frame = max_frame.max(DEFAULT_MAX_FRAME as usize);
    let mut chunks = block.chunks(max_frame).peekable();
    let first = chunks.next().unwrap_or(&[]);
    let mut flags = if end_stream { flag::END_STREAM } else { 0 };
    if chunks.peek().is_none() {
        flags |= flag::END_HEADERS;
    }
    write_header(out, first.len(), kind::HEADERS, flags, stream);
    out.put_slice(first);
    while let Some(c) = chunks.next() {
        let last = chunks.peek().is_none();
        let flags = if last { flag::END_HEADERS } else { 0 };
        write_header(out, c.len(), kind::CONTINUATION, flags, stream);
        out.put_slice(c);
    }
}

/// Appends a DATA frame (`data` must fit the peer's maximum frame size).
pub fn write_data(out: &mut BytesMut, stream: u32, data: &[u8], end_stream: bool) {
    let flags = if end_stream { flag::END_STREAM } else { 0 };
    write_header(out, data.len(), kind::DATA, flags, stream);
    out.put_slice(data);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_round_trip_and_split() {
        let mut out = BytesMut::new();
        write_settings(
            &mut out,
            &[
                (setting::MAX_FRAME_SIZE, 1 << 20),
                (setting::ENABLE_PUSH, 0),
            ],
        );
        write_ping(&mut out, true, *b"12345678");
        write_window_update(&mut out, 3, 1000);
        write_data(&mut out, 3, b"hello", true);
        let buf = out.freeze();
        let mut at = 0;
        let mut seen = Vec::new();
        while at < buf.len() {
            let Split::Frame(h, n) = split(&buf[at..], DEFAULT_MAX_FRAME).unwrap() else {
                panic!("incomplete");
            };
            seen.push((h, buf.slice(at + HEADER_LEN..at + n)));
            at += n;
        }
        assert_eq!(seen.len(), 4);
        assert_eq!(seen[0].0.kind, kind::SETTINGS);
        let s: Vec<_> = settings(&seen[0].1).unwrap().collect();
        assert_eq!(
            s,
            [
                (setting::MAX_FRAME_SIZE, 1 << 20),
                (setting::ENABLE_PUSH, 0)
            ]
        );
        assert!(seen[1].0.has(flag::ACK));
        assert_eq!(window_increment(&seen[2].1).unwrap(), 1000);
        assert_eq!(seen[3].0.stream, 3);
        assert_eq!(content(&seen[3].0, &seen[3].1).unwrap(), b"hello");
        // A partial frame asks for the rest; an oversize one is refused by its header.
        assert_eq!(
            split(&buf[..12], DEFAULT_MAX_FRAME),
            Ok(Split::NeedMore(9 + 12))
        );
        let mut big = BytesMut::new();
        write_header(&mut big, 20_000, kind::DATA, 0, 1);
        assert_eq!(split(&big, DEFAULT_MAX_FRAME), Err(FrameTooLarge(20_000)));
    }

    #[test]
    fn padding_and_priority_are_stripped() {
        let h = FrameHeader {
            len: 0,
            kind: kind::HEADERS,
            flags: flag::PADDED | flag::PRIORITY,
            stream: 1,
        };
        let p = [2, 0, 0, 0, 0, 9, b'a', b'b', 0, 0];
        assert_eq!(content(&h, &p).unwrap(), b"ab");
        let bad = [9, 0, 0, 0, 0, 9, b'a'];
        assert!(content(&h, &bad).is_err());
        let no_pad_length = FrameHeader {
            flags: flag::PADDED,
            ..h
        };
        assert!(content(&no_pad_length, &[]).is_err());
        let short_priority = FrameHeader {
            flags: flag::PRIORITY,
            ..h
        };
        assert!(content(&short_priority, &[0, 0, 0]).is_err());
    }

    #[test]
    fn long_header_blocks_continue() {
        let block = vec![7u8; 40_000];
        let mut out = BytesMut::new();
        write_headers(&mut out, 5, &block, true, 16_384);
        let (h1, n1) = match split(&out, 16_384).unwrap() {
            Split::Frame(h, n) => (h, n),
            _ => panic!(),
        };
        assert_eq!(
            (h1.kind, h1.has(flag::END_STREAM), h1.has(flag::END_HEADERS)),
            (kind::HEADERS, true, false)
        );
        let Split::Frame(h2, n2) = split(&out[n1..], 16_384).unwrap() else {
            panic!()
        };
        assert_eq!(
            (h2.kind, h2.has(flag::END_HEADERS)),
            (kind::CONTINUATION, false)
        );
        let Split::Frame(h3, _) = split(&out[n1 + n2..], 16_384).unwrap() else {
            panic!()
        };
        assert!(h3.has(flag::END_HEADERS));
        assert_eq!(h1.len + h2.len + h3.len, 40_000);
    }
}
