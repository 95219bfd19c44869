//! One row per process for the copies view (and for `top`/`run` integrations): its mode
//! switches (syscalls) and its copy paths, from the two kernel maps' snapshots.
//!
//! Using it from another view:
//!
//! ```text
//! let mut tracer = Tracer::start(&TracerOptions { syscalls: true, copies: true, ..Default::default() })?;
//! let mut model = CopiesModel::new();
//! // every interval:
//! let maps = tracer.copy_maps().expect("asked for");
//! let rows: Vec<ProcRow> = model.update(&maps.copies()?, &maps.syscalls()?);
//! //   row.syscalls.{delta,total}         mode switches (rates::per_second(delta, elapsed))
//! //   row.syscalls.top(n) / .io_uring    syscount-like list, io_uring flag
//! //   row.copies.paths                   per (syscall, src kind, dst kind) delta/total
//! //   row.copies.interval() / .since_start()  Derived: user_copy/zero_copy bytes,
//! //                                      zero_copy_pct(), mmap, sendfile savings
//! // after rendering, free the entries of processes that have gone (by row.key()):
//! tracer.copy_maps().unwrap().prune(&gone_keys)?;
//! ```
//!
//! `top` needs only the syscall counts: `TracerOptions { syscalls: true, .. }` attaches
//! just the raw `sys_enter` counter, and `SyscallModel::update(&maps.syscalls()?)` gives
//! `ProcSyscalls` by process [`Key`] (tgid, leader `start_boottime`).
//!
//! A process is (tgid, start), never the pid alone: under a fork storm a pid is freed and
//! given to a new process within one interval, and the two are two rows with the same
//! `tgid`. `start_ns` is the leader's `start_boottime` (the clock of /proc/PID/stat field
//! 22 and of the lifecycle process table's [`Key`]); the switch model's `Key::start_ns` is
//! the leader's `start_time` (monotonic), so joining the two goes by tgid plus liveness,
//! or by converting the clocks.

use std::collections::HashMap;

use proclens_common::copies::{CopyKey, CopyStats, SysKey};

use super::{
    copies::{CopyModel, ProcCopies},
    proctable::Key,
    syscalls::{ProcSyscalls, SyscallModel},
};

/// A process's syscalls and copy paths over the last interval and since start.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ProcRow {
    pub tgid: u32,
    /// The thread-group leader's `start_boottime` in ns (0 when the kernel could not read
    /// it, or for a placeholder row): with `tgid`, the process's identity.
    pub start_ns: u64,
    pub syscalls: ProcSyscalls,
    pub copies: ProcCopies,
}

impl ProcRow {
    /// The process's identity (what [`crate::collect::copies::CopyMaps::prune`] takes).
    pub fn key(&self) -> Key {
        Key {
            tgid: self.tgid,
            start_ns: self.start_ns,
        }
    }

    /// Nothing happened in the interval.
    pub fn is_idle(&self) -> bool {
        self.syscalls.delta == 0 && self.copies.paths.iter().all(|p| p.delta.is_zero())
    }
}

/// Both models, updated together.
#[derive(Debug, Default)]
pub struct CopiesModel {
    syscalls: SyscallModel,
    copies: CopyModel,
}

impl CopiesModel {
    pub fn new() -> Self {
        Self {
            syscalls: SyscallModel::new(),
            copies: CopyModel::new(),
        }
    }

    /// Folds in one snapshot of each map; rows busiest first (interval bytes, then
    /// syscalls), every process present in either map.
    pub fn update(
        &mut self,
        copies: &HashMap<CopyKey, CopyStats>,
        syscalls: &HashMap<SysKey, u64>,
    ) -> Vec<ProcRow> {
        let mut sys = self.syscalls.update(syscalls);
        let mut cp = self.copies.update(copies);
        let mut procs: Vec<Key> = sys.keys().chain(cp.keys()).copied().collect();
        procs.sort_unstable();
        procs.dedup();
        let mut rows: Vec<ProcRow> = procs
            .into_iter()
            .map(|k| ProcRow {
                tgid: k.tgid,
                start_ns: k.start_ns,
                syscalls: sys.remove(&k).unwrap_or_default(),
                copies: cp.remove(&k).unwrap_or_default(),
            })
            .collect();
        let moved = |r: &ProcRow| -> u64 {
            r.copies
                .paths
                .iter()
                .filter(|p| p.op != proclens_common::copies::op::MMAP)
                .map(|p| p.delta.bytes)
                .sum()
        };
        rows.sort_by(|a, b| {
            moved(b)
                .cmp(&moved(a))
                .then(b.syscalls.delta.cmp(&a.syscalls.delta))
                .then(a.key().cmp(&b.key()))
        });
        rows
    }
}

#[cfg(test)]
mod tests {
    use proclens_common::copies::{fd_kind, op};

    use super::*;

    #[test]
    fn rows_join_both_maps_busiest_first() {
        let mut m = CopiesModel::new();
        let copies = HashMap::from([(
            CopyKey {
                tgid: 2,
                op: op::WRITE,
                src: fd_kind::USER,
                dst: fd_kind::SOCKET,
                flags: 0,
                start_ns: 7,
                cpu: 0,
                _pad: 0,
            },
            CopyStats {
                bytes: 10,
                calls: 1,
                errors: 0,
                ..CopyStats::default()
            },
        )]);
        let sys = HashMap::from([
            (
                SysKey {
                    tgid: 1,
                    nr: 0,
                    start_ns: 3,
                    cpu: 0,
                    _pad: 0,
                },
                500,
            ),
            (
                SysKey {
                    tgid: 2,
                    nr: 1,
                    start_ns: 7,
                    cpu: 0,
                    _pad: 0,
                },
                1,
            ),
        ]);
        let rows = m.update(&copies, &sys);
        assert_eq!(rows.iter().map(|r| r.tgid).collect::<Vec<_>>(), vec![2, 1]);
        assert_eq!(rows[1].syscalls.total, 500);
        assert!(rows[1].copies.paths.is_empty());
        let rows = m.update(&copies, &sys);
        assert!(rows.iter().all(ProcRow::is_idle));
    }

    /// Issue 7: pid 2 exited and its pid went to a new process in the same interval; the
    /// new one's syscalls and bytes are its own row.
    #[test]
    fn a_reused_pid_is_two_rows() {
        let mut m = CopiesModel::new();
        let path = |start_ns, bytes| {
            (
                CopyKey {
                    tgid: 2,
                    op: op::WRITE,
                    src: fd_kind::USER,
                    dst: fd_kind::PIPE,
                    flags: 0,
                    start_ns,
                    cpu: 0,
                    _pad: 0,
                },
                CopyStats {
                    bytes,
                    calls: bytes,
                    errors: 0,
                    ..Default::default()
                },
            )
        };
        let sys = |start_ns, n| {
            (
                SysKey {
                    tgid: 2,
                    nr: 1,
                    start_ns,
                    cpu: 0,
                    _pad: 0,
                },
                n,
            )
        };
        let rows = m.update(
            &HashMap::from([path(10, 300), path(20, 5)]),
            &HashMap::from([sys(10, 301), sys(20, 6)]),
        );
        let got: Vec<_> = rows
            .iter()
            .map(|r| {
                (
                    r.tgid,
                    r.start_ns,
                    r.copies.since_start().user_copy_bytes,
                    r.syscalls.total,
                )
            })
            .collect();
        assert_eq!(got, vec![(2, 10, 300, 301), (2, 20, 5, 6)]);
    }
}
