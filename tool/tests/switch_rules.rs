//! Real BPF, issue 15: switches counted and classified by the kernel's own rules, against
//! the kernel's counters and a bpftrace anchor on the same run: vfork children share
//! their parent's address space (and fork+exec children do not); a task that blocks with
//! a signal pending is counted voluntary, as the kernel counts it.
mod common;

use std::{collections::HashMap, process::Command, time::Duration};

use common::{
    Bounded as _, COMMAND_LIMIT, PROCLENS, Proclens, bpftrace::Bpftrace, can_trace, now_unix,
    settled_counters, switch_workloads::COMM_ENV, workload::Workload,
};
use serde_json::Value;

workload_entry!();

/// A name no other task has, for the anchor to pick the workload's out.
fn unique_comm(tag: &str) -> String {
    format!("{tag}{}", std::process::id() % 100_000)
}

/// What the anchor saw of the workload (its thread and children, all named `comm` until
/// they exec): the switches between two of them, by (prev, next) thread id, and the
/// thread each first ran after.
struct Seen {
    pairs: HashMap<(u64, u64), u64>,
    first_after: HashMap<u64, u64>,
}

impl Seen {
    /// The workload's thread: the one every switch between two of them involves.
    fn parent(&self) -> u64 {
        let mut n: HashMap<u64, u64> = HashMap::new();
        for &(a, b) in self.pairs.keys() {
            *n.entry(a).or_default() += 1;
            *n.entry(b).or_default() += 1;
        }
        *n.iter().max_by_key(|(_, n)| **n).unwrap().0
    }

    /// Children whose first run came straight after their parent (with whatever address
    /// space they were born with still theirs).
    fn children_first_after_parent(&self) -> u64 {
        let parent = self.parent();
        self.first_after
            .iter()
            .filter(|&(&child, &prev)| prev == parent && child != parent)
            .count() as u64
    }

    /// Switches from children to the parent.
    fn back_to_parent(&self) -> u64 {
        let parent = self.parent();
        self.pairs
            .iter()
            .filter(|&(&(a, b), _)| b == parent && a != parent)
            .map(|(_, n)| n)
            .sum()
    }
}

/// `proclens run --json -- <workload kind>` (its thread named `comm`) beside bpftrace;
/// returns run's report and what bpftrace saw.
fn run_beside_anchor(kind: &str, comm: &str) -> (Value, Seen) {
    let bt = Bpftrace::start(&format!(
        "tracepoint:sched:sched_switch /args->next_comm == \"{comm}\" && args->prev_comm == \"{comm}\"/ \
         {{ @pairs[args->prev_pid, args->next_pid] = count(); }} \
         tracepoint:sched:sched_switch /args->next_comm == \"{comm}\" && @seen[args->next_pid] == 0/ \
         {{ @seen[args->next_pid] = 1; @first_after[args->next_pid] = args->prev_pid; }}"
    ));
    let (argv, env) = Workload::auto_command(kind);
    let file = std::env::temp_dir().join(format!("proclens-rules-{}.json", std::process::id()));
    let status = Command::new(PROCLENS)
        .args(["run", "--json", "-o", file.to_str().unwrap(), "--"])
        .args(&argv)
        .envs(env)
        .env(COMM_ENV, comm)
        .stdout(std::process::Stdio::null())
        .status_within(COMMAND_LIMIT);
    let out = bt.stop();
    assert!(status.success(), "{status}");
    let report = serde_json::from_str(&std::fs::read_to_string(&file).unwrap()).unwrap();
    let _ = std::fs::remove_file(&file);
    let seen = Seen {
        pairs: common::bpftrace::pairs(&out, "pairs"),
        first_after: common::bpftrace::by_key(&out, "first_after"),
    };
    (report, seen)
}

/// Sums of `run`'s per-process switch classes (same, cross, idle/kernel) over the
/// children (named `comm` after the workload's thread, which named itself so) and over
/// the workload's own process (named after its first thread).
fn classes(report: &Value, comm: &str) -> ([u64; 3], [u64; 3]) {
    let mut children = [0; 3];
    let mut own = [0; 3];
    for p in report["per_process"].as_array().unwrap() {
        let s = &p["switches"];
        let into = if p["comm"] == comm {
            &mut children
        } else {
            &mut own
        };
        for (i, k) in ["same_process", "cross_process", "idle_or_kernel"]
            .iter()
            .enumerate()
        {
            into[i] += s[k].as_u64().unwrap();
        }
    }
    (children, own)
}

