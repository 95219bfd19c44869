//! Real BPF: `-p`, `--comm` and `--cgroup` are compared in the kernel, first thing in
//! the syscall programs: while another process makes syscalls as fast as it can, the
//! kernel maps of a filtered proclens hold the selected process only (read with
//! bpftool, outside proclens), and the selected process's figures are still exact.
mod common;

use std::{
    process::{Child, Command, Stdio},
    time::Duration,
};

use common::{Proclens, bpf_maps::key_tgids, can_trace, workload::Workload};

workload_entry!();

/// A process that makes syscalls as fast as it can until dropped: dd copying one byte at
/// a time, under `name` (a copy of dd).
struct Busy(Child, std::path::PathBuf);

impl Busy {
    fn start(name: &str) -> Self {
        let exe = std::env::temp_dir().join(name);
        std::fs::copy("/bin/dd", &exe).expect("dd is installed");
        let child = Command::new(&exe)
            .args(["if=/dev/zero", "of=/dev/null", "bs=1", "status=none"])
            .stdout(Stdio::null())
            .spawn()
            .unwrap();
        Self(child, exe)
    }
}

impl Drop for Busy {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
        let _ = std::fs::remove_file(&self.1);
    }
}

/// Starts proclens with `args`, lets `selected` run its workload, and returns the tgids
/// of every entry of the proclens maps `maps` after a few reports, busy's syscalls all
/// the while.
fn entries_under(args: &[&str], selected: &mut Workload, maps: &[&str]) -> Vec<(String, Vec<u32>)> {
    let p = Proclens::spawn(args);
    p.json_until(Duration::from_secs(30), |_| true);
    selected.go();
    // Two more reports: whatever the busy process did in between would be in the maps.
    for _ in 0..2 {
        p.json_until(Duration::from_secs(15), |v| {
            v["type"] == "copies_system" || v["type"] == "system" || v["type"] == "copies"
        });
    }
    maps.iter()
        .map(|m| (m.to_string(), key_tgids(p.pid(), m)))
        .collect()
}

fn assert_only(selected: u32, maps: &[(String, Vec<u32>)]) {
    for (name, tgids) in maps {
        let others: Vec<&u32> = tgids.iter().filter(|&&t| t != selected).collect();
        assert!(
            others.is_empty(),
            "{name} holds other processes: {others:?}"
        );
    }
    assert!(
        maps.iter().any(|(_, t)| t.contains(&selected)),
        "the selected process {selected} was not recorded: {maps:?}"
    );
}

#[test]
fn copies_filtered_by_pid_records_nothing_of_other_processes() {
    if !can_trace() {
        return;
    }
    let busy = Busy::start(&format!("plbusy{}", std::process::id() % 100_000));
    let mut w = Workload::spawn("copy-rw:1048576");
    let pid = w.pid().to_string();
    let maps = entries_under(
        &["copies", "--json", "--interval", "0.3", "-p", &pid],
        &mut w,
        &["SYSCALLS", "COPIES", "PAIRING"],
    );
    // PAIRING is keyed by thread id: the workload's only thread is itself.
    assert!(
        !maps[2].1.contains(&busy.0.id()),
        "PAIRING holds the busy process"
    );
    assert_only(w.pid(), &maps[..2]);
}

#[test]
fn top_syscalls_filtered_by_pid_records_nothing_of_other_processes() {
    if !can_trace() {
        return;
    }
    let _busy = Busy::start(&format!("plbusy{}", std::process::id() % 100_000));
    let mut w = Workload::spawn("copy-rw:1048576");
    let pid = w.pid().to_string();
    let maps = entries_under(
        &[
            "top",
            "--syscalls",
            "--json",
            "--interval",
            "0.3",
            "-p",
            &pid,
        ],
        &mut w,
        &["SYSCALLS"],
    );
    assert_only(w.pid(), &maps);
}

/// `--comm` matches the workload's name (a prefix of the test binary's); the busy
/// process's name does not contain it.
#[test]
fn copies_filtered_by_name_records_nothing_of_other_processes() {
    if !can_trace() {
        return;
    }
    let busy_guard = Busy::start(&format!("plbusy{}", std::process::id() % 100_000));
    let mut w = Workload::spawn("copy-rw:1048576");
    let comm = std::fs::read_to_string(format!("/proc/{}/comm", w.pid())).unwrap();
    let comm = comm.trim();
    let maps = entries_under(
        &["copies", "--json", "--interval", "0.3", "--comm", comm],
        &mut w,
        &["SYSCALLS", "COPIES"],
    );
    // Other test binaries of this suite may share the name; none is dd.
    let busy = busy_guard.0.id();
    for (name, tgids) in &maps {
        assert!(!tgids.contains(&busy), "{name} holds the busy process");
    }
    assert!(maps[0].1.contains(&w.pid()), "{maps:?}");
}

/// The kernel keeps each thread's `--comm` decision: a thread renamed while traced
/// (`prctl(PR_SET_NAME)`) is decided again under its new name. The workload makes 10,000
/// syscalls under the harness's name (not counted: decided once, at the first), renames
/// itself to the selected name, and makes 10,000 more (counted from the rename on).
#[test]
fn a_thread_renamed_to_the_selected_name_is_traced_from_then_on() {
    if !can_trace() {
        return;
    }
    const N: u64 = 10_000;
    let mut w = Workload::spawn(&format!("load-rename-syscalls:{N}"));
    let new_name = format!("plnew{}", w.pid() % 100_000);
    let p = Proclens::spawn(&["copies", "--json", "--interval", "0.3", "--comm", &new_name]);
    p.json_until(Duration::from_secs(30), |v| v["type"] == "copies_system");
    w.go();
    let mut counted = 0;
    for _ in 0..4 {
        let v = p.json_until(Duration::from_secs(15), |v| {
            v["type"] == "copies_system" || (v["type"] == "copies" && v["pid"] == w.pid())
        });
        if v["type"] == "copies" {
            counted += v["syscalls"].as_u64().unwrap();
        }
    }
    // The renamed calls, and the few the harness makes after them (its `done` line).
    assert!(
        (N..N + 50).contains(&counted),
        "{counted} syscalls counted, {N} made under the selected name"
    );
}

/// The syscall counter costs every syscall of every traced process, so `top` runs it only
/// with `--syscalls`: without, no syscall program is attached (bpftool's list of the
/// programs proclens holds) and the JSON rows have no syscall fields.
#[test]
fn top_counts_syscalls_only_when_asked() {
    if !can_trace() {
        return;
    }
    for (args, counted) in [(&["top"][..], false), (&["top", "--syscalls"], true)] {
        // One program per syscall, at its return: the entry is never attached here.
        let p = Proclens::spawn(&[args, &["--json", "--interval", "0.3", "--all"]].concat());
        let row = p.json_until(Duration::from_secs(30), |v| v["type"] == "process");
        let progs = common::bpf_maps::program_names(p.pid());
        assert_eq!(
            progs.iter().any(|n| n == "sys_exit"),
            counted,
            "{args:?}: {progs:?}"
        );
        assert!(
            !progs.iter().any(|n| n == "sys_enter"),
            "{args:?}: {progs:?}"
        );
        assert_eq!(
            row.get("syscalls_total").is_some(),
            counted,
            "{args:?}: {row}"
        );
    }
}
