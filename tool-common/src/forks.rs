//! After fork: the wire types of the copy-on-write fault counter, of the fork-family
//! syscalls' timing, of the fds a program inherits at exec, and of the fd-table iterator.
//!
//! Faults and fork times are aggregated in the kernel per process (nothing per fault or
//! per fork crosses to userspace); an exec sends one [`ExecFds`] event; the iterator writes
//! one [`FdRecord`] per open fd when userspace reads it.
//!
//! A process is (`tgid`, `start_ns`: its leader's `start_boottime`), as in the copy maps:
//! a pid reused within one interval names another process.

use crate::{
    event::EventHeader,
    lifecycle::{COMM_LEN, FILENAME_LEN, TaskRef},
};

/// [`FaultKey::flags`] bits: what the faulting process's address space is.
pub mod fault_flags {
    /// Inherited through fork, and the process has not exec'd since (the task's
    /// `self_exec_id` still equals its `parent_exec_id`): the pages it copies were shared
    /// with its parent at fork.
    pub const INHERITED: u32 = 1;
    /// The process itself has made a child process (fork, or clone without `CLONE_VM`)
    /// since tracing began: its pages may be shared with that child.
    pub const AFTER_FORK: u32 = 2;
    /// The fault hit a hugetlb mapping: the kernel copies a whole huge page, of
    /// `1 << ((flags >> HUGE_SHIFT_AT) & 0xff)` bytes.
    pub const HUGETLB: u32 = 4;
    /// Where the huge page's size (its log2) sits in the flags.
    pub const HUGE_SHIFT_AT: u32 = 8;

    /// The bytes one fault with `flags` copies: the huge page's size for a hugetlb
    /// fault, else `base` (the base page size).
    pub const fn bytes(flags: u32, base: u64) -> u64 {
        if flags & HUGETLB != 0 {
            1u64 << ((flags >> HUGE_SHIFT_AT) & 0x3f)
        } else {
            base
        }
    }
}

/// Key of the per-process copy-on-write fault counts (`COW_FAULTS`, a per-CPU hash of
/// `u64`).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct FaultKey {
    pub tgid: u32,
    /// [`fault_flags`].
    pub flags: u32,
    /// The thread-group leader's `start_boottime` (0 if it could not be read).
    pub start_ns: u64,
}

/// What a fork-family call made, by the clone flags: an index of [`ForkTimes`]' arrays.
pub mod fork_kind {
    /// A process with a copy of the caller's address space (fork, clone without
    /// `CLONE_VM`): the only kind after which copy-on-write faults follow.
    pub const FORK: usize = 0;
    /// `CLONE_VFORK` (vfork, `posix_spawn`): the caller waits until the child execs or
    /// exits, and that wait is part of the call's time.
    pub const VFORK: usize = 1;
    /// A process sharing the caller's address space (`CLONE_VM` without `CLONE_VFORK`
    /// or `CLONE_THREAD`).
    pub const SHARED_VM: usize = 2;
    /// A thread (`CLONE_THREAD`).
    pub const THREAD: usize = 3;
    pub const COUNT: usize = 4;

    /// `ForkInflight::kind` bit: the child gets a copy of the caller's address space (no
    /// `CLONE_VM`): fork, clone, and also a `CLONE_VFORK` clone without `CLONE_VM`, which
    /// waits like vfork (its kind) but write-protects the caller's pages like fork.
    pub const COPIES_MM: u32 = 1 << 8;

    /// `ForkInflight::kind` of a clone with these flags: its kind, and [`COPIES_MM`].
    #[inline(always)]
    pub const fn inflight_of_clone_flags(flags: u64) -> u32 {
        const CLONE_VM: u64 = 0x100;
        let copies = if flags & CLONE_VM == 0 { COPIES_MM } else { 0 };
        of_clone_flags(flags) as u32 | copies
    }

    /// The kind of a clone with these flags (the UAPI's values, stable on every
    /// architecture).
    #[inline(always)]
    pub const fn of_clone_flags(flags: u64) -> usize {
        const CLONE_VM: u64 = 0x100;
        const CLONE_VFORK: u64 = 0x4000;
        const CLONE_THREAD: u64 = 0x10000;
        if flags & CLONE_THREAD != 0 {
            THREAD
        } else if flags & CLONE_VFORK != 0 {
            VFORK
        } else if flags & CLONE_VM != 0 {
            SHARED_VM
        } else {
            FORK
        }
    }
}

/// A process's fork-family calls (per CPU in the kernel; userspace sums the CPUs).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ForkTimes {
    /// Calls that succeeded, by [`fork_kind`].
    pub calls: [u64; fork_kind::COUNT],
    /// Nanoseconds the caller spent inside those calls (syscall entry to return), by kind.
    pub ns: [u64; fork_kind::COUNT],
    /// Calls that failed (returned a negative errno), any kind.
    pub failed: u64,
}

