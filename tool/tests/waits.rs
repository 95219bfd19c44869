//! Real BPF: `proclens waits` against workloads that measure their own blocking (see
//! `common/waits_workloads.rs` for the oracles: the clock around each call, the kernel's
//! voluntary switch count, and the phase's wall time less the thread's time on CPU and on
//! the run queue), and against readiness calls whose arguments and results the workload
//! chooses.
//!
//! Each test reads proclens at two quiet points, before `go` and after `done` (every thread
//! of the workload blocked, its switch counts settled), so the window holds exactly the
//! workload's run: blocks that began before proclens attached are charged nowhere, and the
//! blocks open at the second reading (the threads parked in read) are charged to `read`.
mod common;

use std::{collections::HashMap, process::Command, time::Duration};

use common::{
    Proclens, can_trace, now_unix, settled_counters,
    waits_workloads::{FUTEX_WAITERS, MAXEVENTS, POLLS, PWAIT_KEPT, READY_FDS, SLEEPS},
    workload::Workload,
};
use serde_json::Value;

workload_entry!();

const UNKNOWN: &str = "(syscall unknown)";
const OUTSIDE: &str = "(outside syscalls)";
/// The knob that makes proclens take the path of kernels without `bpf_task_pt_regs`.
const NO_REGS: (&str, &str) = ("PROCLENS_WAITS_REGS", "none");

fn emulated() -> bool {
    std::env::var_os("PROCLENS_EMULATED").is_some()
}

/// Whether the running kernel has `bpf_task_pt_regs` (5.15+), read from its BTF with
/// bpftool: where it has not, no block can be told apart by syscall.
fn kernel_has_task_pt_regs() -> bool {
    let out = Command::new("bpftool")
        .args(["btf", "dump", "file", "/sys/kernel/btf/vmlinux"])
        .output()
        .expect("bpftool");
    assert!(out.status.success(), "bpftool btf dump failed");
    String::from_utf8_lossy(&out.stdout).contains("'BPF_FUNC_task_pt_regs' val=")
}

/// Whether proclens, run with `env`, can tell blocks apart by syscall here.
fn splits_by_syscall(env: &[(&str, &str)]) -> bool {
    kernel_has_task_pt_regs() && !env.contains(&NO_REGS)
}

/// A result line of the workload: `KIND key=value ...`.
struct Line {
    kind: String,
    name: String,
    fields: HashMap<String, u64>,
}

impl Line {
    fn parse(l: &str) -> Self {
        let mut words = l.split_whitespace();
        let kind = words.next().unwrap().to_string();
        let mut name = String::new();
        let mut fields = HashMap::new();
        for w in words {
            let (k, v) = w.split_once('=').unwrap();
            if k == "name" {
                name = v.to_string();
            } else {
                fields.insert(k.to_string(), v.parse().unwrap());
            }
        }
        Self { kind, name, fields }
    }

    fn n(&self, k: &str) -> u64 {
        *self
            .fields
            .get(k)
            .unwrap_or_else(|| panic!("no {k} in {} {}", self.kind, self.name))
    }

    /// The time the phase's thread was blocked by the kernel's account of the rest: its
    /// wall time less its time on CPU and its run-queue wait, ms.
    fn blocked_oracle_ms(&self) -> f64 {
        (self.n("wall_ns") as f64 - self.n("cpu_ns") as f64 - self.n("run_delay_ns") as f64) / 1e6
    }

    fn clock_ms(&self) -> f64 {
        self.n("clock_ns") as f64 / 1e6
    }
}

/// proclens's reports at the two quiet points around a workload's run, and what the
/// kernel and the workload said over the same window.
struct Window {
    system: Value,
    before: Value,
    after: Value,
    /// The kernel's voluntary switches of the whole process over the window.
    kernel_voluntary: u64,
    /// The process's threads over the window.
    threads: usize,
    lines: Vec<Line>,
}

