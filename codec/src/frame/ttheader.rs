//! TTHeader, Kitex's header transport.
//!
//! ```text
//! LENGTH u32 | 0x1000 | flags u16 | seq u32 | header size u16 (x4) | protocol u8 |
//! transforms u8 + ids | info blocks (0x01 string KV, 0x10 int KV, 0x11 ACL, 0x00 pad) |
//! payload: a Thrift message (bare, or with its own 4-byte length) or a Kitex Protobuf body
//! ```
//!
//! [`TTHeader::parse`] validates a whole frame once and keeps it; header lookups then walk
//! the raw blocks and return zero-copy views, so reading headers allocates nothing.

use bytes::{Bytes, BytesMut};

use super::framed::patch_length;
use super::{FrameError, KITEX_PB_MAGIC};

/// The magic after the length: 0x1000.
pub const TTHEADER_MAGIC: u16 = 0x1000;
/// LENGTH must be below this.
pub const TTHEADER_MAX_LENGTH: usize = 0x3FFF_FFFF;

/// Info block ids.
pub mod info_id {
    /// Padding byte.
    pub const PADDING: u8 = 0x00;
    /// String key/value pairs.
    pub const KEY_VALUE: u8 = 0x01;
    /// Integer key/value pairs.
    pub const INT_KEY_VALUE: u8 = 0x10;
    /// ACL token.
    pub const ACL_TOKEN: u8 = 0x11;
}

/// Integer header keys Kitex uses.
pub mod int_key {
    /// The caller's service name.
    pub const FROM_SERVICE: u16 = 3;
    /// The callee's service name.
    pub const TO_SERVICE: u16 = 6;
    /// The callee's method.
    pub const TO_METHOD: u16 = 9;
    /// The callee's address (Volo sends it).
    pub const DEST_ADDRESS: u16 = 11;
    /// The call's timeout in milliseconds, as a decimal string.
    pub const RPC_TIMEOUT: u16 = 12;
    /// Consistent-hash key.
    pub const RING_HASH_KEY: u16 = 14;
    /// Mesh version (Volo sends it).
    pub const MESH_VERSION: u16 = 16;
    /// Message type.
    pub const MSG_TYPE: u16 = 22;
}

/// String header keys with a meaning to Kitex.
pub mod str_key {
    /// The IDL service name a call is for (routes calls when services share method
    /// names).
    pub const IDL_SERVICE_NAME: &str = "isn";
    /// Sent by a server shutting down gracefully: the client should stop using the
    /// connection ("connection reset").
    pub const CONNECTION_RESET: &str = "crrst";
}

/// Header flags.
pub mod flags {
    /// Replies may come back in any order (the caller matches them by sequence number).
    pub const OUT_OF_ORDER: u16 = 0x0001;
}

/// The value of [`int_key::RPC_TIMEOUT`] for `timeout`, as Kitex writes it: milliseconds in
/// ASCII digits. Kept on the stack: `as_bytes` borrows it.
#[derive(Debug, Clone, Copy)]
pub struct TimeoutValue {
    buf: [u8; 20],
    len: usize,
}

impl TimeoutValue {
    /// Encodes `timeout` in whole milliseconds, saturating, and at least 1 for a non-zero
    /// timeout (0 means "no timeout" to Kitex).
    pub fn new(timeout: std::time::Duration) -> TimeoutValue {
        let mut ms = u64::try_from(timeout.as_millis()).unwrap_or(u64::MAX);
        if ms == 0 && !timeout.is_zero() {
            ms = 1;
        }
        let mut digits = [0u8; 20];
        let mut n = 0;
        loop {
            digits[n] = b'0' + (ms % 10) as u8;
            n += 1;
            ms /= 10;
            if ms == 0 {
                break;
            }
        }
        let mut buf = [0u8; 20];
        for i in 0..n {
            buf[i] = digits[n - 1 - i];
        }
        TimeoutValue { buf, len: n }
    }

