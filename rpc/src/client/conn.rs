//! One client connection: the calls in flight on it, matched to replies by sequence id.

use std::sync::Arc;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use netpoll::{CloseReason, Conn, Core, Handler, Input, TimerId};

use super::framing::{ReplyFraming, ReplySplit};
use super::grpc::{H2Client, FLUSH_TIMER, STREAM_TIMER};
use super::seqtable::SeqTable;
use super::stream::{Op, Shared};
use crate::CallError;

/// Writes one request frame carrying the given sequence id into a connection's output, or
/// says why it cannot (leaving the output as it was).
pub type Encode = Box<dyn FnOnce(&mut BytesMut, i32) -> Result<(), CallError> + Send>;

/// Receives a call's outcome: the whole reply frame (a zero-copy view of the receive
/// buffer), or why there is none. Runs on the core that owns the connection.
pub type Done = Box<dyn FnOnce(Result<Bytes, CallError>) + Send>;

/// A call as a connection holds it: it writes its request frame, then takes its outcome.
/// One boxed object per call, whatever the caller's shape (closures, or the typed
/// client's own call state, which is sent again as is when the call is retried).
pub(crate) trait Outgoing: Send {
    /// Writes the request frame carrying `seq` into `out`, or says why it cannot (leaving
    /// `out` as it was).
    fn encode(&mut self, out: &mut BytesMut, seq: i32) -> Result<(), CallError>;
    /// The call's outcome: the whole reply frame (a view of the receive buffer), or why
    /// there is none. Runs on the connection's core; never for a oneway call.
    fn done(self: Box<Self>, result: Result<Bytes, CallError>);
}

/// A boxed [`Outgoing`].
pub(crate) type Call = Box<dyn Outgoing>;

/// A call given as an encoder and a callback (`done` is `None` for a oneway call).
pub(crate) struct Closures<E, D> {
    pub(crate) encode: Option<E>,
    pub(crate) done: Option<D>,
}

impl<E, D> Outgoing for Closures<E, D>
where
    E: FnOnce(&mut BytesMut, i32) -> Result<(), CallError> + Send,
    D: FnOnce(Result<Bytes, CallError>) + Send,
{
    fn encode(&mut self, out: &mut BytesMut, seq: i32) -> Result<(), CallError> {
        match self.encode.take() {
            Some(e) => e(out, seq),
            None => Err(CallError::Protocol(crate::reason(
                "a call was encoded twice",
            ))),
        }
    }

    fn done(self: Box<Self>, result: Result<Bytes, CallError>) {
        if let Some(d) = self.done {
            d(result)
        }
    }
}

struct Pending {
    call: Call,
    /// Its own timer, when its deadline could not join the connection's deadline queue.
    timer: Option<TimerId>,
    /// Its deadline, if it has one (in the queue or on its own timer).
    deadline: Option<std::time::Instant>,
    /// Where the request sits in the stream of bytes written to the connection.
    start: u64,
    len: usize,
}

/// The handler of a client connection.
pub(crate) struct ClientConn {
    framing: Arc<dyn ReplyFraming>,
    next_seq: i32,
    /// Calls waiting for their reply, by sequence id.
    pending: SeqTable<Pending>,
    /// Bytes of requests written to the connection so far.
    written: u64,
    /// Timed-out requests still in the unsent output, by stream position: dropped once
    /// they reach its front.
    withdrawn: std::collections::BTreeMap<u64, usize>,
    /// Requests may not be queued beyond this many unsent bytes.
    max_queued: usize,
    /// The server asked us to move away (TTHeader `crrst`): take no new calls, close once
    /// the calls in flight are answered.
    pub(crate) retiring: bool,
    /// Close the connection after this long without calls.
    idle_timeout: Option<Duration>,
    /// When the last call was sent or answered.
    last_active: std::time::Instant,
    /// The HTTP/2 state, on a gRPC connection.
    h2: Option<Box<H2Client>>,
    /// Deadlines of calls in the order they were set, each no earlier than the one before,
    /// with their sequence ids: one timer for the connection, armed for the front, instead
    /// of one per call. An entry whose call has ended stays until it reaches the front
    /// (at once when replies come in order), or until the queue is compacted.
    deadlines: std::collections::VecDeque<(std::time::Instant, i32)>,
    /// The connection's deadline timer and when it fires (no later than the front's).
    deadline_timer: Option<(TimerId, std::time::Instant)>,
    /// Its channel (by address) and pool slot: calls made from its reply callbacks to
    /// the same channel are sent on it (see [`replying`]).
    home: (usize, usize),
}

