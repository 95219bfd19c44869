//! Real BPF: switch classification (same-process / cross-process / idle-kernel), off-CPU
//! time and run-queue latency, through `proclens top` and `proclens run`.
mod common;

use std::{process::Command, time::Duration};

use common::{
    Bounded as _, COMMAND_LIMIT, PROCLENS, Proclens, can_trace,
    cgroup::TestCgroup,
    now_unix, settled_counters, task_clock_left_out_ms,
    workload::{SCHEDSTAT_ENV, Workload},
};
use serde_json::Value;

workload_entry!();

fn row_after(p: &Proclens, pid: u32, after: f64) -> Value {
    p.json_until(Duration::from_secs(10), |v| {
        v["type"] == "process" && v["pid"] == pid && v["time"].as_f64().unwrap() > after
    })
}

fn field(v: &Value, k: &str) -> u64 {
    v[k].as_u64()
        .unwrap_or_else(|| panic!("{k} missing in {v}"))
}

/// `proclens run --json -- <workload>`: the report and proclens's exit status.
fn run_workload(kind: &str) -> (Value, std::process::ExitStatus) {
    run_workload_with(kind, &[])
}

fn run_workload_with(kind: &str, extra_env: &[(&str, &str)]) -> (Value, std::process::ExitStatus) {
    let (argv, env) = Workload::auto_command(kind);
    let out_file = std::env::temp_dir().join(format!(
        "proclens-run-{}-{}.json",
        std::process::id(),
        kind.replace(':', "-")
    ));
    let status = Command::new(PROCLENS)
        .args(["run", "--json", "-o", out_file.to_str().unwrap(), "--"])
        .args(&argv)
        .envs(env)
        .envs(extra_env.iter().copied())
        .stdout(std::process::Stdio::null())
        .status_within(COMMAND_LIMIT);
    let report: Value = serde_json::from_str(&std::fs::read_to_string(&out_file).unwrap()).unwrap();
    let _ = std::fs::remove_file(&out_file);
    (report, status)
}

/// Two threads of one process pass a byte back and forth N times on one CPU: each pass is a
/// switch from one thread to the other, so about 2N switches in come from the same process
/// and almost none from another. Tolerance: other tasks (kernel threads, the test harness)
/// may run on that CPU in between and turn a few switches into idle/kernel or
/// cross-process ones; 10% covers a busy machine.
#[test]
fn threads_of_one_process_switch_without_changing_address_space() {
    if !can_trace() {
        return;
    }
    const N: u64 = 5000;
    let mut w = Workload::spawn(&format!("thread-pingpong:{N}"));
    let pid = w.pid();
    let p = Proclens::spawn(&["top", "--json", "--interval", "0.2", "-p", &pid.to_string()]);
    p.json_until(Duration::from_secs(20), |v| v["type"] == "system");
    settled_counters(pid);
    let before = row_after(&p, pid, now_unix());
    w.go();
    settled_counters(pid);
    let after = row_after(&p, pid, now_unix());
    let d = |k: &str| field(&after, k) - field(&before, k);
    let (same, cross, idle) = (
        d("same_process_in_total"),
        d("cross_process_in_total"),
        d("idle_or_kernel_in_total"),
    );
    eprintln!("same={same} cross={cross} idle/kernel={idle}");
    assert!(
        same >= 2 * N * 9 / 10,
        "same-process switches {same} < 90% of {}",
        2 * N
    );
    assert!(
        cross <= 2 * N / 10,
        "cross-process switches {cross} > 10% of {}",
        2 * N
    );
}

/// Two processes ping-pong N times pinned to one CPU: about 2N cross-process switches.
#[test]
fn processes_switch_address_space() {
    if !can_trace() {
        return;
    }
    const N: u64 = 5000;
    let (r, status) = run_workload(&format!("process-pingpong:{N}"));
    assert!(status.success(), "{status}: {r}");
    let cross = r["switches"]["cross_process"].as_u64().unwrap();
    let same = r["switches"]["same_process"].as_u64().unwrap();
    eprintln!("cross={cross} same={same} report={r}");
    assert!(
        cross >= 2 * N * 9 / 10,
        "cross-process switches {cross} < 90% of {}",
        2 * N
    );
    assert!(
        same <= 2 * N / 10,
        "same-process switches {same} > 10% of {}",
        2 * N
    );
    assert!(
        r["processes"].as_u64().unwrap() >= 2,
        "parent and forked child: {r}"
    );
}

