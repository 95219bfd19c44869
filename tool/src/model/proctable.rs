//! The process table: every process proclens knows of, kept exact from the lifecycle
//! event stream after a start-up seed from /proc. Pure: no I/O.
//!
//! Processes are keyed by [`Key`] = (tgid, start time of the group leader), never by pid
//! alone: under a fork storm a pid is reused before the old task's `sched_process_free`
//! arrives, and both processes sit in the table at once. Entries seeded from /proc know
//! their start time only in clock ticks (/proc/PID/stat field 22); they are "coarse" until
//! the first event about them names the exact start, then re-keyed.

use std::collections::{BTreeMap, HashMap, HashSet};

use proclens_common::lifecycle::{ExitStatus, Fork, TaskRef, exit_flags, fork_flags};

use crate::collect::events::Event;

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
    pub comm: String,
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
    procs: BTreeMap<Key, Proc>,
    stats: HashMap<Key, ForkStats>,
    /// Every process that is (or was) named as a parent: a superset of the parents of
    /// live processes, so an exit looks for orphans only when there can be some.
    parents: HashSet<Key>,
    /// ns per /proc clock tick (10 ms with USER_HZ 100).
    tick_ns: u64,
}

fn comm_str(raw: &[u8]) -> String {
    let end = raw.iter().position(|&b| b == 0).unwrap_or(raw.len());
    String::from_utf8_lossy(&raw[..end]).into_owned()
}

