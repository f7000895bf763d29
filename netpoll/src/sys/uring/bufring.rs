//! io_uring's side of the receive pool: a kernel-provided buffer ring
//! (`IORING_REGISTER_PBUF_RING`) that [`crate::sys::pool::BufPool`] hands its buffers to.

use std::io;
use std::sync::atomic::{AtomicU16, Ordering};

use io_uring::types::BufRingEntry;

use crate::sys::pool::Provide;
use crate::sys::Mmap;

/// Size of one ring entry (`struct io_uring_buf`).
const ENTRY_SIZE: usize = 16;

/// A buffer ring registered with one io_uring instance as one buffer group.
pub(crate) struct BufRing {
    /// The ring shared with the kernel: `entries` x `struct io_uring_buf`.
    ring: Mmap,
    /// Ring capacity, a power of two.
    entries: u16,
    /// Our copy of the tail (the kernel only reads it).
    tail: u16,
    bgid: u16,
}

impl BufRing {
    /// Registers a ring able to hold `max` buffers (rounded up to a power of two, at most
    /// 32768) with `submitter` as buffer group `bgid`.
    pub(crate) fn register(
        submitter: &io_uring::Submitter<'_>,
        bgid: u16,
        max: usize,
    ) -> io::Result<BufRing> {
        let entries = max.clamp(1, 32768).next_power_of_two();
        let ring = Mmap::anon(entries * ENTRY_SIZE)?;
        // SAFETY: `ring` is a live, page-aligned mapping of `entries` entries that this ring
        // keeps alive until it is dropped; the owner (`Core`) drops the io_uring instance,
        // which unregisters the group, before it drops the pool holding this ring.
        unsafe {
            submitter.register_buf_ring_with_flags(
                ring.as_ptr() as u64,
                entries as u16,
                bgid,
                0,
            )?;
        }
        Ok(BufRing {
            ring,
            entries: entries as u16,
            tail: 0,
            bgid,
        })
    }
}

impl Provide for BufRing {
    fn capacity(&self) -> usize {
        self.entries as usize
    }

    unsafe fn provide(&mut self, bid: u16, addr: *mut u8, len: u32) {
        let idx = (self.tail & (self.entries - 1)) as usize;
        // SAFETY: `idx < entries`, so the entry lies inside the mapping. The kernel only reads
        // entries between its head and our published tail, and this index is at or past the
        // published tail, so nobody else accesses it now. The pool holds no more buffers
        // than entries, so the tail never laps a buffer the kernel has not consumed.
        let entry = unsafe { &mut *(self.ring.as_ptr() as *mut BufRingEntry).add(idx) };
        entry.set_addr(addr as u64);
        entry.set_len(len);
        entry.set_bid(bid);
        self.tail = self.tail.wrapping_add(1);
    }

    fn publish(&mut self) {
        // SAFETY: the tail lives inside entry 0 of the live mapping and is 2-byte aligned;
        // the kernel reads it concurrently, so it is accessed atomically. The Release store
        // orders the entry writes above before the kernel can observe the new tail.
        unsafe {
            let tail = BufRingEntry::tail(self.ring.as_ptr() as *const BufRingEntry);
            (*(tail as *const AtomicU16)).store(self.tail, Ordering::Release);
        }
    }

    fn group(&self) -> u16 {
        self.bgid
    }
}
