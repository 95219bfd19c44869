//! Copy paths per process: bytes, calls and failed calls per (syscall, source kind,
//! destination kind), interval deltas and totals since start, and the numbers derived from
//! them: bytes copied through user buffers, copied inside the kernel, and moved without a
//! copy (pages referenced); and what sendfile would save the file→socket flows a thread
//! made with read+write.

use std::collections::{BTreeMap, HashMap};

use proclens_common::copies::{CopyKey, CopyStats, fd_kind, op};

use super::proctable::Key;

/// How a path moves its bytes. The rules are the kernel's (fs/splice.c, net/): what a
/// syscall does with each kind of source and destination, stated in `copies --help`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Class {
    /// The CPU copies every byte between a kernel buffer and the caller's memory (the
    /// read/write and recv/send families, recvmmsg/sendmmsg, vmsplice out of a pipe), or
    /// between two processes' memory (`process_vm_readv/writev`).
    UserCopy,
    /// The bytes never enter user space, but the CPU copies them inside the kernel:
    /// `copy_file_range` (see [`Class::of`] on reflinks), splice out of a socket or a
    /// device, splice into a file, sendfile to anything but a socket or pipe.
    InKernelCopy,
    /// No byte is copied: pages are referenced (splice from a file into a pipe, from a pipe
    /// into a socket or pipe, tee, vmsplice into a pipe, sendfile from a file to a socket
    /// or pipe). Into a socket this assumes a device with scatter-gather DMA and no
    /// software TLS on the socket: without them the kernel copies.
    ZeroCopy,
    /// A file-backed mmap: "bytes" is the mapped length (later access copies nothing
    /// through a syscall).
    Mmap,
}

impl Class {
    /// The class of `op` from `src` to `dst`. `copy_file_range` is counted as an in-kernel
    /// copy: a filesystem that can clone (btrfs, XFS with reflink) may share the extents
    /// instead, which no syscall result tells apart.
    #[allow(
        clippy::match_same_arms,
        reason = "vmsplice's zero-copy arm must come after its user-copy one"
    )]
    pub fn of(op: u8, src: u8, dst: u8) -> Self {
        use fd_kind::{FILE, PIPE, SOCKET, USER};
        match (op, src, dst) {
            (op::MMAP, _, _) => Class::Mmap,
            (op::SENDFILE64, FILE, SOCKET | PIPE)
            | (op::SPLICE, FILE, PIPE)
            | (op::SPLICE, PIPE, SOCKET | PIPE)
            | (op::TEE, _, _) => Class::ZeroCopy,
            (op::VMSPLICE, _, USER) => Class::UserCopy,
            (op::VMSPLICE, _, _) => Class::ZeroCopy,
            (op::SENDFILE64 | op::SPLICE | op::COPY_FILE_RANGE, _, _) => Class::InKernelCopy,
            _ => Class::UserCopy,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Class::UserCopy => "user_copy",
            Class::InKernelCopy => "in_kernel_copy",
            Class::ZeroCopy => "zero_copy",
            Class::Mmap => "mmap",
        }
    }
}

/// The syscall's name as a user calls it (`sendfile`, not the tracepoint's `sendfile64`).
pub fn op_name(op: u8) -> &'static str {
    match op {
        op::SENDFILE64 => "sendfile",
        o => op::NAMES.get(o as usize).copied().unwrap_or("?"),
    }
}

pub fn kind_name(kind: u8) -> &'static str {
    match kind {
        fd_kind::FILE => "file",
        fd_kind::SOCKET => "socket",
        fd_kind::PIPE => "pipe",
        fd_kind::OTHER => "other",
        fd_kind::USER => "user",
        fd_kind::PROCESS => "process",
        _ => "unknown",
    }
}

/// Bytes, successful calls and failed calls of a path.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Counts {
    pub bytes: u64,
    pub calls: u64,
    /// Failed calls other than the two below.
    pub errors: u64,
    /// Calls that returned EAGAIN (nothing to do on a non-blocking fd): not errors.
    pub would_block: u64,
    /// Calls interrupted by a signal (EINTR, or restarted by the kernel): not errors.
    pub interrupted: u64,
}

impl From<CopyStats> for Counts {
    fn from(s: CopyStats) -> Self {
        Self {
            bytes: s.bytes,
            calls: s.calls,
            errors: s.errors,
            would_block: s.would_block,
            interrupted: s.interrupted,
        }
    }
}

