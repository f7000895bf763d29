//! Reply order: replies leave in the order of their calls unless the caller allowed
//! otherwise. A reply whose earlier calls are not all answered (a deferred reply is
//! pending) is held back; what is held is counted, so that the connection can stop
//! reading before it grows without bound.

use std::collections::VecDeque;

use bytes::{Bytes, BytesMut};
use netpoll::Conn;

use super::framing::Framing;
use crate::wire::Headers;

/// Slots of the calls on one connection whose replies must keep their order.
#[derive(Debug, Default)]
pub(crate) struct Order {
    /// The next slot to hand out.
    next: u64,
    /// The oldest unanswered slot.
    head: u64,
    /// Replies for slots `head..`: `None` while unanswered. Empty when nothing waits.
    held: VecDeque<Option<Bytes>>,
    /// Bytes of the replies in `held`.
    held_bytes: usize,
}

impl Order {
    /// Hands out the next slot.
    pub(crate) fn take(&mut self) -> u64 {
        let s = self.next;
        self.next += 1;
        s
    }

    /// Calls with a slot whose reply has not been written yet (held or unanswered).
    pub(crate) fn in_flight(&self) -> u64 {
        self.next - self.head
    }

    /// Bytes of replies held back behind an unanswered one.
    pub(crate) fn held_bytes(&self) -> usize {
        self.held_bytes
    }

    /// Whether the reply for `slot` can be written now (every earlier one was).
    pub(crate) fn is_next(&self, slot: u64) -> bool {
        slot == self.head
    }

    /// The reply for the oldest slot was written: hands every reply held behind it that is
    /// now next to `write`, in order.
    pub(crate) fn advance(&mut self, mut write: impl FnMut(&Bytes)) {
        self.head += 1;
        self.held.pop_front();
        while let Some(Some(_)) = self.held.front() {
            if let Some(Some(b)) = self.held.pop_front() {
                self.held_bytes -= b.len();
                write(&b);
            }
            self.head += 1;
        }
    }

    /// Keeps the reply for `slot` until every earlier one is written. A slot answered
    /// already (or twice) is ignored.
    pub(crate) fn hold(&mut self, slot: u64, reply: Bytes) {
        if slot < self.head {
            return;
        }
        let at = (slot - self.head) as usize;
        if self.held.len() <= at {
            self.held.resize(at + 1, None);
        }
        self.held_bytes += reply.len();
        if let Some(old) = self.held[at].replace(reply) {
            self.held_bytes -= old.len();
        }
    }
}

/// Replies handed to `Deferred` handles and not delivered yet.
#[derive(Debug, Default, Clone, Copy)]
pub(crate) struct Deferrals {
    /// All of them.
    pub(crate) all: usize,
    /// Those without an in-order slot (the caller allowed any order); the others are
    /// counted by [`Order::in_flight`] already.
    pub(crate) unordered: usize,
}

impl Deferrals {
    pub(crate) fn add(&mut self, slot: Option<u64>) {
        self.all += 1;
        self.unordered += usize::from(slot.is_none());
    }

    pub(crate) fn remove(&mut self, slot: Option<u64>) {
        self.all = self.all.saturating_sub(1);
        if slot.is_none() {
            self.unordered = self.unordered.saturating_sub(1);
        }
    }
}

/// Where a handler's reply goes: straight into the connection's output, or held back until
/// earlier replies are written.
#[derive(Debug)]
pub(crate) struct Sink<'c, 'n> {
    pub(crate) conn: &'c mut Conn<'n>,
    pub(crate) order: &'c mut Order,
    pub(crate) deferred: &'c mut Deferrals,
    pub(crate) headers: &'static Headers<'static>,
    /// The connection's framing, when it is one of the application's own.
    pub(crate) framing: Option<&'c dyn Framing>,
    /// The connection's HTTP/2 state, when it speaks gRPC: replies go out as frames of
    /// their streams, in any order.
    pub(crate) grpc: Option<&'c mut super::grpc::H2>,
}

/// Writes one reply into `out`, inside the connection's own framing if it has one.
fn emit(
    out: &mut BytesMut,
    framing: Option<&dyn Framing>,
    headers: &Headers<'_>,
    write: impl FnOnce(&mut BytesMut, &Headers<'_>),
) {
    let Some(f) = framing else {
        return write(out, headers);
    };
    let start = out.len();
    let at = f.begin_reply(out);
    write(out, headers);
    if let Err(e) = f.finish_reply(out, at) {
        tracing::warn!(framing = f.name(), error = %e, "a reply could not be framed; dropped");
        out.truncate(start);
    }
}

impl Sink<'_, '_> {
    /// Writes (or holds) the reply for `slot` (`None`: order does not matter).
    pub(crate) fn reply(
        &mut self,
        slot: Option<u64>,
        write: impl FnOnce(&mut BytesMut, &Headers<'_>),
    ) {
        if let Some(h2) = self.grpc.as_deref_mut() {
            // Written into the connection's reused buffer, read back from it in place.
            let mut buf = std::mem::take(&mut h2.scratch);
            buf.clear();
            write(&mut buf, self.headers);
            h2.reply(self.conn, &buf);
            h2.scratch = buf;
            return;
        }
        match slot {
            Some(s) if !self.order.is_next(s) => {
                // An earlier reply is still pending: keep this one aside, in its place.
                let mut buf = BytesMut::new();
                emit(&mut buf, self.framing, self.headers, write);
                self.order.hold(s, buf.freeze());
            }
            Some(_) => {
                emit(self.conn.output(), self.framing, self.headers, write);
                let conn = &mut *self.conn;
                self.order.advance(|b| conn.write(b));
            }
            None => emit(self.conn.output(), self.framing, self.headers, write),
        }
    }

    /// The handler took the reply for `slot` over with a `Deferred` handle.
    pub(crate) fn deferred(&mut self, slot: Option<u64>) {
        self.deferred.add(slot);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(order: &mut Order, slot: u64, tag: &'static [u8], log: &mut Vec<Vec<u8>>) {
        if order.is_next(slot) {
            log.push(tag.to_vec());
            order.advance(|b| log.push(b.to_vec()));
        } else {
            order.hold(slot, Bytes::from_static(tag));
        }
    }

    #[test]
    fn replies_leave_in_call_order() {
        let mut o = Order::default();
        let (a, b, c) = (o.take(), o.take(), o.take());
        assert_eq!(o.in_flight(), 3);
        let mut log = Vec::new();
        run(&mut o, c, b"c", &mut log);
        run(&mut o, b, b"b", &mut log);
        assert!(log.is_empty(), "nothing leaves before the first reply");
        assert_eq!(o.held_bytes(), 2);
        run(&mut o, a, b"a", &mut log);
        assert_eq!(log, [b"a".to_vec(), b"b".to_vec(), b"c".to_vec()]);
        assert_eq!(o.in_flight(), 0);
        assert_eq!(o.held_bytes(), 0);
    }

    #[test]
    fn a_reply_to_the_oldest_call_goes_straight_out() {
        let mut o = Order::default();
        let mut log = Vec::new();
        for _ in 0..3 {
            let s = o.take();
            run(&mut o, s, b"x", &mut log);
        }
        assert_eq!(log.len(), 3);
        assert_eq!(o.held_bytes(), 0);
    }

    #[test]
    fn a_duplicate_or_stale_slot_is_dropped() {
        let mut o = Order::default();
        let a = o.take();
        let mut log = Vec::new();
        run(&mut o, a, b"a", &mut log);
        run(&mut o, a, b"again", &mut log);
        assert_eq!(log, [b"a".to_vec()]);
    }
}
