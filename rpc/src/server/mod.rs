//! The server: IDL services served on netpoll cores, every protocol on one port.
//!
//! ```ignore
//! use std::time::Duration;
//! use netpoll_rpc::server::Server;
//!
//! let server = Server::builder()
//!     .addr("127.0.0.1:8888")
//!     .cores(1)
//!     .idle_timeout(Duration::from_secs(60))
//!     .service(hello_server(MyHello)) // generated: hello::HelloServer::new(MyHello)
//!     .start()?;
//! println!("serving on {}", server.local_addr());
//! server.shutdown(Duration::from_secs(5));
//! ```
//!
//! Each connection's protocol is detected from its first bytes: Framed or Buffered Thrift
//! (binary or compact), TTHeader (Thrift or Kitex Protobuf payload), or Kitex Protobuf.
//! Handlers run on the core that owns the connection. Replies keep the order of their calls
//! unless TTHeader's out-of-order flag allows otherwise.

mod conn;
mod context;
mod framing;
mod grpc;
mod health;
mod limit;
mod order;
mod reflection;
pub(crate) mod router;
mod service;
mod stats;
mod stream;

use std::fmt;
use std::net::{SocketAddr, ToSocketAddrs};
use std::sync::Arc;
use std::time::Duration;

use netpoll::{Runtime, RuntimeHandle};

use crate::registry::{Registration, Registry};

pub use context::{CallContext, Deferred, Reply, ReplyEncoder, ReplyError};
pub use framing::{Detect, Framing, Inner};
pub use health::{Health, ServingStatus};
pub use limit::{Admitted, Limiter};
pub use service::{encode_pb_reply, encode_thrift_reply, Call, Idl, MethodInfo, Service};
pub use stats::CloseCounts;
pub use stream::{
    OpenStream, Opened, Outbound, StreamCall, StreamHandler, StreamKind, StreamSender,
};

pub(crate) use grpc::GRPC_TRANSPORT;

use conn::ServerConn;
use router::Router;

/// Default of [`ServerBuilder::max_in_flight_per_connection`].
pub const DEFAULT_MAX_IN_FLIGHT: usize = 4096;
/// Default of [`ServerBuilder::high_water_mark`].
pub const DEFAULT_HIGH_WATER: usize = 4 << 20;

/// Bounds on what one connection may hold.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Limits {
    pub(crate) max_in_flight: usize,
    pub(crate) high_water: usize,
}

/// What every connection of a server shares.
pub(crate) struct Shared {
    router: Router,
    max_frame: usize,
    idle_timeout: Option<Duration>,
    read_timeout: Option<Duration>,
    limits: Limits,
    stats: stats::ServerStats,
    framings: Vec<Arc<dyn Framing>>,
    middleware: crate::middleware::Stack,
    metrics: Option<crate::metrics::Metrics>,
    rt: RuntimeHandle,
}

/// Why a server could not start.
#[derive(Debug)]
#[non_exhaustive]
pub enum ServerError {
    /// The listen address is invalid or could not be resolved.
    Addr(crate::Cause),
    /// The event loop could not start (io_uring refused, ...).
    Runtime(netpoll::BuildError),
    /// Listening failed (address in use, permission, ...).
    Listen(std::io::Error),
    /// Two services have the same name, or no service was registered.
    Services(String),
    /// The server could not register itself.
    Registry(crate::registry::RegistryError),
}

impl fmt::Display for ServerError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ServerError::Addr(e) => write!(f, "bad listen address: {e}"),
            ServerError::Runtime(e) => write!(f, "cannot start the event loop: {e}"),
            ServerError::Listen(e) => write!(f, "cannot listen: {e}"),
            ServerError::Services(e) => write!(f, "bad service set: {e}"),
            ServerError::Registry(e) => write!(f, "{e}"),
        }
    }
}

impl std::error::Error for ServerError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            ServerError::Addr(e) => Some(&**e),
            ServerError::Runtime(e) => Some(e),
            ServerError::Listen(e) => Some(e),
            ServerError::Services(_) => None,
            ServerError::Registry(e) => Some(e),
        }
    }
}

