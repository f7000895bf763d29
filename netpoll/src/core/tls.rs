//! The TLS layer of connections (see [`crate::tls`]): sessions attached at accept or
//! connect, ciphertext opened on receive, the handshake deadline and the per-turn
//! handshake budget. Sealing happens where the core flushes (`send.rs`).

use std::io;

use bytes::Bytes;

use super::lifecycle::Life;
use super::{Core, TimerTarget};
use crate::tls::Session;
use crate::{CloseReason, TlsError};

/// At most this many TLS handshake steps (each batch of records received by a connection
/// still handshaking: a ClientHello costs a key exchange and a signature) per loop turn;
/// the rest wait for the next turn, so that a flood of handshakes cannot starve
/// established connections.
const HANDSHAKES_PER_TURN: u32 = 16;

/// A connection waiting for handshake budget stops reading; what had arrived waits (copied
/// out of the pool's buffers, which go back at once), up to this much: more than any
/// legitimate handshake flight needs.
const BACKLOG_MAX: usize = 64 * 1024;

impl Core {
    /// Gives a connection its TLS session; the handshake deadline starts now (an outbound
    /// connection's once it is connected).
    #[cfg_attr(not(feature = "tls"), allow(dead_code))]
    pub(super) fn attach_tls(&mut self, slot: u32, session: Box<Session>) {
        self.conns[slot as usize].tls = Some(session);
        if !self.conns[slot as usize].lc.is(Life::Connecting) {
            self.start_handshake_clock(slot);
        }
    }

    pub(super) fn start_handshake_clock(&mut self, slot: u32) {
        let id = self.slot_id(slot);
        let Some(tls) = self.conns[slot as usize].tls.as_deref_mut() else {
            return;
        };
        let at = self.now + tls.handshake_timeout();
        let timer = self.timers.insert(at, TimerTarget::TlsHandshake(id));
        if let Some(tls) = self.conns[slot as usize].tls.as_deref_mut() {
            tls.set_timer(timer);
        }
        // A client's hello (or anything else rustls has to say) goes out with this turn.
        if self.conns[slot as usize].tls_owes_output() {
            self.mark_dirty(slot);
        }
    }

    pub(super) fn tls_handshake_expired(&mut self, slot: u32) {
        let c = &mut self.conns[slot as usize];
        let Some(tls) = c.tls.as_deref_mut() else {
            return;
        };
        let _ = tls.take_timer();
        if tls.is_handshaking() && !c.lc.is(Life::Closing) {
            let limit = tls.handshake_timeout();
            tracing::debug!(core = self.id, ?limit, "TLS handshake timed out");
            self.abort(
                slot,
                TlsError::close_reason(
                    io::ErrorKind::TimedOut,
                    true,
                    format!("the handshake did not complete within {limit:?}"),
                ),
            );
        }
    }

    /// Handshake records that waited for budget: taken in the order they waited, while
    /// this turn's budget lasts. A connection whose records are all taken reads again.
    pub(super) fn run_tls_backlog(&mut self) {
        if self.tls_backlog.is_empty() {
            return;
        }
        let waiting = std::mem::take(&mut self.tls_backlog);
        let mut i = 0;
        while i < waiting.len() && self.handshakes < HANDSHAKES_PER_TURN {
            let (slot, gen) = waiting[i];
            i += 1;
            let Some(c) = self.conns.get_mut(slot as usize).filter(|c| c.gen == gen) else {
                continue;
            };
            let Some(tls) = c.tls.as_deref_mut() else {
                continue;
            };
            if let Some(view) = tls.take_backlog() {
                // Counts against the budget; if it does not cover it, it waits again.
                self.deliver(slot, view);
            }
            let waits = self
                .conns
                .get(slot as usize)
                .filter(|c| c.gen == gen)
                .and_then(|c| c.tls.as_deref())
                .is_some_and(|t| t.has_backlog());
            if !waits {
                self.arm_recv(slot);
            }
        }
        // Those not reached keep their place, before any that queued meanwhile.
        let mut rest = waiting[i..].to_vec();
        rest.append(&mut self.tls_backlog);
        self.tls_backlog = rest;
    }

    /// Received ciphertext: the plain text it carries joins the connection's input, and
    /// the handler gets it once it has what it asked for.
    ///
    /// Returns `Err(view)` when the connection turned out to be plain text (a port that
    /// takes both) and its bytes must take the plain path.
    pub(super) fn deliver_tls(&mut self, slot: u32, view: Bytes) -> Result<(), Bytes> {
        self.open_tls(slot, view, true)
    }

