//! `cargo xtask`: set-up, build, run and test tasks for proclens.

mod bench;
mod kernels;
mod setup;

use std::{
    env,
    path::{Path, PathBuf},
    process::{Command, ExitCode},
};

use anyhow::{Context as _, Result, bail};
use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(name = "cargo xtask", about = "proclens's development tasks")]
struct Cli {
    #[command(subcommand)]
    task: Task,
}

#[derive(Subcommand)]
#[allow(
    clippy::doc_markdown,
    reason = "the doc comments are the --help text, printed as written"
)]
enum Task {
    /// Install what building and testing need (as root on Debian/Ubuntu: apt packages and
    /// a bpf-linker matching the BPF compiler's LLVM). Prints every action it takes.
    Setup,
    /// Build the release binary (target/release/proclens) with the BPF object embedded.
    Build,
    /// Build, then run proclens with the given arguments: `cargo xtask run -- top`. A user
    /// other than root builds as themself and runs proclens through sudo.
    Run {
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        args: Vec<String>,
    },
    /// Write the man page and shell completions into target/dist/.
    Dist,
    /// Build the OCI image `proclens:<version>` with podman (or buildah) from
    /// deploy/Containerfile: FROM scratch, the release binary (with the file capabilities
    /// cap_bpf,cap_perfmon=ep) and the shared libraries ldd names. Needs root.
    Image,
    /// Measure overhead, in one run: a switch-bound workload (pinned `perf bench sched
    /// pipe`) untraced / proclens / an equivalent bpftrace counter, with the kernel's
    /// bpf_stats ns per program run; and a syscall-heavy one (1-byte pipe write+read round
    /// trips) untraced / `proclens copies` / an equivalent bpftrace script /
    /// `strace -c -f`; another process's syscalls while proclens and bpftrace trace an idle
    /// one (`-p`); fork/vfork storms untraced / traced; and `proclens serve`'s own CPU,
    /// memory and /metrics size beside 1,000 idle processes, scraped every second; and the
    /// wall time of short invocations (start-up and exit) and of quitting the live table;
    /// the copy-on-write fault counter's cost per fault (copy-on-write and first-touch
    /// faults) untraced / `proclens forks` / an equivalent bpftrace counter; and a loopback
    /// UDP ping-pong untraced / `proclens irq` / a bpftrace script timing the same
    /// handlers. Needs root. `--record` writes the tables into BENCHMARKS.md.
    Bench {
        /// Interleaved repetitions per condition (medians are reported).
        #[arg(long, default_value = "5")]
        reps: usize,
        /// Round trips per run of the syscall workload (two syscalls each).
        #[arg(long, default_value = "500000")]
        round_trips: u64,
        /// Write the results into BENCHMARKS.md.
        #[arg(long)]
        record: bool,
        /// Run only these sections (comma-separated): switches, lifecycle, syscalls,
        /// filtered, load, serve, startup, faults, irq.
        #[arg(long, value_delimiter = ',', value_name = "SECTION")]
        only: Vec<String>,
        /// Another proclens binary (an earlier build) whose serve is measured in the same
        /// windows, interleaved: the anchor that tells a change from the machine's load.
        #[arg(long, value_name = "PROCLENS")]
        anchor: Option<PathBuf>,
    },
    /// Set up, run clippy with warnings as errors (userspace, then the BPF programs), then
    /// run every test: unit tests and the real-BPF integration tests.
    Test {
        /// Extra arguments for `cargo test` (after `--`: a test-name filter, for example).
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        args: Vec<String>,
    },
    /// The benchmark's workload (run by `bench`, not by hand).
    #[command(hide = true)]
    BenchWorkload { round_trips: u64 },
    /// The waits benchmark's poll workload (run by `bench`, not by hand).
    #[command(hide = true)]
    BenchPollWorkload { calls: u64 },
    /// The fault benchmark's workload (run by `bench`, not by hand).
    #[command(hide = true)]
    BenchFaultsWorkload { mode: String, rounds: u32 },
    /// Boot other kernels (Debian's cloud kernels) under QEMU with an initramfs that runs
    /// the integration tests, and print a kernel x test-binary table. Needs root.
    TestKernels {
        /// Comma-separated kernel versions.
        #[arg(long, value_delimiter = ',', default_value = "5.10,6.1,6.12,6.18")]
        kernels: Vec<String>,
        /// Keep the downloaded .deb files and the initramfs staging tree (target/kernels/).
        #[arg(long)]
        keep: bool,
        /// Seconds one kernel may take from boot to power-off.
        #[arg(long, default_value = "900")]
        timeout: u64,
        /// Run only the tests whose names contain this (libtest's filter).
        #[arg(long)]
        filter: Option<String>,
        /// Run each test binary this many times per boot (to measure a flaky test).
        #[arg(long, default_value = "1", value_parser = clap::value_parser!(u32).range(1..=100))]
        repeat: u32,
        /// Seconds one run of a test binary may take (0: no limit). A binary still running
        /// then has the guest's processes and their kernel stacks printed, and is killed,
        /// so one hung test fails its binary and the others still run.
        #[arg(long, default_value = "300")]
        binary_timeout: u32,
        /// Virtual CPUs of each guest. More than the eight event rings (16 or more) makes
        /// several CPUs share a ring, as on servers.
        #[arg(long, default_value = "2", value_parser = clap::value_parser!(u32).range(2..=64))]
        vcpus: u32,
        /// Comma-separated test binaries to run (default: all the matrix runs).
        #[arg(long, value_delimiter = ',')]
        binaries: Vec<String>,
    },
}

