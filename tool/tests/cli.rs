//! The command line's contract: argument errors and missing processes each get one line
//! and their documented exit code; copies and forks run without tracefs; every way proclens ends leaves no BPF
//! program, link or map behind. (Privileges: tests/privilege.rs.)
mod common;

use std::{
    collections::BTreeSet,
    process::{Command, Stdio},
    time::Duration,
};

use common::{
    Bounded as _, COMMAND_LIMIT, KEEPS_CAPS_NOTE, PROCLENS, Proclens, assert_all_gone,
    assert_one_line, bpf_ids_held_by, can_trace, run_proclens as run,
};

workload_entry!();

#[test]
fn argument_errors_exit_2_with_one_line() {
    for args in [
        &["top", "--interval", "0"][..],
        &["top", "--interval", "-1"],
        &["top", "--interval", "abc"],
        &["top", "--interval", "1e20"],
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
        "5  kernel lacks",
        "7  not in the host's pid namespace",
    ] {
        assert!(help.contains(needle), "--help lacks {needle:?}");
    }
}

/// Issue 16: inside a pid namespace of its own (a container without the host's), the
/// kernel's pids are not /proc's: proclens refuses with one line and exit code 7, with
/// /proc of that namespace or the host's, and loads nothing.
#[test]
fn issue_16_in_a_pid_namespace_of_its_own_proclens_refuses_with_7() {
    if !can_trace() {
        return;
    }
    for unshare in [
        &["unshare", "--pid", "--fork"][..],
        &["unshare", "--pid", "--fork", "--mount-proc"],
    ] {
        let out = Command::new(unshare[0])
            .args(&unshare[1..])
            .args([PROCLENS, "zombies"])
            .stdin(Stdio::null())
            .output_within(COMMAND_LIMIT);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(7), "{unshare:?}: {stderr}");
        assert_one_line(&stderr);
        assert!(stderr.contains("pid namespace"), "{stderr}");
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
    common::keeps_caps(&stderr);
    assert!(
        stderr.lines().all(|l| l.starts_with(KEEPS_CAPS_NOTE)),
        "a closed pipe is not an error: {stderr}"
    );
    assert_all_gone(&ids, "closed stdout");
}

/// Runs the shell `script` in a mount namespace of its own without tracefs, so that no
/// other tracer on the machine is disturbed and a busy tracefs elsewhere cannot stop the
/// test; returns its exit code and stderr. Panics if tracefs cannot be unmounted there.
fn without_tracefs(script: &str) -> (Option<i32>, String) {
    let script = format!(
        "umount /sys/kernel/tracing 2>/dev/null; \
         if test -d /sys/kernel/tracing/events; then echo still-mounted; exit 97; fi; \
         {script}"
    );
    let out = Command::new("unshare")
        .args(["-m", "--propagation", "private", "sh", "-c", &script])
        .stdin(Stdio::null())
        .output_within(COMMAND_LIMIT);
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert_ne!(
        out.status.code(),
        Some(97),
        "tracefs could not be unmounted in a private mount namespace"
    );
    (out.status.code(), stderr)
}

/// The syscall and copy programs attach to BTF tracepoints: `copies` runs without
/// tracefs, and does not mount it.
#[test]
fn copies_needs_no_tracefs() {
    if !can_trace() {
        return;
    }
    let (code, stderr) = without_tracefs(&format!(
        "{PROCLENS} copies --interval 0.1 --count 1 >/dev/null || exit $?; \
         if test -d /sys/kernel/tracing/events; then exit 98; fi"
    ));
    match code {
        Some(0) => {}
        Some(98) => panic!("proclens mounted tracefs: {stderr}"),
        other => panic!("copies failed ({other:?}): {stderr}"),
    }
    assert!(
        stderr.lines().all(|l| l.starts_with(KEEPS_CAPS_NOTE)),
        "{stderr}"
    );
}

/// Without tracefs, `forks` times the fork calls in its syscall programs: a shell that
/// forks three children shows three forks, and time in them; proclens's first report
/// (start-up done) before the shell starts.
#[test]
fn forks_are_timed_without_tracefs() {
    if !can_trace() {
        return;
    }
    let dir = std::env::temp_dir().join(format!("proclens-forks-notracefs-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let (out, pid) = (dir.join("out"), dir.join("pid"));
    let (code, stderr) = without_tracefs(&format!(
        "{PROCLENS} forks --json --interval 0.2 --no-fds > {out} & p=$!; \
         while ! grep -q forks_system {out}; do kill -0 $p || exit 96; sleep 0.05; done; \
         sh -c 'echo $$ > {pid}; for i in 1 2 3; do true & wait; done; sleep 0.5'; \
         sleep 0.5; kill -INT $p; wait $p",
        out = out.display(),
        pid = pid.display()
    ));
    assert_eq!(code, Some(0), "forks failed: {stderr}");
    let sh: u64 = std::fs::read_to_string(&pid)
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    let text = std::fs::read_to_string(&out).unwrap();
    let _ = std::fs::remove_dir_all(&dir);
    let last = text
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .rfind(|v| v["type"] == "forks" && v["pid"] == sh)
        .unwrap_or_else(|| panic!("no row of the shell {sh}:\n{text}\n{stderr}"));
    let total = &last["total"];
    assert_eq!(total["forks"], 3, "{last}");
    assert!(total["fork_ms"].as_f64().unwrap() > 0.0, "{last}");
    assert!(!stderr.contains("not timed"), "{stderr}");
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
        .next_back()
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
