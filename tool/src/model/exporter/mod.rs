//! Cumulative counters for the Prometheus exporter, aggregated by label set (command and
//! the attribution labels `--labels` chose; optionally pid). Counters only go up: a
//! process that exits keeps its contribution in its label set, so rates stay right across
//! process churn.
//!
//! Cardinality: a label set stays while any of its processes is left and `--expire` after
//! that; with `--per-pid` every series of a process is dropped in the interval its exit
//! is seen. Whoever names a process chooses its `comm`, so the number of label sets is
//! capped too: [`cardinality`] folds the sets that would take `/metrics` past
//! `--max-series` into `comm="other"`.

pub mod blocked;
pub mod cardinality;
pub mod host;

use std::{collections::BTreeMap, sync::Arc};

use super::{copies, irq::Taken, parent_info::CgroupPids, proctable::ForkStats, switches::Counts};
pub use blocked::{Blocked, BlockedDelta};
pub use cardinality::Guard;
pub use host::{HostGauges, SCRAPE_BUCKETS, ScrapeDurations, SelfGauges};

/// The attribution labels of a label set: (name, value) pairs in a fixed order, shared by
/// every process of one cgroup (cloning one is a reference count).
pub type Attrs = Arc<[(&'static str, Arc<str>)]>;

/// The labels one series carries: the command, the attribution labels, the pid.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Labels {
    /// `None` when `--labels` leaves the command out.
    pub comm: Option<String>,
    pub attrs: Attrs,
    /// Only with `--per-pid`.
    pub pid: Option<u32>,
}

impl Labels {
    /// A label set of a command and attribution labels.
    #[cfg(test)]
    pub fn new(comm: &str, attrs: &[(&'static str, &str)]) -> Self {
        Self {
            comm: Some(comm.to_string()),
            attrs: attrs.iter().map(|&(k, v)| (k, Arc::from(v))).collect(),
            pid: None,
        }
    }

    /// Every label as (name, value), in the order they are shown.
    pub fn pairs(&self) -> Vec<(&'static str, String)> {
        let mut v = Vec::with_capacity(self.attrs.len() + 2);
        if let Some(c) = &self.comm {
            v.push(("comm", c.clone()));
        }
        v.extend(self.attrs.iter().map(|(k, val)| (*k, val.to_string())));
        if let Some(pid) = self.pid {
            v.push(("pid", pid.to_string()));
        }
        v
    }
}

/// System-wide switch totals.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SystemTotals {
    pub switches: u64,
    pub same_process: u64,
    pub cross_process: u64,
    pub idle_or_kernel: u64,
}

/// A BPF program's own cost, from the kernel's `bpf_stats` (0 when they are off).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProgramCost {
    pub name: String,
    pub run_time_ns: u64,
    pub run_count: u64,
}

/// A copy path within a label set: syscall and the fd kinds on each side.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct PathKey {
    pub op: u8,
    pub src: u8,
    pub dst: u8,
}

/// The in-kernel counters of what could not be recorded, cumulative since proclens
/// attached (the kernel's own running sums).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[allow(
    clippy::struct_field_names,
    reason = "each names the map or ring that was full"
)]
pub struct KernelDrops {
    /// Ring-buffer reservations that failed (events lost).
    pub ringbuf_full: u64,
    /// Threads the per-thread switch map had no room for.
    pub thread_map_full: u64,
    /// File reads or socket writes left out of the sendfile pairing: per-thread pairing
    /// map full (the calls are counted).
    pub inflight_map_full: u64,
    /// Copy-family calls not accounted: per-path map full.
    pub copy_map_full: u64,
    /// Syscalls not counted: per-process syscall map full.
    pub syscall_map_full: u64,
    /// Blocks not charged to their syscall: per-process wait map full.
    pub wait_map_full: u64,
    /// Readiness calls not counted (or epoll interest sets not kept): a readiness map
    /// full.
    pub ready_map_full: u64,
}

