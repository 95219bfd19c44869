//! Feeding the process table from the running system: the start-up seed (/proc, and the
//! kernel's own record of the zombies), the events, and the periodic check against /proc
//! that repairs what the events did not bring.

pub mod iter;
mod seed;
pub mod setup;

use seed::{kernel_zombies, seen_proc};
pub use seed::{remember_zombies, seed_proc, start_zombies_undated};

use std::{
    collections::BTreeMap,
    time::{Duration, Instant},
};

use proclens_common::lifecycle::{ZombieSeed, fork_flags};
use rustc_hash::FxHashSet;

use crate::{
    collect::procfs,
    model::{
        event::Event,
        proctable::{Heir, KernelState, Key, Missed, Notice, ProcTable, SeedProc},
    },
};

/// How often the table is checked against /proc (at most; views check at each report or
/// poll): processes gone or dead unseen are repaired within this, plus one report.
pub const REPAIR_PERIOD: Duration = Duration::from_secs(2);
/// How long after its reap a process may wait for its free before the table lets it go
/// (the kernel frees tasks lazily, seconds later under a fork storm).
pub const RELEASE_GRACE_NS: u64 = 2_000_000_000;
/// Notices kept for a view that does not take them, at most (oldest dropped first).
const MAX_NOTICES: usize = 65_536;

/// What the table starts from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Seed {
    /// Every process /proc shows (the system-wide views).
    Proc,
    /// Only these processes (`run`: its command, whose descendants the events bring).
    Pids(Vec<u32>),
}

/// Which reaps its reader is told of.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reaps {
    /// Those of zombies it reported (`zombies`, `top`): a fork storm's hundreds of
    /// thousands of reaps a second are none of its business.
    Reported,
    /// Every one (`run`, which judges each reap's delay itself).
    All,
}

/// How a view keeps its process table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LifecycleOptions {
    pub seed: Seed,
    /// The tracer's cgroup filter hides the forks and exits outside it: processes the
    /// table holds from the seed are then found gone through /proc, which is no repair.
    pub exits_filtered: bool,
    pub reaps: Reaps,
}

impl Default for LifecycleOptions {
    fn default() -> Self {
        Self {
            seed: Seed::Proc,
            exits_filtered: false,
            reaps: Reaps::Reported,
        }
    }
}

/// Processes and threads created, as the fork events counted them.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Forked {
    pub processes: u64,
    pub threads: u64,
}

/// A /proc scan waiting to be judged: it may only judge the table once every event
/// stamped before it has been applied (the stream's watermark passed it).
#[derive(Debug)]
enum Scan {
    /// The pids /proc listed (the check every period).
    Pids(u64, FxHashSet<u32>),
    /// Every process with its state (the check after lost events).
    Full(u64, Vec<SeedProc>),
}

impl Scan {
    fn at_ns(&self) -> u64 {
        match self {
            Scan::Pids(at, _) | Scan::Full(at, _) => *at,
        }
    }
}

/// The process table fed from the ring buffer and checked against /proc: the one
/// lifecycle every view keeps (`zombies`, `top`'s column, `serve`'s gauges, `run`'s
/// report), with its options.
///
/// ```text
/// let tracer = Tracer::start(..)?;                      // attach first,
/// let mut life = Lifecycle::start(&Default::default());  // then seed
/// life.apply_one(&event); ... life.end_batch();         // as the driver hands events
/// life.check(lost_events, driver.watermark());          // at every report or poll
/// let zombies = life.zombies_per_parent(1_000_000_000); // ppid -> zombies >= 1 s old
/// for n in life.take_notices() { /* orphans, reaps */ }
/// ```
#[derive(Debug)]
pub struct Lifecycle {
    pub table: ProcTable,
    /// ns per /proc clock tick.
    pub tick_ns: u64,
    pub forked: Forked,
    notices: Vec<Notice>,
    /// Which reap notices are kept for the reader.
    reaps: Reaps,
    missed: Missed,
    scan: Option<Scan>,
    last_scan: Instant,
    /// The drop count at the last full check.
    lost_seen: u64,
    /// Notices dropped because nobody took them.
    pub notices_dropped: u64,
}