/// The first `waits` line for `pid` made after `after` (unix seconds).
fn report_after(p: &Proclens, pid: u32, after: f64) -> Value {
    p.json_until(Duration::from_secs(20), |v| {
        v["type"] == "waits" && v["pid"] == pid && v["time"].as_f64().unwrap() > after
    })
}

/// The voluntary switch count of each thread of `pid`.
fn thread_voluntary(pid: u32) -> HashMap<u32, u64> {
    std::fs::read_dir(format!("/proc/{pid}/task"))
        .unwrap()
        .flatten()
        .filter_map(|t| {
            let tid = t.file_name().to_string_lossy().parse().ok()?;
            Some((tid, common::task_counters(pid, tid).voluntary))
        })
        .collect()
}

/// Runs workload `kind` under `proclens waits -p PID` (with `env`) between two quiet
/// points.
fn measure(kind: &str, env: &[(&str, &str)]) -> Window {
    let mut w = Workload::spawn(kind);
    let pid = w.pid();
    let p = Proclens::spawn_with_env(
        &[
            "waits",
            "--json",
            "--interval",
            "0.2",
            "-p",
            &pid.to_string(),
        ],
        env,
    );
    // The first report means the programs are attached.
    let system = p.json_until(Duration::from_secs(30), |v| v["type"] == "waits_system");
    let before_proc = settled_counters(pid);
    let before_threads = thread_voluntary(pid);
    let before = report_after(&p, pid, now_unix());
    w.start();
    let lines: Vec<Line> = w.wait_done().iter().map(|l| Line::parse(l)).collect();
    let after_proc = settled_counters(pid);
    let after_threads = thread_voluntary(pid);
    let after = report_after(&p, pid, now_unix());
    let threads = after_threads.len().max(before_threads.len());
    eprintln!("before {before}\nafter {after}");
    for l in &lines {
        eprintln!("workload: {} {} {:?}", l.kind, l.name, l.fields);
    }
    Window {
        system,
        before,
        after,
        kernel_voluntary: after_proc.voluntary - before_proc.voluntary,
        threads,
        lines,
    }
}

