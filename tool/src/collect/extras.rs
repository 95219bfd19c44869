//! Per-process figures beyond context switches that the interval views join to their rows:
//! syscalls and copy paths (when the tracer counts them) and, from the process table fed
//! by the lifecycle events, the zombies each parent holds and its fork statistics.

use std::collections::HashMap;

use anyhow::{Context as _, Result};

use super::{
    cgroup,
    forks::{AfterFork, ForksCollector},
    gone,
    lifecycle::{self, Lifecycle, LifecycleOptions},
    procfs::{self, CommCache},
    tracer::Tracer,
};
use crate::model::{
    copy_report::{CopiesModel, ProcRow},
    event::Event,
    proctable::{ForkStats, Key, Notice, Zombie},
};

/// A process is a zombie in the views once it has been dead and unreaped this long (the
/// `zombies` view's default `--min-age`).
pub const ZOMBIE_MIN_AGE_NS: u64 = 1_000_000_000;

/// What the views asked for beyond switches.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ExtrasOptions {
    /// Keep the process table (zombies per parent, fork statistics, reap notices) so.
    pub lifecycle: Option<LifecycleOptions>,
    /// Under `--cgroup`: only zombies whose parent is in that cgroup subtree (the process
    /// table, seeded from /proc, covers the whole machine).
    pub cgroup: Option<std::path::PathBuf>,
    /// With the after-fork programs: also read every process's fd table each interval.
    pub fd_tables: super::forks::FdTables,
}

/// One parent's fork statistics over an interval.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ForkRow {
    pub tgid: u32,
    pub comm: String,
    pub delta: ForkStats,
}

/// One interval's extra figures.
#[derive(Debug, Clone, Default)]
pub struct Extras {
    /// Syscalls and copy paths per process, busiest first (copy paths empty unless the
    /// tracer accounts them); `None` when the tracer does not count syscalls.
    pub procs: Option<Vec<ProcRow>>,
    /// The command names of `procs`' processes.
    pub proc_comms: HashMap<Key, String>,
    /// `procs`' processes that have gone: this is their last interval (their map entries
    /// are deleted after it).
    pub gone: gone::Gone,
    /// Processes that held an `io_uring` fd when proclens started (by pid), flagged like
    /// `io_uring`'s syscalls flag `procs`' rows.
    pub io_uring_at_start: Vec<u32>,
    /// Zombies at least [`ZOMBIE_MIN_AGE_NS`] old that /proc still shows as zombies;
    /// `None` without a process table.
    pub zombies: Option<Vec<Zombie>>,
    /// Parents that forked, saw children exit or waited in the interval.
    pub forks: Vec<ForkRow>,
    /// What the process table noticed in the interval (reaps with their delay, orphans).
    pub notices: Vec<Notice>,
    /// Fork costs, copy-on-write faults, execs' inherited fds and fd tables; `None`
    /// without the after-fork programs.
    pub after_fork: Option<AfterFork>,
    /// Zombies of any age on the whole machine (the `--cgroup` filter aside) that /proc
    /// still shows as zombies; `None` without a process table.
    pub all_zombies: Option<usize>,
    /// The process table's size and repairs; `None` without a process table.
    pub table: Option<TableSize>,
    /// The machine's pid headroom, read with the process table's figures.
    pub headroom: Option<crate::model::parent_info::Headroom>,
}

/// The process table's size and the corrections its checks against /proc made.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct TableSize {
    /// Processes tracked now (live, zombies, and reaped ones not yet freed).
    pub tracked: usize,
    /// Entries corrected since the start (processes whose fork or exit the events never
    /// brought).
    pub repairs: u64,
}

impl Extras {
    /// Zombies held per parent pid.
    pub fn zombies_of(&self, ppid: u32) -> Option<usize> {
        self.zombies
            .as_ref()
            .map(|z| z.iter().filter(|z| z.ppid == ppid).count())
    }

    /// Each parent holding zombies, once, with its command: the views list these even
    /// when they have not switched (they sleep while their children wait to be reaped).
    pub fn zombie_parents(&self) -> Vec<(u32, &str)> {
        let mut v: Vec<(u32, &str)> = self
            .zombies
            .iter()
            .flatten()
            .map(|z| (z.ppid, z.parent_comm.as_str()))
            .collect();
        v.sort_unstable();
        v.dedup_by_key(|p| p.0);
        v
    }

    /// The syscall and copy row of the process with this pid (the latest started, when
    /// the pid was reused within the interval).
    pub fn proc_row(&self, tgid: u32) -> Option<&ProcRow> {
        self.procs
            .as_ref()?
            .iter()
            .filter(|r| r.tgid == tgid)
            .max_by_key(|r| r.start_ns)
    }
}

/// Keeps the models behind [`Extras`] between intervals.
#[derive(Debug)]
pub struct ExtrasCollector {
    copies: Option<CopiesModel>,
    /// Processes holding an `io_uring` fd at start-up: pid → start (clock ticks).
    io_uring_at_start: HashMap<u32, u64>,
    life: Option<Lifecycle>,
    forks: Option<ForksCollector>,
    comms: CommCache<Key>,
    last_forks: HashMap<Key, ForkStats>,
    /// The event stream's watermark after the last batch.
    watermark: u64,
    opts: ExtrasOptions,
}

