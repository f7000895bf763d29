//! What the event loop needs from the operating system: the [`Driver`] interface a
//! backend implements (io_uring in `uring`, epoll in `epoll`), the [`Backend`] a core runs
//! on (chosen at start, see [`BackendKind`]), the backend-neutral receive pool (`pool`),
//! and thin wrappers over the few raw syscalls netpoll makes outside a backend.
//!
//! Every libc call lives under this module and is turned into `io::Result` in one place.

pub(crate) mod epoll;
pub(crate) mod pool;
pub(crate) mod uring;

use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::time::Duration;

use crate::BuildError;

/// Which I/O backend the cores run on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum BackendKind {
    /// io_uring where it can be used, epoll where it cannot (the default).
    #[default]
    Auto,
    /// io_uring only: starting fails where it cannot be used.
    IoUring,
    /// epoll (edge-triggered), even where io_uring works.
    Epoll,
}

impl BackendKind {
    /// What the environment variable `NETPOLL_BACKEND` asks for (`io_uring`, `epoll` or
    /// `auto`), if it is set; an unknown value is an error that names the choices.
    pub fn from_env() -> Result<Option<BackendKind>, BuildError> {
        match std::env::var("NETPOLL_BACKEND") {
            Err(_) => Ok(None),
            Ok(v) => v.parse().map(Some).map_err(|_| {
                BuildError::InvalidConfig("NETPOLL_BACKEND must be io_uring, epoll or auto")
            }),
        }
    }
}

impl std::str::FromStr for BackendKind {
    type Err = ();

    fn from_str(s: &str) -> Result<Self, ()> {
        match s.trim().to_ascii_lowercase().as_str() {
            "auto" | "" => Ok(BackendKind::Auto),
            "io_uring" | "iouring" | "uring" => Ok(BackendKind::IoUring),
            "epoll" => Ok(BackendKind::Epoll),
            _ => Err(()),
        }
    }
}

impl std::fmt::Display for BackendKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            BackendKind::Auto => "auto",
            BackendKind::IoUring => "io_uring",
            BackendKind::Epoll => "epoll",
        })
    }
}

/// The backend a core runs on.
pub(crate) enum Backend {
    Uring(uring::Uring),
    Epoll(epoll::Epoll),
}

/// Where a backend's receive pool hands its buffers.
pub(crate) enum BackendRing {
    Uring(uring::bufring::BufRing),
    Epoll(epoll::EpollBufs),
}

impl Backend {
    /// The backend `kind` asks for; with `Auto`, io_uring, or epoll if io_uring cannot be
    /// used (and why not). `entries` sizes io_uring's rings.
    pub(crate) fn new(
        kind: BackendKind,
        entries: u32,
        pool_max: usize,
    ) -> Result<(Backend, BackendRing, Option<BuildError>), BuildError> {
        let uring = || -> Result<(Backend, BackendRing), BuildError> {
            let u = uring::Uring::new(entries)?;
            let ring = u.buffer_ring(0, pool_max)?;
            Ok((Backend::Uring(u), BackendRing::Uring(ring)))
        };
        let epoll = || -> Result<(Backend, BackendRing), BuildError> {
            let e = epoll::Epoll::new()?;
            let ring = e.buffer_ring(0, pool_max)?;
            Ok((Backend::Epoll(e), BackendRing::Epoll(ring)))
        };
        match kind {
            BackendKind::IoUring => uring().map(|(b, r)| (b, r, None)),
            BackendKind::Epoll => epoll().map(|(b, r)| (b, r, None)),
            BackendKind::Auto => match uring() {
                Ok((b, r)) => Ok((b, r, None)),
                Err(why) => epoll().map(|(b, r)| (b, r, Some(why))),
            },
        }
    }

    /// Which backend this is.
    pub(crate) fn kind(&self) -> BackendKind {
        match self {
            Backend::Uring(_) => BackendKind::IoUring,
            Backend::Epoll(_) => BackendKind::Epoll,
        }
    }
}

