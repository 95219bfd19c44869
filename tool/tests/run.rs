//! Real BPF: the copies and zombies sections of `proclens run -- CMD`, each from a command
//! whose bytes and zombies the test knows.
mod common;

use std::process::Command;

use common::{
    Bounded as _, COMMAND_LIMIT, PROCLENS, can_trace, figure_workloads::CHILD_SYSCALLS,
    workload::Workload,
};
use serde_json::Value;

workload_entry!();

/// `proclens run --json -- sh -c SCRIPT`: the report.
fn run_sh(script: &str) -> Value {
    let out_file = std::env::temp_dir().join(format!(
        "proclens-run-report-{}-{}.json",
        std::process::id(),
        script.len()
    ));
    let st = Command::new(PROCLENS)
        .args(["run", "--json", "-o", out_file.to_str().unwrap(), "--"])
        .args(["sh", "-c", script])
        .stdout(std::process::Stdio::null())
        .status_within(COMMAND_LIMIT);
    assert!(st.success(), "proclens run failed: {st}");
    let report: Value = serde_json::from_str(&std::fs::read_to_string(&out_file).unwrap()).unwrap();
    let _ = std::fs::remove_file(&out_file);
    report
}

/// `run` removes the cgroup it made for the command (after dropping its other
/// capabilities), and the empty one a killed `run` left behind: none named
/// `proclens-run-*` of a gone process stays.
#[test]
fn cgroups_of_finished_and_killed_runs_are_removed() {
    if !can_trace() {
        return;
    }
    let root = common::cgroup::v2_root();
    // As if left by a `run` killed with SIGKILL: a pid above any pid_max, so never live.
    let stale = root.join("proclens-run-4194305");
    let _ = std::fs::create_dir(&stale);
    let mut child = Command::new(PROCLENS)
        .args(["run", "-o", "/dev/null", "--", "true"])
        .spawn()
        .unwrap();
    let own = root.join(format!("proclens-run-{}", child.id()));
    let st = common::wait_within(&mut child, COMMAND_LIMIT, "proclens run");
    assert!(st.success(), "{st}");
    assert!(!own.exists(), "{} was left behind", own.display());
    assert!(!stale.exists(), "{} was not swept", stale.display());
}

/// Bytes of the summed path `syscall` from `src` to `dst` in the report's copies section.
fn path_bytes(r: &Value, syscall: &str, src: &str, dst: &str) -> u64 {
    r["copies"]["paths"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|p| p["syscall"] == syscall && p["src"] == src && p["dst"] == dst)
        .map(|p| p["bytes"].as_u64().unwrap())
        .sum()
}

/// `head -c N /dev/zero | wc -c`: head writes exactly N bytes into the pipe and wc reads
/// exactly N out of it; both are the command's descendants, so both are in the report.
#[test]
fn copies_section_counts_a_pipelines_bytes_exactly() {
    if !can_trace() {
        return;
    }
    const N: u64 = 3 * 1024 * 1024 + 17;
    let r = run_sh(&format!("head -c {N} /dev/zero | wc -c"));
    assert_eq!(
        path_bytes(&r, "write", "user", "pipe"),
        N,
        "{}",
        r["copies"]
    );
    assert_eq!(path_bytes(&r, "read", "pipe", "user"), N, "{}", r["copies"]);
    let c = &r["copies"];
    assert!(c["user_copy_bytes"].as_u64().unwrap() >= 2 * N);
    assert!(c["syscalls"].as_u64().unwrap() > 0);
    assert_eq!(c["io_uring"], false);
    // Every process of the report is one the command started.
    for p in r["per_process"].as_array().unwrap() {
        assert!(
            ["sh", "head", "wc"].contains(&p["comm"].as_str().unwrap()),
            "a process outside the command: {p}"
        );
        assert!(p["syscalls"].as_u64().unwrap() > 0, "{p}");
    }
    assert_eq!(r["forked_processes"], 2, "sh forks head and wc");
}

/// `cat` of a file into another file: coreutils moves it with `copy_file_range`, inside the
/// kernel, so the whole file is zero-copy bytes from file to file.
#[test]
fn copies_section_counts_in_kernel_copies_exactly() {
    if !can_trace() {
        return;
    }
    const N: u64 = 4 * 1024 * 1024;
    let dir = std::env::temp_dir();
    let src = dir.join(format!("proclens-run-src-{}", std::process::id()));
    let dst = dir.join(format!("proclens-run-dst-{}", std::process::id()));
    std::fs::write(&src, vec![7u8; N as usize]).unwrap();
    let r = run_sh(&format!("cat {} > {}", src.display(), dst.display()));
    let _ = std::fs::remove_file(&src);
    let _ = std::fs::remove_file(&dst);
    // copy_file_range, or read+write where the kernel or coreutils falls back: either way
    // exactly N bytes leave the file.
    let in_kernel = path_bytes(&r, "copy_file_range", "file", "file");
    let through_user = path_bytes(&r, "write", "user", "file");
    assert_eq!(in_kernel + through_user, N, "{}", r["copies"]);
    if in_kernel == N {
        // Copied inside the kernel: not through user memory, and not zero-copy either.
        assert!(r["copies"]["in_kernel_copy_bytes"].as_u64().unwrap() >= N);
        assert_eq!(r["copies"]["zero_copy_bytes"], 0, "{}", r["copies"]);
    }
}