/// `proclens run -- sh -c 'sleep 0.2'`: the sleep shows up as ~200 ms of voluntary
/// off-CPU (blocked) time. Tolerance: timer slack and scheduling add a few ms; 190–300 ms.
#[test]
fn run_reports_a_sleep_as_blocked_time() {
    if !can_trace() {
        return;
    }
    let out_file = std::env::temp_dir().join(format!("proclens-sleep-{}.json", std::process::id()));
    let status = Command::new(PROCLENS)
        .args([
            "run",
            "--json",
            "-o",
            out_file.to_str().unwrap(),
            "--",
            "sh",
            "-c",
            "sleep 0.2",
        ])
        .status_within(COMMAND_LIMIT);
    assert!(status.success());
    let r: Value = serde_json::from_str(&std::fs::read_to_string(&out_file).unwrap()).unwrap();
    let _ = std::fs::remove_file(&out_file);
    let sleep = r["per_process"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["comm"] == "sleep")
        .unwrap_or_else(|| panic!("no sleep process in {r}"));
    let blocked = sleep["blocked_s"].as_f64().unwrap();
    assert!(
        (0.19..0.3).contains(&blocked),
        "sleep blocked for {blocked} s: {r}"
    );
    assert!(sleep["switches"]["voluntary"].as_u64().unwrap() >= 1);
    assert!(r["wall_s"].as_f64().unwrap() >= 0.2);
    assert_eq!(r["exit"]["code"], 0);
}

/// Two CPU-bound processes pinned to one CPU for 300 ms each: the scheduler must preempt
/// them (involuntary switches) and each waits on the run queue while the other runs.
#[test]
fn competing_cpu_hogs_are_preempted_and_wait_for_the_cpu() {
    if !can_trace() {
        return;
    }
    let (r, status) = run_workload("cpu-contend:300");
    assert!(status.success(), "{status}: {r}");
    let invol = r["switches"]["involuntary"].as_u64().unwrap();
    let runq = r["runq_s"].as_f64().unwrap();
    eprintln!("involuntary={invol} runq_s={runq}");
    assert!(invol > 0, "no involuntary switch: {r}");
    // Each hog waits while the other runs: with fair sharing, about half of the 300 ms.
    assert!(runq > 0.05, "run-queue wait {runq} s: {r}");
    assert!(r["runq_latency"]["p99_us"].as_u64().unwrap() > 0);
    assert!(r["runq_latency"]["max_us"].as_u64().unwrap() > 0);
}

/// `run`'s on-CPU and run-queue times are the scheduler's own: per process, they match
/// what the kernel keeps per task (`/proc/PID/schedstat`: time on CPU, time waiting on a
/// run queue) for two CPU hogs that compete for one CPU (each spins for 300 ms of wall
/// time: it runs about half of it and waits the rest), read when each has exited (a
/// zombie's figures are final: nothing of it runs after the read).
///
/// Tolerances, per process: for the wait, 3% + 1 ms: both sides read the same clock (the
/// run queue's) at the same points; what may differ is the few µs between fork and the
/// first switch. For time on CPU, 3% + 3 ms, and proclens may exceed the kernel by the
/// interrupt and stolen time /proc/stat shows meanwhile: the kernel charges time on CPU on
/// its task clock, which leaves out time stolen by a hypervisor and, with IRQ time
/// accounting, interrupt time.
#[test]
fn run_times_match_the_kernels_schedstat() {
    if can_trace() {
        times_match_schedstat(&[], false);
    }
}

/// The same on the path of kernels whose scheduler offers proclens no clock or run-queue
/// time (`bpf_ktime_get_ns`, wakeup programs): the wait is then timed from wakeups, by
/// another clock than the kernel's. Under `run`'s cgroup filter a wakeup cannot tell
/// whether a thread proclens has not seen yet is the command's, so a process's first wait
/// (before its first switch out) is not counted: its wait may also fall short by one
/// longest wait (~8 ms in the slow QEMU guests, µs on a host).
#[test]
fn run_times_match_the_kernels_schedstat_with_helper_timing() {
    if can_trace() {
        times_match_schedstat(&[("PROCLENS_SWITCH_TIMING", "helpers")], true);
    }
}

