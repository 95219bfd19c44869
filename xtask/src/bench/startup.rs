//! What a short proclens invocation costs its user in wall time: from its start to its
//! first output (BTF, loading and attaching, the first interval or the command) and to its
//! exit (detaching every program). Each case runs `reps` times; medians.

use std::{
    fmt::Write as _,
    io::Read as _,
    path::Path,
    process::{Command, Stdio},
    time::Instant,
};

use anyhow::{Context as _, Result, bail};

use super::{machine, median};

/// The invocations measured: `run` of a command that does nothing (with its copy
/// accounting: ~30 classic tracepoints), and one short interval of `top` and `copies`.
const CASES: [&[&str]; 3] = [
    &["run", "--", "true"],
    &["top", "--count", "1", "--interval", "0.1"],
    &["copies", "--count", "1", "--interval", "0.1"],
];

/// Seconds from start to the first byte of output (stdout or stderr) and to exit.
fn once(proclens: &Path, args: &[&str]) -> Result<(f64, f64)> {
    let start = Instant::now();
    // Both streams into one pipe: `run` reports on stderr, the other views on stdout.
    let mut child = Command::new("sh")
        .arg("-c")
        .arg("exec \"$0\" \"$@\" 2>&1")
        .arg(proclens)
        .args(args)
        .stdout(Stdio::piped())
        .spawn()
        .with_context(|| format!("starting proclens {}", args.join(" ")))?;
    let mut out = child.stdout.take().context("no stdout pipe")?;
    let mut first = [0u8; 1];
    let got = out.read(&mut first)?;
    let first_s = start.elapsed().as_secs_f64();
    let mut rest = Vec::new();
    out.read_to_end(&mut rest)?;
    let status = child.wait()?;
    let exit_s = start.elapsed().as_secs_f64();
    if got == 0 || !status.success() {
        bail!(
            "proclens {} failed ({status}): {}",
            args.join(" "),
            String::from_utf8_lossy(&rest)
        );
    }
    Ok((first_s, exit_s))
}

pub fn run(proclens: &Path, reps: usize) -> Result<String> {
    let mut md = String::new();
    writeln!(
        md,
        "Wall time of short invocations, from start to the first output and to exit, median of {reps} runs. {}.\n",
        machine()
    )?;
    writeln!(md, "| invocation | first output (s) | exit (s) |")?;
    writeln!(md, "|---|---:|---:|")?;
    for args in CASES {
        let (mut first, mut exit) = (Vec::new(), Vec::new());
        for _ in 0..reps {
            let (f, e) = once(proclens, args)?;
            first.push(f);
            exit.push(e);
        }
        writeln!(
            md,
            "| `proclens {}` | {:.2} | {:.2} |",
            args.join(" "),
            median(&mut first),
            median(&mut exit)
        )?;
    }
    Ok(md)
}
