//! What `proclens serve` costs the machine it watches (issue 6: "scraping every second
//! costs the agent < 1% of a core with 1,000 processes").
//!
//! 1,000 idle-but-alive processes (forked from xtask; each sleeps 100 ms at a time, so it
//! switches and makes a syscall 10 times a second, and never forks) under 100 command
//! names; `proclens serve` runs beside them and `/metrics` is fetched once a second for
//! the window. proclens's CPU time (utime + stime from /proc/PID/stat) over the window
//! gives its share of one core; the last scrape gives the exposition's size and series
//! count; `VmRSS` its memory. The processes live in 20 pods' cgroups shaped as the kubelet
//! makes them, with its log directories (bench/fleet.rs), so pod labels name each one.
//! Conditions: scraped, not scraped (collection alone), collecting every second instead
//! of every 5 s, `--copies`, `--per-pid`, pod labels (`--labels comm,cgroup,unit,pod`).
//! Then what a traced process pays per syscall (the pipe round trips of the syscalls
//! section) untraced, under `serve` and under `serve --copies`; and the agent's CPU
//! beside a fork storm.
//!
//! Wiring (in bench/mod.rs): `mod serve;` and `("serve", serve::run(proclens, reps)?)`.

use std::{
    fmt::Write as _,
    fs,
    io::{BufRead as _, BufReader, Read as _, Write as _},
    net::{SocketAddr, TcpStream},
    path::Path,
    process::{Child, Command, Stdio},
    thread,
    time::{Duration, Instant},
};

use anyhow::{Context as _, Result, bail};

use proclens_xtask::idle::Idle;

use super::{
    fleet::{FakePods, Storm, fork_storm},
    machine, median,
};

const PROCESSES: usize = 1000;
const NAMES: usize = 100;
/// Seconds of each measured window (after a warm-up).
const WINDOW: u64 = 30;
const WARMUP: Duration = Duration::from_secs(5);
/// Round trips of the per-syscall cost runs (two syscalls each).
const ROUND_TRIPS: u64 = 200_000;

/// A `proclens serve` on a free loopback port; SIGINT on drop.
pub(super) struct Serve {
    child: Child,
    pub(super) addr: SocketAddr,
}

impl Serve {
    pub(super) fn start(proclens: &Path, extra: &[&str]) -> Result<Self> {
        let mut child = Command::new(proclens)
            .args(["serve", "--listen", "127.0.0.1:0"])
            .args(extra)
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .context("starting proclens serve")?;
        let mut stderr = BufReader::new(child.stderr.take().context("no stderr")?);
        // Warnings (--per-pid) come before the address.
        let mut line = String::new();
        let addr = loop {
            line.clear();
            if stderr.read_line(&mut line)? == 0 {
                bail!("proclens serve exited before serving");
            }
            if let Some(a) = line
                .trim()
                .strip_prefix("proclens: serving http://")
                .and_then(|r| r.strip_suffix("/metrics"))
            {
                break a.parse()?;
            }
            eprintln!("bench serve: proclens: {}", line.trim_end());
        };
        thread::spawn(move || {
            for l in stderr.lines().map_while(Result::ok) {
                eprintln!("bench serve: proclens: {l}");
            }
        });
        Ok(Self { child, addr })
    }

    pub(super) fn pid(&self) -> u32 {
        self.child.id()
    }
}

impl Drop for Serve {
    fn drop(&mut self) {
        // SAFETY: SIGINT to our own child.
        unsafe { libc::kill(self.child.id() as i32, libc::SIGINT) };
        let _ = self.child.wait();
    }
}

/// `GET /metrics`; the body.
pub(super) fn scrape(addr: SocketAddr) -> Result<String> {
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(5))?;
    s.set_read_timeout(Some(Duration::from_secs(10)))?;
    s.write_all(b"GET /metrics HTTP/1.0\r\nHost: bench\r\n\r\n")?;
    let mut resp = String::new();
    s.read_to_string(&mut resp)?;
    let (head, body) = resp.split_once("\r\n\r\n").context("no HTTP head")?;
    if !head.starts_with("HTTP/1.1 200") && !head.starts_with("HTTP/1.0 200") {
        bail!("scrape answered {}", head.lines().next().unwrap_or(""));
    }
    Ok(body.to_string())
}

/// utime + stime of `pid`, in seconds.
pub(super) fn cpu_seconds(pid: u32) -> Result<f64> {
    let stat = fs::read_to_string(format!("/proc/{pid}/stat"))?;
    let rest = stat.rsplit_once(')').context("bad stat")?.1;
    let f: Vec<&str> = rest.split_whitespace().collect();
    // After the command: state is field 3, utime 14, stime 15.
    let ticks: u64 = f[11].parse::<u64>()? + f[12].parse::<u64>()?;
    // SAFETY: sysconf has no preconditions.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as f64;
    Ok(ticks as f64 / hz)
}

