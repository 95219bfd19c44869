//! `proclens waits` output, plain and JSON (one object per process per interval, after a
//! `system` line). The JSON schema is documented in one place: docs/guide.md's waits
//! section (change it with the code).

use serde::Serialize;

use crate::model::{
    rates::{per_second, ratio},
    syscalls,
    waits::{Figures, ProcWaits, SyscallWaits, blocked_name, is_syscall},
};
use proclens_common::waits::{ReadyStats, call};

/// In-kernel counts of what could not be recorded, since start.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct Dropped {
    pub wait_map_full: u64,
    pub ready_map_full: u64,
    pub untracked_threads: u64,
}

/// One process of the interval: its waits, command name, whether it still exists.
#[derive(Debug, Clone)]
pub struct Row {
    pub waits: ProcWaits,
    pub comm: String,
    pub alive: bool,
}

/// Everything one interval shows.
#[derive(Debug, Clone)]
pub struct Frame {
    pub unix_time: f64,
    pub clock: String,
    pub elapsed_s: f64,
    /// Whether blocks are told apart by syscall on this kernel.
    pub by_syscall: bool,
    /// Whether select, poll and epoll are counted.
    pub readiness: bool,
    pub dropped: Dropped,
    pub rows: Vec<Row>,
}

super::report_with!(Frame);

/// A syscall's name in the plain lines: its name in its ABI's table (`read (i386)` for a
/// 32-bit one), or what the block was outside a known syscall. (The JSON gives the ABI in
/// a field of its own, as `run`'s does: see [`blocked_name`].)
pub fn syscall_name(nr: u32) -> String {
    if is_syscall(nr) {
        syscalls::label(nr)
    } else {
        blocked_name(nr)
    }
}

/// Whether `nr` is one of the readiness calls (select, poll, epoll waits).
pub fn is_readiness(nr: u32) -> bool {
    is_syscall(nr)
        && !syscalls::is_compat(nr)
        && call::NAMES[..call::READINESS].contains(&&*syscalls::name(nr))
}

fn ms(ns: u64) -> f64 {
    ns as f64 / 1e6
}

#[derive(Debug, Serialize)]
struct JsonBlocked {
    syscall: String,
    /// `null` for a block outside any syscall, or whose syscall this kernel cannot tell.
    nr: Option<u32>,
    abi: Option<&'static str>,
    blocked_ms: f64,
    blocked_ms_total: f64,
    switches: u64,
    switches_total: u64,
    share: f64,
    share_total: f64,
}

#[derive(Debug, Serialize)]
struct JsonReady {
    syscall: String,
    nr: u32,
    calls: u64,
    calls_total: u64,
    calls_per_s: f64,
    fds_in: u64,
    fds_in_total: u64,
    fds_in_per_call: f64,
    fds_in_per_call_total: f64,
    interest_per_call: f64,
    interest_per_call_total: f64,
    ready: u64,
    ready_total: u64,
    ready_per_call: f64,
    ready_per_call_total: f64,
    empty: u64,
    empty_total: u64,
    empty_share: f64,
    empty_share_total: f64,
    errors: u64,
    errors_total: u64,
    blocked_ms_per_call: f64,
    blocked_ms_per_call_total: f64,
}

impl JsonReady {
    fn new(s: &SyscallWaits, elapsed_s: f64) -> Self {
        let (d, t): (&ReadyStats, &ReadyStats) = (&s.delta.ready, &s.total.ready);
        let (dn, tn) = (d.answered(), t.answered());
        Self {
            syscall: syscall_name(s.nr),
            nr: syscalls::number(s.nr),
            calls: d.calls,
            calls_total: t.calls,
            calls_per_s: per_second(d.calls, elapsed_s),
            fds_in: d.fds_in,
            fds_in_total: t.fds_in,
            fds_in_per_call: ratio(d.fds_in, dn),
            fds_in_per_call_total: ratio(t.fds_in, tn),
            interest_per_call: ratio(d.interest, dn),
            interest_per_call_total: ratio(t.interest, tn),
            ready: d.ready,
            ready_total: t.ready,
            ready_per_call: ratio(d.ready, dn),
            ready_per_call_total: ratio(t.ready, tn),
            empty: d.empty,
            empty_total: t.empty,
            empty_share: ratio(d.empty, dn),
            empty_share_total: ratio(t.empty, tn),
            errors: d.errors,
            errors_total: t.errors,
            blocked_ms_per_call: ratio(s.delta.blocked_ns, d.calls) / 1e6,
            blocked_ms_per_call_total: ratio(s.total.blocked_ns, t.calls) / 1e6,
        }
    }
}

#[derive(Debug, Serialize)]
struct JsonRow<'a> {
    #[serde(rename = "type")]
    kind: &'static str,
    time: f64,
    interval_s: f64,
    pid: u32,
    start_ns: u64,
    comm: &'a str,
    alive: bool,
    blocked_ms: f64,
    blocked_ms_total: f64,
    switches: u64,
    switches_total: u64,
    blocked_in: Vec<JsonBlocked>,
    readiness: Vec<JsonReady>,
}

