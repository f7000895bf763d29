//! [`Client`]: one client, generic over the payload encoding ([`Thrift`] or
//! [`Protobuf`]). It encodes calls, sends the TTHeader metadata a Kitex server expects,
//! and decodes replies. Generated service clients wrap it.

use std::fmt;
use std::net::SocketAddr;

use crate::discovery::{Addr, ToAddrs};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use netpoll::{Runtime, RuntimeHandle};
use netpoll_codec::frame::{self, int_key, Protocol};
use netpoll_codec::thrift::{ApplicationException, Message, MessageType};
use netpoll_codec::ByteString;
use prost::Message as _;

use super::cluster::{Cluster, ClusterConfig, Snapshot};
use super::percore::Here;
use super::policy::{self, Breaker, BreakerConfig, RetryBudget, RetryPolicy};
use super::stream::{Delivery, StreamEvent};
use super::{ChannelConfig, ClientStream, KitexPbFraming, ReplyFraming, ThriftFraming};
use crate::balance::P2c;
use crate::discovery::{LoadBalancer, Resolver, StaticResolver};
use crate::trace::TraceContext;
use crate::wire::{self, Envelope, Headers, Payload, Transport};
use crate::{CallError, Metadata};

/// How a client frames its calls.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ClientTransport {
    /// TTHeader, bare payload (Kitex's default for Thrift). Carries the metadata headers.
    TTHeader,
    /// TTHeader with a length-prefixed payload (`TTHeader|Framed`, Volo's default).
    TTHeaderFramed,
    /// Framed (a 4-byte length), understood by Kitex, Volo and Apache servers. For
    /// Protobuf: Kitex Protobuf's own framing.
    Framed,
    /// gRPC over HTTP/2 (Protobuf clients only): each call a stream of one connection,
    /// to any gRPC server (tonic, grpc-go, grpcio, or ours). Over TLS the connector must
    /// offer ALPN `h2`, as gRPC servers require.
    Grpc,
}

/// Settings of a typed client: which service it calls (a name and how to find its
/// instances), how it balances, retries and breaks circuits, and how it frames calls.
#[derive(Clone)]
pub struct ClientBuilder {
    resolver: Option<Result<Arc<dyn Resolver>, crate::Cause>>,
    destination: Option<String>,
    balancer: Arc<dyn LoadBalancer>,
    retry: RetryPolicy,
    breaker: Option<Arc<BreakerConfig>>,
    warm_up: bool,
    transport: ClientTransport,
    compact: bool,
    caller: Arc<str>,
    channel: ChannelConfig,
    max_frame: usize,
    runtime: Option<RuntimeHandle>,
    middleware: Vec<Arc<dyn crate::middleware::DynMiddleware>>,
    send_gzip: bool,
}

impl fmt::Debug for ClientBuilder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ClientBuilder")
            .field("destination", &self.destination)
            .field("balancer", &self.balancer.name())
            .field("retry", &self.retry)
            .field("transport", &self.transport)
            .field("compact", &self.compact)
            .field("caller", &self.caller)
            .field("channel", &self.channel)
            .field("send_gzip", &self.send_gzip)
            .finish()
    }
}

/// Why a client could not be made.
#[derive(Debug)]
#[non_exhaustive]
pub enum ClientError {
    /// The address is invalid or could not be resolved.
    Addr(crate::Cause),
    /// The client's own event loop could not start.
    Runtime(netpoll::BuildError),
    /// The settings ask for what cannot be done (gRPC with Thrift, say).
    Unsupported(crate::Cause),
}

impl fmt::Display for ClientError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ClientError::Addr(e) => write!(f, "bad server address: {e}"),
            ClientError::Runtime(e) => write!(f, "cannot start the client's event loop: {e}"),
            ClientError::Unsupported(e) => write!(f, "unsupported settings: {e}"),
        }
    }
}

impl std::error::Error for ClientError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            ClientError::Addr(e) => Some(&**e),
            ClientError::Runtime(e) => Some(e),
            ClientError::Unsupported(e) => Some(&**e),
        }
    }
}

impl Default for ClientBuilder {
    /// Settings with no instances yet: give them with [`host_ports`](Self::host_ports) or
    /// [`resolver`](Self::resolver).
    fn default() -> Self {
        ClientBuilder {
            resolver: None,
            destination: None,
            balancer: Arc::new(P2c),
            retry: RetryPolicy::default(),
            breaker: Some(Arc::new(BreakerConfig::default())),
            warm_up: false,
            transport: ClientTransport::TTHeader,
            compact: false,
            caller: Arc::from("rpc-client"),
            channel: ChannelConfig::default(),
            max_frame: frame::DEFAULT_MAX_FRAME,
            runtime: None,
            middleware: Vec::new(),
            send_gzip: false,
        }
    }
}

impl ClientBuilder {
    /// A client of the server at `addr`, with the defaults: TTHeader, binary Thrift, one
    /// connection, 1 s connect timeout, 5 s call timeout, its own one-core event loop.
    pub fn new(addr: impl ToAddrs) -> ClientBuilder {
        ClientBuilder::default().host_ports([addr])
    }

    /// The service's instances are these `host:port` addresses (Kitex's
    /// `WithHostPorts`); see [`StaticResolver`].
    pub fn host_ports<A: ToAddrs>(mut self, addrs: impl IntoIterator<Item = A>) -> Self {
        self.resolver = Some(
            StaticResolver::new(addrs)
                .map(|r| Arc::new(r) as Arc<dyn Resolver>)
                .map_err(|e| crate::cause(e)),
        );
        self
    }

    /// The service's instances come from `resolver` (etcd, DNS, a list, your own).
    pub fn resolver(mut self, resolver: impl Resolver) -> Self {
        self.resolver = Some(Ok(Arc::new(resolver)));
        self
    }

    /// The name of the service to call, as registered (Kitex's destination service, as in
    /// `NewClient("hello-service", ...)`): what the resolver looks up, and the TTHeader
    /// to-service. Default: the IDL service name.
    pub fn destination(mut self, service: &str) -> Self {
        self.destination = Some(service.to_owned());
        self
    }

    /// How each call's instance is chosen. Default [`P2c`].
    pub fn load_balancer(mut self, lb: impl LoadBalancer) -> Self {
        self.balancer = Arc::new(lb);
        self
    }

    /// How failed calls are retried. Default: [`RetryPolicy::default`], which retries
    /// only calls that never reached a server, twice, on other instances.
    pub fn retry(mut self, policy: RetryPolicy) -> Self {
        self.retry = policy;
        self
    }

    /// Circuit breakers per instance and per method with these settings (default on,
    /// with [`BreakerConfig::default`]); `None` turns them off.
    pub fn circuit_breaker(mut self, cfg: Option<BreakerConfig>) -> Self {
        self.breaker = cfg.map(Arc::new);
        self
    }

    /// Resolves the service and connects to its instances when the client is built,
    /// before the first call. Default off (connections open on first use).
    pub fn warm_up(mut self, warm: bool) -> Self {
        self.warm_up = warm;
        self
    }

    /// The framing of calls.
    pub fn transport(mut self, t: ClientTransport) -> Self {
        self.transport = t;
        self
    }

    /// Calls over gRPC ([`ClientTransport::Grpc`]).
    pub fn grpc(self) -> Self {
        self.transport(ClientTransport::Grpc)
    }

    /// Compresses gRPC request messages with gzip (`grpc-encoding: gzip`; gRPC clients
    /// only; default off). Replies are inflated whether or not this is on.
    pub fn send_gzip(mut self, on: bool) -> Self {
        self.send_gzip = on;
        self
    }

    /// Compact Thrift instead of binary (Thrift clients only).
    pub fn compact(mut self, compact: bool) -> Self {
        self.compact = compact;
        self
    }

    /// The caller's service name, sent in TTHeader (key 3, FromService).
    pub fn caller(mut self, name: &str) -> Self {
        self.caller = Arc::from(name);
        self
    }

    /// Connections kept to the server; calls are multiplexed over them.
    pub fn connections(mut self, n: usize) -> Self {
        self.channel.connections = n.max(1);
        self
    }

