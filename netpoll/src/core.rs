//! [`Core`]: one event loop, owning one io_uring instance, its connections, timers and
//! buffer pools. A core runs on its own thread and shares nothing on the hot path.
//!
//! # What the kernel owns
//!
//! From submission until the final completion of an operation, the kernel owns the memory
//! it names: a connection's in-flight send buffer, the spare capacity of its receive
//! accumulator during a direct receive, the socket address of a connect, the wake-up
//! word, and every pool buffer published in the buffer ring. `kernel_ops` counts the
//! operations whose final completion has not arrived; a connection's slot is freed only
//! once none of its operations is outstanding, and if a core is ever dropped with
//! operations outstanding, their memory is leaked rather than freed under the kernel.

use std::io;
use std::mem::{self, ManuallyDrop};
use std::net::SocketAddr;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::panic::{self, AssertUnwindSafe};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::{Buf, Bytes, BytesMut};
use crossbeam_channel::Receiver;
use io_uring::{cqueue, opcode, squeue, types, IoUring};
use slab::Slab;

use crate::bufring::{BufPool, PoolStats};
use crate::conn::{ConnState, Life, RecvOp};
use crate::timer::Timers;
use crate::token::{self, Op};
use crate::{sys, BuildError, CloseReason, Conn, ConnId, Handler, Input, TimerId};

thread_local! {
    static CURRENT_CORE: std::cell::Cell<Option<usize>> = const { std::cell::Cell::new(None) };
}

/// The index of the core running on this thread, if this is a core's thread. Code that
/// would block (waiting for a reply, say) uses it to refuse to block its own event loop.
pub fn current_core() -> Option<usize> {
    CURRENT_CORE.with(|c| c.get())
}

/// A task sent to a core from another thread.
pub(crate) type Task = Box<dyn FnOnce(&mut Core) + Send>;

/// Creates the handler of each connection a listener accepts.
pub(crate) type Factory = Arc<dyn Fn(&mut Core) -> Box<dyn Handler> + Send + Sync>;

/// How long a gracefully closed connection waits for the peer's FIN after sending its own.
const LINGER: Duration = Duration::from_secs(2);
/// How long to wait before accepting again after accept failed (EMFILE and the like).
const ACCEPT_RETRY: Duration = Duration::from_millis(20);
/// Remote tasks run per loop turn at most, so a flood of them cannot starve I/O.
const TASKS_PER_TURN: usize = 1024;
/// Smallest receive into a connection's own buffer when the pool is empty.
const DIRECT_RECV_MIN: usize = 16 * 1024;
/// A message still missing at least this many bytes is received straight into the
/// connection's buffer rather than through pool buffers and a copy.
const DIRECT_RECV_LARGE: usize = 128 * 1024;
/// Write and accumulation buffers larger than this are not kept once empty.
const KEEP_BUFFER_MAX: usize = 4 * 1024 * 1024;

/// Per-core settings, from [`Builder`](crate::Builder).
#[derive(Debug, Clone)]
pub(crate) struct CoreConfig {
    pub(crate) ring_entries: u32,
    pub(crate) buffer_size: usize,
    pub(crate) buffer_count: usize,
    pub(crate) max_buffers: usize,
    pub(crate) high_water: usize,
    pub(crate) max_connections: usize,
    pub(crate) busy_poll: Duration,
}

/// The cross-thread half of a core: its task queue and wake-up.
pub(crate) struct Remote {
    pub(crate) tx: crossbeam_channel::Sender<Task>,
    eventfd: OwnedFd,
    sleeping: AtomicBool,
}