/// The same with every thread's accounting in the `THREADS` hash, where threads go whose
/// direct-mapped slot another thread holds.
#[test]
fn run_times_match_the_kernels_schedstat_with_every_thread_in_the_hash() {
    if can_trace() {
        times_match_schedstat(&[("PROCLENS_THREAD_SLOTS", "0")], false);
    }
}

/// The same with a single slot in the direct-mapped table: one thread holds it at a time
/// (claimed at its first switch, freed at its last, then claimed by the next), the others
/// are in the hash, so both tables and the moves between them are exercised at once.
#[test]
fn run_times_match_the_kernels_schedstat_with_one_thread_slot() {
    if can_trace() {
        times_match_schedstat(&[("PROCLENS_THREAD_SLOTS", "1")], false);
    }
}

fn times_match_schedstat(env: &[(&str, &str)], first_wait_unseen: bool) {
    let file = std::env::temp_dir().join(format!("proclens-schedstat-{}", std::process::id()));
    let _ = std::fs::remove_file(&file);
    let mut env = env.to_vec();
    env.push((SCHEDSTAT_ENV, file.to_str().unwrap()));
    let left_out_before = task_clock_left_out_ms();
    let (r, status) = run_workload_with("cpu-contend-children:300", &env);
    // What the kernel's task clock may have left out meanwhile (system-wide, an upper
    // bound), plus one tick of /proc/stat's granularity when there was any.
    let left_out_ms = match task_clock_left_out_ms() - left_out_before {
        0.0 => 0.0,
        d => d + 10.0,
    };
    assert!(status.success(), "{status}: {r}");
    let stats = std::fs::read_to_string(&file).unwrap();
    let _ = std::fs::remove_file(&file);
    let near = |ours_s: f64, kernel_ns: u64, slack_ms: f64| {
        let kernel_s = kernel_ns as f64 / 1e9;
        (ours_s - kernel_s).abs() <= kernel_s * 0.03 + slack_ms / 1e3
    };
    let mut children = 0;
    for line in stats.lines() {
        let f: Vec<u64> = line
            .split_whitespace()
            .map(|v| v.parse().unwrap())
            .collect();
        let (pid, oncpu_ns, runq_ns) = (f[0], f[1], f[2]);
        let row = r["per_process"]
            .as_array()
            .unwrap()
            .iter()
            .find(|p| p["pid"].as_u64() == Some(pid))
            .unwrap_or_else(|| panic!("no row for child {pid}: {r}"));
        let (oncpu, runq) = (
            row["oncpu_s"].as_f64().unwrap(),
            row["runq_s"].as_f64().unwrap(),
        );
        eprintln!(
            "child {pid}: proclens on CPU {oncpu:.6} s, waiting {runq:.6} s; schedstat {:.6} s, {:.6} s",
            oncpu_ns as f64 / 1e9,
            runq_ns as f64 / 1e9
        );
        assert!(oncpu_ns > 100_000_000, "it spun: {line}");
        assert!(runq_ns > 50_000_000, "it waited for the other: {line}");
        assert!(
            near(oncpu, oncpu_ns, 3.0)
                || (oncpu > oncpu_ns as f64 / 1e9 && near(oncpu, oncpu_ns, 3.0 + left_out_ms)),
            "on CPU {oncpu} s vs schedstat {line} ({left_out_ms} ms of irq/steal meanwhile): {row}"
        );
        let unseen_ms = if first_wait_unseen {
            row["runq_latency"]["max_us"].as_f64().unwrap() / 1e3
        } else {
            0.0
        };
        assert!(
            near(runq, runq_ns, 1.0)
                || (runq < runq_ns as f64 / 1e9 && near(runq, runq_ns, 1.0 + unseen_ms)),
            "run-queue wait {runq} s vs schedstat {line}: {row}"
        );
        children += 1;
    }
    assert_eq!(children, 2, "{stats}");
}

/// `run` returns the command's exit code (or 128+signal).
#[test]
fn run_exits_with_the_commands_code() {
    if !can_trace() {
        return;
    }
    let code = |script: &str| {
        Command::new(PROCLENS)
            .args(["run", "-o", "/dev/null", "--", "sh", "-c", script])
            .status_within(COMMAND_LIMIT)
            .code()
    };
    assert_eq!(code("exit 7"), Some(7));
    assert_eq!(code("kill -TERM $$"), Some(128 + libc::SIGTERM));
    let st = Command::new(PROCLENS)
        .args(["run", "--", "/nonexistent/cmd"])
        .status_within(COMMAND_LIMIT);
    assert_eq!(st.code(), Some(127));
}

