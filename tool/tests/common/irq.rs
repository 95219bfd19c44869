//! The kernel's own interrupt counters (/proc/softirqs, /proc/interrupts, /proc/stat) and
//! configuration, a guard that steers loopback's receive processing to one CPU (RPS), and
//! `proclens irq`'s JSON reports read whole.

use std::{collections::BTreeMap, fs, time::Duration};

use serde_json::Value;

use super::{Proclens, workload::Workload};

/// /proc/softirqs: per CPU, the ten vectors' counts.
pub fn softirqs() -> Vec<[u64; 10]> {
    let text = fs::read_to_string("/proc/softirqs").unwrap();
    let mut lines = text.lines();
    let cpus = lines.next().unwrap().split_whitespace().count();
    let mut out = vec![[0u64; 10]; cpus];
    for (v, l) in lines.enumerate().take(10) {
        let (_, counts) = l.split_once(':').unwrap();
        for (c, n) in counts.split_whitespace().enumerate().take(cpus) {
            out[c][v] = n.parse().unwrap();
        }
    }
    out
}

/// /proc/interrupts: per row (`36`, `LOC`), the per-CPU counts. Rows with one total only
/// (`ERR`, `MIS`) are left out.
pub fn interrupts() -> BTreeMap<String, Vec<u64>> {
    let text = fs::read_to_string("/proc/interrupts").unwrap();
    let mut lines = text.lines();
    let cpus = lines.next().unwrap().split_whitespace().count();
    let mut out = BTreeMap::new();
    for l in lines {
        let Some((row, rest)) = l.split_once(':') else {
            continue;
        };
        let counts: Vec<u64> = rest
            .split_whitespace()
            .take(cpus)
            .map_while(|t| t.parse().ok())
            .collect();
        if counts.len() == cpus {
            out.insert(row.trim().to_string(), counts);
        }
    }
    out
}

/// One CPU's line of /proc/stat: the times it spent in hard IRQs, in softirqs and stolen
/// by the hypervisor, in ns (the kernel prints them in clock ticks, `USER_HZ`, rounded
/// down from its ns).
#[derive(Debug, Clone, Copy)]
pub struct StatCpu {
    pub irq: u64,
    pub softirq: u64,
    pub steal: u64,
}

/// /proc/stat's per-CPU lines.
pub fn stat_cpus() -> Vec<StatCpu> {
    fs::read_to_string("/proc/stat")
        .unwrap()
        .lines()
        .filter(|l| l.starts_with("cpu") && !l.starts_with("cpu "))
        .map(|l| {
            let f: Vec<u64> = l
                .split_whitespace()
                .skip(1)
                .map(|v| v.parse::<u64>().unwrap() * user_hz_ns())
                .collect();
            StatCpu {
                irq: f[5],
                softirq: f[6],
                steal: f[7],
            }
        })
        .collect()
}

/// Nanoseconds per /proc/stat tick.
pub fn user_hz_ns() -> u64 {
    // SAFETY: sysconf has no preconditions.
    1_000_000_000 / unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as u64
}

/// Whether the kernel was built with `CONFIG_IRQ_TIME_ACCOUNTING`, from its configuration
/// (/proc/config.gz, else /boot/config-RELEASE); `None` when neither is there (the kernel
/// matrix's guests boot from an initramfs without /boot, and Debian's kernels have no
/// /proc/config.gz).
pub fn config_irq_time_accounting() -> Option<bool> {
    let text = std::process::Command::new("gzip")
        .args(["-dc", "/proc/config.gz"])
        .output()
        .ok()
        .filter(|o| o.status.success())
        .and_then(|o| String::from_utf8(o.stdout).ok())
        .or_else(|| {
            let release = fs::read_to_string("/proc/sys/kernel/osrelease").ok()?;
            fs::read_to_string(format!("/boot/config-{}", release.trim())).ok()
        })?;
    Some(text.lines().any(|l| l == "CONFIG_IRQ_TIME_ACCOUNTING=y"))
}

