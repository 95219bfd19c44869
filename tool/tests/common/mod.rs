//! Helpers for the real-BPF integration tests: privilege gate, workloads run in a child
//! process (this test binary re-executed), the kernel's own counters, and proclens itself.
#![allow(
    dead_code,
    reason = "each test binary compiles every helper and uses only its own"
)]

pub mod blocking_workloads;
pub mod bpf_maps;
pub mod bpftrace;
pub mod cgroup;
pub mod copy_window;
pub mod copy_workloads;
pub mod crossview;
pub mod exporter;
pub mod figure_workloads;
pub mod fork_workloads;
pub mod irq;
pub mod irq_workloads;
pub mod lifecycle_workloads;
pub mod load_workloads;
pub mod nginx;
pub mod podman;
pub mod switch_workloads;
pub mod waits_workloads;
pub mod workload;
pub mod zombies;

use std::{
    collections::BTreeSet,
    fs,
    io::{BufRead as _, BufReader},
    process::{Child, ChildStdout, Command, Stdio},
    sync::mpsc,
    thread,
    time::Duration,
};

pub const PROCLENS: &str = env!("CARGO_BIN_EXE_proclens");

/// True when this run may load BPF. Under CI (CI=true) a missing privilege is a failure,
/// elsewhere the test is skipped with a printed reason.
/// Seconds since the epoch, the clock of the JSON reports' `time`.
pub fn now_unix() -> f64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs_f64()
}

pub fn can_trace() -> bool {
    // SAFETY: geteuid has no preconditions.
    let root = unsafe { libc::geteuid() } == 0;
    if root {
        return true;
    }
    assert!(
        !std::env::var("CI").is_ok_and(|v| v == "true" || v == "1"),
        "CI=true but the tests are not running as root: BPF integration tests cannot run"
    );
    eprintln!("skipped: not root, so BPF cannot be loaded (run `sudo cargo xtask test`)");
    false
}

/// Interrupt and stolen time of all CPUs so far in ms (/proc/stat's `irq`, `softirq` and
/// `steal`, in `USER_HZ` ticks of 10 ms): what the kernel's task clock leaves out of a
/// task's time on CPU (steal with paravirtual steal accounting, IRQ time with IRQ time
/// accounting), and proclens's run-queue clock does not.
/// The value of a one-number line of /proc/stat (`ctxt`, `btime`, `processes`...).
pub fn proc_stat(key: &str) -> u64 {
    fs::read_to_string("/proc/stat")
        .unwrap()
        .lines()
        .find_map(|l| l.strip_prefix(key)?.strip_prefix(' '))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or_else(|| panic!("no {key} in /proc/stat"))
}

pub fn task_clock_left_out_ms() -> f64 {
    let stat = fs::read_to_string("/proc/stat").unwrap();
    let cpu: Vec<u64> = stat
        .lines()
        .next()
        .unwrap()
        .split_whitespace()
        .skip(1)
        .map(|v| v.parse().unwrap())
        .collect();
    // user nice system idle iowait irq softirq steal ...
    (cpu[5] + cpu[6] + cpu[7]) as f64 * 10.0
}

/// Sum of the kernel's own switch counters over every thread of `pid`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ProcCounters {
    pub voluntary: u64,
    pub involuntary: u64,
}

pub fn proc_counters(pid: u32) -> ProcCounters {
    let mut c = ProcCounters::default();
    for entry in fs::read_dir(format!("/proc/{pid}/task")).expect("process exists") {
        let path = entry.unwrap().path().join("status");
        let Ok(status) = fs::read_to_string(&path) else {
            continue;
        };
        for line in status.lines() {
            if let Some(v) = line.strip_prefix("voluntary_ctxt_switches:") {
                c.voluntary += v.trim().parse::<u64>().unwrap();
            } else if let Some(v) = line.strip_prefix("nonvoluntary_ctxt_switches:") {
                c.involuntary += v.trim().parse::<u64>().unwrap();
            }
        }
    }
    c
}

