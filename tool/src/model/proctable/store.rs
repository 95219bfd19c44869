//! The table's storage: processes by [`Key`] in a hash map (every event looks one up,
//! under a fork storm hundreds of thousands per second), with two indexes by pid for the
//! questions events ask by pid: the process that holds this pid (alive, or a zombie: the
//! kernel gives a pid out again only once its zombie is reaped), and the entry seeded
//! from /proc that an event with an exact key may re-key (/proc shows one process per
//! pid); and one by leader task address, which is all a free event names.

use std::collections::hash_map::Entry;

use rustc_hash::FxHashMap;

use super::{Death, Key, Proc};

#[derive(Debug, Default)]
pub(super) struct Procs {
    by_key: FxHashMap<Key, Proc>,
    held: FxHashMap<u32, Key>,
    coarse: FxHashMap<u32, Key>,
    tasks: FxHashMap<u64, Key>,
}

impl Procs {
    /// Gives back the room a storm's peak left (see `model::spare`).
    pub fn give_back_spare(&mut self) {
        use crate::model::spare::map;
        map(&mut self.by_key);
        map(&mut self.held);
        map(&mut self.coarse);
        map(&mut self.tasks);
    }

    pub fn get(&self, key: &Key) -> Option<&Proc> {
        self.by_key.get(key)
    }

    /// The entry, to change anything but its key, reap and coarseness (which the indexes
    /// follow: see [`Procs::set_reaped`]).
    pub fn get_mut(&mut self, key: &Key) -> Option<&mut Proc> {
        self.by_key.get_mut(key)
    }

    pub fn contains(&self, key: &Key) -> bool {
        self.by_key.contains_key(key)
    }

    /// Inserts or replaces the entry of `p.key`.
    pub fn insert(&mut self, p: Proc) {
        let key = p.key;
        if p.reaped_ns.is_some() {
            self.unindex_held(&key);
        } else if p.death.is_none() || self.live(key.tgid).is_none() {
            // A dead process's late entry never takes its pid from a live one.
            self.held.insert(key.tgid, key);
        }
        if p.coarse {
            self.coarse.insert(key.tgid, key);
        } else {
            remove_if(&mut self.coarse, key.tgid, &key);
        }
        let task = p.task;
        if let Some(t) = task {
            self.tasks.insert(t, key);
        }
        if let Some(old) = self.by_key.insert(key, p)
            && let Some(t) = old.task
            && Some(t) != task
        {
            self.unindex_task(t, &key);
        }
    }

    pub fn remove(&mut self, key: &Key) -> Option<Proc> {
        let p = self.by_key.remove(key)?;
        self.unindex_held(key);
        remove_if(&mut self.coarse, key.tgid, key);
        if let Some(t) = p.task {
            self.unindex_task(t, key);
        }
        Some(p)
    }

    /// Records `task` as the address of the process's leader (replacing an earlier one).
    pub fn set_task(&mut self, key: &Key, task: u64) {
        let Some(p) = self.by_key.get_mut(key) else {
            return;
        };
        if let Some(old) = p.task.replace(task) {
            // Named so already (a fork named it, its exit names it again).
            if old == task && self.tasks.get(&old) == Some(key) {
                return;
            }
            self.unindex_task(old, key);
        }
        self.tasks.insert(task, *key);
    }

    /// Forgets the task address `task`; returns the process it was the leader of.
    pub fn clear_task(&mut self, task: u64) -> Option<Key> {
        let key = self.tasks.remove(&task)?;
        if let Some(p) = self.by_key.get_mut(&key)
            && p.task == Some(task)
        {
            p.task = None;
        }
        Some(key)
    }

    /// The process whose leader task is at `task`.
    pub fn by_task(&self, task: u64) -> Option<Key> {
        self.tasks.get(&task).copied()
    }

    /// Records the process's death (it holds its pid until reaped); returns its entry.
    pub fn set_death(&mut self, key: &Key, death: Death) -> Option<&mut Proc> {
        let p = self.by_key.get_mut(key)?;
        p.death = Some(death);
        Some(p)
    }

    /// Records that the process was reaped at `at_ns`: its pid is free.
    pub fn set_reaped(&mut self, key: &Key, at_ns: u64) -> Option<&mut Proc> {
        self.unindex_held(key);
        let p = self.by_key.get_mut(key)?;
        p.reaped_ns = Some(at_ns);
        Some(p)
    }

    /// Drops `task` from the task index if it still names `key` (a reused address may
    /// name a newer process by now).
    fn unindex_task(&mut self, task: u64, key: &Key) {
        remove_if(&mut self.tasks, task, key);
    }

    fn unindex_held(&mut self, key: &Key) {
        remove_if(&mut self.held, key.tgid, key);
    }

