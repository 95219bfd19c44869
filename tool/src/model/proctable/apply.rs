//! The table's answer to each lifecycle event.
//!
//! Events come in causal order (the stream merges the CPUs' rings up to a watermark), but
//! every handler still copes with any order, so that lost events or a late one never
//! leave a wrong entry: an event about a task already freed changes nothing, an exec or
//! exit before its fork makes the entry the fork then completes, a free before its fork
//! keeps the fork from bringing the process back.

use proclens_common::lifecycle::{
    Exec, Exit, ExitStatus, Fork, Free, Wait, exit_flags, fork_flags,
};

use super::{Dated, Death, Heir, Key, Notice, Proc, ProcTable, comm_str};

impl ProcTable {
    pub(super) fn fork(&mut self, f: &Fork, notices: &mut Vec<Notice>) {
        let creator_known = self.resolve(&f.creator);
        let creator = creator_known.unwrap_or_else(|| Key::from(&f.creator));
        let s = self.stats.entry(creator).or_default();
        if f.flags & fork_flags::THREAD != 0 {
            s.threads += 1;
            return;
        }
        s.processes += 1;
        if self.freed.freed_since(f.child_ptr, f.header.ts) {
            // Its free came first: the process is gone.
            return;
        }
        // The parent is the creator's process, unless CLONE_PARENT made it the creator's
        // parent: then it is looked up on its own.
        let parent = if Key::from(&f.parent) == Key::from(&f.creator) {
            creator_known
        } else {
            self.resolve(&f.parent)
        };
        if let Some(pk) = parent {
            self.parents.insert(pk);
        }
        // A child born between attaching and the /proc scan is also in the seed (coarse);
        // one whose exec or exit came first has an entry too: the fork completes it.
        let key = self
            .resolve(&f.child)
            .unwrap_or_else(|| Key::from(&f.child));
        let task = (f.child_ptr != 0).then_some(f.child_ptr);
        if let Some(p) = self.procs.get_mut(&key) {
            p.forked = true;
            p.ppid = f.parent.tgid;
            p.parent = parent.or(p.parent);
            if p.task.is_none()
                && let Some(t) = task
            {
                self.procs.set_task(&key, t);
            }
        } else {
            let mut p = Proc::new(key, comm_str(&f.comm), f.parent.tgid, parent, f.header.ts);
            p.forked = true;
            p.task = task;
            self.procs.insert(p);
        }
        // Its parent's exit came first (only after lost events): the kernel has
        // re-parented it already; the caller asks it where.
        if let Some(pk) = parent
            && self.procs.get(&pk).is_some_and(|pp| pp.death.is_some())
        {
            notices.push(self.orphaned(pk, vec![key], None));
        }
    }

    pub(super) fn exec(&mut self, e: &Exec) {
        if self.freed.freed_since(e.task_ptr, e.header.ts) {
            return;
        }
        let key = if let Some(k) = self.resolve(&e.task) {
            k
        } else {
            // Before its fork: the fork completes the entry.
            let key = Key::from(&e.task);
            self.procs
                .insert(Proc::new(key, comm_str(&e.comm), 0, None, e.header.ts));
            key
        };
        if let Some(p) = self.procs.get_mut(&key) {
            p.comm = comm_str(&e.comm);
            p.exe = Some(comm_str(&e.filename).into());
        }
        if e.task_ptr != 0 {
            self.procs.set_task(&key, e.task_ptr);
        }
    }

    pub(super) fn exit(&mut self, x: &Exit, notices: &mut Vec<Notice>) {
        if x.flags & exit_flags::GROUP_DEAD == 0
            || self.freed.freed_since(x.leader_ptr, x.header.ts)
        {
            return;
        }
        let parent = self.resolve(&x.parent);
        let ts = x.header.ts;
        let key = if let Some(k) = self.resolve(&x.task) {
            k
        } else {
            let key = Key::from(&x.task);
            self.procs
                .insert(Proc::new(key, comm_str(&x.comm), x.parent.tgid, parent, ts));
            key
        };
        let status = ExitStatus::from_raw(x.exit_code);
        let autoreap = x.flags & exit_flags::AUTOREAP != 0;
        let death = Death {
            at_ns: ts,
            dated: Dated::Exit,
            status,
            autoreap,
            ppid: x.parent.tgid,
        };
        // A parent blocked in a wait that takes this child reaps it as it wakes.
        let waited = x.flags & exit_flags::PARENT_WAITING != 0
            && parent
                .and_then(|pk| self.procs.get(&pk))
                .and_then(|pp| pp.wait_target)
                .is_some_and(|t| t == 0 || t == x.task.tgid);
        let p = self
            .procs
            .set_death(&key, death)
            .expect("resolved or inserted");
        p.ppid = x.parent.tgid;
        p.parent = parent.or(p.parent);
        // Its fork named the leader already, as a rule: then the index holds it (another
        // process could take the address only after this one's free).
        if x.leader_ptr != 0 && p.task != Some(x.leader_ptr) {
            self.procs.set_task(&key, x.leader_ptr);
        }
        if let Some(pk) = parent {
            let s = self.stats.entry(pk).or_default();
            s.child_exits += 1;
            if status != ExitStatus::Code(0) {
                s.child_failures += 1;
            }
            self.parents.insert(pk);
        }
        if autoreap || waited {
            self.reaped(&key, ts, notices);
        }
        if self.parents.contains(&key) {
            self.adopt_children(key, x, notices);
        }
    }

