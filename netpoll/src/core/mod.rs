//! [`Core`]: one event loop, owning one backend driver, its connections, timers and buffer
//! pools. A core runs on its own thread and shares nothing on the hot path.
//!
//! The core names no io_uring type: it hands backend-neutral operations to the driver
//! (the `sys::Driver` interface; io_uring, `sys::uring`, is today the only one) and reads back decoded completions. The
//! connection lifecycle is a kernel-free state machine (`lifecycle`).
//!
//! The loop is split by concern: `submit` (operations out, completions dispatched),
//! `accept`, `recv`, `send`, `close` (draining, lingering, aborting and releasing), and
//! this file (the loop, timers, tasks and lookups).
//!
//! # What the kernel owns
//!
//! From submission until the final completion of an operation, the kernel owns the memory
//! it names: a connection's in-flight send buffer ([`SendOp::Busy`]), the buffer of a
//! direct receive ([`RecvOp::Direct`]), the socket address of a connect
//! ([`ConnectOp::InFlight`]), the wake-up word, and every pool buffer published in the
//! buffer ring. Each lives inside the state of the operation that uses it (see
//! [`state`]), so nothing else can reach it. `kernel_ops` counts the operations whose
//! final completion has not arrived; a connection's slot is freed only once none of its
//! operations is outstanding, and if a core is ever dropped with operations outstanding,
//! their memory is leaked rather than freed under the kernel.
//!
//! [`SendOp::Busy`]: state::SendOp::Busy
//! [`RecvOp::Direct`]: state::RecvOp::Direct
//! [`ConnectOp::InFlight`]: state::ConnectOp::InFlight

mod accept;
mod close;
mod lifecycle;
mod recv;
mod send;
mod state;
mod submit;
mod tls;

use std::io;
use std::mem::{self, ManuallyDrop};
use std::os::fd::{AsRawFd, OwnedFd};
use std::panic::{self, AssertUnwindSafe};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crossbeam_channel::Receiver;
use slab::Slab;

use crate::stats::CoreStats;
use crate::sys::pool::{BufPool, PoolStats};
use crate::sys::{Backend, Completion, Driver, Op};
use crate::timer::Timers;
use crate::token::{self, Op as Kind};
use crate::wake::WakeFlag;
use crate::{sys, BuildError, CloseReason, Conn, ConnId, Handler, TimerId};
use lifecycle::{Life, Lifecycle};
pub(crate) use state::ConnState;
use state::ConnectOp;

pub(crate) use accept::{ListenTls, Listener, Spread};

thread_local! {
    static CURRENT_CORE: std::cell::Cell<Option<usize>> = const { std::cell::Cell::new(None) };
    /// The loop clock of the core running on this thread.
    static LOOP_NOW: std::cell::Cell<Option<Instant>> = const { std::cell::Cell::new(None) };
    /// The core running on this thread (its `Remote`, by address only) and the tasks it
    /// sent itself: they skip the cross-thread channel and the wake-up, and run at the end
    /// of the current turn, as tasks from other threads do.
    static LOCAL: std::cell::RefCell<(*const Remote, std::collections::VecDeque<Task>)> =
        const { std::cell::RefCell::new((std::ptr::null(), std::collections::VecDeque::new())) };
}

/// The time: on a core's thread, its loop clock (read once per loop turn, so calling it
/// costs a thread-local read instead of a clock read); elsewhere, `Instant::now()`. For
/// code that runs per call and needs time at the granularity of a loop turn (latency
/// averages, breaker windows, deadlines).
pub fn now() -> Instant {
    LOOP_NOW.with(|c| c.get()).unwrap_or_else(Instant::now)
}

/// The index of the core running on this thread, if this is a core's thread. Code that
/// would block (waiting for a reply, say) uses it to refuse to block its own event loop.
pub fn current_core() -> Option<usize> {
    CURRENT_CORE.with(|c| c.get())
}

/// The cross-thread half of the core running on this thread, by address (null on a
/// thread that runs no core): how a [`RuntimeHandle`](crate::RuntimeHandle) tells whether
/// the caller is on one of its own cores.
pub(crate) fn local_remote() -> *const Remote {
    LOCAL.with(|l| l.borrow().0)
}

