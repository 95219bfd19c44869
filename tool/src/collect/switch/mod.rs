//! The switch programs (tool-ebpf/src/switch.rs): how they learn the time and each run's
//! wait on this kernel, their load-time globals, attaching them, and reading the per-thread
//! and per-CPU accounting they keep.

mod slots;

use std::collections::HashMap as StdHashMap;

use anyhow::{Context as _, Result};
use aya::{
    EbpfLoader,
    maps::{HashMap, MapData, PerCpuArray},
};
use btf_rs::Btf;
use proclens_common::{
    config,
    switch::{CpuSwitches, THREAD_SLOTS, ThreadSwitches},
};

use super::{
    btf::{self, RqClockOffsets, TaskOffsets},
    globals::Globals,
    object::Object,
    setup::{self, Setup},
};
use crate::error::Fatal;
use slots::ThreadSlots;

/// Set to `helpers`, the switch programs time with `bpf_ktime_get_ns` and the wakeup
/// programs, as on kernels whose BTF shows no run-queue clock or that keep no per-task
/// run-queue time: so that the tests cover that path on any kernel.
pub const SWITCH_TIMING_ENV: &str = "PROCLENS_SWITCH_TIMING";

/// Set to a power of two N below the direct-mapped thread table's size, threads may own
/// only its first N slots, and the others' switch accounting lives in the `THREADS` hash
/// (all of it with 0), as for threads whose slot another thread holds: so that the tests
/// cover that path and the mix of both (see tool-ebpf/src/switch.rs).
pub const THREAD_SLOTS_ENV: &str = "PROCLENS_THREAD_SLOTS";

/// Entries of the `THREADS` hash (threads without a slot of their own).
const THREADS_CAPACITY: u32 = 32768;

/// Set to N, the `THREADS` hash has N entries: so that the tests can fill it.
pub const MAX_THREADS_ENV: &str = "PROCLENS_MAX_THREADS";

/// The switch programs' set-up, resolved from the running kernel's BTF and /proc.
#[derive(Debug)]
pub struct SwitchSetup {
    cfg: config::Switch,
    threads_capacity: u32,
}

impl SwitchSetup {
    /// The scheduler's own clock and wait where the kernel shows the way to them;
    /// [`SWITCH_TIMING_ENV`]`=helpers` takes the path of kernels without them (tests).
    pub fn resolve(vmlinux: &Btf, task: &TaskOffsets) -> Result<Self> {
        let prev_state_arg = u32::from(switch_has_prev_state_arg(vmlinux)?);
        let helpers_only = std::env::var_os(SWITCH_TIMING_ENV).is_some_and(|v| v == "helpers");
        let rq = RqClockOffsets::from_btf(vmlinux)
            .ok()
            .filter(|_| !helpers_only);
        let run_delay = rq.and_then(|_| sched_info_run_delay(vmlinux));
        let rq_offsets = rq.unwrap_or_default();
        let thread_slots_used = std::env::var(THREAD_SLOTS_ENV)
            .ok()
            .and_then(|v| v.parse().ok())
            .filter(|&n: &u32| n == 0 || (n.is_power_of_two() && n <= THREAD_SLOTS))
            .unwrap_or(THREAD_SLOTS);
        Ok(Self {
            cfg: config::Switch {
                prev_state_arg,
                task_state: task.state,
                task_exit_state: task.exit_state,
                task_mm: task.mm,
                rq_clock: u32::from(rq.is_some()),
                task_cfs_rq: rq_offsets.task_cfs_rq,
                cfs_rq_rq: rq_offsets.cfs_rq_rq,
                rq_clock_off: rq_offsets.rq_clock,
                sched_info: u32::from(run_delay.is_some()),
                task_run_delay: run_delay.unwrap_or_default(),
                thread_slots_used,
                _pad: 0,
                trace_start_ns: super::procfs::monotonic_ns(),
            },
            threads_capacity: std::env::var(MAX_THREADS_ENV)
                .ok()
                .and_then(|v| v.parse().ok())
                .filter(|&n: &u32| n > 0)
                .unwrap_or(THREADS_CAPACITY),
        })
    }