impl Window {
    /// The `blocked_in` entry of `syscall` in report `v`.
    fn blocked_in<'a>(v: &'a Value, syscall: &str) -> Option<&'a Value> {
        v["blocked_in"]
            .as_array()
            .unwrap()
            .iter()
            .find(|b| b["syscall"] == syscall)
    }

    /// Time blocked in `syscall` (ms) and the switches that began those blocks, over the
    /// window.
    fn blocked(&self, syscall: &str) -> (f64, u64) {
        let get = |v: &Value| {
            Self::blocked_in(v, syscall).map_or((0.0, 0), |b| {
                (
                    b["blocked_ms_total"].as_f64().unwrap(),
                    b["switches_total"].as_u64().unwrap(),
                )
            })
        };
        let (b0, s0) = get(&self.before);
        let (b1, s1) = get(&self.after);
        (b1 - b0, s1 - s0)
    }

    /// The syscalls with blocks in the window.
    fn blocked_names(&self) -> Vec<String> {
        self.after["blocked_in"]
            .as_array()
            .unwrap()
            .iter()
            .map(|b| b["syscall"].as_str().unwrap().to_string())
            .filter(|s| self.blocked(s).1 > 0)
            .collect()
    }

    /// Switches summed over every syscall, over the window.
    fn all_switches(&self) -> u64 {
        let get = |v: &Value| v["switches_total"].as_u64().unwrap();
        get(&self.after) - get(&self.before)
    }

    /// The window's length by proclens's report times, ms.
    fn span_ms(&self) -> f64 {
        (self.after["time"].as_f64().unwrap() - self.before["time"].as_f64().unwrap()) * 1e3
    }

    fn line(&self, kind: &str, name: &str) -> &Line {
        self.lines
            .iter()
            .find(|l| l.kind == kind && l.name == name)
            .unwrap_or_else(|| panic!("the workload printed no {kind} {name}"))
    }

    fn by_syscall(&self) -> bool {
        self.system["by_syscall"].as_bool().unwrap()
    }

    /// The readiness entry of `syscall` in the second report (every readiness call of
    /// the workload is in the window: the first report has none).
    fn readiness(&self, syscall: &str) -> Option<&Value> {
        self.after["readiness"]
            .as_array()
            .unwrap()
            .iter()
            .find(|r| r["syscall"] == syscall)
    }

    /// Every switch of the window was charged somewhere: the kernel's count of the
    /// process's voluntary switches over it, exactly.
    fn assert_switches_add_up(&self) {
        assert_eq!(
            self.all_switches(),
            self.kernel_voluntary,
            "switches over all syscalls against the kernel's voluntary switches of the \
             process over the window\nbefore {}\nafter {}",
            self.before,
            self.after
        );
    }

    /// On a kernel (or with the knob) that cannot tell blocks apart by syscall: the
    /// system line says so, every block of the window is `(syscall unknown)` with no
    /// number, and its switches are the kernel's voluntary switches. Its time holds the
    /// workload's measured blocks (`phases`, within 2%: the phases' own account, not the
    /// window's), and no more than the window's length for each of the process's threads
    /// (a thread asleep since before proclens started is charged from then on too).
    fn assert_all_unknown(&self, phases: &[&Line]) {
        assert!(!self.by_syscall(), "{}", self.system);
        assert_eq!(self.blocked_names(), vec![UNKNOWN], "{}", self.after);
        let b = Self::blocked_in(&self.after, UNKNOWN).unwrap();
        assert!(b["nr"].is_null() && b["abi"].is_null(), "{b}");
        self.assert_switches_add_up();
        let (ms, _) = self.blocked(UNKNOWN);
        let measured: f64 = phases.iter().map(|l| l.blocked_oracle_ms()).sum();
        // Each report's open blocks are credited up to its reading of the live threads,
        // a moment before its time: 1% for the difference of the two moments.
        let most = self.span_ms() * self.threads as f64 * 1.01;
        eprintln!(
            "{UNKNOWN}: {ms:.3} ms; the workload's blocks {measured:.3} ms; at most {most:.1} ms \
             ({} threads over {:.1} ms)",
            self.threads,
            self.span_ms()
        );
        let low = if emulated() { 0.75 } else { 0.98 };
        assert!(
            ms >= measured * low && ms <= most,
            "{UNKNOWN}: {ms} ms; the workload measured {measured} ms of blocks; at most {most}"
        );
    }
}

/// Asserts proclens's time blocked in one syscall (`ms`) against the workload's account of
/// its calls (`own`, one or more threads' lines): no more than the clock around the calls
/// (which also holds their time on CPU and the run-queue wait after each wakeup: under
/// load that was up to 5% more than the time blocked), and within 0.1% + 0.1 ms of the
/// threads' blocked time by the kernel's account of the rest (wall time less time on CPU
/// and on the run queue over the phase). The two accounts differ only where the kernel's
/// task clock leaves out time on CPU (stolen by a hypervisor, or IRQ time where it is
/// accounted), a share of the few ms on CPU per phase: measured within 0.001% (12 µs)
/// over 30 runs. The run-start bug this caught cost 0.1 to 6 ms a run (0.02 to 0.6%).
///
/// Under emulation (the kernel matrix's TCG guests) the task CPU clock was seen to run
/// past the wall clock, so the kernel's account is not to be trusted there: the time
/// must be within 25% of the clock around the calls instead.
fn assert_blocked_time(syscall: &str, ms: f64, own: &[&Line]) {
    assert_blocked_time_besides(syscall, ms, own, 0.0, 0.0);
}

