//! Context switches: voluntary/involuntary per thread (the kernel's own `nvcsw`/`nivcsw`
//! rule), the address-space split of switches in (same address space, changed, idle/kernel
//! thread), on-CPU, blocked and run-queue time, run-queue histograms.
//!
//! BTF tracepoints `sched_switch`, `sched_wakeup` and `sched_wakeup_new`: they get the
//! tracepoint's own arguments (typed task pointers), cost no trace-record formatting, need
//! no tracefs, and read task fields with plain BTF-checked loads (see `task`). The argument
//! layout and every offset come from the running kernel's BTF (see `config`).
//!
//! The programs call no helper on their hot path. In particular the time is not read with
//! `bpf_ktime_get_ns` (about as dear as the rest of the switch program on a VM) but taken
//! from the scheduler: see [`now`]. Where the scheduler also keeps each task's run-queue
//! time (`sched_info.run_delay`, `CONFIG_SCHED_INFO`), the wait before each run is read
//! from it at the task's switch out, and the wakeup programs are not attached at all:
//! a wakeup then costs nothing.
//!
//! Each thread's accounting is its entry in the thread table (see `threads`); a period
//! still open when userspace reads (on CPU since, off CPU since) is credited there from
//! the live iterator's reading (see `iter`).

use aya_ebpf::{helpers::bpf_ktime_get_ns, macros::btf_tracepoint, programs::BtfTracePointContext};
use aya_log_ebpf::debug;
use proclens_common::switch::{
    CALIBRATE_NS, Class, CpuSwitches, PF_KTHREAD, TASK_DEAD, ThreadSwitches, classify, flags,
    is_involuntary, runq_bucket,
};

use crate::{
    config, filter,
    maps::cpu_switches,
    task::{comm, field},
    threads::{self, find, find_or_make},
    waits,
};

#[btf_tracepoint(function = "sched_switch")]
pub fn sched_switch(ctx: BtfTracePointContext) -> u32 {
    // No log line on its error: the one way it fails is a missing CPU state (see
    // `maps::cpu_switches`), which never happens (the check is the verifier's),
    // and aya-log's record would take stack this program does not have (LLVM refuses it
    // past 512 bytes).
    let _ = try_sched_switch(&ctx);
    0
}

#[btf_tracepoint(function = "sched_wakeup")]
pub fn sched_wakeup(ctx: BtfTracePointContext) -> u32 {
    try_wakeup(&ctx);
    0
}

#[btf_tracepoint(function = "sched_wakeup_new")]
pub fn sched_wakeup_new(ctx: BtfTracePointContext) -> u32 {
    try_wakeup(&ctx);
    0
}

/// The time of the switch or wakeup of `task` that is being traced, in ns; 0 if unknown.
///
/// `__schedule` and every wakeup path update the run queue's clock (`rq->clock`,
/// `sched_clock` based) under its lock just before these tracepoints fire, and the
/// scheduler's own accounting (`/proc/PID/schedstat`: run time, run-queue wait) uses that
/// same clock, so reading it is exact to the kernel's view and costs three loads of cache
/// lines the scheduler just wrote, where `bpf_ktime_get_ns` costs a helper call and a clock
/// read (~30 ns on a VM, a third of the program). The task's `se.cfs_rq` is set for every
/// task, whatever its class (idle, RT, fair), to its CPU's root or group run queue, whose
/// `rq` is the CPU's. Kernels without `CONFIG_FAIR_GROUP_SCHED` have no `cfs_rq.rq`; there
/// the loader sets `RQ_CLOCK` to 0 and the helper is used. The verifier sees `RQ_CLOCK` as
/// a constant, so only one of the two paths is ever loaded.
#[inline(always)]
fn now(task: u64) -> u64 {
    if config::rq_clock() == 0 {
        // SAFETY: a helper without arguments.
        return unsafe { bpf_ktime_get_ns() };
    }
    // No NULL checks: a load through a NULL BTF pointer reads 0 (never the case here).
    let cfs_rq: u64 = field(task, config::task_cfs_rq_off());
    let rq: u64 = field(cfs_rq, config::cfs_rq_rq_off());
    field(rq, config::rq_clock_off())
}

