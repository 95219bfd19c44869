//! Loading, configuring and attaching the eBPF programs, and reading what they aggregate.
//!
//! [`Tracer::start`] is a short list of set-ups, one per concern (see [`Setup`]): each
//! resolves what the running kernel looks like, writes its load-time globals, attaches its
//! programs and hands over its maps. Programs and links live as long as the [`Tracer`];
//! dropping it (on any exit path, including a panic's unwinding) detaches them, and the
//! kernel frees them with the last file descriptor if the process is killed outright.
//! Nothing is pinned.

use std::collections::HashMap as StdHashMap;

use anyhow::{Context as _, Result};
use aya::maps::{MapData, PerCpuArray, RingBuf};
use proclens_common::{
    config, counters,
    switch::{CpuSwitches, ThreadSwitches},
};

use super::{
    btf,
    cgroup::CgroupFilter,
    copies::{CopyMaps, CopySetup, Want},
    filter::{self, FilterSetup},
    globals::Globals,
    irq::{IrqMaps, IrqSetup},
    lifecycle::setup::LifecycleSetup,
    log::{self, KernelLog},
    object::Object,
    privilege,
    rings::RingLayout,
    setup::{self, Setup},
    switch::{SwitchMaps, SwitchSetup},
    tracefs,
};
use crate::error::Fatal;

/// The BPF object built from tool-ebpf by build.rs.
pub static OBJECT: &[u8] = aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/proclens.bpf.o"));

/// What to trace.
#[derive(Debug, Clone)]
pub struct TracerOptions {
    /// Trace proclens's own threads too.
    pub include_self: bool,
    /// Only tasks in this cgroup v2 subtree.
    pub cgroup: Option<CgroupFilter>,
    /// The switch programs (every context switch). Views that read only lifecycle events
    /// (`zombies`) leave them out and cost nothing on every switch.
    pub switches: bool,
    /// Count every syscall per process (raw tracepoint `sys_enter`).
    pub syscalls: bool,
    /// Account the copy-family syscalls per (process, path, fd kinds).
    pub copies: Want,
    /// Time hard IRQs and softirqs per CPU and kind, and charge them to the processes
    /// they interrupt. Views that do not show interrupts leave them out and pay nothing
    /// per interrupt.
    pub irq: Want,
}

impl Default for TracerOptions {
    fn default() -> Self {
        Self {
            include_self: false,
            cgroup: None,
            switches: true,
            syscalls: false,
            copies: Want::Off,
            irq: Want::Off,
        }
    }
}

/// Loaded and attached programs with their maps.
pub struct Tracer {
    // Holds the programs and links; dropped first (fields drop in order), so the
    // programs are detached before the maps they write are closed.
    obj: Object,
    switch: Option<SwitchMaps>,
    counters: PerCpuArray<MapData, u64>,
    /// The event rings in use, one per CPU (see `rings`), until taken.
    events: Option<Vec<RingBuf<MapData>>>,
    copy_maps: Option<CopyMaps>,
    copies_on: bool,
    irq_maps: Option<IrqMaps>,
    /// The kernel side's log records, when asked for (see `log`), until taken.
    log: Option<KernelLog>,
    /// Probed once: whether map reads work without capabilities on this kernel.
    reads_survive_drop: std::cell::OnceCell<bool>,
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
    /// Hard IRQs of lines allocated after start, not counted per line.
    pub irq_untracked: u64,
    /// Interrupt time not charged to its victim: per-process victim map full.
    pub victim_map_full: u64,
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

/// The concerns' set-ups, in the order they are configured and attached.
struct Setups {
    filter: FilterSetup,
    rings: RingLayout,
    switch: Option<SwitchSetup>,
    copies: CopySetup,
    life: LifecycleSetup,
    irq: IrqSetup,
}

impl Setups {
    fn list(&self) -> Vec<&dyn Setup> {
        let mut v: Vec<&dyn Setup> = vec![&self.filter, &self.rings];
        if let Some(s) = &self.switch {
            v.push(s);
        }
        v.extend([&self.copies as &dyn Setup, &self.life, &self.irq]);
        v
    }
}

impl Tracer {
    pub fn start(opts: &TracerOptions) -> Result<Self> {
        privilege::check_can_trace()?;
        // Probed at start-up: tracefs (mounted here when missing and privileged) carries
        // the tracepoint formats the copy programs read. The switch and lifecycle
        // programs attach to BTF tracepoints and work without it: one warning.
        if let Err(e) = tracefs::root() {
            eprintln!("proclens: warning: {e:#} (the switch figures do not need it)");
        }
        raise_memlock();
        let vmlinux = btf::load_vmlinux()?;
        let task = btf::TaskOffsets::from_btf(&vmlinux)?;
        let life = btf::LifecycleOffsets::from_btf(&vmlinux)?;
        // BTF tracepoints are resolved against the kernel's BTF (aya's own parser).
        let kernel_btf = aya::Btf::from_sys_fs().map_err(|e| {
            Fatal::KernelUnsupported(format!("reading the kernel's BTF for BTF tracepoints: {e}"))
        })?;
        let mut setups = Setups {
            filter: FilterSetup::resolve(opts.include_self, opts.cgroup.as_ref(), &vmlinux),
            rings: RingLayout::here(),
            switch: opts
                .switches
                .then(|| SwitchSetup::resolve(&vmlinux, &task))
                .transpose()?,
            copies: CopySetup::resolve(opts.syscalls, opts.copies, &vmlinux)?,
            life: LifecycleSetup::resolve(&life),
            irq: IrqSetup::resolve(opts.irq, &vmlinux)?,
        };
        let globals = Globals {
            task: config::Task {
                pid: task.pid,
                tgid: life.tgid,
                group_leader: task.group_leader,
                start_time: task.start_time,
                start_boottime: life.start_boottime,
                comm: life.comm,
            },
            log_level: log::kernel_level(),
            ..Globals::default()
        };
        let mut obj = setup::load(OBJECT, &setups.list(), globals.clone())?;
        // A cgroup filter calls bpf_get_current_ancestor_cgroup_id, which older kernels
        // (5.10) do not offer tracing programs: there the programs walk the task's cgroup
        // through BTF offsets instead (same subtree semantics).
        if setups.filter.filters_cgroup()
            && !setup::verifier_accepts(&mut obj, filter::ANCESTOR_PROBE)?
        {
            setups.filter.walk_instead()?;
            obj = setup::load(OBJECT, &setups.list(), globals)?;
        }
        for s in setups.list() {
            s.attach(&mut obj, &kernel_btf)?;
        }
        Ok(Self {
            switch: setups
                .switch
                .as_ref()
                .map(|s| s.take(&mut obj))
                .transpose()?,
            counters: PerCpuArray::try_from(setup::take_map(&mut obj, "COUNTERS")?)?,
            events: Some(setups.rings.take(&mut obj)?),
            copy_maps: setups.copies.take(&mut obj)?,
            copies_on: setups.copies.copies_on(),
            irq_maps: setups.irq.take(&mut obj)?,
            log: KernelLog::attach(&mut obj)?,
            obj,
            reads_survive_drop: std::cell::OnceCell::new(),
        })
    }

