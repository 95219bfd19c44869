//! Process lifecycle: fork, exec, exit, wait and free, one ring-buffer event each.
//!
//! Attached as BTF tracepoints (`tp_btf`), which hand over the `task_struct` pointers;
//! every `task_struct`/`sighand_struct`/`linux_binprm`/`pid` offset comes from the running
//! kernel's BTF through load-time globals (see `config`). A failed reservation is counted
//! in `COUNTERS[RINGBUF_DROPS]`, never silent.
//! Fields are read with BTF-checked loads (see `task`): a helper call per field had cost
//! about as much as the rest of a program (a fork+exit made ~40 of them).

use aya_ebpf::{
    helpers::{
        bpf_get_current_pid_tgid, bpf_get_current_task, bpf_ktime_get_boot_ns,
        bpf_probe_read_kernel_str_bytes,
    },
    macros::btf_tracepoint,
    programs::BtfTracePointContext,
};
use aya_log_ebpf::debug;
use proclens_common::{
    counters,
    event::{EventHeader, kind},
    lifecycle::{Exec, Exit, Fork, Free, TaskRef, Wait, exit_flags, fork_flags},
};

use crate::{
    config, filter,
    maps::{count, events, read_failed, send, submit_flags},
    reaper, syscalls,
    task::{comm, field, probe, process_start_field},
};

const SIGCHLD: i32 = 17;
const SIG_IGN: u64 = 1;
const SA_NOCLDWAIT: u64 = 2;

#[btf_tracepoint(function = "sched_process_fork")]
pub fn sched_process_fork(ctx: BtfTracePointContext) -> u32 {
    try_fork(&ctx);
    0
}

#[btf_tracepoint(function = "sched_process_exec")]
pub fn sched_process_exec(ctx: BtfTracePointContext) -> u32 {
    try_exec(&ctx);
    0
}

#[btf_tracepoint(function = "sched_process_exit")]
pub fn sched_process_exit(ctx: BtfTracePointContext) -> u32 {
    try_exit(&ctx);
    0
}

#[btf_tracepoint(function = "sched_process_wait")]
pub fn sched_process_wait(ctx: BtfTracePointContext) -> u32 {
    if try_wait(&ctx).is_err() {
        read_failed(&ctx, "sched_process_wait");
    }
    0
}

#[btf_tracepoint(function = "sched_process_free")]
pub fn sched_process_free(ctx: BtfTracePointContext) -> u32 {
    try_free(&ctx);
    0
}

/// The task's ids and its process's identity (group leader's `start_boottime`).
#[inline(always)]
pub(crate) fn task_ref(task: u64) -> TaskRef {
    TaskRef {
        pid: field(task, config::task_pid_off()),
        tgid: field(task, config::task_tgid_off()),
        start_ns: process_start_field(task),
    }
}

/// The process that must reap `task`: its `real_parent`.
#[inline(always)]
fn parent_ref(task: u64) -> (u64, TaskRef) {
    let parent: u64 = field(task, config::task_real_parent_off());
    if parent == 0 {
        return (0, TaskRef::default());
    }
    (parent, task_ref(parent))
}

/// Whether an event that runs in the context of the task it is about (fork: the creator,
/// exec, exit, wait) is left out: proclens's own, or outside the cgroup filter. Free runs
/// in whatever context drops the last reference and is never filtered (see `try_free`).
#[inline(always)]
fn skipped(tgid: u32) -> bool {
    let me = config::self_tgid();
    (me != 0 && tgid == me) || !filter::current_in_cgroup()
}

/// The header of an event stamped with the boot clock now, before the event is reserved:
/// userspace merges the per-CPU rings up to the earliest time a ring could still deliver,
/// which holds only if every event is stamped before its reservation. The clock costs a
/// helper call and a clock read (~50 ns on a VM), so only the events whose time is used
/// read it: exec, exit (a zombie's age), wait (when a zombie was reaped) and free. A fork
/// takes its time from the child's `start_boottime`, set before it.
#[inline(always)]
fn header(kind: u32, tid: u32) -> EventHeader {
    EventHeader {
        kind,
        tid,
        // SAFETY: a helper without arguments.
        ts: unsafe { bpf_ktime_get_boot_ns() },
    }
}

fn try_fork(ctx: &BtfTracePointContext) {
    let creator_task: u64 = ctx.arg(0);
    let child_task: u64 = ctx.arg(1);
    let creator = task_ref(creator_task);
    if skipped(creator.tgid) {
        return;
    }
    let child = task_ref(child_task);
    let (_, parent) = parent_ref(child_task);
    let flags = if child.tgid == creator.tgid {
        fork_flags::THREAD
    } else {
        0
    };
    let born: u64 = field(child_task, config::task_start_boottime_off());
    let ev = Fork {
        header: EventHeader {
            kind: kind::FORK,
            tid: child.pid,
            ts: born,
        },
        creator,
        child,
        parent,
        flags,
        _pad: 0,
        child_ptr: child_task,
        comm: comm(child_task),
    };
    send(ctx, ev);
}

fn try_exec(ctx: &BtfTracePointContext) {
    let task: u64 = ctx.arg(0);
    let old_pid: u32 = ctx.arg(1);
    let bprm: u64 = ctx.arg(2);
    let me = task_ref(task);
    if skipped(me.tgid) {
        return;
    }
    let filename: u64 = field(bprm, config::binprm_filename_off());
    let stamp = header(kind::EXEC, me.pid);
    let ring = events();
    let Some(mut slot) = ring.reserve::<Exec>(0) else {
        count(ctx, counters::RINGBUF_DROPS);
        return;
    };
    let ev = slot.as_mut_ptr();
    // SAFETY: `ev` points at a reserved record of the right size; every field is written
    // before submit (the filename in place, so the record never sits on the BPF stack).
    unsafe {
        (*ev).header = stamp;
        (*ev).task = me;
        (*ev).old_pid = old_pid;
        (*ev)._pad = 0;
        (*ev).task_ptr = task;
        (*ev).comm = comm(task);
        let buf = &mut (*ev).filename;
        buf[0] = 0;
        let _ = bpf_probe_read_kernel_str_bytes(filename as *const u8, buf);
    }
    slot.submit(submit_flags(ring));
}