fn try_sched_switch(ctx: &BtfTracePointContext) -> Result<(), i32> {
    // TP_PROTO(bool preempt, struct task_struct *prev, struct task_struct *next
    //          [, unsigned int prev_state (5.18+)]); `current` is still `prev`.
    let preempt: u64 = ctx.arg(0);
    let prev: u64 = ctx.arg(1);
    let now = now(prev);
    let Some(cpu) = cpu_switches() else {
        return Err(-1);
    };
    // SAFETY: this CPU's state belongs to this CPU while the program runs.
    let cpu: &mut CpuSwitches = unsafe { &mut *cpu };

    let tid: u32 = field(prev, config::task_pid_off());
    let tgid: u32 = field(prev, config::task_tgid_off());
    let prev_state: u32 = if config::switch_prev_state_arg() != 0 {
        let raw: u64 = ctx.arg(3);
        raw as u32
    } else {
        // `state` (a long before 5.14): its low half on little-endian machines.
        field(prev, config::task_state_off())
    };

    // This switch's class, by what `prev` leaves loaded and what `next` needs; counted
    // to `next` at its own switch out (the next switch on this CPU).
    let next: u64 = ctx.arg(2);
    let next_mm: u64 = field(next, config::task_mm_off());
    let class = classify(
        is_kthread(prev),
        field(prev, config::task_active_mm_off()),
        next_mm,
        // Only for a task without an mm (a line of `next` read only then).
        if next_mm == 0 && !is_kthread(next) {
            field(next, config::task_active_mm_off())
        } else {
            0
        },
    );
    match class {
        Class::Same => cpu.same_process += 1,
        Class::Cross => cpu.cross_process += 1,
        _ => cpu.idle_or_kernel += 1,
    }
    // How `prev` came on: the CPU's last switch, unless this is the first one seen.
    let in_class = cpu.cur_class;
    let in_ts = cpu.last_ts;
    cpu.switches += 1;
    cpu.last_ts = now;
    cpu.cur_class = class as u32;
    if config::rq_clock() != 0 && now.wrapping_sub(cpu.clock_switch) >= CALIBRATE_NS {
        cpu.clock_switch = now;
        // SAFETY: a helper without arguments.
        cpu.clock_offset = now.wrapping_sub(unsafe { bpf_ktime_get_ns() });
    }
    if tid == 0 {
        return Ok(());
    }

    if filter::traced_tgid(tgid) && filter::current_in_cgroup() {
        // A full table (counted once per thread) leaves the thread untracked.
        match thread_entry(ctx, tid, tgid, prev) {
            Some(e) => {
                let run_delay = if config::sched_info() != 0 {
                    field(prev, config::task_run_delay_off())
                } else {
                    0
                };
                let preempted = preempt & 1 != 0;
                let out = Out {
                    nvcsw: field(prev, config::task_nvcsw_off()),
                    preempt: preempted,
                    prev_state,
                    // Not read for a preemption, which never blocks, nor for a kernel
                    // thread, which makes no syscalls: its blocks are charged to none.
                    // (Read whatever the task's state: one blocking with a signal
                    // pending is back to running here, and counted voluntary.) Plus
                    // one, as the thread's entry keeps it: 0 is "not known".
                    blocked_in: if config::waits_blocked_in() != 0
                        && !preempted
                        && !is_kthread(prev)
                    {
                        waits::blocked_in(prev).wrapping_add(1)
                    } else {
                        0
                    },
                };
                let run = Run {
                    in_class,
                    in_ts: run_start(prev, in_ts, now),
                    now,
                };
                account_switch_out(e, run, out, run_delay, prev);
            }
            None => threads::untracked(ctx, tid),
        }
    }
    if prev_state & TASK_DEAD != 0 && is_exiting(prev) {
        // The thread's last switch, traced or not: its entry and mark go.
        threads::forget(ctx, tid, now, prev);
    }
    Ok(())
}

/// Whether the task is a kernel thread or an idle task (`PF_KTHREAD`).
#[inline(always)]
fn is_kthread(task: u64) -> bool {
    let flags: u32 = field(task, config::task_flags_off());
    flags & PF_KTHREAD != 0
}