    /// The header value.
    pub fn as_bytes(&self) -> &[u8] {
        &self.buf[..self.len]
    }
}

/// Reads a [`int_key::RPC_TIMEOUT`] value: Kitex writes ASCII digits, Volo may write a raw
/// big-endian integer. 0 means no timeout (`None`), as in Kitex.
pub fn decode_timeout(v: &[u8]) -> Option<std::time::Duration> {
    let ms = match std::str::from_utf8(v)
        .ok()
        .and_then(|s| s.parse::<u64>().ok())
    {
        Some(ms) => ms,
        None if v.len() <= 8 && !v.is_empty() => {
            v.iter().fold(0u64, |acc, b| (acc << 8) | u64::from(*b))
        }
        None => return None,
    };
    (ms > 0).then(|| std::time::Duration::from_millis(ms))
}

/// Whether a whole TTHeader frame carries the string header `key`, looked up without
/// parsing the frame when its header holds no info blocks at all (the common case for
/// replies).
pub fn has_str_header(frame: &Bytes, key: &str) -> bool {
    // Header size in 4-byte words at offset 12; one word is the protocol id, the transform
    // count and padding only.
    let words = frame
        .get(12..14)
        .map_or(0, |w| u16::from_be_bytes([w[0], w[1]]));
    if words <= 1 {
        return false;
    }
    TTHeader::parse(frame.clone()).is_ok_and(|t| t.str_header(key).is_some())
}

/// What the payload of a TTHeader frame is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PayloadProtocol {
    /// A strict binary Thrift message.
    ThriftBinary,
    /// A compact Thrift message.
    ThriftCompact,
    /// A Kitex Protobuf message (header and body, without a length prefix).
    KitexProtobuf,
}

/// A parsed TTHeader frame: the header's fixed fields, access to its key/value headers,
/// and the payload, all views of the frame.
#[derive(Debug, Clone)]
pub struct TTHeader {
    frame: Bytes,
    flags: u16,
    seq_id: i32,
    protocol_id: u8,
    /// Offsets of the info blocks within `frame`.
    info: (usize, usize),
    /// The span of the info blocks from the first string-header block to the end of the
    /// last (empty if none), so that a lookup walks no block past them.
    strs: (u32, u32),
    /// The same for the integer-header blocks.
    ints: (u32, u32),
    /// The lengths of the string keys present: bit `min(len, 63)`.
    key_lens: u64,
    /// Where the caller's timeout value is in `frame`, noted as the frame was parsed:
    /// read on every call, found without walking the headers again.
    timeout: Option<(u32, u32)>,
    /// Where the payload starts, and whether it carries its own 4-byte length.
    payload_start: usize,
    payload_framed: bool,
    payload_protocol: PayloadProtocol,
}

fn bad(what: &'static str, offset: usize) -> FrameError {
    FrameError::BadHeader { what, offset }
}

fn be16(b: &[u8], at: usize) -> Result<u16, FrameError> {
    b.get(at..at + 2)
        .map(|s| u16::from_be_bytes([s[0], s[1]]))
        .ok_or(bad("truncated header", at))
}

fn be32(b: &[u8], at: usize) -> Result<u32, FrameError> {
    super::be32(b, at).ok_or(bad("truncated header", at))
}

/// What walking the info blocks notes for later lookups.
#[derive(Default)]
struct Noted {
    /// The lengths of the string keys present: bit `min(len, 63)`.
    key_lens: u64,
    /// Where the first [`int_key::RPC_TIMEOUT`] value is (start, end), if any.
    timeout: Option<(u32, u32)>,
}

