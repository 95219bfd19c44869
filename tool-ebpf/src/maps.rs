//! Maps shared by the programs. Sizes are defaults; the loader may resize them.

use crate::config;
use aya_ebpf::{
    EbpfContext,
    bindings::{BPF_RB_AVAIL_DATA, BPF_RB_FORCE_WAKEUP, BPF_RB_NO_WAKEUP},
    helpers::bpf_get_smp_processor_id,
    macros::map,
    maps::{Array, HashMap, PerCpuArray, RingBuf},
};
use aya_log_ebpf::debug;
use proclens_common::{
    copies::SysKey,
    counters,
    switch::{
        CPU_TABLE_CPUS, CpuSlot, CpuSwitches, CpuTable, THREAD_SLOTS as SLOTS, ThreadSlot,
        ThreadSwitches,
    },
    waits::{BlockStats, EpollKey, ReadyEntry, ReadyStats},
};

/// Per-thread switch accounting of the threads that hold no slot of `THREAD_SLOTS`, keyed
/// by thread id. A plain (preallocated) hash: when it is full, new threads are counted in
/// `COUNTERS[THREAD_MAP_FULL]` instead of evicting others.
#[map]
pub(crate) static THREADS: HashMap<u32, ThreadSwitches> = HashMap::with_max_entries(32768, 0);

/// The direct-mapped thread table (see `proclens_common::switch::ThreadSlot`): most threads'
/// entries, found without hashing. Userspace reads every entry through the live thread
/// iterator (see `iter`).
#[map]
pub(crate) static THREAD_SLOTS: Array<ThreadSlot> = Array::with_max_entries(SLOTS, 0);

/// One byte per thread id (64 to an element; the loader sizes it from `pid_max`): set
/// while a traced thread the table had no room for is alive, so it is counted once (see
/// `threads::untracked`).
#[map]
pub(crate) static UNTRACKED: Array<[u8; 64]> = Array::with_max_entries(512, 0);

/// Claims on `THREAD_SLOTS` (slot index → owner): inserting with `BPF_NOEXIST` succeeds on
/// one CPU only, which makes it the slot's test-and-set.
#[map]
pub(crate) static SLOT_CLAIMS: HashMap<u32, u32> = HashMap::with_max_entries(SLOTS, 0);

/// Per-CPU classification slot and system-wide switch split, where the machine may have
/// more CPUs than `CPUS` has room for (see [`cpu_switches`]).
#[map]
pub(crate) static CPU_SWITCHES: PerCpuArray<CpuSwitches> = PerCpuArray::with_max_entries(1, 0);

/// The same, one entry per CPU id, in the object's `.bss` (see `CpuTable`).
// SAFETY: plain integers, valid when zeroed.
static mut CPUS: CpuTable = unsafe { core::mem::zeroed() };

/// This CPU's switch state: its entry of `CPUS` where the loader chose the table, else its
/// `CPU_SWITCHES` value. `None` never happens (a CPU id beyond the table, which the loader
/// ruled out; a missing slot 0 of a one-entry map): the checks are the verifier's.
#[inline(always)]
pub(crate) fn cpu_switches() -> Option<*mut CpuSwitches> {
    if config::cpu_table() == 0 {
        return CPU_SWITCHES.get_ptr_mut(0);
    }
    // SAFETY: a helper without arguments.
    let cpu = unsafe { bpf_get_smp_processor_id() } as usize;
    if cpu >= CPU_TABLE_CPUS {
        return None;
    }
    let slots = (&raw mut CPUS).cast::<CpuSlot>();
    // SAFETY: within the table; each CPU writes only its own entry, from programs that do
    // not nest on it, and readers (the iterators, userspace) take what they find.
    Some(unsafe { &raw mut (*slots.add(cpu)).state })
}

/// Lifecycle events to userspace, one ring per CPU (see `proclens_common::event::RINGS`):
/// two CPUs reserving in one ring contend for its lock and bounce its positions between
/// their caches, which under a fork storm on both CPUs cost each lifecycle program
/// ~100 ns. The loader sizes the rings in use (4 MiB in all, at least 1 MiB each: a fork
/// storm at 20,000/s gets ~0.4 s of slack) and shrinks the others to a page.
#[map]
pub(crate) static EVENTS_0: RingBuf = RingBuf::with_byte_size(4096, 0);
#[map]
pub(crate) static EVENTS_1: RingBuf = RingBuf::with_byte_size(4096, 0);
#[map]
pub(crate) static EVENTS_2: RingBuf = RingBuf::with_byte_size(4096, 0);
#[map]
pub(crate) static EVENTS_3: RingBuf = RingBuf::with_byte_size(4096, 0);
#[map]
pub(crate) static EVENTS_4: RingBuf = RingBuf::with_byte_size(4096, 0);
#[map]
pub(crate) static EVENTS_5: RingBuf = RingBuf::with_byte_size(4096, 0);
#[map]
pub(crate) static EVENTS_6: RingBuf = RingBuf::with_byte_size(4096, 0);
#[map]
pub(crate) static EVENTS_7: RingBuf = RingBuf::with_byte_size(4096, 0);