/// 300 vfork children (`CLONE_VM` | `CLONE_VFORK`, as `posix_spawn` makes them) that exit
/// at once, all on one CPU, beside a bpftrace anchor: every child whose first run came
/// straight after its parent (the anchor counts them) was switched in on the address space
/// it shares, and every switch from an exiting child back to its parent kept it too. Then
/// 300 ordinary fork+exec children: their first runs after the parent changed the address
/// space, and no switch into any of them kept one. (A child switched in again after it
/// released its address space, as it exits, runs on whatever was loaded: the lazy TLB case,
/// counted with idle and kernel threads, as the kernel treats it.)
#[test]
fn vfork_children_share_their_parents_address_space_and_forked_ones_do_not() {
    if !can_trace() {
        return;
    }
    const N: u64 = 300;
    let comm = unique_comm("vfk");
    let (report, seen) = run_beside_anchor(&format!("vfork:{N}"), &comm);
    let (first, back) = (seen.children_first_after_parent(), seen.back_to_parent());
    let (children, own) = classes(&report, &comm);
    eprintln!(
        "vfork: {first} children ran first after the parent, {back} switches back; classes (same, cross, idle/kernel): children {children:?}, parent {own:?}"
    );
    assert!(
        first >= N / 2,
        "the children rarely ran after their parent: {first}"
    );
    assert!(
        children[0] >= first,
        "children's same-address-space switches in {children:?}, {first} first runs after the parent"
    );
    assert!(
        own[0] >= back,
        "the parent's same-address-space switches in {own:?}, {back} from its children"
    );

    let comm = unique_comm("fex");
    let (report, seen) = run_beside_anchor(&format!("fork-exec:{N}"), &comm);
    let first = seen.children_first_after_parent();
    let (children, _) = classes(&report, "true");
    eprintln!("fork+exec: {first} children ran first after the parent; children {children:?}");
    assert!(
        first >= N / 2,
        "the children rarely ran after their parent: {first}"
    );
    assert_eq!(
        children[0], 0,
        "a forked child has an address space of its own"
    );
    assert!(
        children[1] >= first,
        "children's address-space changes {children:?}, {first} first runs after the parent"
    );
}

/// A thread sleeping in nanosleep while another sends it signals for 3 s: some signals
/// land after it set its sleeping state and before it switched, and the kernel then
/// counts the switch voluntary though the tracepoint sees `TASK_RUNNING` (the anchor
/// counts those: switches it sees as running, less the kernel's involuntary ones).
/// proclens's voluntary and involuntary switches equal the kernel's exactly, in every
/// run; runs are repeated (up to 4) until one has such a signal (a loaded machine may
/// give none in 3 s).
#[test]
fn blocking_with_a_signal_pending_is_voluntary_as_the_kernel_counts_it() {
    if !can_trace() {
        return;
    }
    for attempt in 1..=4 {
        if signal_block_run() {
            return;
        }
        eprintln!("run {attempt}: no signal landed in the window; again");
    }
    panic!("in 4 runs of 3 s no signal landed between the sleeper's state change and its switch");
}

/// One run of the signal-block workload: asserts proclens's counts equal the kernel's;
/// returns whether a signal landed in the window.
fn signal_block_run() -> bool {
    let comm = unique_comm("sig");
    let mut w = Workload::spawn_with_env("signal-block:3000", &[(COMM_ENV, comm.as_str())]);
    let pid = w.pid();
    let p = Proclens::spawn(&["top", "--json", "--interval", "0.2", "-p", &pid.to_string()]);
    p.json_until(Duration::from_secs(20), |v| v["type"] == "system");
    let bt = Bpftrace::start(&format!(
        "tracepoint:sched:sched_switch /args->prev_comm == \"{comm}\"/ {{ \
         if (args->prev_state == 0 || args->prev_state == 256) {{ @running = count(); }} }}"
    ));
    let totals = |after: f64| {
        let v = p.json_until(Duration::from_secs(10), |v| {
            v["type"] == "process" && v["pid"] == pid && v["time"].as_f64().unwrap() > after
        });
        (
            v["voluntary_total"].as_u64().unwrap(),
            v["involuntary_total"].as_u64().unwrap(),
        )
    };
    let before_kernel = settled_counters(pid);
    let before = totals(now_unix());
    w.start();
    let lines = w.wait_done();
    let after_kernel = settled_counters(pid);
    let after = totals(now_unix());
    let running = common::bpftrace::count(&bt.stop(), "running");
    let kernel = (
        after_kernel.voluntary - before_kernel.voluntary,
        after_kernel.involuntary - before_kernel.involuntary,
    );
    let ours = (after.0 - before.0, after.1 - before.1);
    let tid: u32 = lines
        .iter()
        .find_map(|l| l.strip_prefix("sleeper "))
        .and_then(|t| t.parse().ok())
        .expect("the sleeper's tid");
    let sleeper = common::task_counters(pid, tid);
    eprintln!(
        "kernel {kernel:?}, proclens {ours:?}; the sleeper {sleeper:?} switched out {running} times as running"
    );
    assert_eq!(ours, kernel);
    running > sleeper.involuntary
}