impl KernelDrops {
    /// (label value, count) of each counter, in a fixed order.
    pub fn named(&self) -> [(&'static str, u64); Self::REASONS] {
        [
            ("ringbuf_full", self.ringbuf_full),
            ("thread_map_full", self.thread_map_full),
            ("inflight_map_full", self.inflight_map_full),
            ("copy_map_full", self.copy_map_full),
            ("syscall_map_full", self.syscall_map_full),
            ("wait_map_full", self.wait_map_full),
            ("ready_map_full", self.ready_map_full),
        ]
    }

    /// Reasons (series of `proclens_dropped_total`).
    pub const REASONS: usize = 7;
}

/// Interrupts by CPU and kind: the kernel's totals since proclens attached (count, ns).
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct IrqTotals {
    /// By (CPU, softirq vector).
    pub softirqs: BTreeMap<(u32, &'static str), (u64, u64)>,
    /// By (CPU, /proc/interrupts row, handler or vector name).
    pub hardirqs: BTreeMap<(u32, String, String), (u64, u64)>,
}

/// The interrupt time a process lost over one interval.
pub struct StolenDelta {
    pub labels: Labels,
    pub delta: Taken,
    pub alive: bool,
}

/// Labels of the zombies gauge: the parent's command (and pid with `--per-pid`).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ZombieLabels {
    pub parent_comm: String,
    pub parent_pid: Option<u32>,
}

/// Everything `/metrics` shows.
#[derive(Debug, Default, Clone)]
pub struct ExporterState {
    /// Totals of each label set (the switch model's own counts, summed).
    pub series: BTreeMap<Labels, Counts>,
    pub system: SystemTotals,
    pub lost_events: u64,
    pub untracked_threads: u64,
    pub programs: Vec<ProgramCost>,
    pub collections: u64,
    /// Syscalls (user→kernel mode switches) of each label set; empty when not counted.
    pub syscalls: BTreeMap<Labels, u64>,
    /// Whether syscalls are counted (the family is shown, even empty).
    pub syscalls_counted: bool,
    /// Copy paths of each label set; empty when copy accounting is off.
    pub copies: BTreeMap<Labels, BTreeMap<PathKey, copies::Counts>>,
    /// Whether copy paths are accounted.
    pub copies_counted: bool,
    /// Fork statistics of each label set (as parents).
    pub forks: BTreeMap<Labels, ForkStats>,
    /// Zombies held now, by parent; `None` without a process table.
    pub zombies: Option<BTreeMap<ZombieLabels, u64>>,
    /// The pids controllers of the cgroups whose processes hold zombies now, fewest
    /// pids left first, as many as the cardinality cap has room for.
    pub zombie_cgroups: Vec<CgroupPids>,
    pub drops: KernelDrops,
    /// The machine's process, thread, zombie and pid figures (always shown).
    pub host: HostGauges,
    /// Processes in proclens's process table (`proclens_tracked_processes`).
    pub tracked_processes: u64,
    /// Process-table entries corrected from /proc (`proclens_table_repairs_total`).
    pub table_repairs: u64,
    /// Interrupts by CPU and kind; `None` when they are not traced.
    pub irq: Option<IrqTotals>,
    /// Interrupt time taken from each label set's processes.
    pub irq_stolen: BTreeMap<Labels, Taken>,
    /// Blocked time and voluntary switches of each label set by the syscall each block
    /// began in, folded (see [`blocked`]); empty when not traced.
    pub blocked_in: BTreeMap<Labels, BTreeMap<&'static str, Blocked>>,
    /// Whether blocks are charged to syscalls (the families are shown, even empty).
    pub blocked_in_counted: bool,
    /// The cardinality cap and what it folded.
    pub guard: Guard,
    /// The collection in which each label set last had a process in the rows (alive, or
    /// with figures) or zombies (the gauge): what [`Self::expire`] goes by.
    touched: BTreeMap<Labels, u64>,
    zombies_touched: BTreeMap<ZombieLabels, u64>,
}

/// A process's syscalls and copy paths over one interval.
pub struct ProcDelta<'a> {
    pub labels: Labels,
    pub syscalls: u64,
    pub paths: &'a [copies::PathRow],
    pub alive: bool,
}

/// A parent's fork statistics over one interval.
pub struct ForkDelta {
    pub labels: Labels,
    pub delta: ForkStats,
    pub alive: bool,
}

