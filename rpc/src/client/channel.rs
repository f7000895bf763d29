//! [`Channel`]: a small pool of connections to one address, shared by every thread.

use std::sync::atomic::AtomicU64;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use netpoll::{ConnId, Core, RuntimeHandle};

use super::conn::{Call, ClientConn, Closures, Encode};
use super::framing::ReplyFraming;
use crate::CallError;

/// Settings of a [`Channel`].
#[derive(Debug, Clone)]
pub struct ChannelConfig {
    /// Connections kept to the address (spread over the runtime's cores). Default 1.
    pub connections: usize,
    /// How long a connect may take. Default 1 s.
    pub connect_timeout: Duration,
    /// Deadline of a call that sets none itself. Default 5 s; `None` waits forever.
    pub call_timeout: Option<Duration>,
    /// Bytes of requests a connection may have queued and not yet taken by the server;
    /// a call beyond that fails at once with [`CallError::QueueFull`]. Default 16 MiB.
    pub max_queued_bytes: usize,
    /// A connection without calls for this long is closed (the next call opens a new
    /// one). Default 60 s; `None` keeps connections open.
    pub idle_timeout: Option<Duration>,
    /// TLS for every connection (feature `tls`). Default none: plain text.
    #[cfg(feature = "tls")]
    pub tls: Option<crate::tls::ClientTls>,
}

impl Default for ChannelConfig {
    fn default() -> Self {
        ChannelConfig {
            connections: 1,
            connect_timeout: Duration::from_secs(1),
            call_timeout: Some(Duration::from_secs(5)),
            max_queued_bytes: 16 << 20,
            idle_timeout: Some(Duration::from_secs(60)),
            #[cfg(feature = "tls")]
            tls: None,
        }
    }
}

struct Inner {
    rt: RuntimeHandle,
    addr: crate::discovery::Addr,
    cfg: ChannelConfig,
    framing: Arc<dyn ReplyFraming>,
    /// The connection of each pool slot, touched only on the slot's core.
    slots: Vec<SlotConn>,
    next: AtomicUsize,
    /// The instance left: no new connection is opened.
    retired: std::sync::atomic::AtomicBool,
}

/// Calls to one server address over a few multiplexed connections on netpoll cores.
///
/// Callable from any thread: [`call`](Channel::call) blocks the calling thread until the
/// reply (or a timeout, or a failure) arrives; [`call_with`](Channel::call_with) returns
/// at once and hands the outcome to a callback on the connection's core, so one thread can
/// keep many calls in flight. Calls are multiplexed over each connection by sequence id;
/// a failed connection is replaced on the next call.
#[derive(Clone)]
pub struct Channel {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for Channel {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Channel")
            .field("addr", &self.inner.addr)
            .field("config", &self.inner.cfg)
            .finish()
    }
}

impl Channel {
    /// A channel to `addr` (TCP, or a Unix domain socket) whose connections run on `rt`'s
    /// cores and whose replies are split by `framing`.
    pub fn new(
        rt: RuntimeHandle,
        addr: impl Into<crate::discovery::Addr>,
        framing: Arc<dyn ReplyFraming>,
        cfg: ChannelConfig,
    ) -> Channel {
        let n = cfg.connections.max(1);
        Channel {
            inner: Arc::new(Inner {
                rt,
                addr: addr.into(),
                cfg,
                framing,
                slots: (0..n).map(|_| SlotConn::default()).collect(),
                next: AtomicUsize::new(0),
                retired: std::sync::atomic::AtomicBool::new(false),
            }),
        }
    }

    /// The server's address.
    pub fn addr(&self) -> &crate::discovery::Addr {
        &self.inner.addr
    }

    /// Sends a call and waits for its reply frame. `encode` writes the request frame for
    /// the sequence id it is given (or fails the call, leaving the output as it was). `timeout` overrides the channel's call timeout.
    pub fn call(
        &self,
        encode: impl FnOnce(&mut BytesMut, i32) -> Result<(), CallError> + Send + 'static,
        timeout: Option<Duration>,
    ) -> Result<Bytes, CallError> {
        if netpoll::current_core().is_some() {
            return Err(CallError::WouldBlockCore);
        }
        let (tx, rx) = std::sync::mpsc::sync_channel(1);
        self.call_with(encode, timeout, move |r| {
            let _ = tx.send(r);
        });
        // The loop's timer enforces the deadline; if the runtime stops first, the
        // callback is dropped and so is the sender.
        rx.recv().unwrap_or(Err(CallError::RuntimeStopped))
    }

