//! Who takes over a dying process's children, and which zombie a wait reaps: read from
//! the kernel's own structures at the moment it decides, by the kernel's own rules, so that
//! userspace never guesses a parent or a reap time.
//!
//! Only cold paths walk lists: the reaper is looked for only when the dying process has
//! children, and a wait walks the waiting thread's children (a fork storm's parent has one).

use aya_ebpf::helpers::bpf_get_current_task;
use proclens_common::lifecycle::TaskRef;

use crate::{
    config,
    task::{field, probe},
};

/// `exit_state` of a process that has died and waits to be reaped.
const EXIT_ZOMBIE: i32 = 0x20;
/// Ancestors looked at for a child subreaper (the kernel walks them all; deeper trees
/// than this fall back to the namespace's init).
const MAX_ANCESTORS: usize = 32;
/// Children of the waiting thread looked at for the zombie its wait reaps.
const MAX_CHILDREN: usize = 16;
/// Pid namespaces nest at most this deep (`MAX_PID_NS_LEVEL`).
const MAX_PID_NS_LEVEL: u32 = 32;

/// Whether the task (a BTF-typed pointer) has children: its `children` list is not empty.
#[inline(always)]
pub(crate) fn has_children(task: u64) -> bool {
    let off = config::task_children_off();
    let next: u64 = field(task, off);
    next != 0 && next != task + u64::from(off)
}

/// Whether a thread of `parent` (BTF-typed) is blocked in wait*(): its process's
/// `signal->wait_chldexit` queue is not empty.
#[inline(always)]
pub(crate) fn parent_waiting(parent: u64) -> bool {
    if parent == 0 {
        return false;
    }
    let signal: u64 = field(parent, config::task_signal_off());
    if signal == 0 {
        return false;
    }
    let off = config::signal_wait_chldexit_off();
    let next: u64 = field(signal, off);
    next != 0 && next != signal + u64::from(off)
}

/// One bit of a `signal_struct` at bit offset `bit`.
#[inline(always)]
fn signal_bit(signal: u64, bit: u32) -> Result<bool, i32> {
    let byte: u8 = probe(signal, bit / 8)?;
    Ok(byte >> (bit % 8) & 1 != 0)
}

/// The ids of a task behind a pointer the verifier knows nothing about.
#[inline(always)]
fn task_ref_of(task: u64) -> Result<TaskRef, i32> {
    let leader: u64 = probe(task, config::task_group_leader_off())?;
    Ok(TaskRef {
        pid: probe(task, config::task_pid_off())?,
        tgid: probe(task, config::task_tgid_off())?,
        start_ns: probe(leader, config::task_start_boottime_off())?,
    })
}

/// The pid-namespace level of a task (`task_pid(task)->level`).
#[inline(always)]
fn pid_level(task: u64) -> Result<u32, i32> {
    let pid: u64 = probe(task, config::task_thread_pid_off())?;
    probe(pid, config::pid_level_off())
}

/// The process that inherits the children of `task`, the last thread of a process that
/// is dying: what `find_new_reaper` will choose in `exit_notify` just after this
/// tracepoint. With a child subreaper among its ancestors (`has_child_subreaper`), the
/// nearest one in the same pid namespace that still has a live thread; otherwise the
/// init of its pid namespace (`child_reaper`), which is the task itself when a
/// namespace's init dies (the kernel then kills and reaps the namespace's processes).
pub(crate) fn reaper(task: u64) -> Result<TaskRef, i32> {
    let signal: u64 = probe(task, config::task_signal_off())?;
    let pid: u64 = probe(task, config::task_thread_pid_off())?;
    let level: u32 = probe(pid, config::pid_level_off())?;
    if level > MAX_PID_NS_LEVEL {
        return Err(-1);
    }
    if signal_bit(signal, config::signal_has_subreaper_bit())? {
        let mut r: u64 = probe(task, config::task_real_parent_off())?;
        for _ in 0..MAX_ANCESTORS {
            if r == 0 || pid_level(r)? != level {
                break;
            }
            // init_task (pid 0) ends the walk.
            let rpid: u32 = probe(r, config::task_pid_off())?;
            if rpid == 0 {
                break;
            }
            let rsig: u64 = probe(r, config::task_signal_off())?;
            if signal_bit(rsig, config::signal_is_subreaper_bit())?
                && probe::<i32>(rsig, config::signal_live_off())? > 0
            {
                return task_ref_of(r);
            }
            r = probe(r, config::task_real_parent_off())?;
        }
    }
    let upid = pid + u64::from(config::pid_numbers_off()) + u64::from(level * config::upid_size());
    let ns: u64 = probe(upid, config::upid_ns_off())?;
    let init: u64 = probe(ns, config::pidns_child_reaper_off())?;
    if init == 0 {
        return Err(-1);
    }
    task_ref_of(init)
}

/// The leader task of the zombie child the current thread's wait for any child reaps:
/// the first zombie among its children, in the kernel's list order, the order `do_wait`
/// looks in. 0 when none is found. A wait for one pid (`target`) reaps that child if it
/// is a zombie, which userspace knows without a walk: then this returns 0 at once (a
/// fork storm's `waitpid()` pays no walk).
pub(crate) fn reaped_child(target: u32) -> u64 {
    if target != 0 {
        return 0;
    }
    // SAFETY: a helper without arguments.
    let task = unsafe { bpf_get_current_task() };
    first_zombie_child(task).unwrap_or(0)
}

fn first_zombie_child(task: u64) -> Result<u64, i32> {
    let head = task + u64::from(config::task_children_off());
    let sibling = u64::from(config::task_sibling_off());
    let mut node: u64 = probe(head, 0)?;
    for _ in 0..MAX_CHILDREN {
        if node == head || node < sibling {
            return Ok(0);
        }
        let child = node - sibling;
        if probe::<i32>(child, config::life_exit_state_off())? == EXIT_ZOMBIE {
            return Ok(child);
        }
        node = probe(node, 0)?;
    }
    Ok(0)
}
