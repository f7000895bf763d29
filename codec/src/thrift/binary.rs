//! The binary protocol: fixed-width big-endian integers, `i32` lengths. Writes the strict
//! (versioned) message header; reads strict and old non-strict headers.

use bytes::{Buf, BufMut, Bytes, BytesMut};

use super::*;

const VERSION_1: u32 = 0x8001_0000;
const VERSION_MASK: u32 = 0xffff_0000;

/// Reads the binary protocol from a [`Bytes`], in place.
#[derive(Debug)]
pub struct BinaryReader {
    /// The bytes not read yet.
    pub buf: Bytes,
    start: usize,
    depth: usize,
}

impl BinaryReader {
    /// A reader over `buf`.
    pub fn new(buf: Bytes) -> Self {
        let start = buf.len();
        BinaryReader {
            buf,
            start,
            depth: 0,
        }
    }

    /// Reads a message header as [`read_message_begin`](ProtocolRead::read_message_begin)
    /// does, checking the same, but steps over the method name instead of taking it (no
    /// view of the input, no UTF-8 check): for a reader that does not need the name, as a
    /// client matching replies by sequence id. The type and sequence id.
    pub fn skip_message_begin(&mut self) -> Result<(MessageType, i32), DecodeError> {
        let (_, kind, seq_id) = self.message_begin(false)?;
        Ok((kind, seq_id))
    }

    /// Reads a message header: strict (version and type, name, sequence id) or
    /// versionless (name, type byte, sequence id). The name is taken if `take_name`
    /// (`None` if not: its bytes are stepped over).
    #[inline(always)]
    fn message_begin(
        &mut self,
        take_name: bool,
    ) -> Result<(Option<ByteString>, MessageType, i32), DecodeError> {
        let first = self.read_i32()?;
        if first < 0 {
            let v = first as u32;
            if v & VERSION_MASK != VERSION_1 {
                return Err(DecodeError::BadMessageHeader(
                    "unknown binary protocol version",
                ));
            }
            let kind = MessageType::from_u8((v & 0xff) as u8)
                .ok_or(DecodeError::BadMessageHeader("unknown message type"))?;
            let n = self.read_i32()?;
            let n = checked_len(i64::from(n), self.buf.len())?;
            let name = name(&mut self.buf, n, take_name, "UTF-8 in a string")?;
            Ok((name, kind, self.read_i32()?))
        } else {
            // Old, versionless header: name length, name, type byte, sequence id.
            let n = checked_len(i64::from(first), self.buf.len())?;
            let name = name(&mut self.buf, n, take_name, "UTF-8 in a method name")?;
            let kind = MessageType::from_u8(self.read_i8()? as u8)
                .ok_or(DecodeError::BadMessageHeader("unknown message type"))?;
            Ok((name, kind, self.read_i32()?))
        }
    }
}

impl ProtocolRead for BinaryReader {
    fn remaining(&self) -> usize {
        self.buf.len()
    }
    fn position(&self) -> usize {
        self.start - self.buf.len()
    }
    fn depth(&mut self) -> &mut usize {
        &mut self.depth
    }
    fn read_message_begin(&mut self) -> Result<MessageHeader, DecodeError> {
        let (name, kind, seq_id) = self.message_begin(true)?;
        Ok(MessageHeader {
            name: name.unwrap_or_default(),
            kind,
            seq_id,
        })
    }
    fn read_struct_begin(&mut self) -> Result<(), DecodeError> {
        enter(&mut self.depth)
    }
    fn read_struct_end(&mut self) -> Result<(), DecodeError> {
        leave(&mut self.depth);
        Ok(())
    }
    fn read_field_begin(&mut self) -> Result<Option<FieldHeader>, DecodeError> {
        let ttype = TType::from_binary_id(self.read_i8()? as u8)?;
        if ttype == TType::Stop {
            return Ok(None);
        }
        Ok(Some(FieldHeader {
            ttype,
            id: self.read_i16()?,
        }))
    }
    fn read_bool(&mut self) -> Result<bool, DecodeError> {
        Ok(self.read_i8()? != 0)
    }
    fn read_i8(&mut self) -> Result<i8, DecodeError> {
        need(&self.buf, 1)?;
        Ok(self.buf.get_i8())
    }
    fn read_i16(&mut self) -> Result<i16, DecodeError> {
        need(&self.buf, 2)?;
        Ok(self.buf.get_i16())
    }
    fn read_i32(&mut self) -> Result<i32, DecodeError> {
        need(&self.buf, 4)?;
        Ok(self.buf.get_i32())
    }
    fn read_i64(&mut self) -> Result<i64, DecodeError> {
        need(&self.buf, 8)?;
        Ok(self.buf.get_i64())
    }
    fn read_double(&mut self) -> Result<f64, DecodeError> {
        need(&self.buf, 8)?;
        Ok(self.buf.get_f64())
    }
    fn read_binary(&mut self) -> Result<Bytes, DecodeError> {
        let n = self.read_i32()?;
        let n = checked_len(i64::from(n), self.buf.len())?;
        Ok(self.buf.split_to(n))
    }
    fn read_uuid(&mut self) -> Result<[u8; 16], DecodeError> {
        need(&self.buf, 16)?;
        let mut out = [0u8; 16];
        self.buf.copy_to_slice(&mut out);
        Ok(out)
    }
    fn read_list_begin(&mut self) -> Result<ListHeader, DecodeError> {
        let elem = TType::from_binary_id(self.read_i8()? as u8)?;
        let n = self.read_i32()?;
        let len = checked_len(i64::from(n), self.buf.len())?;
        Ok(ListHeader { elem, len })
    }
    fn read_map_begin(&mut self) -> Result<MapHeader, DecodeError> {
        let key = TType::from_binary_id(self.read_i8()? as u8)?;
        let value = TType::from_binary_id(self.read_i8()? as u8)?;
        let n = self.read_i32()?;
        // Each entry takes at least two bytes.
        let len = checked_len(i64::from(n), self.buf.len() / 2)?;
        Ok(MapHeader { key, value, len })
    }
}

