//! The switch programs (tool-ebpf/src/switch.rs): how they learn the time and each run's
//! wait on this kernel, their load-time globals, the size of their thread table, attaching
//! them, and reading the per-thread and per-CPU accounting they keep (`threads`).

mod table;
mod threads;

use crate::collect::btf::Btf;
use anyhow::{Context as _, Result};
use aya::{
    EbpfLoader,
    maps::{Array, PerCpuArray},
};
use proclens_common::{
    config,
    switch::{CPU_TABLE_CPUS, THREAD_SLOTS},
};

use super::{
    btf::{self, RqClockOffsets, SchedInfoOffsets, TaskOffsets},
    globals::Globals,
    object::Object,
    setup::{self, Setup},
};
use crate::{error::Fatal, model::open_period::Timing};
use table::ThreadTable;
pub use threads::{CpuState, SwitchMaps};

/// Set to `helpers`, the switch programs time with `bpf_ktime_get_ns` and the wakeup
/// programs, as on kernels whose BTF shows no run-queue clock or that keep no per-task
/// run-queue time: so that the tests cover that path on any kernel.
pub const SWITCH_TIMING_ENV: &str = "PROCLENS_SWITCH_TIMING";

/// Set to a power of two N below the direct-mapped thread table's size, threads may own
/// only its first N slots, and the others' switch accounting lives in the `THREADS` hash
/// (all of it with 0), as for threads whose slot another thread holds: so that the tests
/// cover that path and the mix of both (see tool-ebpf/src/threads.rs).
pub const THREAD_SLOTS_ENV: &str = "PROCLENS_THREAD_SLOTS";

/// Set to `percpu`, the switch programs keep their per-CPU state in the per-CPU map, as on
/// machines with more possible CPUs than their table has room for: so that the tests cover
/// that path on any machine.
pub const CPU_STATE_ENV: &str = "PROCLENS_CPU_STATE";

const POSSIBLE_CPUS: &str = "/sys/devices/system/cpu/possible";

/// One more than the highest possible CPU id: what a table indexed by CPU id must hold.
fn possible_cpu_ids() -> Result<usize> {
    let text = std::fs::read_to_string(POSSIBLE_CPUS)
        .with_context(|| format!("reading {POSSIBLE_CPUS}"))?;
    cpu_ids_of(&text).with_context(|| format!("{POSSIBLE_CPUS} reads {:?}", text.trim()))
}

/// The same, of a CPU list (`0-3,8-11`).
fn cpu_ids_of(list: &str) -> Option<usize> {
    list.trim()
        .split(',')
        .map(|r| r.rsplit('-').next()?.trim().parse::<usize>().ok())
        .try_fold(0, |max, last| Some(max.max(last? + 1)))
}

/// The switch programs' set-up, resolved from the running kernel's BTF and /proc.
#[derive(Debug)]
pub struct SwitchSetup {
    cfg: config::Switch,
    table: ThreadTable,
}

impl SwitchSetup {
    /// The scheduler's own clock and wait where the kernel shows the way to them;
    /// [`SWITCH_TIMING_ENV`]`=helpers` takes the path of kernels without them (tests).
    /// `max_threads` is `--max-threads`.
    pub fn resolve(vmlinux: &Btf, task: &TaskOffsets, max_threads: Option<u32>) -> Result<Self> {
        let prev_state_arg = u32::from(switch_has_prev_state_arg(vmlinux)?);
        let helpers_only = std::env::var_os(SWITCH_TIMING_ENV).is_some_and(|v| v == "helpers");
        let rq = RqClockOffsets::from_btf(vmlinux)
            .ok()
            .filter(|_| !helpers_only);
        let sched_info = rq.and_then(|_| live_sched_info(vmlinux));
        let rq_offsets = rq.unwrap_or_default();
        let si = sched_info.unwrap_or_default();
        let thread_slots_used = std::env::var(THREAD_SLOTS_ENV)
            .ok()
            .and_then(|v| v.parse().ok())
            .filter(|&n: &u32| n == 0 || (n.is_power_of_two() && n <= THREAD_SLOTS))
            .unwrap_or(THREAD_SLOTS);
        let cpu_table = u32::from(
            possible_cpu_ids()? <= CPU_TABLE_CPUS
                && std::env::var_os(CPU_STATE_ENV).is_none_or(|v| v != "percpu"),
        );
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
                sched_info: u32::from(sched_info.is_some()),
                task_run_delay: si.run_delay,
                thread_slots_used,
                task_flags: task.flags,
                task_active_mm: task.active_mm,
                task_nvcsw: task.nvcsw,
                task_nivcsw: task.nivcsw,
                task_on_cpu: task.on_cpu,
                task_on_rq: task.on_rq,
                task_last_arrival: si.last_arrival,
                task_last_queued: si.last_queued,
                cpu_table,
                trace_start_ns: super::procfs::monotonic_ns(),
            },
            table: ThreadTable::resolve(max_threads),
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

