//! The start-up seed's zombies: what the kernel knew of the zombies when the programs
//! were attached (the task iterator's record, or /proc's while proclens is privileged),
//! kept until the table is seeded from /proc.

use std::{collections::HashMap, sync::OnceLock};

use proclens_common::lifecycle::ZombieSeed;

use super::iter;
use crate::{
    collect::{procfs, tracer::Tracer},
    model::proctable::{KernelSeed, SeedProc},
};

/// The kernel's record of zombies (the task iterator's), by (pid, start tick), with
/// their wait status: /proc shows a zombie's exit code only to who may ptrace it, and
/// not when it died.
type KernelZombies = HashMap<(u32, u64), (KernelSeed, u32)>;

pub(super) fn kernel_zombies(seeds: &[ZombieSeed], tick_ns: u64) -> KernelZombies {
    seeds
        .iter()
        .map(|z| {
            let k = KernelSeed {
                start_ns: z.task.start_ns,
                task: z.task_ptr,
                died_ns: iter::died_ns(z),
            };
            ((z.task.tgid, z.task.start_ns / tick_ns), (k, z.exit_code))
        })
        .collect()
}

/// What the kernel said of the zombies at start-up (see [`remember_zombies`]).
#[derive(Debug, Default)]
struct StartZombies {
    kernel: KernelZombies,
    /// Why the kernel did not date them (their ages then count from start-up).
    undated: Option<String>,
}

/// The zombies that existed when the programs were attached, read while proclens was
/// still privileged: the kernel's own record from the task iterator, or, where the
/// iterator cannot run, their exit codes from /proc, readable to privileged proclens
/// only (`/proc/PID/stat` field 52); the seed is read once privileges are gone.
static START_ZOMBIES: OnceLock<StartZombies> = OnceLock::new();

/// Reads the start-up zombies for the seed (see [`START_ZOMBIES`]); call it after the
/// programs are attached and before privileges are dropped.
pub fn remember_zombies(tracer: &Tracer) {
    START_ZOMBIES.get_or_init(|| match tracer.zombie_seeds() {
        Ok(seeds) => {
            let kernel = kernel_zombies(seeds, procfs::tick_ns());
            let undated = kernel.values().any(|(k, _)| k.died_ns.is_none()).then(|| {
                "the kernel keeps no time of their last run (sched_info.last_arrival)".into()
            });
            StartZombies { kernel, undated }
        }
        Err(e) => {
            let tick = procfs::tick_ns();
            let kernel = procfs::processes()
                .into_iter()
                .filter(procfs::Stat::is_zombie)
                .map(|s| {
                    let k = KernelSeed {
                        start_ns: s.start_ticks * tick,
                        task: 0,
                        died_ns: None,
                    };
                    ((s.pid, s.start_ticks), (k, s.exit_code))
                })
                .collect();
            StartZombies {
                kernel,
                undated: Some(e.to_string()),
            }
        }
    });
}

/// Why the zombies found at start-up have no age from the kernel (their ages then count
/// from start-up); `None` when they do, and a snapshot can answer at once.
pub fn start_zombies_undated() -> Option<&'static str> {
    match START_ZOMBIES.get() {
        Some(z) => z.undated.as_deref(),
        None => Some("the kernel was not asked"),
    }
}

/// A process as /proc shows it, with what the kernel said of it at start-up.
pub fn seed_proc(s: procfs::Stat) -> SeedProc {
    let kernel = START_ZOMBIES.get().map(|z| &z.kernel);
    seen_proc(s, kernel)
}

/// A process as /proc shows it, with the kernel's record of it if it is a zombie.
pub(super) fn seen_proc(s: procfs::Stat, kernel: Option<&KernelZombies>) -> SeedProc {
    let zombie = s.is_zombie();
    let record = kernel
        .and_then(|k| k.get(&(s.pid, s.start_ticks)))
        .filter(|_| zombie);
    SeedProc {
        pid: s.pid,
        ppid: s.ppid,
        start_ticks: s.start_ticks,
        zombie,
        comm: s.comm,
        exit_code: record.map_or(s.exit_code, |(_, code)| *code),
        // Only the iterator's records name a task.
        kernel: record.map(|(k, _)| *k).filter(|k| k.task != 0),
    }
}
