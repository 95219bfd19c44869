//! Zombie detection on the process table: a process whose thread group has exited and
//! that its parent has not reaped for at least a minimum age, blamed on its parent.

use std::collections::BTreeMap;

use super::{Dated, Key, Notice, Proc, ProcTable, Zombie};

/// What the kernel shows of a dead process now (the caller reads /proc).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KernelState {
    /// Exited, not yet waited for.
    Zombie,
    /// Reaped: the kernel shows it no more.
    Released,
    /// Still shown, not (or no longer) a zombie: exiting, or being reaped.
    Dying,
}

impl ProcTable {
    /// Since when `p` has been dead, and how that is known, if it is a zombie: dead, not
    /// reaped, and its parent must reap it.
    fn dead_since(p: &Proc) -> Option<(u64, Dated)> {
        let d = p.death?;
        (!d.autoreap && p.reaped_ns.is_none()).then_some((d.at_ns, d.dated))
    }

    fn zombie(&self, p: &Proc, now_ns: u64, min_age_ns: u64) -> Option<Zombie> {
        let d = p.death?;
        let (since, dated) = Self::dead_since(p)?;
        let age_ns = now_ns.saturating_sub(since);
        if age_ns < min_age_ns {
            return None;
        }
        let parent_comm = p
            .parent
            .and_then(|k| self.procs.get(&k))
            .map_or_else(|| "?".into(), |pp| pp.comm.to_string());
        Some(Zombie {
            key: p.key,
            comm: p.comm.to_string(),
            ppid: p.ppid,
            parent_comm,
            death_ppid: d.ppid,
            status: d.status,
            age_ns,
            dated,
            exe: p.exe.clone(),
        })
    }

    /// Zombies at least `min_age_ns` old, grouped by parent (ppid order), oldest first
    /// within a parent.
    pub fn zombies(&self, now_ns: u64, min_age_ns: u64) -> Vec<Zombie> {
        let mut z: Vec<Zombie> = self
            .procs
            .values()
            .filter_map(|p| self.zombie(p, now_ns, min_age_ns))
            .collect();
        z.sort_by(|a, b| {
            a.ppid
                .cmp(&b.ppid)
                .then(b.age_ns.cmp(&a.age_ns))
                .then(a.key.cmp(&b.key))
        });
        z
    }

    /// Zombies that reached `min_age_ns` since the last call and that the kernel shows as
    /// zombies (`state`: a reaped task is only freed an RCU grace period later, lazily
    /// even later); each is returned once. A candidate the kernel has released was
    /// reaped unseen, by now: it is marked so (a notice if someone wants it), so that it
    /// is asked about once, not at every call until its free.
    pub fn new_zombies(
        &mut self,
        now_ns: u64,
        min_age_ns: u64,
        state: impl Fn(&Key) -> KernelState,
        notices: &mut Vec<Notice>,
    ) -> Vec<Zombie> {
        let mut candidates: Vec<Key> = self
            .procs
            .values()
            .filter(|p| {
                !p.reported
                    && Self::dead_since(p)
                        .is_some_and(|(since, _)| now_ns.saturating_sub(since) >= min_age_ns)
            })
            .map(|p| p.key)
            .collect();
        candidates.sort_unstable();
        let mut fresh = Vec::new();
        for key in candidates {
            match state(&key) {
                KernelState::Zombie => {
                    if let Some(p) = self.procs.get_mut(&key) {
                        p.reported = true;
                    }
                    fresh.extend(
                        self.procs
                            .get(&key)
                            .and_then(|p| self.zombie(p, now_ns, min_age_ns)),
                    );
                }
                KernelState::Released => self.reaped(&key, now_ns, notices),
                KernelState::Dying => {}
            }
        }
        fresh
    }

    /// How many zombies (at least `min_age_ns` old) each parent holds, by parent pid: the
    /// figure `top` shows per process.
    pub fn zombies_per_parent(&self, now_ns: u64, min_age_ns: u64) -> BTreeMap<u32, usize> {
        let mut out = BTreeMap::new();
        for z in self.zombies(now_ns, min_age_ns) {
            *out.entry(z.ppid).or_insert(0) += 1;
        }
        out
    }
}
