//! Load-time globals set by userspace from the running kernel (tracefs formats, BTF).
//!
//! They live in `.rodata`; the loader writes them before the programs are verified, so the
//! verifier sees them as constants. Read them through `read_volatile` so the compiler does
//! not fold in the zero initialisers.

macro_rules! globals {
    ($($(#[$doc:meta])* $name:ident => $getter:ident: $ty:ty;)*) => {
        $(
            $(#[$doc])*
            #[unsafe(no_mangle)]
            static $name: $ty = 0;
        )*
        $(
            #[inline(always)]
            pub(crate) fn $getter() -> $ty {
                // SAFETY: a plain read of a static the loader initialised.
                unsafe { core::ptr::read_volatile(&raw const $name) }
            }
        )*
    };
}

globals! {
    /// proclens's own tgid: its threads are not traced.
    SELF_TGID => self_tgid: u32;
    SWITCH_PREV_STATE_ARG => switch_prev_state_arg: u32;
    TASK_PID_OFF => task_pid_off: u32;
    TASK_STATE_OFF => task_state_off: u32;
    TASK_EXIT_STATE_OFF => task_exit_state_off: u32;
    TASK_MM_OFF => task_mm_off: u32;
    TASK_GROUP_LEADER_OFF => task_group_leader_off: u32;
    TASK_START_TIME_OFF => task_start_time_off: u32;
    /// 1: the switch programs take the time from the task's run queue through the three
    /// offsets below; 0: from `bpf_ktime_get_ns` (see `switch::now`).
    RQ_CLOCK => rq_clock: u32;
    TASK_CFS_RQ_OFF => task_cfs_rq_off: u32;
    CFS_RQ_RQ_OFF => cfs_rq_rq_off: u32;
    RQ_CLOCK_OFF => rq_clock_off: u32;
    /// 1: run-queue time comes from the scheduler's per-task `sched_info.run_delay` (at
    /// `TASK_RUN_DELAY_OFF`) and the wakeup programs are not attached; 0: from timing
    /// wakeups (kernels that keep no such counter). Only with `RQ_CLOCK`.
    SCHED_INFO => sched_info: u32;
    TASK_RUN_DELAY_OFF => task_run_delay_off: u32;
    /// CLOCK_MONOTONIC when tracing began: threads started later (`task_struct.start_time`)
    /// are traced from their first instruction, so their whole run-queue time counts.
    TRACE_START_NS => trace_start_ns: u64;
    /// How many slots of `THREAD_SLOTS` threads may own (a power of two, see
    /// `switch::slot`); 0: every thread's entry is in `THREADS`.
    THREAD_SLOTS_USED => thread_slots_used: u32;
    /// How many event rings the programs write (a power of two, 1 to 8; see
    /// `maps::events`), and the unread bytes of a ring above which a submit wakes the
    /// reader.
    EVENT_RINGS_USED => event_rings_used: u32;
    WAKEUP_BACKLOG => wakeup_backlog: u64;
    /// Only trace tasks in this cgroup v2 (or below it); 0 traces every task.
    CGROUP_ID => cgroup_id: u64;
    /// Depth of that cgroup below the v2 root (the ancestor level to compare).
    CGROUP_LEVEL => cgroup_level: u32;
    /// Copy paths (see `copies` and `fdkind`).
    COPY_EXIT_RET_OFF => copy_exit_ret_off: u32;
    MAP_ANONYMOUS_FLAG => map_anonymous_flag: u64;
    TASK_FILES_OFF => task_files_off: u32;
    FILES_FDT_OFF => files_fdt_off: u32;
    FDT_MAX_FDS_OFF => fdt_max_fds_off: u32;
    FDT_FD_OFF => fdt_fd_off: u32;
    FILE_INODE_OFF => file_inode_off: u32;
    FILE_MODE_OFF => file_mode_off: u32;
    INODE_MODE_OFF => inode_mode_off: u32;
    TASK_TGID_OFF => task_tgid_off: u32;
    TASK_REAL_PARENT_OFF => task_real_parent_off: u32;
    TASK_START_BOOTTIME_OFF => task_start_boottime_off: u32;
    TASK_EXIT_CODE_OFF => task_exit_code_off: u32;
    TASK_EXIT_SIGNAL_OFF => task_exit_signal_off: u32;
    TASK_SIGHAND_OFF => task_sighand_off: u32;
    TASK_COMM_OFF => task_comm_off: u32;
    SIGCHLD_HANDLER_OFF => sigchld_handler_off: u32;
    SIGCHLD_FLAGS_OFF => sigchld_flags_off: u32;
    BINPRM_FILENAME_OFF => binprm_filename_off: u32;
    PID_NR_OFF => pid_nr_off: u32;
    EXIT_GROUP_DEAD_ARG => exit_group_dead_arg: u32;
    TASK_SIGNAL_OFF => task_signal_off: u32;
    SIGNAL_LIVE_OFF => signal_live_off: u32;
    /// 1: find the current task's ancestor cgroup by reading `task->cgroups->dfl_cgrp`
    /// through the offsets below (kernels whose tracing programs may not call
    /// bpf_get_current_ancestor_cgroup_id, such as 5.10); 0: call the helper.
    CGROUP_WALK => cgroup_walk: u32;
    TASK_CGROUPS_OFF => task_cgroups_off: u32;
    CSS_SET_DFL_CGRP_OFF => css_set_dfl_cgrp_off: u32;
    CGROUP_LEVEL_OFF => cgroup_level_off: u32;
    CGROUP_ANCESTOR_IDS_OFF => cgroup_ancestor_ids_off: u32;
}
