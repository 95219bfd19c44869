//! Copy paths and mode switches: the wire types of the copy-family syscall accounting and
//! of the per-process syscall counts, aggregated in the kernel (nothing per call crosses
//! to userspace).
//!
//! A *path* is (process, syscall, kind of the source, kind of the destination). The kinds
//! are resolved in the kernel from the fd's inode (`i_mode`), through struct offsets read
//! from the running kernel's BTF and passed at load time.
//!
//! Both syscall programs hang off the raw `sys_enter`/`sys_exit` tracepoints and dispatch
//! on the syscall number (tables per ABI, see [`crate::config::Copies`]); the arguments
//! are read from the task's saved user registers, at the positions of [`args`].

/// The copy-family syscalls, by a small stable id used in map keys (not the syscall
/// number, which differs between architectures and ABIs).
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
    /// recvmmsg/sendmmsg: bytes are the sum of the `msg_len` the kernel wrote back.
    pub const RECVMMSG: u8 = 20;
    pub const SENDMMSG: u8 = 21;
    /// Another process's memory to or from the caller's.
    pub const PROCESS_VM_READV: u8 = 22;
    pub const PROCESS_VM_WRITEV: u8 = 23;
    /// Number of ops.
    pub const COUNT: usize = 24;
    /// Not a copy: fork, vfork, clone and clone3 (this plus 0..3, in that order), in the
    /// dispatch table only when fork calls are timed through the syscall programs (see
    /// `forks` on the kernel side). Userspace never sees these ops.
    pub const FORK_CALLS: u8 = 0x40;
    /// The fork-family calls of [`FORK_CALLS`], in its order.
    pub const FORK_CALL_NAMES: [&str; 4] = ["fork", "vfork", "clone", "clone3"];
    /// No op: a syscall outside the copy family (dispatch tables).
    pub const NONE: u8 = u8::MAX;
    /// Not a syscall: the file→socket flows of a thread that read a file into user memory
    /// and wrote at least those bytes to a socket before its next file read (see
    /// `Pairing::left`). Its `calls` are the file reads that carried them.
    pub const SENDFILE_ELIGIBLE: u8 = 0x80;

    /// Name of each op (the 64-bit syscall's), indexed by op id.
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
        "recvmmsg",
        "sendmmsg",
        "process_vm_readv",
        "process_vm_writev",
    ];

    /// Reads from a file into user memory: the first half of a read+write copy.
    #[inline(always)]
    pub const fn reads_into_user(op: u8) -> bool {
        matches!(op, READ | PREAD64 | READV | PREADV | PREADV2)
    }

    /// Writes user memory out through an fd (to a socket: the second half).
    #[inline(always)]
    pub const fn writes_from_user(op: u8) -> bool {
        matches!(
            op,
            WRITE | PWRITE64 | WRITEV | PWRITEV | PWRITEV2 | SENDTO | SENDMSG | SENDMMSG
        )
    }
}

/// Where each op's operands are among the syscall's arguments (0-based; the same in the
/// 64-bit and 32-bit ABIs for every op traced). `NONE`: the side is user memory.
pub mod args {
    use super::op;

    pub const NONE: u8 = u8::MAX;

    /// (source fd, destination fd) of `op`.
    #[inline(always)]
    pub const fn fds(o: u8) -> (u8, u8) {
        match o {
            op::READ
            | op::PREAD64
            | op::READV
            | op::PREADV
            | op::PREADV2
            | op::RECVFROM
            | op::RECVMSG
            | op::RECVMMSG => (0, NONE),
            op::WRITE
            | op::PWRITE64
            | op::WRITEV
            | op::PWRITEV
            | op::PWRITEV2
            | op::SENDTO
            | op::SENDMSG
            | op::SENDMMSG => (NONE, 0),
            // sendfile(out_fd, in_fd, ...)
            op::SENDFILE64 => (1, 0),
            // splice(fd_in, off_in, fd_out, ...), copy_file_range likewise
            op::SPLICE | op::COPY_FILE_RANGE => (0, 2),
            // tee(fd_in, fd_out, ...)
            op::TEE => (0, 1),
            // vmsplice(fd, ...): the kernel side picks the direction from the pipe's mode
            op::VMSPLICE => (0, 0),
            // mmap(addr, len, prot, flags, fd, off); mmap2 likewise
            op::MMAP => (4, NONE),
            _ => (NONE, NONE),
        }
    }

