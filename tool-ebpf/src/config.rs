//! Load-time globals set by userspace from the running kernel (BTF, tracefs, the machine):
//! one struct per concern (see `proclens_common::config`), each a static in `.rodata`
//! whose name userspace writes. The loader writes them before the programs are verified,
//! so the verifier sees every field as a constant. Fields are read through `read_volatile`
//! so the compiler does not fold in the zero initialisers.

use proclens_common::config::{Copies, Filter, Irq, Lifecycle, Rings, Switch, Task};

macro_rules! config {
    ($(
        $(#[$doc:meta])*
        $static:ident: $ty:ty {
            $($field:ident => $getter:ident: $fty:ty,)*
        }
    )*) => {
        $(
            $(#[$doc])*
            #[unsafe(no_mangle)]
            // SAFETY: every config struct is plain integers, valid when zeroed.
            static $static: $ty = unsafe { core::mem::zeroed() };
            $(
                #[inline(always)]
                #[allow(dead_code, reason = "every field has a getter; not every one is read")]
                pub(crate) fn $getter() -> $fty {
                    // SAFETY: a plain read of a static the loader initialised.
                    unsafe { core::ptr::read_volatile(&raw const $static.$field) }
                }
            )*
        )*
    };
}

config! {
    /// `task_struct` offsets shared by the concerns.
    CONFIG_TASK: Task {
        pid => task_pid_off: u32,
        tgid => task_tgid_off: u32,
        group_leader => task_group_leader_off: u32,
        start_time => task_start_time_off: u32,
        start_boottime => task_start_boottime_off: u32,
        comm => task_comm_off: u32,
    }
    /// Which tasks are traced (see `filter`).
    CONFIG_FILTER: Filter {
        self_tgid => self_tgid: u32,
        cgroup_level => cgroup_level: u32,
        cgroup_id => cgroup_id: u64,
        cgroup_walk => cgroup_walk: u32,
        task_cgroups => task_cgroups_off: u32,
        css_set_dfl_cgrp => css_set_dfl_cgrp_off: u32,
        cgroup_level_off => cgroup_level_off: u32,
        cgroup_ancestor_ids => cgroup_ancestor_ids_off: u32,
    }
    /// The switch programs (see `switch`).
    CONFIG_SWITCH: Switch {
        prev_state_arg => switch_prev_state_arg: u32,
        task_state => task_state_off: u32,
        task_exit_state => task_exit_state_off: u32,
        task_mm => task_mm_off: u32,
        rq_clock => rq_clock: u32,
        task_cfs_rq => task_cfs_rq_off: u32,
        cfs_rq_rq => cfs_rq_rq_off: u32,
        rq_clock_off => rq_clock_off: u32,
        sched_info => sched_info: u32,
        task_run_delay => task_run_delay_off: u32,
        thread_slots_used => thread_slots_used: u32,
        trace_start_ns => trace_start_ns: u64,
    }
    /// The event rings (see `maps`).
    CONFIG_RINGS: Rings {
        used => event_rings_used: u32,
        wakeup_backlog => wakeup_backlog: u64,
    }
    /// The lifecycle programs (see `lifecycle`).
    CONFIG_LIFECYCLE: Lifecycle {
        task_real_parent => task_real_parent_off: u32,
        task_exit_code => task_exit_code_off: u32,
        task_exit_signal => task_exit_signal_off: u32,
        task_sighand => task_sighand_off: u32,
        sigchld_handler => sigchld_handler_off: u32,
        sigchld_flags => sigchld_flags_off: u32,
        binprm_filename => binprm_filename_off: u32,
        pid_nr => pid_nr_off: u32,
        exit_group_dead_arg => exit_group_dead_arg: u32,
        task_signal => task_signal_off: u32,
        signal_live => signal_live_off: u32,
    }
    /// The copy-path programs (see `copies` and `fdkind`).
    CONFIG_COPIES: Copies {
        map_anonymous => map_anonymous_flag: u64,
        exit_ret => copy_exit_ret_off: u32,
        task_files => task_files_off: u32,
        files_fdt => files_fdt_off: u32,
        fdt_max_fds => fdt_max_fds_off: u32,
        fdt_fd => fdt_fd_off: u32,
        file_inode => file_inode_off: u32,
        file_mode => file_mode_off: u32,
        inode_mode => inode_mode_off: u32,
    }
    /// The interrupt programs (see `irq`).
    CONFIG_IRQ: Irq {
        lines => irq_lines: u32,
        irqaction_next => irqaction_next_off: u32,
        task_flags => task_flags_off: u32,
    }
}

/// Element `i` of the copy programs' per-op record layout (`Copies::layout`); the caller
/// keeps `i` below `layout::SIZE`.
#[inline(always)]
pub(crate) fn copy_layout(i: usize) -> u32 {
    // SAFETY: an in-bounds read (the caller checks `i`) of a static the loader initialised.
    unsafe { core::ptr::read_volatile((&raw const CONFIG_COPIES.layout).cast::<u32>().add(i)) }
}
