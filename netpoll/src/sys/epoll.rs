//! The epoll backend, for hosts where io_uring cannot be used (a container whose seccomp
//! profile blocks it, `kernel.io_uring_disabled`, a kernel older than 6.1).
//!
//! It implements the same [`Driver`] as io_uring, so the core above it is unchanged: an
//! [`Op`] is queued, and performed when its descriptor is ready, and its result is reported
//! as a [`Completion`] exactly as io_uring would report it: a multishot receive yields one
//! completion per pool buffer filled (`more` set) and ends with end-of-file, an error or
//! `ENOBUFS` when the pool has no free buffer; a multishot accept yields one per connection;
//! cancellations end their targets with `ECANCELED`.
//!
//! Readiness is edge-triggered: each descriptor is added to the epoll set once, on its first
//! operation that would block, and stays until the core is about to close it
//! ([`Driver::forget`]). Output readiness (`EPOLLOUT`) is asked for only while a send or a
//! connect waits for it: a Unix socket would otherwise wake the core each time its peer
//! reads. A descriptor is known readable or writable until an operation on it returns
//! `EAGAIN`, and becomes so again at its next edge, so operations are attempted at once
//! when they can succeed, with no `epoll_ctl` per operation. A short read of a TCP socket
//! also means it is empty (saving the `EAGAIN`), unless urgent data or the peer's end was
//! seen; other sockets (a Unix socket's reads stop at each record) read to `EAGAIN`. Sends
//! are tried as they are submitted: on a connection whose socket has room (the usual
//! case) a send costs one `send(2)`.
//!
//! Receives go into the same zero-copy pool as io_uring's (`pool`): the pool hands its
//! buffers to [`EpollBufs`] instead of the kernel, and a receive takes one. A descriptor
//! is served at most [`BUDGET`] receives or accepts at a time, then waits for the others
//! (at most twice per loop turn), so one busy connection cannot starve the rest.

use std::cell::RefCell;
use std::collections::{HashMap, VecDeque};
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::rc::Rc;
use std::time::Duration;

use crate::sys::{cvt, pool::Provide, Completion, Driver, Op};
use crate::BuildError;

/// Receives (or accepts) on one descriptor per turn before the others are served.
const BUDGET: usize = 32;
/// Events read per `epoll_wait`.
const EVENTS: usize = 1024;

/// Buffers the pool handed over: `(bid, addr, len)`.
#[derive(Default)]
struct Bufs {
    /// Usable by receives.
    avail: Vec<(u16, *mut u8, u32)>,
    /// Handed over since the last publish.
    pending: Vec<(u16, *mut u8, u32)>,
}

/// The receive pool's side of the epoll backend: a list of free buffers that receives
/// take from (the counterpart of io_uring's provided-buffer ring).
pub(crate) struct EpollBufs {
    bufs: Rc<RefCell<Bufs>>,
    group: u16,
    capacity: usize,
}

impl Provide for EpollBufs {
    fn capacity(&self) -> usize {
        self.capacity
    }

    unsafe fn provide(&mut self, bid: u16, addr: *mut u8, len: u32) {
        self.bufs.borrow_mut().pending.push((bid, addr, len));
    }

    fn publish(&mut self) {
        let mut b = self.bufs.borrow_mut();
        let b = &mut *b;
        b.avail.append(&mut b.pending);
    }

    fn group(&self) -> u16 {
        self.group
    }
}

/// An operation waiting for its descriptor.
#[derive(Clone, Copy)]
struct Pending {
    op: Op,
    user_data: u64,
    /// A connect was started and waits for writability.
    started: bool,
    /// Listed in `waiting` (it did not complete when first tried).
    indexed: bool,
}

/// What is known of one descriptor.
#[derive(Default)]
struct FdState {
    /// In the epoll set.
    registered: bool,
    /// `EPOLLOUT` is in its interest set.
    out: bool,
    readable: bool,
    writable: bool,
    /// A short read does not mean the socket is empty: it is not TCP (a Unix socket's
    /// reads stop at each record), or urgent data came (a read stops at its mark), or the
    /// peer's end was seen (no later edge will say that more is left): read to `EAGAIN`.
    read_to_eagain: bool,
    /// Listed in `ready` (it used its budget with readiness left).
    listed: bool,
    /// Accepts, receives and reads, in order.
    reads: VecDeque<Pending>,
    /// Sends and connects, in order.
    writes: VecDeque<Pending>,
}

