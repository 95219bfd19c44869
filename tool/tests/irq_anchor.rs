//! Real BPF: the time interrupts take from a process, against bpftrace timing the same
//! handlers on the same run. The kernels proclens is tested on keep no interrupt time of
//! their own that could be the oracle (none of the matrix's Debian kernels has
//! `CONFIG_IRQ_TIME_ACCOUNTING`, so /proc/stat's irq column stays 0 and its softirq column
//! is sampled at ticks), so the anchor is another tool. Not in the kernel matrix: its
//! guests have no bpftrace.
mod common;

use std::{
    collections::BTreeMap,
    io::{BufRead as _, BufReader},
    process::{Child, Command, Stdio},
    time::Duration,
};

use proclens_xtask::bpf_stats::BpfStats;

use common::{
    can_trace,
    irq::{FloodedSpinner, Reports, RpsGuard},
};

workload_entry!();

/// The x86 system vectors' tracepoints proclens times as hard IRQs.
const VECTORS: [&str; 5] = [
    "local_timer",
    "reschedule",
    "call_function",
    "call_function_single",
    "irq_work",
];

/// bpftrace's account of the interrupts that hit process `pid`: softirqs and hard IRQ
/// handlers counted and timed (each from its entry to its exit tracepoint), a softirq's
/// time less the hard IRQs nested in it.
fn script(pid: u32) -> String {
    script_for(&format!("pid == {pid}"))
}

/// As [`script`], for the tasks that `pred` (a bpftrace predicate) selects.
fn script_for(pred: &str) -> String {
    let hard_entry: Vec<String> = std::iter::once("tracepoint:irq:irq_handler_entry".to_string())
        .chain(
            VECTORS
                .iter()
                .map(|v| format!("tracepoint:irq_vectors:{v}_entry")),
        )
        .collect();
    let hard_exit: Vec<String> = std::iter::once("tracepoint:irq:irq_handler_exit".to_string())
        .chain(
            VECTORS
                .iter()
                .map(|v| format!("tracepoint:irq_vectors:{v}_exit")),
        )
        .collect();
    format!(
        r"
tracepoint:irq:softirq_entry /{pred}/ {{ @s[cpu] = nsecs; @nested[cpu] = 0; }}
tracepoint:irq:softirq_exit /@s[cpu]/ {{
  @soft = count(); @soft_ns = sum(nsecs - @s[cpu] - @nested[cpu]);
  delete(@s[cpu]); delete(@nested[cpu]);
}}
{} /{pred}/ {{ @h[cpu] = nsecs; }}
{} /@h[cpu]/ {{
  $d = nsecs - @h[cpu];
  @hard = count(); @hard_ns = sum($d);
  if (@s[cpu]) {{ @nested[cpu] = @nested[cpu] + $d; }}
  delete(@h[cpu]);
}}
",
        hard_entry.join(", "),
        hard_exit.join(", ")
    )
}

/// What one tool's window from a handler's entry to its exit may hold of the programs' own
/// work, per interrupt, as `bpf_stats` timed them on this run: for each tool (proclens's
/// programs are `tracing`, bpftrace's `tracepoint`), the mean run time of its programs at
/// the entry tracepoints `entries`, and of those at the exit ones `exits`, weighted by
/// their runs; summed over both tools and both ends. Whichever tool's program runs first at
/// a tracepoint, the other's window holds it, and each tool's window holds its own
/// programs' work after its clock read at entry and before it at exit.
fn programs_ns(entries: &[&str], exits: &[&str]) -> u64 {
    let out = Command::new("bpftool")
        .args(["prog", "show", "-j"])
        .output()
        .expect("bpftool runs");
    let progs: Vec<serde_json::Value> = serde_json::from_slice(&out.stdout).unwrap();
    let side = |names: &[&str]| -> u64 {
        // The kernel keeps 15 characters of a program's name.
        let short: Vec<&str> = names.iter().map(|n| &n[..n.len().min(15)]).collect();
        let mut by_tool: BTreeMap<String, (u64, u64)> = BTreeMap::new();
        for p in &progs {
            if p["name"].as_str().is_some_and(|n| short.contains(&n)) {
                let t = by_tool.entry(p["type"].to_string()).or_default();
                t.0 += p["run_time_ns"].as_u64().unwrap_or(0);
                t.1 += p["run_cnt"].as_u64().unwrap_or(0);
            }
        }
        by_tool
            .values()
            .map(|&(ns, runs)| ns.checked_div(runs).unwrap_or(0))
            .sum()
    };
    side(entries) + side(exits)
}

