//! Copy paths and syscall counts: resolving their layouts from the running kernel,
//! attaching the programs, and reading (and pruning) their per-CPU maps.
//!
//! - Record offsets of `syscalls/sys_enter_<op>` / `sys_exit_<op>` come from the tracefs
//!   format files, by field name.
//! - The fd → inode chain (task_struct.files → files_struct.fdt → fdtable.{max_fds,fd} →
//!   file.{f_inode,f_mode} → inode.i_mode) comes from BTF.
//! - `MAP_ANONYMOUS` is the build target's ABI value (libc crate).

use std::{collections::HashMap as StdHashMap, path::Path};

use anyhow::{Context as _, Result, bail};
use aya::{
    Ebpf, EbpfLoader,
    maps::{HashMap, MapData, MapError, PerCpuHashMap},
    programs::{RawTracePoint, TracePoint},
};
use btf_rs::Btf;
use proclens_common::{
    copies::{CopyKey, CopyStats, Inflight, ProcKey, SysKey, layout, op},
    globals,
};

use super::{btf::member_offset, procfs, tracefs};
use crate::{
    error::Fatal,
    model::{copy_report::ProcRow, proctable::Key},
};

/// Field names of each op's `sys_enter_<op>` record: (source fd, destination fd). `None`
/// is user memory. vmsplice's single fd is both (the kernel side picks the direction);
/// mmap's fd is the source, with `len` and `flags` read too.
const FD_FIELDS: [(Option<&str>, Option<&str>); op::COUNT] = [
    (Some("fd"), None),              // read
    (None, Some("fd")),              // write
    (Some("fd"), None),              // pread64
    (None, Some("fd")),              // pwrite64
    (Some("fd"), None),              // readv
    (None, Some("fd")),              // writev
    (Some("fd"), None),              // preadv
    (None, Some("fd")),              // pwritev
    (Some("fd"), None),              // preadv2
    (None, Some("fd")),              // pwritev2
    (Some("fd"), None),              // recvfrom
    (None, Some("fd")),              // sendto
    (Some("fd"), None),              // recvmsg
    (None, Some("fd")),              // sendmsg
    (Some("in_fd"), Some("out_fd")), // sendfile64
    (Some("fd_in"), Some("fd_out")), // splice
    (Some("fd"), Some("fd")),        // vmsplice
    (Some("fdin"), Some("fdout")),   // tee
    (Some("fd_in"), Some("fd_out")), // copy_file_range
    (Some("fd"), None),              // mmap
];

/// What the copy programs need from the running kernel.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CopyLayout {
    /// `[u32; layout::SIZE]`, see `proclens_common::copies::layout`.
    pub offsets: [u32; layout::SIZE],
    /// Offset of `ret` in the `sys_exit_<op>` records (the same in all of them).
    pub exit_ret: u32,
    /// Ops whose tracepoints exist on this kernel.
    pub available: Vec<u8>,
    /// Ops whose tracepoints are missing, with the reason (one warning line each).
    pub missing: Vec<(u8, String)>,
}

/// Offset of an fd/length/flags field: an integer of 4 or 8 bytes (syscall records give
/// every argument an 8-byte slot; the program reads the slot and keeps the low 32 bits of
/// an fd, which is right on little-endian targets, where BPF runs).
fn arg_offset(f: &tracefs::Format, name: &str) -> Result<u32> {
    Ok(f.int_field(name, &[4, 8])?.offset)
}

