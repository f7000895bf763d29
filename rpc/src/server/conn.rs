//! One server connection: protocol detection, framing, dispatch, reply order, deferred
//! replies, timeouts and graceful shutdown.

use std::cell::Cell;
use std::collections::VecDeque;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;

use bytes::{Bytes, BytesMut};
use codec::frame::{self, Protocol, Split};
use codec::thrift::{ApplicationExceptionKind, MessageType};
use netpoll::{Conn, Handler, Input, TimerId};

use super::context::CallContext;
use super::service::{accepts, Call};
use super::Shared;
use crate::wire::{self, Headers};
use crate::Status;

const IDLE_TIMER: u64 = 1;
const READ_TIMER: u64 = 2;

/// TTHeader flag: replies may come back in any order.
const OUT_OF_ORDER: u16 = 0x0001;

const NO_HEADERS: Headers<'static> = Headers {
    flags: 0,
    ints: &[],
    strs: &[],
};
const CRRST: Headers<'static> = Headers {
    flags: 0,
    ints: &[],
    strs: &[("crrst", b"1")],
};

/// Replies in call order. Every reply that must keep its order takes a slot; a reply
/// whose earlier slots are not all answered (a deferred reply is pending) is held back.
#[derive(Debug, Default)]
pub(crate) struct Order {
    /// The next slot to hand out.
    next: u64,
    /// The oldest unanswered slot.
    head: u64,
    /// Replies for slots `head..`: `None` while unanswered. Empty when nothing waits.
    held: VecDeque<Option<Bytes>>,
}

impl Order {
    fn take(&mut self) -> u64 {
        let s = self.next;
        self.next += 1;
        s
    }

    fn in_flight(&self) -> u64 {
        self.next - self.head
    }
}

/// Where a handler's reply goes: straight into the connection's output, or held back until
/// earlier replies are written.
#[derive(Debug)]
pub(crate) struct Sink<'c, 'n> {
    conn: &'c mut Conn<'n>,
    order: &'c mut Order,
    deferred: &'c mut usize,
    headers: &'static Headers<'static>,
}

impl Sink<'_, '_> {
    /// Writes (or holds) the reply for `slot` (`None`: order does not matter).
    pub(crate) fn reply(
        &mut self,
        slot: Option<u64>,
        write: impl FnOnce(&mut BytesMut, &Headers<'_>),
    ) {
        let o = &mut *self.order;
        let Some(s) = slot else {
            write(self.conn.output(), self.headers);
            return;
        };
        if s == o.head {
            write(self.conn.output(), self.headers);
            o.head += 1;
            o.held.pop_front();
            while let Some(Some(_)) = o.held.front() {
                if let Some(Some(b)) = o.held.pop_front() {
                    self.conn.write(&b);
                }
                o.head += 1;
            }
            return;
        }
        // An earlier reply is still pending: keep this one aside, in its place.
        let mut buf = BytesMut::new();
        write(&mut buf, self.headers);
        let at = (s - o.head) as usize;
        if o.held.len() <= at {
            o.held.resize(at + 1, None);
        }
        o.held[at] = Some(buf.freeze());
    }

    /// The handler took the reply over with a `Deferred` handle.
    pub(crate) fn deferred(&mut self) {
        *self.deferred += 1;
    }
}

/// The handler of one server connection.
pub(crate) struct ServerConn {
    shared: Arc<Shared>,
    protocol: Option<Protocol>,
    peer: Option<SocketAddr>,
    order: Order,
    /// Deferred replies not delivered yet.
    deferred: usize,
    /// Close once nothing is in flight (shutdown, or the peer finished sending).
    draining: bool,
    last_active: Instant,
    partial_since: Option<Instant>,
    idle_timer: Option<TimerId>,
    read_timer: Option<TimerId>,
}

impl ServerConn {
    pub(crate) fn new(shared: Arc<Shared>, now: Instant) -> Self {
        ServerConn {
            shared,
            protocol: None,
            peer: None,
            order: Order::default(),
            deferred: 0,
            draining: false,
            last_active: now,
            partial_since: None,
            idle_timer: None,
            read_timer: None,
        }
    }

    fn headers(conn: &mut Conn<'_>) -> &'static Headers<'static> {
        if conn.core().is_shutting_down() {
            &CRRST
        } else {
            &NO_HEADERS
        }
    }

