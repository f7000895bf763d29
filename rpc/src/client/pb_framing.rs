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

impl ReplyFraming for KitexPbFraming {
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