impl CopyLayout {
    /// Reads the formats of every op's enter and exit tracepoints. A missing op is
    /// recorded (not fatal); a format without the expected fields is an error.
    pub fn from_tracefs(root: &Path) -> Result<Self> {
        let mut offsets = [layout::NONE; layout::SIZE];
        let mut exit_ret = None;
        let mut available = Vec::new();
        let mut missing = Vec::new();
        for (i, name) in op::NAMES.iter().enumerate() {
            let opid = i as u8;
            let (enter, exit) = match (
                tracefs::format(root, "syscalls", &format!("sys_enter_{name}")),
                tracefs::format(root, "syscalls", &format!("sys_exit_{name}")),
            ) {
                (Ok(a), Ok(b)) => (a, b),
                (Err(e), _) | (_, Err(e)) => {
                    missing.push((opid, format!("{e:#}")));
                    continue;
                }
            };
            let base = i * layout::PER_OP;
            let (src, dst) = FD_FIELDS[i];
            if let Some(s) = src {
                offsets[base + layout::SRC] = arg_offset(&enter, s)?;
            }
            if let Some(d) = dst {
                offsets[base + layout::DST] = arg_offset(&enter, d)?;
            }
            if opid == op::MMAP {
                offsets[base + layout::LEN] = arg_offset(&enter, "len")?;
                offsets[base + layout::FLAGS] = arg_offset(&enter, "flags")?;
            }
            let ret = exit.int_field("ret", &[8])?.offset;
            match exit_ret {
                None => exit_ret = Some(ret),
                Some(r) if r != ret => {
                    bail!("sys_exit_{name} places `ret` at {ret}, other sys_exit records at {r}")
                }
                Some(_) => {}
            }
            available.push(opid);
        }
        let exit_ret = exit_ret.ok_or_else(|| {
            Fatal::KernelUnsupported(
                "none of the copy-family syscall tracepoints (syscalls/sys_enter_read, ...) exists on this kernel \
                 (it needs CONFIG_FTRACE_SYSCALLS)"
                    .into(),
            )
        })?;
        Ok(Self {
            offsets,
            exit_ret,
            available,
            missing,
        })
    }
}

/// The fd → inode chain offsets from BTF.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FdOffsets {
    pub task_files: u32,
    pub files_fdt: u32,
    pub fdt_max_fds: u32,
    pub fdt_fd: u32,
    pub file_inode: u32,
    pub file_mode: u32,
    pub inode_mode: u32,
}

impl FdOffsets {
    pub fn from_btf(btf: &Btf) -> Result<Self> {
        Ok(Self {
            task_files: member_offset(btf, "task_struct", "files")?,
            files_fdt: member_offset(btf, "files_struct", "fdt")?,
            fdt_max_fds: member_offset(btf, "fdtable", "max_fds")?,
            fdt_fd: member_offset(btf, "fdtable", "fd")?,
            file_inode: member_offset(btf, "file", "f_inode")?,
            file_mode: member_offset(btf, "file", "f_mode")?,
            inode_mode: member_offset(btf, "inode", "i_mode")?,
        })
    }
}

/// Everything resolved before loading.
#[derive(Debug, Clone)]
pub struct CopyConfig {
    pub layout: CopyLayout,
    pub fd: FdOffsets,
    pub map_anonymous: u64,
}

impl CopyConfig {
    pub fn resolve(root: &Path, btf: &Btf) -> Result<Self> {
        Ok(Self {
            layout: CopyLayout::from_tracefs(root)?,
            fd: FdOffsets::from_btf(btf)?,
            map_anonymous: libc::MAP_ANONYMOUS as u64,
        })
    }

    /// Sets the load-time globals.
    pub fn configure<'a>(&'a self, loader: &mut EbpfLoader<'a>) {
        loader
            .override_global(globals::COPY_LAYOUT, &self.layout.offsets, true)
            .override_global(globals::COPY_EXIT_RET, &self.layout.exit_ret, true)
            .override_global(globals::MAP_ANONYMOUS, &self.map_anonymous, true)
            .override_global(globals::TASK_FILES, &self.fd.task_files, true)
            .override_global(globals::FILES_FDT, &self.fd.files_fdt, true)
            .override_global(globals::FDT_MAX_FDS, &self.fd.fdt_max_fds, true)
            .override_global(globals::FDT_FD, &self.fd.fdt_fd, true)
            .override_global(globals::FILE_INODE, &self.fd.file_inode, true)
            .override_global(globals::FILE_MODE, &self.fd.file_mode, true)
            .override_global(globals::INODE_MODE, &self.fd.inode_mode, true);
    }
}