impl Remote {
    /// Queues a task; wakes the core only if it is (about to be) asleep.
    pub(crate) fn send(&self, task: Task) -> Result<(), Task> {
        self.tx.send(task).map_err(|e| e.0)?;
        // Pairs with the SeqCst store in `Core::wait`: either the core sees the task before
        // it sleeps, or we see `sleeping` and wake it.
        if self.sleeping.swap(false, Ordering::SeqCst) {
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
    AcceptRetry(u32),
    ShutdownDeadline,
}

struct Listener {
    fd: OwnedFd,
    factory: Factory,
    armed: bool,
    closing: bool,
}

/// One event loop. Handlers and tasks reach it as `&mut Core`: open outbound connections,
/// set timers, and act on connections by id.
pub struct Core {
    ring: IoUring,
    pool: ManuallyDrop<BufPool>,
    pub(crate) conns: Slab<ConnState>,
    listeners: Slab<Listener>,
    pub(crate) timers: Timers<TimerTarget>,
    pub(crate) now: Instant,
    pub(crate) id: usize,
    cfg: CoreConfig,
    next_gen: u32,
    kernel_ops: usize,
    dirty: Vec<u32>,
    closing: Vec<(u32, u32)>,
    cqes: Vec<(u64, i32, u32)>,
    backlog: Vec<squeue::Entry>,
    spare: Vec<BytesMut>,
    remote: Arc<Remote>,
    rx: Receiver<Task>,
    wake_buf: Box<u64>,
    wake_armed: bool,
    shutting_down: bool,
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
        let ring = crate::ring::setup(cfg.ring_entries)?;
        let pool = BufPool::new(
            &ring.submitter(),
            0,
            cfg.buffer_count,
            cfg.max_buffers,
            cfg.buffer_size,
        )
        .map_err(|e| match e.raw_os_error() {
            Some(libc::EINVAL) => BuildError::Unsupported {
                what: "provided buffer rings (IORING_REGISTER_PBUF_RING)",
                needs: "Linux 5.19",
            },
            _ => BuildError::Io(e),
        })?;
        let (tx, rx) = crossbeam_channel::unbounded();
        let remote = Arc::new(Remote {
            tx,
            eventfd: sys::eventfd()?,
            sleeping: AtomicBool::new(false),
        });
        let cq = ring.params().cq_entries() as usize;
        let core = Core {
            ring,
            pool: ManuallyDrop::new(pool),
            conns: Slab::with_capacity(1024),
            listeners: Slab::new(),
            timers: Timers::new(),
            now: Instant::now(),
            id,
            cfg,
            next_gen: 0,
            kernel_ops: 0,
            dirty: Vec::with_capacity(1024),
            closing: Vec::with_capacity(64),
            cqes: Vec::with_capacity(cq),
            backlog: Vec::new(),
            spare: Vec::new(),
            remote: remote.clone(),
            rx,
            wake_buf: Box::new(0),
            wake_armed: false,
            shutting_down: false,
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

    /// Whether the runtime is shutting down (no new connections are opened).
    pub fn is_shutting_down(&self) -> bool {
        self.shutting_down
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
                        eprintln!("netpoll: with_handler's closure panicked on core {}; aborting that connection", self.id);
                        mem::forget(handler);
                        self.abort(slot, CloseReason::HandlerPanicked);
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

    /// Opens an outbound TCP connection on this core. `handler` gets
    /// [`Handler::on_open`] once connected, or [`Handler::on_close`] with
    /// [`CloseReason::ConnectFailed`] or [`CloseReason::ConnectTimedOut`].
    pub fn connect(
        &mut self,
        addr: SocketAddr,
        timeout: Option<Duration>,
        handler: Box<dyn Handler>,
    ) -> io::Result<ConnId> {
        if self.shutting_down {
            return Err(io::Error::other("the runtime is shutting down"));
        }
        let socket = socket2::Socket::new(
            socket2::Domain::for_address(addr),
            socket2::Type::STREAM.cloexec(),
            Some(socket2::Protocol::TCP),
        )?;
        socket.set_tcp_nodelay(true)?;
        let fd: OwnedFd = socket.into();
        let sockaddr = Box::new(socket2::SockAddr::from(addr));
        let slot = self.insert_conn(fd, handler);
        let id = self.slot_id(slot);
        let c = &mut self.conns[slot as usize];
        c.life = Life::Connecting;
        let entry = opcode::Connect::new(
            types::Fd(c.fd.as_raw_fd()),
            sockaddr.as_ptr().cast(),
            sockaddr.len(),
        )
        .build()
        .user_data(token::encode(Op::Connect, slot, c.gen));
        c.connect_addr = Some(sockaddr);
        if let Some(t) = timeout {
            let timer = self
                .timers
                .insert(self.now + t, TimerTarget::ConnectTimeout(id));
            self.conns[slot as usize].connect_timer = Some(timer);
        }
        // SAFETY: the address lives in `connect_addr`, a box kept by the connection until
        // the connect's completion; the slot is not freed while `connect_addr` is set.
        unsafe { self.push(entry) };
        self.kernel_ops += 1;
        Ok(id)
    }

    // ----- the loop -------------------------------------------------------------------

    /// Runs the loop until the runtime shuts down and every connection is gone.
    pub(crate) fn run(&mut self) -> io::Result<()> {
        CURRENT_CORE.with(|c| c.set(Some(self.id)));
        self.arm_wake();
        loop {
            self.maintain();
            if self.shutting_down && self.conns.is_empty() && self.listeners.is_empty() {
                break;
            }
            self.wait()?;
            self.now = Instant::now();
            self.complete();
            self.run_timers();
            self.run_tasks();
        }
        self.teardown()
    }

    /// End of turn: send what was written, return reclaimed buffers, free closed slots.
    fn maintain(&mut self) {
        self.flush();
        self.pool.reclaim();
        self.release_closed();
    }

    fn wait(&mut self) -> io::Result<()> {
        self.drain_backlog();
        let mut want = 1;
        // Connections in `closing` wait for the kernel's completions: that is a reason to
        // wait, not to spin.
        if !self.rx.is_empty() || !self.dirty.is_empty() {
            want = 0;
        } else {
            self.remote.sleeping.store(true, Ordering::SeqCst);
            if !self.rx.is_empty() {
                want = 0;
            }
        }
        let mut deadline = self.timers.next_deadline();
        // Views dropped on other threads free pool buffers without waking us; while the
        // pool runs low, look again every few milliseconds.
        if self.pool.lent() > 0 && self.pool.in_ring() < self.cfg.buffer_count / 4 {
            let soon = Instant::now() + Duration::from_millis(2);
            deadline = Some(deadline.map_or(soon, |d| d.min(soon)));
        }
        if want == 1 && !self.cfg.busy_poll.is_zero() && self.busy_poll(deadline) {
            want = 0;
        }
        let result = match deadline {
            _ if want == 0 => self.submit_and_reap(),
            None => self.ring.submit_and_wait(1),
            Some(d) => {
                let wait = d.saturating_duration_since(Instant::now());
                if wait.is_zero() {
                    self.submit_and_reap()
                } else {
                    let ts = types::Timespec::from(wait);
                    let args = types::SubmitArgs::new().timespec(&ts);
                    self.ring.submitter().submit_with_args(1, &args)
                }
            }
        };
        self.remote.sleeping.store(false, Ordering::Relaxed);
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

    /// Submits queued entries and runs deferred completion work without waiting.
    ///
    /// With `DEFER_TASKRUN`, completions are posted only by an `io_uring_enter` that asks
    /// for events; a plain submit (no wait) would leave them pending indefinitely.
    fn submit_and_reap(&mut self) -> io::Result<usize> {
        const IORING_ENTER_GETEVENTS: u32 = 1;
        let queued = self.ring.submission().len() as u32;
        // SAFETY: every queued entry was pushed through `push`, whose callers vouched for
        // the memory it names; no argument pointer is passed.
        unsafe {
            self.ring
                .submitter()
                .enter::<libc::sigset_t>(queued, 0, IORING_ENTER_GETEVENTS, None)
        }
    }

    /// Spins for up to the configured busy-poll time, reaping completions without sleeping.
    /// Returns whether there is something to do. Waking a sleeping thread costs tens of
    /// microseconds on some machines; spinning trades CPU for that latency.
    fn busy_poll(&mut self, deadline: Option<Instant>) -> bool {
        let start = Instant::now();
        let mut until = start + self.cfg.busy_poll;
        if let Some(d) = deadline {
            until = until.min(d);
        }
        loop {
            if self.submit_and_reap().is_err() {
                return true; // let the blocking path report or retry
            }
            if !self.ring.completion().is_empty() || !self.rx.is_empty() {
                return true;
            }
            if Instant::now() >= until {
                return false;
            }
            std::hint::spin_loop();
        }
    }

    /// Queues a submission, handing queued ones to the kernel if the queue is full.
    ///
    /// # Safety
    ///
    /// Every buffer, address or structure the entry points to must stay valid, and must
    /// not be touched by userspace in a way the operation forbids, until the operation's
    /// final completion arrives.
    unsafe fn push(&mut self, entry: squeue::Entry) {
        // SAFETY: forwarded from this function's contract.
        if unsafe { self.ring.submission().push(&entry) }.is_ok() {
            return;
        }
        let _ = self.ring.submit();
        // SAFETY: as above.
        if unsafe { self.ring.submission().push(&entry) }.is_err() {
            self.backlog.push(entry);
        }
    }

    fn drain_backlog(&mut self) {
        while !self.backlog.is_empty() {
            let entry = self.backlog[0].clone();
            // SAFETY: the entry was queued by `push`, whose caller vouched for it.
            if unsafe { self.ring.submission().push(&entry) }.is_err() {
                if self.ring.submit().is_err() {
                    return;
                }
                continue;
            }
            self.backlog.remove(0);
        }
    }

    fn complete(&mut self) {
        let mut cqes = mem::take(&mut self.cqes);
        cqes.clear();
        cqes.extend(
            self.ring
                .completion()
                .map(|c| (c.user_data(), c.result(), c.flags())),
        );
        for &(user_data, res, flags) in &cqes {
            let Some((op, slot, gen)) = token::decode(user_data) else {
                continue;
            };
            match op {
                Op::Accept => self.on_accept(slot, res, flags),
                Op::Recv => self.on_recv(slot, gen, res, flags),
                Op::RecvDirect => self.on_recv_direct(slot, gen, res),
                Op::Send => self.on_send(slot, gen, res),
                Op::Connect => self.on_connect(slot, gen, res),
                Op::Wake => {
                    self.kernel_ops -= 1;
                    self.wake_armed = false;
                    if !self.shutting_down || !self.conns.is_empty() || !self.listeners.is_empty() {
                        self.arm_wake();
                    }
                }
                Op::Cancel => {}
            }
        }
        self.cqes = cqes;
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
                        eprintln!("netpoll: a timer task panicked on core {}", self.id);
                    }
                }
                TimerTarget::ConnectTimeout(id) => {
                    if let Some(slot) = self.slot_of(id) {
                        let c = &mut self.conns[slot as usize];
                        c.connect_timer = None;
                        if c.life == Life::Connecting {
                            c.connect_timed_out = true;
                            let target = token::encode(Op::Connect, slot, c.gen);
                            self.cancel_op(target);
                        }
                    }
                }
                TimerTarget::Linger(id) => {
                    if let Some(slot) = self.slot_of(id) {
                        self.conns[slot as usize].linger_timer = None;
                        if self.conns[slot as usize].life == Life::Lingering {
                            self.abort(slot, CloseReason::Local);
                        }
                    }
                }
                TimerTarget::AcceptRetry(li) => self.arm_accept(li),
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
        for _ in 0..TASKS_PER_TURN {
            let Ok(task) = self.rx.try_recv() else { break };
            if panic::catch_unwind(AssertUnwindSafe(|| task(self))).is_err() {
                eprintln!("netpoll: a task panicked on core {}", self.id);
            }
        }
    }

    fn teardown(&mut self) -> io::Result<()> {
        if self.wake_armed {
            self.cancel_op(token::encode(Op::Wake, 0, 0));
        }
        // Wait for every operation's final completion: only then is our memory our own.
        let give_up = Instant::now() + Duration::from_secs(5);
        while self.kernel_ops > 0 && Instant::now() < give_up {
            self.drain_backlog();
            let ts = types::Timespec::from(Duration::from_millis(100));
            let args = types::SubmitArgs::new().timespec(&ts);
            match self.ring.submitter().submit_with_args(1, &args) {
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

    // ----- connections ----------------------------------------------------------------

    pub(crate) fn add_listener(&mut self, fd: OwnedFd, factory: Factory) {
        let li = self.listeners.insert(Listener {
            fd,
            factory,
            armed: false,
            closing: false,
        }) as u32;
        self.arm_accept(li);
    }

    fn arm_accept(&mut self, li: u32) {
        let Some(l) = self.listeners.get_mut(li as usize) else {
            return;
        };
        if l.armed || l.closing {
            return;
        }
        l.armed = true;
        let entry = opcode::AcceptMulti::new(types::Fd(l.fd.as_raw_fd()))
            .flags(libc::SOCK_CLOEXEC)
            .build()
            .user_data(token::encode(Op::Accept, li, 0));
        // SAFETY: multishot accept names no userspace memory.
        unsafe { self.push(entry) };
        self.kernel_ops += 1;
    }

    fn on_accept(&mut self, li: u32, res: i32, flags: u32) {
        let more = cqueue::more(flags);
        let accepted = (res >= 0).then(|| {
            // SAFETY: a non-negative accept result is a new descriptor that we now own.
            unsafe { OwnedFd::from_raw_fd(res) }
        });
        let Some(l) = self.listeners.get_mut(li as usize) else {
            return;
        };
        if !more {
            l.armed = false;
            self.kernel_ops -= 1;
        }
        let closing = l.closing;
        let factory = l.factory.clone();
        if let Some(fd) = accepted {
            if !closing && !self.shutting_down && self.conns.len() < self.cfg.max_connections {
                let _ = socket2::SockRef::from(&fd).set_tcp_nodelay(true);
                match panic::catch_unwind(AssertUnwindSafe(|| factory(self))) {
                    Ok(handler) => {
                        let slot = self.insert_conn(fd, handler);
                        self.arm_recv(slot);
                        self.call_handler(slot, |h, c| h.on_open(c));
                    }
                    Err(_) => {
                        eprintln!("netpoll: a connection factory panicked on core {}", self.id)
                    }
                }
            }
        }
        if more {
            return;
        }
        if closing {
            self.listeners.remove(li as usize);
        } else if res >= 0 {
            self.arm_accept(li);
        } else if res != -libc::ECANCELED {
            // EMFILE, ENFILE, ENOBUFS, ENOMEM...: try again shortly instead of spinning.
            self.timers
                .insert(self.now + ACCEPT_RETRY, TimerTarget::AcceptRetry(li));
        }
    }

    fn insert_conn(&mut self, fd: OwnedFd, handler: Box<dyn Handler>) -> u32 {
        self.next_gen = token::gen_bits(self.next_gen.wrapping_add(1));
        let out = self.spare.pop().unwrap_or_default();
        let inflight = self.spare.pop().unwrap_or_default();
        self.conns
            .insert(ConnState::new(fd, self.next_gen, handler, out, inflight)) as u32
    }

    fn on_connect(&mut self, slot: u32, gen: u32, res: i32) {
        let Some(c) = self.conn_state(slot, gen) else {
            return;
        };
        c.connect_addr = None;
        self.kernel_ops -= 1;
        let c = &mut self.conns[slot as usize];
        if let Some(t) = c.connect_timer.take() {
            self.timers.cancel(t);
        }
        let c = &mut self.conns[slot as usize];
        if c.life != Life::Connecting {
            self.closing.push((slot, gen));
            return;
        }
        if res == 0 {
            c.life = Life::Open;
            if !c.out.is_empty() {
                self.mark_dirty(slot);
            }
            self.arm_recv(slot);
            self.call_handler(slot, |h, c| h.on_open(c));
        } else {
            let reason = if c.connect_timed_out {
                CloseReason::ConnectTimedOut
            } else {
                CloseReason::ConnectFailed(io::Error::from_raw_os_error(-res))
            };
            self.abort(slot, reason);
        }
    }

    fn arm_recv(&mut self, slot: u32) {
        let c = &mut self.conns[slot as usize];
        let reading = match c.life {
            Life::Open => !c.paused,
            Life::Draining | Life::Lingering => true,
            Life::Connecting | Life::Closing => false,
        };
        if c.recv != RecvOp::None || c.eof || !reading {
            return;
        }
        c.recv_cancel_sent = false;
        let fd = types::Fd(c.fd.as_raw_fd());
        let missing = c.need.saturating_sub(c.acc.len());
        let large = missing >= DIRECT_RECV_LARGE && c.life == Life::Open;
        if self.pool.in_ring() > 0 && !large {
            c.recv = RecvOp::Multi;
            let entry = opcode::RecvMulti::new(fd, self.pool.group())
                .build()
                .user_data(token::encode(Op::Recv, slot, c.gen));
            // SAFETY: multishot receive writes only into pool buffers, which the pool keeps
            // alive and untouched while they are published.
            unsafe { self.push(entry) };
        } else {
            // Either the pool is empty (every buffer is lent), and receiving into the
            // connection's own buffer keeps it from stalling; or a large message is being
            // assembled, and receiving it in place saves a copy. In the second case read no
            // further than the message, so the ones after it arrive zero-copy again.
            let want = missing.max(DIRECT_RECV_MIN);
            c.acc.reserve(want);
            let spare = c.acc.spare_capacity_mut();
            let cap = if large { missing } else { spare.len() };
            let len = spare.len().min(cap).min(u32::MAX as usize) as u32;
            c.recv = RecvOp::Direct;
            let entry = opcode::Recv::new(fd, spare.as_mut_ptr().cast(), len)
                .build()
                .user_data(token::encode(Op::RecvDirect, slot, c.gen));
            // SAFETY: the spare capacity of `acc` belongs to the kernel until completion:
            // nothing touches `acc` while `recv == Direct` (see `acc_free`), and the slot is
            // not freed while an operation is outstanding.
            unsafe { self.push(entry) };
        }
        self.kernel_ops += 1;
    }

    fn on_recv(&mut self, slot: u32, gen: u32, res: i32, flags: u32) {
        let more = cqueue::more(flags);
        let view = match (res, cqueue::buffer_select(flags)) {
            (n, Some(bid)) if n > 0 => self.pool.take(bid, n as usize),
            (_, Some(bid)) => {
                self.pool.put_back_unused(bid);
                None
            }
            _ => None,
        };
        let Some(c) = self.conn_state(slot, gen) else {
            return;
        };
        if !more {
            c.recv = RecvOp::None;
            self.kernel_ops -= 1;
        }
        match res {
            n if n > 0 => match view {
                Some(view) => self.deliver(slot, view),
                None => self.abort(
                    slot,
                    CloseReason::Io(io::Error::other("kernel returned an unknown buffer id")),
                ),
            },
            0 => self.on_eof(slot),
            e if e == -libc::ENOBUFS => {
                // The ring ran dry. The data waits in the socket; grow the pool if allowed,
                // and re-arm below (falling back to a direct receive if still empty).
                if self.pool.reclaim() == 0 && self.pool.can_grow() {
                    self.pool.grow(self.cfg.buffer_count);
                    self.pool.publish();
                }
            }
            e if e == -libc::ECANCELED => {}
            e => self.fail(slot, e),
        }
        if !more {
            self.after_recv_ended(slot, gen);
        }
    }

    fn on_recv_direct(&mut self, slot: u32, gen: u32, res: i32) {
        let Some(c) = self.conn_state(slot, gen) else {
            return;
        };
        c.recv = RecvOp::None;
        self.kernel_ops -= 1;
        match res {
            n if n > 0 => {
                let c = &mut self.conns[slot as usize];
                // SAFETY: the kernel initialised `n` bytes of the spare capacity it was given.
                unsafe { c.acc.set_len(c.acc.len() + n as usize) };
                match c.life {
                    Life::Open if !c.paused => {
                        if c.need == 0 || c.acc.len() >= c.need {
                            self.call_data_acc(slot);
                        }
                    }
                    Life::Open => {}
                    _ => c.acc.clear(),
                }
            }
            0 => self.on_eof(slot),
            e if e == -libc::ECANCELED => {}
            e => self.fail(slot, e),
        }
        self.after_recv_ended(slot, gen);
    }

    /// A receive operation ended: re-arm it, or let a closing connection be released.
    fn after_recv_ended(&mut self, slot: u32, gen: u32) {
        let Some(c) = self.conn_state(slot, gen) else {
            return;
        };
        if c.life == Life::Closing {
            self.closing.push((slot, gen));
        } else {
            self.arm_recv(slot);
        }
    }

    fn on_eof(&mut self, slot: u32) {
        let c = &mut self.conns[slot as usize];
        c.eof = true;
        match c.life {
            Life::Open if c.paused && !c.acc.is_empty() => {
                // Input received before the FIN is still held back: deliver it first.
                c.eof_pending = true;
            }
            Life::Open => {
                c.reason.get_or_insert(CloseReason::PeerClosed);
                self.call_handler(slot, |h, c| h.on_read_closed(c));
            }
            Life::Lingering => self.abort(slot, CloseReason::PeerClosed),
            Life::Draining => self.check_drained(slot),
            Life::Connecting | Life::Closing => {}
        }
    }

    fn fail(&mut self, slot: u32, neg_errno: i32) {
        let c = &self.conns[slot as usize];
        if c.life != Life::Closing {
            self.abort(
                slot,
                CloseReason::Io(io::Error::from_raw_os_error(-neg_errno)),
            );
        }
    }

    /// Hands newly received bytes to the handler; copies only what completes a message
    /// that began in an earlier buffer.
    fn deliver(&mut self, slot: u32, mut view: Bytes) {
        loop {
            let c = &mut self.conns[slot as usize];
            if c.life != Life::Open {
                return; // closing: input is discarded
            }
            // Deliveries come from the multishot receive, which never overlaps a direct
            // receive into `acc`, so `acc` is ours to touch here.
            debug_assert!(c.recv != RecvOp::Direct);
            if c.paused {
                c.acc.extend_from_slice(&view);
                return;
            }
            if c.acc.is_empty() {
                if view.is_empty() {
                    return;
                }
                let need = {
                    let mut input = Input::view(&mut view);
                    self.call_handler(slot, |h, c| h.on_data(c, &mut input));
                    input.needed()
                };
                let Some(c) = self.conns.get_mut(slot as usize) else {
                    return;
                };
                c.need = need;
                if !view.is_empty() && c.life == Life::Open {
                    c.acc.reserve(need.max(view.len()));
                    c.acc.extend_from_slice(&view);
                    self.maybe_receive_in_place(slot);
                }
                return;
            }
            if view.is_empty() {
                return;
            }
            let want = if c.need > c.acc.len() {
                c.need - c.acc.len()
            } else {
                view.len()
            };
            let take = want.min(view.len());
            c.acc.extend_from_slice(&view[..take]);
            view.advance(take);
            if c.acc.len() >= c.need {
                self.call_data_acc(slot);
            }
        }
    }

    fn call_data_acc(&mut self, slot: u32) {
        let mut acc = mem::take(&mut self.conns[slot as usize].acc);
        let need = {
            let mut input = Input::acc(&mut acc);
            self.call_handler(slot, |h, c| h.on_data(c, &mut input));
            input.needed()
        };
        if acc.is_empty() && acc.capacity() > KEEP_BUFFER_MAX {
            acc = BytesMut::new();
        }
        let c = &mut self.conns[slot as usize];
        c.acc = acc;
        c.need = need;
        self.maybe_receive_in_place(slot);
    }

    /// When the handler waits for a large message, stop the multishot receive so that the
    /// rest of the message is received straight into `acc` (see `arm_recv`).
    fn maybe_receive_in_place(&mut self, slot: u32) {
        let c = &mut self.conns[slot as usize];
        if c.recv == RecvOp::Multi
            && !c.recv_cancel_sent
            && c.life == Life::Open
            && c.need.saturating_sub(c.acc.len()) >= DIRECT_RECV_LARGE
        {
            c.recv_cancel_sent = true;
            let target = token::encode(Op::Recv, slot, c.gen);
            self.cancel_op(target);
        }
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
                eprintln!(
                    "netpoll: a connection handler panicked on core {}; aborting that connection",
                    self.id
                );
                // Dropping it might panic again; forgetting it only leaks the handler.
                mem::forget(handler);
                self.abort(slot, CloseReason::HandlerPanicked);
            }
        }
    }

    pub(crate) fn mark_dirty(&mut self, slot: u32) {
        let c = &mut self.conns[slot as usize];
        if !c.dirty {
            c.dirty = true;
            self.dirty.push(slot);
        }
    }

    /// Sends what each connection wrote this turn: one send per connection.
    fn flush(&mut self) {
        let mut dirty = mem::take(&mut self.dirty);
        for &slot in &dirty {
            let Some(c) = self.conns.get_mut(slot as usize) else {
                continue;
            };
            c.dirty = false;
            match c.life {
                Life::Open | Life::Draining => {}
                // Written before the connect completed: sent once it does.
                Life::Connecting => continue,
                Life::Lingering | Life::Closing => {
                    c.out.clear();
                    continue;
                }
            }
            if !c.send_busy && !c.out.is_empty() {
                mem::swap(&mut c.out, &mut c.inflight);
                c.sent = 0;
                self.submit_send(slot);
            }
            let c = &mut self.conns[slot as usize];
            if c.life == Life::Open && !c.paused && c.pending_output() > self.cfg.high_water {
                self.pause(slot);
            }
        }
        dirty.clear();
        self.dirty = dirty;
    }

    fn submit_send(&mut self, slot: u32) {
        let c = &mut self.conns[slot as usize];
        let rest = &c.inflight[c.sent..];
        let entry = opcode::Send::new(
            types::Fd(c.fd.as_raw_fd()),
            rest.as_ptr(),
            rest.len().min(u32::MAX as usize) as u32,
        )
        .flags(libc::MSG_NOSIGNAL)
        .build()
        .user_data(token::encode(Op::Send, slot, c.gen));
        c.send_busy = true;
        // SAFETY: `inflight` is not modified while `send_busy` (writers append to `out`),
        // and the slot is not freed while an operation is outstanding.
        unsafe { self.push(entry) };
        self.kernel_ops += 1;
    }

    fn on_send(&mut self, slot: u32, gen: u32, res: i32) {
        let Some(c) = self.conn_state(slot, gen) else {
            return;
        };
        c.send_busy = false;
        self.kernel_ops -= 1;
        let c = &mut self.conns[slot as usize];
        if c.life == Life::Closing {
            self.closing.push((slot, gen));
            return;
        }
        if res < 0 {
            self.fail(slot, res);
            return;
        }
        c.sent += res as usize;
        if c.sent < c.inflight.len() {
            self.submit_send(slot); // partial write: resume where the kernel stopped
            return;
        }
        c.inflight.clear();
        c.sent = 0;
        if c.inflight.capacity() > KEEP_BUFFER_MAX {
            c.inflight = BytesMut::new();
        }
        if !c.out.is_empty() {
            self.mark_dirty(slot);
        }
        let c = &mut self.conns[slot as usize];
        if c.paused && c.pending_output() <= self.cfg.high_water / 2 {
            self.resume(slot);
        }
        if self.conns[slot as usize].life == Life::Draining {
            self.check_drained(slot);
        }
    }

    /// Stops reading from a connection whose peer does not drain its output.
    fn pause(&mut self, slot: u32) {
        let c = &mut self.conns[slot as usize];
        c.paused = true;
        if c.recv == RecvOp::Multi && !c.recv_cancel_sent {
            c.recv_cancel_sent = true;
            let target = token::encode(Op::Recv, slot, c.gen);
            self.cancel_op(target);
        }
    }

    fn resume(&mut self, slot: u32) {
        let c = &mut self.conns[slot as usize];
        c.paused = false;
        if c.recv == RecvOp::Direct {
            return; // its completion delivers what was held back
        }
        if !c.acc.is_empty() && (c.need == 0 || c.acc.len() >= c.need) {
            self.call_data_acc(slot);
        }
        let c = &mut self.conns[slot as usize];
        if c.eof_pending && c.life == Life::Open {
            if c.paused {
                return; // paused again by what was just delivered; EOF still waits
            }
            c.eof_pending = false;
            c.reason.get_or_insert(CloseReason::PeerClosed);
            self.call_handler(slot, |h, c| h.on_read_closed(c));
            return;
        }
        self.arm_recv(slot);
    }

    pub(crate) fn close_gracefully(&mut self, slot: u32, reason: CloseReason) {
        let c = &mut self.conns[slot as usize];
        match c.life {
            Life::Open => {
                c.life = Life::Draining;
                c.reason.get_or_insert(reason);
                if c.recv != RecvOp::Direct {
                    c.acc.clear(); // input is discarded from now on
                }
                self.check_drained(slot);
            }
            Life::Connecting => self.abort(slot, reason),
            Life::Draining | Life::Lingering | Life::Closing => {}
        }
    }

    /// A draining connection whose output is all sent sends FIN, then lingers for the
    /// peer's FIN so that unread input does not turn the close into a reset.
    fn check_drained(&mut self, slot: u32) {
        let c = &mut self.conns[slot as usize];
        if c.life != Life::Draining || c.send_busy || c.pending_output() > 0 {
            return;
        }
        if c.eof || sys::shutdown_write(&c.fd).is_err() {
            let reason = c.reason.take().unwrap_or(CloseReason::Local);
            self.abort(slot, reason);
            return;
        }
        c.life = Life::Lingering;
        c.paused = false;
        let id = self.slot_id(slot);
        let timer = self
            .timers
            .insert(self.now + LINGER, TimerTarget::Linger(id));
        self.conns[slot as usize].linger_timer = Some(timer);
        self.arm_recv(slot);
    }

    /// Closes a connection now: cancels its operations and frees it once the kernel has
    /// returned everything.
    pub(crate) fn abort(&mut self, slot: u32, reason: CloseReason) {
        let c = &mut self.conns[slot as usize];
        if c.life == Life::Closing {
            return;
        }
        c.life = Life::Closing;
        c.reason.get_or_insert(reason);
        let timers = [c.connect_timer.take(), c.linger_timer.take()];
        let (busy, fd, gen) = (c.kernel_busy(), c.fd.as_raw_fd(), c.gen);
        for t in timers.into_iter().flatten() {
            self.timers.cancel(t);
        }
        if busy {
            let entry = opcode::AsyncCancel2::new(types::CancelBuilder::fd(types::Fd(fd)).all())
                .build()
                .user_data(token::encode(Op::Cancel, slot, gen));
            // SAFETY: a cancellation names no userspace memory.
            unsafe { self.push(entry) };
        }
        self.closing.push((slot, gen));
    }

    fn cancel_op(&mut self, target: u64) {
        let entry = opcode::AsyncCancel2::new(types::CancelBuilder::user_data(target))
            .build()
            .user_data(token::encode(Op::Cancel, 0, 0));
        // SAFETY: a cancellation names no userspace memory.
        unsafe { self.push(entry) };
    }

    /// Frees closing connections the kernel no longer holds anything of.
    fn release_closed(&mut self) {
        let mut i = 0;
        while i < self.closing.len() {
            let (slot, gen) = self.closing[i];
            let ready = matches!(self.conn_state(slot, gen), Some(c) if c.life == Life::Closing && !c.kernel_busy());
            let stale = !matches!(self.conn_state(slot, gen), Some(c) if c.life == Life::Closing);
            if ready || stale {
                self.closing.swap_remove(i);
            } else {
                i += 1;
            }
            if ready {
                self.release(slot);
            }
        }
    }

    fn release(&mut self, slot: u32) {
        let mut c = self.conns.remove(slot as usize);
        drop(c.fd); // closes the socket
        for mut buf in [mem::take(&mut c.out), mem::take(&mut c.inflight)] {
            if buf.capacity() <= KEEP_BUFFER_MAX && self.spare.len() < 256 {
                buf.clear();
                self.spare.push(buf);
            }
        }
        let reason = c.reason.take().unwrap_or(CloseReason::Local);
        if let Some(mut handler) = c.handler.take() {
            if panic::catch_unwind(AssertUnwindSafe(|| handler.on_close(self, reason))).is_err() {
                eprintln!("netpoll: on_close panicked on core {}", self.id);
            }
        }
    }

    // ----- shutdown -------------------------------------------------------------------

    /// Stops accepting, asks every handler to finish, and closes what is left at `deadline`.
    pub(crate) fn begin_shutdown(&mut self, deadline: Instant) {
        if self.shutting_down {
            return;
        }
        self.shutting_down = true;
        let listeners: Vec<u32> = self.listeners.iter().map(|(k, _)| k as u32).collect();
        for li in listeners {
            let l = &mut self.listeners[li as usize];
            l.closing = true;
            if l.armed {
                self.cancel_op(token::encode(Op::Accept, li, 0));
            } else {
                self.listeners.remove(li as usize);
            }
        }
        let slots: Vec<u32> = self.conns.iter().map(|(k, _)| k as u32).collect();
        for slot in slots {
            match self.conns[slot as usize].life {
                Life::Open => self.call_handler(slot, |h, c| h.on_shutdown(c)),
                Life::Connecting => self.abort(slot, CloseReason::Shutdown),
                _ => {}
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
        let entry = opcode::Read::new(types::Fd(self.remote.eventfd.as_raw_fd()), buf.cast(), 8)
            .build()
            .user_data(token::encode(Op::Wake, 0, 0));
        // SAFETY: `wake_buf` is a heap allocation owned by the core, which outlives the
        // operation (teardown waits for it, and a core dropped early leaks it).
        unsafe { self.push(entry) };
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
            self.conns[slot as usize].life,
            Life::Connecting | Life::Open | Life::Draining
        )
        .then_some(slot)
    }

    fn conn_state(&mut self, slot: u32, gen: u32) -> Option<&mut ConnState> {
        self.conns
            .get_mut(slot as usize)
            .filter(|c| token::gen_bits(c.gen) == gen)
    }
}

impl Drop for Core {
    fn drop(&mut self) {
        if self.kernel_ops == 0 {
            // SAFETY: the pool is not used after this point, and no operation the kernel
            // could still complete refers to its memory.
            unsafe { ManuallyDrop::drop(&mut self.pool) };
        } else {
            // The kernel may still write into pool buffers and connection buffers: leak them
            // rather than free memory it owns.
            mem::forget(mem::take(&mut self.conns));
            mem::forget(mem::take(&mut self.wake_buf));
        }
    }
}