/// Settings of a [`Server`]; start it with [`start`](ServerBuilder::start).
pub struct ServerBuilder {
    addr: Result<SocketAddr, crate::Cause>,
    cores: Option<usize>,
    cpus: Option<Vec<usize>>,
    max_frame: usize,
    max_connections: Option<usize>,
    idle_timeout: Option<Duration>,
    read_timeout: Option<Duration>,
    write_timeout: Option<Duration>,
    limits: Limits,
    busy_poll: Duration,
    /// Receive pool buffers each core starts with (netpoll's default when `None`).
    buffer_count: Option<usize>,
    backend: Option<netpoll::BackendKind>,
    /// Also listen on this Unix domain socket.
    unix: Option<std::path::PathBuf>,
    services: Vec<Arc<dyn Service>>,
    /// Serve gRPC server reflection.
    reflection: bool,
    framings: Vec<Arc<dyn Framing>>,
    middleware: Vec<Arc<dyn crate::middleware::DynMiddleware>>,
    metrics: Option<crate::metrics::Metrics>,
    registry: Option<Registered>,
    #[cfg(feature = "tls")]
    tls: Option<crate::tls::TlsAcceptor>,
}

/// Where a server registers itself, as what.
struct Registered {
    registry: Arc<dyn Registry>,
    service: String,
    advertise: Option<SocketAddr>,
    weight: u32,
    tags: Vec<(String, String)>,
    /// How long a graceful stop waits after deregistering, for clients to see it.
    delay: Duration,
}

impl fmt::Debug for ServerBuilder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ServerBuilder")
            .field("addr", &self.addr)
            .field("cores", &self.cores)
            .field("max_frame", &self.max_frame)
            .field("max_connections", &self.max_connections)
            .field("idle_timeout", &self.idle_timeout)
            .field("read_timeout", &self.read_timeout)
            .field("write_timeout", &self.write_timeout)
            .field("limits", &self.limits)
            .field(
                "services",
                &self.services.iter().map(|s| s.name()).collect::<Vec<_>>(),
            )
            .finish()
    }
}

impl ServerBuilder {
    /// The address to listen on. Default `127.0.0.1:8888`; port 0 picks a free port.
    pub fn addr(mut self, addr: impl ToSocketAddrs) -> Self {
        self.addr = match addr.to_socket_addrs() {
            Ok(mut a) => a
                .next()
                .ok_or_else(|| crate::reason("the name resolved to no address")),
            Err(e) => Err(crate::cause(e)),
        };
        self
    }

    /// Event-loop cores (threads). Default: one per CPU the process may run on.
    pub fn cores(mut self, n: usize) -> Self {
        self.cores = Some(n.max(1));
        self
    }

    /// Pins core `i` to CPU `cpus[i % len]`.
    pub fn cpus(mut self, cpus: Vec<usize>) -> Self {
        self.cpus = Some(cpus);
        self
    }

    /// Largest frame accepted (default 16 MiB); a larger one closes its connection before
    /// its body is read.
    pub fn max_frame(mut self, bytes: usize) -> Self {
        self.max_frame = bytes;
        self
    }

    /// Connections served at once, over all cores (split evenly between the cores the
    /// server starts); further connections are closed as soon as they are accepted.
    /// Default: no limit.
    pub fn max_connections(mut self, n: usize) -> Self {
        self.max_connections = Some(n.max(1));
        self
    }

    /// Closes a connection that has had no call in flight and received nothing for this
    /// long. Default: never.
    pub fn idle_timeout(mut self, t: Duration) -> Self {
        self.idle_timeout = Some(t);
        self
    }

    /// Closes a connection that started sending a frame and did not finish it within this
    /// long (slow or stuck senders). Default: never.
    pub fn read_timeout(mut self, t: Duration) -> Self {
        self.read_timeout = Some(t);
        self
    }

