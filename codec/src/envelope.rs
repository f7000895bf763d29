//! Messages in their frames: how a call arrived (its [`Envelope`]), parsing a whole frame
//! down to its body, and writing a message in the same shape, for servers (replies) and
//! clients (calls). Also the in-place peeks a client needs to match replies to calls.
//!
//! Every transport and payload combination Kitex, Volo and Apache Thrift use is covered:
//! Framed and Buffered Thrift (binary or compact), TTHeader with a bare or length-prefixed
//! payload (Thrift binary, compact, or Kitex Protobuf), and Kitex Protobuf on its own.

use bytes::{Bytes, BytesMut};

use crate::frame::{self, FrameError, KitexPbHeader, PayloadProtocol, TTHeader, TTHeaderBuilder};
use crate::thrift::{
    BinaryReader, BinaryWriter, CompactReader, CompactWriter, DecodeError, EncodeError, Message,
    MessageHeader, MessageType, ProtocolRead, ProtocolWrite,
};
use crate::ByteString;

/// How messages are delimited on a connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Transport {
    /// A 4-byte length, then the message.
    Framed,
    /// The message alone (Apache's buffered transport).
    Buffered,
    /// Kitex's TTHeader; `framed_payload`: the payload carries its own 4-byte length.
    TTHeader {
        /// Whether the payload has its own 4-byte length (`TTHeader|Framed`).
        framed_payload: bool,
    },
    /// Kitex Protobuf's own framing (a 4-byte length, then magic 0x9001).
    KitexProtobuf,
    /// A framing plugged in by the application (the number says which): messages are
    /// written alone here, and the framing wraps them.
    Custom(u16),
}

/// What the message is encoded with.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Payload {
    /// Strict binary Thrift.
    ThriftBinary,
    /// Compact Thrift.
    ThriftCompact,
    /// A Kitex Protobuf message (header, then the protobuf body).
    Protobuf,
}

impl Payload {
    /// Whether the payload is Thrift (binary or compact).
    pub fn is_thrift(self) -> bool {
        !matches!(self, Payload::Protobuf)
    }
}

/// How one call arrived, which is how its reply must be framed: the transport and payload
/// encoding, the method, and the sequence ids.
#[derive(Debug, Clone)]
pub struct Envelope {
    /// The transport.
    pub transport: Transport,
    /// The payload encoding.
    pub payload: Payload,
    /// The method name.
    pub method: ByteString,
    /// The message's sequence id (Thrift or Kitex Protobuf header).
    pub seq_id: i32,
    /// The TTHeader sequence number (equal to `seq_id` for other transports).
    pub header_seq: i32,
    /// `Call` or `Oneway` for a request.
    pub kind: MessageType,
}

/// Headers written into a TTHeader frame (ignored by other transports).
#[derive(Debug, Clone, Copy, Default)]
pub struct Headers<'a> {
    /// TTHeader flags (0x0001: replies may come out of order).
    pub flags: u16,
    /// Integer-keyed headers.
    pub ints: &'a [(u16, &'a [u8])],
    /// String-keyed headers.
    pub strs: &'a [(&'a str, &'a [u8])],
}

/// Why a frame is not a request or reply this side can read.
#[derive(Debug)]
pub enum WireError {
    /// The frame's framing or header is invalid: the connection cannot continue.
    Frame(FrameError),
    /// The message header is invalid.
    Header(DecodeError),
}

impl std::fmt::Display for WireError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            WireError::Frame(e) => write!(f, "bad frame: {e}"),
            WireError::Header(e) => write!(f, "bad message header: {e}"),
        }
    }
}

impl std::error::Error for WireError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            WireError::Frame(e) => Some(e),
            WireError::Header(e) => Some(e),
        }
    }
}

/// A whole message, parsed down to its body.
#[derive(Debug)]
pub struct Parsed {
    /// How it arrived.
    pub envelope: Envelope,
    /// The body: the Thrift struct after the message header, or the protobuf message.
    pub body: Bytes,
    /// The TTHeader, when the transport is TTHeader (for its key/value headers).
    pub ttheader: Option<TTHeader>,
}

