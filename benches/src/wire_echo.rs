//! The echo service (`idl/echo.thrift`, `idl/echo.proto`) in every protocol our server and
//! Kitex-compatible peers speak: Thrift (binary or compact) over Framed, Buffered or
//! TTHeader, and Kitex Protobuf. Requests are written straight into the connection's
//! output and replies are checked in place: no allocation per call.

use std::ops::Range;

use bytes::{BufMut, BytesMut};
use netpoll_codec::frame::{self, int_key, Protocol as Wire, Split, TTHeaderBuilder};

use crate::protocol::{Decoded, Protocol, ReplyError};

/// How Thrift echo calls are framed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ThriftTransport {
    /// A 4-byte length, then the message.
    Framed,
    /// The message alone.
    Buffered,
    /// TTHeader with Kitex's metadata headers, then the bare message.
    TTHeader,
}

/// `Echo.echo` in Thrift.
#[derive(Debug, Clone, Copy)]
pub struct ThriftEcho {
    /// The framing.
    pub transport: ThriftTransport,
    /// Compact instead of binary.
    pub compact: bool,
    /// Largest reply accepted.
    pub max_frame: usize,
}

fn varint(out: &mut BytesMut, mut v: u64) {
    while v >= 0x80 {
        out.put_u8(v as u8 | 0x80);
        v >>= 7;
    }
    out.put_u8(v as u8);
}

fn read_varint(b: &[u8], at: &mut usize) -> Result<u64, ReplyError> {
    let mut v = 0u64;
    for shift in (0..64).step_by(7) {
        let byte = *b
            .get(*at)
            .ok_or_else(|| ReplyError("truncated varint".into()))?;
        *at += 1;
        v |= u64::from(byte & 0x7f) << shift;
        if byte & 0x80 == 0 {
            return Ok(v);
        }
    }
    Err(ReplyError("varint too long".into()))
}

fn be32(b: &[u8], at: usize) -> Result<u32, ReplyError> {
    b.get(at..at + 4)
        .map(|s| u32::from_be_bytes([s[0], s[1], s[2], s[3]]))
        .ok_or_else(|| ReplyError("truncated reply".into()))
}

/// A reply message's kind, sequence id and echoed payload (or exception text).
struct ThriftReply {
    kind: u8,
    seq: u32,
    body: Range<usize>,
}

impl ThriftEcho {
    fn wire(&self) -> Wire {
        match (self.transport, self.compact) {
            (ThriftTransport::TTHeader, _) => Wire::TTHeader,
            (ThriftTransport::Framed, false) => Wire::FramedBinary,
            (ThriftTransport::Framed, true) => Wire::FramedCompact,
            (ThriftTransport::Buffered, false) => Wire::BufferedBinary,
            (ThriftTransport::Buffered, true) => Wire::BufferedCompact,
        }
    }

    fn message(&self, seq: u32, payload: &[u8], out: &mut BytesMut) {
        if self.compact {
            out.put_u8(0x82);
            out.put_u8(0x21); // CALL, version 1
            varint(out, u64::from(seq));
            varint(out, 4);
            out.put_slice(b"echo");
            out.put_u8(0x18); // field 1, binary
            varint(out, payload.len() as u64);
            out.put_slice(payload);
            out.put_u8(0);
        } else {
            out.put_u32(0x8001_0001);
            out.put_u32(4);
            out.put_slice(b"echo");
            out.put_u32(seq);
            out.put_u8(11);
            out.put_i16(1);
            out.put_u32(payload.len() as u32);
            out.put_slice(payload);
            out.put_u8(0);
        }
    }

    /// Reads the message at `m[at..]`; for a REPLY the range of field 0's bytes, for an
    /// EXCEPTION the range of its message text.
    fn read_message(&self, m: &[u8], mut at: usize) -> Result<ThriftReply, ReplyError> {
        let bad = |what: &str| ReplyError(format!("bad echo reply: {what}"));
        let (kind, seq) = if self.compact {
            if m.get(at) != Some(&0x82) {
                return Err(bad("not a compact message"));
            }
            let kind = m.get(at + 1).ok_or_else(|| bad("truncated"))? >> 5;
            at += 2;
            let seq = read_varint(m, &mut at)? as u32;
            let n = read_varint(m, &mut at)? as usize;
            at += n;
            (kind, seq)
        } else {
            let v = be32(m, at)?;
            if v >> 16 != 0x8001 {
                return Err(bad("not a strict binary message"));
            }
            let n = be32(m, at + 4)? as usize;
            at += 8 + n;
            let seq = be32(m, at)?;
            at += 4;
            ((v & 0xff) as u8, seq)
        };
        // The first field: REPLY field 0 (binary), or EXCEPTION field 1 (message, string).
        let len = if self.compact {
            let h = *m.get(at).ok_or_else(|| bad("truncated"))?;
            at += 1;
            if h & 0x0f != 8 {
                return Err(bad("first field is not binary"));
            }
            if h >> 4 == 0 {
                // Long form: a zigzag varint field id follows.
                read_varint(m, &mut at)?;
            }
            read_varint(m, &mut at)? as usize
        } else {
            if m.get(at) != Some(&11) {
                return Err(bad("first field is not binary"));
            }
            let n = be32(m, at + 3)? as usize;
            at += 7;
            n
        };
        if at + len > m.len() {
            return Err(bad("payload runs past the frame"));
        }
        Ok(ThriftReply {
            kind,
            seq,
            body: at..at + len,
        })
    }
}

