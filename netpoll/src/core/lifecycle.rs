//! A connection's lifecycle as a state machine free of I/O: open, draining, lingering,
//! closing, and reading stopped for back-pressure or by the handler. It takes events
//! (a close asked for, EOF, output queued or drained) and answers with what to do (send
//! FIN and linger, abort, tell the handler, pause or resume reading); the core performs
//! the operations with whatever backend it runs on. Unit-tested without a kernel.

/// Where a connection is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Life {
    /// Outbound connect in flight.
    Connecting,
    /// Reading and writing.
    Open,
    /// Closed by us: pending output is being sent, input is discarded.
    Draining,
    /// Output sent and FIN sent; waiting for the peer's FIN (or a timeout) before closing,
    /// so unread input does not turn our close into a reset that destroys sent data.
    Lingering,
    /// Waiting for the kernel to hand back every buffer before the slot is freed.
    Closing,
}

/// What to do about a close asked for by this side.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum OnClose {
    /// Send what is queued, then FIN ([`Lifecycle::drained`] says when).
    Drain,
    /// Nothing is established yet: abort.
    Abort,
    /// Closing already.
    Nothing,
}

/// What to do once a draining connection's output may be all sent.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Drained {
    /// Output is still queued or in flight.
    NotYet,
    /// Send FIN and linger for the peer's (the lifecycle is now lingering).
    ShutdownAndLinger,
    /// The peer's FIN came already: close now.
    Abort,
}

/// What to do about the peer's FIN.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum OnEof {
    /// Input received before it is still held back: tell the handler after delivering it.
    Defer,
    /// Tell the handler (`on_read_closed`).
    Notify,
    /// The close is complete: abort (release).
    Abort,
    /// Draining: see whether the close can finish.
    CheckDrained,
    /// Nothing (connecting or closing).
    Ignore,
}

/// The lifecycle of one connection.
#[derive(Debug, Clone)]
pub(crate) struct Lifecycle {
    phase: Life,
    /// Reading paused because too much output is queued.
    paused: bool,
    /// Reading paused by the handler.
    held: bool,
    /// The handler resumed reading and the input held meanwhile is not delivered yet.
    redeliver: bool,
    /// The peer sent FIN.
    eof: bool,
    /// FIN arrived while input was held back; the handler hears of it after that input.
    eof_pending: bool,
}

impl Lifecycle {
    /// An accepted connection.
    pub(crate) fn open() -> Lifecycle {
        Lifecycle {
            phase: Life::Open,
            paused: false,
            held: false,
            redeliver: false,
            eof: false,
            eof_pending: false,
        }
    }

    /// An outbound connection whose connect is in flight.
    pub(crate) fn connecting() -> Lifecycle {
        Lifecycle {
            phase: Life::Connecting,
            ..Lifecycle::open()
        }
    }

    pub(crate) fn phase(&self) -> Life {
        self.phase
    }

    pub(crate) fn is(&self, phase: Life) -> bool {
        self.phase == phase
    }

    /// Whether the handler may be given input now.
    pub(crate) fn delivering(&self) -> bool {
        self.phase == Life::Open && !self.read_stopped()
    }

    /// Whether reading is stopped (back-pressure, or the handler's request).
    pub(crate) fn read_stopped(&self) -> bool {
        self.paused || self.held
    }

    pub(crate) fn paused(&self) -> bool {
        self.paused
    }

    pub(crate) fn held(&self) -> bool {
        self.held
    }

    /// Whether a receive should be in flight: reading while open and not stopped, and
    /// while draining or lingering (to see the peer's FIN), until EOF.
    pub(crate) fn wants_recv(&self) -> bool {
        let reading = match self.phase {
            Life::Open => !self.read_stopped(),
            Life::Draining | Life::Lingering => true,
            Life::Connecting | Life::Closing => false,
        };
        reading && !self.eof
    }

    /// The outbound connect succeeded. Returns whether the connection is now open (it
    /// may have been aborted meanwhile).
    pub(crate) fn connected(&mut self) -> bool {
        if self.phase == Life::Connecting {
            self.phase = Life::Open;
            true
        } else {
            false
        }
    }

    /// This side asks to close gracefully.
    pub(crate) fn close(&mut self) -> OnClose {
        match self.phase {
            Life::Open => {
                self.phase = Life::Draining;
                OnClose::Drain
            }
            Life::Connecting => OnClose::Abort,
            Life::Draining | Life::Lingering | Life::Closing => OnClose::Nothing,
        }
    }

    /// A draining connection's output changed: whether the close can move on.
    pub(crate) fn drained(&mut self, pending_output: usize, send_busy: bool) -> Drained {
        if self.phase != Life::Draining || send_busy || pending_output > 0 {
            return Drained::NotYet;
        }
        if self.eof {
            return Drained::Abort;
        }
        self.phase = Life::Lingering;
        self.paused = false;
        self.held = false;
        Drained::ShutdownAndLinger
    }

    /// Closes now. Returns `false` if the connection was closing already.
    pub(crate) fn abort(&mut self) -> bool {
        if self.phase == Life::Closing {
            return false;
        }
        self.phase = Life::Closing;
        true
    }

    /// The peer sent FIN. `held_input`: bytes received and not yet given to the handler.
    pub(crate) fn peer_closed(&mut self, held_input: bool) -> OnEof {
        self.eof = true;
        match self.phase {
            Life::Open if (self.read_stopped() || self.redeliver) && held_input => {
                self.eof_pending = true;
                OnEof::Defer
            }
            Life::Open => OnEof::Notify,
            Life::Lingering => OnEof::Abort,
            Life::Draining => OnEof::CheckDrained,
            Life::Connecting | Life::Closing => OnEof::Ignore,
        }
    }

