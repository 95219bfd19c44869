//! The process table: every process proclens knows of, kept exact from the lifecycle
//! event stream after a start-up seed, and checked against the kernel's view (read by the
//! caller from /proc) so that nothing the stream missed stays. Pure: no I/O.
//!
//! Processes are keyed by [`Key`] = (tgid, start time of the group leader), never by pid
//! alone: under a fork storm a pid is reused before the old task's `sched_process_free`
//! arrives, and both processes sit in the table at once. Entries seeded from /proc know
//! their start time only in clock ticks (/proc/PID/stat field 22); they are "coarse" until
//! the first event about them names the exact start, then re-keyed.
//!
//! A process lives until its exit (a death), is a zombie until its parent reaps it (the
//! parent's wait, or the kernel reaping it itself), and leaves the table at its free (an
//! RCU grace period after the reap) or when the caller finds it gone from /proc.

use compact_str::CompactString;
use rustc_hash::{FxHashMap as HashMap, FxHashSet as HashSet};

use proclens_common::lifecycle::{ExitStatus, TaskRef};

use crate::model::event::Event;

pub use notice::{Heir, Notice, ReapedProc};
pub use repair::Missed;
pub use seed::{KernelSeed, SeedProc};
use store::Procs;
use tombstones::Tombstones;
pub use zombies::KernelState;

/// Identity of a process: tgid plus the leader's `start_boottime` in ns.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Key {
    pub tgid: u32,
    pub start_ns: u64,
}

impl From<&TaskRef> for Key {
    fn from(t: &TaskRef) -> Self {
        Key {
            tgid: t.tgid,
            start_ns: t.start_ns,
        }
    }
}

/// Where the time of a death comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dated {
    /// The exit event: exact.
    Exit,
    /// The kernel's record of when the zombie last ran (read at start-up): it died
    /// during that run, so this is its death to within that run and a clock tick.
    LastRan,
    /// Unknown: it was found dead then (at start-up without the kernel's record, or by a
    /// check after lost events); its age is a lower bound.
    AtLeast,
}

/// How and when a process's thread group died.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Death {
    /// Boot-clock time of the death, as `dated` says.
    pub at_ns: u64,
    pub dated: Dated,
    pub status: ExitStatus,
    /// Its parent ignores SIGCHLD: the kernel reaps it at once, it is never a zombie.
    pub autoreap: bool,
    /// Its parent when it died: the one that left it unreaped, even if the kernel handed
    /// it to another since (which `Proc::ppid` follows).
    pub ppid: u32,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Proc {
    pub key: Key,
    /// Inline (a comm is at most 15 bytes): a fork storm makes no allocation per process.
    pub comm: CompactString,
    /// Parent pid as last known (`real_parent`'s tgid); 0 when no event or seed said.
    pub ppid: u32,
    /// The parent's key when known.
    pub parent: Option<Key>,
    /// When proclens first knew of it (boot-clock ns).
    pub seen_ns: u64,
    /// Key from /proc, accurate only to a clock tick, not yet confirmed by an event.
    pub coarse: bool,
    pub death: Option<Death>,
    /// When its parent reaped it (boot clock): the parent's wait, the kernel at its death
    /// (SIGCHLD ignored), or at the latest when it was found gone. `None` while alive or
    /// a zombie.
    pub reaped_ns: Option<u64>,
    /// Already reported as a zombie (by [`ProcTable::new_zombies`]).
    pub reported: bool,
    /// The file it last exec'd, when seen exec'ing.
    pub exe: Option<String>,
    /// Address of its leader `task_struct`, once an event named it: what its free names.
    pub task: Option<u64>,
    /// Its fork event came (else it came from the seed, an exec or an exit seen first).
    pub forked: bool,
    /// The target of its latest wait*() (0: any child), once it waited.
    pub wait_target: Option<u32>,
}

impl Proc {
    /// A process first known at `seen_ns`, alive, from nothing but its key and name.
    pub fn new(
        key: Key,
        comm: CompactString,
        ppid: u32,
        parent: Option<Key>,
        seen_ns: u64,
    ) -> Self {
        Proc {
            key,
            comm,
            ppid,
            parent,
            seen_ns,
            coarse: false,
            death: None,
            reaped_ns: None,
            reported: false,
            exe: None,
            task: None,
            forked: false,
            wait_target: None,
        }
    }