/// Writes the binary protocol into any [`BufMut`] (by default its own [`BytesMut`]).
#[derive(Debug)]
pub struct BinaryWriter<B: BufMut = BytesMut> {
    /// Where the bytes go.
    pub buf: B,
}

impl Default for BinaryWriter {
    fn default() -> Self {
        BinaryWriter::new(BytesMut::new())
    }
}

impl<B: BufMut> BinaryWriter<B> {
    /// A writer appending to `buf`.
    pub fn new(buf: B) -> Self {
        BinaryWriter { buf }
    }
}

fn len_i32(len: usize) -> Result<i32, EncodeError> {
    i32::try_from(len).map_err(|_| EncodeError::TooLong)
}

impl<B: BufMut> ProtocolWrite for BinaryWriter<B> {
    fn write_message_begin(&mut self, h: &MessageHeader) -> Result<(), EncodeError> {
        self.buf.put_u32(VERSION_1 | h.kind as u32);
        self.write_string(&h.name)?;
        self.buf.put_i32(h.seq_id);
        Ok(())
    }
    fn write_struct_begin(&mut self, _: &'static str) -> Result<(), EncodeError> {
        Ok(())
    }
    fn write_struct_end(&mut self) -> Result<(), EncodeError> {
        Ok(())
    }
    fn write_field_begin(&mut self, ttype: TType, id: i16) -> Result<(), EncodeError> {
        self.buf.put_u8(ttype.binary_id());
        self.buf.put_i16(id);
        Ok(())
    }
    fn write_field_stop(&mut self) -> Result<(), EncodeError> {
        self.buf.put_u8(0);
        Ok(())
    }
    fn write_bool(&mut self, v: bool) -> Result<(), EncodeError> {
        self.buf.put_u8(u8::from(v));
        Ok(())
    }
    fn write_i8(&mut self, v: i8) -> Result<(), EncodeError> {
        self.buf.put_i8(v);
        Ok(())
    }
    fn write_i16(&mut self, v: i16) -> Result<(), EncodeError> {
        self.buf.put_i16(v);
        Ok(())
    }
    fn write_i32(&mut self, v: i32) -> Result<(), EncodeError> {
        self.buf.put_i32(v);
        Ok(())
    }
    fn write_i64(&mut self, v: i64) -> Result<(), EncodeError> {
        self.buf.put_i64(v);
        Ok(())
    }
    fn write_double(&mut self, v: f64) -> Result<(), EncodeError> {
        self.buf.put_f64(v);
        Ok(())
    }
    fn write_binary(&mut self, v: &[u8]) -> Result<(), EncodeError> {
        self.buf.put_i32(len_i32(v.len())?);
        self.buf.put_slice(v);
        Ok(())
    }
    fn write_uuid(&mut self, v: &[u8; 16]) -> Result<(), EncodeError> {
        self.buf.put_slice(v);
        Ok(())
    }
    fn write_list_begin(&mut self, h: ListHeader) -> Result<(), EncodeError> {
        self.buf.put_u8(h.elem.binary_id());
        self.buf.put_i32(len_i32(h.len)?);
        Ok(())
    }
    fn write_map_begin(&mut self, h: MapHeader) -> Result<(), EncodeError> {
        self.buf.put_u8(h.key.binary_id());
        self.buf.put_u8(h.value.binary_id());
        self.buf.put_i32(len_i32(h.len)?);
        Ok(())
    }
}

/// Encoded sizes in the binary protocol.
#[derive(Debug, Default, Clone, Copy)]
pub struct BinaryLen;

impl ProtocolLen for BinaryLen {
    fn message_begin_len(&mut self, h: &MessageHeader) -> usize {
        4 + 4 + h.name.len() + 4
    }
    fn struct_begin_len(&mut self, _: &'static str) -> usize {
        0
    }
    fn struct_end_len(&mut self) -> usize {
        0
    }
    fn field_begin_len(&mut self, _: TType, _: i16) -> usize {
        3
    }
    fn bool_len(&mut self, _: bool) -> usize {
        1
    }
    fn i16_len(&mut self, _: i16) -> usize {
        2
    }
    fn i32_len(&mut self, _: i32) -> usize {
        4
    }
    fn i64_len(&mut self, _: i64) -> usize {
        8
    }
    fn binary_len(&mut self, v: &[u8]) -> usize {
        4 + v.len()
    }
    fn list_begin_len(&mut self, _: ListHeader) -> usize {
        5
    }
    fn map_begin_len(&mut self, _: MapHeader) -> usize {
        6
    }
}
