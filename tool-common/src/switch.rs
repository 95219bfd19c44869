//! Context-switch accounting, kept per thread in the kernel.
//!
//! The `sched_switch` program runs on the CPU that switches a thread out; a thread is
//! switched out on one CPU at a time (its run-queue lock is held), so each thread's entry
//! has a single writer at any moment and is updated in place without atomics.

/// log2 buckets of run-queue latency in microseconds: bucket `i` holds latencies in
/// `[2^i, 2^(i+1))` µs (bucket 0 also holds < 1 µs). 27 buckets reach ~134 s.
pub const RUNQ_BUCKETS: usize = 27;

/// The [`RUNQ_BUCKETS`] bucket of a run-queue wait of `ns` nanoseconds: `floor(log2(ns /
/// 1000))`, capped at the last bucket (waits under 2 µs go to bucket 0).
///
/// Computed without a division or a count of leading zeros, which the BPF instruction set
/// lacks (a 64-bit `div` and the ~40-instruction expansion of `leading_zeros` were a
/// fifth of the `sched_switch` program's cost): `ns / 1000 >= 2^b` exactly when
/// `ns >= 1000 << b`, so a binary search over `b` takes five compares, after two for
/// the waits under 4 µs that most runs have.
#[inline(always)]
pub const fn runq_bucket(ns: u64) -> usize {
    // The common waits, a few µs, settle in one or two compares.
    if ns < 2000 {
        return 0;
    }
    if ns < 4000 {
        return 1;
    }
    let mut b = 0u32;
    let mut step = 16u32;
    while step > 0 {
        if ns >= 1000u64 << (b + step) {
            b += step;
        }
        step >>= 1;
    }
    let b = b as usize;
    if b >= RUNQ_BUCKETS {
        RUNQ_BUCKETS - 1
    } else {
        b
    }
}

/// `TASK_RUNNING`: the task was still runnable when it was switched out.
pub const TASK_RUNNING: u32 = 0;
/// `TASK_DEAD` (0x80 since Linux 4.14): set by `do_task_dead` before a thread's last switch.
pub const TASK_DEAD: u32 = 0x80;

/// The tracepoint's view of the kernel's rule behind `nvcsw`/`nivcsw` (`__schedule`): a
/// switch is voluntary when it is not a preemption and the task is blocking (its state
/// is not `TASK_RUNNING`). Inexact in one case: a task that blocks with a signal pending
/// is counted voluntary by the kernel, which sets its state back to `TASK_RUNNING` before
/// the tracepoint fires. The switch program therefore compares the task's own `nvcsw`
/// with the value it saw at the thread's last switch (see [`flags::NVCSW_KNOWN`]) and
/// falls back to this rule only for a thread's first switch seen, when that is unknown.
#[inline(always)]
pub const fn is_involuntary(preempt: bool, prev_state: u32) -> bool {
    preempt || prev_state == TASK_RUNNING
}