/// A fork-family call between its entry and its return in the caller (`FORK_INFLIGHT`,
/// by thread id).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ForkInflight {
    /// `bpf_ktime_get_ns` at entry.
    pub start_ns: u64,
    pub tgid: u32,
    /// [`fork_kind`], with [`fork_kind::COPIES_MM`].
    pub kind: u32,
}

/// fds an [`ExecFds`] event describes one by one: 3 to 3 + `LISTED_FDS` - 1 (the count
/// covers them all). One slot per fd number, not a compact list: the program then has one
/// path per slot, which keeps it cheap for the verifier of every kernel (a compact list
/// indexed by a running count made 5.10's and 6.1's verifier explore every count at every
/// step, for minutes under emulation).
pub const LISTED_FDS: usize = 32;

/// The slot of fd `3 + i` in [`ExecFds::fds`].
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct InheritedFd {
    /// The fd, or 0 when it is not open.
    pub fd: u32,
    /// [`crate::copies::fd_kind`] of what it refers to.
    pub kind: u8,
    pub _pad: [u8; 3],
}

/// [`ExecFds::flags`] bits.
pub mod exec_fds_flags {
    /// The fd table was larger than the program scans: `open` and `inherited` count its
    /// first `SCANNED_FDS` fds only.
    pub const TRUNCATED: u32 = 1;
    /// The fd table could not be read.
    pub const UNREADABLE: u32 = 2;
}

/// fds the exec program counts (16 bitmap words, read with one helper call); a larger
/// table is flagged truncated.
pub const SCANNED_FDS: u32 = 1024;

/// `sched_process_exec`: the fds `task` holds as its new program starts. The kernel has
/// closed the close-on-exec ones just before, so every fd here crossed the exec: those
/// above 2 (stdin, stdout, stderr) are leak candidates, fds the new program never opened.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ExecFds {
    pub header: EventHeader,
    pub task: TaskRef,
    /// Open fds (of the first [`SCANNED_FDS`]).
    pub open: u32,
    /// Of which above 2.
    pub inherited: u32,
    /// Of which among the fds `fds` describes (3 to 3 + [`LISTED_FDS`] - 1).
    pub listed: u32,
    /// [`exec_fds_flags`].
    pub flags: u32,
    pub fds: [InheritedFd; LISTED_FDS],
    /// The new program's command name.
    pub comm: [u8; COMM_LEN],
    /// The file exec'd (NUL-terminated; longer paths are cut).
    pub filename: [u8; FILENAME_LEN],
}

impl Default for ExecFds {
    fn default() -> Self {
        Self {
            header: EventHeader::default(),
            task: TaskRef::default(),
            open: 0,
            inherited: 0,
            listed: 0,
            flags: 0,
            fds: [InheritedFd::default(); LISTED_FDS],
            comm: [0; COMM_LEN],
            filename: [0; FILENAME_LEN],
        }
    }
}

/// One open fd, as the task-file iterator writes it (`fd_table`, binary records read back
/// from the iterator's file). Kernel addresses identify what two fds share: they are
/// compared, never dereferenced or shown.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct FdRecord {
    pub tgid: u32,
    pub fd: u32,
    /// The process's leader's `start_boottime`.
    pub start_ns: u64,
    /// The `struct file` (the open file description: offset, flags).
    pub file: u64,
    /// The `files_struct` (the fd table; shared by threads, and by processes created
    /// with `CLONE_FILES`).
    pub files: u64,
    /// [`crate::copies::fd_kind`].
    pub kind: u8,
    /// 1 when the fd is close-on-exec.
    pub cloexec: u8,
    pub _pad: [u8; 2],
    /// The thread the iterator met the table in.
    pub tid: u32,
}

#[cfg(test)]
mod tests {
    use super::fork_kind::*;

    #[test]
    fn a_vfork_without_clone_vm_copies_the_address_space() {
        const CLONE_VM: u64 = 0x100;
        const CLONE_VFORK: u64 = 0x4000;
        const CLONE_THREAD: u64 = 0x10000;
        const SIGCHLD: u64 = 17;
        let k = |f: u64| inflight_of_clone_flags(f);
        assert_eq!(k(SIGCHLD), FORK as u32 | COPIES_MM);
        assert_eq!(k(CLONE_VFORK | SIGCHLD), VFORK as u32 | COPIES_MM);
        assert_eq!(k(CLONE_VFORK | CLONE_VM | SIGCHLD), VFORK as u32);
        assert_eq!(k(CLONE_VM | SIGCHLD), SHARED_VM as u32);
        assert_eq!(k(CLONE_THREAD | CLONE_VM), THREAD as u32);
    }
}
