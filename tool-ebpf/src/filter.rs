//! Which tasks are traced: everything but proclens itself, optionally only the processes of
//! `-p`, those whose command name contains `--comm`, and one cgroup v2 subtree
//! (`--cgroup`, and `run -- CMD`'s own cgroup). Every program asks first, so a task that
//! is filtered out costs its programs a compare (`-p`), one hash lookup (`--comm`, many
//! pids) or one helper call (`--cgroup`), and nothing else.
//!
//! What each concern does with a task filtered out:
//! - syscalls and copy paths (`syscalls`, `copies`): nothing at all;
//! - switches (`switch`): no thread entry; the CPU's own bookkeeping (the system-wide
//!   same/cross-process/idle split) still sees every switch;
//! - lifecycle (`lifecycle`): events are filtered by the cgroup only. `-p` and `--comm`
//!   select rows, but the process table needs every process around them: a selected
//!   parent's zombies are other processes, and so are the orphans a selected subreaper
//!   inherits; lifecycle events come per process, not per syscall or switch.

use aya_ebpf::{
    helpers::{
        bpf_get_current_pid_tgid, bpf_get_current_task, bpf_probe_read_kernel_str_bytes,
        generated::bpf_get_current_ancestor_cgroup_id,
    },
    macros::{btf_tracepoint, map, raw_tracepoint},
    maps::{HashMap, LruHashMap},
    programs::{BtfTracePointContext, RawTracePointContext},
};
use proclens_common::config::{MAX_PIDS, PIDS_IN_MAP};

use crate::{
    config,
    task::{field, probe},
};

/// The `-p` pids when there are more than the config holds (see `Filter::npids`).
#[map]
static SELECTED_PIDS: HashMap<u32, u8> = HashMap::with_max_entries(1, 0);

/// The `--comm` filter's decision per thread ([`SELECTED`] or [`NOT_SELECTED`]), made at
/// the thread's first traced event from its own and its process's command names, and
/// forgotten when the thread exits, its process execs or it is renamed (`filter_exit`,
/// `filter_exec`, `filter_rename`).
/// A least-recently-used map: an evicted decision is made again, never lost.
#[map]
static COMM_MATCH: LruHashMap<u32, u8> = LruHashMap::with_max_entries(16384, 0);

const SELECTED: u8 = 1;
const NOT_SELECTED: u8 = 2;

/// The id of `task`'s default-hierarchy (v2) cgroup ancestor at `level`, read through BTF
/// offsets: `task->cgroups->dfl_cgrp`, then its ancestor's id: `ancestor_ids[level]` on
/// older kernels such as 5.10 (whose tracing programs may not call the helper), or
/// `ancestors[level]->kn->id` on later ones (which replaced the array). Probe reads: the
/// current task has no BTF-typed pointer on every kernel, and an iterated task's cgroup
/// pointers may be read while it moves.
#[inline(always)]
fn ancestor_id_by_walk(task: u64, level: u32) -> Option<u64> {
    let cset: u64 = probe(task, config::task_cgroups_off()).ok()?;
    let cgrp: u64 = probe(cset, config::css_set_dfl_cgrp_off()).ok()?;
    let depth: i32 = probe(cgrp, config::cgroup_level_off()).ok()?;
    if depth < 0 || (depth as u32) < level {
        return None;
    }
    let ancestors = cgrp + u64::from(config::cgroup_ancestor_ids_off());
    if config::cgroup_ancestor_ptrs() == 0 {
        return probe(ancestors, 8 * level).ok();
    }
    let ancestor: u64 = probe(ancestors, 8 * level).ok()?;
    let kn: u64 = probe(ancestor, config::cgroup_kn_off()).ok()?;
    probe(kn, config::kernfs_node_id_off()).ok()
}

/// Whether the current task is in the selected cgroup subtree (always, without a filter).
#[inline(always)]
pub(crate) fn current_in_cgroup() -> bool {
    let id = config::cgroup_id();
    if id == 0 {
        return true;
    }
    let level = config::cgroup_level();
    if config::cgroup_walk() != 0 {
        // SAFETY: a helper without arguments.
        let task = unsafe { bpf_get_current_task() };
        return ancestor_id_by_walk(task, level) == Some(id);
    }
    // SAFETY: a helper without pointer arguments.
    unsafe { bpf_get_current_ancestor_cgroup_id(level as i32) == id }
}

