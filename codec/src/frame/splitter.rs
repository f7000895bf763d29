//! [`Splitter`]: finds frames in a connection's input incrementally. Length-prefixed
//! protocols need no memory between calls; unframed ("Buffered") Thrift ends where its
//! message ends, so the splitter walks the message as bytes arrive and remembers where it
//! stopped. Each byte is examined once, however the message is cut into segments: a peer
//! trickling a large message a byte at a time costs a little per byte, not a re-parse of
//! everything received so far.

use super::{be32, split, FrameError, Protocol, Split};
use crate::thrift::{DecodeError, MessageType, TType, MAX_DEPTH};

/// Finds whole frames for one connection, remembering partial progress between calls.
///
/// Call [`split`](Splitter::split) with the connection's unconsumed input each time more
/// has arrived. The input must start at the same byte until a frame is returned (it may
/// only grow); after [`Split::Frame`] the next call starts at the next frame.
#[derive(Debug, Default, Clone)]
pub struct Splitter {
    scan: Scan,
}

impl Splitter {
    /// Finds the first whole frame of `protocol` in `buf`, refusing frames over
    /// `max_frame` bytes as soon as that is known.
    pub fn split(
        &mut self,
        protocol: Protocol,
        buf: &[u8],
        max_frame: usize,
    ) -> Result<Split, FrameError> {
        match protocol {
            Protocol::BufferedBinary => self.scan.run(buf, max_frame, false),
            Protocol::BufferedCompact => self.scan.run(buf, max_frame, true),
            _ => split(protocol, buf, max_frame),
        }
    }
}

/// What the walk is waiting to read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Step {
    /// The message header.
    Header,
    /// The next token of the container on top of the stack.
    Next,
    /// A value of this type (its field header or container slot was already read).
    Value(TType),
}

/// A container being walked.
#[derive(Debug, Clone, Copy)]
enum Level {
    /// A struct: field headers until STOP. `last_id` is the compact protocol's delta base.
    Struct { last_id: i16 },
    /// A list or set with `left` elements of `elem` still to walk.
    List { elem: TType, left: usize },
    /// A map with `left` entries still to walk; `value` when the key was walked.
    Map {
        key: TType,
        val: TType,
        left: usize,
        value: bool,
    },
}

#[derive(Debug, Clone)]
struct Scan {
    /// Bytes of the message walked so far.
    pos: usize,
    step: Step,
    stack: Vec<Level>,
}

impl Default for Scan {
    fn default() -> Self {
        Scan {
            pos: 0,
            step: Step::Header,
            stack: Vec::new(),
        }
    }
}

/// Why the walk stopped short of a whole message.
enum Stop {
    /// At least this many bytes (from the message's start) are needed.
    Need(usize),
    Bad(DecodeError),
}

impl From<DecodeError> for Stop {
    fn from(e: DecodeError) -> Stop {
        Stop::Bad(e)
    }
}

/// A varint at `at`: `Ok((value, length))`, or how many bytes are needed.
fn varint(b: &[u8], at: usize) -> Result<(u64, usize), Stop> {
    let mut v = 0u64;
    for i in 0..10 {
        let Some(&byte) = b.get(at + i) else {
            return Err(Stop::Need(at + i + 1));
        };
        v |= u64::from(byte & 0x7f) << (7 * i);
        if byte & 0x80 == 0 {
            return Ok((v, i + 1));
        }
    }
    Err(Stop::Bad(DecodeError::Invalid(
        "varint longer than 10 bytes",
    )))
}

fn length(n: i64) -> Result<usize, Stop> {
    usize::try_from(n).map_err(|_| Stop::Bad(DecodeError::Invalid("negative length")))
}

/// Bytes every value of `t` takes, when that is fixed.
fn fixed_size(t: TType, compact: bool) -> Option<usize> {
    match t {
        TType::Bool | TType::I8 => Some(1),
        TType::Double => Some(8),
        TType::Uuid => Some(16),
        TType::I16 if !compact => Some(2),
        TType::I32 if !compact => Some(4),
        TType::I64 if !compact => Some(8),
        _ => None,
    }
}

impl Scan {
    fn reset(&mut self) {
        self.pos = 0;
        self.step = Step::Header;
        self.stack.clear();
    }