/// The allowance per interrupt for softirqs ([`programs_ns`], timed on the run; 300 ns a
/// softirq, which this test allowed before, was exceeded on a loaded machine: 487) and for
/// hard IRQs. There the bound [`programs_ns`] gives is wide (0.7-1.2 µs: both tools'
/// vector programs are dear), while the two tools' windows hold nearly the same share of
/// each other's work (17-50 ns apart here): 300 ns, as before.
fn window_slack_ns() -> (u64, u64) {
    (programs_ns(&["softirq_entry"], &["softirq_exit"]), 300)
}

struct Bpftrace {
    child: Child,
}

impl Bpftrace {
    /// Starts the script and waits until its probes are attached.
    fn start(script: &str) -> Self {
        let ci = std::env::var("CI").is_ok_and(|v| v == "true" || v == "1");
        let mut child = match Command::new("bpftrace")
            .args(["-e", script])
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
        {
            Ok(c) => c,
            Err(e) if !ci => panic!("bpftrace: {e} (cargo xtask setup installs it)"),
            Err(e) => panic!("CI=true and bpftrace does not start: {e}"),
        };
        let mut out = BufReader::new(child.stdout.take().unwrap());
        let mut line = String::new();
        out.read_line(&mut line).unwrap();
        assert!(line.starts_with("Attaching"), "bpftrace said {line:?}");
        child.stdout = Some(out.into_inner());
        // The probes attach after the line: a moment more.
        std::thread::sleep(Duration::from_millis(500));
        Self { child }
    }

    /// Stops it; its maps, by name. bpftrace 0.17 once let a SIGINT go (it stayed in its
    /// event loop; a second one ended it): the signal is sent again every half second,
    /// for up to 10 s.
    fn stop(mut self) -> BTreeMap<String, u64> {
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while self.child.try_wait().unwrap().is_none() {
            assert!(
                std::time::Instant::now() < deadline,
                "bpftrace did not stop within 10 s of SIGINT"
            );
            // SAFETY: SIGINT to our own child, not yet reaped.
            unsafe { libc::kill(self.child.id() as i32, libc::SIGINT) };
            std::thread::sleep(Duration::from_millis(500));
        }
        let out = self.child.wait_with_output().unwrap();
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .filter_map(|l| {
                let (k, v) = l.split_once(": ")?;
                Some((
                    k.trim_start_matches('@').to_string(),
                    v.trim().parse().ok()?,
                ))
            })
            .collect()
    }
}

