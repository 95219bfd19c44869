//! Wire types shared by the kernel side (`proclens-ebpf`) and userspace (`proclens`).
//!
//! Everything here is `#[repr(C)]`, `Copy` and free of pointers, so the same bytes mean the
//! same thing on both sides of the kernel boundary. Userspace gets `aya::Pod` impls behind
//! the `user` feature; the eBPF side uses the types as they are.
#![no_std]

pub mod copies;
pub mod counters;
pub mod event;
pub mod lifecycle;
pub mod switch;

/// Names of the load-time globals (`.rodata`) the eBPF object reads. Userspace sets them
/// with `EbpfLoader::set_global` from what it learned of the running kernel.
pub mod globals {
    /// tgid of the proclens process itself; its threads are not traced unless asked.
    pub const SELF_TGID: &str = "SELF_TGID";
    /// 1 when the `sched_switch` raw tracepoint passes `prev_state` as its 4th argument
    /// (Linux 5.18+, read from BTF); 0 makes the program read `prev->__state` instead.
    pub const SWITCH_PREV_STATE_ARG: &str = "SWITCH_PREV_STATE_ARG";
    /// `struct task_struct` member offsets from the running kernel's BTF.
    pub const TASK_PID: &str = "TASK_PID_OFF";
    pub const TASK_STATE: &str = "TASK_STATE_OFF";
    pub const TASK_EXIT_STATE: &str = "TASK_EXIT_STATE_OFF";
    pub const TASK_MM: &str = "TASK_MM_OFF";
    pub const TASK_GROUP_LEADER: &str = "TASK_GROUP_LEADER_OFF";
    pub const TASK_START_TIME: &str = "TASK_START_TIME_OFF";
    /// 1 when the switch programs read the time from the task's run queue
    /// (`task->se.cfs_rq->rq->clock`, offsets below, from BTF); 0: `bpf_ktime_get_ns`.
    pub const RQ_CLOCK: &str = "RQ_CLOCK";
    pub const TASK_CFS_RQ: &str = "TASK_CFS_RQ_OFF";
    pub const CFS_RQ_RQ: &str = "CFS_RQ_RQ_OFF";
    pub const RQ_CLOCK_OFF: &str = "RQ_CLOCK_OFF";
    /// 1 when run-queue time comes from `task_struct.sched_info.run_delay` (offset
    /// below, from BTF) and the wakeup programs stay detached; CLOCK_MONOTONIC at load.
    pub const SCHED_INFO: &str = "SCHED_INFO";
    pub const TASK_RUN_DELAY: &str = "TASK_RUN_DELAY_OFF";
    pub const TRACE_START_NS: &str = "TRACE_START_NS";
    /// How many slots of the direct-mapped `THREAD_SLOTS` table threads may own: a power
    /// of two up to `switch::THREAD_SLOTS` (all of them, the default); 0 keeps every
    /// thread in the `THREADS` hash. Fewer than all only in tests, to mix both tables.
    pub const THREAD_SLOTS_USED: &str = "THREAD_SLOTS_USED";
    /// How many of the event rings (`event::RINGS`) the programs write: a power of two;
    /// CPU *c* writes ring *c* mod that. And the unread bytes above which a submit wakes
    /// the reader.
    pub const EVENT_RINGS_USED: &str = "EVENT_RINGS_USED";
    pub const WAKEUP_BACKLOG: &str = "WAKEUP_BACKLOG";
    /// cgroup v2 filter: id of the cgroup (0: none) and its depth below the root.
    pub const CGROUP_ID: &str = "CGROUP_ID";
    pub const CGROUP_LEVEL: &str = "CGROUP_LEVEL";
    /// Copy paths: per-op `sys_enter_*` record offsets (`[u32; copies::layout::SIZE]`),
    /// the `ret` offset shared by the `sys_exit_*` records, and `MAP_ANONYMOUS`.
    pub const COPY_LAYOUT: &str = "COPY_LAYOUT";
    pub const COPY_EXIT_RET: &str = "COPY_EXIT_RET_OFF";
    pub const MAP_ANONYMOUS: &str = "MAP_ANONYMOUS_FLAG";
    /// The fd → inode chain from BTF: task_struct.files, files_struct.fdt,
    /// fdtable.max_fds, fdtable.fd, file.f_inode, file.f_mode, inode.i_mode.
    pub const TASK_FILES: &str = "TASK_FILES_OFF";
    pub const FILES_FDT: &str = "FILES_FDT_OFF";
    pub const FDT_MAX_FDS: &str = "FDT_MAX_FDS_OFF";
    pub const FDT_FD: &str = "FDT_FD_OFF";
    pub const FILE_INODE: &str = "FILE_INODE_OFF";
    pub const FILE_MODE: &str = "FILE_MODE_OFF";
    pub const INODE_MODE: &str = "INODE_MODE_OFF";
    /// Offsets used by the lifecycle programs (BTF of the running kernel).
    pub const TASK_TGID: &str = "TASK_TGID_OFF";
    pub const TASK_REAL_PARENT: &str = "TASK_REAL_PARENT_OFF";
    pub const TASK_START_BOOTTIME: &str = "TASK_START_BOOTTIME_OFF";
    pub const TASK_EXIT_CODE: &str = "TASK_EXIT_CODE_OFF";
    pub const TASK_EXIT_SIGNAL: &str = "TASK_EXIT_SIGNAL_OFF";
    pub const TASK_SIGHAND: &str = "TASK_SIGHAND_OFF";
    pub const TASK_COMM: &str = "TASK_COMM_OFF";
    /// Offset of `action[SIGCHLD - 1].sa.sa_handler` / `.sa_flags` in `sighand_struct`.
    pub const SIGCHLD_HANDLER: &str = "SIGCHLD_HANDLER_OFF";
    pub const SIGCHLD_FLAGS: &str = "SIGCHLD_FLAGS_OFF";
    /// `linux_binprm.filename`.
    pub const BINPRM_FILENAME: &str = "BINPRM_FILENAME_OFF";
    /// `pid.numbers[0].nr`.
    pub const PID_NR: &str = "PID_NR_OFF";
    /// 1 when `sched_process_exit` passes `group_dead`; else `signal->live` is read.
    pub const EXIT_GROUP_DEAD_ARG: &str = "EXIT_GROUP_DEAD_ARG";
    pub const TASK_SIGNAL: &str = "TASK_SIGNAL_OFF";
    pub const SIGNAL_LIVE: &str = "SIGNAL_LIVE_OFF";
    /// 1 makes the cgroup filter walk `task->cgroups->dfl_cgrp->ancestor_ids[level]`
    /// (offsets below, from BTF) instead of calling bpf_get_current_ancestor_cgroup_id,
    /// which tracing programs may not call on older kernels (5.10).
    pub const CGROUP_WALK: &str = "CGROUP_WALK";
    pub const TASK_CGROUPS: &str = "TASK_CGROUPS_OFF";
    pub const CSS_SET_DFL_CGRP: &str = "CSS_SET_DFL_CGRP_OFF";
    pub const CGROUP_LEVEL_OFF: &str = "CGROUP_LEVEL_OFF";
    pub const CGROUP_ANCESTOR_IDS: &str = "CGROUP_ANCESTOR_IDS_OFF";
}

#[cfg(feature = "user")]
mod pod {
    // SAFETY: every type listed is #[repr(C)], Copy, has no padding the kernel could leave
    // uninitialised in a way that matters to readers (all fields are plain integers), and
    // is valid for any bit pattern.
    unsafe impl aya::Pod for crate::switch::ThreadSwitches {}
    unsafe impl aya::Pod for crate::switch::CpuSwitches {}
    unsafe impl aya::Pod for crate::switch::ThreadSlot {}
    unsafe impl aya::Pod for crate::copies::CopyKey {}
    unsafe impl aya::Pod for crate::copies::CopyStats {}
    unsafe impl aya::Pod for crate::copies::Inflight {}
    unsafe impl aya::Pod for crate::copies::SysKey {}
    unsafe impl aya::Pod for crate::copies::ProcKey {}
}