/// [`assert_blocked_time`] where, besides the workload's calls, one thread was blocked in
/// the same syscall for `besides_ms` (known to within `slack_ms`).
fn assert_blocked_time_besides(
    syscall: &str,
    ms: f64,
    own: &[&Line],
    besides_ms: f64,
    slack_ms: f64,
) {
    let clock: f64 = own.iter().map(|l| l.clock_ms()).sum::<f64>() + besides_ms;
    let oracle: f64 = own.iter().map(|l| l.blocked_oracle_ms()).sum::<f64>() + besides_ms;
    eprintln!(
        "{syscall}: proclens {ms:.3} ms; the clock around the calls {clock:.3} ms; blocked by \
         the kernel's account {oracle:.3} ms ({:+.4}%)",
        100.0 * (ms - oracle) / oracle
    );
    if emulated() {
        assert!(
            (ms - clock).abs() <= clock * 0.25,
            "{syscall}: proclens {ms} ms, the clock around the calls {clock} ms"
        );
        return;
    }
    assert!(
        ms <= clock + slack_ms,
        "{syscall}: proclens {ms} ms is more than the clock around the calls, {clock} ms"
    );
    assert!(
        (ms - oracle).abs() <= oracle * 0.001 + 0.1 + slack_ms,
        "{syscall}: proclens {ms} ms, the workload's blocked time {oracle} ms"
    );
}

/// A readiness entry's figures against the workload's `ready` line: every call counted,
/// what it was handed and what it returned; the calls the kernel refused (`failed`)
/// counted as errors, handed nothing (the per-call figures are over the others).
fn assert_readiness(r: &Value, own: &Line, calls: u64) {
    let name = &own.name;
    let f = |k: &str| r[k].as_f64().unwrap();
    let n = |k: &str| r[k].as_u64().unwrap();
    let failed = own.n("failed");
    assert_eq!(n("calls_total"), calls + failed, "{name} calls: {r}");
    assert_eq!(
        n("fds_in_total"),
        calls * own.n("fds_in"),
        "{name} fds in: {r}"
    );
    assert_eq!(
        f("fds_in_per_call_total"),
        own.n("fds_in") as f64,
        "{name}: {r}"
    );
    assert_eq!(
        f("interest_per_call_total"),
        own.n("interest") as f64,
        "{name}: {r}"
    );
    assert_eq!(n("ready_total"), own.n("ready"), "{name} ready: {r}");
    assert_eq!(f("ready_per_call_total"), 1.0, "{name}: {r}");
    assert_eq!(
        (n("empty_total"), n("errors_total")),
        (0, failed),
        "{name}: {r}"
    );
}

/// Test 1 and its twin without `bpf_task_pt_regs`: the `waits-split` workload's nanosleeps
/// and polls.
fn split(env: &[(&str, &str)]) {
    let w = measure("waits-split", env);
    let sleeps = w.line("phase", "nanosleep");
    let polls = w.line("phase", "poll");
    // The workload ran as designed: each call blocked once, and nothing else did.
    for (l, n) in [(sleeps, SLEEPS), (polls, POLLS)] {
        assert_eq!(
            (l.n("calls"), l.n("nvcsw"), l.n("nvcsw_in_calls")),
            (n, n, n),
            "{}: the workload's own count",
            l.name
        );
    }
    // Readiness counts do not depend on the registers: the polls, each timing out.
    let r = w
        .readiness("poll")
        .unwrap_or_else(|| panic!("no poll readiness: {}", w.after));
    let n = |k: &str| r[k].as_u64().unwrap();
    assert_eq!(
        (
            n("calls_total"),
            n("fds_in_total"),
            n("ready_total"),
            n("empty_total"),
            n("errors_total")
        ),
        (POLLS, POLLS, 0, POLLS, 0),
        "{r}"
    );
    assert!(w.readiness("nanosleep").is_none(), "not a readiness call");
    if !splits_by_syscall(env) {
        let per_call = r["blocked_ms_per_call_total"].as_f64().unwrap();
        assert_eq!(per_call, 0.0, "no block is charged to poll: {r}");
        w.assert_all_unknown(&[sleeps, polls]);
        return;
    }
    assert!(w.by_syscall(), "{}", w.system);
    let (sleep_ms, sleep_sw) = w.blocked("nanosleep");
    let (poll_ms, poll_sw) = w.blocked("poll");
    assert_eq!(sleep_sw, SLEEPS, "switches charged to nanosleep");
    assert_eq!(poll_sw, POLLS, "switches charged to poll");
    assert_blocked_time("nanosleep", sleep_ms, &[sleeps]);
    assert_blocked_time("poll", poll_ms, &[polls]);
    // The readiness view's time per poll is the same blocked time.
    let per_call = r["blocked_ms_per_call_total"].as_f64().unwrap();
    assert!(
        (per_call * POLLS as f64 - poll_ms).abs() < 1e-6 * poll_ms,
        "blocked per poll {per_call} ms, {poll_ms} ms in {POLLS} polls"
    );
    // Only the calls measured, and the read each blocked thread parks in (stdin), blocked.
    let mut names = w.blocked_names();
    names.sort();
    assert_eq!(names, ["nanosleep", "poll", "read"], "{}", w.after);
    w.assert_switches_add_up();
    for name in [UNKNOWN, OUTSIDE] {
        assert!(Window::blocked_in(&w.after, name).is_none(), "{}", w.after);
    }
}

