//! The kernel side's load-time configuration: one `#[repr(C)]` struct per concern, each a
//! global in the object's `.rodata` (named by [`Global::NAME`]) that userspace fills from
//! the running kernel (BTF, tracefs, the machine) before the programs are verified. The
//! verifier then sees every field as a constant and prunes the branches it rules out.
//!
//! A struct is written whole by the concern that owns it, so no field can be left unset
//! by forgetting one call; userspace checks, in a unit test of the embedded object, that
//! every global of `.rodata` is one of these with the size given here.

use crate::copies::layout;

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
    /// `start_time` (CLOCK_MONOTONIC ns): the switch programs' "born after tracing began".
    pub start_time: u32,
    /// `start_boottime` (`real_start_time` before 5.5): the clock /proc/PID/stat uses,
    /// with the tgid the identity of a process in every map and event.
    pub start_boottime: u32,
    pub comm: u32,
}

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
    pub cgroup_ancestor_ids: u32,
    pub _pad: u32,
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
    pub _pad: u32,
    /// CLOCK_MONOTONIC when tracing began: threads started later are traced from their
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
    pub _pad: u32,
}

/// The copy-path programs (see tool-ebpf/src/copies.rs and fdkind.rs).
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Copies {
    /// `MAP_ANONYMOUS` of the kernel's ABI.
    pub map_anonymous: u64,
    /// Per-op `sys_enter_*` record offsets, see [`layout`].
    pub layout: [u32; layout::SIZE],
    /// Offset of `ret` in the `sys_exit_*` records.
    pub exit_ret: u32,
    /// The fd → inode chain from BTF: task_struct.files, files_struct.fdt,
    /// fdtable.max_fds, fdtable.fd, file.f_inode, file.f_mode, inode.i_mode.
    pub task_files: u32,
    pub files_fdt: u32,
    pub fdt_max_fds: u32,
    pub fdt_fd: u32,
    pub file_inode: u32,
    pub file_mode: u32,
    pub inode_mode: u32,
}

impl Default for Copies {
    fn default() -> Self {
        Self {
            map_anonymous: 0,
            layout: [layout::NONE; layout::SIZE],
            exit_ret: 0,
            task_files: 0,
            files_fdt: 0,
            fdt_max_fds: 0,
            fdt_fd: 0,
            file_inode: 0,
            file_mode: 0,
            inode_mode: 0,
        }
    }
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
    Irq => "CONFIG_IRQ",
}

#[cfg(test)]
mod tests {
    use super::*;

    /// No implicit padding: every byte of a global is a field the loader writes.
    #[test]
    fn globals_have_no_implicit_padding() {
        assert_eq!(size_of::<Task>(), 6 * 4);
        assert_eq!(size_of::<Filter>(), 8 * 4 + 8);
        assert_eq!(size_of::<Switch>(), 12 * 4 + 8);
        assert_eq!(size_of::<Rings>(), 16);
        assert_eq!(size_of::<Lifecycle>(), 12 * 4);
        assert_eq!(size_of::<Copies>(), 8 + 4 * layout::SIZE + 8 * 4);
        assert_eq!(size_of::<Irq>(), 4 * 4);
    }
}
