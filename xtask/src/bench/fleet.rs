//! The serve benchmark's fleet conditions: the idle processes spread over pods shaped as
//! the kubelet makes them (cgroups under `kubepods.slice`, with the kubelet's log
//! directories for their names), so `--labels ...,pod` attributes every one of them; and
//! `serve` beside a fork storm.

use std::{
    fs,
    path::{Path, PathBuf},
    process::Command,
    thread,
    time::{Duration, Instant},
};

use anyhow::{Context as _, Result, bail};

use super::serve::{Serve, cpu_seconds, scrape};

/// `n` pods' cgroups (systemd driver, containerd) and kubelet log directories; removed
/// on drop (after the processes in them are gone).
pub struct FakePods {
    cgroups: Vec<PathBuf>,
    made: Vec<PathBuf>,
    pub log_dir: PathBuf,
}

fn v2_root() -> Result<PathBuf> {
    let mi = fs::read_to_string("/proc/self/mountinfo")?;
    mi.lines()
        .find(|l| l.contains(" - cgroup2 "))
        .and_then(|l| l.split_whitespace().nth(4))
        .map(PathBuf::from)
        .context("no cgroup2 mount")
}

impl FakePods {
    pub fn make(n: usize) -> Result<Self> {
        let root = v2_root()?;
        let qos = root.join("kubepods.slice/kubepods-burstable.slice");
        let log_dir =
            std::env::temp_dir().join(format!("proclens-bench-pods-{}", std::process::id()));
        let mut pods = Self {
            cgroups: Vec::new(),
            made: Vec::new(),
            log_dir: log_dir.join("pods"),
        };
        for dir in [root.join("kubepods.slice"), qos.clone()] {
            if !dir.exists() {
                fs::create_dir(&dir)?;
                pods.made.push(dir);
            }
        }
        fs::create_dir_all(log_dir.join("containers"))?;
        for i in 0..n {
            let uid = format!("00000000-0000-4000-8000-{i:012}");
            let id = format!("{i:064x}");
            let pod = qos.join(format!(
                "kubepods-burstable-pod{}.slice",
                uid.replace('-', "_")
            ));
            fs::create_dir(&pod)?;
            pods.made.push(pod.clone());
            let scope = pod.join(format!("cri-containerd-{id}.scope"));
            fs::create_dir(&scope)?;
            pods.made.push(scope.clone());
            pods.cgroups.push(scope);
            fs::create_dir_all(log_dir.join(format!("pods/bench_idle-{i}_{uid}/idle")))?;
            fs::write(
                log_dir.join(format!("containers/idle-{i}_bench_idle-{id}.log")),
                "",
            )?;
        }
        Ok(pods)
    }

    /// Moves each process into a pod, round-robin.
    pub fn adopt(&self, pids: &[libc::pid_t]) -> Result<()> {
        for (i, pid) in pids.iter().enumerate() {
            let procs = self.cgroups[i % self.cgroups.len()].join("cgroup.procs");
            fs::write(&procs, pid.to_string())
                .with_context(|| format!("moving {pid} into {}", procs.display()))?;
        }
        Ok(())
    }
}

impl Drop for FakePods {
    fn drop(&mut self) {
        for dir in self.made.iter().rev() {
            // Emptied once the processes are reaped; give stragglers a moment.
            for _ in 0..50 {
                if fs::remove_dir(dir).is_ok() || !dir.exists() {
                    break;
                }
                thread::sleep(Duration::from_millis(20));
            }
        }
        if let Some(parent) = self.log_dir.parent() {
            let _ = fs::remove_dir_all(parent);
        }
    }
}

/// `processes` created by fork+exit+wait since boot (/proc/stat).
fn forks_since_boot() -> Result<u64> {
    fs::read_to_string("/proc/stat")?
        .lines()
        .find_map(|l| l.strip_prefix("processes "))
        .context("no processes line")?
        .trim()
        .parse()
        .context("bad processes line")
}

/// What `serve` cost during a fork storm.
pub struct Storm {
    pub cpu_pct: f64,
    pub forks_per_s: f64,
    pub lost_events: f64,
}

/// `serve extra`, scraped every second, beside `stress-ng --fork 2` for `secs`.
pub fn fork_storm(proclens: &Path, extra: &[&str], secs: u64) -> Result<Storm> {
    let serve = Serve::start(proclens, extra)?;
    thread::sleep(Duration::from_secs(3));
    let pid = serve.pid();
    let (cpu0, forks0, t0) = (cpu_seconds(pid)?, forks_since_boot()?, Instant::now());
    let mut storm = Command::new("stress-ng")
        .args(["--fork", "2", "--timeout", &format!("{secs}s"), "--quiet"])
        .spawn()
        .context("running stress-ng")?;
    for s in 1..=secs {
        scrape(serve.addr)?;
        thread::sleep((t0 + Duration::from_secs(s)).saturating_duration_since(Instant::now()));
    }
    if !storm.wait()?.success() {
        bail!("stress-ng failed");
    }
    let elapsed = t0.elapsed().as_secs_f64();
    let cpu = cpu_seconds(pid)? - cpu0;
    let forks = forks_since_boot()? - forks0;
    let body = scrape(serve.addr)?;
    let lost = body
        .lines()
        .find_map(|l| l.strip_prefix("proclens_lost_events_total "))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(f64::NAN);
    Ok(Storm {
        cpu_pct: 100.0 * cpu / elapsed,
        forks_per_s: forks as f64 / elapsed,
        lost_events: lost,
    })
}
