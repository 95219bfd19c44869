//! Every syscall, through two programs on the raw syscall tracepoints, attached as BTF
//! tracepoints (`tp_btf/sys_enter`, `tp_btf/sys_exit`): they get the task's saved user
//! registers and the syscall number (or return value) as typed arguments, so nothing is
//! formatted into a trace record, no tracefs is needed, and starting or stopping costs
//! two links however many syscalls are followed (the classic per-syscall tracepoints
//! were ~40 links, each torn down under the kernel's global event mutex).
//!
//! - `sys_enter`: the filter first (see `filter`); then, when asked for, the syscall
//!   counted per (process, number) in a per-CPU hash, and the copy-family calls handed
//!   to `copies::enter` by a dispatch on the number (one table per ABI).
//! - `sys_exit` (attached for copy accounting or fork timing): the filter, then a table
//!   lookup of the number, and `copies::exit` for the copy family only.
//! - With copy accounting, or where `forks` cannot use the classic fork-call tracepoints
//!   (no tracefs), the same tables send fork, vfork, clone and clone3 (64-bit ABI;
//!   classic syscall tracepoints never see 32-bit ones either) to `forks`, which times
//!   them: see `op::FORK_CALLS`. The tables then name only the calls of the parts that
//!   run.
//!
//! A 32-bit (compat) syscall of a 64-bit kernel has its own numbers and argument
//! registers: the task says which ABI is running (x86: `TS_COMPAT` in its
//! `thread_info.status`, set for the length of a 32-bit syscall), and both the count's
//! key and the copy paths carry it.

use aya_ebpf::{
    helpers::{
        bpf_get_current_comm, bpf_get_current_pid_tgid, bpf_get_current_task,
        bpf_get_smp_processor_id,
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
    task::{field, probe},
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
    let _ = try_enter(&ctx);
    0
}

#[btf_tracepoint(function = "sys_exit")]
pub fn sys_exit(ctx: BtfTracePointContext) -> u32 {
    let _ = try_exit(&ctx);
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

/// The current process's start: its thread-group leader's `start_boottime` (0 if
/// unreadable), through the BTF offsets set at load time.
#[inline(always)]
fn process_start(task: u64) -> u64 {
    let Ok(leader) = probe::<u64>(task, config::task_group_leader_off()) else {
        return 0;
    };
    probe(leader, config::task_start_boottime_off()).unwrap_or(0)
}

fn try_enter(ctx: &BtfTracePointContext) -> Result<(), i32> {
    let pid_tgid = bpf_get_current_pid_tgid();
    if !filter::traced(pid_tgid) {
        return Ok(());
    }
    // TP_PROTO(struct pt_regs *regs, long id)
    let regs: u64 = ctx.arg(0);
    let nr: u64 = ctx.arg(1);
    // SAFETY: a helper without arguments.
    let task = unsafe { bpf_get_current_task() };
    let compat = in_compat(task);
    let start_ns = process_start(task);
    let tgid = (pid_tgid >> 32) as u32;
    if config::count_syscalls() != 0 {
        let nr = (nr as u32) | if compat { COMPAT_NR } else { 0 };
        count_syscall(ctx, tgid, nr, start_ns);
    }
    if config::copies_on() != 0 {
        let o = config::op_of(nr, compat);
        if o != op::NONE && o >= op::FORK_CALLS {
            forks::enter_call(ctx, o - op::FORK_CALLS, regs);
        } else if o != op::NONE {
            let call = copies::Call {
                pid_tgid,
                task,
                regs,
                op: o,
                compat,
                start_ns,
            };
            copies::enter(ctx, &call)?;
        }
    }
    Ok(())
}

#[inline(always)]
fn count_syscall(ctx: &BtfTracePointContext, tgid: u32, nr: u32, start_ns: u64) {
    let key = SysKey {
        tgid,
        nr,
        start_ns,
        // SAFETY: a helper without arguments.
        cpu: unsafe { bpf_get_smp_processor_id() },
        _pad: 0,
    };
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

fn try_exit(ctx: &BtfTracePointContext) -> Result<(), i32> {
    let pid_tgid = bpf_get_current_pid_tgid();
    if !filter::traced(pid_tgid) {
        return Ok(());
    }
    // TP_PROTO(struct pt_regs *regs, long ret); the number is still in the registers.
    let regs: u64 = ctx.arg(0);
    let nr: u64 = field(regs, config::regs_nr_off());
    let native = config::op_of(nr, false);
    // A fork call's number is no copy in the 32-bit ABI (a userspace test checks), so
    // the paths stay apart: the verifier then walks each once, not one after the other
    // (which had cost ~80 ms more at every start). A 32-bit call with a fork's number
    // has nothing in flight there.
    if native != op::NONE && native >= op::FORK_CALLS {
        forks::exit_call(ctx, ctx.arg(1));
        return Ok(());
    }
    // Most syscalls are no copy in either ABI: one table lookup each, and out. A number
    // that is one in the other ABI only costs the in-flight lookup, which knows the ABI.
    if native == op::NONE && config::op_of(nr, true) == op::NONE {
        return Ok(());
    }
    let ret: i64 = ctx.arg(1);
    copies::exit(ctx, pid_tgid, ret)
}
