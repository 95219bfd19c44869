//! Which processes have gone, for the views that drop a process's map entries after its
//! last report (copies, interrupts, after-fork): the exits the events brought, and /proc
//! every [`VERIFY_EVERY`] or after lost events.

use std::{
    collections::{HashMap, HashSet},
    time::{Duration, Instant},
};

use super::procfs;
use crate::model::{event::Event, proctable::Key};

/// Processes that have gone, as [`gone`] finds them.
pub type Gone = HashSet<Key>;

/// How often [`gone`] looks in /proc for every process, for those whose exit no event
/// brought: an exit lost while the rings were full (which also makes the next interval
/// look), or hidden by a filter the process left (a `--cgroup` it moved out of). The
/// events' exits are enough otherwise; looking at every interval cost `serve` a
/// /proc/PID/stat read per process and view every 5 s (a quarter of its CPU beside 1,000
/// processes).
pub const VERIFY_EVERY: Duration = Duration::from_secs(30);

/// Processes whose exit the lifecycle events brought in this interval and the one before:
/// those have gone for [`gone`] without a look in /proc (a fork storm's processes would
/// otherwise cost a read of /proc/PID/stat each, every view and interval).
#[derive(Debug)]
pub struct Exited {
    recent: HashSet<Key>,
    older: HashSet<Key>,
    /// Whether this interval's [`gone`] looks in /proc (the first one does).
    verify: bool,
    verified_at: Instant,
    lost_seen: u64,
}

impl Default for Exited {
    fn default() -> Self {
        Self {
            recent: HashSet::new(),
            older: HashSet::new(),
            verify: true,
            verified_at: Instant::now(),
            lost_seen: 0,
        }
    }
}

impl Exited {
    /// Notes a process's death (the exit of its last thread).
    pub fn absorb(&mut self, ev: &Event) {
        if let Some(x) = ev.process_death() {
            self.recent.insert(Key::from(&x.task));
        }
    }

    pub fn contains(&self, k: &Key) -> bool {
        self.recent.contains(k) || self.older.contains(k)
    }

    /// Ends an interval: deaths older than it and the one before are forgotten (a view
    /// judges a process gone in the interval after the one it was last seen in). The next
    /// interval looks in /proc when [`VERIFY_EVERY`] has passed, or when the rings' drop
    /// count (`lost_events`, so far) has grown.
    pub fn rotate(&mut self, lost_events: u64) {
        self.older = std::mem::take(&mut self.recent);
        self.verify = lost_events > self.lost_seen || self.verified_at.elapsed() >= VERIFY_EVERY;
        if self.verify {
            self.verified_at = Instant::now();
        }
        self.lost_seen = lost_events;
    }
}

/// The processes among `keys` that have gone: those `exited` names (they died: their
/// counts are final even while their parent has not reaped them); of several keys with
/// one pid, all but the latest started (a pid belongs to one live process at a time);
/// in an interval that looks in /proc (see [`Exited::rotate`]), the latest (or only) one
/// once /proc/PID/stat no longer shows its start time (to the clock tick). A key whose
/// start the kernel could not read (0) lives while its pid exists.
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
            if !exited.verify {
                return false;
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
    use proclens_common::lifecycle::{Exit, TaskRef, exit_flags::GROUP_DEAD};

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
        e.rotate(0);
        assert!(e.contains(&key));
        e.rotate(0);
        assert!(!e.contains(&key));
        // Another process with that pid is not the one that died.
        assert!(!e.contains(&Key {
            tgid: 40,
            start_ns: 8
        }));
    }

    #[test]
    fn proc_is_looked_at_first_after_lost_events_and_every_while() {
        // No process has this pid (above the kernel's largest pid_max).
        let dead = Key {
            tgid: 5_000_000,
            start_ns: 9,
        };
        let mut e = Exited::default();
        assert!(
            gone(&[dead], 10_000_000, &e).contains(&dead),
            "first interval"
        );
        e.rotate(0);
        assert!(gone(&[dead], 10_000_000, &e).is_empty(), "no event said so");
        e.rotate(3);
        assert!(
            gone(&[dead], 10_000_000, &e).contains(&dead),
            "after lost events"
        );
        e.rotate(3);
        assert!(gone(&[dead], 10_000_000, &e).is_empty());
        e.verified_at -= VERIFY_EVERY;
        e.rotate(3);
        assert!(
            gone(&[dead], 10_000_000, &e).contains(&dead),
            "once a while"
        );
        // Of two processes with one pid, the older has gone, /proc or not.
        let older = Key {
            tgid: 5_000_000,
            start_ns: 8,
        };
        e.rotate(3);
        assert_eq!(gone(&[dead, older], 10_000_000, &e), Gone::from([older]));
    }
}