/// The kernel's own switch counters of thread `tid` of process `pid`.
pub fn task_counters(pid: u32, tid: u32) -> ProcCounters {
    let status =
        fs::read_to_string(format!("/proc/{pid}/task/{tid}/status")).expect("thread exists");
    let field = |k: &str| -> u64 {
        status
            .lines()
            .find_map(|l| l.strip_prefix(k))
            .unwrap()
            .trim()
            .parse()
            .unwrap()
    };
    ProcCounters {
        voluntary: field("voluntary_ctxt_switches:"),
        involuntary: field("nonvoluntary_ctxt_switches:"),
    }
}

/// Waits until every thread of `pid` is blocked and its counters stop moving, then
/// returns them: the start or end of a quiet window.
pub fn settled_counters(pid: u32) -> ProcCounters {
    let mut last = proc_counters(pid);
    for _ in 0..100 {
        thread::sleep(Duration::from_millis(100));
        let now = proc_counters(pid);
        if now == last && all_sleeping(pid) {
            return now;
        }
        last = now;
    }
    panic!("process {pid} never became quiet");
}

fn all_sleeping(pid: u32) -> bool {
    fs::read_dir(format!("/proc/{pid}/task"))
        .unwrap()
        .flatten()
        .all(|t| {
            fs::read_to_string(t.path().join("stat"))
                .ok()
                .and_then(|s| {
                    s.rsplit_once(')')
                        .map(|(_, rest)| rest.trim_start().starts_with('S'))
                })
                .unwrap_or(true)
        })
}

/// The start of the note proclens prints on kernels that check privileges on every map
/// read through a held fd (5.10); it names the capabilities it keeps (`CAP_BPF`).
pub const KEEPS_CAPS_NOTE: &str =
    "proclens: note: this kernel checks privileges on every map read; keeping ";

/// The capabilities (as a `CapEff` mask) proclens's note in `stderr` says it keeps; 0
/// without the note.
pub fn kept_caps(stderr: &str) -> u64 {
    let Some(list) = stderr.lines().find_map(|l| l.strip_prefix(KEEPS_CAPS_NOTE)) else {
        return 0;
    };
    list.split(", ")
        .map(|c| match c.trim() {
            "CAP_BPF" => 1 << 39,
            "CAP_PERFMON" => 1 << 38,
            "CAP_SYS_ADMIN" => 1 << 21,
            "CAP_DAC_OVERRIDE" => 1 << 1,
            other => panic!("unexpected capability {other:?} in the note"),
        })
        .fold(0, |a, b| a | b)
}

/// Whether the running kernel is at least `major.minor`.
pub fn kernel_at_least(major: u32, minor: u32) -> bool {
    let rel = fs::read_to_string("/proc/sys/kernel/osrelease").unwrap();
    let mut nums = rel
        .trim()
        .split(|c: char| !c.is_ascii_digit())
        .map(|n| n.parse::<u32>().unwrap_or(0));
    (nums.next().unwrap_or(0), nums.next().unwrap_or(0)) >= (major, minor)
}

/// Whether proclens said it keeps the map-reading capabilities; asserts that it says so
/// only on kernels older than 6.1 (6.1 and later let a held fd be read without them).
pub fn keeps_caps(stderr: &str) -> bool {
    let said = stderr.lines().any(|l| l.starts_with(KEEPS_CAPS_NOTE));
    assert!(
        !(said && kernel_at_least(6, 1)),
        "proclens kept capabilities on a kernel that does not need them"
    );
    said
}

