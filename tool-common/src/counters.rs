//! In-kernel health counters (a per-CPU array indexed by these constants).
//!
//! The ring buffer does not report its own losses and a full hash map refuses inserts
//! silently; the programs count both here so every view can show them.

/// Ring-buffer reservations that failed (an event was lost).
pub const RINGBUF_DROPS: u32 = 0;
/// New threads that could not be tracked because the per-thread map was full.
pub const THREAD_MAP_FULL: u32 = 1;
/// File reads or socket writes left out of the per-thread read→write pairing (the
/// sendfile-eligible flows) because the pairing table was full; the calls themselves
/// are counted.
pub const INFLIGHT_FULL: u32 = 2;
/// Copy-family calls not counted because the per-path map was full.
pub const COPY_MAP_FULL: u32 = 3;
/// Syscalls not counted because the per-process syscall map was full.
pub const SYSCALL_MAP_FULL: u32 = 4;
/// Processes whose command name was not recorded because the per-process name map was
/// full (their name then comes from /proc, or is unknown once they have gone).
pub const COMM_MAP_FULL: u32 = 5;
/// Copy-on-write faults not counted because the per-process fault map was full.
pub const FAULT_MAP_FULL: u32 = 6;
/// Fork-family calls not timed because the per-thread in-flight or per-process map was
/// full.
pub const FORK_MAP_FULL: u32 = 7;
/// Hard IRQs of a line numbered beyond the slots proclens sized at start (an IRQ
/// allocated since): counted here, not per line.
pub const IRQ_UNTRACKED: u32 = 8;
/// Interrupt time not charged to its victim because the per-process victim map was full
/// (it is still in the per-CPU and per-kind figures).
pub const VICTIM_MAP_FULL: u32 = 9;
/// Blocked time not charged to its syscall because the per-process wait map was full
/// (it is still in the thread's blocked time).
pub const WAIT_MAP_FULL: u32 = 10;
/// Readiness calls not counted, or epoll interest sets not kept, because a readiness
/// map was full.
pub const READY_MAP_FULL: u32 = 11;
/// Number of counters in the array.
pub const COUNT: u32 = 12;

/// What the counter at `index` counts, for log lines.
pub const fn describe(index: u32) -> &'static str {
    match index {
        RINGBUF_DROPS => "event ring full, event lost",
        THREAD_MAP_FULL => "thread table full, thread untracked",
        INFLIGHT_FULL => "read/write pairing table full, flow not followed",
        COPY_MAP_FULL => "copy-path table full, call not counted",
        SYSCALL_MAP_FULL => "syscall table full, syscall not counted",
        COMM_MAP_FULL => "command-name table full, name not kept",
        FAULT_MAP_FULL => "fault table full, copy-on-write fault not counted",
        FORK_MAP_FULL => "fork table full, fork call not timed",
        IRQ_UNTRACKED => "IRQ line beyond the lines sized at start, not counted per line",
        VICTIM_MAP_FULL => "victim table full, interrupt time not charged to its process",
        WAIT_MAP_FULL => "wait table full, blocked time not charged to its syscall",
        READY_MAP_FULL => "readiness table full, call or interest set not counted",
        _ => "unknown counter",
    }
}