    /// Aborts a connection whose peer takes none of its replies for this long (it stopped
    /// reading), including one closing gracefully that waits to send its last replies.
    /// `None`: never. Default 30 s.
    pub fn write_timeout(mut self, t: Option<Duration>) -> Self {
        self.write_timeout = t;
        self
    }

    /// Calls one connection may have in flight (received, reply not yet written),
    /// counting replies held back to keep call order. At the bound the server stops
    /// reading that connection until replies go out; nothing is lost and the connection
    /// stays open. Default 4096.
    pub fn max_in_flight_per_connection(mut self, n: usize) -> Self {
        self.limits.max_in_flight = n.max(1);
        self
    }

    /// Queued output of one connection (replies not yet taken by the peer, plus replies
    /// held back to keep call order) above which the server stops reading it until the
    /// peer drains half. Default 4 MiB.
    pub fn high_water_mark(mut self, bytes: usize) -> Self {
        self.limits.high_water = bytes.max(1);
        self
    }

    /// Spin this long for completions before sleeping (see `netpoll`'s `busy_poll`).
    pub fn busy_poll(mut self, spin: Duration) -> Self {
        self.busy_poll = spin;
        self
    }

    /// Receive pool buffers each core starts with (see [`netpoll::Builder::buffer_count`]);
    /// the pool grows past it under load and shrinks back.
    pub fn buffer_count(mut self, n: usize) -> Self {
        self.buffer_count = Some(n);
        self
    }

    /// Also serves on the Unix domain socket at `path` (which must not exist), every
    /// protocol as on the TCP port, over TLS too if the server has TLS. The cores share
    /// the one socket: each connection is served by the next core in turn. The file is
    /// removed when the server stops.
    pub fn unix(mut self, path: impl Into<std::path::PathBuf>) -> Self {
        let path = path.into();
        // Absolute now: the file is removed at stop, whatever the directory is by then.
        self.unix = Some(std::path::absolute(&path).unwrap_or(path));
        self
    }

    /// The I/O backend of the server's cores (see [`netpoll::Builder::backend`]): by
    /// default io_uring, or epoll where io_uring cannot be used; `NETPOLL_BACKEND` chooses
    /// when this is not called.
    pub fn backend(mut self, kind: netpoll::BackendKind) -> Self {
        self.backend = Some(kind);
        self
    }

    /// Serves a framing of the application's own on the same port, beside the built-in
    /// protocols: connections it recognises (see [`Framing::detect`]) are served with it.
    /// Up to 65,535 framings.
    pub fn framing(mut self, framing: impl Framing) -> Self {
        if self.framings.len() < u16::MAX as usize {
            self.framings.push(Arc::new(framing));
        }
        self
    }

    /// Serves over TLS (feature `tls`): every connection, whatever its protocol, speaks
    /// TLS, and plain text is refused unless the acceptor allows it
    /// ([`TlsAcceptor::allow_plaintext`](crate::tls::TlsAcceptor::allow_plaintext)).
    #[cfg(feature = "tls")]
    pub fn tls(mut self, acceptor: crate::tls::TlsAcceptor) -> Self {
        self.tls = Some(acceptor);
        self
    }

    /// Runs `m` around every call the server serves (see [`Middleware`](crate::Middleware)).
    /// Several run in the order they were added at the start of a call, and in reverse
    /// order at its end. A middleware that panics takes its connection down.
    pub fn middleware(mut self, m: impl crate::Middleware) -> Self {
        self.middleware.push(Arc::new(m));
        self
    }

    /// Adds a service (a generated `{Service}Server` around an implementation). Calls are
    /// routed by method name; when several services have a method of the same name, by
    /// TTHeader's `isn` header, and otherwise to the first service registered.
    pub fn service(mut self, service: impl Service) -> Self {
        self.services.push(Arc::new(service));
        self
    }

    /// Serves gRPC server reflection (`grpc.reflection.v1.ServerReflection` and
    /// `grpc.reflection.v1alpha.ServerReflection`): the services registered, and the
    /// `.proto` descriptors generated Protobuf services were compiled from, for grpcurl
    /// and other reflection clients.
    pub fn reflection(mut self, on: bool) -> Self {
        self.reflection = on;
        self
    }

