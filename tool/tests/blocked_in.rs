//! Issue 21: blocked time charged to the syscall each block began in, where the fleet and
//! a command's user read it. `serve`'s `proclens_blocked_in_*` families, read through a
//! real Prometheus's PromQL, and `run`'s "blocked in" section, each for a workload that
//! blocks a known number of times in raw syscalls and measures its own blocked time
//! (`common::blocking_workloads`): the time within 2% of the workload's clock, the
//! switches exactly.
mod common;

use std::{
    process::{Command, Stdio},
    time::Duration,
};

use common::{
    Bounded as _, COMMAND_LIMIT, PROCLENS,
    blocking_workloads::{OUT_ENV, comm_for},
    can_trace,
    exporter::{Prometheus, Server, wait_for},
    workload::Workload,
};
use serde_json::Value;

workload_entry!();

/// The workload's clock against proclens's: within 2%.
const TOLERANCE: f64 = 0.02;

/// The `syscall` label's values (docs/guide.md, serve's metrics).
const LABELS: [&str; 24] = [
    "epoll_wait",
    "epoll_pwait",
    "epoll_pwait2",
    "poll",
    "ppoll",
    "select",
    "pselect6",
    "futex",
    "read",
    "readv",
    "pread64",
    "recvfrom",
    "recvmsg",
    "recvmmsg",
    "accept",
    "accept4",
    "nanosleep",
    "clock_nanosleep",
    "wait4",
    "waitid",
    "io_uring_enter",
    "other",
    "outside_syscall",
    "unknown",
];

fn assert_close(what: &str, proclens_s: f64, measured_s: f64) {
    let off = (proclens_s - measured_s).abs() / measured_s;
    assert!(
        off <= TOLERANCE,
        "{what}: proclens {proclens_s:.6} s, the workload's clock {measured_s:.6} s ({:.2}% apart)",
        off * 100.0
    );
}

/// The one value of an instant query, which must return exactly one series.
fn one(prom: &Prometheus, q: &str) -> f64 {
    let v = prom.vector(q);
    assert_eq!(v.len(), 1, "{q}: {v:?}");
    v[0].1
}

/// A process sleeps 100 times 10 ms in raw nanosleep while `serve` runs, then ends. What
/// Prometheus has of its label set after the end: 100 switches exactly, the time within
/// 2% of its own clock, its last block (in read, charged as it died) in, and no counter
/// of any label set ever reset. Kernel threads make no syscalls: none has a series.
#[test]
fn serve_exports_blocked_time_by_syscall_that_prometheus_reads_back() {
    if !can_trace() {
        return;
    }
    const SLEEPS: u64 = 100;
    // Renamed before serve starts, so that serve only ever knows it by its new name.
    let mut w = Workload::spawn(&format!("blocked-sleeps:{SLEEPS}"));
    let comm = comm_for(w.pid());
    assert_eq!(common::exporter::comm_of(w.pid()), comm);
    let server = Server::start(&[]);
    let prom = Prometheus::start(&[server.addr]);
    let of = |family: &str, syscall: &str| {
        format!("proclens_blocked_in_{family}_total{{comm=\"{comm}\",syscall=\"{syscall}\"}}")
    };
    wait_for(
        "Prometheus to have the workload's label set",
        Duration::from_mins(1),
        || {
            !prom
                .vector(&format!(
                    "proclens_context_switches_total{{comm=\"{comm}\"}}"
                ))
                .is_empty()
        },
    );
    w.start();
    let lines = w.wait_done();
    let measured: Vec<u64> = lines
        .iter()
        .find_map(|l| l.strip_prefix("measured "))
        .unwrap_or_else(|| panic!("no measurement in {lines:?}"))
        .split(' ')
        .map(|v| v.parse().unwrap())
        .collect();
    let (blocked_s, wall_s) = (measured[0] as f64 / 1e9, measured[1] as f64 / 1e9);
    // Its end, once it is blocked in read (on stdin, until it closes): the collection
    // that finds it gone has its final figures, that block's among them.
    common::settled_counters(w.pid());
    drop(w);
    wait_for(
        "its last block in Prometheus",
        Duration::from_secs(30),
        || !prom.vector(&of("switches", "read")).is_empty(),
    );
    // A few more collections and scrapes after the end.
    std::thread::sleep(Duration::from_secs(3));
    let switches = one(&prom, &of("switches", "nanosleep"));
    let seconds = one(&prom, &of("seconds", "nanosleep"));
    eprintln!(
        "serve: nanosleep {seconds:.6} s in {switches} switches; the workload: blocked {blocked_s:.6} s of {wall_s:.6} s wall"
    );
    assert_eq!(switches, SLEEPS as f64, "one switch per sleep");
    assert_close("nanosleep", seconds, blocked_s);
    assert!(
        one(&prom, &of("switches", "read")) >= 1.0,
        "the read it was blocked in when it ended"
    );
    // Counters, monotonic across every process's life and end.
    for family in ["seconds", "switches"] {
        let q = format!("max(resets(proclens_blocked_in_{family}_total[5m]))");
        assert_eq!(one(&prom, &q), 0.0, "{q}");
    }
    // The syscall label stays in its bounded set.
    for (labels, _) in prom.vector("count by (syscall) (proclens_blocked_in_seconds_total)") {
        let s = labels["syscall"].as_str().unwrap();
        assert!(
            LABELS.contains(&s),
            "syscall=\"{s}\" is not one of {LABELS:?}"
        );
    }
    // Kernel threads switch voluntarily, and are charged to no syscall.
    let kthreads = "comm=~\"kworker/.*|ksoftirqd/.*|rcu_.*|migration/.*\"";
    assert!(
        !prom
            .vector(&format!(
                "proclens_context_switches_total{{{kthreads},kind=\"voluntary\"}} > 0"
            ))
            .is_empty(),
        "no kernel thread switched: the next check would prove nothing"
    );
    let charged = prom.vector(&format!("proclens_blocked_in_switches_total{{{kthreads}}}"));
    assert!(
        charged.is_empty(),
        "kernel threads in syscalls: {charged:?}"
    );
}