/// Walks one info block starting at `at` (its id byte) of `h`, the frame up to the end of
/// its header; returns the offset after it. The lengths of the string keys it holds are
/// marked in `noted.key_lens` (bit `min(len, 63)`), and the first [`int_key::RPC_TIMEOUT`]
/// value is noted.
fn walk_block(h: &[u8], at: usize, noted: &mut Noted) -> Result<usize, FrameError> {
    let end = h.len();
    let id = *h.get(at).ok_or(bad("truncated info block", at))?;
    let past = |p: usize| bad("info block runs past the header", p);
    // Reads are bounded by the header's end; offsets only grow, and one check after the
    // block says whether its last value ran past it.
    let u16_at = |p: usize| be16(h, p).map_err(|_| past(p));
    let mut p = at + 1;
    match id {
        info_id::PADDING => {}
        info_id::KEY_VALUE => {
            let count = u16_at(p)?;
            p += 2;
            for _ in 0..count {
                let klen = u16_at(p)? as usize;
                noted.key_lens |= 1 << klen.min(63);
                p += 2 + klen;
                let vlen = u16_at(p)? as usize;
                p += 2 + vlen;
            }
        }
        info_id::INT_KEY_VALUE => {
            let count = u16_at(p)?;
            p += 2;
            for _ in 0..count {
                let kv = h.get(p..p + 4).ok_or(past(p))?;
                let key = u16::from_be_bytes([kv[0], kv[1]]);
                let vlen = usize::from(u16::from_be_bytes([kv[2], kv[3]]));
                p += 4 + vlen;
                if key == int_key::RPC_TIMEOUT && noted.timeout.is_none() {
                    // Offsets fit in 32 bits: the frame's length is a `u32`. (If the
                    // value runs past the header, the block is refused below.)
                    noted.timeout = Some(((p - vlen) as u32, p as u32));
                }
            }
        }
        info_id::ACL_TOKEN => {
            p += 2 + usize::from(u16_at(p)?);
        }
        _ => return Err(bad("unknown info block id", at)),
    }
    if p > end {
        return Err(past(end));
    }
    Ok(p)
}

impl TTHeader {
    /// Parses and validates a whole TTHeader frame (its LENGTH prefix included).
    pub fn parse(frame: Bytes) -> Result<TTHeader, FrameError> {
        let b = &frame[..];
        let length = be32(b, 0)? as usize;
        if length >= TTHEADER_MAX_LENGTH {
            return Err(FrameError::BadLength(length));
        }
        if length + 4 != b.len() {
            return Err(bad("LENGTH does not match the frame", 0));
        }
        let magic = be16(b, 4)?;
        if magic != TTHEADER_MAGIC {
            return Err(FrameError::BadMagic {
                offset: 4,
                found: u32::from(magic),
            });
        }
        let flags = be16(b, 6)?;
        let seq_id = be32(b, 8)? as i32;
        let header_size = be16(b, 12)? as usize * 4;
        let header_end = 14 + header_size;
        if header_end > b.len() {
            return Err(bad("header size runs past the frame", 12));
        }
        let protocol_id = *b.get(14).ok_or(bad("missing protocol id", 14))?;
        let transforms = *b.get(15).ok_or(bad("missing transform count", 15))? as usize;
        let info_start = 16 + transforms;
        if info_start > header_end {
            return Err(bad("transforms run past the header", 15));
        }
        if transforms > 0 {
            return Err(bad("transforms (compression) are not supported", 16));
        }
        let mut p = info_start;
        // Offsets fit in 32 bits: the frame's length is a `u32`.
        let end32 = header_end as u32;
        let (mut strs, mut ints) = ((end32, end32), (end32, end32));
        let mut noted = Noted::default();
        let header = &b[..header_end];
        while p < header_end {
            let at = p;
            p = walk_block(header, p, &mut noted)?;
            let span = match b[at] {
                info_id::KEY_VALUE => &mut strs,
                info_id::INT_KEY_VALUE => &mut ints,
                _ => continue,
            };
            span.0 = span.0.min(at as u32);
            span.1 = p as u32;
        }
        let payload = &b[header_end..];
        let (framed, magic_at) = match payload.get(..2) {
            Some([0x80, 0x01]) | Some([0x90, 0x01]) => (false, 0),
            Some(_) if payload.first() == Some(&0x82) => (false, 0),
            Some(_) => (true, 4),
            None => return Err(bad("empty payload", header_end)),
        };
        if framed {
            let inner = be32(payload, 0)? as usize;
            if inner + 4 != payload.len() {
                return Err(bad("payload length does not match", header_end));
            }
        }
        let payload_protocol = match (payload.get(magic_at), payload.get(magic_at + 1)) {
            (Some(0x80), Some(0x01)) => PayloadProtocol::ThriftBinary,
            (Some(0x82), _) => PayloadProtocol::ThriftCompact,
            (Some(&hi), Some(&lo)) if u16::from_be_bytes([hi, lo]) == KITEX_PB_MAGIC => {
                PayloadProtocol::KitexProtobuf
            }
            _ => return Err(bad("unknown payload", header_end + magic_at)),
        };
        Ok(TTHeader {
            flags,
            seq_id,
            protocol_id,
            info: (info_start, header_end),
            strs,
            ints,
            key_lens: noted.key_lens,
            timeout: noted.timeout,
            payload_start: header_end,
            payload_framed: framed,
            payload_protocol,
            frame,
        })
    }

