//! The "blocked in" section of `proclens run`'s report: the syscalls the command and its
//! descendants blocked in, together, with their blocked time, share and switches, and
//! what their select, poll and epoll calls did, from every process's final waits figures
//! (see `model::waits` and `run_totals`).

use std::collections::BTreeMap;

use proclens_common::waits::ReadyStats;
use serde::Serialize;

use super::{
    rates::ratio,
    syscalls,
    waits::{ProcWaits, blocked_name, is_syscall},
};

/// One syscall blocked in, summed over the command's processes.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct BlockedRow {
    /// The name in its ABI's table; `(outside syscalls)` for blocks outside any syscall,
    /// `(syscall unknown)` where the kernel cannot tell (before 5.15).
    pub syscall: String,
    /// `x86_64`, or `i386` for a 32-bit syscall; null for the two above.
    pub abi: Option<&'static str>,
    pub blocked_s: f64,
    /// Of the section's `blocked_s`, 0 to 1.
    pub share: f64,
    /// The voluntary switches that began the blocks.
    pub switches: u64,
}

/// One readiness call (select, `pselect6`, poll, ppoll, `epoll_wait`, `epoll_pwait`,
/// `epoll_pwait2`), summed over the command's processes.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ReadinessRow {
    pub syscall: String,
    /// Calls that returned.
    pub calls: u64,
    /// `nfds` (select, poll) or `maxevents` (epoll) per call.
    pub fds_in_per_call: f64,
    /// epoll: the instance's interest set per call (0 for select and poll).
    pub interest_per_call: f64,
    /// Ready fds returned per call.
    pub ready_per_call: f64,
    /// Calls that returned nothing ready (the timeout), 0 to 1.
    pub empty_share: f64,
    /// Calls that failed (EINTR among them).
    pub errors: u64,
    /// Time blocked in the syscall per call.
    pub blocked_ms_per_call: f64,
}

/// Where the command and its descendants blocked.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct BlockedInSection {
    /// Whether blocks are told apart by syscall (else they are all `(syscall unknown)`).
    pub by_syscall: bool,
    /// Whether select, poll and epoll calls were counted (`readiness`).
    pub readiness_counted: bool,
    /// Blocked time charged to syscalls, in all.
    pub blocked_s: f64,
    pub switches: u64,
    /// Longest blocked first.
    pub syscalls: Vec<BlockedRow>,
    /// Most calls first.
    pub readiness: Vec<ReadinessRow>,
    /// Blocks not charged to their syscall, readiness calls not counted (or epoll interest
    /// sets not kept): their kernel maps were full (0 normally).
    pub uncounted_blocks: u64,
    pub uncounted_readiness: u64,
}

/// What the kernel could not count (`Health::wait_map_full`, `ready_map_full`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Uncounted {
    pub blocks: u64,
    pub readiness: u64,
}

/// Builds the section from each process's totals (its latest waits figures).
pub fn section<'a>(
    procs: impl IntoIterator<Item = &'a ProcWaits>,
    by_syscall: bool,
    readiness_counted: bool,
    uncounted: Uncounted,
) -> BlockedInSection {
    // By syscall number: blocked ns, switches, readiness figures.
    let mut by_nr: BTreeMap<u32, (u64, u64, ReadyStats)> = BTreeMap::new();
    for p in procs {
        for s in &p.syscalls {
            let e = by_nr.entry(s.nr).or_default();
            e.0 += s.total.blocked_ns;
            e.1 += s.total.switches;
            e.2.add(&s.total.ready);
        }
    }
    let blocked_ns: u64 = by_nr.values().map(|e| e.0).sum();
    let switches: u64 = by_nr.values().map(|e| e.1).sum();
    let mut rows: Vec<(u32, u64, u64)> = by_nr
        .iter()
        .filter(|(_, e)| e.0 > 0 || e.1 > 0)
        .map(|(&nr, e)| (nr, e.0, e.1))
        .collect();
    rows.sort_by(|a, b| (b.1, b.2, a.0).cmp(&(a.1, a.2, b.0)));
    let mut ready: Vec<(u32, u64, ReadyStats)> = by_nr
        .iter()
        .filter(|(_, e)| e.2.calls > 0)
        .map(|(&nr, e)| (nr, e.0, e.2))
        .collect();
    ready.sort_by(|a, b| (b.2.calls, a.0).cmp(&(a.2.calls, b.0)));
    BlockedInSection {
        by_syscall,
        readiness_counted,
        blocked_s: blocked_ns as f64 / 1e9,
        switches,
        syscalls: rows
            .into_iter()
            .map(|(nr, ns, switches)| BlockedRow {
                syscall: blocked_name(nr),
                abi: is_syscall(nr).then(|| syscalls::abi(nr)),
                blocked_s: ns as f64 / 1e9,
                share: ratio(ns, blocked_ns),
                switches,
            })
            .collect(),
        readiness: ready
            .into_iter()
            .map(|(nr, ns, r)| ReadinessRow {
                syscall: blocked_name(nr),
                calls: r.calls,
                fds_in_per_call: ratio(r.fds_in, r.answered()),
                interest_per_call: ratio(r.interest, r.answered()),
                ready_per_call: ratio(r.ready, r.answered()),
                empty_share: ratio(r.empty, r.answered()),
                errors: r.errors,
                blocked_ms_per_call: ratio(ns, r.calls) / 1e6,
            })
            .collect(),
        uncounted_blocks: uncounted.blocks,
        uncounted_readiness: uncounted.readiness,
    }
}

