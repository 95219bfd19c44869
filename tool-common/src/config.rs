//! The kernel side's load-time configuration: one `#[repr(C)]` struct per concern, each a
//! global in the object's `.rodata` (named by [`Global::NAME`]) that userspace fills from
//! the running kernel (BTF, tracefs, the machine) before the programs are verified. The
//! verifier then sees every field as a constant and prunes the branches it rules out.
//!
//! A struct is written whole by the concern that owns it, so no field can be left unset
//! by forgetting one call; userspace checks, in a unit test of the embedded object, that
//! every global of `.rodata` is one of these with the size given here.

use crate::copies::op;

/// A load-time global: its symbol name in the object.
pub trait Global {
    const NAME: &'static str;
}

/// `task_struct` fields read by more than one concern (offsets from BTF).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Task {
    pub pid: u32,
    pub tgid: u32,
    pub group_leader: u32,
    /// `start_time` (`CLOCK_MONOTONIC` ns): the switch programs' "born after tracing
    /// began".
    pub start_time: u32,
    /// `start_boottime` (`real_start_time` before 5.5): the clock /proc/PID/stat uses,
    /// with the tgid the identity of a process in every map and event.
    pub start_boottime: u32,
    pub comm: u32,
}

/// Pids the filter holds in [`Filter::pids`]; more go to the `SELECTED_PIDS` map.
pub const MAX_PIDS: usize = 16;
/// [`Filter::npids`] when the pids are in the `SELECTED_PIDS` map.
pub const PIDS_IN_MAP: u32 = u32::MAX;

/// Which tasks are traced (see tool-ebpf/src/filter.rs).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Filter {
    /// proclens's own tgid (its threads are not traced), 0 to trace them too.
    pub self_tgid: u32,
    /// Depth of the cgroup below the v2 root (the ancestor level compared).
    pub cgroup_level: u32,
    /// Only tasks in this cgroup v2 subtree; 0: every task.
    pub cgroup_id: u64,
    /// 1: find the current task's ancestor by reading `task->cgroups->dfl_cgrp`
    /// through the offsets below (kernels whose tracing programs may not call
    /// `bpf_get_current_ancestor_cgroup_id`, such as 5.10); 0: call the helper.
    pub cgroup_walk: u32,
    pub task_cgroups: u32,
    pub css_set_dfl_cgrp: u32,
    pub cgroup_level_off: u32,
    /// `cgroup.ancestor_ids` (u64 ids, older kernels such as 5.10) or `cgroup.ancestors`
    /// (pointers, later kernels; see `cgroup_ancestor_ptrs`).
    pub cgroup_ancestor_ids: u32,
    /// 1: `cgroup_ancestor_ids` is `ancestors[]`, whose ids are `cgroup.kn` →
    /// `kernfs_node.id` (the two offsets below).
    pub cgroup_ancestor_ptrs: u32,
    pub cgroup_kn: u32,
    pub kernfs_node_id: u32,
    /// `-p`: how many of `pids` are selected (0: no pid filter), or [`PIDS_IN_MAP`].
    pub npids: u32,
    pub pids: [u32; MAX_PIDS],
    /// `--comm`: the length of `comm` (0: no name filter).
    pub comm_len: u32,
    /// The text a selected task's (or its process's) command name contains.
    pub comm: [u8; 16],
}

