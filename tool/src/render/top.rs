//! `proclens top` output, plain (pidstat -w style) and JSON.

use std::fmt::Write as _;

use serde::Serialize;

pub use crate::collect::{extras::TableSize, session::SystemSplit};
use crate::model::{
    histogram::percentile_capped_us,
    irq::Taken,
    rates::{per_second, percent},
    switches::Row,
};

/// Everything one interval shows.
#[derive(Debug, Clone)]
pub struct Frame {
    /// Wall-clock time of the report (seconds since the epoch).
    pub unix_time: f64,
    /// Local time of day, `HH:MM:SS`.
    pub clock: String,
    pub elapsed_s: f64,
    pub per_thread: bool,
    pub system: SystemSplit,
    pub lost_events: u64,
    pub untracked_threads: u64,
    /// Syscalls the kernel could not count (its per-process map was full).
    pub uncounted_syscalls: u64,
    /// The process table's size and repairs (see `collect::extras::TableSize`).
    pub table: Option<TableSize>,
    /// Rows with their command names and extra figures.
    pub rows: Vec<TopRow>,
}

super::report_with!(Frame);

/// One process (or thread) of an interval.
#[derive(Debug, Clone)]
pub struct TopRow {
    pub row: Row,
    pub comm: String,
    /// The process's syscalls (mode switches): interval and since start. `None` for
    /// thread rows (counted per process) and when syscalls are not counted.
    pub syscalls: Option<(u64, u64)>,
    /// Zombies (dead at least 1 s, not reaped) this process holds; `None` for threads.
    pub zombies: Option<usize>,
    /// Interrupt time the process lost in the interval; `None` for threads (charged per
    /// process) and when interrupts are not traced.
    pub irq: Option<Taken>,
}

impl TopRow {
    pub fn new(row: Row, comm: String) -> Self {
        Self {
            row,
            comm,
            syscalls: None,
            zombies: None,
            irq: None,
        }
    }
}

/// The share of its on-CPU time (`oncpu_ns`) a process lost to interrupts (`irq`), %.
/// On-CPU time is counted at switches out (a run in progress at the end of an interval
/// counts in the next), so the share is capped at 100.
pub fn irq_pct(irq: Option<Taken>, oncpu_ns: u64) -> Option<f64> {
    irq.map(|t| {
        let lost = t.ns();
        percent(lost, oncpu_ns.max(lost))
    })
}

/// One JSON line per process (or thread) per interval. Field names are a stable schema
/// documented in docs/guide.md.
#[derive(Debug, Serialize)]
pub struct JsonRow<'a> {
    #[serde(rename = "type")]
    pub kind: &'static str,
    pub time: f64,
    pub interval_s: f64,
    pub pid: u32,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tid: Option<u32>,
    pub comm: &'a str,
    pub alive: bool,
    pub voluntary: u64,
    pub involuntary: u64,
    pub voluntary_per_s: f64,
    pub involuntary_per_s: f64,
    pub voluntary_total: u64,
    pub involuntary_total: u64,
    pub same_process_in: u64,
    pub cross_process_in: u64,
    pub idle_or_kernel_in: u64,
    pub same_process_in_total: u64,
    pub cross_process_in_total: u64,
    pub idle_or_kernel_in_total: u64,
    pub oncpu_ms: f64,
    pub blocked_ms: f64,
    pub runq_ms: f64,
    pub runq_p50_us: Option<u64>,
    pub runq_p99_us: Option<u64>,
    pub runq_max_us: u64,
    /// User->kernel mode switches; absent on thread rows.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub syscalls: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub syscalls_per_s: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub syscalls_total: Option<u64>,
    /// Zombies this process holds (dead >= 1 s, not reaped); absent on thread rows.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub zombies: Option<usize>,
    /// Interrupt time the process lost (hard IRQs and softirqs that ran while it was
    /// current) and its share of its on-CPU time; absent on thread rows and when
    /// interrupts are not traced.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub irq_hard_ms: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub irq_soft_ms: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub irq_pct: Option<f64>,
}

/// The system line of an interval in JSON.
#[derive(Debug, Serialize)]
pub struct JsonSystem {
    #[serde(rename = "type")]
    pub kind: &'static str,
    pub time: f64,
    pub interval_s: f64,
    pub switches: u64,
    pub switches_per_s: f64,
    pub same_process: u64,
    pub cross_process: u64,
    pub idle_or_kernel: u64,
    pub address_space_switch_pct: f64,
    pub lost_events: u64,
    pub untracked_threads: u64,
    pub uncounted_syscalls: u64,
    /// Processes the process table tracks (live, zombies, reaped not yet freed), and the
    /// entries its checks against /proc corrected since the start.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tracked_processes: Option<usize>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub table_repairs: Option<u64>,
}

