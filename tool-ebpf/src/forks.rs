//! What a fork costs its caller: the time inside fork, vfork, clone and clone3.
//!
//! Two ways in, one accounting:
//!
//! - With copy accounting on, the syscall programs (`tp_btf/sys_enter`, `sys_exit`) are
//!   attached anyway: their dispatch table sends these four calls here
//!   ([`enter_call`], [`exit_call`]), with the arguments from the saved registers. Nothing
//!   more is attached, so nothing more is torn down at exit.
//! - Otherwise, classic tracepoints that fire for these syscalls only, so no other
//!   syscall pays: `fork_enter_<call>` (`syscalls/sys_enter_<call>`) and `fork_exit` (on
//!   each `syscalls/sys_exit_<call>`), record offsets from the tracefs format files. Each
//!   of their links costs ~30 ms to tear down, one after another, under the kernel's
//!   event mutex.
//!
//! At entry: the entry time and the kind of child (from the clone flags), parked per
//! thread. At return, in the caller: the time added to its process's totals; the child's
//! own return (0, a new thread id with nothing parked) is ignored. A successful call that
//! gave the child a copy of the address space (fork, clone without `CLONE_VM`, a
//! `CLONE_VFORK` clone among them) marks the caller in `FORKERS`, so its later
//! copy-on-write faults count as after fork.

use aya_ebpf::{
    EbpfContext,
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
    task::{field, process_start},
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
    enter(&ctx, fork_kind::FORK as u32 | fork_kind::COPIES_MM);
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
        enter(&ctx, fork_kind::inflight_of_clone_flags(flags));
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
    if let Ok(flags) = clone3_flags(uargs) {
        enter(&ctx, fork_kind::inflight_of_clone_flags(flags));
    }
    0
}

/// The flags of a `struct clone_args` in user memory.
#[inline(always)]
fn clone3_flags(uargs: u64) -> Result<u64, i32> {
    let at = uargs + u64::from(config::clone_args_flags_off());
    // SAFETY: bpf_probe_read_user tolerates any address; a fault returns an error.
    unsafe { bpf_probe_read_user(at as *const u64) }
}

/// Entry of fork-family call `call` (its index in `op::FORK_CALLS`' order: fork, vfork,
/// clone, clone3), from the syscall program: `regs` are the saved user registers.
#[inline(always)]
pub(crate) fn enter_call<C: EbpfContext>(ctx: &C, call: u8, regs: u64) {
    let arg0 = || field::<u64>(regs, config::arg_off(false, 0));
    let kind = match call {
        0 => fork_kind::FORK as u32 | fork_kind::COPIES_MM,
        1 => fork_kind::VFORK as u32,
        2 => fork_kind::inflight_of_clone_flags(arg0()),
        _ => match clone3_flags(arg0()) {
            Ok(flags) => fork_kind::inflight_of_clone_flags(flags),
            Err(_) => return,
        },
    };
    enter(ctx, kind);
}

#[inline(always)]
fn enter<C: EbpfContext>(ctx: &C, kind: u32) {
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
    if FORK_INFLIGHT
        .insert(&(pid_tgid as u32), &e, BPF_ANY)
        .is_err()
    {
        count(ctx, counters::FORK_MAP_FULL);
    }
}

#[tracepoint]
pub fn fork_exit(ctx: TracePointContext) -> u32 {
    // SAFETY: the offset comes from this tracepoint's format; read_at checks the access.
    match unsafe { ctx.read_at::<i64>(config::fork_exit_ret_off() as usize) } {
        Ok(ret) => exit_call(&ctx, ret),
        Err(_) => read_failed(&ctx, "fork_exit"),
    }
    0
}

/// Return of a fork-family call with `ret` (from either way in).
#[inline(always)]
pub(crate) fn exit_call<C: EbpfContext>(ctx: &C, ret: i64) {
    let pid_tgid = bpf_get_current_pid_tgid();
    let tid = pid_tgid as u32;
    let Some(p) = FORK_INFLIGHT.get_ptr(&tid) else {
        // The child's own return, or a call entered before proclens attached.
        return;
    };
    // SAFETY: copied out at once; only this thread writes its own entry.
    let e = unsafe { *p };
    let _ = FORK_INFLIGHT.remove(&tid);
    if e.tgid != (pid_tgid >> 32) as u32 {
        // A stale entry of a thread killed inside a call whose id was reused.
        return;
    }
    // SAFETY: a helper without arguments.
    let ns = unsafe { bpf_ktime_get_ns() }.saturating_sub(e.start_ns);
    // SAFETY: a helper without arguments.
    let task = unsafe { bpf_get_current_task() };
    let key = ProcKey {
        tgid: e.tgid,
        _pad: 0,
        start_ns: process_start(task),
    };
    let kind = (e.kind & 0xff) as usize;
    if kind >= fork_kind::COUNT {
        return;
    }
    // Every child with a copy of the address space (a vfork without CLONE_VM too): the
    // caller's pages are write-protected from now on.
    if ret >= 0 && e.kind & fork_kind::COPIES_MM != 0 {
        // SAFETY: a helper without arguments. NOEXIST: the first fork's time stays.
        let now = unsafe { bpf_ktime_get_boot_ns() };
        if FORKERS.insert(&key, &now, BPF_NOEXIST).is_err() && FORKERS.get_ptr(&key).is_none() {
            count(ctx, counters::FORK_MAP_FULL);
        }
    }
    if let Some(t) = FORK_TIMES.get_ptr_mut(&key) {
        // SAFETY: this CPU's slot; the program runs with preemption disabled.
        let t = unsafe { &mut *t };
        if ret < 0 {
            t.failed += 1;
        } else {
            t.calls[kind] += 1;
            t.ns[kind] += ns;
        }
    } else {
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