/// The switch programs (see tool-ebpf/src/switch.rs).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Switch {
    /// 1 when `sched_switch` passes `prev_state` as its 4th argument (5.18+); 0 reads
    /// `prev->__state` (or `state`) at `task_state`.
    pub prev_state_arg: u32,
    pub task_state: u32,
    pub task_exit_state: u32,
    pub task_mm: u32,
    /// 1: the time comes from the task's run queue (`task->se.cfs_rq->rq->clock`, the
    /// three offsets below); 0: from `bpf_ktime_get_ns`.
    pub rq_clock: u32,
    pub task_cfs_rq: u32,
    pub cfs_rq_rq: u32,
    pub rq_clock_off: u32,
    /// 1: run-queue time comes from the scheduler's `sched_info.run_delay` (at
    /// `task_run_delay`) and the wakeup programs are not attached; 0: timed wakeups.
    pub sched_info: u32,
    pub task_run_delay: u32,
    /// How many slots of `THREAD_SLOTS` threads may own (a power of two); 0: every
    /// thread's entry is in `THREADS`.
    pub thread_slots_used: u32,
    /// `task_struct.flags` (`PF_KTHREAD`), `active_mm` (the address space a task runs
    /// on, borrowed by one without an `mm` of its own) and the switch counters
    /// `nvcsw`/`nivcsw`.
    pub task_flags: u32,
    pub task_active_mm: u32,
    pub task_nvcsw: u32,
    pub task_nivcsw: u32,
    /// `task_struct.on_cpu` and `on_rq`, read by the thread iterators.
    pub task_on_cpu: u32,
    pub task_on_rq: u32,
    /// `sched_info.last_arrival` and `last_queued` (with `sched_info`).
    pub task_last_arrival: u32,
    pub task_last_queued: u32,
    /// 1: the programs keep their per-CPU state in the table `CPUS` (the machine has at
    /// most `switch::CPU_TABLE_CPUS` possible CPUs); 0: in the per-CPU map `CPU_SWITCHES`.
    pub cpu_table: u32,
    /// `CLOCK_MONOTONIC` when tracing began: threads started later are traced from their
    /// first instruction, so their whole run-queue time counts.
    pub trace_start_ns: u64,
}

/// The event rings (see tool-ebpf/src/maps.rs).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Rings {
    /// Rings written, a power of two up to `event::RINGS.len()`: CPU *c* writes ring
    /// *c* mod this.
    pub used: u32,
    pub _pad: u32,
    /// Unread bytes of a ring above which a submit wakes the reader.
    pub wakeup_backlog: u64,
}

/// The lifecycle programs (see tool-ebpf/src/lifecycle.rs).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Lifecycle {
    pub task_real_parent: u32,
    pub task_exit_code: u32,
    pub task_exit_signal: u32,
    pub task_sighand: u32,
    /// `sighand_struct.action[SIGCHLD - 1].sa.sa_handler` and `.sa_flags`.
    pub sigchld_handler: u32,
    pub sigchld_flags: u32,
    /// `linux_binprm.filename`.
    pub binprm_filename: u32,
    /// `pid.numbers[0].nr`.
    pub pid_nr: u32,
    /// 1 when `sched_process_exit` passes `group_dead`; else `task->signal->live` is read.
    pub exit_group_dead_arg: u32,
    pub task_signal: u32,
    pub signal_live: u32,
    /// `task_struct.children` and `.sibling` (list heads), `.exit_state`.
    pub task_children: u32,
    pub task_sibling: u32,
    pub task_exit_state: u32,
    /// The reaper of an exiting process's children, by the kernel's `find_new_reaper`:
    /// `task_struct.thread_pid`, `pid.level`, `pid.numbers`, `sizeof(struct upid)`,
    /// `upid.ns`, `pid_namespace.child_reaper`.
    pub task_thread_pid: u32,
    pub pid_level: u32,
    pub pid_numbers: u32,
    pub upid_size: u32,
    pub upid_ns: u32,
    pub pidns_child_reaper: u32,
    /// Bit offsets in `signal_struct` of the bitfields `is_child_subreaper` and
    /// `has_child_subreaper`.
    pub signal_is_subreaper_bit: u32,
    pub signal_has_subreaper_bit: u32,
    /// `signal_struct.wait_chldexit.head`: the list of threads blocked in wait*().
    pub signal_wait_chldexit: u32,
    /// 1 when the start-up task iterator can date zombies: `sched_info.last_arrival` (at
    /// `task_last_arrival`) and the run-queue clock (`task_struct.se.cfs_rq`, `cfs_rq.rq`,
    /// `rq.clock`) exist.
    pub clocked: u32,
    pub task_last_arrival: u32,
    pub task_cfs_rq: u32,
    pub cfs_rq_rq: u32,
    pub rq_clock: u32,
}

