//! Reply framing for Thrift over Framed and TTHeader, from `codec::frame`.

use codec::frame::{self, Protocol, Split};

use super::framing::{ttheader_crrst, ReplyFraming, ReplySplit};

/// Finds Thrift reply frames and their sequence ids, in Framed (binary or compact) or
/// TTHeader transport, without copying: the id is read in place from the Thrift message
/// header, or for TTHeader from its own sequence number (as Kitex multiplexes). The full
/// decode of a reply is left to its caller.
#[derive(Debug, Clone, Copy)]
pub struct ThriftFraming {
    protocol: Protocol,
    max_frame: usize,
}

impl ThriftFraming {
    /// Framed transport, strict binary protocol.
    pub fn framed_binary(max_frame: usize) -> Self {
        ThriftFraming {
            protocol: Protocol::FramedBinary,
            max_frame,
        }
    }

    /// Framed transport, compact protocol.
    pub fn framed_compact(max_frame: usize) -> Self {
        ThriftFraming {
            protocol: Protocol::FramedCompact,
            max_frame,
        }
    }

    /// TTHeader transport (bare or framed payload, binary or compact).
    pub fn ttheader(max_frame: usize) -> Self {
        ThriftFraming {
            protocol: Protocol::TTHeader,
            max_frame,
        }
    }

    /// The sequence id of a whole frame, read in place (no copy, no allocation).
    fn seq_of(&self, frame: &[u8]) -> Result<i32, &'static str> {
        match self.protocol {
            // Kitex multiplexes on TTHeader's own sequence number.
            Protocol::TTHeader => be32(frame, 8).map(|v| v as i32),
            Protocol::FramedCompact => compact_seq(frame.get(4..).ok_or("short frame")?),
            _ => binary_seq(frame.get(4..).ok_or("short frame")?),
        }
    }
}

fn be32(b: &[u8], at: usize) -> Result<u32, &'static str> {
    b.get(at..at + 4)
        .map(|s| u32::from_be_bytes([s[0], s[1], s[2], s[3]]))
        .ok_or("truncated message header")
}

/// The sequence id of a binary message header: strict (`0x8001xxxx`, name, seq) or
/// versionless (name, type byte, seq).
fn binary_seq(m: &[u8]) -> Result<i32, &'static str> {
    let first = be32(m, 0)?;
    let name_len = if first & 0x8000_0000 != 0 {
        be32(m, 4)? as usize
    } else {
        first as usize
    };
    let at = if first & 0x8000_0000 != 0 {
        8 + name_len
    } else {
        4 + name_len + 1
    };
    be32(m, at).map(|v| v as i32)
}

/// The sequence id of a compact message header: 0x82, type and version, varint seq.
fn compact_seq(m: &[u8]) -> Result<i32, &'static str> {
    if m.first() != Some(&0x82) {
        return Err("not a compact message");
    }
    let mut v: u64 = 0;
    for (i, b) in m.iter().skip(2).take(5).enumerate() {
        v |= u64::from(b & 0x7f) << (7 * i);
        if b & 0x80 == 0 {
            return Ok(v as u32 as i32);
        }
    }
    Err("bad sequence id varint")
}

impl ReplyFraming for ThriftFraming {
    fn split(&self, input: &[u8]) -> ReplySplit {
        match frame::split(self.protocol, input, self.max_frame) {
            Ok(Split::NeedMore(n)) => ReplySplit::NeedMore(n),
            Ok(Split::Frame(len)) => match self.seq_of(&input[..len]) {
                Ok(seq) => ReplySplit::Reply { len, seq },
                Err(why) => ReplySplit::Invalid(why.to_string()),
            },
            Err(e) => ReplySplit::Invalid(e.to_string()),
        }
    }

    fn asks_to_reconnect(&self, frame: &bytes::Bytes) -> bool {
        self.protocol == Protocol::TTHeader && ttheader_crrst(frame)
    }
}
