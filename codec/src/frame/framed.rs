//! Framed transport: a 4-byte big-endian length, then the message. Lengths are reserved
//! and patched in place, so a message is encoded once, straight into the output buffer.

use bytes::{BufMut, BytesMut};

use super::FrameError;
use crate::thrift::{
    BinaryLen, BinaryWriter, CompactLen, CompactWriter, Message, MessageHeader, ProtocolLen,
    ProtocolWrite,
};

/// Appends a 4-byte length placeholder; returns its offset for [`patch_length`].
pub fn reserve_length(out: &mut BytesMut) -> usize {
    let at = out.len();
    out.put_u32(0);
    at
}

/// Fills the placeholder at `at` with the number of bytes written after it.
pub fn patch_length(out: &mut BytesMut, at: usize) -> Result<(), FrameError> {
    let len = out
        .len()
        .checked_sub(at + 4)
        .ok_or(FrameError::BadLength(0))?;
    let len32 = u32::try_from(len).map_err(|_| FrameError::BadLength(len))?;
    out[at..at + 4].copy_from_slice(&len32.to_be_bytes());
    Ok(())
}

/// Appends one Framed Thrift message (`header` then `body` as the message's struct),
/// reserving its exact size first. `compact` selects the compact protocol.
pub fn encode_framed<M: Message>(
    out: &mut BytesMut,
    header: &MessageHeader,
    body: &M,
    compact: bool,
) -> Result<(), FrameError> {
    let size = if compact {
        let mut l = CompactLen::default();
        l.message_begin_len(header) + body.encoded_len(&mut l)
    } else {
        let mut l = BinaryLen;
        l.message_begin_len(header) + body.encoded_len(&mut l)
    };
    out.reserve(4 + size);
    let at = reserve_length(out);
    if compact {
        let mut w = CompactWriter::new(&mut *out);
        w.write_message_begin(header)?;
        body.encode(&mut w)?;
        w.write_message_end()?;
    } else {
        let mut w = BinaryWriter::new(&mut *out);
        w.write_message_begin(header)?;
        body.encode(&mut w)?;
        w.write_message_end()?;
    }
    patch_length(out, at)
}
