//! The command line's contract: argument errors, missing processes and tracefs each get
//! one line and their documented exit code; every way proclens ends leaves no BPF
//! program, link or map behind. (Privileges: tests/privilege.rs.)
mod common;

use std::{
    collections::BTreeSet,
    fs,
    path::Path,
    process::{Command, Stdio},
    thread,
    time::Duration,
};

use common::{
    KEEPS_CAPS_NOTE, PROCLENS, Proclens, assert_one_line, can_trace, run_proclens as run,
};

workload_entry!();

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

/// BPF object ids (programs, links, maps) a process holds, from its fdinfo.
fn bpf_ids_held_by(pid: u32) -> BTreeSet<(String, u64)> {
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
fn bpf_object_exists(kind: &str, id: u64) -> bool {
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

fn assert_all_gone(ids: &BTreeSet<(String, u64)>, how: &str) {
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

#[test]
fn tracefs_is_mounted_when_missing() {
    if !can_trace() {
        return;
    }
    let events = Path::new("/sys/kernel/tracing/events");
    if events.is_dir() {
        // Busy (another tracer holds it): nothing to prove here without disturbing it.
        if !Command::new("umount")
            .arg("/sys/kernel/tracing")
            .status()
            .unwrap()
            .success()
        {
            eprintln!("skipped: tracefs is busy and cannot be unmounted for this test");
            return;
        }
    }
    assert!(!events.is_dir());
    // `copies` reads syscall tracepoint formats from tracefs (the switch programs need none).
    let (code, stderr) = run(&["copies", "--interval", "0.1", "--count", "1"]);
    assert_eq!(code, 0, "{stderr}");
    assert!(events.is_dir(), "proclens did not mount tracefs");
}