/// Per-CPU map sizes: as many entries as fit a memory budget for the per-CPU values on
/// this machine's possible CPUs, between a floor and a cap. Entries that do not fit are
/// counted (`syscall_map_full`, `copy_map_full`), never silently dropped.
fn per_cpu_entries(value_size: usize, cpus: usize, cap: u32) -> u32 {
    const BUDGET: usize = 32 << 20;
    let fit = BUDGET / (value_size.max(8) * cpus.max(1));
    (fit.min(cap as usize) as u32).max(4096)
}

/// Sizes `SYSCALLS` and `COPIES` for this machine (before loading), and `COMMS` like
/// `SYSCALLS`: every process with a syscall entry should have room for its name.
pub fn size_maps(loader: &mut EbpfLoader<'_>) {
    let cpus = aya::util::nr_cpus().unwrap_or(1);
    let syscalls = per_cpu_entries(8, cpus, 65536);
    loader
        .map_max_entries("SYSCALLS", syscalls)
        .map_max_entries("COMMS", syscalls)
        .map_max_entries(
            "COPIES",
            per_cpu_entries(size_of::<CopyStats>(), cpus, 32768),
        );
}

/// Attaches the all-syscalls counter (raw tracepoint `sys_enter`, no tracefs needed).
pub fn attach_syscalls(ebpf: &mut Ebpf) -> Result<()> {
    let prog: &mut RawTracePoint = ebpf
        .program_mut("sys_enter_all")
        .context("program sys_enter_all missing from the BPF object")?
        .try_into()?;
    prog.load().context("loading sys_enter_all")?;
    prog.attach("sys_enter")
        .context("attaching to raw tracepoint sys_enter")?;
    Ok(())
}

/// Attaches the copy-family enter programs and the shared exit program.
pub fn attach_copies(ebpf: &mut Ebpf, cfg: &CopyConfig) -> Result<()> {
    for (opid, why) in &cfg.layout.missing {
        eprintln!(
            "proclens: warning: {} is not traced: {why}",
            op::NAMES[*opid as usize]
        );
    }
    for &opid in &cfg.layout.available {
        let name = op::NAMES[opid as usize];
        let prog_name = format!("enter_{name}");
        let prog: &mut TracePoint = ebpf
            .program_mut(&prog_name)
            .with_context(|| format!("program {prog_name} missing from the BPF object"))?
            .try_into()?;
        prog.load()
            .with_context(|| format!("loading {prog_name}"))?;
        prog.attach("syscalls", &format!("sys_enter_{name}"))
            .with_context(|| format!("attaching to syscalls/sys_enter_{name}"))?;
    }
    let exit: &mut TracePoint = ebpf
        .program_mut("copy_exit")
        .context("program copy_exit missing from the BPF object")?
        .try_into()?;
    exit.load().context("loading copy_exit")?;
    for &opid in &cfg.layout.available {
        let name = op::NAMES[opid as usize];
        exit.attach("syscalls", &format!("sys_exit_{name}"))
            .with_context(|| format!("attaching to syscalls/sys_exit_{name}"))?;
    }
    Ok(())
}

/// The per-CPU maps of syscall counts and path totals, and the per-thread calls in flight.
pub struct CopyMaps {
    syscalls: PerCpuHashMap<MapData, SysKey, u64>,
    copies: PerCpuHashMap<MapData, CopyKey, CopyStats>,
    inflight: HashMap<MapData, u32, Inflight>,
    comms: HashMap<MapData, ProcKey, [u8; 16]>,
}

