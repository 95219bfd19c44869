//! The process table: every process proclens knows of, kept exact from the lifecycle
//! event stream after a start-up seed from /proc. Pure: no I/O.
//!
//! Processes are keyed by [`Key`] = (tgid, start time of the group leader), never by pid
//! alone: under a fork storm a pid is reused before the old task's `sched_process_free`
//! arrives, and both processes sit in the table at once. Entries seeded from /proc know
//! their start time only in clock ticks (/proc/PID/stat field 22); they are "coarse" until
//! the first event about them names the exact start, then re-keyed.

use compact_str::CompactString;
use rustc_hash::{FxHashMap as HashMap, FxHashSet as HashSet};

use proclens_common::lifecycle::{
    Exec, Exit, ExitStatus, Fork, Free, TaskRef, exit_flags, fork_flags,
};

use crate::model::event::Event;

use store::Procs;
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

/// How and when a process's thread group died.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Death {
    /// Kernel boot-clock time of the exit; `None` for a zombie found at start-up.
    pub at_ns: Option<u64>,
    pub status: ExitStatus,
    /// Its parent ignores SIGCHLD: the kernel reaps it at once, it is never a zombie.
    pub autoreap: bool,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Proc {
    pub key: Key,
    /// Inline (a comm is at most 15 bytes): a fork storm makes no allocation per process.
    pub comm: CompactString,
    /// Parent pid as last known (real_parent's tgid).
    pub ppid: u32,
    /// The parent's key when known.
    pub parent: Option<Key>,
    /// When proclens first knew of it (boot-clock ns).
    pub seen_ns: u64,
    /// Key from /proc, accurate only to a clock tick, not yet confirmed by an event.
    pub coarse: bool,
    pub death: Option<Death>,
    /// Already reported as a zombie (by [`ProcTable::new_zombies`]).
    pub reported: bool,
    /// The file it last exec'd, when seen exec'ing.
    pub exe: Option<String>,
    /// Address of its leader `task_struct`, once an event named it: what its free names.
    pub task: Option<u64>,
}

/// A process as /proc shows it at start-up.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SeedProc {
    pub pid: u32,
    pub ppid: u32,
    /// /proc/PID/stat field 22, in clock ticks since boot.
    pub start_ticks: u64,
    pub comm: String,
    /// State `Z`.
    pub zombie: bool,
    /// /proc/PID/stat field 52 (wait status), meaningful for zombies.
    pub exit_code: u32,
}

/// Fork and exit statistics of one parent process, cumulative since proclens started.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ForkStats {
    /// Child processes it created (fork/clone without CLONE_THREAD).
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

/// Something the table noticed while applying an event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Notice {
    /// A process died while these children of it were alive: the kernel re-parents them
    /// (to init or the nearest subreaper). The caller reads the new parent from the
    /// kernel and calls [`ProcTable::reparent`].
    Orphaned {
        parent: Key,
        parent_comm: String,
        children: Vec<Key>,
    },
    /// A dead process was freed (reaped, then an RCU grace period).
    Reaped {
        proc: Proc,
        /// Time from death to free; `None` if the death was before proclens started.
        dead_for_ns: Option<u64>,
        /// Freed at this boot-clock time.
        at_ns: u64,
    },
}

impl Notice {
    /// `proc` gone from the kernel at `at_ns`, dead since its death event if one came.
    fn reaped(proc: Proc, at_ns: u64) -> Self {
        let dead_for_ns = proc
            .death
            .and_then(|d| d.at_ns)
            .map(|t| at_ns.saturating_sub(t));
        Notice::Reaped {
            proc,
            dead_for_ns,
            at_ns,
        }
    }
}

/// One zombie, ready to show.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Zombie {
    pub key: Key,
    pub comm: String,
    pub ppid: u32,
    pub parent_comm: String,
    pub status: ExitStatus,
    pub age_ns: u64,
    /// False for a zombie found at start-up: its age is counted from then (a lower bound).
    pub age_exact: bool,
    pub exe: Option<String>,
}

#[derive(Debug)]
pub struct ProcTable {
    procs: Procs,
    stats: HashMap<Key, ForkStats>,
    /// Every process that is (or was) named as a parent: a superset of the parents of
    /// live processes, so an exit looks for orphans only when there can be some.
    parents: HashSet<Key>,
    /// ns per /proc clock tick (10 ms with USER_HZ 100).
    tick_ns: u64,
    /// Zombies found at start-up: no event names their task, so their free matches nothing.
    seeded_zombies: Vec<Key>,
    /// Time of the latest free that matched no process, until taken.
    unmatched_free: Option<u64>,
}

