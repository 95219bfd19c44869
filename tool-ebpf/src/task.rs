//! Reading kernel structs from BTF tracepoints (`tp_btf`), which hand over typed pointers.
//!
//! Fields of those pointers (and of the pointers loaded from them) are read with plain
//! loads ([`field`]), not `bpf_probe_read_kernel`: the offsets are load-time constants
//! (see `config`), so the verifier checks each load against the kernel's BTF, and a load
//! through a NULL or stale pointer reads 0 instead of faulting. A helper call per field
//! costs about as much as the rest of a small program.

use aya_ebpf::helpers::bpf_probe_read_kernel;

use proclens_common::lifecycle::COMM_LEN;

use crate::config;

/// The field at `offset` of a BTF-typed kernel pointer (a tracepoint argument, or a pointer
/// field read from one). Only for such pointers: the verifier rejects a plain load through
/// any other value (use [`probe`]).
#[inline(always)]
pub(crate) fn field<T>(base: u64, offset: u32) -> T {
    // SAFETY: a BTF-checked load; the kernel turns a fault into a zero result.
    unsafe { core::ptr::read_volatile((base + u64::from(offset)) as *const T) }
}

/// A kernel value behind a pointer the verifier knows nothing about.
#[inline(always)]
pub(crate) fn probe<T>(base: u64, offset: u32) -> Result<T, i32> {
    // SAFETY: bpf_probe_read_kernel tolerates any address; a fault returns an error.
    unsafe { bpf_probe_read_kernel((base + u64::from(offset)) as *const T) }
}

/// [`process_start`] of a BTF-typed task pointer, with plain loads (0 without a leader).
#[inline(always)]
pub(crate) fn process_start_field(task: u64) -> u64 {
    let leader: u64 = field(task, config::task_group_leader_off());
    if leader == 0 {
        return 0;
    }
    field(leader, config::task_start_boottime_off())
}

/// The task's command name (`task_struct.comm`), of a BTF-typed task pointer.
#[inline(always)]
pub(crate) fn comm(task: u64) -> [u8; COMM_LEN] {
    field(task, config::task_comm_off())
}

/// A task's process identity: its thread-group leader's `start_boottime` (0 if it cannot be
/// read), through probe reads (for the current task, whose pointer is not BTF-typed).
#[inline(always)]
pub(crate) fn process_start(task: u64) -> u64 {
    let Ok(leader) = probe::<u64>(task, config::task_group_leader_off()) else {
        return 0;
    };
    probe(leader, config::task_start_boottime_off()).unwrap_or(0)
}
