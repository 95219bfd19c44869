//! What processes' fd tables share, from one reading of every open fd (by the BPF
//! task-file iterator or from /proc, see `collect::forks::fdtables`): fds by kind,
//! close-on-exec, tables used by several processes (`CLONE_FILES`), and open file
//! descriptions held in more than one table (as after fork: one offset, one set of flags).

use std::collections::{BTreeMap, BTreeSet, HashMap};

use proclens_common::copies::fd_kind;
use serde::Serialize;

use super::copies::kind_name;

/// One open fd. `desc` and `table` identify the open file description and the fd table:
/// equal values are the same kernel object (addresses from the iterator, kcmp classes
/// from /proc), never shown.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FdEntry {
    pub tgid: u32,
    pub start_ns: u64,
    pub fd: u32,
    /// [`fd_kind`].
    pub kind: u8,
    pub cloexec: bool,
    pub desc: u64,
    pub table: u64,
}

/// Open fds by what they refer to.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct ByKind {
    pub file: u32,
    pub socket: u32,
    pub pipe: u32,
    pub other: u32,
}

impl ByKind {
    fn add(&mut self, kind: u8) {
        match kind {
            fd_kind::FILE => self.file += 1,
            fd_kind::SOCKET => self.socket += 1,
            fd_kind::PIPE => self.pipe += 1,
            _ => self.other += 1,
        }
    }
}

/// An fd of another process.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
pub struct Holder {
    pub pid: u32,
    pub fd: u32,
}

/// An fd whose open file description other processes' tables hold too.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct SharedFd {
    pub fd: u32,
    pub kind: &'static str,
    pub with: Vec<Holder>,
}

/// One process's fd table.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct ProcFds {
    pub pid: u32,
    #[serde(skip)]
    pub start_ns: u64,
    pub open: u32,
    pub by_kind: ByKind,
    pub cloexec: u32,
    /// fds above 2 without close-on-exec: an exec now would hand them to the new program.
    pub no_cloexec: u32,
    /// Other processes using this very fd table (created with `CLONE_FILES`).
    pub table_shared_with: Vec<u32>,
    /// Its fds whose description is also in another process's fd table.
    pub shared: Vec<SharedFd>,
}

/// Every process's table from one reading, by pid.
pub fn analyse(entries: &[FdEntry]) -> BTreeMap<u32, ProcFds> {
    let mut tables_of: HashMap<u32, BTreeSet<u64>> = HashMap::new();
    let mut users_of: HashMap<u64, BTreeSet<u32>> = HashMap::new();
    let mut holders: HashMap<u64, Vec<&FdEntry>> = HashMap::new();
    for e in entries {
        tables_of.entry(e.tgid).or_default().insert(e.table);
        users_of.entry(e.table).or_default().insert(e.tgid);
        holders.entry(e.desc).or_default().push(e);
    }
    let mut out: BTreeMap<u32, ProcFds> = BTreeMap::new();
    // A table used by two processes lists its fds under each: count each fd once.
    let mut seen: BTreeSet<(u32, u32)> = BTreeSet::new();
    for e in entries {
        if !seen.insert((e.tgid, e.fd)) {
            continue;
        }
        let p = out.entry(e.tgid).or_insert_with(|| ProcFds {
            pid: e.tgid,
            start_ns: e.start_ns,
            ..ProcFds::default()
        });
        p.open += 1;
        p.by_kind.add(e.kind);
        if e.cloexec {
            p.cloexec += 1;
        } else if e.fd > 2 {
            p.no_cloexec += 1;
        }
        let own = &tables_of[&e.tgid];
        let mut with: Vec<Holder> = holders[&e.desc]
            .iter()
            .filter(|h| !own.contains(&h.table))
            .map(|h| Holder {
                pid: h.tgid,
                fd: h.fd,
            })
            .collect();
        with.sort_unstable();
        with.dedup();
        if !with.is_empty() {
            p.shared.push(SharedFd {
                fd: e.fd,
                kind: kind_name(e.kind),
                with,
            });
        }
    }
    for p in out.values_mut() {
        let mut others: BTreeSet<u32> = BTreeSet::new();
        for t in &tables_of[&p.pid] {
            others.extend(users_of[t].iter().filter(|&&u| u != p.pid));
        }
        p.table_shared_with = others.into_iter().collect();
        p.shared.sort_by_key(|s| s.fd);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fd(tgid: u32, fd: u32, desc: u64, table: u64, cloexec: bool) -> FdEntry {
        FdEntry {
            tgid,
            start_ns: 1,
            fd,
            kind: if fd == 5 {
                fd_kind::PIPE
            } else {
                fd_kind::FILE
            },
            cloexec,
            desc,
            table,
        }
    }

    #[test]
    fn a_forked_child_shares_descriptions_not_its_table() {
        // Parent 10 and child 11 after fork: same descriptions, two tables; the child
        // then opened fd 6 itself.
        let e = [
            fd(10, 0, 100, 1, false),
            fd(10, 3, 103, 1, false),
            fd(10, 5, 105, 1, true),
            fd(11, 0, 100, 2, false),
            fd(11, 3, 103, 2, false),
            fd(11, 5, 105, 2, true),
            fd(11, 6, 106, 2, false),
        ];
        let a = analyse(&e);
        let (p, c) = (&a[&10], &a[&11]);
        assert_eq!((p.open, c.open), (3, 4));
        assert_eq!(p.by_kind.pipe, 1);
        assert_eq!(
            (p.cloexec, p.no_cloexec),
            (1, 1),
            "fd 0 is stdin, not counted"
        );
        assert_eq!(c.no_cloexec, 2);
        assert!(p.table_shared_with.is_empty() && c.table_shared_with.is_empty());
        let fds = |p: &ProcFds| p.shared.iter().map(|s| s.fd).collect::<Vec<_>>();
        assert_eq!(fds(p), [0, 3, 5]);
        assert_eq!(fds(c), [0, 3, 5], "fd 6 is the child's own");
        assert_eq!(p.shared[1].with, [Holder { pid: 11, fd: 3 }]);
        assert_eq!(p.shared[2].kind, "pipe");
        // The child closes fd 3: no longer shared.
        let a = analyse(&[e[0], e[1], e[2], e[3], e[5], e[6]]);
        assert_eq!(fds(&a[&10]), [0, 5]);
    }

    #[test]
    fn a_table_shared_with_clone_files_is_one_table_counted_once() {
        // 20 and 21 share table 7 (CLONE_FILES); the iterator lists its fds under both.
        let e = [
            fd(20, 3, 300, 7, false),
            fd(21, 3, 300, 7, false),
            fd(20, 3, 300, 7, false),
        ];
        let a = analyse(&e);
        assert_eq!(a[&20].table_shared_with, [21]);
        assert_eq!(a[&21].table_shared_with, [20]);
        assert_eq!(a[&20].open, 1, "counted once");
        assert!(a[&20].shared.is_empty(), "the same table, not another one");
    }
}