/// One thread sleeps 100 × 10 ms in nanosleep, then waits 50 × 20 ms in poll on a pipe
/// nobody writes to: each syscall is charged its own blocks (100 and 50 switches, exactly)
/// and their time (no more than the workload's clock around the calls, and the kernel's
/// account of its blocked time within 0.1%, see `assert_blocked_time`); every voluntary
/// switch of the window is charged to some syscall. On a kernel
/// without `bpf_task_pt_regs` (5.10), the documented fallback instead (see
/// `Window::assert_all_unknown`).
#[test]
fn blocked_time_is_split_by_the_syscall_each_block_began_in() {
    if can_trace() {
        split(&[]);
    }
}

/// Test 2 and its twin: the `waits-ready` workload.
fn ready(env: &[(&str, &str)]) {
    const N: u64 = 200;
    let w = measure(&format!("waits-ready:{N}"), env);
    assert!(
        w.before["readiness"].as_array().unwrap().is_empty(),
        "readiness calls before the run: {}",
        w.before
    );
    let own: Vec<&Line> = w.lines.iter().filter(|l| l.kind == "ready").collect();
    let pwait2 = !w.lines.iter().any(|l| l.kind == "unavailable");
    assert_eq!(
        own.len(),
        if pwait2 { 7 } else { 6 },
        "the workload's calls"
    );
    for l in &own {
        let r = w
            .readiness(&l.name)
            .unwrap_or_else(|| panic!("no readiness entry for {}: {}", l.name, w.after));
        eprintln!("{}: {r}", l.name);
        assert_readiness(r, l, N);
        // One fd is ready from the start: no call waits.
        if w.by_syscall() {
            assert_eq!(w.blocked(&l.name).1, 0, "{} never blocks", l.name);
        }
    }
    // What the workload chose, as the test knows it.
    let fds_in = |name: &str| w.line("ready", name).n("fds_in");
    let interest = |name: &str| w.line("ready", name).n("interest");
    let nfds = fds_in("select");
    assert!(
        nfds > READY_FDS as u64 && nfds <= 1024,
        "select's nfds {nfds}"
    );
    assert_eq!(fds_in("pselect6"), nfds);
    assert_eq!(fds_in("poll"), READY_FDS as u64);
    assert_eq!(fds_in("epoll_wait"), MAXEVENTS[0] as u64);
    assert_eq!(fds_in("epoll_pwait"), MAXEVENTS[1] as u64);
    assert_eq!(interest("epoll_wait"), READY_FDS as u64);
    assert_eq!(interest("epoll_pwait"), PWAIT_KEPT as u64);
    assert_eq!(interest("select"), 0);
    assert_eq!(
        pwait2,
        common::kernel_at_least(5, 11),
        "epoll_pwait2 is 5.11's"
    );
    if !pwait2 {
        assert!(w.readiness("epoll_pwait2").is_none(), "{}", w.after);
    }
    w.assert_switches_add_up();
}

