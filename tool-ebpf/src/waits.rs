//! Where blocked time goes (see `proclens_common::waits`): the syscall a thread blocks in,
//! read once at its voluntary switch out; the blocked time charged to it when the block
//! ends; and the readiness calls' counters, kept by classic tracepoints of the poll family
//! alone.

use aya_ebpf::{
    helpers::{
        bpf_get_current_pid_tgid, bpf_get_current_task, generated::bpf_task_pt_regs,
    },
    macros::tracepoint,
    programs::TracePointContext,
};
use proclens_common::{
    copies::COMPAT_NR,
    counters,
    switch::ThreadSwitches,
    waits::{
        BlockStats, EPOLL_CTL_ADD, EPOLL_CTL_DEL, EpollKey, OUTSIDE_SYSCALL, ReadyEntry,
        ReadyStats, UNKNOWN_SYSCALL, call,
    },
};

use crate::{
    config, filter,
    syscalls::sys_key,
    maps::{EPOLL_SETS, READY, READY_ENTRY, WAITS, bump, count},
    task::{field, process_start, process_start_field},
};

const BPF_ANY: u64 = 0;
/// `-ENOSYS`: what the syscall entry leaves in the return register until the call returns.
const ENOSYS: u64 = (-38i64) as u64;
/// Syscall numbers are below this; `orig_ax` holds -1 (or an exception's error code, a
/// small number, with a user register in `ax`) outside a syscall.
const NR_LIMIT: u64 = 4096;

/// The syscall (`SysKey::nr`) `task`, a BTF-typed user task switching out voluntarily, is
/// blocking in: its saved user registers hold the number in `orig_ax` and `-ENOSYS` in `ax`
/// from the syscall's entry until it returns. [`OUTSIDE_SYSCALL`] for a block elsewhere (a
/// page fault from user mode, a stop on the way back to user mode); [`UNKNOWN_SYSCALL`]
/// where the kernel has no `bpf_task_pt_regs`.
#[inline(always)]
pub(crate) fn blocked_in(task: u64) -> u32 {
    if config::waits_task_regs_helper() == 0 {
        return UNKNOWN_SYSCALL;
    }
    // SAFETY: a BTF-typed task pointer (the tracepoint's).
    let regs = unsafe { bpf_task_pt_regs(task as *mut _) } as u64;
    let ret: u64 = field(regs, config::waits_regs_ret_off());
    let nr: u64 = field(regs, config::waits_regs_nr_off());
    if ret != ENOSYS || nr >= NR_LIMIT {
        return OUTSIDE_SYSCALL;
    }
    let off = config::waits_compat_status_off();
    if off != u32::MAX && field::<u32>(task, off) & config::waits_compat_flag() != 0 {
        return nr as u32 | COMPAT_NR;
    }
    nr as u32
}

/// Moves the blocks thread entry `e` (of `task`) has accumulated to its process's entry
/// in `WAITS` on this CPU, if it has any. Only this CPU writes its key: no atomics. A full
/// map is counted (`WAIT_MAP_FULL`; the time stays in the thread's blocked time).
#[inline(always)]
pub(crate) fn flush(e: &mut ThreadSwitches, task: u64) {
    if e.acc_switches == 0 {
        return;
    }
    // The process as the per-process maps key it: its leader's `start_boottime`.
    charge(
        e.tgid,
        process_start_field(task),
        e.acc_nr.wrapping_sub(1),
        e.acc_ns,
        e.acc_switches,
    );
    e.acc_ns = 0;
    e.acc_switches = 0;
}

#[inline(never)]
fn charge(tgid: u32, start_ns: u64, nr: u32, ns: u64, switches: u32) {
    let key = sys_key(tgid, nr, start_ns);
    if let Some(s) = WAITS.get_ptr_mut(&key) {
        // SAFETY: this CPU's entry; the switch program does not nest on a CPU.
        unsafe {
            (*s).blocked_ns += ns;
            (*s).switches += u64::from(switches);
        }
        return;
    }
    let s = BlockStats {
        blocked_ns: ns,
        switches: u64::from(switches),
    };
    if WAITS.insert(&key, &s, BPF_ANY).is_err() {
        bump(counters::WAIT_MAP_FULL);
    }
}

#[tracepoint]
pub fn ready_enter(ctx: TracePointContext) -> u32 {
    let _ = try_ready_enter(&ctx);
    0
}

#[tracepoint]
pub fn ready_exit(ctx: TracePointContext) -> u32 {
    let _ = try_ready_exit(&ctx);
    0
}

/// The [`call`] id of syscall number `nr` (the tracepoint's), if it is one of them.
#[inline(always)]
fn call_of(nr: u32) -> Option<usize> {
    (0..call::COUNT).find(|&i| config::waits_nr(i) == nr)
}

/// Argument `i` of the syscall record.
#[inline(always)]
fn arg(ctx: &TracePointContext, i: u32) -> Result<u64, i32> {
    // SAFETY: offsets from the tracepoints' formats; read_at checks the access.
    unsafe { ctx.read_at::<u64>((config::waits_rec_args() + 8 * i) as usize) }
}