/// Syscall numbers each dispatch table of [`Copies::ops`] covers.
pub const NR_TABLE: usize = 512;

/// The syscall programs (see tool-ebpf/src/syscalls.rs, copies.rs and fdkind.rs).
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Copies {
    /// `MAP_ANONYMOUS` of the kernel's ABI.
    pub map_anonymous: u64,
    /// 1: count every syscall per process (`SYSCALLS`).
    pub count_syscalls: u32,
    /// 1: dispatch on the op tables (`ops`): the copy-family calls to `COPIES` and the
    /// fork-family calls to the fork timing, as far as the tables name them.
    pub copies: u32,
    /// Offsets in `struct pt_regs` of syscall arguments 0..5 in the 64-bit ABI, and in
    /// the 32-bit (compat) one.
    pub args_native: [u32; 6],
    pub args_compat: [u32; 6],
    /// `pt_regs` offset of the syscall number at `sys_exit` (`orig_ax` on x86).
    pub regs_nr: u32,
    /// `task_struct` offset of the word whose `compat_flag` bit says a 32-bit syscall is
    /// running (x86: `thread_info.status`, `TS_COMPAT`); `u32::MAX`: no compat ABI.
    pub compat_status: u32,
    pub compat_flag: u32,
    /// The numbers of the calls counted outside `sys_exit`, 64-bit ABI then 32-bit:
    /// `rt_sigreturn` (its return leaves `-1` where the number was: the kernel restores
    /// the interrupted registers), and `exit` and `exit_group` (which never return;
    /// counted at the thread's exit).
    pub sigreturn_nr: [u32; 2],
    pub exit_nr: [u32; 2],
    pub exit_group_nr: [u32; 2],
    /// fork, vfork, clone and clone3 in the 64-bit ABI, then in the 32-bit one: a new task
    /// returns from its parent's call too (with 0), which is no call of its own.
    pub fork_nr: [u32; 8],
    /// `task_struct.flags` and `signal_struct.flags`: how a thread's exit came (a fatal
    /// signal, `PF_SIGNALED`; its group's exit, `SIGNAL_GROUP_EXIT`).
    pub task_flags: u32,
    pub signal_flags: u32,
    /// 1 (`run`): leave out the calls of proclens's own children before their exec (the
    /// set-up between fork and exec, which joins the command's cgroup: its write would
    /// return inside it), by `task_struct.self_exec_id` and `parent_exec_id`.
    pub skip_spawning: u32,
    pub self_exec_id: u32,
    pub parent_exec_id: u32,
    /// 1: the kernel has `bpf_task_pt_regs` (5.15+): an exiting thread's `exit` or
    /// `exit_group` is read from its saved registers; without it, it is told from how the
    /// thread exits (see `count_exit_call`).
    pub task_regs_helper: u32,
    /// `sizeof(struct mmsghdr)` and `offsetof(msg_len)`, then the compat ones.
    pub mmsg_size: u32,
    pub mmsg_len: u32,
    pub compat_mmsg_size: u32,
    pub compat_mmsg_len: u32,
    /// The fd → inode chain from BTF: `task_struct.files`, `files_struct.fdt`,
    /// `fdtable.max_fds`, `fdtable.fd`, `file.f_inode`, `file.f_mode`, `inode.i_mode`.
    pub task_files: u32,
    pub files_fdt: u32,
    pub fdt_max_fds: u32,
    pub fdt_fd: u32,
    pub file_inode: u32,
    pub file_mode: u32,
    pub inode_mode: u32,
    /// The [`op`] of each syscall number (`op::NONE` outside the copy family): the 64-bit
    /// ABI's in `[0, NR_TABLE)`, the 32-bit one's in `[NR_TABLE, 2 * NR_TABLE)`.
    pub ops: [u8; 2 * NR_TABLE],
}

