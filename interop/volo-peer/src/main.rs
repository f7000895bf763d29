//! A Volo peer (Kitex-compatible Rust RPC) for interop tests and frame captures.
//!
//! ```text
//! volo-peer serve  --transport ttheader|framed --echo ADDR --interop ADDR
//! volo-peer call   --transport ttheader|framed --echo ADDR --interop ADDR
//! volo-peer capture OUTDIR
//! volo-peer serve-tls --transport ttheader|framed --echo ADDR --cert PEM --key PEM [--client-ca PEM]
//! volo-peer call-tls  --transport ttheader|framed --echo ADDR --ca PEM [--cert PEM --key PEM] [--name NAME]
//! ```
//!
//! `serve-tls` and `call-tls` are the Echo service over TLS (rustls with the ring
//! provider; `--client-ca` requires client certificates): Volo's server and client
//! with volo's TLS stream. volo-thrift has no TLS option of its own, so the server wraps
//! volo's listener, handshaking each connection as volo-grpc does.
//!
//! `serve` runs Volo servers for `idl/echo.thrift` and `idl/interop.thrift` with the
//! behaviour the IDL's comments describe. `call` calls every method on a server (ours, or
//! Volo's) and checks each result; the exit status says whether all were right.
//! `capture` runs both against each other through a recording proxy, for each transport,
//! and writes the exact bytes each side sent to OUTDIR, as the codec's test fixtures.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::{anyhow, bail, Context, Result};
use pilota::{AHashMap, AHashSet, Bytes, FastStr};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use volo_thrift::codec::default::DefaultMakeCodec;
use volo_thrift::MaybeException;

mod gen {
    include!(concat!(env!("OUT_DIR"), "/thrift_gen.rs"));
}
use gen::thrift_gen::{echo, interop};

// ----- servers ------------------------------------------------------------------------

#[derive(Clone)]
struct EchoImpl;

impl echo::Echo for EchoImpl {
    async fn echo(&self, msg: Bytes) -> Result<Bytes, volo_thrift::ServerError> {
        Ok(msg)
    }
}

#[derive(Clone, Default)]
struct InteropImpl {
    fired: Arc<AtomicI64>,
}

impl interop::Interop for InteropImpl {
    async fn roundtrip(&self, v: interop::AllTypes) -> Result<interop::AllTypes, volo_thrift::ServerError> {
        Ok(v)
    }

    async fn fail_with(
        &self,
        code: i32,
        message: FastStr,
    ) -> Result<MaybeException<i32, interop::InteropFailWithException>, volo_thrift::ServerError> {
        if code != 0 {
            let err = interop::InteropError { code: Some(code), message: Some(message) };
            return Ok(MaybeException::Exception(interop::InteropFailWithException::Err(err)));
        }
        Ok(MaybeException::Ok(code))
    }

    async fn delayed_echo(&self, msg: Bytes, delay_ms: i32) -> Result<Bytes, volo_thrift::ServerError> {
        tokio::time::sleep(Duration::from_millis(delay_ms.max(0) as u64)).await;
        Ok(msg)
    }

    async fn ping(&self) -> Result<(), volo_thrift::ServerError> {
        Ok(())
    }

    async fn fire(&self, x: i64) -> Result<(), volo_thrift::ServerError> {
        self.fired.fetch_add(x, Ordering::SeqCst);
        Ok(())
    }

