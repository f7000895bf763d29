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
}

impl ReplyFraming for ThriftFraming {
    fn split(&self, input: &[u8]) -> ReplySplit {
        match frame::split(self.protocol, input, self.max_frame) {
            Ok(Split::NeedMore(n)) => ReplySplit::NeedMore(n),
            Ok(Split::Frame(len)) => {
                match codec::envelope::peek_seq_id(self.protocol, &input[..len]) {
                    Ok(seq) => ReplySplit::Reply { len, seq },
                    Err(why) => ReplySplit::Invalid(crate::reason(why)),
                }
            }
            Err(e) => ReplySplit::Invalid(crate::cause(e)),
        }
    }

    fn asks_to_reconnect(&self, frame: &bytes::Bytes) -> bool {
        self.protocol == Protocol::TTHeader && ttheader_crrst(frame)
    }
}
