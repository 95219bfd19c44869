//! The command line's contract: argument errors, privilege, missing processes and
//! tracefs each get one line and their documented exit code; every way proclens ends
//! leaves no BPF program, link or map behind.
mod common;

use std::{
    collections::BTreeSet,
    fs,
    process::{Command, Stdio},
    thread,
    time::Duration,
};

use common::{
    Bounded as _, COMMAND_LIMIT, KEEPS_CAPS_NOTE, PROCLENS, Proclens, assert_all_gone,
    bpf_ids_held_by, can_trace, keeps_caps,
};

workload_entry!();

/// Runs proclens to completion; returns (exit code, stderr).
fn run(args: &[&str]) -> (i32, String) {
    let out = Command::new(PROCLENS)
        .args(args)
        .stdin(Stdio::null())
        .output_within(COMMAND_LIMIT);
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn assert_one_line(stderr: &str) {
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

#[test]
fn argument_errors_exit_2_with_one_line() {
    for args in [
        &["top", "--interval", "0"][..],
        &["top", "--interval", "-1"],
        &["top", "--interval", "abc"],
        &["top", "--count", "0"],
        &["top", "--pid", "notapid"],
        &["top", "--no-such-flag"],
        &["no-such-command"],
    ] {
        let (code, stderr) = run(args);
        assert_eq!(code, 2, "{args:?}: {stderr}");
        assert_one_line(&stderr);
    }
}

#[test]
fn help_documents_exit_codes() {
    let out = Command::new(PROCLENS).arg("--help").output().unwrap();
    assert!(out.status.success());
    let help = String::from_utf8_lossy(&out.stdout);
    for needle in [
        "Exit codes:",
        "3  not privileged",
        "4  no such process",
        "6  tracefs",
    ] {
        assert!(help.contains(needle), "--help lacks {needle:?}");
    }
}

#[test]
fn no_such_pid_exits_4() {
    if !can_trace() {
        return;
    }
    // pid_max is at most 2^22: this pid cannot exist.
    let (code, stderr) = run(&["top", "-p", "4194305", "-c", "1"]);
    assert_eq!(code, 4, "{stderr}");
    assert_one_line(&stderr);
    assert!(stderr.contains("no such process: 4194305"), "{stderr}");
}

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

/// Starts `proclens top`, waits until it reports (so everything is attached), and returns
/// it with the BPF objects it holds.
fn attached_proclens(extra: &[&str]) -> (Proclens, BTreeSet<(String, u64)>) {
    let mut args = vec!["top", "--json", "--interval", "0.2"];
    args.extend_from_slice(extra);
    let p = Proclens::spawn(&args);
    p.json_until(Duration::from_secs(20), |v| v["type"] == "system");
    let ids = bpf_ids_held_by(p.child.id());
    assert!(
        ids.iter().any(|(k, _)| k == "prog_id"),
        "proclens holds no BPF program: {ids:?}"
    );
    assert!(
        ids.iter().any(|(k, _)| k == "map_id"),
        "proclens holds no BPF map: {ids:?}"
    );
    (p, ids)
}

#[test]
fn signals_detach_everything() {
    if !can_trace() {
        return;
    }
    for (sig, name) in [
        (libc::SIGINT, "SIGINT"),
        (libc::SIGTERM, "SIGTERM"),
        (libc::SIGHUP, "SIGHUP"),
    ] {
        let (p, ids) = attached_proclens(&[]);
        p.signal(sig);
        let st = p.wait(Duration::from_secs(10));
        assert!(st.success(), "{name}: proclens exited with {st}");
        assert_all_gone(&ids, name);
    }
}

#[test]
fn kill_9_leaves_nothing_behind() {
    if !can_trace() {
        return;
    }
    let (p, ids) = attached_proclens(&[]);
    p.signal(libc::SIGKILL);
    p.wait(Duration::from_secs(10));
    assert_all_gone(&ids, "kill -9");
}

#[test]
fn normal_end_and_closed_pipe_leave_nothing_behind() {
    if !can_trace() {
        return;
    }
    // --count ends it normally.
    let (p, ids) = attached_proclens(&["--count", "3"]);
    let st = p.wait(Duration::from_secs(20));
    assert!(st.success(), "{st}");
    assert_all_gone(&ids, "--count");

    // A reader that goes away (`proclens top | head -1`): exit 0, nothing left.
    let mut child = Command::new(PROCLENS)
        .args(["top", "--interval", "0.1", "--all"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdout = child.stdout.take().unwrap();
    let mut first = [0u8; 16];
    std::io::Read::read_exact(&mut stdout, &mut first).unwrap();
    let ids = bpf_ids_held_by(child.id());
    drop(stdout);
    let out = child.wait_with_output().unwrap();
    assert_eq!(
        out.status.code(),
        Some(0),
        "stderr: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    // The only line allowed is the documented start-up note of kernels that check
    // privileges on every map read (5.10).
    let stderr = String::from_utf8_lossy(&out.stderr);
    keeps_caps(&stderr);
    assert!(
        stderr.lines().all(|l| l == KEEPS_CAPS_NOTE),
        "a closed pipe is not an error: {stderr}"
    );
    assert_all_gone(&ids, "closed stdout");
}

/// In a mount namespace of its own (so that no other tracer on the machine is disturbed,
/// and a busy tracefs elsewhere cannot stop the test), tracefs is unmounted; `copies`,
/// which reads syscall tracepoint formats from it, mounts it again and runs.
#[test]
fn tracefs_is_mounted_when_missing() {
    if !can_trace() {
        return;
    }
    let script = format!(
        "umount /sys/kernel/tracing 2>/dev/null; \
         if test -d /sys/kernel/tracing/events; then echo still-mounted; exit 97; fi; \
         {PROCLENS} copies --interval 0.1 --count 1 >/dev/null || exit $?; \
         test -d /sys/kernel/tracing/events || exit 98"
    );
    let out = Command::new("unshare")
        .args(["-m", "--propagation", "private", "sh", "-c", &script])
        .stdin(Stdio::null())
        .output_within(COMMAND_LIMIT);
    let stderr = String::from_utf8_lossy(&out.stderr);
    match out.status.code() {
        Some(0) => {}
        Some(97) => panic!("tracefs could not be unmounted in a private mount namespace"),
        Some(98) => panic!("proclens did not mount tracefs: {stderr}"),
        other => panic!("copies failed ({other:?}): {stderr}"),
    }
}

/// CapEff of every thread of a process.
fn thread_caps(pid: u32) -> Vec<u64> {
    fs::read_dir(format!("/proc/{pid}/task"))
        .unwrap()
        .flatten()
        .filter_map(|t| fs::read_to_string(t.path().join("status")).ok())
        .filter_map(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("CapEff:"))
                .and_then(|v| u64::from_str_radix(v.trim(), 16).ok())
        })
        .collect()
}

const CAP_SYS_ADMIN: u64 = 1 << 21;
const CAP_PERFMON: u64 = 1 << 38;
const CAP_BPF: u64 = 1 << 39;

#[test]
fn running_agent_holds_no_capability_and_still_reports() {
    if !can_trace() {
        return;
    }
    let p = Proclens::spawn(&["top", "--json", "--interval", "0.2"]);
    p.json_until(Duration::from_secs(20), |v| v["type"] == "system");
    let caps = thread_caps(p.child.id());
    assert!(!caps.is_empty());
    // On a kernel that checks privileges on every map read (5.10), proclens says at
    // start-up that it keeps the three capabilities reading needs.
    let allowed = if keeps_caps(&p.stderr()) {
        CAP_SYS_ADMIN | CAP_BPF | CAP_PERFMON
    } else {
        0
    };
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
    // Once `sleep` is running under proclens, look at proclens's threads.
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    let sleeping = loop {
        let kids = fs::read_to_string(format!("/proc/{0}/task/{0}/children", child.id()))
            .unwrap_or_default();
        if let Some(k) = kids.split_whitespace().next()
            && fs::read_to_string(format!("/proc/{k}/comm")).is_ok_and(|c| c.trim() == "sleep")
        {
            break true;
        }
        if std::time::Instant::now() > deadline {
            break false;
        }
        thread::sleep(Duration::from_millis(20));
    };
    assert!(sleeping, "the command never started");
    thread::sleep(Duration::from_millis(100));
    let caps = thread_caps(child.id());
    let out = child.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    // See running_agent_holds_no_capability_and_still_reports for the 5.10 case.
    let allowed = if keeps_caps(&stderr) {
        CAP_SYS_ADMIN | CAP_BPF | CAP_PERFMON
    } else {
        0
    };
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

/// proclens `top --json` for two short intervals with the thread table forced full (every
/// thread in a two-entry hash), with extra arguments; returns (untracked threads reported
/// in the last interval's system line, stderr).
fn top_with_a_full_thread_table(extra: &[&str]) -> (u64, String) {
    let mut args = vec!["top", "--json", "--interval", "0.3", "--count", "2"];
    args.extend_from_slice(extra);
    let out = Command::new(PROCLENS)
        .args(&args)
        .env("PROCLENS_THREAD_SLOTS", "0")
        .env("PROCLENS_MAX_THREADS", "2")
        .env_remove("RUST_LOG")
        .stdin(Stdio::null())
        .output_within(COMMAND_LIMIT);
    assert!(out.status.success(), "{out:?}");
    let untracked = String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter(|v| v["type"] == "system")
        .filter_map(|v| v["untracked_threads"].as_u64())
        .last()
        .expect("a system line");
    (untracked, String::from_utf8_lossy(&out.stderr).into_owned())
}

/// A full map in the kernel is logged by the program that met it at debug level (aya-log),
/// and nothing is logged at the default level; both times the view counts what it missed.
#[test]
fn a_full_thread_table_is_logged_at_debug_level_only() {
    if !can_trace() {
        return;
    }
    let (untracked, stderr) = top_with_a_full_thread_table(&["--log-level", "debug"]);
    assert!(untracked > 0, "the table was not full: {stderr}");
    assert!(
        stderr.lines().any(|l| l.starts_with("proclens: debug: ")
            && l.contains("not recorded: thread table full, thread untracked (tid ")),
        "no debug line from the kernel: {stderr}"
    );
    let (untracked, stderr) = top_with_a_full_thread_table(&[]);
    assert!(untracked > 0, "the table was not full");
    assert!(
        !stderr.contains("not recorded"),
        "logged at the default level: {stderr}"
    );
}
