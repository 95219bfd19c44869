//! `proclens copies` output, plain and JSON (one object per process per interval).
//!
//! The JSON schema (NDJSON, stable; every interval's counts come with the running totals
//! since proclens started, `*_total`) is documented in one place: docs/guide.md's copies
//! section (change it with the code).

use std::fmt::Write as _;

use serde::Serialize;

use crate::model::{
    copies::op_name, copy_report::ProcRow, rates::per_second, syscalls::label as syscall_label,
};

mod json;
pub use json::json_lines;

/// Said of every `io_uring` user, in text and JSON.
pub const IO_URING_NOTE: &str =
    "uses io_uring: submissions bypass the traced syscalls, their bytes are not counted";

/// In-kernel counts of what could not be recorded (ring buffer or maps full), since start.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct Dropped {
    pub lost_events: u64,
    pub untracked_threads: u64,
    pub inflight_full: u64,
    pub copy_map_full: u64,
    pub syscall_map_full: u64,
    pub comm_map_full: u64,
}

/// Everything one interval shows.
#[derive(Debug, Clone)]
pub struct Frame {
    pub unix_time: f64,
    pub clock: String,
    pub elapsed_s: f64,
    /// Show each process's top syscalls (`--syscalls`), this many.
    pub top_syscalls: Option<usize>,
    pub dropped: Dropped,
    /// Rows with their command names and whether the process still exists.
    pub rows: Vec<(ProcRow, String, bool)>,
}

super::report_with!(Frame);

/// `1.5MiB`, `512B`: binary units.
pub fn human_bytes(v: f64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut v = v;
    let mut u = 0;
    while v >= 1024.0 && u < UNITS.len() - 1 {
        v /= 1024.0;
        u += 1;
    }
    if u == 0 {
        format!("{v:.0}B")
    } else {
        format!("{v:.1}{}", UNITS[u])
    }
}

pub fn plain_lines(f: &Frame) -> Vec<String> {
    let syscalls: u64 = f.rows.iter().map(|(r, _, _)| r.syscalls.delta).sum();
    let dr = &f.dropped;
    let mut out = vec![format!(
        "{} copies: {} processes, {:.0} syscalls/s{}",
        f.clock,
        f.rows.len(),
        per_second(syscalls, f.elapsed_s),
        if *dr == Dropped::default() {
            "; nothing dropped".to_string()
        } else {
            format!(
                "; not counted (maps full): {} calls in flight, {} copy paths, {} syscalls, {} names; lost events {}, untracked threads {}",
                dr.inflight_full,
                dr.copy_map_full,
                dr.syscall_map_full,
                dr.comm_map_full,
                dr.lost_events,
                dr.untracked_threads
            )
        }
    )];
    out.push(format!(
        "{}      PID  syscalls/s  user-copy/s  in-kernel/s  zero-copy/s  zero-copy%  COMMAND",
        f.clock
    ));
    for (r, comm, _) in &f.rows {
        let d = r.copies.interval();
        let rate = |b: u64| human_bytes(per_second(b, f.elapsed_s));
        let mut notes = String::new();
        if r.syscalls.io_uring {
            let _ = write!(notes, "  [{IO_URING_NOTE}]");
        }
        if r.syscalls.compat_total > 0 {
            notes.push_str("  [makes 32-bit syscalls]");
        }
        out.push(format!(
            "{} {:>8} {:>11.1} {:>12} {:>12} {:>12} {:>10.1}%  {comm}{notes}",
            f.clock,
            r.tgid,
            per_second(r.syscalls.delta, f.elapsed_s),
            rate(d.user_copy_bytes),
            rate(d.in_kernel_copy_bytes),
            rate(d.zero_copy_bytes),
            d.zero_copy_pct(),
        ));
        for p in r.copies.paths.iter().filter(|p| !p.delta.is_zero()) {
            let c = &p.delta;
            let mut failed = format!("{:.1} errors/s", per_second(c.errors, f.elapsed_s));
            for (n, what) in [
                (c.would_block, "would block"),
                (c.interrupted, "interrupted"),
            ] {
                if n > 0 {
                    let _ = write!(failed, ", {:.1} {what}/s", per_second(n, f.elapsed_s));
                }
            }
            out.push(format!(
                "{}            {:<16} {:<14} {:>10}/s {:>10.1} calls/s {:>10} avg  {failed}  ({})",
                f.clock,
                op_name(p.op),
                p.kinds(),
                rate(c.bytes),
                per_second(c.calls, f.elapsed_s),
                human_bytes(c.avg_bytes()),
                p.class().as_str(),
            ));
        }
        if d.sendfile.eligible_bytes > 0 {
            out.push(format!(
                "{}            sendfile would save {}/s of CPU copies and {:.0} mode switches/s ({}/s of file data read, then written to sockets with read+write)",
                f.clock,
                rate(d.sendfile.cpu_copy_bytes),
                per_second(d.sendfile.mode_switches, f.elapsed_s),
                rate(d.sendfile.eligible_bytes),
            ));
        }
        if let Some(n) = f.top_syscalls {
            let top: Vec<String> = r
                .syscalls
                .top(n)
                .map(|c| {
                    format!(
                        "{} {:.0}/s",
                        syscall_label(c.nr),
                        per_second(c.delta, f.elapsed_s)
                    )
                })
                .collect();
            if !top.is_empty() {
                out.push(format!(
                    "{}            top syscalls: {}",
                    f.clock,
                    top.join(", ")
                ));
            }
        }
    }
    out
}

#[cfg(test)]
mod tests;
