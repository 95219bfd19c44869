//! Interrupt figures over an interval: the kernel's cumulative counts and times per CPU
//! and per kind (softirq vector, IRQ line, system vector), and per victim process, turned
//! into each interval's deltas beside the totals since proclens attached.

use std::collections::{BTreeMap, HashMap};

use proclens_common::irq::{
    CpuTotals, DUR_BUCKETS, IrqStats, SOFTIRQ_NAMES, SOFTIRQS, Stolen, vector,
};

use super::proctable::Key;

/// A hard IRQ source: a numbered line of /proc/interrupts, or an x86 system vector
/// (`proclens_common::irq::vector`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Source {
    Line(u32),
    Vector(u32),
}

impl Source {
    /// The /proc/interrupts row: the line's number, or the vector's name (`LOC`).
    pub fn row(self) -> String {
        match self {
            Source::Line(n) => n.to_string(),
            Source::Vector(v) => vector::NAMES
                .get(v as usize)
                .map_or_else(|| format!("vector{v}"), |n| (*n).to_string()),
        }
    }
}

/// What a softirq vector or hard IRQ source shows: count, time and durations.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Figures {
    pub count: u64,
    pub ns: u64,
    pub hist: [u64; DUR_BUCKETS],
}

impl From<&IrqStats> for Figures {
    fn from(s: &IrqStats) -> Self {
        Self {
            count: s.count,
            ns: s.ns,
            hist: s.hist,
        }
    }
}

impl Figures {
    /// What happened since `before` (a counter that went back, such as a reused map slot,
    /// counts from 0).
    pub fn since(&self, before: &Self) -> Self {
        let d = |a: u64, b: u64| a.checked_sub(b).unwrap_or(a);
        let mut hist = [0; DUR_BUCKETS];
        for (i, h) in hist.iter_mut().enumerate() {
            *h = d(self.hist[i], before.hist[i]);
        }
        Self {
            count: d(self.count, before.count),
            ns: d(self.ns, before.ns),
            hist,
        }
    }

    pub fn add(&mut self, o: &Self) {
        self.count += o.count;
        self.ns += o.ns;
        for (a, b) in self.hist.iter_mut().zip(o.hist) {
            *a += b;
        }
    }
}

/// One CPU's times charged to no process, and its nested hard IRQs (cumulative, ns).
pub type CpuExtra = CpuTotals;

/// What happened on a CPU since `b`.
fn extra_since(a: &CpuExtra, b: &CpuExtra) -> CpuExtra {
    let d = |x: u64, y: u64| x.saturating_sub(y);
    CpuExtra {
        idle_hard_ns: d(a.idle_hard_ns, b.idle_hard_ns),
        idle_soft_ns: d(a.idle_soft_ns, b.idle_soft_ns),
        ksoftirqd_soft_ns: d(a.ksoftirqd_soft_ns, b.ksoftirqd_soft_ns),
        untraced_hard_ns: d(a.untraced_hard_ns, b.untraced_hard_ns),
        untraced_soft_ns: d(a.untraced_soft_ns, b.untraced_soft_ns),
        nested: d(a.nested, b.nested),
        nested_ns: d(a.nested_ns, b.nested_ns),
    }
}

/// Interrupt time taken from one process: hard IRQs and softirqs apart.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Taken {
    pub hard: u64,
    pub hard_ns: u64,
    pub soft: u64,
    pub soft_ns: u64,
}

impl Taken {
    pub fn of(s: &Stolen) -> Self {
        Self {
            hard: s.hard,
            hard_ns: s.hard_ns,
            soft: s.soft,
            soft_ns: s.soft_ns,
        }
    }

    pub fn add(&mut self, o: &Self) {
        self.hard += o.hard;
        self.hard_ns += o.hard_ns;
        self.soft += o.soft;
        self.soft_ns += o.soft_ns;
    }

    fn since(&self, b: &Self) -> Self {
        let d = |x: u64, y: u64| x.checked_sub(y).unwrap_or(x);
        Self {
            hard: d(self.hard, b.hard),
            hard_ns: d(self.hard_ns, b.hard_ns),
            soft: d(self.soft, b.soft),
            soft_ns: d(self.soft_ns, b.soft_ns),
        }
    }

    pub fn ns(&self) -> u64 {
        self.hard_ns + self.soft_ns
    }

    pub fn is_zero(&self) -> bool {
        self.hard == 0 && self.soft == 0
    }
}

/// One reading of the kernel's cumulative figures (per CPU: index = CPU).
#[derive(Debug, Clone, Default)]
pub struct Reading {
    pub softirqs: Vec<[Figures; SOFTIRQS]>,
    /// Each hard IRQ source read, per CPU.
    pub hard: BTreeMap<Source, Vec<Figures>>,
    pub cpus: Vec<CpuExtra>,
    /// Per victim process (CPUs summed), with the name the kernel recorded.
    pub victims: HashMap<Key, (Taken, String)>,
}

/// One kind on one CPU over an interval.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct KindRow<K> {
    pub cpu: u32,
    pub kind: K,
    pub delta: Figures,
    pub total: Figures,
}

