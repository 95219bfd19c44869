//! Real BPF: `proclens top`'s columns beyond switches, each checked against a workload
//! with a known count: syscalls/s (mode switches) and zombies held per parent.
mod common;

use std::time::Duration;

use common::{Proclens, can_trace, cgroup::TestCgroup, workload::Workload, zombies::ps_zombies_of};
use serde_json::Value;

workload_entry!();

fn top(pid: u32) -> Proclens {
    let p = Proclens::spawn(&[
        "top",
        "--syscalls",
        "--json",
        "--interval",
        "0.5",
        "-p",
        &pid.to_string(),
    ]);
    // The first report: the programs are attached and the process table is seeded.
    p.json_until(Duration::from_secs(15), |v| v["type"] == "process");
    p
}

fn row_of(p: &Proclens, pid: u32, pred: impl Fn(&Value) -> bool) -> Value {
    p.json_until(Duration::from_secs(15), |v| {
        v["type"] == "process" && v["pid"] == pid && pred(v)
    })
}

/// N sleeps are N `clock_nanosleep` calls. Tolerance: the workload's hand-shake adds a few
/// syscalls around them (reading `go`, writing `done`, entering the next read); 20 covers
/// them, and a missed sleep would fall below N.
#[test]
fn syscalls_column_counts_each_mode_switch() {
    if !can_trace() {
        return;
    }
    const N: u64 = 400;
    let mut w = Workload::spawn(&format!("sleeper:{N}"));
    let pid = w.pid();
    let p = top(pid);
    let before = row_of(&p, pid, |_| true);
    let base = before["syscalls_total"].as_u64().unwrap();
    w.go();
    // The workload is quiet after `done`: wait for an interval with no syscall.
    let after = row_of(&p, pid, |v| {
        v["syscalls"] == 0 && v["syscalls_total"].as_u64().unwrap() > base
    });
    let counted = after["syscalls_total"].as_u64().unwrap() - base;
    assert!(
        (N..=N + 20).contains(&counted),
        "{counted} syscalls counted for {N} sleeps"
    );
    // The rate column is the interval's count over the interval.
    assert_eq!(after["syscalls_per_s"], 0.0);
    p.signal(libc::SIGINT);
    assert!(p.wait(Duration::from_secs(10)).success());
}

/// A parent that never waits holds exactly N zombies once they are a second old (the
/// column's minimum age), matching `ps`; after it reaps them the column is back to 0.
#[test]
fn zombies_column_counts_a_parents_unreaped_children() {
    if !can_trace() {
        return;
    }
    const N: usize = 4;
    let mut w = Workload::spawn(&format!("zombies:{N}"));
    let parent = w.pid();
    let p = top(parent);
    let first = row_of(&p, parent, |_| true);
    assert_eq!(first["zombies"], 0);
    w.go();
    assert_eq!(ps_zombies_of(parent).len(), N);
    let held = row_of(&p, parent, |v| v["zombies"] == N as u64);
    assert_eq!(held["alive"], true);
    // The column never exceeds what the parent holds.
    w.go();
    assert!(ps_zombies_of(parent).is_empty());
    row_of(&p, parent, |v| v["zombies"] == 0);
    p.signal(libc::SIGINT);
    assert!(p.wait(Duration::from_secs(10)).success());
}

/// A parent holding zombies is shown even when it has not switched in the interval (and
/// without `-p`), so the column can be found on a busy machine.
#[test]
fn a_parent_holding_zombies_is_listed_while_idle() {
    if !can_trace() {
        return;
    }
    const N: usize = 2;
    let mut w = Workload::spawn(&format!("zombies:{N}"));
    let parent = w.pid();
    let p = Proclens::spawn(&["top", "--json", "--interval", "0.5"]);
    p.json_until(Duration::from_secs(15), |v| v["type"] == "system");
    w.go();
    let row = row_of(&p, parent, |v| {
        v["zombies"] == N as u64 && v["voluntary"] == 0
    });
    assert_eq!(row["involuntary"], 0);
    p.signal(libc::SIGINT);
    assert!(p.wait(Duration::from_secs(10)).success());
}

/// Under `--cgroup`, a parent holding zombies is listed only when it is inside. The kernel
/// sends only the cgroup's lifecycle events, but the process table is seeded from all of
/// /proc: zombies made before proclens started, outside the cgroup, must stay out.
#[test]
fn zombie_parents_outside_the_cgroup_are_not_listed() {
    if !can_trace() {
        return;
    }
    const N: usize = 2;
    let cg = TestCgroup::new("top-zombies");
    let mut inside = Workload::spawn(&format!("zombies:{N}"));
    cg.add(inside.pid());
    let mut outside = Workload::spawn(&format!("zombies:{N}"));
    outside.go();
    assert_eq!(ps_zombies_of(outside.pid()).len(), N);
    let p = Proclens::spawn(&["top", "--json", "--interval", "0.5", "--cgroup", cg.path()]);
    p.json_until(Duration::from_secs(15), |v| v["type"] == "system");
    inside.go();
    let leaked = std::cell::Cell::new(false);
    let seen = |v: &Value| {
        leaked.set(leaked.get() || (v["type"] == "process" && v["pid"] == outside.pid()));
    };
    p.json_until(Duration::from_secs(15), |v| {
        seen(v);
        v["type"] == "process" && v["pid"] == inside.pid() && v["zombies"] == N as u64
    });
    // Two more intervals, with both parents' zombies well past the column's minimum age.
    for _ in 0..2 {
        p.json_until(Duration::from_secs(15), |v| {
            seen(v);
            v["type"] == "system"
        });
    }
    assert!(!leaked.get(), "the parent outside the cgroup was listed");
    p.signal(libc::SIGINT);
    assert!(p.wait(Duration::from_secs(10)).success());
    // Reap both so the cgroup can go.
    inside.go();
    outside.go();
}