/// A task sent to a core from another thread.
pub(crate) type Task = Box<dyn FnOnce(&mut Core) + Send>;

/// Creates the handler of each connection a listener accepts.
pub(crate) type Factory = Arc<dyn Fn(&mut Core) -> Box<dyn Handler> + Send + Sync>;

/// Remote tasks run per loop turn at most, so a flood of them cannot starve I/O.
const TASKS_PER_TURN: usize = 1024;
/// Write and accumulation buffers larger than this are not kept once empty.
pub(crate) const KEEP_BUFFER_MAX: usize = 1024 * 1024;
/// Freed memory is handed back to the operating system at most this often, and only when
/// the core is about to sleep.
const TRIM_INTERVAL: Duration = Duration::from_secs(1);
/// Freed memory worth handing back: below this, trimming is not worth its cost.
const TRIM_THRESHOLD: usize = 4 << 20;
/// The pool shrinks only this long after it last had to grow.
const SHRINK_AFTER: Duration = Duration::from_secs(1);

/// Per-core settings, from [`Builder`](crate::Builder).
#[derive(Debug, Clone)]
pub(crate) struct CoreConfig {
    pub(crate) backend: crate::BackendKind,
    pub(crate) ring_entries: u32,
    pub(crate) buffer_size: usize,
    pub(crate) buffer_count: usize,
    pub(crate) max_buffers: usize,
    pub(crate) high_water: usize,
    pub(crate) max_connections: usize,
    pub(crate) busy_poll: Duration,
    pub(crate) write_timeout: Option<Duration>,
}

/// The cross-thread half of a core: its task queue, wake-up and counters.
pub(crate) struct Remote {
    pub(crate) tx: crossbeam_channel::Sender<Task>,
    eventfd: OwnedFd,
    wake: WakeFlag,
    pub(crate) stats: Arc<CoreStats>,
    /// The backend the core runs on.
    pub(crate) backend: crate::BackendKind,
    /// Why io_uring is not used, when `Auto` fell back to epoll.
    pub(crate) fallback: Option<String>,
}

impl Remote {
    /// Queues a task; wakes the core only if it is (about to be) asleep. Sent from the
    /// core's own thread, it joins that core's local queue instead.
    pub(crate) fn send(&self, task: Task) -> Result<(), Task> {
        let task = match LOCAL.with(|l| {
            let mut l = l.borrow_mut();
            if std::ptr::eq(l.0, self) {
                l.1.push_back(task);
                None
            } else {
                Some(task)
            }
        }) {
            None => return Ok(()),
            Some(task) => task,
        };
        self.tx.send(task).map_err(|e| e.0)?;
        // Either the core sees the task before it sleeps, or we see that it sleeps and
        // wake it (see `wake`).
        if self.wake.notify() {
            sys::eventfd_signal(self.eventfd.as_raw_fd());
        }
        Ok(())
    }
}

pub(crate) enum TimerTarget {
    Conn(ConnId, u64),
    Task(Box<dyn FnOnce(&mut Core)>),
    ConnectTimeout(ConnId),
    Linger(ConnId),
    WriteProgress(ConnId),
    AcceptRetry(u32),
    ShutdownDeadline,
    /// A TLS handshake's deadline.
    TlsHandshake(ConnId),
}

/// One event loop. Handlers and tasks reach it as `&mut Core`: open outbound connections,
/// set timers, and act on connections by id.
pub struct Core {
    driver: Backend,
    pool: ManuallyDrop<BufPool<<Backend as Driver>::Ring>>,
    /// The ring answered ENOBUFS and the pool could not grow: receive directly until
    /// buffers come back.
    pool_dry: bool,
    pub(crate) conns: Slab<ConnState>,
    listeners: Slab<Listener>,
    pub(crate) timers: Timers<TimerTarget>,
    pub(crate) now: Instant,
    pub(crate) id: usize,
    cfg: CoreConfig,
    next_gen: u64,
    kernel_ops: usize,
    dirty: Vec<u32>,
    /// Connections whose handler resumed reading during a callback: their held input is
    /// delivered at the end of the turn.
    resumed: Vec<(u32, u64)>,
    /// TLS handshake steps taken this turn (see `tls.rs`).
    handshakes: u32,
    /// Connections whose handshake records wait for a later turn's budget.
    tls_backlog: Vec<(u32, u64)>,
    closing: Vec<(u32, u32)>,
    cqes: Vec<Completion>,
    spare: Vec<bytes::BytesMut>,
    remote: Arc<Remote>,
    rx: Receiver<Task>,
    wake_buf: Box<u64>,
    wake_armed: bool,
    shutting_down: bool,
    /// Bytes freed (large buffers) since the last trim.
    freed_bytes: usize,
    /// When the pool last ran dry and grew.
    last_grow: Instant,
    last_trim: Instant,
    /// Set by [`Core::inject_failure`]: the loop stops as if the ring had failed.
    injected_failure: bool,
}