#[cfg(test)]
mod tests {
    use ::syscalls::Sysno;
    use proclens_common::{
        copies::COMPAT_NR,
        waits::{OUTSIDE_SYSCALL, UNKNOWN_SYSCALL},
    };

    use super::*;
    use crate::model::{
        proctable::Key,
        waits::{Figures, SyscallWaits},
    };

    fn nr(s: Sysno) -> u32 {
        s.id() as u32
    }

    fn sys(nr: u32, blocked_ns: u64, switches: u64, ready: ReadyStats) -> SyscallWaits {
        let total = Figures {
            blocked_ns,
            switches,
            ready,
        };
        SyscallWaits {
            nr,
            delta: Figures::default(),
            total,
        }
    }

    fn proc(tgid: u32, syscalls: Vec<SyscallWaits>) -> ProcWaits {
        ProcWaits {
            key: Key { tgid, start_ns: 1 },
            syscalls,
        }
    }

    /// A parent waiting for its child, the child sleeping and polling: summed over both,
    /// each syscall once, longest first; the poll calls' figures per call.
    #[test]
    fn the_command_and_its_descendants_together() {
        let polls = ReadyStats {
            calls: 51,
            fds_in: 53,
            empty: 51,
            ..ReadyStats::default()
        };
        let procs = [
            proc(
                10,
                vec![
                    sys(nr(Sysno::wait4), 2_000_000_000, 1, ReadyStats::default()),
                    sys(
                        nr(Sysno::poll),
                        0,
                        0,
                        ReadyStats {
                            calls: 1,
                            fds_in: 3,
                            empty: 1,
                            ..ReadyStats::default()
                        },
                    ),
                ],
            ),
            proc(
                11,
                vec![
                    sys(
                        nr(Sysno::nanosleep),
                        1_000_000_000,
                        100,
                        ReadyStats::default(),
                    ),
                    sys(
                        nr(Sysno::poll),
                        1_000_000_000,
                        50,
                        ReadyStats {
                            calls: 50,
                            fds_in: 50,
                            empty: 50,
                            ..ReadyStats::default()
                        },
                    ),
                    sys(OUTSIDE_SYSCALL, 0, 0, ReadyStats::default()),
                    // 3 is read in the 32-bit table (close in the 64-bit one).
                    sys(3 | COMPAT_NR, 1_000, 1, ReadyStats::default()),
                ],
            ),
        ];
        let s = section(&procs, true, true, Uncounted::default());
        assert_eq!(s.switches, 152);
        assert!((s.blocked_s - 4.000_001).abs() < 1e-9, "{}", s.blocked_s);
        let names: Vec<(&str, Option<&str>, u64)> = s
            .syscalls
            .iter()
            .map(|r| (r.syscall.as_str(), r.abi, r.switches))
            .collect();
        assert_eq!(
            names,
            [
                ("wait4", Some(std::env::consts::ARCH), 1),
                ("nanosleep", Some(std::env::consts::ARCH), 100),
                ("poll", Some(std::env::consts::ARCH), 50),
                ("read", Some("i386"), 1),
            ],
            "nothing blocked outside syscalls: no row"
        );
        assert!(
            (s.syscalls[1].share - 0.25).abs() < 1e-6,
            "{:?}",
            s.syscalls[1]
        );
        assert_eq!(s.readiness.len(), 1);
        let p = &s.readiness[0];
        assert_eq!((p.syscall.as_str(), p.calls), ("poll", polls.calls));
        assert!((p.fds_in_per_call - 53.0 / 51.0).abs() < 1e-12);
        assert_eq!((p.ready_per_call, p.empty_share), (0.0, 1.0));
        assert!((p.blocked_ms_per_call - 1000.0 / 51.0).abs() < 1e-9);
    }

    #[test]
    fn blocks_outside_known_syscalls_are_named() {
        let procs = [proc(
            1,
            vec![
                sys(UNKNOWN_SYSCALL, 30, 3, ReadyStats::default()),
                sys(OUTSIDE_SYSCALL, 10, 1, ReadyStats::default()),
            ],
        )];
        let s = section(
            &procs,
            false,
            false,
            Uncounted {
                blocks: 2,
                readiness: 0,
            },
        );
        assert_eq!((s.uncounted_blocks, s.uncounted_readiness), (2, 0));
        let rows: Vec<(&str, Option<&str>)> = s
            .syscalls
            .iter()
            .map(|r| (r.syscall.as_str(), r.abi))
            .collect();
        assert_eq!(
            rows,
            [("(syscall unknown)", None), ("(outside syscalls)", None)]
        );
        assert!(s.readiness.is_empty() && !s.by_syscall && !s.readiness_counted);
        let empty = section(&[], true, true, Uncounted::default());
        assert!(empty.syscalls.is_empty() && empty.blocked_s == 0.0);
    }
}
