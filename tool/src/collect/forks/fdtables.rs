//! Every process's open fds now, with what each shares: read by the task-file iterator
//! where the kernel loads it (`fd_table`, struct addresses as identities), else from
//! /proc (`fd/`, `fdinfo/`) with `kcmp(2)` telling which fds name the same open file
//! description and which processes use the same fd table.

use std::{collections::HashMap, fs, io::Read as _, os::unix::fs::MetadataExt as _};

use anyhow::{Context as _, Result};
use aya::programs::{Iter, ProgramError};
use proclens_common::{copies::fd_kind, forks::FdRecord};

use super::layout::ForksConfig;
use crate::{
    collect::{object::Object, procfs, setup},
    model::fdtables::FdEntry,
};

/// The iterator program (tool-ebpf/src/fds.rs).
pub const ITER_PROGRAM: &str = "fd_table";
/// What it iterates over.
pub const ITER_TARGET: &str = "task_file";

/// Which fd tables a view reads at each report, and from where.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum FdTables {
    #[default]
    Off,
    /// From the iterator where it loaded, else /proc.
    Best,
    /// From /proc even where the iterator loaded (to compare the two).
    Proc,
}

/// Where the fd tables are read from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FdSource {
    /// The BPF task-file iterator.
    Iterator,
    /// /proc/PID/fd, fdinfo and kcmp(2).
    Proc,
}

impl FdSource {
    pub fn as_str(self) -> &'static str {
        match self {
            FdSource::Iterator => "bpf_iter",
            FdSource::Proc => "proc",
        }
    }

    /// The iterator when its context is as the program reads it and the kernel loads it;
    /// otherwise /proc, with the reason.
    pub fn choose(
        obj: &mut Object,
        kernel: &aya::Btf,
        cfg: &ForksConfig,
    ) -> (Self, Option<String>) {
        Self::choose_with(cfg, || load_iter(obj, kernel))
    }

    /// [`FdSource::choose`] with `load` loading the iterator (tried only when the
    /// kernel's BTF has what the program reads).
    fn choose_with(cfg: &ForksConfig, load: impl FnOnce() -> Result<()>) -> (Self, Option<String>) {
        let why = match (&cfg.fds_missing, &cfg.iter_missing) {
            (Some(w), _) | (_, Some(w)) => w.clone(),
            (None, None) => match load() {
                Ok(()) => return (FdSource::Iterator, None),
                Err(e) => format!("{e:#}"),
            },
        };
        (FdSource::Proc, Some(why))
    }
}

fn iter_program(obj: &mut Object) -> Result<&mut Iter> {
    Ok(obj
        .program_mut(ITER_PROGRAM)
        .with_context(|| format!("program {ITER_PROGRAM} missing from the BPF object"))?
        .try_into()?)
}

fn load_iter(obj: &mut Object, kernel: &aya::Btf) -> Result<()> {
    setup::load_iter(iter_program(obj)?, ITER_TARGET, kernel)
        .map_err(|e: ProgramError| anyhow::Error::new(e).context("loading iter/task_file"))
}

/// Runs the iterator once: every open fd of every process.
pub fn read_iter(obj: &mut Object) -> Result<Vec<FdEntry>> {
    let prog = iter_program(obj)?;
    let id = prog.attach().context("attaching iter/task_file")?;
    let link = prog.take_link(id)?;
    let mut bytes = Vec::new();
    link.into_file()
        .context("creating the fd-table iterator")?
        .read_to_end(&mut bytes)
        .context("reading the fd-table iterator")?;
    Ok(parse_records(&bytes))
}

/// The iterator's output: whole [`FdRecord`]s, a trailing partial one ignored.
pub fn parse_records(bytes: &[u8]) -> Vec<FdEntry> {
    bytes
        .chunks_exact(size_of::<FdRecord>())
        .map(|c| {
            // SAFETY: the chunk has the record's size; FdRecord is plain integers, valid
            // for any bit pattern; read_unaligned needs no alignment.
            let r: FdRecord = unsafe { std::ptr::read_unaligned(c.as_ptr().cast()) };
            FdEntry {
                tgid: r.tgid,
                start_ns: r.start_ns,
                fd: r.fd,
                kind: r.kind,
                cloexec: r.cloexec != 0,
                desc: r.file,
                table: r.files,
            }
        })
        .collect()
}

/// `kcmp(2)` types (include/uapi/linux/kcmp.h).
const KCMP_FILE: libc::c_long = 0;
const KCMP_FILES: libc::c_long = 2;

/// Whether kcmp says two processes' objects (fds `a` and `b`, or their tables) are one.
fn kcmp(pid1: u32, pid2: u32, kind: libc::c_long, a: u32, b: u32) -> bool {
    // SAFETY: kcmp takes integers only.
    let r = unsafe {
        libc::syscall(
            libc::SYS_kcmp,
            libc::c_long::from(pid1),
            libc::c_long::from(pid2),
            kind,
            libc::c_long::from(a),
            libc::c_long::from(b),
        )
    };
    r == 0
}