    /// [`deliver_tls`](Self::deliver_tls); `budgeted`: a handshake step counts against
    /// the turn's budget (not for records taken before an EOF, which ends the input).
    fn open_tls(&mut self, slot: u32, view: Bytes, budgeted: bool) -> Result<(), Bytes> {
        let c = &mut self.conns[slot as usize];
        if !c.lc.is(Life::Open) {
            return Ok(()); // closing: input is discarded
        }
        let Some(tls) = c.tls.as_deref_mut() else {
            return Err(view);
        };
        if tls.sniff_plaintext(&view) {
            if let Some(t) = tls.take_timer() {
                self.timers.cancel(t);
            }
            c.tls = None;
            if !c.out.is_empty() {
                self.mark_dirty(slot);
            }
            return Err(view);
        }
        let handshaking = tls.is_handshaking();
        if handshaking && budgeted {
            if tls.has_backlog() || self.handshakes >= HANDSHAKES_PER_TURN {
                // Over this turn's budget (or behind records that are): later, in order,
                // and nothing more is read meanwhile.
                let first = !tls.has_backlog();
                if !tls.push_backlog(&view, BACKLOG_MAX) {
                    self.abort(
                        slot,
                        TlsError::close_reason(
                            io::ErrorKind::InvalidData,
                            true,
                            "more than 64 KiB arrived during the handshake",
                        ),
                    );
                    return Ok(());
                }
                if first {
                    let gen = c.gen;
                    self.tls_backlog.push((slot, gen));
                    self.cancel_multishot(slot);
                }
                return Ok(());
            }
            self.handshakes += 1;
        }
        let peer_closed = match tls.open(&view, &mut c.acc) {
            Ok(opened) => {
                if opened.handshake_done {
                    if let Some(t) = tls.take_timer() {
                        self.timers.cancel(t);
                    }
                    if tls.close_after_handshake() {
                        // Closed during the handshake with output queued: it goes now.
                        self.mark_dirty(slot);
                        self.close_gracefully(slot, CloseReason::Local);
                        return Ok(());
                    }
                    // Plain text written during the handshake can go now.
                    if !c.out.is_empty() {
                        self.mark_dirty(slot);
                    }
                }
                opened.peer_closed
            }
            Err(e) => {
                tracing::debug!(core = self.id, error = %e, "TLS failed; closing the connection");
                let during = tls.failed_in_handshake();
                let reason = TlsError::close_reason(io::ErrorKind::InvalidData, during, e);
                if tls.owes_output(false) {
                    // The alert rustls queued goes out before the FIN.
                    self.mark_dirty(slot);
                    self.close_gracefully(slot, reason);
                } else {
                    // Nothing to tell the peer (it sent the alert): nothing to wait for.
                    self.abort(slot, reason);
                }
                return Ok(());
            }
        };
        if self.conns[slot as usize].tls_owes_output() {
            self.mark_dirty(slot);
        }
        let c = &mut self.conns[slot as usize];
        if c.lc.read_stopped() {
            // The plain text waits in the input buffer until reading resumes.
            self.cancel_multishot(slot);
        } else if !c.acc.is_empty() && (c.need == 0 || c.acc.len() >= c.need) {
            self.call_data_acc(slot);
        }
        if peer_closed {
            // `close_notify`: the peer's input ended, whether or not a FIN follows.
            let Some(c) = self.conns.get_mut(slot as usize) else {
                return Ok(());
            };
            if let Some(tls) = c.tls.as_deref_mut().filter(|t| !t.eof_seen()) {
                tls.set_eof_seen();
                self.input_ended(slot);
            }
        }
        Ok(())
    }

    /// The peer's FIN on a TLS connection: records still waiting for handshake budget are
    /// taken first. Returns whether the EOF was dealt with here (the handshake did not
    /// complete, or `close_notify` was taken as the end already).
    pub(super) fn tls_eof(&mut self, slot: u32) -> bool {
        let c = &mut self.conns[slot as usize];
        let Some(tls) = c.tls.as_deref_mut() else {
            return false;
        };
        if let Some(view) = tls.take_backlog() {
            let _ = self.open_tls(slot, view, false);
        }
        let c = &mut self.conns[slot as usize];
        let Some(tls) = c.tls.as_deref() else {
            return false;
        };
        if tls.eof_seen() {
            // Told already (by `close_notify`); only a close under way needs the FIN.
            return c.lc.is(Life::Open);
        }
        if c.lc.is(Life::Open) && tls.is_handshaking() {
            // Not a TLS peer, or one that gave up: say so rather than "closed by peer".
            self.abort(
                slot,
                TlsError::close_reason(
                    io::ErrorKind::UnexpectedEof,
                    true,
                    "the peer closed the connection during the handshake",
                ),
            );
            return true;
        }
        false
    }
}
