//! Loading, configuring and attaching the eBPF programs, and reading what they aggregate.
//!
//! Programs and links live as long as the [`Tracer`]; dropping it (on any exit path,
//! including a panic's unwinding) detaches them, and the kernel frees them with the last
//! file descriptor if the process is killed outright. Nothing is pinned.

use std::collections::HashMap as StdHashMap;

use anyhow::{Context as _, Result};
use aya::{
    Ebpf, EbpfLoader,
    maps::{HashMap, MapData, PerCpuArray, RingBuf},
    programs::BtfTracePoint,
};
use proclens_common::{
    counters, globals,
    switch::{CpuSwitches, THREAD_SLOTS, ThreadSwitches},
};

use super::{
    btf,
    copies::{self, CopyConfig, CopyMaps},
    object::Object,
    privilege,
    rings::RingLayout,
    thread_slots::ThreadSlots,
    tracefs,
};
use crate::error::Fatal;

/// The BPF object built from tool-ebpf by build.rs.
static OBJECT: &[u8] = aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/proclens.bpf.o"));

/// The lifecycle programs, each attached to the `sched` BTF tracepoint of its name.
pub const LIFECYCLE_PROGRAMS: [&str; 5] = [
    "sched_process_fork",
    "sched_process_exec",
    "sched_process_exit",
    "sched_process_wait",
    "sched_process_free",
];

/// What to trace.
#[derive(Debug, Clone, Default)]
pub struct TracerOptions {
    /// Trace proclens's own threads too.
    pub include_self: bool,
    /// Only tasks in this cgroup v2 subtree.
    pub cgroup: Option<super::cgroup::CgroupFilter>,
    /// Count every syscall per process (raw tracepoint `sys_enter`), see [`Tracer::copy_maps`].
    pub syscalls: bool,
    /// Account the copy-family syscalls per (process, path, fd kinds).
    pub copies: bool,
    /// Leave the switch and wakeup programs out (their maps stay empty): views that read
    /// only lifecycle events (`zombies`) then cost nothing on every context switch.
    pub no_switches: bool,
}

/// Loaded and attached programs with their maps.
pub struct Tracer {
    // Holds the programs and links; dropped first (fields drop in order), so the
    // programs are detached before the maps they write are closed.
    ebpf: Object,
    threads: HashMap<MapData, u32, ThreadSwitches>,
    slots: ThreadSlots,
    cpus: PerCpuArray<MapData, CpuSwitches>,
    counters: PerCpuArray<MapData, u64>,
    /// The event rings in use, one per CPU (see `rings`).
    events: Option<Vec<RingBuf<MapData>>>,
    threads_capacity: u32,
    /// Probed once: whether map reads work without capabilities on this kernel.
    reads_survive_drop: std::cell::OnceCell<bool>,
    copy_maps: Option<CopyMaps>,
}

/// The in-kernel health counters, summed over CPUs.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Health {
    pub ringbuf_drops: u64,
    pub thread_map_full: u64,
    /// Copy-family calls not counted: per-thread in-flight map full.
    pub inflight_full: u64,
    /// Copy-family calls not counted: per-path map full.
    pub copy_map_full: u64,
    /// Syscalls not counted: per-process syscall map full.
    pub syscall_map_full: u64,
    /// Command names not recorded in the kernel: per-process name map full.
    pub comm_map_full: u64,
}

