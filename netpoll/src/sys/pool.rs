//! The zero-copy receive pool: buffers a backend receives into ([`Provide`]: for io_uring a
//! kernel-provided buffer ring), handed to consumers as [`bytes::Bytes`] views. The
//! bookkeeping here names no backend and is unit-tested without a kernel.
//!
//! # Ownership
//!
//! Each buffer is the heap allocation of one `BytesMut` held in `slots[bid]`. A buffer is in
//! exactly one of three states:
//!
//! * **in the ring**: its address is provided to the backend (for io_uring: published in
//!   the kernel's buffer ring); the backend may write into it at any time. Nothing in userspace reads or writes it.
//! * **lent**: a completion told us the kernel filled `len` bytes; those bytes were split off
//!   and frozen into a `Bytes` view handed to the consumer. The view (and any clones or
//!   slices of it, on any thread) share the allocation through `bytes`' atomic refcount.
//! * **reclaimable**: every view was dropped, so `BytesMut::try_reclaim` succeeds and the
//!   buffer goes back into the ring.
//!
//! A view kept past the loop turn (by a handler, or sent to another thread) therefore keeps
//! its buffer alive, and the buffer comes back to its owning core once the last view is
//! dropped: the core polls its lent buffers each turn (an atomic load each), so nothing
//! crosses threads but the refcount.
//!
//! The pool grows when the ring runs dry (up to its maximum) and shrinks back: a buffer
//! that comes back while the ring already holds the starting number of buffers is kept on
//! standby instead of being published again. Standby buffers refill the ring when it runs
//! low, and are freed once the pool has not had to grow for a while ([`BufPool::shrink`]);
//! a freed buffer's id is reused by the next growth.

use std::mem;

use bytes::{Bytes, BytesMut};

/// What a backend needs to receive into the pool's buffers: somewhere to hand them.
///
/// io_uring's implementation is the kernel's provided-buffer ring; a readiness backend
/// keeps its own list. Buffers are handed over one at a time and become usable together at
/// the next [`Provide::publish`].
pub(crate) trait Provide {
    /// The most buffers the backend can hold at once (the pool never grows past it).
    fn capacity(&self) -> usize;

    /// Hands buffer `bid`, `len` bytes at `addr`, to the backend.
    ///
    /// # Safety
    ///
    /// The `len` bytes at `addr` must stay allocated and untouched by userspace until a
    /// completion names `bid` again.
    unsafe fn provide(&mut self, bid: u16, addr: *mut u8, len: u32);

    /// Makes every buffer provided so far usable by the backend.
    fn publish(&mut self);

    /// The buffer group receives name to select from this pool.
    fn group(&self) -> u16;
}

pub(crate) struct BufPool<R> {
    /// Where buffers in the ring are handed to.
    ring: R,
    /// Entries handed to `ring` since the last publish.
    unpublished: bool,
    /// The most buffers the pool may grow to.
    entries: usize,
    buf_size: usize,
    /// `slots[bid]` owns buffer `bid`.
    slots: Vec<BytesMut>,
    /// `lent[bid]`: the buffer is lent out (not in the ring).
    lent_flag: Vec<bool>,
    /// Buffer ids lent out and not yet reclaimed.
    lent: Vec<u16>,
    /// Buffers currently handed to the backend.
    in_ring: usize,
    /// The starting number of buffers, which the pool shrinks back to.
    base: usize,
    /// Ids whose buffer was freed after a burst; reused when growing.
    freed: Vec<u16>,
    /// Buffers that came back while the ring was full: neither lent nor published.
    standby: Vec<u16>,
    /// Buffers freed since [`BufPool::shrink`] last reported.
    freed_recently: usize,
}

/// Counters describing a pool, for tests and metrics.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PoolStats {
    /// Buffers the pool owns.
    pub buffers: usize,
    /// Buffers published to the kernel, ready to receive.
    pub in_ring: usize,
    /// Buffers held by views (or partially received data) not yet reclaimed.
    pub lent: usize,
    /// Size of each buffer in bytes.
    pub buffer_size: usize,
}

