//! Cumulative counters for the Prometheus exporter, aggregated by label set (command and
//! cgroup; optionally pid). Counters only go up: a process that exits keeps its
//! contribution in its label set, so rates stay right across process churn.
//!
//! Cardinality: without pids a label set is a (command, cgroup) pair, kept for good (a
//! counter that vanished would read as a reset); with `--per-pid` every series of a process
//! is dropped in the interval its exit is seen, in every family alike, so the series
//! count follows the live processes.

use std::collections::BTreeMap;

use super::{copies, irq::Taken, proctable::ForkStats, switches::Counts};

/// The labels one series carries.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Labels {
    pub comm: String,
    pub cgroup: String,
    /// Only with `--per-pid`.
    pub pid: Option<u32>,
}

/// System-wide switch totals.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SystemTotals {
    pub switches: u64,
    pub same_process: u64,
    pub cross_process: u64,
    pub idle_or_kernel: u64,
}

/// A BPF program's own cost, from the kernel's bpf_stats (0 when they are off).
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
pub struct KernelDrops {
    /// Ring-buffer reservations that failed (events lost).
    pub ringbuf_full: u64,
    /// Threads the per-thread switch map had no room for.
    pub thread_map_full: u64,
    /// Copy-family calls not accounted: per-thread in-flight map full.
    pub inflight_map_full: u64,
    /// Copy-family calls not accounted: per-path map full.
    pub copy_map_full: u64,
    /// Syscalls not counted: per-process syscall map full.
    pub syscall_map_full: u64,
}