/// Whether the `sched_switch` tracepoint passes `prev_state` (4th argument, 5.18+),
/// checking the rest of its layout on the way.
fn switch_has_prev_state_arg(vmlinux: &btf_rs::Btf) -> Result<bool> {
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

/// How the switch programs learn the time and each run's wait (see
/// tool-ebpf/src/switch.rs), from the running kernel's BTF and /proc.
#[derive(Debug)]
struct SwitchTiming {
    /// 1: the run queue's clock, through `rq_offsets`; 0: `bpf_ktime_get_ns`.
    rq_clock: u32,
    rq_offsets: btf::RqClockOffsets,
    /// 1: waits from `sched_info.run_delay` (at `run_delay`); 0: timed by the wakeup
    /// programs. Only with the run queue's clock.
    sched_info: u32,
    run_delay: u32,
    /// CLOCK_MONOTONIC at start: threads started later are counted from birth.
    trace_start_ns: u64,
    /// How many slots of the direct-mapped thread table threads may own (see
    /// [`THREAD_SLOTS_ENV`]).
    thread_slots_used: u32,
}

impl SwitchTiming {
    /// The scheduler's own clock and wait where the kernel shows the way to them;
    /// [`SWITCH_TIMING_ENV`]`=helpers` takes the path of kernels without them (tests).
    fn resolve(vmlinux: &btf_rs::Btf) -> Self {
        let helpers_only = std::env::var_os(SWITCH_TIMING_ENV).is_some_and(|v| v == "helpers");
        let rq = btf::RqClockOffsets::from_btf(vmlinux)
            .ok()
            .filter(|_| !helpers_only);
        let run_delay = rq.and_then(|_| sched_info_run_delay(vmlinux));
        Self {
            rq_clock: u32::from(rq.is_some()),
            rq_offsets: rq.unwrap_or_default(),
            sched_info: u32::from(run_delay.is_some()),
            run_delay: run_delay.unwrap_or_default(),
            trace_start_ns: super::procfs::monotonic_ns(),
            thread_slots_used: std::env::var(THREAD_SLOTS_ENV)
                .ok()
                .and_then(|v| v.parse().ok())
                .filter(|&n: &u32| n == 0 || (n.is_power_of_two() && n <= THREAD_SLOTS))
                .unwrap_or(THREAD_SLOTS),
        }
    }

    /// Sets the load-time globals.
    fn configure<'a>(&'a self, loader: &mut EbpfLoader<'a>) {
        loader
            .override_global(globals::RQ_CLOCK, &self.rq_clock, true)
            .override_global(globals::TASK_CFS_RQ, &self.rq_offsets.task_cfs_rq, true)
            .override_global(globals::CFS_RQ_RQ, &self.rq_offsets.cfs_rq_rq, true)
            .override_global(globals::RQ_CLOCK_OFF, &self.rq_offsets.rq_clock, true)
            .override_global(globals::SCHED_INFO, &self.sched_info, true)
            .override_global(globals::TASK_RUN_DELAY, &self.run_delay, true)
            .override_global(globals::TRACE_START_NS, &self.trace_start_ns, true)
            .override_global(globals::THREAD_SLOTS_USED, &self.thread_slots_used, true);
    }

    /// The switch programs to attach: the wakeup programs only when they time the waits.
    fn programs(&self) -> &'static [&'static str] {
        if self.sched_info != 0 {
            &["sched_switch"]
        } else {
            &["sched_switch", "sched_wakeup", "sched_wakeup_new"]
        }
    }
}

/// The offset of `task_struct.sched_info.run_delay` when the running kernel keeps that
/// counter: its BTF has the field (`CONFIG_SCHED_INFO`) and the counter is live
/// (`/proc/self/schedstat` counts this process's runs; older kernels keep it only with
/// schedstats or delay accounting on, and print zeros otherwise).
fn sched_info_run_delay(vmlinux: &btf_rs::Btf) -> Option<u32> {
    let offset = btf::task_run_delay_offset(vmlinux).ok()?;
    let stat = std::fs::read_to_string("/proc/self/schedstat").ok()?;
    let runs: u64 = stat.split_whitespace().nth(2)?.parse().ok()?;
    (runs > 0).then_some(offset)
}

/// Set to `helpers`, the switch programs time with `bpf_ktime_get_ns` and the wakeup
/// programs, as on kernels whose BTF shows no run-queue clock or that keep no per-task
/// run-queue time: so that the tests cover that path on any kernel.
pub const SWITCH_TIMING_ENV: &str = "PROCLENS_SWITCH_TIMING";

/// Set to a power of two N below the direct-mapped thread table's size, threads may own
/// only its first N slots, and the others' switch accounting lives in the `THREADS` hash
/// (all of it with 0), as for threads whose slot another thread holds: so that the tests
/// cover that path and the mix of both (see tool-ebpf/src/switch.rs).
pub const THREAD_SLOTS_ENV: &str = "PROCLENS_THREAD_SLOTS";

