//! Switch-bound workload: `perf bench sched pipe` pinned to one CPU (2 context switches
//! per operation), untraced, traced by proclens (counts + classification + run-queue
//! latency), and traced by an equivalent bpftrace per-tgid voluntary/involuntary counter.

use std::{fmt::Write as _, path::Path, process::Command};

use anyhow::{Context as _, Result, bail};

use super::{Background, bpf_stats, machine, median};

const LOOPS: &str = "500000";

/// bpftrace's equivalent of proclens's voluntary/involuntary count per process.
const BPFTRACE: &str = "tracepoint:sched:sched_switch { if (args->prev_state == 0 || args->prev_state == 256) { @inv[pid] = count(); } else { @vol[pid] = count(); } }";

/// usecs/op of one pinned run.
fn pipe_bench() -> Result<f64> {
    let out = Command::new("taskset")
        .args(["-c", "1", "perf", "bench", "sched", "pipe", "-l", LOOPS])
        .output()
        .context("running perf bench (install linux-perf: cargo xtask setup)")?;
    let text = String::from_utf8_lossy(&out.stdout);
    text.lines()
        .find_map(|l| {
            l.trim()
                .strip_suffix("usecs/op")
                .and_then(|v| v.trim().parse().ok())
        })
        .with_context(|| format!("no usecs/op in perf output: {text}"))
}

enum Tracer {
    None,
    Proclens,
    Bpftrace,
}

struct Sample {
    usecs_per_op: f64,
    ns_per_run: Option<f64>,
}

fn measure(tracer: &Tracer, proclens: &Path) -> Result<Sample> {
    let bg = match tracer {
        Tracer::None => None,
        Tracer::Proclens => {
            let mut c = Command::new(proclens);
            c.args(["top", "--json", "--interval", "3600"]);
            Some(Background::start(c, 3)?)
        }
        Tracer::Bpftrace => {
            let mut c = Command::new("bpftrace");
            c.args(["-e", BPFTRACE]);
            Some(Background::start(c, 1)?)
        }
    };
    let prog = match &bg {
        Some(bg) => Some(
            bpf_stats::find_named(&bg.prog_ids(), "sched_switch")
                .context("no sched_switch program found")?,
        ),
        None => None,
    };
    let before = prog.map(bpf_stats::prog_stats).transpose()?;
    let usecs_per_op = pipe_bench()?;
    let after = prog.map(bpf_stats::prog_stats).transpose()?;
    let ns_per_run = match (before, after) {
        (Some((t0, n0)), Some((t1, n1))) if n1 > n0 => Some((t1 - t0) as f64 / (n1 - n0) as f64),
        _ => None,
    };
    Ok(Sample {
        usecs_per_op,
        ns_per_run,
    })
}

pub fn run(proclens: &Path, reps: usize) -> Result<String> {
    if Command::new("bpftrace").arg("--version").output().is_err() {
        bail!("bpftrace is not installed (cargo xtask setup)");
    }
    let tracers = [
        ("untraced", Tracer::None),
        ("proclens", Tracer::Proclens),
        ("bpftrace", Tracer::Bpftrace),
    ];
    let mut usecs: Vec<Vec<f64>> = vec![Vec::new(); tracers.len()];
    let mut ns: Vec<Vec<f64>> = vec![Vec::new(); tracers.len()];
    for rep in 0..reps {
        for (i, (name, t)) in tracers.iter().enumerate() {
            let s = measure(t, proclens)?;
            eprintln!(
                "bench switches: rep {rep} {name}: {:.3} usecs/op, {:?} ns/run",
                s.usecs_per_op, s.ns_per_run
            );
            usecs[i].push(s.usecs_per_op);
            if let Some(n) = s.ns_per_run {
                ns[i].push(n);
            }
        }
    }
    let base = median(&mut usecs[0].clone());
    let bpftrace_ns = median(&mut ns[2].clone());
    let mut md = String::new();
    writeln!(
        md,
        "Switch-bound workload: `taskset -c 1 perf bench sched pipe -l {LOOPS}` (2 switches per op), {reps} interleaved runs per condition, medians. {}.\n",
        machine()
    )?;
    writeln!(
        md,
        "| condition | usecs/op | slowdown | sched_switch ns/run (bpf_stats) | ns/run vs bpftrace |"
    )?;
    writeln!(md, "|---|---|---|---|---|")?;
    for (i, (name, _)) in tracers.iter().enumerate() {
        let u = median(&mut usecs[i].clone());
        let n = median(&mut ns[i].clone());
        let (n_txt, ratio) = if ns[i].is_empty() {
            ("-".into(), "-".into())
        } else {
            (format!("{n:.1}"), format!("{:.2}×", n / bpftrace_ns))
        };
        writeln!(
            md,
            "| {name} | {u:.3} | {:.3}× | {n_txt} | {ratio} |",
            u / base
        )?;
    }
    writeln!(
        md,
        "\nproclens's program does more than the bpftrace counter: per-thread voluntary/involuntary, same/cross-process/idle classification, on-CPU/blocked/run-queue time and a run-queue histogram. Targets (issue 3): ns/run ≤ 0.7× bpftrace's; slowdown ≤ bpftrace's."
    )?;
    Ok(md)
}
