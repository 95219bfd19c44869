//! Forgetting what the kernel no longer has: processes whose free never came (lost
//! events, lazily freed tasks, frees no event could name), checked against the kernel's
//! view the caller reads from /proc.

use super::{Key, Notice, ProcTable};

impl ProcTable {
    /// Drops every process for which `exists` is false, with its statistics; returns how
    /// many. After lost events (a missed free would otherwise stay forever) the caller
    /// checks each against the kernel's view.
    pub fn prune(&mut self, exists: impl Fn(&Key) -> bool) -> usize {
        let before = self.procs.len();
        self.procs.retain(|k| exists(k));
        let procs = &self.procs;
        self.stats.retain(|k, _| procs.contains(k));
        self.parents.retain(|k| procs.contains(k));
        before - self.procs.len()
    }

    /// Removes dead processes that died at least `grace_ns` ago and that the kernel has
    /// released (`released`: reaped, gone from /proc) but whose free never came: the
    /// kernel frees a task from an RCU callback, which it may defer for a long time
    /// (lazy RCU; seen here: hundreds of tasks of a fork storm still unfreed a minute
    /// later, by bpftrace too). A zombie reported earlier gets its reaped notice now,
    /// with the time until now as an upper bound; others go silently (they may well have
    /// been reaped at once).
    pub fn sweep_released(
        &mut self,
        now_ns: u64,
        grace_ns: u64,
        released: impl Fn(&Key) -> bool,
    ) -> Vec<Notice> {
        let mut stale: Vec<Key> = self
            .procs
            .values()
            .filter(|p| {
                p.death.is_some_and(|d| {
                    now_ns.saturating_sub(d.at_ns.unwrap_or(p.seen_ns)) >= grace_ns
                })
            })
            .map(|p| p.key)
            .filter(|k| released(k))
            .collect();
        stale.sort_unstable();
        let mut notices = Vec::new();
        for k in stale {
            if let Some(p) = self.forget(&k)
                && p.reported
            {
                notices.push(Notice::reaped(p, now_ns));
            }
        }
        notices
    }

    /// The time of the latest free that matched no process since the last call, if a
    /// zombie found at start-up is still in the table (that free may have been its).
    pub fn take_unmatched_free(&mut self) -> Option<u64> {
        let at = self.unmatched_free.take()?;
        (!self.seeded_zombies.is_empty()).then_some(at)
    }

    /// Forgets the zombies found at start-up that the kernel has released (`released`:
    /// gone from /proc), each with a reaped notice at `at_ns`. Call it with the time of
    /// frees that matched no process: the kernel frees a task after releasing it, so a
    /// zombie whose free was among them is gone from /proc by then, and was reaped by
    /// `at_ns` (an upper bound when they were several).
    pub fn release_seeded_zombies(
        &mut self,
        at_ns: u64,
        released: impl Fn(&Key) -> bool,
    ) -> Vec<Notice> {
        let (gone, kept): (Vec<Key>, Vec<Key>) = std::mem::take(&mut self.seeded_zombies)
            .into_iter()
            .filter(|k| self.procs.contains(k))
            .partition(|k| released(k));
        self.seeded_zombies = kept;
        gone.iter()
            .filter_map(|k| self.forget(k))
            .map(|p| Notice::reaped(p, at_ns))
            .collect()
    }

    /// Forgets live processes that no event has named by task address (seeded from
    /// /proc and not seen to exec or exit since; or whose leader's free came while they
    /// seemed alive) and that the kernel no longer has (`gone`): their free matched
    /// nothing, as their exit went unseen (outside a cgroup filter). Returns how many.
    pub fn sweep_unnamed(&mut self, gone: impl Fn(&Key) -> bool) -> usize {
        let stale: Vec<Key> = self
            .procs
            .values()
            .filter(|p| p.task.is_none() && p.death.is_none())
            .map(|p| p.key)
            .filter(|k| gone(k))
            .collect();
        for k in &stale {
            self.forget(k);
        }
        stale.len()
    }
}