    /// Dead and not yet reaped: its parent must reap it.
    pub fn unreaped_dead(&self) -> bool {
        self.death.is_some() && self.reaped_ns.is_none()
    }
}

/// Fork and exit statistics of one parent process, cumulative since proclens started.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ForkStats {
    /// Child processes it created (fork/clone without `CLONE_THREAD`).
    pub processes: u64,
    /// Threads it created.
    pub threads: u64,
    /// Its child processes that died: all of them, and those with a non-zero exit code or
    /// killed by a signal.
    pub child_exits: u64,
    pub child_failures: u64,
    /// wait*() calls it entered.
    pub waits: u64,
}

impl ForkStats {
    /// `self - earlier`, saturating.
    pub fn since(&self, earlier: &ForkStats) -> ForkStats {
        ForkStats {
            processes: self.processes.saturating_sub(earlier.processes),
            threads: self.threads.saturating_sub(earlier.threads),
            child_exits: self.child_exits.saturating_sub(earlier.child_exits),
            child_failures: self.child_failures.saturating_sub(earlier.child_failures),
            waits: self.waits.saturating_sub(earlier.waits),
        }
    }

    /// Adds `d` (an interval's [`ForkStats::since`]) to these totals.
    pub fn add(&mut self, d: &ForkStats) {
        self.processes += d.processes;
        self.threads += d.threads;
        self.child_exits += d.child_exits;
        self.child_failures += d.child_failures;
        self.waits += d.waits;
    }
}

/// One zombie, ready to show.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Zombie {
    pub key: Key,
    pub comm: String,
    /// The parent that holds it now (the kernel may have handed it to another since it
    /// died), and its name.
    pub ppid: u32,
    pub parent_comm: String,
    /// The parent it had when it died.
    pub death_ppid: u32,
    pub status: ExitStatus,
    pub age_ns: u64,
    /// Where the age comes from (only [`Dated::Exit`] is exact).
    pub dated: Dated,
    pub exe: Option<String>,
}

impl Zombie {
    /// The age is the exit event's.
    pub fn age_exact(&self) -> bool {
        self.dated == Dated::Exit
    }
}

#[derive(Debug)]
pub struct ProcTable {
    procs: Procs,
    stats: HashMap<Key, ForkStats>,
    /// Every process that is (or was) named as a parent: a superset of the parents of
    /// live processes, so an exit looks for orphans only when there can be some.
    parents: HashSet<Key>,
    /// ns per /proc clock tick (10 ms with `USER_HZ` 100).
    tick_ns: u64,
    /// Task addresses freed lately that no forked process owned, against late events.
    freed: Tombstones,
    /// Entries the checks against /proc corrected (see `repair`).
    repairs: u64,
}

fn comm_str(raw: &[u8]) -> CompactString {
    let raw = super::switches::comm_bytes(raw);
    // The lossy conversion is several times dearer, and names are rarely not UTF-8.
    match std::str::from_utf8(raw) {
        Ok(s) => CompactString::new(s),
        Err(_) => CompactString::from_utf8_lossy(raw),
    }
}

impl ProcTable {
    pub fn new(tick_ns: u64) -> Self {
        Self {
            procs: Procs::default(),
            parents: HashSet::default(),
            stats: HashMap::default(),
            tick_ns: tick_ns.max(1),
            freed: Tombstones::default(),
            repairs: 0,
        }
    }

    /// Gives back the room a fork storm's peak left in the table's maps, once it has
    /// passed (see `model::spare`): call it once an interval.
    pub fn give_back_spare(&mut self) {
        self.procs.give_back_spare();
        self.freed.give_back_spare();
        crate::model::spare::map(&mut self.stats);
        crate::model::spare::set(&mut self.parents);
    }

    /// The live (not dead) process with this pid; a live pid is never shared.
    pub fn live_by_pid(&self, pid: u32) -> Option<Key> {
        self.procs.live(pid)
    }

