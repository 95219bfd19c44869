//! Checks against the kernel's view, which the caller reads from /proc: what the events
//! should have brought and did not (lost events, an exit hidden by a cgroup filter, a
//! free the kernel defers for long) is corrected, and each correction of a missed event
//! is counted. A scan taken at `at_ns` judges only what the table knew before then; the
//! caller applies the scan once every event stamped before `at_ns` has been applied.

use rustc_hash::{FxHashMap, FxHashSet};

use proclens_common::lifecycle::ExitStatus;

use super::{Dated, Death, Key, Notice, ProcTable, SeedProc};

/// How a check counts the processes it finds gone or missing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Missed {
    /// Every exit and fork is in the stream: one missing is a repair.
    Repair,
    /// A cgroup filter hides the exits and forks outside it: one missing is expected.
    Expected,
}

impl ProcTable {
    /// The light check, every period: `pids` are the processes /proc listed at `at_ns`.
    /// A live entry /proc no longer lists is gone (a repair), and so is one whose pid a
    /// newer live process holds; a zombie whose pid is gone or held by a live process was
    /// reaped unseen, by `at_ns`; a process reaped more than `grace_ns` before `at_ns`
    /// whose free never came (the kernel defers frees, lazily for seconds) is let go.
    /// Returns the repairs.
    pub fn check_pids(
        &mut self,
        at_ns: u64,
        pids: &FxHashSet<u32>,
        grace_ns: u64,
        missed: Missed,
        notices: &mut Vec<Notice>,
    ) -> u64 {
        let mut gone = Vec::new();
        let mut reaped = Vec::new();
        let mut released = Vec::new();
        for p in self.procs.values() {
            if p.seen_ns >= at_ns {
                continue;
            }
            // The pid is listed and held by this entry; else another process holds it
            // now, which the kernel allows only once this one is reaped.
            let holds = pids.contains(&p.key.tgid) && self.procs.held(p.key.tgid) == Some(p.key);
            match (p.death, p.reaped_ns) {
                (None, _) if !holds => gone.push(p.key),
                (Some(d), None) if d.at_ns < at_ns && !holds => reaped.push(p.key),
                (Some(_), Some(r)) if r.saturating_add(grace_ns) < at_ns => released.push(p.key),
                _ => {}
            }
        }
        gone.sort_unstable();
        reaped.sort_unstable();
        for k in &reaped {
            self.reaped(k, at_ns, notices);
        }
        for k in gone.iter().chain(&released) {
            self.forget(k);
        }
        self.count(gone.len(), missed)
    }

    /// The full check after lost events: `scan` is every process /proc showed at `at_ns`
    /// (with the kernel's record of the zombies, when it could be read). A live entry
    /// /proc shows as a zombie died unseen (dated by the kernel's record, else
    /// [`Dated::AtLeast`]); one
    /// it no longer shows is gone; a zombie it no longer shows was reaped; all that are
    /// gone are let go at once (their frees may be among the lost); parents are taken
    /// from /proc (an exit that re-parented children may be among the lost); a process
    /// the table lacks is added. Returns the repairs.
    pub fn reconcile(
        &mut self,
        at_ns: u64,
        scan: &[SeedProc],
        missed: Missed,
        notices: &mut Vec<Notice>,
    ) -> u64 {
        let by_pid: FxHashMap<u32, &SeedProc> = scan.iter().map(|s| (s.pid, s)).collect();
        let tick = self.tick_ns;
        let mut fixed = 0usize;
        let mut gone = Vec::new();
        let mut reaped = Vec::new();
        let mut released = Vec::new();
        let keys: Vec<Key> = self
            .procs
            .values()
            .filter(|p| p.seen_ns < at_ns)
            .map(|p| p.key)
            .collect();
        for key in keys {
            let seen = by_pid
                .get(&key.tgid)
                .filter(|s| s.start_ticks == key.start_ns / tick);
            let Some(p) = self.procs.get(&key) else {
                continue;
            };
            let (dead, was_reaped) = (p.death.is_some(), p.reaped_ns.is_some());
            let Some(s) = seen else {
                // Gone: reaped, and its free may be among the lost.
                match (dead, was_reaped) {
                    (_, true) => released.push(key),
                    (true, false) => reaped.push(key),
                    (false, _) => gone.push(key),
                }
                continue;
            };
            if was_reaped {
                continue;
            }
            if s.zombie && !dead {
                // The kernel's record dates it; else it died before the check.
                let (at_ns, dated) = s
                    .kernel
                    .and_then(|k| k.died_ns)
                    .map_or((at_ns, Dated::AtLeast), |d| (d, Dated::LastRan));
                let death = Death {
                    at_ns,
                    dated,
                    status: ExitStatus::from_raw(s.exit_code),
                    autoreap: false,
                    ppid: s.ppid,
                };
                self.procs.set_death(&key, death);
                fixed += 1;
            }
            if self.procs.get(&key).is_some_and(|p| p.ppid != s.ppid) {
                self.reparent(key, s.ppid);
                fixed += 1;
            }
        }
        for k in &reaped {
            self.reaped(k, at_ns, notices);
        }
        for k in gone.iter().chain(&released).chain(&reaped) {
            self.forget(k);
        }
        let mut added = 0;
        for s in scan {
            if self.add_seen(s, at_ns) {
                added += 1;
            }
        }
        self.link_parents();
        self.count(fixed, Missed::Repair) + self.count(gone.len() + added, missed)
    }

    fn count(&mut self, n: usize, missed: Missed) -> u64 {
        let n = if missed == Missed::Repair {
            n as u64
        } else {
            0
        };
        self.repairs += n;
        n
    }
}