    /// Counts every call in `metrics` (see [`crate::metrics`]): the server's own hook,
    /// cheaper than installing [`Metrics`](crate::metrics::Metrics) as a middleware.
    pub fn metrics(mut self, metrics: crate::metrics::Metrics) -> Self {
        self.metrics = Some(metrics);
        self
    }

    /// Registers the server in `registry` as an instance of `service` once it listens,
    /// and deregisters it first when it stops (Kitex's `WithRegistry` and service name).
    pub fn registry(mut self, registry: impl Registry, service: &str) -> Self {
        self.registry = Some(Registered {
            registry: Arc::new(registry),
            service: service.to_owned(),
            advertise: None,
            weight: 10,
            tags: Vec::new(),
            delay: Duration::from_secs(1),
        });
        self
    }

    /// Registers `addr` instead of the bound address (behind NAT, or bound to 0.0.0.0).
    pub fn advertise(mut self, addr: SocketAddr) -> Self {
        if let Some(r) = &mut self.registry {
            r.advertise = Some(addr);
        }
        self
    }

    /// The registered weight (default 10) and tags.
    pub fn registry_weight(mut self, weight: u32, tags: Vec<(String, String)>) -> Self {
        if let Some(r) = &mut self.registry {
            r.weight = weight;
            r.tags = tags;
        }
        self
    }

    /// How long a graceful stop waits between deregistering and closing connections, for
    /// clients watching the registry to stop sending (default 1 s).
    pub fn deregister_delay(mut self, delay: Duration) -> Self {
        if let Some(r) = &mut self.registry {
            r.delay = delay;
        }
        self
    }

    /// Serves until SIGTERM or SIGINT, then shuts down gracefully (Kitex's `Run`):
    /// stops accepting, answers the calls in flight within `grace` (their replies ask
    /// clients to reconnect elsewhere), and returns. `on_start` gets the running server
    /// (to print its address, register it...), and `on_stop` runs when the signal came,
    /// before the shutdown (to deregister it).
    pub fn run(
        self,
        grace: Duration,
        on_start: impl FnOnce(&Server),
        on_stop: impl FnOnce(&Server),
    ) -> Result<(), ServerError> {
        // Blocked before the cores start, so that every thread inherits the mask and the
        // signal waits for us instead of ending the process.
        netpoll::block_termination_signals().map_err(ServerError::Listen)?;
        let server = self.start()?;
        on_start(&server);
        let sig = netpoll::wait_for_termination().map_err(ServerError::Listen)?;
        tracing::info!(signal = sig, "shutting down");
        on_stop(&server);
        server.shutdown(grace);
        Ok(())
    }