/// A delete that found no entry is not an error: the kernel (or an earlier prune) may
/// have deleted it, or never made it (a full map, counted in the kernel). aya reports it
/// as the syscall's ENOENT, not as `KeyNotFound`.
fn removed(r: Result<(), MapError>) -> Result<(), MapError> {
    match r {
        Err(MapError::KeyNotFound) => Ok(()),
        Err(MapError::SyscallError(e)) if e.io_error.raw_os_error() == Some(libc::ENOENT) => Ok(()),
        other => other,
    }
}

/// One reading of the syscall and copy-path maps.
#[derive(Debug, Default)]
pub struct Snapshot {
    pub copies: StdHashMap<CopyKey, CopyStats>,
    pub syscalls: StdHashMap<SysKey, u64>,
}

/// Upper bound on entries read per walk (the maps' sizes times a margin for restarts).
const WALK_BOUND: usize = 4 * 65536;

impl CopyMaps {
    pub fn take(ebpf: &mut Ebpf) -> Result<Self> {
        Ok(Self {
            syscalls: PerCpuHashMap::try_from(
                ebpf.take_map("SYSCALLS").context("map SYSCALLS missing")?,
            )?,
            copies: PerCpuHashMap::try_from(
                ebpf.take_map("COPIES").context("map COPIES missing")?,
            )?,
            inflight: HashMap::try_from(
                ebpf.take_map("INFLIGHT").context("map INFLIGHT missing")?,
            )?,
            comms: HashMap::try_from(ebpf.take_map("COMMS").context("map COMMS missing")?)?,
        })
    }

    /// Both maps, read once.
    pub fn snapshot(&self) -> Result<Snapshot> {
        Ok(Snapshot {
            copies: self.copies()?,
            syscalls: self.syscalls()?,
        })
    }

    /// Syscall counts per (process, number), summed over CPUs.
    pub fn syscalls(&self) -> Result<StdHashMap<SysKey, u64>> {
        let mut out = StdHashMap::new();
        for (i, item) in self.syscalls.iter().enumerate() {
            if i >= WALK_BOUND {
                break;
            }
            match item {
                Ok((k, per_cpu)) => {
                    out.insert(k, per_cpu.iter().sum());
                }
                Err(MapError::KeyNotFound) => {}
                Err(e) => return Err(e).context("reading SYSCALLS"),
            }
        }
        Ok(out)
    }

    /// Path totals per (process, op, kinds), summed over CPUs.
    pub fn copies(&self) -> Result<StdHashMap<CopyKey, CopyStats>> {
        let mut out = StdHashMap::new();
        for (i, item) in self.copies.iter().enumerate() {
            if i >= WALK_BOUND {
                break;
            }
            match item {
                Ok((k, per_cpu)) => {
                    let mut s = CopyStats::default();
                    for c in per_cpu.iter() {
                        s.bytes += c.bytes;
                        s.calls += c.calls;
                        s.errors += c.errors;
                    }
                    out.insert(k, s);
                }
                Err(MapError::KeyNotFound) => {}
                Err(e) => return Err(e).context("reading COPIES"),
            }
        }
        Ok(out)
    }

    /// The command name the kernel saw for process `key` (see the `COMMS` map), if any.
    pub fn comm(&self, key: Key) -> Option<String> {
        let pk = ProcKey {
            tgid: key.tgid,
            _pad: 0,
            start_ns: key.start_ns,
        };
        let raw = self.comms.get(&pk, 0).ok()?;
        let end = raw.iter().position(|&b| b == 0).unwrap_or(raw.len());
        Some(String::from_utf8_lossy(&raw[..end]).into_owned())
    }

