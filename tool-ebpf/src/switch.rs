//! Context switches: voluntary/involuntary per thread, same-process vs cross-process vs
//! idle/kernel classification, on-CPU, blocked and run-queue time, run-queue histograms.
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
//! Each thread's accounting sits in its slot of the direct-mapped `THREAD_SLOTS` table when
//! it holds that slot (most threads), else in the `THREADS` hash (see [`find_or_make`]).

use aya_ebpf::{helpers::bpf_ktime_get_ns, macros::btf_tracepoint, programs::BtfTracePointContext};
use aya_log_ebpf::debug;
use proclens_common::{
    counters,
    event::{EventHeader, ThreadExit, kind as event_kind},
    switch::{
        CpuSwitches, TASK_DEAD, ThreadSlot, ThreadSwitches, flags, is_involuntary, kind,
        runq_bucket, slot_of,
    },
};

use crate::{
    config, filter,
    maps::{CPU_SWITCHES, SLOT_CLAIMS, THREAD_SLOTS, THREADS, count, send},
    task::{comm, field},
};

const BPF_NOEXIST: u64 = 1;

/// Which kind of switch brought the current task onto this CPU.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Class {
    Unknown,
    Same,
    Cross,
    IdleOrKernel,
}

#[btf_tracepoint(function = "sched_switch")]
pub fn sched_switch(ctx: BtfTracePointContext) -> u32 {
    let _ = try_sched_switch(&ctx);
    0
}

#[btf_tracepoint(function = "sched_wakeup")]
pub fn sched_wakeup(ctx: BtfTracePointContext) -> u32 {
    let _ = try_wakeup(&ctx);
    0
}

#[btf_tracepoint(function = "sched_wakeup_new")]
pub fn sched_wakeup_new(ctx: BtfTracePointContext) -> u32 {
    let _ = try_wakeup(&ctx);
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
    let Some(cpu) = CPU_SWITCHES.get_ptr_mut(0) else {
        return Err(-1);
    };
    // SAFETY: the per-CPU slot belongs to this CPU while the program runs.
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
    let traced = tid != 0 && filter::traced_tgid(tgid) && filter::current_in_cgroup();
    // A full map (counted) leaves the thread untracked but the CPU's bookkeeping intact.
    let mut entry = if traced {
        thread_entry(ctx, tid, tgid, prev)
    } else {
        None
    };
    // A user task keeps its address space until it exits: its entry remembers the kind,
    // which spares a load of `mm` (another cache line of the task) per switch.
    let prev_kind = match &mut entry {
        Some(e) if e.kind == kind::USER => kind::USER,
        e => {
            let k = task_kind(tid, prev);
            if let Some(e) = e {
                e.kind = k;
            }
            k
        }
    };

    // Classify the previous switch on this CPU: its incoming task is `current`.
    let class = match cpu.last_prev_kind {
        kind::UNKNOWN => Class::Unknown,
        k if k == kind::IDLE_OR_KERNEL || prev_kind == kind::IDLE_OR_KERNEL => {
            cpu.idle_or_kernel += 1;
            Class::IdleOrKernel
        }
        _ if cpu.last_prev_tgid == tgid => {
            cpu.same_process += 1;
            Class::Same
        }
        _ => {
            cpu.cross_process += 1;
            Class::Cross
        }
    };
    let in_ts = if class == Class::Unknown {
        0
    } else {
        cpu.last_ts
    };
    cpu.switches += 1;
    cpu.last_ts = now;
    cpu.last_prev_tgid = tgid;
    cpu.last_prev_kind = prev_kind;

    let Some(entry) = entry else {
        return Ok(());
    };
    let run_delay = if config::sched_info() != 0 {
        field(prev, config::task_run_delay_off())
    } else {
        0
    };
    account_switch_out(
        entry,
        Run { class, in_ts, now },
        preempt & 1 != 0,
        prev_state,
        run_delay,
    );
    if prev_state & TASK_DEAD != 0 && is_exiting(prev) {
        // The thread's last switch: hand its final counts to userspace and forget it, so
        // a reused thread id starts from zero.
        emit_thread_exit(ctx, tid, now, prev, entry);
        release(tid);
    }
    Ok(())
}