    /// The flags (0x0001: replies may come out of order).
    pub fn flags(&self) -> u16 {
        self.flags
    }

    /// The sequence number.
    pub fn seq_id(&self) -> i32 {
        self.seq_id
    }

    /// The protocol id byte as sent (0 binary, 2 compact, 4 Kitex Protobuf; Kitex sometimes
    /// sends 0 for Protobuf, so [`payload_protocol`](Self::payload_protocol) decides).
    pub fn protocol_id(&self) -> u8 {
        self.protocol_id
    }

    /// What the payload is, from its own magic.
    pub fn payload_protocol(&self) -> PayloadProtocol {
        self.payload_protocol
    }

    /// Whether the payload carries its own 4-byte length (TTHeader + Framed, Volo's default).
    pub fn payload_framed(&self) -> bool {
        self.payload_framed
    }

    /// The message inside: a Thrift message or a Kitex Protobuf message (header and body),
    /// without any length prefix. A zero-copy view.
    pub fn message(&self) -> Bytes {
        let skip = if self.payload_framed { 4 } else { 0 };
        self.frame.slice(self.payload_start + skip..)
    }

    /// The integer-keyed headers.
    pub fn int_headers(&self) -> IntHeaders<'_> {
        IntHeaders {
            pairs: Pairs::new(self, self.ints, info_id::INT_KEY_VALUE),
        }
    }

    /// The string-keyed headers.
    pub fn str_headers(&self) -> StrHeaders<'_> {
        StrHeaders {
            pairs: Pairs::new(self, self.strs, info_id::KEY_VALUE),
        }
    }

    /// The value of integer header `key`, as a zero-copy view.
    pub fn int_header(&self, key: u16) -> Option<Bytes> {
        self.int_headers()
            .find(|(k, _)| *k == key)
            .map(|(_, v)| self.view(v))
    }

    /// Whether a string header named `key` may be present: `false` says it is not. (A
    /// test of the key lengths the frame holds, recorded as it was parsed: looking for a
    /// header that most frames do not carry costs next to nothing.)
    pub fn may_have_str_header(&self, key: &str) -> bool {
        self.key_lens & (1 << key.len().min(63)) != 0
    }

    /// The value of string header `key`, as a zero-copy view.
    pub fn str_header(&self, key: &str) -> Option<Bytes> {
        if !self.may_have_str_header(key) {
            return None;
        }
        self.str_headers()
            .find(|(k, _)| *k == key.as_bytes())
            .map(|(_, v)| self.view(v))
    }

    /// The caller's timeout ([`int_key::RPC_TIMEOUT`]), if it sent one.
    pub fn rpc_timeout(&self) -> Option<std::time::Duration> {
        let (a, b) = self.timeout?;
        decode_timeout(&self.frame[a as usize..b as usize])
    }

    /// The ACL token, if any.
    pub fn acl_token(&self) -> Option<Bytes> {
        let b = &self.frame[..];
        let (mut p, end) = self.info;
        while p < end {
            let next = walk_block(&b[..end], p, &mut Noted::default()).ok()?;
            if b[p] == info_id::ACL_TOKEN {
                return Some(self.frame.slice(p + 3..next));
            }
            p = next;
        }
        None
    }

    fn view(&self, part: &[u8]) -> Bytes {
        self.frame.slice_ref(part)
    }
}