#[derive(Debug, Serialize)]
struct JsonSystem {
    #[serde(rename = "type")]
    kind: &'static str,
    time: f64,
    interval_s: f64,
    processes: usize,
    by_syscall: bool,
    readiness: bool,
    dropped: Dropped,
}

fn blocked_rows(w: &ProcWaits) -> (Figures, Figures, Vec<JsonBlocked>) {
    let (d, t) = w.blocked();
    let rows = w
        .syscalls
        .iter()
        .filter(|s| s.total.blocked_ns > 0 || s.total.switches > 0)
        .map(|s| JsonBlocked {
            syscall: blocked_name(s.nr),
            nr: is_syscall(s.nr).then(|| syscalls::number(s.nr)),
            abi: is_syscall(s.nr).then(|| syscalls::abi(s.nr)),
            blocked_ms: ms(s.delta.blocked_ns),
            blocked_ms_total: ms(s.total.blocked_ns),
            switches: s.delta.switches,
            switches_total: s.total.switches,
            share: ratio(s.delta.blocked_ns, d.blocked_ns),
            share_total: ratio(s.total.blocked_ns, t.blocked_ns),
        })
        .collect();
    (d, t, rows)
}

fn readiness_rows(w: &ProcWaits, elapsed_s: f64) -> Vec<JsonReady> {
    w.syscalls
        .iter()
        .filter(|s| is_readiness(s.nr) && s.total.ready.calls > 0)
        .map(|s| JsonReady::new(s, elapsed_s))
        .collect()
}

pub fn json_lines(f: &Frame) -> Vec<String> {
    let mut out = vec![
        serde_json::to_string(&JsonSystem {
            kind: "waits_system",
            time: f.unix_time,
            interval_s: f.elapsed_s,
            processes: f.rows.len(),
            by_syscall: f.by_syscall,
            readiness: f.readiness,
            dropped: f.dropped,
        })
        .unwrap_or_default(),
    ];
    for r in &f.rows {
        let (d, t, blocked_in) = blocked_rows(&r.waits);
        let row = JsonRow {
            kind: "waits",
            time: f.unix_time,
            interval_s: f.elapsed_s,
            pid: r.waits.key.tgid,
            start_ns: r.waits.key.start_ns,
            comm: &r.comm,
            alive: r.alive,
            blocked_ms: ms(d.blocked_ns),
            blocked_ms_total: ms(t.blocked_ns),
            switches: d.switches,
            switches_total: t.switches,
            blocked_in,
            readiness: readiness_rows(&r.waits, f.elapsed_s),
        };
        out.push(serde_json::to_string(&row).unwrap_or_default());
    }
    out
}

pub fn plain_lines(f: &Frame) -> Vec<String> {
    let d = &f.dropped;
    let mut out = vec![format!(
        "{} waits: {} processes; {}{}{}",
        f.clock,
        f.rows.len(),
        if f.by_syscall {
            "blocked time by the syscall each block began in"
        } else {
            "this kernel cannot tell blocks apart by syscall (5.15+)"
        },
        if f.readiness {
            "; select, poll and epoll counted"
        } else {
            "; select, poll and epoll not counted"
        },
        if *d == Dropped::default() {
            String::new()
        } else {
            format!(
                "; not counted (maps full): {} blocks, {} readiness calls; untracked threads {}",
                d.wait_map_full, d.ready_map_full, d.untracked_threads
            )
        }
    )];
    out.push(format!(
        "{:>7} {:<16} {:>10} {:>7}  BLOCKED IN (share of the interval's blocked time, switches)",
        "PID", "COMM", "BLOCKED/s", "VCSW/s"
    ));
    for r in &f.rows {
        let (dd, _) = r.waits.blocked();
        let split: Vec<String> = r
            .waits
            .syscalls
            .iter()
            .filter(|s| s.delta.blocked_ns > 0 || s.delta.switches > 0)
            .take(5)
            .map(|s| {
                format!(
                    "{} {:.1}% ({})",
                    syscall_name(s.nr),
                    100.0 * ratio(s.delta.blocked_ns, dd.blocked_ns),
                    s.delta.switches
                )
            })
            .collect();
        out.push(format!(
            "{:>7} {:<16} {:>8.1}ms {:>7.1}  {}{}",
            r.waits.key.tgid,
            r.comm,
            per_second(dd.blocked_ns, f.elapsed_s) / 1e6,
            per_second(dd.switches, f.elapsed_s),
            if split.is_empty() {
                "-".to_string()
            } else {
                split.join(", ")
            },
            if r.alive { "" } else { " (gone)" }
        ));
        for s in readiness_rows(&r.waits, f.elapsed_s) {
            out.push(format!(
                "{:>7} {:<16} {:>8.1} calls/s, {:.1} fds in/call, {} ready/call, {:.0}% empty, {:.3} ms blocked/call",
                "",
                format!("  {}", s.syscall),
                s.calls_per_s,
                s.fds_in_per_call,
                if s.interest_per_call > 0.0 {
                    format!("{:.2} (of {:.1} watched)", s.ready_per_call, s.interest_per_call)
                } else {
                    format!("{:.2}", s.ready_per_call)
                },
                100.0 * s.empty_share,
                s.blocked_ms_per_call,
            ));
        }
    }
    out
}

#[cfg(test)]
mod tests;
