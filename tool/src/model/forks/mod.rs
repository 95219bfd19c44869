//! What a fork costs, per process: the time its fork-family calls took, its own
//! copy-on-write faults (all of them, and those after it forked), and the faults its
//! children took in the address space they inherited from it (before they exec'd). Pure:
//! built from the kernel maps' totals and who created whom.

use std::collections::{BTreeSet, HashMap};

use proclens_common::{
    copies::ProcKey,
    forks::{FaultKey, ForkTimes, fault_flags, fork_kind},
};
use serde::Serialize;

use super::proctable::Key;

mod execs;
mod run;
pub use execs::ExecEntry;
#[cfg(test)]
pub use execs::InheritedFd;
pub use run::{ForksSection, section};

/// One process's figures, over an interval or since tracing began.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct Cost {
    /// Children made by fork (or clone without `CLONE_VM`), and the time in those calls.
    pub forks: u64,
    pub fork_ns: u64,
    /// vfork (`CLONE_VFORK`): the time includes the wait until the child exec'd or exited.
    pub vforks: u64,
    pub vfork_ns: u64,
    /// Processes sharing its address space (`CLONE_VM`).
    pub shared_vm: u64,
    pub shared_vm_ns: u64,
    pub threads: u64,
    pub thread_ns: u64,
    /// Fork-family calls that failed.
    pub failed: u64,
    /// Write faults on present pages: copy-on-write.
    pub cow_faults: u64,
    /// Of which in an address space inherited through fork, before any exec.
    pub cow_inherited: u64,
    /// Of which since this process's first fork seen (not per fork).
    pub cow_after_fork: u64,
    /// Its children's `cow_inherited`: the copies its forks caused in them.
    pub children_cow: u64,
    /// The bytes the kernel copied for `cow_faults`, `cow_inherited`, `cow_after_fork`
    /// and `children_cow`: a base page per fault, a whole huge page per hugetlb fault.
    pub cow_bytes: u64,
    pub inherited_bytes: u64,
    pub after_fork_bytes: u64,
    pub children_bytes: u64,
    /// Of `cow_faults`, those in hugetlb mappings (where the kernel says which).
    pub cow_hugetlb: u64,
}

impl Cost {
    /// Each field of `self` combined with the same field of `other`.
    fn zip(&self, other: &Cost, f: impl Fn(u64, u64) -> u64) -> Cost {
        Cost {
            forks: f(self.forks, other.forks),
            fork_ns: f(self.fork_ns, other.fork_ns),
            vforks: f(self.vforks, other.vforks),
            vfork_ns: f(self.vfork_ns, other.vfork_ns),
            shared_vm: f(self.shared_vm, other.shared_vm),
            shared_vm_ns: f(self.shared_vm_ns, other.shared_vm_ns),
            threads: f(self.threads, other.threads),
            thread_ns: f(self.thread_ns, other.thread_ns),
            failed: f(self.failed, other.failed),
            cow_faults: f(self.cow_faults, other.cow_faults),
            cow_inherited: f(self.cow_inherited, other.cow_inherited),
            cow_after_fork: f(self.cow_after_fork, other.cow_after_fork),
            children_cow: f(self.children_cow, other.children_cow),
            cow_bytes: f(self.cow_bytes, other.cow_bytes),
            inherited_bytes: f(self.inherited_bytes, other.inherited_bytes),
            after_fork_bytes: f(self.after_fork_bytes, other.after_fork_bytes),
            children_bytes: f(self.children_bytes, other.children_bytes),
            cow_hugetlb: f(self.cow_hugetlb, other.cow_hugetlb),
        }
    }

    fn since(&self, before: &Cost) -> Cost {
        self.zip(before, u64::saturating_sub)
    }

    /// Both summed.
    pub fn plus(&self, other: &Cost) -> Cost {
        self.zip(other, u64::saturating_add)
    }

