//! Per-core timers: deadlines in a few FIFO lanes and a binary heap, with lazy
//! cancellation.
//!
//! Timers fire in deadline order; equal deadlines fire in the order they were set.
//! A timer whose deadline is no earlier than the last one of a FIFO lane joins that lane,
//! in O(1): most do, as a core's timers are mostly timeouts of a few lengths (calls, idle
//! connections) each set one after another. The others go to the heap. Cancelling is O(1) amortised: the entry is marked
//! dead and skipped when it reaches the front, and once dead entries outnumber live ones
//! both are rebuilt without them, so memory follows the live timers, not the cancelled
//! ones.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, VecDeque};
use std::time::Instant;

use slab::Slab;

/// Identifies a timer set on a core, for cancelling it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct TimerId {
    key: u32,
    gen: u64,
}

/// Below this many entries the lanes are not worth compacting.
const COMPACT_MIN: usize = 1024;

/// A timer's place: its deadline, the order it was set in, its slab key and generation.
type Entry = (Instant, u64, u32, u64);

/// FIFO lanes at most: one per timeout length in use, about.
const LANES: usize = 4;

pub(crate) struct Timers<T> {
    /// Lanes of entries in (deadline, order) order, each no earlier than the one before.
    lanes: Vec<VecDeque<Entry>>,
    /// Entries that fit no lane.
    heap: BinaryHeap<Reverse<Entry>>,
    live: Slab<(u64, T)>,
    seq: u64,
    gen: u64,
}

impl<T> Timers<T> {
    pub(crate) fn new() -> Self {
        Timers {
            lanes: Vec::with_capacity(LANES),
            heap: BinaryHeap::new(),
            live: Slab::with_capacity(1024),
            seq: 0,
            gen: 0,
        }
    }

    pub(crate) fn insert(&mut self, deadline: Instant, target: T) -> TimerId {
        self.gen = self.gen.wrapping_add(1);
        let key = self.live.insert((self.gen, target)) as u32;
        self.seq += 1;
        let entry = (deadline, self.seq, key, self.gen);
        // The lane whose last deadline is the latest one not after this one (the tightest
        // fit keeps lanes for different timeout lengths apart), else an empty lane, else
        // a new lane, else the heap.
        let mut fit: Option<(usize, Option<Instant>)> = None;
        for (i, lane) in self.lanes.iter().enumerate() {
            let last = lane.back().map(|e| e.0);
            match (last, fit) {
                (Some(l), _) if l > deadline => {}
                (Some(l), Some((_, Some(f)))) if l <= f => {}
                (None, Some(_)) => {}
                _ => fit = Some((i, last)),
            }
        }
        match fit {
            Some((i, _)) => self.lanes[i].push_back(entry),
            None if self.lanes.len() < LANES => self.lanes.push(VecDeque::from([entry])),
            None => self.heap.push(Reverse(entry)),
        }
        TimerId { key, gen: self.gen }
    }

    /// Cancels a timer; returns its target if it had not fired yet.
    pub(crate) fn cancel(&mut self, id: TimerId) -> Option<T> {
        let target = match self.live.get(id.key as usize) {
            Some((gen, _)) if *gen == id.gen => self.live.remove(id.key as usize).1,
            _ => return None,
        };
        let entries = self.entries();
        if entries > COMPACT_MIN && entries > 2 * self.live.len() {
            self.compact();
        }
        Some(target)
    }

    /// Entries in both lanes, live and dead.
    fn entries(&self) -> usize {
        self.lanes.iter().map(VecDeque::len).sum::<usize>() + self.heap.len()
    }

    /// Whether `e` is still a live timer (slab keys are reused after a cancel, so an
    /// entry is live only while its key holds the timer of the same generation).
    fn is_live(live: &Slab<(u64, T)>, e: &Entry) -> bool {
        matches!(live.get(e.2 as usize), Some((g, _)) if *g == e.3)
    }

    /// Drops every dead entry and gives the memory back. Linear in the entries, and run
    /// only when at least half of them are dead, so O(1) amortised per cancel.
    fn compact(&mut self) {
        let live = &self.live;
        for lane in &mut self.lanes {
            lane.retain(|e| Self::is_live(live, e));
            lane.shrink_to(lane.len().max(COMPACT_MIN) * 2);
        }
        self.heap.retain(|Reverse(e)| Self::is_live(live, e));
        self.heap.shrink_to(self.heap.len().max(COMPACT_MIN) * 2);
        self.live.shrink_to_fit();
    }

