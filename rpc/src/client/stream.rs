//! Streaming gRPC calls on the client: [`ClientStream`], a handle usable from any thread
//! (not from a netpoll core: its calls block), over one HTTP/2 stream that lives on the
//! core owning its connection.
//!
//! Both directions apply back-pressure. [`send`](ClientStream::send) blocks while the
//! stream has more than [`SEND_QUEUE`] bytes the server's windows have not let out yet;
//! replies wait in the handle (at most [`RECV_QUEUE`] bytes and one message) and the
//! stream's receive window is credited back only as [`recv`](ClientStream::recv) takes
//! them, so a slow reader slows the server instead of filling memory.

use std::collections::VecDeque;
use std::marker::PhantomData;
use std::sync::{Arc, Condvar, Mutex};
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use netpoll::{ConnId, Core, RuntimeHandle};

use crate::CallError;

/// Bytes a stream's sender may have queued before [`ClientStream::send`] waits.
pub const SEND_QUEUE: usize = 256 * 1024;

/// Reply bytes a stream holds for its reader before it stops crediting the server.
pub const RECV_QUEUE: usize = 1 << 20;

/// What runs once when a stream ends (the middlewares that started it), told the error.
pub(crate) type OnEnd = Box<dyn FnOnce(Option<&CallError>) + Send>;

/// What a callback stream ([`StreamEvent`]) is handed: each reply as it arrives, then the
/// end.
pub(crate) enum Delivery {
    Message(Bytes),
    End(Result<(), CallError>),
}

/// A callback stream's receiver of [`Delivery`]s.
pub(crate) type Observer = Box<dyn FnMut(Delivery) + Send>;

/// What a stream opened with a callback (`stream_with`) is told: each reply, on the core
/// of the stream's connection as it arrives, then once how the stream ended (`Ok` after
/// the server's OK and every reply), on the thread that ended it (the connection's core,
/// or the one that cancelled or dropped the stream).
#[derive(Debug)]
pub enum StreamEvent<Resp> {
    /// A reply.
    Message(Resp),
    /// The end: the server's OK, or why not. Nothing follows.
    End(Result<(), CallError>),
}

/// What the handle and the connection's core share of one stream.
#[derive(Default)]
pub(crate) struct Shared {
    pub(crate) state: Mutex<State>,
    pub(crate) cond: Condvar,
    /// Ends the stream's middlewares, at its end.
    pub(crate) on_end: Mutex<Option<OnEnd>>,
    /// A callback stream's receiver: replies go to it instead of waiting for `recv`.
    /// Taken out while it runs.
    pub(crate) observer: Mutex<Option<Observer>>,
}

impl std::fmt::Debug for Shared {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Shared")
            .field("state", &self.state)
            .finish_non_exhaustive()
    }
}

#[derive(Debug, Default)]
pub(crate) struct State {
    /// Where the stream lives, once opened: its connection and stream id.
    pub(crate) at: Option<(ConnId, u32)>,
    /// Replies not read yet (whole messages, inflated).
    pub(crate) inbox: VecDeque<Bytes>,
    pub(crate) inbox_bytes: usize,
    /// Bytes received and not credited back to the server, waiting for the reader.
    pub(crate) uncredited: u32,
    /// Request bytes handed to the core and not sent yet.
    pub(crate) queued: usize,
    /// Our side was ended (`close_send`).
    pub(crate) closed: bool,
    /// How the stream ended: OK, or why not.
    pub(crate) end: Option<Result<(), CallError>>,
    /// Its end is being recorded by its middlewares (`end` follows).
    pub(crate) ending: bool,
    /// A callback stream's observer was told of the end.
    pub(crate) end_delivered: bool,
    /// The response's metadata so far (headers, then trailers), `-bin` values decoded.
    pub(crate) meta: Vec<(String, Bytes)>,
}