/// What trying an operation came to.
enum Step {
    /// It completed for good.
    Done,
    /// It would block: wait for the descriptor's next edge.
    Blocked,
    /// It is multishot and used this turn's budget with readiness left.
    Budget,
}

/// A core's epoll instance, its descriptors' operations and the completions not yet read.
pub(crate) struct Epoll {
    ep: OwnedFd,
    /// The descriptors with operations, or registered (freed by `forget`).
    fds: HashMap<RawFd, FdState>,
    /// Pushed and not yet performed, in order.
    submitted: VecDeque<(Op, u64)>,
    done: Vec<Completion>,
    /// Descriptors with readiness left after their budget: served next turn.
    ready: Vec<RawFd>,
    events: Vec<libc::epoll_event>,
    bufs: Rc<RefCell<Bufs>>,
    /// The descriptor of each operation that had to wait, by user data (for cancellation
    /// by target).
    waiting: HashMap<u64, RawFd>,
}

impl Epoll {
    /// A new epoll instance.
    pub(crate) fn new() -> Result<Epoll, BuildError> {
        // SAFETY: epoll_create1 takes no pointers; a non-negative return is a fresh fd.
        let fd = cvt(unsafe { libc::epoll_create1(libc::EPOLL_CLOEXEC) })?;
        Ok(Epoll {
            // SAFETY: `fd` was just returned by the kernel and is owned by nobody else.
            ep: unsafe { OwnedFd::from_raw_fd(fd) },
            fds: HashMap::new(),
            submitted: VecDeque::new(),
            done: Vec::with_capacity(1024),
            ready: Vec::new(),
            events: Vec::with_capacity(EVENTS),
            bufs: Rc::default(),
            waiting: HashMap::new(),
        })
    }

    fn state(&mut self, fd: RawFd) -> &mut FdState {
        self.fds.entry(fd).or_default()
    }

    fn complete(&mut self, user_data: u64, result: i32, more: bool, buffer: Option<u16>) {
        self.done.push(Completion {
            user_data,
            result,
            more,
            buffer,
        });
    }

    /// Performs what was pushed, in order.
    fn run_submitted(&mut self) {
        while let Some((op, user_data)) = self.submitted.pop_front() {
            let pending = Pending {
                op,
                user_data,
                started: false,
                indexed: false,
            };
            let (fd, read) = match op {
                Op::Cancel { target } => {
                    let found = match self.waiting.get(&target) {
                        Some(&fd) => self.end_ops(fd, -libc::ECANCELED, |p| p.user_data == target),
                        None => 0,
                    };
                    let res = if found > 0 { 0 } else { -libc::ENOENT };
                    self.complete(user_data, res, false, None);
                    continue;
                }
                Op::CancelFd { fd } => {
                    let found = self.end_ops(fd, -libc::ECANCELED, |_| true);
                    let res = if found > 0 {
                        found as i32
                    } else {
                        -libc::ENOENT
                    };
                    self.complete(user_data, res, false, None);
                    continue;
                }
                Op::AcceptMulti { fd } => {
                    // The listener was made for io_uring, which does not need it
                    // non-blocking; accept4 here must not block the core.
                    if let Err(e) = set_nonblocking(fd) {
                        let e = e.raw_os_error().unwrap_or(libc::EIO);
                        self.complete(user_data, -e, false, None);
                        continue;
                    }
                    (fd, true)
                }
                Op::RecvMulti { fd, .. } | Op::Recv { fd, .. } | Op::Read { fd, .. } => (fd, true),
                Op::Send { fd, .. } | Op::Connect { fd, .. } => (fd, false),
            };
            let st = self.state(fd);
            if read { &mut st.reads } else { &mut st.writes }.push_back(pending);
            self.drive(fd);
            // Still queued (it is the last of its queue if so): cancellable by target.
            let Some(st) = self.fds.get_mut(&fd) else {
                continue;
            };
            let q = if read { &mut st.reads } else { &mut st.writes };
            if let Some(p) = q
                .back_mut()
                .filter(|p| p.user_data == user_data && !p.indexed)
            {
                p.indexed = true;
                self.waiting.insert(user_data, fd);
            }
        }
    }

