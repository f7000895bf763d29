//! [`Runtime`]: the set of cores, their threads, and the handle other threads use.

use std::io;
use std::net::{SocketAddr, ToSocketAddrs};
use std::os::fd::OwnedFd;
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crate::core::{CoreConfig, Factory, ListenTls, Remote, Spread, Task};
use crate::{sys, BuildError, Core, Handler};

/// Default of [`Builder::write_timeout`].
pub const DEFAULT_WRITE_TIMEOUT: Duration = Duration::from_secs(30);

/// Configures and starts a [`Runtime`].
///
/// ```no_run
/// let rt = netpoll::Runtime::builder().cores(2).pin_cpus(true).build()?;
/// # Ok::<(), netpoll::BuildError>(())
/// ```
#[derive(Debug, Clone)]
pub struct Builder {
    cores: Option<usize>,
    cpus: Option<Vec<usize>>,
    pin: bool,
    name: String,
    max_connections: Option<usize>,
    /// Set by [`Builder::backend`]; otherwise `NETPOLL_BACKEND`, otherwise auto.
    backend: Option<crate::BackendKind>,
    cfg: CoreConfig,
}

impl Default for Builder {
    fn default() -> Self {
        Builder {
            cores: None,
            cpus: None,
            pin: false,
            name: "netpoll".into(),
            max_connections: None,
            backend: None,
            cfg: CoreConfig {
                backend: crate::BackendKind::Auto,
                ring_entries: 4096,
                buffer_size: 16 * 1024,
                buffer_count: 1024,
                max_buffers: 8192,
                high_water: 4 * 1024 * 1024,
                max_connections: 1 << 20,
                busy_poll: Duration::ZERO,
                write_timeout: Some(DEFAULT_WRITE_TIMEOUT),
            },
        }
    }
}

impl Builder {
    /// Number of cores (event-loop threads). Default: the CPUs this process may run on.
    pub fn cores(mut self, n: usize) -> Self {
        self.cores = Some(n);
        self
    }

    /// Pin core `i` to the `i`-th CPU of [`cpus`](Builder::cpus) (default: the allowed CPUs).
    pub fn pin_cpus(mut self, pin: bool) -> Self {
        self.pin = pin;
        self
    }

    /// The CPUs to pin cores to, in order. Implies pinning.
    pub fn cpus(mut self, cpus: Vec<usize>) -> Self {
        self.cpus = Some(cpus);
        self.pin = true;
        self
    }

    /// Thread name prefix (threads are named `{prefix}-{core}`).
    pub fn thread_name(mut self, prefix: impl Into<String>) -> Self {
        self.name = prefix.into();
        self
    }

    /// The I/O backend: [`BackendKind::Auto`](crate::BackendKind::Auto) (io_uring, or
    /// epoll where io_uring cannot be used), or one forced. Overrides the environment
    /// variable `NETPOLL_BACKEND` (`io_uring`, `epoll` or `auto`), which is read when this
    /// is not called.
    pub fn backend(mut self, kind: crate::BackendKind) -> Self {
        self.backend = Some(kind);
        self
    }

    /// Submission queue entries per core (the completion queue is four times larger;
    /// io_uring only).
    pub fn ring_entries(mut self, n: u32) -> Self {
        self.cfg.ring_entries = n;
        self
    }

    /// Size of each receive pool buffer. Default 16 KiB.
    pub fn buffer_size(mut self, bytes: usize) -> Self {
        self.cfg.buffer_size = bytes;
        self
    }

    /// Receive pool buffers per core at start. Default 1024.
    pub fn buffer_count(mut self, n: usize) -> Self {
        self.cfg.buffer_count = n;
        self
    }

    /// Receive pool buffers a core may grow to when the ring runs dry (at most 32768).
    /// Default 8192. Past that, connections receive into their own buffers.
    pub fn max_buffers(mut self, n: usize) -> Self {
        self.cfg.max_buffers = n;
        self
    }

    /// Per-connection output above which the connection stops being read until the peer
    /// drains it to half of this. Default 4 MiB.
    pub fn high_water_mark(mut self, bytes: usize) -> Self {
        self.cfg.high_water = bytes;
        self
    }

    /// Connections a core accepts at most; further accepted sockets are closed at once.
    pub fn max_connections_per_core(mut self, n: usize) -> Self {
        self.cfg.max_connections = n;
        self
    }

    /// Connections the runtime accepts at most, split evenly over the cores it actually
    /// starts (overrides [`max_connections_per_core`](Builder::max_connections_per_core)).
    pub fn max_connections(mut self, total: usize) -> Self {
        self.max_connections = Some(total.max(1));
        self
    }