/// A process spinning on CPU 1 while CPU 1 receives a flood (see tests/irq.rs): both
/// tools watch it from before it starts spinning to after it stops, and it is hit by
/// nothing while it waits (it is not current), so their totals cover the same
/// interrupts. The counts must agree exactly (but for bpftrace's blind spot, below); the
/// times within 5% plus, per interrupt, what the two tools' windows from entry to exit may
/// differ by (see [`window_slack_ns`]).
#[test]
fn the_time_a_process_loses_agrees_with_bpftrace() {
    if !can_trace() {
        return;
    }
    let mut f = FloodedSpinner::new();
    let pid = f.victim();
    let stats = BpfStats::enable().expect("bpf_stats on");
    let bt = Bpftrace::start(&script(pid));
    let mut p = Reports::spawn(&["irq", "--json", "--interval", "0.5", "-p", &pid.to_string()]);
    p.next();
    f.spin.start();
    f.spin.wait_for("on 1");
    f.flood.go();
    f.spin.say("stop");
    f.spin.wait_done();
    // Its command reader has returned: nothing of it runs any more. A report made after.
    std::thread::sleep(Duration::from_millis(300));
    p.latest();
    let r = p.next();
    let (soft_slack, hard_slack) = window_slack_ns();
    drop(stats);
    let anchor = bt.stop();
    p.p.signal(libc::SIGINT);
    assert!(p.p.wait(Duration::from_secs(10)).success());
    let v = r.victim(pid);
    let got = |k: &str| v[k].as_u64().unwrap();
    let want = |k: &str| anchor.get(k).copied().unwrap_or(0);
    eprintln!(
        "proclens {v}\nbpftrace {anchor:?}\nallowed per interrupt: softirq {soft_slack} ns (the programs' work), hard IRQ {hard_slack} ns"
    );
    assert!(
        want("soft") >= 1000,
        "the flood hit the victim too little: {anchor:?}"
    );
    assert_eq!(got("soft_total"), want("soft"), "softirqs that hit it");
    // bpftrace's probes are classic tracepoints, which the kernel skips while another
    // such program runs on the CPU (bpf_prog_active): a hard IRQ landing during one of
    // its softirq programs (they run with interrupts enabled) is not seen by it.
    let (hard, seen) = (got("hard_total"), want("hard"));
    assert!(
        (seen..=seen + (seen / 500).max(5)).contains(&hard),
        "hard IRQs that hit it: proclens {hard}, bpftrace {seen}"
    );
    for (ns, n, per) in [
        ("soft_ns", "soft", soft_slack),
        ("hard_ns", "hard", hard_slack),
    ] {
        let (mine, theirs) = (got(&format!("{ns}_total")), want(ns));
        let slack = theirs / 20 + per * want(n);
        assert!(
            mine.abs_diff(theirs) <= slack,
            "{ns}: proclens {mine}, bpftrace {theirs} (slack {slack})"
        );
    }
}

/// `top`'s irq columns for the same victim: the time lost over its rows agrees with
/// bpftrace as above, and its share of the on-CPU time with bpftrace's time over the
/// process's run time as the scheduler counts it (/proc/PID/schedstat, which on kernels
/// without IRQ time accounting includes the interrupts), within half a point.
#[test]
fn tops_share_lost_to_interrupts_agrees_with_bpftrace_and_the_scheduler() {
    if !can_trace() {
        return;
    }
    let mut f = FloodedSpinner::new();
    let pid = f.victim();
    let stats = BpfStats::enable().expect("bpf_stats on");
    let bt = Bpftrace::start(&script(pid));
    let p =
        common::Proclens::spawn(&["top", "--json", "--interval", "0.5", "-p", &pid.to_string()]);
    let row = |after: f64| {
        p.json_until(Duration::from_secs(15), |v| {
            v["type"] == "process" && v["pid"] == pid && v["time"].as_f64().unwrap() > after
        })
    };
    let first = row(0.0);
    assert!(first["irq_pct"].is_number(), "no irq_pct: {first}");
    let run0 = common::irq::runtime_ns(pid);
    let start = common::now_unix();
    f.spin.start();
    f.spin.wait_for("on 1");
    f.flood.go();
    f.spin.say("stop");
    f.spin.wait_done();
    std::thread::sleep(Duration::from_millis(300));
    let ran = common::irq::runtime_ns(pid) - run0;
    let end = common::now_unix();
    let (mut lost_ms, mut oncpu_ms) = (0.0, 0.0);
    let mut t = start;
    while t <= end {
        let r = row(t);
        t = r["time"].as_f64().unwrap();
        lost_ms += r["irq_hard_ms"].as_f64().unwrap() + r["irq_soft_ms"].as_f64().unwrap();
        oncpu_ms += r["oncpu_ms"].as_f64().unwrap();
    }
    let (soft_slack, hard_slack) = window_slack_ns();
    drop(stats);
    let anchor = bt.stop();
    p.signal(libc::SIGINT);
    assert!(p.wait(Duration::from_secs(10)).success());
    let want = |k: &str| anchor.get(k).copied().unwrap_or(0);
    let theirs_ns = want("soft_ns") + want("hard_ns");
    let mine_ns = (lost_ms * 1e6) as u64;
    let share = 100.0 * lost_ms / oncpu_ms;
    let kernel_share = 100.0 * theirs_ns as f64 / ran as f64;
    eprintln!(
        "top: {lost_ms:.2} ms lost of {oncpu_ms:.1} ms on CPU ({share:.2}%); bpftrace {:.2} ms of the scheduler's {:.1} ms ({kernel_share:.2}%)",
        theirs_ns as f64 / 1e6,
        ran as f64 / 1e6
    );
    let slack = theirs_ns / 20 + soft_slack * want("soft") + hard_slack * want("hard");
    assert!(
        mine_ns.abs_diff(theirs_ns) <= slack,
        "top lost {mine_ns} ns, bpftrace {theirs_ns}"
    );
    assert!(
        (share - kernel_share).abs() <= 0.5,
        "top's share {share:.2}%, the kernel's {kernel_share:.2}%"
    );
}