impl Lifecycle {
    /// A table seeded now as `opts` says. Start the tracer first.
    pub fn start(opts: &LifecycleOptions) -> Self {
        let tick_ns = procfs::tick_ns();
        let mut table = ProcTable::new(tick_ns);
        let procs: Vec<SeedProc> = match &opts.seed {
            Seed::Proc => procfs::processes().into_iter().map(seed_proc).collect(),
            Seed::Pids(pids) => pids
                .iter()
                .filter_map(|&p| procfs::stat(p))
                .map(seed_proc)
                .collect(),
        };
        table.seed(&procs, procfs::boot_ns());
        Self {
            table,
            tick_ns,
            forked: Forked::default(),
            notices: Vec::new(),
            reaps: opts.reaps,
            missed: if opts.exits_filtered {
                Missed::Expected
            } else {
                Missed::Repair
            },
            scan: None,
            last_scan: Instant::now(),
            lost_seen: 0,
            notices_dropped: 0,
        }
    }

    /// Applies `ev` if it is a lifecycle event (returns whether it was). Call
    /// [`Lifecycle::end_batch`] after the events at hand.
    pub fn apply_one(&mut self, ev: &Event) -> bool {
        match ev {
            Event::ThreadExit(_) => return false,
            Event::Fork(f) if f.flags & fork_flags::THREAD != 0 => self.forked.threads += 1,
            Event::Fork(_) => self.forked.processes += 1,
            _ => {}
        }
        let before = self.notices.len();
        self.table.apply(ev, &mut self.notices);
        if self.notices.len() > before {
            self.keep_wanted(before);
            self.ask_heirs(before);
        }
        true
    }

    /// Drops the reap notices from `from` on that the reader does not want (see
    /// [`Reaps`]), in place: the notices' room is kept, nothing is allocated.
    fn keep_wanted(&mut self, from: usize) {
        if self.reaps == Reaps::All {
            return;
        }
        let mut kept = from;
        for i in from..self.notices.len() {
            if !self.notices[i].unreported_reap() {
                self.notices.swap(kept, i);
                kept += 1;
            }
        }
        self.notices.truncate(kept);
    }

    /// Orphans whose new parent the kernel could not be asked for as their parent died:
    /// /proc shows it now (re-parenting is done by the time the event is read).
    fn ask_heirs(&mut self, from: usize) {
        for i in from..self.notices.len() {
            let Notice::Orphaned { children, heir, .. } = &self.notices[i] else {
                continue;
            };
            if heir.is_some() {
                continue;
            }
            let children = children.clone();
            let mut found = None;
            for c in children {
                if let Some(s) = procfs::stat_of(c.tgid, c.start_ns, self.tick_ns) {
                    let key = self.table.reparent(c, s.ppid);
                    found = Some(Heir {
                        tgid: s.ppid,
                        key,
                        comm: self.parent_comm(key, s.ppid),
                    });
                }
            }
            if let Notice::Orphaned { heir, .. } = &mut self.notices[i] {
                *heir = found;
            }
        }
    }

    /// The name of a parent: the table's, else /proc's, else `?`.
    pub fn parent_comm(&self, key: Option<Key>, pid: u32) -> String {
        key.and_then(|k| self.table.get(&k))
            .map(|p| p.comm.to_string())
            .or_else(|| procfs::comm(pid))
            .unwrap_or_else(|| "?".into())
    }

    /// After a batch of events: bounds the notices nobody took.
    pub fn end_batch(&mut self) {
        if self.notices.len() > MAX_NOTICES {
            let extra = self.notices.len() - MAX_NOTICES;
            self.notices.drain(..extra);
            self.notices_dropped += extra as u64;
        }
    }

