//! One client connection: the calls in flight on it, matched to replies by sequence id.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use netpoll::{CloseReason, Conn, Core, Handler, Input, TimerId};

use super::framing::{ReplyFraming, ReplySplit};
use crate::CallError;

/// Writes one request frame carrying the given sequence id into a connection's output, or
/// says why it cannot (leaving the output as it was).
pub type Encode = Box<dyn FnOnce(&mut BytesMut, i32) -> Result<(), CallError> + Send>;

/// Receives a call's outcome: the whole reply frame (a zero-copy view of the receive
/// buffer), or why there is none. Runs on the core that owns the connection.
pub type Done = Box<dyn FnOnce(Result<Bytes, CallError>) + Send>;

struct Pending {
    done: Done,
    timer: Option<TimerId>,
}

/// The handler of a client connection.
pub(crate) struct ClientConn {
    framing: Arc<dyn ReplyFraming>,
    next_seq: i32,
    pending: HashMap<i32, Pending>,
    /// The server asked us to move away (TTHeader `crrst`): take no new calls, close once
    /// the calls in flight are answered.
    pub(crate) retiring: bool,
}

impl ClientConn {
    pub(crate) fn new(framing: Arc<dyn ReplyFraming>) -> Self {
        ClientConn {
            framing,
            next_seq: 0,
            pending: HashMap::new(),
            retiring: false,
        }
    }

    /// Sends a call. `done` is `None` for a oneway call, which gets no reply.
    pub(crate) fn submit(
        &mut self,
        conn: &mut Conn<'_>,
        encode: Encode,
        timeout: Option<Duration>,
        done: Option<Done>,
    ) {
        let mut seq = self.next_seq;
        // A sequence id still waiting for its reply after 2^32 calls is skipped, not reused.
        while self.pending.contains_key(&seq) {
            seq = seq.wrapping_add(1);
        }
        self.next_seq = seq.wrapping_add(1);
        if let Err(e) = encode(conn.output(), seq) {
            if let Some(done) = done {
                done(Err(e));
            }
            return;
        }
        if let Some(done) = done {
            let timer = timeout.map(|t| conn.set_timer(conn.now() + t, seq as u32 as u64));
            self.pending.insert(seq, Pending { done, timer });
        }
    }

    fn fail_all(&mut self, core: Option<&mut Core>, err: impl Fn() -> CallError) {
        let mut core = core;
        for (_, p) in self.pending.drain() {
            if let (Some(t), Some(c)) = (p.timer, core.as_deref_mut()) {
                c.cancel_timer(t);
            }
            (p.done)(Err(err()));
        }
    }
}

impl Handler for ClientConn {
    fn on_data(&mut self, conn: &mut Conn<'_>, input: &mut Input<'_>) {
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
                    // A reply nobody waits for (its call timed out) is dropped.
                    if let Some(p) = self.pending.remove(&seq) {
                        if let Some(t) = p.timer {
                            conn.cancel_timer(t);
                        }
                        (p.done)(Ok(frame));
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

    fn on_timer(&mut self, _conn: &mut Conn<'_>, token: u64) {
        if let Some(p) = self.pending.remove(&(token as u32 as i32)) {
            (p.done)(Err(CallError::Timeout));
        }
    }

    fn on_shutdown(&mut self, conn: &mut Conn<'_>) {
        // Calls in flight may still complete before the runtime's deadline.
        if self.pending.is_empty() {
            conn.close();
        }
    }

    fn on_close(&mut self, core: &mut Core, reason: CloseReason) {
        let describe = reason.to_string();
        match reason {
            CloseReason::ConnectFailed(e) => {
                let kind = e.kind();
                let msg = e.to_string();
                self.fail_all(Some(core), || {
                    CallError::Connect(std::io::Error::new(kind, msg.clone()))
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
            _ => self.fail_all(Some(core), || CallError::ConnectionLost(describe.clone())),
        }
    }
}
