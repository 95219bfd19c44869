//! Real BPF, issue 15: one accounting path. `top --json`, `latency --json`, `serve`
//! (scraped over HTTP) and `run` trace one workload at once (tests/common/crossview.rs);
//! per process, they agree with one another and with the kernel's own figures
//! (`/proc/PID/task/*/status` and `schedstat`, read by the workload once final).
mod common;

use std::{
    io::{BufReader, Write as _},
    process::{Command, Stdio},
    time::{Duration, Instant},
};

use common::{
    PROCLENS, Proclens, can_trace,
    cgroup::v2_root,
    exporter::{Server, sample_sum, scrape},
    switch_workloads::PROBE_ENV,
    task_clock_left_out_ms,
    workload::Workload,
};
use serde_json::Value;

workload_entry!();

/// Kills what the workload leaves running (its ping-pong process) however the test ends.
struct KillOnDrop(Vec<i32>);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        for &pid in &self.0 {
            // SAFETY: kill with a pid the workload reported.
            unsafe { libc::kill(pid, libc::SIGKILL) };
        }
    }
}

/// One process's figures as a view shows them.
#[derive(Debug, Default, Clone, Copy)]
struct Figures {
    voluntary: u64,
    involuntary: u64,
    oncpu_s: f64,
    blocked_s: f64,
    runq_s: f64,
}

/// `top --json`: the last row's totals, and the times summed over the intervals (the
/// process was born after top started, so its first row holds everything before it).
fn top_figures(lines: &[Value], pid: u64) -> (Figures, f64) {
    let rows: Vec<&Value> = lines
        .iter()
        .filter(|v| v["type"] == "process" && v["pid"] == pid)
        .collect();
    let last = rows
        .last()
        .unwrap_or_else(|| panic!("top never showed {pid}"));
    let sum = |k: &str| rows.iter().map(|v| v[k].as_f64().unwrap()).sum::<f64>() / 1e3;
    (
        Figures {
            voluntary: last["voluntary_total"].as_u64().unwrap(),
            involuntary: last["involuntary_total"].as_u64().unwrap(),
            oncpu_s: sum("oncpu_ms"),
            blocked_s: sum("blocked_ms"),
            runq_s: sum("runq_ms"),
        },
        last["time"].as_f64().unwrap(),
    )
}

fn run_figures(report: &Value, pid: u64) -> Figures {
    let p = report["per_process"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["pid"] == pid)
        .unwrap_or_else(|| panic!("run has no row for {pid}: {report}"));
    Figures {
        voluntary: p["switches"]["voluntary"].as_u64().unwrap(),
        involuntary: p["switches"]["involuntary"].as_u64().unwrap(),
        oncpu_s: p["oncpu_s"].as_f64().unwrap(),
        blocked_s: p["blocked_s"].as_f64().unwrap(),
        runq_s: p["runq_s"].as_f64().unwrap(),
    }
}

fn serve_figures(body: &str, comm: &str) -> Figures {
    let c = ("comm", comm);
    let n = |name: &str, extra: Option<(&str, &str)>| {
        let mut want = vec![c];
        want.extend(extra);
        sample_sum(body, name, &want)
    };
    Figures {
        voluntary: n(
            "proclens_context_switches_total",
            Some(("kind", "voluntary")),
        ) as u64,
        involuntary: n(
            "proclens_context_switches_total",
            Some(("kind", "involuntary")),
        ) as u64,
        oncpu_s: n("proclens_oncpu_seconds_total", None),
        blocked_s: n("proclens_blocked_seconds_total", None),
        runq_s: n("proclens_runqueue_wait_seconds_total", None),
    }
}

/// `latency --json -P`: waits (count) and time waiting, summed over the intervals.
fn latency_figures(lines: &[Value], pid: u64) -> (u64, f64) {
    lines
        .iter()
        .filter(|v| v["pid"] == pid)
        .fold((0, 0.0), |(n, t), v| {
            (
                n + v["count"].as_u64().unwrap(),
                t + v["runq_ms"].as_f64().unwrap() / 1e3,
            )
        })
}

/// `waits --json`: the last row's blocked time (s) and switches, summed over the
/// syscalls the blocks began in (and the blocks outside any), since proclens started; a
/// process that never blocked has no row.
fn waits_figures(lines: &[Value], pid: u64) -> (f64, u64) {
    let Some(last) = lines
        .iter()
        .rfind(|v| v["type"] == "waits" && v["pid"] == pid)
    else {
        return (0.0, 0);
    };
    let split = last["blocked_in"].as_array().unwrap();
    let sum_ms: f64 = split
        .iter()
        .map(|b| b["blocked_ms_total"].as_f64().unwrap())
        .sum();
    let sum_sw: u64 = split
        .iter()
        .map(|b| b["switches_total"].as_u64().unwrap())
        .sum();
    assert!(
        (sum_ms - last["blocked_ms_total"].as_f64().unwrap()).abs() < 1e-6 * sum_ms.max(1.0)
            && sum_sw == last["switches_total"].as_u64().unwrap(),
        "the split adds up to the process's figures: {last}"
    );
    (sum_ms / 1e3, sum_sw)
}

