//! Copy paths and mode switches: the wire types of the copy-family syscall accounting and
//! of the per-process syscall counts, aggregated in the kernel (nothing per call crosses
//! to userspace).
//!
//! A *path* is (process, syscall, kind of the source, kind of the destination). The kinds
//! are resolved in the kernel from the fd's inode (`i_mode`), through struct offsets read
//! from the running kernel's BTF and passed at load time.

/// The copy-family syscalls, by a small stable id used in map keys (not the syscall
/// number, which differs between architectures).
pub mod op {
    pub const READ: u8 = 0;
    pub const WRITE: u8 = 1;
    pub const PREAD64: u8 = 2;
    pub const PWRITE64: u8 = 3;
    pub const READV: u8 = 4;
    pub const WRITEV: u8 = 5;
    pub const PREADV: u8 = 6;
    pub const PWRITEV: u8 = 7;
    pub const PREADV2: u8 = 8;
    pub const PWRITEV2: u8 = 9;
    pub const RECVFROM: u8 = 10;
    pub const SENDTO: u8 = 11;
    pub const RECVMSG: u8 = 12;
    pub const SENDMSG: u8 = 13;
    pub const SENDFILE64: u8 = 14;
    pub const SPLICE: u8 = 15;
    pub const VMSPLICE: u8 = 16;
    pub const TEE: u8 = 17;
    pub const COPY_FILE_RANGE: u8 = 18;
    /// File-backed mmap: "bytes" is the mapped length, not bytes moved.
    pub const MMAP: u8 = 19;
    /// Number of ops.
    pub const COUNT: usize = 20;

    /// Tracepoint suffix (`syscalls/sys_enter_<name>`) of each op, indexed by op id.
    pub const NAMES: [&str; COUNT] = [
        "read",
        "write",
        "pread64",
        "pwrite64",
        "readv",
        "writev",
        "preadv",
        "pwritev",
        "preadv2",
        "pwritev2",
        "recvfrom",
        "sendto",
        "recvmsg",
        "sendmsg",
        "sendfile64",
        "splice",
        "vmsplice",
        "tee",
        "copy_file_range",
        "mmap",
    ];
}

/// What is at either end of a copy.
pub mod fd_kind {
    /// The fd could not be resolved (not open: the call fails with EBADF).
    pub const UNKNOWN: u8 = 0;
    /// A regular file (`S_IFREG`).
    pub const FILE: u8 = 1;
    /// A socket (`S_IFSOCK`).
    pub const SOCKET: u8 = 2;
    /// A pipe or FIFO (`S_IFIFO`).
    pub const PIPE: u8 = 3;
    /// Anything else: tty, character or block device, eventfd and other anonymous inodes.
    pub const OTHER: u8 = 4;
    /// User memory (the buffer of a read/write-family call).
    pub const USER: u8 = 5;

    /// Kind of an inode from its `i_mode`.
    #[inline(always)]
    pub const fn from_mode(mode: u16) -> u8 {
        match mode & 0o170000 {
            0o100000 => FILE,
            0o140000 => SOCKET,
            0o010000 => PIPE,
            _ => OTHER,
        }
    }
}

/// Per-op record layout of the `syscalls/sys_enter_<op>` tracepoints, from the tracefs
/// format files: byte offsets of the fields the enter program reads, [`NONE`] where the
/// op has no such field. Passed as the load-time global `COPY_LAYOUT`.
pub mod layout {
    /// No such field: the side is user memory (or, for `len`/`flags`, unused).
    pub const NONE: u32 = u32::MAX;
    /// Offsets per op: source fd, destination fd, mmap length, mmap flags.
    pub const SRC: usize = 0;
    pub const DST: usize = 1;
    pub const LEN: usize = 2;
    pub const FLAGS: usize = 3;
    pub const PER_OP: usize = 4;
    pub const SIZE: usize = super::op::COUNT * PER_OP;
}

/// Key of the per-process path accounting (`COPIES`, a per-CPU hash).
///
/// A process is (`tgid`, `start_ns`): the pid alone is not enough, because a pid freed by
/// one process can be given to the next fork within the same interval (a fork storm wraps
/// `pid_max` in seconds), and the two processes' counts must not merge.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct CopyKey {
    pub tgid: u32,
    /// [`op`] id.
    pub op: u8,
    /// [`fd_kind`] of where the bytes come from.
    pub src: u8,
    /// [`fd_kind`] of where the bytes go.
    pub dst: u8,
    pub _pad: u8,
    /// The thread-group leader's `start_boottime` (ns since boot, the clock of
    /// /proc/PID/stat's start time), read through BTF offsets; 0 if it could not be read.
    pub start_ns: u64,
}

/// Accounting of one path (per CPU in the kernel; userspace sums the CPUs).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct CopyStats {
    /// Bytes moved: the sum of successful calls' return values (for mmap, the mapped
    /// length).
    pub bytes: u64,
    /// Calls that succeeded (returned >= 0, including 0 at end of file).
    pub calls: u64,
    /// Calls that failed (returned a negative errno); they move no bytes.
    pub errors: u64,
}

/// A copy-family call between its enter and exit, per thread (`INFLIGHT`).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Inflight {
    pub key: CopyKey,
    /// mmap: the requested length (the mapping's size when the call succeeds).
    pub len: u64,
}

/// Key of the per-process syscall counts (`SYSCALLS`, a per-CPU hash of `u64`).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct SysKey {
    pub tgid: u32,
    /// The syscall number as `raw_syscalls/sys_enter` reports it (the task's ABI).
    pub nr: u32,
    /// The thread-group leader's `start_boottime`, as in [`CopyKey::start_ns`].
    pub start_ns: u64,
}

/// Key of the per-process command names (`COMMS`): a process, as in [`CopyKey`].
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ProcKey {
    pub tgid: u32,
    pub _pad: u32,
    pub start_ns: u64,
}
