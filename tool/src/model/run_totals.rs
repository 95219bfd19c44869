//! `run`'s totals across its periodic reports. `run` reads the kernel's maps several
//! times a second, so that processes that have finished move to userspace and their map
//! entries are freed however many come and go; each reading's rows carry every process's
//! totals since the command started, and a process's last row (its final figures) is
//! kept here after its entries are gone.
//!
//! The switch rows know a process by its leader's `start_time` (`CLOCK_MONOTONIC`), the
//! syscall rows by its `start_boottime`: the kernel stamps both at fork, so they differ
//! by the boot clock's lead over the monotonic one at that moment (the time spent
//! suspended before) plus the few ns between the two reads. [`RunTotals::join`] pairs
//! them by pid and that offset.

use std::collections::{BTreeMap, HashMap, HashSet};

use super::{
    copy_report::ProcRow,
    proctable::Key as ProcKey,
    switches::{Key, Row},
    waits::ProcWaits,
};

/// How far apart a process's two start stamps may be, besides the clocks' offset.
const START_SLACK_NS: u64 = 1_000_000;

/// Every process and thread a run has reported, each with its latest figures.
#[derive(Debug, Default)]
pub struct RunTotals {
    rows: BTreeMap<Key, (Row, String)>,
    threads: HashSet<Key>,
    procs: BTreeMap<ProcKey, ProcRow>,
    proc_comms: HashMap<ProcKey, String>,
    /// Whether syscalls were counted (the readings had syscall rows).
    counted: bool,
    /// Each process's blocked time by syscall and readiness calls.
    waits: BTreeMap<ProcKey, ProcWaits>,
}

/// A process of the run, its switch row (zeros when it never switched: its syscalls were
/// counted, its switches were not) and its syscalls (`None` when not counted).
#[derive(Debug, Clone, PartialEq)]
pub struct Joined {
    pub row: Row,
    pub comm: String,
    pub syscalls: Option<u64>,
}

impl RunTotals {
    /// Folds one reading in: its process rows, thread rows, and syscall/copy rows
    /// (`None` when syscalls are not counted) with their names. Later figures of a
    /// process replace earlier ones.
    pub fn fold(
        &mut self,
        rows: Vec<(Row, String)>,
        thread_rows: &[(Row, String)],
        procs: Option<Vec<ProcRow>>,
        proc_comms: HashMap<ProcKey, String>,
    ) {
        for (r, c) in rows {
            self.rows.insert(r.key, (r, c));
        }
        self.threads.extend(thread_rows.iter().map(|(r, _)| r.key));
        self.counted |= procs.is_some();
        for p in procs.into_iter().flatten() {
            self.procs.insert(p.key(), p);
        }
        self.proc_comms.extend(proc_comms);
    }

    /// Folds one reading's waits rows in: as the other rows, a process's later figures
    /// (totals since it started) replace its earlier ones, and a process's last row (in
    /// the reading that found it gone) stays.
    pub fn fold_waits(&mut self, procs: Vec<ProcWaits>) {
        for p in procs {
            self.waits.insert(p.key, p);
        }
    }

    /// Every process's latest waits figures.
    pub fn waits(&self) -> impl Iterator<Item = &ProcWaits> {
        self.waits.values()
    }

    /// Threads seen.
    pub fn threads(&self) -> usize {
        self.threads.len()
    }

    /// Every syscall/copy row.
    pub fn procs(&self) -> Vec<ProcRow> {
        self.procs.values().cloned().collect()
    }