/// One fd as /proc shows it.
struct ProcFd {
    tgid: u32,
    start_ns: u64,
    fd: u32,
    kind: u8,
    cloexec: bool,
    inode: (u64, u64),
}

/// The open fds of process `pid` (empty when it has gone or may not be read).
fn proc_fds(pid: u32, start_ns: u64) -> Vec<ProcFd> {
    let Ok(dir) = fs::read_dir(format!("/proc/{pid}/fd")) else {
        return Vec::new();
    };
    dir.flatten()
        .filter_map(|e| {
            let fd: u32 = e.file_name().to_str()?.parse().ok()?;
            // stat follows the magic link to the open file's inode.
            let meta = fs::metadata(e.path()).ok()?;
            let info = fs::read_to_string(format!("/proc/{pid}/fdinfo/{fd}")).ok()?;
            Some(ProcFd {
                tgid: pid,
                start_ns,
                fd,
                kind: fd_kind::from_mode(meta.mode() as u16),
                cloexec: fdinfo_flags(&info).is_some_and(|f| f & libc::O_CLOEXEC as u32 != 0),
                inode: (meta.dev(), meta.ino()),
            })
        })
        .collect()
}

/// The `flags:` line of an fdinfo file (octal), which carries `O_CLOEXEC` for a
/// close-on-exec fd.
pub fn fdinfo_flags(text: &str) -> Option<u32> {
    let v = text.lines().find_map(|l| l.strip_prefix("flags:"))?;
    u32::from_str_radix(v.trim(), 8).ok()
}

/// Numbers the classes of `items` that `same` says are one kernel object; `key`
/// pre-groups them (items that differ there are never one object), so `same` (a kcmp
/// call) runs only within a group, against one member of each class found so far. An
/// unanswered comparison (a process gone, no permission) keeps two items apart.
fn classes<T, K: Ord + Clone>(
    items: &[T],
    key: impl Fn(&T) -> K,
    same: impl Fn(&T, &T) -> bool,
    next: &mut u64,
) -> Vec<u64> {
    let mut groups: std::collections::BTreeMap<K, Vec<usize>> = std::collections::BTreeMap::new();
    for (i, item) in items.iter().enumerate() {
        groups.entry(key(item)).or_default().push(i);
    }
    let mut ids = vec![0u64; items.len()];
    for members in groups.values() {
        // (representative, id) of each class of this group.
        let mut reps: Vec<(usize, u64)> = Vec::new();
        for &i in members {
            ids[i] = if let Some(&(_, id)) = reps.iter().find(|&&(r, _)| same(&items[r], &items[i]))
            {
                id
            } else {
                *next += 1;
                reps.push((i, *next));
                *next
            };
        }
    }
    ids
}

