//! Loading, configuring and attaching the eBPF programs, and reading what they aggregate.
//!
//! [`Tracer::start`] is a short list of set-ups, one per concern (see [`setup::Setup`]): each
//! resolves what the running kernel looks like, writes its load-time globals, attaches its
//! programs and hands over its maps. Programs and links live as long as the [`Tracer`];
//! dropping it (on any exit path, including a panic's unwinding) detaches them, and the
//! kernel frees them with the last file descriptor if the process is killed outright.
//! Nothing is pinned.

use std::collections::HashMap as StdHashMap;

use anyhow::{Context as _, Result};
use aya::{
    EbpfLoader,
    maps::{MapData, PerCpuArray, RingBuf},
};
use proclens_common::{
    counters,
    switch::{CpuSwitches, ThreadSwitches},
};

use super::{
    btf,
    cgroup::CgroupFilter,
    copies::{CopyMaps, Want},
    forks::{Available, ForksMaps},
    irq::IrqMaps,
    lifecycle::iter as zombie_iter,
    log::KernelLog,
    object::Object,
    privilege, setup,
    switch::SwitchMaps,
    waits::WaitMaps,
};
use crate::{error::Fatal, model::waits::OpenBlock};
use setups::Setups;

mod setups;

/// The BPF object built from tool-ebpf by build.rs.
pub static OBJECT: &[u8] = aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/proclens.bpf.o"));

/// What to trace.
#[derive(Debug, Clone)]
#[allow(
    clippy::struct_excessive_bools,
    reason = "independent switches, each set from its own command-line flag"
)]
pub struct TracerOptions {
    /// Trace proclens's own threads too.
    pub include_self: bool,
    /// Only tasks in this cgroup v2 subtree.
    pub cgroup: Option<CgroupFilter>,
    /// Only these processes (`-p`), compared in the kernel; all when empty.
    pub pids: Vec<u32>,
    /// Only tasks whose name, or whose process's name, contains this (`--comm`),
    /// compared in the kernel.
    pub comm: Option<String>,
    /// The switch programs (every context switch). Views that read only lifecycle events
    /// (`zombies`) leave them out and cost nothing on every switch.
    pub switches: bool,
    /// Count every syscall per process (`sys_exit`, as it returns).
    pub syscalls: bool,
    /// `run`: the syscall programs leave out the calls proclens's own children make
    /// before their exec (the set-up of the command, not the command).
    pub skip_spawning: bool,
    /// `--max-threads`: the switch programs' thread table size (default: the machine's).
    pub max_threads: Option<u32>,
    /// Account the copy-family syscalls per (process, path, fd kinds).
    pub copies: Want,
    /// The after-fork programs: copy-on-write faults, fork-family call times, the fds
    /// each exec inherits, the fd-table iterator (each part where this kernel has it).
    pub forks: bool,
    /// Time hard IRQs and softirqs per CPU and kind, and charge them to the processes
    /// they interrupt. Views that do not show interrupts leave them out and pay nothing
    /// per interrupt.
    pub irq: Want,
    /// Charge blocked time to the syscall each block began in, and count the readiness
    /// calls (select, poll, epoll); with the switch programs only.
    pub waits: Want,
    /// With `waits`, leave the readiness counters out (no program on the poll family's
    /// tracepoints): `serve`, which exports only the blocked time, needs no
    /// `perf_event_open` for them.
    pub no_readiness: bool,
}

