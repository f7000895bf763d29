//! The Thrift binary and compact protocols, decoded in place from [`Bytes`].
//!
//! Generated code (from `codec-build`) implements [`Message`] for each struct, union and
//! exception, generically over three traits with one implementation per protocol:
//!
//! * [`ProtocolRead`] ([`BinaryReader`], [`CompactReader`]) reads from a [`Bytes`]: strings and
//!   binaries come out as zero-copy views of it; every length and count is checked against
//!   the bytes left before it is used; nesting is limited ([`MAX_DEPTH`]).
//! * [`ProtocolWrite`] ([`BinaryWriter`], [`CompactWriter`]) writes into any [`BufMut`], such
//!   as a connection's `BytesMut` write buffer.
//! * [`ProtocolLen`] ([`BinaryLen`], [`CompactLen`]) computes the exact encoded size, call for
//!   call, so a frame can be reserved once and its length prefix filled in place.
//!
//! [`BufMut`]: bytes::BufMut

use bytes::Bytes;

mod app_exception;
mod binary;
mod compact;
mod error;
mod message;

pub use app_exception::{ApplicationException, ApplicationExceptionKind};
pub use binary::{BinaryLen, BinaryReader, BinaryWriter};
pub use compact::{CompactLen, CompactReader, CompactWriter};
pub use error::{DecodeError, EncodeError};
pub use message::{MessageHeader, MessageType};

use crate::ByteString;

/// Nesting depth (structs, lists, sets, maps) a reader accepts.
pub const MAX_DEPTH: usize = 64;

/// Thrift wire types.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum TType {
    /// End of a struct's fields.
    Stop,
    /// `bool`.
    Bool,
    /// `byte` / `i8`.
    I8,
    /// `double`.
    Double,
    /// `i16`.
    I16,
    /// `i32` (and enums).
    I32,
    /// `i64`.
    I64,
    /// `string` and `binary`.
    Binary,
    /// A struct, union or exception.
    Struct,
    /// `map<K, V>`.
    Map,
    /// `set<T>`.
    Set,
    /// `list<T>`.
    List,
    /// `uuid` (16 bytes).
    Uuid,
}

impl TType {
    pub(crate) fn binary_id(self) -> u8 {
        match self {
            TType::Stop => 0,
            TType::Bool => 2,
            TType::I8 => 3,
            TType::Double => 4,
            TType::I16 => 6,
            TType::I32 => 8,
            TType::I64 => 10,
            TType::Binary => 11,
            TType::Struct => 12,
            TType::Map => 13,
            TType::Set => 14,
            TType::List => 15,
            TType::Uuid => 16,
        }
    }

    pub(crate) fn from_binary_id(id: u8) -> Result<Self, DecodeError> {
        Ok(match id {
            0 => TType::Stop,
            2 => TType::Bool,
            3 => TType::I8,
            4 => TType::Double,
            6 => TType::I16,
            8 => TType::I32,
            10 => TType::I64,
            11 => TType::Binary,
            12 => TType::Struct,
            13 => TType::Map,
            14 => TType::Set,
            15 => TType::List,
            16 => TType::Uuid,
            _ => return Err(DecodeError::Invalid("binary protocol type id")),
        })
    }

    pub(crate) fn compact_id(self) -> u8 {
        match self {
            TType::Stop => 0,
            TType::Bool => 1,
            TType::I8 => 3,
            TType::I16 => 4,
            TType::I32 => 5,
            TType::I64 => 6,
            TType::Double => 7,
            TType::Binary => 8,
            TType::List => 9,
            TType::Set => 10,
            TType::Map => 11,
            TType::Struct => 12,
            TType::Uuid => 13,
        }
    }

    pub(crate) fn from_compact_id(id: u8) -> Result<Self, DecodeError> {
        Ok(match id {
            0 => TType::Stop,
            1 | 2 => TType::Bool,
            3 => TType::I8,
            4 => TType::I16,
            5 => TType::I32,
            6 => TType::I64,
            7 => TType::Double,
            8 => TType::Binary,
            9 => TType::List,
            10 => TType::Set,
            11 => TType::Map,
            12 => TType::Struct,
            13 => TType::Uuid,
            _ => return Err(DecodeError::Invalid("compact protocol type id")),
        })
    }
}

/// A struct field's header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FieldHeader {
    /// The value's wire type.
    pub ttype: TType,
    /// The field id.
    pub id: i16,
}

/// A list's or set's header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ListHeader {
    /// The elements' wire type.
    pub elem: TType,
    /// Number of elements (already checked against the bytes left when read).
    pub len: usize,
}