/// The shortest softirq duration of `LONG_BUCKET` and above in proclens's histogram
/// (bucket i >= 1 is [2^(i+7), 2^(i+8)) ns): 65.5 µs.
const LONG_NS: u64 = 1 << 16;
const LONG_BUCKET: usize = 9;
/// How far from `LONG_NS` a softirq's duration may come out in the two tools: each tool's
/// window from entry to exit holds part of the other's programs, which made proclens's
/// softirqs 14 to 600 ns shorter than bpftrace's on average here (more under load).
const NEAR_NS: u64 = 2_000;

/// bpftrace's account of CPU 1's `NET_RX` runs: each timed whole, from its entry to its exit
/// (`rx`, `raw_ns`), the hard IRQ handlers nested in them (`nested`, `nested_ns`), and how
/// many ran `LONG_NS` or longer timed whole (`long_raw`) and less their nested handlers
/// (`long_sub`), and how many less their nested handlers came within `NEAR_NS` of it
/// (`near`).
fn nesting_script() -> String {
    let entries: Vec<String> = std::iter::once("tracepoint:irq:irq_handler_entry".to_string())
        .chain(
            VECTORS
                .iter()
                .map(|v| format!("tracepoint:irq_vectors:{v}_entry")),
        )
        .collect();
    let exits: Vec<String> = std::iter::once("tracepoint:irq:irq_handler_exit".to_string())
        .chain(
            VECTORS
                .iter()
                .map(|v| format!("tracepoint:irq_vectors:{v}_exit")),
        )
        .collect();
    format!(
        r"
tracepoint:irq:softirq_entry /cpu == 1 && args->vec == 3/ {{ @s = nsecs; @n = 0; }}
tracepoint:irq:softirq_exit /cpu == 1 && args->vec == 3 && @s/ {{
  $raw = nsecs - @s; $sub = $raw - @n;
  @rx = count(); @raw_ns = sum($raw);
  if ($raw >= {LONG_NS}) {{ @long_raw = count(); }}
  if ($sub >= {LONG_NS}) {{ @long_sub = count(); }}
  if ($sub + {NEAR_NS} >= {LONG_NS} && $sub < {LONG_NS} + {NEAR_NS}) {{ @near = count(); }}
  @s = 0;
}}
{} /cpu == 1/ {{ @h = nsecs; }}
{} /cpu == 1 && @h/ {{
  $d = nsecs - @h;
  if (@s) {{ @n = @n + $d; @nested = count(); @nested_ns = sum($d); }}
  @h = 0;
}}
",
        entries.join(", "),
        exits.join(", ")
    )
}

