//! Reply framing for Kitex Protobuf, alone or inside TTHeader.

use codec::frame::{self, Protocol, Split};

use super::framing::{ttheader_crrst, ReplyFraming, ReplySplit};

/// Finds Kitex Protobuf reply frames and their sequence ids in place: after the method name
/// for plain Kitex Protobuf, TTHeader's own sequence number inside TTHeader.
#[derive(Debug, Clone, Copy)]
pub struct KitexPbFraming {
    protocol: Protocol,
    max_frame: usize,
}

impl KitexPbFraming {
    /// Kitex Protobuf's own framing.
    pub fn plain(max_frame: usize) -> Self {
        KitexPbFraming {
            protocol: Protocol::KitexProtobuf,
            max_frame,
        }
    }

    /// TTHeader carrying Kitex Protobuf.
    pub fn ttheader(max_frame: usize) -> Self {
        KitexPbFraming {
            protocol: Protocol::TTHeader,
            max_frame,
        }
    }
}

fn be32(b: &[u8], at: usize) -> Option<u32> {
    b.get(at..at + 4)
        .map(|s| u32::from_be_bytes([s[0], s[1], s[2], s[3]]))
}

impl ReplyFraming for KitexPbFraming {
    fn split(&self, input: &[u8]) -> ReplySplit {
        match frame::split(self.protocol, input, self.max_frame) {
            Ok(Split::NeedMore(n)) => ReplySplit::NeedMore(n),
            Ok(Split::Frame(len)) => {
                let f = &input[..len];
                let seq = match self.protocol {
                    Protocol::TTHeader => be32(f, 8),
                    // length, magic, type, name length, name, seq.
                    _ => be32(f, 8).and_then(|n| be32(f, 12usize.checked_add(n as usize)?)),
                };
                match seq {
                    Some(seq) => ReplySplit::Reply {
                        len,
                        seq: seq as i32,
                    },
                    None => ReplySplit::Invalid("truncated Kitex Protobuf header".into()),
                }
            }
            Err(e) => ReplySplit::Invalid(e.to_string()),
        }
    }

    fn asks_to_reconnect(&self, frame: &bytes::Bytes) -> bool {
        self.protocol == Protocol::TTHeader && ttheader_crrst(frame)
    }
}
