//! [`SeqTable`]: the calls a connection has in flight, by sequence id.
//!
//! Sequence ids are handed out in order, and replies mostly come back in order, so the
//! ids in flight are nearly a contiguous run. An open-addressed table indexed by the id's
//! low bits (linear probing, no hashing) then finds each call at its first probe: a few
//! instructions where a general hash map spent about a hundred per insert and per
//! removal. Ids far apart (a call stuck behind a million others) only collide and probe
//! further; lookups stay correct whatever the ids.

/// Values by `i32` key; at most half full, so every probe sequence meets an empty slot.
pub(crate) struct SeqTable<V> {
    slots: Vec<Option<(i32, V)>>,
    len: usize,
    /// Removals since the table last changed size.
    removed: usize,
    /// Entries not in their home slot. While there are none (ids in flight span less
    /// than the table, the common case) a removal has nothing to shift.
    displaced: usize,
}

/// The smallest table made.
const MIN_SLOTS: usize = 16;

/// A table this size or smaller is never shrunk.
const KEEP_SLOTS: usize = 256;

impl<V> Default for SeqTable<V> {
    fn default() -> Self {
        SeqTable {
            slots: Vec::new(),
            len: 0,
            removed: 0,
            displaced: 0,
        }
    }
}

impl<V> SeqTable<V> {
    fn mask(&self) -> usize {
        self.slots.len().wrapping_sub(1)
    }

    fn home(&self, key: i32) -> usize {
        key as u32 as usize & self.mask()
    }

    /// The slot of `key`, if it is in the table.
    fn find(&self, key: i32) -> Option<usize> {
        if self.len == 0 {
            return None;
        }
        let mask = self.mask();
        let mut i = self.home(key);
        loop {
            match &self.slots[i] {
                None => return None,
                Some((k, _)) if *k == key => return Some(i),
                Some(_) => i = (i + 1) & mask,
            }
        }
    }

    /// Entries in the table.
    pub(crate) fn len(&self) -> usize {
        self.len
    }

    /// Whether the table is empty.
    pub(crate) fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Whether `key` is in the table.
    pub(crate) fn contains_key(&self, key: i32) -> bool {
        self.find(key).is_some()
    }

    /// The value of `key`.
    pub(crate) fn get(&self, key: i32) -> Option<&V> {
        let i = self.find(key)?;
        self.slots[i].as_ref().map(|(_, v)| v)
    }

    /// Puts `value` under `key`, which must not be in the table already (the caller
    /// checks with [`contains_key`](Self::contains_key)); if it is, the older value stays
    /// reachable only through [`drain`](Self::drain).
    pub(crate) fn insert(&mut self, key: i32, value: V) {
        if (self.len + 1) * 2 > self.slots.len() {
            self.resize((self.slots.len() * 2).max(MIN_SLOTS));
        }
        let mask = self.mask();
        let home = self.home(key);
        let mut i = home;
        while self.slots[i].is_some() {
            i = (i + 1) & mask;
        }
        self.displaced += usize::from(i != home);
        self.slots[i] = Some((key, value));
        self.len += 1;
    }

    /// Takes `key`'s value out of the table.
    pub(crate) fn remove(&mut self, key: i32) -> Option<V> {
        let mut hole = self.find(key)?;
        let (k, value) = self.slots[hole].take()?;
        self.len -= 1;
        self.displaced -= usize::from(self.home(k) != hole);
        // Backward-shift deletion: entries after the hole that may sit in it (the hole
        // lies between their home and where they are) move up, so that no probe sequence
        // is cut short by the new empty slot. With no entry out of its home slot, none
        // can.
        let mask = self.mask();
        let mut j = hole;
        while self.displaced > 0 {
            j = (j + 1) & mask;
            let Some((k, _)) = &self.slots[j] else { break };
            let home = self.home(*k);
            if j.wrapping_sub(home) & mask >= j.wrapping_sub(hole) & mask {
                // It leaves a slot away from its home, for one that may be its home.
                self.displaced -= 1;
                self.displaced += usize::from(hole != home);
                self.slots[hole] = self.slots[j].take();
                hole = j;
            }
        }
        // Memory follows the calls in flight: a burst's table is given back once it has
        // been mostly empty for a while (not at the first dip, or a load that swings
        // between few and many calls would resize it on every swing).
        self.removed += 1;
        if self.slots.len() > KEEP_SLOTS
            && self.len * 8 < self.slots.len()
            && self.removed >= self.slots.len() * 4
        {
            self.resize(self.slots.len() / 2);
        }
        Some(value)
    }

