//! `serve`'s labels: each interval's rows and extras turned into labelled deltas for the
//! exporter state (command and the attribution labels `--labels` chose, pid with
//! `--per-pid`), with the cgroup of each process read from /proc at most every
//! [`CGROUP_REFRESH`] intervals.

use std::collections::{HashMap, HashSet};

use super::attribution::Attributor;
use crate::{
    cli::Filter,
    collect::{
        extras::Extras, irq::IrqSnapshot, procfs, session::Snapshot, tracer::Health,
        waits::WaitsSnapshot,
    },
    model::{
        exporter::{
            BlockedDelta, ExporterState, ExtrasDelta, ForkDelta, IrqTotals, KernelDrops,
            LabelledDelta, Labels, ProcDelta, StolenDelta, SystemTotals, ZombieLabels, blocked,
        },
        irq::softirq_name,
        switches::Key,
    },
};

/// Intervals between two reads of a live process's cgroup: a process rarely moves, and
/// reading /proc/PID/cgroup of every process every interval was the largest /proc cost of
/// serve (see BENCHMARKS.md). A process that moves takes at most this many intervals to
/// carry its new cgroup label.
const CGROUP_REFRESH: u64 = 30;

/// Cgroup labels by process: read when a process first shows up and every
/// [`CGROUP_REFRESH`] intervals while it lives, the last one kept once it is gone;
/// forgotten when a process is no longer among the rows.
#[derive(Debug, Default)]
struct CgroupCache {
    /// The cgroup and the interval it was read in.
    known: HashMap<Key, (String, u64)>,
    seen: HashSet<Key>,
    interval: u64,
}

impl CgroupCache {
    fn get(&mut self, key: Key, alive: bool) -> String {
        self.seen.insert(key);
        let now = self.interval;
        let stale = self
            .known
            .get(&key)
            .is_none_or(|(_, at)| now - at >= CGROUP_REFRESH);
        if alive
            && stale
            && let Some(c) = procfs::cgroup(key.tgid)
        {
            self.known.insert(key, (c.clone(), now));
            return c;
        }
        self.known
            .get(&key)
            .map_or_else(|| "?".into(), |(c, _)| c.clone())
    }

    fn end_interval(&mut self) {
        let seen = std::mem::take(&mut self.seen);
        self.known.retain(|k, _| seen.contains(k));
        crate::model::spare::map(&mut self.known);
        self.interval += 1;
    }
}

/// Turns each interval's rows into labelled deltas for the exporter state: command and
/// attribution (and pid with `--per-pid`), the same labels for every family of one
/// process.
pub(super) struct Labeller {
    filter: Filter,
    per_pid: bool,
    cgroups: CgroupCache,
    attributor: Attributor,
    /// Command and labels of processes seen in the extras but not among the switch rows,
    /// by tgid.
    others: HashMap<u32, (String, Labels)>,
    /// This interval: processes looked up in `others`, and switch rows the filter left out.
    seen: HashSet<u32>,
    excluded: HashSet<u32>,
    me: u32,
}

impl Labeller {
    pub(super) fn new(filter: Filter, per_pid: bool, attributor: Attributor) -> Self {
        Self {
            filter,
            per_pid,
            cgroups: CgroupCache::default(),
            attributor,
            others: HashMap::new(),
            seen: HashSet::new(),
            excluded: HashSet::new(),
            me: std::process::id(),
        }
    }

    fn wanted(&self, tgid: u32, comm: &str) -> bool {
        (self.filter.pids.is_empty() || self.filter.pids.contains(&tgid))
            && self
                .filter
                .comm
                .as_ref()
                .is_none_or(|want| comm.contains(want.as_str()))
    }

    fn labels(&mut self, comm: &str, cgroup: &str, tgid: u32) -> Labels {
        Labels {
            comm: self.attributor.comm().then(|| stable_comm(comm)),
            attrs: self.attributor.attrs(cgroup),
            pid: self.per_pid.then_some(tgid),
        }
    }