    fn timing(&self) -> Timing {
        if self.cfg.sched_info != 0 {
            Timing::SchedInfo
        } else {
            Timing::Wakeups
        }
    }

    /// Takes the switch maps out of the loaded object.
    pub fn take(&self, obj: &mut Object) -> Result<SwitchMaps> {
        let cpus = if self.cfg.cpu_table != 0 {
            // The object's only zeroed global: the table (see `CpuTable`).
            CpuState::Table(
                Array::try_from(setup::take_map(obj, ".bss")?)
                    .context("the CPU state table (.bss)")?,
            )
        } else {
            CpuState::PerCpu(PerCpuArray::try_from(setup::take_map(
                obj,
                "CPU_SWITCHES",
            )?)?)
        };
        Ok(SwitchMaps::new(cpus, self.timing()))
    }
}

impl Setup for SwitchSetup {
    fn configure<'a>(&'a self, globals: &mut Globals, loader: &mut EbpfLoader<'a>) {
        globals.switch = self.cfg;
        self.table.configure(loader);
    }

    /// Attaches the programs, then seeds the table with the threads that already exist:
    /// from here on, every traced thread is accounted.
    fn btf_tracepoints(&self) -> Vec<(String, String)> {
        self.programs()
            .iter()
            .map(|&p| (p.into(), p.into()))
            .collect()
    }

    fn iterators(&self) -> Vec<(&'static str, &'static str)> {
        threads::ITERATORS.to_vec()
    }

    fn attach(&self, obj: &mut Object, kernel: &aya::Btf) -> Result<()> {
        setup::attach_btf_tracepoints(obj, &self.btf_tracepoints(), kernel)?;
        threads::load(obj, kernel)?;
        threads::seed(obj)
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

/// The offsets of `task_struct.sched_info` when the running kernel keeps it: its BTF has
/// the fields (`CONFIG_SCHED_INFO`) and the counters are live (`/proc/self/schedstat`
/// counts this process's runs; older kernels keep them only with schedstats or delay
/// accounting on, and print zeros otherwise).
fn live_sched_info(vmlinux: &Btf) -> Option<SchedInfoOffsets> {
    let offsets = SchedInfoOffsets::from_btf(vmlinux).ok()?;
    let stat = std::fs::read_to_string("/proc/self/schedstat").ok()?;
    let runs: u64 = stat.split_whitespace().nth(2)?.parse().ok()?;
    (runs > 0).then_some(offsets)
}

#[cfg(test)]
mod tests {
    use super::cpu_ids_of;

    #[test]
    fn cpu_ids_reach_the_highest_possible_cpu() {
        assert_eq!(cpu_ids_of("0\n"), Some(1));
        assert_eq!(cpu_ids_of("0-1\n"), Some(2));
        assert_eq!(cpu_ids_of("0-3,8-11"), Some(12));
        assert_eq!(cpu_ids_of("0,2047"), Some(2048));
        assert_eq!(cpu_ids_of(""), None);
        assert_eq!(cpu_ids_of("x"), None);
    }
}