impl Shared {
    /// The state, whoever panicked holding it.
    pub(crate) fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Waits for a change of the state (its end, room, a reply), at most 100 ms.
    fn wait<'a>(&self, s: std::sync::MutexGuard<'a, State>) -> std::sync::MutexGuard<'a, State> {
        self.cond
            .wait_timeout(s, Duration::from_millis(100))
            .unwrap_or_else(|p| p.into_inner())
            .0
    }

    /// Ends the stream (only the first end counts) and wakes its handle.
    pub(crate) fn end(&self, result: Result<(), CallError>) {
        let mut s = self.lock();
        if s.end.is_some() || s.ending {
            return;
        }
        // The middlewares end before the handle can see the end: once `recv` or `finish`
        // returns it, what they record of the stream is there.
        s.ending = true;
        drop(s);
        let on_end = self.on_end.lock().unwrap_or_else(|p| p.into_inner()).take();
        if let Some(f) = on_end {
            // Outside the stream's lock: a middleware may take its time.
            f(result.as_ref().err());
        }
        self.lock().end = Some(result);
        self.cond.notify_all();
        self.deliver();
    }

    /// Hands a callback stream's replies that arrived, and then its end, to its observer
    /// (a stream read with `recv` has none). The observer is taken out while it runs, so
    /// that it may use the stream (send, cancel) without deadlock; whoever finds it taken
    /// leaves the work to the thread running it, which looks again before leaving.
    pub(crate) fn deliver(&self) {
        loop {
            let taken = self
                .observer
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .take();
            let Some(mut f) = taken else {
                return;
            };
            loop {
                let mut s = self.lock();
                if let Some(m) = s.inbox.pop_front() {
                    s.inbox_bytes -= netpoll_codec::h2::grpc::PREFIX_LEN + m.len();
                    drop(s);
                    f(Delivery::Message(m));
                    continue;
                }
                let end = match &s.end {
                    Some(end) if !s.end_delivered => end.as_ref().map(|_| ()).map_err(clone_error),
                    _ => break,
                };
                s.end_delivered = true;
                drop(s);
                f(Delivery::End(end));
                return; // told everything: the observer is done with
            }
            *self.observer.lock().unwrap_or_else(|p| p.into_inner()) = Some(f);
            // What came while it ran (the end, from another thread) is delivered now.
            let s = self.lock();
            if s.inbox.is_empty() && (s.end.is_none() || s.end_delivered) {
                return;
            }
        }
    }
}

/// What a handle asks of its stream's core.
#[derive(Debug)]
pub(crate) enum Op {
    /// A framed message (prefix included).
    Send(Bytes),
    /// Our side is done.
    Close,
    /// The reader took messages: credit the server.
    Credit,
    /// Give up on the stream.
    Cancel,
}

/// Hands an [`Op`] to the stream on its connection; supplied by the channel.
pub(crate) type OpFn = fn(&mut Core, ConnId, u32, Op);

/// A streaming call: send requests, then read replies (or both at once, from two
/// threads: the handle is `Sync`). Dropping it before the stream ended cancels it.
pub struct ClientStream<Req, Resp> {
    shared: Arc<Shared>,
    /// The client it was opened by, kept alive (its own event loop, if it has one, runs
    /// as long as a client handle or a stream does).
    _owner: Arc<dyn std::any::Any + Send + Sync>,
    rt: RuntimeHandle,
    core: usize,
    op: OpFn,
    /// Messages are sent gzip-compressed.
    gzip: bool,
    _types: PhantomData<fn(&Req) -> Resp>,
}

impl<Req, Resp> std::fmt::Debug for ClientStream<Req, Resp> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let s = self.shared.lock();
        f.debug_struct("ClientStream")
            .field("at", &s.at)
            .field("ended", &s.end.is_some())
            .finish()
    }
}

impl<Req, Resp> ClientStream<Req, Resp> {
    pub(crate) fn new(
        shared: Arc<Shared>,
        owner: Arc<dyn std::any::Any + Send + Sync>,
        rt: RuntimeHandle,
        core: usize,
        op: OpFn,
        gzip: bool,
    ) -> Self {
        ClientStream {
            shared,
            _owner: owner,
            rt,
            core,
            op,
            gzip,
            _types: PhantomData,
        }
    }

    fn post(&self, op: Op) -> bool {
        let (shared, f) = (self.shared.clone(), self.op);
        self.rt
            .spawn(self.core, move |core| {
                let at = shared.lock().at;
                if let Some((conn, stream)) = at {
                    f(core, conn, stream, op);
                }
            })
            .is_ok()
    }

    /// Ends our side: the server sees the end of the requests.
    pub fn close_send(&self) {
        self.shared
            .state
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .closed = true;
        self.post(Op::Close);
    }

    /// The response's metadata received so far: the server's headers once they came (with
    /// or before its first reply), and its trailers once the stream ended. `-bin` values
    /// are decoded.
    pub fn metadata(&self) -> Vec<(String, Bytes)> {
        self.shared.lock().meta.clone()
    }

    /// Gives up on the call: the stream is reset, and [`recv`](Self::recv) says
    /// cancelled.
    pub fn cancel(&self) {
        self.post(Op::Cancel);
        self.shared.end(Err(CallError::Status(crate::Status::new(
            crate::ErrorKind::Cancelled,
            "cancelled by the client",
        ))));
    }

    /// Whether the stream has ended (all replies may not have been read yet).
    pub fn is_ended(&self) -> bool {
        self.shared
            .state
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .end
            .is_some()
    }
}

fn on_core() -> Result<(), CallError> {
    if netpoll::current_core().is_some() {
        return Err(CallError::WouldBlockCore);
    }
    Ok(())
}

