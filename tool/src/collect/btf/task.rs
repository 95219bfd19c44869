//! Layouts of `task_struct` and what the switch programs reach from it: the run queue's
//! clock, schedstat's run delay, the task's cgroup ancestors.

use crate::collect::btf::Btf;
use anyhow::Result;

use super::{member_offset, nested_offset};

/// `struct task_struct` offsets the eBPF programs need.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TaskOffsets {
    pub pid: u32,
    pub mm: u32,
    pub group_leader: u32,
    pub start_time: u32,
    /// `__state` (5.14+) or `state` (older kernels).
    pub state: u32,
    pub exit_state: u32,
    /// `flags` (`PF_KTHREAD`).
    pub flags: u32,
    /// The address space a task runs on (borrowed by one without its own `mm`).
    pub active_mm: u32,
    /// The kernel's voluntary and involuntary switch counters.
    pub nvcsw: u32,
    pub nivcsw: u32,
    /// Whether the task is on a CPU now, and on a run queue (`CONFIG_SMP`'s `on_cpu`).
    pub on_cpu: u32,
    pub on_rq: u32,
}

impl TaskOffsets {
    pub fn from_btf(btf: &Btf) -> Result<Self> {
        Ok(Self {
            pid: member_offset(btf, "task_struct", "pid")?,
            mm: member_offset(btf, "task_struct", "mm")?,
            group_leader: member_offset(btf, "task_struct", "group_leader")?,
            start_time: member_offset(btf, "task_struct", "start_time")?,
            state: member_offset(btf, "task_struct", "__state")
                .or_else(|_| member_offset(btf, "task_struct", "state"))?,
            exit_state: member_offset(btf, "task_struct", "exit_state")?,
            flags: member_offset(btf, "task_struct", "flags")?,
            active_mm: member_offset(btf, "task_struct", "active_mm")?,
            nvcsw: member_offset(btf, "task_struct", "nvcsw")?,
            nivcsw: member_offset(btf, "task_struct", "nivcsw")?,
            on_cpu: member_offset(btf, "task_struct", "on_cpu")?,
            on_rq: member_offset(btf, "task_struct", "on_rq")?,
        })
    }
}

/// Where the scheduler keeps the time of the switch or wakeup it is tracing: the task's
/// run queue's `rq->clock` (`sched_clock`, ns), which `__schedule` and every wakeup update
/// under the run-queue lock just before the tracepoint fires. Reached from the task as
/// `task_struct.se.cfs_rq` → `cfs_rq.rq` → `rq.clock`; `cfs_rq.rq` exists only with
/// `CONFIG_FAIR_GROUP_SCHED` (every distribution kernel), so a kernel without it has no
/// such offsets and the switch programs read `bpf_ktime_get_ns` instead.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RqClockOffsets {
    /// `task_struct.se` + `sched_entity.cfs_rq`.
    pub task_cfs_rq: u32,
    pub cfs_rq_rq: u32,
    pub rq_clock: u32,
}

impl RqClockOffsets {
    pub fn from_btf(btf: &Btf) -> Result<Self> {
        Ok(Self {
            task_cfs_rq: nested_offset(btf, "task_struct", "se", "sched_entity", "cfs_rq")?,
            cfs_rq_rq: member_offset(btf, "cfs_rq", "rq")?,
            rq_clock: member_offset(btf, "rq", "clock")?,
        })
    }
}

/// `task_struct.sched_info`'s run-queue time, last arrival on a CPU and last queueing
/// (`CONFIG_SCHED_INFO`; /proc/PID/schedstat's second field is `run_delay`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SchedInfoOffsets {
    pub run_delay: u32,
    pub last_arrival: u32,
    pub last_queued: u32,
}

impl SchedInfoOffsets {
    pub fn from_btf(btf: &Btf) -> Result<Self> {
        let f = |m| nested_offset(btf, "task_struct", "sched_info", "sched_info", m);
        Ok(Self {
            run_delay: f("run_delay")?,
            last_arrival: f("last_arrival")?,
            last_queued: f("last_queued")?,
        })
    }
}

/// Offsets to find any task's cgroup v2 ancestors without
/// `bpf_get_current_ancestor_cgroup_id` (which knows only the current task's):
/// `task_struct.cgroups`, `css_set.dfl_cgrp`, `cgroup.level`, and the ancestors' ids:
/// `cgroup.ancestor_ids` on older kernels (e.g. 5.10), `cgroup.ancestors` → `cgroup.kn`
/// → `kernfs_node.id` on later ones.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CgroupWalkOffsets {
    pub task_cgroups: u32,
    pub css_set_dfl_cgrp: u32,
    pub cgroup_level: u32,
    pub cgroup_ancestor_ids: u32,
    /// Set when `cgroup_ancestor_ids` is `ancestors[]` (pointers): then `cgroup.kn` and
    /// `kernfs_node.id`.
    pub ancestor_ptrs: Option<(u32, u32)>,
}

impl CgroupWalkOffsets {
    pub fn from_btf(btf: &Btf) -> Result<Self> {
        let ids = member_offset(btf, "cgroup", "ancestor_ids");
        let (cgroup_ancestor_ids, ancestor_ptrs) = match ids {
            Ok(off) => (off, None),
            Err(_) => (
                member_offset(btf, "cgroup", "ancestors")?,
                Some((
                    member_offset(btf, "cgroup", "kn")?,
                    member_offset(btf, "kernfs_node", "id")?,
                )),
            ),
        };
        Ok(Self {
            task_cgroups: member_offset(btf, "task_struct", "cgroups")?,
            css_set_dfl_cgrp: member_offset(btf, "css_set", "dfl_cgrp")?,
            cgroup_level: member_offset(btf, "cgroup", "level")?,
            cgroup_ancestor_ids,
            ancestor_ptrs,
        })
    }
}
