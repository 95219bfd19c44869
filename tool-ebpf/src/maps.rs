//! Maps shared by the programs. Sizes are defaults; the loader may resize them.

use aya_ebpf::{
    bindings::{BPF_F_MMAPABLE, BPF_RB_AVAIL_DATA, BPF_RB_FORCE_WAKEUP, BPF_RB_NO_WAKEUP},
    macros::map,
    maps::{Array, HashMap, PerCpuArray, RingBuf},
};
use proclens_common::{
    counters,
    switch::{CpuSwitches, THREAD_SLOTS as SLOTS, ThreadSlot, ThreadSwitches},
};

/// Per-thread switch accounting of the threads that hold no slot of `THREAD_SLOTS`, keyed
/// by thread id. A plain (preallocated) hash: when it is full, new threads are counted in
/// `COUNTERS[THREAD_MAP_FULL]` instead of evicting others.
#[map]
pub(crate) static THREADS: HashMap<u32, ThreadSwitches> = HashMap::with_max_entries(32768, 0);

/// The direct-mapped thread table (see `proclens_common::switch::ThreadSlot`): most threads'
/// entries, found without hashing. Userspace maps it read-only instead of a syscall per slot.
#[map]
pub(crate) static THREAD_SLOTS: Array<ThreadSlot> = Array::with_max_entries(SLOTS, BPF_F_MMAPABLE);

/// Claims on `THREAD_SLOTS` (slot index → owner): inserting with `BPF_NOEXIST` succeeds on
/// one CPU only, which makes it the slot's test-and-set.
#[map]
pub(crate) static SLOT_CLAIMS: HashMap<u32, u32> = HashMap::with_max_entries(SLOTS, 0);

/// Per-CPU classification slot and system-wide switch split.
#[map]
pub(crate) static CPU_SWITCHES: PerCpuArray<CpuSwitches> = PerCpuArray::with_max_entries(1, 0);

/// Lifecycle events to userspace. 4 MiB holds the events of ~8,000 fork+exit+free cycles
/// (THREAD_EXIT ~240 B, FORK/EXIT ~100 B each, FREE 32 B): a fork storm at 20,000/s gets
/// ~0.4 s of slack before userspace must have drained it.
#[map]
pub(crate) static EVENTS: RingBuf = RingBuf::with_byte_size(4 * 1024 * 1024, 0);

/// Unread bytes in `EVENTS` above which a submit wakes userspace. Below it, events wait
/// for userspace's own timer (every view drains at least every interval, `zombies --watch`
/// every 50 ms): a wakeup per event costs the traced task microseconds (an IPI-driven
/// irq_work, dear in a VM) and proclens a context switch, which under a fork storm is
/// most of the tracing overhead. 512 KiB leaves 7/8 of the ring as headroom.
const WAKEUP_BACKLOG: u64 = 512 * 1024;

/// Flags for `bpf_ringbuf_submit`: wake the reader only when the backlog is large.
#[inline(always)]
pub(crate) fn submit_flags() -> u64 {
    if EVENTS.query(u64::from(BPF_RB_AVAIL_DATA)) >= WAKEUP_BACKLOG {
        u64::from(BPF_RB_FORCE_WAKEUP)
    } else {
        u64::from(BPF_RB_NO_WAKEUP)
    }
}

/// Health counters (lost events, full maps), see `proclens_common::counters`.
#[map]
pub(crate) static COUNTERS: PerCpuArray<u64> = PerCpuArray::with_max_entries(counters::COUNT, 0);

#[inline(always)]
pub(crate) fn count(index: u32) {
    if let Some(c) = COUNTERS.get_ptr_mut(index) {
        // SAFETY: per-CPU slot, only this CPU writes it while the program runs.
        unsafe { *c += 1 };
    }
}
