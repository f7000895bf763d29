//! The compact protocol (Apache Thrift, THRIFT-110): varint and zigzag integers, field-id
//! deltas, booleans folded into field headers, little-endian doubles.

use bytes::{Buf, BufMut, Bytes, BytesMut};

use super::*;

const PROTOCOL_ID: u8 = 0x82;
const VERSION: u8 = 1;
const VERSION_MASK: u8 = 0x1f;
const TYPE_SHIFT: u8 = 5;
/// A bool in a container: 1 is true, 2 is false (as Apache writes them).
const BOOL_TRUE: u8 = 1;
const BOOL_FALSE: u8 = 2;

/// The last field id of each enclosing struct, without allocating: nesting is bounded by
/// [`MAX_DEPTH`].
#[derive(Debug, Clone)]
struct IdStack {
    ids: [i16; MAX_DEPTH + 1],
    len: usize,
}

impl Default for IdStack {
    fn default() -> Self {
        IdStack {
            ids: [0; MAX_DEPTH + 1],
            len: 0,
        }
    }
}

impl IdStack {
    fn push(&mut self, id: i16) -> bool {
        match self.ids.get_mut(self.len) {
            Some(slot) => {
                *slot = id;
                self.len += 1;
                true
            }
            None => false,
        }
    }

    fn pop(&mut self) -> i16 {
        self.len = self.len.saturating_sub(1);
        self.ids[self.len]
    }
}

/// Reads the compact protocol from a [`Bytes`], in place.
#[derive(Debug)]
pub struct CompactReader {
    /// The bytes not read yet.
    pub buf: Bytes,
    start: usize,
    depth: usize,
    last_ids: IdStack,
    last_id: i16,
    pending_bool: Option<bool>,
}

impl CompactReader {
    /// A reader over `buf`.
    pub fn new(buf: Bytes) -> Self {
        let start = buf.len();
        CompactReader {
            buf,
            start,
            depth: 0,
            last_ids: IdStack::default(),
            last_id: 0,
            pending_bool: None,
        }
    }

    fn varint(&mut self) -> Result<u64, DecodeError> {
        let mut v = 0u64;
        for shift in (0..64).step_by(7) {
            need(&self.buf, 1)?;
            let b = self.buf.get_u8();
            v |= u64::from(b & 0x7f) << shift;
            if b & 0x80 == 0 {
                return Ok(v);
            }
        }
        Err(DecodeError::Invalid("varint longer than 10 bytes"))
    }

    fn zigzag(&mut self) -> Result<i64, DecodeError> {
        let v = self.varint()?;
        Ok((v >> 1) as i64 ^ -((v & 1) as i64))
    }

    fn u8(&mut self) -> Result<u8, DecodeError> {
        need(&self.buf, 1)?;
        Ok(self.buf.get_u8())
    }

    fn length(&mut self) -> Result<usize, DecodeError> {
        let n = self.varint()?;
        checked_len(i64::try_from(n).unwrap_or(i64::MAX), self.buf.len())
    }

    /// Reads a message header as [`read_message_begin`](ProtocolRead::read_message_begin)
    /// does, checking the same, but steps over the method name instead of taking it (no
    /// view of the input, no UTF-8 check). The type and sequence id.
    pub fn skip_message_begin(&mut self) -> Result<(MessageType, i32), DecodeError> {
        let (_, kind, seq_id) = self.message_begin(false)?;
        Ok((kind, seq_id))
    }