    fn add_times(&mut self, t: &ForkTimes) {
        self.forks += t.calls[fork_kind::FORK];
        self.fork_ns += t.ns[fork_kind::FORK];
        self.vforks += t.calls[fork_kind::VFORK];
        self.vfork_ns += t.ns[fork_kind::VFORK];
        self.shared_vm += t.calls[fork_kind::SHARED_VM];
        self.shared_vm_ns += t.ns[fork_kind::SHARED_VM];
        self.threads += t.calls[fork_kind::THREAD];
        self.thread_ns += t.ns[fork_kind::THREAD];
        self.failed += t.failed;
    }

    fn add_faults(&mut self, flags: u32, n: u64, page_size: u64) {
        let bytes = n * fault_flags::bytes(flags, page_size);
        self.cow_faults += n;
        self.cow_bytes += bytes;
        if flags & fault_flags::HUGETLB != 0 {
            self.cow_hugetlb += n;
        }
        if flags & fault_flags::INHERITED != 0 {
            self.cow_inherited += n;
            self.inherited_bytes += bytes;
        }
        if flags & fault_flags::AFTER_FORK != 0 {
            self.cow_after_fork += n;
            self.after_fork_bytes += bytes;
        }
    }

    /// Time in calls that made processes (threads apart).
    pub fn process_ns(&self) -> u64 {
        self.fork_ns + self.vfork_ns + self.shared_vm_ns
    }

    /// Copy-on-write faults that followed its forks: its own since it forked, and its
    /// children's in what they inherited.
    pub fn faults_caused(&self) -> u64 {
        self.cow_after_fork + self.children_cow
    }

    /// Nothing happened (an interval's delta).
    pub fn is_zero(&self) -> bool {
        *self == Cost::default()
    }
}

/// A [`Cost`] as the views show it: times in ms, faults also in bytes (what the kernel
/// copies for each: a base page, and for a fault in a hugetlb mapping a whole huge page,
/// counted apart in `cow_hugetlb_faults`; a write to a page no other process maps any
/// more reuses it without a copy, so the bytes are an upper bound). A transparent huge
/// page is split and copied one base page per fault. Where the kernel cannot look a
/// fault's mapping up (before 5.17), a hugetlb fault counts one base page.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Figures {
    pub forks: u64,
    pub fork_ms: f64,
    pub vforks: u64,
    pub vfork_ms: f64,
    pub shared_vm: u64,
    pub shared_vm_ms: f64,
    pub threads: u64,
    pub thread_ms: f64,
    pub failed: u64,
    pub cow_faults: u64,
    pub cow_bytes: u64,
    pub cow_inherited: u64,
    pub cow_after_fork: u64,
    pub children_cow_faults: u64,
    /// `cow_after_fork + children_cow_faults`: the faults its forks caused.
    pub faults_caused: u64,
    pub faults_caused_bytes: u64,
    /// Of `cow_faults`, those in hugetlb mappings (each a whole huge page of `cow_bytes`).
    pub cow_hugetlb_faults: u64,
}

impl Figures {
    pub fn of(c: &Cost) -> Self {
        let ms = |ns: u64| ns as f64 / 1e6;
        Self {
            forks: c.forks,
            fork_ms: ms(c.fork_ns),
            vforks: c.vforks,
            vfork_ms: ms(c.vfork_ns),
            shared_vm: c.shared_vm,
            shared_vm_ms: ms(c.shared_vm_ns),
            threads: c.threads,
            thread_ms: ms(c.thread_ns),
            failed: c.failed,
            cow_faults: c.cow_faults,
            cow_bytes: c.cow_bytes,
            cow_inherited: c.cow_inherited,
            cow_after_fork: c.cow_after_fork,
            children_cow_faults: c.children_cow,
            faults_caused: c.faults_caused(),
            faults_caused_bytes: c.after_fork_bytes + c.children_bytes,
            cow_hugetlb_faults: c.cow_hugetlb,
        }
    }
}

/// One process's row.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CostRow {
    pub key: Key,
    /// The process that created it, when known.
    pub creator: Option<u32>,
    pub delta: Cost,
    pub total: Cost,
}

