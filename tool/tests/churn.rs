//! Real BPF, issue 15: the thread table under churn. 100,000 threads come and go in a
//! process that moves between a traced cgroup and its sibling: each gets its entry while
//! traced and exits outside the filter. Its entries are still freed (the table, read with
//! bpftool, holds its baseline afterwards), and a table too small for the threads alive at
//! once counts each thread it has no room for once.
mod common;

use std::{
    collections::HashMap,
    process::Command,
    time::{Duration, Instant},
};

use common::{
    Proclens, can_trace,
    cgroup::TestCgroup,
    switch_workloads::{CHURN_ENV, CHURN_THREADS},
    workload::Workload,
};
use serde_json::Value;

workload_entry!();

/// Rounds of the churn: [`CHURN_THREADS`] threads each, 100,000 in all.
const ROUNDS: u64 = 1000;

/// Entries of proclens `pid`'s thread table now, from the kernel (bpftool): its `THREADS`
/// hash, and its slots in use (`SLOT_CLAIMS` holds one entry per slot held).
fn table_entries(pid: u32) -> usize {
    let mut n = 0;
    for fd in std::fs::read_dir(format!("/proc/{pid}/fdinfo"))
        .unwrap()
        .flatten()
    {
        let info = std::fs::read_to_string(fd.path()).unwrap_or_default();
        let Some(id) = info.lines().find_map(|l| l.strip_prefix("map_id:")) else {
            continue;
        };
        let id = id.trim();
        let show = Command::new("bpftool")
            .args(["-j", "map", "show", "id", id])
            .output()
            .expect("bpftool (cargo xtask setup installs it)");
        let map: Value = serde_json::from_slice(&show.stdout).unwrap();
        if map["name"] != "THREADS" && map["name"] != "SLOT_CLAIMS" {
            continue;
        }
        let dump = Command::new("bpftool")
            .args(["-j", "map", "dump", "id", id])
            .output()
            .unwrap();
        assert!(dump.status.success(), "{dump:?}");
        let entries: Value = serde_json::from_slice(&dump.stdout).unwrap();
        n += entries.as_array().unwrap().len();
    }
    n
}

/// The last system line's untracked threads.
fn untracked(p: &Proclens, after: f64) -> u64 {
    p.json_until(Duration::from_secs(30), |v| {
        v["type"] == "system" && v["time"].as_f64().unwrap() > after
    })["untracked_threads"]
        .as_u64()
        .unwrap()
}

/// Two views on the traced cgroup at once: one with the machine's table, one whose table
/// (64 entries, all in the hash) is too small for the 100 threads alive at once plus the
/// churner's own (`own`, in the table since tracing began). Per round, 100 + own - 64
/// threads find no room: counted once each though each switches out at least twice while
/// traced (~37,000 in all).
#[test]
fn threads_churned_outside_the_filter_leave_the_table_as_it_was() {
    if !can_trace() {
        return;
    }
    let inside = TestCgroup::new("churn-in");
    let outside = TestCgroup::new("churn-out");
    let cgroups = format!("{}:{}", inside.path(), outside.path());
    let mut w = Workload::spawn_with_env(
        &format!("cgroup-churn:{ROUNDS}"),
        &[(CHURN_ENV, cgroups.as_str())],
    );
    let args = ["top", "--json", "-i", "0.5", "--cgroup", inside.path()];
    let full = Proclens::spawn(&args);
    const SMALL: u64 = 64;
    let small = Proclens::spawn_with_env(
        &args,
        &[
            ("PROCLENS_MAX_THREADS", "64"),
            ("PROCLENS_THREAD_SLOTS", "0"),
        ],
    );
    for p in [&full, &small] {
        p.json_until(Duration::from_secs(30), |v| v["type"] == "system");
    }
    // The churner's own threads (its test harness's too), seeded when tracing began.
    let baseline: HashMap<u32, usize> = [&full, &small]
        .iter()
        .map(|p| (p.pid(), table_entries(p.pid())))
        .collect();
    let own = baseline[&small.pid()] as u64;
    assert!(
        (1..=4).contains(&own),
        "only the churner is in the cgroup: {baseline:?}"
    );
    let started = Instant::now();
    w.go();
    eprintln!(
        "{} threads churned in {:?}",
        ROUNDS * CHURN_THREADS,
        started.elapsed()
    );
    let t = common::now_unix();
    let (full_untracked, small_untracked) = (untracked(&full, t), untracked(&small, t));
    let after: HashMap<u32, usize> = [&full, &small]
        .iter()
        .map(|p| (p.pid(), table_entries(p.pid())))
        .collect();
    eprintln!(
        "table entries before {baseline:?}, after {after:?}; untracked {full_untracked} (full table), {small_untracked} (64 entries)"
    );
    assert_eq!(
        after, baseline,
        "entries of exited threads left in the table"
    );
    assert_eq!(full_untracked, 0);
    // Exactly one count per thread without room, but for the few rounds that start while
    // a thread of the round before, already joined, has yet to make its final switch (the
    // kernel wakes the joiner first): its entry is freed a moment late, and one more
    // thread of the new round finds no room. Counting switches instead would give at
    // least twice the figure.
    let want = ROUNDS * (CHURN_THREADS + own - SMALL);
    assert!(
        (want..=want + ROUNDS / 100).contains(&small_untracked),
        "{small_untracked} untracked, {want} threads without room"
    );
    drop(w);
}
