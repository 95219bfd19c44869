//! Issue 7, "under load": a fork storm (`stress-ng --vfork 1`), a syscall storm (`dd
//! bs=1` from /dev/zero to /dev/null: one read and one write per byte) and a switch storm
//! (`stress-ng --switch 1`) at the same time, untraced and under `proclens copies --json
//! --interval 1` (every program attached: switches, lifecycle, syscall counts, copy
//! paths; the ring buffer drained). Rates come from the kernel's own counters
//! (/proc/stat `processes` and `ctxt`) and from dd's byte count; proclens's RSS is
//! sampled from /proc/PID/status, its CPU time from /proc/PID/stat, and its drop counters
//! from its last report (they are the kernel's COUNTERS, see tests/load.rs).

use std::{
    fmt::Write as _,
    fs,
    io::{BufRead as _, BufReader},
    path::Path,
    process::{Child, Command, Stdio},
    sync::{Arc, Mutex},
    thread,
    time::{Duration, Instant},
};

use anyhow::{Context as _, Result, bail};

use super::machine;

/// Seconds of storm.
const SECS: u64 = 10;

/// /proc/stat's `processes` (forks since boot) and `ctxt` (context switches since boot).
fn proc_stat() -> Result<(u64, u64)> {
    let s = fs::read_to_string("/proc/stat")?;
    let get = |k: &str| -> Result<u64> {
        s.lines()
            .find_map(|l| l.strip_prefix(k))
            .and_then(|v| v.trim().parse().ok())
            .with_context(|| format!("no `{k}` in /proc/stat"))
    };
    Ok((get("processes ")?, get("ctxt ")?))
}

fn status_kib(pid: u32, field: &str) -> u64 {
    fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix(field))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        })
        .unwrap_or(0)
}

/// utime + stime of a process, in seconds.
fn cpu_s(pid: u32) -> f64 {
    // SAFETY: sysconf has no preconditions.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as f64;
    fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        .and_then(|s| {
            let rest = s.rsplit_once(')')?.1.to_string();
            let f: Vec<&str> = rest.split_whitespace().collect();
            // rest[0] is field 3; utime is 14, stime 15.
            Some(f.get(11)?.parse::<f64>().ok()? + f.get(12)?.parse::<f64>().ok()?)
        })
        .map_or(0.0, |t| t / hz)
}

/// What one storm achieved.
#[derive(Debug, Default)]
#[allow(
    clippy::struct_field_names,
    reason = "the suffix is the unit, as in the table the storms fill"
)]
struct Storm {
    forks_per_s: f64,
    switches_per_s: f64,
    syscalls_per_s: f64,
}

/// Runs the three storms for SECS seconds; `during` is called every 100 ms meanwhile.
fn storm(mut during: impl FnMut()) -> Result<Storm> {
    let spawn = |cmd: &mut Command| -> Result<Child> {
        cmd.stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .with_context(|| format!("starting {cmd:?} (cargo xtask setup installs it)"))
    };
    let (p0, c0) = proc_stat()?;
    let t0 = Instant::now();
    let t = SECS.to_string();
    let mut forks = spawn(Command::new("stress-ng").args(["--vfork", "1", "-t", &t]))?;
    let mut switch = spawn(Command::new("stress-ng").args(["--switch", "1", "-t", &t]))?;
    let mut dd = spawn(Command::new("timeout").args([
        "-s",
        "INT",
        &t,
        "dd",
        "if=/dev/zero",
        "of=/dev/null",
        "bs=1",
    ]))?;
    while t0.elapsed() < Duration::from_secs(SECS) {
        during();
        thread::sleep(Duration::from_millis(100));
    }
    let mut dd_err = String::new();
    for c in [&mut forks, &mut switch, &mut dd] {
        c.wait()?;
    }
    std::io::Read::read_to_string(&mut dd.stderr.take().unwrap(), &mut dd_err)?;
    let secs = t0.elapsed().as_secs_f64();
    let (p1, c1) = proc_stat()?;
    // dd: "N bytes (...) copied, T s, R MB/s": one read and one write per byte.
    let (bytes, dd_secs) = dd_err
        .lines()
        .find(|l| l.contains("bytes") && l.contains("copied"))
        .and_then(|l| {
            let n: f64 = l.split_whitespace().next()?.parse().ok()?;
            let s: f64 = l
                .split(", ")
                .nth(1)?
                .split_whitespace()
                .next()?
                .parse()
                .ok()?;
            Some((n, s))
        })
        .with_context(|| format!("no byte count in dd's output: {dd_err}"))?;
    Ok(Storm {
        forks_per_s: (p1 - p0) as f64 / secs,
        switches_per_s: (c1 - c0) as f64 / secs,
        syscalls_per_s: 2.0 * bytes / dd_secs,
    })
}