    /// Starts the cores and listens. Returns once every core accepts connections.
    pub fn start(self) -> Result<Server, ServerError> {
        let addr = self.addr.map_err(ServerError::Addr)?;
        let mut services = self.services;
        if self.reflection {
            let [v1, v1alpha] = reflection::Reflection::for_services(&services);
            services.push(Arc::new(v1));
            services.push(Arc::new(v1alpha));
        }
        let router = Router::new(services).map_err(ServerError::Services)?;
        let mut b = Runtime::builder().thread_name("rpc-server");
        if let Some(n) = self.cores {
            b = b.cores(n);
        }
        if let Some(cpus) = self.cpus {
            b = b.cpus(cpus);
        }
        if let Some(max) = self.max_connections {
            b = b.max_connections(max);
        }
        b = b
            .write_timeout(self.write_timeout)
            .high_water_mark(self.limits.high_water);
        if !self.busy_poll.is_zero() {
            b = b.busy_poll(self.busy_poll);
        }
        if let Some(kind) = self.backend {
            b = b.backend(kind);
        }
        if let Some(n) = self.buffer_count {
            b = b.buffer_count(n);
        }
        let rt = b.build().map_err(ServerError::Runtime)?;
        let shared = Arc::new(Shared {
            router,
            max_frame: self.max_frame,
            idle_timeout: self.idle_timeout,
            read_timeout: self.read_timeout,
            limits: self.limits,
            stats: stats::ServerStats::default(),
            framings: self.framings,
            middleware: self.middleware.into(),
            metrics: self.metrics,
            rt: rt.handle().clone(),
        });
        let stats = shared.clone();
        let factory = move |core: &mut netpoll::Core| -> Box<dyn netpoll::Handler> {
            Box::new(ServerConn::new(shared.clone(), core.now()))
        };
        let h = rt.handle();
        #[cfg(feature = "tls")]
        let listened = match &self.tls {
            Some(acceptor) => h.listen_tls(addr, acceptor.clone(), factory.clone()),
            None => h.listen(addr, factory.clone()),
        };
        #[cfg(not(feature = "tls"))]
        let listened = h.listen(addr, factory.clone());
        let local = listened.map_err(ServerError::Listen)?;
        let mut unix = None;
        if let Some(path) = self.unix {
            #[cfg(feature = "tls")]
            let listened = match self.tls {
                Some(acceptor) => h.listen_unix_tls(&path, acceptor, factory),
                None => h.listen_unix(&path, factory),
            };
            #[cfg(not(feature = "tls"))]
            let listened = h.listen_unix(&path, factory);
            listened.map_err(ServerError::Listen)?;
            // Removed with the server (or if starting fails from here on), and only while
            // the path is still our socket, not a later server's.
            unix = Some(UnixSocketFile::bound(path));
        }
        let registered = match self.registry {
            Some(r) => {
                let reg = Registration {
                    service: r.service,
                    addr: r.advertise.unwrap_or_else(|| advertised(local)),
                    weight: r.weight,
                    tags: r.tags,
                };
                r.registry.register(&reg).map_err(ServerError::Registry)?;
                Some((r.registry, reg, r.delay))
            }
            None => None,
        };
        Ok(Server {
            rt: Some(rt),
            local,
            unix,
            shared: stats,
            registered,
        })
    }
}

/// A running server. Dropping it stops it at once; [`shutdown`](Server::shutdown) lets
/// calls in flight finish first.
pub struct Server {
    rt: Option<Runtime>,
    local: SocketAddr,
    /// The Unix domain socket it also listens on, removed when it stops.
    unix: Option<UnixSocketFile>,
    shared: Arc<Shared>,
    registered: Option<(Arc<dyn Registry>, Registration, Duration)>,
}

impl fmt::Debug for Server {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Server")
            .field("local", &self.local)
            .field("runtime", &self.rt)
            .finish()
    }
}

impl Server {
    /// A builder with the defaults.
    pub fn builder() -> ServerBuilder {
        ServerBuilder {
            addr: Ok(SocketAddr::from(([127, 0, 0, 1], 8888))),
            cores: None,
            cpus: None,
            max_frame: netpoll_codec::frame::DEFAULT_MAX_FRAME,
            max_connections: None,
            idle_timeout: None,
            read_timeout: None,
            write_timeout: Some(netpoll::DEFAULT_WRITE_TIMEOUT),
            limits: Limits {
                max_in_flight: DEFAULT_MAX_IN_FLIGHT,
                high_water: DEFAULT_HIGH_WATER,
            },
            busy_poll: Duration::ZERO,
            buffer_count: None,
            backend: None,
            unix: None,
            services: Vec::new(),
            reflection: false,
            framings: Vec::new(),
            middleware: Vec::new(),
            metrics: None,
            registry: None,
            #[cfg(feature = "tls")]
            tls: None,
        }
    }

    /// The address the server listens on.
    pub fn local_addr(&self) -> SocketAddr {
        self.local
    }

    /// How many connections have closed, by reason, since the server started.
    pub fn close_counts(&self) -> CloseCounts {
        let refused = self.runtime().close_counts().refused;
        self.shared.stats.snapshot(refused)
    }