impl Counts {
    fn fields(&self) -> [u64; 5] {
        [
            self.bytes,
            self.calls,
            self.errors,
            self.would_block,
            self.interrupted,
        ]
    }

    /// `self - earlier`; a counter that went back means the entry was recreated, and the
    /// whole value is new.
    pub fn since(&self, earlier: &Counts) -> Counts {
        if self
            .fields()
            .iter()
            .zip(earlier.fields())
            .any(|(a, b)| *a < b)
        {
            return *self;
        }
        Counts {
            bytes: self.bytes - earlier.bytes,
            calls: self.calls - earlier.calls,
            errors: self.errors - earlier.errors,
            would_block: self.would_block - earlier.would_block,
            interrupted: self.interrupted - earlier.interrupted,
        }
    }

    pub fn add(&mut self, o: &Counts) {
        self.bytes += o.bytes;
        self.calls += o.calls;
        self.errors += o.errors;
        self.would_block += o.would_block;
        self.interrupted += o.interrupted;
    }

    pub fn is_zero(&self) -> bool {
        *self == Counts::default()
    }

    /// Average bytes per successful call.
    pub fn avg_bytes(&self) -> f64 {
        if self.calls == 0 {
            0.0
        } else {
            self.bytes as f64 / self.calls as f64
        }
    }
}

/// One path of a process.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PathRow {
    pub op: u8,
    pub src: u8,
    pub dst: u8,
    /// `proclens_common::copies::flags` (the 32-bit ABI).
    pub flags: u8,
    pub delta: Counts,
    pub total: Counts,
}

impl PathRow {
    pub fn class(&self) -> Class {
        Class::of(self.op, self.src, self.dst)
    }

    /// `file->socket`, `user->pipe`, ...
    pub fn kinds(&self) -> String {
        format!("{}->{}", kind_name(self.src), kind_name(self.dst))
    }
}

/// What sendfile would have saved the file→socket flows a thread made with read+write
/// (the model stated in `proclens copies --help`):
///
/// - eligible bytes `E`: file reads into user memory (read, pread64, readv, preadv,
///   preadv2) whose bytes the same thread then wrote, all of them, to sockets from user
///   memory; the kernel pairs them per thread, writes credited to the oldest of its last
///   four reads first (`Pairing::socket_write`, `op::SENDFILE_ELIGIBLE`);
/// - `read()+write()` copies each of those bytes twice with the CPU (kernel→user,
///   user→kernel); `sendfile()` none through user space: `cpu_copy_bytes = 2·E`;
/// - sendfile replaces the file reads that carried `E` (`syscalls`), each a
///   user→kernel→user round trip: `mode_switches = 2·syscalls`.
///
/// Assumed: a device with scatter-gather DMA (otherwise sendfile copies inside the
/// kernel, still once less than read+write), and no encryption in user space: a TLS
/// server sends ciphertext, not the file, and can use sendfile only with kernel TLS.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SendfileSaving {
    pub eligible_bytes: u64,
    pub cpu_copy_bytes: u64,
    pub syscalls: u64,
    pub mode_switches: u64,
}

impl SendfileSaving {
    fn of(flows: &Counts) -> Self {
        Self {
            eligible_bytes: flows.bytes,
            cpu_copy_bytes: 2 * flows.bytes,
            syscalls: flows.calls,
            mode_switches: 2 * flows.calls,
        }
    }
}

/// Numbers derived from a set of paths (an interval's deltas or the totals).
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Derived {
    /// Bytes the CPU copied through user memory ([`Class::UserCopy`]).
    pub user_copy_bytes: u64,
    /// Bytes the CPU copied inside the kernel ([`Class::InKernelCopy`]).
    pub in_kernel_copy_bytes: u64,
    /// Bytes moved by reference, not copied ([`Class::ZeroCopy`]).
    pub zero_copy_bytes: u64,
    /// File-backed mmap calls and mapped bytes.
    pub mmap_calls: u64,
    pub mmap_bytes: u64,
    /// All successful copy-family calls except mmap, and their failures: errors,
    /// would-blocks and interruptions apart.
    pub calls: u64,
    pub errors: u64,
    pub would_block: u64,
    pub interrupted: u64,
    pub sendfile: SendfileSaving,
}

