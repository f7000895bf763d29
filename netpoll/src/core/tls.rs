//! The TLS layer of connections (see [`crate::tls`]): sessions attached at accept or
//! connect, ciphertext opened on receive, the handshake deadline. Sealing happens where
//! the core flushes (`send.rs`).

use std::io;

use bytes::Bytes;

use super::lifecycle::Life;

/// At most this many TLS handshake steps (each record batch of a connection still
/// handshaking: a ClientHello costs a key exchange and a signature) per loop turn; the
/// rest wait for the next turn, so that a flood of handshakes cannot starve established
/// connections.
const HANDSHAKES_PER_TURN: u32 = 16;
use super::{Core, TimerTarget};
use crate::tls::Session;
use crate::CloseReason;

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

    /// Handshake records that waited for budget: taken in the order they waited, while
    /// this turn's budget lasts.
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
            for view in tls.take_backlog() {
                // Counts against the budget; whatever it does not cover waits again.
                self.deliver(slot, view);
            }
        }
        // Those not reached keep their place, before any that queued meanwhile.
        let mut rest = waiting[i..].to_vec();
        rest.append(&mut self.tls_backlog);
        self.tls_backlog = rest;
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
                CloseReason::Tls(io::Error::new(
                    io::ErrorKind::TimedOut,
                    format!("the handshake did not complete within {limit:?}"),
                )),
            );
        }
    }

    /// Received ciphertext: the plain text it carries joins the connection's input, and
    /// the handler gets it once it has what it asked for.
    ///
    /// Returns `Err(view)` when the connection turned out to be plain text (a port that
    /// takes both) and its bytes must take the plain path.
    pub(super) fn deliver_tls(&mut self, slot: u32, view: Bytes) -> Result<(), Bytes> {
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
            self.conns[slot as usize].tls = None;
            return Err(view);
        }
        if tls.is_handshaking() {
            if tls.has_backlog() || self.handshakes >= HANDSHAKES_PER_TURN {
                // Over this turn's budget (or behind records that are): later, in order.
                if !tls.has_backlog() {
                    let gen = c.gen;
                    self.tls_backlog.push((slot, gen));
                }
                tls.push_backlog(view);
                return Ok(());
            }
            self.handshakes += 1;
        }
        match tls.open(&view, &mut c.acc) {
            Ok(opened) => {
                if opened.handshake_done {
                    if let Some(t) = tls.take_timer() {
                        self.timers.cancel(t);
                    }
                    // Plain text written during the handshake can go now.
                    if !c.out.is_empty() {
                        self.mark_dirty(slot);
                    }
                }
            }
            Err(e) => {
                tracing::debug!(core = self.id, error = %e, "TLS failed; closing the connection");
                // The alert rustls queued goes out before the FIN.
                self.mark_dirty(slot);
                self.close_gracefully(slot, CloseReason::Tls(e));
                return Ok(());
            }
        }
        let c = &mut self.conns[slot as usize];
        if c.tls_owes_output() {
            self.mark_dirty(slot);
        }
        let c = &mut self.conns[slot as usize];
        if c.lc.read_stopped() {
            // The plain text waits in the input buffer until reading resumes.
            self.cancel_multishot(slot);
        } else if !c.acc.is_empty() && (c.need == 0 || c.acc.len() >= c.need) {
            self.call_data_acc(slot);
        }
        Ok(())
    }
}
