//! Giving back a collection's spare room. A map sized for a fork storm's peak keeps that
//! capacity after its entries go (Rust's maps never shrink by themselves), and an agent
//! that runs for weeks would hold every peak it saw: the per-process maps call these
//! after they forget what has gone.

use std::{
    collections::{HashMap, HashSet, VecDeque},
    hash::{BuildHasher, Hash},
};

/// Capacity below which nothing is given back (not worth the rehash).
const KEEP: usize = 1024;

/// Whether a collection of `len` entries in `capacity` slots holds much more room than it
/// needs: then it keeps twice its entries.
fn roomy(len: usize, capacity: usize) -> bool {
    capacity > KEEP && len.saturating_mul(4) < capacity
}

pub fn map<K: Eq + Hash, V, S: BuildHasher>(m: &mut HashMap<K, V, S>) {
    if roomy(m.len(), m.capacity()) {
        m.shrink_to(m.len() * 2);
    }
}

pub fn set<K: Eq + Hash, S: BuildHasher>(m: &mut HashSet<K, S>) {
    if roomy(m.len(), m.capacity()) {
        m.shrink_to(m.len() * 2);
    }
}

pub fn deque<T>(q: &mut VecDeque<T>) {
    if roomy(q.len(), q.capacity()) {
        q.shrink_to(q.len() * 2);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_peak_is_given_back_and_a_steady_map_kept() {
        let mut m: HashMap<u32, u64> = (0..100_000).map(|i| (i, 0)).collect();
        m.retain(|k, _| *k < 100);
        map(&mut m);
        assert!(m.capacity() < 1024, "{}", m.capacity());
        // Small, or a quarter full or more: left alone.
        assert!(!roomy(10, 1000) && !roomy(1000, 3584) && roomy(100, 3584));
        let mut q: VecDeque<u8> = (0..50_000).map(|_| 0).collect();
        q.truncate(10);
        deque(&mut q);
        assert!(q.capacity() < 1024);
    }
}