    /// A deferred reply arrives (on this core).
    pub(crate) fn deliver(
        &mut self,
        conn: &mut Conn<'_>,
        slot: Option<u64>,
        write: impl FnOnce(&mut BytesMut, &Headers<'_>),
    ) {
        self.deferred = self.deferred.saturating_sub(1);
        let headers = Self::headers(conn);
        Sink {
            conn,
            order: &mut self.order,
            deferred: &mut self.deferred,
            headers,
        }
        .reply(slot, write);
        self.close_if_drained(conn);
    }

    fn close_if_drained(&mut self, conn: &mut Conn<'_>) {
        if self.draining && self.deferred == 0 {
            conn.close();
        }
    }

    fn arm_read_timer(&mut self, conn: &mut Conn<'_>, since: Instant) {
        if let (Some(limit), None) = (self.shared.read_timeout, self.read_timer) {
            self.read_timer = Some(conn.set_timer(since + limit, READ_TIMER));
        }
    }

    /// Serves one whole frame.
    fn serve(
        &mut self,
        conn: &mut Conn<'_>,
        protocol: Protocol,
        frame: Bytes,
        headers: &'static Headers<'static>,
    ) -> Result<(), ()> {
        // A frame whose envelope cannot be read cannot be answered: close.
        let parsed = wire::parse(protocol, frame).map_err(|_| ())?;
        let env = &parsed.envelope;
        let tt = parsed.ttheader.as_ref();
        let shared = &*self.shared;
        let out_of_order = tt.is_some_and(|t| t.flags() & OUT_OF_ORDER != 0);
        let mut sink = Sink {
            conn,
            order: &mut self.order,
            deferred: &mut self.deferred,
            headers,
        };
        if !matches!(env.kind, MessageType::Call | MessageType::Oneway) {
            let slot = (!out_of_order).then(|| sink.order.take());
            let s = Status::new(
                ApplicationExceptionKind::InvalidMessageType,
                format!("a server takes calls, not {:?} messages", env.kind),
            );
            sink.reply(slot, |out, h| wire::write_status(env, out, &s, h));
            return Ok(());
        }
        let route = shared.router.find(&env.method, env.payload, || {
            tt.and_then(|t| t.str_header("isn"))
        });
        let declared_oneway = route.is_some_and(|(svc, i)| svc.methods()[i].oneway);
        let oneway = env.kind == MessageType::Oneway || declared_oneway;
        let slot = (!oneway && !out_of_order).then(|| sink.order.take());
        let (svc, index) = match route {
            Some((svc, i)) if accepts(svc.idl(), env.payload) => (svc, i),
            found => {
                if !oneway {
                    let s = match found {
                        Some((svc, _)) => Status::new(
                            ApplicationExceptionKind::InvalidProtocol,
                            format!(
                                "{}.{} is not served over {:?}",
                                svc.name(),
                                env.method,
                                env.payload
                            ),
                        ),
                        None => Status::unknown_method(format!("unknown method {}", &*env.method)),
                    };
                    sink.reply(slot, |out, h| wire::write_status(env, out, &s, h));
                }
                return Ok(());
            }
        };
        let peer = self.peer;
        let call = Call {
            ctx: CallContext {
                envelope: env,
                service: svc.name(),
                ttheader: tt,
                peer,
                received: sink.conn.now(),
                rt: &shared.rt,
                conn: sink.conn.id(),
                slot,
                oneway,
                encoder: None,
                deferred: Cell::new(false),
            },
            body: parsed.body.clone(),
            sink: &mut sink,
        };
        svc.call(index, call);
        Ok(())
    }
}

impl Handler for ServerConn {
    fn on_open(&mut self, conn: &mut Conn<'_>) {
        self.peer = conn.peer_addr().ok();
        self.last_active = conn.now();
        if let Some(idle) = self.shared.idle_timeout {
            self.idle_timer = Some(conn.set_timer(conn.now() + idle, IDLE_TIMER));
        }
    }

    fn on_data(&mut self, conn: &mut Conn<'_>, input: &mut Input<'_>) {
        let now = conn.now();
        self.last_active = now;
        let protocol = match self.protocol {
            Some(p) => p,
            None => match frame::detect(input.chunk()) {
                Ok(Some(Protocol::Http2)) | Err(_) => {
                    // Not a protocol served here: nothing can be answered.
                    conn.abort();
                    return;
                }
                Ok(Some(p)) => {
                    self.protocol = Some(p);
                    p
                }
                Ok(None) => {
                    input.need(input.len() + 1);
                    self.partial_since.get_or_insert(now);
                    self.arm_read_timer(conn, now);
                    return;
                }
            },
        };
        let headers = Self::headers(conn);
        loop {
            match frame::split(protocol, input.chunk(), self.shared.max_frame) {
                Ok(Split::Frame(len)) => {
                    let frame = input.split_to(len);
                    if self.serve(conn, protocol, frame, headers).is_err() {
                        conn.close();
                        return;
                    }
                }
                Ok(Split::NeedMore(n)) => {
                    input.need(n);
                    if input.is_empty() {
                        self.partial_since = None;
                    } else {
                        let since = *self.partial_since.get_or_insert(now);
                        self.arm_read_timer(conn, since);
                    }
                    return;
                }
                Err(_) => {
                    // Too large, or not a frame: the stream cannot be resynchronised.
                    conn.close();
                    return;
                }
            }
        }
    }

    fn on_read_closed(&mut self, conn: &mut Conn<'_>) {
        self.draining = true;
        self.close_if_drained(conn);
    }

    fn on_timer(&mut self, conn: &mut Conn<'_>, token: u64) {
        let now = conn.now();
        match token {
            IDLE_TIMER => {
                self.idle_timer = None;
                let Some(idle) = self.shared.idle_timeout else {
                    return;
                };
                let busy = self.deferred > 0 || self.order.in_flight() > 0;
                if !busy && now >= self.last_active + idle {
                    conn.close();
                } else {
                    let at = if busy {
                        now + idle
                    } else {
                        self.last_active + idle
                    };
                    self.idle_timer = Some(conn.set_timer(at, IDLE_TIMER));
                }
            }
            READ_TIMER => {
                self.read_timer = None;
                let (Some(limit), Some(since)) = (self.shared.read_timeout, self.partial_since)
                else {
                    return;
                };
                if now >= since + limit {
                    // A frame started and did not finish in time.
                    conn.abort();
                } else {
                    self.read_timer = Some(conn.set_timer(since + limit, READ_TIMER));
                }
            }
            _ => {}
        }
    }

    fn on_shutdown(&mut self, conn: &mut Conn<'_>) {
        self.draining = true;
        self.close_if_drained(conn);
    }
}