/// Per-thread switch accounting (value of the `THREADS` map, keyed by thread id, and of
/// the `THREAD_SLOTS` array).
///
/// Laid out for the switch program: what every switch out reads or writes (identity,
/// flags and counts; times, baselines and the first histogram buckets, < 4 µs) fills the
/// first 128 bytes; the rarer buckets and the name come after.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ThreadSwitches {
    /// Thread-group id (the process id) of the thread.
    pub tgid: u32,
    /// [`flags`] of the thread's last switch out.
    pub flags: u32,
    /// Start time (ns since boot, `task_struct.start_time`) of the thread-group leader:
    /// together with `tgid` it names a process uniquely, even when pids are reused.
    pub start_ns: u64,
    /// Switches out while blocking (the kernel's `nvcsw`).
    pub voluntary: u64,
    /// Switches out while still runnable (the kernel's `nivcsw`).
    pub involuntary: u64,
    /// Switches in that kept the address space: from a task with the same `mm` (a thread
    /// of the same process, or a vfork/`CLONE_VM` parent or child).
    pub same_in: u64,
    /// Switches in that changed the address space: the previous task's `active_mm` was not
    /// this task's `mm`, so the kernel loaded other page tables.
    pub cross_in: u64,
    /// Switches in from the idle task or a kernel thread that had kept this task's own
    /// address space loaded (lazy TLB), and, for kernel threads, every switch in (they
    /// have no address space of their own).
    pub idle_kernel_in: u64,
    /// Time spent running.
    pub oncpu_ns: u64,
    /// Time spent blocked (switched out voluntarily until woken).
    pub blocked_ns: u64,
    /// Time spent runnable but waiting for a CPU (run-queue latency, summed).
    pub runq_ns: u64,
    /// Longest single run-queue wait.
    pub runq_max_ns: u64,
    /// When the thread was last switched out, or when its entry was seeded (see
    /// `flags::RUN_FROM_OUT`); 0: not yet seen switching out.
    pub out_ts: u64,
    /// When the thread last became runnable (woken, or preempted); 0 when it is not
    /// waiting on a run queue. Only kept where the wakeup programs run (kernels whose
    /// scheduler keeps no per-task run-queue time, see [`ThreadSwitches::run_delay_seen`]).
    pub wake_ts: u64,
    /// The scheduler's own run-queue time of the thread (`sched_info.run_delay`, what
    /// `/proc/PID/schedstat` shows second) at its last switch out: the growth of that
    /// counter by the next switch out is the wait before the run in between. Used where
    /// the kernel keeps it (`CONFIG_SCHED_INFO`, active), instead of timing wakeups.
    pub run_delay_seen: u64,
    /// The kernel's `nvcsw` of the thread at its last switch out (valid with
    /// `flags::NVCSW_KNOWN`): a switch is voluntary exactly when it has grown since.
    pub nvcsw_seen: u64,
    /// Run-queue latency histogram, see [`RUNQ_BUCKETS`].
    pub runq_hist: [u32; RUNQ_BUCKETS],
    /// One more than the syscall number (`SysKey::nr`, see `crate::waits`) the thread was
    /// in at its last voluntary switch out, where blocks are charged to syscalls; 0: not
    /// known (not charged, or no voluntary switch out seen yet).
    pub blocked_in: u32,
    /// The thread's blocks that ended and are not in `WAITS` yet, all in one syscall
    /// (`acc_nr`, encoded as `blocked_in`; 0: none): a thread that blocks in the same
    /// syscall again and again (a server in `epoll_wait`, a worker in `futex`) adds to
    /// these, in a line of its entry the switch out writes anyway, instead of to the
    /// per-process map; they go to the map when it blocks in another syscall and at its
    /// last switch, and userspace adds those of the live threads.
    pub acc_nr: u32,
    pub acc_switches: u32,
    pub acc_ns: u64,
    /// The thread's command name when its entry was made (`current`'s), so a process that
    /// is reaped before userspace reads /proc still has a name.
    pub comm: [u8; 16],
}

/// Slots of the direct-mapped thread table (`THREAD_SLOTS`, an array): thread `tid` may
/// own slot [`slot_of`]`(tid)`. Finding a thread's entry there costs an index and a compare
/// where the `THREADS` hash costs a hash and a bucket walk (~10 ns of a ~55 ns switch
/// program); threads whose slot another thread holds live in `THREADS` instead.
/// A power of two; 8192 slots of 320 bytes are 2.5 MiB.
pub const THREAD_SLOTS: u32 = 8192;

/// The slot thread `tid` may own.
#[inline(always)]
pub const fn slot_of(tid: u32) -> u32 {
    tid & (THREAD_SLOTS - 1)
}

