//! Copy paths per process: bytes, calls and errors per (syscall, source kind, destination
//! kind), interval deltas and totals since start, and the numbers derived from them
//! (bytes copied through user space vs moved inside the kernel, the zero-copy share, and
//! what sendfile would save a process that moves file data to sockets with read+write).

use std::collections::{BTreeMap, HashMap};

use proclens_common::copies::{CopyKey, CopyStats, fd_kind, op};

use super::proctable::Key;

/// How a syscall moves its bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Class {
    /// The CPU copies the bytes between a kernel buffer and the caller's buffer
    /// (read/write, pread/pwrite, readv/writev, preadv(2)/pwritev(2), recv*/send*).
    UserCopy,
    /// The bytes move inside the kernel, never through user space (sendfile, splice, tee,
    /// copy_file_range).
    InKernel,
    /// vmsplice: into a pipe the user pages are referenced, not copied (zero-copy); out
    /// of a pipe they are copied to user memory (a user copy).
    UserPages,
    /// A file-backed mmap: "bytes" is the mapped length (later access copies nothing
    /// through a syscall).
    Mmap,
}

impl Class {
    pub fn of(op: u8) -> Self {
        match op {
            op::SENDFILE64 | op::SPLICE | op::TEE | op::COPY_FILE_RANGE => Class::InKernel,
            op::VMSPLICE => Class::UserPages,
            op::MMAP => Class::Mmap,
            _ => Class::UserCopy,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Class::UserCopy => "user_copy",
            Class::InKernel => "in_kernel",
            Class::UserPages => "user_pages",
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
        _ => "unknown",
    }
}

/// Bytes, successful calls and failed calls of a path.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Counts {
    pub bytes: u64,
    pub calls: u64,
    pub errors: u64,
}

impl From<CopyStats> for Counts {
    fn from(s: CopyStats) -> Self {
        Self {
            bytes: s.bytes,
            calls: s.calls,
            errors: s.errors,
        }
    }
}

impl Counts {
    /// `self - earlier`; a counter that went back means the entry was recreated, and the
    /// whole value is new.
    pub fn since(&self, earlier: &Counts) -> Counts {
        if self.bytes < earlier.bytes || self.calls < earlier.calls || self.errors < earlier.errors
        {
            return *self;
        }
        Counts {
            bytes: self.bytes - earlier.bytes,
            calls: self.calls - earlier.calls,
            errors: self.errors - earlier.errors,
        }
    }

    pub fn add(&mut self, o: &Counts) {
        self.bytes += o.bytes;
        self.calls += o.calls;
        self.errors += o.errors;
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
    pub delta: Counts,
    pub total: Counts,
}

impl PathRow {
    pub fn class(&self) -> Class {
        Class::of(self.op)
    }

    /// `file->socket`, `user->pipe`, ...
    pub fn kinds(&self) -> String {
        format!("{}->{}", kind_name(self.src), kind_name(self.dst))
    }

    /// Whether the CPU copied these bytes through user space.
    pub fn is_user_copy(&self) -> bool {
        match self.class() {
            Class::UserCopy => true,
            Class::UserPages => self.dst == fd_kind::USER,
            Class::InKernel | Class::Mmap => false,
        }
    }

    /// Whether these bytes moved without a CPU copy through user space.
    pub fn is_zero_copy(&self) -> bool {
        match self.class() {
            Class::InKernel => true,
            Class::UserPages => self.dst != fd_kind::USER,
            Class::UserCopy | Class::Mmap => false,
        }
    }
}

/// What sendfile would have saved a process that read file data and wrote to sockets with
/// the read/write family (the model stated in `proclens copies --help`):
///
/// - eligible bytes `E = min(bytes read from regular files, bytes written to sockets)`,
///   both through user buffers;
/// - read()+write() copies each byte twice with the CPU (kernel→user, user→kernel);
///   sendfile() copies none through user space: `cpu_copy_bytes = 2·E`;
/// - read()+write() needs two syscalls per chunk, sendfile() one: the file reads that
///   carried `E` are saved, `syscalls = file_read_calls · E / file_read_bytes`, each a
///   user→kernel→user round trip: `mode_switches = 2 · syscalls`.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct SendfileSaving {
    pub eligible_bytes: u64,
    pub cpu_copy_bytes: u64,
    pub syscalls: f64,
    pub mode_switches: f64,
}

/// Numbers derived from a set of paths (an interval's deltas or the totals).
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Derived {
    /// Bytes the CPU copied through user space.
    pub user_copy_bytes: u64,
    /// Bytes moved inside the kernel or by page reference (sendfile, splice, tee,
    /// copy_file_range, vmsplice into a pipe).
    pub zero_copy_bytes: u64,
    /// File-backed mmap calls and mapped bytes.
    pub mmap_calls: u64,
    pub mmap_bytes: u64,
    /// All successful copy-family calls except mmap, and their failures.
    pub calls: u64,
    pub errors: u64,
    pub sendfile: SendfileSaving,
}

