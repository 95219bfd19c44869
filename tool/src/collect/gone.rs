//! Which processes have gone, for the views that drop a process's map entries after its
//! last report (copies, interrupts, after-fork): the exits the events brought, else
//! /proc.

use std::collections::{HashMap, HashSet};

use proclens_common::lifecycle::exit_flags::GROUP_DEAD;

use super::procfs;
use crate::model::{event::Event, proctable::Key};

/// Processes that have gone, as [`gone`] finds them.
pub type Gone = HashSet<Key>;

/// Processes whose exit the lifecycle events brought in this interval and the one before:
/// those have gone for [`gone`] without a look in /proc (a fork storm's processes would
/// otherwise cost a read of /proc/PID/stat each, every view and interval).
#[derive(Debug, Default)]
pub struct Exited {
    recent: HashSet<Key>,
    older: HashSet<Key>,
}

impl Exited {
    /// Notes a process's death (the exit of its last thread).
    pub fn absorb(&mut self, ev: &Event) {
        if let Event::Exit(x) = ev
            && x.flags & GROUP_DEAD != 0
        {
            self.recent.insert(Key::from(&x.task));
        }
    }

    pub fn contains(&self, k: &Key) -> bool {
        self.recent.contains(k) || self.older.contains(k)
    }

    /// Ends an interval: deaths older than it and the one before are forgotten (a view
    /// judges a process gone in the interval after the one it was last seen in).
    pub fn rotate(&mut self) {
        self.older = std::mem::take(&mut self.recent);
    }
}

/// The processes among `keys` that have gone: those `exited` names (they died: their
/// counts are final even while their parent has not reaped them); of several keys with
/// one pid, all but the latest started (a pid belongs to one live process at a time);
/// the latest (or only) one once /proc/PID/stat no longer shows its start time (to the
/// clock tick). A key whose start the kernel could not read (0) lives while its pid
/// exists.
pub fn gone(keys: &[Key], tick_ns: u64, exited: &Exited) -> Gone {
    let mut latest: HashMap<u32, u64> = HashMap::new();
    for k in keys {
        let e = latest.entry(k.tgid).or_insert(k.start_ns);
        *e = (*e).max(k.start_ns);
    }
    keys.iter()
        .copied()
        .filter(|k| {
            if exited.contains(k) || latest.get(&k.tgid).is_some_and(|&l| l > k.start_ns) {
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
    use proclens_common::lifecycle::{Exit, TaskRef};

    use super::*;

    #[test]
    fn a_death_counts_for_its_interval_and_the_next_and_a_thread_exit_not_at_all() {
        let task = TaskRef {
            pid: 40,
            tgid: 40,
            start_ns: 7,
        };
        let exit = |flags| {
            Event::Exit(Exit {
                task,
                flags,
                ..Exit::default()
            })
        };
        let key = Key::from(&task);
        let mut e = Exited::default();
        e.absorb(&exit(0));
        assert!(!e.contains(&key));
        e.absorb(&exit(GROUP_DEAD));
        assert!(e.contains(&key));
        e.rotate();
        assert!(e.contains(&key));
        e.rotate();
        assert!(!e.contains(&key));
        // Another process with that pid is not the one that died.
        assert!(!e.contains(&Key {
            tgid: 40,
            start_ns: 8
        }));
    }
}