    /// mmap's length and flags.
    pub const MMAP_LEN: usize = 1;
    pub const MMAP_FLAGS: usize = 3;
    /// recvmmsg/sendmmsg's `struct mmsghdr *msgvec`.
    pub const MMSG_VEC: usize = 1;
    /// The kernel caps `vlen` at `UIO_MAXIOV`: every message of a call is summed.
    pub const MMSG_MAX: u32 = 1024;
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
    /// Another process's memory (`process_vm_readv/writev`).
    pub const PROCESS: u8 = 6;

    /// Kind of an inode from its `i_mode`.
    #[inline(always)]
    #[allow(
        clippy::unreadable_literal,
        reason = "the S_IF* values as <sys/stat.h> writes them"
    )]
    pub const fn from_mode(mode: u16) -> u8 {
        match mode & 0o170000 {
            0o100000 => FILE,
            0o140000 => SOCKET,
            0o010000 => PIPE,
            _ => OTHER,
        }
    }
}

/// `CopyKey::flags`.
pub mod flags {
    /// Made through the 32-bit (compat) syscall ABI of a 64-bit kernel.
    pub const COMPAT: u8 = 1;
}

/// `SysKey::nr` of a 32-bit (compat) syscall: its number in that ABI's table, with this
/// bit set.
pub const COMPAT_NR: u32 = 1 << 31;

/// Key of the per-process path accounting (`COPIES`).
///
/// A process is (`tgid`, `start_ns`): the pid alone is not enough, because a pid freed by
/// one process can be given to the next fork within the same interval (a fork storm wraps
/// `pid_max` in seconds), and the two processes' counts must not merge.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct CopyKey {
    pub tgid: u32,
    /// [`op`] id (or [`op::SENDFILE_ELIGIBLE`]).
    pub op: u8,
    /// [`fd_kind`] of where the bytes come from.
    pub src: u8,
    /// [`fd_kind`] of where the bytes go.
    pub dst: u8,
    /// [`flags`].
    pub flags: u8,
    /// The thread-group leader's `start_boottime` (ns since boot, the clock of
    /// /proc/PID/stat's start time), read through BTF offsets; 0 if it could not be read.
    pub start_ns: u64,
    /// The CPU whose calls these are (see [`SysKey::cpu`]).
    pub cpu: u32,
    pub _pad: u32,
}

impl CopyKey {
    /// The key with its CPU dropped: the same path of every CPU.
    #[must_use]
    pub fn any_cpu(&self) -> Self {
        Self { cpu: 0, ..*self }
    }
}

/// Accounting of one path (per CPU in the kernel, see [`SysKey::cpu`]; userspace sums
/// the CPUs).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct CopyStats {
    /// Bytes moved: the sum of successful calls' return values (for mmap, the mapped
    /// length; for recvmmsg/sendmmsg, the messages' `msg_len`).
    pub bytes: u64,
    /// Calls that succeeded (returned >= 0, including 0 at end of file).
    pub calls: u64,
    /// Calls that failed for another reason than the two below; they move no bytes.
    pub errors: u64,
    /// Calls that returned EAGAIN (a non-blocking fd with nothing to do).
    pub would_block: u64,
    /// Calls interrupted by a signal: EINTR, or one of the kernel's restart codes
    /// (ERESTARTSYS, ERESTARTNOINTR, ERESTARTNOHAND, `ERESTART_RESTARTBLOCK`), after which
    /// the kernel runs the call again (counted again).
    pub interrupted: u64,
}

/// File reads a thread's socket writes may still carry on (see `Pairing::left`).
pub const PAIR_CHUNKS: usize = 4;

/// A thread's read+write pairing, kept between its calls (per thread: `PAIRING`, made at
/// its first file read into user memory).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Pairing {
    /// The thread's process: userspace deletes the entries of threads that have gone, and
    /// a thread id reused by another process starts afresh.
    pub tgid: u32,
    pub _pad: u32,
    /// The thread's last file reads into user memory that its socket writes from user
    /// memory have not carried on in full yet, oldest first: bytes still to be written
    /// (`left`) of each read's `size`; `chunks` are in use. A write is credited to the
    /// oldest first; a read whose bytes have all been written is a file→socket flow
    /// (`op::SENDFILE_ELIGIBLE`). A read still not carried when [`PAIR_CHUNKS`] later
    /// reads came is dropped: its data went elsewhere (a database that reads pages and
    /// answers in fewer bytes).
    pub left: [u64; PAIR_CHUNKS],
    pub size: [u64; PAIR_CHUNKS],
    pub chunks: u64,
}