pub fn run(proclens: &Path) -> Result<String> {
    let base = storm(|| {})?;
    eprintln!("bench load: untraced {base:?}");

    let mut child = Command::new(proclens)
        .args(["copies", "--json", "--interval", "1"])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .context("starting proclens")?;
    let pid = child.id();
    let last: Arc<Mutex<(u64, Option<serde_json::Value>)>> = Arc::new(Mutex::new((0, None)));
    let out = child.stdout.take().unwrap();
    let seen = last.clone();
    thread::spawn(move || {
        for line in BufReader::new(out).lines() {
            let Ok(line) = line else { break };
            if line.contains("\"copies_system\"")
                && let Ok(v) = serde_json::from_str::<serde_json::Value>(&line)
            {
                let mut s = seen.lock().unwrap();
                s.0 += 1;
                s.1 = Some(v);
            }
        }
    });
    // The first report means everything is attached.
    let deadline = Instant::now() + Duration::from_secs(30);
    while last.lock().unwrap().0 == 0 {
        if Instant::now() > deadline {
            let _ = child.kill();
            bail!("proclens copies printed no report within 30 s");
        }
        thread::sleep(Duration::from_millis(100));
    }
    let rss_start = status_kib(pid, "VmRSS:");
    let cpu0 = cpu_s(pid);
    let reports0 = last.lock().unwrap().0;
    let mut peak = rss_start;
    let traced = storm(|| peak = peak.max(status_kib(pid, "VmRSS:")))?;
    let cpu = cpu_s(pid) - cpu0;
    // Two more reports: the storm's last interval, then a quiet one.
    let n = last.lock().unwrap().0;
    let deadline = Instant::now() + Duration::from_secs(10);
    while last.lock().unwrap().0 < n + 2 && Instant::now() < deadline {
        thread::sleep(Duration::from_millis(100));
    }
    let rss_end = status_kib(pid, "VmRSS:");
    let (reports, report) = {
        let s = last.lock().unwrap();
        (s.0 - reports0, s.1.clone().unwrap_or_default())
    };
    // SAFETY: SIGINT to our own child, so it detaches cleanly.
    unsafe { libc::kill(pid as i32, libc::SIGINT) };
    let _ = child.wait();
    eprintln!("bench load: traced {traced:?}, report {report}");

    let get = |k: &str| report[k].as_u64().unwrap_or(0);
    let mut md = String::new();
    writeln!(
        md,
        "Combined storm, {SECS} s: `stress-ng --vfork 1` + `stress-ng --switch 1` + `dd if=/dev/zero of=/dev/null bs=1` at once, untraced and under `proclens copies --json --interval 1` (every program attached). Forks and switches from /proc/stat (`processes`, `ctxt`), syscalls from dd's byte count (a read and a write per byte); proclens's drop counters from its last report. {}.\n",
        machine()
    )?;
    writeln!(md, "| | untraced | under proclens |")?;
    writeln!(md, "|---|---:|---:|")?;
    writeln!(
        md,
        "| fork+exit/s (all processes) | {:.0} | {:.0} |",
        base.forks_per_s, traced.forks_per_s
    )?;
    writeln!(
        md,
        "| syscalls/s (dd) | {:.0} | {:.0} |",
        base.syscalls_per_s, traced.syscalls_per_s
    )?;
    writeln!(
        md,
        "| context switches/s (all CPUs) | {:.0} | {:.0} |",
        base.switches_per_s, traced.switches_per_s
    )?;
    writeln!(md)?;
    writeln!(md, "| proclens under the storm | |")?;
    writeln!(md, "|---|---:|")?;
    writeln!(
        md,
        "| reports in {SECS} s + 2 intervals (interval 1 s) | {reports} |"
    )?;
    writeln!(
        md,
        "| lost events (ring buffer full) | {} |",
        get("lost_events")
    )?;
    writeln!(
        md,
        "| map full: threads / calls in flight / copy paths / syscalls / names | {} / {} / {} / {} / {} |",
        get("untracked_threads"),
        get("inflight_full"),
        get("copy_map_full"),
        get("syscall_map_full"),
        get("comm_map_full")
    )?;
    writeln!(
        md,
        "| RSS start / end / peak (sampled every 100 ms) | {:.1} / {:.1} / {:.1} MiB |",
        rss_start as f64 / 1024.0,
        rss_end as f64 / 1024.0,
        peak as f64 / 1024.0
    )?;
    writeln!(
        md,
        "| CPU time (user + system) during the storm | {cpu:.2} s ({:.0}% of one CPU) |",
        100.0 * cpu / SECS as f64
    )?;
    Ok(md)
}
