//! Zombie detection on the process table: a process whose thread group has exited and
//! that has not been reaped (freed) for at least a minimum age, blamed on its parent.

use std::collections::BTreeMap;

use super::{Proc, ProcTable, Zombie};

impl ProcTable {
    fn zombie(&self, p: &Proc, now_ns: u64, min_age_ns: u64) -> Option<Zombie> {
        let d = p.death?;
        if d.autoreap {
            return None;
        }
        let (since, exact) = match d.at_ns {
            Some(t) => (t, true),
            None => (p.seen_ns, false),
        };
        let age_ns = now_ns.saturating_sub(since);
        if age_ns < min_age_ns {
            return None;
        }
        let parent_comm = p
            .parent
            .and_then(|k| self.procs.get(&k))
            .map(|pp| pp.comm.clone())
            .unwrap_or_else(|| "?".into());
        Some(Zombie {
            key: p.key,
            comm: p.comm.clone(),
            ppid: p.ppid,
            parent_comm,
            status: d.status,
            age_ns,
            age_exact: exact,
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

    /// Zombies that reached `min_age_ns` since the last call and that `confirm` accepts
    /// (the caller may check the kernel's view: a reaped task is only freed an RCU grace
    /// period later); each is returned once.
    pub fn new_zombies(
        &mut self,
        now_ns: u64,
        min_age_ns: u64,
        confirm: impl Fn(&Zombie) -> bool,
    ) -> Vec<Zombie> {
        let mut fresh: Vec<Zombie> = self
            .procs
            .values()
            .filter(|p| !p.reported)
            .filter_map(|p| self.zombie(p, now_ns, min_age_ns))
            .filter(|z| confirm(z))
            .collect();
        fresh.sort_unstable_by_key(|z| z.key);
        for z in &fresh {
            if let Some(p) = self.procs.get_mut(&z.key) {
                p.reported = true;
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
