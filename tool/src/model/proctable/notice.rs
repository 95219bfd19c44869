//! What the table tells its reader: orphans re-parented, and every reap.

use compact_str::CompactString;

use super::{Dated, Death, Key, Proc};

/// The process that took over orphans: its pid, its key and name when the table knows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Heir {
    pub tgid: u32,
    pub key: Option<Key>,
    pub comm: String,
}

/// Something the table noticed while applying an event or a check.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Notice {
    /// A process died while these children of it (alive or zombies) were not reaped: the
    /// kernel re-parented them to `heir`, read from the kernel as the parent died and
    /// already applied. `heir` is `None` when the kernel could not be read: the caller
    /// then reads each child's parent from /proc and calls [`super::ProcTable::reparent`].
    Orphaned {
        parent: Key,
        parent_comm: String,
        children: Vec<Key>,
        heir: Option<Heir>,
    },
    /// A dead process was reaped (by its parent's wait, or the kernel). Every reap makes
    /// one, reported zombie or not (`proc.reported` says): the reader keeps those it
    /// wants. It allocates nothing, so a fork storm's reaps cost no more than a copy.
    Reaped {
        proc: ReapedProc,
        /// Time from death to reap; `None` unless the exit event dated the death.
        dead_for_ns: Option<u64>,
        /// Reaped at this boot-clock time (at the latest).
        at_ns: u64,
    },
}

/// What a reap notice says of the process: its [`Proc`] less what would allocate.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReapedProc {
    pub key: Key,
    /// Inline: a comm is at most 15 bytes.
    pub comm: CompactString,
    pub ppid: u32,
    pub parent: Option<Key>,
    pub death: Option<Death>,
    /// It was reported as a zombie (by [`super::ProcTable::new_zombies`]).
    pub reported: bool,
}

impl From<&Proc> for ReapedProc {
    fn from(p: &Proc) -> Self {
        ReapedProc {
            key: p.key,
            comm: p.comm.clone(),
            ppid: p.ppid,
            parent: p.parent,
            death: p.death,
            reported: p.reported,
        }
    }
}

impl Notice {
    /// `proc` reaped at `at_ns`, dead since its exit event if one came.
    pub(super) fn reaped(proc: &Proc, at_ns: u64) -> Self {
        let dead_for_ns = proc
            .death
            .filter(|d| d.dated == Dated::Exit)
            .map(|d| at_ns.saturating_sub(d.at_ns));
        Notice::Reaped {
            proc: proc.into(),
            dead_for_ns,
            at_ns,
        }
    }

    /// A reap of a process never reported as a zombie.
    pub fn unreported_reap(&self) -> bool {
        matches!(self, Notice::Reaped { proc, .. } if !proc.reported)
    }
}
