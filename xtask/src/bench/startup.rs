//! What a short proclens invocation costs its user in wall time: from its start to its
//! first output (BTF, loading and attaching, the first interval or the command) and to its
//! exit (detaching every program); and how long the live table takes from `q` to its
//! exit (the shell's prompt), in a real terminal (tmux). Each case runs `reps` times,
//! interleaved; medians.

use std::{
    fmt::Write as _,
    io::Read as _,
    path::Path,
    process::{Command, Stdio},
    time::Instant,
};

use anyhow::{Context as _, Result, bail};

use super::{machine, median};

/// The invocations measured: `run` of a command that does nothing (with its syscall and
/// copy accounting), and one short interval of `top` and `copies`.
const CASES: [&[&str]; 3] = [
    &["run", "--", "true"],
    &["top", "--count", "1", "--interval", "0.1"],
    &["copies", "--count", "1", "--interval", "0.1"],
];

/// The live table's invocations whose quitting is timed.
const TUI_CASES: [&[&str]; 2] = [&["top"], &["top", "--syscalls"]];

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

/// Seconds from `q` to the live table's exit (a zombie, or gone): `proclens ARGS` in a
/// tmux terminal of its own, `q` sent once its table is on screen and two reports (1 s
/// each) have come in.
fn quit_once(proclens: &Path, args: &[&str]) -> Result<f64> {
    let name = format!("proclens-bench-{}", std::process::id());
    let tmux = |a: &[&str]| -> Result<std::process::Output> {
        Command::new("tmux")
            .args(["-L", &name])
            .args(a)
            .output()
            .context("running tmux (cargo xtask setup installs it)")
    };
    let line = format!("{} {}", proclens.display(), args.join(" "));
    tmux(&[
        "new-session",
        "-d",
        "-s",
        &name,
        "-x",
        "160",
        "-y",
        "40",
        &line,
    ])?;
    let result = (|| {
        let pane =
            String::from_utf8(tmux(&["list-panes", "-t", &name, "-F", "#{pane_pid}"])?.stdout)?;
        let pid: u32 = pane.trim().parse().context("the pane's pid")?;
        // The first report is on screen once the table has rows: the header line.
        let deadline = Instant::now() + std::time::Duration::from_secs(30);
        loop {
            let screen =
                String::from_utf8_lossy(&tmux(&["capture-pane", "-p", "-t", &name])?.stdout)
                    .into_owned();
            if screen.contains("PID") && screen.contains("COMMAND") {
                break;
            }
            if Instant::now() > deadline {
                bail!("proclens {} drew no table: {screen}", args.join(" "));
            }
            std::thread::sleep(std::time::Duration::from_millis(50));
        }
        std::thread::sleep(std::time::Duration::from_millis(2100));
        let start = Instant::now();
        tmux(&["send-keys", "-t", &name, "q"])?;
        // Exited once a zombie: reaping it is tmux's part, which here sometimes came 1-2 s
        // later (with any build), while a shell waiting for it reaps it at once.
        let exited = || {
            std::fs::read_to_string(format!("/proc/{pid}/stat")).map_or(true, |s| {
                s.rsplit_once(')')
                    .is_some_and(|(_, r)| r.trim_start().starts_with('Z'))
            })
        };
        while !exited() {
            if start.elapsed().as_secs() > 30 {
                bail!("proclens {} did not quit", args.join(" "));
            }
            std::thread::sleep(std::time::Duration::from_millis(1));
        }
        Ok(start.elapsed().as_secs_f64())
    })();
    let _ = tmux(&["kill-server"]);
    result
}

pub fn run(proclens: &Path, reps: usize) -> Result<String> {
    let mut first: Vec<Vec<f64>> = vec![Vec::new(); CASES.len()];
    let mut exit: Vec<Vec<f64>> = vec![Vec::new(); CASES.len()];
    let mut quit: Vec<Vec<f64>> = vec![Vec::new(); TUI_CASES.len()];
    for _ in 0..reps {
        for (i, args) in CASES.iter().enumerate() {
            let (f, e) = once(proclens, args)?;
            first[i].push(f);
            exit[i].push(e);
        }
        for (i, args) in TUI_CASES.iter().enumerate() {
            quit[i].push(quit_once(proclens, args)?);
        }
    }
    let mut md = String::new();
    writeln!(
        md,
        "Wall time of short invocations, from start to the first output and to exit, and of quitting the live table (`q` sent in a tmux terminal once its first report is on screen, until proclens has exited: a zombie, as tmux reaps it when it will), {reps} interleaved runs, medians. {}.\n",
        machine()
    )?;
    writeln!(md, "| invocation | first output (s) | exit (s) |")?;
    writeln!(md, "|---|---:|---:|")?;
    for (i, args) in CASES.iter().enumerate() {
        writeln!(
            md,
            "| `proclens {}` | {:.2} | {:.2} |",
            args.join(" "),
            median(&mut first[i]),
            median(&mut exit[i])
        )?;
    }
    for (i, args) in TUI_CASES.iter().enumerate() {
        writeln!(
            md,
            "| `proclens {}` (live table), `q` | - | {:.3} after `q` |",
            args.join(" "),
            median(&mut quit[i])
        )?;
    }
    let run_true = median(&mut exit[0]);
    let q = median(&mut quit[0]);
    writeln!(
        md,
        "\nTargets (issue 17): `run -- true` at most 0.3 s wall: {} ({run_true:.2} s); `q` back to the prompt in at most 0.3 s: {} ({q:.3} s).",
        if run_true <= 0.3 { "met" } else { "NOT met" },
        if q <= 0.3 { "met" } else { "NOT met" },
    )?;
    Ok(md)
}