/// Whether the task has an exit state (zombie or dead): its last switch.
#[inline(always)]
fn is_exiting(task: u64) -> bool {
    let exit_state: i32 = field(task, config::task_exit_state_off());
    exit_state != 0
}

/// The entry of the current thread, made if it has none (`None`: the table is full).
#[inline(always)]
fn thread_entry(
    ctx: &BtfTracePointContext,
    tid: u32,
    tgid: u32,
    task: u64,
) -> Option<&'static mut ThreadSwitches> {
    let (e, made) = find_or_make(tid, |e| threads::fresh(e, tgid, task))?;
    if made || e.tgid == tgid {
        return Some(e);
    }
    if e.tgid != 0 {
        // A stale entry of another process (its exit was missed): start afresh.
        debug!(
            ctx,
            "stale entry of thread {} (process {}, now {}): its last switch was missed",
            tid,
            e.tgid,
            tgid
        );
        threads::reset(e);
        threads::fresh(e, tgid, task);
        return Some(e);
    }
    // Made by a wakeup, which knows no tgid: fill the identity in.
    e.tgid = tgid;
    e.start_ns = threads::leader_start(task);
    e.comm = comm(task);
    e.flags |= threads::first_switch(task);
    Some(e)
}

/// When the run of `task` that ends `now` began: the CPU's last switch seen (`last_ts`),
/// unless the scheduler's own stamp of the task's arrival (`sched_info.last_arrival`, on
/// the same run-queue clock and equal to it when that switch was the task's) is later. It
/// is later when the switch that brought the task on was not traced: on a loaded 2-vCPU
/// Firecracker guest (6.18) about one switch in 800 of a sleeping thread reached no
/// `sched_switch` probe at all (ftrace's own event missed it as well), and the run then
/// counted from the CPU's switch before it, taking up to a whole block's time from the
/// block before (a 20 ms poll was charged 15 ms and its thread ran 5 ms). A stale stamp
/// (the scheduler skips it for a task it never saw queued) is earlier: ignored. So is
/// the stamp where this CPU has no switch seen yet (`last_ts` 0: the run began before
/// tracing did, and stays uncounted).
#[inline(always)]
fn run_start(task: u64, last_ts: u64, now: u64) -> u64 {
    if config::sched_info() == 0 || last_ts == 0 {
        return last_ts;
    }
    let arrival: u64 = field(task, config::task_last_arrival_off());
    if arrival > last_ts && arrival <= now {
        arrival
    } else {
        last_ts
    }
}

/// The run that ends at a switch out: how the thread came on (a [`Class`], `Unknown` when
/// this CPU's previous switch was not seen), when (0: unknown), and now.
struct Run {
    in_class: u32,
    in_ts: u64,
    now: u64,
}

/// How the thread leaves: its `nvcsw` now, and the tracepoint's view (for a thread whose
/// `nvcsw` before this switch is unknown).
struct Out {
    nvcsw: u64,
    preempt: bool,
    prev_state: u32,
    /// One more than the syscall it blocks in (`ThreadSwitches::blocked_in`), where
    /// blocks are charged to syscalls and it blocks; 0 where none is (a kernel thread).
    blocked_in: u32,
}

