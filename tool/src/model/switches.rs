//! Per-process (or per-thread) context-switch totals and interval deltas, from snapshots of
//! the kernel's per-thread map plus the final counts of threads that exited.

use std::collections::{HashMap, HashSet, hash_map::Entry};

use proclens_common::{
    event::ThreadExit,
    switch::{RUNQ_BUCKETS, ThreadSwitches},
};

use super::histogram::Hist;

/// Identity of a row. `start_ns` (the thread-group leader's start time) keeps two
/// processes that reuse one pid apart.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Key {
    /// tgid, or tid in per-thread mode.
    pub id: u32,
    pub tgid: u32,
    pub start_ns: u64,
}

/// Switch accounting of a process or thread.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Counts {
    pub voluntary: u64,
    pub involuntary: u64,
    pub same_in: u64,
    pub cross_in: u64,
    pub idle_kernel_in: u64,
    pub oncpu_ns: u64,
    pub blocked_ns: u64,
    pub runq_ns: u64,
    pub runq_max_ns: u64,
    pub runq_hist: Hist,
}

impl Default for Counts {
    fn default() -> Self {
        Self {
            voluntary: 0,
            involuntary: 0,
            same_in: 0,
            cross_in: 0,
            idle_kernel_in: 0,
            oncpu_ns: 0,
            blocked_ns: 0,
            runq_ns: 0,
            runq_max_ns: 0,
            runq_hist: [0; RUNQ_BUCKETS],
        }
    }
}

impl From<&ThreadSwitches> for Counts {
    fn from(t: &ThreadSwitches) -> Self {
        let mut runq_hist = [0; RUNQ_BUCKETS];
        for (a, b) in runq_hist.iter_mut().zip(t.runq_hist.iter()) {
            *a = u64::from(*b);
        }
        Self {
            voluntary: t.voluntary,
            involuntary: t.involuntary,
            same_in: t.same_in,
            cross_in: t.cross_in,
            idle_kernel_in: t.idle_kernel_in,
            oncpu_ns: t.oncpu_ns,
            blocked_ns: t.blocked_ns,
            runq_ns: t.runq_ns,
            runq_max_ns: t.runq_max_ns,
            runq_hist,
        }
    }
}

impl Counts {
    pub fn add(&mut self, t: &ThreadSwitches) {
        self.merge(&Counts::from(t));
    }

    pub fn merge(&mut self, o: &Counts) {
        self.voluntary += o.voluntary;
        self.involuntary += o.involuntary;
        self.same_in += o.same_in;
        self.cross_in += o.cross_in;
        self.idle_kernel_in += o.idle_kernel_in;
        self.oncpu_ns += o.oncpu_ns;
        self.blocked_ns += o.blocked_ns;
        self.runq_ns += o.runq_ns;
        self.runq_max_ns = self.runq_max_ns.max(o.runq_max_ns);
        for (a, b) in self.runq_hist.iter_mut().zip(o.runq_hist.iter()) {
            *a += b;
        }
    }

    /// `self - earlier`, saturating (a counter never goes back; if it seems to, the row was
    /// reset and the new value is the delta). `runq_max_ns` stays the running maximum.
    pub fn since(&self, earlier: &Counts) -> Counts {
        let mut d = *self;
        d.voluntary = self.voluntary.saturating_sub(earlier.voluntary);
        d.involuntary = self.involuntary.saturating_sub(earlier.involuntary);
        d.same_in = self.same_in.saturating_sub(earlier.same_in);
        d.cross_in = self.cross_in.saturating_sub(earlier.cross_in);
        d.idle_kernel_in = self.idle_kernel_in.saturating_sub(earlier.idle_kernel_in);
        d.oncpu_ns = self.oncpu_ns.saturating_sub(earlier.oncpu_ns);
        d.blocked_ns = self.blocked_ns.saturating_sub(earlier.blocked_ns);
        d.runq_ns = self.runq_ns.saturating_sub(earlier.runq_ns);
        for (a, b) in d.runq_hist.iter_mut().zip(earlier.runq_hist.iter()) {
            *a = a.saturating_sub(*b);
        }
        d
    }

    /// Each figure the larger of `self`'s and `floor`'s: a total reported once is never
    /// reported smaller (an open period read a little long, a thread's final counts
    /// lost), so an interval's share is never negative and the shares sum to the total.
    pub fn at_least(&self, floor: &Counts) -> Counts {
        let mut c = *self;
        for (a, b) in [
            (&mut c.voluntary, floor.voluntary),
            (&mut c.involuntary, floor.involuntary),
            (&mut c.same_in, floor.same_in),
            (&mut c.cross_in, floor.cross_in),
            (&mut c.idle_kernel_in, floor.idle_kernel_in),
            (&mut c.oncpu_ns, floor.oncpu_ns),
            (&mut c.blocked_ns, floor.blocked_ns),
            (&mut c.runq_ns, floor.runq_ns),
            (&mut c.runq_max_ns, floor.runq_max_ns),
        ] {
            *a = (*a).max(b);
        }
        for (a, b) in c.runq_hist.iter_mut().zip(floor.runq_hist.iter()) {
            *a = (*a).max(*b);
        }
        c
    }

    pub fn switches(&self) -> u64 {
        self.voluntary + self.involuntary
    }