impl KernelDrops {
    /// (label value, count) of each counter, in a fixed order.
    pub fn named(&self) -> [(&'static str, u64); 5] {
        [
            ("ringbuf_full", self.ringbuf_full),
            ("thread_map_full", self.thread_map_full),
            ("inflight_map_full", self.inflight_map_full),
            ("copy_map_full", self.copy_map_full),
            ("syscall_map_full", self.syscall_map_full),
        ]
    }
}

/// Labels of the zombies gauge: the parent's command (and pid with `--per-pid`).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ZombieLabels {
    pub parent_comm: String,
    pub parent_pid: Option<u32>,
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
    pub drops: KernelDrops,
    /// Interrupts by CPU and kind; `None` when they are not traced.
    pub irq: Option<IrqTotals>,
    /// Interrupt time taken from each label set's processes.
    pub irq_stolen: BTreeMap<Labels, Taken>,
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
    /// Adds one interval. With per-pid labels, series of processes that have exited are
    /// dropped after this interval's figures are in (their pids never come back as the
    /// same process), which bounds the cardinality to the live processes.
    pub fn apply<'a>(
        &mut self,
        rows: impl IntoIterator<Item = LabelledDelta<'a>>,
        system: SystemTotals,
    ) {
        let mut gone = Vec::new();
        for r in rows {
            if r.labels.pid.is_some() && !r.alive {
                gone.push(r.labels.clone());
            }
            self.touched.insert(r.labels.clone(), self.collections);
            self.series.entry(r.labels).or_default().merge(r.delta);
        }
        self.system.switches += system.switches;
        self.system.same_process += system.same_process;
        self.system.cross_process += system.cross_process;
        self.system.idle_or_kernel += system.idle_or_kernel;
        self.collections += 1;
        self.pending_removal(gone);
    }

    /// Adds one interval's syscalls, copy paths and forks, and replaces the zombie
    /// gauge and the drop counters. Per-pid series of processes seen gone are dropped
    /// (from every family) after their last figures are in, as in [`Self::apply`].
    pub fn apply_extras(&mut self, x: ExtrasDelta<'_>) {
        let mut gone = Vec::new();
        self.syscalls_counted = x.procs.is_some();
        self.copies_counted = x.procs.is_some() && x.copies;
        for p in x.procs.into_iter().flatten() {
            if p.labels.pid.is_some() && !p.alive {
                gone.push(p.labels.clone());
            }
            let paths = p.paths.iter().filter(|r| !r.delta.is_zero());
            if p.syscalls == 0 && paths.clone().next().is_none() {
                continue; // idle: no label set is created for nothing
            }
            self.touched.insert(p.labels.clone(), self.collections);
            *self.syscalls.entry(p.labels.clone()).or_default() += p.syscalls;
            let mut paths = paths.peekable();
            if paths.peek().is_some() {
                let mine = self.copies.entry(p.labels).or_default();
                for r in paths {
                    let key = PathKey {
                        op: r.op,
                        src: r.src,
                        dst: r.dst,
                    };
                    mine.entry(key).or_default().add(&r.delta);
                }
            }
        }
        for f in x.forks {
            if f.labels.pid.is_some() && !f.alive {
                gone.push(f.labels.clone());
            }
            self.touched.insert(f.labels.clone(), self.collections);
            self.forks.entry(f.labels).or_default().add(&f.delta);
        }
        self.zombies = x.zombies.map(|zs| {
            let mut now: BTreeMap<ZombieLabels, u64> = BTreeMap::new();
            for z in zs {
                self.zombies_touched.insert(z.clone(), self.collections);
                *now.entry(z).or_default() += 1;
            }
            // A parent command that held zombies reads 0 once they are reaped (its
            // series stays, like the counters' label sets); per-pid series go.
            for l in self.zombies.take().unwrap_or_default().into_keys() {
                if l.parent_pid.is_none() {
                    now.entry(l).or_default();
                }
            }
            now
        });
        self.drops = x.drops;
        self.pending_removal(gone);
    }

    /// Replaces the interrupt totals and adds one interval's stolen time, as
    /// [`Self::apply_extras`] does for syscalls (per-pid series of processes seen gone
    /// are dropped after their last figures are in).
    pub fn apply_irq(&mut self, totals: IrqTotals, stolen: Vec<StolenDelta>) {
        let mut gone = Vec::new();
        self.irq = Some(totals);
        for s in stolen {
            if s.labels.pid.is_some() && !s.alive {
                gone.push(s.labels.clone());
            }
            if s.delta.is_zero() {
                continue;
            }
            self.touched.insert(s.labels.clone(), self.collections);
            self.irq_stolen.entry(s.labels).or_default().add(&s.delta);
        }
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
        self.touched.remove(l);
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
        stale.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn labels(comm: &str, pid: Option<u32>) -> Labels {
        Labels {
            comm: comm.into(),
            cgroup: "/".into(),
            pid,
        }
    }

    #[test]
    fn label_sets_without_a_process_expire_from_every_family() {
        let mut st = ExporterState::default();
        let d = Counts {
            voluntary: 1,
            ..Counts::default()
        };
        let row = |comm: &str| LabelledDelta {
            labels: labels(comm, None),
            delta: &d,
            alive: true,
        };
        let zombie = |parent_comm: &str| ZombieLabels {
            parent_comm: parent_comm.into(),
            parent_pid: None,
        };
        // Collection 0: a job and a daemon; the job forks, and holds a zombie.
        st.apply([row("job"), row("daemon")], SystemTotals::default());
        st.apply_extras(ExtrasDelta {
            forks: vec![ForkDelta {
                labels: labels("job", None),
                delta: ForkStats {
                    processes: 1,
                    ..ForkStats::default()
                },
                alive: true,
            }],
            zombies: Some(vec![zombie("job")]),
            ..ExtrasDelta::default()
        });
        // Collections 1 and 2: only the daemon is left; the zombie was reaped.
        for _ in 0..2 {
            st.apply([row("daemon")], SystemTotals::default());
            st.apply_extras(ExtrasDelta {
                zombies: Some(vec![]),
                ..ExtrasDelta::default()
            });
        }
        assert_eq!(st.zombies.as_ref().unwrap()[&zombie("job")], 0);
        assert_eq!(st.expire(3), 0, "not yet: seen 3 collections ago");
        assert!(st.series.contains_key(&labels("job", None)));
        assert_eq!(st.expire(1), 1);
        assert!(!st.series.contains_key(&labels("job", None)));
        assert!(!st.forks.contains_key(&labels("job", None)));
        assert!(st.zombies.as_ref().unwrap().is_empty());
        assert_eq!(st.series[&labels("daemon", None)].voluntary, 3);
    }

    #[test]
    fn counters_accumulate_across_processes_of_one_label_set() {
        let mut st = ExporterState::default();
        let d1 = Counts {
            voluntary: 3,
            involuntary: 1,
            ..Counts::default()
        };
        let d2 = Counts {
            voluntary: 2,
            ..Counts::default()
        };
        st.apply(
            [
                LabelledDelta {
                    labels: labels("sh", None),
                    delta: &d1,
                    alive: false,
                },
                LabelledDelta {
                    labels: labels("sh", None),
                    delta: &d2,
                    alive: true,
                },
            ],
            SystemTotals {
                switches: 10,
                ..SystemTotals::default()
            },
        );
        st.apply(
            [LabelledDelta {
                labels: labels("sh", None),
                delta: &d2,
                alive: true,
            }],
            SystemTotals {
                switches: 5,
                ..SystemTotals::default()
            },
        );
        let s = &st.series[&labels("sh", None)];
        assert_eq!(
            (s.voluntary, s.involuntary),
            (7, 1),
            "dead processes keep their share"
        );
        assert_eq!(st.system.switches, 15);
        assert_eq!(st.collections, 2);
    }

    #[test]
    fn per_pid_series_of_exited_processes_are_dropped() {
        let mut st = ExporterState::default();
        let d = Counts {
            voluntary: 1,
            ..Counts::default()
        };
        st.apply(
            [
                LabelledDelta {
                    labels: labels("a", Some(1)),
                    delta: &d,
                    alive: true,
                },
                LabelledDelta {
                    labels: labels("b", Some(2)),
                    delta: &d,
                    alive: false,
                },
            ],
            SystemTotals::default(),
        );
        assert!(st.series.contains_key(&labels("a", Some(1))));
        assert!(!st.series.contains_key(&labels("b", Some(2))));
    }

    fn sendfile_path(bytes: u64) -> copies::PathRow {
        use proclens_common::copies::{fd_kind, op};
        let delta = copies::Counts {
            bytes,
            calls: 1,
            errors: 0,
        };
        copies::PathRow {
            op: op::SENDFILE64,
            src: fd_kind::FILE,
            dst: fd_kind::SOCKET,
            delta,
            total: delta,
        }
    }

    fn proc_delta<'a>(
        l: Labels,
        syscalls: u64,
        paths: &'a [copies::PathRow],
        alive: bool,
    ) -> ProcDelta<'a> {
        ProcDelta {
            labels: l,
            syscalls,
            paths,
            alive,
        }
    }

    #[test]
    fn syscalls_and_copy_paths_accumulate_per_label_set() {
        let mut st = ExporterState::default();
        let (a, b) = ([sendfile_path(100)], [sendfile_path(23)]);
        st.apply_extras(ExtrasDelta {
            procs: Some(vec![
                proc_delta(labels("web", None), 5, &a, false),
                proc_delta(labels("web", None), 2, &b, true),
                proc_delta(labels("idle", None), 0, &[], true),
            ]),
            copies: true,
            ..ExtrasDelta::default()
        });
        st.apply_extras(ExtrasDelta {
            procs: Some(vec![proc_delta(labels("web", None), 1, &b, true)]),
            copies: true,
            ..ExtrasDelta::default()
        });
        assert_eq!(st.syscalls[&labels("web", None)], 8);
        assert!(
            !st.syscalls.contains_key(&labels("idle", None)),
            "a process that did nothing creates no series"
        );
        let paths = &st.copies[&labels("web", None)];
        assert_eq!(paths.len(), 1);
        let c = paths.values().next().unwrap();
        assert_eq!(
            (c.bytes, c.calls),
            (146, 3),
            "the exited process keeps its share"
        );
        assert!(st.syscalls_counted && st.copies_counted);
    }

    #[test]
    fn per_pid_series_of_exited_processes_leave_every_family() {
        let mut st = ExporterState::default();
        let p = [sendfile_path(1)];
        let fork = ForkStats {
            processes: 2,
            ..ForkStats::default()
        };
        st.apply_extras(ExtrasDelta {
            procs: Some(vec![
                proc_delta(labels("a", Some(1)), 1, &p, true),
                proc_delta(labels("b", Some(2)), 1, &p, true),
            ]),
            copies: true,
            forks: vec![ForkDelta {
                labels: labels("b", Some(2)),
                delta: fork,
                alive: true,
            }],
            ..ExtrasDelta::default()
        });
        assert!(st.forks.contains_key(&labels("b", Some(2))));
        st.apply_extras(ExtrasDelta {
            procs: Some(vec![proc_delta(labels("b", Some(2)), 3, &p, false)]),
            copies: true,
            ..ExtrasDelta::default()
        });
        for gone in [
            st.syscalls.contains_key(&labels("b", Some(2))),
            st.copies.contains_key(&labels("b", Some(2))),
            st.forks.contains_key(&labels("b", Some(2))),
        ] {
            assert!(!gone);
        }
        assert_eq!(st.syscalls[&labels("a", Some(1))], 1);
    }

    #[test]
    fn forks_accumulate_and_zombies_are_a_gauge_per_parent_command() {
        let mut st = ExporterState::default();
        let z = |c: &str, pid: Option<u32>| ZombieLabels {
            parent_comm: c.into(),
            parent_pid: pid,
        };
        let fork = ForkStats {
            processes: 3,
            threads: 1,
            child_exits: 2,
            child_failures: 1,
            waits: 0,
        };
        let forks = || {
            vec![ForkDelta {
                labels: labels("sh", None),
                delta: fork,
                alive: true,
            }]
        };
        st.apply_extras(ExtrasDelta {
            forks: forks(),
            zombies: Some(vec![z("sh", None), z("sh", None), z("x", Some(9))]),
            ..ExtrasDelta::default()
        });
        st.apply_extras(ExtrasDelta {
            forks: forks(),
            zombies: Some(vec![z("sh", None)]),
            ..ExtrasDelta::default()
        });
        let f = st.forks[&labels("sh", None)];
        assert_eq!(
            (f.processes, f.threads, f.child_exits, f.child_failures),
            (6, 2, 4, 2)
        );
        let zs = st.zombies.as_ref().unwrap();
        assert_eq!(zs[&z("sh", None)], 1);
        assert!(
            !zs.contains_key(&z("x", Some(9))),
            "per-pid parents go at 0"
        );
        st.apply_extras(ExtrasDelta {
            zombies: Some(vec![]),
            ..ExtrasDelta::default()
        });
        assert_eq!(st.zombies.as_ref().unwrap()[&z("sh", None)], 0);
        assert!(!st.syscalls_counted, "no syscall rows: not counted");
    }

    #[test]
    fn interrupt_totals_are_replaced_and_stolen_time_accumulates() {
        let mut st = ExporterState::default();
        let soft = |ns| Taken {
            soft: 1,
            soft_ns: ns,
            ..Taken::default()
        };
        let totals = |n| IrqTotals {
            softirqs: BTreeMap::from([((1, "NET_RX"), (n, n * 1000))]),
            ..IrqTotals::default()
        };
        let stolen = |l: Labels, ns, alive| StolenDelta {
            labels: l,
            delta: soft(ns),
            alive,
        };
        st.apply_irq(
            totals(5),
            vec![
                stolen(labels("spin", None), 100, true),
                stolen(labels("spin", None), 50, false),
                stolen(labels("gone", Some(3)), 7, false),
            ],
        );
        st.apply_irq(totals(9), vec![stolen(labels("spin", None), 10, true)]);
        assert_eq!(st.irq.as_ref().unwrap().softirqs[&(1, "NET_RX")], (9, 9000));
        assert_eq!(st.irq_stolen[&labels("spin", None)].soft_ns, 160);
        assert!(!st.irq_stolen.contains_key(&labels("gone", Some(3))));
    }
}