    /// The children of `key` (just died) not yet reaped go to the heir the kernel chose,
    /// named in the exit event.
    fn adopt_children(&mut self, key: Key, x: &Exit, notices: &mut Vec<Notice>) {
        let mut children: Vec<Key> = self
            .procs
            .values()
            .filter(|c| c.parent == Some(key) && c.reaped_ns.is_none())
            .map(|c| c.key)
            .collect();
        if children.is_empty() {
            return;
        }
        children.sort_unstable();
        let heir = (x.reaper.tgid != 0).then(|| {
            let hk = self.resolve(&x.reaper);
            Heir {
                tgid: x.reaper.tgid,
                key: hk,
                comm: hk
                    .and_then(|k| self.procs.get(&k))
                    .map(|p| p.comm.to_string())
                    .unwrap_or_default(),
            }
        });
        // A pid namespace's init that dies keeps its children: the kernel kills and
        // reaps them.
        if let Some(h) = &heir
            && h.key != Some(key)
        {
            for c in &children {
                if let Some(p) = self.procs.get_mut(c) {
                    p.ppid = h.tgid;
                    p.parent = h.key;
                }
            }
            self.parents.extend(h.key);
        }
        notices.push(self.orphaned(key, children, heir));
    }

    /// The notice that `parent` died leaving `children` to `heir`.
    fn orphaned(&self, parent: Key, children: Vec<Key>, heir: Option<Heir>) -> Notice {
        let parent_comm = self
            .procs
            .get(&parent)
            .map(|p| p.comm.to_string())
            .unwrap_or_default();
        Notice::Orphaned {
            parent,
            parent_comm,
            children,
            heir,
        }
    }

    pub(super) fn wait(&mut self, w: &Wait, notices: &mut Vec<Notice>) {
        let waiter = self.resolve(&w.waiter);
        if let Some(k) = waiter {
            self.stats.entry(k).or_default().waits += 1;
            if let Some(p) = self.procs.get_mut(&k) {
                p.wait_target = Some(w.target_pid);
            }
        }
        // A wait for any child names the zombie it reaps; a wait for one pid reaps that
        // child if it is a zombie of the waiter's.
        let reaped = if w.reaped_ptr != 0 {
            self.procs.by_task(w.reaped_ptr)
        } else if w.target_pid != 0 {
            self.procs
                .held(w.target_pid)
                .filter(|k| waiter.is_some() && self.procs.get(k).and_then(|p| p.parent) == waiter)
        } else {
            None
        };
        if let Some(k) = reaped {
            self.reaped(&k, w.header.ts, notices);
        }
    }

    /// Records that the dead process `key` was reaped at `at_ns`, once, with its notice.
    pub(super) fn reaped(&mut self, key: &Key, at_ns: u64, notices: &mut Vec<Notice>) {
        if !self.procs.get(key).is_some_and(Proc::unreaped_dead) {
            return;
        }
        let Some(p) = self.procs.set_reaped(key, at_ns) else {
            return;
        };
        notices.push(Notice::reaped(p, at_ns));
    }

    pub(super) fn free(&mut self, f: &Free, notices: &mut Vec<Notice>) {
        let ts = f.header.ts;
        let Some(key) = self.procs.by_task(f.task_ptr) else {
            // A thread's task, proclens's own, or a process no event named yet (its
            // events may be late): remembered, so they cannot bring it back.
            self.freed.add(f.task_ptr, ts);
            return;
        };
        if self.procs.get(&key).is_some_and(|p| p.death.is_none()) {
            // The process lives on: the freed task led it until another of its threads
            // exec'd (which made that thread the leader and released the old one). Or its
            // exit event was lost; then the checks against /proc find it gone.
            self.procs.clear_task(f.task_ptr);
            self.freed.add(f.task_ptr, ts);
            return;
        }
        // Freed an RCU grace period after its reap: reaped by now at the latest.
        self.reaped(&key, ts, notices);
        if let Some(p) = self.forget(&key)
            && !p.forked
        {
            self.freed.add(f.task_ptr, ts);
        }
    }
}
