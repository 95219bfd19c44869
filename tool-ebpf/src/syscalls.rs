//! Every syscall, through programs on the raw syscall tracepoints, attached as BTF
//! tracepoints (`tp_btf/sys_exit`, and `tp_btf/sys_enter` for fork timing only): they get
//! the task's saved user registers and the return value (or the syscall number) as typed
//! arguments, so nothing is formatted into a trace record, no tracefs is needed, and
//! starting or stopping costs a link or two however many syscalls are followed (the
//! classic per-syscall tracepoints were ~40 links, each torn down under the kernel's
//! global event mutex).
//!
//! - `sys_exit`: the filter first (see `filter`); then, when asked for, the syscall
//!   counted per (process, number) in a per-CPU hash, and the copy-family calls handed
//!   to `copies::exit` by a dispatch on the number (one table per ABI). One program per
//!   syscall: a process the filter leaves out pays for one program that stops at a
//!   compare, not two.
//! - Calls are counted as they return, as `syscount` counts them: a call still blocked is
//!   counted when it returns. Two kinds of call never return, and one returns without its
//!   number: `exit` and `exit_group` are counted at the thread's exit (see
//!   [`count_exit_call`], called by `lifecycle`), and `rt_sigreturn`, which restores the
//!   interrupted registers and leaves `-1` where the number was, is counted under its
//!   own number. A task made by fork, vfork, clone or clone3 returns from its
//!   parent's call too (with 0): that return is not counted.
//! - `sys_enter` (attached only where `forks` times the fork-family calls here): fork,
//!   vfork, clone and clone3 (64-bit ABI; classic syscall tracepoints never see 32-bit
//!   ones either) to `forks`, whose `sys_exit` half is in the same dispatch: see
//!   `op::FORK_CALLS`. The tables then name only the calls of the parts that run.
//!
//! A 32-bit (compat) syscall of a 64-bit kernel has its own numbers and argument
//! registers: the task says which ABI is running (x86: `TS_COMPAT` in its
//! `thread_info.status`, set for the length of a 32-bit syscall, until its return to
//! user mode), and both the count's key and the copy paths carry it.

use aya_ebpf::{
    helpers::{
        bpf_get_current_comm, bpf_get_current_pid_tgid, bpf_get_current_task,
        bpf_get_smp_processor_id, generated::bpf_task_pt_regs,
    },
    macros::{btf_tracepoint, map},
    maps::HashMap,
    programs::BtfTracePointContext,
};
use proclens_common::{
    copies::{COMPAT_NR, ProcKey, SysKey, op},
    counters,
};

use crate::{
    config, copies, filter, forks,
    maps::count,
    task::{field, probe, process_start},
};

const BPF_ANY: u64 = 0;

/// Syscall counts per (process, syscall number, CPU), summed over CPUs by userspace (see
/// `SysKey::cpu`: an entry is written by its CPU only). Bounded: a syscall that finds it
/// full is counted in `COUNTERS[SYSCALL_MAP_FULL]`, and userspace folds and deletes the
/// entries of processes that have gone.
#[map]
static SYSCALLS: HashMap<SysKey, u64> = HashMap::with_max_entries(16384, 0);

/// Command name per process, written when the process makes a syscall it had not made
/// before (the `SYSCALLS` miss path, so not per call): userspace names processes that
/// have exited before it could read /proc from here. After an exec the new program's
/// first new syscalls rewrite it. A full map is counted in `COUNTERS[COMM_MAP_FULL]`.
#[map]
static COMMS: HashMap<ProcKey, [u8; 16]> = HashMap::with_max_entries(32768, 0);

#[btf_tracepoint(function = "sys_enter")]
pub fn sys_enter(ctx: BtfTracePointContext) -> u32 {
    try_enter(&ctx);
    0
}

#[btf_tracepoint(function = "sys_exit")]
pub fn sys_exit(ctx: BtfTracePointContext) -> u32 {
    try_exit(&ctx);
    0
}

/// Whether the current task is in a 32-bit syscall.
#[inline(always)]
fn in_compat(task: u64) -> bool {
    let off = config::compat_status_off();
    if off == u32::MAX {
        return false;
    }
    probe::<u32>(task, off).is_ok_and(|s| s & config::compat_flag() != 0)
}

/// The number counted for a call: `nr` in its ABI, with `COMPAT_NR` for a 32-bit one;
/// the `-1` an `rt_sigreturn` leaves is that call's own number.
#[inline(always)]
fn counted_nr(nr: u64, compat: bool) -> u32 {
    let nr = if nr == u64::MAX {
        config::sigreturn_nr(compat)
    } else {
        nr as u32
    };
    nr | if compat { COMPAT_NR } else { 0 }
}