impl std::fmt::Debug for Core {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Core")
            .field("id", &self.id)
            .field("connections", &self.conns.len())
            .field("listeners", &self.listeners.len())
            .field("kernel_ops", &self.kernel_ops)
            .field("timers", &self.timers.len())
            .finish()
    }
}

impl Core {
    /// Creates a core on the calling thread (the thread that will run it).
    pub(crate) fn new(id: usize, cfg: CoreConfig) -> Result<(Core, Arc<Remote>), BuildError> {
        let (driver, ring, fallback) = Backend::new(
            cfg.backend,
            cfg.ring_entries,
            cfg.max_buffers.max(cfg.buffer_count),
        )?;
        let pool = BufPool::new(ring, cfg.buffer_count, cfg.buffer_size);
        let (tx, rx) = crossbeam_channel::unbounded();
        let remote = Arc::new(Remote {
            tx,
            eventfd: sys::eventfd()?,
            wake: WakeFlag::default(),
            stats: Arc::new(CoreStats::default()),
            backend: driver.kind(),
            fallback: fallback.map(|e| e.to_string()),
        });
        let cq = driver.completion_capacity();
        let now = Instant::now();
        let core = Core {
            driver,
            pool: ManuallyDrop::new(pool),
            pool_dry: false,
            conns: Slab::with_capacity(1024),
            listeners: Slab::new(),
            timers: Timers::new(),
            now,
            id,
            cfg,
            next_gen: 0,
            kernel_ops: 0,
            dirty: Vec::with_capacity(1024),
            resumed: Vec::new(),
            handshakes: 0,
            tls_backlog: Vec::new(),
            closing: Vec::with_capacity(64),
            cqes: Vec::with_capacity(cq),
            spare: Vec::new(),
            remote: remote.clone(),
            rx,
            wake_buf: Box::new(0),
            wake_armed: false,
            shutting_down: false,
            freed_bytes: 0,
            last_grow: now,
            last_trim: now,
            injected_failure: false,
        };
        Ok((core, remote))
    }

    /// This core's index within its runtime.
    pub fn id(&self) -> usize {
        self.id
    }

    /// The loop's clock, read once per turn.
    pub fn now(&self) -> Instant {
        self.now
    }

    /// Number of connections this core owns (open, connecting or closing).
    pub fn connection_count(&self) -> usize {
        self.conns.len()
    }

    /// The state of this core's receive buffer pool.
    pub fn pool_stats(&self) -> PoolStats {
        self.pool.stats()
    }

    /// Timers set on this core and not yet fired or cancelled.
    pub fn timer_count(&self) -> usize {
        self.timers.len()
    }

    /// Whether the runtime is shutting down (no new connections are opened).
    pub fn is_shutting_down(&self) -> bool {
        self.shutting_down
    }

    /// Makes this core's loop stop at the end of the turn as if its ring had failed, without
    /// the orderly teardown: for testing what callers see when a core dies.
    #[doc(hidden)]
    pub fn inject_failure(&mut self) {
        self.injected_failure = true;
    }

    /// Advances the generation counter as if `n` connections had come and gone: for
    /// testing that ids of old connections never reach new ones.
    #[doc(hidden)]
    pub fn skip_generations(&mut self, n: u64) {
        self.next_gen += n;
    }