/// A hard IRQ nested in a softirq counts once. A process spins on CPU 1 while CPU 1
/// receives a flood (back-to-back bursts steered there from CPU 0: `NET_RX` runs of ~10-30
/// µs on the way out of the flood's IPIs), and 400 of its threads there are woken together
/// by one timer interrupt every millisecond or so (a hard IRQ of ~90 µs, which lands in a
/// `NET_RX` run a few dozen times in the flood).
///
/// - proclens counts nested hard IRQs on CPU 1, and in every report each CPU's hard plus
///   soft time is within the report's interval (as in tests/irq.rs);
/// - the `NET_RX` runs a timer interrupt landed in last `LONG_NS` or more timed whole, and
///   less than that once it is taken off: proclens's histogram of CPU 1's `NET_RX` (the
///   durations it records, nested time taken off) has no more runs of `LONG_NS` or more
///   than bpftrace counts once it takes the nested handlers off, but for runs within
///   `NEAR_NS` of the boundary (the tools' windows differ by that much at most). A nested
///   handler left in a run's time would put the run among the long ones: the test asserts
///   that bpftrace's count of long runs timed whole exceeds the subtracted one by more
///   than that allowance, so such a double count would show.
///
/// Compared in time, the tools differ by up to ~600 ns per softirq under load (see
/// `NEAR_NS`), more than the nested time per softirq any workload here makes: the
/// histogram's boundary is what tells them apart.
#[test]
fn a_hard_irq_nested_in_a_softirq_counts_once() {
    if !can_trace() {
        return;
    }
    let _rps = RpsGuard::steer_to(1);
    let mut spin = common::workload::Workload::spawn("timer-spinner:1");
    let mut flood = common::workload::Workload::spawn("udp-burst:3000");
    let bt = Bpftrace::start(&nesting_script());
    let mut p = Reports::spawn(&["irq", "--json", "--interval", "0.5"]);
    let mut reports = vec![p.next()];
    spin.start();
    spin.wait_for("on 1");
    flood.go();
    spin.say("stop");
    spin.wait_done();
    let end = common::now_unix();
    loop {
        let r = p.next();
        let after = r.time > end;
        reports.push(r);
        if after {
            break;
        }
    }
    let anchor = bt.stop();
    p.p.signal(libc::SIGINT);
    assert!(p.p.wait(Duration::from_secs(10)).success());
    let want = |k: &str| anchor.get(k).copied().unwrap_or(0);
    let cpu1 = |k: &str| -> u64 {
        reports[1..]
            .iter()
            .map(|r| r.cpu(1)[k].as_u64().unwrap())
            .sum()
    };
    let long_mine: u64 = reports
        .iter()
        .filter_map(|r| r.soft_hists.get(&(1, "NET_RX".to_string())))
        .map(|h| h[LONG_BUCKET..].iter().sum::<u64>())
        .sum();
    let rx_mine = reports
        .last()
        .unwrap()
        .softirqs
        .get(&(1, "NET_RX".to_string()))
        .map_or(0, |t| t.0);
    eprintln!(
        "CPU 1: proclens {rx_mine} NET_RX, {long_mine} of {LONG_NS} ns or more; {} nested hard IRQs ({} ns); bpftrace {anchor:?}",
        cpu1("nested_hard"),
        cpu1("nested_hard_ns")
    );
    for r in &reports {
        for c in &r.cpus {
            let busy = c["hard_ns"].as_u64().unwrap() + c["soft_ns"].as_u64().unwrap();
            let interval = (c["interval_s"].as_f64().unwrap() * 1e9) as u64;
            // The interval is measured between snapshots, each reading the CPUs a few
            // microseconds apart: 5 ms of slack, as in tests/irq.rs.
            assert!(
                busy <= interval + 5_000_000,
                "interrupts took {busy} ns of {interval}: {c}"
            );
        }
    }
    assert!(
        cpu1("nested_hard") > 0,
        "proclens saw no hard IRQ nested in CPU 1's softirqs"
    );
    assert!(
        want("rx") >= 1000,
        "the flood raised too few NET_RX: {anchor:?}"
    );
    let (raw, sub, near) = (want("long_raw"), want("long_sub"), want("near"));
    assert!(
        raw > sub + near,
        "too few runs made long by nested handlers ({raw} whole, {sub} less them, {near} near the boundary) to tell"
    );
    assert!(
        long_mine <= sub + near,
        "proclens counted {long_mine} NET_RX runs of {LONG_NS} ns or more; bpftrace {sub} once nested handlers are taken off (+{near} near the boundary), {raw} timed whole"
    );
}

