//! Task addresses freed lately, so that an event about a task that comes after its free
//! (lost events, or a stream out of order) cannot bring the process back. Bounded in time
//! and size: a free is remembered for [`KEEP_NS`] of event time, at most [`CAP`] at once.
//! Only frees the table could not pair with a forked process are kept (threads', and
//! processes no fork named): a fork storm's frees cost nothing here.

use std::collections::VecDeque;

use rustc_hash::FxHashMap;

/// How long a free is remembered (boot-clock ns of the events).
pub const KEEP_NS: u64 = 2_000_000_000;
/// Frees remembered at most.
pub const CAP: usize = 16_384;

#[derive(Debug, Default)]
pub(super) struct Tombstones {
    at: FxHashMap<u64, u64>,
    order: VecDeque<(u64, u64)>,
}

impl Tombstones {
    /// Gives back the room a storm's peak left (see `model::spare`).
    pub fn give_back_spare(&mut self) {
        crate::model::spare::map(&mut self.at);
        crate::model::spare::deque(&mut self.order);
    }

    /// Remembers that the task at `task` was freed at `ts`.
    pub fn add(&mut self, task: u64, ts: u64) {
        if task == 0 {
            return;
        }
        self.at.insert(task, ts);
        self.order.push_back((ts, task));
        while let Some(&(t, old)) = self.order.front() {
            if self.order.len() <= CAP && t.saturating_add(KEEP_NS) >= ts {
                break;
            }
            self.order.pop_front();
            if self.at.get(&old) == Some(&t) {
                self.at.remove(&old);
            }
        }
    }

    /// Whether the task at `task` was freed at or after `ts` (an event stamped `ts` about
    /// it comes too late).
    pub fn freed_since(&self, task: u64, ts: u64) -> bool {
        task != 0 && !self.at.is_empty() && self.at.get(&task).is_some_and(|&f| f >= ts)
    }

    #[cfg(test)]
    pub fn len(&self) -> usize {
        self.at.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frees_are_kept_for_a_while_and_a_reused_address_is_new() {
        let mut t = Tombstones::default();
        t.add(0xa0, 100);
        assert!(t.freed_since(0xa0, 50), "an event before the free is late");
        assert!(t.freed_since(0xa0, 100));
        assert!(
            !t.freed_since(0xa0, 101),
            "a task at a reused address is another"
        );
        assert!(!t.freed_since(0xb0, 50));
        // Expired by the events' time.
        t.add(0xb0, 100 + KEEP_NS + 1);
        assert!(!t.freed_since(0xa0, 50));
        assert_eq!(t.len(), 1);
        // Bounded in size.
        for i in 0..(CAP as u64 + 10) {
            t.add(0x1000 + i, 200 + KEEP_NS);
        }
        assert_eq!(t.len(), CAP);
    }
}
