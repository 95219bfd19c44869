//! What the copy programs need from the running kernel, resolved before loading:
//!
//! - Record offsets of `syscalls/sys_enter_<op>` / `sys_exit_<op>` come from the tracefs
//!   format files, by field name.
//! - The fd → inode chain (task_struct.files → files_struct.fdt → fdtable.{max_fds,fd} →
//!   file.{f_inode,f_mode} → inode.i_mode) comes from BTF.
//! - `MAP_ANONYMOUS` is the build target's ABI value (libc crate).

use std::path::Path;

use anyhow::{Result, bail};
use btf_rs::Btf;
use proclens_common::{
    config,
    copies::{layout, op},
};

use crate::{
    collect::{btf::member_offset, tracefs},
    error::Fatal,
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

    /// The copy programs' load-time globals.
    pub fn config(&self) -> config::Copies {
        config::Copies {
            map_anonymous: self.map_anonymous,
            layout: self.layout.offsets,
            exit_ret: self.layout.exit_ret,
            task_files: self.fd.task_files,
            files_fdt: self.fd.files_fdt,
            fdt_max_fds: self.fd.fdt_max_fds,
            fdt_fd: self.fd.fdt_fd,
            file_inode: self.fd.file_inode,
            file_mode: self.fd.file_mode,
            inode_mode: self.fd.inode_mode,
        }
    }
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

    const ENTER_READ: &str = include_str!("../../../tests/fixtures/6.18-sys_enter_read.format");
    const EXIT_READ: &str = include_str!("../../../tests/fixtures/6.18-sys_exit_read.format");
    const ENTER_SENDFILE: &str =
        include_str!("../../../tests/fixtures/6.18-sys_enter_sendfile64.format");
    const EXIT_SENDFILE: &str =
        include_str!("../../../tests/fixtures/6.18-sys_exit_sendfile64.format");
    const ENTER_MMAP: &str = include_str!("../../../tests/fixtures/6.18-sys_enter_mmap.format");
    const EXIT_MMAP: &str = include_str!("../../../tests/fixtures/6.18-sys_exit_mmap.format");
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
