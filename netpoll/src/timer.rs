//! Per-core timers: a binary heap of deadlines with lazy cancellation.
//!
//! Timers fire in deadline order; equal deadlines fire in the order they were set.
//! Cancelling is O(1) amortised: the entry is marked dead and skipped when it reaches the
//! top, and once dead entries outnumber live ones the heap is rebuilt without them, so
//! memory follows the live timers, not the cancelled ones.

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::time::Instant;

use slab::Slab;

/// Identifies a timer set on a core, for cancelling it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct TimerId {
    key: u32,
    gen: u64,
}

/// Below this many entries the heap is not worth compacting.
const COMPACT_MIN: usize = 1024;

pub(crate) struct Timers<T> {
    heap: BinaryHeap<Reverse<(Instant, u64, u32, u64)>>,
    live: Slab<(u64, T)>,
    seq: u64,
    gen: u64,
}

impl<T> Timers<T> {
    pub(crate) fn new() -> Self {
        Timers {
            heap: BinaryHeap::with_capacity(1024),
            live: Slab::with_capacity(1024),
            seq: 0,
            gen: 0,
        }
    }

    pub(crate) fn insert(&mut self, deadline: Instant, target: T) -> TimerId {
        self.gen = self.gen.wrapping_add(1);
        let key = self.live.insert((self.gen, target)) as u32;
        self.seq += 1;
        self.heap.push(Reverse((deadline, self.seq, key, self.gen)));
        TimerId { key, gen: self.gen }
    }

    /// Cancels a timer; returns its target if it had not fired yet.
    pub(crate) fn cancel(&mut self, id: TimerId) -> Option<T> {
        let target = match self.live.get(id.key as usize) {
            Some((gen, _)) if *gen == id.gen => self.live.remove(id.key as usize).1,
            _ => return None,
        };
        if self.heap.len() > COMPACT_MIN && self.heap.len() > 2 * self.live.len() {
            self.compact();
        }
        Some(target)
    }

    /// Drops every dead entry and gives the memory back. Linear in the heap, and run only
    /// when at least half of it is dead, so O(1) amortised per cancel.
    fn compact(&mut self) {
        let live = &self.live;
        self.heap.retain(
            |Reverse((_, _, key, gen))| matches!(live.get(*key as usize), Some((g, _)) if g == gen),
        );
        self.heap.shrink_to(self.heap.len().max(COMPACT_MIN) * 2);
        self.live.shrink_to_fit();
    }

    /// Heap entries (live and dead), for tests.
    #[cfg(test)]
    fn heap_len(&self) -> usize {
        self.heap.len()
    }

    /// The earliest live deadline.
    pub(crate) fn next_deadline(&mut self) -> Option<Instant> {
        self.discard_dead();
        self.heap.peek().map(|Reverse((d, _, _, _))| *d)
    }

    /// Removes and returns the earliest timer due at `now`.
    pub(crate) fn pop_expired(&mut self, now: Instant) -> Option<T> {
        self.discard_dead();
        match self.heap.peek() {
            Some(Reverse((d, _, _, _))) if *d <= now => {
                let Reverse((_, _, key, _)) = self.heap.pop()?;
                Some(self.live.remove(key as usize).1)
            }
            _ => None,
        }
    }

    pub(crate) fn len(&self) -> usize {
        self.live.len()
    }

    fn discard_dead(&mut self) {
        while let Some(Reverse((_, _, key, gen))) = self.heap.peek() {
            // Slab keys are reused after a cancel, so an entry is live only while its key
            // still holds the timer of the same generation.
            if matches!(self.live.get(*key as usize), Some((g, _)) if g == gen) {
                break;
            }
            self.heap.pop();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn fires_in_deadline_then_insertion_order() {
        let t0 = Instant::now();
        let mut t = Timers::new();
        t.insert(t0 + Duration::from_millis(3), "c");
        t.insert(t0 + Duration::from_millis(1), "a");
        t.insert(t0 + Duration::from_millis(1), "b");
        let mut got = Vec::new();
        while let Some(x) = t.pop_expired(t0 + Duration::from_millis(5)) {
            got.push(x);
        }
        assert_eq!(got, ["a", "b", "c"]);
    }

    /// Finding 8 of the soundness review: cancelled timers stayed in the heap until their
    /// deadline, so a core making 2M calls/s with 5 s timeouts held 10M dead entries.
    #[test]
    fn ten_million_cancelled_timers_leave_nothing_behind() {
        let t0 = Instant::now();
        let mut t = Timers::new();
        for i in 0..10_000_000u64 {
            let id = t.insert(t0 + Duration::from_secs(5), i);
            assert_eq!(t.cancel(id), Some(i));
        }
        assert_eq!(t.len(), 0);
        assert!(
            t.heap_len() <= 2 * COMPACT_MIN,
            "heap holds {}",
            t.heap_len()
        );
        // Interleaved with live timers, the live ones still fire in order.
        let keep = t.insert(t0 + Duration::from_millis(1), 1);
        for i in 0..100_000u64 {
            let id = t.insert(t0 + Duration::from_secs(5), i);
            t.cancel(id);
        }
        assert!(t.heap_len() <= 2 * COMPACT_MIN);
        assert_eq!(t.pop_expired(t0 + Duration::from_millis(2)), Some(1));
        assert_eq!(t.cancel(keep), None);
    }

    #[test]
    fn cancelled_key_reuse_does_not_fire_early() {
        let t0 = Instant::now();
        let mut t = Timers::new();
        let early = t.insert(t0 + Duration::from_millis(1), 1);
        assert_eq!(t.cancel(early), Some(1));
        assert_eq!(t.cancel(early), None);
        t.insert(t0 + Duration::from_millis(10), 2);
        assert_eq!(t.pop_expired(t0 + Duration::from_millis(2)), None);
        assert_eq!(t.next_deadline(), Some(t0 + Duration::from_millis(10)));
        assert_eq!(t.pop_expired(t0 + Duration::from_millis(10)), Some(2));
        assert_eq!(t.len(), 0);
    }
}
