//! The report of `proclens run -- CMD`: pure assembly from the rows of the command's
//! processes and what the kernel said about its exit.

use serde::Serialize;

use super::{
    forks::ForksSection,
    histogram::percentile_capped_us,
    irq::{InterruptedSection, Taken},
    run_blocked::BlockedInSection,
    run_sections::{CopiesSection, ZombiesSection},
    run_totals::Joined,
    switches::Counts,
};

/// How the command ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct ExitInfo {
    /// Exit code when it exited.
    pub code: Option<i32>,
    /// Terminating signal when it was killed.
    pub signal: Option<i32>,
}

impl ExitInfo {
    /// The exit code proclens itself returns: the command's, or 128 + signal like a shell.
    pub fn shell_code(&self) -> u8 {
        match (self.code, self.signal) {
            (Some(c), _) => (c & 0xff) as u8,
            (None, Some(s)) => (128 + s).clamp(0, 255) as u8,
            (None, None) => 1,
        }
    }
}

/// Kernel-side facts about the run, measured outside the switch model.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct RunFacts {
    pub wall_s: f64,
    pub user_cpu_s: f64,
    pub system_cpu_s: f64,
    pub threads_seen: u64,
    pub lost_events: u64,
    /// Threads whose switches were not counted (per-thread map full).
    pub untracked_threads: u64,
    /// Syscalls and copy-family calls not counted (their maps full).
    pub uncounted_syscalls: u64,
    pub uncounted_copies: u64,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct SwitchKinds {
    pub voluntary: u64,
    pub involuntary: u64,
    pub same_process: u64,
    pub cross_process: u64,
    pub idle_or_kernel: u64,
}

impl SwitchKinds {
    fn of(c: &Counts) -> Self {
        Self {
            voluntary: c.voluntary,
            involuntary: c.involuntary,
            same_process: c.same_in,
            cross_process: c.cross_in,
            idle_or_kernel: c.idle_kernel_in,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize)]
#[allow(
    clippy::struct_field_names,
    reason = "the names are the JSON keys, unit included"
)]
pub struct Latency {
    pub p50_us: Option<u64>,
    pub p99_us: Option<u64>,
    pub max_us: u64,
}