    /// Reads a message header: 0x82, type and version, varint sequence id, name. The name
    /// is taken if `take_name` (`None` if not: its bytes are stepped over).
    #[inline(always)]
    fn message_begin(
        &mut self,
        take_name: bool,
    ) -> Result<(Option<ByteString>, MessageType, i32), DecodeError> {
        if self.u8()? != PROTOCOL_ID {
            return Err(DecodeError::BadMessageHeader(
                "not the compact protocol (0x82)",
            ));
        }
        let b = self.u8()?;
        if b & VERSION_MASK != VERSION {
            return Err(DecodeError::BadMessageHeader(
                "unknown compact protocol version",
            ));
        }
        let kind = MessageType::from_u8(b >> TYPE_SHIFT)
            .ok_or(DecodeError::BadMessageHeader("unknown message type"))?;
        let seq_id = self.varint()? as u32 as i32;
        let n = self.length()?;
        Ok((
            name(&mut self.buf, n, take_name, "UTF-8 in a string")?,
            kind,
            seq_id,
        ))
    }
}

impl ProtocolRead for CompactReader {
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
        enter(&mut self.depth)?;
        if !self.last_ids.push(self.last_id) {
            return Err(DecodeError::DepthLimit);
        }
        self.last_id = 0;
        Ok(())
    }
    fn read_struct_end(&mut self) -> Result<(), DecodeError> {
        leave(&mut self.depth);
        self.last_id = self.last_ids.pop();
        Ok(())
    }
    fn read_field_begin(&mut self) -> Result<Option<FieldHeader>, DecodeError> {
        let b = self.u8()?;
        let ttype = TType::from_compact_id(b & 0x0f)?;
        if ttype == TType::Stop {
            return Ok(None);
        }
        let delta = i16::from(b >> 4);
        let id = if delta == 0 {
            i16::try_from(self.zigzag()?).map_err(|_| DecodeError::Invalid("field id"))?
        } else {
            self.last_id.wrapping_add(delta)
        };
        self.last_id = id;
        if ttype == TType::Bool {
            self.pending_bool = Some(b & 0x0f == BOOL_TRUE);
        }
        Ok(Some(FieldHeader { ttype, id }))
    }
    fn read_bool(&mut self) -> Result<bool, DecodeError> {
        match self.pending_bool.take() {
            Some(v) => Ok(v),
            None => Ok(self.u8()? == BOOL_TRUE),
        }
    }
    fn read_i8(&mut self) -> Result<i8, DecodeError> {
        Ok(self.u8()? as i8)
    }
    fn read_i16(&mut self) -> Result<i16, DecodeError> {
        i16::try_from(self.zigzag()?).map_err(|_| DecodeError::Invalid("i16 out of range"))
    }
    fn read_i32(&mut self) -> Result<i32, DecodeError> {
        i32::try_from(self.zigzag()?).map_err(|_| DecodeError::Invalid("i32 out of range"))
    }
    fn read_i64(&mut self) -> Result<i64, DecodeError> {
        self.zigzag()
    }
    fn read_double(&mut self) -> Result<f64, DecodeError> {
        need(&self.buf, 8)?;
        Ok(self.buf.get_f64_le())
    }
    fn read_binary(&mut self) -> Result<Bytes, DecodeError> {
        let n = self.length()?;
        Ok(self.buf.split_to(n))
    }
    fn read_uuid(&mut self) -> Result<[u8; 16], DecodeError> {
        need(&self.buf, 16)?;
        let mut out = [0u8; 16];
        self.buf.copy_to_slice(&mut out);
        Ok(out)
    }
    fn read_list_begin(&mut self) -> Result<ListHeader, DecodeError> {
        let b = self.u8()?;
        let elem = TType::from_compact_id(b & 0x0f)?;
        let len = if b >> 4 == 15 {
            self.length()?
        } else {
            checked_len(i64::from(b >> 4), self.buf.len())?
        };
        Ok(ListHeader { elem, len })
    }
    fn read_map_begin(&mut self) -> Result<MapHeader, DecodeError> {
        let n = self.varint()?;
        // Each entry takes at least two bytes.
        let len = checked_len(i64::try_from(n).unwrap_or(i64::MAX), self.buf.len() / 2)?;
        if len == 0 {
            return Ok(MapHeader {
                key: TType::Stop,
                value: TType::Stop,
                len,
            });
        }
        let b = self.u8()?;
        Ok(MapHeader {
            key: TType::from_compact_id(b >> 4)?,
            value: TType::from_compact_id(b & 0x0f)?,
            len,
        })
    }
}