    /// A function that reads [`close_counts`](Server::close_counts) later, from any
    /// thread (for a metrics endpoint).
    pub fn close_counter(&self) -> impl Fn() -> CloseCounts + Send + Sync + 'static {
        let (shared, rt) = (self.shared.clone(), self.runtime().clone());
        move || shared.stats.snapshot(rt.close_counts().refused)
    }

    /// The server's event loop, to run clients or tasks on its cores.
    pub fn runtime(&self) -> &RuntimeHandle {
        self.rt.as_ref().expect("running").handle()
    }

    /// The registration, if the server registered itself.
    pub fn registration(&self) -> Option<&Registration> {
        self.registered.as_ref().map(|(_, r, _)| r)
    }

    /// Stops gracefully, in order: deregisters (if registered) and waits the deregister
    /// delay for watching clients to stop sending; stops accepting; lets calls in flight
    /// finish for up to `grace` (their replies carry TTHeader's `crrst` so that Kitex-style
    /// clients move to another server); then closes every connection and stops the cores.
    pub fn shutdown(mut self, grace: Duration) {
        if let Some((registry, reg, delay)) = self.registered.take() {
            match registry.deregister(&reg) {
                Ok(()) => std::thread::sleep(delay),
                Err(e) => tracing::warn!(error = %e, "cannot deregister"),
            }
        }
        // No new connection comes by the path from now on, and a replacement may bind it
        // while calls in flight finish here.
        drop(self.unix.take());
        if let Some(rt) = self.rt.take() {
            rt.shutdown(grace);
        }
    }

    /// The Unix domain socket it also listens on ([`ServerBuilder::unix`]).
    pub fn unix_path(&self) -> Option<&std::path::Path> {
        self.unix.as_ref().map(|u| u.path.as_path())
    }
}

/// A Unix domain socket's path, bound by a server: removed when dropped, if it is still
/// the socket that was bound (not one a later server bound after removing it).
struct UnixSocketFile {
    path: std::path::PathBuf,
    /// Device and inode right after binding.
    id: Option<(u64, u64)>,
}

impl UnixSocketFile {
    fn bound(path: std::path::PathBuf) -> UnixSocketFile {
        let id = Self::id_of(&path);
        UnixSocketFile { path, id }
    }

    fn id_of(path: &std::path::Path) -> Option<(u64, u64)> {
        use std::os::unix::fs::MetadataExt;
        std::fs::symlink_metadata(path)
            .ok()
            .map(|m| (m.dev(), m.ino()))
    }
}

impl Drop for UnixSocketFile {
    fn drop(&mut self) {
        if self.id.is_none() || Self::id_of(&self.path) != self.id {
            tracing::debug!(path = %self.path.display(), "the socket file is not ours any more; left");
            return;
        }
        if let Err(e) = std::fs::remove_file(&self.path) {
            tracing::debug!(path = %self.path.display(), error = %e, "cannot remove the socket file");
        }
    }
}

impl Drop for Server {
    /// Stops at once (see [`shutdown`](Server::shutdown) for a graceful stop); a
    /// registered server deregisters first, without waiting.
    fn drop(&mut self) {
        if let Some((registry, reg, _)) = self.registered.take() {
            if let Err(e) = registry.deregister(&reg) {
                tracing::warn!(error = %e, "cannot deregister");
            }
        }
    }
}

/// The address to register for a server bound to `local`: an unspecified IP (0.0.0.0)
/// becomes the address this host reaches the network from (or loopback without one).
fn advertised(local: SocketAddr) -> SocketAddr {
    if !local.ip().is_unspecified() {
        return local;
    }
    // Connecting a UDP socket sends nothing; it only picks the outgoing interface.
    let ip = std::net::UdpSocket::bind("0.0.0.0:0")
        .and_then(|s| s.connect("192.0.2.1:9").map(|_| s))
        .and_then(|s| s.local_addr())
        .map(|a| a.ip())
        .unwrap_or(std::net::IpAddr::from([127, 0, 0, 1]));
    SocketAddr::new(ip, local.port())
}
