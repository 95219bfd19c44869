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
//!   syscalls_total, io_uring, io_uring_note?, user_copy_bytes(_total), zero_copy_bytes(_total),
//!   zero_copy_pct(_total), mmap_calls(_total), mmap_bytes(_total),
//!   sendfile_would_save{eligible_bytes, cpu_copy_bytes, syscalls, mode_switches},
//!   sendfile_would_save_total{..}, paths, top_syscalls?}` per process, where `paths` is
//!   keyed by syscall name (`read`, `sendfile`, `copy_file_range`, `mmap`, ...):
//!   `{class: user_copy|in_kernel|user_pages|mmap, bytes, calls, errors, bytes_total,
//!   calls_total, errors_total, bytes_per_s, calls_per_s, avg_bytes_per_call, fds}` and
//!   `fds` splits the same counts by `"<source>-><destination>"` kinds (`file`, `socket`,
//!   `pipe`, `other`, `user`, `unknown`). `calls` are successful calls, `errors` failed
//!   ones; `top_syscalls` (with `--syscalls N`) is `[{name, nr, count, per_s,
//!   count_total}]`. `start_ns` is the process's start (its leader's `start_boottime`, ns
//!   since boot; 0 if unknown): a pid reused by a new process within an interval gives two
//!   objects with the same `pid` and different `start_ns`, never one merged object.

use std::collections::BTreeMap;

use serde::Serialize;

use crate::model::{
    copies::{Counts, Derived, PathRow, op_name},
    copy_report::ProcRow,
    rates::per_second,
    syscalls::name as syscall_name,
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
    bytes_total: u64,
    calls_total: u64,
    errors_total: u64,
}

impl JsonCounts {
    fn new(d: &Counts, t: &Counts) -> Self {
        Self {
            bytes: d.bytes,
            calls: d.calls,
            errors: d.errors,
            bytes_total: t.bytes,
            calls_total: t.calls,
            errors_total: t.errors,
        }
    }
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
    fds: BTreeMap<String, JsonCounts>,
}

#[derive(Debug, Serialize)]
struct JsonSaving {
    eligible_bytes: u64,
    cpu_copy_bytes: u64,
    syscalls: f64,
    mode_switches: f64,
}