/// A cursor over the pairs of the validated info blocks of one kind: it reads each pair
/// once, and walks (skips) only the blocks of other kinds between them.
#[derive(Debug, Clone)]
struct Pairs<'a> {
    b: &'a [u8],
    /// The next pair, or the next block when `left` is 0.
    p: usize,
    end: usize,
    /// Pairs left in the current block.
    left: u16,
    id: u8,
}

impl<'a> Pairs<'a> {
    /// The pairs of the blocks of kind `id` within `span` (offsets in `h`'s frame).
    fn new(h: &'a TTHeader, span: (u32, u32), id: u8) -> Self {
        Pairs {
            b: &h.frame[..],
            p: span.0 as usize,
            end: span.1 as usize,
            left: 0,
            id,
        }
    }

    /// Moves to the next pair: its offset, once `left` counted it.
    fn advance(&mut self) -> Option<usize> {
        while self.left == 0 {
            if self.p >= self.end {
                return None;
            }
            if self.b[self.p] == self.id {
                self.left = be16(self.b, self.p + 1).ok()?;
                self.p += 3;
            } else {
                let header = &self.b[..self.end];
                self.p = walk_block(header, self.p, &mut Noted::default()).ok()?;
            }
        }
        self.left -= 1;
        Some(self.p)
    }
}

/// Iterates integer headers: `(key, value)`.
#[derive(Debug, Clone)]
pub struct IntHeaders<'a> {
    pairs: Pairs<'a>,
}

impl<'a> Iterator for IntHeaders<'a> {
    type Item = (u16, &'a [u8]);

    fn next(&mut self) -> Option<Self::Item> {
        let p = self.pairs.advance()?;
        let b = self.pairs.b;
        let key = be16(b, p).ok()?;
        let vlen = be16(b, p + 2).ok()? as usize;
        let value = b.get(p + 4..p + 4 + vlen)?;
        self.pairs.p = p + 4 + vlen;
        Some((key, value))
    }
}

/// Iterates string headers: `(key, value)`.
#[derive(Debug, Clone)]
pub struct StrHeaders<'a> {
    pairs: Pairs<'a>,
}

impl<'a> Iterator for StrHeaders<'a> {
    type Item = (&'a [u8], &'a [u8]);

    fn next(&mut self) -> Option<Self::Item> {
        let p = self.pairs.advance()?;
        let b = self.pairs.b;
        let klen = be16(b, p).ok()? as usize;
        let key = b.get(p + 2..p + 2 + klen)?;
        let q = p + 2 + klen;
        let vlen = be16(b, q).ok()? as usize;
        let value = b.get(q + 2..q + 2 + vlen)?;
        self.pairs.p = q + 2 + vlen;
        Some((key, value))
    }
}

/// Writes TTHeader frames. Headers are borrowed, so building one allocates nothing.
#[derive(Debug, Clone, Copy, Default)]
pub struct TTHeaderBuilder<'a> {
    /// The sequence number.
    pub seq_id: i32,
    /// The flags.
    pub flags: u16,
    /// The protocol id byte (0 binary, 2 compact, 4 Kitex Protobuf).
    pub protocol_id: u8,
    /// Integer headers.
    pub ints: &'a [(u16, &'a [u8])],
    /// String headers.
    pub strs: &'a [(&'a str, &'a [u8])],
}