impl pool::Provide for BackendRing {
    fn capacity(&self) -> usize {
        match self {
            BackendRing::Uring(r) => r.capacity(),
            BackendRing::Epoll(r) => r.capacity(),
        }
    }

    unsafe fn provide(&mut self, bid: u16, addr: *mut u8, len: u32) {
        // SAFETY: forwarded from this function's contract.
        unsafe {
            match self {
                BackendRing::Uring(r) => r.provide(bid, addr, len),
                BackendRing::Epoll(r) => r.provide(bid, addr, len),
            }
        }
    }

    fn publish(&mut self) {
        match self {
            BackendRing::Uring(r) => r.publish(),
            BackendRing::Epoll(r) => r.publish(),
        }
    }

    fn group(&self) -> u16 {
        match self {
            BackendRing::Uring(r) => r.group(),
            BackendRing::Epoll(r) => r.group(),
        }
    }
}

/// Forwards each call to the backend in use.
macro_rules! each_backend {
    ($self:ident, $d:ident => $e:expr) => {
        match $self {
            Backend::Uring($d) => $e,
            Backend::Epoll($d) => $e,
        }
    };
}

impl Driver for Backend {
    type Ring = BackendRing;

    fn buffer_ring(&self, group: u16, max: usize) -> Result<BackendRing, BuildError> {
        match self {
            Backend::Uring(d) => d.buffer_ring(group, max).map(BackendRing::Uring),
            Backend::Epoll(d) => d.buffer_ring(group, max).map(BackendRing::Epoll),
        }
    }

    fn completion_capacity(&self) -> usize {
        each_backend!(self, d => d.completion_capacity())
    }

    unsafe fn push(&mut self, op: Op, user_data: u64) {
        // SAFETY: forwarded from this function's contract.
        each_backend!(self, d => unsafe { d.push(op, user_data) })
    }

    fn drain_backlog(&mut self) {
        each_backend!(self, d => d.drain_backlog())
    }

    fn submit_and_reap(&mut self) -> io::Result<usize> {
        each_backend!(self, d => d.submit_and_reap())
    }

    fn wait(&mut self, timeout: Option<Duration>) -> io::Result<usize> {
        each_backend!(self, d => d.wait(timeout))
    }

    fn has_completions(&mut self) -> bool {
        each_backend!(self, d => d.has_completions())
    }

    fn completions(&mut self, out: &mut Vec<Completion>) {
        each_backend!(self, d => d.completions(out))
    }

    fn forget(&mut self, fd: RawFd) {
        each_backend!(self, d => d.forget(fd))
    }
}

/// One operation, as the core asks for it.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Op {
    /// Accept connections on a listener until cancelled.
    AcceptMulti { fd: RawFd },
    /// Receive into buffers of the pool's group until cancelled or out of buffers.
    RecvMulti { fd: RawFd, group: u16 },
    /// Receive once into `len` bytes at `buf`.
    Recv { fd: RawFd, buf: *mut u8, len: u32 },
    /// Send `len` bytes at `buf` (never raising SIGPIPE).
    Send { fd: RawFd, buf: *const u8, len: u32 },
    /// Connect to the socket address of `len` bytes at `addr`.
    Connect {
        fd: RawFd,
        addr: *const libc::sockaddr,
        len: libc::socklen_t,
    },
    /// Read `len` bytes into `buf` (the wake-up eventfd).
    Read { fd: RawFd, buf: *mut u8, len: u32 },
    /// Cancel the operation submitted with `target` as its user data.
    Cancel { target: u64 },
    /// Cancel every operation on `fd`.
    CancelFd { fd: RawFd },
}

/// One completion, decoded.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Completion {
    /// The user data the operation was pushed with.
    pub(crate) user_data: u64,
    /// The result: a count, or a negative errno.
    pub(crate) result: i32,
    /// More completions of the same (multishot) operation follow.
    pub(crate) more: bool,
    /// The pool buffer a receive filled, if any.
    pub(crate) buffer: Option<u16>,
}