    async fn fired_total(&self) -> Result<i64, volo_thrift::ServerError> {
        Ok(self.fired.load(Ordering::SeqCst))
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Transport {
    TTHeader,
    Framed,
}

impl Transport {
    fn parse(s: &str) -> Result<Self> {
        match s {
            "ttheader" => Ok(Transport::TTHeader),
            "framed" => Ok(Transport::Framed),
            _ => bail!("unknown transport {s:?} (ttheader or framed)"),
        }
    }

    fn name(self) -> &'static str {
        match self {
            Transport::TTHeader => "ttheader",
            Transport::Framed => "framed",
        }
    }
}

async fn serve(t: Transport, echo_addr: SocketAddr, interop_addr: SocketAddr) -> Result<()> {
    let echo = async move {
        let addr = volo::net::Address::from(echo_addr);
        match t {
            Transport::TTHeader => echo::EchoServer::new(EchoImpl).run(addr).await,
            Transport::Framed => {
                echo::EchoServer::new(EchoImpl).make_codec(DefaultMakeCodec::framed()).run(addr).await
            }
        }
    };
    let interop = async move {
        let addr = volo::net::Address::from(interop_addr);
        let h = InteropImpl::default();
        match t {
            Transport::TTHeader => interop::InteropServer::new(h).run(addr).await,
            Transport::Framed => {
                interop::InteropServer::new(h).make_codec(DefaultMakeCodec::framed()).run(addr).await
            }
        }
    };
    // Whichever server stops first (a bind that failed, say) ends the process with its
    // error, so a test never talks to one server while the other is missing.
    tokio::select! {
        a = echo => a.map_err(|e| anyhow!("echo server: {e}")),
        b = interop => b.map_err(|e| anyhow!("interop server: {e}")),
    }
}

// ----- TLS ----------------------------------------------------------------------------

fn ring() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

fn certs(path: &str) -> Result<Vec<CertificateDer<'static>>> {
    CertificateDer::pem_file_iter(path)
        .and_then(|it| it.collect::<Result<Vec<_>, _>>())
        .map_err(|e| anyhow!("{path}: {e}"))
}

fn roots(path: &str) -> Result<rustls::RootCertStore> {
    let mut roots = rustls::RootCertStore::empty();
    for c in certs(path)? {
        roots.add(c)?;
    }
    Ok(roots)
}

/// volo's listener, with a TLS handshake on each accepted connection (a failed handshake
/// is logged and the connection dropped; the next one is accepted).
struct TlsIncoming {
    inner: volo::net::incoming::DefaultIncoming,
    acceptor: volo::net::tls::TlsAcceptor,
}

impl std::fmt::Debug for TlsIncoming {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("TlsIncoming")
    }
}

impl volo::net::incoming::Incoming for TlsIncoming {
    async fn accept(&mut self) -> std::io::Result<Option<volo::net::conn::Conn>> {
        use volo::net::conn::{Conn, ConnStream};
        loop {
            let Some(Conn { stream, info }) = self.inner.accept().await? else {
                return Ok(None);
            };
            let ConnStream::Tcp(tcp) = stream else {
                return Ok(Some(Conn { stream, info }));
            };
            match tokio::time::timeout(Duration::from_secs(5), self.acceptor.accept(tcp)).await {
                Ok(Ok(stream)) => return Ok(Some(Conn { stream, info })),
                Ok(Err(e)) => eprintln!("volo-peer: TLS handshake failed: {e}"),
                Err(_) => eprintln!("volo-peer: TLS handshake timed out"),
            }
        }
    }
}

struct TlsMakeIncoming {
    addr: SocketAddr,
    acceptor: volo::net::tls::TlsAcceptor,
}

impl volo::net::incoming::MakeIncoming for TlsMakeIncoming {
    type Incoming = TlsIncoming;
    async fn make_incoming(self) -> std::io::Result<TlsIncoming> {
        let inner = volo::net::Address::from(self.addr).make_incoming().await?;
        Ok(TlsIncoming { inner, acceptor: self.acceptor })
    }
}

async fn serve_tls(t: Transport, addr: SocketAddr, cert: &str, key: &str, client_ca: Option<String>) -> Result<()> {
    let b = rustls::ServerConfig::builder_with_provider(ring()).with_protocol_versions(rustls::DEFAULT_VERSIONS)?;
    let b = match client_ca {
        None => b.with_no_client_auth(),
        Some(ca) => b.with_client_cert_verifier(
            rustls::server::WebPkiClientVerifier::builder_with_provider(Arc::new(roots(&ca)?), ring()).build()?,
        ),
    };
    let config = b.with_single_cert(certs(cert)?, PrivateKeyDer::from_pem_file(key).map_err(|e| anyhow!("{key}: {e}"))?)?;
    let incoming = TlsMakeIncoming { addr, acceptor: volo::net::tls::TlsAcceptor::from(config) };
    let served = match t {
        Transport::TTHeader => echo::EchoServer::new(EchoImpl).run(incoming).await,
        Transport::Framed => echo::EchoServer::new(EchoImpl).make_codec(DefaultMakeCodec::framed()).run(incoming).await,
    };
    served.map_err(|e| anyhow!("echo server: {e}"))
}