impl<R: Provide> BufPool<R> {
    /// Creates a pool of `count` buffers of `buf_size` bytes handed to `ring`, able to grow
    /// to as many buffers as `ring` holds.
    pub(crate) fn new(ring: R, count: usize, buf_size: usize) -> BufPool<R> {
        let entries = ring.capacity().min(u16::MAX as usize + 1);
        let mut pool = BufPool {
            ring,
            unpublished: false,
            entries,
            buf_size,
            slots: Vec::with_capacity(entries),
            lent_flag: Vec::with_capacity(entries),
            lent: Vec::with_capacity(entries),
            in_ring: 0,
            base: count.min(entries),
            freed: Vec::new(),
            standby: Vec::new(),
            freed_recently: 0,
        };
        pool.grow(count);
        pool.publish();
        pool
    }

    /// The buffer group receives select from.
    pub(crate) fn group(&self) -> u16 {
        self.ring.group()
    }

    pub(crate) fn stats(&self) -> PoolStats {
        PoolStats {
            buffers: self.slots.len() - self.freed.len(),
            in_ring: self.in_ring,
            lent: self.lent.len(),
            buffer_size: self.buf_size,
        }
    }

    /// Adds up to `n` new buffers (bounded by the ring's capacity). Returns how many.
    pub(crate) fn grow(&mut self, n: usize) -> usize {
        let mut added = 0;
        // Standby buffers first: they cost nothing.
        while added < n {
            let Some(bid) = self.standby.pop() else { break };
            self.push_to_ring(bid);
            added += 1;
        }
        let room = self.entries - self.slots.len() + self.freed.len();
        let fresh = (n - added).min(room);
        for _ in 0..fresh {
            let mut buf = BytesMut::with_capacity(self.buf_size);
            // Promote the buffer to the shared representation now, so that splitting views
            // off it later never allocates.
            drop(buf.split());
            let reclaimed = buf.try_reclaim(self.buf_size);
            debug_assert!(reclaimed);
            let bid = match self.freed.pop() {
                Some(bid) => {
                    self.slots[bid as usize] = buf;
                    bid
                }
                None => {
                    self.slots.push(buf);
                    self.lent_flag.push(false);
                    (self.slots.len() - 1) as u16
                }
            };
            self.push_to_ring(bid);
        }
        added + fresh
    }

    /// Whether the pool may still grow.
    pub(crate) fn can_grow(&self) -> bool {
        self.slots.len() < self.entries || !self.freed.is_empty() || !self.standby.is_empty()
    }

    /// Below this many buffers in the ring the pool counts as running low.
    pub(crate) fn low(&self) -> usize {
        self.base / 4
    }

    /// Tops the ring up from standby when it runs low. If `may_shrink` (the pool has not
    /// had to grow for a while), frees the standby buffers. Returns how many buffers were
    /// freed.
    pub(crate) fn shrink(&mut self, may_shrink: bool) -> usize {
        let mut refilled = false;
        while self.in_ring < self.base {
            let Some(bid) = self.standby.pop() else { break };
            self.push_to_ring(bid);
            refilled = true;
        }
        if refilled {
            self.publish();
        }
        if may_shrink {
            for bid in self.standby.drain(..) {
                self.slots[bid as usize] = BytesMut::new();
                self.freed.push(bid);
                self.freed_recently += 1;
            }
        }
        mem::take(&mut self.freed_recently)
    }

    /// Turns a completion's buffer into a view of its first `len` bytes.
    ///
    /// Returns `None` for a buffer id the pool did not publish (a kernel contract breach we
    /// refuse to act on rather than trust).
    pub(crate) fn take(&mut self, bid: u16, len: usize) -> Option<Bytes> {
        let i = bid as usize;
        if i >= self.slots.len()
            || self.lent_flag[i]
            || len > self.buf_size
            || self.slots[i].capacity() < self.buf_size
        {
            return None;
        }
        self.in_ring -= 1;
        let slot = &mut self.slots[i];
        // SAFETY: the kernel wrote `len <= buf_size <= capacity` bytes at the start of this
        // buffer and, having posted the completion, no longer owns it.
        unsafe { slot.set_len(len) };
        let view = slot.split().freeze();
        self.lent_flag[i] = true;
        self.lent.push(bid);
        Some(view)
    }