    /// Speaks TLS to every instance, whose certificates must be valid for `server_name`
    /// (a DNS name or an IP address) and chain to a CA the connector trusts.
    #[cfg(feature = "tls")]
    pub fn tls(
        mut self,
        connector: crate::tls::TlsConnector,
        server_name: &str,
    ) -> std::io::Result<Self> {
        self.channel.tls = Some(crate::tls::ClientTls::new(connector, server_name)?);
        Ok(self)
    }

    /// How long a connect may take.
    pub fn connect_timeout(mut self, t: Duration) -> Self {
        self.channel.connect_timeout = t;
        self
    }

    /// The deadline of each call (`None`: wait forever). Per call: `with_timeout`.
    pub fn call_timeout(mut self, t: Option<Duration>) -> Self {
        self.channel.call_timeout = t;
        self
    }

    /// Bytes of requests a connection may queue that the server has not taken yet; calls
    /// beyond that fail at once with [`CallError::QueueFull`]. Default 16 MiB.
    pub fn max_queued_bytes(mut self, bytes: usize) -> Self {
        self.channel.max_queued_bytes = bytes.max(1);
        self
    }

    /// Closes a connection after this long without calls (default 60 s; `None`: never).
    pub fn idle_timeout(mut self, t: Option<Duration>) -> Self {
        self.channel.idle_timeout = t;
        self
    }

    /// Largest request and reply frame.
    pub fn max_frame(mut self, bytes: usize) -> Self {
        self.max_frame = bytes;
        self
    }

    /// Runs `m` around every call of the client (see [`Middleware`](crate::Middleware)):
    /// before it is sent, and when its reply or failure arrives. Several run in the order
    /// they were added at the start, in reverse order at the end.
    pub fn middleware(mut self, m: impl crate::Middleware) -> Self {
        self.middleware.push(Arc::new(m));
        self
    }

    /// Runs the connections on an existing event loop (a server's, to call other services
    /// from handlers without leaving the core) instead of the client's own.
    pub fn runtime(mut self, rt: RuntimeHandle) -> Self {
        self.runtime = Some(rt);
        self
    }

    fn build(
        self,
        service: &'static str,
        payload: Payload,
        framing: Arc<dyn ReplyFraming>,
    ) -> Result<Base, ClientError> {
        let resolver = match self.resolver {
            Some(r) => r.map_err(ClientError::Addr)?,
            None => {
                return Err(ClientError::Addr(crate::reason(
                    "no instances: give host ports or a resolver",
                )))
            }
        };
        let (handle, owned) = match self.runtime {
            Some(h) => (h, None),
            None => {
                let rt = Runtime::builder()
                    .cores(1)
                    .thread_name("rpc-client")
                    .build()
                    .map_err(ClientError::Runtime)?;
                (rt.handle().clone(), Some(Arc::new(rt)))
            }
        };
        let transport = match self.transport {
            // A gRPC call is written as a TTHeader frame, which the connection's HTTP/2
            // state turns into a stream (and its reply back into a TTHeader frame).
            ClientTransport::TTHeader | ClientTransport::Grpc => Transport::TTHeader {
                framed_payload: false,
            },
            ClientTransport::TTHeaderFramed => Transport::TTHeader {
                framed_payload: true,
            },
            ClientTransport::Framed if payload == Payload::Protobuf => Transport::KitexProtobuf,
            ClientTransport::Framed => Transport::Framed,
        };
        let split = match (transport, payload) {
            (Transport::TTHeader { .. }, _) => Protocol::TTHeader,
            (_, Payload::Protobuf) => Protocol::KitexProtobuf,
            (_, Payload::ThriftCompact) => Protocol::FramedCompact,
            _ => Protocol::FramedBinary,
        };
        let destination = self.destination.unwrap_or_else(|| service.to_owned());
        let breaker = self.breaker.clone();
        let cores = handle.cores();
        let cluster = Cluster::start(ClusterConfig {
            service: destination.clone(),
            rt: handle,
            framing,
            channel: self.channel.clone(),
            resolver,
            lb: self.balancer,
            breaker: breaker
                .clone()
                .unwrap_or_else(|| Arc::new(BreakerConfig::off())),
        });
        if self.warm_up {
            cluster.warm_up();
        }
        Ok(Base {
            inner: Arc::new(BaseInner {
                cluster,
                budget: RetryBudget::new(
                    self.retry.budget_ratio,
                    self.retry.min_retries_per_sec,
                    cores,
                ),
                retry: self.retry,
                method_breakers: breaker.map(|b| policy::MethodBreakers::new(b, cores)),
                retries: AtomicU64::new(0),
                latencies: policy::Latencies::new(),
                to_service: ByteString::from(destination),
                transport,
                payload,
                split,
                grpc: self.transport == ClientTransport::Grpc,
                send_gzip: self.send_gzip,
                service: ByteString::from_static(service),
                caller: self.caller,
                max_frame: self.max_frame,
                middleware: self.middleware.into(),
                runtime: owned,
            }),
            timeout: self.channel.call_timeout,
            key: None,
            headers: None,
            trace: None,
        })
    }

    /// A Thrift client of `service` (the IDL service name, sent as `isn` and key 6).
    pub fn thrift(self, service: &'static str) -> Result<ThriftClient, ClientError> {
        if self.transport == ClientTransport::Grpc {
            return Err(ClientError::Unsupported(crate::reason(
                "gRPC carries Protobuf services only",
            )));
        }
        let codec = Thrift {
            compact: self.compact,
        };
        let payload = codec.payload();
        let max = self.max_frame;
        let framing: Arc<dyn ReplyFraming> = Arc::new(match self.transport {
            ClientTransport::Framed if self.compact => ThriftFraming::framed_compact(max),
            ClientTransport::Framed => ThriftFraming::framed_binary(max),
            _ => ThriftFraming::ttheader(max),
        });
        Ok(Client {
            base: self.build(service, payload, framing)?,
            codec,
        })
    }

    /// A Protobuf client of `service` (Kitex Protobuf, or gRPC with the transport
    /// [`Grpc`](ClientTransport::Grpc), where `service` is the full name).
    pub fn protobuf(self, service: &'static str) -> Result<PbClient, ClientError> {
        self.protobuf_service(service, service)
    }

    /// A Protobuf client of `service`, whose fully qualified name (`package.Service`, as
    /// gRPC paths name it) is `full_name`. Generated clients call this.
    pub fn protobuf_service(
        self,
        service: &'static str,
        full_name: &'static str,
    ) -> Result<PbClient, ClientError> {
        let max = self.max_frame;
        let framing: Arc<dyn ReplyFraming> = match self.transport {
            ClientTransport::Framed => Arc::new(KitexPbFraming::plain(max)),
            ClientTransport::Grpc => {
                #[cfg(feature = "tls")]
                let (tls, authority) = match &self.channel.tls {
                    Some(t) => (true, Some(t.server_name.to_string())),
                    None => (false, None),
                };
                #[cfg(not(feature = "tls"))]
                let (tls, authority) = (false, None);
                Arc::new(super::framing::GrpcReplies(Arc::new(super::GrpcTarget {
                    full_name: Arc::from(full_name),
                    authority,
                    tls,
                    max_message: max,
                    gzip: self.send_gzip,
                })))
            }
            _ => Arc::new(KitexPbFraming::ttheader(max)),
        };
        Ok(Client {
            base: self.build(service, Payload::Protobuf, framing)?,
            codec: Protobuf,
        })
    }
}

struct BaseInner {
    cluster: Arc<Cluster>,
    retry: RetryPolicy,
    budget: RetryBudget,
    /// Per-method breakers, when breakers are on.
    method_breakers: Option<policy::MethodBreakers>,
    /// Retries made.
    retries: AtomicU64,
    /// Latencies of successful tries (for backup requests at a quantile).
    latencies: policy::Latencies,
    /// The destination service (TTHeader to-service).
    to_service: ByteString,
    transport: Transport,
    payload: Payload,
    split: Protocol,
    /// Calls go over gRPC.
    grpc: bool,
    /// gRPC request messages are gzip-compressed.
    send_gzip: bool,
    service: ByteString,
    caller: Arc<str>,
    max_frame: usize,
    middleware: crate::middleware::Stack,
    /// The client's own event loop, if it has one: stopped when the last clone goes.
    runtime: Option<Arc<Runtime>>,
}