/// A map's header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MapHeader {
    /// The keys' wire type.
    pub key: TType,
    /// The values' wire type.
    pub value: TType,
    /// Number of entries (already checked against the bytes left when read).
    pub len: usize,
}

/// Fails when a non-empty container's element type is not the expected one.
pub fn expect_elem(found: TType, expected: TType, len: usize) -> Result<(), DecodeError> {
    if len == 0 || found == expected {
        Ok(())
    } else {
        Err(DecodeError::UnexpectedElemType { expected, found })
    }
}

/// A bound for `Vec::with_capacity` when decoding `len` elements: never more than the
/// bytes left, since every element takes at least one byte.
pub fn capacity_hint(len: usize, remaining: usize) -> usize {
    len.min(remaining)
}

/// A capacity for a collection about to receive `len` decoded elements of type `T` with
/// `remaining` bytes left in the frame: no more elements than bytes left (every element
/// takes at least one byte on the wire), and no more memory than those bytes, however
/// large `T` is in memory. A collection that needs more grows as elements arrive.
pub fn capacity_for<T>(len: usize, remaining: usize) -> usize {
    len.min(remaining / std::mem::size_of::<T>().max(1))
}

/// A type that encodes to and decodes from Thrift, in either protocol.
pub trait Message: Sized {
    /// Decodes one value.
    fn decode<R: ProtocolRead>(r: &mut R) -> Result<Self, DecodeError>;
    /// Encodes the value.
    fn encode<W: ProtocolWrite>(&self, w: &mut W) -> Result<(), EncodeError>;
    /// The exact number of bytes [`encode`](Message::encode) writes with the matching writer.
    fn encoded_len<L: ProtocolLen>(&self, l: &mut L) -> usize;
}

/// Reads Thrift values from an in-memory buffer.
pub trait ProtocolRead {
    /// Bytes left to read.
    fn remaining(&self) -> usize;
    /// Bytes read so far (for error reports).
    fn position(&self) -> usize;
    /// Reads a message header.
    fn read_message_begin(&mut self) -> Result<MessageHeader, DecodeError>;
    /// Ends a message.
    fn read_message_end(&mut self) -> Result<(), DecodeError> {
        Ok(())
    }
    /// Starts a struct (counts towards the depth limit).
    fn read_struct_begin(&mut self) -> Result<(), DecodeError>;
    /// Ends a struct.
    fn read_struct_end(&mut self) -> Result<(), DecodeError>;
    /// The next field's header, or `None` at the end of the struct.
    fn read_field_begin(&mut self) -> Result<Option<FieldHeader>, DecodeError>;
    /// Ends a field.
    fn read_field_end(&mut self) -> Result<(), DecodeError> {
        Ok(())
    }
    /// Reads a `bool`.
    fn read_bool(&mut self) -> Result<bool, DecodeError>;
    /// Reads an `i8`.
    fn read_i8(&mut self) -> Result<i8, DecodeError>;
    /// Reads an `i16`.
    fn read_i16(&mut self) -> Result<i16, DecodeError>;
    /// Reads an `i32`.
    fn read_i32(&mut self) -> Result<i32, DecodeError>;
    /// Reads an `i64`.
    fn read_i64(&mut self) -> Result<i64, DecodeError>;
    /// Reads a `double`.
    fn read_double(&mut self) -> Result<f64, DecodeError>;
    /// Reads a `binary`: a zero-copy view of the input.
    fn read_binary(&mut self) -> Result<Bytes, DecodeError>;
    /// Reads a `uuid`.
    fn read_uuid(&mut self) -> Result<[u8; 16], DecodeError>;
    /// Reads a `string`: validated UTF-8, a zero-copy view of the input.
    fn read_string(&mut self) -> Result<ByteString, DecodeError> {
        ByteString::from_utf8(self.read_binary()?).ok_or(DecodeError::Invalid("UTF-8 in a string"))
    }
    /// Starts a list.
    fn read_list_begin(&mut self) -> Result<ListHeader, DecodeError>;
    /// Ends a list.
    fn read_list_end(&mut self) -> Result<(), DecodeError> {
        Ok(())
    }
    /// Starts a set.
    fn read_set_begin(&mut self) -> Result<ListHeader, DecodeError> {
        self.read_list_begin()
    }
    /// Ends a set.
    fn read_set_end(&mut self) -> Result<(), DecodeError> {
        Ok(())
    }
    /// Starts a map.
    fn read_map_begin(&mut self) -> Result<MapHeader, DecodeError>;
    /// Ends a map.
    fn read_map_end(&mut self) -> Result<(), DecodeError> {
        Ok(())
    }
    /// The current nesting depth, for the limit.
    fn depth(&mut self) -> &mut usize;