    /// Puts a buffer the kernel consumed without filling (a zero-length completion) back.
    pub(crate) fn put_back_unused(&mut self, bid: u16) {
        let i = bid as usize;
        if i < self.slots.len() && !self.lent_flag[i] && self.slots[i].capacity() >= self.buf_size {
            self.in_ring -= 1;
            self.push_to_ring(bid);
            // Published at once: counted in the ring, it must be usable by the kernel.
            self.publish();
        }
    }

    /// Returns every lent buffer whose views are all gone to the ring, or to standby if the
    /// ring holds its starting number of buffers already. Returns how many came back.
    pub(crate) fn reclaim(&mut self) -> usize {
        let mut returned = 0;
        let mut i = 0;
        while i < self.lent.len() {
            let bid = self.lent[i];
            if self.slots[bid as usize].try_reclaim(self.buf_size) {
                self.lent.swap_remove(i);
                self.lent_flag[bid as usize] = false;
                if self.in_ring >= self.base {
                    // The ring is full again after a burst: keep this one aside.
                    self.standby.push(bid);
                } else {
                    self.push_to_ring(bid);
                }
                returned += 1;
            } else {
                i += 1;
            }
        }
        if returned > 0 {
            self.publish();
        }
        returned
    }

    /// Whether buffers wait on standby (to be freed once the pool may shrink).
    pub(crate) fn has_standby(&self) -> bool {
        !self.standby.is_empty()
    }

    /// Buffers lent and not yet reclaimed.
    pub(crate) fn lent(&self) -> usize {
        self.lent.len()
    }

    /// Buffers the kernel can fill right now.
    pub(crate) fn in_ring(&self) -> usize {
        self.in_ring
    }

    fn push_to_ring(&mut self, bid: u16) {
        let slot = &mut self.slots[bid as usize];
        debug_assert!(slot.capacity() >= self.buf_size && slot.is_empty());
        // SAFETY: the slot owns `buf_size` bytes of capacity and is marked neither lent nor
        // standby, so nothing in userspace touches them until a completion names `bid` and
        // `take` or `put_back_unused` takes it back.
        unsafe {
            self.ring
                .provide(bid, slot.as_mut_ptr(), self.buf_size as u32)
        };
        self.in_ring += 1;
        self.unpublished = true;
    }