    /// Deletes the entries of processes that have gone (after their last report), so the
    /// maps hold only live processes. A process is (tgid, start): a new process that got a
    /// gone one's pid keeps its entries. The per-thread in-flight slots of threads that no
    /// longer exist are deleted too (the kernel keeps a thread's slot between calls).
    pub fn prune(&mut self, gone: &[Key]) -> Result<()> {
        self.prune_inflight()?;
        if gone.is_empty() {
            return Ok(());
        }
        let gone: std::collections::HashSet<Key> = gone.iter().copied().collect();
        let is_gone = |tgid: u32, start_ns: u64| gone.contains(&Key { tgid, start_ns });
        // The maps are walked again, not the interval's snapshot: a process can exit
        // between the snapshot and the /proc check, and its last syscall (exit_group) makes
        // an entry the snapshot does not have.
        let sys: Vec<SysKey> = self
            .syscalls
            .keys()
            .filter_map(Result::ok)
            .filter(|k| is_gone(k.tgid, k.start_ns))
            .collect();
        for k in sys {
            removed(self.syscalls.remove(&k)).context("pruning SYSCALLS")?;
        }
        let cp: Vec<CopyKey> = self
            .copies
            .keys()
            .filter_map(Result::ok)
            .filter(|k| is_gone(k.tgid, k.start_ns))
            .collect();
        for k in cp {
            removed(self.copies.remove(&k)).context("pruning COPIES")?;
        }
        for k in gone {
            let pk = ProcKey {
                tgid: k.tgid,
                _pad: 0,
                start_ns: k.start_ns,
            };
            removed(self.comms.remove(&pk)).context("pruning COMMS")?;
        }
        Ok(())
    }

    fn prune_inflight(&mut self) -> Result<()> {
        let stale: Vec<u32> = self
            .inflight
            .iter()
            .take(WALK_BOUND)
            .filter_map(Result::ok)
            .filter(|(tid, v)| !Path::new(&format!("/proc/{}/task/{tid}", v.key.tgid)).exists())
            .map(|(tid, _)| tid)
            .collect();
        for tid in stale {
            removed(self.inflight.remove(&tid)).context("pruning INFLIGHT")?;
        }
        Ok(())
    }
}