/// A user task has its own address space (`mm`); the idle task and kernel threads do not.
#[inline(always)]
fn task_kind(tid: u32, task: u64) -> u32 {
    if tid == 0 {
        return kind::IDLE_OR_KERNEL;
    }
    let mm: u64 = field(task, config::task_mm_off());
    if mm == 0 {
        kind::IDLE_OR_KERNEL
    } else {
        kind::USER
    }
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
    let (e, made) = find_or_make(ctx, tid, || fresh(tgid, task))?;
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
        *e = fresh(tgid, task);
        return Some(e);
    }
    // Made by a wakeup, which knows no tgid: fill the identity in.
    e.tgid = tgid;
    e.start_ns = leader_start(task);
    e.comm = comm(task);
    Some(e)
}

/// The slot `tid` may own, when slots are in use.
#[inline(always)]
fn slot(tid: u32) -> Option<&'static mut ThreadSlot> {
    if config::thread_slots_used() == 0 {
        return None;
    }
    // SAFETY: array values live as long as the map; see `find_or_make` for who writes.
    THREAD_SLOTS
        .get_ptr_mut(slot_index(tid))
        .map(|s| unsafe { &mut *s })
}

/// Its index: `slot_of(tid)`, within the slots in use (all but in tests).
#[inline(always)]
fn slot_index(tid: u32) -> u32 {
    slot_of(tid) & config::thread_slots_used().wrapping_sub(1)
}

/// `tid`'s entry (see [`find`]), else a new one made by `make`, in its slot when that is
/// free, else in `THREADS`; with whether it was made now. `None` when `THREADS` is full
/// (counted).
///
/// A thread's entry is written by its own switches out, which happen on one CPU at a time,
/// and by its wakeups (timing wakeups only, see `try_wakeup`); claiming a slot is
/// arbitrated by `SLOT_CLAIMS` (see `ThreadSlot`).
#[inline(always)]
fn find_or_make(
    ctx: &BtfTracePointContext,
    tid: u32,
    make: impl FnOnce() -> ThreadSwitches,
) -> Option<(&'static mut ThreadSwitches, bool)> {
    if let Some(e) = find(tid) {
        return Some((e, false));
    }
    if let Some(s) = slot(tid)
        && s.owner == 0
        && SLOT_CLAIMS
            .insert(&slot_index(tid), &tid, BPF_NOEXIST)
            .is_ok()
    {
        s.stats = make();
        s.owner = tid;
        return Some((&mut s.stats, true));
    }
    if let Err(err) = THREADS.insert(&tid, &make(), BPF_NOEXIST) {
        if err != -17 {
            // Not EEXIST: the map is full.
            count(ctx, counters::THREAD_MAP_FULL);
            return None;
        }
    }
    // SAFETY: map values live as long as the map.
    THREADS
        .get_ptr_mut(&tid)
        .map(|e| (unsafe { &mut *e }, true))
}

/// `tid`'s entry if it has one: its slot when it owns it, else its `THREADS` entry.
#[inline(always)]
fn find(tid: u32) -> Option<&'static mut ThreadSwitches> {
    match slot(tid) {
        Some(s) if s.owner == tid => Some(&mut s.stats),
        // SAFETY: map values live as long as the map.
        _ => THREADS.get_ptr_mut(&tid).map(|e| unsafe { &mut *e }),
    }
}

/// Forgets `tid`'s entry (its last switch): frees its slot, or removes it from `THREADS`.
#[inline(always)]
fn release(tid: u32) {
    if let Some(s) = slot(tid)
        && s.owner == tid
    {
        s.owner = 0;
        let _ = SLOT_CLAIMS.remove(&slot_index(tid));
        return;
    }
    let _ = THREADS.remove(&tid);
}

#[inline(always)]
fn fresh(tgid: u32, task: u64) -> ThreadSwitches {
    let (run_delay_seen, flags) = wait_baseline(task);
    ThreadSwitches {
        tgid,
        start_ns: leader_start(task),
        comm: comm(task),
        run_delay_seen,
        flags,
        ..ThreadSwitches::default()
    }
}

