//! `cargo xtask test-kernels`: the integration tests on other kernels, each booted under
//! QEMU with a small initramfs whose /init runs proclens's test binaries.

mod apt;
mod initramfs;
mod qemu;
mod serial;

use std::{
    fmt::Write as _,
    fs,
    path::{Path, PathBuf},
    time::Duration,
};

use anyhow::{Context as _, Result, bail};
pub use initramfs::Selection;
use initramfs::TestBinary;
use serial::{BootReport, Verdict};

use crate::{cargo, workspace_root};

/// The integration-test binaries that make sense in a minimal VM (no systemd, no
/// Prometheus): the real-BPF switch, lifecycle and copy tests and the command line's
/// contract. The copy tests (`copies`, `copy_figures`) read syscall arguments from the
/// saved registers and walk fd tables through BTF offsets, and `filters` checks the
/// in-kernel filters (with bpftool): the parts most likely to differ between kernels;
/// `forks` adds the page-fault tracepoints, the task-file iterator and the fork-family
/// syscalls; `irq` the interrupt tracepoints and /proc/interrupts' layout; `waits` the
/// saved registers at a switch out (`bpf_task_pt_regs`, 5.15+: 5.10 takes the fallback)
/// and the readiness calls' tracepoints. (`compat` needs a 32-bit toolchain, `run`,
/// `nginx` and `waits_anchor` a full system: host only.)
pub const TEST_BINARIES: &[&str] = &[
    "switches",
    "switch_kinds",
    "cli",
    "privilege",
    "zombies",
    "zombie_blame",
    "copies",
    "forks",
    "irq",
    "copy_figures",
    "filters",
    "intervals",
    "agreement",
    "waits",
];

/// Console lines printed when a kernel runs out of time.
const TAIL_ON_TIMEOUT: usize = 40;

/// Debian packages the matrix needs on the host.
pub const HOST_PACKAGES: &[(&str, &str)] = &[
    ("qemu-system-x86", "/usr/bin/qemu-system-x86_64"),
    ("busybox-static", "/bin/busybox"),
    ("cpio", "/usr/bin/cpio"),
];

pub struct Options {
    pub kernels: Vec<String>,
    /// Keep the downloaded .deb files and the initramfs staging tree.
    pub keep: bool,
    pub timeout: Duration,
    /// Virtual CPUs of each guest.
    pub vcpus: u32,
    /// The test binaries to run (empty: all of [`TEST_BINARIES`]).
    pub binaries: Vec<String>,
    pub selection: Selection,
}

pub fn default_kernels() -> String {
    apt::KERNELS
        .iter()
        .map(|k| k.version)
        .collect::<Vec<_>>()
        .join(",")
}

fn kernels_dir() -> PathBuf {
    workspace_root().join("target/kernels")
}