/// The processes among `rows` that have gone: a pid belongs to one live process at a
/// time, so of several rows with one pid all but the latest started have gone; the latest
/// (or only) one lives while /proc/PID/stat shows its start time (to the clock tick). A
/// row whose start the kernel could not read (0) lives while its pid exists.
pub fn gone_processes(rows: &[ProcRow], tick_ns: u64) -> Vec<Key> {
    let mut latest: std::collections::HashMap<u32, u64> = std::collections::HashMap::new();
    for r in rows {
        let e = latest.entry(r.tgid).or_insert(r.start_ns);
        *e = (*e).max(r.start_ns);
    }
    rows.iter()
        .map(ProcRow::key)
        .filter(|k| {
            if latest.get(&k.tgid).is_some_and(|&l| l > k.start_ns) {
                return true;
            }
            if k.start_ns == 0 {
                return !procfs::exists(k.tgid);
            }
            procfs::stat_of(k.tgid, k.start_ns, tick_ns).is_none()
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::collect::btf::{VMLINUX, load_vmlinux};

    /// A tracefs tree holding only the given `events/syscalls/<name>/format` files.
    struct FakeTracefs(std::path::PathBuf);

    impl FakeTracefs {
        fn new(files: &[(&str, &str)]) -> Self {
            // Unique per call: tests run in parallel and properties make many trees.
            static N: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
            let root = std::env::temp_dir().join(format!(
                "proclens-fake-tracefs-{}-{}",
                std::process::id(),
                N.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
            ));
            let _ = std::fs::remove_dir_all(&root);
            for (name, text) in files {
                let dir = root.join("events/syscalls").join(name);
                std::fs::create_dir_all(&dir).unwrap();
                std::fs::write(dir.join("format"), text).unwrap();
            }
            Self(root)
        }
    }

    impl Drop for FakeTracefs {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }

    const ENTER_READ: &str = include_str!("../../tests/fixtures/6.18-sys_enter_read.format");
    const EXIT_READ: &str = include_str!("../../tests/fixtures/6.18-sys_exit_read.format");
    const ENTER_SENDFILE: &str =
        include_str!("../../tests/fixtures/6.18-sys_enter_sendfile64.format");
    const EXIT_SENDFILE: &str =
        include_str!("../../tests/fixtures/6.18-sys_exit_sendfile64.format");
    const ENTER_MMAP: &str = include_str!("../../tests/fixtures/6.18-sys_enter_mmap.format");
    const EXIT_MMAP: &str = include_str!("../../tests/fixtures/6.18-sys_exit_mmap.format");
    /// The 6.18 formats of read, sendfile64 and mmap, by tracepoint.
    const FORMATS_6_18: [(&str, &str); 6] = [
        ("sys_enter_read", ENTER_READ),
        ("sys_exit_read", EXIT_READ),
        ("sys_enter_sendfile64", ENTER_SENDFILE),
        ("sys_exit_sendfile64", EXIT_SENDFILE),
        ("sys_enter_mmap", ENTER_MMAP),
        ("sys_exit_mmap", EXIT_MMAP),
    ];

    #[test]
    fn layout_from_6_18_formats_with_missing_ops() {
        // An enter without its exit (write): not traceable.
        let fake =
            FakeTracefs::new(&[&FORMATS_6_18[..], &[("sys_enter_write", ENTER_READ)]].concat());
        let l = CopyLayout::from_tracefs(&fake.0).unwrap();
        assert_eq!(l.available, vec![op::READ, op::SENDFILE64, op::MMAP]);
        assert_eq!(l.missing.len(), op::COUNT - 3);
        assert!(
            l.missing
                .iter()
                .any(|(o, why)| *o == op::WRITE && why.contains("sys_exit_write")),
            "{:?}",
            l.missing
        );
        let at = |o: u8, f: usize| l.offsets[o as usize * layout::PER_OP + f];
        assert_eq!(
            (at(op::READ, layout::SRC), at(op::READ, layout::DST)),
            (16, layout::NONE)
        );
        // sendfile64(out_fd, in_fd, ...): the source is in_fd.
        assert_eq!(
            (
                at(op::SENDFILE64, layout::SRC),
                at(op::SENDFILE64, layout::DST)
            ),
            (24, 16)
        );
        assert_eq!(
            (
                at(op::MMAP, layout::SRC),
                at(op::MMAP, layout::LEN),
                at(op::MMAP, layout::FLAGS)
            ),
            (48, 24, 40)
        );
        assert_eq!(
            at(op::WRITE, layout::DST),
            layout::NONE,
            "missing ops keep no offsets"
        );
        assert_eq!(l.exit_ret, 16);
    }

    #[test]
    fn deleting_a_missing_entry_is_not_an_error() {
        let enoent = || {
            Err(MapError::SyscallError(aya::sys::SyscallError {
                call: "bpf_map_delete_elem",
                io_error: std::io::Error::from_raw_os_error(libc::ENOENT),
            }))
        };
        assert!(removed(enoent()).is_ok());
        assert!(removed(Ok(())).is_ok());
        assert!(removed(Err(MapError::KeyNotFound)).is_ok());
        let eperm = Err(MapError::SyscallError(aya::sys::SyscallError {
            call: "bpf_map_delete_elem",
            io_error: std::io::Error::from_raw_os_error(libc::EPERM),
        }));
        assert!(removed(eperm).is_err());
    }

    #[test]
    fn map_sizes_follow_the_cpu_count() {
        assert_eq!(
            per_cpu_entries(8, 2, 65536),
            65536,
            "capped on small machines"
        );
        assert_eq!(
            per_cpu_entries(8, 256, 65536),
            16384,
            "32 MiB / (8 B x 256 CPUs)"
        );
        assert_eq!(per_cpu_entries(24, 4096, 32768), 4096, "floor");
    }

    #[test]
    fn malformed_or_absent_formats_are_errors() {
        // sys_enter_sendfile64 with read's fields: no in_fd/out_fd.
        let fake = FakeTracefs::new(&[
            ("sys_enter_sendfile64", ENTER_READ),
            ("sys_exit_sendfile64", EXIT_SENDFILE),
        ]);
        let err = CopyLayout::from_tracefs(&fake.0).unwrap_err();
        assert!(format!("{err:#}").contains("in_fd"), "{err:#}");
        let empty = FakeTracefs::new(&[]);
        assert!(
            CopyLayout::from_tracefs(&empty.0).is_err(),
            "no copy tracepoint at all"
        );
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(32))]

        /// The 6.18 read/sendfile64/mmap formats, one of them cut short or with a byte
        /// changed: the layout is resolved or rejected, never a panic; when resolved, the
        /// unchanged ops keep their offsets.
        #[test]
        fn proptest_layout_from_mutated_formats(
            which in proptest::prelude::any::<proptest::sample::Index>(),
            at in proptest::prelude::any::<proptest::sample::Index>(),
            byte in proptest::prelude::any::<u8>(),
            cut in proptest::prelude::any::<bool>(),
        ) {
            let mut files = FORMATS_6_18.map(|(n, t)| (n, t.to_string()));
            let i = which.index(files.len());
            let mut b = files[i].1.clone().into_bytes();
            let at = at.index(b.len());
            if cut {
                b.truncate(at);
            } else {
                b[at] = byte;
            }
            files[i].1 = String::from_utf8_lossy(&b).into_owned();
            let fake = FakeTracefs::new(
                &files.iter().map(|(n, t)| (*n, t.as_str())).collect::<Vec<_>>(),
            );
            let whole = FakeTracefs::new(&FORMATS_6_18);
            let want = CopyLayout::from_tracefs(&whole.0).unwrap();
            if let Ok(got) = CopyLayout::from_tracefs(&fake.0) {
                let mutated_op = [op::READ, op::SENDFILE64, op::MMAP][i / 2];
                for o in [op::READ, op::SENDFILE64, op::MMAP] {
                    if o == mutated_op || !got.available.contains(&o) {
                        continue;
                    }
                    let r = o as usize * layout::PER_OP..(o as usize + 1) * layout::PER_OP;
                    proptest::prop_assert_eq!(&got.offsets[r.clone()], &want.offsets[r]);
                }
                proptest::prop_assert!(!got.available.is_empty());
            }
        }
    }

    /// Resolves the layouts from this host's kernel (tracefs and BTF); skipped with a
    /// reason where the host lacks them.
    #[test]
    fn layout_and_offsets_from_the_running_kernel() {
        let root = Path::new("/sys/kernel/tracing");
        if !root.join("events/syscalls").is_dir() || !Path::new(VMLINUX).exists() {
            eprintln!("skipped: tracefs syscalls events or BTF not available on this host");
            return;
        }
        let l = CopyLayout::from_tracefs(root).unwrap();
        assert!(
            l.available.contains(&op::READ) && l.available.contains(&op::SENDFILE64),
            "{l:?}"
        );
        let read = op::READ as usize * layout::PER_OP;
        assert_ne!(l.offsets[read + layout::SRC], layout::NONE);
        assert_eq!(
            l.offsets[read + layout::DST],
            layout::NONE,
            "read writes to user memory"
        );
        let sf = op::SENDFILE64 as usize * layout::PER_OP;
        assert_ne!(l.offsets[sf + layout::SRC], l.offsets[sf + layout::DST]);
        assert!(l.exit_ret >= 8);
        let fd = FdOffsets::from_btf(&load_vmlinux().unwrap()).unwrap();
        for o in [fd.task_files, fd.files_fdt, fd.fdt_fd, fd.file_inode] {
            assert!(o > 0 && o % 8 == 0 && o < 16 * 1024, "{fd:?}");
        }
    }
}
