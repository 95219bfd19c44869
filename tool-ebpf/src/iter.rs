//! Task iterators (`iter/task`, 5.8+) over the thread table, run by userspace on demand:
//!
//! - [`seed_threads`], once when tracing starts: every traced thread that already exists
//!   gets an entry whose open period starts now (asleep since now, waiting since now, or
//!   on CPU since now), so a thread asleep when proclens starts is counted from that
//!   moment instead of from its first switch out, which may never come.
//! - [`live_threads`], at every report: each traced thread's entry with what the scheduler
//!   shows of it now (on a CPU, queued, asleep; its run-queue time and last arrival), as
//!   one `LiveThread` record; userspace credits the period in progress from it
//!   (`model::open_period`). The entry and the task are read together, so the record is
//!   consistent unless the thread switches in between (the entry is then read again).

use aya_ebpf::{
    helpers::{bpf_get_current_task, bpf_ktime_get_ns, generated::bpf_seq_write},
    programs::BtfTracePointContext,
};
use proclens_common::switch::{LiveThread, PF_KTHREAD, ThreadSwitches, flags, state};

use crate::{
    config, filter,
    maps::cpu_switches,
    task::{comm, field, probe, process_start_field},
    threads::{self, find},
};

/// `iter/task`'s context is `struct bpf_iter__task { struct bpf_iter_meta *meta; struct
/// task_struct *task; }`: read like a BTF tracepoint's arguments. `task` is NULL once, after
/// the last task.
#[allow(
    clippy::no_mangle_with_rust_abi,
    reason = "declared as aya's program macros declare theirs; the loader finds it by symbol and section"
)]
#[unsafe(no_mangle)]
#[unsafe(link_section = "iter/task")]
pub fn seed_threads(ctx: *mut core::ffi::c_void) -> i32 {
    let ctx = BtfTracePointContext::new(ctx);
    let task: u64 = ctx.arg(1);
    if task != 0 {
        seed(&ctx, task);
    }
    0
}

#[allow(
    clippy::no_mangle_with_rust_abi,
    reason = "declared as aya's program macros declare theirs; the loader finds it by symbol and section"
)]
#[unsafe(no_mangle)]
#[unsafe(link_section = "iter/task")]
pub fn live_threads(ctx: *mut core::ffi::c_void) -> i32 {
    let ctx = BtfTracePointContext::new(ctx);
    let meta: u64 = ctx.arg(0);
    let task: u64 = ctx.arg(1);
    if task != 0 {
        live(meta, task);
    }
    0
}

/// The switch program's clock now. Where it is the run queue's clock, which an iterator
/// cannot read fresh (a CPU's `rq->clock` only moves at scheduler events), it is the
/// monotonic clock moved by the difference the switch program last saw between the two on
/// this CPU (see `CpuSwitches::clock_switch`): exact to the drift of a few ms, parts per
/// million. Before that CPU's first calibration, this CPU's run-queue clock as last moved
/// (when the reading thread came on or at the last tick): at most a tick behind, where the
/// monotonic clock may be anything from it (150 ms ahead on a 6.18 VM, which made a thread
/// seeded then look asleep 150 ms less than it was, and its first read credit nothing).
#[inline(always)]
fn now() -> u64 {
    // SAFETY: a helper without arguments.
    let mono = unsafe { bpf_ktime_get_ns() };
    if config::rq_clock() == 0 {
        return mono;
    }
    let Some(cpu) = cpu_switches() else {
        return mono;
    };
    // SAFETY: this CPU's slot; a racing switch program at worst leaves an older pair.
    let (at, offset) = unsafe { ((*cpu).clock_switch, (*cpu).clock_offset) };
    if at == 0 {
        return rq_clock_here().unwrap_or(mono);
    }
    mono.wrapping_add(offset)
}

/// This CPU's run-queue clock, through the task running here (the reader's thread:
/// `current->se.cfs_rq->rq->clock`, as the switch program reads it).
#[inline(always)]
fn rq_clock_here() -> Option<u64> {
    // SAFETY: a helper without arguments.
    let cur = unsafe { bpf_get_current_task() };
    let cfs_rq: u64 = probe(cur, config::task_cfs_rq_off()).ok()?;
    let rq: u64 = probe(cfs_rq, config::cfs_rq_rq_off()).ok()?;
    probe(rq, config::rq_clock_off()).ok()
}