/// Whether any filter selects tasks (beyond leaving proclens out).
#[inline(always)]
pub(crate) fn narrowed() -> bool {
    config::cgroup_id() != 0 || config::filter_npids() != 0 || config::filter_comm_len() != 0
}

/// Whether `task` (any task, not only the current one) of process `tgid` is traced by
/// every filter. For the thread iterators, which visit every task.
#[inline(always)]
pub(crate) fn task_traced(task: u64, tgid: u32) -> bool {
    if tgid == config::self_tgid() || !pid_selected(tgid) {
        return false;
    }
    if config::filter_comm_len() != 0 && !task_comm_matches(task) {
        return false;
    }
    let id = config::cgroup_id();
    id == 0 || ancestor_id_by_walk(task, config::cgroup_level()) == Some(id)
}

/// Whether the current task, of process `tgid`, is traced by `-p` and `--comm` (and is
/// not proclens's own). The cgroup is [`current_in_cgroup`]'s.
#[inline(always)]
pub(crate) fn traced_tgid(tgid: u32) -> bool {
    tgid != config::self_tgid() && pid_selected(tgid) && comm_selected()
}

/// Whether the current task (`pid_tgid` from `bpf_get_current_pid_tgid`) is traced by
/// every filter: the first thing the syscall programs ask.
#[inline(always)]
pub(crate) fn traced(pid_tgid: u64) -> bool {
    traced_tgid((pid_tgid >> 32) as u32) && current_in_cgroup()
}

/// [`traced`] for a thread at its exit: its `--comm` decision, which `filter_exit` has
/// just forgotten, is made again without being kept (a later thread given the same id
/// would inherit it).
#[inline(always)]
pub(crate) fn traced_at_exit(pid_tgid: u64) -> bool {
    let tgid = (pid_tgid >> 32) as u32;
    tgid != config::self_tgid()
        && pid_selected(tgid)
        && comm_selected_unkept()
        && current_in_cgroup()
}

/// `--comm` without caching the decision (see [`traced_at_exit`]).
#[inline(always)]
fn comm_selected_unkept() -> bool {
    if config::filter_comm_len() == 0 {
        return true;
    }
    let tid = bpf_get_current_pid_tgid() as u32;
    // SAFETY: the value is copied out at once.
    if let Some(d) = unsafe { COMM_MATCH.get(&tid) } {
        return *d == SELECTED;
    }
    // SAFETY: a helper without arguments.
    task_comm_matches(unsafe { bpf_get_current_task() })
}

/// `-p`: a compare per pid held in the config (the verifier knows how many), or one
/// lookup when there are more.
#[inline(always)]
fn pid_selected(tgid: u32) -> bool {
    let n = config::filter_npids();
    if n == 0 {
        return true;
    }
    if n == PIDS_IN_MAP {
        // SAFETY: the value is not kept.
        return unsafe { SELECTED_PIDS.get(&tgid) }.is_some();
    }
    for i in 0..MAX_PIDS {
        if i as u32 >= n {
            break;
        }
        if config::filter_pid(i) == tgid {
            return true;
        }
    }
    false
}

/// `--comm`: the current thread's cached decision, made now when it has none.
#[inline(always)]
fn comm_selected() -> bool {
    if config::filter_comm_len() == 0 {
        return true;
    }
    let tid = bpf_get_current_pid_tgid() as u32;
    // SAFETY: the value is copied out at once.
    if let Some(d) = unsafe { COMM_MATCH.get(&tid) } {
        return *d == SELECTED;
    }
    // SAFETY: a helper without arguments.
    let yes = task_comm_matches(unsafe { bpf_get_current_task() });
    let _ = COMM_MATCH.insert(&tid, if yes { &SELECTED } else { &NOT_SELECTED }, 0);
    yes
}

