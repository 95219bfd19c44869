//! Load-time globals set by userspace from the running kernel (BTF, tracefs, the machine):
//! one struct per concern (see `proclens_common::config`), each a static in `.rodata`
//! whose name userspace writes. The loader writes them before the programs are verified,
//! so the verifier sees every field as a constant. Fields are read through `read_volatile`
//! so the compiler does not fold in the zero initialisers.

use proclens_common::config::{
    Copies, Filter, Forks, Irq, Lifecycle, NR_TABLE, Rings, Switch, Task, Waits,
};

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
        cgroup_ancestor_ptrs => cgroup_ancestor_ptrs: u32,
        cgroup_kn => cgroup_kn_off: u32,
        kernfs_node_id => kernfs_node_id_off: u32,
        npids => filter_npids: u32,
        comm_len => filter_comm_len: u32,
        comm => filter_comm: [u8; 16],
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
        task_flags => task_flags_off: u32,
        task_active_mm => task_active_mm_off: u32,
        task_nvcsw => task_nvcsw_off: u32,
        task_nivcsw => task_nivcsw_off: u32,
        task_on_cpu => task_on_cpu_off: u32,
        task_on_rq => task_on_rq_off: u32,
        task_last_arrival => task_last_arrival_off: u32,
        task_last_queued => task_last_queued_off: u32,
        cpu_table => cpu_table: u32,
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
        task_children => task_children_off: u32,
        task_sibling => task_sibling_off: u32,
        task_exit_state => life_exit_state_off: u32,
        task_thread_pid => task_thread_pid_off: u32,
        pid_level => pid_level_off: u32,
        pid_numbers => pid_numbers_off: u32,
        upid_size => upid_size: u32,
        upid_ns => upid_ns_off: u32,
        pidns_child_reaper => pidns_child_reaper_off: u32,
        signal_is_subreaper_bit => signal_is_subreaper_bit: u32,
        signal_has_subreaper_bit => signal_has_subreaper_bit: u32,
        signal_wait_chldexit => signal_wait_chldexit_off: u32,
        clocked => iter_clocked: u32,
        task_last_arrival => life_last_arrival_off: u32,
        task_cfs_rq => iter_task_cfs_rq_off: u32,
        cfs_rq_rq => iter_cfs_rq_rq_off: u32,
        rq_clock => iter_rq_clock_off: u32,
    }
    /// The syscall programs (see `syscalls`, `copies` and `fdkind`).
    CONFIG_COPIES: Copies {
        map_anonymous => map_anonymous_flag: u64,
        count_syscalls => count_syscalls: u32,
        copies => copies_on: u32,
        regs_nr => regs_nr_off: u32,
        compat_status => compat_status_off: u32,
        compat_flag => compat_flag: u32,
        task_flags => syscall_task_flags_off: u32,
        signal_flags => signal_flags_off: u32,
        skip_spawning => skip_spawning: u32,
        self_exec_id => spawn_self_exec_id_off: u32,
        parent_exec_id => spawn_parent_exec_id_off: u32,
        task_regs_helper => task_regs_helper: u32,
        mmsg_size => mmsg_size: u32,
        mmsg_len => mmsg_len_off: u32,
        compat_mmsg_size => compat_mmsg_size: u32,
        compat_mmsg_len => compat_mmsg_len_off: u32,
        task_files => task_files_off: u32,
        files_fdt => files_fdt_off: u32,
        fdt_max_fds => fdt_max_fds_off: u32,
        fdt_fd => fdt_fd_off: u32,
        file_inode => file_inode_off: u32,
        file_mode => file_mode_off: u32,
        inode_mode => inode_mode_off: u32,
    }
    /// The after-fork programs (see `faults`, `forks` and `fds`).
    CONFIG_FORKS: Forks {
        fault_cow_mask => fault_cow_mask: u64,
        task_self_exec_id => task_self_exec_id_off: u32,
        task_parent_exec_id => task_parent_exec_id_off: u32,
        clone_flags => clone_flags_off: u32,
        clone3_uargs => clone3_uargs_off: u32,
        exit_ret => fork_exit_ret_off: u32,
        clone_args_flags => clone_args_flags_off: u32,
        task_files => fds_task_files_off: u32,
        files_fdt => fds_files_fdt_off: u32,
        fdt_max_fds => fds_fdt_max_fds_off: u32,
        fdt_fd => fds_fdt_fd_off: u32,
        fdt_open_fds => fds_fdt_open_fds_off: u32,
        fdt_close_on_exec => fds_fdt_close_on_exec_off: u32,
        file_inode => fds_file_inode_off: u32,
        inode_mode => fds_inode_mode_off: u32,
        binprm_filename => fds_binprm_filename_off: u32,
        hugetlb_probe => hugetlb_probe: u32,
        task_mm => huge_task_mm_off: u32,
        mm_hugetlb_usage => mm_hugetlb_usage_off: u32,
        vma_flags => vma_flags_off: u32,
        vma_file => vma_file_off: u32,
        inode_sb => inode_sb_off: u32,
        sb_blocksize_bits => sb_blocksize_bits_off: u32,
    }

    /// The interrupt programs (see `irq`).
    CONFIG_IRQ: Irq {
        lines => irq_lines: u32,
        irqaction_next => irqaction_next_off: u32,
        task_flags => irq_task_flags_off: u32,
    }
    /// Where blocked time goes (see `waits`).
    CONFIG_WAITS: Waits {
        blocked_in => waits_blocked_in: u32,
        task_regs_helper => waits_task_regs_helper: u32,
        regs_nr => waits_regs_nr_off: u32,
        regs_ret => waits_regs_ret_off: u32,
        compat_status => waits_compat_status_off: u32,
        compat_flag => waits_compat_flag: u32,
        ready => waits_ready: u32,
        rec_nr => waits_rec_nr: u32,
        rec_args => waits_rec_args: u32,
        rec_ret => waits_rec_ret: u32,
    }
}