/// Keeps the last totals, to turn each reading into interval deltas.
#[derive(Debug, Default)]
pub struct CostModel {
    last: HashMap<Key, Cost>,
    /// Children's inherited faults and their bytes, summed as they come: a child's own
    /// entry goes when it has gone, its parent's sum stays.
    children: HashMap<Key, (u64, u64)>,
}

/// The per-process totals of one reading of the maps.
pub fn totals(
    faults: &HashMap<FaultKey, u64>,
    times: &HashMap<ProcKey, ForkTimes>,
    page_size: u64,
) -> HashMap<Key, Cost> {
    let mut out: HashMap<Key, Cost> = HashMap::new();
    for (k, n) in faults {
        let key = Key {
            tgid: k.tgid,
            start_ns: k.start_ns,
        };
        out.entry(key)
            .or_default()
            .add_faults(k.flags, *n, page_size);
    }
    for (k, t) in times {
        let key = Key {
            tgid: k.tgid,
            start_ns: k.start_ns,
        };
        out.entry(key).or_default().add_times(t);
    }
    out
}

/// Among `keys`, the process that is `parent`: the exact key, else (a creator known from
/// /proc, whose start is to the clock tick) the latest started process of that pid that
/// started no later than `child`.
fn resolve(keys: &BTreeSet<Key>, parent: Key, child: Key) -> Key {
    if keys.contains(&parent) {
        return parent;
    }
    keys.range(
        Key {
            tgid: parent.tgid,
            start_ns: 0,
        }..=Key {
            tgid: parent.tgid,
            start_ns: child.start_ns,
        },
    )
    .next_back()
    .copied()
    .unwrap_or(parent)
}

impl CostModel {
    pub fn new() -> Self {
        Self::default()
    }

    /// Rows from one reading's [`totals`]; `creator_of` names who created a process.
    /// Rows: every process with figures, and every parent whose children's faults count;
    /// busiest first (faults caused, then own faults, then fork time).
    pub fn update(
        &mut self,
        now: &HashMap<Key, Cost>,
        creator_of: impl Fn(Key) -> Option<Key>,
    ) -> Vec<CostRow> {
        let mut keys: BTreeSet<Key> = now.keys().copied().collect();
        keys.extend(self.children.keys().copied());
        let mut creators: HashMap<Key, Key> = HashMap::new();
        for (&k, c) in now {
            let Some(p) = creator_of(k) else { continue };
            let p = resolve(&keys, p, k);
            creators.insert(k, p);
            let (before, before_bytes) = self
                .last
                .get(&k)
                .map_or((0, 0), |l| (l.cow_inherited, l.inherited_bytes));
            let grew = c.cow_inherited.saturating_sub(before);
            if grew > 0 {
                let sum = self.children.entry(p).or_default();
                sum.0 += grew;
                sum.1 += c.inherited_bytes.saturating_sub(before_bytes);
                keys.insert(p);
            }
        }
        let mut rows: Vec<CostRow> = keys
            .iter()
            .map(|&k| {
                let mut total = now.get(&k).copied().unwrap_or_default();
                (total.children_cow, total.children_bytes) =
                    self.children.get(&k).copied().unwrap_or_default();
                let delta = total.since(&self.last.get(&k).copied().unwrap_or_default());
                CostRow {
                    key: k,
                    creator: creators.get(&k).map(|p| p.tgid),
                    delta,
                    total,
                }
            })
            .collect();
        self.last = rows.iter().map(|r| (r.key, r.total)).collect();
        rows.sort_by(|a, b| {
            let rank = |r: &CostRow| {
                (
                    r.delta.faults_caused(),
                    r.delta.cow_faults,
                    r.delta.process_ns(),
                )
            };
            rank(b).cmp(&rank(a)).then(a.key.cmp(&b.key))
        });
        rows
    }

    /// Forgets processes that have gone, after their last report.
    pub fn forget<'a>(&mut self, gone: impl IntoIterator<Item = &'a Key>) {
        for k in gone {
            self.last.remove(k);
            self.children.remove(k);
        }
        crate::model::spare::map(&mut self.last);
        crate::model::spare::map(&mut self.children);
    }
}

#[cfg(test)]
mod tests;