async fn call_tls(t: Transport, addr: SocketAddr, ca: &str, identity: Option<(String, String)>, name: &str) -> Result<()> {
    use volo::net::tls::{ClientTlsConfig, TlsConnector, TlsMakeTransport};
    let b = rustls::ClientConfig::builder_with_provider(ring())
        .with_protocol_versions(rustls::DEFAULT_VERSIONS)?
        .with_root_certificates(roots(ca)?);
    let config = match identity {
        Some((cert, key)) => b.with_client_auth_cert(
            certs(&cert)?,
            PrivateKeyDer::from_pem_file(&key).map_err(|e| anyhow!("{key}: {e}"))?,
        )?,
        None => b.with_no_client_auth(),
    };
    let transport = TlsMakeTransport::new(
        volo::net::dial::Config::default(),
        ClientTlsConfig::new(name.to_owned(), TlsConnector::from(config)),
    );
    let b = echo::EchoClientBuilder::new("echo").make_transport(transport).address(addr);
    let client = match t {
        Transport::TTHeader => b.build(),
        Transport::Framed => b.make_codec(DefaultMakeCodec::framed()).build(),
    };
    for size in [0usize, 10, 100 * 1024] {
        let msg: Vec<u8> = (0..size).map(|i| (i * 7 % 251) as u8).collect();
        let got = client.echo(Bytes::from(msg.clone())).await.map_err(|e| anyhow!("echo {size} B: {e}"))?;
        if got[..] != msg[..] {
            bail!("echo {size} B: wrong reply");
        }
    }
    Ok(())
}

// ----- client -------------------------------------------------------------------------

/// The AllTypes value every peer round-trips (the same as the Python peer's "full").
fn full_value() -> interop::AllTypes {
    let mut counts = AHashMap::default();
    counts.insert(FastStr::from_static_str("x"), 1);
    counts.insert(FastStr::from_static_str("y"), -(1i64 << 40));
    let mut tags = AHashSet::default();
    for t in ["a", "bb", ""] {
        tags.insert(FastStr::from_static_str(t));
    }
    let mut nested = AHashMap::default();
    nested.insert(1, vec![FastStr::from_static_str("p"), FastStr::from_static_str("q")]);
    nested.insert(-3, vec![]);
    interop::AllTypes {
        b: Some(true),
        i8v: Some(i8::MIN),
        i16v: Some(i16::MIN),
        i32v: Some(i32::MAX),
        i64v: Some(i64::MIN),
        dbl: Some(-2.5e300),
        str: Some(FastStr::from_static_str("h\u{e9}llo, \u{4e16}\u{754c} \u{1F600}")),
        bin: Some(Bytes::from((0..=255u8).collect::<Vec<u8>>())),
        ints: Some(vec![0, -1, 1, i32::MAX, i32::MIN]),
        tags: Some(tags),
        counts: Some(counts),
        inner: Some(interop::Inner { id: 7, label: Some(FastStr::from_static_str("seven")) }),
        inners: Some(vec![
            interop::Inner { id: 1, label: None },
            interop::Inner { id: 2, label: Some(FastStr::from_static_str("")) },
        ]),
        nested: Some(nested),
        color: Some(interop::Color::BLUE),
        maybe: Some(FastStr::from_static_str("here")),
        with_default: Some(FastStr::from_static_str("set")),
        small: Some(127),
        ..Default::default()
    }
}

