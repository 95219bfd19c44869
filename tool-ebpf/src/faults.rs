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
//!
//! A fault in a hugetlb mapping copies a whole huge page, where every other copy-on-write
//! fault copies one base page (a transparent huge page is split first). The tracepoint
//! does not say which mapping the address is in: in a process that maps hugetlb pages at
//! all (`mm_struct.hugetlb_usage`, one load), the fault looks its mapping up
//! (`bpf_find_vma`, 5.17+) and counts the huge page's size with it.

use aya_ebpf::{
    cty::c_void,
    helpers::{
        bpf_get_current_pid_tgid, bpf_get_current_task,
        generated::{bpf_find_vma, bpf_get_current_task_btf},
    },
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
    task::{field, probe, process_start},
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
    if try_fault(&ctx, false, false).is_err() {
        read_failed(&ctx, "page_fault_user");
    }
    0
}

#[raw_tracepoint(tracepoint = "page_fault_kernel")]
pub fn page_fault_kernel(ctx: RawTracePointContext) -> i32 {
    if try_fault(&ctx, true, false).is_err() {
        read_failed(&ctx, "page_fault_kernel");
    }
    0
}

/// `page_fault_user` that also tells hugetlb faults apart: loaded instead of it where the
/// kernel has `bpf_find_vma` (its callback is a function reference, which kernels before
/// 5.13 refuse in any program that holds one, reached or not).
#[raw_tracepoint(tracepoint = "page_fault_user")]
pub fn page_fault_user_huge(ctx: RawTracePointContext) -> i32 {
    if try_fault(&ctx, false, true).is_err() {
        read_failed(&ctx, "page_fault_user");
    }
    0
}

/// `page_fault_kernel` that also tells hugetlb faults apart (see
/// [`page_fault_user_huge`]).
#[raw_tracepoint(tracepoint = "page_fault_kernel")]
pub fn page_fault_kernel_huge(ctx: RawTracePointContext) -> i32 {
    if try_fault(&ctx, true, true).is_err() {
        read_failed(&ctx, "page_fault_kernel");
    }
    0
}

#[inline(always)]
fn try_fault(ctx: &RawTracePointContext, in_kernel: bool, huge: bool) -> Result<(), i32> {
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
    if huge && config::hugetlb_probe() != 0 {
        let shift = hugetlb_shift(address);
        if shift != 0 {
            flags |= fault_flags::HUGETLB | (shift << fault_flags::HUGE_SHIFT_AT);
        }
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

/// `VM_HUGETLB` in `vm_area_struct.vm_flags` (a macro, not in BTF; the same bit since
/// 2.6).
const VM_HUGETLB: u64 = 0x0040_0000;

/// The log2 of the huge page size of the current task's hugetlb mapping at `address`; 0
/// when it is no hugetlb mapping, when the process maps no hugetlb page at all (checked
/// first: one load), or when the lookup could not take the mapping lock at once.
#[inline(always)]
fn hugetlb_shift(address: u64) -> u32 {
    // SAFETY: a helper without arguments; a BTF-typed task pointer.
    let task = unsafe { bpf_get_current_task_btf() } as u64;
    let mm: u64 = field(task, config::huge_task_mm_off());
    if mm == 0 || field::<i64>(mm, config::mm_hugetlb_usage_off()) <= 0 {
        return 0;
    }
    let mut shift: u64 = 0;
    // SAFETY: the callback only reads the mapping the helper hands it and writes `shift`.
    let r = unsafe {
        bpf_find_vma(
            task as *mut _,
            address,
            huge_page_shift as *const () as *mut c_void,
            (&raw mut shift).cast::<c_void>(),
            0,
        )
    };
    if r != 0 { 0 } else { shift as u32 }
}

/// `bpf_find_vma`'s callback: the huge page shift of a hugetlb mapping into `*out`.
#[inline(never)]
extern "C" fn huge_page_shift(_task: u64, vma: u64, out: *mut u64) -> i64 {
    let flags: u64 = field(vma, config::vma_flags_off());
    if flags & VM_HUGETLB == 0 {
        return 0;
    }
    let file: u64 = field(vma, config::vma_file_off());
    if file == 0 {
        return 0;
    }
    let inode: u64 = field(file, config::fds_file_inode_off());
    let sb: u64 = field(inode, config::inode_sb_off());
    let bits: u8 = field(sb, config::sb_blocksize_bits_off());
    // SAFETY: `out` is the caller's stack slot, handed over by the helper.
    unsafe { *out = u64::from(bits) };
    0
}