impl Default for TracerOptions {
    fn default() -> Self {
        Self {
            include_self: false,
            cgroup: None,
            pids: Vec::new(),
            comm: None,
            switches: true,
            syscalls: false,
            skip_spawning: false,
            max_threads: None,
            copies: Want::Off,
            forks: false,
            irq: Want::Off,
            waits: Want::Off,
            no_readiness: false,
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
    forks: Option<(ForksMaps, Available)>,
    irq_maps: Option<IrqMaps>,
    waits: Option<WaitMaps>,
    /// The blocks in progress at the last reading of the live threads (see
    /// [`Tracer::threads`]), where blocks are charged to syscalls.
    open_blocks: Vec<OpenBlock>,
    /// The kernel side's log records, when asked for (see `log`), until taken.
    log: Option<KernelLog>,
    /// Probed once: whether map reads work without capabilities on this kernel.
    reads_survive_drop: std::cell::OnceCell<bool>,
    /// The zombies the task iterator found at start-up, or why it could not run.
    zombie_seeds: Result<Vec<proclens_common::lifecycle::ZombieSeed>, String>,
}

/// The in-kernel health counters, summed over CPUs.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Health {
    pub ringbuf_drops: u64,
    pub thread_map_full: u64,
    /// File reads or socket writes left out of the sendfile pairing: per-thread pairing
    /// map full (the calls are counted).
    pub inflight_full: u64,
    /// Copy-family calls not counted: per-path map full.
    pub copy_map_full: u64,
    /// Syscalls not counted: per-process syscall map full.
    pub syscall_map_full: u64,
    /// Command names not recorded in the kernel: per-process name map full.
    pub comm_map_full: u64,
    /// Copy-on-write faults not counted: per-process fault map full.
    pub fault_map_full: u64,
    /// Fork-family calls not timed: a fork map full.
    pub fork_map_full: u64,
    /// Hard IRQs of lines allocated after start, not counted per line.
    pub irq_untracked: u64,
    /// Interrupt time not charged to its victim: per-process victim map full.
    pub victim_map_full: u64,
    /// Blocked time not charged to its syscall: per-process wait map full.
    pub wait_map_full: u64,
    /// Readiness calls or interest sets not counted: a readiness map full.
    pub ready_map_full: u64,
}

/// What a thread that parses the kernel's BTF returned.
fn joined<T>(parse: std::thread::JoinHandle<T>) -> Result<T> {
    parse
        .join()
        .map_err(|_| anyhow::anyhow!("parsing the kernel's BTF panicked"))
}

fn raise_memlock() {
    // Kernels >= 5.11 charge BPF memory to the memory cgroup; older ones need the rlimit.
    // Failing to raise it is harmless on the former.
    let unlimited = libc::rlimit {
        rlim_cur: libc::RLIM_INFINITY,
        rlim_max: libc::RLIM_INFINITY,
    };
    // SAFETY: setrlimit with a valid pointer.
    let _ = unsafe { libc::setrlimit(libc::RLIMIT_MEMLOCK, &raw const unlimited) };
}

impl Tracer {
    pub fn start(opts: &TracerOptions) -> Result<Self> {
        privilege::check_can_trace()?;
        super::procfs::check_pid_namespace()?;
        raise_memlock();
        // aya parses the kernel's BTF twice, for the BTF tracepoints and in its loader
        // (for relocations): both on other threads while btf-rs looks up the offsets.
        let kernel_btf = std::thread::spawn(aya::Btf::from_sys_fs);
        let loader = std::thread::spawn(EbpfLoader::new);
        let mut setups = Setups::resolve(opts, &btf::load_vmlinux()?)?;
        let mut obj = setups.load(joined(loader)?)?;
        // BTF tracepoints are resolved against the kernel's BTF (aya's own parser).
        let kernel_btf = joined(kernel_btf)?.map_err(|e| {
            Fatal::KernelUnsupported(format!("reading the kernel's BTF for BTF tracepoints: {e}"))
        })?;
        setups.attach(&mut obj, &kernel_btf)?;
        // After attaching: a zombie made later is in the event stream.
        let zombie_seeds = zombie_iter::load(&mut obj, &kernel_btf).map_err(|e| format!("{e:#}"));
        Ok(Self {
            zombie_seeds,
            switch: setups
                .switch
                .as_ref()
                .map(|s| s.take(&mut obj))
                .transpose()?,
            counters: PerCpuArray::try_from(setup::take_map(&mut obj, "COUNTERS")?)?,
            events: Some(setups.rings.take(&mut obj)?),
            copy_maps: setups.copies.take(&mut obj)?,
            copies_on: setups.copies.copies_on(),
            forks: setups
                .forks
                .as_ref()
                .map(|s| s.take(&mut obj, &kernel_btf))
                .transpose()?,
            irq_maps: setups.irq.take(&mut obj)?,
            waits: setups.waits.take(&mut obj)?,
            open_blocks: Vec::new(),
            log: KernelLog::attach(&mut obj)?,
            obj,
            reads_survive_drop: std::cell::OnceCell::new(),
        })
    }

