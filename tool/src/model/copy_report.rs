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
//! // after rendering, free the entries of processes that have gone:
//! tracer.copy_maps().unwrap().prune(&gone_tgids)?;
//! ```
//!
//! `top` needs only the syscall counts: `TracerOptions { syscalls: true, .. }` attaches
//! just the raw `sys_enter` counter, and `SyscallModel::update(&maps.syscalls()?)` gives
//! `ProcSyscalls` by tgid.

use std::collections::HashMap;

use proclens_common::copies::{CopyKey, CopyStats, SysKey};

use super::{
    copies::{CopyModel, ProcCopies},
    syscalls::{ProcSyscalls, SyscallModel},
};

/// A process's syscalls and copy paths over the last interval and since start.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ProcRow {
    pub tgid: u32,
    pub syscalls: ProcSyscalls,
    pub copies: ProcCopies,
}

impl ProcRow {
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
        let mut tgids: Vec<u32> = sys.keys().chain(cp.keys()).copied().collect();
        tgids.sort_unstable();
        tgids.dedup();
        let mut rows: Vec<ProcRow> = tgids
            .into_iter()
            .map(|tgid| ProcRow {
                tgid,
                syscalls: sys.remove(&tgid).unwrap_or_default(),
                copies: cp.remove(&tgid).unwrap_or_default(),
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
                .then(a.tgid.cmp(&b.tgid))
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
                _pad: 0,
            },
            CopyStats {
                bytes: 10,
                calls: 1,
                errors: 0,
            },
        )]);
        let sys = HashMap::from([
            (SysKey { tgid: 1, nr: 0 }, 500),
            (SysKey { tgid: 2, nr: 1 }, 1),
        ]);
        let rows = m.update(&copies, &sys);
        assert_eq!(rows.iter().map(|r| r.tgid).collect::<Vec<_>>(), vec![2, 1]);
        assert_eq!(rows[1].syscalls.total, 500);
        assert!(rows[1].copies.paths.is_empty());
        let rows = m.update(&copies, &sys);
        assert!(rows.iter().all(ProcRow::is_idle));
    }
}