/// Loads the program `name` and attaches it to the `sched` BTF tracepoint of that name.
fn attach_btf_tracepoint(ebpf: &mut Ebpf, name: &str, kernel_btf: &aya::Btf) -> Result<()> {
    let prog: &mut BtfTracePoint = ebpf
        .program_mut(name)
        .with_context(|| format!("program {name} missing from the BPF object"))?
        .try_into()?;
    prog.load(name, kernel_btf)
        .map_err(|e| load_error(anyhow::Error::new(e).context(format!("loading tp_btf/{name}"))))?;
    prog.attach()
        .with_context(|| format!("attaching tp_btf/{name}"))?;
    Ok(())
}

fn raise_memlock() {
    // Kernels >= 5.11 charge BPF memory to the memory cgroup; older ones need the rlimit.
    // Failing to raise it is harmless on the former.
    let unlimited = libc::rlimit {
        rlim_cur: libc::RLIM_INFINITY,
        rlim_max: libc::RLIM_INFINITY,
    };
    // SAFETY: setrlimit with a valid pointer.
    let _ = unsafe { libc::setrlimit(libc::RLIMIT_MEMLOCK, &unlimited) };
}

impl Tracer {
    pub fn start(opts: &TracerOptions) -> Result<Self> {
        privilege::check_can_trace()?;
        // Probed at start-up: tracefs (mounted here when missing and privileged) carries
        // the tracepoint formats other tools and later features read. The switch programs
        // attach to raw tracepoints and work without it, so its absence is one warning.
        if let Err(e) = tracefs::root() {
            eprintln!("proclens: warning: {e:#} (the switch figures do not need it)");
        }
        raise_memlock();
        let vmlinux = btf::load_vmlinux()?;
        let task = btf::TaskOffsets::from_btf(&vmlinux)?;
        let prev_state_arg = u32::from(switch_has_prev_state_arg(&vmlinux)?);
        let self_tgid: u32 = if opts.include_self {
            0
        } else {
            std::process::id()
        };
        let (cgroup_id, cgroup_level): (u64, u32) =
            opts.cgroup.as_ref().map_or((0, 0), |c| (c.id, c.level));
        // The copy programs sit on classic syscall tracepoints: their record layouts come
        // from tracefs, mounted here when missing.
        let copy_cfg = if opts.copies {
            Some(CopyConfig::resolve(&tracefs::root()?, &vmlinux)?)
        } else {
            None
        };
        let life = btf::LifecycleOffsets::from_btf(&vmlinux)?;

        let walk = btf::CgroupWalkOffsets::from_btf(&vmlinux).ok();
        let timing = SwitchTiming::resolve(&vmlinux);
        // BTF tracepoints are resolved against the kernel's BTF (aya's own parser).
        let kernel_btf = aya::Btf::from_sys_fs().map_err(|e| {
            Fatal::KernelUnsupported(format!("reading the kernel's BTF for BTF tracepoints: {e}"))
        })?;
        let rings = RingLayout::here();
        let load = |cgroup_walk: u32| -> Result<Object> {
            let w = walk.unwrap_or_default();
            let mut loader = EbpfLoader::new();
            rings.configure(&mut loader);
            loader
                .override_global(globals::SELF_TGID, &self_tgid, true)
                .override_global(globals::SWITCH_PREV_STATE_ARG, &prev_state_arg, true)
                .override_global(globals::TASK_PID, &task.pid, true)
                .override_global(globals::TASK_STATE, &task.state, true)
                .override_global(globals::TASK_EXIT_STATE, &task.exit_state, true)
                .override_global(globals::TASK_MM, &task.mm, true)
                .override_global(globals::TASK_GROUP_LEADER, &task.group_leader, true)
                .override_global(globals::TASK_START_TIME, &task.start_time, true)
                .override_global(globals::CGROUP_ID, &cgroup_id, true)
                .override_global(globals::CGROUP_LEVEL, &cgroup_level, true)
                .override_global(globals::CGROUP_WALK, &cgroup_walk, true)
                .override_global(globals::TASK_CGROUPS, &w.task_cgroups, true)
                .override_global(globals::CSS_SET_DFL_CGRP, &w.css_set_dfl_cgrp, true)
                .override_global(globals::CGROUP_LEVEL_OFF, &w.cgroup_level, true)
                .override_global(globals::CGROUP_ANCESTOR_IDS, &w.cgroup_ancestor_ids, true);
            timing.configure(&mut loader);
            loader
                .override_global(globals::TASK_TGID, &life.tgid, true)
                .override_global(globals::TASK_REAL_PARENT, &life.real_parent, true)
                .override_global(globals::TASK_START_BOOTTIME, &life.start_boottime, true)
                .override_global(globals::TASK_EXIT_CODE, &life.exit_code, true)
                .override_global(globals::TASK_EXIT_SIGNAL, &life.exit_signal, true)
                .override_global(globals::TASK_SIGHAND, &life.sighand, true)
                .override_global(globals::TASK_COMM, &life.comm, true)
                .override_global(globals::SIGCHLD_HANDLER, &life.sigchld_handler, true)
                .override_global(globals::SIGCHLD_FLAGS, &life.sigchld_flags, true)
                .override_global(globals::BINPRM_FILENAME, &life.binprm_filename, true)
                .override_global(globals::PID_NR, &life.pid_nr, true)
                .override_global(
                    globals::EXIT_GROUP_DEAD_ARG,
                    &life.exit_group_dead_arg,
                    true,
                )
                .override_global(globals::TASK_SIGNAL, &life.signal, true)
                .override_global(globals::SIGNAL_LIVE, &life.signal_live, true);
            if opts.syscalls || opts.copies {
                copies::size_maps(&mut loader);
            }
            if let Some(cfg) = &copy_cfg {
                cfg.configure(&mut loader);
            }
            let mut ebpf = Object::new(loader.load(OBJECT).map_err(|e| load_error(e.into()))?);
            let switch_programs = if opts.no_switches {
                &[]
            } else {
                timing.programs()
            };
            for &name in switch_programs {
                attach_btf_tracepoint(&mut ebpf, name, &kernel_btf)?;
            }
            Ok(ebpf)
        };
        // The cgroup filter calls bpf_get_current_ancestor_cgroup_id, which older kernels
        // (5.10) do not offer to tracing programs; there the programs walk the task's
        // cgroup through BTF offsets instead (same subtree semantics).
        let mut ebpf = match load(0) {
            Err(e)
                if cgroup_id != 0
                    && format!("{e:#}")
                        .contains("unknown func bpf_get_current_ancestor_cgroup_id") =>
            {
                if walk.is_none() {
                    return Err(Fatal::KernelUnsupported(
                        "the cgroup filter is unavailable on this kernel: its tracing programs may not call bpf_get_current_ancestor_cgroup_id and its BTF has no struct cgroup.ancestor_ids to read instead".into(),
                    )
                    .into());
                }
                load(1)?
            }
            other => other?,
        };

        if opts.syscalls || opts.copies {
            copies::attach_syscalls(&mut ebpf).map_err(load_error)?;
        }
        if let Some(cfg) = &copy_cfg {
            copies::attach_copies(&mut ebpf, cfg).map_err(load_error)?;
        }
        // Lifecycle events (see tool-ebpf/src/lifecycle.rs): BTF tracepoints, which hand
        // the programs task_struct pointers and need no tracefs.
        for name in LIFECYCLE_PROGRAMS {
            attach_btf_tracepoint(&mut ebpf, name, &kernel_btf)?;
        }
        let copy_maps = if opts.syscalls || opts.copies {
            Some(CopyMaps::take(&mut ebpf)?)
        } else {
            None
        };

        let threads: HashMap<MapData, u32, ThreadSwitches> =
            HashMap::try_from(ebpf.take_map("THREADS").context("map THREADS missing")?)?;
        let threads_capacity = 32768;
        let slots = ThreadSlots::new(
            ebpf.take_map("THREAD_SLOTS")
                .context("map THREAD_SLOTS missing")?,
        )?;
        let cpus = PerCpuArray::try_from(
            ebpf.take_map("CPU_SWITCHES")
                .context("map CPU_SWITCHES missing")?,
        )?;
        let counters =
            PerCpuArray::try_from(ebpf.take_map("COUNTERS").context("map COUNTERS missing")?)?;
        let events = rings
            .names()
            .iter()
            .map(|name| {
                let map = ebpf
                    .take_map(name)
                    .with_context(|| format!("map {name} missing"))?;
                Ok(RingBuf::try_from(map)?)
            })
            .collect::<Result<Vec<_>>>()?;
        Ok(Self {
            ebpf,
            threads,
            slots,
            cpus,
            counters,
            events: Some(events),
            threads_capacity,
            reads_survive_drop: std::cell::OnceCell::new(),
            copy_maps,
        })
    }