/// Fork timing's entry half (attached only where fork calls are timed here).
fn try_enter(ctx: &BtfTracePointContext) {
    // TP_PROTO(struct pt_regs *regs, long id)
    let nr: u64 = ctx.arg(1);
    let o = config::op_of(nr, false);
    if o == op::NONE || o < op::FORK_CALLS {
        return;
    }
    let pid_tgid = bpf_get_current_pid_tgid();
    // SAFETY: a helper without arguments.
    if !filter::traced(pid_tgid) || in_compat(unsafe { bpf_get_current_task() }) {
        // A 32-bit call with a fork's 64-bit number is another call.
        return;
    }
    forks::enter_call(ctx, o - op::FORK_CALLS, ctx.arg(0));
}

/// The key of a per-process, per-syscall count kept by this CPU (`SYSCALLS`, `WAITS`,
/// `READY`).
#[inline(always)]
pub(crate) fn sys_key(tgid: u32, nr: u32, start_ns: u64) -> SysKey {
    SysKey {
        tgid,
        nr,
        start_ns,
        // SAFETY: a helper without arguments.
        cpu: unsafe { bpf_get_smp_processor_id() },
        _pad: 0,
    }
}

#[inline(always)]
fn count_syscall<C: aya_ebpf::EbpfContext>(ctx: &C, tgid: u32, nr: u32, start_ns: u64) {
    let key = sys_key(tgid, nr, start_ns);
    if let Some(n) = SYSCALLS.get_ptr_mut(&key) {
        // SAFETY: this CPU's entry; the program runs with preemption disabled and does
        // not nest on a CPU.
        unsafe { *n += 1 };
        return;
    }
    // Only this CPU makes this key: the insert cannot race another.
    if SYSCALLS.insert(&key, &1, BPF_ANY).is_err() {
        count(ctx, counters::SYSCALL_MAP_FULL);
        // No name either: userspace prunes names with the processes it sees in
        // SYSCALLS/COPIES, and would never free this one.
        return;
    }
    if let Ok(comm) = bpf_get_current_comm() {
        let pk = ProcKey {
            tgid,
            _pad: 0,
            start_ns,
        };
        // A full map leaves the name to /proc (counted).
        if COMMS.insert(&pk, &comm, BPF_ANY).is_err() {
            count(ctx, counters::COMM_MAP_FULL);
        }
    }
}

/// `PF_SIGNALED` (a fatal signal ended the task), `PF_IO_WORKER` (an `io_uring` worker,
/// which ends without a syscall) and `PF_KTHREAD`: `task_struct.flags` bits the kernel
/// has kept since before 5.10 (macros, not in BTF).
const PF_NOT_BY_CALL: u32 = 0x0000_0400 | 0x0000_0010 | 0x0020_0000;
/// `SIGNAL_GROUP_EXIT` in `signal_struct.flags`: the group is exiting (`exit_group`).
const SIGNAL_GROUP_EXIT: u32 = 0x0000_0004;

/// Counts the `exit` or `exit_group` call that ends `task`, the current task at its exit
/// (`sched_process_exit`), when one does. Where the kernel has `bpf_task_pt_regs`
/// (5.15+), the call is read from the thread's saved registers, where `orig_ax` still
/// holds it. Before, it is told from how the thread exits: not by a fatal signal
/// (`PF_SIGNALED`, which also marks the threads an `exit_group` of another thread, or an
/// exec, kills), nor by the kernel (its `exit_code` then holds a signal number);
/// `exit_group` when its group exits (`SIGNAL_GROUP_EXIT`, which kernels before 5.17 set
/// only for groups of more than one thread, hence `group_dead` too), else `exit` (a last
/// thread calling plain `exit`, rare, then counts as `exit_group`).
#[inline(always)]
pub(crate) fn count_exit_call(ctx: &BtfTracePointContext, task: u64, group_dead: bool) {
    if config::count_syscalls() == 0 {
        return;
    }
    let pid_tgid = bpf_get_current_pid_tgid();
    if !filter::traced_at_exit(pid_tgid) {
        return;
    }
    if config::skip_spawning() != 0 && spawning(task) {
        return;
    }
    let flags: u32 = field(task, config::syscall_task_flags_off());
    let exit_code: u32 = field(task, config::task_exit_code_off());
    if flags & PF_NOT_BY_CALL != 0 || exit_code & 0x7f != 0 {
        return;
    }
    let compat = in_compat(task);
    let nr = if config::task_regs_helper() != 0 {
        // SAFETY: a BTF-typed task pointer (the tracepoint's).
        let regs = unsafe { bpf_task_pt_regs(task as *mut _) } as u64;
        let called: u64 = field(regs, config::regs_nr_off());
        if called == u64::from(config::exit_group_nr(compat)) {
            config::exit_group_nr(compat)
        } else if called == u64::from(config::exit_nr(compat)) {
            config::exit_nr(compat)
        } else {
            return;
        }
    } else {
        let signal: u64 = field(task, config::task_signal_off());
        let group = group_dead
            || (signal != 0
                && field::<u32>(signal, config::signal_flags_off()) & SIGNAL_GROUP_EXIT != 0);
        if group {
            config::exit_group_nr(compat)
        } else {
            config::exit_nr(compat)
        }
    };
    let tgid = (pid_tgid >> 32) as u32;
    count_syscall(
        ctx,
        tgid,
        nr | if compat { COMPAT_NR } else { 0 },
        process_start(task),
    );
}