    fn run(&mut self, buf: &[u8], max_frame: usize, compact: bool) -> Result<Split, FrameError> {
        if buf.len() < self.pos {
            // Not the input this walk began on: start over.
            self.reset();
        }
        let result = self.walk(buf, max_frame, compact);
        match result {
            Ok(n) if n > max_frame => {
                self.reset();
                Err(FrameError::TooLarge {
                    size: n,
                    max: max_frame,
                })
            }
            Ok(n) => {
                self.reset();
                Ok(Split::Frame(n))
            }
            Err(Stop::Need(n)) if n > max_frame => {
                self.reset();
                Err(FrameError::TooLarge {
                    size: n,
                    max: max_frame,
                })
            }
            // The message is at least this long; where it ends is not known yet.
            Err(Stop::Need(n)) => Ok(Split::NeedMore(n)),
            Err(Stop::Bad(e)) => {
                self.reset();
                Err(FrameError::Malformed(e))
            }
        }
    }

    /// Walks on from `pos`; every token is taken whole or not at all.
    fn walk(&mut self, b: &[u8], max: usize, compact: bool) -> Result<usize, Stop> {
        loop {
            match self.step {
                Step::Header => {
                    self.pos = if compact {
                        compact_header(b)?
                    } else {
                        binary_header(b)?
                    };
                    self.enter(Level::Struct { last_id: 0 })?;
                    self.step = Step::Next;
                }
                Step::Next => {
                    let Some(top) = self.stack.last_mut() else {
                        return Ok(self.pos);
                    };
                    match top {
                        Level::Struct { last_id } => {
                            let at = self.pos;
                            let Some(&t) = b.get(at) else {
                                return Err(Stop::Need(at + 1));
                            };
                            if compact {
                                let ttype = TType::from_compact_id(t & 0x0f)?;
                                if ttype == TType::Stop {
                                    self.pos += 1;
                                    self.stack.pop();
                                    continue;
                                }
                                let delta = i16::from(t >> 4);
                                let (id, n) = if delta == 0 {
                                    let (v, n) = varint(b, at + 1)?;
                                    let z = (v >> 1) as i64 ^ -((v & 1) as i64);
                                    let id = i16::try_from(z)
                                        .map_err(|_| DecodeError::Invalid("field id"))?;
                                    (id, 1 + n)
                                } else {
                                    (last_id.wrapping_add(delta), 1)
                                };
                                *last_id = id;
                                self.pos += n;
                                // A bool field's value is in its header.
                                if ttype != TType::Bool {
                                    self.step = Step::Value(ttype);
                                }
                            } else {
                                let ttype = TType::from_binary_id(t)?;
                                if ttype == TType::Stop {
                                    self.pos += 1;
                                    self.stack.pop();
                                    continue;
                                }
                                if b.len() < at + 3 {
                                    return Err(Stop::Need(at + 3));
                                }
                                self.pos += 3;
                                self.step = Step::Value(ttype);
                            }
                        }
                        Level::List { elem, left } => {
                            if *left == 0 {
                                self.stack.pop();
                                continue;
                            }
                            *left -= 1;
                            self.step = Step::Value(*elem);
                        }
                        Level::Map {
                            key,
                            val,
                            left,
                            value,
                        } => {
                            if *value {
                                *value = false;
                                self.step = Step::Value(*val);
                            } else if *left == 0 {
                                self.stack.pop();
                            } else {
                                *left -= 1;
                                *value = true;
                                self.step = Step::Value(*key);
                            }
                        }
                    }
                }
                Step::Value(t) => {
                    self.value(b, t, max, compact)?;
                    if matches!(self.step, Step::Value(_)) {
                        self.step = Step::Next;
                    }
                }
            }
        }
    }

    fn enter(&mut self, level: Level) -> Result<(), Stop> {
        if self.stack.len() >= MAX_DEPTH {
            return Err(Stop::Bad(DecodeError::DepthLimit));
        }
        self.stack.push(level);
        Ok(())
    }