    /// The switch programs to attach: the wakeup programs only when they time the waits.
    fn programs(&self) -> &'static [&'static str] {
        if self.cfg.sched_info != 0 {
            &["sched_switch"]
        } else {
            &["sched_switch", "sched_wakeup", "sched_wakeup_new"]
        }
    }

    /// Takes the switch maps out of the loaded object.
    pub fn take(&self, obj: &mut Object) -> Result<SwitchMaps> {
        Ok(SwitchMaps {
            threads: HashMap::try_from(setup::take_map(obj, "THREADS")?)?,
            slots: ThreadSlots::new(setup::take_map(obj, "THREAD_SLOTS")?)?,
            cpus: PerCpuArray::try_from(setup::take_map(obj, "CPU_SWITCHES")?)?,
            threads_capacity: self.threads_capacity,
        })
    }
}

impl Setup for SwitchSetup {
    fn configure<'a>(&'a self, globals: &mut Globals, loader: &mut EbpfLoader<'a>) {
        globals.switch = self.cfg;
        loader.map_max_entries("THREADS", self.threads_capacity);
    }

    fn attach(&self, obj: &mut Object, kernel: &aya::Btf) -> Result<()> {
        for name in self.programs() {
            setup::attach_btf_tracepoint(obj, name, kernel)?;
        }
        Ok(())
    }
}

/// Whether the `sched_switch` tracepoint passes `prev_state` (4th argument, 5.18+),
/// checking the rest of its layout and the wakeups' on the way.
fn switch_has_prev_state_arg(vmlinux: &Btf) -> Result<bool> {
    let args = btf::raw_tp_args(vmlinux, "sched_switch")?;
    let task = "struct task_struct *";
    if args.len() < 3 || args[0] != "bool" || args[1] != task || args[2] != task {
        return Err(Fatal::KernelUnsupported(format!(
            "sched_switch has an unknown argument layout: {args:?}"
        ))
        .into());
    }
    for tp in ["sched_wakeup", "sched_wakeup_new"] {
        let args = btf::raw_tp_args(vmlinux, tp)?;
        if args.first().map(String::as_str) != Some(task) {
            return Err(Fatal::KernelUnsupported(format!(
                "{tp} has an unknown argument layout: {args:?}"
            ))
            .into());
        }
    }
    Ok(args.get(3).is_some_and(|a| a == "unsigned int"))
}

/// The offset of `task_struct.sched_info.run_delay` when the running kernel keeps that
/// counter: its BTF has the field (`CONFIG_SCHED_INFO`) and the counter is live
/// (`/proc/self/schedstat` counts this process's runs; older kernels keep it only with
/// schedstats or delay accounting on, and print zeros otherwise).
fn sched_info_run_delay(vmlinux: &Btf) -> Option<u32> {
    let offset = btf::task_run_delay_offset(vmlinux).ok()?;
    let stat = std::fs::read_to_string("/proc/self/schedstat").ok()?;
    let runs: u64 = stat.split_whitespace().nth(2)?.parse().ok()?;
    (runs > 0).then_some(offset)
}

/// The switch programs' maps: per-thread accounting (slots and hash) and per-CPU split.
pub struct SwitchMaps {
    threads: HashMap<MapData, u32, ThreadSwitches>,
    slots: ThreadSlots,
    cpus: PerCpuArray<MapData, CpuSwitches>,
    threads_capacity: u32,
}

impl SwitchMaps {
    /// Every traced thread's accounting, by thread id: the direct-mapped slots' and the
    /// `THREADS` hash's. The hash changes while it is read (the kernel adds and deletes
    /// threads), so iteration may restart; duplicates are folded and the walk is bounded.
    pub fn threads(&self) -> Result<StdHashMap<u32, ThreadSwitches>> {
        let mut out = StdHashMap::new();
        let bound = 4 * self.threads_capacity as usize;
        for (i, item) in self.threads.iter().enumerate() {
            if i >= bound {
                break;
            }
            match item {
                Ok((tid, v)) => {
                    out.insert(tid, v);
                }
                // A key deleted between get_next_key and lookup: skip it.
                Err(aya::maps::MapError::KeyNotFound) => {}
                Err(e) => return Err(e).context("reading THREADS"),
            }
        }
        self.slots.read_into(&mut out);
        Ok(out)
    }

    /// The system-wide switch split, summed over CPUs.
    pub fn cpu_totals(&self) -> Result<CpuSwitches> {
        let per_cpu = self.cpus.get(&0, 0).context("reading CPU_SWITCHES")?;
        let mut t = CpuSwitches::default();
        for c in per_cpu.iter() {
            t.switches += c.switches;
            t.same_process += c.same_process;
            t.cross_process += c.cross_process;
            t.idle_or_kernel += c.idle_or_kernel;
        }
        Ok(t)
    }
}