/// One CPU over an interval: hard IRQ and softirq figures summed over their kinds.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CpuRow {
    pub cpu: u32,
    pub hard: Figures,
    pub soft: Figures,
    pub hard_total: Figures,
    pub soft_total: Figures,
    pub extra: CpuExtra,
}

/// One victim process over an interval.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VictimRow {
    pub key: Key,
    /// The name the kernel recorded at its first interrupt.
    pub kernel_comm: String,
    pub delta: Taken,
    pub total: Taken,
}

/// An interval's figures.
#[derive(Debug, Clone, Default)]
pub struct Interval {
    pub cpus: Vec<CpuRow>,
    /// Softirqs by (CPU, vector index), those with a count since the start.
    pub softirqs: Vec<KindRow<usize>>,
    /// Hard IRQs by (CPU, source), those with a count since the start.
    pub hard: Vec<KindRow<Source>>,
    /// Every victim the kernel holds (interrupted since proclens attached, not pruned),
    /// most time in the interval first.
    pub victims: Vec<VictimRow>,
}

impl Interval {
    /// The victim row of the latest-started process with this pid.
    pub fn victim(&self, tgid: u32) -> Option<&VictimRow> {
        self.victims
            .iter()
            .filter(|v| v.key.tgid == tgid)
            .max_by_key(|v| v.key.start_ns)
    }
}

/// What interrupts took from a command and its descendants (`proclens run`).
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize)]
pub struct InterruptedSection {
    /// Hard IRQ handlers that ran while one of its tasks was current, and their time.
    pub hard: u64,
    pub hard_s: f64,
    /// Softirqs that ran while one of its tasks was current (their own time).
    pub soft: u64,
    pub soft_s: f64,
    /// Both, as a share of its tasks' on-CPU time (which includes them), %.
    pub oncpu_pct: f64,
}

impl InterruptedSection {
    /// From what its processes lost, together, and their on-CPU time.
    pub fn of(t: Taken, oncpu_s: f64) -> Self {
        let lost_s = t.ns() as f64 / 1e9;
        Self {
            hard: t.hard,
            hard_s: t.hard_ns as f64 / 1e9,
            soft: t.soft,
            soft_s: t.soft_ns as f64 / 1e9,
            oncpu_pct: if oncpu_s > 0.0 {
                (100.0 * lost_s / oncpu_s.max(lost_s)).min(100.0)
            } else {
                0.0
            },
        }
    }
}

/// The name of softirq vector `i`.
pub fn softirq_name(i: usize) -> &'static str {
    SOFTIRQ_NAMES.get(i).copied().unwrap_or("?")
}

/// Keeps the last reading to turn the next one into an interval.
#[derive(Debug, Default)]
pub struct IrqModel {
    last: Reading,
}

impl IrqModel {
    /// Starts from `first`: what happened before belongs to no interval, but counts in
    /// the totals (everything since proclens attached).
    pub fn new(first: Reading) -> Self {
        Self { last: first }
    }

    /// The interval from the last reading to `now`. Victims missing from `now` (pruned
    /// after their last interval) are forgotten.
    pub fn update(&mut self, now: Reading) -> Interval {
        let mut out = Interval::default();
        let ncpus = now.softirqs.len().max(now.cpus.len());
        let mut cpus: Vec<CpuRow> = (0..ncpus)
            .map(|c| CpuRow {
                cpu: c as u32,
                ..CpuRow::default()
            })
            .collect();
        let zero = Figures::default();
        for (c, per) in now.softirqs.iter().enumerate() {
            for (v, total) in per.iter().enumerate() {
                let before = self.last.softirqs.get(c).map_or(&zero, |p| &p[v]);
                let delta = total.since(before);
                cpus[c].soft.add(&delta);
                cpus[c].soft_total.add(total);
                if total.count > 0 {
                    out.softirqs.push(KindRow {
                        cpu: c as u32,
                        kind: v,
                        delta,
                        total: *total,
                    });
                }
            }
        }
        for (src, per) in &now.hard {
            for (c, total) in per.iter().enumerate() {
                let before = self
                    .last
                    .hard
                    .get(src)
                    .and_then(|p| p.get(c))
                    .unwrap_or(&zero);
                let delta = total.since(before);
                if let Some(row) = cpus.get_mut(c) {
                    row.hard.add(&delta);
                    row.hard_total.add(total);
                }
                if total.count > 0 {
                    out.hard.push(KindRow {
                        cpu: c as u32,
                        kind: *src,
                        delta,
                        total: *total,
                    });
                }
            }
        }
        for (c, x) in now.cpus.iter().enumerate() {
            let before = self.last.cpus.get(c).copied().unwrap_or_default();
            if let Some(row) = cpus.get_mut(c) {
                row.extra = extra_since(x, &before);
            }
        }
        out.cpus = cpus;
        for (key, (total, comm)) in &now.victims {
            let before = self.last.victims.get(key).map(|v| v.0).unwrap_or_default();
            out.victims.push(VictimRow {
                key: *key,
                kernel_comm: comm.clone(),
                delta: total.since(&before),
                total: *total,
            });
        }
        out.victims.sort_by(|a, b| {
            b.delta
                .ns()
                .cmp(&a.delta.ns())
                .then(a.key.tgid.cmp(&b.key.tgid))
        });
        self.last = now;
        out
    }
}

#[cfg(test)]
mod tests;