    /// Ends `fd`'s waiting operations that `which` selects with `res`; returns how many.
    fn end_ops(&mut self, fd: RawFd, res: i32, which: impl Fn(&Pending) -> bool) -> usize {
        let Some(st) = self.fds.get_mut(&fd) else {
            return 0;
        };
        let mut ended = Vec::new();
        for q in [&mut st.reads, &mut st.writes] {
            q.retain(|p| {
                let hit = which(p);
                if hit {
                    ended.push(*p);
                }
                !hit
            });
        }
        for p in &ended {
            if p.indexed {
                self.waiting.remove(&p.user_data);
            }
            self.complete(p.user_data, res, false, None);
        }
        ended.len()
    }

    /// An operation at the front of its queue completed for good.
    fn finished(&mut self, fd: RawFd, read: bool) {
        let Some(st) = self.fds.get_mut(&fd) else {
            return;
        };
        let q = if read { &mut st.reads } else { &mut st.writes };
        if let Some(p) = q.pop_front() {
            if p.indexed {
                self.waiting.remove(&p.user_data);
            }
        }
    }

    /// Runs `fd`'s operations as far as its readiness allows, and asks epoll for what
    /// the ones left wait for.
    fn drive(&mut self, fd: RawFd) {
        let mut read_blocked = false;
        let mut write_blocked = false;
        let mut budget = false;
        loop {
            let Some(st) = self.fds.get_mut(&fd) else {
                return;
            };
            let Some(&p) = st.reads.front() else { break };
            if st.registered && !st.readable {
                read_blocked = true;
                break;
            }
            match self.try_read(fd, p) {
                Step::Done => self.finished(fd, true),
                Step::Blocked => {
                    self.state(fd).readable = false;
                    read_blocked = true;
                    break;
                }
                Step::Budget => {
                    budget = true;
                    break;
                }
            }
        }
        loop {
            let Some(st) = self.fds.get_mut(&fd) else {
                return;
            };
            let Some(&p) = st.writes.front() else { break };
            if st.registered && st.out && !st.writable {
                write_blocked = true;
                break;
            }
            match self.try_write(fd, p) {
                Step::Done => self.finished(fd, false),
                Step::Blocked | Step::Budget => {
                    let st = self.state(fd);
                    st.writable = false;
                    if let Some(front) = st.writes.front_mut() {
                        if matches!(front.op, Op::Connect { .. }) {
                            front.started = true;
                        }
                    }
                    write_blocked = true;
                    break;
                }
            }
        }
        let Some(st) = self.fds.get_mut(&fd) else {
            return;
        };
        if budget && !st.listed {
            st.listed = true;
            self.ready.push(fd);
        }
        let (op, out) = if !st.registered && (read_blocked || write_blocked) {
            (libc::EPOLL_CTL_ADD, write_blocked)
        } else if st.registered && write_blocked && !st.out {
            (libc::EPOLL_CTL_MOD, true)
        } else {
            return;
        };
        if op == libc::EPOLL_CTL_ADD && !is_tcp(fd) {
            st.read_to_eagain = true;
        }
        if let Err(e) = self.interest(fd, op, out) {
            // Not pollable (or out of memory): the waiting operations fail rather than
            // wait for an edge that never comes.
            self.end_ops(fd, -e, |_| true);
            return;
        }
        let st = self.state(fd);
        if op == libc::EPOLL_CTL_ADD {
            st.registered = true;
            // Known to have blocked just now; the registration reports any edge since.
            st.readable = st.reads.is_empty();
            st.writable = st.writes.is_empty();
        }
        st.out = out;
    }

