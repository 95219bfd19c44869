//! The copies and zombies sections of `proclens run`'s report: pure assembly from the
//! command's syscall/copy rows and what its process table saw.

use std::collections::BTreeMap;

use serde::Serialize;

use super::{
    copies::{Counts, Derived, PathRow, kind_name, op_name},
    copy_report::ProcRow,
    exit_status::StatusFields,
    proctable::{Notice, Zombie},
    rates::per_second,
    syscalls,
};

/// One copy path summed over the command's processes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct PathSummary {
    /// The syscall as a user calls it (`sendfile`, `pread64`, ...).
    pub syscall: &'static str,
    /// `user_copy`, `in_kernel_copy`, `zero_copy` or `mmap`.
    pub class: &'static str,
    pub src: &'static str,
    pub dst: &'static str,
    pub bytes: u64,
    pub calls: u64,
    /// Failed calls, would-blocks (EAGAIN) and interruptions (EINTR, restarts) apart.
    pub errors: u64,
    pub would_block: u64,
    pub interrupted: u64,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct SyscallCount {
    /// The name in its ABI's table.
    pub name: String,
    /// `x86_64`, or `i386` for a 32-bit (compat) syscall.
    pub abi: &'static str,
    pub count: u64,
}

/// What sendfile would have saved (the model in `proclens copies --help`).
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Saving {
    pub eligible_bytes: u64,
    pub cpu_copy_bytes: u64,
    pub syscalls: u64,
    pub mode_switches: u64,
}

/// Mode switches and copy paths of the command and its descendants.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct CopiesSection {
    /// Syscalls (user→kernel mode switches) of all the command's processes.
    pub syscalls: u64,
    pub syscalls_per_s: f64,
    /// Of them, 32-bit (compat) syscalls.
    pub compat_syscalls: u64,
    /// Bytes the CPU copied through user memory (read/write family).
    pub user_copy_bytes: u64,
    /// Bytes the CPU copied inside the kernel (`copy_file_range`, splice out of
    /// sockets...).
    pub in_kernel_copy_bytes: u64,
    /// Bytes moved by page reference, not copied (sendfile and splice into sockets and
    /// pipes, tee, vmsplice into a pipe).
    pub zero_copy_bytes: u64,
    pub zero_copy_pct: f64,
    /// File-backed mmap: calls and mapped bytes.
    pub mmap_calls: u64,
    pub mmap_bytes: u64,
    /// Copy-family calls (mmap apart), failed ones, and those that would have blocked or
    /// were interrupted (not failures).
    pub copy_calls: u64,
    pub copy_errors: u64,
    pub copy_would_block: u64,
    pub copy_interrupted: u64,
    /// A process used `io_uring`: its submissions bypass these syscalls and are not
    /// counted.
    pub io_uring: bool,
    pub sendfile_would_save: Option<Saving>,
    /// Busiest first.
    pub paths: Vec<PathSummary>,
    /// The ten busiest syscalls.
    pub top_syscalls: Vec<SyscallCount>,
}