impl Derived {
    /// `zero_copy / (user_copy + zero_copy)` in percent; 0 when nothing moved.
    pub fn zero_copy_pct(&self) -> f64 {
        super::rates::percent(
            self.zero_copy_bytes,
            self.user_copy_bytes + self.zero_copy_bytes,
        )
    }

    pub fn from_paths<'a>(paths: impl Iterator<Item = (&'a PathRow, Counts)>) -> Self {
        let mut d = Derived::default();
        let (mut file_read, mut file_read_calls, mut socket_write) = (0u64, 0u64, 0u64);
        for (p, c) in paths {
            if p.class() == Class::Mmap {
                d.mmap_calls += c.calls;
                d.mmap_bytes += c.bytes;
                d.errors += c.errors;
                continue;
            }
            d.calls += c.calls;
            d.errors += c.errors;
            if p.is_user_copy() {
                d.user_copy_bytes += c.bytes;
                if p.class() == Class::UserCopy && p.src == fd_kind::FILE && p.dst == fd_kind::USER
                {
                    file_read += c.bytes;
                    file_read_calls += c.calls;
                }
                if p.class() == Class::UserCopy
                    && p.src == fd_kind::USER
                    && p.dst == fd_kind::SOCKET
                {
                    socket_write += c.bytes;
                }
            } else if p.is_zero_copy() {
                d.zero_copy_bytes += c.bytes;
            }
        }
        let eligible = file_read.min(socket_write);
        if eligible > 0 {
            let syscalls = file_read_calls as f64 * eligible as f64 / file_read as f64;
            d.sendfile = SendfileSaving {
                eligible_bytes: eligible,
                cpu_copy_bytes: 2 * eligible,
                syscalls,
                mode_switches: 2.0 * syscalls,
            };
        }
        d
    }
}

/// A process's copy paths, busiest first.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ProcCopies {
    pub paths: Vec<PathRow>,
}

impl ProcCopies {
    pub fn interval(&self) -> Derived {
        Derived::from_paths(self.paths.iter().map(|p| (p, p.delta)))
    }

    pub fn since_start(&self) -> Derived {
        Derived::from_paths(self.paths.iter().map(|p| (p, p.total)))
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
            out.entry(proc).or_default().paths.push(PathRow {
                op: k.op,
                src: k.src,
                dst: k.dst,
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
                    .then((a.op, a.src, a.dst).cmp(&(b.op, b.src, b.dst)))
            });
        }
        self.last = last;
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(tgid: u32, op: u8, src: u8, dst: u8) -> CopyKey {
        CopyKey {
            tgid,
            op,
            src,
            dst,
            _pad: 0,
            start_ns: 1000,
        }
    }

    fn proc(tgid: u32) -> Key {
        Key {
            tgid,
            start_ns: 1000,
        }
    }

    fn stats(bytes: u64, calls: u64, errors: u64) -> CopyStats {
        CopyStats {
            bytes,
            calls,
            errors,
        }
    }

    #[test]
    fn deltas_and_totals_per_path() {
        let mut m = CopyModel::new();
        let k = key(7, op::SENDFILE64, fd_kind::FILE, fd_kind::SOCKET);
        m.update(&HashMap::from([(k, stats(100, 1, 0))]));
        let out = m.update(&HashMap::from([(k, stats(350, 3, 1))]));
        let p = out[&proc(7)]
            .path(op::SENDFILE64, fd_kind::FILE, fd_kind::SOCKET)
            .unwrap();
        assert_eq!(
            p.delta,
            Counts {
                bytes: 250,
                calls: 2,
                errors: 1
            }
        );
        assert_eq!(
            p.total,
            Counts {
                bytes: 350,
                calls: 3,
                errors: 1
            }
        );
        assert_eq!(p.kinds(), "file->socket");
        assert_eq!(op_name(p.op), "sendfile");
        assert_eq!(p.class(), Class::InKernel);
        assert!(
            m.update(&HashMap::new()).is_empty(),
            "pruned processes are forgotten"
        );
    }

    #[test]
    fn zero_copy_share_and_classes() {
        let mut m = CopyModel::new();
        let out = m.update(&HashMap::from([
            (
                key(1, op::READ, fd_kind::PIPE, fd_kind::USER),
                stats(300, 3, 0),
            ),
            (
                key(1, op::SPLICE, fd_kind::FILE, fd_kind::PIPE),
                stats(600, 1, 0),
            ),
            (
                key(1, op::VMSPLICE, fd_kind::USER, fd_kind::PIPE),
                stats(100, 1, 0),
            ),
            (
                key(1, op::VMSPLICE, fd_kind::PIPE, fd_kind::USER),
                stats(50, 1, 0),
            ),
            (
                key(1, op::MMAP, fd_kind::FILE, fd_kind::USER),
                stats(4096, 2, 1),
            ),
        ]));
        let d = out[&proc(1)].interval();
        assert_eq!(d.user_copy_bytes, 350);
        assert_eq!(d.zero_copy_bytes, 700);
        assert!((d.zero_copy_pct() - 200.0 / 3.0).abs() < 1e-9);
        assert_eq!((d.mmap_calls, d.mmap_bytes), (2, 4096));
        assert_eq!((d.calls, d.errors), (6, 1));
        assert_eq!(
            d.sendfile,
            SendfileSaving::default(),
            "no file→socket read+write"
        );
    }

