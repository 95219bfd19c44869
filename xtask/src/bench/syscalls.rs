//! `cargo xtask bench`: what tracing costs a syscall-heavy process.
//!
//! The workload (this binary re-executed as `xtask bench-workload N`) passes one byte
//! through a pipe N times: N write(2) + N read(2), timed inside the process so start-up
//! and attach time are not part of it. It runs untraced, under `proclens copies` (which
//! counts every syscall and accounts every read/write by path and fd kind), under a
//! bpftrace script that does the same work for these syscalls, and under `strace -c -f`.
//! The modes take turns, `runs` times each; medians are reported.

use std::fmt::Write as _;
use std::{
    io::{BufRead as _, BufReader, Read as _, Write as _},
    path::Path,
    process::{Child, Command, Stdio},
    sync::mpsc,
    thread,
    time::{Duration, Instant},
};

use anyhow::{Context as _, Result, bail};

/// The bpftrace equivalent of what proclens does for this workload: every syscall counted
/// per (pid, syscall), and each read/write's return value added per (pid, syscall, fd
/// kind), the kind read from task->files->fdt->fd[fd]->f_inode->i_mode at entry.
const BPFTRACE_SCRIPT: &str = r"
tracepoint:raw_syscalls:sys_enter { @sys[pid, args->id] = count(); }
tracepoint:syscalls:sys_enter_read, tracepoint:syscalls:sys_enter_write {
  $f = *(curtask->files->fdt->fd + (uint64)args->fd);
  @kind[tid] = $f->f_inode->i_mode & 0xf000;
  @op[tid] = args->__syscall_nr + 1;
}
tracepoint:syscalls:sys_exit_read, tracepoint:syscalls:sys_exit_write /@op[tid]/ {
  if (args->ret >= 0) {
    @bytes[pid, @op[tid], @kind[tid]] = sum(args->ret);
    @calls[pid, @op[tid], @kind[tid]] = count();
  } else {
    @errors[pid, @op[tid], @kind[tid]] = count();
  }
  delete(@op[tid]);
  delete(@kind[tid]);
}
";

/// The workload: `n` one-byte round trips through a pipe; prints the elapsed nanoseconds.
pub fn workload(n: u64) -> Result<()> {
    let (mut rx, mut tx) = std::io::pipe().context("pipe")?;
    let mut b = [1u8; 1];
    let start = Instant::now();
    for _ in 0..n {
        tx.write_all(&b)?;
        rx.read_exact(&mut b)?;
    }
    let ns = start.elapsed().as_nanos();
    println!("{ns}");
    Ok(())
}

/// Runs the workload (optionally under a wrapper command) and returns ns per syscall.
pub(super) fn run_workload(wrapper: &[&str], n: u64) -> Result<f64> {
    let me = std::env::current_exe()?;
    let mut cmd = match wrapper.split_first() {
        Some((prog, rest)) => {
            let mut c = Command::new(prog);
            c.args(rest).arg(&me);
            c
        }
        None => Command::new(&me),
    };
    cmd.args(["bench-workload", &n.to_string()])
        .stderr(Stdio::inherit());
    let out = cmd.output().with_context(|| format!("running {cmd:?}"))?;
    if !out.status.success() {
        bail!("{cmd:?} failed ({})", out.status);
    }
    let text = String::from_utf8_lossy(&out.stdout);
    let ns: f64 = text
        .lines()
        .last()
        .unwrap_or("")
        .trim()
        .parse()
        .with_context(|| format!("workload printed {text:?}"))?;
    Ok(ns / (2 * n) as f64)
}

/// A tracer running in the background until dropped.
pub(super) struct Tracer {
    child: Child,
    interrupt: bool,
}

impl Tracer {
    /// Starts `cmd` and waits until a line of its stdout satisfies `ready`; the rest of its
    /// output is drained (and dropped) so it never blocks on a full pipe.
    pub(super) fn start(
        mut cmd: Command,
        ready: impl Fn(&str) -> bool + Send + 'static,
        interrupt: bool,
    ) -> Result<Self> {
        let mut child = cmd
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .with_context(|| format!("starting {cmd:?}"))?;
        let stdout = child.stdout.take().context("no stdout")?;
        let (tx, rx) = mpsc::channel();
        thread::spawn(move || {
            let mut told = false;
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if !told && ready(&line) {
                    told = true;
                    let _ = tx.send(());
                }
            }
        });
        let tracer = Self { child, interrupt };
        rx.recv_timeout(Duration::from_mins(1))
            .with_context(|| format!("{cmd:?} did not become ready"))?;
        Ok(tracer)
    }
}