    /// Before sleeping, spin for up to this long reaping completions (default: zero, never
    /// spin). On machines where waking a sleeping thread is slow (virtual machines), a few
    /// tens of microseconds cut the round-trip latency of lightly loaded connections, at
    /// the cost of CPU time while idle.
    pub fn busy_poll(mut self, spin: Duration) -> Self {
        self.cfg.busy_poll = spin;
        self
    }

    /// Aborts a connection whose peer takes none of its pending output for this long (a
    /// peer that stopped reading), including a connection closing gracefully that waits
    /// to send its last output. `None` waits forever. Default 30 s.
    pub fn write_timeout(mut self, timeout: Option<Duration>) -> Self {
        self.cfg.write_timeout = timeout;
        self
    }

    /// Starts the cores. Fails with a message saying what the kernel refused and what to do
    /// if io_uring is unavailable.
    pub fn build(mut self) -> Result<Runtime, BuildError> {
        let allowed = sys::allowed_cpus();
        let n = self.cores.unwrap_or(allowed.len().max(1));
        if n == 0 || n > u16::MAX as usize {
            return Err(BuildError::InvalidConfig(
                "cores must be between 1 and 65535",
            ));
        }
        if let Some(total) = self.max_connections {
            self.cfg.max_connections = total.div_ceil(n);
        }
        self.cfg.backend = match self.backend {
            Some(kind) => kind,
            None => crate::BackendKind::from_env()?.unwrap_or_default(),
        };
        let cfg = &self.cfg;
        if !(512..=1 << 26).contains(&cfg.buffer_size) {
            return Err(BuildError::InvalidConfig(
                "buffer_size must be between 512 bytes and 64 MiB",
            ));
        }
        if cfg.buffer_count == 0 || cfg.buffer_count > 32768 {
            return Err(BuildError::InvalidConfig(
                "buffer_count must be between 1 and 32768",
            ));
        }
        if cfg.high_water == 0 {
            return Err(BuildError::InvalidConfig(
                "high_water_mark must be positive",
            ));
        }
        let cpus = self.cpus.clone().unwrap_or(allowed);
        if self.pin && cpus.is_empty() {
            return Err(BuildError::InvalidConfig("no CPU to pin to"));
        }
        let mut remotes = Vec::with_capacity(n);
        let mut threads = Vec::with_capacity(n);
        let mut failure = None;
        for i in 0..n {
            let cfg = self.cfg.clone();
            let cpu = self.pin.then(|| cpus[i % cpus.len()]);
            let (ready_tx, ready_rx) = std::sync::mpsc::sync_channel(1);
            let spawned = std::thread::Builder::new()
                .name(format!("{}-{i}", self.name))
                .spawn(move || {
                    if let Some(cpu) = cpu {
                        if let Err(e) = sys::pin_current_thread(cpu) {
                            let _ = ready_tx.send(Err(BuildError::Io(e)));
                            return;
                        }
                    }
                    let (mut core, remote) = match Core::new(i, cfg) {
                        Ok(x) => x,
                        Err(e) => {
                            let _ = ready_tx.send(Err(e));
                            return;
                        }
                    };
                    let _ = ready_tx.send(Ok(remote));
                    if let Err(e) = core.run() {
                        tracing::error!(core = i, error = %e, "core stopped");
                    }
                });
            let handle = match spawned {
                Ok(h) => h,
                Err(e) => {
                    failure = Some(BuildError::Io(e));
                    break;
                }
            };
            threads.push(handle);
            match ready_rx.recv() {
                Ok(Ok(remote)) => remotes.push(remote),
                Ok(Err(e)) => {
                    failure = Some(e);
                    break;
                }
                Err(_) => {
                    failure = Some(BuildError::Io(io::Error::other(
                        "a core thread died while starting",
                    )));
                    break;
                }
            }
        }
        let rt = Runtime {
            handle: RuntimeHandle {
                cores: remotes.into(),
            },
            threads,
        };
        match failure {
            None => {
                let first = &rt.handle.cores[0];
                match &first.fallback {
                    Some(why) => tracing::warn!(
                        backend = %first.backend,
                        "netpoll runs on epoll: io_uring cannot be used here ({why})"
                    ),
                    None => tracing::info!(
                        backend = %first.backend,
                        asked = %self.cfg.backend,
                        "netpoll runs on {}", first.backend
                    ),
                }
                Ok(rt)
            }
            Some(e) => {
                rt.shutdown(Duration::ZERO);
                Err(e)
            }
        }
    }
}