/// The syscall number of readiness call `i` (below `waits::call::COUNT`).
#[inline(always)]
pub(crate) fn waits_nr(i: usize) -> u32 {
    // SAFETY: an in-bounds read (the callers iterate below COUNT) of a static the loader
    // initialised.
    unsafe { core::ptr::read_volatile((&raw const CONFIG_WAITS.nr).cast::<u32>().add(i)) }
}

/// Pid `i` of the `-p` filter; the caller keeps `i` below `MAX_PIDS`.
#[inline(always)]
pub(crate) fn filter_pid(i: usize) -> u32 {
    // SAFETY: an in-bounds read (the caller checks `i`) of a static the loader initialised.
    unsafe { core::ptr::read_volatile((&raw const CONFIG_FILTER.pids).cast::<u32>().add(i)) }
}

/// The `pt_regs` offset of syscall argument `i` (below 6) in the 64-bit or 32-bit ABI.
#[inline(always)]
pub(crate) fn arg_off(compat: bool, i: usize) -> u32 {
    // SAFETY: in-bounds reads (the callers pass constants below 6).
    unsafe {
        if compat {
            core::ptr::read_volatile((&raw const CONFIG_COPIES.args_compat).cast::<u32>().add(i))
        } else {
            core::ptr::read_volatile((&raw const CONFIG_COPIES.args_native).cast::<u32>().add(i))
        }
    }
}

/// Element `i` (a constant after inlining) of a `u32` array in `CONFIG_COPIES`, read in
/// place: a copy on the stack indexed by a variable is a variable-offset stack read,
/// which older verifiers (5.10) refuse.
#[inline(always)]
fn copies_u32(array: *const u32, i: usize) -> u32 {
    // SAFETY: the callers pass in-bounds constants for arrays of `CONFIG_COPIES`.
    unsafe { core::ptr::read_volatile(array.add(i)) }
}

/// `rt_sigreturn`'s number in the 64-bit or 32-bit ABI.
#[inline(always)]
pub(crate) fn sigreturn_nr(compat: bool) -> u32 {
    let t = (&raw const CONFIG_COPIES.sigreturn_nr).cast::<u32>();
    if compat {
        copies_u32(t, 1)
    } else {
        copies_u32(t, 0)
    }
}

/// `exit`'s number in the 64-bit or 32-bit ABI.
#[inline(always)]
pub(crate) fn exit_nr(compat: bool) -> u32 {
    let t = (&raw const CONFIG_COPIES.exit_nr).cast::<u32>();
    if compat {
        copies_u32(t, 1)
    } else {
        copies_u32(t, 0)
    }
}

/// `exit_group`'s number in the 64-bit or 32-bit ABI.
#[inline(always)]
pub(crate) fn exit_group_nr(compat: bool) -> u32 {
    let t = (&raw const CONFIG_COPIES.exit_group_nr).cast::<u32>();
    if compat {
        copies_u32(t, 1)
    } else {
        copies_u32(t, 0)
    }
}

/// Whether `nr` is a fork-family call (fork, vfork, clone, clone3) in the ABI.
#[inline(always)]
pub(crate) fn is_fork_nr(nr: u64, compat: bool) -> bool {
    let t = (&raw const CONFIG_COPIES.fork_nr).cast::<u32>();
    let is = |i: usize| u64::from(copies_u32(t, i)) == nr;
    if compat {
        is(4) || is(5) || is(6) || is(7)
    } else {
        is(0) || is(1) || is(2) || is(3)
    }
}

/// The copy op of syscall `nr` in the 64-bit or 32-bit ABI (`op::NONE` outside the family).
#[inline(always)]
pub(crate) fn op_of(nr: u64, compat: bool) -> u8 {
    if nr >= NR_TABLE as u64 {
        return proclens_common::copies::op::NONE;
    }
    let i = nr as usize + if compat { NR_TABLE } else { 0 };
    // SAFETY: `i` < 2 * NR_TABLE, the table's length.
    unsafe { core::ptr::read_volatile((&raw const CONFIG_COPIES.ops).cast::<u8>().add(i)) }
}