impl Latency {
    fn of(c: &Counts) -> Self {
        Self {
            p50_us: percentile_capped_us(&c.runq_hist, 50.0, c.runq_max_ns),
            p99_us: percentile_capped_us(&c.runq_hist, 99.0, c.runq_max_ns),
            max_us: c.runq_max_ns / 1000,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ProcessSummary {
    pub pid: u32,
    pub comm: String,
    pub switches: SwitchKinds,
    pub oncpu_s: f64,
    pub blocked_s: f64,
    pub runq_s: f64,
    pub runq_latency: Latency,
    /// Its syscalls (mode switches); `None` when they were not counted.
    pub syscalls: Option<u64>,
}

/// Everything `run` reports; serialised as is for `--json`.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct RunReport {
    pub command: Vec<String>,
    pub exit: ExitInfo,
    pub wall_s: f64,
    pub user_cpu_s: f64,
    pub system_cpu_s: f64,
    /// Time on CPU of every traced thread (the command and all its descendants).
    pub oncpu_s: f64,
    /// Time blocked (voluntarily off CPU, until woken).
    pub blocked_s: f64,
    /// Time runnable but waiting for a CPU.
    pub runq_s: f64,
    pub processes: u64,
    pub threads: u64,
    pub switches: SwitchKinds,
    pub runq_latency: Latency,
    pub lost_events: u64,
    /// What the kernel could not count because a map was full (0 normally).
    pub untracked_threads: u64,
    pub uncounted_syscalls: u64,
    pub uncounted_copies: u64,
    /// Processes and threads the command and its descendants forked (from the kernel's
    /// fork events; the command's own process is not counted).
    pub forked_processes: u64,
    pub forked_threads: u64,
    /// Mode switches and copy paths; `None` when copy accounting was unavailable.
    pub copies: Option<CopiesSection>,
    /// Zombies the command's processes left behind or reaped late.
    pub zombies: ZombiesSection,
    /// Fork-family calls with their time, copy-on-write faults, and the fds each exec
    /// inherited; `None` when the after-fork programs did not run.
    pub forks: Option<ForksSection>,
    /// Interrupt time its tasks lost; `None` when interrupts were not traced.
    pub interrupted: Option<InterruptedSection>,
    /// The syscalls its processes blocked in, and their select, poll and epoll calls;
    /// `None` when blocks could not be charged to syscalls.
    pub blocked_in: Option<BlockedInSection>,
    pub per_process: Vec<ProcessSummary>,
}

/// What the report holds beyond the switch rows.
#[derive(Debug, Clone, Default)]
pub struct RunExtras {
    pub forked_processes: u64,
    pub forked_threads: u64,
    /// `None` when copy accounting was unavailable.
    pub copies: Option<CopiesSection>,
    pub zombies: ZombiesSection,
    pub forks: Option<ForksSection>,
    /// What interrupts took from its processes, together; `None` when they were not
    /// traced.
    pub interrupted: Option<Taken>,
    /// `None` when blocks could not be charged to syscalls.
    pub blocked_in: Option<BlockedInSection>,
}

fn secs(ns: u64) -> f64 {
    ns as f64 / 1e9
}

/// Builds the report from every process of the run (totals since the command started,
/// switch and syscall rows joined, see `run_totals`), and what the other concerns
/// collected.
pub fn build(
    command: Vec<String>,
    exit: ExitInfo,
    facts: RunFacts,
    procs: &[Joined],
    extras: RunExtras,
) -> RunReport {
    let mut all = Counts::default();
    for p in procs {
        all.merge(&p.row.total);
    }
    let mut per_process: Vec<ProcessSummary> = procs
        .iter()
        .map(|p| {
            let r = &p.row;
            ProcessSummary {
                pid: r.key.tgid,
                comm: p.comm.clone(),
                switches: SwitchKinds::of(&r.total),
                oncpu_s: secs(r.total.oncpu_ns),
                blocked_s: secs(r.total.blocked_ns),
                runq_s: secs(r.total.runq_ns),
                runq_latency: Latency::of(&r.total),
                syscalls: p.syscalls,
            }
        })
        .collect();
    per_process.sort_by_key(|p| p.pid);
    RunReport {
        command,
        exit,
        wall_s: facts.wall_s,
        user_cpu_s: facts.user_cpu_s,
        system_cpu_s: facts.system_cpu_s,
        oncpu_s: secs(all.oncpu_ns),
        blocked_s: secs(all.blocked_ns),
        runq_s: secs(all.runq_ns),
        processes: per_process.len() as u64,
        threads: facts.threads_seen,
        switches: SwitchKinds::of(&all),
        runq_latency: Latency::of(&all),
        lost_events: facts.lost_events,
        untracked_threads: facts.untracked_threads,
        uncounted_syscalls: facts.uncounted_syscalls,
        uncounted_copies: facts.uncounted_copies,
        forked_processes: extras.forked_processes,
        forked_threads: extras.forked_threads,
        copies: extras.copies,
        zombies: extras.zombies,
        forks: extras.forks,
        interrupted: extras
            .interrupted
            .map(|t| InterruptedSection::of(t, secs(all.oncpu_ns))),
        blocked_in: extras.blocked_in,
        per_process,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::switches::{Key, Row};

    fn row(pid: u32, vol: u64, invol: u64, blocked_ns: u64, syscalls: Option<u64>) -> Joined {
        let mut total = Counts {
            voluntary: vol,
            involuntary: invol,
            blocked_ns,
            oncpu_ns: 1_000_000,
            ..Counts::default()
        };
        total.runq_hist[2] = 1;
        total.runq_max_ns = 5_000;
        Joined {
            row: Row {
                key: Key {
                    id: pid,
                    tgid: pid,
                    start_ns: 1,
                },
                total,
                delta: total,
                alive: false,
                exit_comm: None,
            },
            comm: format!("p{pid}"),
            syscalls,
        }
    }

    #[test]
    fn sums_processes_and_keeps_them_apart() {
        let exit = ExitInfo {
            code: Some(3),
            signal: None,
        };
        let facts = RunFacts {
            wall_s: 0.5,
            threads_seen: 3,
            ..RunFacts::default()
        };
        let r = build(
            vec!["sh".into()],
            exit,
            facts,
            &[
                row(20, 2, 1, 200_000_000, Some(7)),
                row(10, 1, 0, 0, Some(0)),
            ],
            RunExtras::default(),
        );
        assert_eq!(r.processes, 2);
        assert_eq!(r.threads, 3);
        assert_eq!(r.switches.voluntary, 3);
        assert_eq!(r.switches.involuntary, 1);
        assert!((r.blocked_s - 0.2).abs() < 1e-9);
        assert!((r.oncpu_s - 0.002).abs() < 1e-9);
        assert_eq!(r.per_process[0].pid, 10, "sorted by pid");
        assert_eq!(r.per_process[0].syscalls, Some(0), "counted, none made");
        assert_eq!(r.per_process[1].syscalls, Some(7));
        // In [4, 8) µs by the histogram, and no wait was longer than 5 µs.
        assert_eq!(r.runq_latency.p99_us, Some(5));
        assert_eq!(r.runq_latency.max_us, 5);
        assert_eq!(r.exit.shell_code(), 3);
    }

    #[test]
    fn shell_codes() {
        assert_eq!(
            ExitInfo {
                code: None,
                signal: Some(9)
            }
            .shell_code(),
            137
        );
        assert_eq!(
            ExitInfo {
                code: Some(256 + 4),
                signal: None
            }
            .shell_code(),
            4
        );
    }
}
