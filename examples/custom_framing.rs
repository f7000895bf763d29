//! A protocol of our own on the same port as the built-in ones: `echo_service`'s server
//! with [`MagicFraming`](examples::extensions::framing::MagicFraming) registered, called
//! once over that framing and once over plain Framed Thrift.
//!
//! ```text
//! cargo run --release -p examples --example custom_framing
//! ```

use std::io::{Read, Write};
use std::net::TcpStream;

use bytes::{Bytes, BytesMut};
use examples::extensions::framing::MagicFraming;
use examples::gen::echo;
use netpoll_codec::frame::Split;
use netpoll_codec::thrift::MessageType;
use netpoll_codec::ByteString;
use netpoll_rpc::server::Framing;
use netpoll_rpc::wire::{self, Envelope, Headers, Payload, Transport};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let server = examples::echo_service::builder()
        .addr("127.0.0.1:0")
        .cores(1)
        .framing(MagicFraming)
        .start()?;
    println!(
        "serving NPF1, Framed, Buffered, TTHeader and Kitex Protobuf on {}",
        server.local_addr()
    );

    // A compact Thrift call, wrapped in NPF1.
    let env = Envelope {
        transport: Transport::Buffered,
        payload: Payload::ThriftCompact,
        method: ByteString::from_static("echo"),
        seq_id: 1,
        header_seq: 1,
        kind: MessageType::Call,
    };
    let mut message = BytesMut::new();
    let args = echo::EchoEchoArgs {
        msg: Bytes::from_static(b"over NPF1"),
    };
    wire::write_thrift(
        &env,
        &mut message,
        MessageType::Call,
        &args,
        &Headers::default(),
    )?;
    let mut s = TcpStream::connect(server.local_addr())?;
    s.write_all(&MagicFraming::frame(Payload::ThriftCompact, &message))?;
    let mut buf = BytesMut::new();
    let reply = loop {
        let mut chunk = [0u8; 4096];
        let n = s.read(&mut chunk)?;
        if n == 0 {
            return Err("the server closed the connection".into());
        }
        buf.extend_from_slice(&chunk[..n]);
        if let Split::Frame(len) = MagicFraming.split(&buf, 1 << 20)? {
            break buf.split_to(len).freeze();
        }
    };
    let (payload, msg) = MagicFraming.unwrap(reply)?;
    let parsed = wire::parse_message(Transport::Buffered, payload, msg)?;
    let r: echo::EchoEchoResult = wire::decode_thrift(parsed.envelope.payload, parsed.body)?;
    println!(
        "NPF1 reply: {:?}",
        String::from_utf8_lossy(&r.success.unwrap_or_default())
    );

    // The built-in protocols still work on the same port.
    let c = echo::EchoClient::from_builder(
        netpoll_rpc::client::ClientBuilder::new(server.local_addr())
            .transport(netpoll_rpc::client::ClientTransport::Framed),
    )?;
    let back = c.echo(Bytes::from_static(b"over Framed"))?;
    println!("Framed reply: {:?}", String::from_utf8_lossy(&back));
    server.shutdown(std::time::Duration::from_secs(1));
    Ok(())
}