fn rss_mib(pid: u32) -> Result<f64> {
    let status = fs::read_to_string(format!("/proc/{pid}/status"))?;
    let kib: f64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .context("no VmRSS")?
        .trim()
        .trim_end_matches("kB")
        .trim()
        .parse()?;
    Ok(kib / 1024.0)
}

fn load_average() -> String {
    fs::read_to_string("/proc/loadavg")
        .unwrap_or_default()
        .split_whitespace()
        .take(3)
        .collect::<Vec<_>>()
        .join(" ")
}

struct Sample {
    cpu_pct: f64,
    bytes: usize,
    series: usize,
    rss_mib: f64,
    scrape_ms: f64,
    load: String,
}

/// One window of `proclens serve extra`, scraped every second or not at all.
fn window(proclens: &Path, extra: &[&str], scraped: bool) -> Result<Sample> {
    let serve = Serve::start(proclens, extra)?;
    thread::sleep(WARMUP);
    let body = scrape(serve.addr)?;
    let pid = serve.pid();
    let cpu0 = cpu_seconds(pid)?;
    let t0 = Instant::now();
    let mut times = Vec::new();
    for s in 1..=WINDOW {
        if scraped {
            let t = Instant::now();
            scrape(serve.addr)?;
            times.push(t.elapsed().as_secs_f64() * 1e3);
        }
        let next = t0 + Duration::from_secs(s);
        thread::sleep(next.saturating_duration_since(Instant::now()));
    }
    let cpu = cpu_seconds(pid)? - cpu0;
    let secs = t0.elapsed().as_secs_f64();
    let body = if scraped { scrape(serve.addr)? } else { body };
    Ok(Sample {
        cpu_pct: 100.0 * cpu / secs,
        bytes: body.len(),
        series: body
            .lines()
            .filter(|l| !l.starts_with('#') && !l.is_empty())
            .count(),
        rss_mib: rss_mib(pid)?,
        scrape_ms: median(&mut times),
        load: load_average(),
    })
}

/// ns per syscall of the pipe round-trip workload under `serve extra` (None: untraced).
fn syscall_cost(proclens: &Path, extra: Option<&[&str]>) -> Result<f64> {
    let _serve = extra.map(|e| Serve::start(proclens, e)).transpose()?;
    if extra.is_some() {
        thread::sleep(Duration::from_secs(2));
    }
    super::syscalls::run_workload(&[], ROUND_TRIPS)
}

/// Pods the idle processes are spread over.
const PODS: usize = 20;
/// Seconds of each fork-storm window.
const STORM: u64 = 20;

