//! What tracing *another* process costs (issue 17): `taskset -c 1 dd if=/dev/zero
//! of=/dev/null bs=1 count=N` (2N syscalls) timed untraced, and while proclens or
//! bpftrace trace only an idle process: `copies -p IDLE`, `top -p IDLE` and `top
//! --syscalls -p IDLE` against bpftrace's pid predicate on the read/write exits (the
//! copy paths' equivalent) and on `raw_syscalls:sys_enter` (the syscall counter's).
//! A filter that works costs the unrelated dd next to nothing. Conditions interleaved,
//! medians.

use std::{
    fmt::Write as _,
    path::Path,
    process::{Child, Command, Stdio},
    time::Instant,
};

use anyhow::{Context as _, Result, bail};

use super::{machine, median, syscalls::Tracer};

const BYTES: &str = "1000000";

/// One traced condition: what runs beside dd.
enum Beside {
    Nothing,
    /// proclens with these arguments (`-p IDLE` added); ready at its first report.
    Proclens(&'static [&'static str]),
    /// bpftrace with this program (`$IDLE` replaced by the idle process's pid).
    Bpftrace(&'static str),
}

const CONDITIONS: [(&str, Beside); 6] = [
    ("untraced", Beside::Nothing),
    (
        "proclens copies -p IDLE",
        Beside::Proclens(&["copies", "--json", "--interval", "0.5"]),
    ),
    (
        "bpftrace: pid predicate on sys_exit_read/sys_exit_write",
        Beside::Bpftrace(
            "tracepoint:syscalls:sys_exit_read, tracepoint:syscalls:sys_exit_write /pid == $IDLE/ { @b[pid] = sum(args->ret); }",
        ),
    ),
    (
        "proclens top -p IDLE",
        Beside::Proclens(&["top", "--json", "--interval", "0.5"]),
    ),
    (
        "proclens top --syscalls -p IDLE",
        Beside::Proclens(&["top", "--syscalls", "--json", "--interval", "0.5"]),
    ),
    (
        "bpftrace: pid predicate on raw_syscalls:sys_enter",
        Beside::Bpftrace("tracepoint:raw_syscalls:sys_enter /pid == $IDLE/ { @[pid] = count(); }"),
    ),
];

/// Seconds dd takes, pinned to CPU 1.
fn dd() -> Result<f64> {
    let start = Instant::now();
    let st = Command::new("taskset")
        .args(["-c", "1", "dd", "if=/dev/zero", "of=/dev/null", "bs=1"])
        .arg(format!("count={BYTES}"))
        .stderr(Stdio::null())
        .status()
        .context("running dd")?;
    if !st.success() {
        bail!("dd failed: {st}");
    }
    Ok(start.elapsed().as_secs_f64())
}

fn beside(what: &Beside, proclens: &Path, idle: u32) -> Result<Option<Tracer>> {
    Ok(match what {
        Beside::Nothing => None,
        Beside::Proclens(args) => {
            let mut c = Command::new(proclens);
            c.args(*args).args(["-p", &idle.to_string()]);
            Some(Tracer::start(c, |l| l.starts_with('{'), true)?)
        }
        Beside::Bpftrace(prog) => {
            let mut c = Command::new("bpftrace");
            c.args(["-e", &prog.replace("$IDLE", &idle.to_string())]);
            Some(Tracer::start(c, |l| l.starts_with("Attaching"), true)?)
        }
    })
}

/// The idle process everything but dd is told to watch.
struct Idle(Child);

impl Drop for Idle {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

pub fn run(proclens: &Path, reps: usize) -> Result<String> {
    let idle = Idle(Command::new("sleep").arg("100000").spawn()?);
    let pid = idle.0.id();
    let mut secs: Vec<Vec<f64>> = vec![Vec::new(); CONDITIONS.len()];
    for rep in 0..reps {
        for (i, (name, what)) in CONDITIONS.iter().enumerate() {
            let _t = beside(what, proclens, pid)?;
            let s = dd()?;
            eprintln!("bench filtered: rep {rep} {name}: {s:.3} s");
            secs[i].push(s);
        }
    }
    let m: Vec<f64> = secs.iter_mut().map(|v| median(v)).collect();
    let calls = 2.0 * BYTES.parse::<f64>()?;
    let mut md = String::new();
    writeln!(
        md,
        "Another process's syscalls while proclens and bpftrace trace only an idle one: `taskset -c 1 dd if=/dev/zero of=/dev/null bs=1 count={BYTES}` ({} syscalls), wall time, {reps} interleaved runs per condition, medians. {}.\n",
        2 * BYTES.parse::<u64>()?,
        machine()
    )?;
    writeln!(
        md,
        "| beside dd | dd takes (s) | slowdown | overhead per syscall |"
    )?;
    writeln!(md, "|---|---:|---:|---:|")?;
    for (i, (name, _)) in CONDITIONS.iter().enumerate() {
        writeln!(
            md,
            "| {name} | {:.3} | {:.2}× | {:.0} ns |",
            m[i],
            m[i] / m[0],
            (m[i] - m[0]) / calls * 1e9
        )?;
    }
    let verdict = |ours: usize, theirs: usize| {
        if m[ours] <= m[theirs] {
            "met"
        } else {
            "NOT met"
        }
    };
    writeln!(
        md,
        "\nTargets (issue 17): `copies -p` at most bpftrace's pid predicate on the read/write exits: {} ({:.2}× vs {:.2}×); `top -p` and `top --syscalls -p` at most bpftrace's pid predicate on raw_syscalls:sys_enter: {} and {} ({:.2}× and {:.2}× vs {:.2}×).",
        verdict(1, 2),
        m[1] / m[0],
        m[2] / m[0],
        verdict(3, 5),
        verdict(4, 5),
        m[3] / m[0],
        m[4] / m[0],
        m[5] / m[0],
    )?;
    Ok(md)
}