    /// [`Tracer::start`] with copy accounting when tracefs allows it, else without it (one
    /// warning naming what is missing). Returns whether copy paths are accounted.
    pub fn start_copies_if_possible(opts: &TracerOptions) -> Result<(Self, bool)> {
        let with = TracerOptions {
            copies: true,
            ..opts.clone()
        };
        match Self::start(&with) {
            Err(e) if matches!(e.downcast_ref::<Fatal>(), Some(Fatal::Tracefs(_))) => {
                eprintln!("proclens: warning: {e:#}; copy paths are not accounted");
                let without = TracerOptions {
                    copies: false,
                    ..opts.clone()
                };
                Ok((Self::start(&without)?, false))
            }
            r => Ok((r?, true)),
        }
    }

    /// Drops the privileges loading needed, once everything is attached: every capability
    /// (except `keep`) when this kernel still lets the held map fds be read without them
    /// (probed); otherwise all but the one the reads need (CAP_BPF on 5.8+, probed), with
    /// a note. Only permitted capabilities are kept. Returns whether everything was
    /// dropped. Call it while single-threaded.
    pub fn drop_privileges(&self, keep: &[caps::Capability]) -> Result<bool> {
        let read = || self.cpu_totals().is_ok();
        let reads_survive = *self
            .reads_survive_drop
            .get_or_init(|| privilege::reads_work_with(&[], read));
        let permitted = privilege::permitted()?;
        let mut needed = keep.to_vec();
        let for_reads = if reads_survive {
            Vec::new()
        } else {
            privilege::map_read_caps(&permitted, read)
        };
        needed.extend(&for_reads);
        privilege::drop_all_but(&privilege::keepable(&needed, &permitted))?;
        if !reads_survive {
            eprintln!("{}", privilege::keeps_note(&for_reads));
        }
        Ok(reads_survive)
    }

