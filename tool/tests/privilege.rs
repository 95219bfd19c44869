//! Privileges: proclens refuses to start without `CAP_BPF` and `CAP_PERFMON` (exit 3),
//! starts with exactly those as an unprivileged user (the DaemonSet's and the unit's
//! least-privilege start, on every kernel of the matrix), and once attached holds no
//! capability but the one its map reads need on kernels that check every `bpf()` call.
mod common;

use std::{
    fs,
    os::unix::process::CommandExt as _,
    process::{Command, Stdio},
    thread,
    time::{Duration, Instant},
};

use common::{
    Bounded as _, COMMAND_LIMIT, PROCLENS, Proclens, assert_one_line, can_trace,
    exporter::{Server, http, sample_sum},
    keeps_caps, kept_caps,
};

workload_entry!();

#[test]
fn unprivileged_user_exits_3_naming_what_is_missing() {
    if !can_trace() {
        return;
    }
    let out = Command::new("setpriv")
        .args([
            "--reuid=65534",
            "--regid=65534",
            "--clear-groups",
            "--inh-caps=-all",
            PROCLENS,
            "top",
            "-c",
            "1",
        ])
        .output_within(COMMAND_LIMIT);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(3), "{stderr}");
    assert_one_line(&stderr);
    assert!(
        stderr.contains("CAP_BPF") && stderr.contains("CAP_PERFMON"),
        "{stderr}"
    );
}

const CAP_SYS_ADMIN: u64 = 1 << 21;
const CAP_PERFMON: u64 = 1 << 38;
const CAP_BPF: u64 = 1 << 39;

/// A `/proc/PID/status` field of every thread (`CapEff`, `CapPrm`, as hex masks).
fn thread_masks(pid: u32, field: &str) -> Vec<u64> {
    fs::read_dir(format!("/proc/{pid}/task"))
        .unwrap()
        .flatten()
        .filter_map(|t| fs::read_to_string(t.path().join("status")).ok())
        .filter_map(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix(field)?.strip_prefix(':'))
                .and_then(|v| u64::from_str_radix(v.trim(), 16).ok())
        })
        .collect()
}

#[test]
fn running_agent_holds_no_capability_and_still_reports() {
    if !can_trace() {
        return;
    }
    let p = Proclens::spawn(&["top", "--json", "--interval", "0.2"]);
    p.json_until(Duration::from_secs(20), |v| v["type"] == "system");
    let caps = thread_masks(p.child.id(), "CapEff");
    assert!(!caps.is_empty());
    // On a kernel that checks privileges on every map read (5.10), proclens says at
    // start-up which capability it keeps for reading (CAP_BPF).
    let stderr = p.stderr();
    keeps_caps(&stderr);
    let allowed = kept_caps(&stderr);
    for c in &caps {
        assert_eq!(
            c & (CAP_SYS_ADMIN | CAP_BPF | CAP_PERFMON) & !allowed,
            0,
            "a thread still holds {c:#x}"
        );
    }
    // Still reading its maps: later reports count switches.
    let v = p.json_until(Duration::from_secs(10), |v| {
        v["type"] == "system" && v["switches"].as_u64().unwrap() > 0
    });
    assert!(v["switches"].as_u64().unwrap() > 0);
}

#[test]
fn run_holds_no_capability_while_the_command_runs() {
    if !can_trace() {
        return;
    }
    let child = Command::new(PROCLENS)
        .args(["run", "-o", "/dev/null", "--", "sleep", "1"])
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // Once `sleep` is running under proclens, look at proclens's threads. (Loading and
    // attaching take seconds in an emulated guest on a busy host: 6.12 under QEMU TCG,
    // host load 10-20, once took more than 10 s.)
    let deadline = Instant::now() + Duration::from_mins(1);
    let sleeping = loop {
        let kids = fs::read_to_string(format!("/proc/{0}/task/{0}/children", child.id()))
            .unwrap_or_default();
        if let Some(k) = kids.split_whitespace().next()
            && fs::read_to_string(format!("/proc/{k}/comm")).is_ok_and(|c| c.trim() == "sleep")
        {
            break true;
        }
        if Instant::now() > deadline {
            break false;
        }
        thread::sleep(Duration::from_millis(20));
    };
    assert!(sleeping, "the command never started");
    thread::sleep(Duration::from_millis(100));
    let caps = thread_masks(child.id(), "CapEff");
    let out = child.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    // See running_agent_holds_no_capability_and_still_reports for the 5.10 case.
    keeps_caps(&stderr);
    let allowed = kept_caps(&stderr);
    for c in caps {
        assert_eq!(
            c & (CAP_SYS_ADMIN | CAP_BPF | CAP_PERFMON) & !allowed,
            0,
            "a thread of `run` still holds {c:#x}"
        );
    }
}