/// 1,000 eventfds, one of them readable, waited on 200 times by each readiness call:
/// select and pselect6 over all of them (nfds: the highest fd + 1), poll and ppoll with a
/// pollfd each, `epoll_wait` on an instance with all 1,000 added (maxevents 64),
/// `epoll_pwait` on one with 1,000 added and 500 deleted again (maxevents 1),
/// `epoll_pwait2` (5.11+).
/// Every figure exact: calls, fds in per call (nfds or maxevents), the interest set per
/// call (1,000 and 500, from `epoll_ctl`), one ready per call, none empty, no errors.
#[test]
fn readiness_calls_are_counted_with_what_they_were_handed_and_returned() {
    if can_trace() {
        ready(&[]);
    }
}

/// Test 3: the `waits-futex` workload.
fn futex(env: &[(&str, &str)]) {
    const N: u64 = 250;
    let w = measure(&format!("waits-futex:{N}"), env);
    let own: Vec<&Line> = w.lines.iter().filter(|l| l.kind == "waiter").collect();
    assert_eq!(own.len(), FUTEX_WAITERS);
    // The waiters blocked in their futex calls and nowhere else.
    let blocks: u64 = own.iter().map(|l| l.n("nvcsw_in_calls")).sum();
    for l in &own {
        assert_eq!(l.n("nvcsw"), l.n("nvcsw_in_calls"), "waiter {}", l.n("tid"));
    }
    // Each waiter blocks once a post, but for one it only sees after the next (seen: 248
    // to 250 blocks of 250 posts each): N of the 2N is the workload working at all.
    assert!(
        blocks >= N,
        "the waiters blocked {blocks} times for {N} posts: the workload did not contend"
    );
    if !splits_by_syscall(env) {
        w.assert_all_unknown(&own);
        return;
    }
    assert!(w.by_syscall());
    let (ms, switches) = w.blocked("futex");
    assert_eq!(
        switches, blocks,
        "switches charged to futex: the waits that blocked"
    );
    // Besides the waiters, the test harness's main thread: it waits for the thread that
    // runs the workload (libtest runs each test on a thread of its own) in futex, from
    // before proclens started to after the window, so it is charged the whole window:
    // the time between the two reports' readings of the live threads, which each report's
    // time follows by a moment (0.1 to 0.4 ms measured): 1 ms of slack for the difference.
    assert_blocked_time_besides("futex", ms, &own, w.span_ms(), 1.0);
    // The poster blocked once in each of its sleeps; the main thread waited for the others
    // in read, where all park at the end.
    assert_eq!(w.blocked("nanosleep").1, N, "the poster's sleeps");
    let mut names = w.blocked_names();
    names.sort();
    assert_eq!(names, ["futex", "nanosleep", "read"], "{}", w.after);
    w.assert_switches_add_up();
}

/// Two threads wait on one futex word (raw `FUTEX_WAIT`) that a third bumps and wakes 250
/// times, 2 ms apart: futex is charged exactly the waits that blocked (the waiters count
/// their own voluntary switches around each call) and their time as in the nanosleep and
/// poll test (see `assert_blocked_time`).
#[test]
fn futex_waits_are_charged_to_futex() {
    if can_trace() {
        futex(&[]);
    }
}

/// Test 5: where blocks cannot be told apart by syscall (kernels before 5.15, or
/// `PROCLENS_WAITS_REGS=none` on any kernel, which takes the same path), every block is
/// `(syscall unknown)` (with no number), the system line says `by_syscall: false`, the
/// switches still add up to the kernel's, and the readiness counts are exact as ever.
#[test]
fn without_task_pt_regs_every_block_is_unknown_and_readiness_stays_exact() {
    if can_trace() {
        split(&[NO_REGS]);
        ready(&[NO_REGS]);
        futex(&[NO_REGS]);
    }
}