thread_local! {
    /// While a connection hands replies to their callbacks: its channel and slot.
    static REPLYING: std::cell::Cell<(usize, usize)> = const { std::cell::Cell::new((0, 0)) };
}

/// The pool slot of the connection whose replies are being handed out on this thread, if
/// it belongs to the channel at address `channel`. A call made from a reply callback goes
/// back on the connection the reply came from, as a pipelining client would: the calls a
/// loop turn makes then leave in one send per connection that had replies, instead of
/// one per connection of the pool.
pub(crate) fn replying(channel: usize) -> Option<usize> {
    let (c, slot) = REPLYING.with(|r| r.get());
    (c == channel && c != 0).then_some(slot)
}

/// Marks the connection `home` as handing out replies until dropped.
struct Replying;

impl Replying {
    fn start(home: (usize, usize)) -> Replying {
        REPLYING.with(|r| r.set(home));
        Replying
    }
}

impl Drop for Replying {
    fn drop(&mut self) {
        REPLYING.with(|r| r.set((0, 0)));
    }
}

/// The timer token of the idle check (call timers use sequence ids, below 2^32).
const IDLE_TOKEN: u64 = 1 << 63;

/// Whether a deadline queue entry still stands for a call waiting for its reply (its
/// sequence id may since belong to another call, with another deadline or its own timer).
fn queued(pending: &SeqTable<Pending>, (d, seq): (std::time::Instant, i32)) -> bool {
    pending
        .get(seq)
        .is_some_and(|p| p.timer.is_none() && p.deadline == Some(d))
}

/// The timer token of the deadline queue's front.
const DEADLINE_TOKEN: u64 = 1 << 42;

/// The deadline queue is compacted once it holds this many more entries than twice the
/// calls in flight: memory follows the calls, not the replies.
const DEADLINES_SLACK: usize = 64;

impl ClientConn {
    pub(crate) fn new(
        framing: Arc<dyn ReplyFraming>,
        max_queued: usize,
        idle_timeout: Option<Duration>,
        addr: &crate::discovery::Addr,
        home: (usize, usize),
    ) -> Self {
        ClientConn {
            home,
            deadlines: std::collections::VecDeque::new(),
            deadline_timer: None,
            h2: framing.grpc().map(|t| Box::new(H2Client::new(t, addr))),
            framing,
            next_seq: 0,
            pending: SeqTable::default(),
            written: 0,
            withdrawn: std::collections::BTreeMap::new(),
            max_queued,
            retiring: false,
            idle_timeout,
            last_active: std::time::Instant::now(),
        }
    }

    /// Takes no new calls; closes once the calls in flight are answered.
    pub(crate) fn retire(&mut self, conn: &mut Conn<'_>) {
        self.retiring = true;
        if self.idle() {
            conn.close();
        }
    }

    /// Whether no call (and no gRPC stream) is in flight.
    fn idle(&self) -> bool {
        self.pending.is_empty() && self.h2.as_ref().is_none_or(|h| h.no_streams())
    }

