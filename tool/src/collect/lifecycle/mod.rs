//! Feeding the process table from the running system: the /proc seed at start-up and the
//! kernel's answer, through /proc, to "who is this orphan's parent now?".

pub mod setup;

use std::{
    collections::BTreeMap,
    time::{Duration, Instant},
};

use proclens_common::lifecycle::fork_flags;

use crate::{
    collect::procfs,
    model::{
        event::Event,
        proctable::{KernelState, Key, Notice, ProcTable, SeedProc},
    },
};

/// How long after its death a reaped process may wait for its free before the table lets
/// it go without one.
pub const RELEASE_GRACE_NS: u64 = 2_000_000_000;

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
    /// The tracer's cgroup filter hides the exits of processes outside it, which the
    /// table holds from the seed and must then find gone through /proc.
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

/// The process table fed from the ring buffer, with the orphans whose new parent is still
/// to be read: the one lifecycle every view keeps (`zombies`, `top`'s column, `serve`'s
/// gauges, `run`'s report), with its options.
///
/// ```text
/// let tracer = Tracer::start(..)?;                      // attach first,
/// let mut life = Lifecycle::start(Default::default());   // then seed from /proc
/// life.apply_one(&event); ... life.end_batch();         // as the driver hands events
/// let zombies = life.zombies_per_parent(1_000_000_000); // ppid -> zombies >= 1 s old
/// for n in life.take_notices() { /* orphans, reaps */ }
/// ```
#[derive(Debug)]
pub struct Lifecycle {
    pub table: ProcTable,
    pub orphans: Orphans,
    /// ns per /proc clock tick.
    pub tick_ns: u64,
    pub forked: Forked,
    notices: Vec<Notice>,
    reaps: Reaps,
    /// When [`ProcTable::sweep_unnamed`] last ran; `None`: it never runs, as every exit
    /// is seen (no cgroup filter hides any).
    unnamed_swept: Option<Instant>,
}