/// `run`'s interrupted time for a command that spins on CPU 1 while it floods CPU 1 from
/// CPU 0 (`irq-run`, see tests/irq.rs), against bpftrace timing the same handlers for the
/// command's processes, both named `irqspin` from their first moments. Counts and times
/// agree as in `the_time_a_process_loses_agrees_with_bpftrace`, except that `run` also
/// charges what hit the command before it renamed itself (its first few milliseconds:
/// at most 5 interrupts of each kind are allowed, and 50 µs each). The share of its time on
/// CPU agrees, within half a point, with bpftrace's time over the command's CPU time as
/// the kernel reports it to its parent (`user_cpu_s` + `system_cpu_s`, which on kernels
/// without IRQ time accounting include the interrupts).
#[test]
fn runs_interrupted_time_agrees_with_bpftrace() {
    if !can_trace() {
        return;
    }
    let _rps = RpsGuard::steer_to(1);
    let _ksoftirqd = common::irq::KsoftirqdBoost::on(1);
    let comm = common::irq_workloads::SPINNER_COMM;
    let bt = Bpftrace::start(&script_for(&format!("comm == \"{comm}\"")));
    let (argv, env) = common::workload::Workload::auto_command("irq-run:1500");
    let out = std::env::temp_dir().join(format!("proclens-irq-run-bt-{}.json", std::process::id()));
    let status = Command::new(common::PROCLENS)
        .args(["run", "--json", "-o", out.to_str().unwrap(), "--"])
        .args(&argv)
        .envs(env)
        .stdout(Stdio::null())
        .status()
        .unwrap();
    let anchor = bt.stop();
    assert!(status.success(), "proclens run: {status}");
    let report: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&out).unwrap()).unwrap();
    let _ = std::fs::remove_file(&out);
    let i = &report["interrupted"];
    let want = |k: &str| anchor.get(k).copied().unwrap_or(0);
    let cpu_s = report["user_cpu_s"].as_f64().unwrap() + report["system_cpu_s"].as_f64().unwrap();
    eprintln!("run: {i}, CPU {cpu_s} s; bpftrace {anchor:?}");
    assert!(
        want("soft") >= 1000,
        "the flood hit the command too little: {anchor:?}"
    );
    let early = 5;
    for (n, ns) in [("soft", "soft_s"), ("hard", "hard_s")] {
        let (mine, seen) = (i[n].as_u64().unwrap(), want(n));
        // bpftrace's blind spot for hard IRQs, as in the test above.
        let blind = if n == "hard" { (seen / 500).max(5) } else { 0 };
        assert!(
            (seen..=seen + blind + early).contains(&mine),
            "{n}: run counted {mine}, bpftrace {seen}"
        );
        let mine_ns = (i[ns].as_f64().unwrap() * 1e9) as u64;
        let theirs = want(&format!("{n}_ns"));
        let slack = theirs / 20 + 300 * seen + early * 50_000;
        assert!(
            mine_ns.abs_diff(theirs) <= slack,
            "{n} time: run {mine_ns} ns, bpftrace {theirs} ns (slack {slack})"
        );
    }
    let pct = i["oncpu_pct"].as_f64().unwrap();
    let kernel_pct = 100.0 * (want("soft_ns") + want("hard_ns")) as f64 / (cpu_s * 1e9);
    assert!(
        (pct - kernel_pct).abs() <= 0.5,
        "run's share {pct:.2}%, bpftrace's time over the kernel's CPU time {kernel_pct:.2}%"
    );
}