/// One interval's figures beyond switches.
#[derive(Default)]
pub struct ExtrasDelta<'a> {
    /// `None` when syscalls are not counted.
    pub procs: Option<Vec<ProcDelta<'a>>>,
    /// Whether the rows carry copy paths.
    pub copies: bool,
    pub forks: Vec<ForkDelta>,
    /// One item per zombie; `None` without a process table.
    pub zombies: Option<Vec<ZombieLabels>>,
    /// The pids controllers of the zombie holders' cgroups, one per cgroup.
    pub zombie_cgroups: Vec<CgroupPids>,
    pub drops: KernelDrops,
}

/// The keys last touched before collection `cutoff`.
fn touched_before<K: Clone>(touched: &BTreeMap<K, u64>, cutoff: u64) -> Vec<K> {
    touched
        .iter()
        .filter(|&(_, &at)| at < cutoff)
        .map(|(k, _)| k.clone())
        .collect()
}

/// One row of an interval: the process's delta, its labels and whether it still lives.
pub struct LabelledDelta<'a> {
    pub labels: Labels,
    pub delta: &'a Counts,
    pub alive: bool,
}

impl ExporterState {
    /// A state whose label sets and series are capped at `max_series` (see [`Guard`]).
    pub fn with_max_series(max_series: usize) -> Self {
        Self {
            guard: Guard::new(max_series),
            ..Self::default()
        }
    }

