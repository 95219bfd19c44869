//! Interrupt-bound workloads: what timing every hard IRQ and softirq costs.
//!
//! Two threads of this process pass a 32-byte UDP datagram back and forth over loopback,
//! both pinned to CPU 1, timed inside the process:
//! - `local`: each datagram is received in `NET_RX` on CPU 1 itself, when its sender
//!   re-enables bottom halves (two softirqs per round trip);
//! - `rps`: loopback's receive processing is steered to CPU 0 (RPS), so each datagram is an
//!   IPI to CPU 0 (a hard IRQ), `NET_RX` there, and a wakeup back to CPU 1 (another IPI).
//!
//! Each runs untraced, under `proclens irq` (every handler timed, counted per CPU and
//! kind, charged to its victim) and under a bpftrace script that times the same handlers
//! per CPU and kind with log2 histograms and sums them per process; speed with `bpf_stats`
//! off, each program's ns per run from a second run with `bpf_stats` on.

use std::{
    fmt::Write as _,
    net::UdpSocket,
    path::Path,
    process::Command,
    sync::{Arc, Barrier},
    thread,
    time::Instant,
};

use anyhow::{Context as _, Result, bail};

use super::{
    Background,
    bpf_stats::{self, BpfStats},
    machine, median,
};

/// Round trips per run.
const ROUND_TRIPS: u32 = 20_000;

/// The tracepoints whose programs' cost is reported (entry and exit of each kind of
/// handler), found by attach point (`bpf_stats::find_attached`).
const PROGRAMS: [&str; 10] = [
    "softirq_entry",
    "softirq_exit",
    "irq_handler_entry",
    "irq_handler_exit",
    "local_timer_entry",
    "local_timer_exit",
    "call_function_single_entry",
    "call_function_single_exit",
    "reschedule_entry",
    "reschedule_exit",
];

/// bpftrace's equivalent: each handler timed per CPU (start times in a map by CPU), counted
/// at entry and its duration added per CPU and kind, with a log2 histogram, and per process.
fn bpftrace_script() -> String {
    // Not irq_work: the kernel refuses a perf event on `irq_work_exit` (EPERM), and
    // bpftrace 0.17 has no raw tracepoints; it runs a few times a second here.
    let vectors = [
        "local_timer",
        "reschedule",
        "call_function",
        "call_function_single",
    ];
    let mut s = String::from(
        r"
tracepoint:irq:softirq_entry { @soft_n[cpu, args->vec] = count(); @ss[cpu] = nsecs; }
tracepoint:irq:softirq_exit /@ss[cpu]/ { $d = nsecs - @ss[cpu]; @soft_ns[cpu, args->vec] = sum($d); @soft_h[cpu, args->vec] = hist($d); @soft_pid[pid] = sum($d); delete(@ss[cpu]); }
tracepoint:irq:irq_handler_entry { @hard_n[cpu, args->irq] = count(); @hs[cpu] = nsecs; }
tracepoint:irq:irq_handler_exit /@hs[cpu]/ { $d = nsecs - @hs[cpu]; @hard_ns[cpu, args->irq] = sum($d); @hard_h[cpu, args->irq] = hist($d); @hard_pid[pid] = sum($d); delete(@hs[cpu]); }
",
    );
    for v in vectors {
        let _ = write!(
            s,
            "tracepoint:irq_vectors:{v}_entry {{ @vec_n[cpu, \"{v}\"] = count(); @hs[cpu] = nsecs; }}\n\
             tracepoint:irq_vectors:{v}_exit /@hs[cpu]/ {{ $d = nsecs - @hs[cpu]; @vec_ns[cpu, \"{v}\"] = sum($d); @vec_h[cpu, \"{v}\"] = hist($d); @hard_pid[pid] = sum($d); delete(@hs[cpu]); }}\n"
        );
    }
    s
}

fn pin(cpu: usize) {
    // SAFETY: a zeroed cpu_set_t is an empty set; sched_setaffinity(0) is this thread.
    unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        libc::CPU_SET(cpu, &mut set);
        libc::sched_setaffinity(0, size_of::<libc::cpu_set_t>(), &raw const set);
    }
}

/// µs per round trip of a UDP ping-pong between two threads pinned to CPU 1.
fn pingpong() -> Result<f64> {
    let a = UdpSocket::bind("127.0.0.1:0")?;
    let b = UdpSocket::bind("127.0.0.1:0")?;
    a.connect(b.local_addr()?)?;
    b.connect(a.local_addr()?)?;
    let start = Arc::new(Barrier::new(2));
    let go = start.clone();
    let echo = thread::spawn(move || -> std::io::Result<()> {
        pin(1);
        go.wait();
        let mut buf = [0u8; 32];
        for _ in 0..ROUND_TRIPS {
            let n = b.recv(&mut buf)?;
            b.send(&buf[..n])?;
        }
        Ok(())
    });
    pin(1);
    start.wait();
    let buf = [7u8; 32];
    let mut back = [0u8; 32];
    let t = Instant::now();
    for _ in 0..ROUND_TRIPS {
        a.send(&buf)?;
        a.recv(&mut back)?;
    }
    let us = t.elapsed().as_secs_f64() * 1e6 / f64::from(ROUND_TRIPS);
    echo.join().expect("echo thread")?;
    Ok(us)
}