    /// Output queued: whether to pause reading (inbound connections over the high-water
    /// mark; outbound ones never pause, or client and server could wait for each other).
    pub(crate) fn output_queued(
        &mut self,
        outbound: bool,
        pending: usize,
        high_water: usize,
    ) -> bool {
        if self.phase == Life::Open && !outbound && !self.paused && pending > high_water {
            self.paused = true;
            true
        } else {
            false
        }
    }

    /// Output was sent: whether to resume reading (drained to half the high-water mark).
    pub(crate) fn output_sent(&mut self, pending: usize, high_water: usize) -> bool {
        if self.paused && pending <= high_water / 2 {
            self.paused = false;
            true
        } else {
            false
        }
    }

    /// The handler pauses reading.
    pub(crate) fn hold(&mut self) {
        self.held = true;
    }

    /// The handler resumes reading. Returns whether held input must be delivered (at the
    /// end of the turn, once the handler has returned).
    pub(crate) fn release(&mut self) -> bool {
        if self.held {
            self.held = false;
            self.redeliver = true;
            true
        } else {
            false
        }
    }

    /// Reading restarts (resumed by the peer draining, or by the handler): whether to
    /// deliver held input first. After delivering it, call [`after_redelivery`].
    ///
    /// [`after_redelivery`]: Lifecycle::after_redelivery
    pub(crate) fn restart(&mut self) -> bool {
        self.redeliver = false;
        self.delivering()
    }

    /// Held input was delivered (or there was none): whether the handler must now hear of
    /// an EOF that waited behind it. `false` also when reading stopped again.
    pub(crate) fn after_redelivery(&mut self) -> bool {
        if !self.delivering() || !self.eof_pending {
            return false;
        }
        self.eof_pending = false;
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_graceful_close_drains_then_lingers_then_ends_on_the_peers_fin() {
        let mut l = Lifecycle::open();
        assert!(l.wants_recv());
        assert_eq!(l.close(), OnClose::Drain);
        assert_eq!(
            l.close(),
            OnClose::Nothing,
            "closing twice does nothing more"
        );
        assert!(
            l.wants_recv(),
            "a draining connection still reads, to see FIN"
        );
        assert_eq!(l.drained(10, false), Drained::NotYet);
        assert_eq!(l.drained(0, true), Drained::NotYet);
        assert_eq!(l.drained(0, false), Drained::ShutdownAndLinger);
        assert!(l.is(Life::Lingering));
        assert_eq!(l.peer_closed(false), OnEof::Abort);
        assert!(l.abort());
        assert!(!l.abort(), "aborting twice does nothing more");
        assert!(!l.wants_recv());
    }

    #[test]
    fn fin_before_the_output_is_drained_ends_the_close_at_once() {
        let mut l = Lifecycle::open();
        l.close();
        assert_eq!(l.peer_closed(false), OnEof::CheckDrained);
        assert!(!l.wants_recv(), "nothing more to read after FIN");
        assert_eq!(l.drained(0, false), Drained::Abort);
    }

    #[test]
    fn closing_while_connecting_aborts() {
        let mut l = Lifecycle::connecting();
        assert!(!l.wants_recv());
        assert_eq!(l.close(), OnClose::Abort);
        l.abort();
        assert!(
            !l.connected(),
            "a connect completing after the abort does not reopen"
        );
        let mut l = Lifecycle::connecting();
        assert!(l.connected());
        assert!(l.wants_recv());
    }

    #[test]
    fn back_pressure_pauses_at_the_high_water_mark_and_resumes_at_half() {
        let mut l = Lifecycle::open();
        assert!(!l.output_queued(false, 100, 100));
        assert!(l.output_queued(false, 101, 100));
        assert!(!l.wants_recv());
        assert!(!l.output_queued(false, 200, 100), "paused once");
        assert!(!l.output_sent(51, 100));
        assert!(l.output_sent(50, 100));
        assert!(l.wants_recv());
        // Outbound connections never pause.
        assert!(!l.output_queued(true, 1 << 30, 100));
    }

    #[test]
    fn fin_waits_behind_input_held_back_and_reaches_the_handler_after_it() {
        let mut l = Lifecycle::open();
        l.hold();
        assert_eq!(l.peer_closed(true), OnEof::Defer);
        assert!(l.release());
        assert!(l.restart(), "held input is delivered first");
        assert!(l.after_redelivery(), "then the handler hears of FIN");
        assert!(!l.after_redelivery(), "once");
    }

    #[test]
    fn fin_after_a_resume_but_before_the_redelivery_still_waits() {
        let mut l = Lifecycle::open();
        l.hold();
        assert!(l.release());
        // FIN arrives before the end of the turn delivers the held input.
        assert_eq!(l.peer_closed(true), OnEof::Defer);
        assert!(l.restart());
        assert!(l.after_redelivery());
    }

    #[test]
    fn without_held_input_fin_goes_to_the_handler_at_once() {
        let mut l = Lifecycle::open();
        l.output_queued(false, 10, 1);
        assert_eq!(l.peer_closed(false), OnEof::Notify);
    }

    #[test]
    fn paused_again_by_the_redelivery_keeps_fin_waiting() {
        let mut l = Lifecycle::open();
        l.output_queued(false, 10, 1);
        assert_eq!(l.peer_closed(true), OnEof::Defer);
        assert!(l.output_sent(0, 1));
        assert!(l.restart());
        // Delivering the held input queued more output than the peer takes.
        l.output_queued(false, 10, 1);
        assert!(!l.after_redelivery());
        assert!(l.output_sent(0, 1));
        assert!(l.restart());
        assert!(l.after_redelivery());
    }
}
