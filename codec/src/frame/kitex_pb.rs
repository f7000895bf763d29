//! Kitex Protobuf framing: `length, 0x9001, type (u16), name length (u32), name,
//! sequence id (u32), protobuf body`.

use bytes::{Buf, BufMut, Bytes, BytesMut};

use super::framed::{patch_length, reserve_length};
use super::FrameError;
use crate::thrift::MessageType;
use crate::ByteString;

/// The magic after the length: 0x9001.
pub const KITEX_PB_MAGIC: u16 = 0x9001;

/// The header of a Kitex Protobuf message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KitexPbHeader {
    /// Call, reply or exception.
    pub kind: MessageType,
    /// The method name.
    pub method: ByteString,
    /// The sequence id.
    pub seq_id: i32,
}

/// The body of a Kitex Protobuf EXCEPTION message.
#[derive(Clone, PartialEq, prost::Message)]
pub struct ErrorProto {
    /// The error type (the `ApplicationExceptionKind` values).
    #[prost(int32, tag = "1")]
    pub type_id: i32,
    /// What went wrong.
    #[prost(string, tag = "2")]
    pub message: String,
}

impl KitexPbHeader {
    /// Parses the header of a whole frame (length prefix included); returns it and the
    /// protobuf body, a zero-copy view of `frame`.
    pub fn parse(frame: &Bytes) -> Result<(KitexPbHeader, Bytes), FrameError> {
        let mut b = frame.clone();
        if b.len() < 4 {
            return Err(FrameError::BadHeader {
                what: "Kitex Protobuf frame shorter than its header",
                offset: b.len(),
            });
        }
        let len = b.get_u32() as usize;
        if len != b.len() {
            return Err(FrameError::BadHeader {
                what: "length prefix does not match the frame",
                offset: 0,
            });
        }
        Self::parse_message(b).map_err(|e| match e {
            FrameError::BadHeader { what, offset } => FrameError::BadHeader {
                what,
                offset: offset + 4,
            },
            FrameError::BadMagic { offset, found } => FrameError::BadMagic {
                offset: offset + 4,
                found,
            },
            e => e,
        })
    }

    /// Parses the header of a message without its length prefix (as carried in a Kitex
    /// Protobuf frame after the length, or as a TTHeader payload); returns it and the
    /// protobuf body, a zero-copy view of `message`.
    pub fn parse_message(mut b: Bytes) -> Result<(KitexPbHeader, Bytes), FrameError> {
        let bad = |what, offset| FrameError::BadHeader { what, offset };
        if b.len() < 12 {
            return Err(bad(
                "Kitex Protobuf message shorter than its header",
                b.len(),
            ));
        }
        let magic = b.get_u16();
        if magic != KITEX_PB_MAGIC {
            return Err(FrameError::BadMagic {
                offset: 0,
                found: u32::from(magic),
            });
        }
        let kind = MessageType::from_u8(u8::try_from(b.get_u16()).unwrap_or(0))
            .ok_or(bad("message type", 2))?;
        let name_len = b.get_u32() as usize;
        if name_len > b.len().saturating_sub(4) {
            return Err(bad("method name length", 4));
        }
        let method = ByteString::from_utf8(b.split_to(name_len))
            .ok_or(bad("method name is not UTF-8", 8))?;
        let seq_id = b.get_u32() as i32;
        Ok((
            KitexPbHeader {
                kind,
                method,
                seq_id,
            },
            b,
        ))
    }

    /// The type, sequence id and body of a message without its length prefix, read in
    /// place; the method name is skipped, not read (for a side that knows the call
    /// already).
    pub fn split_message(m: &[u8]) -> Result<(MessageType, i32, &[u8]), FrameError> {
        let bad = |what, offset| FrameError::BadHeader { what, offset };
        if m.len() < 12 {
            return Err(bad(
                "Kitex Protobuf message shorter than its header",
                m.len(),
            ));
        }
        let magic = u16::from_be_bytes([m[0], m[1]]);
        if magic != KITEX_PB_MAGIC {
            return Err(FrameError::BadMagic {
                offset: 0,
                found: u32::from(magic),
            });
        }
        let kind = u8::try_from(u16::from_be_bytes([m[2], m[3]]))
            .ok()
            .and_then(MessageType::from_u8)
            .ok_or(bad("message type", 2))?;
        let name_len = u32::from_be_bytes([m[4], m[5], m[6], m[7]]) as usize;
        if name_len > m.len() - 12 {
            return Err(bad("method name length", 4));
        }
        let at = 8 + name_len;
        let seq_id = i32::from_be_bytes([m[at], m[at + 1], m[at + 2], m[at + 3]]);
        Ok((kind, seq_id, &m[at + 4..]))
    }

    /// The sequence id of a whole frame (length prefix included), read in place.
    pub fn peek_seq_id(frame: &[u8]) -> Option<i32> {
        // length, magic, type, name length, name, seq.
        let name = super::be32(frame, 8)? as usize;
        super::be32(frame, 12usize.checked_add(name)?).map(|v| v as i32)
    }

    /// Appends this header without a length prefix (magic, type, name, sequence id),
    /// reserving room for a body of `body_len` bytes.
    pub fn write_message_header(&self, out: &mut BytesMut, body_len: usize) {
        out.reserve(12 + self.method.len() + body_len);
        out.put_u16(KITEX_PB_MAGIC);
        out.put_u16(self.kind as u16);
        out.put_u32(self.method.len() as u32);
        out.put_slice(self.method.as_bytes());
        out.put_u32(self.seq_id as u32);
    }

    /// Appends a whole frame: this header and `body`'s protobuf encoding, with the length
    /// filled in place.
    pub fn encode<M: prost::Message>(
        &self,
        out: &mut BytesMut,
        body: &M,
    ) -> Result<(), FrameError> {
        out.reserve(4);
        let at = reserve_length(out);
        self.write_message_header(out, body.encoded_len());
        body.encode(out)
            .map_err(|_| FrameError::BadLength(body.encoded_len()))?;
        patch_length(out, at)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_message_split_in_place_reads_as_parsed() {
        let mut m = BytesMut::new();
        KitexPbHeader {
            kind: MessageType::Reply,
            method: ByteString::from_static("Echo"),
            seq_id: -7,
        }
        .write_message_header(&mut m, 3);
        m.extend_from_slice(b"abc");
        let m = m.freeze();
        assert_eq!(
            KitexPbHeader::split_message(&m).unwrap(),
            (MessageType::Reply, -7, &b"abc"[..])
        );
        // Every truncation, a bad magic and a bad type: refused by both readers alike.
        let mut bad_magic = m.to_vec();
        bad_magic[0] = 0;
        let mut bad_type = m.to_vec();
        bad_type[3] = 9;
        let mut long_name = m.to_vec();
        long_name[7] = 200;
        for b in (0..m.len())
            .map(|n| m[..n].to_vec())
            .chain([bad_magic, bad_type, long_name])
        {
            let parsed = KitexPbHeader::parse_message(Bytes::from(b.clone())).ok();
            let split = KitexPbHeader::split_message(&b).ok();
            assert_eq!(
                parsed.map(|(h, body)| (h.kind, h.seq_id, body.to_vec())),
                split.map(|(k, s, body)| (k, s, body.to_vec())),
                "{b:x?}"
            );
        }
    }
}