pub fn run(proclens: &Path, reps: usize, anchor: Option<&Path>) -> Result<String> {
    let pods = FakePods::make(PODS)?;
    let pod_log_dir = pods.log_dir.to_string_lossy().into_owned();
    let pod_labels = [
        "--labels",
        "comm,cgroup,unit,pod",
        "--pod-log-dir",
        pod_log_dir.as_str(),
    ];
    let conditions: Vec<(&str, &[&str], bool)> = vec![
        ("serve (default --interval 5), scraped every 1 s", &[], true),
        ("serve, not scraped", &[], false),
        (
            "serve --interval 1, scraped every 1 s",
            &["--interval", "1"],
            true,
        ),
        ("serve --copies, scraped every 1 s", &["--copies"], true),
        (
            "serve --per-pid (--max-series 1000000), scraped every 1 s",
            &["--per-pid", "--max-series", "1000000"],
            true,
        ),
        (
            "serve --labels comm,cgroup,unit,pod, scraped every 1 s",
            &pod_labels,
            true,
        ),
    ];
    // The anchor's default conditions, in the same rounds.
    let anchored: Vec<(String, &Path, &[&str], bool)> = conditions
        .iter()
        .map(|(n, e, s)| (n.to_string(), proclens, *e, *s))
        .chain(anchor.into_iter().flat_map(|a| {
            [
                (
                    "anchor: serve (default --interval 5), scraped every 1 s".to_string(),
                    a,
                    &[][..],
                    true,
                ),
                ("anchor: serve, not scraped".to_string(), a, &[][..], false),
            ]
        }))
        .collect();
    let mut samples: Vec<Vec<Sample>> = anchored.iter().map(|_| Vec::new()).collect();
    {
        let names: Vec<String> = (0..NAMES).map(|i| format!("pl-idle-{i:03}")).collect();
        let idle = Idle::start(PROCESSES, &names, Duration::from_millis(100))?;
        pods.adopt(idle.pids())?;
        // One window per condition per round (interleaved); fewer rounds than the other
        // sections: each window is 30 s.
        for round in 0..reps.clamp(1, 2) {
            for (i, (name, bin, extra, scraped)) in anchored.iter().enumerate() {
                let s = window(bin, extra, *scraped)?;
                eprintln!(
                    "bench serve: round {round} {name}: {:.2}% of a core, {} bytes, {} series, RSS {:.1} MiB, scrape {:.1} ms, load {}",
                    s.cpu_pct, s.bytes, s.series, s.rss_mib, s.scrape_ms, s.load
                );
                samples[i].push(s);
            }
        }
    }
    let mut storms: Vec<(&str, &Path, &[&str])> = vec![
        ("serve", proclens, &[]),
        ("serve, pod labels", proclens, &pod_labels),
    ];
    if let Some(a) = anchor {
        storms.push(("anchor: serve", a, &[]));
    }
    let mut storm: Vec<Vec<Storm>> = storms.iter().map(|_| Vec::new()).collect();
    for _ in 0..reps.clamp(1, 3) {
        for (i, (name, bin, extra)) in storms.iter().enumerate() {
            let s = fork_storm(bin, extra, STORM)?;
            eprintln!(
                "bench serve: fork storm, {name}: {:.2}% of a core, {:.0} forks/s, {} lost events",
                s.cpu_pct, s.forks_per_s, s.lost_events
            );
            storm[i].push(s);
        }
    }
    drop(pods);
    let untraced: [(&str, Option<&[&str]>); 3] = [
        ("untraced", None),
        ("serve", Some(&[])),
        ("serve --copies", Some(&["--copies"])),
    ];
    let mut ns: Vec<Vec<f64>> = vec![Vec::new(); untraced.len()];
    for _ in 0..reps.max(1) {
        for (i, (name, extra)) in untraced.iter().enumerate() {
            let v = syscall_cost(proclens, *extra)?;
            eprintln!("bench serve: {name}: {v:.0} ns/syscall");
            ns[i].push(v);
        }
    }

    let mut md = String::new();
    writeln!(
        md,
        "`proclens serve` (default interval, 5 s, unless the condition says otherwise) beside {PROCESSES} idle processes forked by xtask under {NAMES} command names (`pl-idle-000`..), spread over {PODS} pods' cgroups (kubelet's systemd-driver layout, containerd, with its log directories), each sleeping 100 ms at a time (10 switches and 10 syscalls a second, no forks); `/metrics` fetched every second for {WINDOW} s after a {} s warm-up; proclens's utime+stime over the window. {}; medians of {} window(s) per condition, interleaved.\n",
        WARMUP.as_secs(),
        machine(),
        samples[0].len()
    )?;
    if let Some(a) = anchor {
        writeln!(
            md,
            "Rows marked anchor ran {} (an earlier build) in the same rounds, with its default flags: the machine's load moves every figure, the anchor tells a change from it.\n",
            a.display()
        )?;
    }
    writeln!(
        md,
        "| condition | CPU (% of one core) | /metrics bytes | series | RSS MiB | scrape ms | load avg (1/5/15 min) |"
    )?;
    writeln!(md, "|---|---:|---:|---:|---:|---:|---|")?;
    for (i, (name, _, _, scraped)) in anchored.iter().enumerate() {
        let s = &samples[i];
        let m = |f: fn(&Sample) -> f64| median(&mut s.iter().map(f).collect::<Vec<_>>());
        let scrape = if *scraped {
            format!("{:.1}", m(|s| s.scrape_ms))
        } else {
            "-".into()
        };
        writeln!(
            md,
            "| {name} | {:.2} | {:.0} | {:.0} | {:.1} | {scrape} | {} |",
            m(|s| s.cpu_pct),
            m(|s| s.bytes as f64),
            m(|s| s.series as f64),
            m(|s| s.rss_mib),
            s.last().map_or("", |s| s.load.as_str()),
        )?;
    }
    writeln!(
        md,
        "\nBeside a fork storm: `stress-ng --fork 2` for {STORM} s (and the idle processes gone), `/metrics` fetched every second; forks/s from /proc/stat; median of {} runs.\n",
        storm[0].len()
    )?;
    writeln!(
        md,
        "| condition | agent CPU (% of one core) | forks/s | lost events |"
    )?;
    writeln!(md, "|---|---:|---:|---:|")?;
    for (i, (name, _, _)) in storms.iter().enumerate() {
        let m = |f: fn(&Storm) -> f64| median(&mut storm[i].iter().map(f).collect::<Vec<_>>());
        writeln!(
            md,
            "| {name} | {:.2} | {:.0} | {:.0} |",
            m(|s| s.cpu_pct),
            m(|s| s.forks_per_s),
            m(|s| s.lost_events)
        )?;
    }
    let base = median(&mut ns[0].clone());
    writeln!(
        md,
        "\nWhat a traced process pays: {ROUND_TRIPS} one-byte pipe write+read round trips, ns per syscall, median of {} runs.\n",
        ns[0].len()
    )?;
    writeln!(md, "| tracing | ns per syscall | overhead | slowdown |")?;
    writeln!(md, "|---|---:|---:|---:|")?;
    for (i, (name, _)) in untraced.iter().enumerate() {
        let v = median(&mut ns[i].clone());
        writeln!(
            md,
            "| {name} | {v:.0} | {:.0} ns | {:.2}x |",
            v - base,
            v / base
        )?;
    }
    Ok(md)
}