/// This CPU's event ring.
#[inline(always)]
pub(crate) fn events() -> &'static RingBuf {
    // SAFETY: a helper without arguments.
    let cpu = unsafe { bpf_get_smp_processor_id() } & (config::event_rings_used().max(1) - 1);
    // A tree of branches, each naming its map: the verifier needs a constant map
    // pointer on every path.
    if cpu & 4 == 0 {
        if cpu & 2 == 0 {
            if cpu & 1 == 0 { &EVENTS_0 } else { &EVENTS_1 }
        } else if cpu & 1 == 0 {
            &EVENTS_2
        } else {
            &EVENTS_3
        }
    } else if cpu & 2 == 0 {
        if cpu & 1 == 0 { &EVENTS_4 } else { &EVENTS_5 }
    } else if cpu & 1 == 0 {
        &EVENTS_6
    } else {
        &EVENTS_7
    }
}

/// Flags for `bpf_ringbuf_submit` to `ring`: wake the reader only when the backlog is
/// large (`WAKEUP_BACKLOG`, an eighth of the ring, set by the loader). Below it, events
/// wait for userspace's own timer (every view drains at least every interval, `zombies
/// --watch` every 50 ms): a wakeup per event costs the traced task microseconds (an
/// IPI-driven `irq_work`, dear in a VM) and proclens a context switch, which under a fork
/// storm is most of the tracing overhead.
#[inline(always)]
pub(crate) fn submit_flags(ring: &RingBuf) -> u64 {
    if ring.query(u64::from(BPF_RB_AVAIL_DATA)) >= config::wakeup_backlog() {
        u64::from(BPF_RB_FORCE_WAKEUP)
    } else {
        u64::from(BPF_RB_NO_WAKEUP)
    }
}

/// Sends `ev` through this CPU's ring; a full ring is counted in
/// `COUNTERS[RINGBUF_DROPS]`, never silent.
#[inline(always)]
pub(crate) fn send<C: EbpfContext, T: 'static>(ctx: &C, ev: T) {
    let ring = events();
    match ring.reserve::<T>(0) {
        Some(mut slot) => {
            slot.write(ev);
            slot.submit(submit_flags(ring));
        }
        None => count(ctx, counters::RINGBUF_DROPS),
    }
}

/// Off-CPU time by (process, syscall, CPU): see `waits`. Sized by the loader (to one
/// entry where blocks are not charged to syscalls).
#[map]
pub(crate) static WAITS: HashMap<SysKey, BlockStats> = HashMap::with_max_entries(1, 0);

/// The readiness calls' figures by (process, syscall, CPU): see `waits`.
#[map]
pub(crate) static READY: HashMap<SysKey, ReadyStats> = HashMap::with_max_entries(1, 0);

/// What each thread's readiness or `epoll_ctl` call in progress was handed, by thread id.
#[map]
pub(crate) static READY_ENTRY: HashMap<u32, ReadyEntry> = HashMap::with_max_entries(1, 0);

/// The interest set's size of each epoll instance, by (process, epoll fd).
#[map]
pub(crate) static EPOLL_SETS: HashMap<EpollKey, u64> = HashMap::with_max_entries(1, 0);

/// Health counters (lost events, full maps), see `proclens_common::counters`.
#[map]
pub(crate) static COUNTERS: PerCpuArray<u64> = PerCpuArray::with_max_entries(counters::COUNT, 0);

/// Counts one at `index` of `COUNTERS` without a log line (for the switch program, whose
/// stack has no room for aya-log's record).
#[inline(always)]
pub(crate) fn bump(index: u32) {
    if let Some(c) = COUNTERS.get_ptr_mut(index) {
        // SAFETY: per-CPU slot, only this CPU writes it while the program runs.
        unsafe { *c += 1 };
    }
}

/// Logs, at debug level (pruned by the verifier unless `--log-level debug`), that
/// `program` gave up on an event because a kernel read failed.
#[inline(always)]
pub(crate) fn read_failed<C: EbpfContext>(ctx: &C, program: &str) {
    gave_up(ctx, program, "a kernel read failed");
}

/// Logs, at debug level (pruned by the verifier unless `--log-level debug`), that
/// `program` gave up on an event, and `why`. Called where a program's `try_*` body
/// returns its error: the cold path only, so the hot path does no new work either way.
#[inline(always)]
pub(crate) fn gave_up<C: EbpfContext>(ctx: &C, program: &str, why: &str) {
    debug!(
        ctx,
        "{}: {}, event not recorded (tid {})",
        program,
        why,
        ctx.pid()
    );
}

/// Counts something a program could not record (see `proclens_common::counters`), and
/// logs it at debug level (pruned by the verifier unless `--log-level debug`).
#[inline(always)]
pub(crate) fn count<C: EbpfContext>(ctx: &C, index: u32) {
    bump(index);
    debug!(
        ctx,
        "not recorded: {} (tid {})",
        counters::describe(index),
        ctx.pid()
    );
}