/// One slot of the direct-mapped thread table: `owner`'s accounting, or free (`owner` 0:
/// thread id 0, the idle task, is never accounted).
///
/// A slot is claimed by inserting its index into the `SLOT_CLAIMS` hash (an atomic
/// test-and-set any kernel offers, where a compare-and-swap on `owner` would need 5.12's
/// BPF atomics), then filling `stats`, then setting `owner`; it is released at the
/// owner's last switch by clearing `owner`, then deleting the claim.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ThreadSlot {
    pub owner: u32,
    pub _pad: u32,
    pub stats: ThreadSwitches,
    /// 320 bytes in all: every slot starts a cache line.
    pub _tail: [u8; 48],
}

impl Default for ThreadSlot {
    fn default() -> Self {
        Self {
            owner: 0,
            _pad: 0,
            stats: ThreadSwitches::default(),
            _tail: [0; 48],
        }
    }
}

/// Bits of [`ThreadSwitches::flags`].
pub mod flags {
    /// The last switch out was voluntary: the time until the next run is blocked time,
    /// then run-queue wait.
    pub const OUT_VOLUNTARY: u32 = 1;
    /// `run_delay_seen` is a baseline: the wait before the next run is known. Not set for
    /// a thread that existed before tracing began until its first switch out.
    pub const WAIT_KNOWN: u32 = 2;
    /// `nvcsw_seen` holds the thread's `nvcsw` at its last switch out.
    pub const NVCSW_KNOWN: u32 = 4;
    /// The entry was seeded while its thread was on a CPU (see `tool-ebpf/src/iter.rs`):
    /// the run in progress counts from `out_ts`, the moment tracing began for it.
    pub const RUN_FROM_OUT: u32 = 8;
}

/// `PF_KTHREAD`, the `task_struct.flags` bit of kernel threads and the idle tasks
/// (0x00200000 since Linux 2.6; a flag value, which BTF does not carry).
pub const PF_KTHREAD: u32 = 0x0020_0000;

/// How a switch is classified by the kernel's own rule for loading page tables
/// (`context_switch`): the next task runs on the previous one's `active_mm` when it has no
/// `mm` of its own (a kernel thread or the idle task: lazy TLB); otherwise the page tables
/// change when the previous task's `active_mm` is not the next task's `mm`.
///
/// One bit each (as kept in [`CpuSwitches::cur_class`]): the switch program tests bits,
/// which the compiler keeps as tests, where consecutive values became an index into the
/// entry's counters that the verifier could not bound.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u32)]
pub enum Class {
    /// Nothing seen on this CPU yet.
    Unknown = 0,
    /// The address space was kept between two user tasks sharing it (threads of one
    /// process, a vfork/`CLONE_VM` child and its parent).
    Same = 1,
    /// The kernel loaded another address space.
    Cross = 2,
    /// The idle task or a kernel thread on either side, and no address-space change.
    IdleOrKernel = 4,
}

/// The class of a switch from a task whose `active_mm` is `prev_active_mm` (a kernel
/// thread or an idle task when `prev_kthread`) to one whose `mm` is `next_mm` (0: a kernel
/// thread, an idle task, or a task exiting, which has released its own). `next_released`
/// is, for a user task exiting, the address space it released (its `active_mm`); 0 for
/// any other task.
///
/// Only compares: the verifier allows no arithmetic on the pointers these are in the
/// switch program.
#[inline(always)]
pub const fn classify(
    prev_kthread: bool,
    prev_active_mm: u64,
    next_mm: u64,
    next_released: u64,
) -> Class {
    if next_mm == 0 {
        // Lazy TLB: nothing is loaded. An exiting child of a vfork still on the address
        // space it shared is switched in on it, as it was before it released it.
        if !prev_kthread && next_released != 0 && next_released == prev_active_mm {
            Class::Same
        } else {
            Class::IdleOrKernel
        }
    } else if prev_active_mm != next_mm {
        Class::Cross
    } else if prev_kthread {
        Class::IdleOrKernel
    } else {
        Class::Same
    }
}