/// Writes the compact protocol into any [`BufMut`] (by default its own [`BytesMut`]).
#[derive(Debug)]
pub struct CompactWriter<B: BufMut = BytesMut> {
    /// Where the bytes go.
    pub buf: B,
    last_ids: IdStack,
    last_id: i16,
    pending_bool_field: Option<i16>,
}

impl Default for CompactWriter {
    fn default() -> Self {
        CompactWriter::new(BytesMut::new())
    }
}

impl<B: BufMut> CompactWriter<B> {
    /// A writer appending to `buf`.
    pub fn new(buf: B) -> Self {
        CompactWriter {
            buf,
            last_ids: IdStack::default(),
            last_id: 0,
            pending_bool_field: None,
        }
    }

    fn varint(&mut self, mut v: u64) {
        while v >= 0x80 {
            self.buf.put_u8((v as u8) | 0x80);
            v >>= 7;
        }
        self.buf.put_u8(v as u8);
    }

    fn zigzag(&mut self, v: i64) {
        self.varint(((v << 1) ^ (v >> 63)) as u64);
    }

    fn field_header(&mut self, type_id: u8, id: i16) {
        let delta = id.wrapping_sub(self.last_id);
        if id > self.last_id && delta <= 15 {
            self.buf.put_u8(((delta as u8) << 4) | type_id);
        } else {
            self.buf.put_u8(type_id);
            self.zigzag(i64::from(id));
        }
        self.last_id = id;
    }

    fn length(&mut self, len: usize) -> Result<(), EncodeError> {
        let len = i32::try_from(len).map_err(|_| EncodeError::TooLong)?;
        self.varint(len as u64);
        Ok(())
    }
}

impl<B: BufMut> ProtocolWrite for CompactWriter<B> {
    fn write_message_begin(&mut self, h: &MessageHeader) -> Result<(), EncodeError> {
        self.buf.put_u8(PROTOCOL_ID);
        self.buf.put_u8(((h.kind as u8) << TYPE_SHIFT) | VERSION);
        self.varint(u64::from(h.seq_id as u32));
        self.write_string(&h.name)
    }
    fn write_struct_begin(&mut self, _: &'static str) -> Result<(), EncodeError> {
        if !self.last_ids.push(self.last_id) {
            return Err(EncodeError::TooDeep);
        }
        self.last_id = 0;
        Ok(())
    }
    fn write_struct_end(&mut self) -> Result<(), EncodeError> {
        self.last_id = self.last_ids.pop();
        Ok(())
    }
    fn write_field_begin(&mut self, ttype: TType, id: i16) -> Result<(), EncodeError> {
        if ttype == TType::Bool {
            self.pending_bool_field = Some(id);
        } else {
            self.field_header(ttype.compact_id(), id);
        }
        Ok(())
    }
    fn write_field_stop(&mut self) -> Result<(), EncodeError> {
        self.buf.put_u8(0);
        Ok(())
    }
    fn write_bool(&mut self, v: bool) -> Result<(), EncodeError> {
        let type_id = if v { BOOL_TRUE } else { BOOL_FALSE };
        match self.pending_bool_field.take() {
            Some(id) => self.field_header(type_id, id),
            None => self.buf.put_u8(type_id),
        }
        Ok(())
    }
    fn write_i8(&mut self, v: i8) -> Result<(), EncodeError> {
        self.buf.put_i8(v);
        Ok(())
    }
    fn write_i16(&mut self, v: i16) -> Result<(), EncodeError> {
        self.zigzag(i64::from(v));
        Ok(())
    }
    fn write_i32(&mut self, v: i32) -> Result<(), EncodeError> {
        self.zigzag(i64::from(v));
        Ok(())
    }
    fn write_i64(&mut self, v: i64) -> Result<(), EncodeError> {
        self.zigzag(v);
        Ok(())
    }
    fn write_double(&mut self, v: f64) -> Result<(), EncodeError> {
        self.buf.put_f64_le(v);
        Ok(())
    }
    fn write_binary(&mut self, v: &[u8]) -> Result<(), EncodeError> {
        self.length(v.len())?;
        self.buf.put_slice(v);
        Ok(())
    }
    fn write_uuid(&mut self, v: &[u8; 16]) -> Result<(), EncodeError> {
        self.buf.put_slice(v);
        Ok(())
    }
    fn write_list_begin(&mut self, h: ListHeader) -> Result<(), EncodeError> {
        if h.len < 15 {
            self.buf.put_u8(((h.len as u8) << 4) | h.elem.compact_id());
            Ok(())
        } else {
            self.buf.put_u8(0xf0 | h.elem.compact_id());
            self.length(h.len)
        }
    }
    fn write_map_begin(&mut self, h: MapHeader) -> Result<(), EncodeError> {
        self.length(h.len)?;
        if h.len > 0 {
            self.buf
                .put_u8((h.key.compact_id() << 4) | h.value.compact_id());
        }
        Ok(())
    }
}