/// `proclens run --json -- CMD` with `env`; the report.
fn run_json(argv: &[String], env: &[(&str, String)]) -> Value {
    let out_file = std::env::temp_dir().join(format!(
        "proclens-blocked-in-report-{}.json",
        std::process::id()
    ));
    let st = Command::new(PROCLENS)
        .args(["run", "--json", "-o", out_file.to_str().unwrap(), "--"])
        .args(argv)
        .envs(env.iter().map(|(k, v)| (k, v)))
        .stdout(Stdio::null())
        .status_within(COMMAND_LIMIT);
    assert!(st.success(), "proclens run failed: {st}");
    let report = serde_json::from_str(&std::fs::read_to_string(&out_file).unwrap()).unwrap();
    let _ = std::fs::remove_file(&out_file);
    report
}

/// The command forks a child that sleeps 100 times 10 ms in raw nanosleep, then polls 50
/// times 20 ms on a pipe nobody writes to, timing both itself. The report's "blocked in"
/// section, the command and its child together: each call's time within 2% of the
/// child's clock and its switches exactly; poll's readiness figures as the calls made
/// them (the command's own Rust runtime makes one poll more at its start: fds 0 to 2,
/// timeout 0, nothing ready).
#[test]
fn run_reports_where_the_command_and_its_descendants_blocked() {
    if !can_trace() {
        return;
    }
    let measured_file =
        std::env::temp_dir().join(format!("proclens-blocked-in-{}.txt", std::process::id()));
    let _ = std::fs::remove_file(&measured_file);
    let (argv, env) = Workload::auto_command("blocked-child:100");
    let mut env = env.to_vec();
    env.push((OUT_ENV, measured_file.to_string_lossy().into_owned()));
    let r = run_json(&argv, &env);
    let measured = std::fs::read_to_string(&measured_file).unwrap();
    let _ = std::fs::remove_file(&measured_file);
    let b = &r["blocked_in"];
    assert_eq!(b["by_syscall"], true, "{b}");
    assert_eq!(b["readiness_counted"], true, "{b}");
    assert_eq!(
        (&b["uncounted_blocks"], &b["uncounted_readiness"]),
        (&0.into(), &0.into())
    );
    let row = |name: &str| -> &Value {
        b["syscalls"]
            .as_array()
            .unwrap()
            .iter()
            .find(|s| s["syscall"] == name && s["abi"] == std::env::consts::ARCH)
            .unwrap_or_else(|| panic!("no {name} in {b}"))
    };
    for line in measured.lines() {
        let f: Vec<&str> = line.split(' ').collect();
        let (name, blocked_ns, wall_ns, blocks): (&str, f64, f64, u64) = (
            f[0],
            f[1].parse().unwrap(),
            f[2].parse().unwrap(),
            f[3].parse().unwrap(),
        );
        let s = row(name);
        let seconds = s["blocked_s"].as_f64().unwrap();
        eprintln!(
            "run: {name} {seconds:.6} s in {} switches; the child: blocked {:.6} s of {:.6} s wall in {blocks} calls",
            s["switches"],
            blocked_ns / 1e9,
            wall_ns / 1e9
        );
        assert_eq!(s["switches"], blocks, "{name}: one switch per call");
        assert_close(name, seconds, blocked_ns / 1e9);
    }
    let polls = b["readiness"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["syscall"] == "poll")
        .unwrap_or_else(|| panic!("no poll readiness in {b}"));
    eprintln!("run: poll readiness {polls}");
    assert_eq!(polls["calls"], 51, "{polls}");
    assert_eq!(polls["errors"], 0, "{polls}");
    assert_eq!(polls["empty_share"], 1.0, "{polls}");
    assert_eq!(polls["ready_per_call"], 0.0, "{polls}");
    let fds = polls["fds_in_per_call"].as_f64().unwrap();
    assert!((fds - 53.0 / 51.0).abs() < 1e-9, "{polls}");
    let per_call = polls["blocked_ms_per_call"].as_f64().unwrap();
    let poll_s = row("poll")["blocked_s"].as_f64().unwrap();
    assert!((per_call - poll_s * 1e3 / 51.0).abs() < 1e-6, "{polls}");
    // The section is the blocked time charged to syscalls: at most the report's.
    let (charged, all) = (
        b["blocked_s"].as_f64().unwrap(),
        r["blocked_s"].as_f64().unwrap(),
    );
    assert!(
        charged <= all + 1e-6,
        "{charged} s charged of {all} s blocked"
    );
    let shares: f64 = b["syscalls"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["share"].as_f64().unwrap())
        .sum();
    assert!((shares - 1.0).abs() < 1e-9, "shares add up to {shares}");
}