    /// Every process once: its switch row joined with its syscall row (see the module
    /// doc; `boot_offset_ns` is `CLOCK_BOOTTIME` − `CLOCK_MONOTONIC`), and processes that
    /// only have a syscall row with zero switches.
    pub fn join(&self, boot_offset_ns: u64) -> Vec<Joined> {
        let counted = self.counted;
        let mut by_pid: HashMap<u32, Vec<&ProcRow>> = HashMap::new();
        for p in self.procs.values() {
            by_pid.entry(p.tgid).or_default().push(p);
        }
        let mut used: HashSet<ProcKey> = HashSet::new();
        let mut out: Vec<Joined> = Vec::with_capacity(self.rows.len());
        for (row, comm) in self.rows.values() {
            let boot = row.key.start_ns + boot_offset_ns;
            let proc = by_pid.get(&row.key.tgid).and_then(|ps| {
                ps.iter()
                    .filter(|p| !used.contains(&p.key()))
                    .min_by_key(|p| p.start_ns.abs_diff(boot))
                    .filter(|p| p.start_ns.abs_diff(boot) <= START_SLACK_NS)
            });
            if let Some(p) = proc {
                used.insert(p.key());
            }
            out.push(Joined {
                row: row.clone(),
                comm: comm.clone(),
                syscalls: counted.then(|| proc.map_or(0, |p| p.syscalls.total)),
            });
        }
        for p in self.procs.values().filter(|p| !used.contains(&p.key())) {
            let key = Key {
                id: p.tgid,
                tgid: p.tgid,
                start_ns: p.start_ns.saturating_sub(boot_offset_ns),
            };
            let mut row = Row::idle(key);
            row.alive = false;
            out.push(Joined {
                row,
                comm: self
                    .proc_comms
                    .get(&p.key())
                    .cloned()
                    .unwrap_or_else(|| "?".into()),
                syscalls: counted.then_some(p.syscalls.total),
            });
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::syscalls::ProcSyscalls;

    fn row(tgid: u32, start_ns: u64, vol: u64) -> (Row, String) {
        let mut r = Row::idle(Key {
            id: tgid,
            tgid,
            start_ns,
        });
        r.total.voluntary = vol;
        (r, format!("p{tgid}"))
    }

    fn proc(tgid: u32, start_ns: u64, syscalls: u64) -> ProcRow {
        ProcRow {
            tgid,
            start_ns,
            syscalls: ProcSyscalls {
                total: syscalls,
                ..ProcSyscalls::default()
            },
            ..ProcRow::default()
        }
    }

    /// A pid used by two processes in turn, a process whose switches were never seen,
    /// and figures that grew between two readings.
    #[test]
    fn every_process_once_with_its_latest_figures() {
        const OFFSET: u64 = 5_000_000_000;
        let mut t = RunTotals::default();
        t.fold(
            vec![row(7, 100, 1)],
            &[row(7, 100, 1)],
            Some(vec![proc(7, OFFSET + 100 + 40, 3)]),
            HashMap::new(),
        );
        t.fold(
            vec![row(7, 100, 4), row(7, 9_000_000, 2)],
            &[row(7, 100, 4), row(7, 9_000_000, 2)],
            Some(vec![
                proc(7, OFFSET + 100 + 40, 10),
                proc(7, OFFSET + 9_000_000 + 35, 20),
                proc(8, OFFSET + 50, 30),
            ]),
            HashMap::from([(
                ProcKey {
                    tgid: 8,
                    start_ns: OFFSET + 50,
                },
                "quick".to_string(),
            )]),
        );
        assert_eq!(t.threads(), 2);
        let j = t.join(OFFSET);
        let got: Vec<(u32, u64, u64, Option<u64>, &str)> = j
            .iter()
            .map(|j| {
                (
                    j.row.key.tgid,
                    j.row.key.start_ns,
                    j.row.total.voluntary,
                    j.syscalls,
                    j.comm.as_str(),
                )
            })
            .collect();
        assert_eq!(
            got,
            vec![
                (7, 100, 4, Some(10), "p7"),
                (7, 9_000_000, 2, Some(20), "p7"),
                (8, 50, 0, Some(30), "quick"),
            ]
        );
        let sum: u64 = j.iter().filter_map(|j| j.syscalls).sum();
        assert_eq!(sum, t.procs().iter().map(|p| p.syscalls.total).sum::<u64>());
        let mut uncounted = RunTotals::default();
        assert_eq!(uncounted.waits().count(), 0);
        uncounted.fold(vec![row(9, 1, 1)], &[], None, HashMap::new());
        assert_eq!(uncounted.join(OFFSET)[0].syscalls, None);
    }

    /// A process's waits rows: the latest replaces the earlier, and one that has gone
    /// (absent from later readings) keeps its last.
    #[test]
    fn waits_keep_every_process_latest_figures() {
        use crate::model::waits::{Figures, SyscallWaits};
        let w = |tgid, ns| ProcWaits {
            key: ProcKey { tgid, start_ns: 1 },
            syscalls: vec![SyscallWaits {
                nr: 35,
                delta: Figures::default(),
                total: Figures {
                    blocked_ns: ns,
                    switches: 1,
                    ..Figures::default()
                },
            }],
        };
        let mut t = RunTotals::default();
        t.fold_waits(vec![w(1, 10), w(2, 5)]);
        t.fold_waits(vec![w(1, 30)]);
        t.fold_waits(vec![]);
        let got: Vec<(u32, u64)> = t
            .waits()
            .map(|p| (p.key.tgid, p.syscalls[0].total.blocked_ns))
            .collect();
        assert_eq!(got, [(1, 30), (2, 5)]);
    }
}