/// Runs proclens to completion; returns (exit code, stderr).
pub fn run_proclens(args: &[&str]) -> (i32, String) {
    let out = Command::new(PROCLENS)
        .args(args)
        .stdin(Stdio::null())
        .output_within(COMMAND_LIMIT);
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// An error reported the documented way: one line, no panic.
pub fn assert_one_line(stderr: &str) {
    assert_eq!(
        stderr.trim_end().lines().count(),
        1,
        "expected one line, got: {stderr:?}"
    );
    assert!(
        !stderr.contains("panicked") && !stderr.contains("backtrace"),
        "{stderr}"
    );
}

/// How long one command a test runs to completion may take before the test fails: a hung
/// proclens (or workload) then fails its test, naming the command, instead of stalling the
/// whole suite (and a kernel-matrix guest) until an outer time limit.
pub const COMMAND_LIMIT: Duration = Duration::from_mins(2);

/// `Command::output` and `Command::status` with a time limit: past it the command is
/// killed and the test panics, naming it.
pub trait Bounded {
    fn output_within(&mut self, limit: Duration) -> std::process::Output;
    fn status_within(&mut self, limit: Duration) -> std::process::ExitStatus;
}

impl Bounded for Command {
    fn output_within(&mut self, limit: Duration) -> std::process::Output {
        let child = self
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("starting {self:?}: {e}"));
        let pid = child.id() as i32;
        let (tx, rx) = mpsc::channel();
        thread::spawn(move || {
            let _ = tx.send(child.wait_with_output());
        });
        if let Ok(out) = rx.recv_timeout(limit) {
            out.unwrap_or_else(|e| panic!("waiting for {self:?}: {e}"))
        } else {
            // SAFETY: kill on our own child's pid, which stays unreaped until the
            // waiting thread collects it.
            unsafe { libc::kill(pid, libc::SIGKILL) };
            panic!("{self:?} did not finish within {limit:?}");
        }
    }

    fn status_within(&mut self, limit: Duration) -> std::process::ExitStatus {
        let mut child = self
            .spawn()
            .unwrap_or_else(|e| panic!("starting {self:?}: {e}"));
        wait_within(&mut child, limit, &format!("{self:?}"))
    }
}

/// The child's exit status; past `limit` it is killed and the test panics, naming `what`.
pub fn wait_within(child: &mut Child, limit: Duration, what: &str) -> std::process::ExitStatus {
    let deadline = std::time::Instant::now() + limit;
    loop {
        if let Some(st) = child.try_wait().unwrap() {
            return st;
        }
        if std::time::Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("{what} did not finish within {limit:?}");
        }
        thread::sleep(Duration::from_millis(20));
    }
}

/// A running `proclens` whose stdout lines arrive on a channel; its stderr is passed on
/// and kept.
pub struct Proclens {
    pub child: Child,
    lines: mpsc::Receiver<String>,
    stderr: std::sync::Arc<std::sync::Mutex<String>>,
}

impl Proclens {
    pub fn spawn(args: &[&str]) -> Self {
        Self::spawn_with_env(args, &[])
    }

    /// [`Proclens::spawn`] with more environment.
    pub fn spawn_with_env(args: &[&str], env: &[(&str, &str)]) -> Self {
        let mut child = Command::new(PROCLENS)
            .args(args)
            .envs(env.iter().copied())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("starting proclens");
        let stderr_pipe = child.stderr.take().unwrap();
        let stderr = std::sync::Arc::new(std::sync::Mutex::new(String::new()));
        let kept = stderr.clone();
        thread::spawn(move || {
            for line in BufReader::new(stderr_pipe).lines() {
                let Ok(line) = line else { break };
                eprintln!("{line}");
                let mut k = kept.lock().unwrap();
                k.push_str(&line);
                k.push('\n');
            }
        });
        let stdout: ChildStdout = child.stdout.take().unwrap();
        let (tx, rx) = mpsc::channel();
        thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        Self {
            child,
            lines: rx,
            stderr,
        }
    }

    /// What proclens has written to stderr so far.
    pub fn stderr(&self) -> String {
        self.stderr.lock().unwrap().clone()
    }

    /// proclens's pid.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// The next stdout line, or `None` after `timeout`.
    pub fn try_line(&self, timeout: Duration) -> Option<String> {
        self.lines.recv_timeout(timeout).ok()
    }

