//! Listeners: multishot accept, and outbound connect completions.

use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::panic::{self, AssertUnwindSafe};
use std::time::Duration;

use super::lifecycle::Life;
use super::state::ConnectOp;
use super::{Core, Factory, TimerTarget};
use crate::sys::{Driver, Op};
use crate::token::{self, Op as Kind};
use crate::CloseReason;

/// How long to wait before accepting again after accept failed (EMFILE and the like).
const ACCEPT_RETRY: Duration = Duration::from_millis(20);

pub(crate) struct Listener {
    fd: OwnedFd,
    factory: Factory,
    armed: bool,
    closing: bool,
    /// Connections accepted here speak TLS.
    #[cfg(feature = "tls")]
    tls: Option<crate::tls::TlsAcceptor>,
    /// The one listener of a socket the cores share (a Unix socket path cannot be bound
    /// once per core): its connections are handed to every core in turn.
    spread: Option<Spread>,
}

/// Where a shared listener's connections go: each core in turn.
pub(crate) struct Spread {
    pub(crate) cores: crate::RuntimeHandle,
    pub(crate) next: usize,
}

/// What a listener's connections speak.
#[derive(Clone, Debug, Default)]
pub(crate) struct ListenTls {
    #[cfg(feature = "tls")]
    pub(crate) acceptor: Option<crate::tls::TlsAcceptor>,
}

impl Core {
    pub(crate) fn add_listener(
        &mut self,
        fd: OwnedFd,
        factory: Factory,
        tls: ListenTls,
        spread: Option<Spread>,
    ) {
        #[cfg(not(feature = "tls"))]
        let _ = tls;
        let li = self.listeners.insert(Listener {
            fd,
            factory,
            armed: false,
            closing: false,
            #[cfg(feature = "tls")]
            tls: tls.acceptor,
            spread,
        }) as u32;
        self.arm_accept(li);
    }

    pub(super) fn arm_accept(&mut self, li: u32) {
        let Some(l) = self.listeners.get_mut(li as usize) else {
            return;
        };
        if l.armed || l.closing {
            return;
        }
        l.armed = true;
        let op = Op::AcceptMulti {
            fd: l.fd.as_raw_fd(),
        };
        // SAFETY: multishot accept names no userspace memory.
        unsafe { self.push(op, token::encode(Kind::Accept, li, 0)) };
        self.kernel_ops += 1;
    }

    /// Stops every listener (shutdown).
    pub(super) fn close_listeners(&mut self) {
        let listeners: Vec<u32> = self.listeners.iter().map(|(k, _)| k as u32).collect();
        for li in listeners {
            let l = &mut self.listeners[li as usize];
            l.closing = true;
            if l.armed {
                self.cancel_op(token::encode(Kind::Accept, li, 0));
            } else {
                self.remove_listener(li);
            }
        }
    }

    /// Closes listener `li`, whose accept is not in flight.
    fn remove_listener(&mut self, li: u32) {
        let l = self.listeners.remove(li as usize);
        self.driver.forget(l.fd.as_raw_fd());
    }

    pub(super) fn on_accept(&mut self, li: u32, res: i32, more: bool) {
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
        #[cfg(feature = "tls")]
        let tls = ListenTls {
            acceptor: l.tls.clone(),
        };
        #[cfg(not(feature = "tls"))]
        let tls = ListenTls::default();
        // A shared listener's connection may belong to another core.
        let target = l.spread.as_mut().filter(|_| accepted.is_some()).map(|s| {
            let core = s.next % s.cores.cores();
            s.next = s.next.wrapping_add(1);
            (core, s.cores.clone())
        });
        if let Some(fd) = accepted {
            if closing || self.shutting_down {
                // Dropped: closed at once.
            } else {
                match target {
                    Some((core, cores)) if core != self.id => {
                        // If that core stopped, the task (and the connection) is dropped.
                        let _ = cores.spawn(core, move |c| c.open_accepted(fd, factory, tls));
                    }
                    _ => self.open_accepted(fd, factory, tls),
                }
            }
        }
        if more {
            return;
        }
        if closing {
            self.remove_listener(li);
        } else if res >= 0 {
            self.arm_accept(li);
        } else if res != -libc::ECANCELED {
            // EMFILE, ENFILE, ENOBUFS, ENOMEM...: try again shortly instead of spinning.
            tracing::debug!(
                core = self.id,
                error = %io::Error::from_raw_os_error(-res),
                "accept failed; retrying shortly"
            );
            self.timers
                .insert(self.now + ACCEPT_RETRY, TimerTarget::AcceptRetry(li));
        }
    }

    /// Starts serving an accepted connection on this core.
    fn open_accepted(&mut self, fd: OwnedFd, factory: Factory, tls: ListenTls) {
        #[cfg(not(feature = "tls"))]
        let _ = tls;
        if self.shutting_down {
            // Handed over by a shared listener as this core began to stop.
            self.remote.stats.count_refused();
            return;
        }
        if self.conns.len() >= self.cfg.max_connections {
            self.remote.stats.count_refused();
            tracing::debug!(
                core = self.id,
                "connection refused: max_connections reached"
            );
            return;
        }
        // A Unix socket has no Nagle to turn off.
        let _ = socket2::SockRef::from(&fd).set_tcp_nodelay(true);
        match panic::catch_unwind(AssertUnwindSafe(|| factory(self))) {
            Ok(handler) => {
                let slot = self.insert_conn(fd, handler);
                #[cfg(feature = "tls")]
                if let Some(acceptor) = &tls.acceptor {
                    match crate::tls::Session::server(acceptor) {
                        Ok(session) => self.attach_tls(slot, session),
                        Err(e) => {
                            self.abort(slot, crate::TlsError::close_reason(e.kind(), true, e))
                        }
                    }
                }
                if self.conns[slot as usize].lc.is(Life::Open) {
                    self.arm_recv(slot);
                    self.call_handler(slot, |h, c| h.on_open(c));
                }
            }
            Err(_) => tracing::warn!(core = self.id, "a connection factory panicked"),
        }
    }

    pub(super) fn on_connect(&mut self, slot: u32, gen: u32, res: i32) {
        let Some(c) = self.conn_state(slot, gen) else {
            return;
        };
        // The kernel is done with the address: take it back and free it.
        if let ConnectOp::InFlight(addr) = std::mem::replace(&mut c.connect, ConnectOp::Idle) {
            drop(addr);
        }
        self.kernel_ops -= 1;
        let c = &mut self.conns[slot as usize];
        if let Some(t) = c.connect_timer.take() {
            self.timers.cancel(t);
        }
        let c = &mut self.conns[slot as usize];
        if !c.lc.is(Life::Connecting) {
            self.closing.push((slot, gen));
            return;
        }
        if res == 0 {
            c.lc.connected();
            c.last_recv = self.now;
            let tls = c.tls.is_some();
            if !c.out.is_empty() {
                self.mark_dirty(slot);
            }
            if tls {
                self.start_handshake_clock(slot);
            }
            self.arm_recv(slot);
            self.call_handler(slot, |h, c| h.on_open(c));
            if self.shutting_down && self.conns[slot as usize].lc.is(Life::Open) {
                self.call_handler(slot, |h, c| h.on_shutdown(c));
            }
        } else {
            let reason = if c.connect_timed_out {
                CloseReason::ConnectTimedOut
            } else {
                CloseReason::ConnectFailed(io::Error::from_raw_os_error(-res))
            };
            self.abort(slot, reason);
        }
    }
}