/// A process's time on CPU, ns: its threads' /proc/PID/task/TID/schedstat summed (the
/// kernel's run time; with IRQ time accounting it leaves interrupts out, without it does
/// not).
pub fn runtime_ns(pid: u32) -> u64 {
    fs::read_dir(format!("/proc/{pid}/task"))
        .unwrap()
        .flatten()
        .filter_map(|t| fs::read_to_string(t.path().join("schedstat")).ok())
        .map(|s| s.split_whitespace().next().unwrap().parse::<u64>().unwrap())
        .sum()
}

/// The pid of `ksoftirqd/CPU`.
pub fn ksoftirqd(cpu: usize) -> u32 {
    let want = format!("ksoftirqd/{cpu}");
    fs::read_dir("/proc")
        .unwrap()
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok())
        .find(|pid| fs::read_to_string(format!("/proc/{pid}/comm")).is_ok_and(|c| c.trim() == want))
        .unwrap_or_else(|| panic!("no {want}"))
}

/// Steers loopback's receive processing to one CPU (Receive Packet Steering on `lo`):
/// datagrams sent on any CPU are queued to that CPU's backlog, which an IPI makes it
/// process in `NET_RX`. Restores the previous mask when dropped.
pub struct RpsGuard {
    before: String,
}

const RPS: &str = "/sys/class/net/lo/queues/rx-0/rps_cpus";

impl RpsGuard {
    pub fn steer_to(cpu: usize) -> Self {
        let before = fs::read_to_string(RPS)
            .unwrap_or_else(|e| panic!("{RPS}: {e} (the kernel needs CONFIG_RPS)"));
        fs::write(RPS, format!("{:x}", 1u64 << cpu)).unwrap();
        Self {
            before: before.trim().to_string(),
        }
    }
}

impl Drop for RpsGuard {
    fn drop(&mut self) {
        let _ = fs::write(RPS, &self.before);
    }
}

/// Runs `ksoftirqd/CPU` at a real-time priority above the spinner's (see `spinner`) until
/// dropped: else, once woken, it would wait behind the spinner for the 5% of each second
/// the kernel leaves ordinary tasks, and meanwhile the kernel leaves every softirq of that
/// CPU to it (a ksoftirqd that is runnable takes the softirqs interrupts would run on
/// their way out, on 5.x kernels): none would hit the spinner. Restored to `SCHED_OTHER`.
pub struct KsoftirqdBoost {
    pid: i32,
}

impl KsoftirqdBoost {
    pub fn on(cpu: usize) -> Self {
        let pid = ksoftirqd(cpu) as i32;
        let p = libc::sched_param { sched_priority: 2 };
        // SAFETY: sched_setscheduler with a valid parameter.
        let r = unsafe { libc::sched_setscheduler(pid, libc::SCHED_FIFO, &raw const p) };
        assert_eq!(r, 0, "ksoftirqd/{cpu}: {}", std::io::Error::last_os_error());
        Self { pid }
    }
}

impl Drop for KsoftirqdBoost {
    fn drop(&mut self) {
        let p = libc::sched_param { sched_priority: 0 };
        // SAFETY: as above.
        unsafe { libc::sched_setscheduler(self.pid, libc::SCHED_OTHER, &raw const p) };
    }
}

/// The victim tests' set-up: loopback's receive processing steered to CPU 1 and its
/// ksoftirqd boosted (both restored when dropped), a process that spins on CPU 1 once
/// started (`spinner:1`), and a flood of 1,500-byte UDP datagrams sent at `go`.
pub struct FloodedSpinner {
    pub spin: Workload,
    pub flood: Workload,
    _rps: RpsGuard,
    _ksoftirqd: KsoftirqdBoost,
}

impl FloodedSpinner {
    pub fn new() -> Self {
        let rps = RpsGuard::steer_to(1);
        let ksoftirqd = KsoftirqdBoost::on(1);
        Self {
            spin: Workload::spawn("spinner:1"),
            flood: Workload::spawn("udp-flood:1500"),
            _rps: rps,
            _ksoftirqd: ksoftirqd,
        }
    }

    /// The spinner's pid.
    pub fn victim(&self) -> u32 {
        self.spin.pid()
    }
}