    /// Opens a streaming gRPC call, whose request frame `encode` writes (with no
    /// message); its replies and its end go to `shared`.
    pub(crate) fn open_stream(
        &mut self,
        conn: &mut Conn<'_>,
        encode: Encode,
        timeout: Option<Duration>,
        shared: std::sync::Arc<Shared>,
    ) -> Result<(), CallError> {
        let Some(h2) = self.h2.as_deref_mut() else {
            return Err(CallError::Protocol(crate::reason(
                "streaming calls need the gRPC transport",
            )));
        };
        let mut frame = BytesMut::new();
        encode(&mut frame, 0)?;
        self.last_active = conn.now();
        let opened = h2.open_stream(conn, frame.freeze(), timeout, shared);
        if h2.going_away() {
            self.retiring = true;
        }
        opened
    }

    /// Completes calls that ended outside a read (queued calls that could not be sent).
    fn complete(&mut self, conn: &mut Conn<'_>, ended: Vec<super::grpc::Outcome>) {
        for (seq, result) in ended {
            if let Some(p) = self.take_pending(conn, seq) {
                p.call.done(result);
            }
        }
    }

    /// Takes call `seq` out of those waiting for a reply, with its timer and its place in
    /// the deadline queue: it has ended.
    fn take_pending(&mut self, conn: &mut Conn<'_>, seq: i32) -> Option<Pending> {
        let p = self.pending.remove(seq)?;
        if let Some(t) = p.timer {
            conn.cancel_timer(t);
        }
        self.forget_deadline(seq, p.deadline);
        Some(p)
    }

    /// What a streaming call's handle asks of its stream.
    pub(crate) fn stream_op(&mut self, conn: &mut Conn<'_>, stream: u32, op: Op) {
        self.last_active = conn.now();
        let mut ended = Vec::new();
        if let Some(h2) = self.h2.as_deref_mut() {
            h2.stream_op(conn, stream, op, &mut ended);
        }
        self.complete(conn, ended);
        if self.retiring && self.idle() {
            conn.close();
        }
    }

    /// Sends a call; `reply` is false for a oneway call, which gets no reply (and whose
    /// `done` is never called).
    pub(crate) fn submit(
        &mut self,
        conn: &mut Conn<'_>,
        mut call: Call,
        timeout: Option<Duration>,
        reply: bool,
    ) {
        let mut seq = self.next_seq;
        // A sequence id still waiting for its reply after 2^32 calls is skipped, not reused.
        while self.pending.contains_key(seq) {
            seq = seq.wrapping_add(1);
        }
        // What waits for the server: unsent output, and requests the HTTP/2 state holds
        // for window or for a stream.
        let queued = conn.pending_output() + self.h2.as_ref().map_or(0, |h| h.held());
        if queued >= self.max_queued {
            // The server is not taking what we send: fail at once instead of queueing
            // without bound.
            if reply {
                call.done(Err(CallError::QueueFull {
                    queued,
                    limit: self.max_queued,
                }));
            } else {
                tracing::warn!(
                    queued,
                    limit = self.max_queued,
                    "oneway call dropped: the connection's send queue is full"
                );
            }
            return;
        }
        self.next_seq = seq.wrapping_add(1);
        self.last_active = conn.now();
        if let Some(h2) = self.h2.as_deref_mut() {
            // gRPC: the request frame becomes an HTTP/2 stream.
            let mut frame = BytesMut::new();
            let sent = call
                .encode(&mut frame, seq)
                .and_then(|()| h2.send(conn, seq, frame.freeze(), timeout));
            if h2.going_away() {
                self.retiring = true;
            }
            match sent {
                Err(e) if reply => call.done(Err(e)),
                Ok(()) if reply => {
                    let (timer, deadline) = self.set_deadline(conn, seq, timeout);
                    let p = Pending {
                        call,
                        timer,
                        deadline,
                        start: 0,
                        len: 0,
                    };
                    self.pending.insert(seq, p);
                }
                _ => {}
            }
            return;
        }
        let before = conn.unsent_len();
        if let Err(e) = call.encode(conn.output(), seq) {
            // An encoder must leave the output as it was; make sure of it.
            conn.unsent_output().truncate(before);
            if reply {
                call.done(Err(e));
            }
            return;
        }
        let len = conn.unsent_len().saturating_sub(before);
        let start = self.written;
        self.written += len as u64;
        if reply {
            let (timer, deadline) = self.set_deadline(conn, seq, timeout);
            self.pending.insert(
                seq,
                Pending {
                    call,
                    timer,
                    deadline,
                    start,
                    len,
                },
            );
        }
    }

