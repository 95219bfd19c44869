//! Interrupt context (tool-ebpf/src/irq.rs): the programs' set-up ([`IrqSetup`]), their
//! maps ([`IrqMaps`]), and each report's figures with their names ([`IrqCollector`]): the
//! IRQ lines' as /sys/kernel/irq gives them, the victims' from /proc (or, once a process
//! has gone, as the kernel recorded it).

mod maps;
mod setup;

use std::collections::{BTreeMap, HashMap};

use anyhow::Result;

pub use maps::IrqMaps;
pub use setup::IrqSetup;

use super::{gone, procfs};
use crate::model::{
    irq::{Interval, IrqModel, Source},
    proctable::Key,
};

/// One report's interrupt figures.
#[derive(Debug, Clone, Default)]
pub struct IrqSnapshot {
    pub interval: Interval,
    /// The name of each hard IRQ source with a row: a line's handlers (`virtio1-req.0`),
    /// a system vector's /proc/interrupts description.
    pub names: BTreeMap<Source, String>,
    /// The victims' command names.
    pub comms: HashMap<Key, String>,
    /// Victims that have gone: this is their last report (their entries are deleted).
    pub gone: gone::Gone,
    /// The kernel keeps precise IRQ time (`CONFIG_IRQ_TIME_ACCOUNTING`, on): /proc/stat's
    /// irq and softirq columns are measured, and tasks' run times exclude interrupts.
    /// Otherwise the irq column stays 0, the softirq column is sampled at each tick, and
    /// tasks' run times include the interrupts that hit them.
    pub irq_time_accounting: bool,
    /// The system vectors timed (`proclens_common::irq::vector`).
    pub vectors: Vec<u32>,
}

/// Keeps the interrupt model and the names between reports.
#[derive(Debug)]
pub struct IrqCollector {
    model: IrqModel,
    comms: procfs::CommCache<Key>,
    names: BTreeMap<Source, String>,
    irq_time_accounting: bool,
}

impl IrqCollector {
    /// Starts from what the programs have counted so far: the first report's totals hold
    /// it, its deltas do not.
    pub fn start(maps: &IrqMaps) -> Result<Self> {
        Ok(Self {
            model: IrqModel::new(maps.read()?),
            comms: procfs::CommCache::default(),
            names: BTreeMap::new(),
            irq_time_accounting: irq_time_accounting(),
        })
    }

    /// The interval that ends now.
    /// `exited`: the processes the events saw die lately.
    pub fn tick(&mut self, maps: &mut IrqMaps, exited: &gone::Exited) -> Result<IrqSnapshot> {
        let reading = maps.read()?;
        let interval = self.model.update(reading);
        // A process hit in this interval was alive a moment ago: only the quiet ones are
        // looked up in /proc (a process hit in its last interval is found gone in the next).
        let quiet = interval
            .victims
            .iter()
            .filter(|v| v.delta.is_zero())
            .map(|v| v.key)
            .collect::<Vec<_>>();
        let gone = gone::gone(&quiet, procfs::tick_ns(), exited);
        for r in &interval.hard {
            self.names
                .entry(r.kind)
                .or_insert_with(|| source_name(r.kind));
        }
        let mut comms = HashMap::new();
        for v in &interval.victims {
            let alive = !gone.contains(&v.key);
            let mut c = self.comms.get(v.key, v.key.tgid, alive, None);
            if c == "?" && !v.kernel_comm.is_empty() {
                c.clone_from(&v.kernel_comm);
            }
            comms.insert(v.key, c);
        }
        self.comms.retain(|k| !gone.contains(k));
        maps.prune(&gone)?;
        Ok(IrqSnapshot {
            interval,
            names: self.names.clone(),
            comms,
            gone,
            irq_time_accounting: self.irq_time_accounting,
            vectors: maps.vectors().to_vec(),
        })
    }
}

/// What /proc/interrupts calls each system vector.
const VECTOR_DESCRIPTIONS: [&str; proclens_common::irq::vector::COUNT as usize] = [
    "Local timer interrupts",
    "Rescheduling interrupts",
    "Function call interrupts",
    "IRQ work interrupts",
];

/// A line's handlers as /sys/kernel/irq/N/actions lists them, or a vector's description.
fn source_name(s: Source) -> String {
    match s {
        Source::Line(n) => std::fs::read_to_string(format!("/sys/kernel/irq/{n}/actions"))
            .map(|a| a.trim().to_string())
            .unwrap_or_default(),
        Source::Vector(v) => VECTOR_DESCRIPTIONS
            .get(v as usize)
            .copied()
            .unwrap_or_default()
            .to_string(),
    }
}

/// Whether the kernel measures IRQ time: /proc/stat's `irq` column (the 6th of a `cpu`
/// line) is non-zero only then, since a tick, itself a hard IRQ, never lands inside
/// another one to sample it. This reads what the kernel does now, whatever its
/// configuration says (IRQ time accounting compiled in can be off at run time).
pub fn irq_time_accounting() -> bool {
    std::fs::read_to_string("/proc/stat")
        .ok()
        .and_then(|s| parse_stat_irq(&s))
        .is_some_and(|irq| irq > 0)
}

/// The `irq` column of /proc/stat's first (`cpu`, all CPUs) line.
fn parse_stat_irq(text: &str) -> Option<u64> {
    text.lines()
        .find(|l| l.starts_with("cpu "))?
        .split_whitespace()
        .nth(6)?
        .parse()
        .ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_irq_column_of_proc_stat() {
        let off = "cpu  316579 0 58467 321085 1907 0 523 9108 0 0\ncpu0 1 2 3 4 5 6 7 8 9 10\n";
        assert_eq!(parse_stat_irq(off), Some(0));
        let on = "cpu  10 0 20 30 40 17 5 0 0 0\n";
        assert_eq!(parse_stat_irq(on), Some(17));
        assert_eq!(parse_stat_irq("intr 1 2\n"), None);
    }
}