/// A reply as a client that matched it by sequence id reads it: the message type, the
/// payload encoding and the body, from a whole frame of `protocol`. The same checks as
/// [`parse`], without taking the method name (no view of it, no UTF-8 check) or keeping
/// the TTHeader.
pub fn open_reply(
    protocol: frame::Protocol,
    frame: Bytes,
) -> Result<(MessageType, Payload, Bytes), WireError> {
    unframe(protocol, frame, |_, payload, message, _| match payload {
        Payload::ThriftBinary => {
            let mut r = BinaryReader::new(message);
            let (kind, _) = r.skip_message_begin().map_err(WireError::Header)?;
            Ok((kind, payload, r.buf))
        }
        Payload::ThriftCompact => {
            let mut r = CompactReader::new(message);
            let (kind, _) = r.skip_message_begin().map_err(WireError::Header)?;
            Ok((kind, payload, r.buf))
        }
        Payload::Protobuf => {
            let (h, body) = pb_header(message)?;
            Ok((h.kind, payload, body))
        }
    })
}

/// Parses a whole frame of `protocol` (as [`frame::split`] delimited it).
pub fn parse(protocol: frame::Protocol, frame: Bytes) -> Result<Parsed, WireError> {
    unframe(protocol, frame, parse_in)
}

/// A frame of `protocol` taken apart down to its message, handed to `then`: how it came,
/// its payload encoding, the message, and its TTHeader if it has one. (Handed on, not
/// returned: a returned TTHeader would be copied on its way out.)
#[inline(always)]
fn unframe<R>(
    protocol: frame::Protocol,
    frame: Bytes,
    then: impl FnOnce(Transport, Payload, Bytes, Option<TTHeader>) -> Result<R, WireError>,
) -> Result<R, WireError> {
    use frame::Protocol as P;
    // The frame is ours: its length is stepped over in place, not sliced off (a slice is
    // a reference-count increment on the receive buffer, and its drop another).
    let after_length = |mut f: Bytes| {
        if f.len() < 4 {
            Err(WireError::Frame(FrameError::BadLength(f.len())))
        } else {
            bytes::Buf::advance(&mut f, 4);
            Ok(f)
        }
    };
    let (transport, payload, message, tt) = match protocol {
        P::FramedBinary => (
            Transport::Framed,
            Payload::ThriftBinary,
            after_length(frame)?,
            None,
        ),
        P::FramedCompact => (
            Transport::Framed,
            Payload::ThriftCompact,
            after_length(frame)?,
            None,
        ),
        P::BufferedBinary => (Transport::Buffered, Payload::ThriftBinary, frame, None),
        P::BufferedCompact => (Transport::Buffered, Payload::ThriftCompact, frame, None),
        P::KitexProtobuf => (
            Transport::KitexProtobuf,
            Payload::Protobuf,
            after_length(frame)?,
            None,
        ),
        P::TTHeader => {
            let tt = TTHeader::parse(frame).map_err(WireError::Frame)?;
            let payload = match tt.payload_protocol() {
                PayloadProtocol::ThriftBinary => Payload::ThriftBinary,
                PayloadProtocol::ThriftCompact => Payload::ThriftCompact,
                PayloadProtocol::KitexProtobuf => Payload::Protobuf,
            };
            let transport = Transport::TTHeader {
                framed_payload: tt.payload_framed(),
            };
            (transport, payload, tt.message(), Some(tt))
        }
        P::Http2 => {
            return Err(WireError::Frame(FrameError::Unsupported(
                "HTTP/2 (gRPC) is not served yet",
            )))
        }
    };
    then(transport, payload, message, tt)
}

/// Parses a message taken out of its frame by a framing of the application's own
/// ([`Transport::Custom`]): a Thrift message (binary or compact) or a Kitex Protobuf message
/// without its length.
pub fn parse_message(
    transport: Transport,
    payload: Payload,
    message: Bytes,
) -> Result<Parsed, WireError> {
    parse_in(transport, payload, message, None)
}

