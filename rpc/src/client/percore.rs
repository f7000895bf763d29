//! Counters kept per core, so that the governed call path does no read-modify-write on
//! memory other cores write: each core of a client's runtime counts in a slot of its own,
//! which only that core's thread writes (with plain loads and stores), and every other
//! thread counts in one shared slot (with atomic read-modify-writes). Readers, which are
//! rare (a failure deciding whether a breaker opens, a retry asking the budget, a load
//! report), add the slots up.
//!
//! The rule that makes the plain writes sound as counters (no update lost) is that a
//! core's slot is written by that core's thread only: [`Here`] is how a thread names the
//! slot it may write, and a slot named by another thread's `Here` is only ever read.

use std::sync::atomic::{AtomicU64, Ordering};

use netpoll::RuntimeHandle;

/// The slot this thread counts in: its own core's, or the shared one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Here {
    /// 0 is the shared slot; core `c` of the runtime counts in slot `c + 1`.
    index: usize,
}

impl Here {
    /// The slot of threads that run no core of the runtime.
    pub(crate) const SHARED: Here = Here { index: 0 };

    /// This thread's slot among `rt`'s cores.
    pub(crate) fn of(rt: &RuntimeHandle) -> Here {
        Here {
            index: rt.local_core().map_or(0, |c| c + 1),
        }
    }

    /// The slot of core `core`, for a thread that is that core's.
    #[cfg(test)]
    pub(crate) fn core(core: usize) -> Here {
        Here { index: core + 1 }
    }

    /// Whether this is a core's own slot (written with plain stores).
    fn owned(self) -> bool {
        self.index != 0
    }
}

/// One slot, on a cache line of its own.
#[repr(align(64))]
#[derive(Debug, Default)]
struct Padded<T>(T);

/// A `T` (a set of atomic counters) per core of a runtime, and one for other threads.
#[derive(Debug)]
pub(crate) struct PerCore<T> {
    slots: Box<[Padded<T>]>,
}

impl<T: Default> PerCore<T> {
    /// Slots for a runtime of `cores` cores.
    pub(crate) fn new(cores: usize) -> Self {
        PerCore {
            slots: (0..=cores).map(|_| Padded::default()).collect(),
        }
    }
}

impl<T> PerCore<T> {
    /// The slot `here` writes, and how: a [`Counter`] view that uses plain stores in a
    /// core's own slot and read-modify-writes in the shared one.
    pub(crate) fn at(&self, here: Here) -> Slot<'_, T> {
        match self.slots.get(here.index) {
            Some(s) => Slot {
                value: &s.0,
                owned: here.owned(),
            },
            // A runtime with more cores than the slots were made for (not built so):
            // the shared slot, which any thread may write.
            None => Slot {
                value: &self.slots[0].0,
                owned: false,
            },
        }
    }

    /// Every slot, to read (the shared one first).
    pub(crate) fn all(&self) -> impl Iterator<Item = &T> {
        self.slots.iter().map(|s| &s.0)
    }
}

/// One slot of a [`PerCore`], as the thread that may write it sees it.
pub(crate) struct Slot<'a, T> {
    /// The slot's counters.
    pub(crate) value: &'a T,
    owned: bool,
}

impl<T> Slot<'_, T> {
    /// Adds `d` (wrapping) to counter `c` of this slot.
    pub(crate) fn add(&self, c: &AtomicU64, d: u64) {
        if self.owned {
            c.store(c.load(Ordering::Relaxed).wrapping_add(d), Ordering::Relaxed);
        } else {
            c.fetch_add(d, Ordering::Relaxed);
        }
    }

    /// Subtracts `d` (wrapping) from counter `c` of this slot.
    pub(crate) fn sub(&self, c: &AtomicU64, d: u64) {
        self.add(c, d.wrapping_neg());
    }

    /// Sets counter `c` of this slot to `v` if it still holds `seen` (always, in a core's
    /// own slot); whether it did.
    pub(crate) fn replace(&self, c: &AtomicU64, seen: u64, v: u64) -> bool {
        if self.owned {
            c.store(v, Ordering::Relaxed);
            true
        } else {
            c.compare_exchange(seen, v, Ordering::Relaxed, Ordering::Relaxed)
                .is_ok()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Default)]
    struct C {
        n: AtomicU64,
    }

    #[test]
    fn slots_count_apart_and_sum() {
        let p: PerCore<C> = PerCore::new(2);
        let a = p.at(Here::core(0));
        a.add(&a.value.n, 3);
        a.sub(&a.value.n, 1);
        let s = p.at(Here::SHARED);
        s.add(&s.value.n, 5);
        // Out of range: the shared slot.
        let far = p.at(Here::core(7));
        far.add(&far.value.n, 1);
        let total: u64 = p.all().map(|c| c.n.load(Ordering::Relaxed)).sum();
        assert_eq!(total, 8);
        assert_eq!(p.at(Here::core(0)).value.n.load(Ordering::Relaxed), 2);
    }
}