    /// Sets the deadline of call `seq`: in the connection's deadline queue if it is no
    /// earlier than the queue's last (the common case: one timeout for every call), else
    /// on a timer of its own. Returns that timer and the deadline.
    fn set_deadline(
        &mut self,
        conn: &mut Conn<'_>,
        seq: i32,
        timeout: Option<Duration>,
    ) -> (Option<TimerId>, Option<std::time::Instant>) {
        let Some(t) = timeout else {
            return (None, None);
        };
        let d = conn.now() + t;
        if self.deadlines.back().is_some_and(|b| b.0 > d) {
            return (Some(conn.set_timer(d, seq as u32 as u64)), Some(d));
        }
        self.deadlines.push_back((d, seq));
        // The timer may be armed for a later deadline whose call ended and left the queue:
        // then it is moved up to this one.
        match self.deadline_timer {
            Some((_, at)) if at <= d => {}
            old => {
                if let Some((t, _)) = old {
                    conn.cancel_timer(t);
                }
                self.deadline_timer = Some((conn.set_timer(d, DEADLINE_TOKEN), d));
            }
        }
        (None, Some(d))
    }

    /// Call `seq`, whose deadline was `deadline`, ended: its queue entry goes if it is the
    /// front (as it is when replies come in order: no lookup). Entries of calls that
    /// ended out of order are dropped when the timer meets them, or all at once when they
    /// outnumber the calls in flight.
    fn forget_deadline(&mut self, seq: i32, deadline: Option<std::time::Instant>) {
        if let (Some(&(d, s)), Some(pd)) = (self.deadlines.front(), deadline) {
            if s == seq && d == pd {
                self.deadlines.pop_front();
            }
        }
        if self.deadlines.len() > 2 * self.pending.len() + DEADLINES_SLACK {
            let pending = &self.pending;
            self.deadlines.retain(|&e| queued(pending, e));
        }
    }

    /// The deadline timer fired: the calls whose deadline passed time out, and the timer
    /// is armed again for the next.
    fn deadlines_due(&mut self, conn: &mut Conn<'_>) {
        self.deadline_timer = None;
        let now = conn.now();
        while let Some(&(d, seq)) = self.deadlines.front() {
            if !queued(&self.pending, (d, seq)) {
                self.deadlines.pop_front();
                continue;
            }
            if d > now {
                self.deadline_timer = Some((conn.set_timer(d, DEADLINE_TOKEN), d));
                return;
            }
            self.deadlines.pop_front();
            self.time_out(conn, seq);
        }
    }

    /// Call `seq` ran out of time.
    fn time_out(&mut self, conn: &mut Conn<'_>, seq: i32) {
        if let Some(p) = self.take_pending(conn, seq) {
            let mut ended = Vec::new();
            match self.h2.as_deref_mut() {
                Some(h2) => h2.cancel(conn, seq, &mut ended),
                None => self.withdraw(conn, &p),
            }
            p.call.done(Err(CallError::Timeout));
            // Calls that waited for a stream and could not be sent.
            self.complete(conn, ended);
        }
    }

    /// A call timed out: if its request has not been handed to the kernel yet, its bytes
    /// are taken back out of the connection's output, so that a backed-up connection does
    /// not go on to send requests nobody waits for.
    ///
    /// Calls time out oldest first, so a withdrawn request is almost always the first of
    /// the unsent output, and dropping it from the front costs nothing. One further back
    /// is remembered and dropped when everything before it has gone (sent or withdrawn):
    /// each withdrawal is O(log n), never a shift of the rest of the queue.
    fn withdraw(&mut self, conn: &mut Conn<'_>, p: &Pending) {
        if p.len > 0 && p.start >= self.unsent_start(conn) {
            self.withdrawn.insert(p.start, p.len);
        }
        self.drop_withdrawn_front(conn);
    }

