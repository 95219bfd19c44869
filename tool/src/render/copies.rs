//! `proclens copies` output, plain and JSON (one object per process per interval).
//!
//! JSON schema (NDJSON, stable; every interval's counts come with the running totals since
//! proclens started, `*_total`):
//!
//! - `{"type":"copies_system", time, interval_s, processes, syscalls, syscalls_per_s,
//!   lost_events, untracked_threads, inflight_full, copy_map_full, syscall_map_full,
//!   comm_map_full}` first in each interval. The last six are the kernel's own drop
//!   counters since start (the same in every view): ring-buffer events lost, threads the
//!   switch map had no room for, and copy-family calls, syscalls and process names not
//!   recorded because an in-kernel map was full. This view's figures depend only on the
//!   last four.
//! - `{"type":"copies", time, interval_s, pid, start_ns, comm, alive, syscalls, syscalls_per_s,
//!   syscalls_total, compat_syscalls_total, io_uring, io_uring_note?,
//!   user_copy_bytes(_total), in_kernel_copy_bytes(_total), zero_copy_bytes(_total),
//!   zero_copy_pct(_total), mmap_calls(_total), mmap_bytes(_total),
//!   sendfile_would_save{eligible_bytes, cpu_copy_bytes, syscalls, mode_switches},
//!   sendfile_would_save_total{..}, paths, top_syscalls?}` per process, where `paths` is
//!   keyed by syscall name (`read`, `sendfile`, `copy_file_range`, `mmap`, ...):
//!   `{class, bytes, calls, errors, would_block, interrupted, bytes_total, calls_total,
//!   errors_total, would_block_total, interrupted_total, bytes_per_s, calls_per_s,
//!   avg_bytes_per_call, fds}`; `fds` splits the same counts by `"<source>-><destination>"`
//!   kinds (`file`, `socket`, `pipe`, `other`, `user`, `process`, `unknown`), each with its
//!   own `class` (`user_copy`, `in_kernel_copy`, `zero_copy` or `mmap`; the syscall's
//!   `class` is `mixed` when its paths differ). `calls` are successful calls; `errors`
//!   failed ones other than `would_block` (EAGAIN) and `interrupted` (EINTR and kernel
//!   restarts); `top_syscalls` (with `--syscalls N`) is `[{name, abi, nr, count, per_s,
//!   count_total}]`, each named from its ABI's table (`abi` is `i386` for a 32-bit
//!   syscall, counted in `compat_syscalls_total`). `start_ns` is the process's start (its
//!   leader's `start_boottime`, ns since boot; 0 if unknown): a pid reused by a new
//!   process within an interval gives two objects with the same `pid` and different
//!   `start_ns`, never one merged object.

use std::collections::BTreeMap;

use serde::Serialize;

use crate::model::{
    copies::{Counts, Derived, PathRow, op_name},
    copy_report::ProcRow,
    rates::per_second,
    syscalls::{self, label as syscall_label},
};

/// Said of every io_uring user, in text and JSON.
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

#[derive(Debug, Serialize)]
struct JsonCounts {
    bytes: u64,
    calls: u64,
    errors: u64,
    would_block: u64,
    interrupted: u64,
    bytes_total: u64,
    calls_total: u64,
    errors_total: u64,
    would_block_total: u64,
    interrupted_total: u64,
}

impl JsonCounts {
    fn new(d: &Counts, t: &Counts) -> Self {
        Self {
            bytes: d.bytes,
            calls: d.calls,
            errors: d.errors,
            would_block: d.would_block,
            interrupted: d.interrupted,
            bytes_total: t.bytes,
            calls_total: t.calls,
            errors_total: t.errors,
            would_block_total: t.would_block,
            interrupted_total: t.interrupted,
        }
    }
}

#[derive(Debug, Serialize)]
struct JsonFds {
    class: &'static str,
    #[serde(flatten)]
    counts: JsonCounts,
}

#[derive(Debug, Serialize)]
struct JsonPath {
    class: &'static str,
    #[serde(flatten)]
    counts: JsonCounts,
    bytes_per_s: f64,
    calls_per_s: f64,
    avg_bytes_per_call: f64,
    /// By `"<source kind>-><destination kind>"`.
    fds: BTreeMap<String, JsonFds>,
}

#[derive(Debug, Serialize)]
struct JsonSaving {
    eligible_bytes: u64,
    cpu_copy_bytes: u64,
    syscalls: u64,
    mode_switches: u64,
}

#[derive(Debug, Serialize)]
struct JsonSyscall {
    name: String,
    abi: &'static str,
    nr: u32,
    count: u64,
    per_s: f64,
    count_total: u64,
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
    syscalls: u64,
    syscalls_per_s: f64,
    syscalls_total: u64,
    compat_syscalls_total: u64,
    io_uring: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    io_uring_note: Option<&'static str>,
    user_copy_bytes: u64,
    in_kernel_copy_bytes: u64,
    zero_copy_bytes: u64,
    zero_copy_pct: f64,
    user_copy_bytes_total: u64,
    in_kernel_copy_bytes_total: u64,
    zero_copy_bytes_total: u64,
    zero_copy_pct_total: f64,
    mmap_calls: u64,
    mmap_bytes: u64,
    mmap_calls_total: u64,
    mmap_bytes_total: u64,
    sendfile_would_save: JsonSaving,
    sendfile_would_save_total: JsonSaving,
    paths: BTreeMap<&'static str, JsonPath>,
    #[serde(skip_serializing_if = "Option::is_none")]
    top_syscalls: Option<Vec<JsonSyscall>>,
}