/// Whether a row is one of the names the looping shell's tasks pass through: the shell, its
/// forked child, and `sleep`; busybox's shell (the kernel-matrix guests) runs applets by
/// exec'ing /proc/self/exe, so a child is briefly named `exe`.
fn in_the_shells_names(row: &Value) -> bool {
    ["sh", "sleep", "exe"].iter().any(|n| row["comm"] == *n)
}

/// `--cgroup` keeps only tasks of that cgroup subtree.
#[test]
fn cgroup_filter_selects_only_that_subtree() {
    if !can_trace() {
        return;
    }
    let cg = TestCgroup::new("switch-kinds");
    let dir = cg.path();
    // A shell in the cgroup that keeps switching (short sleeps), and one outside it.
    let inside = Command::new("sh")
        .args([
            "-c",
            &format!("echo $$ > {dir}/cgroup.procs; while :; do sleep 0.05; done"),
        ])
        .spawn()
        .unwrap();
    let mut outside = Command::new("sh")
        .args(["-c", "while :; do sleep 0.05; done"])
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_millis(100));
    let out = Command::new(PROCLENS)
        .args(["top", "--json", "--cgroup", dir, "-i", "0.5", "-c", "2"])
        .output_within(COMMAND_LIMIT);
    // The syscall and copy programs apply the same filter in the kernel.
    let copies = Command::new(PROCLENS)
        .args(["copies", "--json", "--cgroup", dir, "-i", "0.5", "-c", "2"])
        .output_within(COMMAND_LIMIT);
    let mut inside = inside;
    let _ = inside.kill();
    let _ = outside.kill();
    let _ = inside.wait();
    let _ = outside.wait();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let rows: Vec<Value> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str::<Value>(l).unwrap())
        .filter(|v| v["type"] == "process")
        .collect();
    assert!(
        rows.iter().any(|v| v["pid"] == inside.id()),
        "the shell inside is missing: {rows:?}"
    );
    assert!(
        !rows.iter().any(|v| v["pid"] == outside.id()),
        "the shell outside leaked in"
    );
    assert!(rows.iter().all(in_the_shells_names), "{rows:?}");
    assert!(copies.status.success());
    let rows: Vec<Value> = String::from_utf8_lossy(&copies.stdout)
        .lines()
        .map(|l| serde_json::from_str::<Value>(l).unwrap())
        .filter(|v| v["type"] == "copies")
        .collect();
    assert!(
        rows.iter().any(|v| v["pid"] == inside.id()),
        "copies: the shell inside is missing: {rows:?}"
    );
    assert!(
        rows.iter()
            .all(|v| v["pid"] != outside.id() && in_the_shells_names(v)),
        "copies: a task outside the cgroup leaked in: {rows:?}"
    );
}

/// `proclens latency -P -p PID --json` shows the run-queue waits of a process that
/// competes for one CPU (its forked twin is another process and is filtered out).
#[test]
fn latency_histogram_of_a_competing_process() {
    if !can_trace() {
        return;
    }
    let mut w = Workload::spawn("cpu-contend:400");
    let pid = w.pid();
    let p = Proclens::spawn(&[
        "latency",
        "--json",
        "-P",
        "-p",
        &pid.to_string(),
        "--interval",
        "0.2",
    ]);
    // The first report (possibly empty) means the programs are attached.
    let _ = p.line(Duration::from_secs(20));
    w.go();
    let mut samples = 0;
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    while samples == 0 && std::time::Instant::now() < deadline {
        let line = p.line(Duration::from_secs(5));
        let v: Value = serde_json::from_str(&line).unwrap();
        assert_eq!(v["type"], "latency");
        assert_eq!(v["pid"], pid, "only the selected process: {v}");
        samples += v["count"].as_u64().unwrap();
        let bucket_sum: u64 = v["buckets"]
            .as_array()
            .unwrap()
            .iter()
            .map(|b| b["count"].as_u64().unwrap())
            .sum();
        assert_eq!(bucket_sum, v["count"].as_u64().unwrap());
    }
    assert!(
        samples > 0,
        "no run-queue wait recorded for a CPU hog sharing its CPU"
    );
}