    /// The connection `id`, if it is still connecting or open on this core. Output written
    /// to a connection that is still connecting is sent once it connects.
    pub fn conn(&mut self, id: ConnId) -> Option<Conn<'_>> {
        let slot = self.live_slot(id)?;
        Some(Conn { core: self, slot })
    }

    /// Calls `f` with the handler of connection `id`, if the connection is still connecting
    /// or open on this core and its handler is of type `H`. Returns `None` otherwise, and
    /// also when called from within that same handler's own callback (the handler is busy).
    ///
    /// This is how other code on the core (a task sent from another thread, a timer, another
    /// connection's handler) hands something to a connection's consumer: a call to send, a
    /// deferred reply.
    pub fn with_handler<H: Handler, R>(
        &mut self,
        id: ConnId,
        f: impl FnOnce(&mut H, &mut Conn<'_>) -> R,
    ) -> Option<R> {
        let slot = self.live_slot(id)?;
        let mut handler = self.conns[slot as usize].handler.take()?;
        let any: &mut dyn std::any::Any = &mut *handler;
        let result = match any.downcast_mut::<H>() {
            Some(h) => {
                let r =
                    panic::catch_unwind(AssertUnwindSafe(|| f(h, &mut Conn { core: self, slot })));
                match r {
                    Ok(r) => Some(r),
                    Err(_) => {
                        tracing::warn!(
                            core = self.id,
                            "with_handler's closure panicked; aborting that connection"
                        );
                        self.handler_panicked(slot, handler);
                        return None;
                    }
                }
            }
            None => None,
        };
        self.conns[slot as usize].handler = Some(handler);
        result
    }

    /// Runs `f` on this core at `deadline`.
    pub fn set_timer(&mut self, deadline: Instant, f: impl FnOnce(&mut Core) + 'static) -> TimerId {
        self.timers.insert(deadline, TimerTarget::Task(Box::new(f)))
    }

    /// Cancels a timer set with [`set_timer`](Core::set_timer) or [`Conn::set_timer`];
    /// returns whether it had not fired yet.
    pub fn cancel_timer(&mut self, timer: TimerId) -> bool {
        self.timers.cancel(timer).is_some()
    }

    /// Opens an outbound connection on this core, over TCP or to a Unix domain socket
    /// (`addr` is a [`SocketAddr`](std::net::SocketAddr) or an [`Addr`](crate::Addr)). `handler` gets
    /// [`Handler::on_open`] once connected, or [`Handler::on_close`] with
    /// [`CloseReason::ConnectFailed`] or [`CloseReason::ConnectTimedOut`].
    ///
    /// Outbound connections are never paused for back-pressure: a client must always read
    /// the replies to what it sent, or client and server could each wait for the other.
    pub fn connect(
        &mut self,
        addr: impl Into<crate::Addr>,
        timeout: Option<Duration>,
        handler: Box<dyn Handler>,
    ) -> io::Result<ConnId> {
        self.connect_with(addr.into(), timeout, handler, None)
    }

    /// Like [`connect`](Core::connect), over TLS: the handshake follows the connect, and
    /// the server's certificate must be valid for `server_name` (a DNS name or an IP
    /// address). The handler sees plain text; what it writes before the handshake
    /// completes is sent once it does. A handshake that fails closes the connection
    /// with [`CloseReason::Tls`].
    #[cfg(feature = "tls")]
    pub fn connect_tls(
        &mut self,
        addr: impl Into<crate::Addr>,
        timeout: Option<Duration>,
        handler: Box<dyn Handler>,
        tls: &crate::tls::TlsConnector,
        server_name: &str,
    ) -> io::Result<ConnId> {
        let name = crate::tls::server_name(server_name)?;
        let session = crate::tls::Session::client(tls, name)?;
        self.connect_with(addr.into(), timeout, handler, Some(session))
    }

    fn connect_with(
        &mut self,
        addr: crate::Addr,
        timeout: Option<Duration>,
        handler: Box<dyn Handler>,
        tls: Option<Box<crate::tls::Session>>,
    ) -> io::Result<ConnId> {
        if self.shutting_down {
            return Err(io::Error::other("the runtime is shutting down"));
        }
        let sockaddr = Box::new(addr.sockaddr()?);
        let socket = match addr {
            crate::Addr::Tcp(a) => {
                let socket = socket2::Socket::new(
                    socket2::Domain::for_address(a),
                    socket2::Type::STREAM.cloexec(),
                    Some(socket2::Protocol::TCP),
                )?;
                socket.set_tcp_nodelay(true)?;
                // Outbound connections may sit idle between calls: keepalive finds a peer
                // that vanished (a crashed host, a dropped NAT entry) in about a minute.
                socket.set_tcp_keepalive(
                    &socket2::TcpKeepalive::new()
                        .with_time(Duration::from_secs(30))
                        .with_interval(Duration::from_secs(10))
                        .with_retries(3),
                )?;
                socket
            }
            crate::Addr::Unix(_) => {
                socket2::Socket::new(socket2::Domain::UNIX, socket2::Type::STREAM.cloexec(), None)?
            }
        };
        let fd: OwnedFd = socket.into();
        let slot = self.insert_conn(fd, handler);
        let id = self.slot_id(slot);
        let c = &mut self.conns[slot as usize];
        c.lc = Lifecycle::connecting();
        c.outbound = true;
        c.tls = tls;
        let op = Op::Connect {
            fd: c.fd.as_raw_fd(),
            addr: sockaddr.as_ptr().cast(),
            len: sockaddr.len(),
        };
        let user_data = token::encode(Kind::Connect, slot, c.gen);
        // The box moves into the operation's state; its heap address does not change.
        c.connect = ConnectOp::InFlight(sockaddr);
        if let Some(t) = timeout {
            let timer = self
                .timers
                .insert(self.now + t, TimerTarget::ConnectTimeout(id));
            self.conns[slot as usize].connect_timer = Some(timer);
        }
        // SAFETY: the address is owned by `ConnectOp::InFlight` until the connect's
        // completion takes it out (`on_connect`); the slot is not freed while that state
        // is set (`kernel_busy`).
        unsafe { self.push(op, user_data) };
        self.kernel_ops += 1;
        Ok(id)
    }

    // ----- the loop -------------------------------------------------------------------

    /// Runs the loop until the runtime shuts down and every connection is gone.
    pub(crate) fn run(&mut self) -> io::Result<()> {
        CURRENT_CORE.with(|c| c.set(Some(self.id)));
        let me: *const Remote = &*self.remote;
        LOCAL.with(|l| l.borrow_mut().0 = me);
        self.arm_wake();
        loop {
            self.maintain();
            if self.injected_failure {
                return Err(io::Error::other("failure injected for testing"));
            }
            if self.shutting_down && self.conns.is_empty() && self.listeners.is_empty() {
                break;
            }
            self.wait()?;
            self.now = Instant::now();
            LOOP_NOW.with(|c| c.set(Some(self.now)));
            // Handshakes that waited for budget go before new arrivals.
            self.handshakes = 0;
            self.run_tls_backlog();
            self.complete();
            self.run_timers();
            self.run_tasks();
        }
        self.teardown()
    }

    /// End of turn: deliver input whose reading was resumed, send what was written, return
    /// reclaimed buffers, free closed slots.
    fn maintain(&mut self) {
        // Swapped out first: a handler that pauses and resumes again is seen next turn.
        let mut resumed = mem::take(&mut self.resumed);
        for &(slot, gen) in &resumed {
            if self.conns.get(slot as usize).is_some_and(|c| c.gen == gen) {
                self.restart_reading(slot);
            }
        }
        resumed.clear();
        if self.resumed.is_empty() {
            self.resumed = resumed;
        }
        self.flush();
        // Give pool buffers back to the allocator only once bursts have stopped for a
        // while, so that a workload near the pool's size does not cycle.
        if self.pool.reclaim() > 0 {
            self.pool_dry = false;
        }
        let may_shrink = self.now >= self.last_grow + SHRINK_AFTER;
        let shrunk = self.pool.shrink(may_shrink);
        self.note_freed(shrunk * self.cfg.buffer_size);
        self.release_closed();
    }

    fn wait(&mut self) -> io::Result<()> {
        self.driver.drain_backlog();
        let mut want = 1;
        // Connections in `closing` wait for the kernel's completions: that is a reason to
        // wait, not to spin.
        let local = LOCAL.with(|l| !l.borrow().1.is_empty());
        if local
            || !self.rx.is_empty()
            || !self.dirty.is_empty()
            || !self.resumed.is_empty()
            || !self.tls_backlog.is_empty()
        {
            want = 0;
        } else {
            let rx = &self.rx;
            if !self.remote.wake.prepare_sleep(|| !rx.is_empty()) {
                want = 0;
            }
        }
        let mut deadline = self.timers.next_deadline();
        // Views dropped on other threads free pool buffers without waking us; while the
        // pool runs low, look again every few milliseconds.
        if self.pool.lent() > 0 && (self.pool_dry || self.pool.in_ring() < self.pool.low()) {
            let soon = Instant::now() + Duration::from_millis(2);
            deadline = Some(deadline.map_or(soon, |d| d.min(soon)));
        }
        // Wake up to shrink the pool, and to hand freed memory back, even if nothing else
        // happens by then.
        if self.pool.has_standby() {
            let at = self.last_grow + SHRINK_AFTER;
            deadline = Some(deadline.map_or(at, |d| d.min(at)));
        }
        if self.freed_bytes >= TRIM_THRESHOLD {
            let at = self.last_trim + TRIM_INTERVAL;
            deadline = Some(deadline.map_or(at, |d| d.min(at)));
        }
        if want == 1
            && self.freed_bytes >= TRIM_THRESHOLD
            && self.now >= self.last_trim + TRIM_INTERVAL
        {
            // About to sleep: a good moment to hand freed memory back to the system.
            self.freed_bytes = 0;
            self.last_trim = self.now;
            sys::trim_heap();
        }
        if want == 1 && !self.cfg.busy_poll.is_zero() && self.busy_poll(deadline) {
            want = 0;
        }
        let result = match deadline {
            _ if want == 0 => self.driver.submit_and_reap(),
            None => self.driver.wait(None),
            Some(d) => {
                let wait = d.saturating_duration_since(Instant::now());
                if wait.is_zero() {
                    self.driver.submit_and_reap()
                } else {
                    self.driver.wait(Some(wait))
                }
            }
        };
        self.remote.wake.awake();
        match result {
            Ok(_) => Ok(()),
            Err(e) => match e.raw_os_error() {
                Some(libc::ETIME) | Some(libc::EINTR) | Some(libc::EBUSY) | Some(libc::EAGAIN) => {
                    Ok(())
                }
                _ => Err(e),
            },
        }
    }

    fn run_timers(&mut self) {
        while let Some(target) = self.timers.pop_expired(self.now) {
            match target {
                TimerTarget::Conn(id, token) => {
                    if let Some(slot) = self.live_slot(id) {
                        self.call_handler(slot, |h, c| h.on_timer(c, token));
                    }
                }
                TimerTarget::Task(f) => {
                    if panic::catch_unwind(AssertUnwindSafe(|| f(self))).is_err() {
                        tracing::warn!(core = self.id, "a timer task panicked");
                    }
                }
                TimerTarget::ConnectTimeout(id) => {
                    if let Some(slot) = self.slot_of(id) {
                        let c = &mut self.conns[slot as usize];
                        c.connect_timer = None;
                        if c.lc.is(Life::Connecting) {
                            c.connect_timed_out = true;
                            let target = token::encode(Kind::Connect, slot, c.gen);
                            self.cancel_op(target);
                        }
                    }
                }
                TimerTarget::Linger(id) => {
                    if let Some(slot) = self.slot_of(id) {
                        self.conns[slot as usize].linger_timer = None;
                        if self.conns[slot as usize].lc.is(Life::Lingering) {
                            self.abort(slot, CloseReason::Local);
                        }
                    }
                }
                TimerTarget::WriteProgress(id) => {
                    if let Some(slot) = self.slot_of(id) {
                        self.check_write_progress(slot);
                    }
                }
                TimerTarget::AcceptRetry(li) => self.arm_accept(li),
                TimerTarget::TlsHandshake(id) => {
                    if let Some(slot) = self.slot_of(id) {
                        self.tls_handshake_expired(slot);
                    }
                }
                TimerTarget::ShutdownDeadline => {
                    let slots: Vec<u32> = self.conns.iter().map(|(k, _)| k as u32).collect();
                    for slot in slots {
                        self.abort(slot, CloseReason::Shutdown);
                    }
                }
            }
        }
    }

    fn run_tasks(&mut self) {
        // The tasks this core sent itself this turn first (at most as many as were queued
        // when the turn's tasks began: what they send goes to the next turn), then those
        // of other threads.
        let local = LOCAL.with(|l| l.borrow().1.len()).min(TASKS_PER_TURN);
        for _ in 0..local {
            let Some(task) = LOCAL.with(|l| l.borrow_mut().1.pop_front()) else {
                break;
            };
            self.run_task(task);
        }
        for _ in 0..TASKS_PER_TURN {
            let Ok(task) = self.rx.try_recv() else { break };
            self.run_task(task);
        }
    }

    /// Runs one task; a panic in it is logged and the core goes on.
    fn run_task(&mut self, task: Task) {
        if panic::catch_unwind(AssertUnwindSafe(|| task(self))).is_err() {
            tracing::warn!(core = self.id, "a task panicked");
        }
    }

    fn teardown(&mut self) -> io::Result<()> {
        if self.wake_armed {
            self.cancel_op(token::encode(Kind::Wake, 0, 0));
        }
        // Wait for every operation's final completion: only then is our memory our own.
        let give_up = Instant::now() + Duration::from_secs(5);
        while self.kernel_ops > 0 && Instant::now() < give_up {
            self.driver.drain_backlog();
            match self.driver.wait(Some(Duration::from_millis(100))) {
                Ok(_) => {}
                Err(e)
                    if matches!(
                        e.raw_os_error(),
                        Some(libc::ETIME | libc::EINTR | libc::EBUSY)
                    ) => {}
                Err(e) => return Err(e),
            }
            self.complete();
            self.release_closed();
        }
        Ok(())
    }

    // ----- handlers -------------------------------------------------------------------

    fn insert_conn(&mut self, fd: OwnedFd, handler: Box<dyn Handler>) -> u32 {
        self.next_gen += 1;
        let out = self.spare.pop().unwrap_or_default();
        let spare = self.spare.pop().unwrap_or_default();
        let state = ConnState::new(fd, self.next_gen, handler, out, spare, self.now);
        self.conns.insert(state) as u32
    }

    /// Calls the connection's handler, shielding the core from a panic in it.
    fn call_handler(&mut self, slot: u32, f: impl FnOnce(&mut dyn Handler, &mut Conn<'_>)) {
        let Some(mut handler) = self
            .conns
            .get_mut(slot as usize)
            .and_then(|c| c.handler.take())
        else {
            return;
        };
        let result = panic::catch_unwind(AssertUnwindSafe(|| {
            f(&mut *handler, &mut Conn { core: self, slot })
        }));
        match result {
            Ok(()) => self.conns[slot as usize].handler = Some(handler),
            Err(_) => {
                tracing::warn!(
                    core = self.id,
                    "a connection handler panicked; aborting that connection"
                );
                self.handler_panicked(slot, handler);
            }
        }
    }

    /// A handler panicked: abort its connection and drop the handler, so that whatever it
    /// owns (calls waiting for replies, say) is released and its owners hear of it. A
    /// panic while dropping is contained.
    fn handler_panicked(&mut self, slot: u32, handler: Box<dyn Handler>) {
        self.abort(slot, CloseReason::HandlerPanicked);
        if panic::catch_unwind(AssertUnwindSafe(move || drop(handler))).is_err() {
            tracing::warn!(core = self.id, "dropping a panicked handler panicked too");
        }
    }

    /// Counts memory handed back to the allocator, to trim when it adds up.
    pub(crate) fn note_freed(&mut self, bytes: usize) {
        self.freed_bytes = self.freed_bytes.saturating_add(bytes);
    }

    pub(crate) fn mark_dirty(&mut self, slot: u32) {
        let c = &mut self.conns[slot as usize];
        if !c.dirty {
            c.dirty = true;
            self.dirty.push(slot);
        }
    }

    // ----- shutdown -------------------------------------------------------------------

    /// Stops accepting, asks every handler to finish, and closes what is left at `deadline`.
    pub(crate) fn begin_shutdown(&mut self, deadline: Instant) {
        if self.shutting_down {
            return;
        }
        self.shutting_down = true;
        self.close_listeners();
        let slots: Vec<u32> = self.conns.iter().map(|(k, _)| k as u32).collect();
        for slot in slots {
            // A connection still connecting hears of the shutdown once connected (output
            // queued on it, a oneway call say, is sent first); the deadline closes it if
            // it never connects.
            if self.conns[slot as usize].lc.is(Life::Open) {
                self.call_handler(slot, |h, c| h.on_shutdown(c));
            }
        }
        self.timers.insert(deadline, TimerTarget::ShutdownDeadline);
    }

    fn arm_wake(&mut self) {
        if self.wake_armed {
            return;
        }
        self.wake_armed = true;
        let buf: *mut u64 = &mut *self.wake_buf;
        let op = Op::Read {
            fd: self.remote.eventfd.as_raw_fd(),
            buf: buf.cast(),
            len: 8,
        };
        // SAFETY: `wake_buf` is a heap allocation owned by the core, which outlives the
        // operation (teardown waits for it, and a core dropped early leaks it).
        unsafe { self.push(op, token::encode(Kind::Wake, 0, 0)) };
        self.kernel_ops += 1;
    }

    // ----- lookups --------------------------------------------------------------------

    fn slot_id(&self, slot: u32) -> ConnId {
        ConnId {
            core: self.id as u16,
            slot,
            gen: self.conns[slot as usize].gen,
        }
    }

    /// The slot of `id` if it still names a connection of this core (in any state).
    fn slot_of(&self, id: ConnId) -> Option<u32> {
        let c = self.conns.get(id.slot as usize)?;
        (id.core as usize == self.id && c.gen == id.gen).then_some(id.slot)
    }

    /// The slot of `id` if its connection is connecting, open, or still sending its last
    /// output.
    fn live_slot(&self, id: ConnId) -> Option<u32> {
        let slot = self.slot_of(id)?;
        matches!(
            self.conns[slot as usize].lc.phase(),
            Life::Connecting | Life::Open | Life::Draining
        )
        .then_some(slot)
    }

    /// The state of the connection a completion names, if that connection still exists.
    fn conn_state(&mut self, slot: u32, gen: u32) -> Option<&mut ConnState> {
        self.conns
            .get_mut(slot as usize)
            .filter(|c| token::gen_bits(c.gen) == gen)
    }
}

impl Drop for Core {
    fn drop(&mut self) {
        CURRENT_CORE.with(|c| c.set(None));
        LOOP_NOW.with(|c| c.set(None));
        // Tasks the core sent itself and never ran are dropped (their callers see the
        // core stopped, as with tasks from other threads), outside the borrow: dropping
        // one may send another, which now goes to the channel and fails.
        let left = LOCAL.with(|l| {
            let mut l = l.borrow_mut();
            l.0 = std::ptr::null();
            std::mem::take(&mut l.1)
        });
        drop(left);
        if self.kernel_ops == 0 {
            // SAFETY: the pool is not used after this point, and no operation the kernel
            // could still complete refers to its memory.
            unsafe { ManuallyDrop::drop(&mut self.pool) };
            return;
        }
        // The kernel may still write into pool buffers and into the buffers the operations
        // of connections own: leak those rather than free memory it owns. Handlers own no
        // kernel memory, so they are dropped, and whatever they hold (callers waiting for
        // replies) hears that the connection is gone.
        tracing::error!(
            core = self.id,
            operations = self.kernel_ops,
            "core stopped with operations in flight; leaking their buffers"
        );
        let mut conns = mem::take(&mut self.conns);
        for (_, c) in conns.iter_mut() {
            if let Some(h) = c.handler.take() {
                let _ = panic::catch_unwind(AssertUnwindSafe(move || drop(h)));
            }
        }
        mem::forget(conns);
        mem::forget(mem::take(&mut self.wake_buf));
    }
}