    /// Sets `fd`'s interest set (`op`: add or modify): input always, output if `out`.
    fn interest(&mut self, fd: RawFd, op: libc::c_int, out: bool) -> Result<(), i32> {
        let mut events = libc::EPOLLIN | libc::EPOLLRDHUP | libc::EPOLLPRI | libc::EPOLLET;
        if out {
            events |= libc::EPOLLOUT;
        }
        let mut ev = libc::epoll_event {
            events: events as u32,
            u64: fd as u64,
        };
        // SAFETY: passes a pointer to a live epoll_event; both descriptors are open.
        let r = unsafe { libc::epoll_ctl(self.ep.as_raw_fd(), op, fd, &mut ev) };
        if r < 0 {
            Err(errno())
        } else {
            Ok(())
        }
    }

    fn try_read(&mut self, fd: RawFd, p: Pending) -> Step {
        match p.op {
            Op::AcceptMulti { .. } => {
                for _ in 0..BUDGET {
                    // SAFETY: null address pointers ask for no peer address.
                    let r = unsafe {
                        libc::accept4(
                            fd,
                            std::ptr::null_mut(),
                            std::ptr::null_mut(),
                            libc::SOCK_CLOEXEC | libc::SOCK_NONBLOCK,
                        )
                    };
                    if r >= 0 {
                        self.complete(p.user_data, r, true, None);
                        continue;
                    }
                    match errno() {
                        libc::EAGAIN => return Step::Blocked,
                        // The peer gave up before we took it: skip it, as io_uring does.
                        libc::ECONNABORTED | libc::EINTR | libc::EPROTO => continue,
                        e => {
                            self.complete(p.user_data, -e, false, None);
                            return Step::Done;
                        }
                    }
                }
                Step::Budget
            }
            Op::RecvMulti { .. } => {
                for _ in 0..BUDGET {
                    let Some((bid, addr, len)) = self.bufs.borrow_mut().avail.pop() else {
                        self.complete(p.user_data, -libc::ENOBUFS, false, None);
                        return Step::Done;
                    };
                    // SAFETY: the pool handed this buffer over (`EpollBufs::provide`): its
                    // `len` bytes are ours to write until a completion names `bid`.
                    let r =
                        unsafe { libc::recv(fd, addr.cast(), len as usize, libc::MSG_DONTWAIT) };
                    if r > 0 {
                        self.complete(p.user_data, r as i32, true, Some(bid));
                        let drain = self.fds.get(&fd).is_some_and(|st| st.read_to_eagain);
                        if (r as u32) < len && !drain {
                            // A short read drained the socket: its next edge says more came.
                            return Step::Blocked;
                        }
                        continue;
                    }
                    self.bufs.borrow_mut().avail.push((bid, addr, len));
                    if r == 0 {
                        self.complete(p.user_data, 0, false, None);
                        return Step::Done;
                    }
                    match errno() {
                        libc::EAGAIN => return Step::Blocked,
                        libc::EINTR => continue,
                        e => {
                            self.complete(p.user_data, -e, false, None);
                            return Step::Done;
                        }
                    }
                }
                Step::Budget
            }
            Op::Recv { buf, len, .. } | Op::Read { buf, len, .. } => loop {
                // SAFETY: the caller of `push` keeps the `len` bytes at `buf` valid and
                // untouched until this operation completes.
                let r = unsafe {
                    if matches!(p.op, Op::Read { .. }) {
                        libc::read(fd, buf.cast(), len as usize)
                    } else {
                        libc::recv(fd, buf.cast(), len as usize, libc::MSG_DONTWAIT)
                    }
                };
                if r >= 0 {
                    self.complete(p.user_data, r as i32, false, None);
                    return Step::Done;
                }
                match errno() {
                    libc::EAGAIN => return Step::Blocked,
                    libc::EINTR => continue,
                    e => {
                        self.complete(p.user_data, -e, false, None);
                        return Step::Done;
                    }
                }
            },
            _ => unreachable!("not a read operation"),
        }
    }

