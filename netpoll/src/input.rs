//! [`Input`]: the bytes a connection has received and its consumer has not yet consumed.

use bytes::{Buf, Bytes, BytesMut};

/// The unconsumed bytes of one connection, contiguous, handed to
/// [`Handler::on_data`](crate::Handler::on_data).
///
/// Usually this is a view straight into a kernel-filled pool buffer: splitting a frame off
/// with [`split_to`](Input::split_to) is zero-copy and the frame keeps its buffer alive for as
/// long as it (or any slice of it) lives, on any thread. Only when a message spans two
/// receive buffers are its bytes copied, once, into a per-connection buffer; call
/// [`need`](Input::need) with the full size of the message being assembled so that the copy
/// is sized once and the consumer is not woken until the message is whole.
#[derive(Debug)]
pub struct Input<'a> {
    repr: Repr<'a>,
    need: usize,
}

#[derive(Debug)]
enum Repr<'a> {
    View(&'a mut Bytes),
    Acc(&'a mut BytesMut),
}

impl<'a> Input<'a> {
    pub(crate) fn view(bytes: &'a mut Bytes) -> Self {
        Input {
            repr: Repr::View(bytes),
            need: 0,
        }
    }

    pub(crate) fn acc(buf: &'a mut BytesMut) -> Self {
        Input {
            repr: Repr::Acc(buf),
            need: 0,
        }
    }

    /// How many bytes the consumer said it needs before it can make progress (0: unknown).
    pub(crate) fn needed(&self) -> usize {
        self.need
    }

    /// All unconsumed bytes.
    pub fn chunk(&self) -> &[u8] {
        match &self.repr {
            Repr::View(b) => b,
            Repr::Acc(b) => b,
        }
    }

    /// Number of unconsumed bytes.
    pub fn len(&self) -> usize {
        self.chunk().len()
    }

    /// Whether every received byte was consumed.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Removes the first `n` bytes and returns them as a zero-copy view.
    ///
    /// # Panics
    ///
    /// If `n > self.len()`; see [`try_split_to`](Input::try_split_to).
    pub fn split_to(&mut self, n: usize) -> Bytes {
        match self.try_split_to(n) {
            Some(b) => b,
            None => panic!("split_to({n}) past the end of {} input bytes", self.len()),
        }
    }

    /// Removes the first `n` bytes and returns them as a zero-copy view, or `None` if fewer
    /// than `n` bytes are available.
    pub fn try_split_to(&mut self, n: usize) -> Option<Bytes> {
        if n > self.len() {
            return None;
        }
        Some(match &mut self.repr {
            Repr::View(b) => b.split_to(n),
            Repr::Acc(b) => b.split_to(n).freeze(),
        })
    }

    /// Discards the first `n` bytes (at most all of them).
    pub fn advance(&mut self, n: usize) {
        let n = n.min(self.len());
        match &mut self.repr {
            Repr::View(b) => b.advance(n),
            Repr::Acc(b) => b.advance(n),
        }
    }

    /// Declares that nothing can be done until at least `total` bytes (counted from the start
    /// of the unconsumed input) are available. The consumer is not called again before
    /// then, unless the connection ends.
    pub fn need(&mut self, total: usize) {
        self.need = total;
    }
}