    /// The process that holds this pid: alive, or dead and not yet reaped.
    pub fn held(&self, pid: u32) -> Option<Key> {
        self.held.get(&pid).copied()
    }

    /// The live process with this pid.
    pub fn live(&self, pid: u32) -> Option<Key> {
        self.held(pid)
            .filter(|k| self.by_key.get(k).is_some_and(|p| p.death.is_none()))
    }

    /// The seeded entry of this pid not yet re-keyed by an event.
    pub fn coarse(&self, pid: u32) -> Option<Key> {
        self.coarse.get(&pid).copied()
    }

    pub fn len(&self) -> usize {
        self.by_key.len()
    }

    pub fn is_empty(&self) -> bool {
        self.by_key.is_empty()
    }

    /// Every entry, in no particular order.
    pub fn values(&self) -> impl Iterator<Item = &Proc> {
        self.by_key.values()
    }

    pub fn values_mut(&mut self) -> impl Iterator<Item = &mut Proc> {
        self.by_key.values_mut()
    }
}

/// Removes `index[at]` if it names `key`, in one lookup.
fn remove_if<K: std::hash::Hash + Eq>(index: &mut FxHashMap<K, Key>, at: K, key: &Key) {
    if let Entry::Occupied(e) = index.entry(at)
        && e.get() == key
    {
        e.remove();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn proc(tgid: u32, start_ns: u64, coarse: bool) -> Proc {
        let mut p = Proc::new(Key { tgid, start_ns }, "x".into(), 1, None, 0);
        p.coarse = coarse;
        p
    }

    fn key(tgid: u32, start_ns: u64) -> Key {
        Key { tgid, start_ns }
    }

    #[test]
    fn indexes_follow_inserts_deaths_and_removals() {
        let mut s = Procs::default();
        s.insert(proc(7, 30, true));
        assert_eq!(
            (s.live(7), s.coarse(7)),
            (Some(key(7, 30)), Some(key(7, 30)))
        );
        // The seeded entry dies; its pid is reused by a process the events name exactly.
        let death = Death {
            at_ns: 1,
            dated: super::super::Dated::Exit,
            status: proclens_common::lifecycle::ExitStatus::Code(0),
            autoreap: false,
            ppid: 1,
        };
        assert!(s.set_death(&key(7, 30), death).is_some());
        assert_eq!(s.live(7), None);
        s.insert(proc(7, 90, false));
        assert_eq!(
            (s.live(7), s.coarse(7)),
            (Some(key(7, 90)), Some(key(7, 30)))
        );
        // Removing the dead one leaves the live one indexed.
        assert!(s.remove(&key(7, 30)).is_some());
        assert!(s.remove(&key(7, 30)).is_none());
        assert_eq!((s.live(7), s.coarse(7)), (Some(key(7, 90)), None));
        // Re-keying a coarse entry: the exact entry replaces it.
        s.insert(proc(8, 5, true));
        let mut p = s.remove(&key(8, 5)).unwrap();
        p.key = key(8, 7);
        p.coarse = false;
        s.insert(p);
        assert_eq!((s.live(8), s.coarse(8)), (Some(key(8, 7)), None));
        s.remove(&key(8, 7));
        let left: Vec<Key> = s.values().map(|p| p.key).collect();
        assert_eq!(left, [key(7, 90)]);
        assert_eq!((s.len(), s.live(8)), (1, None));
    }

    #[test]
    fn the_task_index_follows_its_process() {
        let mut s = Procs::default();
        s.insert(proc(7, 30, false));
        s.set_task(&key(7, 30), 0xa000);
        assert_eq!(s.by_task(0xa000), Some(key(7, 30)));
        // A thread that execs becomes the leader: the old address names nothing.
        s.set_task(&key(7, 30), 0xb000);
        assert_eq!(
            (s.by_task(0xa000), s.by_task(0xb000)),
            (None, Some(key(7, 30)))
        );
        assert_eq!(s.clear_task(0xb000), Some(key(7, 30)));
        assert_eq!(s.get(&key(7, 30)).unwrap().task, None);
        // Re-inserted under another key (re-keyed from a coarse seed), then removed.
        s.set_task(&key(7, 30), 0xc000);
        let mut p = s.remove(&key(7, 30)).unwrap();
        assert_eq!(s.by_task(0xc000), None);
        p.key = key(7, 31);
        s.insert(p);
        assert_eq!(s.by_task(0xc000), Some(key(7, 31)));
        // A reused address (its old process's free was lost) moves to the new process,
        // and removing the old one leaves it there.
        s.insert(proc(8, 40, false));
        s.set_task(&key(8, 40), 0xc000);
        s.remove(&key(7, 31));
        assert_eq!(s.by_task(0xc000), Some(key(8, 40)));
    }
}
