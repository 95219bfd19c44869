//! Interrupt context: hard IRQs and softirqs timed per CPU and per kind, and the time each
//! one took from the task it interrupted (its *victim*), aggregated in the kernel.
//!
//! Per CPU, the programs keep one [`IrqStats`] per softirq vector (`SOFTIRQS`) and one per
//! hard IRQ slot (`IRQ_LINES`): slots `0..lines` are the numbered IRQ lines of
//! /proc/interrupts, the x86 system vectors ([`vector`]) follow. The victims' time is kept
//! per process ([`Stolen`] in `VICTIMS`, a per-CPU hash keyed by
//! [`crate::copies::ProcKey`]); what was taken from no process (the idle task) or was
//! ksoftirqd's own work is kept per CPU ([`CpuIrq`]).

/// Softirq vectors (`NR_SOFTIRQS`, the same ten since Linux 4.1), in the kernel's order.
pub const SOFTIRQS: usize = 10;

/// Their names, as /proc/softirqs prints them.
pub const SOFTIRQ_NAMES: [&str; SOFTIRQS] = [
    "HI", "TIMER", "NET_TX", "NET_RX", "BLOCK", "IRQ_POLL", "TASKLET", "SCHED", "HRTIMER", "RCU",
];

/// The x86 system vectors timed through their `irq_vectors` tracepoints: interrupts that do
/// not go through an IRQ line (no `irq_handler_entry`), by their /proc/interrupts row.
/// Their slots in `IRQ_LINES` come after the lines'.
pub mod vector {
    /// Local APIC timer (the tick): `local_timer_entry`/`_exit`.
    pub const LOC: u32 = 0;
    /// Rescheduling IPIs: `reschedule_entry`/`_exit`.
    pub const RES: u32 = 1;
    /// Function-call IPIs (TLB shootdowns among them): `call_function_entry`/`_exit` and
    /// `call_function_single_entry`/`_exit`, which the kernel counts in one row.
    pub const CAL: u32 = 2;
    /// IRQ work interrupts: `irq_work_entry`/`_exit`.
    pub const IWI: u32 = 3;
    pub const COUNT: u32 = 4;
    /// Names as /proc/interrupts prints them, by vector.
    pub const NAMES: [&str; COUNT as usize] = ["LOC", "RES", "CAL", "IWI"];
    /// The tracepoints of each vector (entry names; each has an `_exit` twin), by vector.
    pub const TRACEPOINTS: [&[&str]; COUNT as usize] = [
        &["local_timer_entry"],
        &["reschedule_entry"],
        &["call_function_entry", "call_function_single_entry"],
        &["irq_work_entry"],
    ];
}

/// log2 buckets of handler durations: bucket 0 holds < 256 ns, bucket `i` (1..) holds
/// `[128 << i, 256 << i)` ns, the last one everything from 2^26 ns (~67 ms) up.
pub const DUR_BUCKETS: usize = 20;

/// The [`DUR_BUCKETS`] bucket of a duration of `ns` nanoseconds: `floor(log2(ns)) - 7`,
/// clamped. A binary search of compares: the BPF instruction set has no count of leading
/// zeros (see `switch::runq_bucket`).
#[inline(always)]
pub const fn dur_bucket(ns: u64) -> usize {
    if ns < 256 {
        return 0;
    }
    // The largest k <= 31 with ns >= 256 << k (bucket k + 1, clamped below).
    let mut k = 0u32;
    let mut step = 16u32;
    while step > 0 {
        if ns >= 256u64 << (k + step) {
            k += step;
        }
        step >>= 1;
    }
    let b = k as usize + 1;
    if b >= DUR_BUCKETS { DUR_BUCKETS - 1 } else { b }
}

/// The lower bound in ns of bucket `i` (0 for the first).
pub const fn dur_bucket_floor_ns(i: usize) -> u64 {
    if i == 0 { 0 } else { 128u64 << i }
}

/// Count, total time and durations of one softirq vector or hard IRQ slot on one CPU
/// (a per-CPU array value; userspace sums or shows the CPUs).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct IrqStats {
    /// Handler runs (counted at entry, as the kernel's own counters are). For a shared IRQ
    /// line, one per interrupt, however many of its handlers run.
    pub count: u64,
    /// Time in the handlers, ns; a softirq's excludes the hard IRQs nested in it.
    pub ns: u64,
    /// Durations of the runs timed, by [`dur_bucket`] (a shared line: one per handler).
    pub hist: [u64; DUR_BUCKETS],
}