/// One `proclens irq --json` report: every line from its `irq_system` line on.
#[derive(Debug, Default, Clone)]
pub struct Report {
    pub time: f64,
    pub system: Value,
    pub cpus: Vec<Value>,
    /// (cpu, vector) → (`count_total`, `ns_total`).
    pub softirqs: BTreeMap<(usize, String), (u64, u64)>,
    /// (cpu, vector) → the interval's histogram of durations (`hist`).
    pub soft_hists: BTreeMap<(usize, String), Vec<u64>>,
    /// (cpu, row) → `count_total`.
    pub hardirqs: BTreeMap<(usize, String), u64>,
    /// row → `name`, of the hard IRQ rows reported.
    pub hard_names: BTreeMap<String, String>,
    /// (cpu, softirq vector or hard IRQ row) → the interval's `count` and `hist`.
    pub intervals: BTreeMap<(usize, String), (u64, Vec<u64>)>,
    pub victims: Vec<Value>,
}

/// `proclens irq --json`'s reports, read whole: a report's lines share its `time` and are
/// written at once, so a report ends at a line of another time or when no line follows
/// within a moment.
pub struct Reports {
    pub p: Proclens,
    pending: Option<Value>,
}

impl Reports {
    pub fn spawn(args: &[&str]) -> Self {
        Self {
            p: Proclens::spawn(args),
            pending: None,
        }
    }

    pub fn next(&mut self) -> Report {
        let first = match self.pending.take() {
            Some(v) => v,
            None => self
                .p
                .json_until(Duration::from_secs(30), |v| v["type"] == "irq_system"),
        };
        assert_eq!(first["type"], "irq_system", "{first}");
        let mut r = Report {
            time: first["time"].as_f64().unwrap(),
            system: first,
            ..Report::default()
        };
        while let Some(line) = self.p.try_line(Duration::from_millis(200)) {
            let v: Value = serde_json::from_str(&line).unwrap();
            if v["time"].as_f64() != Some(r.time) {
                self.pending = Some(v);
                break;
            }
            let cpu = v["cpu"].as_u64().unwrap_or(0) as usize;
            match v["type"].as_str().unwrap() {
                "irq_cpu" => r.cpus.push(v),
                "softirq" => {
                    let key = (cpu, v["vector"].as_str().unwrap().to_string());
                    let totals = (
                        v["count_total"].as_u64().unwrap(),
                        v["ns_total"].as_u64().unwrap(),
                    );
                    let hist = v["hist"].as_array().unwrap();
                    let hist = hist.iter().map(|n| n.as_u64().unwrap()).collect();
                    r.soft_hists.insert(key.clone(), hist);
                    r.intervals.insert(key.clone(), interval(&v));
                    r.softirqs.insert(key, totals);
                }
                "hardirq" => {
                    let key = (cpu, v["irq"].as_str().unwrap().to_string());
                    let name = v["name"].as_str().unwrap().to_string();
                    r.hard_names.insert(key.1.clone(), name);
                    r.intervals.insert(key.clone(), interval(&v));
                    r.hardirqs.insert(key, v["count_total"].as_u64().unwrap());
                }
                "victim" => r.victims.push(v),
                other => panic!("unexpected line type {other}: {line}"),
            }
        }
        r
    }
}

/// A softirq or hardirq line's interval `count` and `hist`.
fn interval(v: &Value) -> (u64, Vec<u64>) {
    let hist = v["hist"].as_array().unwrap();
    (
        v["count"].as_u64().unwrap(),
        hist.iter().map(|n| n.as_u64().unwrap()).collect(),
    )
}

impl Reports {
    /// The latest report: those queued before it are passed over (so that what the caller
    /// reads next happens before the next snapshot).
    pub fn latest(&mut self) -> Report {
        loop {
            let r = self.next();
            if self.pending.is_none() {
                return r;
            }
        }
    }
}

impl Report {
    pub fn cpu(&self, cpu: usize) -> &Value {
        &self.cpus[cpu]
    }

    /// The victim line of `pid` (asked for with `-p`, so always there).
    pub fn victim(&self, pid: u32) -> &Value {
        self.victims
            .iter()
            .find(|v| v["pid"] == pid)
            .unwrap_or_else(|| panic!("no victim line for {pid}: {:?}", self.victims))
    }
}
