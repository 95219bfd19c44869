//! The Switches table: its lines (one per process or thread, computed once per
//! snapshot), the columns it sorts by, and what each tab shows after the filters.

use super::{App, CopyLine, Tab, ZombieLine};
use crate::{
    collect::extras::Extras,
    model::{
        histogram::percentile_capped_us,
        rates::{per_second, percent},
        switches::Row,
    },
};

/// Column the table is sorted by (`s` cycles).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SortKey {
    Switches,
    Voluntary,
    Involuntary,
    CrossShare,
    RunqP99,
    Cpu,
    Syscalls,
    Bytes,
    Zombies,
    Pid,
}

impl SortKey {
    const ALL: [SortKey; 10] = [
        SortKey::Switches,
        SortKey::Voluntary,
        SortKey::Involuntary,
        SortKey::CrossShare,
        SortKey::RunqP99,
        SortKey::Cpu,
        SortKey::Syscalls,
        SortKey::Bytes,
        SortKey::Zombies,
        SortKey::Pid,
    ];

    pub fn label(self) -> &'static str {
        match self {
            SortKey::Switches => "switches/s",
            SortKey::Voluntary => "cswch/s",
            SortKey::Involuntary => "nvcswch/s",
            SortKey::CrossShare => "cross%",
            SortKey::RunqP99 => "runq-p99",
            SortKey::Cpu => "%cpu",
            SortKey::Syscalls => "sysc/s",
            SortKey::Bytes => "bytes/s",
            SortKey::Zombies => "zombies",
            SortKey::Pid => "pid",
        }
    }

    pub(super) fn next(self) -> Self {
        super::next_of(&Self::ALL, self)
    }
}

/// What a line of the table shows, computed once per snapshot.
#[derive(Debug, Clone, PartialEq)]
pub struct Line {
    pub pid: u32,
    pub tid: Option<u32>,
    pub comm: String,
    pub voluntary_s: f64,
    pub involuntary_s: f64,
    pub same_pct: f64,
    pub cross_pct: f64,
    pub cpu_pct: f64,
    pub runq_p99_us: Option<u64>,
    /// Per-process figures (`None` on thread lines and when not counted): syscalls/s,
    /// bytes/s moved by the copy family (through user buffers and zero-copy), zombies held.
    pub syscalls_s: Option<f64>,
    pub bytes_s: Option<f64>,
    pub zombies: Option<usize>,
}

impl Line {
    pub(super) fn of(row: &Row, comm: &str, elapsed_s: f64, extras: Option<&Extras>) -> Self {
        let d = &row.delta;
        let ins = d.same_in + d.cross_in + d.idle_kernel_in;
        let threads = extras.is_none();
        let pid = row.key.tgid;
        let proc_row = extras.and_then(|e| e.procs.as_ref().map(|_| e.proc_row(pid)));
        let copied = |r: &crate::model::copy_report::ProcRow| {
            let i = r.copies.interval();
            per_second(
                i.user_copy_bytes + i.in_kernel_copy_bytes + i.zero_copy_bytes,
                elapsed_s,
            )
        };
        Self {
            pid: row.key.tgid,
            tid: threads.then_some(row.key.id),
            comm: comm.to_string(),
            voluntary_s: per_second(d.voluntary, elapsed_s),
            involuntary_s: per_second(d.involuntary, elapsed_s),
            same_pct: percent(d.same_in, ins),
            cross_pct: percent(d.cross_in, ins),
            cpu_pct: if elapsed_s > 0.0 {
                d.oncpu_ns as f64 / 1e7 / elapsed_s
            } else {
                0.0
            },
            runq_p99_us: percentile_capped_us(&d.runq_hist, 99.0, row.total.runq_max_ns),
            syscalls_s: proc_row
                .map(|r| r.map_or(0.0, |r| per_second(r.syscalls.delta, elapsed_s))),
            bytes_s: proc_row.map(|r| r.map_or(0.0, copied)),
            zombies: extras.and_then(|e| e.zombies_of(pid)),
        }
    }
}

impl App {
    fn passes(&self, pid: u32, comm: &str) -> bool {
        self.selection.matches(pid, comm)
    }

    /// The Copies tab's lines: filtered, most bytes first.
    pub fn visible_copies(&self) -> Vec<&CopyLine> {
        let mut v: Vec<&CopyLine> = self
            .copy_lines
            .iter()
            .filter(|l| self.passes(l.pid, &l.comm))
            .collect();
        let moved = |l: &CopyLine| l.user_copy_s + l.in_kernel_s + l.zero_copy_s;
        v.sort_by(|a, b| {
            moved(b)
                .total_cmp(&moved(a))
                .then(b.syscalls_s.total_cmp(&a.syscalls_s))
                .then(a.pid.cmp(&b.pid))
        });
        v
    }

    /// The Zombies tab's lines: filtered by the zombie's or its parent's pid and command,
    /// oldest first.
    pub fn visible_zombies(&self) -> Vec<&ZombieLine> {
        self.zombie_lines
            .iter()
            .filter(|z| self.passes(z.pid, &z.comm) || self.passes(z.ppid, &z.parent_comm))
            .collect()
    }

    /// How many lines the current tab shows.
    pub(super) fn visible_len(&self) -> usize {
        match self.tab {
            Tab::Switches => self.visible().len(),
            Tab::Zombies => self.visible_zombies().len(),
            Tab::Copies => self.visible_copies().len(),
        }
    }

    /// The lines on screen: filtered, sorted, busiest first.
    pub fn visible(&self) -> Vec<&Line> {
        let source = if self.threads {
            &self.thread_lines
        } else {
            &self.processes
        };
        let mut v: Vec<&Line> = source
            .iter()
            .filter(|l| self.passes(l.pid, &l.comm))
            .filter(|l| {
                l.voluntary_s + l.involuntary_s > 0.0
                    || l.zombies.unwrap_or(0) > 0
                    || !self.selection.pids.is_empty()
            })
            .collect();
        let key = |l: &Line| -> f64 {
            match self.sort {
                SortKey::Switches => l.voluntary_s + l.involuntary_s,
                SortKey::Voluntary => l.voluntary_s,
                SortKey::Involuntary => l.involuntary_s,
                SortKey::CrossShare => l.cross_pct,
                SortKey::RunqP99 => l.runq_p99_us.unwrap_or(0) as f64,
                SortKey::Cpu => l.cpu_pct,
                SortKey::Syscalls => l.syscalls_s.unwrap_or(0.0),
                SortKey::Bytes => l.bytes_s.unwrap_or(0.0),
                SortKey::Zombies => l.zombies.unwrap_or(0) as f64,
                SortKey::Pid => -f64::from(l.tid.unwrap_or(l.pid)),
            }
        };
        v.sort_by(|a, b| key(b).total_cmp(&key(a)).then(a.pid.cmp(&b.pid)));
        v
    }
}