    /// Folds one snapshot into `st`.
    pub(super) fn fold(&mut self, snap: &Snapshot, copies: bool, st: &mut ExporterState) {
        let (rows, excluded): (Vec<_>, Vec<_>) = snap
            .rows
            .iter()
            .partition(|(r, c)| self.filter.selection().matches(r.key.tgid, c));
        self.excluded = excluded.iter().map(|(r, _)| r.key.tgid).collect();
        let mut by_tgid: HashMap<u32, (Labels, bool)> = HashMap::with_capacity(rows.len());
        let switch_rows: Vec<_> = rows
            .iter()
            .map(|(r, comm)| {
                let cgroup = self.cgroups.get(r.key, r.alive);
                let labels = self.labels(comm, &cgroup, r.key.tgid);
                by_tgid.insert(r.key.tgid, (labels.clone(), r.alive));
                LabelledDelta {
                    labels,
                    delta: &r.delta,
                    alive: r.alive,
                }
            })
            .collect();
        self.cgroups.end_interval();
        st.apply(
            switch_rows,
            SystemTotals {
                switches: snap.system.switches,
                same_process: snap.system.same_process,
                cross_process: snap.system.cross_process,
                idle_or_kernel: snap.system.idle_or_kernel,
            },
        );
        st.lost_events = snap.health.ringbuf_drops;
        st.untracked_threads = snap.health.thread_map_full;
        st.programs.clone_from(&snap.programs);
        self.seen.clear();
        let extras = self.extras(&snap.extras, &snap.health, copies, &by_tgid);
        st.apply_extras(extras);
        if let Some(irq) = &snap.irq {
            let stolen = self.stolen(irq, &by_tgid);
            st.apply_irq(irq_totals(irq), stolen);
        }
        if let Some(w) = &snap.waits {
            let rows = self.blocked(w, &by_tgid);
            st.apply_blocked(rows);
        }
        let seen = &self.seen;
        self.others.retain(|t, _| seen.contains(t));
        crate::model::spare::map(&mut self.others);
        self.attributor.end_interval();
    }

    /// The labels and liveness of `tgid`: from its switch row, else read from /proc
    /// (remembered while the process shows up), `None` when the filter leaves it out.
    fn process(
        &mut self,
        tgid: u32,
        comm_hint: Option<&str>,
        by_tgid: &HashMap<u32, (Labels, bool)>,
    ) -> Option<(Labels, bool)> {
        if let Some(l) = by_tgid.get(&tgid) {
            return Some(l.clone());
        }
        // proclens's own figures, like its switches, only with --include-self.
        if self.excluded.contains(&tgid) || (tgid == self.me && !self.filter.include_self) {
            return None;
        }
        self.seen.insert(tgid);
        let alive = procfs::exists(tgid);
        let (comm, labels) = if let Some(l) = self.others.get(&tgid) {
            l.clone()
        } else {
            let comm = procfs::comm(tgid)
                .or_else(|| comm_hint.map(str::to_string))
                .unwrap_or_else(|| "?".into());
            let cgroup = procfs::cgroup(tgid).unwrap_or_else(|| "?".into());
            let l = self.labels(&comm, &cgroup, tgid);
            self.others.insert(tgid, (comm.clone(), l.clone()));
            (comm, l)
        };
        if !alive {
            self.others.remove(&tgid);
        }
        self.wanted(tgid, &comm).then_some((labels, alive))
    }

    fn extras<'a>(
        &mut self,
        x: &'a Extras,
        health: &Health,
        copies: bool,
        by_tgid: &HashMap<u32, (Labels, bool)>,
    ) -> ExtrasDelta<'a> {
        let procs = x.procs.as_ref().map(|rows| {
            rows.iter()
                .filter(|r| !r.is_idle())
                .filter_map(|r| {
                    let (labels, alive) = self.process(r.tgid, None, by_tgid)?;
                    Some(ProcDelta {
                        labels,
                        syscalls: r.syscalls.delta,
                        paths: &r.copies.paths,
                        alive,
                    })
                })
                .collect()
        });
        let forks = x
            .forks
            .iter()
            .filter_map(|f| {
                let (labels, alive) = self.process(f.tgid, Some(&f.comm), by_tgid)?;
                Some(ForkDelta {
                    labels,
                    delta: f.delta,
                    alive,
                })
            })
            .collect();
        let zombies = x.zombies.as_ref().map(|zs| {
            zs.iter()
                .filter(|z| self.wanted(z.ppid, &z.parent_comm))
                .map(|z| ZombieLabels {
                    parent_comm: stable_comm(&z.parent_comm),
                    parent_pid: self.per_pid.then_some(z.ppid),
                })
                .collect()
        });
        // The pids controllers of the holders' cgroups, read now (zombies count in
        // pids.current until they are reaped); their paths are labels, shown only with
        // the `cgroup` group.
        let mut holders: Vec<u32> = x
            .zombies
            .iter()
            .flatten()
            .filter(|z| self.attributor.cgroup() && self.wanted(z.ppid, &z.parent_comm))
            .map(|z| z.ppid)
            .collect();
        holders.sort_unstable();
        holders.dedup();
        let zombie_cgroups = holders
            .into_iter()
            .filter_map(crate::collect::parents::pids_of_process)
            .collect();
        ExtrasDelta {
            procs,
            copies,
            forks,
            zombies,
            zombie_cgroups,
            drops: KernelDrops {
                ringbuf_full: health.ringbuf_drops,
                thread_map_full: health.thread_map_full,
                inflight_map_full: health.inflight_full,
                copy_map_full: health.copy_map_full,
                syscall_map_full: health.syscall_map_full,
                wait_map_full: health.wait_map_full,
                ready_map_full: health.ready_map_full,
            },
        }
    }
}