impl Protocol for ThriftEcho {
    fn name(&self) -> &'static str {
        match (self.transport, self.compact) {
            (ThriftTransport::Framed, false) => "framed",
            (ThriftTransport::Framed, true) => "framed-compact",
            (ThriftTransport::Buffered, false) => "buffered",
            (ThriftTransport::Buffered, true) => "buffered-compact",
            (ThriftTransport::TTHeader, false) => "ttheader",
            (ThriftTransport::TTHeader, true) => "ttheader-compact",
        }
    }

    fn encode(&self, seq: u32, payload: &[u8], out: &mut BytesMut) {
        match self.transport {
            ThriftTransport::Buffered => self.message(seq, payload, out),
            ThriftTransport::Framed => {
                let at = frame::reserve_length(out);
                self.message(seq, payload, out);
                let _ = frame::patch_length(out, at);
            }
            ThriftTransport::TTHeader => {
                let b = TTHeaderBuilder {
                    seq_id: seq as i32,
                    flags: 0,
                    protocol_id: if self.compact { 2 } else { 0 },
                    ints: &[
                        (int_key::FROM_SERVICE, b"rpc-bench"),
                        (int_key::TO_SERVICE, b"Echo"),
                        (int_key::TO_METHOD, b"echo"),
                    ],
                    strs: &[("isn", b"Echo")],
                };
                if let Ok(start) = b.begin(out) {
                    self.message(seq, payload, out);
                    let _ = TTHeaderBuilder::finish(out, start);
                }
            }
        }
    }

    fn decode(&self, input: &[u8]) -> Result<Decoded, ReplyError> {
        let len = match frame::split(self.wire(), input, self.max_frame) {
            Ok(Split::NeedMore(n)) => return Ok(Decoded::NeedMore(n)),
            Ok(Split::Frame(n)) => n,
            Err(e) => return Err(ReplyError(e.to_string())),
        };
        let f = &input[..len];
        if self.transport == ThriftTransport::TTHeader && len < 14 {
            return Err(ReplyError("TTHeader frame shorter than its header".into()));
        }
        let (at, header_seq) = match self.transport {
            ThriftTransport::Buffered => (0, None),
            ThriftTransport::Framed => (4, None),
            ThriftTransport::TTHeader => {
                let hs = usize::from(u16::from_be_bytes([f[12], f[13]])) * 4;
                let mut at = 14 + hs;
                // TTHeader|Framed payloads carry their own length.
                if f.get(at).is_some_and(|b| *b != 0x80 && *b != 0x82) {
                    at += 4;
                }
                (at, Some(be32(f, 8)?))
            }
        };
        let r = self.read_message(f, at)?;
        match r.kind {
            2 => {}
            3 => {
                return Err(ReplyError(format!(
                    "server exception: {}",
                    String::from_utf8_lossy(&f[r.body])
                )))
            }
            k => return Err(ReplyError(format!("unexpected message type {k}"))),
        }
        if header_seq.is_some_and(|s| s != r.seq) {
            return Err(ReplyError(
                "TTHeader and message sequence ids differ".into(),
            ));
        }
        Ok(Decoded::Reply {
            len,
            seq: Some(r.seq),
            payload: r.body,
        })
    }
}

/// `Echo.Echo` in Kitex Protobuf (its own framing).
#[derive(Debug, Clone, Copy)]
pub struct KitexPbEcho {
    /// Largest reply accepted.
    pub max_frame: usize,
}