impl BaseInner {
    /// The method breaker in slot `at`, if there is one.
    fn method_breaker(&self, at: Option<u16>) -> Option<&Breaker> {
        Some(self.method_breakers.as_ref()?.get(at?))
    }

    /// Writes one request frame of `method` carrying `seq`: its envelope and headers
    /// (with `meta`, and the `timeout` left to the call), then its body.
    #[allow(clippy::too_many_arguments)]
    fn encode_frame(
        &self,
        method: &'static str,
        kind: MessageType,
        meta: &Metadata,
        timeout: Option<Duration>,
        out: &mut BytesMut,
        seq: i32,
        body: impl FnOnce(&Envelope, &mut BytesMut, &Headers<'_>) -> Result<(), wire::WriteError>,
    ) -> Result<(), CallError> {
        let inner = self;
        let env = Envelope {
            transport: inner.transport,
            payload: inner.payload,
            method: ByteString::from_static(method),
            seq_id: seq,
            header_seq: seq,
            kind,
        };
        // Framed and Buffered carry no headers: none to make.
        let headers = !matches!(inner.transport, Transport::Framed | Transport::Buffered);
        let millis = timeout.filter(|_| headers).map(frame::TimeoutValue::new);
        let with_timeout = [
            (int_key::FROM_SERVICE, inner.caller.as_bytes()),
            (int_key::TO_SERVICE, inner.to_service.as_bytes()),
            (int_key::TO_METHOD, method.as_bytes()),
            (
                int_key::RPC_TIMEOUT,
                millis.as_ref().map_or(&[][..], |m| m.as_bytes()),
            ),
        ];
        let ints = if millis.is_some() {
            &with_timeout[..]
        } else {
            &with_timeout[..3]
        };
        let isn = [(
            frame::str_key::IDL_SERVICE_NAME,
            inner.service.as_bytes().as_ref(),
        )];
        // Headers a middleware added (a trace context, say) travel too.
        let with_meta: Vec<(&str, &[u8])>;
        let strs: &[(&str, &[u8])] = if meta.is_empty() || !headers {
            &isn
        } else {
            with_meta = isn.iter().copied().chain(meta.iter()).collect();
            &with_meta
        };
        let h = Headers {
            flags: 0,
            ints,
            strs,
        };
        let start = out.len();
        body(&env, out, &h).map_err(|e| CallError::TooLarge(crate::cause(e)))?;
        if out.len() - start > inner.max_frame {
            out.truncate(start);
            return Err(CallError::TooLarge(crate::reason(format!(
                "the request frame exceeds the {} byte limit",
                inner.max_frame
            ))));
        }
        Ok(())
    }
}

/// The prefix of TTHeader string headers that travel down a whole call chain (Kitex's
/// persistent metainfo).
pub const PERSIST_PREFIX: &str = "RPC_PERSIST_";
/// The prefix of headers that travel one hop only (Kitex's transient metainfo).
pub const TRANSIT_PREFIX: &str = "RPC_TRANSIT_";
/// The prefix of headers a server sends back with its reply (Kitex's backward metainfo).
pub const BACKWARD_PREFIX: &str = "RPC_BACKWARD_";

/// How long dropping a client waits for what it queued (oneway calls, say) to be sent,
/// and for calls in flight. Dropped on an event-loop thread, the wait happens on a thread
/// of its own instead.
const FLUSH_ON_DROP: Duration = Duration::from_secs(1);

impl Drop for BaseInner {
    fn drop(&mut self) {
        // The last handle is gone: stop the client's own event loop, letting queued
        // requests leave first (within a bound). Dropped from one of its own callbacks,
        // the loop stops once that callback returns.
        if let Some(rt) = self.runtime.take().and_then(|rt| Arc::try_unwrap(rt).ok()) {
            if netpoll::current_core().is_some() {
                // On an event loop (a server handler, or one of this client's own
                // callbacks): waiting here would stall that loop. Let the flush finish on
                // a thread of its own.
                let _ = std::thread::Builder::new()
                    .name("rpc-client-drop".into())
                    .spawn(move || rt.shutdown(FLUSH_ON_DROP));
            } else {
                rt.shutdown(FLUSH_ON_DROP);
            }
        }
    }
}

#[derive(Clone)]
struct Base {
    inner: Arc<BaseInner>,
    timeout: Option<Duration>,
    /// The consistent-hashing key of the calls, if given.
    key: Option<u64>,
    /// Headers every call of this handle carries (persistent metadata inherited from the
    /// call being served, or set with `with_header`).
    headers: Option<Arc<Metadata>>,
    /// The span the calls are made within: each carries a child of it.
    trace: Option<Arc<TraceContext>>,
}

impl fmt::Debug for Base {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Client")
            .field("service", &&*self.inner.service)
            .field("cluster", &self.inner.cluster)
            .field("transport", &self.inner.transport)
            .field("payload", &self.inner.payload)
            .field("timeout", &self.timeout)
            .finish()
    }
}

impl Base {
    /// The encoder of one call; the frame is written on the connection's core.
    fn encoder(
        &self,
        method: &'static str,
        kind: MessageType,
        meta: Metadata,
        timeout: Option<Duration>,
        body: impl FnOnce(&Envelope, &mut BytesMut, &Headers<'_>) -> Result<(), wire::WriteError>
            + Send
            + 'static,
    ) -> impl FnOnce(&mut BytesMut, i32) -> Result<(), CallError> + Send + 'static {
        let inner = self.inner.clone();
        move |out: &mut BytesMut, seq: i32| {
            inner.encode_frame(method, kind, &meta, timeout, out, seq, body)
        }
    }

    /// The backward values of a reply frame (TTHeader string headers `RPC_BACKWARD_*`,
    /// by their names without the prefix).
    fn backward(&self, frame: &Bytes) -> Metadata {
        let mut m = Metadata::default();
        if let Ok(p) = wire::parse(self.inner.split, frame.clone()) {
            if let Some(tt) = p.ttheader {
                for (k, v) in tt.str_headers() {
                    if let Some(name) = k.strip_prefix(BACKWARD_PREFIX.as_bytes()) {
                        m.insert(String::from_utf8_lossy(name), Bytes::copy_from_slice(v));
                    }
                }
            }
        }
        m
    }

    /// Opens a reply frame: its message type, payload encoding and body (the result, or
    /// the exception it carries).
    fn open_reply(&self, frame: Bytes) -> Result<(MessageType, Payload, Bytes), CallError> {
        netpoll_codec::envelope::open_reply(self.inner.split, frame)
            .map_err(|e| CallError::Protocol(crate::cause(e)))
    }
}

/// The payload encoding of a [`Client`]'s calls: Thrift (binary or compact) or Kitex
/// Protobuf. What a client can send and receive with it is said by [`Request`] and
/// [`Response`]; generated code never names either.
pub trait PayloadCodec: Clone + Send + Sync + fmt::Debug + 'static {
    /// The encoding on the wire.
    fn payload(&self) -> Payload;
    /// Reads the body of an EXCEPTION reply: the application error it carries.
    fn read_exception(&self, body: Bytes) -> Result<ApplicationException, CallError>;

    /// The error an EXCEPTION reply stands for. Default: the application exception
    /// [`read_exception`](Self::read_exception) reads.
    fn read_error(&self, body: Bytes) -> CallError {
        match self.read_exception(body) {
            Ok(e) => CallError::Application(e),
            Err(e) => e,
        }
    }
}

/// Thrift payloads, binary or compact.
#[derive(Debug, Clone, Copy, Default)]
pub struct Thrift {
    /// Compact protocol instead of binary.
    pub compact: bool,
}