/// Steers loopback's receive processing to `mask` until dropped.
struct Rps {
    before: String,
}

const RPS: &str = "/sys/class/net/lo/queues/rx-0/rps_cpus";

impl Rps {
    fn set(mask: &str) -> Result<Self> {
        let before = std::fs::read_to_string(RPS).with_context(|| format!("reading {RPS}"))?;
        std::fs::write(RPS, mask).with_context(|| format!("writing {RPS}"))?;
        Ok(Self {
            before: before.trim().to_string(),
        })
    }
}

impl Drop for Rps {
    fn drop(&mut self) {
        let _ = std::fs::write(RPS, &self.before);
    }
}

enum Tracer {
    None,
    Proclens,
    Bpftrace,
}

struct Sample {
    us: f64,
    /// ns per run of each of [`PROGRAMS`] (`bpf_stats` on), where it ran.
    ns: Vec<Option<f64>>,
}

fn measure(tracer: &Tracer, proclens: &Path, stats: bool) -> Result<Sample> {
    let bg = match tracer {
        Tracer::None => None,
        Tracer::Proclens => {
            let mut c = Command::new(proclens);
            c.args(["irq", "--json", "--interval", "3600"]);
            Some(Background::start(c, 14)?)
        }
        Tracer::Bpftrace => {
            let mut c = Command::new("bpftrace");
            c.args(["-e", &bpftrace_script()]);
            Some(Background::start(c, 12)?)
        }
    };
    let progs: Vec<Option<u64>> = match &bg {
        Some(bg) if stats => PROGRAMS
            .iter()
            .map(|p| bpf_stats::find_attached(&bg.prog_ids(), p))
            .collect(),
        _ => vec![None; PROGRAMS.len()],
    };
    let _stats = if stats {
        Some(BpfStats::enable()?)
    } else {
        None
    };
    let before: Vec<Option<(u64, u64)>> = progs
        .iter()
        .map(|p| p.map(bpf_stats::prog_stats).transpose())
        .collect::<Result<_>>()?;
    let us = pingpong()?;
    let mut ns = Vec::new();
    for (p, b) in progs.iter().zip(before) {
        let after = p.map(bpf_stats::prog_stats).transpose()?;
        ns.push(match (b, after) {
            (Some((t0, n0)), Some((t1, n1))) if n1 > n0 + 100 => {
                Some((t1 - t0) as f64 / (n1 - n0) as f64)
            }
            _ => None,
        });
    }
    Ok(Sample { us, ns })
}

pub fn run(proclens: &Path, reps: usize) -> Result<String> {
    if Command::new("bpftrace").arg("--version").output().is_err() {
        bail!("bpftrace is not installed (cargo xtask setup)");
    }
    let tracers = [
        ("untraced", Tracer::None),
        ("proclens irq", Tracer::Proclens),
        ("bpftrace (same handlers timed)", Tracer::Bpftrace),
    ];
    let mut md = String::new();
    writeln!(
        md,
        "Interrupt-bound workload: {ROUND_TRIPS} UDP round trips over loopback between two threads pinned to CPU 1, timed inside the process; `local`: received on CPU 1 (two NET_RX per round trip, in the senders' own context); `rps`: receive steered to CPU 0 (per datagram an IPI and a NET_RX there, and a wakeup IPI back). {reps} interleaved runs per condition, medians; µs per round trip with bpf_stats off, ns per program run from a second run with bpf_stats on. {}.\n",
        machine()
    )?;
    writeln!(
        md,
        "| workload | condition | µs/round trip | slowdown | {} |",
        PROGRAMS.join(" ns | ") + " ns"
    )?;
    writeln!(md, "|---|---|---|---|{}", "---|".repeat(PROGRAMS.len()))?;
    for (workload, mask) in [("local", None), ("rps", Some("1"))] {
        let _rps = mask.map(Rps::set).transpose()?;
        let mut us: Vec<Vec<f64>> = vec![Vec::new(); tracers.len()];
        let mut ns: Vec<Vec<Vec<f64>>> = vec![vec![Vec::new(); PROGRAMS.len()]; tracers.len()];
        for rep in 0..reps {
            for (i, (name, t)) in tracers.iter().enumerate() {
                let speed = measure(t, proclens, false)?;
                us[i].push(speed.us);
                if !matches!(t, Tracer::None) {
                    let cost = measure(t, proclens, true)?;
                    for (j, v) in cost.ns.iter().enumerate() {
                        ns[i][j].extend(v);
                    }
                }
                eprintln!(
                    "bench irq: {workload} rep {rep} {name}: {:.2} µs/round trip",
                    speed.us
                );
            }
        }
        let base = median(&mut us[0].clone());
        for (i, (name, _)) in tracers.iter().enumerate() {
            let u = median(&mut us[i].clone());
            let cols: Vec<String> = ns[i]
                .iter()
                .map(|v| {
                    if v.is_empty() {
                        "-".into()
                    } else {
                        format!("{:.0}", median(&mut v.clone()))
                    }
                })
                .collect();
            writeln!(
                md,
                "| {workload} | {name} | {u:.2} | {:.3}× | {} |",
                u / base,
                cols.join(" | ")
            )?;
        }
    }
    Ok(md)
}
