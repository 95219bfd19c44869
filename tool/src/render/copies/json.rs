//! `proclens copies --json`: one object per process per interval (schema in docs/guide.md's
//! copies section).

use std::collections::BTreeMap;

use serde::Serialize;

use super::{Dropped, Frame, IO_URING_NOTE};
use crate::model::{
    copies::{Counts, Derived, PathRow, op_name},
    rates::per_second,
    syscalls,
};

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
        let f = fds.entry((name, p.kinds())).or_insert((
            p.class().as_str(),
            Counts::default(),
            Counts::default(),
        ));
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