#[derive(Debug, Serialize)]
struct JsonSystem {
    #[serde(rename = "type")]
    kind: &'static str,
    time: f64,
    interval_s: f64,
    processes: usize,
    syscalls: u64,
    syscalls_per_s: f64,
    #[serde(flatten)]
    dropped: Dropped,
}

fn paths_json(paths: &[PathRow], elapsed_s: f64) -> BTreeMap<&'static str, JsonPath> {
    // Summed per syscall and per (syscall, kinds): both ABIs' calls of a path are one.
    let mut sums: BTreeMap<&'static str, (Counts, Counts)> = BTreeMap::new();
    let mut fds: BTreeMap<(&'static str, String), (&'static str, Counts, Counts)> = BTreeMap::new();
    for p in paths {
        let name = op_name(p.op);
        let e = sums.entry(name).or_default();
        e.0.add(&p.delta);
        e.1.add(&p.total);
        let f = fds
            .entry((name, p.kinds()))
            .or_insert((p.class().as_str(), Counts::default(), Counts::default()));
        f.1.add(&p.delta);
        f.2.add(&p.total);
    }
    let mut out: BTreeMap<&'static str, JsonPath> = sums
        .into_iter()
        .map(|(name, (d, t))| {
            let path = JsonPath {
                class: "",
                counts: JsonCounts::new(&d, &t),
                bytes_per_s: per_second(d.bytes, elapsed_s),
                calls_per_s: per_second(d.calls, elapsed_s),
                avg_bytes_per_call: d.avg_bytes(),
                fds: BTreeMap::new(),
            };
            (name, path)
        })
        .collect();
    for ((name, kinds), (class, d, t)) in fds {
        if let Some(j) = out.get_mut(name) {
            j.class = match j.class {
                "" => class,
                c if c == class => c,
                _ => "mixed",
            };
            j.fds.insert(
                kinds,
                JsonFds {
                    class,
                    counts: JsonCounts::new(&d, &t),
                },
            );
        }
    }
    out
}

fn saving_json(d: &Derived) -> JsonSaving {
    let s = d.sendfile;
    JsonSaving {
        eligible_bytes: s.eligible_bytes,
        cpu_copy_bytes: s.cpu_copy_bytes,
        syscalls: s.syscalls,
        mode_switches: s.mode_switches,
    }
}

pub fn json_lines(f: &Frame) -> Vec<String> {
    let syscalls: u64 = f.rows.iter().map(|(r, _, _)| r.syscalls.delta).sum();
    let mut out = vec![
        serde_json::to_string(&JsonSystem {
            kind: "copies_system",
            time: f.unix_time,
            interval_s: f.elapsed_s,
            processes: f.rows.len(),
            syscalls,
            syscalls_per_s: per_second(syscalls, f.elapsed_s),
            dropped: f.dropped,
        })
        .expect("plain struct serialises"),
    ];
    for (r, comm, alive) in &f.rows {
        let d = r.copies.interval();
        let t = r.copies.since_start();
        let row = JsonRow {
            kind: "copies",
            time: f.unix_time,
            interval_s: f.elapsed_s,
            pid: r.tgid,
            start_ns: r.start_ns,
            comm,
            alive: *alive,
            syscalls: r.syscalls.delta,
            syscalls_per_s: per_second(r.syscalls.delta, f.elapsed_s),
            syscalls_total: r.syscalls.total,
            compat_syscalls_total: r.syscalls.compat_total,
            io_uring: r.syscalls.io_uring,
            io_uring_note: r.syscalls.io_uring.then_some(IO_URING_NOTE),
            user_copy_bytes: d.user_copy_bytes,
            in_kernel_copy_bytes: d.in_kernel_copy_bytes,
            zero_copy_bytes: d.zero_copy_bytes,
            zero_copy_pct: d.zero_copy_pct(),
            user_copy_bytes_total: t.user_copy_bytes,
            in_kernel_copy_bytes_total: t.in_kernel_copy_bytes,
            zero_copy_bytes_total: t.zero_copy_bytes,
            zero_copy_pct_total: t.zero_copy_pct(),
            mmap_calls: d.mmap_calls,
            mmap_bytes: d.mmap_bytes,
            mmap_calls_total: t.mmap_calls,
            mmap_bytes_total: t.mmap_bytes,
            sendfile_would_save: saving_json(&d),
            sendfile_would_save_total: saving_json(&t),
            paths: paths_json(&r.copies.paths, f.elapsed_s),
            top_syscalls: f.top_syscalls.map(|n| {
                // Busiest of the interval first, then by total; idle ones are kept so
                // `count_total` can be followed across intervals.
                r.syscalls
                    .by_nr
                    .iter()
                    .take(n)
                    .map(|c| JsonSyscall {
                        name: syscalls::name(c.nr).into_owned(),
                        abi: syscalls::abi(c.nr),
                        nr: syscalls::number(c.nr),
                        count: c.delta,
                        per_s: per_second(c.delta, f.elapsed_s),
                        count_total: c.total,
                    })
                    .collect()
            }),
        };
        out.push(serde_json::to_string(&row).expect("plain struct serialises"));
    }
    out
}

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
            notes.push_str(&format!("  [{IO_URING_NOTE}]"));
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
            for (n, what) in [(c.would_block, "would block"), (c.interrupted, "interrupted")] {
                if n > 0 {
                    failed.push_str(&format!(", {:.1} {what}/s", per_second(n, f.elapsed_s)));
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
