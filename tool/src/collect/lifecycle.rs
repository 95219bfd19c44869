//! Feeding the process table from the running system: the /proc seed at start-up and the
//! kernel's answer, through /proc, to "who is this orphan's parent now?".

use std::time::{Duration, Instant};

use crate::{
    collect::procfs,
    model::proctable::{Key, ProcTable, SeedProc},
};

/// Seeds `table` from /proc. Call it after the programs are attached and before the first
/// events are applied, so every process is either seen here or born in the event stream.
pub fn seed(table: &mut ProcTable) {
    let procs: Vec<SeedProc> = procfs::processes()
        .into_iter()
        // `X` (dead) is a reaped task on its way out: not a process any more.
        .filter(|s| s.state != 'X')
        .map(|s| SeedProc {
            pid: s.pid,
            ppid: s.ppid,
            start_ticks: s.start_ticks,
            comm: s.comm,
            zombie: s.state == 'Z',
            exit_code: s.exit_code,
        })
        .collect();
    table.seed(&procs, procfs::boot_ns());
}

/// Whether `/proc` still shows the process `key` (same pid, same start tick) as a zombie.
pub fn is_zombie_now(key: &Key, tick_ns: u64) -> bool {
    procfs::stat(key.tgid)
        .is_some_and(|s| s.state == 'Z' && s.start_ticks == key.start_ns / tick_ns)
}

/// Children whose parent died: the kernel re-parents them in `exit_notify`, just after the
/// exit event, so the new parent is read from /proc until it has changed.
#[derive(Debug, Default)]
pub struct Orphans {
    pending: Vec<Pending>,
}

#[derive(Debug)]
struct Pending {
    child: Key,
    old_ppid: u32,
    old_parent_comm: String,
    until: Instant,
}

/// How long to keep asking for an orphan's new parent.
const REPARENT_WAIT: Duration = Duration::from_secs(2);

impl Orphans {
    pub fn watch(&mut self, children: &[Key], old_ppid: u32, old_parent_comm: &str) {
        let until = Instant::now() + REPARENT_WAIT;
        self.pending.extend(children.iter().map(|k| Pending {
            child: *k,
            old_ppid,
            old_parent_comm: old_parent_comm.to_string(),
            until,
        }));
    }

    /// Orphans whose new parent the kernel now shows. An orphan that died meanwhile (its
    /// pid gone or reused) is dropped.
    pub fn resolved(&mut self, tick_ns: u64) -> Vec<Reparented> {
        let now = Instant::now();
        let mut out = Vec::new();
        self.pending.retain(|p| {
            let Some(s) =
                procfs::stat(p.child.tgid).filter(|s| s.start_ticks == p.child.start_ns / tick_ns)
            else {
                return false;
            };
            if s.ppid != p.old_ppid {
                out.push(Reparented {
                    child: p.child,
                    old_ppid: p.old_ppid,
                    old_parent_comm: p.old_parent_comm.clone(),
                    new_ppid: s.ppid,
                });
                return false;
            }
            now < p.until
        });
        out
    }
}

/// An orphan and its new parent, as the kernel shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reparented {
    pub child: Key,
    pub old_ppid: u32,
    pub old_parent_comm: String,
    pub new_ppid: u32,
}