    /// Sends a call; `done` gets the reply frame or the failure, on the connection's core.
    pub fn call_with(
        &self,
        encode: impl FnOnce(&mut BytesMut, i32) -> Result<(), CallError> + Send + 'static,
        timeout: Option<Duration>,
        done: impl FnOnce(Result<Bytes, CallError>) + Send + 'static,
    ) {
        let call = Box::new(Closures {
            encode: Some(encode),
            done: Some(done),
        });
        self.clone().send_call(call, timeout);
    }

    /// Sends a call given as one object (the typed client's call state): one allocation
    /// per call, and none more for its hop to the connection's core when the caller is on
    /// that core.
    pub(crate) fn send_call(self, call: Call, timeout: Option<Duration>) {
        let route = self.route();
        self.send_routed(route, call, timeout);
    }

    /// Where a call made now from this thread would go (for [`send_routed`](Self::send_routed)).
    pub(crate) fn route(&self) -> Route {
        self.inner.route()
    }

    /// As [`send_call`](Self::send_call), to where [`route`](Self::route) said, on the
    /// same thread.
    pub(crate) fn send_routed(self, route: Route, call: Call, timeout: Option<Duration>) {
        let timeout = timeout.or(self.inner.cfg.call_timeout);
        dispatch_to(self.inner, route, call, timeout, true);
    }

    /// Sends a oneway call: no reply is expected, none is waited for.
    pub fn send_oneway(
        &self,
        encode: impl FnOnce(&mut BytesMut, i32) -> Result<(), CallError> + Send + 'static,
    ) {
        let call = Box::new(Closures {
            encode: Some(encode),
            done: None::<fn(Result<Bytes, CallError>)>,
        });
        dispatch(self.inner.clone(), call, None, false);
    }

    /// Opens the channel's connections now, before the first call.
    pub fn warm_up(&self) {
        for slot in 0..self.inner.slots.len() {
            let inner = self.inner.clone();
            let core = slot % inner.rt.cores().max(1);
            let _ = self.inner.rt.spawn(core, move |c: &mut Core| {
                let _ = inner.connection(c, slot);
            });
        }
    }

    /// Takes no more calls on the channel's connections: each closes once its calls in
    /// flight are answered (the instance left the service).
    pub fn retire(&self) {
        self.inner.retired.store(true, Ordering::Relaxed);
        for slot in 0..self.inner.slots.len() {
            let inner = self.inner.clone();
            let core = slot % inner.rt.cores().max(1);
            let _ = self.inner.rt.spawn(core, move |c: &mut Core| {
                if let Some(id) = inner.slots[slot].take() {
                    c.with_handler::<ClientConn, _>(id, |h, conn| h.retire(conn));
                }
            });
        }
    }

    /// Opens a streaming gRPC call on one of the channel's connections: `encode` writes
    /// its request frame (method and metadata, no message); its replies and end go to
    /// `shared`. The core it runs on, for the handle's requests.
    pub(crate) fn open_stream(
        &self,
        encode: Encode,
        timeout: Option<Duration>,
        shared: Arc<super::stream::Shared>,
    ) -> usize {
        let inner = self.inner.clone();
        let slot = inner.next.fetch_add(1, Ordering::Relaxed) % inner.slots.len();
        let core = slot % inner.rt.cores().max(1);
        let failed = shared.clone();
        // If the core stops before the task runs, the stream ends instead of waiting.
        let guard = EndOnDrop(Some(shared.clone()));
        let spawned = self.inner.rt.spawn(core, move |c: &mut Core| {
            let mut guard = guard;
            guard.0 = None;
            let id = match inner.connection(c, slot) {
                Ok(id) => id,
                Err(e) => return shared.end(Err(CallError::Connect(e))),
            };
            let mut args = Some((encode, shared));
            let r = c.with_handler::<ClientConn, _>(id, |h, conn| {
                let (encode, shared) = args.take().expect("called once");
                let end = shared.clone();
                if let Err(e) = h.open_stream(conn, encode, timeout, shared) {
                    end.end(Err(e));
                }
            });
            if r.is_none() {
                if let Some((_, shared)) = args {
                    shared.end(Err(CallError::Connect(std::io::Error::new(
                        std::io::ErrorKind::NotConnected,
                        "the connection closed before the call was sent",
                    ))));
                }
            }
        });
        if spawned.is_err() {
            failed.end(Err(CallError::RuntimeStopped));
        }
        core
    }

    /// The runtime the channel's connections run on.
    pub(crate) fn runtime(&self) -> &RuntimeHandle {
        &self.inner.rt
    }
}