/// Kitex Protobuf payloads.
#[derive(Debug, Clone, Copy, Default)]
pub struct Protobuf;

impl PayloadCodec for Thrift {
    fn payload(&self) -> Payload {
        if self.compact {
            Payload::ThriftCompact
        } else {
            Payload::ThriftBinary
        }
    }

    fn read_exception(&self, body: Bytes) -> Result<ApplicationException, CallError> {
        wire::decode_thrift::<ApplicationException>(self.payload(), body)
            .map_err(|e| CallError::Decode(crate::cause(e)))
    }
}

impl PayloadCodec for Protobuf {
    fn payload(&self) -> Payload {
        Payload::Protobuf
    }

    /// A gRPC status (an `ErrorProto` with the gRPC code in field 3) is a
    /// [`CallError::Status`] with that code's kind; a Kitex Protobuf `ErrorProto` an
    /// application exception.
    fn read_error(&self, body: Bytes) -> CallError {
        match wire::GrpcStatus::decode(body.clone()) {
            Ok(s) if s.code != 0 => {
                let code = s.code.min(255) as u8;
                CallError::Status(crate::status::from_grpc_with(code, s.message, s.details))
            }
            _ => match self.read_exception(body) {
                Ok(e) => CallError::Application(e),
                Err(e) => e,
            },
        }
    }

    fn read_exception(&self, body: Bytes) -> Result<ApplicationException, CallError> {
        let e = frame::ErrorProto::decode(body).map_err(|e| CallError::Decode(crate::cause(e)))?;
        Ok(ApplicationException::new(
            netpoll_codec::thrift::ApplicationExceptionKind::from_i32(e.type_id),
            e.message,
        ))
    }
}

/// A request a client of codec `C` can send: for [`Thrift`], any Thrift message (the
/// generated `{Service}{Method}Args`); for [`Protobuf`], any protobuf message.
pub trait Request<C>: Send + Sync + 'static {
    /// Writes the whole request frame in `env`'s shape.
    fn write(
        &self,
        env: &Envelope,
        out: &mut BytesMut,
        kind: MessageType,
        h: &Headers<'_>,
    ) -> Result<(), wire::WriteError>;
}

/// A response a client of codec `C` can read: for [`Thrift`], the generated
/// `{Service}{Method}Result`; for [`Protobuf`], the method's output message.
pub trait Response<C>: Sized {
    /// Decodes the body of a REPLY.
    fn read(payload: Payload, body: Bytes) -> Result<Self, CallError>;
}

impl<M: Message + Send + Sync + 'static> Request<Thrift> for M {
    fn write(
        &self,
        env: &Envelope,
        out: &mut BytesMut,
        kind: MessageType,
        h: &Headers<'_>,
    ) -> Result<(), wire::WriteError> {
        wire::write_thrift(env, out, kind, self, h)
    }
}

impl<M: Message> Response<Thrift> for M {
    fn read(payload: Payload, body: Bytes) -> Result<Self, CallError> {
        wire::decode_thrift::<M>(payload, body).map_err(|e| CallError::Decode(crate::cause(e)))
    }
}

impl<M: prost::Message + Send + Sync + 'static> Request<Protobuf> for M {
    fn write(
        &self,
        env: &Envelope,
        out: &mut BytesMut,
        kind: MessageType,
        h: &Headers<'_>,
    ) -> Result<(), wire::WriteError> {
        wire::write_pb(env, out, kind, self, h)
    }
}

impl<M: prost::Message + Default> Response<Protobuf> for M {
    fn read(_payload: Payload, body: Bytes) -> Result<Self, CallError> {
        M::decode(body).map_err(|e| CallError::Decode(crate::cause(e)))
    }
}

/// A client of one service: calls encoded with codec `C` over TTHeader or Framed,
/// multiplexed over a few connections. Cheap to clone; callable from any thread. The one
/// client every generated service client wraps.
#[derive(Clone)]
pub struct Client<C: PayloadCodec> {
    base: Base,
    codec: C,
}

/// A Thrift client (binary or compact).
pub type ThriftClient = Client<Thrift>;
/// A Kitex Protobuf client.
pub type PbClient = Client<Protobuf>;

impl<C: PayloadCodec> fmt::Debug for Client<C> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.base.fmt(f)
    }
}

impl<C: PayloadCodec> Client<C> {
    /// A builder for a client of the server at `addr`.
    pub fn builder(addr: impl ToAddrs) -> ClientBuilder {
        ClientBuilder::new(addr)
    }

    /// The same client with another per-call deadline.
    pub fn with_timeout(&self, timeout: Option<Duration>) -> Self {
        let mut c = self.clone();
        c.base.timeout = timeout;
        c
    }

    /// The same client, sending its calls with `key` for consistent hashing
    /// ([`ConsistentHash`](crate::balance::ConsistentHash)): calls with one key go to one
    /// instance.
    pub fn with_key(&self, key: u64) -> Self {
        let mut c = self.clone();
        c.base.key = Some(key);
        c
    }

    /// The same client, for calls made while serving `ctx` (from inside a handler): they
    /// get at most the time the caller of `ctx` has left, carry on its persistent
    /// metadata (TTHeader string headers named `RPC_PERSIST_*`, as Kitex's metainfo
    /// propagates them down a call chain), and join its W3C trace: each call's
    /// `traceparent` is the span a tracing middleware opens for it (a child of the span
    /// serving `ctx`), or without one the span serving `ctx` itself
    /// ([`CallContext::trace`](crate::server::CallContext::trace)).
    pub fn within(&self, ctx: &crate::server::CallContext<'_>) -> Self {
        let mut c = self.clone();
        if let Some(d) = ctx.deadline() {
            let left = d.saturating_duration_since(netpoll::now());
            c.base.timeout = Some(c.base.timeout.map_or(left, |t| t.min(left)));
        }
        if let Some(tt) = ctx.ttheader() {
            for (k, v) in tt.str_headers() {
                if k.starts_with(PERSIST_PREFIX.as_bytes()) {
                    let k = String::from_utf8_lossy(k).into_owned();
                    c = c.with_header(&k, Bytes::copy_from_slice(v));
                }
            }
        }
        // The downstream call joins the trace of the call served, as its child.
        c.base.trace = ctx.trace().map(Arc::new);
        c
    }

    /// The same client, making its calls within span `parent` (a W3C trace context from
    /// elsewhere: an HTTP request being served, say). Each call carries, as `traceparent`
    /// (and `tracestate`), the span a tracing middleware opens for it as a child of
    /// `parent`, or without one `parent` itself.
    pub fn with_trace(&self, parent: TraceContext) -> Self {
        let mut c = self.clone();
        c.base.trace = Some(Arc::new(parent));
        c
    }

    /// The same client, sending header `key: value` (a TTHeader string header) with every
    /// call. Name it `RPC_PERSIST_...` for it to travel on down a call chain.
    pub fn with_header(&self, key: &str, value: impl Into<Bytes>) -> Self {
        let mut c = self.clone();
        let mut m = c.base.headers.as_deref().cloned().unwrap_or_default();
        m.insert(key, value);
        c.base.headers = Some(Arc::new(m));
        c
    }

    /// The same client, sending `key: value` to the next hop only (Kitex's transient
    /// metainfo: header `RPC_TRANSIT_{key}`).
    pub fn with_transient(&self, key: &str, value: impl Into<Bytes>) -> Self {
        self.with_header(&format!("{TRANSIT_PREFIX}{key}"), value)
    }

    /// The same client, sending `key: value` down the whole call chain (Kitex's
    /// persistent metainfo: header `RPC_PERSIST_{key}`, carried on by [`within`](Self::within)).
    pub fn with_persistent(&self, key: &str, value: impl Into<Bytes>) -> Self {
        self.with_header(&format!("{PERSIST_PREFIX}{key}"), value)
    }

    /// Calls answered by each current instance so far (for load reports).
    pub fn answered_by_instance(&self) -> Vec<(Addr, u64)> {
        self.base.inner.cluster.answered()
    }

    /// Retries made so far.
    pub fn retries(&self) -> u64 {
        self.base.inner.retries.load(Ordering::Relaxed)
    }