impl Lifecycle {
    /// A table seeded now as `opts` says. Start the tracer first.
    pub fn start(opts: LifecycleOptions) -> Self {
        let tick_ns = procfs::tick_ns();
        let mut table = ProcTable::new(tick_ns);
        match &opts.seed {
            Seed::Proc => seed(&mut table),
            Seed::Pids(pids) => {
                let procs: Vec<SeedProc> = pids
                    .iter()
                    .filter_map(|&p| procfs::stat(p))
                    .map(seed_proc)
                    .collect();
                table.seed(&procs, procfs::boot_ns());
            }
        }
        Self {
            table,
            orphans: Orphans::default(),
            tick_ns,
            forked: Forked::default(),
            notices: Vec::new(),
            reaps: opts.reaps,
            unnamed_swept: opts.exits_filtered.then(Instant::now),
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
        // A free makes one notice, its reap.
        if self.reaps == Reaps::Reported
            && self.notices.len() > before
            && matches!(self.notices.last(), Some(Notice::Reaped { proc, .. }) if !proc.reported)
        {
            self.notices.pop();
        }
        for n in &self.notices[before..] {
            if let Notice::Orphaned {
                parent,
                parent_comm,
                children,
            } = n
            {
                self.orphans.watch(children, parent.tgid, parent_comm);
            }
        }
        true
    }

    /// After a batch of events: once per batch, not per event (thread frees may come by
    /// the thousand), releases the zombies found at start-up whose free may have been
    /// among them.
    pub fn end_batch(&mut self) {
        if let Some(at_ns) = self.table.take_unmatched_free() {
            let tick_ns = self.tick_ns;
            let reaped = self
                .table
                .release_seeded_zombies(at_ns, |k| gone(k, tick_ns));
            self.notices.extend(reaped);
        }
    }

    /// After lost events: forgets processes the kernel no longer has (their free event
    /// may be among the lost), so the table cannot grow without bound. Returns how many.
    pub fn reconcile(&mut self) -> usize {
        let tick_ns = self.tick_ns;
        self.table.prune(|k| !gone(k, tick_ns))
    }

    /// Drops dead processes the kernel has reaped (gone from /proc) but not freed within
    /// [`RELEASE_GRACE_NS`] of their death (see [`ProcTable::sweep_released`]), and under
    /// a cgroup filter, every [`RELEASE_GRACE_NS`], the live ones gone unseen (see
    /// [`ProcTable::sweep_unnamed`]); call it every interval. A reported zombie's reaped
    /// notice is queued.
    pub fn sweep(&mut self) {
        let tick_ns = self.tick_ns;
        let notices = self
            .table
            .sweep_released(procfs::boot_ns(), RELEASE_GRACE_NS, |k| gone(k, tick_ns));
        self.notices.extend(notices);
        // Rarely: it reads /proc for every process no event has named yet.
        if let Some(last) = &mut self.unnamed_swept
            && last.elapsed() >= Duration::from_nanos(RELEASE_GRACE_NS)
        {
            *last = Instant::now();
            self.table.sweep_unnamed(|k| gone(k, tick_ns));
        }
    }

    /// Whether every process the table saw die has been freed (or released).
    pub fn all_dead_freed(&self) -> bool {
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
}

/// Seeds `table` from /proc. Call it after the programs are attached and before the first
/// events are applied, so every process is either seen here or born in the event stream.
pub fn seed(table: &mut ProcTable) {
    let procs: Vec<SeedProc> = procfs::processes()
        .into_iter()
        // `X` (dead) is a reaped task on its way out: not a process any more.
        .filter(|s| s.state != 'X')
        .map(seed_proc)
        .collect();
    table.seed(&procs, procfs::boot_ns());
}

/// The exit codes of the zombies that existed when the programs were attached, read
/// while proclens was still privileged: /proc shows a process's exit code only to who may
/// ptrace it (`/proc/PID/stat` field 52), and the seed is read once privileges are gone.
/// Processes that die later have their code in their exit event.
static ZOMBIE_CODES: std::sync::OnceLock<std::collections::HashMap<(u32, u64), u32>> =
    std::sync::OnceLock::new();

/// Reads the zombies' exit codes for the seed (see [`ZOMBIE_CODES`]); call it after the
/// programs are attached and before privileges are dropped.
pub fn remember_zombie_codes() {
    ZOMBIE_CODES.get_or_init(|| {
        procfs::processes()
            .into_iter()
            .filter(procfs::Stat::is_zombie)
            .map(|s| ((s.pid, s.start_ticks), s.exit_code))
            .collect()
    });
}

/// A process as /proc shows it, for [`ProcTable::seed`].
pub fn seed_proc(s: procfs::Stat) -> SeedProc {
    let zombie = s.is_zombie();
    let exit_code = match ZOMBIE_CODES
        .get()
        .and_then(|c| c.get(&(s.pid, s.start_ticks)))
    {
        Some(&code) if zombie => code,
        _ => s.exit_code,
    };
    SeedProc {
        pid: s.pid,
        ppid: s.ppid,
        start_ticks: s.start_ticks,
        zombie,
        comm: s.comm,
        exit_code,
    }
}

/// Whether `/proc` no longer shows the process `key` (same pid, same start tick): the
/// kernel has released it.
fn gone(key: &Key, tick_ns: u64) -> bool {
    procfs::stat_of(key.tgid, key.start_ns, tick_ns).is_none()
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

/// Children whose parent died: the kernel re-parents them in `exit_notify`, just after the
/// exit event, so the new parent is read from /proc until it has changed.
#[derive(Debug, Default)]
pub struct Orphans {
    pending: Vec<Pending>,
}

#[derive(Debug)]
struct Pending {
    child: Key,
    old_ppid: u32,
    old_parent_comm: String,
    until: Instant,
}

/// How long to keep asking for an orphan's new parent.
const REPARENT_WAIT: Duration = Duration::from_secs(2);

impl Orphans {
    pub fn watch(&mut self, children: &[Key], old_ppid: u32, old_parent_comm: &str) {
        let until = Instant::now() + REPARENT_WAIT;
        self.pending.extend(children.iter().map(|k| Pending {
            child: *k,
            old_ppid,
            old_parent_comm: old_parent_comm.to_string(),
            until,
        }));
    }

    /// Orphans whose new parent the kernel now shows. An orphan that died meanwhile (its
    /// pid gone or reused) is dropped.
    pub fn resolved(&mut self, tick_ns: u64) -> Vec<Reparented> {
        let now = Instant::now();
        let mut out = Vec::new();
        self.pending.retain(|p| {
            let Some(s) = procfs::stat_of(p.child.tgid, p.child.start_ns, tick_ns) else {
                return false;
            };
            if s.ppid != p.old_ppid {
                out.push(Reparented {
                    child: p.child,
                    old_ppid: p.old_ppid,
                    old_parent_comm: p.old_parent_comm.clone(),
                    new_ppid: s.ppid,
                });
                return false;
            }
            now < p.until
        });
        out
    }
}

/// An orphan and its new parent, as the kernel shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reparented {
    pub child: Key,
    pub old_ppid: u32,
    pub old_parent_comm: String,
    pub new_ppid: u32,
}

#[cfg(test)]
mod tests {
    use proclens_common::{
        event::{EventHeader, ThreadExit, kind},
        lifecycle::{Fork, TaskRef},
    };

    use super::*;

    #[test]
    fn lifecycle_events_are_applied_and_thread_exits_left() {
        let mut life = Lifecycle::start(LifecycleOptions::default());
        // This very process is in the seed; one fork of it adds a child.
        let me = procfs::stat(std::process::id()).unwrap();
        let me_ref = TaskRef {
            pid: me.pid,
            tgid: me.pid,
            start_ns: me.start_ticks * life.tick_ns,
        };
        let before = life.table.len();
        let exit = |tid| ThreadExit {
            header: EventHeader {
                kind: kind::THREAD_EXIT,
                tid,
                ts: 0,
            },
            ..Default::default()
        };
        let fork = Fork {
            header: EventHeader {
                kind: kind::FORK,
                tid: u32::MAX - 1,
                ts: 1,
            },
            creator: me_ref,
            child: TaskRef {
                pid: u32::MAX - 1,
                tgid: u32::MAX - 1,
                start_ns: u64::MAX / 2,
            },
            parent: me_ref,
            ..Default::default()
        };
        let events = [
            Event::ThreadExit(Box::new(exit(1))),
            Event::Fork(fork),
            Event::ThreadExit(Box::new(exit(2))),
        ];
        let taken: Vec<bool> = events.iter().map(|e| life.apply_one(e)).collect();
        life.end_batch();
        assert_eq!(
            taken,
            [false, true, false],
            "thread exits are the switch model's"
        );
        assert_eq!(life.table.len(), before + 1);
        assert_eq!(
            life.forked,
            Forked {
                processes: 1,
                threads: 0
            }
        );
        assert_eq!(
            life.table.fork_stats_of_pid(me.pid).map(|s| s.processes),
            Some(1)
        );
        assert!(life.take_notices().is_empty());
    }
}