impl<Req: prost::Message, Resp: prost::Message + Default> ClientStream<Req, Resp> {
    /// Sends `msg`, waiting while the stream has [`SEND_QUEUE`] bytes not yet sent. Fails
    /// once the stream has ended (read the reason with [`recv`](Self::recv)).
    pub fn send(&self, msg: &Req) -> Result<(), CallError> {
        on_core()?;
        self.enqueue(msg, true).map(drop)
    }

    /// Sends `msg` without waiting, from any thread, a netpoll core included: `Ok(false)`
    /// (and nothing sent) while the stream has [`SEND_QUEUE`] bytes not yet sent. Fails
    /// once the stream has ended or its requests were ended.
    pub fn try_send(&self, msg: &Req) -> Result<bool, CallError> {
        self.enqueue(msg, false)
    }

    /// Queues `msg` for the stream's core: while [`SEND_QUEUE`] bytes are unsent, waits
    /// for room if `wait`, or returns `Ok(false)` at once.
    fn enqueue(&self, msg: &Req, wait: bool) -> Result<bool, CallError> {
        let mut buf = BytesMut::new();
        let n = crate::wire::frame_grpc_message(msg, self.gzip, &mut buf);
        let mut s = self.shared.lock();
        while wait && s.queued >= SEND_QUEUE && s.end.is_none() {
            s = self.shared.wait(s);
        }
        if let Some(end) = &s.end {
            return Err(match end {
                Ok(()) => CallError::Protocol(crate::reason("the server ended the stream")),
                Err(e) => clone_error(e),
            });
        }
        if s.closed {
            return Err(CallError::Protocol(crate::reason(
                "send after close_send: the requests were ended",
            )));
        }
        if s.queued >= SEND_QUEUE {
            return Ok(false);
        }
        s.queued += n;
        drop(s);
        if !self.post(Op::Send(buf.freeze())) {
            return Err(CallError::RuntimeStopped);
        }
        Ok(true)
    }

    /// The next reply, waiting for it: `Ok(None)` once the server ended the stream with
    /// OK and every reply was read; the failure otherwise.
    pub fn recv(&self) -> Result<Option<Resp>, CallError> {
        on_core()?;
        let mut s = self.shared.lock();
        loop {
            if let Some(m) = s.inbox.pop_front() {
                s.inbox_bytes -= netpoll_codec::h2::grpc::PREFIX_LEN + m.len();
                let credit = s.uncredited > 0 && s.inbox_bytes < RECV_QUEUE / 2;
                drop(s);
                if credit {
                    self.post(Op::Credit);
                }
                return Resp::decode(m)
                    .map(Some)
                    .map_err(|e| CallError::Decode(crate::cause(e)));
            }
            match &s.end {
                Some(Ok(())) => return Ok(None),
                Some(Err(e)) => return Err(clone_error(e)),
                None => {}
            }
            s = self.shared.wait(s);
        }
    }

    /// Ends our side and reads the one reply (client streaming), then the stream's end:
    /// an error status after the reply fails the call too.
    pub fn finish(&self) -> Result<Resp, CallError> {
        self.close_send();
        let Some(r) = self.recv()? else {
            return Err(CallError::Protocol(crate::reason(
                "the server ended the stream without a reply",
            )));
        };
        match self.recv()? {
            None => Ok(r),
            Some(_) => Err(CallError::Protocol(crate::reason(
                "more than one reply to a client-streaming call",
            ))),
        }
    }
}

impl<Req, Resp> Drop for ClientStream<Req, Resp> {
    fn drop(&mut self) {
        if !self.is_ended() {
            self.post(Op::Cancel);
        }
    }
}

/// A copy of a stream's failure for each reader (the original stays in the state).
fn clone_error(e: &CallError) -> CallError {
    match e {
        CallError::Timeout => CallError::Timeout,
        CallError::Connect(e) => CallError::Connect(std::io::Error::new(e.kind(), e.to_string())),
        CallError::ConnectionLost(c) => CallError::ConnectionLost(c.clone()),
        CallError::Protocol(c) => CallError::Protocol(c.clone()),
        CallError::Application(a) => CallError::Application(a.clone()),
        CallError::Declared(never) => match *never {},
        CallError::Status(s) => CallError::Status(s.clone()),
        CallError::Decode(c) => CallError::Decode(c.clone()),
        CallError::TooLarge(c) => CallError::TooLarge(c.clone()),
        CallError::QueueFull { queued, limit } => CallError::QueueFull {
            queued: *queued,
            limit: *limit,
        },
        CallError::RuntimeStopped => CallError::RuntimeStopped,
        CallError::WouldBlockCore => CallError::WouldBlockCore,
        CallError::NoInstance(c) => CallError::NoInstance(c.clone()),
        CallError::CircuitOpen(c) => CallError::CircuitOpen(c.clone()),
    }
}
