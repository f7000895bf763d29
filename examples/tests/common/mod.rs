//! Helpers for end-to-end tests: a raw client that writes frames the way foreign clients
//! do and reads replies without any of our client code.
#![allow(dead_code)]

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use codec::frame::{self, Protocol, Split};
use codec::thrift::{Message, MessageType};
use codec::ByteString;
use rpc::wire::{self, Envelope, Headers, Parsed, Payload, Transport};

/// A blocking raw connection speaking one protocol.
pub struct Raw {
    pub stream: TcpStream,
    pub transport: Transport,
    pub payload: Payload,
    buf: BytesMut,
}

impl Raw {
    pub fn connect(addr: SocketAddr, transport: Transport, payload: Payload) -> Raw {
        let stream = TcpStream::connect(addr).expect("connect");
        stream
            .set_read_timeout(Some(Duration::from_secs(5)))
            .unwrap();
        stream.set_nodelay(true).unwrap();
        Raw {
            stream,
            transport,
            payload,
            buf: BytesMut::new(),
        }
    }

    pub fn envelope(&self, method: &'static str, seq: i32, kind: MessageType) -> Envelope {
        Envelope {
            transport: self.transport,
            payload: self.payload,
            method: ByteString::from_static(method),
            seq_id: seq,
            header_seq: seq,
            kind,
        }
    }

    /// Writes a Thrift call.
    pub fn send_thrift<M: Message>(
        &mut self,
        method: &'static str,
        seq: i32,
        args: &M,
        flags: u16,
    ) {
        let kind = MessageType::Call;
        let env = self.envelope(method, seq, kind);
        let mut out = BytesMut::new();
        let h = Headers {
            flags,
            ..Headers::default()
        };
        wire::write_thrift(&env, &mut out, kind, args, &h).expect("encode");
        self.stream.write_all(&out).expect("send");
    }

    /// Writes a Kitex Protobuf call.
    pub fn send_pb<M: prost::Message>(&mut self, method: &'static str, seq: i32, req: &M) {
        let env = self.envelope(method, seq, MessageType::Call);
        let mut out = BytesMut::new();
        wire::write_pb(&env, &mut out, MessageType::Call, req, &Headers::default())
            .expect("encode");
        self.stream.write_all(&out).expect("send");
    }

    fn split_protocol(&self) -> Protocol {
        match (self.transport, self.payload) {
            (Transport::TTHeader { .. }, _) => Protocol::TTHeader,
            (Transport::KitexProtobuf, _) => Protocol::KitexProtobuf,
            (Transport::Framed, Payload::ThriftCompact) => Protocol::FramedCompact,
            (Transport::Framed, _) => Protocol::FramedBinary,
            (Transport::Buffered, Payload::ThriftCompact) => Protocol::BufferedCompact,
            (Transport::Buffered, _) => Protocol::BufferedBinary,
        }
    }

    /// Reads one whole reply; `None` if the server closed the connection.
    pub fn read(&mut self) -> Option<Parsed> {
        loop {
            if !self.buf.is_empty() {
                match frame::split(self.split_protocol(), &self.buf, 64 << 20).expect("reply frame")
                {
                    Split::Frame(n) => {
                        let f: Bytes = self.buf.split_to(n).freeze();
                        return Some(
                            wire::parse(self.split_protocol(), f).expect("reply envelope"),
                        );
                    }
                    Split::NeedMore(_) => {}
                }
            }
            let mut chunk = [0u8; 65536];
            match self.stream.read(&mut chunk) {
                Ok(0) => return None,
                Ok(n) => self.buf.extend_from_slice(&chunk[..n]),
                Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => return None,
                Err(e) => panic!("read: {e}"),
            }
        }
    }

    /// Whether the server closed the connection (EOF or reset) within the read timeout.
    pub fn closed(&mut self) -> bool {
        let mut b = [0u8; 1024];
        loop {
            match self.stream.read(&mut b) {
                Ok(0) => return true,
                Ok(_) => continue,
                Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => return true,
                Err(_) => return false,
            }
        }
    }
}

/// Decodes a Thrift REPLY body, panicking on an exception.
pub fn reply<M: Message>(p: Parsed) -> M {
    assert_eq!(p.envelope.kind, MessageType::Reply, "expected a REPLY");
    wire::decode_thrift(p.envelope.payload, p.body).expect("decode reply")
}

/// Decodes an EXCEPTION body.
pub fn exception(p: Parsed) -> codec::thrift::ApplicationException {
    assert_eq!(
        p.envelope.kind,
        MessageType::Exception,
        "expected an EXCEPTION"
    );
    wire::decode_thrift(p.envelope.payload, p.body).expect("decode exception")
}

/// Every Thrift transport and payload combination a server must serve.
pub fn thrift_shapes() -> Vec<(Transport, Payload)> {
    let mut v = Vec::new();
    for t in [
        Transport::Framed,
        Transport::Buffered,
        Transport::TTHeader {
            framed_payload: false,
        },
        Transport::TTHeader {
            framed_payload: true,
        },
    ] {
        for p in [Payload::ThriftBinary, Payload::ThriftCompact] {
            v.push((t, p));
        }
    }
    v
}