/// Per-CPU state of the `sched_switch` program and the system-wide split of switches.
///
/// A switch is classified when it happens (the tracepoint names both tasks), and counted
/// to the incoming task's entry at its own switch out, the next switch on this CPU, which
/// is when the program writes that entry anyway.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct CpuSwitches {
    /// Time of the last switch on this CPU (when `current` came on).
    pub last_ts: u64,
    /// The [`Class`] of the last switch on this CPU (that brought `current` on).
    pub cur_class: u32,
    pub _pad: u32,
    /// All switches seen on this CPU.
    pub switches: u64,
    /// Switches between user tasks sharing one address space.
    pub same_process: u64,
    /// Switches that loaded another address space.
    pub cross_process: u64,
    /// Switches with the idle task or a kernel thread on either side and no address-space
    /// change.
    pub idle_or_kernel: u64,
    /// When (switch clock) this CPU last compared its clock with `bpf_ktime_get_ns`, at
    /// most every [`CALIBRATE_NS`]: where the switch program times with the run queue's
    /// clock, the thread iterator converts the monotonic clock it can read into that
    /// clock by `clock_offset` (switch clock minus monotonic, wrapping).
    pub clock_switch: u64,
    pub clock_offset: u64,
}

/// CPU ids the switch programs' state table ([`CpuTable`]) has room for. On a machine
/// with more possible CPUs the programs keep the same state in the per-CPU map
/// `CPU_SWITCHES` instead (`config::Switch::cpu_table` 0).
pub const CPU_TABLE_CPUS: usize = 1024;

/// One CPU's entry of [`CpuTable`]: its state, then a cache line of padding, so that no
/// two CPUs' state shares a line wherever the kernel places the table.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct CpuSlot {
    pub state: CpuSwitches,
    pub _pad: [u64; 8],
}

/// The switch programs' per-CPU state, indexed by CPU id: a global of the BPF object (its
/// `.bss`), whose address the verifier knows, so that reaching this CPU's state costs an
/// index. A per-CPU map's lookup costs a key on the stack, the map's table of pointers and
/// the CPU's offset, one after the other: 7 ns more than the table in a program doing
/// nothing else, 1 ns of the whole switch program (~57 ns as `bpf_stats` times it, whose
/// other loads overlap the lookup), on an Intel Xeon VM with 6.18.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CpuTable {
    pub cpus: [CpuSlot; CPU_TABLE_CPUS],
}

/// How often (switch-clock ns) a CPU's [`CpuSwitches::clock_switch`] pair is refreshed:
/// ~67 ms, a helper call per CPU at most 15 times a second, while the two clocks drift
/// apart by parts per million.
pub const CALIBRATE_NS: u64 = 1 << 26;

/// A thread as the live iterator reads it (`tool-ebpf/src/iter.rs`): its entry with what
/// the scheduler shows of it now, so that userspace can credit the period in progress
/// (on CPU since, or off CPU since) to the interval it falls in.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct LiveThread {
    pub tid: u32,
    /// [`state`] bits.
    pub state: u32,
    /// The switch program's clock when the task was read.
    pub now: u64,
    /// `sched_info.run_delay`, `.last_arrival` and `.last_queued` (0 where the switch
    /// program times waits with wakeups).
    pub run_delay: u64,
    pub last_arrival: u64,
    pub last_queued: u64,
    /// The process's identity as the per-process maps key it (the thread-group leader's
    /// `start_boottime`, see `copies::SysKey`), where `stats.start_ns` is its `start_time`.
    pub process_start: u64,
    pub stats: ThreadSwitches,
}

/// Bits of [`LiveThread::state`].
pub mod state {
    /// On a CPU now (`task_struct.on_cpu`).
    pub const ON_CPU: u32 = 1;
    /// Runnable, on a run queue, not running (`on_rq` without `on_cpu`).
    pub const QUEUED: u32 = 2;
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The reference: what the bucket means, with a division and a logarithm.
    fn by_division(ns: u64) -> usize {
        let us = ns / 1000;
        let b = if us == 0 { 0 } else { us.ilog2() as usize };
        b.min(RUNQ_BUCKETS - 1)
    }