async fn call(t: Transport, echo_addr: SocketAddr, interop_addr: SocketAddr) -> Result<()> {
    macro_rules! client {
        ($builder:path, $addr:expr, $callee:expr) => {
            match t {
                Transport::TTHeader => $builder($callee).address($addr).build(),
                Transport::Framed => $builder($callee).make_codec(DefaultMakeCodec::framed()).address($addr).build(),
            }
        };
    }
    let echo = client!(echo::EchoClientBuilder::new, echo_addr, "echo");
    for payload in [Bytes::from_static(b"hello volo"), Bytes::new(), Bytes::from(vec![0x5a; 20_000])] {
        let got = echo.echo(payload.clone()).await.context("echo")?;
        if got != payload {
            bail!("echo returned {} bytes, sent {}", got.len(), payload.len());
        }
    }
    let c = client!(interop::InteropClientBuilder::new, interop_addr, "interop");
    let v = full_value();
    let got = c.roundtrip(v.clone()).await.context("roundtrip")?;
    if got != v {
        bail!("roundtrip changed the value:\n sent {v:?}\n got  {got:?}");
    }
    let empty = interop::AllTypes::default();
    let got = c.roundtrip(empty.clone()).await.context("roundtrip of an empty value")?;
    if got.with_default.as_deref() != Some("default") && got.with_default.is_some() {
        bail!("with_default came back as {:?}", got.with_default);
    }
    match c.fail_with(0, FastStr::from_static_str("fine")).await.context("fail_with(0)")? {
        MaybeException::Ok(0) => {}
        MaybeException::Ok(n) => bail!("fail_with(0) returned {n}"),
        MaybeException::Exception(e) => bail!("fail_with(0) threw {e:?}"),
    }
    match c.fail_with(7, FastStr::from_static_str("boom")).await.context("fail_with(7)")? {
        MaybeException::Exception(interop::InteropFailWithException::Err(e))
            if e.code == Some(7) && e.message.as_deref() == Some("boom") => {}
        MaybeException::Ok(n) => bail!("fail_with(7) returned {n} instead of throwing"),
        MaybeException::Exception(e) => bail!("fail_with(7) threw {e:?}"),
    }
    let got = c.delayed_echo(Bytes::from_static(b"late"), 20).await.context("delayed_echo")?;
    if &got[..] != b"late" {
        bail!("delayed_echo returned {got:?}");
    }
    c.ping().await.context("ping")?;
    let before = c.fired_total().await.context("fired_total")?;
    c.fire(5).await.context("fire")?;
    c.fire(-2).await.context("fire")?;
    // Oneway calls get no reply: wait until the server has applied both.
    let mut total = before;
    for _ in 0..100 {
        total = c.fired_total().await.context("fired_total")?;
        if total == before + 3 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    if total != before + 3 {
        bail!("fired_total is {total}, expected {}", before + 3);
    }
    Ok(())
}

// ----- capture ------------------------------------------------------------------------

type Recording = Arc<Mutex<Vec<(Vec<u8>, Vec<u8>)>>>;

/// Forwards connections from a local port to `upstream`, recording each connection's
/// bytes in both directions.
async fn recording_proxy(upstream: SocketAddr) -> Result<(SocketAddr, Recording)> {
    let listener = TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    let rec: Recording = Arc::default();
    let r = rec.clone();
    tokio::spawn(async move {
        while let Ok((mut client, _)) = listener.accept().await {
            let Ok(mut server) = TcpStream::connect(upstream).await else { return };
            let idx = {
                let mut g = r.lock().expect("recording lock");
                g.push((Vec::new(), Vec::new()));
                g.len() - 1
            };
            let r = r.clone();
            tokio::spawn(async move {
                let (mut cr, mut cw) = client.split();
                let (mut sr, mut sw) = server.split();
                let (mut b1, mut b2) = (vec![0u8; 65536], vec![0u8; 65536]);
                loop {
                    tokio::select! {
                        n = cr.read(&mut b1) => match n {
                            Ok(0) | Err(_) => break,
                            Ok(n) => {
                                r.lock().expect("recording lock")[idx].0.extend_from_slice(&b1[..n]);
                                if sw.write_all(&b1[..n]).await.is_err() { break; }
                            }
                        },
                        n = sr.read(&mut b2) => match n {
                            Ok(0) | Err(_) => break,
                            Ok(n) => {
                                r.lock().expect("recording lock")[idx].1.extend_from_slice(&b2[..n]);
                                if cw.write_all(&b2[..n]).await.is_err() { break; }
                            }
                        },
                    }
                }
            });
        }
    });
    Ok((addr, rec))
}

async fn free_port() -> Result<SocketAddr> {
    let l = TcpListener::bind("127.0.0.1:0").await?;
    Ok(l.local_addr()?)
}

async fn capture(out: PathBuf) -> Result<()> {
    std::fs::create_dir_all(&out)?;
    for t in [Transport::TTHeader, Transport::Framed] {
        let (echo_srv, interop_srv) = (free_port().await?, free_port().await?);
        tokio::spawn(serve(t, echo_srv, interop_srv));
        tokio::time::sleep(Duration::from_millis(300)).await;
        let (echo_proxy, echo_rec) = recording_proxy(echo_srv).await?;
        let (interop_proxy, interop_rec) = recording_proxy(interop_srv).await?;
        call(t, echo_proxy, interop_proxy).await.with_context(|| format!("{} calls", t.name()))?;
        tokio::time::sleep(Duration::from_millis(200)).await;
        for (service, rec) in [("echo", echo_rec), ("interop", interop_rec)] {
            let conns = rec.lock().expect("recording lock").clone();
            for (i, (c2s, s2c)) in conns.iter().enumerate() {
                let base = format!("volo-{}-{service}-conn{i}", t.name());
                std::fs::write(out.join(format!("{base}.request.bin")), c2s)?;
                std::fs::write(out.join(format!("{base}.reply.bin")), s2c)?;
                println!("{base}: {} request bytes, {} reply bytes", c2s.len(), s2c.len());
            }
        }
    }
    Ok(())
}

// ----- main ---------------------------------------------------------------------------

fn flag(args: &[String], name: &str) -> Option<String> {
    args.iter().position(|a| a == name).and_then(|i| args.get(i + 1).cloned())
}

fn addr_flag(args: &[String], name: &str) -> Result<SocketAddr> {
    flag(args, name)
        .ok_or_else(|| anyhow!("{name} ADDR is required"))?
        .parse()
        .with_context(|| format!("{name}"))
}

#[volo::main]
async fn main() -> Result<()> {
    let args: Vec<String> = std::env::args().collect();
    let transport = || Transport::parse(&flag(&args, "--transport").unwrap_or_else(|| "ttheader".into()));
    match args.get(1).map(String::as_str) {
        Some("serve") => serve(transport()?, addr_flag(&args, "--echo")?, addr_flag(&args, "--interop")?).await,
        Some("call") => {
            call(transport()?, addr_flag(&args, "--echo")?, addr_flag(&args, "--interop")?).await?;
            println!("volo-peer: every call returned what it should");
            Ok(())
        }
        Some("serve-tls") => {
            let need = |n: &str| flag(&args, n).ok_or_else(|| anyhow!("{n} PEM is required"));
            println!("volo-peer: serving Echo over TLS");
            serve_tls(transport()?, addr_flag(&args, "--echo")?, &need("--cert")?, &need("--key")?, flag(&args, "--client-ca")).await
        }
        Some("call-tls") => {
            let ca = flag(&args, "--ca").ok_or_else(|| anyhow!("--ca PEM is required"))?;
            let identity = flag(&args, "--cert").zip(flag(&args, "--key"));
            let name = flag(&args, "--name").unwrap_or_else(|| "localhost".into());
            call_tls(transport()?, addr_flag(&args, "--echo")?, &ca, identity, &name).await?;
            println!("volo-peer: every TLS call returned what it should");
            Ok(())
        }
        Some("capture") => capture(PathBuf::from(args.get(2).ok_or_else(|| anyhow!("capture OUTDIR"))?)).await,
        _ => bail!("usage: volo-peer serve|call|serve-tls|call-tls --transport ttheader|framed --echo ADDR --interop ADDR | volo-peer capture OUTDIR"),
    }
}
