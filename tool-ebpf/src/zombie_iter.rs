//! The zombies that exist when proclens starts, read once from the kernel by a task
//! iterator (`iter/task`, Linux 5.8+) while proclens is still privileged: their exact
//! identity, exit code and parent, and when they last ran, which dates their death. /proc
//! shows none of the last two (and the exit code only to who may ptrace the zombie).

use aya_ebpf::{
    bindings::seq_file,
    helpers::{bpf_get_current_task, bpf_ktime_get_boot_ns, generated::bpf_seq_write},
};
use proclens_common::lifecycle::{TaskRef, ZombieSeed, seed_flags};

use crate::{
    config,
    lifecycle::task_ref,
    task::{comm, field, probe},
};

/// `exit_state` of a process that has died and waits to be reaped.
const EXIT_ZOMBIE: i32 = 0x20;

/// Called by the kernel once per task (thread) of the machine, then once with no task.
/// The context is `struct bpf_iter__task { meta; task; }`.
#[allow(
    clippy::no_mangle_with_rust_abi,
    reason = "declared as aya's program macros declare theirs; the loader finds it by symbol and section"
)]
#[unsafe(no_mangle)]
#[unsafe(link_section = "iter/task")]
pub fn zombie_seeds(ctx: *mut core::ffi::c_void) -> i32 {
    try_zombie_seeds(ctx);
    0
}

/// The current CPU's run-queue clock (`current->se.cfs_rq->rq->clock`).
#[inline(always)]
fn rq_clock() -> Result<u64, i32> {
    // SAFETY: a helper without arguments.
    let cur = unsafe { bpf_get_current_task() };
    let cfs_rq: u64 = probe(cur, config::iter_task_cfs_rq_off())?;
    let rq: u64 = probe(cfs_rq, config::iter_cfs_rq_rq_off())?;
    probe(rq, config::iter_rq_clock_off())
}

fn try_zombie_seeds(ctx: *mut core::ffi::c_void) {
    // SAFETY: the iterator's context holds two pointers; the verifier checks both reads.
    let (meta, task) = unsafe {
        let args = ctx as *const u64;
        (*args, *args.add(1))
    };
    if task == 0 || meta == 0 {
        return;
    }
    let me = task_ref(task);
    if me.pid != me.tgid || field::<i32>(task, config::life_exit_state_off()) != EXIT_ZOMBIE {
        return;
    }
    // A dead leader whose other threads still run is no zombie yet.
    let signal: u64 = field(task, config::task_signal_off());
    if signal != 0 && field::<i32>(signal, config::signal_live_off()) != 0 {
        return;
    }
    let parent_task: u64 = field(task, config::task_real_parent_off());
    let mut rec = ZombieSeed {
        task: me,
        parent: if parent_task == 0 {
            TaskRef::default()
        } else {
            task_ref(parent_task)
        },
        task_ptr: task,
        exit_code: field(task, config::task_exit_code_off()),
        flags: 0,
        last_arrival: 0,
        boot_ns: 0,
        rq_clock: 0,
        comm: comm(task),
    };
    if config::iter_clocked() != 0
        && let Ok(clock) = rq_clock()
    {
        rec.last_arrival = field(task, config::life_last_arrival_off());
        // SAFETY: a helper without arguments.
        rec.boot_ns = unsafe { bpf_ktime_get_boot_ns() };
        rec.rq_clock = clock;
        rec.flags |= seed_flags::CLOCKED;
    }
    let seq: u64 = field(meta, 0);
    // SAFETY: `seq` is the iterator's seq_file; `rec` lives on the stack for the call.
    unsafe {
        bpf_seq_write(
            seq as *mut seq_file,
            (&raw const rec).cast(),
            size_of::<ZombieSeed>() as u32,
        )
    };
}