    /// Starts the client's middlewares on a call of `method`, and gathers the headers the
    /// call carries: the handle's, the middlewares', and its trace context.
    fn start(&self, method: &'static str) -> Result<(Option<Box<Watch>>, Metadata), CallError> {
        let mut meta = self.base.headers.as_deref().cloned().unwrap_or_default();
        if self.base.inner.middleware.is_empty() {
            // No span of its own: the call passes its parent on unchanged, as W3C trace
            // context has a hop without a span do.
            if let Some(parent) = &self.base.trace {
                inject(&mut meta, parent);
            }
            return Ok((None, meta));
        }
        let call = ClientCall {
            inner: self.base.inner.clone(),
            method,
            deadline: self.base.timeout.map(|t| netpoll::now() + t),
            peer: None,
            seq_id: 0,
            request_bytes: 0,
            started: std::time::Instant::now(),
            trace: self.base.trace.clone(),
        };
        match crate::middleware::start(&self.base.inner.middleware, &call.info(), &mut meta) {
            Ok(running) => {
                // The span a middleware opened for the call, else the parent unchanged.
                match meta.trace.take() {
                    Some(span) => inject(&mut meta, &span),
                    None => {
                        if let Some(parent) = &self.base.trace {
                            inject(&mut meta, parent);
                        }
                    }
                }
                Ok((
                    running.map(|running| Box::new(Watch { call, running })),
                    meta,
                ))
            }
            Err(status) => Err(CallError::Application(status.to_exception())),
        }
    }

    /// Decodes a reply frame: the result, or the error it carries.
    fn decode<R: Response<C>>(&self, frame: Bytes) -> Result<R, CallError> {
        let (kind, payload, body) = self.base.open_reply(frame)?;
        match kind {
            MessageType::Reply => R::read(payload, body),
            MessageType::Exception => Err(self.codec.read_error(body)),
            k => Err(CallError::Protocol(crate::reason(format!(
                "a {k:?} message in reply"
            )))),
        }
    }

    /// Calls `method` (its IDL name) with its request and waits for the response.
    pub fn call<A: Request<C>, R: Response<C> + Send + 'static>(
        &self,
        method: &'static str,
        args: A,
    ) -> Result<R, CallError> {
        wait(|tx| {
            self.call_with(method, args, move |r| {
                let _ = tx.send(r);
            })
        })
    }

    /// Calls `method` and returns at once; `done` gets the response (or the failure) on
    /// a core of the client's runtime. Many calls can be in flight from one thread this
    /// way.
    pub fn call_with<A: Request<C>, R: Response<C> + 'static>(
        &self,
        method: &'static str,
        args: A,
        done: impl FnOnce(Result<R, CallError>) + Send + 'static,
    ) {
        self.call_inner(method, args, false, move |_, r| done(r));
    }

    /// Calls `method` and waits for its response and the values the server sent back
    /// with it (Kitex's backward metainfo: TTHeader string headers `RPC_BACKWARD_*`,
    /// returned by their names without the prefix).
    pub fn call_meta<A: Request<C>, R: Response<C> + Send + 'static>(
        &self,
        method: &'static str,
        args: A,
    ) -> Result<(R, Metadata), CallError> {
        wait(|tx| {
            self.call_inner(method, args, true, move |back, r: Result<R, CallError>| {
                let _ = tx.send(r.map(|v| (v, back.unwrap_or_default())));
            })
        })
    }

    /// [`call_meta`](Self::call_meta) as a future, for async callers.
    pub fn call_meta_async<A: Request<C>, R: Response<C> + Send + 'static>(
        &self,
        method: &'static str,
        args: A,
    ) -> CallFuture<(R, Metadata)> {
        CallFuture::start(|completer| {
            self.call_inner(method, args, true, move |back, r: Result<R, CallError>| {
                completer.complete(r.map(|v| (v, back.unwrap_or_default())))
            })
        })
    }

    /// A call; `done` gets the backward values (if `backward`) and the result.
    fn call_inner<A: Request<C>, R: Response<C> + 'static>(
        &self,
        method: &'static str,
        args: A,
        backward: bool,
        done: impl FnOnce(Option<Metadata>, Result<R, CallError>) + Send + 'static,
    ) {
        let (watch, meta) = match self.start(method) {
            Ok(x) => x,
            // Reported soon, not from inside this call (see `Cluster::soon`).
            Err(e) => return self.base.inner.cluster.soon(move || done(None, Err(e))),
        };
        let inner = &self.base.inner;
        let method_breaker = inner.method_breakers.as_ref().and_then(|m| m.find(method));
        if let Some(b) = inner.method_breaker(method_breaker) {
            if !b.allow(netpoll::now()) {
                let e = CallError::CircuitOpen(crate::reason(format!(
                    "method {method} of {} fails too often",
                    inner.cluster.service
                )));
                return inner
                    .cluster
                    .soon(move || finish(watch, Ended::default(), Err(e), |r| done(None, r)));
            }
        }
        inner.budget.call(inner.cluster.here());
        let watching = watch.is_some();
        let complete = move |mut ended: Ended, result: Result<R, CallError>| {
            let back = ended.0.as_mut().and_then(|i| i.backward.take());
            finish(watch, ended, result, |r| done(back, r))
        };
        let quantile = inner.retry.backup_quantile.map(|q| {
            inner
                .latencies
                .quantile(q, 100)
                .or(inner.retry.backup_after)
                .unwrap_or(Duration::from_millis(10))
        });
        let call = Call {
            method,
            meta,
            watching,
            method_breaker,
            backward,
        };
        let Some(delay) = quantile.or(inner.retry.backup_after) else {
            return Flight::new(self, call, Args::Own(args), None, complete).send();
        };
        // A backup request: if no reply came within `delay`, a copy goes to another
        // instance; the first reply ends the call, the other is dropped.
        let args = Arc::new(args);
        let once: Arc<Mutex<Option<Complete<R>>>> = Arc::new(Mutex::new(Some(Box::new(complete))));
        let first: FirstPick = Arc::new(Mutex::new(None));
        let take = |once: &Arc<Mutex<Option<Complete<R>>>>| -> Complete<R> {
            let once = once.clone();
            Box::new(move |ended, result| {
                let c = once.lock().unwrap_or_else(|p| p.into_inner()).take();
                if let Some(c) = c {
                    c(ended, result);
                }
            })
        };
        let flight = |first: Option<FirstPick>| {
            Flight::new(
                self,
                call.clone(),
                Args::Shared(args.clone()),
                first,
                take(&once),
            )
        };
        flight(Some(first.clone())).send();
        let backup = flight(None);
        inner.cluster.after(delay, move || {
            let pending = once.lock().unwrap_or_else(|p| p.into_inner()).is_some();
            let inner = &backup.client.base.inner;
            if pending && inner.budget.try_retry(inner.cluster.here()) {
                inner.retries.fetch_add(1, Ordering::Relaxed);
                let mut backup = backup;
                if let Some(a) = first.lock().unwrap_or_else(|p| p.into_inner()).clone() {
                    backup.tried.push(a);
                }
                backup.send();
            }
        });
    }

    /// Calls `method` and returns a [`CallFuture`] of its response: await it from any
    /// executor (tokio, async-std, a hand-written poll loop). The call runs on the client's
    /// cores whatever the executor does; the future is woken when it ends.
    pub fn call_async<A: Request<C>, R: Response<C> + Send + 'static>(
        &self,
        method: &'static str,
        args: A,
    ) -> CallFuture<R> {
        CallFuture::start(|completer| self.call_with(method, args, move |r| completer.complete(r)))
    }

    /// Opens a streaming call of `method` (gRPC only): send its requests and read its
    /// replies through the handle, from any thread but a netpoll core. The stream goes to
    /// one instance, picked by the balancer; its deadline is the client's timeout, sent
    /// as `grpc-timeout` and enforced here too. Generated clients call this for methods
    /// that stream.
    pub fn stream<Req, Resp>(
        &self,
        method: &'static str,
    ) -> Result<ClientStream<Req, Resp>, CallError>
    where
        Req: prost::Message,
        Resp: prost::Message + Default,
    {
        self.open_stream(method, None)
    }

    /// Opens a streaming call of `method` whose replies go to `on_event` instead of
    /// `recv`: for a stream opened on a netpoll core (a handler that streams to another
    /// service), where nothing may block. Each reply is decoded and handed over on the
    /// core of the stream's connection as it arrives (and credited to the server at
    /// once: the callback is the reader), then the end, once. Send with
    /// [`ClientStream::try_send`], which never waits; [`ClientStream::close_send`] and
    /// [`ClientStream::cancel`] never wait either. Keep the handle while the stream runs:
    /// dropping it cancels the stream. A reply that does not decode ends the events with
    /// that error (cancel the stream then); a panicking callback is told nothing more.
    pub fn stream_with<Req, Resp>(
        &self,
        method: &'static str,
        mut on_event: impl FnMut(StreamEvent<Resp>) + Send + 'static,
    ) -> Result<ClientStream<Req, Resp>, CallError>
    where
        Req: prost::Message,
        Resp: prost::Message + Default,
    {
        let mut done = false;
        let mut event = move |e: StreamEvent<Resp>| {
            let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| on_event(e)));
            if r.is_err() {
                tracing::warn!(
                    method,
                    "a stream's callback panicked; it is told nothing more"
                );
            }
            r.is_ok()
        };
        let observer: super::stream::Observer = Box::new(move |d| {
            if done {
                return;
            }
            done = match d {
                Delivery::Message(m) => match Resp::decode(m) {
                    Ok(r) => !event(StreamEvent::Message(r)),
                    Err(e) => {
                        let why = format!("a reply does not decode: {e}");
                        event(StreamEvent::End(Err(CallError::Protocol(crate::reason(
                            why,
                        )))));
                        true
                    }
                },
                Delivery::End(r) => {
                    event(StreamEvent::End(r));
                    true
                }
            };
        });
        self.open_stream(method, Some(observer))
    }

    fn open_stream<Req, Resp>(
        &self,
        method: &'static str,
        observer: Option<super::stream::Observer>,
    ) -> Result<ClientStream<Req, Resp>, CallError>
    where
        Req: prost::Message,
        Resp: prost::Message + Default,
    {
        let inner = &self.base.inner;
        if !inner.grpc {
            return Err(CallError::Protocol(crate::reason(
                "streaming calls need the gRPC transport (ClientBuilder::grpc)",
            )));
        }
        // The middlewares start the stream (they may refuse it, or open its span) and end
        // with it, whichever way it ends.
        let (watch, meta) = self.start(method)?;
        let snap = inner.cluster.snapshot();
        let info = self.base.info(method, None);
        let Some(i) = snap.pick(&info, self.base.key, &[], inner.cluster.here()) else {
            let e = CallError::NoInstance(crate::reason(format!(
                "no instance of {} can take the stream",
                inner.cluster.service
            )));
            if let Some(w) = watch {
                w.end(Some(&e), 0);
            }
            return Err(e);
        };
        let channel = snap.endpoints[i].channel.clone();
        let timeout = self.base.timeout;
        let encode = self
            .base
            .encoder(method, MessageType::Call, meta, timeout, |env, out, h| {
                wire::write_pb(env, out, MessageType::Call, &(), h)
            });
        let shared = Arc::new(super::stream::Shared::default());
        *shared.observer.lock().unwrap_or_else(|p| p.into_inner()) = observer;
        if let Some(w) = watch {
            *shared.on_end.lock().unwrap_or_else(|p| p.into_inner()) =
                Some(Box::new(move |e: Option<&CallError>| w.end(e, 0)));
        }
        let core = channel.open_stream(Box::new(encode), timeout, shared.clone());
        Ok(ClientStream::new(
            shared,
            self.base.inner.clone(),
            channel.runtime().clone(),
            core,
            super::conn::stream_op,
            inner.send_gzip,
        ))
    }

    /// Sends a oneway call: nothing comes back.
    pub fn oneway<A: Request<C>>(&self, method: &'static str, args: A) {
        let Ok((watch, meta)) = self.start(method) else {
            return; // rejected by a middleware: not sent
        };
        let snap = self.base.inner.cluster.snapshot();
        let info = self.base.info(method, None);
        match snap.pick(&info, self.base.key, &[], self.base.inner.cluster.here()) {
            Some(i) => snap.endpoints[i].channel.send_oneway(self.base.encoder(
                method,
                MessageType::Oneway,
                meta,
                None,
                move |env, out, h| args.write(env, out, MessageType::Oneway, h),
            )),
            None => tracing::warn!(
                service = %self.base.inner.cluster.service,
                method,
                "oneway call dropped: no instance can take it"
            ),
        }
        if let Some(w) = watch {
            w.end(None, 0);
        }
    }
}