/// Interrupt time taken from one process (a per-CPU hash value, `VICTIMS`).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Stolen {
    /// Hard IRQ handlers that ran while the process was current, and their time in ns.
    pub hard: u64,
    pub hard_ns: u64,
    /// Softirqs that ran while it was current (their own time, nested hard IRQs apart).
    pub soft: u64,
    pub soft_ns: u64,
    /// The current task's name when the entry was made (NUL-padded): processes gone
    /// before userspace reads /proc are still named.
    pub comm: [u8; 16],
}

/// Marks a [`CpuIrq::soft_start`] whose softirq has begun but whose time is not read yet:
/// a hard IRQ that comes in between counts as nested.
pub const SOFT_OPENING: u64 = 1;

/// `VictimCache::flags`: the current task is this CPU's ksoftirqd (`PF_KTHREAD` and named
/// `ksoftirqd/N`): the softirqs it runs are its own work, not a loss.
pub const VICTIM_KSOFTIRQD: u32 = 1;

/// The last task charged on a CPU and what it resolved to, so that the interrupts of one
/// task in a row (a busy CPU's common case) cost no reads of it.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct VictimCache {
    /// `task_struct` address (0: none yet). With `tgid`, it names the task: a freed task's
    /// memory reused by a new task of the same tgid is the same process.
    pub task: u64,
    pub tgid: u32,
    pub flags: u32,
    /// The process's thread-group leader's `start_boottime`.
    pub start_ns: u64,
}

/// One CPU's interrupt state (a per-CPU array of one element, `CPU_IRQ`): the handlers in
/// progress, the victim cache, and the times charged to no process.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct CpuIrq {
    /// When the hard IRQ handler now running began (0: none), and its `IRQ_LINES` slot.
    pub hard_start: u64,
    pub hard_slot: u32,
    /// The softirq now running: its vector and start ([`SOFT_OPENING`] while it begins,
    /// 0: none).
    pub soft_vec: u32,
    pub soft_start: u64,
    /// Hard IRQ time nested in the softirq now running, ns (taken off the softirq's).
    pub nested_now_ns: u64,
    /// The `irqaction.next` of the handler that last returned: the next handler of the
    /// same interrupt on a shared line, whose run is not another interrupt.
    pub chain_next: u64,
    pub victim: VictimCache,
    pub totals: CpuTotals,
}

/// One CPU's cumulative interrupt times that are no process's loss, and its nesting.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct CpuTotals {
    /// Hard IRQ and softirq time that interrupted the idle task.
    pub idle_hard_ns: u64,
    pub idle_soft_ns: u64,
    /// Softirq time run by this CPU's ksoftirqd (its own work).
    pub ksoftirqd_soft_ns: u64,
    /// Time taken from tasks that are not traced (proclens itself, tasks outside
    /// `--cgroup`), hard and soft.
    pub untraced_hard_ns: u64,
    pub untraced_soft_ns: u64,
    /// Hard IRQs that ran inside a softirq, and their time (counted once: as hard IRQ
    /// time, not as the softirq's).
    pub nested: u64,
    pub nested_ns: u64,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn duration_buckets_are_log2_from_256_ns() {
        let reference = |ns: u64| {
            if ns < 256 {
                0
            } else {
                (ns.ilog2() as usize - 7).min(DUR_BUCKETS - 1)
            }
        };
        for ns in [
            0,
            1,
            255,
            256,
            511,
            512,
            1000,
            4095,
            4096,
            1 << 20,
            (1 << 26) - 1,
        ] {
            assert_eq!(dur_bucket(ns), reference(ns), "{ns}");
        }
        for ns in [1 << 26, 1 << 40, u64::MAX] {
            assert_eq!(dur_bucket(ns), DUR_BUCKETS - 1, "{ns}");
        }
        for i in 1..DUR_BUCKETS {
            assert_eq!(dur_bucket(dur_bucket_floor_ns(i)), i);
            assert_eq!(dur_bucket(dur_bucket_floor_ns(i) - 1), i - 1);
        }
    }

    #[test]
    fn wire_types_have_no_implicit_padding() {
        assert_eq!(size_of::<IrqStats>(), 8 * (2 + DUR_BUCKETS));
        assert_eq!(size_of::<Stolen>(), 4 * 8 + 16);
        assert_eq!(size_of::<VictimCache>(), 24);
        assert_eq!(size_of::<CpuIrq>(), 8 * 4 + 4 * 2 + 24 + 8 * 7);
    }
}
