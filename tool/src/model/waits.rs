//! Where blocked time goes, per process: the off-CPU time and voluntary switches charged
//! to each syscall a process blocked in, and the readiness calls' figures (select, poll,
//! epoll), as interval deltas and totals from successive readings of the kernel's maps
//! (closed blocks) and of the live threads (the block each is in now).
//!
//! A block still open is credited with what the switch program will charge when it closes
//! (see `open_period`), so each figure grows from one reading to the next and the sum of
//! the intervals is the total; a reading in which an open block's estimate ran ahead of
//! what the kernel then charged holds the figure at its highest (it never goes back).

use std::collections::{BTreeMap, HashMap};

use proclens_common::{
    copies::SysKey,
    switch::{LiveThread, flags},
    waits::{BlockStats, OUTSIDE_SYSCALL, ReadyStats, UNKNOWN_SYSCALL},
};

use super::{
    open_period::{Timing, open_period},
    proctable::Key,
};

/// Blocks of a live thread not in the kernel's per-process map: those it accumulated
/// (ended, all in one syscall) and the one it is in. The process, the syscall, the time and
/// the switches (the block in progress counts 1 when the kernel will charge one for it).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OpenBlock {
    pub key: Key,
    pub nr: u32,
    pub ns: u64,
    pub switches: u64,
}

/// `t`'s blocks not in the map yet: its accumulated ones (`ThreadSwitches::acc_nr`), and
/// the block it is in as the switch program will charge it (none unless its last switch
/// out was voluntary and charged to a syscall, and the kernel knows the wait, see
/// `open_period`).
pub fn open_blocks(t: &LiveThread, timing: Timing) -> impl Iterator<Item = OpenBlock> {
    let e = &t.stats;
    let key = Key {
        tgid: e.tgid,
        start_ns: t.process_start,
    };
    let accumulated = (e.acc_nr != 0 && e.acc_switches > 0).then(|| OpenBlock {
        key,
        nr: e.acc_nr - 1,
        ns: e.acc_ns,
        switches: u64::from(e.acc_switches),
    });
    let open = e.blocked_in != 0
        && e.flags & flags::OUT_VOLUNTARY != 0
        && e.out_ts != 0
        && (timing == Timing::Wakeups || e.flags & flags::WAIT_KNOWN != 0);
    let current = open.then(|| OpenBlock {
        key,
        nr: e.blocked_in - 1,
        ns: open_period(t, timing).blocked_ns,
        switches: 1,
    });
    accumulated.into_iter().chain(current)
}

/// What a syscall is to the views: a number (`SysKey::nr`, see `syscalls::name`), or
/// one of the two blocks outside any known syscall.
pub fn is_syscall(nr: u32) -> bool {
    nr != OUTSIDE_SYSCALL && nr != UNKNOWN_SYSCALL
}

/// The name of what blocks were charged to, as every view's JSON gives it: the syscall's
/// name in its ABI's table (the ABI apart, see `syscalls::abi`), or one of the two blocks
/// outside any known syscall.
pub fn blocked_name(nr: u32) -> String {
    if is_syscall(nr) {
        super::syscalls::name(nr).into_owned()
    } else if nr == OUTSIDE_SYSCALL {
        "(outside syscalls)".into()
    } else {
        "(syscall unknown)".into()
    }
}

/// One syscall's figures for a process.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Figures {
    pub blocked_ns: u64,
    pub switches: u64,
    /// The readiness counters (zeros for other syscalls).
    pub ready: ReadyStats,
}

impl Figures {
    fn since(&self, last: &Figures) -> Figures {
        let r = &self.ready;
        let l = &last.ready;
        Figures {
            blocked_ns: self.blocked_ns.saturating_sub(last.blocked_ns),
            switches: self.switches.saturating_sub(last.switches),
            ready: ReadyStats {
                calls: r.calls.saturating_sub(l.calls),
                fds_in: r.fds_in.saturating_sub(l.fds_in),
                interest: r.interest.saturating_sub(l.interest),
                ready: r.ready.saturating_sub(l.ready),
                empty: r.empty.saturating_sub(l.empty),
                errors: r.errors.saturating_sub(l.errors),
            },
        }
    }

    /// Each figure at least `floor`'s (see the module: totals never go back).
    fn at_least(mut self, floor: &Figures) -> Figures {
        self.blocked_ns = self.blocked_ns.max(floor.blocked_ns);
        self.switches = self.switches.max(floor.switches);
        self
    }
}

/// A syscall of a process: the interval's figures and the totals since proclens started.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SyscallWaits {
    pub nr: u32,
    pub delta: Figures,
    pub total: Figures,
}

/// A process's waits, its syscalls by blocked time in the interval, then in total.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProcWaits {
    pub key: Key,
    pub syscalls: Vec<SyscallWaits>,
}

impl ProcWaits {
    /// The interval's and the total blocked time and voluntary switches, summed.
    pub fn blocked(&self) -> (Figures, Figures) {
        let mut d = Figures::default();
        let mut t = Figures::default();
        for s in &self.syscalls {
            d.blocked_ns += s.delta.blocked_ns;
            d.switches += s.delta.switches;
            t.blocked_ns += s.total.blocked_ns;
            t.switches += s.total.switches;
        }
        (d, t)
    }
}

/// The waits of every process between readings.
#[derive(Debug, Default)]
pub struct WaitsModel {
    last: HashMap<(Key, u32), Figures>,
}

impl WaitsModel {
    pub fn new() -> Self {
        Self::default()
    }

    /// The figures now, from the kernel's closed blocks and readiness counts (summed over
    /// CPUs) and the blocks open now, against the last reading. Processes absent from all
    /// three are forgotten (gone processes are read one last time, then pruned).
    pub fn update(
        &mut self,
        blocks: &HashMap<SysKey, BlockStats>,
        ready: &HashMap<SysKey, ReadyStats>,
        open: &[OpenBlock],
    ) -> Vec<ProcWaits> {
        let mut now: BTreeMap<(Key, u32), Figures> = BTreeMap::new();
        let key = |k: &SysKey| {
            (
                Key {
                    tgid: k.tgid,
                    start_ns: k.start_ns,
                },
                k.nr,
            )
        };
        for (k, b) in blocks {
            let f = now.entry(key(k)).or_default();
            f.blocked_ns += b.blocked_ns;
            f.switches += b.switches;
        }
        for (k, r) in ready {
            now.entry(key(k)).or_default().ready = *r;
        }
        for o in open {
            let f = now.entry((o.key, o.nr)).or_default();
            f.blocked_ns += o.ns;
            f.switches += o.switches;
        }
        let mut procs: BTreeMap<Key, Vec<SyscallWaits>> = BTreeMap::new();
        let mut last = HashMap::with_capacity(now.len());
        for ((k, nr), f) in now {
            let before = self.last.get(&(k, nr)).copied().unwrap_or_default();
            let total = f.at_least(&before);
            procs.entry(k).or_default().push(SyscallWaits {
                nr,
                delta: total.since(&before),
                total,
            });
            last.insert((k, nr), total);
        }
        self.last = last;
        procs
            .into_iter()
            .map(|(key, mut syscalls)| {
                syscalls.sort_by(|a, b| {
                    (b.delta.blocked_ns, b.total.blocked_ns, a.nr).cmp(&(
                        a.delta.blocked_ns,
                        a.total.blocked_ns,
                        b.nr,
                    ))
                });
                ProcWaits { key, syscalls }
            })
            .collect()
    }
}

#[cfg(test)]
mod tests;