/// What a core needs from an I/O backend: take [`Op`]s, hand back [`Completion`]s in a
/// completion-based style (a readiness backend performs the operation when its descriptor
/// is ready and reports the result the same way), and provide the receive pool's buffers.
///
/// The connection state machine above it (`core::lifecycle`) knows nothing of the backend.
pub(crate) trait Driver {
    /// Where the receive pool hands its buffers.
    type Ring: pool::Provide;

    /// A buffer ring for group `group`, able to hold `max` buffers.
    fn buffer_ring(&self, group: u16, max: usize) -> Result<Self::Ring, BuildError>;

    /// How many completions the backend reports at once at most.
    fn completion_capacity(&self) -> usize;

    /// Queues `op`, tagged `user_data` in its completions. Operations reach the backend in
    /// the order they were pushed, so a cancellation never overtakes what it cancels.
    ///
    /// # Safety
    ///
    /// Every buffer, address or structure `op` points to must stay valid, and must not be
    /// touched by userspace in a way the operation forbids, until the operation's final
    /// completion arrives.
    unsafe fn push(&mut self, op: Op, user_data: u64);

    /// Moves operations that waited for room to the backend, as room allows.
    fn drain_backlog(&mut self);

    /// Submits queued operations and collects finished work without waiting.
    fn submit_and_reap(&mut self) -> io::Result<usize>;

    /// Submits queued operations and waits for a completion, for at most `timeout`.
    fn wait(&mut self, timeout: Option<Duration>) -> io::Result<usize>;

    /// Whether completions are waiting to be read.
    fn has_completions(&mut self) -> bool;

    /// Appends the completions that arrived to `out`.
    fn completions(&mut self, out: &mut Vec<Completion>);

    /// `fd` is about to be closed, with no operation of it in flight: forget it (a
    /// readiness backend drops its registration, so that the number can be reused).
    fn forget(&mut self, fd: RawFd) {
        let _ = fd;
    }
}

pub(crate) fn cvt(ret: libc::c_int) -> io::Result<libc::c_int> {
    if ret < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(ret)
    }
}

/// Creates a non-blocking, close-on-exec eventfd.
pub(crate) fn eventfd() -> io::Result<OwnedFd> {
    // SAFETY: eventfd takes no pointers; a non-negative return is a fresh fd we own.
    let fd = cvt(unsafe { libc::eventfd(0, libc::EFD_CLOEXEC | libc::EFD_NONBLOCK) })?;
    // SAFETY: `fd` was just returned by the kernel and is owned by nobody else.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// Adds one to an eventfd's counter, waking whoever reads it.
pub(crate) fn eventfd_signal(fd: RawFd) {
    let one: u64 = 1;
    // SAFETY: writes 8 bytes from a live local; EAGAIN (counter saturated) means a
    // wake-up is already pending, so the result can be ignored.
    unsafe {
        libc::write(fd, (&one as *const u64).cast(), 8);
    }
}

/// Half-closes the write side of a socket (sends FIN).
pub(crate) fn shutdown_write(fd: &OwnedFd) -> io::Result<()> {
    // SAFETY: shutdown takes no pointers; `fd` is a live descriptor we own.
    cvt(unsafe { libc::shutdown(fd.as_raw_fd(), libc::SHUT_WR) }).map(drop)
}

/// Hands memory the allocator keeps free back to the operating system (glibc keeps freed
/// memory of its arenas otherwise). A no-op with other C libraries.
pub(crate) fn trim_heap() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: malloc_trim takes no pointers and only walks the allocator's own state.
    unsafe {
        libc::malloc_trim(0);
    }
}

/// Pins the calling thread to one CPU.
pub(crate) fn pin_current_thread(cpu: usize) -> io::Result<()> {
    // SAFETY: cpu_set_t is plain data; zeroed is the empty set.
    let mut set: libc::cpu_set_t = unsafe { std::mem::zeroed() };
    if cpu >= libc::CPU_SETSIZE as usize {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            "cpu index out of range",
        ));
    }
    // SAFETY: `cpu` was checked against CPU_SETSIZE above.
    unsafe { libc::CPU_SET(cpu, &mut set) };
    // SAFETY: passes a pointer to a live, correctly sized cpu_set_t; pid 0 is this thread.
    cvt(unsafe { libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &set) })
        .map(drop)
}