/// Whether the kernel will reap `task` itself when it dies (its parent ignores SIGCHLD),
/// by the rule of `do_notify_parent`.
#[inline(always)]
fn autoreaped(task: u64, parent: u64) -> bool {
    if parent == 0 {
        return false;
    }
    let exit_signal: i32 = field(task, config::task_exit_signal_off());
    if exit_signal != SIGCHLD {
        return false;
    }
    let sighand: u64 = field(parent, config::task_sighand_off());
    if sighand == 0 {
        return false;
    }
    let handler: u64 = field(sighand, config::sigchld_handler_off());
    let flags: u64 = field(sighand, config::sigchld_flags_off());
    handler == SIG_IGN || flags & SA_NOCLDWAIT != 0
}

/// Whether the exiting `task` is the last of its thread group. Newer kernels pass it to
/// the tracepoint; older ones decremented `signal->live` just before it fires (two threads
/// exiting at once may then both see 0: the fallback is exact only for the common case).
#[inline(always)]
fn group_dead(ctx: &BtfTracePointContext, task: u64) -> bool {
    if config::exit_group_dead_arg() != 0 {
        // A constant for the verifier: on kernels without the argument this branch is
        // dead code and the out-of-range context read is never checked.
        let arg: u64 = ctx.arg(1);
        return arg & 0xff != 0;
    }
    let signal: u64 = field(task, config::task_signal_off());
    signal != 0 && field::<i32>(signal, config::signal_live_off()) == 0
}

fn try_exit(ctx: &BtfTracePointContext) {
    let task: u64 = ctx.arg(0);
    let me = task_ref(task);
    if skipped(me.tgid) {
        return;
    }
    let (parent_task, parent) = parent_ref(task);
    let leader: u64 = field(task, config::task_group_leader_off());
    let mut flags = 0;
    let mut heir = TaskRef::default();
    let group_dead = group_dead(ctx, task);
    // The thread's last syscall, when it is the `exit` or `exit_group` that ends it: such
    // a call never returns to be counted at `sys_exit`. Before the event, which tells
    // userspace the process may be read for the last time.
    syscalls::count_exit_call(ctx, task, group_dead);
    if group_dead {
        flags |= exit_flags::GROUP_DEAD;
        // The leader is the task its parent waits for; its exit signal decides.
        if autoreaped(leader, parent_task) {
            flags |= exit_flags::AUTOREAP;
        } else if reaper::parent_waiting(parent_task) {
            flags |= exit_flags::PARENT_WAITING;
        }
        // The last thread holds every child left (each thread's exit handed its own to
        // a live sibling).
        if reaper::has_children(task) {
            heir = reaper::reaper(task).unwrap_or_else(|_| {
                debug!(
                    ctx,
                    "sched_process_exit: the heir of tid {}'s children was not found, sent without one",
                    me.pid
                );
                TaskRef::default()
            });
        }
    }
    let exit_code: u32 = field(task, config::task_exit_code_off());
    send(
        ctx,
        Exit {
            header: header(kind::EXIT, me.pid),
            task: me,
            parent,
            exit_code,
            flags,
            leader_ptr: leader,
            comm: comm(task),
            reaper: heir,
        },
    );
}

fn try_wait(ctx: &BtfTracePointContext) -> Result<(), i32> {
    let pid_struct: u64 = ctx.arg(0);
    // The waiter is the current task, which has no BTF-typed pointer on every kernel
    // (bpf_get_current_task_btf is 5.11+): its ids come from a helper, its leader through
    // probes.
    let pid_tgid = bpf_get_current_pid_tgid();
    let tgid = (pid_tgid >> 32) as u32;
    if skipped(tgid) {
        return Ok(());
    }
    let task = unsafe { bpf_get_current_task() };
    let leader: u64 = probe(task, config::task_group_leader_off())?;
    let waiter = TaskRef {
        pid: pid_tgid as u32,
        tgid,
        start_ns: probe(leader, config::task_start_boottime_off())?,
    };
    // Read with a probe, not a BTF load: the argument is NULL for a wait on any child,
    // and Debian's 6.18.15 ran the compiled NULL check's load unguarded and oopsed on it
    // (6.18.44 does not).
    let target_pid: u32 = if pid_struct == 0 {
        0
    } else {
        probe(pid_struct, config::pid_nr_off()).unwrap_or(0)
    };
    send(
        ctx,
        Wait {
            header: header(kind::WAIT, waiter.pid),
            waiter,
            target_pid,
            _pad: 0,
            reaped_ptr: reaper::reaped_child(target_pid),
        },
    );
    Ok(())
}

/// Reads nothing of the task: freed an RCU grace period after its release, it has left
/// the caches, and its first field read was most of this program's cost (a cache miss on
/// every process). Userspace knows processes' leaders by address (see `Free`); other
/// tasks' frees (threads, proclens's own) cost it a failed lookup.
fn try_free(ctx: &BtfTracePointContext) {
    let task: u64 = ctx.arg(0);
    send(
        ctx,
        Free {
            header: header(kind::FREE, 0),
            task_ptr: task,
        },
    );
}