    /// Adds one interval. With per-pid labels, series of processes that have exited are
    /// dropped after this interval's figures are in (their pids never come back as the
    /// same process), which bounds the cardinality to the live processes.
    pub fn apply<'a>(
        &mut self,
        rows: impl IntoIterator<Item = LabelledDelta<'a>>,
        system: SystemTotals,
    ) {
        let mut gone = Vec::new();
        let mut budget = self.budget();
        for r in rows {
            if r.labels.pid.is_some() && !r.alive {
                gone.push(r.labels.clone());
            }
            let labels = self.admit(r.labels, &mut budget);
            self.touched.insert(labels.clone(), self.collections);
            self.series.entry(labels).or_default().merge(r.delta);
        }
        self.system.switches += system.switches;
        self.system.same_process += system.same_process;
        self.system.cross_process += system.cross_process;
        self.system.idle_or_kernel += system.idle_or_kernel;
        self.collections += 1;
        self.pending_removal(gone);
    }

    /// Replaces the interrupt totals and adds one interval's stolen time, as
    /// [`Self::apply_extras`] does for syscalls (per-pid series of processes seen gone
    /// are dropped after their last figures are in).
    pub fn apply_irq(&mut self, totals: IrqTotals, stolen: Vec<StolenDelta>) {
        let mut gone = Vec::new();
        self.irq = Some(totals);
        let mut budget = self.budget();
        for s in stolen {
            if s.labels.pid.is_some() && !s.alive {
                gone.push(s.labels.clone());
            }
            if s.delta.is_zero() {
                continue;
            }
            let labels = self.admit(s.labels, &mut budget);
            self.touched.insert(labels.clone(), self.collections);
            self.irq_stolen.entry(labels).or_default().add(&s.delta);
        }
        self.pending_removal(gone);
    }

    /// Adds one interval's blocked time by syscall, as [`Self::apply_extras`] does for
    /// syscalls: a process's figures of its last interval are in its label set's counters
    /// for good (per-pid series of processes seen gone are dropped after them).
    pub fn apply_blocked(&mut self, rows: Vec<BlockedDelta>) {
        self.blocked_in_counted = true;
        let mut gone = Vec::new();
        let mut budget = self.budget();
        for r in rows {
            if r.labels.pid.is_some() && !r.alive {
                gone.push(r.labels.clone());
            }
            if r.syscalls.is_empty() {
                continue;
            }
            let labels = self.admit(r.labels, &mut budget);
            self.touched.insert(labels.clone(), self.collections);
            for (syscall, b) in r.syscalls {
                let owner = self.admit_blocked(&labels, syscall, &mut budget);
                self.blocked_in
                    .entry(owner)
                    .or_default()
                    .entry(syscall)
                    .or_default()
                    .add(&b);
            }
        }
        self.pending_removal(gone);
    }

    /// Adds one interval's syscalls, copy paths and forks, and replaces the zombie
    /// gauge and the drop counters. Per-pid series of processes seen gone are dropped
    /// (from every family) after their last figures are in, as in [`Self::apply`].
    pub fn apply_extras(&mut self, x: ExtrasDelta<'_>) {
        let mut gone = Vec::new();
        self.syscalls_counted = x.procs.is_some();
        self.copies_counted = x.procs.is_some() && x.copies;
        // Admitted again from scratch below, after everything else of this interval.
        self.zombie_cgroups.clear();
        let mut budget = self.budget();
        for p in x.procs.into_iter().flatten() {
            if p.labels.pid.is_some() && !p.alive {
                gone.push(p.labels.clone());
            }
            let paths = p.paths.iter().filter(|r| !r.delta.is_zero());
            if p.syscalls == 0 && paths.clone().next().is_none() {
                continue; // idle: no label set is created for nothing
            }
            let labels = self.admit(p.labels, &mut budget);
            self.touched.insert(labels.clone(), self.collections);
            *self.syscalls.entry(labels.clone()).or_default() += p.syscalls;
            for r in paths {
                let key = PathKey {
                    op: r.op,
                    src: r.src,
                    dst: r.dst,
                };
                let (owner, key) = self.admit_path(&labels, key, &mut budget);
                self.copies
                    .entry(owner)
                    .or_default()
                    .entry(key)
                    .or_default()
                    .add(&r.delta);
            }
        }
        for f in x.forks {
            if f.labels.pid.is_some() && !f.alive {
                gone.push(f.labels.clone());
            }
            let labels = self.admit(f.labels, &mut budget);
            self.touched.insert(labels.clone(), self.collections);
            self.forks.entry(labels).or_default().add(&f.delta);
        }
        self.zombies = x.zombies.map(|zs| {
            let before = self.zombies.take().unwrap_or_default();
            let mut now: BTreeMap<ZombieLabels, u64> = BTreeMap::new();
            for z in zs {
                let z = self.admit_zombie_parent(z, &before, &now, &mut budget);
                self.zombies_touched.insert(z.clone(), self.collections);
                *now.entry(z).or_default() += 1;
            }
            // A parent command that held zombies reads 0 once they are reaped (its
            // series stays, like the counters' label sets); per-pid series go.
            for l in before.into_keys() {
                if l.parent_pid.is_none() {
                    now.entry(l).or_default();
                }
            }
            now
        });
        self.zombie_cgroups = self.admit_cgroups(x.zombie_cgroups, &mut budget);
        self.drops = x.drops;
        self.pending_removal(gone);
    }

    fn pending_removal(&mut self, gone: Vec<Labels>) {
        for l in gone {
            self.remove(&l);
        }
    }

    fn remove(&mut self, l: &Labels) {
        self.series.remove(l);
        self.syscalls.remove(l);
        self.copies.remove(l);
        self.forks.remove(l);
        self.irq_stolen.remove(l);
        self.blocked_in.remove(l);
        self.touched.remove(l);
    }

    /// Label sets shown now.
    pub fn label_sets(&self) -> usize {
        self.touched.len()
    }

    /// Drops every series whose label set has had no process for more than `collections`
    /// collections (and every zombie gauge left at 0 that long): commands and cgroups come
    /// and go (containers, jobs), and a fleet's Prometheus should not keep their series
    /// forever. A label set that comes back starts its counters from 0 again, which
    /// `rate()` and `increase()` read as a new series. Returns how many label sets went.
    pub fn expire(&mut self, collections: u64) -> usize {
        let Some(cutoff) = self.collections.checked_sub(collections) else {
            return 0;
        };
        let stale = touched_before(&self.touched, cutoff);
        for l in &stale {
            self.remove(l);
        }
        for l in &touched_before(&self.zombies_touched, cutoff) {
            self.zombies_touched.remove(l);
            if let Some(z) = &mut self.zombies
                && z.get(l) == Some(&0)
            {
                z.remove(l);
            }
        }
        self.guard.expire(cutoff);
        stale.len()
    }
}

#[cfg(test)]
mod guard_tests;
#[cfg(test)]
mod tests;