impl Derived {
    /// `zero_copy / (user_copy + in_kernel_copy + zero_copy)` in percent; 0 when nothing
    /// moved.
    pub fn zero_copy_pct(&self) -> f64 {
        super::rates::percent(
            self.zero_copy_bytes,
            self.user_copy_bytes + self.in_kernel_copy_bytes + self.zero_copy_bytes,
        )
    }

    /// From paths with the counts to use (interval or total) and the file→socket flows'.
    pub fn from_paths<'a>(
        paths: impl Iterator<Item = (&'a PathRow, Counts)>,
        flows: Counts,
    ) -> Self {
        let mut d = Derived {
            sendfile: SendfileSaving::of(&flows),
            ..Derived::default()
        };
        for (p, c) in paths {
            d.errors += c.errors;
            d.would_block += c.would_block;
            d.interrupted += c.interrupted;
            let class = p.class();
            if class == Class::Mmap {
                d.mmap_calls += c.calls;
                d.mmap_bytes += c.bytes;
                continue;
            }
            d.calls += c.calls;
            match class {
                Class::UserCopy => d.user_copy_bytes += c.bytes,
                Class::InKernelCopy => d.in_kernel_copy_bytes += c.bytes,
                Class::ZeroCopy => d.zero_copy_bytes += c.bytes,
                Class::Mmap => {}
            }
        }
        d
    }
}

/// A process's copy paths, busiest first, and its file→socket flows.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ProcCopies {
    pub paths: Vec<PathRow>,
    /// Bytes its threads read from files and then wrote to sockets, and the file reads
    /// that carried them (see [`SendfileSaving`]): interval, since start.
    pub flows: (Counts, Counts),
}

impl ProcCopies {
    pub fn interval(&self) -> Derived {
        Derived::from_paths(self.paths.iter().map(|p| (p, p.delta)), self.flows.0)
    }

    pub fn since_start(&self) -> Derived {
        Derived::from_paths(self.paths.iter().map(|p| (p, p.total)), self.flows.1)
    }

    /// Sum over a syscall's paths (all fd kinds): (interval, since start).
    #[allow(dead_code, reason = "model API for the `top`/`run` integration")]
    pub fn op_counts(&self, op: u8) -> (Counts, Counts) {
        let (mut d, mut t) = (Counts::default(), Counts::default());
        for p in self.paths.iter().filter(|p| p.op == op) {
            d.add(&p.delta);
            t.add(&p.total);
        }
        (d, t)
    }

    /// The path `op` from `src` to `dst`, if the process used it.
    #[allow(dead_code, reason = "model API for the `top`/`run` integration")]
    pub fn path(&self, op: u8, src: u8, dst: u8) -> Option<&PathRow> {
        self.paths
            .iter()
            .find(|p| p.op == op && p.src == src && p.dst == dst)
    }
}

/// Turns successive snapshots of the `COPIES` map into per-process paths, by (tgid, leader
/// start): two processes that had the same pid are two entries. Processes missing from a
/// snapshot (gone and pruned) are forgotten.
#[derive(Debug, Default)]
pub struct CopyModel {
    last: HashMap<CopyKey, Counts>,
}

impl CopyModel {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn update(&mut self, snapshot: &HashMap<CopyKey, CopyStats>) -> BTreeMap<Key, ProcCopies> {
        let mut out: BTreeMap<Key, ProcCopies> = BTreeMap::new();
        let mut last = HashMap::with_capacity(snapshot.len());
        for (k, s) in snapshot {
            let total = Counts::from(*s);
            let delta = self.last.get(k).map_or(total, |prev| total.since(prev));
            last.insert(*k, total);
            let proc = Key {
                tgid: k.tgid,
                start_ns: k.start_ns,
            };
            let p = out.entry(proc).or_default();
            if k.op == op::SENDFILE_ELIGIBLE {
                p.flows.0.add(&delta);
                p.flows.1.add(&total);
                continue;
            }
            p.paths.push(PathRow {
                op: k.op,
                src: k.src,
                dst: k.dst,
                flags: k.flags,
                delta,
                total,
            });
        }
        for p in out.values_mut() {
            p.paths.sort_by(|a, b| {
                b.delta
                    .bytes
                    .cmp(&a.delta.bytes)
                    .then(b.total.bytes.cmp(&a.total.bytes))
                    .then((a.op, a.src, a.dst, a.flags).cmp(&(b.op, b.src, b.dst, b.flags)))
            });
        }
        self.last = last;
        out
    }
}

#[cfg(test)]
mod tests;
