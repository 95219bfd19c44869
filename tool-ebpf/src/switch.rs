//! Context switches: voluntary/involuntary per thread, same-process vs cross-process vs
//! idle/kernel classification, on-CPU, blocked and run-queue time, run-queue histograms.
//!
//! Raw tracepoints `sched_switch`, `sched_wakeup` and `sched_wakeup_new`: they get the
//! tracepoint's own arguments (task pointers), cost no trace-record formatting and need no
//! tracefs. The argument layout and task_struct offsets come from the running kernel's BTF
//! (see `config`).

use aya_ebpf::{
    helpers::{
        bpf_get_current_comm, bpf_get_current_pid_tgid, bpf_ktime_get_ns, bpf_probe_read_kernel,
    },
    macros::raw_tracepoint,
    programs::RawTracePointContext,
};
use proclens_common::{
    counters,
    event::{EventHeader, ThreadExit, kind as event_kind},
    switch::{CpuSwitches, RUNQ_BUCKETS, TASK_DEAD, ThreadSwitches, is_involuntary, kind},
};

use crate::{
    config, filter,
    maps::{CPU_SWITCHES, EVENTS, THREADS, count, submit_flags},
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

#[raw_tracepoint(tracepoint = "sched_switch")]
pub fn sched_switch(ctx: RawTracePointContext) -> u32 {
    let _ = try_sched_switch(&ctx);
    0
}

#[raw_tracepoint(tracepoint = "sched_wakeup")]
pub fn sched_wakeup(ctx: RawTracePointContext) -> u32 {
    let _ = try_wakeup(&ctx);
    0
}

#[raw_tracepoint(tracepoint = "sched_wakeup_new")]
pub fn sched_wakeup_new(ctx: RawTracePointContext) -> u32 {
    let _ = try_wakeup(&ctx);
    0
}

#[inline(always)]
unsafe fn read_at<T>(base: u64, offset: u32) -> Result<T, i32> {
    // SAFETY: bpf_probe_read_kernel tolerates any address; a fault returns an error.
    unsafe { bpf_probe_read_kernel((base + u64::from(offset)) as *const T) }
}

fn try_sched_switch(ctx: &RawTracePointContext) -> Result<(), i32> {
    let now = unsafe { bpf_ktime_get_ns() };
    let Some(cpu) = CPU_SWITCHES.get_ptr_mut(0) else {
        return Err(-1);
    };
    // SAFETY: the per-CPU slot belongs to this CPU while the program runs.
    let cpu: &mut CpuSwitches = unsafe { &mut *cpu };

    // TP_PROTO(bool preempt, struct task_struct *prev, struct task_struct *next
    //          [, unsigned int prev_state (5.18+)]); `current` is still `prev`.
    let preempt: u64 = ctx.arg(0);
    let prev: u64 = ctx.arg(1);
    let pid_tgid = bpf_get_current_pid_tgid();
    let tid = pid_tgid as u32;
    let tgid = (pid_tgid >> 32) as u32;
    let prev_state: u32 = if config::switch_prev_state_arg() != 0 {
        let raw: u64 = ctx.arg(3);
        raw as u32
    } else {
        unsafe { read_at(prev, config::task_state_off())? }
    };
    let traced = tid != 0 && filter::traced_tgid(tgid) && filter::current_in_cgroup();
    // A full map (counted) leaves the thread untracked but the CPU's bookkeeping intact.
    let mut entry = if traced {
        thread_entry(tid, tgid, prev).ok()
    } else {
        None
    };
    let prev_kind = match &mut entry {
        Some(e) if e.kind == kind::USER => kind::USER,
        e => {
            let k = task_kind(tid, prev)?;
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
    account_switch_out(entry, class, in_ts, now, preempt & 1 != 0, prev_state);
    if prev_state & TASK_DEAD != 0 && is_exiting(prev) {
        // The thread's last switch: hand its final counts to userspace and forget it, so
        // a reused thread id starts from zero.
        emit_thread_exit(tid, now, entry);
        let _ = THREADS.remove(&tid);
    }
    Ok(())
}

/// A user task has its own address space (`mm`); the idle task and kernel threads do not.
#[inline(always)]
fn task_kind(tid: u32, task: u64) -> Result<u32, i32> {
    if tid == 0 {
        return Ok(kind::IDLE_OR_KERNEL);
    }
    let mm: u64 = unsafe { read_at(task, config::task_mm_off())? };
    Ok(if mm == 0 {
        kind::IDLE_OR_KERNEL
    } else {
        kind::USER
    })
}

/// Whether the task has an exit state (zombie or dead): its last switch.
#[inline(always)]
fn is_exiting(task: u64) -> bool {
    let exit_state: i32 = unsafe { read_at(task, config::task_exit_state_off()) }.unwrap_or(0);
    exit_state != 0
}

/// Looks up (or creates) the entry of the current thread.
#[inline(always)]
fn thread_entry(tid: u32, tgid: u32, task: u64) -> Result<&'static mut ThreadSwitches, i32> {
    if let Some(e) = THREADS.get_ptr_mut(&tid) {
        // SAFETY: map values live as long as the map; this thread's entry has one writer.
        let e = unsafe { &mut *e };
        if e.tgid == tgid {
            return Ok(e);
        }
        if e.tgid != 0 {
            // A stale entry of another process (its exit was missed): start afresh.
            *e = fresh(tgid, task);
            return Ok(e);
        }
        // Created by a wakeup, which knows no tgid: fill the identity in.
        e.tgid = tgid;
        e.start_ns = leader_start(task);
        e.comm = bpf_get_current_comm().unwrap_or([0; 16]);
        return Ok(e);
    }
    let new = fresh(tgid, task);
    if let Err(err) = THREADS.insert(&tid, &new, BPF_NOEXIST) {
        if err != -17 {
            // Not EEXIST: the map is full.
            count(counters::THREAD_MAP_FULL);
            return Err(err);
        }
    }
    match THREADS.get_ptr_mut(&tid) {
        // SAFETY: as above.
        Some(e) => Ok(unsafe { &mut *e }),
        None => Err(-1),
    }
}

#[inline(always)]
fn fresh(tgid: u32, task: u64) -> ThreadSwitches {
    ThreadSwitches {
        tgid,
        start_ns: leader_start(task),
        // Only ever called for `current`.
        comm: bpf_get_current_comm().unwrap_or([0; 16]),
        ..ThreadSwitches::default()
    }
}

#[inline(always)]
fn leader_start(task: u64) -> u64 {
    unsafe {
        let leader: u64 = read_at(task, config::task_group_leader_off()).unwrap_or(0);
        if leader == 0 {
            return 0;
        }
        read_at(leader, config::task_start_time_off()).unwrap_or(0)
    }
}

#[inline(always)]
fn account_switch_out(
    e: &mut ThreadSwitches,
    class: Class,
    in_ts: u64,
    now: u64,
    preempt: bool,
    prev_state: u32,
) {
    if in_ts != 0 && in_ts <= now {
        // The run that ends now started at in_ts.
        e.oncpu_ns += now - in_ts;
        match class {
            Class::Same => e.same_in += 1,
            Class::Cross => e.cross_in += 1,
            Class::IdleOrKernel => e.idle_kernel_in += 1,
            Class::Unknown => {}
        }
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
    } else {
        e.voluntary += 1;
        e.wake_ts = 0;
    }
    e.out_ts = now;
}

#[inline(always)]
fn record_runq(e: &mut ThreadSwitches, ns: u64) {
    e.runq_ns += ns;
    if ns > e.runq_max_ns {
        e.runq_max_ns = ns;
    }
    let us = ns / 1000;
    let bucket = if us == 0 {
        0
    } else {
        (63 - us.leading_zeros()) as usize
    };
    let bucket = if bucket >= RUNQ_BUCKETS {
        RUNQ_BUCKETS - 1
    } else {
        bucket
    };
    e.runq_hist[bucket] += 1;
}

#[inline(always)]
fn emit_thread_exit(tid: u32, now: u64, e: &ThreadSwitches) {
    match EVENTS.reserve::<ThreadExit>(0) {
        Some(mut slot) => {
            slot.write(ThreadExit {
                header: EventHeader {
                    kind: event_kind::THREAD_EXIT,
                    tid,
                    ts: now,
                },
                stats: *e,
                // `current` is the exiting thread.
                comm: bpf_get_current_comm().unwrap_or([0; 16]),
            });
            slot.submit(submit_flags());
        }
        None => count(counters::RINGBUF_DROPS),
    }
}

fn try_wakeup(ctx: &RawTracePointContext) -> Result<(), i32> {
    // TP_PROTO(struct task_struct *p)
    let task: u64 = ctx.arg(0);
    let tid: u32 = unsafe { read_at(task, config::task_pid_off())? };
    if tid == 0 {
        return Ok(());
    }
    let now = unsafe { bpf_ktime_get_ns() };
    if let Some(e) = THREADS.get_ptr_mut(&tid) {
        // SAFETY: map values live as long as the map; a racing switch-out of the same
        // thread can at worst cost one latency sample.
        let e = unsafe { &mut *e };
        // The first wakeup after a switch out counts: later ones (the task is already
        // runnable, or woken again while running) must not move the start of its wait.
        if e.wake_ts == 0 || e.wake_ts < e.out_ts {
            e.wake_ts = now;
        }
        return Ok(());
    }
    // First sight of this thread: remember when it became runnable. Its tgid is filled in
    // at its first switch out. With a cgroup filter, entries are only made by switches of
    // tasks inside it (the woken task is not `current`, so its cgroup is unknown here).
    if config::cgroup_id() != 0 {
        return Ok(());
    }
    let new = ThreadSwitches {
        wake_ts: now,
        ..ThreadSwitches::default()
    };
    if let Err(err) = THREADS.insert(&tid, &new, BPF_NOEXIST) {
        if err != -17 {
            count(counters::THREAD_MAP_FULL);
        }
    }
    Ok(())
}