/// Every open fd of the processes `pids` from /proc, descriptions and tables told apart
/// by kcmp(2) (numbered, not addresses).
pub fn read_proc(pids: &[u32]) -> Vec<FdEntry> {
    let tick_ns = procfs::tick_ns();
    let procs: Vec<(u32, u64)> = pids
        .iter()
        .filter_map(|&p| procfs::stat(p).map(|s| (p, s.start_ticks * tick_ns)))
        .collect();
    let fds: Vec<ProcFd> = procs.iter().flat_map(|&(p, s)| proc_fds(p, s)).collect();
    let mut next = 0;
    let desc = classes(
        &fds,
        |f| f.inode,
        |a, b| kcmp(a.tgid, b.tgid, KCMP_FILE, a.fd, b.fd),
        &mut next,
    );
    // Processes that share one table hold the same fds: only those are compared.
    let mut signature: HashMap<u32, Vec<(u32, u64, u64)>> = HashMap::new();
    for f in &fds {
        signature
            .entry(f.tgid)
            .or_default()
            .push((f.fd, f.inode.0, f.inode.1));
    }
    for s in signature.values_mut() {
        s.sort_unstable();
    }
    let tgids: Vec<u32> = procs.iter().map(|p| p.0).collect();
    let tables = classes(
        &tgids,
        |p| signature.get(p).cloned().unwrap_or_default(),
        |a, b| kcmp(*a, *b, KCMP_FILES, 0, 0),
        &mut next,
    );
    let table_of: HashMap<u32, u64> = tgids.into_iter().zip(tables).collect();
    fds.iter()
        .zip(desc)
        .map(|(f, d)| FdEntry {
            tgid: f.tgid,
            start_ns: f.start_ns,
            fd: f.fd,
            kind: f.kind,
            cloexec: f.cloexec,
            desc: d,
            table: table_of.get(&f.tgid).copied().unwrap_or(0),
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fdinfo_flags_are_octal() {
        let info = "pos:\t0\nflags:\t02100002\nmnt_id:\t25\nino:\t7\n";
        let f = fdinfo_flags(info).unwrap();
        assert_ne!(f & libc::O_CLOEXEC as u32, 0);
        assert_eq!(f & 0o3, libc::O_RDWR as u32);
        assert_eq!(fdinfo_flags("pos: 0\n"), None);
        assert_eq!(fdinfo_flags("flags: 9\n"), None, "not octal");
    }

    #[test]
    fn classes_split_key_groups_by_identity() {
        // (key, object): objects equal only when both match.
        let items = [(1, 10), (1, 10), (1, 11), (2, 10), (3, 12)];
        let mut next = 0;
        let ids = classes(&items, |i| i.0, |a, b| a.1 == b.1, &mut next);
        assert_eq!(ids[0], ids[1]);
        assert_ne!(ids[0], ids[2]);
        assert_ne!(ids[0], ids[3], "another key is another object");
        assert_eq!(next, 4);
        // Unanswered comparisons keep items apart.
        let mut next = 0;
        let ids = classes(&items[..2], |i| i.0, |_, _| false, &mut next);
        assert_ne!(ids[0], ids[1]);
    }

    fn config(fds_missing: Option<&str>, iter_missing: Option<&str>) -> ForksConfig {
        ForksConfig {
            cfg: proclens_common::config::Forks::default(),
            faults_missing: None,
            timed: Vec::new(),
            timing: super::super::layout::Timing::Tracepoints,
            timing_missing: Vec::new(),
            fds_missing: fds_missing.map(Into::into),
            iter_missing: iter_missing.map(Into::into),
        }
    }

    /// The iterator where its context is as the program reads it and it loads; else
    /// /proc, saying why, without trying to load what cannot work.
    #[test]
    fn the_source_falls_back_to_proc_and_says_why() {
        let tried = std::cell::Cell::new(false);
        let load_ok = || {
            tried.set(true);
            Ok(())
        };
        assert_eq!(
            FdSource::choose_with(&config(None, None), load_ok),
            (FdSource::Iterator, None)
        );
        assert!(tried.take());
        let missing = "no type bpf_iter__task_file in the kernel's BTF";
        let never = || -> Result<()> { panic!("loaded an iterator the kernel lacks") };
        assert_eq!(
            FdSource::choose_with(&config(None, Some(missing)), never),
            (FdSource::Proc, Some(missing.to_string()))
        );
        let no_files = "no member files in task_struct";
        assert_eq!(
            FdSource::choose_with(&config(Some(no_files), None), never),
            (FdSource::Proc, Some(no_files.to_string()))
        );
        let refused = || -> Result<()> { Err(anyhow::anyhow!("the verifier said no")) };
        let (src, why) = FdSource::choose_with(&config(None, None), refused);
        assert_eq!(src, FdSource::Proc);
        assert!(why.unwrap().contains("the verifier said no"));
    }

    #[test]
    fn records_parse_and_a_partial_one_is_ignored() {
        let r = FdRecord {
            tgid: 7,
            fd: 3,
            start_ns: 9,
            file: 0xaa,
            files: 0xbb,
            kind: fd_kind::PIPE,
            cloexec: 1,
            _pad: [0; 2],
            tid: 7,
        };
        // SAFETY: viewing a plain #[repr(C)] value as bytes.
        let one = unsafe {
            std::slice::from_raw_parts((&raw const r).cast::<u8>(), size_of::<FdRecord>())
        };
        let mut bytes = one.to_vec();
        bytes.extend_from_slice(&one[..5]);
        let got = parse_records(&bytes);
        assert_eq!(got.len(), 1);
        assert_eq!(
            (
                got[0].tgid,
                got[0].fd,
                got[0].desc,
                got[0].table,
                got[0].cloexec
            ),
            (7, 3, 0xaa, 0xbb, true)
        );
    }

    /// kcmp, the /proc path's oracle of identity: two fds of this process dup'd from one
    /// open are one description; a second open of the same file is another.
    #[test]
    fn proc_path_tells_dups_from_reopens() {
        use std::os::fd::AsRawFd as _;
        let me = std::process::id();
        let a = fs::File::open("/proc/self/stat").unwrap();
        let dup = a.try_clone().unwrap();
        let other = fs::File::open("/proc/self/stat").unwrap();
        let fds = read_proc(&[me]);
        let desc = |fd: i32| fds.iter().find(|f| f.fd == fd as u32).map(|f| f.desc);
        if desc(a.as_raw_fd()).is_none() {
            eprintln!("skipped: /proc/self/fd is not readable here");
            return;
        }
        assert_eq!(desc(a.as_raw_fd()), desc(dup.as_raw_fd()));
        assert_ne!(desc(a.as_raw_fd()), desc(other.as_raw_fd()));
        assert!(fds.iter().all(|f| f.table == fds[0].table), "one table");
        // Rust opens every file close-on-exec.
        assert!(
            fds.iter()
                .find(|f| f.fd == a.as_raw_fd() as u32)
                .unwrap()
                .cloexec
        );
    }
}
