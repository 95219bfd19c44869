//! `proclens zombies` output, plain and JSON (one object per line). Pure functions of
//! model values. The JSON field names are a stable schema, documented in one place:
//! docs/guide.md's zombies section (change it with the code).

use std::fmt::Write as _;

use serde::Serialize;

use crate::model::{
    exit_status::{StatusFields, status_text},
    parent_info::{Context, ParentInfo},
    proctable::{Dated, ForkStats, ReapedProc, Zombie},
    rates::per_second,
};

const NS: f64 = 1e9;

fn secs(ns: u64) -> f64 {
    ns as f64 / NS
}

/// `age_source` of a zombie.
pub fn age_source(d: Dated) -> &'static str {
    match d {
        Dated::Exit => "exit",
        Dated::LastRan => "last_ran",
        Dated::AtLeast => "at_least",
    }
}

#[derive(Debug, Serialize)]
struct JsonZombie<'a> {
    #[serde(rename = "type")]
    kind: &'static str,
    time: f64,
    pid: u32,
    ppid: u32,
    comm: &'a str,
    parent_comm: &'a str,
    #[serde(flatten)]
    status: StatusFields,
    age_s: f64,
    /// True when the exit event dated the death.
    age_exact: bool,
    age_source: &'static str,
    /// The file it exec'd, when proclens saw the exec.
    #[serde(skip_serializing_if = "Option::is_none")]
    exe: Option<&'a str>,
    parent_zombies: usize,
    parent: ParentInfo,
    lost_events: u64,
}

fn per_parent(zombies: &[Zombie], ppid: u32) -> usize {
    zombies.iter().filter(|z| z.ppid == ppid).count()
}

fn zombie_json(
    kind: &'static str,
    time: f64,
    z: &Zombie,
    parent_zombies: usize,
    parent: ParentInfo,
    lost: u64,
) -> String {
    serde_json::to_string(&JsonZombie {
        kind,
        time,
        pid: z.key.tgid,
        ppid: z.ppid,
        comm: &z.comm,
        parent_comm: &z.parent_comm,
        status: z.status.into(),
        age_s: secs(z.age_ns),
        age_exact: z.age_exact(),
        age_source: age_source(z.dated),
        exe: z.exe.as_deref(),
        parent_zombies,
        parent,
        lost_events: lost,
    })
    .expect("serializable")
}

/// The snapshot (`proclens zombies`): zombies grouped by parent (as ordered by the model).
pub fn snapshot_json(
    time: f64,
    zombies: &[Zombie],
    ctx: &Context,
    lost: u64,
    min_age_s: f64,
) -> Vec<String> {
    let mut out: Vec<String> = zombies
        .iter()
        .map(|z| {
            let n = per_parent(zombies, z.ppid);
            zombie_json("zombie", time, z, n, ctx.parent(z.ppid), lost)
        })
        .collect();
    let parents: std::collections::BTreeSet<u32> = zombies.iter().map(|z| z.ppid).collect();
    out.push(
        serde_json::json!({
            "type": "summary", "time": time, "zombies": zombies.len(), "parents": parents.len(),
            "min_age_s": min_age_s, "lost_events": lost,
            "pid_max": ctx.headroom.map(|h| h.pid_max), "tasks": ctx.headroom.map(|h| h.tasks),
        })
        .to_string(),
    );
    out
}

/// The lines under a parent's heading: what it runs, where, and what it is doing.
fn parent_lines(p: &ParentInfo) -> Vec<String> {
    let or = |v: &Option<String>| v.clone().unwrap_or_else(|| "?".into());
    let mut out = vec![format!(
        "  state {}{}; command: {}",
        or(&p.state),
        p.wchan
            .as_deref()
            .map(|w| format!(", waiting in {w}"))
            .unwrap_or_default(),
        // One line whatever the arguments hold (escaped as Rust escapes them).
        or(&p.cmdline).escape_debug()
    )];
    let mut place = format!("  cgroup {}", or(&p.cgroup));
    if let Some(u) = &p.unit {
        let _ = write!(place, ", unit {u}");
    }
    if let Some(c) = &p.container_id {
        let _ = write!(place, ", container {}", &c[..c.len().min(12)]);
    }
    if let Some(cur) = p.pids_current {
        let max = p
            .pids_max
            .map_or_else(|| "no limit".into(), |m| m.to_string());
        let _ = write!(place, "; pids {cur} of {max}");
    }
    out.push(place);
    out
}

pub fn snapshot_plain(zombies: &[Zombie], ctx: &Context, lost: u64, min_age_s: f64) -> Vec<String> {
    let mut out = Vec::new();
    let mut last_parent = None;
    for z in zombies {
        if last_parent != Some(z.ppid) {
            if last_parent.is_some() {
                out.push(String::new());
            }
            let n = per_parent(zombies, z.ppid);
            out.push(format!(
                "parent {} ({}) holds {n} zombie{}",
                z.ppid,
                z.parent_comm,
                if n == 1 { "" } else { "s" }
            ));
            if let Some(p) = ctx.parents.get(&z.ppid) {
                out.extend(parent_lines(p));
            }
            out.push(format!(
                "  {:>8}  {:<16}  {:<20}  {:>10}",
                "PID", "COMMAND", "STATUS", "AGE"
            ));
            last_parent = Some(z.ppid);
        }
        let age = format!(
            "{}{:.1}s",
            if z.dated == Dated::AtLeast { ">" } else { "" },
            secs(z.age_ns)
        );
        out.push(format!(
            "  {:>8}  {:<16}  {:<20}  {:>10}",
            z.key.tgid,
            z.comm,
            status_text(z.status),
            age
        ));
    }
    if !zombies.is_empty() {
        out.push(String::new());
    }
    let headroom = ctx
        .headroom
        .map(|h| format!("; tasks {} of pid_max {}", h.tasks, h.pid_max))
        .unwrap_or_default();
    out.push(format!(
        "{} zombie{} older than {min_age_s}s; lost events: {lost}{headroom}",
        zombies.len(),
        if zombies.len() == 1 { "" } else { "s" }
    ));
    out
}

