//! The zero-copy receive pool: a kernel-provided buffer ring (`IORING_REGISTER_PBUF_RING`)
//! whose buffers are handed to consumers as [`bytes::Bytes`] views.
//!
//! # Ownership
//!
//! Each buffer is the heap allocation of one `BytesMut` held in `slots[bid]`. A buffer is in
//! exactly one of three states:
//!
//! * **in the ring**: its address is published in the ring; the kernel may write into it
//!   at any time. Nothing in userspace reads or writes it.
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

use std::io;
use std::mem;
use std::sync::atomic::{AtomicU16, Ordering};

use bytes::{Bytes, BytesMut};
use io_uring::types::BufRingEntry;

use crate::sys::Mmap;

/// Size of one ring entry (`struct io_uring_buf`).
const ENTRY_SIZE: usize = 16;

pub(crate) struct BufPool {
    /// The ring shared with the kernel: `entries` x `struct io_uring_buf`.
    ring: Mmap,
    /// Ring capacity, a power of two; also the most buffers the pool may grow to.
    entries: u16,
    /// Our copy of the tail (the kernel only reads it).
    tail: u16,
    /// Entries written since the last publish of `tail`.
    unpublished: bool,
    bgid: u16,
    buf_size: usize,
    /// `slots[bid]` owns buffer `bid`.
    slots: Vec<BytesMut>,
    /// `lent[bid]`: the buffer is lent out (not in the ring).
    lent_flag: Vec<bool>,
    /// Buffer ids lent out and not yet reclaimed.
    lent: Vec<u16>,
    /// Buffers currently published to the kernel.
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

impl BufPool {
    /// Creates a pool of `count` buffers of `buf_size` bytes, able to grow to `max` buffers,
    /// and registers it with `submitter` as buffer group `bgid`.
    pub(crate) fn new(
        submitter: &io_uring::Submitter<'_>,
        bgid: u16,
        count: usize,
        max: usize,
        buf_size: usize,
    ) -> io::Result<BufPool> {
        let max = max.clamp(count.max(1), 32768);
        let entries = max.next_power_of_two().min(32768);
        let ring = Mmap::anon(entries * ENTRY_SIZE)?;
        // SAFETY: `ring` is a live, page-aligned mapping of `entries` entries that this pool
        // keeps alive until it is dropped; the owner (`Core`) drops the io_uring instance,
        // which unregisters the group, before it drops the pool.
        unsafe {
            submitter.register_buf_ring_with_flags(
                ring.as_ptr() as u64,
                entries as u16,
                bgid,
                0,
            )?;
        }
        let mut pool = BufPool {
            ring,
            entries: entries as u16,
            tail: 0,
            unpublished: false,
            bgid,
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
        Ok(pool)
    }

    pub(crate) fn group(&self) -> u16 {
        self.bgid
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
        let room = self.entries as usize - self.slots.len() + self.freed.len();
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
        self.slots.len() < self.entries as usize
            || !self.freed.is_empty()
            || !self.standby.is_empty()
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
        let addr = slot.as_mut_ptr() as u64;
        let idx = (self.tail & (self.entries - 1)) as usize;
        // SAFETY: `idx < entries`, so the entry lies inside the mapping. The kernel only reads
        // entries between its head and our published tail, and this index is at or past the
        // published tail, so nobody else accesses it now.
        let entry = unsafe { &mut *(self.ring.as_ptr() as *mut BufRingEntry).add(idx) };
        entry.set_addr(addr);
        entry.set_len(self.buf_size as u32);
        entry.set_bid(bid);
        self.tail = self.tail.wrapping_add(1);
        self.in_ring += 1;
        self.unpublished = true;
    }

    /// Makes every entry written so far visible to the kernel.
    pub(crate) fn publish(&mut self) {
        if !self.unpublished {
            return;
        }
        self.unpublished = false;
        // SAFETY: the tail lives inside entry 0 of the live mapping and is 2-byte aligned;
        // the kernel reads it concurrently, so it is accessed atomically. The Release store
        // orders the entry writes above before the kernel can observe the new tail.
        unsafe {
            let tail = BufRingEntry::tail(self.ring.as_ptr() as *const BufRingEntry);
            (*(tail as *const AtomicU16)).store(self.tail, Ordering::Release);
        }
    }
}
