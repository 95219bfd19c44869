//! Seeding the table from a scan of /proc (at start-up, and again when a check finds
//! processes the events never brought), with what the kernel said of each zombie.

use proclens_common::lifecycle::ExitStatus;

use super::{Dated, Death, Key, Proc, ProcTable};

/// A process as seen at start-up (or in a later check): /proc's view, and what the kernel
/// itself said of it when it could be asked.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct SeedProc {
    pub pid: u32,
    pub ppid: u32,
    /// /proc/PID/stat field 22, in clock ticks since boot.
    pub start_ticks: u64,
    pub comm: String,
    /// State `Z`, and no thread left.
    pub zombie: bool,
    /// The wait status of a zombie (/proc/PID/stat field 52, or the kernel's).
    pub exit_code: u32,
    /// From the kernel (a zombie's record of the start-up task iterator): its exact start,
    /// its leader task's address and when it last ran (its death, see [`Dated::LastRan`]).
    pub kernel: Option<KernelSeed>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct KernelSeed {
    pub start_ns: u64,
    pub task: u64,
    pub died_ns: Option<u64>,
}

impl ProcTable {
    /// Fills the table from a start-up scan, read after the programs were attached (so
    /// nothing that happens later is missed). `now_ns` is the boot-clock time of the scan.
    pub fn seed(&mut self, procs: &[SeedProc], now_ns: u64) {
        for s in procs {
            self.add_seen(s, now_ns);
        }
        self.link_parents();
    }

    /// Adds a process a scan found, unless the table has it; returns whether it was new.
    pub(super) fn add_seen(&mut self, s: &SeedProc, now_ns: u64) -> bool {
        let coarse_key = Key {
            tgid: s.pid,
            start_ns: s.start_ticks * self.tick_ns,
        };
        let key = s.kernel.map_or(coarse_key, |k| Key {
            tgid: s.pid,
            start_ns: k.start_ns,
        });
        if self.procs.contains(&key) || self.known_as(s.pid, s.start_ticks).is_some() {
            return false;
        }
        let mut p = Proc::new(key, s.comm.as_str().into(), s.ppid, None, now_ns);
        p.coarse = s.kernel.is_none();
        p.task = s.kernel.map(|k| k.task);
        p.death = s.zombie.then(|| {
            let died = s.kernel.and_then(|k| k.died_ns);
            Death {
                at_ns: died.unwrap_or(now_ns),
                dated: if died.is_some() {
                    Dated::LastRan
                } else {
                    Dated::AtLeast
                },
                status: ExitStatus::from_raw(s.exit_code),
                autoreap: false,
                ppid: s.ppid,
            }
        });
        self.procs.insert(p);
        true
    }

    /// The entry of the process /proc shows as `pid` started at `start_ticks`, if any.
    fn known_as(&self, pid: u32, start_ticks: u64) -> Option<Key> {
        let same = |k: &Key| k.start_ns / self.tick_ns == start_ticks;
        [self.procs.held(pid), self.procs.coarse(pid)]
            .into_iter()
            .flatten()
            .find(same)
    }

    /// Links entries without a parent key to the live process of their ppid.
    pub(super) fn link_parents(&mut self) {
        let links: Vec<(Key, u32)> = self
            .procs
            .values()
            .filter(|p| p.parent.is_none() && p.ppid != 0)
            .map(|p| (p.key, p.ppid))
            .collect();
        for (key, ppid) in links {
            let parent = self.live_by_pid(ppid);
            if let Some(p) = self.procs.get_mut(&key) {
                p.parent = parent;
            }
            self.parents.extend(parent);
        }
    }
}