fn comm_str(raw: &[u8]) -> CompactString {
    let end = raw.iter().position(|&b| b == 0).unwrap_or(raw.len());
    // The lossy conversion is several times dearer, and names are rarely not UTF-8.
    match std::str::from_utf8(&raw[..end]) {
        Ok(s) => CompactString::new(s),
        Err(_) => CompactString::from_utf8_lossy(&raw[..end]),
    }
}

impl ProcTable {
    pub fn new(tick_ns: u64) -> Self {
        Self {
            procs: Procs::default(),
            parents: HashSet::default(),
            stats: HashMap::default(),
            tick_ns: tick_ns.max(1),
            seeded_zombies: Vec::new(),
            unmatched_free: None,
        }
    }

    /// Fills the table from /proc, read after the programs were attached (so nothing that
    /// happens later is missed). `now_ns` is the boot-clock time of the scan.
    pub fn seed(&mut self, procs: &[SeedProc], now_ns: u64) {
        for s in procs {
            let key = Key {
                tgid: s.pid,
                start_ns: s.start_ticks * self.tick_ns,
            };
            let death = s.zombie.then(|| Death {
                at_ns: None,
                status: ExitStatus::from_raw(s.exit_code),
                autoreap: false,
            });
            if self.procs.contains(&key) {
                continue;
            }
            if death.is_some() {
                self.seeded_zombies.push(key);
            }
            self.procs.insert(Proc {
                key,
                comm: s.comm.as_str().into(),
                ppid: s.ppid,
                parent: None,
                seen_ns: now_ns,
                coarse: true,
                death,
                reported: false,
                exe: None,
                task: None,
            });
        }
        let links: Vec<(Key, u32)> = self.procs.values().map(|p| (p.key, p.ppid)).collect();
        for (key, ppid) in links {
            let parent = self.live_by_pid(ppid);
            if let Some(p) = self.procs.get_mut(&key) {
                p.parent = parent;
            }
            self.parents.extend(parent);
        }
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
            Event::Wait(w) => {
                if let Some(k) = self.resolve(&w.waiter) {
                    self.stats.entry(k).or_default().waits += 1;
                }
            }
            Event::Free(f) => self.free(f, notices),
        }
    }

    fn fork(&mut self, f: &Fork, notices: &mut Vec<Notice>) {
        let creator_known = self.resolve(&f.creator);
        let creator = creator_known.unwrap_or_else(|| Key::from(&f.creator));
        let s = self.stats.entry(creator).or_default();
        if f.flags & fork_flags::THREAD != 0 {
            s.threads += 1;
            return;
        }
        s.processes += 1;
        // The parent is the creator's process, unless CLONE_PARENT made it the creator's
        // parent: then it is looked up on its own.
        let parent = if Key::from(&f.parent) == Key::from(&f.creator) {
            creator_known
        } else {
            self.resolve(&f.parent)
        };
        if let Some(pk) = parent {
            self.parents.insert(pk);
        }
        // A child born between attaching and the /proc scan is also in the seed (coarse):
        // resolving re-keys that entry, and the fork's own record replaces it.
        let key = self
            .resolve(&f.child)
            .unwrap_or_else(|| Key::from(&f.child));
        // Events from different CPUs are merged by time per drain; one read a moment too
        // late can come a drain later than what followed it. A child whose exit came
        // first keeps its death (a fork must not bring it back to life), and a child whose
        // parent's exit came first is an orphan.
        if let Some(p) = self.procs.get(&key)
            && p.death.is_some()
        {
            if p.task.is_none() && f.child_ptr != 0 {
                self.procs.set_task(&key, f.child_ptr);
            }
            return;
        }
        if let Some(pk) = parent
            && self.procs.get(&pk).is_some_and(|pp| pp.death.is_some())
        {
            notices.push(self.orphaned(pk, vec![key]));
        }
        self.procs.insert(Proc {
            key,
            comm: comm_str(&f.comm),
            ppid: f.parent.tgid,
            parent,
            seen_ns: f.header.ts,
            coarse: false,
            death: None,
            reported: false,
            exe: None,
            task: (f.child_ptr != 0).then_some(f.child_ptr),
        });
    }

    fn exec(&mut self, e: &Exec) {
        if let Some(k) = self.resolve(&e.task)
            && let Some(p) = self.procs.get_mut(&k)
        {
            p.comm = comm_str(&e.comm);
            p.exe = Some(comm_str(&e.filename).into());
            if e.task_ptr != 0 {
                self.procs.set_task(&k, e.task_ptr);
            }
        }
    }

    fn exit(&mut self, x: &Exit, notices: &mut Vec<Notice>) {
        if x.flags & exit_flags::GROUP_DEAD == 0 {
            return;
        }
        let parent = self.resolve(&x.parent);
        let ts = x.header.ts;
        let key = match self.resolve(&x.task) {
            Some(k) => k,
            None => {
                let key = Key::from(&x.task);
                self.procs.insert(Proc {
                    key,
                    comm: comm_str(&x.comm),
                    ppid: x.parent.tgid,
                    parent,
                    seen_ns: ts,
                    coarse: false,
                    death: None,
                    reported: false,
                    exe: None,
                    task: None,
                });
                key
            }
        };
        let status = ExitStatus::from_raw(x.exit_code);
        let death = Death {
            at_ns: Some(ts),
            status,
            autoreap: x.flags & exit_flags::AUTOREAP != 0,
        };
        let p = self
            .procs
            .set_death(&key, death)
            .expect("resolved or inserted");
        p.ppid = x.parent.tgid;
        p.parent = parent.or(p.parent);
        // Its fork named the leader already, as a rule: then the index holds it (another
        // process could take the address only after this one's free).
        if x.leader_ptr != 0 && p.task != Some(x.leader_ptr) {
            self.procs.set_task(&key, x.leader_ptr);
        }
        if let Some(pk) = parent {
            let s = self.stats.entry(pk).or_default();
            s.child_exits += 1;
            if status != ExitStatus::Code(0) {
                s.child_failures += 1;
            }
            self.parents.insert(pk);
        }
        if self.parents.contains(&key) {
            self.orphan_children(key, notices);
        }
    }

    /// The live children of `key`, which just died, are orphans now.
    fn orphan_children(&self, key: Key, notices: &mut Vec<Notice>) {
        let mut children: Vec<Key> = self
            .procs
            .values()
            .filter(|c| c.parent == Some(key) && c.death.is_none())
            .map(|c| c.key)
            .collect();
        if children.is_empty() {
            return;
        }
        children.sort_unstable();
        notices.push(self.orphaned(key, children));
    }

    /// The notice that `parent` died leaving `children` alive.
    fn orphaned(&self, parent: Key, children: Vec<Key>) -> Notice {
        let parent_comm = self
            .procs
            .get(&parent)
            .map(|p| p.comm.to_string())
            .unwrap_or_default();
        Notice::Orphaned {
            parent,
            parent_comm,
            children,
        }
    }

    fn free(&mut self, f: &Free, notices: &mut Vec<Notice>) {
        let Some(key) = self.procs.by_task(f.task_ptr) else {
            // A thread's task, proclens's own, or the leader of a process no event named:
            // a zombie found at start-up (see `release_seeded_zombies`).
            self.unmatched_free = Some(f.header.ts);
            return;
        };
        if self.procs.get(&key).is_some_and(|p| p.death.is_none()) {
            // The process lives on: the freed task led it until another of its threads
            // exec'd (which made that thread the leader and released the old one). Or its
            // exit event was lost; then `prune` finds it gone.
            self.procs.clear_task(f.task_ptr);
            return;
        }
        if let Some(p) = self.forget(&key) {
            notices.push(Notice::reaped(p, f.header.ts));
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

    pub fn comm_of_pid(&self, pid: u32) -> Option<&str> {
        self.live_by_pid(pid)
            .and_then(|k| self.procs.get(&k))
            .map(|p| p.comm.as_str())
    }

    /// Processes in the table (live and dead-not-yet-freed).
    pub fn len(&self) -> usize {
        self.procs.len()
    }

    #[allow(dead_code, reason = "pairs with len(); part of the table's API")]
    pub fn is_empty(&self) -> bool {
        self.procs.is_empty()
    }

    /// Processes in the table whose parent is `tgid` (live or dead, not yet freed).
    pub fn children_of(&self, tgid: u32) -> usize {
        self.procs.values().filter(|p| p.ppid == tgid).count()
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

mod store;
mod sweep;
mod zombies;

#[cfg(test)]
mod tests;