/// Every line proclens has printed so far, as JSON.
fn drain(p: &Proclens, into: &mut Vec<Value>) {
    while let Some(l) = p.try_line(Duration::from_millis(1)) {
        into.push(serde_json::from_str(&l).unwrap_or_else(|e| panic!("not JSON: {l}: {e}")));
    }
}

/// Reads `run`'s (the workload's) stdout until `line`; returns the `oracle` records seen.
fn read_until(out: &mut impl std::io::BufRead, line: &str) -> Vec<Value> {
    let mut oracles = Vec::new();
    let mut l = String::new();
    loop {
        l.clear();
        assert!(out.read_line(&mut l).unwrap() > 0, "the workload died");
        if l.trim() == line {
            return oracles;
        }
        if let Some(j) = l.trim().strip_prefix("oracle ") {
            oracles.push(serde_json::from_str(j).unwrap());
        }
    }
}

/// The same workload traced by four views at once. Tolerances: switch counts exact; time
/// on CPU and waiting within 1% of schedstat (both are the scheduler's clock, read at the
/// same switches: they agree to the nanosecond here; on CPU may also exceed the kernel's
/// by the interrupt and stolen time the kernel leaves out of a task's CPU time,
/// measured); blocked time within 2% of the process's wall time of its wall time less its
/// time on CPU and waiting (for
/// an exited process, until it began to exit, as it reported; for the living one, per
/// thread, until top's last row).
#[test]
fn every_view_agrees_with_the_kernel_and_with_the_others() {
    if !can_trace() {
        return;
    }
    let report_file =
        std::env::temp_dir().join(format!("proclens-agreement-{}.json", std::process::id()));
    let (argv, (k, v)) = Workload::command("crossview");
    let mut run = Command::new(PROCLENS)
        .args(["run", "--json", "-o", report_file.to_str().unwrap(), "--"])
        .args(&argv)
        .env(k, v)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut to_workload = run.stdin.take().unwrap();
    let mut from_workload = BufReader::new(run.stdout.take().unwrap());
    read_until(&mut from_workload, "ready");
    let cg = v2_root().join(format!("proclens-run-{}", run.id()));
    let cg = cg.to_str().unwrap();

    // Every row every interval (`-a`): the intervals in which a process only sleeps too.
    let top = Proclens::spawn(&["top", "--json", "-a", "-i", "0.5", "--cgroup", cg]);
    let lat = Proclens::spawn(&["latency", "--json", "-P", "-i", "0.5", "--cgroup", cg]);
    let wts = Proclens::spawn(&["waits", "--json", "-a", "-i", "0.5", "--cgroup", cg]);
    let serve = Server::with_args(&["-i", "0.5", "--cgroup", cg]);
    let addr = serve.addr;
    let (mut top_lines, mut lat_lines, mut waits_lines) = (Vec::new(), Vec::new(), Vec::new());
    // Every view is attached once it has shown a short-lived probe run in the cgroup.
    let deadline = Instant::now() + Duration::from_mins(1);
    loop {
        let (argv, (k, v)) = Workload::command("probe:200");
        let probe = Command::new(&argv[0])
            .args(&argv[1..])
            .env(k, v)
            .env(PROBE_ENV, cg)
            .env("PROCLENS_WORKLOAD_AUTO", "1")
            .stdout(Stdio::null())
            .status()
            .unwrap();
        assert!(probe.success());
        std::thread::sleep(Duration::from_millis(1100));
        drain(&top, &mut top_lines);
        drain(&lat, &mut lat_lines);
        drain(&wts, &mut waits_lines);
        let seen = |lines: &[Value]| lines.iter().any(|v| v["comm"] == "xv-probe");
        if seen(&top_lines)
            && seen(&lat_lines)
            && seen(&waits_lines)
            && sample_sum(
                &scrape(addr),
                "proclens_context_switches_total",
                &[("comm", "xv-probe")],
            ) > 0.0
        {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the views never showed the probe"
        );
    }

    let left_out_before = task_clock_left_out_ms();
    writeln!(to_workload, "go").unwrap();
    let oracles = read_until(&mut from_workload, "done");
    let _kill = KillOnDrop(
        oracles
            .iter()
            .filter(|o| o["born_unix"].is_array())
            .map(|o| o["pid"].as_i64().unwrap() as i32)
            .collect(),
    );
    assert_eq!(oracles.len(), 5, "{oracles:?}");
    // Four intervals more: every view has reported the exits and the quiet ping-pong.
    std::thread::sleep(Duration::from_secs(2));
    drain(&top, &mut top_lines);
    drain(&lat, &mut lat_lines);
    drain(&wts, &mut waits_lines);
    let body = scrape(addr);
    writeln!(to_workload, "go").unwrap();
    let status = common::wait_within(&mut run, common::COMMAND_LIMIT, "proclens run");
    assert!(status.success(), "{status}");
    let report: Value =
        serde_json::from_str(&std::fs::read_to_string(&report_file).unwrap()).unwrap();
    let _ = std::fs::remove_file(&report_file);
    let left_out_ms = match task_clock_left_out_ms() - left_out_before {
        0.0 => 0.0,
        d => d + 10.0,
    };
    drop(serve);

    for o in &oracles {
        let pid = o["pid"].as_u64().unwrap();
        let comm = o["comm"].as_str().unwrap();
        let k = |f: &str| o[f].as_u64().unwrap();
        let (kvol, kinvol, koncpu, krunq) = (
            k("voluntary"),
            k("involuntary"),
            k("oncpu_ns") as f64 / 1e9,
            k("runq_ns") as f64 / 1e9,
        );
        let (top_f, top_time) = top_figures(&top_lines, pid);
        // `waits`: every voluntary switch began a block, but a thread's last (at its exit),
        // which the kernel counts in nvcsw too; the blocks of an exited process add up to
        // top's blocked time (both final), in whichever syscalls they began.
        let (waits_blocked, waits_switches) = waits_figures(&waits_lines, pid);
        let exited = o.get("wall_s").is_some();
        assert_eq!(
            waits_switches,
            kvol - u64::from(exited),
            "{comm}: waits' switches (kernel voluntary {kvol})"
        );
        if exited {
            assert!(
                (waits_blocked - top_f.blocked_s).abs() <= 1e-3 + top_f.blocked_s * 1e-3,
                "{comm}: waits blocked {waits_blocked} s, top {} s",
                top_f.blocked_s
            );
        }
        let (waits, lat_runq) = latency_figures(&lat_lines, pid);
        let views = [
            ("top", top_f),
            ("run", run_figures(&report, pid)),
            ("serve", serve_figures(&body, comm)),
        ];
        eprintln!(
            "{comm} {pid}: kernel vol {kvol} invol {kinvol} oncpu {koncpu:.6} runq {krunq:.6}; {views:?}; latency {waits} waits {lat_runq:.6} s"
        );
        // The kernel's own count of runs is each run's switch out: as many waits.
        assert_eq!(kvol + kinvol, k("runs"), "{comm}: {o}");
        assert_eq!(waits, kvol + kinvol, "{comm}: latency's waits");
        let near = |ours: f64, kernel: f64| (ours - kernel).abs() <= kernel * 0.01;
        assert!(
            near(lat_runq, krunq),
            "{comm}: latency waited {lat_runq} s, kernel {krunq} s"
        );
        // Blocked: wall time less on CPU and waiting (per thread, for the living one).
        let (wall, kblocked) = if let Some(b) = o.get("blocked_s") {
            (o["wall_s"].as_f64().unwrap(), b.as_f64().unwrap())
        } else {
            let wall: f64 = o["born_unix"]
                .as_array()
                .unwrap()
                .iter()
                .map(|b| top_time - b.as_f64().unwrap())
                .sum();
            (wall, wall - koncpu - krunq)
        };
        for (view, f) in views {
            assert_eq!(
                (f.voluntary, f.involuntary),
                (kvol, kinvol),
                "{comm}: {view}'s switches"
            );
            assert!(
                near(f.oncpu_s, koncpu)
                    || (f.oncpu_s > koncpu
                        && f.oncpu_s - koncpu <= koncpu * 0.01 + left_out_ms / 1e3),
                "{comm}: {view} on CPU {} s, kernel {koncpu} s ({left_out_ms} ms irq/steal)",
                f.oncpu_s
            );
            assert!(
                near(f.runq_s, krunq),
                "{comm}: {view} waited {} s, kernel {krunq} s",
                f.runq_s
            );
            // A living process's blocked time grows: top's is compared at its row's time.
            // The oracle mixes clocks: the wall time is CLOCK_MONOTONIC, schedstat the run
            // queue's clock. Where they disagree, wall less on CPU and waiting goes below
            // 0, which no blocked time can be (in the 5.10 guest under emulation, -25 ms
            // for a CPU hog of 0.8 s): by that much the oracle is known to be off.
            let skew = (-kblocked).max(0.0);
            if o.get("wall_s").is_some() || view == "top" {
                assert!(
                    (f.blocked_s - kblocked.max(0.0)).abs() <= wall * 0.02 + skew,
                    "{comm}: {view} blocked {} s, wall {wall} s less on CPU and waiting {kblocked} s",
                    f.blocked_s
                );
            }
        }
    }
}