    fn try_write(&mut self, fd: RawFd, p: Pending) -> Step {
        match p.op {
            Op::Send { buf, len, .. } => {
                let mut sent = 0usize;
                loop {
                    // SAFETY: the caller of `push` keeps the `len` bytes at `buf` valid
                    // until this operation completes; `sent` never passes `len`.
                    let r = unsafe {
                        libc::send(
                            fd,
                            buf.add(sent).cast(),
                            len as usize - sent,
                            libc::MSG_DONTWAIT | libc::MSG_NOSIGNAL,
                        )
                    };
                    if r >= 0 {
                        sent += r as usize;
                        if sent < len as usize && r > 0 {
                            continue;
                        }
                        self.complete(p.user_data, sent as i32, false, None);
                        return Step::Done;
                    }
                    match errno() {
                        libc::EINTR => continue,
                        // Part went: report it, as a short io_uring send does; the core
                        // sends the rest, which waits for room.
                        libc::EAGAIN if sent > 0 => {
                            self.complete(p.user_data, sent as i32, false, None);
                            self.state(fd).writable = false;
                            return Step::Done;
                        }
                        libc::EAGAIN => return Step::Blocked,
                        e => {
                            self.complete(p.user_data, -e, false, None);
                            return Step::Done;
                        }
                    }
                }
            }
            Op::Connect { addr, len, .. } => {
                if p.started {
                    // Writable after EINPROGRESS: the outcome is the socket's error.
                    let res = match socket_int(fd, libc::SO_ERROR) {
                        Ok(err) => -err,
                        Err(e) => -e,
                    };
                    self.complete(p.user_data, res, false, None);
                    return Step::Done;
                }
                if let Err(e) = set_nonblocking(fd) {
                    self.complete(
                        p.user_data,
                        -e.raw_os_error().unwrap_or(libc::EIO),
                        false,
                        None,
                    );
                    return Step::Done;
                }
                // SAFETY: the caller of `push` keeps the `len` bytes at `addr` valid until
                // this operation completes.
                let r = unsafe { libc::connect(fd, addr, len) };
                if r == 0 {
                    self.complete(p.user_data, 0, false, None);
                    return Step::Done;
                }
                match errno() {
                    // Under way: its outcome comes with writability. (EAGAIN is not: a
                    // Unix socket's full backlog refuses the connect, and it fails.)
                    libc::EINPROGRESS | libc::EINTR => Step::Blocked,
                    e => {
                        self.complete(p.user_data, -e, false, None);
                        Step::Done
                    }
                }
            }
            _ => unreachable!("not a write operation"),
        }
    }

    /// Waits up to `timeout` for readiness, and performs what became possible.
    fn poll(&mut self, timeout: Option<Duration>) -> io::Result<()> {
        let ms = match timeout {
            None => -1,
            // Rounded up: waking before a timer is due would only spin.
            Some(t) => t.as_micros().div_ceil(1000).min(i32::MAX as u128) as i32,
        };
        self.events.clear();
        // SAFETY: the kernel writes at most `capacity` events into the vector's spare room.
        let n = unsafe {
            libc::epoll_wait(
                self.ep.as_raw_fd(),
                self.events.as_mut_ptr(),
                EVENTS.min(self.events.capacity()) as i32,
                ms,
            )
        };
        if n < 0 {
            let e = io::Error::last_os_error();
            return if e.raw_os_error() == Some(libc::EINTR) {
                Ok(())
            } else {
                Err(e)
            };
        }
        // SAFETY: the kernel initialised `n` events.
        unsafe { self.events.set_len(n as usize) };
        for k in 0..n as usize {
            let ev = self.events[k];
            let fd = ev.u64 as RawFd;
            let Some(st) = self.fds.get_mut(&fd) else {
                continue;
            };
            if !st.registered {
                continue;
            }
            let bits = ev.events as i32;
            let broken = bits & (libc::EPOLLHUP | libc::EPOLLERR) != 0;
            if broken || bits & (libc::EPOLLRDHUP | libc::EPOLLPRI) != 0 {
                st.read_to_eagain = true;
            }
            if broken || bits & (libc::EPOLLIN | libc::EPOLLRDHUP | libc::EPOLLPRI) != 0 {
                st.readable = true;
            }
            if broken || bits & libc::EPOLLOUT != 0 {
                st.writable = true;
            }
            let idle_out = st.out && st.writes.is_empty() && bits & libc::EPOLLOUT != 0;
            self.drive(fd);
            // Nothing waits for room any more: stop asking (a Unix socket would report
            // every read its peer makes).
            if idle_out
                && self.fds.get(&fd).is_some_and(|st| st.writes.is_empty())
                && self.interest(fd, libc::EPOLL_CTL_MOD, false).is_ok()
            {
                self.state(fd).out = false;
            }
        }
        for fd in std::mem::take(&mut self.ready) {
            if let Some(st) = self.fds.get_mut(&fd) {
                st.listed = false;
                self.drive(fd);
            }
        }
        Ok(())
    }
}