/// Where counting the run-queue time of a thread first seen now starts. A thread started
/// since tracing began is counted from birth (its whole `run_delay`, the wait before its
/// first run included); an older one from now on (the wait before the run ending now began
/// before proclens could see it, so it is no sample).
#[inline(always)]
fn wait_baseline(task: u64) -> (u64, u32) {
    if config::sched_info() == 0 {
        return (0, 0);
    }
    let started: u64 = field(task, config::task_start_time_off());
    if started >= config::trace_start_ns() {
        (0, flags::WAIT_KNOWN)
    } else {
        (field(task, config::task_run_delay_off()), 0)
    }
}

#[inline(always)]
fn leader_start(task: u64) -> u64 {
    let leader: u64 = field(task, config::task_group_leader_off());
    if leader == 0 {
        return 0;
    }
    field(leader, config::task_start_time_off())
}

/// The run that ends at a switch out: how the thread came on (classified at this switch,
/// see `CpuSwitches`), when (0: unknown), and now.
struct Run {
    class: Class,
    in_ts: u64,
    now: u64,
}

#[inline(always)]
fn account_switch_out(
    e: &mut ThreadSwitches,
    run: Run,
    preempt: bool,
    prev_state: u32,
    run_delay: u64,
) {
    let Run { class, in_ts, now } = run;
    let ran = in_ts != 0 && in_ts <= now;
    if ran {
        // The run that ends now started at in_ts.
        e.oncpu_ns += now - in_ts;
        match class {
            Class::Same => e.same_in += 1,
            Class::Cross => e.cross_in += 1,
            Class::IdleOrKernel => e.idle_kernel_in += 1,
            Class::Unknown => {}
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
                e.blocked_ns += (in_ts - e.out_ts).saturating_sub(wait);
            }
        }
    } else if ran {
        let wake = e.wake_ts;
        // Only a wakeup between the last switch out and this run's start splits the time
        // off CPU into blocked and waiting; without one (the thread was first seen after
        // its wakeup) the split is unknown and nothing is recorded.
        if e.out_ts != 0 && e.out_ts <= wake && wake <= in_ts {
            e.blocked_ns += wake - e.out_ts;
            record_runq(e, in_ts - wake);
        }
    }
    if is_involuntary(preempt, prev_state) {
        e.involuntary += 1;
        // Still runnable: it waits on the run queue from now on.
        e.wake_ts = now;
        e.flags = flags::WAIT_KNOWN;
    } else {
        e.voluntary += 1;
        e.wake_ts = 0;
        e.flags = flags::WAIT_KNOWN | flags::OUT_VOLUNTARY;
    }
    e.out_ts = now;
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

#[inline(always)]
fn emit_thread_exit(ctx: &BtfTracePointContext, tid: u32, now: u64, task: u64, e: &ThreadSwitches) {
    send(
        ctx,
        ThreadExit {
            header: EventHeader {
                kind: event_kind::THREAD_EXIT,
                tid,
                ts: now,
            },
            stats: *e,
            comm: comm(task),
        },
    );
}

fn try_wakeup(ctx: &BtfTracePointContext) -> Result<(), i32> {
    // TP_PROTO(struct task_struct *p); p is already on its (new) CPU's run queue.
    let task: u64 = ctx.arg(0);
    let tid: u32 = field(task, config::task_pid_off());
    if tid == 0 {
        return Ok(());
    }
    let now = now(task);
    // First sight of this thread: remember when it became runnable. Its tgid is filled in
    // at its first switch out. With a filter, entries are only made by switches of tasks
    // it selects (the woken task is not `current`, so the filter cannot ask here).
    let known = if filter::narrowed() {
        find(tid)
    } else {
        let runnable = || ThreadSwitches {
            wake_ts: now,
            ..ThreadSwitches::default()
        };
        find_or_make(ctx, tid, runnable).and_then(|(e, made)| (!made).then_some(e))
    };
    // A racing switch out of the same thread can at worst cost one latency sample.
    // The first wakeup after a switch out counts: later ones (the task is already
    // runnable, or woken again while running) must not move the start of its wait.
    if let Some(e) = known
        && (e.wake_ts == 0 || e.wake_ts < e.out_ts)
    {
        e.wake_ts = now;
    }
    Ok(())
}
