use std::collections::HashMap;

use proclens_common::{
    copies::SysKey,
    switch::{LiveThread, ThreadSwitches, flags, state},
    waits::{BlockStats, OUTSIDE_SYSCALL, ReadyStats},
};

use super::*;

const NANOSLEEP: u32 = 35;
const POLL: u32 = 7;

fn key(tgid: u32) -> Key {
    Key {
        tgid,
        start_ns: 1000 + u64::from(tgid),
    }
}

fn sys(tgid: u32, nr: u32, cpu: u32) -> SysKey {
    SysKey {
        tgid,
        nr,
        start_ns: key(tgid).start_ns,
        cpu,
        _pad: 0,
    }
}

fn blocks(v: &[(u32, u32, u64, u64)]) -> HashMap<SysKey, BlockStats> {
    v.iter()
        .map(|&(tgid, nr, ns, sw)| {
            (
                sys(tgid, nr, 0),
                BlockStats {
                    blocked_ns: ns,
                    switches: sw,
                },
            )
        })
        .collect()
}

fn open(tgid: u32, nr: u32, ns: u64, switches: u64) -> OpenBlock {
    OpenBlock {
        key: key(tgid),
        nr,
        ns,
        switches,
    }
}

fn figures(rows: &[ProcWaits], tgid: u32, nr: u32) -> SyscallWaits {
    *rows
        .iter()
        .find(|p| p.key == key(tgid))
        .and_then(|p| p.syscalls.iter().find(|s| s.nr == nr))
        .unwrap_or_else(|| panic!("no {tgid}/{nr} in {rows:?}"))
}

/// A block in progress counts in the interval it elapses in; when it closes the kernel's
/// figure takes its place, and the intervals add up to the total.
#[test]
fn an_open_block_is_credited_as_it_elapses_and_handed_over_when_it_closes() {
    let mut m = WaitsModel::new();
    let (none, idle) = (HashMap::new(), HashMap::new());
    m.update(&none, &idle, &[]);
    let r = m.update(&none, &idle, &[open(1, NANOSLEEP, 300, 1)]);
    let s = figures(&r, 1, NANOSLEEP);
    assert_eq!((s.delta.blocked_ns, s.delta.switches), (300, 1));
    // Closed at 500 ns: 200 more in this interval, and the switch already counted.
    let r = m.update(&blocks(&[(1, NANOSLEEP, 500, 1)]), &idle, &[]);
    let s = figures(&r, 1, NANOSLEEP);
    assert_eq!((s.delta.blocked_ns, s.delta.switches), (200, 0));
    assert_eq!((s.total.blocked_ns, s.total.switches), (500, 1));
}

/// An open block's estimate ahead of what the kernel charged at its close: the total holds
/// its highest value (never goes back), and the next growth starts from there.
#[test]
fn totals_never_go_back() {
    let mut m = WaitsModel::new();
    let (none, idle) = (HashMap::new(), HashMap::new());
    m.update(&none, &idle, &[open(1, POLL, 300, 1)]);
    let r = m.update(&blocks(&[(1, POLL, 290, 1)]), &idle, &[]);
    let s = figures(&r, 1, POLL);
    assert_eq!((s.delta.blocked_ns, s.total.blocked_ns), (0, 300));
    let r = m.update(&blocks(&[(1, POLL, 400, 2)]), &idle, &[]);
    let s = figures(&r, 1, POLL);
    assert_eq!((s.delta.blocked_ns, s.delta.switches), (100, 1));
}