    /// The event rings, to be polled by the caller (once).
    pub fn take_events(&mut self) -> Option<Vec<RingBuf<MapData>>> {
        self.events.take()
    }

    /// The syscall-count and copy-path maps, when [`TracerOptions::syscalls`] or
    /// [`TracerOptions::copies`] asked for them.
    pub fn copy_maps(&mut self) -> Option<&mut CopyMaps> {
        self.copy_maps.as_mut()
    }

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

    /// Run time and run count of each program (the kernel fills them only while
    /// `kernel.bpf_stats_enabled` is 1).
    pub fn program_costs(&self) -> Vec<crate::model::exporter::ProgramCost> {
        self.ebpf
            .programs()
            .filter_map(|(name, p)| {
                let info = p.info().ok()?;
                Some(crate::model::exporter::ProgramCost {
                    name: name.to_string(),
                    run_time_ns: info.run_time().as_nanos() as u64,
                    run_count: info.run_count(),
                })
            })
            .collect()
    }

    pub fn health(&self) -> Result<Health> {
        let sum = |i: u32| -> Result<u64> {
            Ok(self
                .counters
                .get(&i, 0)
                .context("reading COUNTERS")?
                .iter()
                .sum())
        };
        Ok(Health {
            ringbuf_drops: sum(counters::RINGBUF_DROPS)?,
            thread_map_full: sum(counters::THREAD_MAP_FULL)?,
            inflight_full: sum(counters::INFLIGHT_FULL)?,
            copy_map_full: sum(counters::COPY_MAP_FULL)?,
            syscall_map_full: sum(counters::SYSCALL_MAP_FULL)?,
            comm_map_full: sum(counters::COMM_MAP_FULL)?,
        })
    }
}

/// Maps a load failure to a clear cause: EPERM is a privilege problem; anything else is a
/// kernel that cannot run the programs.
fn load_error(err: anyhow::Error) -> anyhow::Error {
    let text = format!("{err:#}");
    if text.contains("Operation not permitted") || text.contains("EPERM") {
        return Fatal::Privilege(format!(
            "the kernel refused to load the BPF programs: {text}"
        ))
        .into();
    }
    Fatal::KernelUnsupported(format!(
        "the kernel could not load proclens's BPF programs: {text}"
    ))
    .into()
}