fn parse_in(
    transport: Transport,
    payload: Payload,
    message: Bytes,
    tt: Option<TTHeader>,
) -> Result<Parsed, WireError> {
    let (header, body) = match payload {
        Payload::ThriftBinary => {
            let mut r = BinaryReader::new(message);
            (read_begin(&mut r)?, r.buf)
        }
        Payload::ThriftCompact => {
            let mut r = CompactReader::new(message);
            (read_begin(&mut r)?, r.buf)
        }
        Payload::Protobuf => pb_header(message)?,
    };
    let header_seq = tt.as_ref().map_or(header.seq_id, |t| t.seq_id());
    Ok(Parsed {
        envelope: Envelope {
            transport,
            payload,
            method: header.name,
            seq_id: header.seq_id,
            header_seq,
            kind: header.kind,
        },
        body,
        ttheader: tt,
    })
}

/// Reads a Thrift message header; what the reader has left is the body.
fn read_begin<R: ProtocolRead>(r: &mut R) -> Result<MessageHeader, WireError> {
    r.read_message_begin().map_err(WireError::Header)
}

/// A Kitex Protobuf message without its length: magic, type, name, sequence id, body.
fn pb_header(m: Bytes) -> Result<(MessageHeader, Bytes), WireError> {
    let (h, body) = KitexPbHeader::parse_message(m).map_err(WireError::Frame)?;
    Ok((
        MessageHeader {
            name: h.method,
            kind: h.kind,
            seq_id: h.seq_id,
        },
        body,
    ))
}

/// Decodes a Thrift body (the struct after the message header) and checks that nothing
/// follows it.
pub fn decode_thrift<M: Message>(payload: Payload, body: Bytes) -> Result<M, DecodeError> {
    fn run<M: Message, R: ProtocolRead>(mut r: R) -> Result<M, DecodeError> {
        let m = M::decode(&mut r)?;
        r.read_message_end()?;
        r.expect_end()?;
        Ok(m)
    }
    match payload {
        Payload::ThriftCompact => run(CompactReader::new(body)),
        _ => run(BinaryReader::new(body)),
    }
}

/// Where a message being written started, to finish its lengths.
struct Open {
    start: usize,
    inner: Option<usize>,
}

fn begin(env: &Envelope, out: &mut BytesMut, h: &Headers<'_>) -> Result<Open, FrameError> {
    let start = out.len();
    let inner = match env.transport {
        Transport::Framed | Transport::KitexProtobuf => {
            frame::reserve_length(out);
            None
        }
        Transport::Buffered | Transport::Custom(_) => None,
        Transport::TTHeader { framed_payload } => {
            let b = TTHeaderBuilder {
                seq_id: env.header_seq,
                flags: h.flags,
                protocol_id: match env.payload {
                    Payload::ThriftBinary => 0,
                    Payload::ThriftCompact => 2,
                    Payload::Protobuf => 4,
                },
                ints: h.ints,
                strs: h.strs,
            };
            b.begin(out)?;
            framed_payload.then(|| frame::reserve_length(out))
        }
    };
    Ok(Open { start, inner })
}

fn end(env: &Envelope, out: &mut BytesMut, open: Open) -> Result<(), FrameError> {
    if let Some(at) = open.inner {
        frame::patch_length(out, at)?;
    }
    match env.transport {
        Transport::Framed | Transport::KitexProtobuf => frame::patch_length(out, open.start),
        Transport::Buffered | Transport::Custom(_) => Ok(()),
        Transport::TTHeader { .. } => TTHeaderBuilder::finish(out, open.start),
    }
}

/// Why a message could not be written.
#[derive(Debug)]
pub enum WriteError {
    /// The Thrift value cannot be encoded (a length beyond the protocol's limits).
    Encode(EncodeError),
    /// The frame is too long for its length field.
    Frame(FrameError),
    /// A Protobuf message on a Thrift envelope or the other way round.
    WrongPayload,
}