impl ExtrasCollector {
    /// Starts the models; call it after the tracer is attached (the process table is
    /// seeded from /proc here) and before the first interval.
    pub fn start(tracer: &mut Tracer, opts: ExtrasOptions) -> Result<Self> {
        let copies = match tracer.copy_maps() {
            Some(maps) => {
                let mut m = CopiesModel::new();
                // Counts before the first interval belong to no report.
                m.update(&maps.copies()?, &maps.syscalls()?);
                Some(m)
            }
            None => None,
        };
        let forks = match tracer.forks_maps() {
            Some(_) => Some(ForksCollector::start(tracer, opts.fd_tables)?),
            None => None,
        };
        Ok(Self {
            io_uring_at_start: procfs::io_uring_at_start(),
            copies,
            forks,
            life: opts.lifecycle.as_ref().map(Lifecycle::start),
            comms: CommCache::default(),
            last_forks: HashMap::new(),
            watermark: 0,
            opts,
        })
    }

    /// Applies a lifecycle event to the process table when it is kept; returns whether it
    /// was one (thread exits are the switch model's). Call it as events arrive, so the
    /// table stays current and a fork storm does not pile events up in memory.
    pub fn absorb(&mut self, ev: &Event) -> bool {
        if let Some(f) = &mut self.forks
            && f.absorb(ev)
        {
            return true;
        }
        match &mut self.life {
            Some(life) => life.apply_one(ev),
            None => ev.thread_exit().is_none(),
        }
    }

    /// The process table, when kept.
    pub fn lifecycle_mut(&mut self) -> Option<&mut Lifecycle> {
        self.life.as_mut()
    }

    /// After a batch of events (see [`Lifecycle::end_batch`]), with the event stream's
    /// watermark after it.
    pub fn end_batch(&mut self, watermark: u64) {
        self.watermark = watermark;
        if let Some(life) = &mut self.life {
            life.end_batch();
        }
    }

    /// One interval's figures. `lost_events` is the ring buffer's drop count: the process
    /// table is checked against /proc (in full when it grew, see [`Lifecycle::check`]).
    /// `exited`: the processes the events saw die lately.
    pub fn tick(
        &mut self,
        tracer: &mut Tracer,
        lost_events: u64,
        exited: &gone::Exited,
    ) -> Result<Extras> {
        let mut out = Extras::default();
        if let Some(model) = &mut self.copies {
            let maps = tracer.copy_maps().context("copy maps not loaded")?;
            let mut snap = maps.snapshot()?;
            let gone = gone::gone(&snap.processes(), procfs::tick_ns(), exited);
            // Gone processes have their last interval now: their final figures (what
            // they did after the snapshot included), then their entries freed.
            snap.update(maps.take_gone(&gone)?);
            let mut rows = model.update(&snap.copies, &snap.syscalls);
            let tick_ns = procfs::tick_ns();
            for r in &mut rows {
                if self.io_uring_at_start.get(&r.tgid) == Some(&(r.start_ns / tick_ns)) {
                    r.syscalls.io_uring = true;
                }
            }
            out.io_uring_at_start = self.io_uring_at_start.keys().copied().collect();
            for r in &rows {
                // /proc while the process lives; for one gone before it was seen alive,
                // the name the kernel recorded.
                let alive = !gone.contains(&r.key());
                let mut comm = self.comms.get(r.key(), r.tgid, alive, None);
                if comm == "?"
                    && let Some(k) = maps.comm(r.key())
                {
                    comm = k;
                }
                out.proc_comms.insert(r.key(), comm);
            }
            self.comms.retain(|k| !gone.contains(k));
            maps.forget_names(&gone)?;
            out.procs = Some(rows);
            out.gone = gone;
        }
        if let Some(life) = &mut self.life {
            life.check(lost_events, self.watermark, || tracer.zombies_now().ok());
            let tick_ns = life.tick_ns;
            out.zombies = Some(
                life.table
                    .zombies(procfs::boot_ns(), ZOMBIE_MIN_AGE_NS)
                    .into_iter()
                    .filter(|z| lifecycle::is_zombie_now(&z.key, tick_ns))
                    .filter(|z| {
                        self.opts
                            .cgroup
                            .as_deref()
                            .is_none_or(|c| cgroup::holds(c, z.ppid))
                    })
                    .collect(),
            );
            let mut now: HashMap<Key, ForkStats> = HashMap::new();
            for (k, s) in life.table.all_fork_stats() {
                now.insert(*k, *s);
                let delta = s.since(&self.last_forks.get(k).copied().unwrap_or_default());
                if delta != ForkStats::default() {
                    out.forks.push(ForkRow {
                        tgid: k.tgid,
                        comm: life
                            .table
                            .get(k)
                            .map_or_else(|| "?".into(), |p| p.comm.to_string()),
                        delta,
                    });
                }
            }
            self.last_forks = now;
            out.notices = life.take_notices();
            out.all_zombies = Some(
                life.table
                    .zombies(procfs::boot_ns(), 0)
                    .iter()
                    .filter(|z| lifecycle::is_zombie_now(&z.key, tick_ns))
                    .count(),
            );
            out.table = Some(TableSize {
                tracked: life.table.len(),
                repairs: life.table.repairs(),
            });
            out.headroom = super::parents::headroom();
        }
        if let Some(f) = &mut self.forks {
            out.after_fork = Some(f.tick(tracer, exited)?);
        }
        Ok(out)
    }
}