/// Builds the copies section from the rows (totals since the command started) of the
/// command's processes.
pub fn copies(rows: &[ProcRow], wall_s: f64) -> CopiesSection {
    let mut paths: BTreeMap<(u8, u8, u8), PathRow> = BTreeMap::new();
    let mut by_nr: BTreeMap<u32, u64> = BTreeMap::new();
    let mut flows = Counts::default();
    let (mut calls, mut compat) = (0, 0);
    let mut io_uring = false;
    for r in rows {
        calls += r.syscalls.total;
        compat += r.syscalls.compat_total;
        io_uring |= r.syscalls.io_uring;
        flows.add(&r.copies.flows.1);
        for c in &r.syscalls.by_nr {
            *by_nr.entry(c.nr).or_default() += c.total;
        }
        for p in &r.copies.paths {
            // Both ABIs' calls of a path are one path here.
            let sum = paths.entry((p.op, p.src, p.dst)).or_insert(PathRow {
                total: Counts::default(),
                delta: Counts::default(),
                flags: 0,
                ..*p
            });
            sum.total.add(&p.total);
        }
    }
    let derived = Derived::from_paths(paths.values().map(|p| (p, p.total)), flows);
    let mut path_list: Vec<PathSummary> = paths
        .values()
        .map(|p| PathSummary {
            syscall: op_name(p.op),
            class: p.class().as_str(),
            src: kind_name(p.src),
            dst: kind_name(p.dst),
            bytes: p.total.bytes,
            calls: p.total.calls,
            errors: p.total.errors,
            would_block: p.total.would_block,
            interrupted: p.total.interrupted,
        })
        .collect();
    path_list.sort_by(|a, b| b.bytes.cmp(&a.bytes).then(b.calls.cmp(&a.calls)));
    let mut top: Vec<(u32, u64)> = by_nr.into_iter().filter(|&(_, n)| n > 0).collect();
    top.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(&b.0)));
    let s = derived.sendfile;
    CopiesSection {
        syscalls: calls,
        syscalls_per_s: per_second(calls, wall_s),
        compat_syscalls: compat,
        user_copy_bytes: derived.user_copy_bytes,
        in_kernel_copy_bytes: derived.in_kernel_copy_bytes,
        zero_copy_bytes: derived.zero_copy_bytes,
        zero_copy_pct: derived.zero_copy_pct(),
        mmap_calls: derived.mmap_calls,
        mmap_bytes: derived.mmap_bytes,
        copy_calls: derived.calls,
        copy_errors: derived.errors,
        copy_would_block: derived.would_block,
        copy_interrupted: derived.interrupted,
        io_uring,
        sendfile_would_save: (s.eligible_bytes > 0).then_some(Saving {
            eligible_bytes: s.eligible_bytes,
            cpu_copy_bytes: s.cpu_copy_bytes,
            syscalls: s.syscalls,
            mode_switches: s.mode_switches,
        }),
        paths: path_list,
        top_syscalls: top
            .into_iter()
            .take(10)
            .map(|(nr, count)| SyscallCount {
                name: syscalls::name(nr).into_owned(),
                abi: syscalls::abi(nr),
                count,
            })
            .collect(),
    }
}

/// A zombie of the command's: still unreaped when the report was made, or reaped late.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ZombieEntry {
    pub pid: u32,
    pub comm: String,
    pub ppid: u32,
    pub parent_comm: String,
    #[serde(flatten)]
    pub status: StatusFields,
    /// Dead and unreaped this long (until the report, or until reaped).
    pub zombie_s: f64,
}

/// Zombies the command's processes left behind or reaped late.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct ZombiesSection {
    /// The threshold: a process dead this long without being reaped was a zombie.
    pub min_age_s: f64,
    /// Still zombies when the command ended (their parent lives on and has not waited).
    pub left: Vec<ZombieEntry>,
    /// Reaped, but at least `min_age_s` after they died.
    pub reaped_late: Vec<ZombieEntry>,
}

/// Builds the zombies section from the zombies left at the end and the reap notices seen
/// while the command ran. `parent_comm` names a parent the table no longer holds.
pub fn zombies(
    left: &[Zombie],
    notices: &[Notice],
    min_age_ns: u64,
    parent_comm: impl Fn(u32) -> Option<String>,
) -> ZombiesSection {
    // Blamed on the parent that left them unreaped: a process of the command that died
    // before reaping one handed it to init or a subreaper outside the command.
    let blame = |ppid: u32| parent_comm(ppid).unwrap_or_else(|| "?".into());
    let left = left
        .iter()
        .map(|z| ZombieEntry {
            pid: z.key.tgid,
            comm: z.comm.clone(),
            ppid: z.death_ppid,
            parent_comm: if z.death_ppid == z.ppid {
                z.parent_comm.clone()
            } else {
                blame(z.death_ppid)
            },
            status: z.status.into(),
            zombie_s: z.age_ns as f64 / 1e9,
        })
        .collect();
    let reaped_late = notices
        .iter()
        .filter_map(|n| match n {
            Notice::Reaped {
                proc: p,
                dead_for_ns: Some(d),
                ..
            } if *d >= min_age_ns => {
                let death = p.death?;
                if death.autoreap {
                    return None;
                }
                Some(ZombieEntry {
                    pid: p.key.tgid,
                    comm: p.comm.to_string(),
                    ppid: death.ppid,
                    parent_comm: blame(death.ppid),
                    status: death.status.into(),
                    zombie_s: *d as f64 / 1e9,
                })
            }
            _ => None,
        })
        .collect();
    ZombiesSection {
        min_age_s: min_age_ns as f64 / 1e9,
        left,
        reaped_late,
    }
}