    /// What a switch out touches sits in the entry's first 128 bytes: two 64-byte cache
    /// lines' worth (three at most, as the hash map places values on 8-byte boundaries).
    #[test]
    fn hot_fields_fill_the_first_two_cache_lines() {
        use core::mem::offset_of;
        assert_eq!(offset_of!(ThreadSwitches, oncpu_ns) + 8, 64);
        assert!(offset_of!(ThreadSwitches, nvcsw_seen) + 8 <= 128);
        // Buckets 0 and 1: waits under 4 µs, the usual case on an idle-enough CPU.
        assert_eq!(offset_of!(ThreadSwitches, runq_hist) + 2 * 4, 128);
        assert_eq!(size_of::<ThreadSwitches>(), 264);
        // What a block's end writes (the syscall it was in, the accumulated blocks) shares
        // one cache line of a slot.
        let slot = offset_of!(ThreadSlot, stats);
        assert_eq!((slot + offset_of!(ThreadSwitches, blocked_in)) / 64, 3);
        assert_eq!((slot + offset_of!(ThreadSwitches, acc_ns) + 7) / 64, 3);
    }

    /// Slots are cache-line aligned (the array's values start on a page), and `owner`,
    /// read at every switch, shares the first line with the entry's hottest fields.
    #[test]
    fn slots_are_256_bytes() {
        use core::mem::offset_of;
        assert_eq!(size_of::<ThreadSlot>(), 320);
        assert_eq!(offset_of!(ThreadSlot, stats), 8);
        assert_eq!(THREAD_SLOTS.count_ones(), 1);
        assert_eq!(slot_of(THREAD_SLOTS + 5), 5);
    }

    /// The per-CPU state fills one cache line.
    #[test]
    fn cpu_state_is_one_cache_line() {
        assert_eq!(size_of::<CpuSwitches>(), 64);
        assert_eq!(size_of::<CpuSlot>(), 128);
        assert_eq!(size_of::<CpuTable>(), 128 * CPU_TABLE_CPUS);
        assert_eq!(size_of::<LiveThread>(), 48 + size_of::<ThreadSwitches>());
    }

    /// The kernel's rule (`context_switch`), case by case.
    #[test]
    fn switches_are_classified_by_the_address_space_they_leave_loaded() {
        let (a, b) = (0x1000_u64, 0x2000_u64);
        // Threads of one process, or a vfork child and its parent (exiting or not): one mm.
        assert_eq!(classify(false, a, a, 0), Class::Same);
        assert_eq!(classify(false, a, 0, a), Class::Same);
        // Another process.
        assert_eq!(classify(false, a, b, 0), Class::Cross);
        // Into a kernel thread, the idle task, or a task exiting off another address
        // space: lazy TLB.
        assert_eq!(classify(false, a, 0, 0), Class::IdleOrKernel);
        assert_eq!(classify(true, a, 0, 0), Class::IdleOrKernel);
        assert_eq!(classify(false, a, 0, b), Class::IdleOrKernel);
        assert_eq!(classify(true, a, 0, a), Class::IdleOrKernel);
        // Out of a kernel thread that had borrowed this task's own mm: nothing to load.
        assert_eq!(classify(true, a, a, 0), Class::IdleOrKernel);
        // Out of one that had borrowed another mm: the page tables change.
        assert_eq!(classify(true, b, a, 0), Class::Cross);
    }

    #[test]
    fn runq_bucket_is_floor_log2_of_microseconds() {
        let check = |ns: u64| assert_eq!(runq_bucket(ns), by_division(ns), "ns = {ns}");
        // Every bucket edge, one below and one above it, and a sweep of magnitudes.
        for ns in [0, 1, 999, 1000, 1001, 1999, 2000, u64::MAX] {
            check(ns);
        }
        for b in 0..40u32 {
            let edge = 1000u64 << b;
            for ns in [edge - 1, edge, edge + 1] {
                check(ns);
            }
        }
        let mut x = 1u64;
        while x < u64::MAX / 3 {
            check(x);
            x = x * 3 + 7;
        }
    }
}