    #[test]
    fn sendfile_saving_model() {
        let mut m = CopyModel::new();
        // 8 MiB read from a file in 128 calls, 4 MiB written to a socket.
        let out = m.update(&HashMap::from([
            (
                key(1, op::READ, fd_kind::FILE, fd_kind::USER),
                stats(8 << 20, 128, 0),
            ),
            (
                key(1, op::WRITE, fd_kind::USER, fd_kind::SOCKET),
                stats(4 << 20, 64, 0),
            ),
            (
                key(1, op::WRITE, fd_kind::USER, fd_kind::PIPE),
                stats(1000, 1, 0),
            ),
        ]));
        let s = out[&proc(1)].interval().sendfile;
        assert_eq!(s.eligible_bytes, 4 << 20);
        assert_eq!(s.cpu_copy_bytes, 8 << 20);
        assert!((s.syscalls - 64.0).abs() < 1e-9);
        assert!((s.mode_switches - 128.0).abs() < 1e-9);
        let (d, t) = out[&proc(1)].op_counts(op::WRITE);
        assert_eq!((d.bytes, t.calls), ((4 << 20) + 1000, 65));
        assert_eq!(out[&proc(1)].paths[0].op, op::READ, "busiest path first");
    }

    /// Issue 7: a pid freed and given to a new process within one interval.
    #[test]
    fn a_reused_pid_is_two_processes() {
        let mut m = CopyModel::new();
        let old = CopyKey {
            start_ns: 5,
            ..key(42, op::WRITE, fd_kind::USER, fd_kind::PIPE)
        };
        let new = CopyKey { start_ns: 9, ..old };
        let out = m.update(&HashMap::from([
            (old, stats(100, 1, 0)),
            (new, stats(7, 7, 0)),
        ]));
        assert_eq!(out.len(), 2);
        let bytes = |start_ns| {
            out[&Key { tgid: 42, start_ns }]
                .path(op::WRITE, fd_kind::USER, fd_kind::PIPE)
                .unwrap()
                .total
                .bytes
        };
        assert_eq!((bytes(5), bytes(9)), (100, 7));
    }

    #[test]
    fn fd_kinds_from_inode_modes() {
        assert_eq!(fd_kind::from_mode(0o100644), fd_kind::FILE);
        assert_eq!(fd_kind::from_mode(0o140777), fd_kind::SOCKET);
        assert_eq!(fd_kind::from_mode(0o010600), fd_kind::PIPE);
        for other in [
            0o020620, /* tty */
            0o060660, /* block */
            0o040755, /* dir */
            0o600,    /* anon inode */
        ] {
            assert_eq!(fd_kind::from_mode(other), fd_kind::OTHER, "{other:o}");
        }
        assert_eq!(kind_name(fd_kind::UNKNOWN), "unknown");
        assert_eq!(kind_name(99), "unknown");
    }

    #[test]
    fn reset_counter_counts_as_new() {
        let c = Counts {
            bytes: 5,
            calls: 1,
            errors: 0,
        };
        assert_eq!(
            c.since(&Counts {
                bytes: 10,
                calls: 2,
                errors: 0
            }),
            c
        );
        assert!(
            (Counts {
                bytes: 10,
                calls: 4,
                errors: 0
            }
            .avg_bytes()
                - 2.5)
                .abs()
                < 1e-9
        );
        assert_eq!(Counts::default().avg_bytes(), 0.0);
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(256))]

        /// Any op or fd-kind code in a map key gets a name and a class: the table's for
        /// known codes, `?`/`unknown` for others.
        #[test]
        fn proptest_any_code_is_named(code in proptest::prelude::any::<u8>()) {
            let known_op = (code as usize) < op::COUNT;
            proptest::prop_assert_eq!(op_name(code) == "?", !known_op);
            if known_op && code != op::SENDFILE64 {
                proptest::prop_assert_eq!(op_name(code), op::NAMES[code as usize]);
            }
            let _ = Class::of(code).as_str();
            let known_kind = [fd_kind::FILE, fd_kind::SOCKET, fd_kind::PIPE, fd_kind::OTHER, fd_kind::USER]
                .contains(&code);
            proptest::prop_assert_eq!(kind_name(code) == "unknown", !known_kind);
        }
    }
}
