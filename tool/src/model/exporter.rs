//! Cumulative counters for the Prometheus exporter, aggregated by label set (command and
//! cgroup; optionally pid). Counters only go up: a process that exits keeps its
//! contribution in its label set, so rates stay right across process churn.

use std::collections::BTreeMap;

use super::switches::Counts;

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
            self.series.entry(r.labels).or_default().merge(r.delta);
        }
        self.system.switches += system.switches;
        self.system.same_process += system.same_process;
        self.system.cross_process += system.cross_process;
        self.system.idle_or_kernel += system.idle_or_kernel;
        self.collections += 1;
        self.pending_removal(gone);
    }

    fn pending_removal(&mut self, gone: Vec<Labels>) {
        for l in gone {
            self.series.remove(&l);
        }
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
}