impl TTHeaderBuilder<'_> {
    /// The info section's length: protocol id, transform count and header blocks (checked:
    /// headers that add up past `usize` are refused, not wrapped).
    fn info_len(&self) -> Result<usize, FrameError> {
        // A block: id and count (3 bytes), then its pairs.
        fn block(mut lens: impl Iterator<Item = usize>) -> Option<usize> {
            lens.try_fold(3usize, |n, l| n.checked_add(l))
        }
        let ints = match self.ints {
            [] => Some(0),
            ints => block(ints.iter().map(|(_, v)| 4 + v.len())),
        };
        let strs = match self.strs {
            [] => Some(0),
            strs => block(strs.iter().map(|(k, v)| 4 + k.len() + v.len())),
        };
        ints.zip(strs)
            .and_then(|(i, s)| i.checked_add(s)?.checked_add(2))
            .ok_or(FrameError::BadLength(usize::MAX))
    }

    /// Appends the header (LENGTH left to [`finish`](Self::finish)); returns the frame's
    /// start for `finish`. Write the payload next: the Thrift or Kitex Protobuf message,
    /// optionally wrapped in its own length ([`reserve_length`](super::reserve_length)).
    pub fn begin(&self, out: &mut BytesMut) -> Result<usize, FrameError> {
        let info = self.info_len()?;
        let header_words =
            u16::try_from(info.div_ceil(4)).map_err(|_| FrameError::BadLength(info))?;
        let padded = usize::from(header_words) * 4;
        let start = out.len();
        if self.ints.is_empty() && self.strs.is_empty() {
            // No headers (a server's usual reply): the info is the protocol id and the
            // transform count, padded to one word; written in one append.
            let mut h = [0u8; 14 + 4];
            self.prefix(&mut h, header_words);
            out.extend_from_slice(&h);
            return Ok(start);
        }
        // Sized once and filled in place (zeros: the padding, the transform count and the
        // LENGTH until `finish`), rather than appended field by field, each append
        // checking the buffer's room again.
        out.resize(start + 14 + padded, 0);
        let filled = self.fill(&mut out[start..], header_words);
        if filled.is_err() {
            out.truncate(start);
        }
        filled.map(|()| start)
    }

    /// Writes the fixed fields after LENGTH into `b` (which starts at LENGTH and holds at
    /// least 16 bytes): magic, flags, sequence number, header size and protocol id; the
    /// transform count (byte 15) is left as it is (zero).
    fn prefix(&self, b: &mut [u8], header_words: u16) {
        b[4..6].copy_from_slice(&TTHEADER_MAGIC.to_be_bytes());
        b[6..8].copy_from_slice(&self.flags.to_be_bytes());
        b[8..12].copy_from_slice(&self.seq_id.to_be_bytes());
        b[12..14].copy_from_slice(&header_words.to_be_bytes());
        b[14] = self.protocol_id;
    }

    /// Writes the header into `b` (which starts at LENGTH, left zero for
    /// [`finish`](Self::finish)), sized by [`info_len`](Self::info_len).
    fn fill(&self, b: &mut [u8], header_words: u16) -> Result<(), FrameError> {
        self.prefix(b, header_words);
        let mut at = 16;
        let mut put = |bytes: &[u8]| {
            b[at..at + bytes.len()].copy_from_slice(bytes);
            at += bytes.len();
        };
        let u16_be = |n: usize| {
            u16::try_from(n)
                .map(u16::to_be_bytes)
                .map_err(|_| FrameError::BadLength(n))
        };
        if !self.strs.is_empty() {
            put(&[info_id::KEY_VALUE]);
            put(&u16_be(self.strs.len())?);
            for (k, v) in self.strs {
                put(&u16_be(k.len())?);
                put(k.as_bytes());
                put(&u16_be(v.len())?);
                put(v);
            }
        }
        if !self.ints.is_empty() {
            put(&[info_id::INT_KEY_VALUE]);
            put(&u16_be(self.ints.len())?);
            for (k, v) in self.ints {
                put(&k.to_be_bytes());
                put(&u16_be(v.len())?);
                put(v);
            }
        }
        Ok(())
    }

    /// Fills the LENGTH of the frame that [`begin`](Self::begin) started at `start`.
    pub fn finish(out: &mut BytesMut, start: usize) -> Result<(), FrameError> {
        let len = out.len() - start - 4;
        if len >= TTHEADER_MAX_LENGTH {
            return Err(FrameError::BadLength(len));
        }
        patch_length(out, start)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// String and integer header blocks interleaved: each lookup finds the pairs of its
    /// own blocks, in order, and skips the others.
    #[test]
    fn interleaved_blocks_are_read_in_order() {
        let mut info = vec![0u8, 0]; // protocol id, no transforms
        info.extend_from_slice(&[info_id::KEY_VALUE, 0, 1, 0, 1, b'a', 0, 1, b'1']);
        info.extend_from_slice(&[info_id::INT_KEY_VALUE, 0, 1, 0, 7, 0, 1, b'x']);
        info.extend_from_slice(&[info_id::KEY_VALUE, 0, 2]);
        info.extend_from_slice(&[0, 1, b'b', 0, 2, b'2', b'2', 0, 1, b'c', 0, 0]);
        info.extend_from_slice(&[info_id::INT_KEY_VALUE, 0, 2, 0, 8, 0, 0]);
        info.extend_from_slice(&[0, int_key::RPC_TIMEOUT as u8, 0, 3, b'2', b'5', b'0']);
        while info.len() % 4 != 0 {
            info.push(0);
        }
        let payload = [0x80, 0x01, 0x00, 0x01, 0, 0, 0, 1, b'm', 0, 0, 0, 1, 0];
        let mut f = Vec::new();
        let len = 10 + info.len() + payload.len();
        f.extend_from_slice(&(len as u32).to_be_bytes());
        f.extend_from_slice(&TTHEADER_MAGIC.to_be_bytes());
        f.extend_from_slice(&[0, 0, 0, 0, 0, 1]);
        f.extend_from_slice(&((info.len() / 4) as u16).to_be_bytes());
        f.extend_from_slice(&info);
        f.extend_from_slice(&payload);
        let h = TTHeader::parse(Bytes::from(f)).expect("valid frame");
        let strs: Vec<_> = h.str_headers().collect();
        assert_eq!(
            strs,
            [
                (&b"a"[..], &b"1"[..]),
                (&b"b"[..], &b"22"[..]),
                (&b"c"[..], &b""[..])
            ]
        );
        let ints: Vec<_> = h.int_headers().collect();
        assert_eq!(
            ints,
            [
                (7, &b"x"[..]),
                (8, &b""[..]),
                (int_key::RPC_TIMEOUT, &b"250"[..])
            ]
        );
        // The timeout, noted where the frame was parsed, is the header's value.
        assert_eq!(h.rpc_timeout(), Some(std::time::Duration::from_millis(250)));
        assert_eq!(
            h.rpc_timeout(),
            decode_timeout(&h.int_header(int_key::RPC_TIMEOUT).unwrap())
        );
        assert_eq!(h.str_header("c").as_deref(), Some(&b""[..]));
        assert_eq!(h.int_header(8).as_deref(), Some(&b""[..]));
        assert!(h.str_header("d").is_none());
        assert!(h.str_header("dd").is_none());
        assert!(h.may_have_str_header("a") && !h.may_have_str_header("ab"));
    }

    /// A frame whose info section is `info` (padded with zeros) and whose payload is a
    /// minimal binary Thrift message.
    fn frame_with_info(info: &[u8]) -> Bytes {
        let mut info = [&[0u8, 0][..], info].concat(); // protocol id, no transforms
        while info.len() % 4 != 0 {
            info.push(0);
        }
        let payload = [0x80, 0x01, 0x00, 0x01, 0, 0, 0, 1, b'm', 0, 0, 0, 1, 0];
        let mut f = Vec::new();
        f.extend_from_slice(&((10 + info.len() + payload.len()) as u32).to_be_bytes());
        f.extend_from_slice(&TTHEADER_MAGIC.to_be_bytes());
        f.extend_from_slice(&[0, 0, 0, 0, 0, 1]);
        f.extend_from_slice(&((info.len() / 4) as u16).to_be_bytes());
        f.extend_from_slice(&info);
        f.extend_from_slice(&payload);
        Bytes::from(f)
    }

    /// Info blocks whose last value ends exactly at the header's end are taken; one byte
    /// further (into the payload) and the frame is refused, whatever the block.
    #[test]
    fn info_blocks_end_at_the_header_end() {
        // 2 + 8 = 10 bytes of info, padded to 12: a value of length 2 (the padding) ends
        // at the header's end; of length 3 it reaches one byte into the payload.
        let fits = frame_with_info(&[info_id::KEY_VALUE, 0, 1, 0, 1, b'k', 0, 2]);
        let h = TTHeader::parse(fits).expect("a value running to the header's end");
        assert_eq!(h.str_header("k").as_deref(), Some(&[0u8, 0][..]));
        let past = frame_with_info(&[info_id::KEY_VALUE, 0, 1, 0, 1, b'k', 0, 3]);
        assert!(TTHeader::parse(past).is_err());
        // An RPC_TIMEOUT whose value crosses the end: refused, not noted (and one whose
        // value, its "1" and the padding, ends at the end: taken).
        let t = int_key::RPC_TIMEOUT.to_be_bytes();
        let past = frame_with_info(&[info_id::INT_KEY_VALUE, 0, 1, t[0], t[1], 0, 9, b'1']);
        assert!(TTHeader::parse(past).is_err());
        let fits = frame_with_info(&[info_id::INT_KEY_VALUE, 0, 1, t[0], t[1], 0, 3, b'1']);
        let h = TTHeader::parse(fits).expect("a timeout within the header");
        assert_eq!(
            h.int_header(int_key::RPC_TIMEOUT).as_deref(),
            Some(&b"1\0\0"[..])
        );
        // More pairs counted than present; an ACL token running past the end.
        assert!(TTHeader::parse(frame_with_info(&[info_id::INT_KEY_VALUE, 0, 9])).is_err());
        assert!(TTHeader::parse(frame_with_info(&[info_id::ACL_TOKEN, 0, 9])).is_err());
        // Only padding: no headers.
        let h = TTHeader::parse(frame_with_info(&[0, 0, 0, 0])).expect("padding only");
        assert_eq!(h.str_headers().count() + h.int_headers().count(), 0);
    }

    /// Headers written by the builder are read back by the parser.
    #[test]
    fn built_headers_parse_back() {
        let b = TTHeaderBuilder {
            seq_id: -7,
            flags: 1,
            protocol_id: 0,
            ints: &[(int_key::TO_METHOD, b"echo"), (9, b"")],
            strs: &[("k", b"vv"), ("", b"")],
        };
        let mut out = BytesMut::new();
        let start = b.begin(&mut out).expect("fits");
        out.extend_from_slice(&[0x80, 0x01, 0x00, 0x01, 0, 0, 0, 1, b'm', 0, 0, 0, 1, 0]);
        TTHeaderBuilder::finish(&mut out, start).expect("fits");
        let h = TTHeader::parse(out.freeze()).expect("a frame the builder wrote");
        assert_eq!((h.seq_id(), h.flags()), (-7, 1));
        let strs: Vec<_> = h.str_headers().collect();
        assert_eq!(strs, [(&b"k"[..], &b"vv"[..]), (&b""[..], &b""[..])]);
        let ints: Vec<_> = h.int_headers().collect();
        assert_eq!(ints, [(int_key::TO_METHOD, &b"echo"[..]), (9, &b""[..])]);
    }
}