    /// Where the output not yet handed to the kernel starts, in the stream of request
    /// bytes: that output is always a suffix of everything written.
    fn unsent_start(&self, conn: &Conn<'_>) -> u64 {
        self.written.saturating_sub(conn.unsent_len() as u64)
    }

    /// Drops withdrawn requests that start the unsent output (and forgets those the kernel
    /// took meanwhile).
    fn drop_withdrawn_front(&mut self, conn: &mut Conn<'_>) {
        while let Some((&start, &len)) = self.withdrawn.first_key_value() {
            let unsent_start = self.unsent_start(conn);
            if start < unsent_start {
                self.withdrawn.remove(&start); // sent already: it goes out whole
            } else if start == unsent_start && len <= conn.unsent_len() {
                self.withdrawn.remove(&start);
                // Dropped from the front: the stream position of everything after it is
                // unchanged (the bytes count as gone), so no other call moves.
                bytes::Buf::advance(conn.unsent_output(), len);
            } else {
                break;
            }
        }
    }

    fn fail_all(&mut self, core: Option<&mut Core>, err: impl Fn() -> CallError) {
        let mut core = core;
        self.deadlines.clear();
        if let (Some((t, _)), Some(c)) = (self.deadline_timer.take(), core.as_deref_mut()) {
            c.cancel_timer(t);
        }
        for (_, p) in self.pending.drain() {
            if let (Some(t), Some(c)) = (p.timer, core.as_deref_mut()) {
                c.cancel_timer(t);
            }
            p.call.done(Err(err()));
        }
    }
}

impl Drop for ClientConn {
    /// The connection's handler is going away with calls still waiting (its core died,
    /// or a callback panicked and the connection was aborted): they fail now instead of
    /// waiting forever.
    fn drop(&mut self) {
        if let Some(h2) = self.h2.as_deref_mut() {
            h2.close_streams(&crate::reason("the connection's handler was torn down"));
        }
        self.fail_all(None, || {
            CallError::ConnectionLost(crate::reason("the connection's handler was torn down"))
        });
    }
}

impl ClientConn {
    /// Reads a gRPC connection's input: the calls that ended are completed.
    fn read_grpc(&mut self, conn: &mut Conn<'_>, input: &mut Input<'_>) {
        let Some(h2) = self.h2.as_deref_mut() else {
            return;
        };
        let mut ended = Vec::new();
        let read = h2.read(conn, input, &mut ended);
        if let Err(e) = &read {
            h2.go_away(conn, e);
        }
        if h2.going_away() {
            self.retiring = true;
        }
        self.last_active = conn.now();
        self.complete(conn, ended);
        if let Err(e) = read {
            let why = crate::reason(format!("HTTP/2 connection error: {}", e.why));
            self.fail_all(Some(conn.core()), || CallError::Protocol(why.clone()));
            conn.close();
            return;
        }
        if self.retiring && self.idle() {
            conn.close();
        }
    }
}

impl Handler for ClientConn {
    fn on_data(&mut self, conn: &mut Conn<'_>, input: &mut Input<'_>) {
        if self.h2.is_some() {
            return self.read_grpc(conn, input);
        }
        // Calls made from the reply callbacks come back here, unless this connection
        // is backed up already (then they spread over the pool as other calls do).
        let _replying =
            (conn.pending_output() < self.max_queued / 2).then(|| Replying::start(self.home));
        loop {
            match self.framing.split(input.chunk()) {
                ReplySplit::NeedMore(n) => {
                    input.need(n);
                    return;
                }
                ReplySplit::Reply { len, seq } => {
                    let Some(frame) = input.try_split_to(len) else {
                        input.need(len);
                        return;
                    };
                    if !self.retiring && self.framing.asks_to_reconnect(&frame) {
                        self.retiring = true;
                    }
                    self.last_active = conn.now();
                    // A reply nobody waits for (its call timed out) is dropped.
                    if let Some(p) = self.take_pending(conn, seq) {
                        p.call.done(Ok(frame));
                    }
                    if self.retiring && self.pending.is_empty() {
                        conn.close();
                        return;
                    }
                }
                ReplySplit::Invalid(why) => {
                    self.fail_all(Some(conn.core()), || CallError::Protocol(why.clone()));
                    conn.abort();
                    return;
                }
            }
        }
    }