/// The cached vmlinuz of each kernel, downloading those that are missing.
fn fetch_kernels(specs: &[&'static apt::KernelSpec], keep: bool) -> Result<Vec<PathBuf>> {
    let dir = kernels_dir();
    let cached = |s: &apt::KernelSpec| dir.join(s.version).join("vmlinuz");
    let missing: Vec<&apt::KernelSpec> = specs
        .iter()
        .copied()
        .filter(|s| !cached(s).exists())
        .collect();
    if !missing.is_empty() {
        let apt = apt::Apt::new(&dir.join("apt"));
        apt.update(&missing)?;
        for s in missing {
            let package = apt.kernel_package(s.version)?;
            eprintln!("xtask: kernel {} is {package} ({})", s.version, s.suite);
            let kdir = dir.join(s.version);
            let debs = kdir.join("deb");
            let deb = apt.download(&package, &debs)?;
            let extracted = kdir.join("extract");
            let vmlinuz = apt::extract_vmlinuz(&deb, &extracted)?;
            fs::rename(&vmlinuz, cached(s))?;
            fs::write(kdir.join("package"), format!("{package}\n"))?;
            fs::remove_dir_all(&extracted)?;
            if !keep {
                fs::remove_dir_all(&debs)?;
            }
        }
    }
    Ok(specs.iter().map(|s| cached(s)).collect())
}

/// Builds the test binaries and returns `wanted` (empty: those in [`TEST_BINARIES`]).
fn build_test_binaries(wanted: &[String]) -> Result<Vec<TestBinary>> {
    if let Some(w) = wanted.iter().find(|w| !TEST_BINARIES.contains(&w.as_str())) {
        bail!(
            "{w} is not a test binary of the matrix: {}",
            TEST_BINARIES.join(", ")
        );
    }
    let mut cmd = cargo();
    cmd.args([
        "test",
        "--release",
        "--locked",
        "-p",
        "proclens",
        "--no-run",
        "--message-format=json",
    ]);
    eprintln!("xtask: running {cmd:?}");
    let out = cmd
        .stderr(std::process::Stdio::inherit())
        .output()
        .context("building the test binaries")?;
    if !out.status.success() {
        bail!("building the test binaries failed");
    }
    let found = test_binaries_from_messages(&String::from_utf8_lossy(&out.stdout));
    let mut tests = Vec::new();
    for want in TEST_BINARIES
        .iter()
        .filter(|b| wanted.is_empty() || wanted.iter().any(|w| w == *b))
    {
        let t = found
            .iter()
            .find(|t| t.name == *want)
            .with_context(|| format!("cargo built no test binary {want}"))?;
        tests.push(t.clone());
    }
    Ok(tests)
}

/// Integration-test executables named in cargo's JSON messages.
fn test_binaries_from_messages(text: &str) -> Vec<TestBinary> {
    text.lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter(|v| {
            v["reason"] == "compiler-artifact"
                && v["target"]["kind"]
                    .as_array()
                    .is_some_and(|k| k.iter().any(|k| k == "test"))
        })
        .filter_map(|v| {
            Some(TestBinary {
                name: v["target"]["name"].as_str()?.to_string(),
                path: PathBuf::from(v["executable"].as_str()?),
            })
        })
        .collect()
}

fn cell(r: &BootReport, name: &str, timed_out: bool) -> String {
    let runs: Vec<_> = r.binaries.iter().filter(|b| b.name == name).collect();
    // With `--repeat`, the first run that did not pass speaks for all, with a count.
    let bad = runs.iter().filter(|b| b.verdict != Verdict::Pass).count();
    let of_runs = if runs.len() > 1 {
        format!(" in {bad} of {} runs", runs.len())
    } else {
        String::new()
    };
    let shown = runs
        .iter()
        .find(|b| b.verdict != Verdict::Pass)
        .or(runs.first());
    match shown {
        Some(b) => match &b.verdict {
            Verdict::Pass if runs.len() > 1 => format!("pass ({}) x{}", b.passed, runs.len()),
            Verdict::Pass => format!("pass ({})", b.passed),
            Verdict::Fail { tests, .. } if !tests.is_empty() => {
                format!(
                    "FAIL {}/{}{of_runs}: {}",
                    b.failed,
                    b.passed + b.failed,
                    tests.join(", ")
                )
            }
            Verdict::Fail { exit, .. } => format!("FAIL ({exit}){of_runs}"),
            Verdict::NoResult if timed_out => "no result (timed out)".into(),
            Verdict::NoResult => "no result (VM died)".into(),
        },
        None if timed_out => "not run (timed out)".into(),
        None => "not run".into(),
    }
}

/// A markdown table: one row per test binary, one column per kernel.
pub fn table(columns: &[(String, BootReport, bool)], binaries: &[&str]) -> String {
    let mut s = String::from("| test binary |");
    for (k, r, _) in columns {
        let _ = match &r.release {
            Some(rel) => write!(s, " {k} ({rel}) |"),
            None => write!(s, " {k} |"),
        };
    }
    s += "\n|---|";
    s += &"---|".repeat(columns.len());
    s += "\n";
    for b in binaries {
        let _ = write!(s, "| {b} |");
        for (_, r, t) in columns {
            let _ = write!(s, " {} |", cell(r, b, *t));
        }
        s += "\n";
    }
    s
}

pub fn run(opts: &Options, proclens: &Path) -> Result<bool> {
    let mut specs = Vec::new();
    for k in &opts.kernels {
        specs.push(
            apt::spec(k)
                .with_context(|| format!("unknown kernel {k}; known: {}", default_kernels()))?,
        );
    }
    let vmlinuz = fetch_kernels(&specs, opts.keep)?;
    let tests = build_test_binaries(&opts.binaries)?;
    let dir = kernels_dir();
    let initrd = dir.join("initramfs.cpio.gz");
    let staging = dir.join("initramfs");
    initramfs::build(&staging, &initrd, proclens, &tests, &opts.selection)?;
    if !opts.keep {
        fs::remove_dir_all(&staging)?;
    }
    let mut columns = Vec::new();
    for (spec, vmlinuz) in specs.iter().zip(&vmlinuz) {
        let log = dir.join(spec.version).join("serial.log");
        let mut echo = serial::ConsoleEcho::default();
        let boot = qemu::boot(
            vmlinuz,
            &initrd,
            opts.vcpus,
            opts.timeout,
            &log,
            spec.version,
            |l| echo.line(l),
        )?;
        let report = serial::parse(&boot.output);
        eprintln!(
            "xtask: kernel {} ({}, {} vCPUs) took {:.0} s{}; console in {}",
            spec.version,
            report.release.as_deref().unwrap_or("release unknown"),
            opts.vcpus,
            boot.elapsed.as_secs_f64(),
            if boot.timed_out { ", TIMED OUT" } else { "" },
            log.display()
        );
        if boot.timed_out {
            // What the guest was doing when time ran out; the full console is in the log.
            let lines: Vec<&str> = boot.output.lines().collect();
            for l in &lines[lines.len().saturating_sub(TAIL_ON_TIMEOUT)..] {
                eprintln!("[{}] {}", spec.version, l.trim_end_matches('\r'));
            }
        }
        columns.push((spec.version.to_string(), report, boot.timed_out));
    }
    let names: Vec<&str> = tests.iter().map(|t| t.name.as_str()).collect();
    println!("{}", table(&columns, &names));
    let failed: Vec<&str> = columns
        .iter()
        .filter(|(_, r, _)| !r.ok(tests.len() * opts.selection.repeat.max(1) as usize))
        .map(|(k, _, _)| k.as_str())
        .collect();
    if failed.is_empty() {
        println!("all kernels passed: {}", opts.kernels.join(", "));
        Ok(true)
    } else {
        println!("kernels with failures: {}", failed.join(", "));
        Ok(false)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_test_executables_in_cargo_messages() {
        let msgs = r#"{"reason":"compiler-artifact","target":{"kind":["bin"],"name":"proclens"},"executable":"/t/release/proclens"}
{"reason":"compiler-artifact","target":{"kind":["test"],"name":"switches"},"executable":"/t/release/deps/switches-abc"}
{"reason":"compiler-artifact","target":{"kind":["lib"],"name":"x"},"executable":null}
{"reason":"build-finished","success":true}"#;
        let t = test_binaries_from_messages(msgs);
        assert_eq!(t.len(), 1);
        assert_eq!(t[0].name, "switches");
        assert_eq!(t[0].path, PathBuf::from("/t/release/deps/switches-abc"));
    }

    #[test]
    fn table_has_a_column_per_kernel() {
        let out = "PROCLENS-KERNEL 6.1.0-37-cloud-amd64\nPROCLENS-TEST-BEGIN cli\ntest a ... FAILED\n\
                   test result: FAILED. 2 passed; 1 failed; 0 ignored\nPROCLENS-TEST-RESULT cli FAIL exit=101\n";
        let cols = vec![
            ("6.1".to_string(), serial::parse(out), false),
            ("5.10".to_string(), BootReport::default(), true),
        ];
        let t = table(&cols, &["cli"]);
        assert!(
            t.contains("| test binary | 6.1 (6.1.0-37-cloud-amd64) | 5.10 |"),
            "{t}"
        );
        assert!(
            t.contains("| cli | FAIL 1/3: a | not run (timed out) |"),
            "{t}"
        );
    }
}