impl Default for Copies {
    fn default() -> Self {
        Self {
            map_anonymous: 0,
            count_syscalls: 0,
            copies: 0,
            args_native: [0; 6],
            args_compat: [0; 6],
            regs_nr: 0,
            compat_status: u32::MAX,
            compat_flag: 0,
            sigreturn_nr: [0; 2],
            exit_nr: [0; 2],
            exit_group_nr: [0; 2],
            fork_nr: [u32::MAX; 8],
            task_flags: 0,
            signal_flags: 0,
            skip_spawning: 0,
            self_exec_id: 0,
            parent_exec_id: 0,
            task_regs_helper: 0,
            mmsg_size: 0,
            mmsg_len: 0,
            compat_mmsg_size: 0,
            compat_mmsg_len: 0,
            task_files: 0,
            files_fdt: 0,
            fdt_max_fds: 0,
            fdt_fd: 0,
            file_inode: 0,
            file_mode: 0,
            inode_mode: 0,
            ops: [op::NONE; 2 * NR_TABLE],
        }
    }
}

/// The after-fork programs (see tool-ebpf/src/faults.rs, forks.rs and fds.rs).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Forks {
    /// Bits of `page_fault_user`'s error code that make a write fault on a present page
    /// (x86's `X86_PF_PROT | X86_PF_WRITE`, from BTF); 0: the fault program is not used.
    pub fault_cow_mask: u64,
    /// `task_struct.self_exec_id` and `.parent_exec_id` (read as their low 32 bits).
    pub task_self_exec_id: u32,
    pub task_parent_exec_id: u32,
    /// `syscalls/sys_enter_clone`'s `clone_flags`, `sys_enter_clone3`'s `uargs` and the
    /// `sys_exit_*` records' `ret` (tracefs formats), and `clone_args.flags` (BTF).
    pub clone_flags: u32,
    pub clone3_uargs: u32,
    pub exit_ret: u32,
    pub clone_args_flags: u32,
    /// The fd-table chain from BTF: `task_struct.files`, `files_struct.fdt`,
    /// `fdtable.max_fds`, `.fd`, `.open_fds`, `.close_on_exec`, `file.f_inode`,
    /// `inode.i_mode`.
    pub task_files: u32,
    pub files_fdt: u32,
    pub fdt_max_fds: u32,
    pub fdt_fd: u32,
    pub fdt_open_fds: u32,
    pub fdt_close_on_exec: u32,
    pub file_inode: u32,
    pub inode_mode: u32,
    /// `linux_binprm.filename`.
    pub binprm_filename: u32,
    /// 1: the kernel has `bpf_find_vma` (5.17+), and a copy-on-write fault in a process
    /// that maps hugetlb pages (`mm_struct.hugetlb_usage` > 0) is looked up: a fault in a
    /// hugetlb mapping copies a whole huge page, counted apart with its size.
    pub hugetlb_probe: u32,
    /// `task_struct.mm`, `mm_struct.hugetlb_usage`, `vm_area_struct.vm_flags` and
    /// `.vm_file`, `inode.i_sb`, `super_block.s_blocksize_bits` (a hugetlbfs super
    /// block's block size is its huge page size).
    pub task_mm: u32,
    pub mm_hugetlb_usage: u32,
    pub vma_flags: u32,
    pub vma_file: u32,
    pub inode_sb: u32,
    pub sb_blocksize_bits: u32,
    pub _pad: u32,
}