#[inline(always)]
fn account_switch_out(e: &mut ThreadSwitches, run: Run, out: Out, run_delay: u64, task: u64) {
    let Run {
        in_class,
        in_ts,
        now,
    } = run;
    // A thread seeded while on CPU: its run counts from the seed at the earliest.
    let start = if e.flags & flags::RUN_FROM_OUT != 0 && e.out_ts > in_ts {
        e.out_ts
    } else {
        in_ts
    };
    let ran = start != 0 && start <= now;
    if ran {
        // The run that ends now started at `start`.
        e.oncpu_ns += now - start;
        if in_class & Class::Same as u32 != 0 {
            e.same_in += 1;
        } else if in_class & Class::Cross as u32 != 0 {
            e.cross_in += 1;
        } else if in_class & Class::IdleOrKernel as u32 != 0 {
            e.idle_kernel_in += 1;
        }
    }
    if config::sched_info() != 0 {
        // The scheduler's run-queue time grew by the wait before this run (one arrival
        // per run; a migration while waiting adds both queues' share).
        let wait = run_delay.saturating_sub(e.run_delay_seen);
        e.run_delay_seen = run_delay;
        if e.flags & flags::WAIT_KNOWN != 0 {
            record_runq(e, wait);
            // Off CPU since the last switch out: blocked until woken, then waiting.
            if ran && e.flags & flags::OUT_VOLUNTARY != 0 && e.out_ts != 0 && e.out_ts <= in_ts {
                let blocked = (in_ts - e.out_ts).saturating_sub(wait);
                e.blocked_ns += blocked;
                charge_block(e, blocked, task);
            }
        }
    } else if ran {
        let wake = e.wake_ts;
        // Only a wakeup between the last switch out and this run's start splits the time
        // off CPU into blocked and waiting; without one (the thread was first seen after
        // its wakeup) the split is unknown and nothing is recorded.
        if e.out_ts != 0 && e.out_ts <= wake && wake <= in_ts {
            e.blocked_ns += wake - e.out_ts;
            if e.flags & flags::OUT_VOLUNTARY != 0 {
                charge_block(e, wake - e.out_ts, task);
            }
            record_runq(e, in_ts - wake);
        }
    }
    // The kernel's own count decides: `nvcsw` grew exactly when it counted this switch
    // voluntary (a task blocking with a signal pending included, whose state the
    // scheduler set back to running before the tracepoint).
    let voluntary = if e.flags & flags::NVCSW_KNOWN != 0 {
        out.nvcsw != e.nvcsw_seen
    } else {
        !is_involuntary(out.preempt, out.prev_state)
    };
    e.nvcsw_seen = out.nvcsw;
    if voluntary {
        e.voluntary += 1;
        if config::waits_blocked_in() != 0 {
            e.blocked_in = out.blocked_in;
        }
        e.wake_ts = 0;
        e.flags = flags::WAIT_KNOWN | flags::NVCSW_KNOWN | flags::OUT_VOLUNTARY;
    } else {
        e.involuntary += 1;
        // Still runnable: it waits on the run queue from now on.
        e.wake_ts = now;
        e.flags = flags::WAIT_KNOWN | flags::NVCSW_KNOWN;
    }
    e.out_ts = now;
}

/// Charges a block that just ended to the syscall it began in, where blocks are charged
/// to syscalls: to the thread's accumulated blocks while they are of the same syscall,
/// else those go to the map first (see `ThreadSwitches::acc_nr`).
#[inline(always)]
fn charge_block(e: &mut ThreadSwitches, ns: u64, task: u64) {
    if config::waits_blocked_in() == 0 || e.blocked_in == 0 {
        return;
    }
    if e.acc_nr != e.blocked_in || e.acc_switches == u32::MAX {
        waits::flush(e, task);
        e.acc_nr = e.blocked_in;
    }
    e.acc_ns += ns;
    e.acc_switches += 1;
}

#[inline(always)]
fn record_runq(e: &mut ThreadSwitches, ns: u64) {
    e.runq_ns += ns;
    if ns > e.runq_max_ns {
        e.runq_max_ns = ns;
    }
    let bucket = runq_bucket(ns);
    e.runq_hist[bucket] += 1;
}

fn try_wakeup(ctx: &BtfTracePointContext) {
    // TP_PROTO(struct task_struct *p); p is already on its (new) CPU's run queue.
    let task: u64 = ctx.arg(0);
    let tid: u32 = field(task, config::task_pid_off());
    if tid == 0 {
        return;
    }
    let now = now(task);
    // First sight of this thread: remember when it became runnable. Its tgid is filled in
    // at its first switch out. With a filter, entries are only made by switches of tasks
    // it selects (the woken task is not `current`, so the filter cannot ask here).
    let known = if filter::narrowed() {
        find(tid)
    } else {
        let runnable = |e: &mut ThreadSwitches| e.wake_ts = now;
        // A full table leaves it for its switch out to count.
        find_or_make(tid, runnable).and_then(|(e, made)| (!made).then_some(e))
    };
    // A racing switch out of the same thread can at worst cost one latency sample.
    // The first wakeup after a switch out counts: later ones (the task is already
    // runnable, or woken again while running) must not move the start of its wait.
    if let Some(e) = known
        && (e.wake_ts == 0 || e.wake_ts < e.out_ts)
    {
        e.wake_ts = now;
    }
}