/// A background child that exits at once while its parent (the command itself, exec'd
/// into `sleep`) never waits: a zombie for the rest of the command, blamed on it. The
/// same child under a shell that waits is reaped at once: no zombie.
#[test]
fn zombies_section_blames_the_parent_that_never_waits() {
    if !can_trace() {
        return;
    }
    let r = run_sh("sleep 0.1 & exec sleep 1.4");
    let z = &r["zombies"];
    let all: Vec<&Value> = z["left"]
        .as_array()
        .unwrap()
        .iter()
        .chain(z["reaped_late"].as_array().unwrap())
        .collect();
    assert_eq!(all.len(), 1, "{z}");
    let leader = r["per_process"]
        .as_array()
        .unwrap()
        .iter()
        .max_by(|a, b| {
            a["blocked_s"]
                .as_f64()
                .unwrap()
                .total_cmp(&b["blocked_s"].as_f64().unwrap())
        })
        .unwrap();
    let zombie = all[0];
    assert_eq!(zombie["comm"], "sleep");
    assert_eq!(zombie["ppid"], leader["pid"], "{zombie} vs {leader}");
    assert_eq!(zombie["parent_comm"], "sleep");
    assert_eq!(zombie["exit_code"], 0);
    // Dead at ~0.1 s, unreaped at least until the command ended at ~1.4 s.
    let age = zombie["zombie_s"].as_f64().unwrap();
    assert!(age >= 1.1, "zombie for {age} s");

    let r = run_sh("sleep 0.1 & sleep 1.4; wait");
    assert_eq!(
        r["zombies"]["left"].as_array().unwrap().len(),
        0,
        "{}",
        r["zombies"]
    );
    assert_eq!(r["zombies"]["reaped_late"].as_array().unwrap().len(), 0);
}

/// Issue 16: a reap is timed by the parent's wait, not by the task's free (an RCU grace
/// period later, lazily seconds later): 1,000 children, each waited for at once by the
/// shell that ran it, are never reported as reaped late.
#[test]
fn issue_16_children_waited_for_at_once_are_never_reaped_late() {
    if !can_trace() {
        return;
    }
    let r = run_sh("i=0; while [ $i -lt 1000 ]; do /bin/true; i=$((i+1)); done");
    let z = &r["zombies"];
    assert_eq!(z["reaped_late"].as_array().unwrap().len(), 0, "{z}");
    assert_eq!(z["left"].as_array().unwrap().len(), 0, "{z}");
    assert_eq!(r["lost_events"], 0);
    // The shell forked each one (and nothing else forked in its cgroup).
    assert_eq!(r["forked_processes"], 1000, "{}", r["forked_processes"]);
}

/// 20,000 processes come and go while `run` watches, each making 16 distinct syscalls
/// once: 320,000 (process, syscall) entries, more than the syscall map holds. Finished
/// processes' figures move to userspace as they go, so no kernel map fills (the
/// `uncounted_*` figures stay 0), every child is reported once with exactly the syscalls
/// it made (the workload clones with the raw syscall, so nothing else runs in a child),
/// pids reused by the machine along the way included, and the run's totals are the sum
/// of its per-process figures.
#[test]
fn twenty_thousand_processes_keep_exact_totals() {
    if !can_trace() {
        return;
    }
    const CHILDREN: u64 = 20_000;
    let (argv, env) = Workload::auto_command(&format!("forks-exact:{CHILDREN}"));
    let out_file =
        std::env::temp_dir().join(format!("proclens-run-forks-{}.json", std::process::id()));
    let st = Command::new(PROCLENS)
        .args(["run", "--json", "-o", out_file.to_str().unwrap(), "--"])
        .args(&argv)
        .envs(env)
        .stdout(std::process::Stdio::null())
        .status_within(COMMAND_LIMIT * 5);
    assert!(st.success(), "proclens run failed: {st}");
    let r: Value = serde_json::from_str(&std::fs::read_to_string(&out_file).unwrap()).unwrap();
    let _ = std::fs::remove_file(&out_file);
    for f in [
        "uncounted_syscalls",
        "uncounted_copies",
        "untracked_threads",
        "lost_events",
    ] {
        assert_eq!(r[f], 0, "{f}: {}", r[f]);
    }
    assert_eq!(r["forked_processes"], CHILDREN, "the kernel's fork events");
    let procs = r["per_process"].as_array().unwrap();
    let syscalls = |p: &Value| p["syscalls"].as_u64().unwrap();
    let children = procs
        .iter()
        .filter(|p| syscalls(p) == CHILD_SYSCALLS)
        .count() as u64;
    assert_eq!(
        children, CHILDREN,
        "children with exactly {CHILD_SYSCALLS} syscalls"
    );
    // The leader (the workload itself) and nothing else.
    assert_eq!(procs.len() as u64, CHILDREN + 1, "one entry per process");
    let sum: u64 = procs.iter().map(syscalls).sum();
    assert_eq!(
        r["copies"]["syscalls"], sum,
        "the total is the sum of the processes'"
    );
    // The busiest: each child's 16 calls (the leader may make some of them too) and the
    // leader's clone and wait4, exactly one per child.
    let top = r["copies"]["top_syscalls"].as_array().unwrap();
    assert_eq!(top.len(), 10, "{top:?}");
    for s in top {
        assert!(s["count"].as_u64().unwrap() >= CHILDREN, "{s}");
        if s["name"] == "clone" || s["name"] == "wait4" {
            assert_eq!(s["count"], CHILDREN, "{s}");
        }
    }
}
