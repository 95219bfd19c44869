//! The Copies and Zombies views' lines, computed once per snapshot from its extras.

use crate::{collect::extras::Extras, model::rates::per_second};

/// A line of the Copies tab: how a process moved its bytes in the interval.
#[derive(Debug, Clone, PartialEq)]
pub struct CopyLine {
    pub pid: u32,
    pub comm: String,
    pub syscalls_s: f64,
    pub user_copy_s: f64,
    pub in_kernel_s: f64,
    pub zero_copy_s: f64,
    pub zero_copy_pct: f64,
    /// The interval's busiest path, e.g. `sendfile file->socket`.
    pub top_path: String,
    /// Uses `io_uring`: its bytes are not counted.
    pub io_uring: bool,
}

/// A line of the Zombies tab.
#[derive(Debug, Clone, PartialEq)]
pub struct ZombieLine {
    pub pid: u32,
    pub comm: String,
    pub status: String,
    pub age_s: f64,
    pub ppid: u32,
    pub parent_comm: String,
}

pub(super) fn copy_lines(e: &Extras, elapsed_s: f64) -> Vec<CopyLine> {
    let Some(procs) = &e.procs else {
        return Vec::new();
    };
    procs
        .iter()
        .filter(|r| !r.is_idle())
        .map(|r| {
            let i = r.copies.interval();
            let top_path = r
                .copies
                .paths
                .iter()
                .filter(|p| p.delta.bytes > 0)
                .max_by_key(|p| p.delta.bytes)
                .map(|p| format!("{} {}", crate::model::copies::op_name(p.op), p.kinds()))
                .unwrap_or_default();
            CopyLine {
                pid: r.tgid,
                comm: e
                    .proc_comms
                    .get(&r.key())
                    .cloned()
                    .unwrap_or_else(|| "?".into()),
                syscalls_s: per_second(r.syscalls.delta, elapsed_s),
                user_copy_s: per_second(i.user_copy_bytes, elapsed_s),
                in_kernel_s: per_second(i.in_kernel_copy_bytes, elapsed_s),
                zero_copy_s: per_second(i.zero_copy_bytes, elapsed_s),
                zero_copy_pct: i.zero_copy_pct(),
                top_path,
                io_uring: r.syscalls.io_uring,
            }
        })
        .collect()
}

pub(super) fn zombie_lines(e: &Extras) -> Vec<ZombieLine> {
    let mut v: Vec<ZombieLine> = e
        .zombies
        .iter()
        .flatten()
        .map(|z| ZombieLine {
            pid: z.key.tgid,
            comm: z.comm.clone(),
            status: crate::model::exit_status::status_text(z.status),
            age_s: z.age_ns as f64 / 1e9,
            ppid: z.ppid,
            parent_comm: z.parent_comm.clone(),
        })
        .collect();
    v.sort_by(|a, b| b.age_s.total_cmp(&a.age_s).then(a.pid.cmp(&b.pid)));
    v
}