    /// Skips one value of type `ttype`, however deeply nested (within the depth limit).
    fn skip(&mut self, ttype: TType) -> Result<(), DecodeError> {
        match ttype {
            TType::Stop => return Err(DecodeError::Invalid("STOP where a value was expected")),
            TType::Bool => drop(self.read_bool()?),
            TType::I8 => drop(self.read_i8()?),
            TType::I16 => drop(self.read_i16()?),
            TType::I32 => drop(self.read_i32()?),
            TType::I64 => drop(self.read_i64()?),
            TType::Double => drop(self.read_double()?),
            TType::Binary => drop(self.read_binary()?),
            TType::Uuid => drop(self.read_uuid()?),
            TType::Struct => {
                self.read_struct_begin()?;
                while let Some(f) = self.read_field_begin()? {
                    self.skip(f.ttype)?;
                    self.read_field_end()?;
                }
                self.read_struct_end()?;
            }
            TType::List | TType::Set => {
                let h = self.read_list_begin()?;
                enter(self.depth())?;
                for _ in 0..h.len {
                    self.skip(h.elem)?;
                }
                leave(self.depth());
            }
            TType::Map => {
                let h = self.read_map_begin()?;
                enter(self.depth())?;
                for _ in 0..h.len {
                    self.skip(h.key)?;
                    self.skip(h.value)?;
                }
                leave(self.depth());
            }
        }
        Ok(())
    }

    /// Fails if any byte is left after a complete message.
    fn expect_end(&self) -> Result<(), DecodeError> {
        match self.remaining() {
            0 => Ok(()),
            n => Err(DecodeError::TrailingBytes(n)),
        }
    }
}

pub(crate) fn enter(depth: &mut usize) -> Result<(), DecodeError> {
    *depth += 1;
    if *depth > MAX_DEPTH {
        Err(DecodeError::DepthLimit)
    } else {
        Ok(())
    }
}

pub(crate) fn leave(depth: &mut usize) {
    *depth = depth.saturating_sub(1);
}

