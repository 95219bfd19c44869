//! One exec and the fds that crossed it, from its `ExecFds` event.

use proclens_common::forks::{ExecFds, exec_fds_flags};
use serde::Serialize;

use crate::model::{copies::kind_name, switches::comm_str};

/// An fd a program found open when it started.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct InheritedFd {
    pub fd: u32,
    pub kind: &'static str,
}

/// One exec and the fds that crossed it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ExecEntry {
    /// Boot-clock time of the exec (ns).
    #[serde(skip)]
    pub at_ns: u64,
    pub pid: u32,
    #[serde(skip)]
    pub start_ns: u64,
    pub comm: String,
    pub filename: String,
    /// fds open when the program started.
    pub open: u32,
    /// Of which above 2 (stdin, stdout, stderr): fds the program never opened itself.
    pub inherited: u32,
    /// The inherited fds among 3 to 34, with what they are.
    pub fds: Vec<InheritedFd>,
    /// `fds` does not name every inherited fd: some are above 34, or the table was
    /// larger than the kernel side scans (1024 fds), or unreadable.
    pub incomplete: bool,
}

impl From<&ExecFds> for ExecEntry {
    fn from(e: &ExecFds) -> Self {
        let fds: Vec<InheritedFd> = e
            .fds
            .iter()
            .filter(|f| f.fd > 2)
            .map(|f| InheritedFd {
                fd: f.fd,
                kind: kind_name(f.kind),
            })
            .collect();
        let unread = e.flags & (exec_fds_flags::TRUNCATED | exec_fds_flags::UNREADABLE) != 0;
        ExecEntry {
            at_ns: e.header.ts,
            pid: e.task.tgid,
            start_ns: e.task.start_ns,
            comm: comm_str(&e.comm),
            filename: comm_str(&e.filename),
            open: e.open,
            inherited: e.inherited,
            incomplete: unread || fds.len() < e.inherited as usize,
            fds,
        }
    }
}