/// What the scheduler shows of `task` now: [`state`] bits.
#[inline(always)]
fn task_state(task: u64) -> u32 {
    let on_cpu: i32 = field(task, config::task_on_cpu_off());
    if on_cpu != 0 {
        return state::ON_CPU;
    }
    let on_rq: i32 = field(task, config::task_on_rq_off());
    if on_rq != 0 { state::QUEUED } else { 0 }
}

/// `sched_info`'s run-queue time, last arrival and last queueing (zeros where waits are
/// timed with wakeups).
#[inline(always)]
fn sched_info(task: u64) -> (u64, u64, u64) {
    if config::sched_info() == 0 {
        return (0, 0, 0);
    }
    (
        field(task, config::task_run_delay_off()),
        field(task, config::task_last_arrival_off()),
        field(task, config::task_last_queued_off()),
    )
}

/// Gives a traced thread that has no entry yet one whose open period starts now. The
/// filter (whose `--comm` check is a call of its own) is asked here, and the entry is
/// built in a call of its own: the verifier adds up the stacks of nested calls (at most
/// 512 bytes), and the entry alone takes most of that.
#[inline(always)]
fn seed(ctx: &BtfTracePointContext, task: u64) {
    let tid: u32 = field(task, config::task_pid_off());
    let tgid: u32 = field(task, config::task_tgid_off());
    let exit_state: i32 = field(task, config::task_exit_state_off());
    if tid == 0 || exit_state != 0 || !filter::task_traced(task, tgid) {
        return;
    }
    seed_traced(ctx, task, tid, tgid);
}

#[inline(never)]
fn seed_traced(ctx: &BtfTracePointContext, task: u64, tid: u32, tgid: u32) {
    let now = now();
    let st = task_state(task);
    let (run_delay, _, last_queued) = sched_info(task);
    let seeded = |e: &mut ThreadSwitches| {
        e.tgid = tgid;
        e.start_ns = threads::leader_start(task);
        e.comm = comm(task);
        e.out_ts = now;
        e.nvcsw_seen = field(task, config::task_nvcsw_off());
        e.run_delay_seen = run_delay;
        e.flags = flags::NVCSW_KNOWN;
        if st == state::ON_CPU {
            // The run in progress counts from now; its wait was before tracing began.
            e.flags |= flags::RUN_FROM_OUT;
            return;
        }
        e.flags |= flags::WAIT_KNOWN;
        if st == state::QUEUED {
            // Waiting since before now: only the wait from now on is counted.
            if last_queued != 0 && last_queued < now {
                e.run_delay_seen += now - last_queued;
            }
            e.wake_ts = now;
        } else {
            e.flags |= flags::OUT_VOLUNTARY;
            // Asleep: its block, from now on, is charged to the syscall it sleeps in (a
            // kernel thread's, to none).
            if config::waits_blocked_in() != 0
                && field::<u32>(task, config::task_flags_off()) & PF_KTHREAD == 0
            {
                e.blocked_in = crate::waits::blocked_in(task).wrapping_add(1);
            }
        }
    };
    if find(tid).is_some() {
        return;
    }
    if threads::insert_new(tid, seeded).is_none() {
        threads::untracked(ctx, tid);
    }
}

/// Writes `task`'s `LiveThread` record when it has an entry of its own process (an entry
/// made by a wakeup has no tgid yet; one of another process is stale).
#[inline(always)]
fn live(meta: u64, task: u64) {
    let tid: u32 = field(task, config::task_pid_off());
    if tid == 0 {
        return;
    }
    let Some(e) = find(tid) else {
        return;
    };
    let tgid: u32 = field(task, config::task_tgid_off());
    let mut rec = LiveThread {
        tid,
        ..LiveThread::default()
    };
    // The entry again if its thread switched out meanwhile (its count moved): once is
    // enough, a thread cannot switch twice in the few loads in between.
    for _ in 0..2 {
        let switches = e.voluntary + e.involuntary;
        rec.stats = *e;
        rec.state = task_state(task);
        rec.now = now();
        (rec.run_delay, rec.last_arrival, rec.last_queued) = sched_info(task);
        if e.voluntary + e.involuntary == switches {
            break;
        }
    }
    if rec.stats.tgid != tgid {
        return;
    }
    rec.process_start = process_start_field(task);
    let seq: u64 = field(meta, 0);
    // SAFETY: `seq` is the iterator's seq_file (`bpf_iter_meta.seq`); the record lives on
    // this stack for the call. A full buffer is retried by the kernel at the next read.
    unsafe {
        bpf_seq_write(
            seq as *mut _,
            (&raw const rec).cast(),
            size_of::<LiveThread>() as u32,
        );
    }
}