#[test]
fn run_under_sudo_runs_the_command_as_the_invoking_user() {
    if !can_trace() {
        return;
    }
    let out = Command::new(PROCLENS)
        .args(["run", "-o", "/dev/null", "--", "sh", "-c", "id -u; id -g"])
        .env("SUDO_UID", "65534")
        .env("SUDO_GID", "65534")
        .env_remove("SUDO_USER")
        .output_within(COMMAND_LIMIT);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(String::from_utf8_lossy(&out.stdout), "65534\n65534\n");
}

/// The sum of the samples of `name` (any labels).
fn sum(body: &str, name: &str) -> f64 {
    sample_sum(body, name, &[])
}

/// Issue 18: the least-privilege start the DaemonSet and the systemd unit make — not root
/// (uid 65534), only `CAP_BPF` and `CAP_PERFMON` — serves metrics on every kernel of the
/// matrix. 5.10 checks privileges on every map read: proclens used to keep `CAP_SYS_ADMIN`
/// there, which it had not been given, and exited 1; it now keeps only what the reads
/// need and it holds (`CAP_BPF`), and on 6.1+ nothing.
#[test]
fn least_privilege_start_serves_as_nobody_with_bpf_and_perfmon() {
    if !can_trace() {
        return;
    }
    let mut cmd = Command::new("setpriv");
    cmd.args([
        "--reuid=65534",
        "--regid=65534",
        "--clear-groups",
        "--inh-caps=-all,+bpf,+perfmon",
        "--ambient-caps=-all,+bpf,+perfmon",
        "--bounding-set=-all,+bpf,+perfmon",
        PROCLENS,
        "serve",
        "--listen",
        "127.0.0.1:0",
        "--interval",
        "0.3",
    ])
    .stdout(Stdio::null())
    .stderr(Stdio::piped());
    // Kernels before 5.11 charge BPF maps to RLIMIT_MEMLOCK, which a process without
    // CAP_SYS_RESOURCE cannot raise: the service manager sets it (the unit's
    // LimitMEMLOCK=infinity), as root does here before dropping to uid 65534 where it
    // may (the guests' root may; where it may not, the kernel charges memory cgroups).
    // SAFETY: setrlimit is async-signal-safe; the child execs right after.
    unsafe {
        cmd.pre_exec(|| {
            let inf = libc::rlimit {
                rlim_cur: libc::RLIM_INFINITY,
                rlim_max: libc::RLIM_INFINITY,
            };
            libc::setrlimit(libc::RLIMIT_MEMLOCK, &raw const inf);
            Ok(())
        });
    }
    let server = Server::from_child(cmd.spawn().expect("setpriv (util-linux)"));
    let (addr, early) = (server.addr, server.early.clone());
    let scrape = |a| http(a, "GET", "/metrics", None).1;
    let pid = server.child.id();
    let status = fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    assert!(
        status
            .lines()
            .any(|l| l.starts_with("Uid:") && l.contains("65534")),
        "not running as uid 65534:\n{status}"
    );
    // It reads its maps: the machine's switches grow from one scrape to a later one.
    let first = sum(&scrape(addr), "proclens_system_switches_total");
    let deadline = Instant::now() + Duration::from_secs(15);
    let body = loop {
        let body = scrape(addr);
        if sum(&body, "proclens_system_switches_total") > first
            && sum(&body, "proclens_context_switches_total") > 0.0
        {
            break body;
        }
        assert!(Instant::now() < deadline, "switches never grew:\n{body}");
        thread::sleep(Duration::from_millis(300));
    };
    assert!(sum(&body, "proclens_system_threads") > 0.0);
    // Only what the map reads need, and only on kernels that check every read.
    keeps_caps(&early);
    let allowed = kept_caps(&early);
    assert_eq!(allowed & !CAP_BPF, 0, "kept more than CAP_BPF: {early}");
    for field in ["CapEff", "CapPrm"] {
        let masks = thread_masks(pid, field);
        assert!(!masks.is_empty());
        for m in masks {
            assert_eq!(
                m & !allowed,
                0,
                "a thread holds {field} {m:#x}; note: {early}"
            );
        }
    }
    let mut server = server;
    // SAFETY: signalling our own child.
    unsafe { libc::kill(pid as i32, libc::SIGTERM) };
    let st = server.child.wait().unwrap();
    assert!(st.success(), "exit after SIGTERM: {st}");
}