    /// Whether copy paths are accounted (asked for, and available on this kernel).
    pub fn copies_on(&self) -> bool {
        self.copies_on
    }

    /// Drops the privileges loading needed, once everything is attached: every capability
    /// (except `keep`) when this kernel still lets the held map fds be read without them
    /// (probed); otherwise only those beyond CAP_BPF/CAP_PERFMON/CAP_SYS_ADMIN, with a
    /// note. Returns whether everything was dropped. Call it while single-threaded.
    pub fn drop_privileges(&self, keep: &[caps::Capability]) -> Result<bool> {
        let reads_survive = *self
            .reads_survive_drop
            .get_or_init(|| privilege::reads_survive_drop(|| self.health().is_ok()));
        if reads_survive {
            privilege::drop_all_but(keep)?;
            return Ok(true);
        }
        let mut needed = keep.to_vec();
        needed.extend([
            caps::Capability::CAP_BPF,
            caps::Capability::CAP_PERFMON,
            caps::Capability::CAP_SYS_ADMIN,
        ]);
        privilege::drop_all_but(&needed)?;
        eprintln!(
            "proclens: note: this kernel checks privileges on every map read; keeping CAP_BPF, CAP_PERFMON and CAP_SYS_ADMIN"
        );
        Ok(false)
    }

    /// The event rings, to be polled by the caller (once).
    pub fn take_events(&mut self) -> Option<Vec<RingBuf<MapData>>> {
        self.events.take()
    }

    /// The kernel side's log, to be polled by the caller (once); `None` when not asked for.
    pub fn take_log(&mut self) -> Option<KernelLog> {
        self.log.take()
    }

    /// The syscall-count and copy-path maps, when [`TracerOptions::syscalls`] or
    /// [`TracerOptions::copies`] asked for them.
    pub fn copy_maps(&mut self) -> Option<&mut CopyMaps> {
        self.copy_maps.as_mut()
    }

    /// The interrupt maps, when [`TracerOptions::irq`] asked for them and the kernel has
    /// what they need.
    pub fn irq_maps(&mut self) -> Option<&mut IrqMaps> {
        self.irq_maps.as_mut()
    }

    /// Every traced thread's accounting, by thread id (empty without the switch programs).
    pub fn threads(&self) -> Result<StdHashMap<u32, ThreadSwitches>> {
        self.switch
            .as_ref()
            .map_or_else(|| Ok(StdHashMap::new()), SwitchMaps::threads)
    }

    /// The system-wide switch split, summed over CPUs (zeros without the switch programs).
    pub fn cpu_totals(&self) -> Result<CpuSwitches> {
        self.switch
            .as_ref()
            .map_or_else(|| Ok(CpuSwitches::default()), SwitchMaps::cpu_totals)
    }

    /// Run time and run count of each program (the kernel fills them only while
    /// `kernel.bpf_stats_enabled` is 1).
    pub fn program_costs(&self) -> Vec<crate::model::exporter::ProgramCost> {
        self.obj
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
            irq_untracked: sum(counters::IRQ_UNTRACKED)?,
            victim_map_full: sum(counters::VICTIM_MAP_FULL)?,
        })
    }
}