    /// Takes every entry out (in no particular order).
    pub(crate) fn drain(&mut self) -> impl Iterator<Item = (i32, V)> {
        self.len = 0;
        self.removed = 0;
        self.displaced = 0;
        std::mem::take(&mut self.slots).into_iter().flatten()
    }

    fn resize(&mut self, slots: usize) {
        self.removed = 0;
        self.displaced = 0;
        let old = std::mem::replace(&mut self.slots, (0..slots).map(|_| None).collect());
        let mask = slots - 1;
        for (k, v) in old.into_iter().flatten() {
            let home = k as u32 as usize & mask;
            let mut i = home;
            while self.slots[i].is_some() {
                i = (i + 1) & mask;
            }
            self.displaced += usize::from(i != home);
            self.slots[i] = Some((k, v));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    /// A deterministic xorshift, for a long random mix of operations.
    fn rng(state: &mut u64) -> u64 {
        *state ^= *state << 13;
        *state ^= *state >> 7;
        *state ^= *state << 17;
        *state
    }

    #[test]
    fn it_agrees_with_a_hash_map_under_a_random_mix() {
        let mut t = SeqTable::default();
        let mut m = HashMap::new();
        let mut s = 0x9e37_79b9_7f4a_7c15u64;
        let mut next = 0i32;
        for round in 0..200_000 {
            let r = rng(&mut s);
            // Mostly sequential ids, some far apart, some colliding on the low bits.
            let key = match r % 10 {
                0 => (r >> 8) as i32,
                1 => next.wrapping_add(((r >> 8) as i32 & 7) << 10),
                _ => next,
            };
            if r % 3 != 0 || m.is_empty() {
                if let std::collections::hash_map::Entry::Vacant(e) = m.entry(key) {
                    assert!(!t.contains_key(key));
                    t.insert(key, round);
                    e.insert(round);
                }
                next = next.wrapping_add(1);
            } else {
                // Remove the oldest-looking or a random present key.
                let k = *m.keys().nth((r >> 20) as usize % m.len()).unwrap();
                assert_eq!(t.remove(k), m.remove(&k));
                assert_eq!(t.remove(k), None);
            }
            if round % 997 == 0 {
                for (k, v) in &m {
                    assert_eq!(t.get(*k), Some(v));
                }
            }
            assert_eq!(t.len(), m.len());
            if round % 101 == 0 {
                let displaced = t
                    .slots
                    .iter()
                    .enumerate()
                    .filter(|(i, e)| e.as_ref().is_some_and(|(k, _)| t.home(*k) != *i))
                    .count();
                assert_eq!(t.displaced, displaced);
            }
        }
        let mut drained: Vec<_> = t.drain().collect();
        drained.sort();
        let mut want: Vec<_> = m.into_iter().collect();
        want.sort();
        assert_eq!(drained, want);
        assert!(t.is_empty());
    }

    #[test]
    fn a_burst_gives_its_memory_back() {
        let mut t = SeqTable::default();
        for k in 0..100_000 {
            t.insert(k, ());
        }
        for k in 0..100_000 {
            assert_eq!(t.remove(k), Some(()));
        }
        // Calls come and go, few at a time: the table shrinks to its floor.
        for k in 100_000..3_000_000 {
            t.insert(k, ());
            assert_eq!(t.remove(k), Some(()));
        }
        assert!(t.slots.len() <= KEEP_SLOTS, "{}", t.slots.len());
    }
}