    /// Makes every buffer provided so far usable by the backend.
    pub(crate) fn publish(&mut self) {
        if self.unpublished {
            self.unpublished = false;
            self.ring.publish();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A backend that records what it was handed, as a kernel would see it.
    #[derive(Default)]
    struct Fake {
        capacity: usize,
        /// Buffers handed over, not yet published.
        pending: Vec<(u16, usize, u32)>,
        /// Buffers the backend may fill, in the order it would use them.
        usable: std::collections::VecDeque<(u16, usize, u32)>,
        publishes: usize,
    }

    impl Provide for Fake {
        fn capacity(&self) -> usize {
            self.capacity
        }
        unsafe fn provide(&mut self, bid: u16, addr: *mut u8, len: u32) {
            self.pending.push((bid, addr as usize, len));
        }
        fn publish(&mut self) {
            self.publishes += 1;
            self.usable.extend(self.pending.drain(..));
        }
        fn group(&self) -> u16 {
            7
        }
    }

    fn pool(count: usize, capacity: usize) -> BufPool<Fake> {
        let fake = Fake {
            capacity,
            ..Fake::default()
        };
        BufPool::new(fake, count, 64)
    }

    /// Plays the backend: fills the next usable buffer with `data` and completes it.
    fn receive(pool: &mut BufPool<Fake>, data: &[u8]) -> Bytes {
        let (bid, addr, len) = pool.ring.usable.pop_front().expect("a usable buffer");
        assert!(data.len() <= len as usize);
        // SAFETY: the pool handed this buffer over and nothing else touches it until `take`.
        unsafe { std::ptr::copy_nonoverlapping(data.as_ptr(), addr as *mut u8, data.len()) };
        pool.take(bid, data.len())
            .expect("a buffer the pool provided")
    }

    #[test]
    fn starts_with_its_buffers_published() {
        let p = pool(4, 16);
        assert_eq!(p.ring.usable.len(), 4);
        assert!(p.ring.pending.is_empty());
        assert_eq!(p.group(), 7);
        let s = p.stats();
        assert_eq!((s.buffers, s.in_ring, s.lent, s.buffer_size), (4, 4, 0, 64));
    }

    #[test]
    fn a_view_holds_its_buffer_until_dropped() {
        let mut p = pool(2, 16);
        let view = receive(&mut p, b"hello");
        assert_eq!(&view[..], b"hello");
        assert_eq!((p.in_ring(), p.lent()), (1, 1));
        let kept = view.slice(1..3);
        drop(view);
        assert_eq!(p.reclaim(), 0, "a slice still holds the buffer");
        drop(kept);
        assert_eq!(p.reclaim(), 1);
        assert_eq!((p.in_ring(), p.lent()), (2, 0));
        assert_eq!(
            p.ring.usable.len(),
            2,
            "reclaimed buffers are published again"
        );
    }

    #[test]
    fn refuses_completions_it_did_not_provide() {
        let mut p = pool(2, 16);
        assert!(p.take(9, 1).is_none(), "an id past the pool");
        assert!(p.take(0, 65).is_none(), "longer than a buffer");
        let (bid, _, _) = p.ring.usable.pop_front().unwrap();
        let view = p.take(bid, 3).unwrap();
        assert!(p.take(bid, 3).is_none(), "a buffer already lent");
        drop(view);
    }

    #[test]
    fn an_unfilled_buffer_goes_straight_back() {
        let mut p = pool(1, 16);
        let (bid, _, _) = p.ring.usable.pop_front().unwrap();
        p.put_back_unused(bid);
        assert_eq!(p.in_ring(), 1);
        assert_eq!(p.ring.usable.len(), 1);
    }

    #[test]
    fn grows_to_capacity_then_shrinks_back_and_reuses_ids() {
        let mut p = pool(2, 4);
        let a = receive(&mut p, b"a");
        let b = receive(&mut p, b"b");
        assert_eq!(p.in_ring(), 0);
        assert!(p.can_grow());
        assert_eq!(p.grow(8), 2, "bounded by the backend's capacity");
        p.publish();
        assert!(!p.can_grow());
        let c = receive(&mut p, b"c");
        drop((a, b, c));
        // One buffer is still in the ring; two come back to fill it to its base of two,
        // the third waits on standby.
        assert_eq!(p.reclaim(), 3);
        assert_eq!(p.in_ring(), 2);
        assert!(p.has_standby());
        assert_eq!(p.shrink(false), 0, "not yet allowed to shrink");
        assert_eq!(p.shrink(true), 2, "the standby buffers are freed");
        assert_eq!(p.stats().buffers, 2);
        assert!(p.can_grow());
        let before = p.slots.len();
        assert_eq!(p.grow(2), 2);
        assert_eq!(p.slots.len(), before, "freed ids are reused");
    }

    #[test]
    fn standby_refills_a_ring_running_low() {
        let mut p = pool(2, 4);
        let a = receive(&mut p, b"a");
        let b = receive(&mut p, b"b");
        p.grow(2);
        p.publish();
        drop((a, b));
        p.reclaim();
        assert_eq!(p.in_ring(), 2);
        assert!(p.has_standby());
        let _c = receive(&mut p, b"c");
        let _d = receive(&mut p, b"d");
        assert_eq!(p.in_ring(), 0);
        assert_eq!(p.shrink(false), 0);
        assert_eq!(p.in_ring(), 2, "standby buffers topped the ring back up");
        assert_eq!(p.ring.usable.len(), 2);
    }
}
