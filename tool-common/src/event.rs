//! Events sent to userspace through the ring buffer: lifecycle only, never one per switch.

use crate::switch::ThreadSwitches;

/// The event rings' map names. Each CPU writes its own ring (CPU *c* the ring *c* mod
/// the rings in use), so CPUs never contend for a reservation; userspace merges the
/// rings by time.
pub const RINGS: [&str; 8] = [
    "EVENTS_0", "EVENTS_1", "EVENTS_2", "EVENTS_3", "EVENTS_4", "EVENTS_5", "EVENTS_6", "EVENTS_7",
];

/// Event tags (`EventHeader::kind`). Userspace converts them with `TryFrom`, never by
/// transmuting, so an unknown tag is an error rather than undefined behaviour.
pub mod kind {
    /// A thread made its last switch: its final counts follow.
    pub const THREAD_EXIT: u32 = 1;
    /// Lifecycle events, see `crate::lifecycle`.
    pub const FORK: u32 = 2;
    pub const EXEC: u32 = 3;
    pub const EXIT: u32 = 4;
    pub const WAIT: u32 = 5;
    pub const FREE: u32 = 6;
    /// The fds a program inherited at exec, see `crate::forks::ExecFds`.
    pub const EXEC_FDS: u32 = 7;
}

/// Header of every ring-buffer event.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct EventHeader {
    pub kind: u32,
    /// Thread id the event is about.
    pub tid: u32,
    /// When the event happened: the boot clock (ns since boot, `CLOCK_BOOTTIME`) for
    /// lifecycle events, read before the record is reserved (a fork is stamped with the
    /// child's `start_boottime`, set earlier still); the switch programs' clock (the run
    /// queue's, or the monotonic clock where the kernel lacks it) for a thread exit, whose
    /// time nothing reads.
    pub ts: u64,
}

/// A thread's final switch accounting, sent when it switches out for the last time. The
/// kernel deletes the thread's map entry at the same moment, so a reused thread id starts
/// from zero.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ThreadExit {
    pub header: EventHeader,
    pub stats: ThreadSwitches,
    /// The thread's command name at exit (NUL-padded), so short-lived processes that are
    /// gone before userspace looks them up in /proc still have a name.
    pub comm: [u8; 16],
}