impl Drop for Tracer {
    fn drop(&mut self) {
        if self.interrupt {
            // bpftrace detaches and prints its maps on SIGINT.
            let _ = Command::new("kill")
                .args(["-INT", &self.child.id().to_string()])
                .status();
            for _ in 0..100 {
                if matches!(self.child.try_wait(), Ok(Some(_))) {
                    return;
                }
                thread::sleep(Duration::from_millis(50));
            }
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn median(mut v: Vec<f64>) -> f64 {
    super::median(&mut v)
}

fn which(tool: &str) -> bool {
    Command::new("sh")
        .args(["-c", &format!("command -v {tool}")])
        .stdout(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

/// The modes, each a way to run the workload.
enum Mode<'a> {
    Untraced,
    Proclens(&'a Path),
    Bpftrace(&'a Path),
    Strace,
}

impl Mode<'_> {
    fn label(&self) -> &'static str {
        match self {
            Mode::Untraced => "untraced",
            Mode::Proclens(_) => "proclens copies",
            Mode::Bpftrace(_) => "bpftrace (equivalent script)",
            Mode::Strace => "strace -c -f",
        }
    }

    fn run(&self, n: u64) -> Result<f64> {
        match self {
            Mode::Untraced => run_workload(&[], n),
            Mode::Proclens(proclens) => {
                let mut cmd = Command::new(proclens);
                cmd.args(["copies", "--json", "--interval", "1"]);
                let _t = Tracer::start(cmd, |l| l.contains("copies_system"), true)?;
                run_workload(&[], n)
            }
            Mode::Bpftrace(script) => {
                let mut cmd = Command::new("bpftrace");
                cmd.arg(script);
                let _t = Tracer::start(cmd, |l| l.starts_with("Attaching"), true)?;
                run_workload(&[], n)
            }
            Mode::Strace => run_workload(&["strace", "-c", "-f", "-o", "/dev/null"], n),
        }
    }
}

/// Runs every mode, interleaved; returns a Markdown section for BENCHMARKS.md.
pub fn run(proclens: &Path, n: u64, runs: u32) -> Result<String> {
    for tool in ["bpftrace", "strace"] {
        if !which(tool) {
            bail!("{tool} is not installed: run `cargo xtask setup`");
        }
    }
    let script = std::env::temp_dir().join(format!("proclens-bench-{}.bt", std::process::id()));
    std::fs::write(&script, BPFTRACE_SCRIPT)?;
    let modes = [
        Mode::Untraced,
        Mode::Proclens(proclens),
        Mode::Bpftrace(&script),
        Mode::Strace,
    ];
    let mut all: Vec<Vec<f64>> = vec![Vec::new(); modes.len()];
    let measured = (0..runs).try_for_each(|rep| {
        for (i, m) in modes.iter().enumerate() {
            let ns = m.run(n)?;
            eprintln!(
                "xtask: bench syscalls: rep {rep} {}: {ns:.0} ns/syscall",
                m.label()
            );
            all[i].push(ns);
        }
        Ok::<_, anyhow::Error>(())
    });
    let _ = std::fs::remove_file(&script);
    measured?;
    let rows: Vec<(&str, f64)> = modes
        .iter()
        .zip(all)
        .map(|(m, v)| (m.label(), median(v)))
        .collect();

    let base = rows[0].1;
    let mut md = String::new();
    writeln!(
        md,
        "Syscall-heavy workload: {n} one-byte write+read round trips through a pipe ({} syscalls), timed inside the process, {runs} interleaved runs per mode, medians. {}.\n",
        2 * n,
        super::machine()
    )?;
    writeln!(
        md,
        "| mode | ns per syscall | overhead per syscall | slowdown |"
    )?;
    writeln!(
        md,
        "|------|---------------:|---------------------:|---------:|"
    )?;
    for (label, ns) in &rows {
        writeln!(
            md,
            "| {label} | {ns:.0} | {:.0} ns | {:.2}x |",
            ns - base,
            ns / base
        )?;
    }
    let ratio = (rows[1].1 - base) / (rows[2].1 - base);
    writeln!(
        md,
        "\nproclens's overhead per syscall is {ratio:.2}x bpftrace's (target, issue 17: at most 0.6x): {}.",
        if ratio <= 0.6 { "met" } else { "NOT met" }
    )?;
    Ok(md)
}