fn errno() -> i32 {
    io::Error::last_os_error()
        .raw_os_error()
        .unwrap_or(libc::EIO)
}

/// Whether `fd` is a TCP socket (whose short reads mean it is empty).
fn is_tcp(fd: RawFd) -> bool {
    socket_int(fd, libc::SO_PROTOCOL) == Ok(libc::IPPROTO_TCP)
}

/// An integer socket option (`SOL_SOCKET` level) of `fd`, or the errno.
fn socket_int(fd: RawFd, option: libc::c_int) -> Result<libc::c_int, i32> {
    let mut v: libc::c_int = 0;
    let mut n = std::mem::size_of::<libc::c_int>() as libc::socklen_t;
    // SAFETY: both pointers name live locals of the sizes given; `fd` is open.
    let r = unsafe {
        libc::getsockopt(
            fd,
            libc::SOL_SOCKET,
            option,
            (&mut v as *mut libc::c_int).cast(),
            &mut n,
        )
    };
    if r < 0 {
        Err(errno())
    } else {
        Ok(v)
    }
}

fn set_nonblocking(fd: RawFd) -> io::Result<()> {
    // SAFETY: fcntl on a descriptor the caller keeps open; no pointers.
    let flags = cvt(unsafe { libc::fcntl(fd, libc::F_GETFL) })?;
    if flags & libc::O_NONBLOCK == 0 {
        // SAFETY: as above.
        cvt(unsafe { libc::fcntl(fd, libc::F_SETFL, flags | libc::O_NONBLOCK) })?;
    }
    Ok(())
}

impl Driver for Epoll {
    type Ring = EpollBufs;

    fn buffer_ring(&self, group: u16, max: usize) -> Result<EpollBufs, BuildError> {
        Ok(EpollBufs {
            bufs: self.bufs.clone(),
            group,
            capacity: max.min(1 << 15),
        })
    }

    fn completion_capacity(&self) -> usize {
        1024
    }

    unsafe fn push(&mut self, op: Op, user_data: u64) {
        self.submitted.push_back((op, user_data));
    }

    fn drain_backlog(&mut self) {}

    fn submit_and_reap(&mut self) -> io::Result<usize> {
        self.run_submitted();
        self.poll(Some(Duration::ZERO))?;
        Ok(self.done.len())
    }

    fn wait(&mut self, timeout: Option<Duration>) -> io::Result<usize> {
        self.run_submitted();
        let timeout = if self.done.is_empty() && self.ready.is_empty() {
            timeout
        } else {
            Some(Duration::ZERO)
        };
        self.poll(timeout)?;
        Ok(self.done.len())
    }

    fn has_completions(&mut self) -> bool {
        !self.done.is_empty()
    }

    fn completions(&mut self, out: &mut Vec<Completion>) {
        out.append(&mut self.done);
    }

    fn forget(&mut self, fd: RawFd) {
        // The core forgets only descriptors with nothing in flight; anything left would
        // never complete, so it ends now.
        let left = self.end_ops(fd, -libc::ECANCELED, |_| true);
        debug_assert_eq!(left, 0, "descriptor {fd} forgotten with operations waiting");
        let Some(st) = self.fds.remove(&fd) else {
            return;
        };
        if st.registered {
            // SAFETY: no event pointer is needed to delete; `fd` is still open.
            unsafe {
                libc::epoll_ctl(
                    self.ep.as_raw_fd(),
                    libc::EPOLL_CTL_DEL,
                    fd,
                    std::ptr::null_mut(),
                );
            }
        }
        // A stale `ready` entry finds no state and is skipped.
    }
}