    /// Entries (live and dead), for tests.
    #[cfg(test)]
    fn heap_len(&self) -> usize {
        self.entries()
    }

    /// The earliest live entry, and where it is: lane `Some(i)` or the heap (`None`).
    fn first(&mut self) -> Option<(Entry, Option<usize>)> {
        let live = &self.live;
        let mut best: Option<(Entry, Option<usize>)> = None;
        for (i, lane) in self.lanes.iter_mut().enumerate() {
            while let Some(e) = lane.front() {
                if Self::is_live(live, e) {
                    break;
                }
                lane.pop_front();
            }
            if let Some(e) = lane.front() {
                if best.is_none_or(|(b, _)| *e < b) {
                    best = Some((*e, Some(i)));
                }
            }
        }
        while let Some(Reverse(e)) = self.heap.peek() {
            if Self::is_live(live, e) {
                break;
            }
            self.heap.pop();
        }
        if let Some(Reverse(e)) = self.heap.peek() {
            if best.is_none_or(|(b, _)| *e < b) {
                best = Some((*e, None));
            }
        }
        best
    }

    /// The earliest live deadline.
    pub(crate) fn next_deadline(&mut self) -> Option<Instant> {
        self.first().map(|(e, _)| e.0)
    }

    /// Removes and returns the earliest timer due at `now`.
    pub(crate) fn pop_expired(&mut self, now: Instant) -> Option<T> {
        let (e, lane) = self.first()?;
        if e.0 > now {
            return None;
        }
        match lane {
            Some(i) => {
                self.lanes[i].pop_front();
            }
            None => {
                self.heap.pop();
            }
        }
        Some(self.live.remove(e.2 as usize).1)
    }

    pub(crate) fn len(&self) -> usize {
        self.live.len()
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

    /// Deadlines in order go to the FIFO lane, earlier ones to the heap: they still fire
    /// in deadline order, equal deadlines in the order they were set.
    #[test]
    fn both_lanes_fire_in_deadline_then_insertion_order() {
        let t0 = Instant::now();
        let ms = |n| t0 + Duration::from_millis(n);
        let mut t = Timers::new();
        let mut want = Vec::new();
        // A pseudo-random mix of in-order and out-of-order deadlines, with repeats.
        let mut x = 12345u64;
        for i in 0..5_000u64 {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            let d = if x % 3 == 0 { x % 50 } else { i / 10 };
            t.insert(ms(d), (d, i));
            want.push((d, i));
        }
        // Cancel every fifth.
        let mut ids = Vec::new();
        for i in 0..1_000u64 {
            ids.push((t.insert(ms(i % 700), (i % 700, 5_000 + i)), i));
        }
        for (id, i) in ids {
            if i % 5 == 0 {
                assert!(t.cancel(id).is_some());
            } else {
                want.push((i % 700, 5_000 + i));
            }
        }
        want.sort();
        let mut got = Vec::new();
        while let Some(v) = t.pop_expired(ms(1_000)) {
            got.push(v);
        }
        assert_eq!(got, want);
        assert_eq!(t.len(), 0);
        assert_eq!(t.next_deadline(), None);
    }

    /// An idle timer far ahead does not push the call timeouts set after it (earlier,
    /// but in order among themselves) into the heap: they get a lane of their own.
    #[test]
    fn timeouts_of_different_lengths_keep_to_lanes() {
        let t0 = Instant::now();
        let mut t = Timers::new();
        for i in 0..1_000u64 {
            let now = t0 + Duration::from_micros(i);
            if i % 100 == 0 {
                t.insert(now + Duration::from_secs(60), i);
            }
            t.insert(now + Duration::from_secs(1), i);
            t.insert(now + Duration::from_millis(50), i);
        }
        assert_eq!(t.heap.len(), 0, "all in lanes");
        assert_eq!(t.lanes.len(), 3);
        assert_eq!(t.next_deadline(), Some(t0 + Duration::from_millis(50)));
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
