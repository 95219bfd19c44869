//! Wire types shared by the kernel side (`proclens-ebpf`) and userspace (`proclens`).
//!
//! Everything here is `#[repr(C)]`, `Copy` and free of pointers, so the same bytes mean the
//! same thing on both sides of the kernel boundary. Userspace gets `aya::Pod` impls behind
//! the `user` feature; the eBPF side uses the types as they are.
#![no_std]

pub mod counters;
pub mod event;
pub mod lifecycle;
pub mod switch;

/// Names of the load-time globals (`.rodata`) the eBPF object reads. Userspace sets them
/// with `EbpfLoader::set_global` from what it learned of the running kernel.
pub mod globals {
    /// tgid of the proclens process itself; its threads are not traced unless asked.
    pub const SELF_TGID: &str = "SELF_TGID";
    /// Byte offsets inside the `sched/sched_switch` tracepoint record (tracefs format).
    pub const SWITCH_PREV_STATE: &str = "SWITCH_PREV_STATE_OFF";
    pub const SWITCH_PREV_STATE_SIZE: &str = "SWITCH_PREV_STATE_SIZE";
    /// Byte offset of `pid` in the `sched/sched_wakeup{,_new}` records.
    pub const WAKEUP_PID: &str = "WAKEUP_PID_OFF";
    /// `struct task_struct` member offsets from the running kernel's BTF.
    pub const TASK_MM: &str = "TASK_MM_OFF";
    pub const TASK_GROUP_LEADER: &str = "TASK_GROUP_LEADER_OFF";
    pub const TASK_START_TIME: &str = "TASK_START_TIME_OFF";
    /// Offsets used by the lifecycle programs (BTF of the running kernel).
    pub const TASK_PID: &str = "TASK_PID_OFF";
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
}

#[cfg(feature = "user")]
mod pod {
    // SAFETY: every type listed is #[repr(C)], Copy, has no padding the kernel could leave
    // uninitialised in a way that matters to readers (all fields are plain integers), and
    // is valid for any bit pattern.
    unsafe impl aya::Pod for crate::switch::ThreadSwitches {}
    unsafe impl aya::Pod for crate::switch::CpuSwitches {}
}