/// `--watch`: a process became a zombie (reached the minimum age).
pub fn appeared(
    json: bool,
    time: f64,
    clock: &str,
    z: &Zombie,
    parent_zombies: usize,
    ctx: &Context,
    lost: u64,
) -> String {
    if json {
        return zombie_json("zombie", time, z, parent_zombies, ctx.parent(z.ppid), lost);
    }
    format!(
        "{clock} zombie  pid {} ({}) {}, parent {} ({}) now holds {parent_zombies}, dead {:.1}s",
        z.key.tgid,
        z.comm,
        status_text(z.status),
        z.ppid,
        z.parent_comm,
        secs(z.age_ns)
    )
}

/// `--watch`: a reported zombie was reaped.
pub fn reaped(
    json: bool,
    time: f64,
    clock: &str,
    p: &ReapedProc,
    parent_comm: &str,
    dead_for_ns: Option<u64>,
    lost: u64,
) -> String {
    if json {
        return serde_json::json!({
            "type": "reaped", "time": time, "pid": p.key.tgid, "ppid": p.ppid, "comm": p.comm.as_str(),
            "parent_comm": parent_comm, "zombie_s": dead_for_ns.map(secs), "lost_events": lost,
        })
        .to_string();
    }
    let after = dead_for_ns.map_or_else(
        || "(dead before proclens started)".to_string(),
        |ns| format!("after {:.1}s", secs(ns)),
    );
    format!(
        "{clock} reaped  pid {} ({}) by {} ({}) {after}",
        p.key.tgid, p.comm, p.ppid, parent_comm
    )
}

/// An orphan re-parented by the kernel.
pub struct Orphan<'a> {
    pub pid: u32,
    pub comm: &'a str,
    pub old_ppid: u32,
    pub old_parent_comm: &'a str,
    pub new_ppid: u32,
    pub new_parent_comm: &'a str,
}

pub fn orphan(json: bool, time: f64, clock: &str, o: &Orphan<'_>, lost: u64) -> String {
    if json {
        return serde_json::json!({
            "type": "orphan", "time": time, "pid": o.pid, "comm": o.comm, "old_ppid": o.old_ppid,
            "old_parent_comm": o.old_parent_comm, "new_ppid": o.new_ppid,
            "new_parent_comm": o.new_parent_comm, "lost_events": lost,
        })
        .to_string();
    }
    format!(
        "{clock} orphan  pid {} ({}): parent {} ({}) exited, re-parented to {} ({})",
        o.pid, o.comm, o.old_ppid, o.old_parent_comm, o.new_ppid, o.new_parent_comm
    )
}

/// Fork statistics of one parent for a stats line.
pub struct ParentStats<'a> {
    pub pid: u32,
    pub comm: &'a str,
    pub total: ForkStats,
    /// Since the previous stats line.
    pub delta: ForkStats,
    /// Its child processes still in the table (alive or dead and not yet freed).
    pub children: usize,
}

#[derive(Serialize)]
struct JsonParent<'a> {
    pid: u32,
    comm: &'a str,
    forks: u64,
    threads: u64,
    forks_per_s: f64,
    threads_per_s: f64,
    child_exits: u64,
    child_failures: u64,
    waits: u64,
    children: usize,
}

/// The periodic `--watch` stats line: health, table size and fork statistics per parent.
pub struct Stats<'a> {
    pub time: f64,
    pub clock: &'a str,
    pub interval_s: f64,
    pub lost: u64,
    pub tracked: usize,
    pub repairs: u64,
    pub zombies: usize,
    pub parents: Vec<ParentStats<'a>>,
}

pub fn stats(json: bool, s: &Stats<'_>) -> Vec<String> {
    if json {
        let parents: Vec<JsonParent<'_>> = s
            .parents
            .iter()
            .map(|p| JsonParent {
                pid: p.pid,
                comm: p.comm,
                forks: p.total.processes,
                threads: p.total.threads,
                forks_per_s: per_second(p.delta.processes, s.interval_s),
                threads_per_s: per_second(p.delta.threads, s.interval_s),
                child_exits: p.total.child_exits,
                child_failures: p.total.child_failures,
                waits: p.total.waits,
                children: p.children,
            })
            .collect();
        return vec![
            serde_json::json!({
                "type": "stats", "time": s.time, "interval_s": s.interval_s, "lost_events": s.lost,
                "tracked_processes": s.tracked, "table_repairs": s.repairs, "zombies": s.zombies,
                "parents": parents,
            })
            .to_string(),
        ];
    }
    let mut out = Vec::new();
    let mut busy: Vec<&ParentStats<'_>> = s
        .parents
        .iter()
        .filter(|p| p.delta.processes + p.delta.threads > 0)
        .collect();
    busy.sort_by_key(|p| std::cmp::Reverse(p.delta.processes + p.delta.threads));
    for p in busy.iter().take(5) {
        out.push(format!(
            "{} forks   {} ({}): {:.1} processes/s, {:.1} threads/s; {} children exited ({} failed)",
            s.clock,
            p.pid,
            p.comm,
            per_second(p.delta.processes, s.interval_s),
            per_second(p.delta.threads, s.interval_s),
            p.total.child_exits,
            p.total.child_failures
        ));
    }
    if s.lost > 0 {
        out.push(format!(
            "{} lost events: {} (ring buffer full)",
            s.clock, s.lost
        ));
    }
    out
}

#[cfg(test)]
mod tests;