/// Writes Thrift values.
pub trait ProtocolWrite {
    /// Writes a message header.
    fn write_message_begin(&mut self, header: &MessageHeader) -> Result<(), EncodeError>;
    /// Ends a message.
    fn write_message_end(&mut self) -> Result<(), EncodeError> {
        Ok(())
    }
    /// Starts a struct.
    fn write_struct_begin(&mut self, name: &'static str) -> Result<(), EncodeError>;
    /// Ends a struct.
    fn write_struct_end(&mut self) -> Result<(), EncodeError>;
    /// Starts a field.
    fn write_field_begin(&mut self, ttype: TType, id: i16) -> Result<(), EncodeError>;
    /// Ends a field.
    fn write_field_end(&mut self) -> Result<(), EncodeError> {
        Ok(())
    }
    /// Ends a struct's fields.
    fn write_field_stop(&mut self) -> Result<(), EncodeError>;
    /// Writes a `bool`.
    fn write_bool(&mut self, v: bool) -> Result<(), EncodeError>;
    /// Writes an `i8`.
    fn write_i8(&mut self, v: i8) -> Result<(), EncodeError>;
    /// Writes an `i16`.
    fn write_i16(&mut self, v: i16) -> Result<(), EncodeError>;
    /// Writes an `i32`.
    fn write_i32(&mut self, v: i32) -> Result<(), EncodeError>;
    /// Writes an `i64`.
    fn write_i64(&mut self, v: i64) -> Result<(), EncodeError>;
    /// Writes a `double`.
    fn write_double(&mut self, v: f64) -> Result<(), EncodeError>;
    /// Writes a `binary`.
    fn write_binary(&mut self, v: &[u8]) -> Result<(), EncodeError>;
    /// Writes a `uuid`.
    fn write_uuid(&mut self, v: &[u8; 16]) -> Result<(), EncodeError>;
    /// Writes a `string`.
    fn write_string(&mut self, v: &str) -> Result<(), EncodeError> {
        self.write_binary(v.as_bytes())
    }
    /// Starts a list.
    fn write_list_begin(&mut self, h: ListHeader) -> Result<(), EncodeError>;
    /// Ends a list.
    fn write_list_end(&mut self) -> Result<(), EncodeError> {
        Ok(())
    }
    /// Starts a set.
    fn write_set_begin(&mut self, h: ListHeader) -> Result<(), EncodeError> {
        self.write_list_begin(h)
    }
    /// Ends a set.
    fn write_set_end(&mut self) -> Result<(), EncodeError> {
        Ok(())
    }
    /// Starts a map.
    fn write_map_begin(&mut self, h: MapHeader) -> Result<(), EncodeError>;
    /// Ends a map.
    fn write_map_end(&mut self) -> Result<(), EncodeError> {
        Ok(())
    }
}

/// Computes encoded sizes, mirroring [`ProtocolWrite`] call for call.
pub trait ProtocolLen {
    /// Size of a message header.
    fn message_begin_len(&mut self, header: &MessageHeader) -> usize;
    /// Size of a struct's start.
    fn struct_begin_len(&mut self, name: &'static str) -> usize;
    /// Size of a struct's end.
    fn struct_end_len(&mut self) -> usize;
    /// Size of a field header.
    fn field_begin_len(&mut self, ttype: TType, id: i16) -> usize;
    /// Size of a field's end.
    fn field_end_len(&mut self) -> usize {
        0
    }
    /// Size of the STOP marker.
    fn field_stop_len(&mut self) -> usize {
        1
    }
    /// Size of a `bool` (in compact, of the field header it folds into).
    fn bool_len(&mut self, v: bool) -> usize;
    /// Size of an `i8`.
    fn i8_len(&mut self, _: i8) -> usize {
        1
    }
    /// Size of an `i16`.
    fn i16_len(&mut self, v: i16) -> usize;
    /// Size of an `i32`.
    fn i32_len(&mut self, v: i32) -> usize;
    /// Size of an `i64`.
    fn i64_len(&mut self, v: i64) -> usize;
    /// Size of a `double`.
    fn double_len(&mut self, _: f64) -> usize {
        8
    }
    /// Size of a `binary`.
    fn binary_len(&mut self, v: &[u8]) -> usize;
    /// Size of a `uuid`.
    fn uuid_len(&mut self, _: &[u8; 16]) -> usize {
        16
    }
    /// Size of a `string`.
    fn string_len(&mut self, v: &str) -> usize {
        self.binary_len(v.as_bytes())
    }
    /// Size of a list header.
    fn list_begin_len(&mut self, h: ListHeader) -> usize;
    /// Size of a list's end.
    fn list_end_len(&mut self) -> usize {
        0
    }
    /// Size of a set header.
    fn set_begin_len(&mut self, h: ListHeader) -> usize {
        self.list_begin_len(h)
    }
    /// Size of a set's end.
    fn set_end_len(&mut self) -> usize {
        0
    }
    /// Size of a map header.
    fn map_begin_len(&mut self, h: MapHeader) -> usize;
    /// Size of a map's end.
    fn map_end_len(&mut self) -> usize {
        0
    }
}

/// Checks that `n` bytes remain in `buf`.
pub(crate) fn need(buf: &[u8], n: usize) -> Result<(), DecodeError> {
    if buf.len() < n {
        Err(DecodeError::Eof)
    } else {
        Ok(())
    }
}

/// The next `n` bytes of `buf` (checked to be there), a method name: taken if `take`,
/// else stepped over (no view, no UTF-8 check). `what` names the check that failed if a
/// taken name is not UTF-8.
#[inline(always)]
pub(crate) fn name(
    buf: &mut Bytes,
    n: usize,
    take: bool,
    what: &'static str,
) -> Result<Option<ByteString>, DecodeError> {
    if take {
        ByteString::from_utf8(buf.split_to(n))
            .map(Some)
            .ok_or(DecodeError::Invalid(what))
    } else {
        bytes::Buf::advance(buf, n);
        Ok(None)
    }
}

/// A wire length or count as `usize`, checked against the bytes left: every element or
/// byte it promises must fit in what remains, so nothing is allocated for lies.
pub(crate) fn checked_len(n: i64, remaining: usize) -> Result<usize, DecodeError> {
    let n = usize::try_from(n).map_err(|_| DecodeError::Invalid("negative length"))?;
    if n > remaining {
        return Err(DecodeError::Eof);
    }
    Ok(n)
}

#[cfg(test)]
mod capacity_tests {
    use super::*;

    /// Finding 15 of the soundness review: the bound was on the element count only, so a
    /// 16 MiB frame could make a decoder reserve 16M elements of a large struct
    /// (gigabytes). It is now on the memory.
    #[test]
    fn preallocation_never_exceeds_the_bytes_left() {
        let remaining = 16 << 20;
        assert_eq!(capacity_for::<u8>(usize::MAX, remaining), remaining);
        let n = capacity_for::<[u8; 256]>(usize::MAX, remaining);
        assert!(n * 256 <= remaining);
        assert_eq!(capacity_for::<u64>(3, remaining), 3);
        assert_eq!(capacity_for::<()>(10, 5), 5);
    }
}
