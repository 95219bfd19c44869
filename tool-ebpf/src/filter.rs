//! Which tasks are traced: everything but proclens itself, optionally only one cgroup v2
//! subtree (`--cgroup`, and `run -- CMD`'s own cgroup), compared in the kernel so tasks
//! outside it cost one helper call.

use aya_ebpf::helpers::generated::bpf_get_current_ancestor_cgroup_id;

use crate::config;

/// Whether the current task is in the selected cgroup subtree (always, without a filter).
#[inline(always)]
pub(crate) fn current_in_cgroup() -> bool {
    let id = config::cgroup_id();
    // SAFETY: a helper without pointer arguments.
    id == 0 || unsafe { bpf_get_current_ancestor_cgroup_id(config::cgroup_level() as i32) } == id
}

/// Whether a task of this tgid is traced at all.
#[inline(always)]
pub(crate) fn traced_tgid(tgid: u32) -> bool {
    tgid != config::self_tgid()
}
