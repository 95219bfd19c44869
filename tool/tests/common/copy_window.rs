//! `proclens copies` around a copy workload: the reports just before and just after it
//! ran, and the per-path figures over that window.

use std::time::Duration;

use serde_json::Value;

use super::{Proclens, now_unix, workload::Workload};

/// The first `copies` report for `pid` made after `after` (unix seconds).
pub fn report_after(p: &Proclens, pid: u32, after: f64) -> Value {
    p.json_until(Duration::from_secs(15), |v| {
        v["type"] == "copies" && v["pid"] == pid && v["time"].as_f64().unwrap() > after
    })
}

/// (bytes, calls, errors) totals of `op` on `kinds` (e.g. `file->socket`) in a report;
/// zeros when the path was never used.
pub fn path_totals(v: &Value, op: &str, kinds: &str) -> (u64, u64, u64) {
    let c = &v["paths"][op]["fds"][kinds];
    let get = |f: &str| c[f].as_u64().unwrap_or(0);
    (get("bytes_total"), get("calls_total"), get("errors_total"))
}

/// Every `fds` key `op` used in a report.
pub fn kinds_of(v: &Value, op: &str) -> Vec<String> {
    v["paths"][op]["fds"]
        .as_object()
        .map(|m| m.keys().cloned().collect())
        .unwrap_or_default()
}

/// A measured run: the reports just before and just after the workload ran.
pub struct Window {
    pub before: Value,
    pub after: Value,
}

impl Window {
    /// (bytes, calls, errors) of a path over the window.
    pub fn delta(&self, op: &str, kinds: &str) -> (u64, u64, u64) {
        let (b0, c0, e0) = path_totals(&self.before, op, kinds);
        let (b1, c1, e1) = path_totals(&self.after, op, kinds);
        (b1 - b0, c1 - c0, e1 - e0)
    }

    /// A syscall's field (`calls_total`, ...) summed over its fd kinds, over the window.
    pub fn op_delta(&self, op: &str, field: &str) -> u64 {
        let get = |v: &Value| v["paths"][op][field].as_u64().unwrap_or(0);
        get(&self.after) - get(&self.before)
    }

    /// A field of a path (`would_block_total`, ...) over the window.
    pub fn field(&self, op: &str, kinds: &str, field: &str) -> u64 {
        let get = |v: &Value| v["paths"][op]["fds"][kinds][field].as_u64().unwrap_or(0);
        get(&self.after) - get(&self.before)
    }

    pub fn bytes(&self, op: &str, kinds: &str) -> u64 {
        self.delta(op, kinds).0
    }

    /// A per-process field (`zero_copy_bytes_total`, ...) over the window.
    pub fn row_delta(&self, field: &str) -> u64 {
        let get = |v: &Value| v[field].as_u64().unwrap();
        get(&self.after) - get(&self.before)
    }
}

/// `count_total` of syscall `name` in a report made with `--syscalls`; 0 when absent.
pub fn syscall_total(v: &Value, name: &str) -> u64 {
    v["top_syscalls"]
        .as_array()
        .and_then(|a| a.iter().find(|s| s["name"] == name))
        .map_or(0, |s| s["count_total"].as_u64().unwrap())
}

/// Runs copy workload `kind` (`size` its argument) under `proclens copies -p` and
/// returns the window around it.
pub fn measure_sized(kind: &str, size: u64) -> Window {
    let mut w = Workload::spawn(&format!("{kind}:{size}"));
    let pid = w.pid();
    let p = Proclens::spawn(&[
        "copies",
        "--json",
        "--interval",
        "0.2",
        "--syscalls",
        "1000",
        "-p",
        &pid.to_string(),
    ]);
    // The first report means the programs are attached.
    p.json_until(Duration::from_secs(30), |v| v["type"] == "copies_system");
    let before = report_after(&p, pid, now_unix());
    w.go();
    let after = report_after(&p, pid, now_unix());
    eprintln!("{kind}: after = {after}");
    Window { before, after }
}