/// Waits on the calling thread for the result a call sends to the sender `start` gets.
/// Refused on an event-loop thread, where waiting would stall the loop.
fn wait<T>(
    start: impl FnOnce(std::sync::mpsc::SyncSender<Result<T, CallError>>),
) -> Result<T, CallError> {
    if netpoll::current_core().is_some() {
        return Err(CallError::WouldBlockCore);
    }
    let (tx, rx) = std::sync::mpsc::sync_channel(1);
    start(tx);
    // Deadlines are enforced on the loop's timers; if the runtime stops first, the
    // callback is dropped and so is the sender.
    rx.recv().unwrap_or(Err(CallError::RuntimeStopped))
}

/// The response of a call made with [`Client::call_async`], as a `Future`.
#[derive(Debug)]
pub struct CallFuture<R> {
    shared: Arc<Mutex<FutureState<R>>>,
}

impl<R> CallFuture<R> {
    /// A future that `start`'s call completes through the completer it gets.
    fn start(start: impl FnOnce(Completer<R>)) -> Self {
        let shared = Arc::new(Mutex::new(FutureState {
            result: None,
            waker: None,
        }));
        start(Completer(Some(shared.clone())));
        CallFuture { shared }
    }
}

#[derive(Debug)]
struct FutureState<R> {
    result: Option<Result<R, CallError>>,
    waker: Option<std::task::Waker>,
}

/// Completes a [`CallFuture`]; dropped without completing (the client's runtime stopped
/// with the call pending), it completes it with [`CallError::RuntimeStopped`] so that no
/// future waits forever.
struct Completer<R>(Option<Arc<Mutex<FutureState<R>>>>);

impl<R> Completer<R> {
    fn complete(mut self, r: Result<R, CallError>) {
        if let Some(shared) = self.0.take() {
            Self::set(&shared, r);
        }
    }

    fn set(shared: &Mutex<FutureState<R>>, r: Result<R, CallError>) {
        let waker = {
            let mut st = shared.lock().unwrap_or_else(|p| p.into_inner());
            st.result = Some(r);
            st.waker.take()
        };
        if let Some(w) = waker {
            w.wake();
        }
    }
}

impl<R> Drop for Completer<R> {
    fn drop(&mut self) {
        if let Some(shared) = self.0.take() {
            Self::set(&shared, Err(CallError::RuntimeStopped));
        }
    }
}

impl<R> std::future::Future for CallFuture<R> {
    type Output = Result<R, CallError>;