/// A running set of cores. Dropping it shuts them down (with no grace period); call
/// [`shutdown`](Runtime::shutdown) to let in-flight work finish.
#[derive(Debug)]
pub struct Runtime {
    handle: RuntimeHandle,
    threads: Vec<JoinHandle<()>>,
}

impl Runtime {
    /// A builder with defaults.
    pub fn builder() -> Builder {
        Builder::default()
    }

    /// A cloneable handle for other threads.
    pub fn handle(&self) -> &RuntimeHandle {
        &self.handle
    }

    /// Stops accepting, gives every connection until `grace` from now to finish (handlers
    /// see [`Handler::on_shutdown`]), closes what remains, waits for the kernel to return
    /// every buffer, and joins the core threads.
    pub fn shutdown(mut self, grace: Duration) {
        self.stop(grace);
    }

    fn stop(&mut self, grace: Duration) {
        let deadline = Instant::now() + grace;
        for remote in self.handle.cores.iter() {
            let _ = remote.send(Box::new(move |core: &mut Core| {
                core.begin_shutdown(deadline)
            }));
        }
        let me = std::thread::current().id();
        for t in self.threads.drain(..) {
            // Dropped from one of its own cores (the last handle went away in a callback):
            // that core stops once the callback returns; joining it here would deadlock.
            if t.thread().id() != me {
                let _ = t.join();
            }
        }
    }
}

impl Drop for Runtime {
    fn drop(&mut self) {
        if !self.threads.is_empty() {
            self.stop(Duration::ZERO);
        }
    }
}

/// Reaches the cores of a [`Runtime`] from any thread.
#[derive(Clone)]
pub struct RuntimeHandle {
    cores: Arc<[Arc<Remote>]>,
}

impl std::fmt::Debug for RuntimeHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RuntimeHandle")
            .field("cores", &self.cores.len())
            .finish()
    }
}

/// The core a task was sent to has stopped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CoreStopped;

impl std::fmt::Display for CoreStopped {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("the core has stopped")
    }
}

impl std::error::Error for CoreStopped {}

impl RuntimeHandle {
    /// Number of cores.
    pub fn cores(&self) -> usize {
        self.cores.len()
    }

    /// The I/O backend the cores run on (`IoUring` or `Epoll`, never `Auto`).
    pub fn backend(&self) -> crate::BackendKind {
        self.cores[0].backend
    }

    /// How many connections have closed, by reason, over every core.
    pub fn close_counts(&self) -> crate::CloseCounts {
        let mut c = crate::CloseCounts::default();
        for r in self.cores.iter() {
            r.stats.add_to(&mut c);
        }
        c
    }

    /// The index of this runtime's core running on the calling thread, if the caller is
    /// on one of them (a handler, a task, a timer or a callback of this runtime); `None`
    /// on any other thread, a core of another runtime included. Code that may run either
    /// on or off the runtime uses it to keep work on the caller's core.
    pub fn local_core(&self) -> Option<usize> {
        let here = crate::core::local_remote();
        if here.is_null() {
            return None;
        }
        // The thread's core is its runtime's core number `current_core()`: this runtime's
        // if the core there is the very one.
        let i = crate::core::current_core()?;
        self.cores
            .get(i)
            .is_some_and(|r| std::ptr::eq(Arc::as_ptr(r), here))
            .then_some(i)
    }

    /// Runs `task` on core `core` (modulo the number of cores) soon. Wakes the core with an
    /// eventfd write only if it is idle.
    pub fn spawn(
        &self,
        core: usize,
        task: impl FnOnce(&mut Core) + Send + 'static,
    ) -> Result<(), CoreStopped> {
        self.spawn_boxed(core, Box::new(task))
    }

    pub(crate) fn spawn_boxed(&self, core: usize, task: Task) -> Result<(), CoreStopped> {
        let remote = &self.cores[core % self.cores.len()];
        remote.send(task).map_err(|_| CoreStopped)
    }

    /// Listens on `addr` on every core (one `SO_REUSEPORT` socket each, multishot accept).
    /// `factory` runs on the accepting core and makes each new connection's handler.
    /// Returns the bound address (useful with port 0) once every core accepts.
    pub fn listen<F>(&self, addr: impl ToSocketAddrs, factory: F) -> io::Result<SocketAddr>
    where
        F: Fn(&mut Core) -> Box<dyn Handler> + Send + Sync + 'static,
    {
        self.listen_with(addr, Arc::new(factory), ListenTls::default())
    }