/// Encoded sizes in the compact protocol (which depend on field-id deltas, so this tracks
/// them like the writer does).
#[derive(Debug, Default, Clone)]
pub struct CompactLen {
    last_ids: IdStack,
    last_id: i16,
    pending_bool_field: Option<i16>,
}

fn varint_len(mut v: u64) -> usize {
    let mut n = 1;
    while v >= 0x80 {
        v >>= 7;
        n += 1;
    }
    n
}

fn zigzag_len(v: i64) -> usize {
    varint_len(((v << 1) ^ (v >> 63)) as u64)
}

impl CompactLen {
    fn header(&mut self, id: i16) -> usize {
        let delta = id.wrapping_sub(self.last_id);
        let n = if id > self.last_id && delta <= 15 {
            1
        } else {
            1 + zigzag_len(i64::from(id))
        };
        self.last_id = id;
        n
    }
}

impl ProtocolLen for CompactLen {
    fn message_begin_len(&mut self, h: &MessageHeader) -> usize {
        2 + varint_len(u64::from(h.seq_id as u32)) + varint_len(h.name.len() as u64) + h.name.len()
    }
    fn struct_begin_len(&mut self, _: &'static str) -> usize {
        // Past the writer's limit the writer fails; the size no longer matters then.
        let _ = self.last_ids.push(self.last_id);
        self.last_id = 0;
        0
    }
    fn struct_end_len(&mut self) -> usize {
        self.last_id = self.last_ids.pop();
        0
    }
    fn field_begin_len(&mut self, ttype: TType, id: i16) -> usize {
        if ttype == TType::Bool {
            self.pending_bool_field = Some(id);
            0
        } else {
            self.header(id)
        }
    }
    fn bool_len(&mut self, _: bool) -> usize {
        match self.pending_bool_field.take() {
            Some(id) => self.header(id),
            None => 1,
        }
    }
    fn i16_len(&mut self, v: i16) -> usize {
        zigzag_len(i64::from(v))
    }
    fn i32_len(&mut self, v: i32) -> usize {
        zigzag_len(i64::from(v))
    }
    fn i64_len(&mut self, v: i64) -> usize {
        zigzag_len(v)
    }
    fn binary_len(&mut self, v: &[u8]) -> usize {
        varint_len(v.len() as u64) + v.len()
    }
    fn list_begin_len(&mut self, h: ListHeader) -> usize {
        if h.len < 15 {
            1
        } else {
            1 + varint_len(h.len as u64)
        }
    }
    fn map_begin_len(&mut self, h: MapHeader) -> usize {
        varint_len(h.len as u64) + usize::from(h.len > 0)
    }
}
