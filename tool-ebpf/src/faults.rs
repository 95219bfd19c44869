//! Copy-on-write faults per process.
//!
//! `page_fault_user` (x86's `exceptions:page_fault_user`, attached as a raw tracepoint:
//! no record is built, and its arguments' order is checked against the kernel's BTF
//! prototype at load time) fires at the entry of every user page fault with the hardware
//! error code. A write to a present page (`PROT | WRITE`, the mask a load-time global) is
//! the fault copy-on-write resolves; every other fault (a page not present yet, a read)
//! leaves after one compare. `page_fault_kernel` adds the kernel's own writes to user
//! memory (a `read()` into a page shared since fork copies it just the same); faults on
//! kernel addresses leave after a second compare.
//!
//! Counted per (process, [`fault_flags`]) in a per-CPU hash; nothing goes to userspace
//! per fault.

use aya_ebpf::{
    helpers::{bpf_get_current_pid_tgid, bpf_get_current_task},
    macros::{map, raw_tracepoint},
    maps::{HashMap, PerCpuHashMap},
    programs::RawTracePointContext,
};
use proclens_common::{
    copies::ProcKey,
    counters,
    forks::{FaultKey, fault_flags},
};

use crate::{
    config, filter,
    maps::{count, read_failed},
    task::{probe, process_start},
};

const BPF_ANY: u64 = 0;

/// Copy-on-write faults per (process, flags); per CPU, summed by userspace, which deletes
/// the entries of processes that have gone. A full map is counted in
/// `COUNTERS[FAULT_MAP_FULL]`.
#[map]
static COW_FAULTS: PerCpuHashMap<FaultKey, u64> = PerCpuHashMap::with_max_entries(16384, 0);

/// Processes that have made a child process since tracing began (value: the boot time of
/// their first such fork), written by the fork-exit program, read here for
/// [`fault_flags::AFTER_FORK`]. Userspace deletes the entries of gone processes.
#[map]
pub(crate) static FORKERS: HashMap<ProcKey, u64> = HashMap::with_max_entries(16384, 0);

#[raw_tracepoint(tracepoint = "page_fault_user")]
pub fn page_fault_user(ctx: RawTracePointContext) -> i32 {
    if try_fault(&ctx, false).is_err() {
        read_failed(&ctx, "page_fault_user");
    }
    0
}

#[raw_tracepoint(tracepoint = "page_fault_kernel")]
pub fn page_fault_kernel(ctx: RawTracePointContext) -> i32 {
    if try_fault(&ctx, true).is_err() {
        read_failed(&ctx, "page_fault_kernel");
    }
    0
}

#[inline(always)]
fn try_fault(ctx: &RawTracePointContext, in_kernel: bool) -> Result<(), i32> {
    // TP_PROTO(unsigned long address, struct pt_regs *regs, unsigned long error_code)
    let code: u64 = ctx.arg(2);
    let mask = config::fault_cow_mask();
    if mask == 0 || code & mask != mask {
        return Ok(());
    }
    // User addresses are the lower canonical half on x86-64 (4- and 5-level paging).
    let address: u64 = ctx.arg(0);
    if in_kernel && (address as i64) < 0 {
        return Ok(());
    }
    let tgid = (bpf_get_current_pid_tgid() >> 32) as u32;
    if !filter::traced_tgid(tgid) || !filter::current_in_cgroup() {
        return Ok(());
    }
    // SAFETY: a helper without arguments.
    let task = unsafe { bpf_get_current_task() };
    let start_ns = process_start(task);
    let mut flags = 0;
    // Low halves: the ids are u64 on current kernels, and an exec count never wraps 32
    // bits within a process's life.
    let own: u32 = probe(task, config::task_self_exec_id_off())?;
    let parents: u32 = probe(task, config::task_parent_exec_id_off())?;
    if own == parents {
        flags |= fault_flags::INHERITED;
    }
    let pk = ProcKey {
        tgid,
        _pad: 0,
        start_ns,
    };
    if FORKERS.get_ptr(&pk).is_some() {
        flags |= fault_flags::AFTER_FORK;
    }
    let key = FaultKey {
        tgid,
        flags,
        start_ns,
    };
    match COW_FAULTS.get_ptr_mut(&key) {
        // SAFETY: this CPU's slot; the program runs with preemption disabled.
        Some(n) => unsafe { *n += 1 },
        None => {
            // BPF_ANY on a per-CPU hash sets only this CPU's slot.
            if COW_FAULTS.insert(&key, &1, BPF_ANY).is_err() {
                count(ctx, counters::FAULT_MAP_FULL);
            }
        }
    }
    Ok(())
}
