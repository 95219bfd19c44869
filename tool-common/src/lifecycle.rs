//! Process lifecycle events (fork, exec, exit, wait, free), sent through the ring buffer.
//!
//! Every event names its tasks by [`TaskRef`]: thread id, thread-group id and the
//! group leader's `start_boottime`. `(tgid, start_ns)` names a process uniquely even when
//! its pid is reused before the old task is freed (a fork storm does that), and it is the
//! same clock `/proc/PID/stat` reports (field 22, in clock ticks), so processes seen at
//! start-up in /proc can be matched with later events.
//!
//! Fork, exec and exit also carry the address of the process's leader `task_struct`, a
//! stable identity until that task is freed: the free event carries only that address,
//! so its program reads nothing of a task that has long left the caches. Addresses are
//! compared, never dereferenced or shown.

use crate::event::EventHeader;

/// Bytes of an exec's filename kept (NUL-terminated; longer paths are cut).
pub const FILENAME_LEN: usize = 256;
/// `TASK_COMM_LEN`.
pub const COMM_LEN: usize = 16;

/// A task, with the identity of its process.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct TaskRef {
    /// Thread id.
    pub pid: u32,
    /// Thread-group id (process id).
    pub tgid: u32,
    /// `start_boottime` (ns since boot, suspend included) of the thread-group leader.
    pub start_ns: u64,
}

/// [`Fork::flags`] bits.
pub mod fork_flags {
    /// The new task is a thread of its creator's process (`CLONE_THREAD`).
    pub const THREAD: u32 = 1;
}

/// `sched_process_fork`: `creator` made `child`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Fork {
    pub header: EventHeader,
    /// The thread that called fork/clone.
    pub creator: TaskRef,
    pub child: TaskRef,
    /// The child's `real_parent` process (differs from the creator's with `CLONE_PARENT`;
    /// for a thread it is the process's parent).
    pub parent: TaskRef,
    pub flags: u32,
    pub _pad: u32,
    /// The child's `task_struct` address (for a process: its leader's).
    pub child_ptr: u64,
    pub comm: [u8; COMM_LEN],
}

/// `sched_process_exec`: `task` now runs `filename`.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Exec {
    pub header: EventHeader,
    pub task: TaskRef,
    /// The thread id before exec (a non-leader thread that execs takes the leader's id).
    pub old_pid: u32,
    pub _pad: u32,
    /// `task`'s `task_struct` address: the process's leader from now on (a thread that
    /// execs takes over from the old leader, which is then released).
    pub task_ptr: u64,
    pub comm: [u8; COMM_LEN],
    pub filename: [u8; FILENAME_LEN],
}

impl Default for Exec {
    fn default() -> Self {
        Self {
            header: EventHeader::default(),
            task: TaskRef::default(),
            old_pid: 0,
            _pad: 0,
            task_ptr: 0,
            comm: [0; COMM_LEN],
            filename: [0; FILENAME_LEN],
        }
    }
}

/// [`Exit::flags`] bits.
pub mod exit_flags {
    /// The last thread of the process exited: the process is dead (a zombie until reaped).
    pub const GROUP_DEAD: u32 = 1;
    /// The parent ignores SIGCHLD (`SIG_IGN` or `SA_NOCLDWAIT`) and the exit signal is
    /// SIGCHLD: the kernel reaps the process itself, it never becomes a zombie.
    pub const AUTOREAP: u32 = 2;
    /// A thread of the parent was blocked in wait*() when the process died (the parent's
    /// `signal->wait_chldexit` queue was not empty): the kernel wakes it as the process
    /// becomes a zombie, and a wait for any child or for this one reaps it at once.
    pub const PARENT_WAITING: u32 = 4;
}

/// `sched_process_exit`: a thread exited.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Exit {
    pub header: EventHeader,
    pub task: TaskRef,
    /// The process's parent (`real_parent`) at exit: the process that must reap it.
    pub parent: TaskRef,
    /// `task->exit_code`: wait status layout (exit status << 8, or the terminating signal
    /// in the low 7 bits, 0x80 if it dumped core).
    pub exit_code: u32,
    pub flags: u32,
    /// The `task_struct` address of the process's leader (which is freed last).
    pub leader_ptr: u64,
    pub comm: [u8; COMM_LEN],
    /// When the process dies leaving children (live or zombie), the process the kernel
    /// hands them to, found by the kernel's own rule (`find_new_reaper`: the nearest
    /// living child-subreaper ancestor in its pid namespace, else that namespace's init),
    /// read as it exits; zeros when it has no children. Its `pid` is the reaper's tgid.
    pub reaper: TaskRef,
}

/// `sched_process_wait`: `waiter` entered wait*() for `target_pid` (0: any child).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Wait {
    /// `ts`: when the wait was entered (boot clock).
    pub header: EventHeader,
    pub waiter: TaskRef,
    pub target_pid: u32,
    pub _pad: u32,
    /// For a wait for any child (`target_pid` 0), the leader `task_struct` address of the
    /// zombie child it reaps: the first zombie among the waiting thread's children, the
    /// one the kernel's `do_wait` finds first; 0 when there is none (the wait blocks until
    /// a child dies, or returns without reaping), and for a wait for one pid, which reaps
    /// that child if it is a zombie.
    pub reaped_ptr: u64,
}

/// [`ZombieSeed::flags`] bits.
pub mod seed_flags {
    /// `last_arrival` and the clock pair are usable (the scheduler keeps `sched_info` and
    /// the run queue's clock could be read).
    pub const CLOCKED: u32 = 1;
}

/// A record of the task iterator run at start-up (`iter/task`): one per zombie process
/// (a group leader in `EXIT_ZOMBIE` whose threads have all exited), read from the kernel
/// while proclens is still privileged. /proc shows neither when a zombie died nor, without
/// ptrace rights, its exit code.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ZombieSeed {
    pub task: TaskRef,
    /// Its `real_parent`'s process.
    pub parent: TaskRef,
    /// The zombie's `task_struct` address: what its free will name.
    pub task_ptr: u64,
    /// Wait status, as in [`Exit::exit_code`].
    pub exit_code: u32,
    pub flags: u32,
    /// `sched_info.last_arrival`: when it last got a CPU (the run queue's clock, ns). It
    /// died during that last run, so it has been dead about since then.
    pub last_arrival: u64,
    /// The boot clock and this CPU's run-queue clock read together, to place
    /// `last_arrival` on the boot clock (the run-queue clock is at most a tick behind).
    pub boot_ns: u64,
    pub rq_clock: u64,
    pub comm: [u8; COMM_LEN],
}

/// `sched_process_free`: a task was freed, an RCU grace period after it was released.
/// For a process's leader, the process is gone for good (it was reaped); other tasks'
/// frees (threads) name no process. The header's `tid` is 0: the task is not read.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Free {
    pub header: EventHeader,
    /// The freed `task_struct`'s address.
    pub task_ptr: u64,
}

/// The status a zombie's parent will read from `wait()`: exit code or signal.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ExitStatus {
    /// exit(code).
    Code(u8),
    /// Killed by this signal.
    Signal { signal: u8, core_dumped: bool },
}

impl ExitStatus {
    /// Decodes a wait status as the kernel stores it in `exit_code`.
    pub const fn from_raw(raw: u32) -> Self {
        let sig = (raw & 0x7f) as u8;
        if sig == 0 {
            ExitStatus::Code(((raw >> 8) & 0xff) as u8)
        } else {
            ExitStatus::Signal {
                signal: sig,
                core_dumped: raw & 0x80 != 0,
            }
        }
    }
}