    fn on_open(&mut self, conn: &mut Conn<'_>) {
        if let Some(h2) = self.h2.as_deref_mut() {
            // A gRPC server speaks only after our preface (a warmed-up connection too).
            h2.start(conn.output());
        }
        if let Some(t) = self.idle_timeout {
            conn.set_timer(conn.now() + t, IDLE_TOKEN);
        }
    }

    fn on_timer(&mut self, conn: &mut Conn<'_>, token: u64) {
        if token == FLUSH_TIMER {
            if let Some(h2) = self.h2.as_deref_mut() {
                h2.flush_dirty(conn);
            }
            return;
        }
        if token != IDLE_TOKEN && token & STREAM_TIMER != 0 {
            let mut ended = Vec::new();
            if let Some(h2) = self.h2.as_deref_mut() {
                h2.stream_deadline(conn, token as u32, &mut ended);
            }
            self.complete(conn, ended);
            if self.retiring && self.idle() {
                conn.close();
            }
            return;
        }
        if token == IDLE_TOKEN {
            let Some(t) = self.idle_timeout else { return };
            let idle = conn.now().saturating_duration_since(self.last_active);
            if self.idle() && idle >= t {
                tracing::debug!(idle = ?idle, "closing an idle client connection");
                self.retiring = true;
                conn.close();
            } else {
                let next = (self.last_active + t).max(conn.now() + Duration::from_millis(10));
                conn.set_timer(next, IDLE_TOKEN);
            }
            return;
        }
        if token == DEADLINE_TOKEN {
            self.deadlines_due(conn);
        } else {
            self.time_out(conn, token as u32 as i32);
        }
        if self.retiring && self.idle() {
            conn.close();
        }
    }

    fn on_shutdown(&mut self, conn: &mut Conn<'_>) {
        // Calls in flight may still complete before the runtime's deadline.
        if self.idle() {
            conn.close();
        }
    }

    fn on_close(&mut self, core: &mut Core, reason: CloseReason) {
        if let Some(h2) = self.h2.as_deref_mut() {
            h2.close_streams(&crate::reason(format!("the connection closed: {reason}")));
        }
        match reason {
            CloseReason::ConnectFailed(e) => {
                let (kind, shared) = (e.kind(), Arc::new(e));
                self.fail_all(Some(core), || {
                    CallError::Connect(std::io::Error::new(kind, shared.clone()))
                });
            }
            CloseReason::ConnectTimedOut => {
                self.fail_all(Some(core), || {
                    CallError::Connect(std::io::Error::new(
                        std::io::ErrorKind::TimedOut,
                        "connect timed out",
                    ))
                });
            }
            // A handshake that failed: nothing was sent (plain text waits for the
            // handshake), so it is as safe to retry elsewhere as a failed connect.
            CloseReason::Tls(e)
                if netpoll::TlsError::of(&e).is_some_and(|t| t.during_handshake()) =>
            {
                let (kind, shared) = (e.kind(), Arc::new(CloseReason::Tls(e)));
                self.fail_all(Some(core), || {
                    CallError::Connect(std::io::Error::new(kind, shared.clone()))
                });
            }
            reason => {
                let why = crate::cause(reason);
                self.fail_all(Some(core), || CallError::ConnectionLost(why.clone()))
            }
        }
    }
}

/// Hands a streaming call's request to its connection (the [`OpFn`](super::stream::OpFn)
/// of client streams).
pub(crate) fn stream_op(core: &mut Core, conn: netpoll::ConnId, stream: u32, op: Op) {
    core.with_handler::<ClientConn, _>(conn, |h, c| h.stream_op(c, stream, op));
}