    pub fn is_zero(&self) -> bool {
        self.switches() == 0
            && self.same_in + self.cross_in + self.idle_kernel_in == 0
            && self.oncpu_ns == 0
    }
}

/// One process (or thread) in one interval.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Row {
    pub key: Key,
    /// Since proclens started.
    pub total: Counts,
    /// In this interval.
    pub delta: Counts,
    /// Whether any of its threads still has a live entry in the kernel.
    pub alive: bool,
    /// Command name carried by an exit event (the leader's when it has exited), for rows
    /// that are gone from /proc.
    pub exit_comm: Option<String>,
}

impl Row {
    /// A live row with nothing counted yet.
    pub fn idle(key: Key) -> Self {
        Self {
            key,
            total: Counts::default(),
            delta: Counts::default(),
            alive: true,
            exit_comm: None,
        }
    }
}

/// Turns successive kernel snapshots into rows.
#[derive(Debug, Default)]
pub struct SwitchModel {
    per_thread: bool,
    /// Final counts of threads that exited, by row.
    finished: HashMap<Key, Counts>,
    /// Totals at the previous update, by row.
    last: HashMap<Key, Counts>,
    /// Command names from exit events, by row.
    exit_comms: HashMap<Key, String>,
}

impl SwitchModel {
    pub fn new(per_thread: bool) -> Self {
        Self {
            per_thread,
            ..Self::default()
        }
    }

    fn key(&self, tid: u32, t: &ThreadSwitches) -> Key {
        Key {
            id: if self.per_thread { tid } else { t.tgid },
            tgid: t.tgid,
            start_ns: t.start_ns,
        }
    }

    /// Keeps a row's kernel name: its leader's (`leader`), else its first thread's. Reads
    /// it only when it would be kept (a fork storm's rows are named once each).
    fn note_comm(&mut self, key: Key, leader: bool, raw: &[u8; 16]) {
        if raw[0] == 0 {
            return;
        }
        match self.exit_comms.entry(key) {
            Entry::Occupied(mut e) => {
                if leader && e.get().as_bytes() != comm_bytes(raw) {
                    e.insert(comm_str(raw));
                }
            }
            Entry::Vacant(e) => {
                e.insert(comm_str(raw));
            }
        }
    }

    /// Folds in one snapshot of the live threads and the exits seen since the last call.
    /// A thread may appear in both (read just before its exit); its final counts win.
    pub fn update(
        &mut self,
        live: &HashMap<u32, ThreadSwitches>,
        exits: &[ThreadExit],
    ) -> Vec<Row> {
        let mut superseded: HashSet<u32> = HashSet::new();
        for ev in exits {
            let tid = ev.header.tid;
            if live
                .get(&tid)
                .is_some_and(|t| t.tgid == ev.stats.tgid && t.start_ns == ev.stats.start_ns)
            {
                superseded.insert(tid);
            }
            if ev.stats.tgid == 0 {
                continue;
            }
            let key = self.key(tid, &ev.stats);
            self.finished.entry(key).or_default().add(&ev.stats);
            self.note_comm(key, tid == ev.stats.tgid, &ev.comm);
        }
        let mut totals: HashMap<Key, Counts> = self.finished.clone();
        let mut alive: HashSet<Key> = HashSet::new();
        for (tid, t) in live {
            // tgid 0: created by a wakeup, not yet seen switching out.
            if t.tgid == 0 || superseded.contains(tid) {
                continue;
            }
            let key = self.key(*tid, t);
            totals.entry(key).or_default().add(t);
            alive.insert(key);
            // The kernel's name, for a process reaped before /proc is read: the leader's
            // when there is one.
            self.note_comm(key, *tid == t.tgid, &t.comm);
        }
        let mut rows = Vec::with_capacity(totals.len());
        for (key, total) in totals {
            let (total, delta) = match self.last.get(&key) {
                Some(prev) => {
                    let total = total.at_least(prev);
                    (total, total.since(prev))
                }
                None => (total, total),
            };
            let is_alive = alive.contains(&key);
            if !is_alive && delta.is_zero() {
                // Fully exited and already reported: forget it.
                self.finished.remove(&key);
                self.last.remove(&key);
                self.exit_comms.remove(&key);
                continue;
            }
            self.last.insert(key, total);
            rows.push(Row {
                key,
                total,
                delta,
                alive: is_alive,
                exit_comm: self.exit_comms.get(&key).cloned(),
            });
        }
        super::spare::map(&mut self.finished);
        super::spare::map(&mut self.last);
        super::spare::map(&mut self.exit_comms);
        rows.sort_by(|a, b| {
            b.delta
                .switches()
                .cmp(&a.delta.switches())
                .then(a.key.cmp(&b.key))
        });
        rows
    }

    #[cfg(test)]
    /// Rows currently remembered (live or not yet reported as gone).
    pub fn len(&self) -> usize {
        self.last.len()
    }

    pub fn contains(&self, key: &Key) -> bool {
        self.last.contains_key(key)
    }
}

/// A NUL-padded kernel command name as a string.
pub fn comm_str(raw: &[u8]) -> String {
    String::from_utf8_lossy(comm_bytes(raw)).into_owned()
}

/// A NUL-padded kernel command name's bytes, up to the NUL.
pub fn comm_bytes(raw: &[u8]) -> &[u8] {
    let end = raw.iter().position(|&b| b == 0).unwrap_or(raw.len());
    &raw[..end]
}

#[cfg(test)]
mod tests;