    /// Like [`listen`](RuntimeHandle::listen), for TLS: every connection accepted speaks
    /// TLS (or, if the acceptor allows it, either TLS or plain text). Handlers see plain
    /// text; see [`crate::tls`].
    #[cfg(feature = "tls")]
    pub fn listen_tls<F>(
        &self,
        addr: impl ToSocketAddrs,
        acceptor: crate::tls::TlsAcceptor,
        factory: F,
    ) -> io::Result<SocketAddr>
    where
        F: Fn(&mut Core) -> Box<dyn Handler> + Send + Sync + 'static,
    {
        let tls = ListenTls {
            acceptor: Some(acceptor),
        };
        self.listen_with(addr, Arc::new(factory), tls)
    }

    fn listen_with(
        &self,
        addr: impl ToSocketAddrs,
        factory: Factory,
        tls: ListenTls,
    ) -> io::Result<SocketAddr> {
        let mut addr = addr.to_socket_addrs()?.next().ok_or_else(|| {
            io::Error::new(io::ErrorKind::InvalidInput, "no address to listen on")
        })?;
        let mut sockets = Vec::with_capacity(self.cores.len());
        for _ in 0..self.cores.len() {
            let socket = bind_reuseport(addr)?;
            // Later sockets must share the port the first one got (port 0 picks one).
            addr = socket
                .local_addr()?
                .as_socket()
                .ok_or_else(|| io::Error::other("listener has no IP address"))?;
            sockets.push(socket);
        }
        let (done_tx, done_rx) = std::sync::mpsc::channel();
        for (i, socket) in sockets.into_iter().enumerate() {
            let fd: OwnedFd = socket.into();
            let factory = factory.clone();
            let done = done_tx.clone();
            let tls = tls.clone();
            self.spawn(i, move |core| {
                core.add_listener(fd, factory, tls, None);
                let _ = done.send(());
            })
            .map_err(|_| io::Error::other("a core has stopped"))?;
        }
        for _ in 0..self.cores.len() {
            done_rx
                .recv()
                .map_err(|_| io::Error::other("a core stopped before listening"))?;
        }
        Ok(addr)
    }
}

impl RuntimeHandle {
    /// Listens on the Unix domain socket at `path` (which must not exist yet). A path
    /// cannot be bound once per core as `SO_REUSEPORT` allows for TCP: one socket is
    /// shared, core 0 accepts, and each connection is served by the next core in turn
    /// (handed over as its descriptor). `factory` runs on the serving core.
    pub fn listen_unix<F>(&self, path: impl AsRef<std::path::Path>, factory: F) -> io::Result<()>
    where
        F: Fn(&mut Core) -> Box<dyn Handler> + Send + Sync + 'static,
    {
        self.listen_unix_with(path.as_ref(), Arc::new(factory), ListenTls::default())
    }

    /// Like [`listen_unix`](RuntimeHandle::listen_unix), for TLS (see
    /// [`listen_tls`](RuntimeHandle::listen_tls)).
    #[cfg(feature = "tls")]
    pub fn listen_unix_tls<F>(
        &self,
        path: impl AsRef<std::path::Path>,
        acceptor: crate::tls::TlsAcceptor,
        factory: F,
    ) -> io::Result<()>
    where
        F: Fn(&mut Core) -> Box<dyn Handler> + Send + Sync + 'static,
    {
        let tls = ListenTls {
            acceptor: Some(acceptor),
        };
        self.listen_unix_with(path.as_ref(), Arc::new(factory), tls)
    }

    fn listen_unix_with(
        &self,
        path: &std::path::Path,
        factory: Factory,
        tls: ListenTls,
    ) -> io::Result<()> {
        let socket =
            socket2::Socket::new(socket2::Domain::UNIX, socket2::Type::STREAM.cloexec(), None)?;
        socket.bind(&socket2::SockAddr::unix(path)?)?;
        socket.listen(4096)?;
        let fd: OwnedFd = socket.into();
        let (done_tx, done_rx) = std::sync::mpsc::channel();
        let spread = Spread {
            cores: self.clone(),
            next: 0,
        };
        self.spawn(0, move |core| {
            core.add_listener(fd, factory, tls, Some(spread));
            let _ = done_tx.send(());
        })
        .map_err(|_| io::Error::other("a core has stopped"))?;
        done_rx
            .recv()
            .map_err(|_| io::Error::other("a core stopped before listening"))
    }
}

fn bind_reuseport(addr: SocketAddr) -> io::Result<socket2::Socket> {
    let socket = socket2::Socket::new(
        socket2::Domain::for_address(addr),
        socket2::Type::STREAM.cloexec(),
        Some(socket2::Protocol::TCP),
    )?;
    socket.set_reuse_address(true)?;
    socket.set_reuse_port(true)?;
    socket.set_tcp_nodelay(true)?;
    socket.bind(&addr.into())?;
    socket.listen(4096)?;
    Ok(socket)
}