    fn poll(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Self::Output> {
        let mut st = self.shared.lock().unwrap_or_else(|p| p.into_inner());
        match st.result.take() {
            Some(r) => std::task::Poll::Ready(r),
            None => {
                match &st.waker {
                    Some(w) if w.will_wake(cx.waker()) => {}
                    _ => st.waker = Some(cx.waker().clone()),
                }
                std::task::Poll::Pending
            }
        }
    }
}

/// What a call is, whichever try: its method, headers and how it is watched.
#[derive(Clone)]
struct Call {
    method: &'static str,
    meta: Metadata,
    /// Middleware watches the call: note each try's sequence id and request size.
    watching: bool,
    /// The slot of the method's breaker, if it has one.
    method_breaker: Option<u16>,
    /// The caller wants the reply's backward values.
    backward: bool,
}

/// A call's request: its own, or shared by a call and its backup request.
enum Args<A> {
    Own(A),
    Shared(Arc<A>),
}

impl<A> Args<A> {
    fn get(&self) -> &A {
        match self {
            Args::Own(a) => a,
            Args::Shared(a) => a,
        }
    }
}

/// One call on its way: its tries so far, and what to do with its outcome. Boxed once
/// per call, it is what the connection holds while a try waits for its reply
/// ([`Outgoing`](super::conn::Outgoing)), and it is sent again as is for a retry.
struct Flight<C: PayloadCodec, A, R, K> {
    client: Client<C>,
    call: Call,
    args: Args<A>,
    deadline: Option<Instant>,
    /// Instances tried so far.
    tried: Vec<Addr>,
    retries: u32,
    last_error: Option<CallError>,
    /// Where the first instance picked is noted, for a backup request to avoid it.
    first: Option<FirstPick>,
    /// The last failure was its instance's (whose breaker opened on it).
    blamed: bool,
    /// How many instances the list had at the last try (for the method's breaker).
    instances: usize,
    /// The try on its way, once sent.
    attempt: Option<Attempt>,
    /// Taken when the call ends (taken, not moved out with the rest of the call: the
    /// call state stays where it is).
    complete: Option<K>,
    _reply: std::marker::PhantomData<fn() -> R>,
}

/// One try of a call: where it went and what it sent.
struct Attempt {
    snap: Arc<Snapshot>,
    /// Its instance, in `snap`.
    index: usize,
    /// The slot its instance counted it in flight in.
    counted: Here,
    started: Instant,
    /// The time the server is told the call has left.
    remaining: Option<Duration>,
    /// The try's sequence id and request frame size, noted for the call's middlewares.
    seq_id: i32,
    request_bytes: usize,
}

/// How a call's last try ended, for its middlewares (and the caller's backward values),
/// when anything reads it: a call no middleware watches, whose caller wants no backward
/// values, and which succeeded carries none (it is passed through a few closures, where
/// the whole record was copied each time).
#[derive(Debug, Default)]
struct Ended(Option<Box<EndedInfo>>);

/// What [`Ended`] carries.
#[derive(Debug, Default)]
struct EndedInfo {
    peer: Option<SocketAddr>,
    seq_id: i32,
    request_bytes: usize,
    response_bytes: usize,
    backward: Option<Metadata>,
}

impl Ended {
    fn peer(&self) -> Option<SocketAddr> {
        self.0.as_ref().and_then(|i| i.peer)
    }
}

/// What runs once a call is over (middlewares, then the caller's callback), where it
/// must be shared (a call and its backup request).
type Complete<R> = Box<dyn FnOnce(Ended, Result<R, CallError>) + Send>;

/// The first instance a call was sent to.
type FirstPick = Arc<Mutex<Option<Addr>>>;

impl<C, A, R, K> Flight<C, A, R, K>
where
    C: PayloadCodec,
    A: Request<C>,
    R: Response<C> + 'static,
    K: FnOnce(Ended, Result<R, CallError>) + Send + 'static,
{
    fn new(
        client: &Client<C>,
        call: Call,
        args: Args<A>,
        first: Option<FirstPick>,
        complete: K,
    ) -> Box<Self> {
        Box::new(Flight {
            client: client.clone(),
            call,
            args,
            deadline: client.base.timeout.map(|t| netpoll::now() + t),
            tried: Vec::new(),
            retries: 0,
            last_error: None,
            first,
            blamed: false,
            instances: 1,
            attempt: None,
            complete: Some(complete),
            _reply: std::marker::PhantomData,
        })
    }

    /// Sends the call to an instance it has not tried yet.
    fn send(mut self: Box<Self>) {
        let inner = &self.client.base.inner;
        let snap = inner.cluster.snapshot();
        let now = netpoll::now();
        let remaining = match self.deadline {
            Some(d) => match d.checked_duration_since(now) {
                Some(r) if !r.is_zero() => Some(r),
                _ => return self.finish_soon(CallError::Timeout),
            },
            None => None,
        };
        // Each try waits at most the per-try timeout, so that a timed-out try of an
        // idempotent method leaves time for another.
        let remaining = match (remaining, inner.retry.try_timeout) {
            (Some(r), Some(t)) => Some(r.min(t)),
            (r, t) => r.or(t),
        };
        let tried: Vec<usize> = self
            .tried
            .iter()
            .filter_map(|a| snap.endpoints.iter().position(|e| e.addr == *a))
            .collect();
        let info = self.client.base.info(self.call.method, None);
        let here = inner.cluster.here();
        let Some(index) = snap.pick(&info, self.client.base.key, &tried, here) else {
            let e = match self.last_error.take() {
                Some(e) => e,
                None if snap.endpoints.is_empty() => CallError::NoInstance(crate::reason(format!(
                    "no instance of {} is known",
                    inner.cluster.service
                ))),
                None => CallError::NoInstance(crate::reason(format!(
                    "every instance of {} is failing to connect or has its breaker open",
                    inner.cluster.service
                ))),
            };
            return self.finish_soon(e);
        };
        let ep = &snap.endpoints[index];
        self.instances = snap.endpoints.len();
        if let Some(first) = self.first.take() {
            *first.lock().unwrap_or_else(|p| p.into_inner()) = Some(ep.addr.clone());
        }
        if !ep.breaker.allow(now) {
            // Its half-open breaker is probing already: another instance.
            self.tried.push(ep.addr.clone());
            self.last_error = Some(CallError::CircuitOpen(crate::reason(format!(
                "instance {} fails too often",
                ep.addr
            ))));
            return self.send();
        }
        let channel = ep.channel.clone();
        // Counted in this core's own slot if the call stays on this core (it then ends
        // here too), else in the shared one.
        let route = channel.route();
        let counted = if route.local { here } else { Here::SHARED };
        ep.started(counted);
        self.attempt = Some(Attempt {
            snap,
            index,
            counted,
            started: now,
            remaining,
            seq_id: 0,
            request_bytes: 0,
        });
        channel.send_routed(route, self, remaining);
    }

    /// The reply (or failure) of the try on its way.
    fn answered(mut self: Box<Self>, r: Result<Bytes, CallError>) {
        let Some(a) = self.attempt.take() else {
            return self.finish(
                Ended::default(),
                Err(CallError::Protocol(crate::reason(
                    "a reply to a call never sent",
                ))),
            );
        };
        let ep = &a.snap.endpoints[a.index];
        let latency = netpoll::now().saturating_duration_since(a.started);
        let len = r.as_ref().map_or(0, Bytes::len);
        let backward = match (&r, self.call.backward) {
            (Ok(frame), true) => Some(self.client.base.backward(frame)),
            _ => None,
        };
        let result = r.and_then(|frame| self.client.decode::<R>(frame));
        let replied = len > 0;
        let ended = if self.call.watching || backward.is_some() || result.is_err() {
            Ended(Some(Box::new(EndedInfo {
                peer: ep.addr.as_tcp(),
                seq_id: a.seq_id,
                request_bytes: a.request_bytes,
                response_bytes: len,
                backward,
            })))
        } else {
            Ended(None)
        };
        let here = self.client.base.inner.cluster.here();
        ep.ended(a.counted, here, latency, replied);
        let inner = &self.client.base.inner;
        if result.is_ok() && inner.retry.backup_quantile.is_some() {
            inner.latencies.record(latency);
        }
        // A call that failed here before reaching the instance (too large, queue full)
        // says nothing of it.
        if !matches!(
            result,
            Err(CallError::TooLarge(_) | CallError::QueueFull { .. })
        ) {
            let failed = result.as_ref().err().is_some_and(policy::counts_as_failure);
            let now = netpoll::now();
            ep.breaker.record(now, failed, here);
            // A failure its instance's breaker now answers for is that instance's, not
            // the method's: the method's breaker does not count it (else one bad instance
            // of two would stop every call of the method).
            self.blamed = failed && ep.breaker.is_open(now);
        }
        a.snap.picker.report(
            a.index,
            &crate::Outcome {
                error: result.as_ref().err().map(CallError::kind),
                response_bytes: len,
            },
            latency,
        );
        // A refused connect marks its instance down whether or not this call may try
        // again: other calls pass over it either way.
        let refused = matches!(result, Err(CallError::Connect(_)));
        if refused {
            a.snap.mark_down(a.index);
        }
        let e = match result {
            Err(e) if self.may_retry(&e) => e,
            r => return self.finish(ended, r),
        };
        if !(refused && self.untried_left()) {
            self.retries += 1;
        }
        let delay = self.client.base.inner.retry.delay(self.retries, &e);
        tracing::debug!(instance = %ep.addr, error = %e, retry = self.retries, "retrying");
        self.tried.push(ep.addr.clone());
        self.last_error = Some(e);
        drop(a);
        if delay.is_zero() {
            self.send();
        } else {
            let cluster = self.client.base.inner.cluster.clone();
            cluster.after(delay, move || self.send());
        }
    }

    /// Whether an instance this call has not tried remains after the one it is on.
    fn untried_left(&self) -> bool {
        self.tried.len() + 1 < self.instances
    }

    /// Whether the call may be tried again after `e`.
    ///
    /// A connect that failed uses up no retry while the call has instances left to try
    /// (as gRPC's transparent retry of calls that never left the client): the request
    /// reached no server, and the next try goes to another instance, so a service with
    /// one live instance among refusing ones still answers. Each instance is tried at most
    /// once, and the retry budget still bounds it.
    fn may_retry(&self, e: &CallError) -> bool {
        let inner = &self.client.base.inner;
        let free = inner.retry.max_retries > 0
            && matches!(e, CallError::Connect(_))
            && self.untried_left();
        (free || self.retries < inner.retry.max_retries)
            && inner.retry.allows(self.call.method, e)
            && self.deadline.is_none_or(|d| netpoll::now() < d)
            && inner.budget.try_retry(inner.cluster.here())
            && {
                inner.retries.fetch_add(1, Ordering::Relaxed);
                true
            }
    }

    /// Ends a call that failed before it was sent: soon, on a core of the client's
    /// runtime, never from inside the call that asked for it (see `Cluster::soon`).
    fn finish_soon(self: Box<Self>, e: CallError) {
        let cluster = self.client.base.inner.cluster.clone();
        cluster.soon(move || self.finish(Ended::default(), Err(e)));
    }

    // Boxed: the call state is not moved out of its box to end it.
    #[allow(clippy::boxed_local)]
    fn finish(mut self: Box<Self>, ended: Ended, result: Result<R, CallError>) {
        let this = &mut *self;
        if let Err(e) = &result {
            tracing::debug!(
                service = &*this.client.base.inner.service,
                method = this.call.method,
                peer = ?ended.peer(),
                error = %e,
                trace_id = trace_id(&this.call.meta).as_deref(),
                "call failed"
            );
        }
        if let Some(b) = this
            .client
            .base
            .inner
            .method_breaker(this.call.method_breaker)
        {
            let failed = result.as_ref().err().is_some_and(policy::counts_as_failure);
            if !(failed && this.blamed) {
                let here = this.client.base.inner.cluster.here();
                b.record_scaled(netpoll::now(), failed, this.instances, here);
            }
        }
        if let Some(complete) = this.complete.take() {
            complete(ended, result);
        }
    }
}

impl<C, A, R, K> super::conn::Outgoing for Flight<C, A, R, K>
where
    C: PayloadCodec,
    A: Request<C>,
    R: Response<C> + 'static,
    K: FnOnce(Ended, Result<R, CallError>) + Send + 'static,
{
    fn encode(&mut self, out: &mut BytesMut, seq: i32) -> Result<(), CallError> {
        let Some(a) = self.attempt.as_mut() else {
            return Err(CallError::Protocol(crate::reason(
                "a call sent without a try",
            )));
        };
        let args = self.args.get();
        let before = out.len();
        self.client.base.inner.encode_frame(
            self.call.method,
            MessageType::Call,
            &self.call.meta,
            a.remaining,
            out,
            seq,
            |env, out, h| args.write(env, out, MessageType::Call, h),
        )?;
        if self.call.watching {
            a.seq_id = seq;
            a.request_bytes = out.len() - before;
        }
        Ok(())
    }

    fn done(self: Box<Self>, result: Result<Bytes, CallError>) {
        self.answered(result)
    }
}

/// Ends a call: its middlewares, then the caller's callback.
fn finish<R>(
    watch: Option<Box<Watch>>,
    ended: Ended,
    result: Result<R, CallError>,
    done: impl FnOnce(Result<R, CallError>),
) {
    if let Some(mut w) = watch {
        let info = ended.0.as_deref();
        w.call.peer = info.and_then(|i| i.peer);
        w.call.seq_id = info.map_or(0, |i| i.seq_id);
        w.call.request_bytes = info.map_or(0, |i| i.request_bytes);
        w.end(result.as_ref().err(), info.map_or(0, |i| i.response_bytes));
    }
    done(result)
}

/// The trace id (hex) of the `traceparent` a call carries, for its logs.
fn trace_id(meta: &Metadata) -> Option<String> {
    let (_, v) = meta.iter().find(|(k, _)| *k == crate::trace::TRACEPARENT)?;
    TraceContext::parse(v, None).map(|t| t.trace_id_hex())
}

/// Puts `span` in `meta` as the `traceparent` and `tracestate` headers, in the W3C form
/// and in Kitex's (transient metainfo, which a Kitex server with OpenTelemetry reads).
fn inject(meta: &mut Metadata, span: &TraceContext) {
    let parent = Bytes::from(span.traceparent());
    meta.insert(crate::trace::TRACEPARENT, parent.clone());
    meta.insert(crate::trace::KITEX_TRACEPARENT, parent);
    if let Some(state) = &span.state {
        let state = Bytes::from(state.clone());
        meta.insert(crate::trace::TRACESTATE, state.clone());
        meta.insert(crate::trace::KITEX_TRACESTATE, state);
    }
}

impl Base {
    /// How the call looks to a picker.
    fn info(&self, method: &'static str, peer: Option<SocketAddr>) -> crate::CallInfo<'_> {
        crate::CallInfo {
            side: crate::Side::Client,
            service: &self.inner.service,
            method,
            transport: self.inner.transport,
            payload: self.inner.payload,
            peer,
            seq_id: 0,
            request_bytes: 0,
            start: netpoll::now(),
            deadline: None,
            headers: None,
            trace: None,
        }
    }
}

/// A client call as its middlewares see it.
struct ClientCall {
    inner: Arc<BaseInner>,
    method: &'static str,
    deadline: Option<Instant>,
    /// The instance that answered (or was tried last), once known.
    peer: Option<SocketAddr>,
    /// The sequence id and request frame size of the last try, once sent.
    seq_id: i32,
    request_bytes: usize,
    /// When the call was made.
    started: std::time::Instant,
    /// The span the call is made within.
    trace: Option<Arc<TraceContext>>,
}

impl ClientCall {
    fn info(&self) -> crate::CallInfo<'_> {
        crate::CallInfo {
            side: crate::Side::Client,
            service: &self.inner.service,
            method: self.method,
            transport: self.inner.transport,
            payload: self.inner.payload,
            peer: self.peer,
            // At `start`, before any try: 0. At `end`: those of the last try.
            seq_id: self.seq_id,
            request_bytes: self.request_bytes,
            start: self.started,
            deadline: self.deadline,
            headers: None,
            trace: self.trace.as_deref(),
        }
    }
}

/// The middlewares running on one client call, until it ends.
struct Watch {
    call: ClientCall,
    running: crate::middleware::Running,
}

impl Watch {
    fn end(self, error: Option<&CallError>, response_bytes: usize) {
        let outcome = crate::Outcome {
            error: error.map(CallError::kind),
            response_bytes,
        };
        self.running.end(&self.call.info(), &outcome);
    }
}