/// Whether `task` is a child of proclens that has not exec'd yet (`run`'s set-up between
/// fork and exec: its parent is proclens and its exec id is still the one it was born
/// with). Probe reads: the current task is not BTF-typed on every kernel.
#[inline(always)]
fn spawning(task: u64) -> bool {
    let Ok(parent) = probe::<u64>(task, config::task_real_parent_off()) else {
        return false;
    };
    let parent_tgid: u32 = probe(parent, config::task_tgid_off()).unwrap_or(0);
    if parent_tgid == 0 || parent_tgid != config::self_tgid() {
        return false;
    }
    let own: u32 = probe(task, config::spawn_self_exec_id_off()).unwrap_or(0);
    let at_fork: u32 = probe(task, config::spawn_parent_exec_id_off()).unwrap_or(1);
    own == at_fork
}

fn try_exit(ctx: &BtfTracePointContext) {
    let pid_tgid = bpf_get_current_pid_tgid();
    if !filter::traced(pid_tgid) {
        return;
    }
    // TP_PROTO(struct pt_regs *regs, long ret); the number is still in the registers
    // (`-1` after rt_sigreturn).
    let regs: u64 = ctx.arg(0);
    let nr: u64 = field(regs, config::regs_nr_off());
    let ret: i64 = ctx.arg(1);
    let counting = config::count_syscalls() != 0;
    let native = config::op_of(nr, false);
    // A fork call's number is no copy in the 32-bit ABI (a userspace test checks), and a
    // 32-bit call with a fork's number has nothing in flight there. Each part below is a
    // path of its own that ends the program: the verifier walks each once (older ones,
    // 5.10, took minutes over the paths of one after every path of another).
    if native != op::NONE && native >= op::FORK_CALLS {
        forks::exit_call(ctx, ret);
        if counting {
            count_call(ctx, pid_tgid, nr, ret);
        }
        return;
    }
    // Most syscalls are no copy in either ABI: one table lookup each. A number that is
    // one in the other ABI only costs the ABI check.
    if native == op::NONE && config::op_of(nr, true) == op::NONE {
        if counting {
            count_call(ctx, pid_tgid, nr, ret);
        }
        return;
    }
    if counting {
        count_call(ctx, pid_tgid, nr, ret);
    }
    copy_call(ctx, pid_tgid, regs, nr, ret);
}

/// Counts the call `nr` of the current task that returned `ret`. A call of its own: the
/// verifier's paths through it end at its return, so the copy path after it is walked
/// once, not once per path through the count.
#[inline(never)]
fn count_call(ctx: &BtfTracePointContext, pid_tgid: u64, nr: u64, ret: i64) {
    // SAFETY: a helper without arguments.
    let task = unsafe { bpf_get_current_task() };
    if config::skip_spawning() != 0 && spawning(task) {
        return;
    }
    let compat = in_compat(task);
    // A new task's return from its parent's fork-family call (0) is no call of its own.
    if ret == 0 && config::is_fork_nr(nr, compat) {
        return;
    }
    count_syscall(
        ctx,
        (pid_tgid >> 32) as u32,
        counted_nr(nr, compat),
        process_start(task),
    );
}

/// Accounts a copy-family call (in either ABI) that returned `ret`.
#[inline(always)]
fn copy_call(ctx: &BtfTracePointContext, pid_tgid: u64, regs: u64, nr: u64, ret: i64) {
    // SAFETY: a helper without arguments.
    let task = unsafe { bpf_get_current_task() };
    if config::skip_spawning() != 0 && spawning(task) {
        return;
    }
    let compat = in_compat(task);
    let o = config::op_of(nr, compat);
    if o == op::NONE || o >= op::FORK_CALLS {
        return;
    }
    copies::exit(
        ctx,
        &copies::Call {
            pid_tgid,
            task,
            regs,
            op: o,
            compat,
            start_ns: process_start(task),
        },
        ret,
    );
}