/// The interrupt programs (see tool-ebpf/src/irq.rs).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Irq {
    /// IRQ lines with a slot of `IRQ_LINES` (numbers `0..lines`); the x86 system vectors'
    /// slots follow (`irq::vector`). Higher numbers are counted as untracked.
    pub lines: u32,
    /// `irqaction.next`: a shared line's next handler (one interrupt, several handlers).
    pub irqaction_next: u32,
    /// `task_struct.flags` (`PF_KTHREAD`: a ksoftirqd is a kernel thread).
    pub task_flags: u32,
    pub _pad: u32,
}

/// Where blocked time goes (see tool-ebpf/src/waits.rs and `crate::waits`).
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Waits {
    /// 1: the switch program charges each block to the syscall it began in.
    pub blocked_in: u32,
    /// 1: the kernel has `bpf_task_pt_regs` (5.15+); without it every block is charged to
    /// `waits::UNKNOWN_SYSCALL`.
    pub task_regs_helper: u32,
    /// `pt_regs` offsets of the syscall number (`orig_ax`) and of the return register
    /// (`ax`), which holds `-ENOSYS` from the syscall's entry until it returns: a thread
    /// switching out with both in place is inside that syscall.
    pub regs_nr: u32,
    pub regs_ret: u32,
    /// The 32-bit ABI's flag, as `Copies::compat_status` and `compat_flag`.
    pub compat_status: u32,
    pub compat_flag: u32,
    /// 1: the readiness programs run.
    pub ready: u32,
    /// Record offsets of the syscall tracepoints: the syscall number, the first argument
    /// (the others follow 8 bytes apart) and the return value.
    pub rec_nr: u32,
    pub rec_args: u32,
    pub rec_ret: u32,
    /// The 64-bit syscall numbers of `waits::call`, by id (`u32::MAX`: none here).
    pub nr: [u32; crate::waits::call::COUNT],
}

impl Default for Waits {
    fn default() -> Self {
        Self {
            blocked_in: 0,
            task_regs_helper: 0,
            regs_nr: 0,
            regs_ret: 0,
            compat_status: u32::MAX,
            compat_flag: 0,
            ready: 0,
            rec_nr: 0,
            rec_args: 0,
            rec_ret: 0,
            nr: [u32::MAX; crate::waits::call::COUNT],
        }
    }
}

macro_rules! names {
    ($($ty:ty => $name:literal,)*) => {
        $(impl Global for $ty {
            const NAME: &'static str = $name;
        })*
    };
}

// The kernel side's statics of the same names (tool-ebpf/src/config.rs).
names! {
    Task => "CONFIG_TASK",
    Filter => "CONFIG_FILTER",
    Switch => "CONFIG_SWITCH",
    Rings => "CONFIG_RINGS",
    Lifecycle => "CONFIG_LIFECYCLE",
    Copies => "CONFIG_COPIES",
    Forks => "CONFIG_FORKS",
    Irq => "CONFIG_IRQ",
    Waits => "CONFIG_WAITS",
}

#[cfg(test)]
mod tests {
    use super::*;

    /// No implicit padding: every byte of a global is a field the loader writes.
    #[test]
    fn globals_have_no_implicit_padding() {
        assert_eq!(size_of::<Task>(), 6 * 4);
        assert_eq!(size_of::<Filter>(), 10 * 4 + 8 + 4 + 4 * MAX_PIDS + 4 + 16);
        assert_eq!(size_of::<Switch>(), 20 * 4 + 8);
        assert_eq!(size_of::<Rings>(), 16);
        assert_eq!(size_of::<Lifecycle>(), 28 * 4);
        assert_eq!(
            size_of::<Copies>(),
            8 + 2 * 4 + 2 * 6 * 4 + 3 * 4 + (3 * 2 + 8 + 2 + 4) * 4 + 4 * 4 + 7 * 4 + 2 * NR_TABLE
        );
        assert_eq!(size_of::<Forks>(), 8 + 16 * 4 + 8 * 4);
        assert_eq!(size_of::<Irq>(), 4 * 4);
        assert_eq!(size_of::<Waits>(), (10 + crate::waits::call::COUNT) * 4);
    }
}