/// Whether the thread's name or its process's (its group leader's, what /proc/PID/comm
/// shows) contains the `--comm` text. Userspace selects rows by the same names, so the
/// kernel lets through every task a view could show.
#[inline(never)]
fn task_comm_matches(task: u64) -> bool {
    let own: [u8; 16] = probe(task, config::task_comm_off()).unwrap_or([0; 16]);
    if contains(&own) {
        return true;
    }
    let Ok(leader) = probe::<u64>(task, config::task_group_leader_off()) else {
        return false;
    };
    let name: [u8; 16] = probe(leader, config::task_comm_off()).unwrap_or([0; 16]);
    contains(&name)
}

/// Whether the NUL-terminated `hay` contains the filter's text (1..=15 bytes).
#[inline(always)]
fn contains(hay: &[u8; 16]) -> bool {
    let needle = config::filter_comm();
    let n = config::filter_comm_len() as usize;
    'start: for start in 0..16usize {
        if start + n > 16 {
            return false;
        }
        for j in 0..16usize {
            if j >= n {
                return true;
            }
            let (Some(&h), Some(&w)) = (hay.get(start + j), needle.get(j)) else {
                return false;
            };
            if h == 0 {
                // The name ends here: no later start can match either.
                return false;
            }
            if h != w {
                continue 'start;
            }
        }
        return true;
    }
    false
}

/// The new program of a process that execs has a new name: its decision is made again.
#[btf_tracepoint(function = "sched_process_exec")]
pub fn filter_exec(ctx: BtfTracePointContext) -> u32 {
    // TP_PROTO(struct task_struct *p, pid_t old_pid, struct linux_binprm *bprm): after
    // de_thread the exec'ing thread holds the process's id.
    let task: u64 = ctx.arg(0);
    let tid: u32 = field(task, config::task_pid_off());
    let _ = COMM_MATCH.remove(&tid);
    0
}

/// A thread renamed (`prctl(PR_SET_NAME)`, a write to /proc/PID/comm) has a new name: its
/// decision is made again, from the new name. The tracepoint fires before the kernel
/// copies the name in, so the decision is written here rather than forgotten: an event of
/// the thread in between (an interrupt, on its CPU) would otherwise decide on the old
/// name and keep it. (Its process's other threads keep theirs until they exit or exec,
/// or the map evicts them: a leader's rename reaches them late.)
#[btf_tracepoint(function = "task_rename")]
pub fn filter_rename(ctx: BtfTracePointContext) -> u32 {
    // TP_PROTO(struct task_struct *task, const char *comm)
    let task: u64 = ctx.arg(0);
    let new: u64 = ctx.arg(1);
    let tid: u32 = field(task, config::task_pid_off());
    let mut name = [0u8; 16];
    // SAFETY: reads at most 16 bytes of the kernel's string into the buffer.
    if unsafe { bpf_probe_read_kernel_str_bytes(new as *const u8, &mut name) }.is_err() {
        let _ = COMM_MATCH.remove(&tid);
        return 0;
    }
    let yes = contains(&name) || leader_name_matches(task);
    let _ = COMM_MATCH.insert(&tid, if yes { &SELECTED } else { &NOT_SELECTED }, 0);
    0
}

/// Whether the name of `task`'s group leader, when that is another task, contains the
/// `--comm` text.
#[inline(always)]
fn leader_name_matches(task: u64) -> bool {
    let Ok(leader) = probe::<u64>(task, config::task_group_leader_off()) else {
        return false;
    };
    if leader == task {
        return false;
    }
    contains(&probe(leader, config::task_comm_off()).unwrap_or([0; 16]))
}

/// A thread id that exits may go to a new thread: its decision goes with it.
#[btf_tracepoint(function = "sched_process_exit")]
pub fn filter_exit(ctx: BtfTracePointContext) -> u32 {
    let task: u64 = ctx.arg(0);
    let tid: u32 = field(task, config::task_pid_off());
    let _ = COMM_MATCH.remove(&tid);
    0
}

/// Never attached: userspace loads it to ask the verifier whether tracing programs may
/// call `bpf_get_current_ancestor_cgroup_id` on this kernel (5.10's may not; the filter
/// then walks the task's cgroup instead, see `ancestor_id_by_walk`).
#[raw_tracepoint(tracepoint = "sys_enter")]
pub fn probe_ancestor_cgroup(_ctx: RawTracePointContext) -> i32 {
    // SAFETY: a helper without pointer arguments.
    unsafe { bpf_get_current_ancestor_cgroup_id(0) as i32 }
}