impl ProcTable {
    pub fn new(tick_ns: u64) -> Self {
        Self {
            procs: BTreeMap::new(),
            parents: HashSet::new(),
            stats: HashMap::new(),
            tick_ns: tick_ns.max(1),
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
            self.procs.entry(key).or_insert(Proc {
                key,
                comm: s.comm.clone(),
                ppid: s.ppid,
                parent: None,
                seen_ns: now_ns,
                coarse: true,
                death,
                reported: false,
                exe: None,
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
        let lo = Key {
            tgid: pid,
            start_ns: 0,
        };
        let hi = Key {
            tgid: pid,
            start_ns: u64::MAX,
        };
        self.procs
            .range(lo..=hi)
            .find(|(_, p)| p.death.is_none())
            .map(|(k, _)| *k)
    }

    /// The entry for `r`, matching a coarse (seeded) entry by clock tick and re-keying it.
    fn resolve(&mut self, r: &TaskRef) -> Option<Key> {
        let exact = Key::from(r);
        if self.procs.contains_key(&exact) {
            return Some(exact);
        }
        let tick = r.start_ns / self.tick_ns;
        let lo = Key {
            tgid: r.tgid,
            start_ns: 0,
        };
        let hi = Key {
            tgid: r.tgid,
            start_ns: u64::MAX,
        };
        let coarse = self
            .procs
            .range(lo..=hi)
            .find(|(k, p)| p.coarse && k.start_ns / self.tick_ns == tick)
            .map(|(k, _)| *k)?;
        let mut p = self.procs.remove(&coarse)?;
        p.key = exact;
        p.coarse = false;
        self.procs.insert(exact, p);
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

    /// Applies one ring-buffer event. `THREAD_EXIT` (switch accounting) is ignored.
    pub fn apply(&mut self, ev: &Event) -> Vec<Notice> {
        match ev {
            Event::ThreadExit(_) => Vec::new(),
            Event::Fork(f) => {
                self.fork(f);
                Vec::new()
            }
            Event::Exec(e) => {
                if let Some(k) = self.resolve(&e.task)
                    && let Some(p) = self.procs.get_mut(&k)
                {
                    p.comm = comm_str(&e.comm);
                    p.exe = Some(comm_str(&e.filename));
                }
                Vec::new()
            }
            Event::Exit(x) => {
                if x.flags & exit_flags::GROUP_DEAD == 0 {
                    return Vec::new();
                }
                let parent = self.resolve(&x.parent);
                let key = self.resolve(&x.task).unwrap_or_else(|| Key::from(&x.task));
                let status = ExitStatus::from_raw(x.exit_code);
                let autoreap = x.flags & exit_flags::AUTOREAP != 0;
                let ts = x.header.ts;
                let p = self.procs.entry(key).or_insert_with(|| Proc {
                    key,
                    comm: comm_str(&x.comm),
                    ppid: x.parent.tgid,
                    parent,
                    seen_ns: ts,
                    coarse: false,
                    death: None,
                    reported: false,
                    exe: None,
                });
                p.ppid = x.parent.tgid;
                p.parent = parent.or(p.parent);
                p.death = Some(Death {
                    at_ns: Some(ts),
                    status,
                    autoreap,
                });
                if let Some(pk) = parent {
                    let s = self.stats.entry(pk).or_default();
                    s.child_exits += 1;
                    if status != ExitStatus::Code(0) {
                        s.child_failures += 1;
                    }
                }
                self.parents.extend(parent);
                if !self.parents.contains(&key) {
                    return Vec::new();
                }
                let children: Vec<Key> = self
                    .procs
                    .values()
                    .filter(|c| c.parent == Some(key) && c.death.is_none())
                    .map(|c| c.key)
                    .collect();
                if children.is_empty() {
                    Vec::new()
                } else {
                    let parent_comm = self
                        .procs
                        .get(&key)
                        .map(|p| p.comm.clone())
                        .unwrap_or_default();
                    vec![Notice::Orphaned {
                        parent: key,
                        parent_comm,
                        children,
                    }]
                }
            }
            Event::Wait(w) => {
                if let Some(k) = self.resolve(&w.waiter) {
                    self.stats.entry(k).or_default().waits += 1;
                }
                Vec::new()
            }
            Event::Free(f) => {
                // Statistics may exist for a process the table never held (it forked or
                // waited before the seed saw it): they go with it.
                self.stats.remove(&Key::from(&f.task));
                let Some(key) = self.resolve(&f.task) else {
                    return Vec::new();
                };
                self.stats.remove(&key);
                self.parents.remove(&key);
                let Some(p) = self.procs.remove(&key) else {
                    return Vec::new();
                };
                let at_ns = f.header.ts;
                let dead_for_ns = p
                    .death
                    .and_then(|d| d.at_ns)
                    .map(|t| at_ns.saturating_sub(t));
                vec![Notice::Reaped {
                    proc: p,
                    dead_for_ns,
                    at_ns,
                }]
            }
        }
    }

    fn fork(&mut self, f: &Fork) {
        let creator = self
            .resolve(&f.creator)
            .unwrap_or_else(|| Key::from(&f.creator));
        let s = self.stats.entry(creator).or_default();
        if f.flags & fork_flags::THREAD != 0 {
            s.threads += 1;
            return;
        }
        s.processes += 1;
        let parent = self.resolve(&f.parent);
        self.parents.extend(parent);
        // A child born between attaching and the /proc scan is also in the seed (coarse):
        // resolving re-keys that entry, and the fork's own record replaces it.
        let key = self
            .resolve(&f.child)
            .unwrap_or_else(|| Key::from(&f.child));
        self.procs.insert(
            key,
            Proc {
                key,
                comm: comm_str(&f.comm),
                ppid: f.parent.tgid,
                parent,
                seen_ns: f.header.ts,
                coarse: false,
                death: None,
                reported: false,
                exe: None,
            },
        );
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

    /// Drops every process for which `exists` is false, with its statistics; returns how
    /// many. After lost events (a missed free would otherwise stay forever) the caller
    /// checks each against the kernel's view.
    pub fn prune(&mut self, exists: impl Fn(&Key) -> bool) -> usize {
        let before = self.procs.len();
        self.procs.retain(|k, _| exists(k));
        let procs = &self.procs;
        self.stats.retain(|k, _| procs.contains_key(k));
        self.parents.retain(|k| procs.contains_key(k));
        before - self.procs.len()
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
        let fresh: Vec<Zombie> = self
            .procs
            .values()
            .filter(|p| !p.reported)
            .filter_map(|p| self.zombie(p, now_ns, min_age_ns))
            .filter(|z| confirm(z))
            .collect();
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

#[cfg(test)]
mod tests {
    use proclens_common::{
        event::{EventHeader, kind},
        lifecycle::{Exit, Free, Wait},
    };

    use super::*;

    const TICK: u64 = 10_000_000;
    const SEC: u64 = 1_000_000_000;

    fn t(pid: u32, start_ns: u64) -> TaskRef {
        TaskRef {
            pid,
            tgid: pid,
            start_ns,
        }
    }

    fn comm(s: &str) -> [u8; 16] {
        let mut c = [0u8; 16];
        c[..s.len()].copy_from_slice(s.as_bytes());
        c
    }

    fn fork(ts: u64, parent: TaskRef, child: TaskRef) -> Event {
        Event::Fork(Fork {
            header: EventHeader {
                kind: kind::FORK,
                tid: child.pid,
                ts,
            },
            creator: parent,
            child,
            parent,
            comm: comm("child"),
            ..Default::default()
        })
    }

    fn exit(ts: u64, task: TaskRef, parent: TaskRef, code: u32, flags: u32) -> Event {
        Event::Exit(Exit {
            header: EventHeader {
                kind: kind::EXIT,
                tid: task.pid,
                ts,
            },
            task,
            parent,
            exit_code: code,
            flags,
            comm: comm("child"),
        })
    }

    fn free(ts: u64, task: TaskRef) -> Event {
        Event::Free(Free {
            header: EventHeader {
                kind: kind::FREE,
                tid: task.pid,
                ts,
            },
            task,
        })
    }

    fn seeded_parent() -> (ProcTable, TaskRef) {
        let mut tab = ProcTable::new(TICK);
        // The parent was seen in /proc at start-up: its start is known to a tick.
        tab.seed(
            &[
                SeedProc {
                    pid: 1,
                    ppid: 0,
                    start_ticks: 0,
                    comm: "init".into(),
                    zombie: false,
                    exit_code: 0,
                },
                SeedProc {
                    pid: 100,
                    ppid: 1,
                    start_ticks: 5,
                    comm: "parent".into(),
                    zombie: false,
                    exit_code: 0,
                },
            ],
            10 * SEC,
        );
        (tab, t(100, 5 * TICK + 1234))
    }

    #[test]
    fn zombies_are_blamed_on_their_parent_and_age() {
        let (mut tab, parent) = seeded_parent();
        for i in 0..3u32 {
            let child = t(200 + i, 11 * SEC + u64::from(i));
            tab.apply(&fork(11 * SEC + u64::from(i), parent, child));
            tab.apply(&exit(
                12 * SEC + u64::from(i) * SEC,
                child,
                parent,
                (i + 1) << 8,
                exit_flags::GROUP_DEAD,
            ));
        }
        // At 14.5 s: ages 2.5, 1.5, 0.5 s; min age 1 s keeps two.
        let z = tab.zombies(14 * SEC + SEC / 2, SEC);
        assert_eq!(z.len(), 2);
        assert!(z.iter().all(|z| z.ppid == 100 && z.parent_comm == "parent"));
        assert_eq!(
            (z[0].key.tgid, z[0].status, z[0].age_ns),
            (200, ExitStatus::Code(1), 2 * SEC + SEC / 2)
        );
        assert_eq!((z[1].key.tgid, z[1].status), (201, ExitStatus::Code(2)));
        assert_eq!(
            tab.zombies_per_parent(14 * SEC + SEC / 2, SEC).get(&100),
            Some(&2)
        );
        // The parent was re-keyed from its coarse seed: its fork stats are under the exact key.
        let s = tab.fork_stats(&Key::from(&parent)).unwrap();
        assert_eq!(
            (s.processes, s.threads, s.child_exits, s.child_failures),
            (3, 0, 3, 3)
        );
        // new_zombies reports each once.
        assert_eq!(tab.new_zombies(15 * SEC, SEC, |_| true).len(), 3);
        assert!(tab.new_zombies(16 * SEC, SEC, |_| true).is_empty());
        // Reaped: freed, gone, with how long they were dead.
        let n = tab.apply(&free(20 * SEC, t(200, 11 * SEC)));
        assert!(matches!(&n[..], [Notice::Reaped { dead_for_ns: Some(d), .. }] if *d == 8 * SEC));
        tab.apply(&free(20 * SEC, t(201, 11 * SEC + 1)));
        tab.apply(&free(20 * SEC, t(202, 11 * SEC + 2)));
        assert!(tab.zombies(30 * SEC, 0).is_empty());
        assert_eq!(tab.len(), 2, "only init and the parent remain");
        assert_eq!(tab.children_of(100), 0);
    }

    #[test]
    fn prune_drops_what_the_kernel_no_longer_has() {
        let (mut tab, parent) = seeded_parent();
        let gone = t(800, 11 * SEC);
        tab.apply(&fork(11 * SEC, parent, gone));
        tab.apply(&fork(11 * SEC, gone, t(801, 11 * SEC + 1)));
        assert_eq!(tab.len(), 4);
        assert_eq!(tab.prune(|k| k.tgid != 800), 1);
        assert_eq!(tab.len(), 3);
        assert!(tab.all_fork_stats().all(|(k, _)| k.tgid != 800));
    }

    #[test]
    fn autoreaped_children_are_never_zombies() {
        let (mut tab, parent) = seeded_parent();
        let child = t(300, 11 * SEC);
        tab.apply(&fork(11 * SEC, parent, child));
        tab.apply(&exit(
            11 * SEC,
            child,
            parent,
            0,
            exit_flags::GROUP_DEAD | exit_flags::AUTOREAP,
        ));
        assert!(tab.zombies(100 * SEC, 0).is_empty());
        assert!(tab.new_zombies(100 * SEC, 0, |_| true).is_empty());
    }

    #[test]
    fn pid_reuse_before_free_keeps_processes_apart() {
        let (mut tab, parent) = seeded_parent();
        let old = t(400, 11 * SEC);
        let new = t(400, 11 * SEC + 500);
        tab.apply(&fork(11 * SEC, parent, old));
        tab.apply(&exit(
            11 * SEC + 100,
            old,
            parent,
            9,
            exit_flags::GROUP_DEAD,
        ));
        // Reaped (not yet freed) and the pid already reused.
        tab.apply(&fork(11 * SEC + 500, parent, new));
        assert_eq!(tab.live_by_pid(400), Some(Key::from(&new)));
        tab.apply(&free(11 * SEC + 900, old));
        assert!(
            tab.get(&Key::from(&new)).is_some_and(|p| p.death.is_none()),
            "the new process survives the old one's free"
        );
        assert!(tab.get(&Key::from(&old)).is_none());
        // The old one died of SIGKILL.
        assert_eq!(
            ExitStatus::from_raw(9),
            ExitStatus::Signal {
                signal: 9,
                core_dumped: false
            }
        );
    }

    #[test]
    fn zombies_present_at_start_up_are_reported_with_a_lower_bound_age() {
        let mut tab = ProcTable::new(TICK);
        tab.seed(
            &[
                SeedProc {
                    pid: 50,
                    ppid: 1,
                    start_ticks: 3,
                    comm: "lazy".into(),
                    zombie: false,
                    exit_code: 0,
                },
                SeedProc {
                    pid: 51,
                    ppid: 50,
                    start_ticks: 4,
                    comm: "z".into(),
                    zombie: true,
                    exit_code: 7 << 8,
                },
            ],
            10 * SEC,
        );
        let z = tab.zombies(11 * SEC, SEC);
        assert_eq!(z.len(), 1);
        assert_eq!(
            (z[0].key.tgid, z[0].ppid, z[0].parent_comm.as_str()),
            (51, 50, "lazy")
        );
        assert_eq!(
            (z[0].status, z[0].age_ns, z[0].age_exact),
            (ExitStatus::Code(7), SEC, false)
        );
        // Its free (exact start within the seeded tick) removes it.
        let n = tab.apply(&free(12 * SEC, t(51, 4 * TICK + 77)));
        assert!(matches!(
            &n[..],
            [Notice::Reaped {
                dead_for_ns: None,
                ..
            }]
        ));
        assert!(tab.zombies(13 * SEC, 0).is_empty());
    }

    #[test]
    fn a_child_both_seeded_and_forked_is_one_process() {
        let (mut tab, parent) = seeded_parent();
        // Born after attaching, before the scan: /proc showed it, and its fork is queued.
        let child = t(600, 10 * SEC - 3);
        tab.seed(
            &[SeedProc {
                pid: 600,
                ppid: 100,
                start_ticks: child.start_ns / TICK,
                comm: "c".into(),
                zombie: false,
                exit_code: 0,
            }],
            10 * SEC,
        );
        assert_eq!(tab.len(), 3);
        tab.apply(&fork(10 * SEC - 3, parent, child));
        assert_eq!(tab.len(), 3, "no duplicate entry");
        tab.apply(&exit(11 * SEC, child, parent, 0, exit_flags::GROUP_DEAD));
        tab.apply(&free(12 * SEC, child));
        assert_eq!(tab.len(), 2, "no leak");
    }

    #[test]
    fn statistics_of_a_process_unknown_to_the_table_go_with_its_free() {
        let mut tab = ProcTable::new(TICK);
        let ghost = t(700, 5 * SEC);
        tab.apply(&fork(6 * SEC, ghost, t(701, 6 * SEC)));
        assert_eq!(tab.all_fork_stats().count(), 1);
        tab.apply(&free(7 * SEC, ghost));
        assert_eq!(tab.all_fork_stats().count(), 0);
    }

    #[test]
    fn a_parent_dying_with_live_children_orphans_them() {
        let (mut tab, parent) = seeded_parent();
        let mid = t(500, 11 * SEC);
        let grandchild = t(501, 11 * SEC + 1);
        tab.apply(&fork(11 * SEC, parent, mid));
        tab.apply(&fork(11 * SEC + 1, mid, grandchild));
        let n = tab.apply(&exit(12 * SEC, mid, parent, 0, exit_flags::GROUP_DEAD));
        assert_eq!(
            n,
            vec![Notice::Orphaned {
                parent: Key::from(&mid),
                parent_comm: "child".into(),
                children: vec![Key::from(&grandchild)]
            }]
        );
        assert_eq!(tab.reparent(Key::from(&grandchild), 1), tab.live_by_pid(1));
        assert_eq!(tab.get(&Key::from(&grandchild)).unwrap().ppid, 1);
        // Thread exits (not group-dead) and waits change no process.
        let th = TaskRef {
            pid: 502,
            tgid: 100,
            start_ns: parent.start_ns,
        };
        assert!(tab.apply(&exit(13 * SEC, th, t(1, 0), 0, 0)).is_empty());
        tab.apply(&Event::Wait(Wait {
            header: EventHeader {
                kind: kind::WAIT,
                tid: 100,
                ts: 0,
            },
            waiter: parent,
            target_pid: 0,
            _pad: 0,
        }));
        assert_eq!(tab.fork_stats(&Key::from(&parent)).unwrap().waits, 1);
    }
}