    /// The check against /proc; call it at every report or poll with the ring drop count
    /// and the event stream's watermark (after its drain). Every [`REPAIR_PERIOD`] it
    /// reads which processes /proc lists; after lost events, every process's state, and
    /// the kernel's record of the zombies (`zombies_now`: their exit codes and when they
    /// last ran, which /proc does not show). A scan judges the table at the first call
    /// after the watermark passed it.
    pub fn check(
        &mut self,
        lost_events: u64,
        watermark: u64,
        zombies_now: impl FnOnce() -> Option<Vec<ZombieSeed>>,
    ) {
        self.table.give_back_spare();
        if let Some(scan) = self.scan.take_if(|s| watermark > s.at_ns()) {
            let before = self.notices.len();
            let missed = self.missed;
            let notices = &mut self.notices;
            match scan {
                Scan::Pids(at, pids) => {
                    self.table
                        .check_pids(at, &pids, RELEASE_GRACE_NS, missed, notices);
                }
                Scan::Full(at, procs) => {
                    self.table.reconcile(at, &procs, missed, notices);
                }
            }
            self.keep_wanted(before);
        }
        let lost = lost_events > self.lost_seen;
        if self.scan.is_some() || !(lost || self.last_scan.elapsed() >= REPAIR_PERIOD) {
            return;
        }
        self.last_scan = Instant::now();
        let at = procfs::boot_ns();
        self.scan = Some(if lost {
            self.lost_seen = lost_events;
            let kernel = zombies_now().map(|z| kernel_zombies(&z, self.tick_ns));
            let procs = procfs::processes()
                .into_iter()
                .map(|s| seen_proc(s, kernel.as_ref()))
                .collect();
            Scan::Full(at, procs)
        } else {
            Scan::Pids(at, procfs::pids())
        });
    }

    /// Records that proclens reaped the dead process `pid` at `at_ns` (boot clock).
    pub fn reaped_by_proclens(&mut self, pid: u32, at_ns: u64) {
        let before = self.notices.len();
        self.table.reaped_unseen(pid, at_ns, &mut self.notices);
        self.keep_wanted(before);
    }

    /// Whether every process the table saw die has been reaped.
    pub fn all_dead_reaped(&self) -> bool {
        self.table.zombies(procfs::boot_ns(), 0).is_empty()
    }

    /// What the table noticed since the last call (reaps, orphans).
    pub fn take_notices(&mut self) -> Vec<Notice> {
        std::mem::take(&mut self.notices)
    }

    /// Zombies at least `min_age_ns` old per parent pid, now.
    #[allow(dead_code, reason = "API for `top`'s zombies column")]
    pub fn zombies_per_parent(&self, min_age_ns: u64) -> BTreeMap<u32, usize> {
        self.table.zombies_per_parent(procfs::boot_ns(), min_age_ns)
    }

    /// Zombies that reached `min_age_ns` since the last call, as the kernel shows them now
    /// (see [`ProcTable::new_zombies`]).
    pub fn new_zombies(&mut self, min_age_ns: u64) -> Vec<crate::model::proctable::Zombie> {
        let (tick_ns, before) = (self.tick_ns, self.notices.len());
        let zombies = self.table.new_zombies(
            procfs::boot_ns(),
            min_age_ns,
            |k| kernel_state(k, tick_ns),
            &mut self.notices,
        );
        self.keep_wanted(before);
        zombies
    }
}

/// Whether `/proc` still shows the process `key` (same pid, same start tick) as a zombie.
pub fn is_zombie_now(key: &Key, tick_ns: u64) -> bool {
    kernel_state(key, tick_ns) == KernelState::Zombie
}

/// What `/proc` shows of the dead process `key` (same pid, same start tick).
pub fn kernel_state(key: &Key, tick_ns: u64) -> KernelState {
    match procfs::stat_of(key.tgid, key.start_ns, tick_ns) {
        None => KernelState::Released,
        Some(s) if s.is_zombie() => KernelState::Zombie,
        Some(_) => KernelState::Dying,
    }
}

#[cfg(test)]
mod tests;