    /// The entry for `r`, matching a coarse (seeded) entry by clock tick and re-keying it.
    fn resolve(&mut self, r: &TaskRef) -> Option<Key> {
        let exact = Key::from(r);
        if self.procs.contains(&exact) {
            return Some(exact);
        }
        let coarse = self
            .procs
            .coarse(r.tgid)
            .filter(|k| k.start_ns / self.tick_ns == r.start_ns / self.tick_ns)?;
        let mut p = self.procs.remove(&coarse)?;
        p.key = exact;
        p.coarse = false;
        self.procs.insert(p);
        if let Some(s) = self.stats.remove(&coarse) {
            self.stats.insert(exact, s);
        }
        if self.parents.remove(&coarse) {
            self.parents.insert(exact);
        }
        for child in self.procs.values_mut() {
            if child.parent == Some(coarse) {
                child.parent = Some(exact);
            }
        }
        Some(exact)
    }

    /// Applies one ring-buffer event; what the table noticed goes to `notices`.
    /// `THREAD_EXIT` (switch accounting) is ignored.
    pub fn apply(&mut self, ev: &Event, notices: &mut Vec<Notice>) {
        match ev {
            Event::ThreadExit(_) | Event::ExecFds(_) => {}
            Event::Fork(f) => self.fork(f, notices),
            Event::Exec(e) => self.exec(e),
            Event::Exit(x) => self.exit(x, notices),
            Event::Wait(w) => self.wait(w, notices),
            Event::Free(f) => self.free(f, notices),
        }
    }

    /// Records that the dead process holding `pid` was reaped at `at_ns` by a parent whose
    /// wait is not traced (proclens's own, for `run`'s command): its free comes only an
    /// RCU grace period later. Nothing happens while its death is not in.
    pub fn reaped_unseen(&mut self, pid: u32, at_ns: u64, notices: &mut Vec<Notice>) {
        if let Some(k) = self.procs.held(pid) {
            self.reaped(&k, at_ns, notices);
        }
    }

    /// Records that the kernel re-parented `child` to `new_ppid` (read from the kernel by
    /// the caller). Returns the new parent's key when the table knows it.
    pub fn reparent(&mut self, child: Key, new_ppid: u32) -> Option<Key> {
        let parent = self.live_by_pid(new_ppid);
        let p = self.procs.get_mut(&child)?;
        p.ppid = new_ppid;
        p.parent = parent;
        self.parents.extend(parent);
        parent
    }

    /// Removes a process with its statistics and parent mark.
    fn forget(&mut self, key: &Key) -> Option<Proc> {
        self.stats.remove(key);
        self.parents.remove(key);
        self.procs.remove(key)
    }

    pub fn get(&self, key: &Key) -> Option<&Proc> {
        self.procs.get(key)
    }

    /// Processes in the table (live, and dead not yet freed or found gone).
    pub fn len(&self) -> usize {
        self.procs.len()
    }

    #[allow(dead_code, reason = "pairs with len(); part of the table's API")]
    pub fn is_empty(&self) -> bool {
        self.procs.is_empty()
    }

    /// Entries the checks against /proc have corrected since the start: processes whose
    /// exit or fork the events never brought (lost events).
    pub fn repairs(&self) -> u64 {
        self.repairs
    }

    /// Child processes of `tgid` alive or zombies (not reaped).
    pub fn children_of(&self, tgid: u32) -> usize {
        self.procs
            .values()
            .filter(|p| p.ppid == tgid && p.reaped_ns.is_none())
            .count()
    }

    /// Fork statistics of the process with this key.
    #[allow(
        dead_code,
        reason = "API for `top`'s and `run`'s per-process fork columns"
    )]
    pub fn fork_stats(&self, key: &Key) -> Option<ForkStats> {
        self.stats.get(key).copied()
    }

    /// Fork statistics of the live process with this pid (what `top` shows per row).
    #[allow(
        dead_code,
        reason = "API for `top`'s and `run`'s per-process fork columns"
    )]
    pub fn fork_stats_of_pid(&self, pid: u32) -> Option<ForkStats> {
        self.live_by_pid(pid)
            .and_then(|k| self.stats.get(&k).copied())
    }

    /// Fork statistics of every process that forked, exited children or waited, by key.
    pub fn all_fork_stats(&self) -> impl Iterator<Item = (&Key, &ForkStats)> {
        self.stats.iter()
    }
}

mod apply;
mod notice;
mod repair;
mod seed;
mod store;
mod tombstones;
mod zombies;

#[cfg(test)]
mod tests;
#[cfg(test)]
mod tests_order;