impl Pairing {
    /// A file read of `bytes` into user memory: queued, the oldest dropped when the
    /// queue is full.
    #[inline(always)]
    pub fn file_read(&mut self, bytes: u64) {
        if self.chunks as usize >= PAIR_CHUNKS {
            self.shift(1);
        }
        let n = self.chunks as usize;
        if let (Some(l), Some(s)) = (self.left.get_mut(n), self.size.get_mut(n)) {
            *l = bytes;
            *s = bytes;
            self.chunks += 1;
        }
    }

    /// A socket write of `bytes` from user memory, credited to the queued reads oldest
    /// first; returns the bytes and the number of reads it completed (carried on in
    /// full), which leave the queue. Credit beyond the queued bytes is no file data.
    #[inline(always)]
    pub fn socket_write(&mut self, bytes: u64) -> (u64, u64) {
        let (mut credit, mut carried, mut reads) = (bytes, 0u64, 0u64);
        for i in 0..PAIR_CHUNKS {
            if i as u64 >= self.chunks || credit == 0 {
                break;
            }
            let (Some(l), Some(s)) = (self.left.get_mut(i), self.size.get(i)) else {
                break;
            };
            let c = if credit < *l { credit } else { *l };
            *l -= c;
            credit -= c;
            if *l == 0 {
                carried += *s;
                reads += 1;
            }
        }
        if reads > 0 {
            self.shift(reads as usize);
        }
        (carried, reads)
    }

    /// Drops the `k` oldest queued reads.
    #[inline(always)]
    fn shift(&mut self, k: usize) {
        for i in 0..PAIR_CHUNKS {
            let (l, s) = match (self.left.get(i + k), self.size.get(i + k)) {
                (Some(&l), Some(&s)) => (l, s),
                _ => (0, 0),
            };
            if let (Some(dl), Some(ds)) = (self.left.get_mut(i), self.size.get_mut(i)) {
                *dl = l;
                *ds = s;
            }
        }
        self.chunks = self.chunks.saturating_sub(k as u64);
    }
}

/// Key of the per-process syscall counts (`SYSCALLS`, a hash of `u64`).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct SysKey {
    pub tgid: u32,
    /// The syscall number in the task's ABI, with [`COMPAT_NR`] set for a 32-bit one.
    pub nr: u32,
    /// The thread-group leader's `start_boottime`, as in [`CopyKey::start_ns`].
    pub start_ns: u64,
    /// The CPU that counted: each CPU has its own entries (no two CPUs write one, as
    /// with a per-CPU map), but only for the processes that ran on it; userspace sums
    /// them. A per-CPU hash preallocates every entry's value on every possible CPU, one
    /// allocation each (~0.5 s for 2 x 65,536 entries at every start on this machine).
    pub cpu: u32,
    pub _pad: u32,
}

impl SysKey {
    /// The key with its CPU dropped: the same count of every CPU.
    #[must_use]
    pub fn any_cpu(&self) -> Self {
        Self { cpu: 0, ..*self }
    }
}

/// Key of the per-process command names (`COMMS`): a process, as in [`CopyKey`].
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ProcKey {
    pub tgid: u32,
    pub _pad: u32,
    pub start_ns: u64,
}

/// The outcome of a syscall by its return value, as the copy accounting splits it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Outcome {
    Done,
    WouldBlock,
    Interrupted,
    Failed,
}

impl Outcome {
    /// Failures are -errno (-4095..-1); an mmap address is never in that range. The
    /// restart codes (512..516) never reach user space but do reach `sys_exit`.
    #[inline(always)]
    pub const fn of(ret: i64) -> Self {
        const EINTR: i64 = 4;
        const EAGAIN: i64 = 11;
        const ERESTARTSYS: i64 = 512;
        const ERESTARTNOINTR: i64 = 513;
        const ERESTARTNOHAND: i64 = 514;
        const ERESTART_RESTARTBLOCK: i64 = 516;
        if ret >= 0 || ret < -4095 {
            return Outcome::Done;
        }
        match -ret {
            EAGAIN => Outcome::WouldBlock,
            EINTR | ERESTARTSYS | ERESTARTNOINTR | ERESTARTNOHAND | ERESTART_RESTARTBLOCK => {
                Outcome::Interrupted
            }
            _ => Outcome::Failed,
        }
    }
}

#[cfg(test)]
mod tests;
