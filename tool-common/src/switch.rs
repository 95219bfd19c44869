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

/// The kernel's rule behind `nvcsw`/`nivcsw` (`__schedule`): a switch is voluntary only
/// when it is not a preemption and the task is blocking (its state is not
/// `TASK_RUNNING`); everything else is involuntary. `prev_state` is the `sched_switch`
/// raw tracepoint's argument, after the scheduler's own adjustments.
#[inline(always)]
pub const fn is_involuntary(preempt: bool, prev_state: u32) -> bool {
    preempt || prev_state == TASK_RUNNING
}

/// Per-thread switch accounting (value of the `THREADS` map, keyed by thread id).
///
/// Laid out for the switch program: what every switch out reads or writes (identity and
/// counts; times, the wait baseline, flags and the first histogram buckets, < 8 µs) fills
/// the first 128 bytes; the rarer buckets and the name come after.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ThreadSwitches {
    /// Thread-group id (the process id) of the thread.
    pub tgid: u32,
    /// [`kind`] of the thread, cached once it is known to be a user task (a user task
    /// keeps its address space until it exits), so the hot path need not read `mm`.
    pub kind: u32,
    /// Start time (ns since boot, `task_struct.start_time`) of the thread-group leader:
    /// together with `tgid` it names a process uniquely, even when pids are reused.
    pub start_ns: u64,
    /// Switches out while blocking (the kernel's `nvcsw`).
    pub voluntary: u64,
    /// Switches out while still runnable (the kernel's `nivcsw`).
    pub involuntary: u64,
    /// Switches in from a thread of the same process (address space kept).
    pub same_in: u64,
    /// Switches in from a user task of another process (address space changed).
    pub cross_in: u64,
    /// Switches in from the idle task or a kernel thread (lazy TLB: no user
    /// address-space change on the way in).
    pub idle_kernel_in: u64,
    /// Time spent running.
    pub oncpu_ns: u64,
    /// Time spent blocked (switched out voluntarily until woken).
    pub blocked_ns: u64,
    /// Time spent runnable but waiting for a CPU (run-queue latency, summed).
    pub runq_ns: u64,
    /// Longest single run-queue wait.
    pub runq_max_ns: u64,
    /// When the thread was last switched out (0: not yet seen switching out).
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
    /// [`flags`] of the thread's last switch out.
    pub flags: u32,
    /// Run-queue latency histogram, see [`RUNQ_BUCKETS`].
    pub runq_hist: [u32; RUNQ_BUCKETS],
    /// The thread's command name when its entry was made (`current`'s), so a process that
    /// is reaped before userspace reads /proc still has a name.
    pub comm: [u8; 16],
}

/// Slots of the direct-mapped thread table (`THREAD_SLOTS`, an array): thread `tid` may
/// own slot [`slot_of`]`(tid)`. Finding a thread's entry there costs an index and a compare
/// where the `THREADS` hash costs a hash and a bucket walk (~10 ns of a ~55 ns switch
/// program); threads whose slot another thread holds live in `THREADS` instead.
/// A power of two; 8192 slots of 256 bytes are 2 MiB.
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
/// owner's last switch by clearing `owner`, then deleting the claim. Readers take a slot
/// whose `owner` reads the same before and after its `stats`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ThreadSlot {
    pub owner: u32,
    pub _pad: u32,
    pub stats: ThreadSwitches,
    /// To 256 bytes: every slot starts a cache line.
    pub _tail: u64,
}

/// Bits of [`ThreadSwitches::flags`].
pub mod flags {
    /// The last switch out was voluntary: the time until the next run is blocked time,
    /// then run-queue wait.
    pub const OUT_VOLUNTARY: u32 = 1;
    /// `run_delay_seen` is a baseline: the wait before the next run is known. Not set for
    /// a thread that existed before tracing began until its first switch out.
    pub const WAIT_KNOWN: u32 = 2;
}

/// Kinds of task a CPU switched between, kept per CPU to classify the next switch.
pub mod kind {
    /// Nothing seen on this CPU yet.
    pub const UNKNOWN: u32 = 0;
    /// A user task (has its own address space).
    pub const USER: u32 = 1;
    /// The idle task or a kernel thread (no user address space).
    pub const IDLE_OR_KERNEL: u32 = 2;
}

/// Per-CPU state of the `sched_switch` program and the system-wide split of switches.
///
/// The tracepoint names `next` only by pid. The task running after switch *k* on a CPU is
/// exactly the `prev` (= `current`) of switch *k+1* on that CPU, so switch *k* is
/// classified at switch *k+1*, when its incoming task's tgid and address space are known.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct CpuSwitches {
    /// Time of the last switch on this CPU (when `current` came on).
    pub last_ts: u64,
    /// tgid of the task switched out at the last switch.
    pub last_prev_tgid: u32,
    /// [`kind`] of the task switched out at the last switch.
    pub last_prev_kind: u32,
    /// All switches seen on this CPU.
    pub switches: u64,
    /// Switches between threads of one process.
    pub same_process: u64,
    /// Switches between user tasks of different processes.
    pub cross_process: u64,
    /// Switches with the idle task or a kernel thread on either side.
    pub idle_or_kernel: u64,
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
        assert!(offset_of!(ThreadSwitches, flags) + 4 <= 128);
        // Buckets 0..=2: waits under 8 µs, the usual case on an idle-enough CPU.
        assert_eq!(offset_of!(ThreadSwitches, runq_hist) + 3 * 4, 128);
        assert_eq!(size_of::<ThreadSwitches>(), 240);
    }

    /// Slots are cache-line aligned (the array's values start on a page), and `owner`,
    /// read at every switch, shares the first line with the entry's hottest fields.
    #[test]
    fn slots_are_256_bytes() {
        use core::mem::offset_of;
        assert_eq!(size_of::<ThreadSlot>(), 256);
        assert_eq!(offset_of!(ThreadSlot, stats), 8);
        assert_eq!(THREAD_SLOTS.count_ones(), 1);
        assert_eq!(slot_of(THREAD_SLOTS + 5), 5);
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