    /// Takes one value of type `t` at `pos`, or opens its container.
    fn value(&mut self, b: &[u8], t: TType, max: usize, compact: bool) -> Result<(), Stop> {
        let at = self.pos;
        let need = |n: usize| -> Result<(), Stop> {
            if b.len() < n {
                Err(Stop::Need(n))
            } else {
                Ok(())
            }
        };
        match t {
            TType::Stop => {
                return Err(Stop::Bad(DecodeError::Invalid(
                    "STOP where a value was expected",
                )))
            }
            TType::Struct => {
                self.enter(Level::Struct { last_id: 0 })?;
                self.step = Step::Next;
            }
            TType::Binary => {
                let (len, head) = if compact {
                    let (v, n) = varint(b, at)?;
                    (length(i64::try_from(v).unwrap_or(i64::MAX))?, n)
                } else {
                    let Some(v) = be32(b, at) else {
                        return Err(Stop::Need(at + 4));
                    };
                    (length(i64::from(v as i32))?, 4)
                };
                let end = (at + head).saturating_add(len);
                need(end)?;
                self.pos = end;
            }
            TType::List | TType::Set => {
                let (elem, count, head) = if compact {
                    let Some(&h) = b.get(at) else {
                        return Err(Stop::Need(at + 1));
                    };
                    let elem = TType::from_compact_id(h & 0x0f)?;
                    if h >> 4 == 15 {
                        let (v, n) = varint(b, at + 1)?;
                        (elem, length(i64::try_from(v).unwrap_or(i64::MAX))?, 1 + n)
                    } else {
                        (elem, usize::from(h >> 4), 1)
                    }
                } else {
                    need(at + 5)?;
                    let elem = TType::from_binary_id(b[at])?;
                    let n = be32(b, at + 1).unwrap_or(0) as i32;
                    (elem, length(i64::from(n))?, 5)
                };
                let start = at + head;
                match fixed_size(elem, compact) {
                    // Elements of fixed size are skipped at once.
                    Some(size) => {
                        let end = start.saturating_add(count.saturating_mul(size));
                        if end > max {
                            return Err(Stop::Need(end));
                        }
                        need(end)?;
                        self.pos = end;
                    }
                    None => {
                        if count > 0 && elem == TType::Stop {
                            return Err(Stop::Bad(DecodeError::Invalid(
                                "STOP where a value was expected",
                            )));
                        }
                        // Every element takes at least a byte.
                        if start.saturating_add(count) > max {
                            return Err(Stop::Need(start.saturating_add(count)));
                        }
                        self.pos = start;
                        self.enter(Level::List { elem, left: count })?;
                        self.step = Step::Next;
                    }
                }
            }
            TType::Map => {
                let (key, val, count, head) = if compact {
                    let (v, n) = varint(b, at)?;
                    let count = length(i64::try_from(v).unwrap_or(i64::MAX))?;
                    if count == 0 {
                        (TType::Stop, TType::Stop, 0, n)
                    } else {
                        let Some(&kv) = b.get(at + n) else {
                            return Err(Stop::Need(at + n + 1));
                        };
                        (
                            TType::from_compact_id(kv >> 4)?,
                            TType::from_compact_id(kv & 0x0f)?,
                            count,
                            n + 1,
                        )
                    }
                } else {
                    need(at + 6)?;
                    let key = TType::from_binary_id(b[at])?;
                    let val = TType::from_binary_id(b[at + 1])?;
                    let n = be32(b, at + 2).unwrap_or(0) as i32;
                    (key, val, length(i64::from(n))?, 6)
                };
                let start = at + head;
                // Every entry takes at least two bytes.
                let least = start.saturating_add(count.saturating_mul(2));
                if least > max {
                    return Err(Stop::Need(least));
                }
                self.pos = start;
                self.enter(Level::Map {
                    key,
                    val,
                    left: count,
                    value: false,
                })?;
                self.step = Step::Next;
            }
            TType::I16 | TType::I32 | TType::I64 if compact => {
                let (_, n) = varint(b, at)?;
                self.pos = at + n;
            }
            _ => {
                let size = fixed_size(t, compact).unwrap_or(1);
                need(at + size)?;
                self.pos = at + size;
            }
        }
        Ok(())
    }
}

/// The binary message header's length (strict or versionless), or what is needed.
fn binary_header(b: &[u8]) -> Result<usize, Stop> {
    let Some(first) = be32(b, 0) else {
        return Err(Stop::Need(4));
    };
    let len_at = |at: usize| -> Result<usize, Stop> {
        match be32(b, at) {
            Some(n) => length(i64::from(n as i32)),
            None => Err(Stop::Need(at + 4)),
        }
    };
    if first & 0x8000_0000 != 0 {
        if first & 0xffff_0000 != 0x8001_0000 {
            return Err(Stop::Bad(DecodeError::BadMessageHeader(
                "unknown binary protocol version",
            )));
        }
        if MessageType::from_u8((first & 0xff) as u8).is_none() {
            return Err(Stop::Bad(DecodeError::BadMessageHeader(
                "unknown message type",
            )));
        }
        let name = len_at(4)?;
        let end = 8usize.saturating_add(name).saturating_add(4);
        if b.len() < end {
            return Err(Stop::Need(end));
        }
        Ok(end)
    } else {
        let name = length(i64::from(first as i32))?;
        let end = 4usize.saturating_add(name).saturating_add(5);
        if b.len() < end {
            return Err(Stop::Need(end));
        }
        if MessageType::from_u8(b[4 + name]).is_none() {
            return Err(Stop::Bad(DecodeError::BadMessageHeader(
                "unknown message type",
            )));
        }
        Ok(end)
    }
}