impl Protocol for KitexPbEcho {
    fn name(&self) -> &'static str {
        "kitex-protobuf"
    }

    fn encode(&self, seq: u32, payload: &[u8], out: &mut BytesMut) {
        let at = frame::reserve_length(out);
        out.put_u16(frame::KITEX_PB_MAGIC);
        out.put_u16(1);
        out.put_u32(4);
        out.put_slice(b"Echo");
        out.put_u32(seq);
        if !payload.is_empty() {
            out.put_u8(0x0a);
            varint(out, payload.len() as u64);
            out.put_slice(payload);
        }
        let _ = frame::patch_length(out, at);
    }

    fn decode(&self, input: &[u8]) -> Result<Decoded, ReplyError> {
        let len = match frame::split(Wire::KitexProtobuf, input, self.max_frame) {
            Ok(Split::NeedMore(n)) => return Ok(Decoded::NeedMore(n)),
            Ok(Split::Frame(n)) => n,
            Err(e) => return Err(ReplyError(e.to_string())),
        };
        let f = &input[..len];
        let kind = f.get(7).copied().unwrap_or(0);
        let name = be32(f, 8)? as usize;
        let seq = be32(f, 12 + name)?;
        let mut at = 16 + name;
        if kind != 2 {
            return Err(ReplyError(format!(
                "server exception (type {kind}): {}",
                String::from_utf8_lossy(f.get(at..).unwrap_or_default())
            )));
        }
        // EchoReply { bytes msg = 1 }: absent when empty.
        let payload = if at == len {
            at..at
        } else {
            if f[at] != 0x0a {
                return Err(ReplyError("unexpected protobuf field".into()));
            }
            at += 1;
            let n = read_varint(f, &mut at)? as usize;
            if at + n != len {
                return Err(ReplyError(
                    "protobuf length does not match the frame".into(),
                ));
            }
            at..at + n
        };
        Ok(Decoded::Reply {
            len,
            seq: Some(seq),
            payload,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;
    use netpoll_codec::thrift::MessageType;
    use netpoll_rpc::wire::{self, Headers, Payload};

    /// Serves one encoded request the way our server does, and returns the reply bytes.
    fn serve(request: &[u8], wire_proto: Wire) -> BytesMut {
        let parsed = wire::parse(wire_proto, Bytes::copy_from_slice(request)).expect("request");
        let mut out = BytesMut::new();
        let env = parsed.envelope;
        if env.payload == Payload::Protobuf {
            let req: examples::gen::pb::echo::EchoRequest =
                prost::Message::decode(parsed.body).unwrap();
            let reply = examples::gen::pb::echo::EchoReply { msg: req.msg };
            wire::write_pb(
                &env,
                &mut out,
                MessageType::Reply,
                &reply,
                &Headers::default(),
            )
            .unwrap();
        } else {
            let args: examples::gen::echo::EchoEchoArgs =
                wire::decode_thrift(env.payload, parsed.body).unwrap();
            let result = examples::gen::echo::EchoEchoResult {
                success: Some(args.msg),
            };
            wire::write_thrift(
                &env,
                &mut out,
                MessageType::Reply,
                &result,
                &Headers::default(),
            )
            .unwrap();
        }
        out
    }

    fn check(p: &dyn Protocol, wire_proto: Wire) {
        for payload in [&b""[..], b"hello", &[7u8; 300][..]] {
            let mut req = BytesMut::new();
            p.encode(77, payload, &mut req);
            let reply = serve(&req, wire_proto);
            for cut in [0, 1, reply.len() / 2, reply.len() - 1] {
                if let Ok(Decoded::Reply { .. }) = p.decode(&reply[..cut]) {
                    // Buffered replies can only be told complete by parsing; a prefix that
                    // parses would be a bug.
                    panic!("{}: a truncated reply decoded", p.name());
                }
            }
            match p.decode(&reply).expect("reply decodes") {
                Decoded::Reply {
                    len,
                    seq,
                    payload: r,
                } => {
                    assert_eq!(len, reply.len(), "{}", p.name());
                    assert_eq!(seq, Some(77), "{}", p.name());
                    assert_eq!(&reply[r], payload, "{}", p.name());
                }
                other => panic!("{}: {other:?}", p.name()),
            }
        }
        assert!(p.decode(b"\x00\x00\x00\x08garbage!").is_err() || p.name().starts_with("buffered"));
    }

    #[test]
    fn every_protocol_round_trips_through_a_server_reply() {
        let max_frame = 1 << 20;
        for compact in [false, true] {
            for (t, w) in [
                (
                    ThriftTransport::Framed,
                    if compact {
                        Wire::FramedCompact
                    } else {
                        Wire::FramedBinary
                    },
                ),
                (
                    ThriftTransport::Buffered,
                    if compact {
                        Wire::BufferedCompact
                    } else {
                        Wire::BufferedBinary
                    },
                ),
                (ThriftTransport::TTHeader, Wire::TTHeader),
            ] {
                check(
                    &ThriftEcho {
                        transport: t,
                        compact,
                        max_frame,
                    },
                    w,
                );
            }
        }
        check(&KitexPbEcho { max_frame }, Wire::KitexProtobuf);
    }
}