/// Where a call goes: a pool slot, and the core of its connection.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Route {
    slot: usize,
    core: usize,
    /// The core is the calling thread's own: the call is sent, and ends, on this thread.
    pub(crate) local: bool,
}

impl Inner {
    /// The slot a call made now from this thread goes to.
    fn route(&self) -> Route {
        let cores = self.rt.cores().max(1);
        let n = self.slots.len();
        // Called on one of the runtime's cores (a reply callback making the next call, a
        // handler of a server on the same runtime): a connection of this core's, so the
        // call needs no hop to another thread.
        let local = self.rt.local_core();
        let next = || self.next.fetch_add(1, Ordering::Relaxed);
        let slot = match (local, super::conn::replying(self as *const Inner as usize)) {
            (Some(_), Some(slot)) if slot < n => slot,
            (Some(c), _) if c < n => c + cores * (next() % (n - c).div_ceil(cores)),
            _ => next() % n,
        };
        let core = slot % cores;
        Route {
            slot,
            core,
            local: local == Some(core),
        }
    }
}

/// Sends a call on one of the connections of `inner`'s pool.
fn dispatch(inner: Arc<Inner>, call: Call, timeout: Option<Duration>, reply: bool) {
    let route = inner.route();
    dispatch_to(inner, route, call, timeout, reply)
}

/// Sends a call on the connection `route` names.
fn dispatch_to(
    inner: Arc<Inner>,
    route: Route,
    call: Call,
    timeout: Option<Duration>,
    reply: bool,
) {
    let Route { slot, core, local } = route;
    if local {
        return outbox_push(core, (inner, slot, call, timeout, reply));
    }
    let rt = inner.rt.clone();
    // If the core has stopped the task is dropped, and with it the call: a blocking
    // caller then sees RuntimeStopped.
    let _ = rt.spawn(core, move |c: &mut Core| {
        inner.start(c, slot, call, timeout, reply)
    });
}

/// A call made on the core that owns its connection, waiting for the end of the loop
/// turn: its channel, pool slot, call, timeout, and whether it expects a reply.
type Queued = (Arc<Inner>, usize, Call, Option<Duration>, bool);

/// The calls a core made to its own connections during the current loop turn. Sent
/// at the end of the turn by one task for all of them, instead of one task each; not
/// sent directly from the callback that made them, because that callback may run inside
/// the very connection's handler the call goes to.
#[derive(Default)]
struct Outbox {
    calls: Vec<Queued>,
    /// A task that sends them is queued on the core.
    scheduled: bool,
}

thread_local! {
    static OUTBOX: std::cell::RefCell<Outbox> = std::cell::RefCell::default();
}

fn outbox_push(core: usize, q: Queued) {
    // The runtime, when a task must be scheduled (once per loop turn).
    let schedule = OUTBOX.with(|o| {
        let mut o = o.borrow_mut();
        let rt = (!o.scheduled).then(|| q.0.rt.clone());
        o.calls.push(q);
        o.scheduled = true;
        rt
    });
    if schedule.is_some_and(|rt| rt.spawn(core, outbox_send).is_err()) {
        // Not reached while this thread runs the core (a task a core sends itself is
        // always taken); kept so that the flag never claims a task that does not exist.
        OUTBOX.with(|o| o.borrow_mut().scheduled = false);
    }
}

/// On the core: sends the calls it queued for itself before this task ran. Calls that
/// these sends make in turn (the retry of a call that failed at once, the next call of a
/// callback that makes one on every outcome) wait for the next loop turn: a caller that
/// re-issues on every failure (a full send queue, a refused connect) must not keep the
/// core from the I/O that would end the failures.
fn outbox_send(core: &mut Core) {
    let batch = OUTBOX.with(|o| {
        let mut o = o.borrow_mut();
        // Cleared first: a call queued from here on schedules a task of its own, and a
        // panicking callback below cannot leave the flag set with no task to clear it.
        o.scheduled = false;
        std::mem::take(&mut o.calls)
    });
    let mut rest = Unsent(batch.into_iter());
    for (inner, slot, call, timeout, reply) in rest.0.by_ref() {
        inner.start(core, slot, call, timeout, reply);
    }
}

/// The calls of a batch not sent yet: if a callback panics mid-batch (the task is then
/// abandoned), they go back to the outbox for the next turn instead of being dropped.
struct Unsent(std::vec::IntoIter<Queued>);

