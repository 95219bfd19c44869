//! Where blocked time goes: the wire types of off-CPU time by syscall and of the
//! readiness calls' counters (select, poll and epoll), aggregated in the kernel.
//!
//! Off-CPU time: the `sched_switch` program reads the syscall a thread is in when it
//! switches out voluntarily (from its saved user registers), keeps it in the thread's
//! entry (`ThreadSwitches::blocked_in`), and when the block ends (at the thread's next
//! switch out, where its blocked time is credited) adds the blocked time and the switch
//! to that syscall's [`BlockStats`] in `WAITS`, keyed by `copies::SysKey` (process,
//! syscall number with `COMPAT_NR` for a 32-bit one, CPU). A block still open when
//! userspace reads is credited from the live thread iterator, like the blocked time of
//! the switch rows.
//!
//! Readiness: classic tracepoints of the poll family alone (`syscalls/sys_enter_*` and
//! `sys_exit_*`), so no other syscall pays; what a call was handed is kept per thread
//! from its entry to its exit ([`ReadyEntry`]), and its outcome added to [`ReadyStats`] in
//! `READY`, keyed like `WAITS`. The interest sets of epoll instances are kept from
//! `epoll_ctl` (`EPOLL_SETS`).

/// `SysKey::nr` of a block outside any syscall (a page fault, a signal stop, a thread
/// blocked on its way back to user mode).
pub const OUTSIDE_SYSCALL: u32 = 0x7fff_fffe;
/// `SysKey::nr` of a block whose syscall this kernel cannot tell (no `bpf_task_pt_regs`,
/// before 5.15): the time is charged here so that the blocked time still adds up.
pub const UNKNOWN_SYSCALL: u32 = 0x7fff_ffff;

/// Off-CPU time charged to one syscall of one process on one CPU (value of `WAITS`).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct BlockStats {
    /// Time blocked (switched out voluntarily until woken, the run-queue wait after the
    /// wakeup not included), ns.
    pub blocked_ns: u64,
    /// The voluntary switches that began those blocks.
    pub switches: u64,
}

/// The readiness calls, by a small stable id (the index of their syscall numbers in
/// `config::Waits::nr`).
pub mod call {
    pub const SELECT: usize = 0;
    pub const PSELECT6: usize = 1;
    pub const POLL: usize = 2;
    pub const PPOLL: usize = 3;
    pub const EPOLL_WAIT: usize = 4;
    pub const EPOLL_PWAIT: usize = 5;
    pub const EPOLL_PWAIT2: usize = 6;
    /// Not readiness calls: they keep the epoll interest sets.
    pub const EPOLL_CTL: usize = 7;
    pub const EPOLL_CREATE: usize = 8;
    pub const EPOLL_CREATE1: usize = 9;
    /// Number of calls.
    pub const COUNT: usize = 10;
    /// The readiness calls ([`SELECT`] to [`EPOLL_PWAIT2`]).
    pub const READINESS: usize = 7;
    /// Their syscall names (x86-64's), by id.
    pub const NAMES: [&str; COUNT] = [
        "select",
        "pselect6",
        "poll",
        "ppoll",
        "epoll_wait",
        "epoll_pwait",
        "epoll_pwait2",
        "epoll_ctl",
        "epoll_create",
        "epoll_create1",
    ];
    /// Whether call `id` is an epoll wait.
    #[inline(always)]
    pub const fn is_epoll(id: usize) -> bool {
        id >= EPOLL_WAIT && id < READINESS
    }
}

/// `epoll_ctl`'s operations (`EPOLL_CTL_ADD`, `EPOLL_CTL_DEL`; uapi values).
pub const EPOLL_CTL_ADD: u64 = 1;
pub const EPOLL_CTL_DEL: u64 = 2;

/// A readiness call's figures for one process on one CPU (value of `READY`).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ReadyStats {
    /// Calls that returned (whatever they returned).
    pub calls: u64,
    /// fds handed in, summed over the calls that did not fail: select's and poll's
    /// `nfds`, epoll's `maxevents`.
    pub fds_in: u64,
    /// epoll: the instance's interest set at each call that did not fail, summed (as
    /// kept from `epoll_ctl`, see `EPOLL_SETS`); 0 for select and poll.
    pub interest: u64,
    /// Ready fds returned, summed (the positive return values).
    pub ready: u64,
    /// Calls that returned 0: nothing ready before the timeout.
    pub empty: u64,
    /// Calls that failed (EINTR among them); they return nothing ready.
    pub errors: u64,
}

impl ReadyStats {
    /// Calls that did not fail: what the per-call figures are over (a failed call was
    /// handed nothing, and only its error is counted).
    #[must_use]
    pub fn answered(&self) -> u64 {
        self.calls - self.errors
    }

    /// Adds `other`'s figures (another CPU's, or another process's).
    pub fn add(&mut self, other: &ReadyStats) {
        self.calls += other.calls;
        self.fds_in += other.fds_in;
        self.interest += other.interest;
        self.ready += other.ready;
        self.empty += other.empty;
        self.errors += other.errors;
    }
}

/// What a thread's readiness or `epoll_ctl` call was handed, from its entry to its exit
/// (value of `READY_ENTRY`, keyed by thread id).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ReadyEntry {
    /// The thread's process (userspace deletes the entries of threads that have gone).
    pub tgid: u32,
    /// The call's id ([`call`]).
    pub call: u32,
    /// `nfds` or `maxevents` (for `epoll_ctl`: its `op`).
    pub fds_in: u64,
    /// epoll: the interest set's size at entry (for `epoll_ctl`: the epoll fd).
    pub interest: u64,
}

/// Key of `EPOLL_SETS`: an epoll fd of a process.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct EpollKey {
    pub tgid: u32,
    pub epfd: u32,
}