/// CPUs are summed by the collector; here the accumulated blocks of live threads and the
/// map add up, and the syscalls of a process come busiest first in the interval.
#[test]
fn map_and_live_threads_add_up_busiest_first() {
    let mut m = WaitsModel::new();
    let (none, idle) = (HashMap::new(), HashMap::new());
    m.update(&none, &idle, &[]);
    let r = m.update(
        &blocks(&[(1, NANOSLEEP, 1_000, 10), (1, OUTSIDE_SYSCALL, 5, 1)]),
        &idle,
        &[open(1, NANOSLEEP, 500, 5), open(1, POLL, 2_000, 1)],
    );
    let p = &r[0];
    assert_eq!(
        p.syscalls.iter().map(|s| s.nr).collect::<Vec<_>>(),
        [POLL, NANOSLEEP, OUTSIDE_SYSCALL]
    );
    assert_eq!(figures(&r, 1, NANOSLEEP).total.switches, 15);
    let (d, t) = p.blocked();
    assert_eq!((d.blocked_ns, d.switches), (3_505, 17));
    assert_eq!(t.blocked_ns, 3_505);
}

/// A process absent from a reading (it has gone: its last figures were read, then its
/// entries freed) is forgotten; a process that reuses its pid starts from zero.
#[test]
fn gone_processes_are_forgotten() {
    let mut m = WaitsModel::new();
    let (none, idle) = (HashMap::new(), HashMap::new());
    m.update(&blocks(&[(1, POLL, 100, 1)]), &idle, &[]);
    assert!(m.update(&none, &idle, &[]).is_empty());
    let r = m.update(&blocks(&[(1, POLL, 40, 1)]), &idle, &[]);
    let s = figures(&r, 1, POLL);
    assert_eq!((s.delta.blocked_ns, s.total.blocked_ns), (40, 40));
}

/// The readiness counters join the blocked time of the same syscall, with deltas.
#[test]
fn readiness_counters_have_deltas() {
    let mut m = WaitsModel::new();
    let ready = |calls, fds_in| -> HashMap<SysKey, ReadyStats> {
        [(
            sys(1, POLL, 0),
            ReadyStats {
                calls,
                fds_in,
                empty: calls,
                ..ReadyStats::default()
            },
        )]
        .into()
    };
    m.update(&HashMap::new(), &ready(10, 10_000), &[]);
    let r = m.update(&blocks(&[(1, POLL, 9, 3)]), &ready(15, 15_000), &[]);
    let s = figures(&r, 1, POLL);
    assert_eq!(
        (
            s.delta.ready.calls,
            s.delta.ready.fds_in,
            s.delta.ready.empty
        ),
        (5, 5_000, 5)
    );
    assert_eq!((s.total.ready.calls, s.delta.blocked_ns), (15, 9));
}

fn live(e: &ThreadSwitches, state: u32, now: u64) -> LiveThread {
    LiveThread {
        tid: 5,
        state,
        now,
        process_start: key(1).start_ns,
        stats: *e,
        ..LiveThread::default()
    }
}

/// A live thread's accumulated blocks and the block it is in, as the kernel will charge
/// them; nothing for a thread whose last switch out was involuntary, or whose wait before
/// it is unknown (first seen mid-block).
#[test]
fn a_live_thread_hands_over_its_accumulated_and_open_blocks() {
    let e = ThreadSwitches {
        tgid: 1,
        flags: flags::OUT_VOLUNTARY | flags::WAIT_KNOWN | flags::NVCSW_KNOWN,
        out_ts: 1_000,
        blocked_in: POLL + 1,
        acc_nr: NANOSLEEP + 1,
        acc_switches: 4,
        acc_ns: 4_000,
        ..ThreadSwitches::default()
    };
    let got: Vec<OpenBlock> = open_blocks(&live(&e, 0, 1_700), Timing::SchedInfo).collect();
    assert_eq!(got, [open(1, NANOSLEEP, 4_000, 4), open(1, POLL, 700, 1)]);
    let preempted = ThreadSwitches {
        flags: flags::WAIT_KNOWN,
        ..e
    };
    let got: Vec<OpenBlock> =
        open_blocks(&live(&preempted, state::QUEUED, 1_700), Timing::SchedInfo).collect();
    assert_eq!(got, [open(1, NANOSLEEP, 4_000, 4)]);
    let unknown = ThreadSwitches {
        flags: flags::OUT_VOLUNTARY,
        acc_switches: 0,
        ..e
    };
    assert_eq!(
        open_blocks(&live(&unknown, 0, 1_700), Timing::SchedInfo).count(),
        0
    );
}
