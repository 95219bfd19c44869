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
    programs::{BtfTracePoint, TracePoint},
};
use proclens_common::{
    counters, globals,
    switch::{CpuSwitches, ThreadSwitches},
};

use super::{btf, privilege, tracefs};
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
}

/// Loaded and attached programs with their maps.
pub struct Tracer {
    // Kept for its programs and links; dropped last.
    _ebpf: Ebpf,
    threads: HashMap<MapData, u32, ThreadSwitches>,
    cpus: PerCpuArray<MapData, CpuSwitches>,
    counters: PerCpuArray<MapData, u64>,
    events: Option<RingBuf<MapData>>,
    threads_capacity: u32,
}

/// The in-kernel health counters, summed over CPUs.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Health {
    pub ringbuf_drops: u64,
    pub thread_map_full: u64,
}

/// Record offsets from tracefs, resolved before loading.
struct SchedLayout {
    prev_state_off: u32,
    prev_state_size: u32,
    wakeup_pid_off: u32,
}

fn sched_layout(root: &std::path::Path) -> Result<SchedLayout> {
    let switch = tracefs::format(root, "sched", "sched_switch")?;
    let st = switch.int_field("prev_state", &[4, 8])?;
    let wakeup = tracefs::format(root, "sched", "sched_wakeup")?;
    let pid = wakeup.int_field("pid", &[4])?;
    let wakeup_new = tracefs::format(root, "sched", "sched_wakeup_new")?;
    let pid_new = wakeup_new.int_field("pid", &[4])?;
    anyhow::ensure!(
        pid.offset == pid_new.offset,
        "sched_wakeup and sched_wakeup_new place `pid` differently ({} vs {})",
        pid.offset,
        pid_new.offset
    );
    Ok(SchedLayout {
        prev_state_off: st.offset,
        prev_state_size: st.size,
        wakeup_pid_off: pid.offset,
    })
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
        raise_memlock();
        let root = tracefs::root()?;
        let layout = sched_layout(&root)?;
        let vmlinux = btf::load_vmlinux()?;
        let task = btf::TaskOffsets::from_btf(&vmlinux)?;
        let life = btf::LifecycleOffsets::from_btf(&vmlinux)?;
        let self_tgid: u32 = if opts.include_self {
            0
        } else {
            std::process::id()
        };

        let mut loader = EbpfLoader::new();
        loader
            .override_global(globals::SELF_TGID, &self_tgid, true)
            .override_global(globals::SWITCH_PREV_STATE, &layout.prev_state_off, true)
            .override_global(
                globals::SWITCH_PREV_STATE_SIZE,
                &layout.prev_state_size,
                true,
            )
            .override_global(globals::WAKEUP_PID, &layout.wakeup_pid_off, true)
            .override_global(globals::TASK_MM, &task.mm, true)
            .override_global(globals::TASK_GROUP_LEADER, &task.group_leader, true)
            .override_global(globals::TASK_START_TIME, &task.start_time, true)
            .override_global(globals::TASK_PID, &life.pid, true)
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
        let mut ebpf = loader.load(OBJECT).map_err(|e| load_error(e.into()))?;

        for name in ["sched_switch", "sched_wakeup", "sched_wakeup_new"] {
            let prog: &mut TracePoint = ebpf
                .program_mut(name)
                .with_context(|| format!("program {name} missing from the BPF object"))?
                .try_into()?;
            prog.load().map_err(|e| {
                load_error(anyhow::Error::new(e).context(format!("loading {name}")))
            })?;
            prog.attach("sched", name)
                .with_context(|| format!("attaching to sched/{name}"))?;
        }
        // Lifecycle events (see tool-ebpf/src/lifecycle.rs): BTF tracepoints, which hand
        // the programs task_struct pointers and need no tracefs.
        let kernel_btf = aya::Btf::from_sys_fs().map_err(|e| {
            Fatal::KernelUnsupported(format!("reading the kernel's BTF for BTF tracepoints: {e}"))
        })?;
        for name in LIFECYCLE_PROGRAMS {
            let prog: &mut BtfTracePoint = ebpf
                .program_mut(name)
                .with_context(|| format!("program {name} missing from the BPF object"))?
                .try_into()?;
            prog.load(name, &kernel_btf).map_err(|e| {
                load_error(anyhow::Error::new(e).context(format!("loading tp_btf/{name}")))
            })?;
            prog.attach()
                .with_context(|| format!("attaching tp_btf/{name}"))?;
        }

        let threads: HashMap<MapData, u32, ThreadSwitches> =
            HashMap::try_from(ebpf.take_map("THREADS").context("map THREADS missing")?)?;
        let threads_capacity = 32768;
        let cpus = PerCpuArray::try_from(
            ebpf.take_map("CPU_SWITCHES")
                .context("map CPU_SWITCHES missing")?,
        )?;
        let counters =
            PerCpuArray::try_from(ebpf.take_map("COUNTERS").context("map COUNTERS missing")?)?;
        let events = RingBuf::try_from(ebpf.take_map("EVENTS").context("map EVENTS missing")?)?;
        Ok(Self {
            _ebpf: ebpf,
            threads,
            cpus,
            counters,
            events: Some(events),
            threads_capacity,
        })
    }

    /// The ring buffer, to be polled by the caller (once).
    pub fn take_events(&mut self) -> Option<RingBuf<MapData>> {
        self.events.take()
    }

    /// Every traced thread's accounting, by thread id. The map changes while it is read
    /// (the kernel adds and deletes threads), so iteration may restart; duplicates are
    /// folded and the walk is bounded.
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