impl Drop for Unsent {
    fn drop(&mut self) {
        for q in self.0.by_ref() {
            let core = q.1 % q.0.rt.cores().max(1);
            outbox_push(core, q);
        }
    }
}

impl Inner {
    /// On the slot's core: the slot's connection, opened if it has none (or only one the
    /// server asked us to leave).
    fn connection(&self, core: &mut Core, slot: usize) -> std::io::Result<ConnId> {
        // A connection the server asked us to leave (TTHeader `crrst`) takes no new calls.
        let live = self.slots[slot]
            .get()
            .filter(|id| core.with_handler::<ClientConn, _>(*id, |h, _| !h.retiring) == Some(true));
        if let Some(id) = live {
            return Ok(id);
        }
        if self.retired.load(Ordering::Relaxed) {
            return Err(std::io::Error::new(
                std::io::ErrorKind::NotConnected,
                "the instance left the service",
            ));
        }
        let handler = Box::new(ClientConn::new(
            self.framing.clone(),
            self.cfg.max_queued_bytes,
            self.cfg.idle_timeout,
            &self.addr,
            (self as *const Inner as usize, slot),
        ));
        let timeout = Some(self.cfg.connect_timeout);
        #[cfg(feature = "tls")]
        if let Some(tls) = &self.cfg.tls {
            let id = core.connect_tls(
                self.addr.clone(),
                timeout,
                handler,
                &tls.connector,
                &tls.server_name,
            )?;
            self.slots[slot].set(id);
            return Ok(id);
        }
        let id = core.connect(self.addr.clone(), timeout, handler)?;
        self.slots[slot].set(id);
        Ok(id)
    }

    /// On the slot's core: finds or opens the slot's connection and sends the call on it.
    fn start(
        &self,
        core: &mut Core,
        slot: usize,
        call: Call,
        timeout: Option<Duration>,
        reply: bool,
    ) {
        let mut pending = Some(call);
        // The slot's connection as it is, if it takes calls (the common case: one
        // lookup); else the one `connection` finds or opens.
        let current = self.slots[slot].get();
        let sent = current.and_then(|id| {
            core.with_handler::<ClientConn, _>(id, |h, conn| {
                if h.retiring {
                    return false;
                }
                if let Some(call) = pending.take() {
                    h.submit(conn, call, timeout, reply);
                }
                true
            })
        });
        if sent == Some(true) || pending.is_none() {
            // Sent; or taken and lost to a panic in its encoder (the connection was
            // aborted for it, and the call with it).
            return;
        }
        let id = match self.connection(core, slot) {
            Ok(id) => id,
            Err(e) => {
                if let (Some(call), true) = (pending, reply) {
                    call.done(Err(CallError::Connect(e)));
                }
                return;
            }
        };
        core.with_handler::<ClientConn, _>(id, |h, conn| {
            if let Some(call) = pending.take() {
                h.submit(conn, call, timeout, reply);
            }
        });
        if let (Some(call), true) = (pending, reply) {
            // Not sent: as safe to retry as a failed connect.
            call.done(Err(CallError::Connect(std::io::Error::new(
                std::io::ErrorKind::NotConnected,
                "the connection closed before the call was sent",
            ))));
        }
    }
}

/// The connection of a pool slot. Read and written only on the slot's core (one thread),
/// so plain loads and stores suffice: no lock, and no read-modify-write, on the call path.
#[derive(Default)]
struct SlotConn {
    /// The id's generation, and its core and slot with bit 63 set (0: no connection).
    gen: AtomicU64,
    place: AtomicU64,
}

const PRESENT: u64 = 1 << 63;

impl SlotConn {
    fn get(&self) -> Option<ConnId> {
        let place = self.place.load(Ordering::Relaxed);
        (place & PRESENT != 0)
            .then(|| ConnId::from_bits(self.gen.load(Ordering::Relaxed), place & !PRESENT))
    }

    fn set(&self, id: ConnId) {
        let (gen, place) = id.to_bits();
        self.gen.store(gen, Ordering::Relaxed);
        self.place.store(place | PRESENT, Ordering::Relaxed);
    }

    fn take(&self) -> Option<ConnId> {
        let id = self.get();
        self.place.store(0, Ordering::Relaxed);
        id
    }
}

/// Ends a stream whose opening task was dropped without running (its core stopped).
struct EndOnDrop(Option<Arc<super::stream::Shared>>);

impl Drop for EndOnDrop {
    fn drop(&mut self) {
        if let Some(s) = self.0.take() {
            s.end(Err(CallError::RuntimeStopped));
        }
    }
}
