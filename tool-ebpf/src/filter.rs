//! Which tasks are traced: everything but proclens itself, optionally only one cgroup v2
//! subtree (`--cgroup`, and `run -- CMD`'s own cgroup), compared in the kernel so tasks
//! outside it cost one helper call.

use aya_ebpf::{
    helpers::generated::{bpf_get_current_ancestor_cgroup_id, bpf_get_current_task},
    macros::raw_tracepoint,
    programs::RawTracePointContext,
};

use crate::{config, task::probe};

/// The id of `task`'s default-hierarchy (v2) cgroup ancestor at `level`, read through BTF
/// offsets: `task->cgroups->dfl_cgrp`, then its ancestor's id: `ancestor_ids[level]` on
/// older kernels such as 5.10 (whose tracing programs may not call the helper), or
/// `ancestors[level]->kn->id` on later ones (which replaced the array). Probe reads: the
/// current task has no BTF-typed pointer on every kernel, and an iterated task's cgroup
/// pointers may be read while it moves.
#[inline(always)]
fn ancestor_id_by_walk(task: u64, level: u32) -> Option<u64> {
    let cset: u64 = probe(task, config::task_cgroups_off()).ok()?;
    let cgrp: u64 = probe(cset, config::css_set_dfl_cgrp_off()).ok()?;
    let depth: i32 = probe(cgrp, config::cgroup_level_off()).ok()?;
    if depth < 0 || (depth as u32) < level {
        return None;
    }
    let ancestors = cgrp + u64::from(config::cgroup_ancestor_ids_off());
    if config::cgroup_ancestor_ptrs() == 0 {
        return probe(ancestors, 8 * level).ok();
    }
    let ancestor: u64 = probe(ancestors, 8 * level).ok()?;
    let kn: u64 = probe(ancestor, config::cgroup_kn_off()).ok()?;
    probe(kn, config::kernfs_node_id_off()).ok()
}

/// Whether the current task is in the selected cgroup subtree (always, without a filter).
#[inline(always)]
pub(crate) fn current_in_cgroup() -> bool {
    let id = config::cgroup_id();
    if id == 0 {
        return true;
    }
    let level = config::cgroup_level();
    if config::cgroup_walk() != 0 {
        // SAFETY: a helper without arguments.
        let task = unsafe { bpf_get_current_task() };
        return ancestor_id_by_walk(task, level) == Some(id);
    }
    // SAFETY: a helper without pointer arguments.
    unsafe { bpf_get_current_ancestor_cgroup_id(level as i32) == id }
}

/// Whether `task` (any task, not only the current one) is traced: not proclens's own, and
/// in the selected cgroup subtree. For the thread iterators, which visit every task.
#[inline(always)]
pub(crate) fn task_traced(task: u64, tgid: u32) -> bool {
    if !traced_tgid(tgid) {
        return false;
    }
    let id = config::cgroup_id();
    id == 0 || ancestor_id_by_walk(task, config::cgroup_level()) == Some(id)
}

/// Whether a task of this tgid is traced at all.
#[inline(always)]
pub(crate) fn traced_tgid(tgid: u32) -> bool {
    tgid != config::self_tgid()
}

/// Never attached: userspace loads it to ask the verifier whether tracing programs may
/// call `bpf_get_current_ancestor_cgroup_id` on this kernel (5.10's may not; the filter
/// then walks the task's cgroup instead, see `ancestor_id_by_walk`).
#[raw_tracepoint(tracepoint = "sys_enter")]
pub fn probe_ancestor_cgroup(_ctx: RawTracePointContext) -> i32 {
    // SAFETY: a helper without pointer arguments.
    unsafe { bpf_get_current_ancestor_cgroup_id(0) as i32 }
}