    /// The zombies the kernel showed just after the programs were attached (exact
    /// identity, exit code, when they last ran), or why the task iterator could not run.
    pub fn zombie_seeds(&self) -> Result<&[proclens_common::lifecycle::ZombieSeed], &str> {
        self.zombie_seeds.as_deref().map_err(String::as_str)
    }

    /// The zombies the kernel shows now (the task iterator run again), when it could be
    /// loaded at start-up and this kernel lets it run without privileges.
    pub fn zombies_now(&mut self) -> Result<Vec<proclens_common::lifecycle::ZombieSeed>> {
        if let Err(e) = &self.zombie_seeds {
            anyhow::bail!("{e}");
        }
        zombie_iter::read(&mut self.obj)
    }

    /// Whether copy paths are accounted (asked for, and available on this kernel).
    pub fn copies_on(&self) -> bool {
        self.copies_on
    }

    /// Drops the privileges loading needed, once everything is attached: every capability
    /// (except `keep`) when this kernel still lets the held map fds be read without them
    /// (probed); otherwise all but the one the reads need (`CAP_BPF` on 5.8+, probed), with
    /// a note. Only permitted capabilities are kept. Returns whether everything was
    /// dropped. Call it while single-threaded.
    pub fn drop_privileges(&self, keep: &[caps::Capability]) -> Result<bool> {
        let read = || self.health().is_ok();
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

    /// The after-fork maps, when [`TracerOptions::forks`] asked for them.
    pub fn forks_maps(&mut self) -> Option<&mut ForksMaps> {
        self.forks.as_mut().map(|(m, _)| m)
    }

    /// What this kernel offers of the after-fork figures (`None` when not asked for).
    pub fn forks_available(&self) -> Option<Available> {
        self.forks.as_ref().map(|(_, a)| a.clone())
    }

    /// Every open fd of every process now, from the task-file iterator (which
    /// [`Tracer::forks_available`] says loaded).
    pub fn fd_table_records(&mut self) -> Result<Vec<crate::model::fdtables::FdEntry>> {
        super::forks::fdtables::read_iter(&mut self.obj)
    }

    /// Every traced thread's accounting now, by thread id, each with the period it is in
    /// credited (empty without the switch programs).
    pub fn threads(&mut self) -> Result<StdHashMap<u32, ThreadSwitches>> {
        match &self.switch {
            Some(s) => {
                let (threads, open) = s.threads(&mut self.obj, self.waits.is_some())?;
                self.open_blocks = open;
                Ok(threads)
            }
            None => Ok(StdHashMap::new()),
        }
    }

    /// The blocks in progress at the last [`Tracer::threads`], where blocks are charged to
    /// syscalls.
    pub fn open_blocks(&self) -> &[OpenBlock] {
        &self.open_blocks
    }

    /// The waits maps, when [`TracerOptions::waits`] asked for them.
    pub fn waits_maps(&mut self) -> Option<&mut WaitMaps> {
        self.waits.as_mut()
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
            fault_map_full: sum(counters::FAULT_MAP_FULL)?,
            fork_map_full: sum(counters::FORK_MAP_FULL)?,
            irq_untracked: sum(counters::IRQ_UNTRACKED)?,
            victim_map_full: sum(counters::VICTIM_MAP_FULL)?,
            wait_map_full: sum(counters::WAIT_MAP_FULL)?,
            ready_map_full: sum(counters::READY_MAP_FULL)?,
        })
    }
}