impl std::fmt::Display for WriteError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            WriteError::Encode(e) => write!(f, "cannot encode: {e}"),
            WriteError::Frame(e) => write!(f, "cannot frame: {e}"),
            WriteError::WrongPayload => f.write_str("message of the wrong IDL for this call"),
        }
    }
}

impl std::error::Error for WriteError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            WriteError::Encode(e) => Some(e),
            WriteError::Frame(e) => Some(e),
            WriteError::WrongPayload => None,
        }
    }
}

/// Appends one whole Thrift message of type `kind` with `body` in `env`'s shape. On error
/// `out` is left as it was.
pub fn write_thrift<M: Message>(
    env: &Envelope,
    out: &mut BytesMut,
    kind: MessageType,
    body: &M,
    h: &Headers<'_>,
) -> Result<(), WriteError> {
    let start = out.len();
    let r = write_thrift_inner(env, out, kind, body, h);
    if r.is_err() {
        out.truncate(start);
    }
    r
}

fn write_thrift_inner<M: Message>(
    env: &Envelope,
    out: &mut BytesMut,
    kind: MessageType,
    body: &M,
    h: &Headers<'_>,
) -> Result<(), WriteError> {
    fn msg<W: ProtocolWrite, M: Message>(
        mut w: W,
        header: &MessageHeader,
        body: &M,
    ) -> Result<(), EncodeError> {
        w.write_message_begin(header)?;
        body.encode(&mut w)?;
        w.write_message_end()
    }
    let header = MessageHeader {
        name: env.method.clone(),
        kind,
        seq_id: env.seq_id,
    };
    let open = begin(env, out, h).map_err(WriteError::Frame)?;
    match env.payload {
        Payload::ThriftBinary => msg(BinaryWriter::new(&mut *out), &header, body),
        Payload::ThriftCompact => msg(CompactWriter::new(&mut *out), &header, body),
        Payload::Protobuf => return Err(WriteError::WrongPayload),
    }
    .map_err(WriteError::Encode)?;
    end(env, out, open).map_err(WriteError::Frame)
}

/// Appends one whole Kitex Protobuf message of type `kind` with `body` in `env`'s shape.
/// On error `out` is left as it was.
pub fn write_pb<M: prost::Message>(
    env: &Envelope,
    out: &mut BytesMut,
    kind: MessageType,
    body: &M,
    h: &Headers<'_>,
) -> Result<(), WriteError> {
    if env.payload != Payload::Protobuf {
        return Err(WriteError::WrongPayload);
    }
    let start = out.len();
    let r = (|| {
        let open = begin(env, out, h).map_err(WriteError::Frame)?;
        let header = KitexPbHeader {
            kind,
            method: env.method.clone(),
            seq_id: env.seq_id,
        };
        header.write_message_header(out, body.encoded_len());
        // The reservation above makes the encode infallible.
        body.encode(out)
            .map_err(|_| WriteError::Frame(FrameError::BadLength(body.encoded_len())))?;
        end(env, out, open).map_err(WriteError::Frame)
    })();
    if r.is_err() {
        out.truncate(start);
    }
    r
}

/// The sequence id of a whole reply frame of `protocol`, read in place: what a client
/// matches replies to calls by. For TTHeader, its own sequence number (as Kitex
/// multiplexes); for the others, the message header's.
pub fn peek_seq_id(protocol: frame::Protocol, frame: &[u8]) -> Result<i32, &'static str> {
    use frame::Protocol as P;
    match protocol {
        P::TTHeader => be32(frame, 8).map(|v| v as i32),
        P::KitexProtobuf => {
            KitexPbHeader::peek_seq_id(frame).ok_or("truncated Kitex Protobuf header")
        }
        P::FramedCompact => compact_seq(frame.get(4..).ok_or("short frame")?),
        P::FramedBinary => binary_seq(frame.get(4..).ok_or("short frame")?),
        P::BufferedCompact => compact_seq(frame),
        P::BufferedBinary => binary_seq(frame),
        P::Http2 => Err("HTTP/2 frames carry no Thrift sequence id"),
    }
}

fn be32(b: &[u8], at: usize) -> Result<u32, &'static str> {
    frame::be32(b, at).ok_or("truncated message header")
}