fn try_ready_enter(ctx: &TracePointContext) -> Result<(), i32> {
    let pid_tgid = bpf_get_current_pid_tgid();
    if !filter::traced(pid_tgid) {
        return Ok(());
    }
    let tgid = (pid_tgid >> 32) as u32;
    // SAFETY: the offset comes from the tracepoint's format; read_at checks the access.
    let nr: i32 = unsafe { ctx.read_at(config::waits_rec_nr() as usize)? };
    let Some(id) = call_of(nr as u32) else {
        return Ok(());
    };
    let (fds_in, interest) = match id {
        call::SELECT | call::PSELECT6 => (arg(ctx, 0)?, 0),
        call::POLL | call::PPOLL => (arg(ctx, 1)?, 0),
        call::EPOLL_CTL => (arg(ctx, 1)?, arg(ctx, 0)?),
        _ if call::is_epoll(id) => {
            let key = EpollKey {
                tgid,
                epfd: arg(ctx, 0)? as u32,
            };
            // SAFETY: the value is copied out at once.
            let set = unsafe { EPOLL_SETS.get(&key) }.copied().unwrap_or(0);
            (arg(ctx, 2)?, set)
        }
        _ => return Ok(()),
    };
    let e = ReadyEntry {
        tgid,
        call: id as u32,
        fds_in,
        interest,
    };
    if READY_ENTRY.insert(&(pid_tgid as u32), &e, BPF_ANY).is_err() {
        count(ctx, counters::READY_MAP_FULL);
    }
    Ok(())
}

fn try_ready_exit(ctx: &TracePointContext) -> Result<(), i32> {
    let pid_tgid = bpf_get_current_pid_tgid();
    let tid = pid_tgid as u32;
    let tgid = (pid_tgid >> 32) as u32;
    // SAFETY: offsets from the tracepoint's format; read_at checks the access.
    let nr: i32 = unsafe { ctx.read_at(config::waits_rec_nr() as usize)? };
    // SAFETY: as above.
    let ret: i64 = unsafe { ctx.read_at(config::waits_rec_ret() as usize)? };
    let Some(id) = call_of(nr as u32) else {
        return Ok(());
    };
    if id == call::EPOLL_CREATE || id == call::EPOLL_CREATE1 {
        // A new instance: an fd number reused from a closed one starts empty.
        if ret >= 0 && filter::traced(pid_tgid) {
            let _ = EPOLL_SETS.remove(&EpollKey {
                tgid,
                epfd: ret as u32,
            });
        }
        return Ok(());
    }
    // SAFETY: the value is copied out at once.
    let Some(e) = (unsafe { READY_ENTRY.get(&tid) }).copied() else {
        // Entered before tracing began, or not traced.
        return Ok(());
    };
    let _ = READY_ENTRY.remove(&tid);
    if e.tgid != tgid || e.call as usize != id {
        return Ok(());
    }
    if id == call::EPOLL_CTL {
        if ret == 0 {
            epoll_ctl(ctx, tgid, e.interest as u32, e.fds_in);
        }
        return Ok(());
    }
    // SAFETY: a helper without arguments.
    let task = unsafe { bpf_get_current_task() };
    let key = sys_key(tgid, nr as u32, process_start(task));
    // A failed call (EINTR, or arguments the kernel refused: a maxevents of -1, an nfds
    // beyond the limit) was handed nothing it looked at: only its error counts.
    let (ready, empty, errors, fds_in, interest) = match ret {
        r if r > 0 => (r as u64, 0, 0, e.fds_in, e.interest),
        0 => (0, 1, 0, e.fds_in, e.interest),
        _ => (0, 0, 1, 0, 0),
    };
    if let Some(s) = READY.get_ptr_mut(&key) {
        // SAFETY: this CPU's entry; the program does not nest on a CPU.
        unsafe {
            (*s).calls += 1;
            (*s).fds_in += fds_in;
            (*s).interest += interest;
            (*s).ready += ready;
            (*s).empty += empty;
            (*s).errors += errors;
        }
        return Ok(());
    }
    let s = ReadyStats {
        calls: 1,
        fds_in,
        interest,
        ready,
        empty,
        errors,
    };
    if READY.insert(&key, &s, BPF_ANY).is_err() {
        count(ctx, counters::READY_MAP_FULL);
    }
    Ok(())
}

/// A successful `epoll_ctl` `op` on instance `epfd`: ADD grows its interest set, DEL
/// shrinks it (MOD leaves it).
#[inline(always)]
fn epoll_ctl(ctx: &TracePointContext, tgid: u32, epfd: u32, op: u64) {
    let key = EpollKey { tgid, epfd };
    if let Some(n) = EPOLL_SETS.get_ptr_mut(&key) {
        // SAFETY: a map value; a process's calls on one instance racing from two threads
        // can at worst lose one update.
        unsafe {
            if op == EPOLL_CTL_ADD {
                *n += 1;
            } else if op == EPOLL_CTL_DEL && *n > 0 {
                *n -= 1;
            }
        }
        return;
    }
    if op == EPOLL_CTL_ADD && EPOLL_SETS.insert(&key, &1, BPF_ANY).is_err() {
        count(ctx, counters::READY_MAP_FULL);
    }
}
