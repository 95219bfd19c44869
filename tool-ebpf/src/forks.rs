//! What a fork costs its caller: the time inside fork, vfork, clone and clone3.
//!
//! - `fork_enter_<call>` (classic `syscalls/sys_enter_<call>`, fired by these syscalls
//!   only): parks the entry time and the kind of child (from the clone flags) per thread.
//! - `fork_exit` (attached to each `syscalls/sys_exit_<call>`): in the caller, adds the
//!   time to its process's totals; the child's own return (0, a new thread id with
//!   nothing parked) is ignored. A successful fork of a process (not vfork or `CLONE_VM`)
//!   marks the caller in `FORKERS`, so its later copy-on-write faults count as after fork.
//!
//! Self-contained on purpose: these four syscalls' tracepoints fire for nothing else.
//! Record offsets come from the tracefs format files, at load time.

use aya_ebpf::{
    helpers::{
        bpf_get_current_pid_tgid, bpf_get_current_task, bpf_ktime_get_boot_ns, bpf_ktime_get_ns,
        bpf_probe_read_user,
    },
    macros::{map, tracepoint},
    maps::{LruHashMap, PerCpuHashMap},
    programs::TracePointContext,
};
use proclens_common::{
    copies::ProcKey,
    counters,
    forks::{ForkInflight, ForkTimes, fork_kind},
};

use crate::{
    config,
    faults::FORKERS,
    filter,
    maps::{count, read_failed},
    task::process_start,
};

const BPF_ANY: u64 = 0;
const BPF_NOEXIST: u64 = 1;

/// Calls between entry and return, by thread id. An LRU hash: the entry of a thread
/// killed inside the call is evicted in time instead of filling the map.
#[map]
static FORK_INFLIGHT: LruHashMap<u32, ForkInflight> = LruHashMap::with_max_entries(16384, 0);

/// Time in fork-family calls per process; per CPU, summed by userspace, which deletes the
/// entries of processes that have gone.
#[map]
static FORK_TIMES: PerCpuHashMap<ProcKey, ForkTimes> = PerCpuHashMap::with_max_entries(8192, 0);

#[tracepoint]
pub fn fork_enter_fork(ctx: TracePointContext) -> u32 {
    enter(&ctx, fork_kind::FORK as u32);
    0
}

#[tracepoint]
pub fn fork_enter_vfork(ctx: TracePointContext) -> u32 {
    enter(&ctx, fork_kind::VFORK as u32);
    0
}

#[tracepoint]
pub fn fork_enter_clone(ctx: TracePointContext) -> u32 {
    // SAFETY: the offset comes from this tracepoint's format; read_at checks the access.
    if let Ok(flags) = unsafe { ctx.read_at::<u64>(config::clone_flags_off() as usize) } {
        enter(&ctx, fork_kind::of_clone_flags(flags) as u32);
    }
    0
}

#[tracepoint]
pub fn fork_enter_clone3(ctx: TracePointContext) -> u32 {
    // clone3(struct clone_args *uargs, size_t size): the flags are in user memory.
    // SAFETY: the offset comes from this tracepoint's format; read_at checks the access.
    let Ok(uargs) = (unsafe { ctx.read_at::<u64>(config::clone3_uargs_off() as usize) }) else {
        return 0;
    };
    let at = uargs + u64::from(config::clone_args_flags_off());
    // SAFETY: bpf_probe_read_user tolerates any address; a fault returns an error.
    if let Ok(flags) = unsafe { bpf_probe_read_user(at as *const u64) } {
        enter(&ctx, fork_kind::of_clone_flags(flags) as u32);
    }
    0
}

#[inline(always)]
fn enter(ctx: &TracePointContext, kind: u32) {
    let pid_tgid = bpf_get_current_pid_tgid();
    let tgid = (pid_tgid >> 32) as u32;
    if !filter::traced_tgid(tgid) || !filter::current_in_cgroup() {
        return;
    }
    let e = ForkInflight {
        // SAFETY: a helper without arguments.
        start_ns: unsafe { bpf_ktime_get_ns() },
        tgid,
        kind,
    };
    if FORK_INFLIGHT.insert(&(pid_tgid as u32), &e, BPF_ANY).is_err() {
        count(ctx, counters::FORK_MAP_FULL);
    }
}

#[tracepoint]
pub fn fork_exit(ctx: TracePointContext) -> u32 {
    if try_exit(&ctx).is_err() {
        read_failed(&ctx, "fork_exit");
    }
    0
}

#[inline(always)]
fn try_exit(ctx: &TracePointContext) -> Result<(), i32> {
    let pid_tgid = bpf_get_current_pid_tgid();
    let tid = pid_tgid as u32;
    let Some(p) = FORK_INFLIGHT.get_ptr(&tid) else {
        // The child's own return, or a call entered before proclens attached.
        return Ok(());
    };
    // SAFETY: copied out at once; only this thread writes its own entry.
    let e = unsafe { *p };
    let _ = FORK_INFLIGHT.remove(&tid);
    if e.tgid != (pid_tgid >> 32) as u32 {
        // A stale entry of a thread killed inside a call whose id was reused.
        return Ok(());
    }
    // SAFETY: a helper without arguments.
    let ns = unsafe { bpf_ktime_get_ns() }.saturating_sub(e.start_ns);
    // SAFETY: the offset comes from this tracepoint's format; read_at checks the access.
    let ret: i64 = unsafe { ctx.read_at(config::fork_exit_ret_off() as usize)? };
    // SAFETY: a helper without arguments.
    let task = unsafe { bpf_get_current_task() };
    let key = ProcKey {
        tgid: e.tgid,
        _pad: 0,
        start_ns: process_start(task),
    };
    let kind = e.kind as usize;
    if kind >= fork_kind::COUNT {
        return Ok(());
    }
    if ret >= 0 && kind == fork_kind::FORK {
        // SAFETY: a helper without arguments. NOEXIST: the first fork's time stays.
        let now = unsafe { bpf_ktime_get_boot_ns() };
        if FORKERS.insert(&key, &now, BPF_NOEXIST).is_err() && FORKERS.get_ptr(&key).is_none() {
            count(ctx, counters::FORK_MAP_FULL);
        }
    }
    match FORK_TIMES.get_ptr_mut(&key) {
        Some(t) => {
            // SAFETY: this CPU's slot; the program runs with preemption disabled.
            let t = unsafe { &mut *t };
            if ret < 0 {
                t.failed += 1;
            } else {
                t.calls[kind] += 1;
                t.ns[kind] += ns;
            }
        }
        None => {
            let mut t = ForkTimes::default();
            if ret < 0 {
                t.failed = 1;
            } else {
                t.calls[kind] = 1;
                t.ns[kind] = ns;
            }
            // BPF_ANY on a per-CPU hash sets only this CPU's slot.
            if FORK_TIMES.insert(&key, &t, BPF_ANY).is_err() {
                count(ctx, counters::FORK_MAP_FULL);
            }
        }
    }
    Ok(())
}
