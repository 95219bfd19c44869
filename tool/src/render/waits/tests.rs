use proclens_common::waits::{OUTSIDE_SYSCALL, ReadyStats, UNKNOWN_SYSCALL};
use serde_json::Value;

use super::*;
use crate::model::{proctable::Key, waits::SyscallWaits};

const POLL: u32 = 7;
const FUTEX: u32 = 202;

fn syscall(nr: u32, ns: u64, switches: u64, ready: ReadyStats) -> SyscallWaits {
    let f = Figures {
        blocked_ns: ns,
        switches,
        ready,
    };
    SyscallWaits {
        nr,
        delta: f,
        total: f,
    }
}

fn frame() -> Frame {
    let ready = ReadyStats {
        calls: 4,
        fds_in: 4_000,
        ready: 4,
        ..ReadyStats::default()
    };
    Frame {
        unix_time: 1.0,
        clock: "12:00:00".into(),
        elapsed_s: 2.0,
        by_syscall: true,
        readiness: true,
        dropped: Dropped::default(),
        rows: vec![Row {
            waits: ProcWaits {
                key: Key {
                    tgid: 42,
                    start_ns: 9,
                },
                syscalls: vec![
                    syscall(POLL, 6_000_000, 3, ready),
                    syscall(FUTEX, 2_000_000, 1, ReadyStats::default()),
                    syscall(OUTSIDE_SYSCALL, 0, 0, ReadyStats::default()),
                ],
            },
            comm: "server".into(),
            alive: true,
        }],
    }
}

#[test]
fn json_has_the_split_and_the_readiness_table() {
    let lines = json_lines(&frame());
    assert_eq!(lines.len(), 2);
    let sys: Value = serde_json::from_str(&lines[0]).unwrap();
    assert_eq!(sys["type"], "waits_system");
    assert_eq!(sys["processes"], 1);
    let row: Value = serde_json::from_str(&lines[1]).unwrap();
    assert_eq!(row["type"], "waits");
    assert_eq!(row["pid"], 42);
    assert_eq!(row["blocked_ms"], 8.0);
    assert_eq!(row["switches_total"], 4);
    let b = row["blocked_in"].as_array().unwrap();
    // The block-less outside entry is left out.
    assert_eq!(b.len(), 2);
    assert_eq!(b[0]["syscall"], "poll");
    assert_eq!(b[0]["share"], 0.75);
    assert_eq!(b[1]["syscall"], "futex");
    let r = row["readiness"].as_array().unwrap();
    assert_eq!(r.len(), 1, "futex is no readiness call");
    assert_eq!(r[0]["calls_per_s"], 2.0);
    assert_eq!(r[0]["fds_in_per_call"], 1000.0);
    assert_eq!(r[0]["ready_per_call"], 1.0);
    assert_eq!(r[0]["blocked_ms_per_call"], 1.5);
}

#[test]
fn blocks_outside_a_known_syscall_have_no_number() {
    assert_eq!(syscall_name(OUTSIDE_SYSCALL), "(outside syscalls)");
    assert_eq!(syscall_name(UNKNOWN_SYSCALL), "(syscall unknown)");
    assert_eq!(syscall_name(POLL), "poll");
    assert!(is_readiness(POLL));
    assert!(!is_readiness(FUTEX));
    assert!(!is_readiness(UNKNOWN_SYSCALL));
    let mut f = frame();
    f.rows[0].waits.syscalls = vec![syscall(UNKNOWN_SYSCALL, 5, 1, ReadyStats::default())];
    let row: Value = serde_json::from_str(&json_lines(&f)[1]).unwrap();
    assert_eq!(row["blocked_in"][0]["nr"], Value::Null);
    assert_eq!(row["blocked_in"][0]["abi"], Value::Null);
}

#[test]
fn a_32_bit_syscall_is_named_as_run_names_it() {
    // i386's read is 3.
    let read32 = proclens_common::copies::COMPAT_NR | 3;
    assert_eq!(syscall_name(read32), "read (i386)");
    let mut f = frame();
    f.rows[0].waits.syscalls = vec![syscall(read32, 5, 1, ReadyStats::default())];
    let row: Value = serde_json::from_str(&json_lines(&f)[1]).unwrap();
    let b = &row["blocked_in"][0];
    assert_eq!(
        (&b["syscall"], &b["abi"], &b["nr"]),
        (&"read".into(), &"i386".into(), &3.into())
    );
}

#[test]
fn plain_lines_name_the_split() {
    let lines = plain_lines(&frame());
    assert!(lines[0].contains("1 processes"), "{lines:?}");
    assert!(lines[2].contains("server"), "{lines:?}");
    assert!(lines[2].contains("poll 75.0% (3)"), "{lines:?}");
    assert!(lines[3].contains("1000.0 fds in/call"), "{lines:?}");
}