/// The CPUs this process may run on, in increasing order.
pub(crate) fn allowed_cpus() -> Vec<usize> {
    // SAFETY: as in `pin_current_thread`.
    let mut set: libc::cpu_set_t = unsafe { std::mem::zeroed() };
    // SAFETY: the kernel fills a live, correctly sized cpu_set_t.
    let ok =
        unsafe { libc::sched_getaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &mut set) };
    if ok != 0 {
        let n = std::thread::available_parallelism().map_or(1, |n| n.get());
        return (0..n).collect();
    }
    (0..libc::CPU_SETSIZE as usize)
        // SAFETY: the index is below CPU_SETSIZE.
        .filter(|&c| unsafe { libc::CPU_ISSET(c, &set) })
        .collect()
}

/// Anonymous, zeroed, page-aligned memory that the kernel may share with us.
pub(crate) struct Mmap {
    ptr: *mut u8,
    len: usize,
}

impl Mmap {
    /// Maps `len` bytes of zeroed, private, anonymous memory.
    pub(crate) fn anon(len: usize) -> io::Result<Mmap> {
        // SAFETY: an anonymous private mapping at a kernel-chosen address touches no
        // existing memory.
        let ptr = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                len,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_POPULATE,
                -1,
                0,
            )
        };
        if ptr == libc::MAP_FAILED {
            return Err(io::Error::last_os_error());
        }
        Ok(Mmap {
            ptr: ptr.cast(),
            len,
        })
    }

    /// The start of the mapping.
    pub(crate) fn as_ptr(&self) -> *mut u8 {
        self.ptr
    }
}

impl Drop for Mmap {
    fn drop(&mut self) {
        // SAFETY: `ptr`/`len` describe a mapping created in `anon` and unmapped only here.
        unsafe {
            libc::munmap(self.ptr.cast(), self.len);
        }
    }
}

/// Lists this process's open file descriptors (for leak checks in tests and tools).
pub fn open_fds() -> io::Result<Vec<RawFd>> {
    let mut fds = Vec::new();
    for entry in std::fs::read_dir("/proc/self/fd")? {
        if let Some(fd) = entry?.file_name().to_str().and_then(|s| s.parse().ok()) {
            fds.push(fd);
        }
    }
    fds.sort_unstable();
    Ok(fds)
}

/// The termination signals a server waits for: SIGTERM and SIGINT.
fn termination_set() -> libc::sigset_t {
    // SAFETY: sigset_t is plain data; sigemptyset/sigaddset only write into the live local.
    unsafe {
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut set);
        libc::sigaddset(&mut set, libc::SIGTERM);
        libc::sigaddset(&mut set, libc::SIGINT);
        set
    }
}

/// Blocks SIGTERM and SIGINT in the calling thread and in every thread it starts from now
/// on, so that [`wait_for_termination`] receives them instead of their default action
/// (which ends the process at once). Call it before starting any runtime.
pub fn block_termination_signals() -> io::Result<()> {
    let set = termination_set();
    // SAFETY: passes a pointer to a live sigset_t; the old mask is not asked for.
    let r = unsafe { libc::pthread_sigmask(libc::SIG_BLOCK, &set, std::ptr::null_mut()) };
    if r != 0 {
        return Err(io::Error::from_raw_os_error(r));
    }
    Ok(())
}

/// Waits until SIGTERM or SIGINT arrives (blocked first with
/// [`block_termination_signals`]) and returns its number.
pub fn wait_for_termination() -> io::Result<i32> {
    let set = termination_set();
    let mut sig: libc::c_int = 0;
    // SAFETY: both pointers name live locals.
    let r = unsafe { libc::sigwait(&set, &mut sig) };
    if r != 0 {
        return Err(io::Error::from_raw_os_error(r));
    }
    Ok(sig)
}