#[cfg(test)]
mod tests {
    use proclens_common::copies::{fd_kind, op};

    use super::*;
    use crate::model::{
        copies::ProcCopies,
        proctable::{Dated, Death, Key, Proc},
        syscalls::{NrCount, ProcSyscalls},
    };
    use proclens_common::lifecycle::ExitStatus;

    fn path(op: u8, src: u8, dst: u8, bytes: u64, calls: u64) -> PathRow {
        let c = Counts {
            bytes,
            calls,
            ..Counts::default()
        };
        PathRow {
            op,
            src,
            dst,
            flags: 0,
            delta: c,
            total: c,
        }
    }

    fn row(tgid: u32, sys: u64, paths: Vec<PathRow>) -> ProcRow {
        ProcRow {
            tgid,
            start_ns: 0,
            syscalls: ProcSyscalls {
                delta: 0,
                total: sys,
                by_nr: vec![NrCount {
                    nr: 0,
                    delta: 0,
                    total: sys,
                }],
                io_uring: false,
                compat_total: 0,
            },
            copies: ProcCopies {
                paths,
                ..ProcCopies::default()
            },
        }
    }

    #[test]
    fn copies_sum_paths_over_processes() {
        let rows = [
            row(
                1,
                100,
                vec![
                    path(op::READ, fd_kind::FILE, fd_kind::USER, 1000, 10),
                    path(op::WRITE, fd_kind::USER, fd_kind::SOCKET, 1000, 10),
                ],
            ),
            row(
                2,
                50,
                vec![
                    path(op::SENDFILE64, fd_kind::FILE, fd_kind::SOCKET, 4000, 2),
                    path(op::READ, fd_kind::FILE, fd_kind::USER, 500, 5),
                ],
            ),
        ];
        let s = copies(&rows, 2.0);
        assert_eq!(s.syscalls, 150);
        assert_eq!(s.syscalls_per_s, 75.0);
        assert_eq!(s.user_copy_bytes, 2500);
        assert_eq!(s.zero_copy_bytes, 4000);
        assert_eq!(s.paths[0].syscall, "sendfile");
        assert_eq!(s.paths[0].class, "zero_copy");
        let read = s.paths.iter().find(|p| p.syscall == "read").unwrap();
        assert_eq!(
            (read.bytes, read.calls, read.src, read.dst),
            (1500, 15, "file", "user")
        );
        // 1500 bytes read from files, 1000 written to sockets, but no flow the kernel
        // paired: nothing for sendfile to save.
        assert_eq!(s.sendfile_would_save, None);
        assert_eq!(s.top_syscalls[0].name, "read");
        assert_eq!(s.top_syscalls[0].count, 150);
    }

    fn proc(pid: u32, ppid: u32, autoreap: bool) -> Proc {
        let key = Key {
            tgid: pid,
            start_ns: 1,
        };
        let mut p = Proc::new(key, format!("c{pid}").into(), ppid, None, 0);
        p.death = Some(Death {
            at_ns: 0,
            dated: Dated::Exit,
            status: ExitStatus::Code(2),
            autoreap,
            ppid,
        });
        p
    }

    #[test]
    fn zombies_keep_late_reaps_only() {
        const SEC: u64 = 1_000_000_000;
        let reaped = |p: Proc, d: u64| Notice::Reaped {
            proc: (&p).into(),
            dead_for_ns: Some(d),
            at_ns: d,
        };
        let notices = [
            reaped(proc(10, 5, false), 3 * SEC),
            reaped(proc(11, 5, false), SEC / 10),
            reaped(proc(12, 5, true), 3 * SEC),
        ];
        let s = zombies(&[], &notices, SEC, |p| (p == 5).then(|| "parent".into()));
        assert_eq!(s.reaped_late.len(), 1);
        let z = &s.reaped_late[0];
        assert_eq!((z.pid, z.ppid, z.parent_comm.as_str()), (10, 5, "parent"));
        assert_eq!((z.status.exit_code, z.status.signal), (Some(2), None));
        assert_eq!(z.zombie_s, 3.0);
        assert!(s.left.is_empty());
    }
}