fn main() -> ExitCode {
    match run() {
        Ok(code) => code,
        Err(e) => {
            eprintln!("xtask: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// Subcommands that get their own man page.
const SUBCOMMANDS: &[&str] = &[
    "top", "latency", "irq", "run", "copies", "serve", "forks", "zombies",
];

fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("xtask/ has a parent")
        .to_path_buf()
}

fn cargo() -> Command {
    let mut c = Command::new(env::var_os("CARGO").unwrap_or_else(|| "cargo".into()));
    c.current_dir(workspace_root());
    c
}

fn status(cmd: &mut Command) -> Result<()> {
    eprintln!("xtask: running {cmd:?}");
    let st = cmd.status().with_context(|| format!("running {cmd:?}"))?;
    if !st.success() {
        bail!("{cmd:?} failed ({st})");
    }
    Ok(())
}

fn build_release() -> Result<PathBuf> {
    status(cargo().args(["build", "--release", "--locked", "-p", "proclens"]))?;
    Ok(workspace_root().join("target/release/proclens"))
}

fn run() -> Result<ExitCode> {
    let cli = Cli::parse();
    match cli.task {
        Task::Setup => {
            setup::ensure_all()?;
        }
        Task::Build => {
            setup::ensure_toolchain()?;
            let bin = build_release()?;
            eprintln!("xtask: built {}", bin.display());
        }
        Task::Run { args } => {
            setup::ensure_toolchain()?;
            let bin = build_release()?;
            // Built as whoever runs xtask; run as root, since proclens loads BPF
            // programs: through sudo when that is not already the case (like aya's
            // template's sudo runner).
            let mut cmd = if nix_is_root() {
                Command::new(&bin)
            } else {
                eprintln!(
                    "xtask: running {} through sudo (it loads BPF programs, which needs root or CAP_BPF and CAP_PERFMON)",
                    bin.display()
                );
                let mut c = Command::new("sudo");
                c.arg("--").arg(&bin);
                c
            };
            let st = cmd
                .args(&args)
                .status()
                .with_context(|| format!("running {cmd:?}"))?;
            return Ok(ExitCode::from(st.code().unwrap_or(1).clamp(0, 255) as u8));
        }
        Task::Dist => {
            setup::ensure_toolchain()?;
            let bin = build_release()?;
            let dist = workspace_root().join("target/dist");
            std::fs::create_dir_all(dist.join("completions"))?;
            std::fs::copy(&bin, dist.join("proclens"))?;
            let man = Command::new(&bin).arg("man").output()?;
            std::fs::write(dist.join("proclens.1"), man.stdout)?;
            for sub in SUBCOMMANDS {
                let page = Command::new(&bin).args(["man", sub]).output()?;
                std::fs::write(dist.join(format!("proclens-{sub}.1")), page.stdout)?;
            }
            for shell in ["bash", "zsh", "fish"] {
                let out = Command::new(&bin).args(["completions", shell]).output()?;
                std::fs::write(
                    dist.join("completions").join(format!("proclens.{shell}")),
                    out.stdout,
                )?;
            }
            eprintln!("xtask: wrote {}", dist.display());
        }
        Task::Image => {
            setup::ensure_toolchain()?;
            setup::ensure_image_tools()?;
            let bin = build_release()?;
            let tag = proclens_xtask::image::tag();
            let work = workspace_root().join("target/image");
            proclens_xtask::image::build(&bin, &workspace_root(), &work, &tag)?;
            eprintln!("xtask: built image {tag}");
        }
        Task::Bench {
            reps,
            record,
            round_trips,
            only,
            anchor,
        } => {
            setup::ensure_all()?;
            if !nix_is_root() {
                bail!("the benchmark loads BPF programs: run it as root");
            }
            let bin = build_release()?;
            let sections = bench::run_all(&bin, reps, round_trips, &only, anchor.as_deref())?;
            for (_, md) in &sections {
                println!("{md}");
            }
            if record {
                bench::record(&workspace_root().join("BENCHMARKS.md"), &sections)?;
                eprintln!("xtask: recorded in BENCHMARKS.md");
            }
        }
        Task::BenchWorkload { round_trips } => bench::syscalls::workload(round_trips)?,
        Task::BenchFaultsWorkload { mode, rounds } => bench::faults::workload(&mode, rounds)?,
        Task::BenchPollWorkload { calls } => bench::waits::poll_workload(calls)?,
        Task::Test { args } => {
            setup::ensure_all()?;
            let ci = env::var("CI").is_ok_and(|v| v == "true" || v == "1");
            if ci && !nix_is_root() {
                bail!("CI=true but not running as root: the BPF integration tests cannot run");
            }
            // The workspace lints (Cargo.toml's [workspace.lints]) first: a warning fails the
            // run, so CI catches what a local build only mentions.
            status(cargo().args([
                "clippy",
                "--workspace",
                "--all-targets",
                "--release",
                "--locked",
                "--",
                "-D",
                "warnings",
            ]))?;
            // The same lints on the kernel side (its own workspace, built for BPF).
            setup::ensure_ebpf_clippy()?;
            proclens_xtask::ebpf_build::clippy(
                &workspace_root(),
                &workspace_root().join("target/ebpf"),
            )?;
            // Integration tests pin CPUs and count switches system-wide: one at a time. Every
            // test binary runs, so one failure does not hide the others.
            let mut cmd = cargo();
            cmd.args([
                "test",
                "--release",
                "--locked",
                "--workspace",
                "--no-fail-fast",
            ]);
            cmd.args(&args);
            cmd.args(["--", "--test-threads=1"]);
            status(&mut cmd)?;
        }
        Task::TestKernels {
            kernels: list,
            keep,
            timeout,
            filter,
            repeat,
            binary_timeout,
            vcpus,
            binaries,
        } => {
            if !nix_is_root() {
                bail!("test-kernels needs root (it creates device nodes and installs packages)");
            }
            setup::ensure_toolchain()?;
            setup::ensure_kernel_tools()?;
            let bin = build_release()?;
            let opts = kernels::Options {
                kernels: list,
                keep,
                timeout: std::time::Duration::from_secs(timeout),
                vcpus,
                binaries,
                selection: kernels::Selection {
                    filter,
                    repeat,
                    binary_timeout_s: binary_timeout,
                },
            };
            if !kernels::run(&opts, &bin)? {
                return Ok(ExitCode::FAILURE);
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}

fn nix_is_root() -> bool {
    // SAFETY: geteuid has no preconditions.
    unsafe { libc::geteuid() == 0 }
}