pub fn json_lines(f: &Frame) -> Vec<String> {
    let s = &f.system;
    let classified = s.same_process + s.cross_process + s.idle_or_kernel;
    let mut out = vec![
        serde_json::to_string(&JsonSystem {
            kind: "system",
            time: f.unix_time,
            interval_s: f.elapsed_s,
            switches: s.switches,
            switches_per_s: per_second(s.switches, f.elapsed_s),
            same_process: s.same_process,
            cross_process: s.cross_process,
            idle_or_kernel: s.idle_or_kernel,
            address_space_switch_pct: percent(s.cross_process, classified),
            lost_events: f.lost_events,
            untracked_threads: f.untracked_threads,
            uncounted_syscalls: f.uncounted_syscalls,
            tracked_processes: f.table.map(|t| t.tracked),
            table_repairs: f.table.map(|t| t.repairs),
        })
        .expect("plain struct serialises"),
    ];
    for TopRow {
        row: r,
        comm,
        syscalls,
        zombies,
        irq,
    } in &f.rows
    {
        let d = &r.delta;
        let t = &r.total;
        let row = JsonRow {
            kind: if f.per_thread { "thread" } else { "process" },
            time: f.unix_time,
            interval_s: f.elapsed_s,
            pid: r.key.tgid,
            tid: f.per_thread.then_some(r.key.id),
            comm,
            alive: r.alive,
            voluntary: d.voluntary,
            involuntary: d.involuntary,
            voluntary_per_s: per_second(d.voluntary, f.elapsed_s),
            involuntary_per_s: per_second(d.involuntary, f.elapsed_s),
            voluntary_total: t.voluntary,
            involuntary_total: t.involuntary,
            same_process_in: d.same_in,
            cross_process_in: d.cross_in,
            idle_or_kernel_in: d.idle_kernel_in,
            same_process_in_total: t.same_in,
            cross_process_in_total: t.cross_in,
            idle_or_kernel_in_total: t.idle_kernel_in,
            oncpu_ms: d.oncpu_ns as f64 / 1e6,
            blocked_ms: d.blocked_ns as f64 / 1e6,
            runq_ms: d.runq_ns as f64 / 1e6,
            // The interval's waits are bounded by the longest seen since the start.
            runq_p50_us: percentile_capped_us(&d.runq_hist, 50.0, t.runq_max_ns),
            runq_p99_us: percentile_capped_us(&d.runq_hist, 99.0, t.runq_max_ns),
            runq_max_us: t.runq_max_ns / 1000,
            syscalls: syscalls.map(|(d, _)| d),
            syscalls_per_s: syscalls.map(|(d, _)| per_second(d, f.elapsed_s)),
            syscalls_total: syscalls.map(|(_, t)| t),
            zombies: *zombies,
            irq_hard_ms: irq.map(|i| i.hard_ns as f64 / 1e6),
            irq_soft_ms: irq.map(|i| i.soft_ns as f64 / 1e6),
            irq_pct: irq_pct(*irq, d.oncpu_ns),
        };
        out.push(serde_json::to_string(&row).expect("plain struct serialises"));
    }
    out
}

fn fmt_us(v: Option<u64>) -> String {
    match v {
        None => "-".into(),
        Some(us) if us >= 10_000 => format!("{}ms", us / 1000),
        Some(us) => format!("{us}us"),
    }
}

/// Time as a percentage of the interval (may pass 100 for a multi-threaded process).
fn share_of_interval(ns: u64, elapsed_s: f64) -> f64 {
    if elapsed_s > 0.0 {
        ns as f64 / 1e7 / elapsed_s
    } else {
        0.0
    }
}

/// pidstat -w's columns (cswch/s, nvcswch/s) first, then totals and the address-space split.
pub fn plain_lines(f: &Frame) -> Vec<String> {
    let s = &f.system;
    let classified = s.same_process + s.cross_process + s.idle_or_kernel;
    let mut uncounted = String::new();
    for (what, n) in [
        ("untracked threads", f.untracked_threads),
        ("uncounted syscalls", f.uncounted_syscalls),
    ] {
        if n > 0 {
            let _ = write!(uncounted, ", {what} {n}");
        }
    }
    let mut out = vec![format!(
        "{} system: {:.0} switches/s; same-process {:.1}%, cross-process {:.1}%, idle/kernel {:.1}%; lost events {}{}",
        f.clock,
        per_second(s.switches, f.elapsed_s),
        percent(s.same_process, classified),
        percent(s.cross_process, classified),
        percent(s.idle_or_kernel, classified),
        f.lost_events,
        uncounted,
    )];
    if let Some(t) = f.table {
        let _ = write!(
            out[0],
            "; tracked processes {}, table repairs {}",
            t.tracked, t.repairs
        );
    }
    let id_col = if f.per_thread { "     TID" } else { "     PID" };
    out.push(format!(
        "{}{id_col}   cswch/s nvcswch/s  voluntary involuntary  same%  cross%   %cpu  %runq  runq-p99    sysc/s zomb  irq%  COMMAND",
        f.clock
    ));
    for TopRow {
        row: r,
        comm,
        syscalls,
        zombies,
        irq,
    } in &f.rows
    {
        let d = &r.delta;
        let ins = d.same_in + d.cross_in + d.idle_kernel_in;
        let sysc = syscalls.map_or_else(
            || "-".to_string(),
            |(n, _)| format!("{:.0}", per_second(n, f.elapsed_s)),
        );
        let zomb = zombies.map_or_else(|| "-".to_string(), |z| z.to_string());
        let irq = irq_pct(*irq, d.oncpu_ns).map_or_else(|| "-".to_string(), |p| format!("{p:.1}"));
        out.push(format!(
            "{} {:>8} {:>9.2} {:>9.2} {:>10} {:>11} {:>6.1} {:>7.1} {:>6.1} {:>6.1} {:>9} {:>9} {:>4} {:>5}  {}",
            f.clock,
            r.key.id,
            per_second(d.voluntary, f.elapsed_s),
            per_second(d.involuntary, f.elapsed_s),
            r.total.voluntary,
            r.total.involuntary,
            percent(d.same_in, ins),
            percent(d.cross_in, ins),
            share_of_interval(d.oncpu_ns, f.elapsed_s),
            share_of_interval(d.runq_ns, f.elapsed_s),
            fmt_us(percentile_capped_us(&d.runq_hist, 99.0, r.total.runq_max_ns)),
            sysc,
            zomb,
            irq,
            comm
        ));
    }
    out
}

#[cfg(test)]
mod tests;
