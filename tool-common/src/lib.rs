//! Wire types shared by the kernel side (`proclens-ebpf`) and userspace (`proclens`).
//!
//! Everything here is `#[repr(C)]`, `Copy` and free of pointers, so the same bytes mean the
//! same thing on both sides of the kernel boundary. Userspace gets `aya::Pod` impls behind
//! the `user` feature; the eBPF side uses the types as they are.
#![no_std]

pub mod counters;
pub mod event;
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
    /// cgroup v2 filter: id of the cgroup (0: none) and its depth below the root.
    pub const CGROUP_ID: &str = "CGROUP_ID";
    pub const CGROUP_LEVEL: &str = "CGROUP_LEVEL";
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
}