    /// The next stdout line, or panics after `timeout`.
    pub fn line(&self, timeout: Duration) -> String {
        self.lines.recv_timeout(timeout).unwrap_or_else(|e| {
            // Its stderr says why (a closed stdout: it has ended).
            thread::sleep(Duration::from_millis(200));
            panic!(
                "no output from proclens within {timeout:?}: {e}; its stderr: {}",
                self.stderr()
            )
        })
    }

    /// The next JSON line for which `pred` holds.
    pub fn json_until(
        &self,
        timeout: Duration,
        pred: impl Fn(&serde_json::Value) -> bool,
    ) -> serde_json::Value {
        let deadline = std::time::Instant::now() + timeout;
        loop {
            let left = deadline.saturating_duration_since(std::time::Instant::now());
            let line = self.line(left);
            let v: serde_json::Value =
                serde_json::from_str(&line).unwrap_or_else(|e| panic!("not JSON: {line}: {e}"));
            if pred(&v) {
                return v;
            }
        }
    }

    pub fn signal(&self, sig: i32) {
        // SAFETY: kill on our own child's pid.
        unsafe { libc::kill(self.child.id() as i32, sig) };
    }

    pub fn wait(mut self, timeout: Duration) -> std::process::ExitStatus {
        wait_within(&mut self.child, timeout, "proclens")
    }
}

impl Drop for Proclens {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Names of the BPF programs loaded now (bpftool truncates names to 15 characters).
pub fn bpf_program_ids_named(names: &[&str]) -> BTreeSet<u64> {
    let out = Command::new("bpftool")
        .args(["-j", "prog", "list"])
        .output()
        .expect("bpftool is installed (cargo xtask setup)");
    assert!(out.status.success(), "bpftool prog list failed");
    let progs: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    progs
        .as_array()
        .unwrap()
        .iter()
        .filter(|p| {
            p["name"].as_str().is_some_and(|n| {
                names
                    .iter()
                    .any(|want| want.starts_with(n) && !n.is_empty())
            })
        })
        .map(|p| p["id"].as_u64().unwrap())
        .collect()
}

/// proclens's program names.
pub const PROGRAM_NAMES: &[&str] = &[
    "sched_switch",
    "sched_wakeup",
    "sched_wakeup_new",
    "sched_process_fork",
    "sched_process_exec",
    "sched_process_exit",
    "sched_process_wait",
    "sched_process_free",
];

/// BPF object ids (programs, links, maps) a process holds, from its fdinfo.
pub fn bpf_ids_held_by(pid: u32) -> BTreeSet<(String, u64)> {
    let mut ids = BTreeSet::new();
    let Ok(dir) = fs::read_dir(format!("/proc/{pid}/fdinfo")) else {
        return ids;
    };
    for fd in dir.flatten() {
        let Ok(info) = fs::read_to_string(fd.path()) else {
            continue;
        };
        for line in info.lines() {
            for key in ["prog_id", "link_id", "map_id"] {
                if let Some(v) = line.strip_prefix(key).and_then(|r| r.strip_prefix(':')) {
                    ids.insert((key.to_string(), v.trim().parse().unwrap()));
                }
            }
        }
    }
    ids
}

/// Whether a BPF object with this id still exists in the kernel.
pub fn bpf_object_exists(kind: &str, id: u64) -> bool {
    let sub = match kind {
        "prog_id" => "prog",
        "link_id" => "link",
        _ => "map",
    };
    Command::new("bpftool")
        .args([sub, "show", "id", &id.to_string()])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .unwrap()
        .success()
}

pub fn assert_all_gone(ids: &BTreeSet<(String, u64)>, how: &str) {
    // The kernel frees objects after the last reference goes, an RCU grace period later.
    for _ in 0..100 {
        if ids.iter().all(|(k, id)| !bpf_object_exists(k, *id)) {
            return;
        }
        thread::sleep(Duration::from_millis(50));
    }
    let left: Vec<_> = ids
        .iter()
        .filter(|(k, id)| bpf_object_exists(k, *id))
        .collect();
    panic!("after {how}, BPF objects remain: {left:?}");
}