#[derive(Debug, Serialize)]
struct JsonSyscall {
    name: String,
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
    io_uring: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    io_uring_note: Option<&'static str>,
    user_copy_bytes: u64,
    zero_copy_bytes: u64,
    zero_copy_pct: f64,
    user_copy_bytes_total: u64,
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
    let mut out: BTreeMap<&'static str, JsonPath> = BTreeMap::new();
    let mut sums: BTreeMap<&'static str, (Counts, Counts)> = BTreeMap::new();
    for p in paths {
        let name = op_name(p.op);
        let e = sums.entry(name).or_default();
        e.0.add(&p.delta);
        e.1.add(&p.total);
        out.entry(name)
            .or_insert_with(|| JsonPath {
                class: p.class().as_str(),
                counts: JsonCounts::new(&Counts::default(), &Counts::default()),
                bytes_per_s: 0.0,
                calls_per_s: 0.0,
                avg_bytes_per_call: 0.0,
                fds: BTreeMap::new(),
            })
            .fds
            .insert(p.kinds(), JsonCounts::new(&p.delta, &p.total));
    }
    for (name, (d, t)) in sums {
        if let Some(j) = out.get_mut(name) {
            j.counts = JsonCounts::new(&d, &t);
            j.bytes_per_s = per_second(d.bytes, elapsed_s);
            j.calls_per_s = per_second(d.calls, elapsed_s);
            j.avg_bytes_per_call = d.avg_bytes();
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
            io_uring: r.syscalls.io_uring,
            io_uring_note: r.syscalls.io_uring.then_some(IO_URING_NOTE),
            user_copy_bytes: d.user_copy_bytes,
            zero_copy_bytes: d.zero_copy_bytes,
            zero_copy_pct: d.zero_copy_pct(),
            user_copy_bytes_total: t.user_copy_bytes,
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
                        name: syscall_name(c.nr).into_owned(),
                        nr: c.nr,
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
        "{}      PID  syscalls/s  user-copy/s  zero-copy/s  zero-copy%  COMMAND",
        f.clock
    ));
    for (r, comm, _) in &f.rows {
        let d = r.copies.interval();
        out.push(format!(
            "{} {:>8} {:>11.1} {:>12} {:>12} {:>10.1}%  {}{}",
            f.clock,
            r.tgid,
            per_second(r.syscalls.delta, f.elapsed_s),
            human_bytes(per_second(d.user_copy_bytes, f.elapsed_s)),
            human_bytes(per_second(d.zero_copy_bytes, f.elapsed_s)),
            d.zero_copy_pct(),
            comm,
            if r.syscalls.io_uring {
                format!("  [{IO_URING_NOTE}]")
            } else {
                String::new()
            }
        ));
        for p in r.copies.paths.iter().filter(|p| !p.delta.is_zero()) {
            out.push(format!(
                "{}            {:<16} {:<14} {:>10}/s {:>10.1} calls/s {:>10} avg {:>8.1} errors/s  ({})",
                f.clock,
                op_name(p.op),
                p.kinds(),
                human_bytes(per_second(p.delta.bytes, f.elapsed_s)),
                per_second(p.delta.calls, f.elapsed_s),
                human_bytes(p.delta.avg_bytes()),
                per_second(p.delta.errors, f.elapsed_s),
                p.class().as_str(),
            ));
        }
        if d.sendfile.eligible_bytes > 0 {
            out.push(format!(
                "{}            sendfile would save {}/s of CPU copies and {:.0} mode switches/s (file->socket via read+write)",
                f.clock,
                human_bytes(per_second(d.sendfile.cpu_copy_bytes, f.elapsed_s)),
                d.sendfile.mode_switches / if f.elapsed_s > 0.0 { f.elapsed_s } else { 1.0 },
            ));
        }
        if let Some(n) = f.top_syscalls {
            let top: Vec<String> = r
                .syscalls
                .top(n)
                .map(|c| {
                    format!(
                        "{} {:.0}/s",
                        syscall_name(c.nr),
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
mod tests {
    use std::collections::HashMap;

    use proclens_common::copies::{CopyKey, CopyStats, SysKey, fd_kind, op};
    use syscalls::Sysno;

    use super::*;
    use crate::model::copy_report::CopiesModel;

    fn frame() -> Frame {
        let mut m = CopiesModel::new();
        let k = |o, s, d| CopyKey {
            tgid: 9,
            op: o,
            src: s,
            dst: d,
            _pad: 0,
            start_ns: 77,
        };
        let copies = HashMap::from([
            (
                k(op::READ, fd_kind::FILE, fd_kind::USER),
                CopyStats {
                    bytes: 8 << 20,
                    calls: 128,
                    errors: 0,
                },
            ),
            (
                k(op::WRITE, fd_kind::USER, fd_kind::SOCKET),
                CopyStats {
                    bytes: 8 << 20,
                    calls: 128,
                    errors: 0,
                },
            ),
            (
                k(op::SENDFILE64, fd_kind::FILE, fd_kind::SOCKET),
                CopyStats {
                    bytes: 1 << 20,
                    calls: 2,
                    errors: 1,
                },
            ),
            (
                k(op::READ, fd_kind::UNKNOWN, fd_kind::USER),
                CopyStats {
                    bytes: 0,
                    calls: 0,
                    errors: 1,
                },
            ),
        ]);
        let sys = HashMap::from([
            (
                SysKey {
                    tgid: 9,
                    nr: Sysno::read.id() as u32,
                    start_ns: 77,
                },
                129,
            ),
            (
                SysKey {
                    tgid: 9,
                    nr: Sysno::io_uring_enter.id() as u32,
                    start_ns: 77,
                },
                1,
            ),
        ]);
        let rows = m.update(&copies, &sys);
        Frame {
            unix_time: 1.0,
            clock: "12:00:00".into(),
            elapsed_s: 2.0,
            top_syscalls: Some(3),
            dropped: Dropped::default(),
            rows: rows
                .into_iter()
                .map(|r| (r, "srv".to_string(), true))
                .collect(),
        }
    }

    #[test]
    fn json_schema() {
        let lines = json_lines(&frame());
        let sys: serde_json::Value = serde_json::from_str(&lines[0]).unwrap();
        assert_eq!(sys["type"], "copies_system");
        assert_eq!(sys["syscalls"], 130);
        for c in [
            "lost_events",
            "untracked_threads",
            "inflight_full",
            "copy_map_full",
            "syscall_map_full",
            "comm_map_full",
        ] {
            assert_eq!(sys[c], 0, "{c}");
        }
        let v: serde_json::Value = serde_json::from_str(&lines[1]).unwrap();
        assert_eq!(v["type"], "copies");
        assert_eq!(v["pid"], 9);
        assert_eq!(v["start_ns"], 77);
        assert_eq!(v["io_uring"], true);
        assert_eq!(v["io_uring_note"], IO_URING_NOTE);
        let sf = &v["paths"]["sendfile"];
        assert_eq!(sf["class"], "in_kernel");
        assert_eq!(sf["bytes_total"], 1 << 20);
        assert_eq!(sf["calls_total"], 2);
        assert_eq!(sf["errors"], 1);
        assert_eq!(sf["fds"]["file->socket"]["bytes"], 1 << 20);
        let rd = &v["paths"]["read"];
        assert_eq!(rd["class"], "user_copy");
        assert_eq!(rd["bytes"], 8 << 20);
        assert_eq!(rd["errors"], 1, "the failed read on a bad fd");
        assert_eq!(rd["fds"]["unknown->user"]["errors_total"], 1);
        assert_eq!(rd["bytes_per_s"], (4 << 20) as f64);
        assert_eq!(rd["avg_bytes_per_call"], 65536.0);
        assert_eq!(v["sendfile_would_save"]["eligible_bytes"], 8 << 20);
        assert_eq!(v["sendfile_would_save"]["cpu_copy_bytes"], 16 << 20);
        assert_eq!(v["sendfile_would_save"]["mode_switches"], 256.0);
        assert_eq!(v["user_copy_bytes"], 16 << 20);
        assert_eq!(v["zero_copy_bytes"], 1 << 20);
        assert_eq!(v["top_syscalls"][0]["name"], "read");
        assert_eq!(v["top_syscalls"][0]["count"], 129);
    }

    #[test]
    fn plain_lines_show_paths_and_savings() {
        let lines = plain_lines(&frame());
        let text = lines.join("\n");
        assert!(lines[0].ends_with("; nothing dropped"), "{text}");
        assert!(
            lines[2].contains("srv") && lines[2].contains("io_uring"),
            "{text}"
        );
        assert!(text.contains("read             file->user"), "{text}");
        assert!(
            text.contains("sendfile would save 8.0MiB/s of CPU copies and 128 mode switches/s"),
            "{text}"
        );
        assert!(
            text.contains("top syscalls: read 64/s, io_uring_enter 0/s")
                || text.contains("top syscalls: read 64/s"),
            "{text}"
        );
    }

    #[test]
    fn plain_lines_show_every_drop_counter() {
        let mut f = frame();
        f.dropped = Dropped {
            lost_events: 1,
            untracked_threads: 2,
            inflight_full: 3,
            copy_map_full: 4,
            syscall_map_full: 5,
            comm_map_full: 6,
        };
        let head = &plain_lines(&f)[0];
        assert!(
            head.ends_with(
                "; not counted (maps full): 3 calls in flight, 4 copy paths, 5 syscalls, 6 names; lost events 1, untracked threads 2"
            ),
            "{head}"
        );
    }

    #[test]
    fn human_units() {
        assert_eq!(human_bytes(512.0), "512B");
        assert_eq!(human_bytes(1536.0), "1.5KiB");
        assert_eq!(human_bytes((8u64 << 20) as f64), "8.0MiB");
    }
}