/// The sequence id of a binary message header: strict (`0x8001xxxx`, name, seq) or
/// versionless (name, type byte, seq).
fn binary_seq(m: &[u8]) -> Result<i32, &'static str> {
    let first = be32(m, 0)?;
    let at = if first & 0x8000_0000 != 0 {
        8usize.saturating_add(be32(m, 4)? as usize)
    } else {
        (first as usize).saturating_add(5)
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::thrift::{ApplicationException, ApplicationExceptionKind};
    use crate::ByteString;

    fn env(protocol: frame::Protocol) -> Envelope {
        let (transport, payload) = match protocol {
            frame::Protocol::FramedBinary => (Transport::Framed, Payload::ThriftBinary),
            frame::Protocol::FramedCompact => (Transport::Framed, Payload::ThriftCompact),
            frame::Protocol::BufferedBinary => (Transport::Buffered, Payload::ThriftBinary),
            frame::Protocol::BufferedCompact => (Transport::Buffered, Payload::ThriftCompact),
            _ => (Transport::KitexProtobuf, Payload::Protobuf),
        };
        Envelope {
            transport,
            payload,
            method: ByteString::from_static("m"),
            seq_id: 41,
            header_seq: 41,
            kind: MessageType::Call,
        }
    }

    #[test]
    fn thrift_messages_round_trip_in_every_shape() {
        use frame::Protocol as P;
        let e = ApplicationException::new(ApplicationExceptionKind::InternalError, "x");
        for p in [
            P::FramedBinary,
            P::FramedCompact,
            P::BufferedBinary,
            P::BufferedCompact,
        ] {
            let env = env(p);
            let mut out = BytesMut::new();
            write_thrift(
                &env,
                &mut out,
                MessageType::Exception,
                &e,
                &Headers::default(),
            )
            .unwrap();
            assert_eq!(
                frame::split(p, &out, 1 << 20).unwrap(),
                frame::Split::Frame(out.len())
            );
            let parsed = parse(p, out.freeze()).unwrap();
            assert_eq!(parsed.envelope.seq_id, 41);
            assert_eq!(&*parsed.envelope.method, "m");
            let back: ApplicationException =
                decode_thrift(parsed.envelope.payload, parsed.body).unwrap();
            assert_eq!(back, e);
        }
        for framed_payload in [false, true] {
            for payload in [Payload::ThriftBinary, Payload::ThriftCompact] {
                let env = Envelope {
                    transport: Transport::TTHeader { framed_payload },
                    payload,
                    header_seq: 7,
                    ..env(P::FramedBinary)
                };
                let mut out = BytesMut::new();
                let h = Headers {
                    strs: &[("crrst", b"1")],
                    ..Headers::default()
                };
                write_thrift(&env, &mut out, MessageType::Exception, &e, &h).unwrap();
                let parsed = parse(P::TTHeader, out.freeze()).unwrap();
                assert_eq!(parsed.envelope.transport, env.transport);
                assert_eq!(parsed.envelope.payload, payload);
                assert_eq!(parsed.envelope.header_seq, 7);
                assert_eq!(parsed.envelope.seq_id, 41);
                let tt = parsed.ttheader.unwrap();
                assert_eq!(tt.str_header("crrst").as_deref(), Some(&b"1"[..]));
            }
        }
    }

    #[test]
    fn sequence_ids_are_peeked_in_place_in_every_reply_shape() {
        use frame::Protocol as P;
        let e = ApplicationException::new(ApplicationExceptionKind::InternalError, "x");
        for (p, transport, payload) in [
            (P::FramedBinary, Transport::Framed, Payload::ThriftBinary),
            (P::FramedCompact, Transport::Framed, Payload::ThriftCompact),
            (
                P::BufferedBinary,
                Transport::Buffered,
                Payload::ThriftBinary,
            ),
            (
                P::BufferedCompact,
                Transport::Buffered,
                Payload::ThriftCompact,
            ),
            (
                P::TTHeader,
                Transport::TTHeader {
                    framed_payload: false,
                },
                Payload::ThriftCompact,
            ),
        ] {
            let env = Envelope {
                transport,
                payload,
                seq_id: -7,
                header_seq: -7,
                ..env(P::FramedBinary)
            };
            let mut out = BytesMut::new();
            write_thrift(
                &env,
                &mut out,
                MessageType::Exception,
                &e,
                &Headers::default(),
            )
            .unwrap();
            assert_eq!(peek_seq_id(p, &out), Ok(-7), "{p:?}");
            for cut in 0..3 {
                assert!(peek_seq_id(p, &out[..cut]).is_err(), "{p:?} cut {cut}");
            }
            // A client's reading of the reply agrees with the full parse, and a frame cut
            // anywhere in its message header is an error, as it is to the full parse.
            let full = parse(p, out.clone().freeze()).unwrap();
            let (kind, pl, body) = open_reply(p, out.clone().freeze()).unwrap();
            assert_eq!(
                (kind, pl, body),
                (full.envelope.kind, full.envelope.payload, full.body),
                "{p:?}"
            );
            let body_at = out.len() - full_body_len(&out, p);
            for cut in 0..body_at {
                let frame = Bytes::copy_from_slice(&out[..cut]);
                assert_eq!(
                    open_reply(p, frame.clone()).is_err(),
                    parse(p, frame).is_err(),
                    "{p:?} cut {cut}"
                );
            }
        }
        let env = Envelope {
            transport: Transport::KitexProtobuf,
            payload: Payload::Protobuf,
            seq_id: 1 << 30,
            ..env(P::FramedBinary)
        };
        let mut out = BytesMut::new();
        let body = frame::ErrorProto {
            type_id: 1,
            message: "m".into(),
        };
        write_pb(
            &env,
            &mut out,
            MessageType::Exception,
            &body,
            &Headers::default(),
        )
        .unwrap();
        assert_eq!(peek_seq_id(P::KitexProtobuf, &out), Ok(1 << 30));
    }

    /// The length of the body of the whole message in `out`.
    fn full_body_len(out: &BytesMut, p: frame::Protocol) -> usize {
        parse(p, Bytes::copy_from_slice(out)).unwrap().body.len()
    }

    #[test]
    fn timeouts_are_written_as_kitex_does_and_read_both_ways() {
        use std::time::Duration;
        for ms in [7u64, 1000, 123_456_789, u64::MAX] {
            let v = frame::TimeoutValue::new(Duration::from_millis(ms));
            assert_eq!(v.as_bytes(), ms.to_string().as_bytes());
            assert_eq!(
                frame::decode_timeout(v.as_bytes()),
                Some(Duration::from_millis(ms))
            );
        }
        // 0 is "no timeout"; a timeout under a millisecond is sent as 1 ms, not 0.
        assert_eq!(frame::TimeoutValue::new(Duration::ZERO).as_bytes(), b"0");
        assert_eq!(frame::decode_timeout(b"0"), None);
        assert_eq!(
            frame::TimeoutValue::new(Duration::from_micros(300)).as_bytes(),
            b"1"
        );
        // Volo may send a raw big-endian integer.
        assert_eq!(
            frame::decode_timeout(&[0x01, 0x00]),
            Some(Duration::from_millis(256))
        );
        assert_eq!(frame::decode_timeout(&[]), None);
        assert_eq!(frame::decode_timeout(&[0xff; 9]), None);
    }

    #[test]
    fn garbage_is_an_error_not_a_panic() {
        use frame::Protocol as P;
        for p in [
            P::FramedBinary,
            P::FramedCompact,
            P::BufferedBinary,
            P::KitexProtobuf,
            P::TTHeader,
        ] {
            for junk in [
                &b""[..],
                b"\x00\x00\x00\x01\xff",
                b"\x00\x00\x00\x0c\x90\x01\x00\x01\xff\xff\xff\xff\x00\x00\x00\x00",
            ] {
                assert!(
                    parse(p, Bytes::copy_from_slice(junk)).is_err(),
                    "{p:?} {junk:?}"
                );
            }
        }
    }
}