/// The compact message header's length, or what is needed.
fn compact_header(b: &[u8]) -> Result<usize, Stop> {
    let Some(&id) = b.first() else {
        return Err(Stop::Need(1));
    };
    if id != 0x82 {
        return Err(Stop::Bad(DecodeError::BadMessageHeader(
            "not the compact protocol (0x82)",
        )));
    }
    let Some(&vt) = b.get(1) else {
        return Err(Stop::Need(2));
    };
    if vt & 0x1f != 1 {
        return Err(Stop::Bad(DecodeError::BadMessageHeader(
            "unknown compact protocol version",
        )));
    }
    if MessageType::from_u8(vt >> 5).is_none() {
        return Err(Stop::Bad(DecodeError::BadMessageHeader(
            "unknown message type",
        )));
    }
    let (_, seq) = varint(b, 2)?;
    let (name, n) = varint(b, 2 + seq)?;
    let name = length(i64::try_from(name).unwrap_or(i64::MAX))?;
    let end = (2 + seq + n).saturating_add(name);
    if b.len() < end {
        return Err(Stop::Need(end));
    }
    Ok(end)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::thrift::{
        BinaryWriter, CompactWriter, ListHeader, MapHeader, MessageHeader, ProtocolWrite,
    };
    use bytes::BytesMut;

    /// A message whose body holds a bit of everything, in `compact` or binary.
    fn message(compact: bool) -> Vec<u8> {
        fn body<W: ProtocolWrite>(w: &mut W) {
            let h = MessageHeader {
                name: crate::ByteString::from_static("method"),
                kind: MessageType::Call,
                seq_id: 300,
            };
            w.write_message_begin(&h).unwrap();
            w.write_struct_begin("S").unwrap();
            w.write_field_begin(TType::Binary, 1).unwrap();
            w.write_binary(&[7u8; 1000]).unwrap();
            w.write_field_end().unwrap();
            w.write_field_begin(TType::Bool, 2).unwrap();
            w.write_bool(true).unwrap();
            w.write_field_end().unwrap();
            w.write_field_begin(TType::List, 40).unwrap();
            w.write_list_begin(ListHeader {
                elem: TType::I64,
                len: 3,
            })
            .unwrap();
            for v in [1i64, -1, 1 << 40] {
                w.write_i64(v).unwrap();
            }
            w.write_list_end().unwrap();
            w.write_field_end().unwrap();
            w.write_field_begin(TType::Map, 41).unwrap();
            w.write_map_begin(MapHeader {
                key: TType::Binary,
                value: TType::Struct,
                len: 2,
            })
            .unwrap();
            for k in ["a", "b"] {
                w.write_binary(k.as_bytes()).unwrap();
                w.write_struct_begin("S").unwrap();
                w.write_field_begin(TType::I32, 1).unwrap();
                w.write_i32(-5).unwrap();
                w.write_field_end().unwrap();
                w.write_field_stop().unwrap();
                w.write_struct_end().unwrap();
            }
            w.write_map_end().unwrap();
            w.write_field_end().unwrap();
            w.write_field_begin(TType::Set, 300).unwrap();
            w.write_set_begin(ListHeader {
                elem: TType::Struct,
                len: 2,
            })
            .unwrap();
            for _ in 0..2 {
                w.write_struct_begin("S").unwrap();
                w.write_field_stop().unwrap();
                w.write_struct_end().unwrap();
            }
            w.write_list_end().unwrap();
            w.write_field_end().unwrap();
            w.write_field_stop().unwrap();
            w.write_struct_end().unwrap();
            w.write_message_end().unwrap();
        }
        let mut out = BytesMut::new();
        if compact {
            body(&mut CompactWriter::new(&mut out));
        } else {
            body(&mut BinaryWriter::new(&mut out));
        }
        out.to_vec()
    }

    #[test]
    fn every_cut_of_a_message_finds_the_same_frame() {
        for compact in [false, true] {
            let protocol = if compact {
                Protocol::BufferedCompact
            } else {
                Protocol::BufferedBinary
            };
            let mut m = message(compact);
            let len = m.len();
            m.extend_from_slice(&message(compact)[..10]); // the next message begins
                                                          // Fed one byte at a time, the frame is found exactly when it is whole.
            let mut s = Splitter::default();
            for n in 0..len {
                match s.split(protocol, &m[..n], 1 << 20).unwrap() {
                    Split::NeedMore(need) => {
                        assert!(need > n && need <= len, "compact={compact} at {n}: {need}")
                    }
                    other => panic!("compact={compact} at {n}: {other:?}"),
                }
            }
            assert_eq!(s.split(protocol, &m, 1 << 20).unwrap(), Split::Frame(len));
            // All at once, and agreeing with the one-shot split.
            assert_eq!(
                Splitter::default().split(protocol, &m, 1 << 20).unwrap(),
                Split::Frame(len)
            );
        }
    }

    #[test]
    fn a_declared_size_over_the_limit_is_refused_before_it_arrives() {
        // A string declared just under 16 MiB, with a 1 MiB limit.
        let mut m = vec![0x80, 0x01, 0x00, 0x01, 0, 0, 0, 1, b'm', 0, 0, 0, 1];
        m.extend_from_slice(&[11, 0, 1]);
        m.extend_from_slice(&(16_000_000u32).to_be_bytes());
        let err = Splitter::default()
            .split(Protocol::BufferedBinary, &m, 1 << 20)
            .unwrap_err();
        assert!(matches!(err, FrameError::TooLarge { .. }), "{err:?}");
    }

    #[test]
    fn a_whole_message_over_the_limit_is_refused_too() {
        let m = message(false);
        let err = Splitter::default()
            .split(Protocol::BufferedBinary, &m, m.len() - 1)
            .unwrap_err();
        assert!(matches!(err, FrameError::TooLarge { .. }), "{err:?}");
    }

    #[test]
    fn malformed_input_is_an_error() {
        let m = [0x80, 0x01, 0x00, 0x01, 0, 0, 0, 1, b'm', 0, 0, 0, 1, 0x7f];
        assert!(matches!(
            Splitter::default().split(Protocol::BufferedBinary, &m, 1 << 20),
            Err(FrameError::Malformed(_))
        ));
        let deep: Vec<u8> = [0x80, 0x01, 0x00, 0x01, 0, 0, 0, 1, b'm', 0, 0, 0, 1]
            .into_iter()
            .chain(std::iter::repeat_n([12u8, 0, 1], 100).flatten())
            .collect();
        assert!(matches!(
            Splitter::default().split(Protocol::BufferedBinary, &deep, 1 << 20),
            Err(FrameError::Malformed(DecodeError::DepthLimit))
        ));
    }

    /// Finding 3 of the soundness review: splitting a Buffered message copied and
    /// re-parsed everything received on every segment. Growing a 16 MiB message 1 KiB at a
    /// time examined ~128 GiB; now each byte is walked once.
    #[test]
    fn growing_a_large_message_costs_linear_time() {
        // A list of 1M small structs (5 bytes each: field header, i8, stop), 5 MiB.
        let mut m = vec![0x80, 0x01, 0x00, 0x01, 0, 0, 0, 1, b'm', 0, 0, 0, 1];
        let n = 1usize << 20;
        m.extend_from_slice(&[15, 0, 1, 12]);
        m.extend_from_slice(&(n as u32).to_be_bytes());
        for _ in 0..n {
            m.extend_from_slice(&[3, 0, 1, 9, 0]);
        }
        m.push(0);
        let mut s = Splitter::default();
        let start = std::time::Instant::now();
        let mut at = 0;
        while at < m.len() {
            at = (at + 1024).min(m.len());
            let r = s
                .split(Protocol::BufferedBinary, &m[..at], 16 << 20)
                .unwrap();
            if at < m.len() {
                assert!(matches!(r, Split::NeedMore(n) if n > at), "{r:?}");
            } else {
                assert_eq!(r, Split::Frame(m.len()));
            }
        }
        let took = start.elapsed();
        // A re-parse per segment would be ~5,000 walks of up to 5 MiB; linear is a few ms.
        assert!(took < std::time::Duration::from_secs(2), "took {took:?}");
    }
}
