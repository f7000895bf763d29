//! Built without the `tls` feature: no connection has a TLS session. The type is
//! uninhabited, so the core's TLS paths compile to nothing.

use std::io;
use std::time::Duration;

use bytes::BytesMut;

use crate::TimerId;

/// A TLS session; none can exist without the `tls` feature.
#[derive(Debug)]
pub(crate) enum Session {}

/// What a receive did to the session.
pub(crate) struct Opened {
    pub(crate) handshake_done: bool,
    pub(crate) peer_closed: bool,
}

#[allow(clippy::unused_self)]
impl Session {
    pub(crate) fn sniff_plaintext(&mut self, _first: &[u8]) -> bool {
        match *self {}
    }
    pub(crate) fn handshake_timeout(&self) -> Duration {
        match *self {}
    }
    pub(crate) fn set_timer(&mut self, _timer: TimerId) {
        match *self {}
    }
    pub(crate) fn take_timer(&mut self) -> Option<TimerId> {
        match *self {}
    }
    pub(crate) fn has_backlog(&self) -> bool {
        match *self {}
    }
    pub(crate) fn push_backlog(&mut self, _cipher: &[u8], _max: usize) -> bool {
        match *self {}
    }
    pub(crate) fn eof_seen(&self) -> bool {
        match *self {}
    }
    pub(crate) fn set_eof_seen(&mut self) {
        match *self {}
    }
    pub(crate) fn close_after_handshake(&self) -> bool {
        match *self {}
    }
    pub(crate) fn set_close_after_handshake(&mut self) {
        match *self {}
    }
    pub(crate) fn take_backlog(&mut self) -> Option<bytes::Bytes> {
        match *self {}
    }
    pub(crate) fn is_handshaking(&self) -> bool {
        match *self {}
    }
    pub(crate) fn failed(&self) -> bool {
        match *self {}
    }
    pub(crate) fn failed_in_handshake(&self) -> bool {
        match *self {}
    }
    pub(crate) fn owes_output(&self, _draining: bool) -> bool {
        match *self {}
    }
    pub(crate) fn open(&mut self, _cipher: &[u8], _plain: &mut BytesMut) -> io::Result<Opened> {
        match *self {}
    }
    pub(crate) fn seal(
        &mut self,
        _plain: &mut BytesMut,
        _cipher: &mut BytesMut,
        _draining: bool,
    ) -> io::Result<()> {
        match *self {}
    }
}