impl Labeller {
    /// Each victim's interval, labelled as its other families are.
    fn stolen(
        &mut self,
        irq: &IrqSnapshot,
        by_tgid: &HashMap<u32, (Labels, bool)>,
    ) -> Vec<StolenDelta> {
        irq.interval
            .victims
            .iter()
            .filter(|v| !v.delta.is_zero())
            .filter_map(|v| {
                let comm = irq.comms.get(&v.key).map(String::as_str);
                let (labels, alive) = self.process(v.key.tgid, comm, by_tgid)?;
                Some(StolenDelta {
                    labels,
                    delta: v.delta,
                    alive: alive && !irq.gone.contains(&v.key),
                })
            })
            .collect()
    }
}

impl Labeller {
    /// Each process's blocks of the interval by syscall, labelled as its other families
    /// are; a process gone in this interval is there with its last figures (and without,
    /// so that its per-pid series go).
    fn blocked(
        &mut self,
        w: &WaitsSnapshot,
        by_tgid: &HashMap<u32, (Labels, bool)>,
    ) -> Vec<BlockedDelta> {
        w.procs
            .iter()
            .filter_map(|p| {
                let syscalls = blocked::interval(p);
                let gone = w.gone.contains(&p.key);
                if syscalls.is_empty() && !gone {
                    return None;
                }
                let (labels, alive) = self.process(p.key.tgid, None, by_tgid)?;
                Some(BlockedDelta {
                    labels,
                    syscalls,
                    alive: alive && !gone,
                })
            })
            .collect()
    }
}

/// The interrupt totals by CPU and kind.
fn irq_totals(irq: &IrqSnapshot) -> IrqTotals {
    let i = &irq.interval;
    IrqTotals {
        softirqs: i
            .softirqs
            .iter()
            .map(|r| ((r.cpu, softirq_name(r.kind)), (r.total.count, r.total.ns)))
            .collect(),
        hardirqs: i
            .hard
            .iter()
            .map(|r| {
                let name = irq.names.get(&r.kind).cloned().unwrap_or_default();
                ((r.cpu, r.kind.row(), name), (r.total.count, r.total.ns))
            })
            .collect(),
    }
}

/// Kernel workers rename themselves after the work they run (`kworker/1:1-events`):
/// keep only the worker's own name so label values do not churn.
fn stable_comm(comm: &str) -> String {
    match comm.strip_prefix("kworker/") {
        Some(rest) => format!("kworker/{}", rest.split('-').next().unwrap_or(rest)),
        None => comm.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cgroups_are_read_once_per_refresh_and_forgotten_with_the_row() {
        let me = std::process::id();
        let key = Key {
            id: me,
            tgid: me,
            start_ns: 1,
        };
        let mut c = CgroupCache::default();
        let first = c.get(key, true);
        assert_eq!(Some(first.clone()), procfs::cgroup(me));
        c.known.get_mut(&key).unwrap().0 = "/cached".into();
        c.end_interval();
        assert_eq!(
            c.get(key, true),
            "/cached",
            "not re-read before the refresh"
        );
        for _ in 0..CGROUP_REFRESH {
            c.get(key, false);
            c.end_interval();
        }
        assert_eq!(
            c.get(key, false),
            "/cached",
            "a gone process keeps its last"
        );
        assert_eq!(
            c.get(key, true),
            first,
            "re-read after CGROUP_REFRESH intervals"
        );
        c.end_interval();
        c.end_interval();
        assert!(c.known.is_empty(), "forgotten once not among the rows");
    }

    #[test]
    fn kworker_names_are_stable() {
        assert_eq!(stable_comm("kworker/1:1-events_freezable"), "kworker/1:1");
        assert_eq!(stable_comm("kworker/u8:2"), "kworker/u8:2");
        assert_eq!(stable_comm("nginx-worker"), "nginx-worker");
    }
}
