//! Reading the interrupt programs' per-CPU maps into a [`Reading`], and pruning the
//! victims that have gone.

use anyhow::{Context as _, Result};
use aya::maps::{MapData, PerCpuArray, PerCpuHashMap};
use proclens_common::{
    copies::ProcKey,
    irq::{CpuIrq, IrqStats, SOFTIRQS, Stolen, vector},
};

use crate::{
    collect::{
        object::Object,
        percpu::{remove_where, summed},
        setup::take_map,
    },
    model::{
        irq::{Figures, Reading, Source, Taken},
        proctable::Key,
    },
};

/// The interrupt programs' maps.
pub struct IrqMaps {
    softirqs: PerCpuArray<MapData, IrqStats>,
    lines: PerCpuArray<MapData, IrqStats>,
    cpu: PerCpuArray<MapData, CpuIrq>,
    victims: PerCpuHashMap<MapData, ProcKey, Stolen>,
    /// Line slots (IRQ numbers `0..n_lines`); the vectors' follow.
    n_lines: u32,
    /// The system vectors timed (each once, in order).
    vectors: Vec<u32>,
}

impl IrqMaps {
    pub(super) fn take(obj: &mut Object, n_lines: u32, tracepoints: &[&str]) -> Result<Self> {
        let mut vectors: Vec<u32> = (0..vector::COUNT)
            .filter(|&v| {
                vector::TRACEPOINTS[v as usize]
                    .iter()
                    .any(|tp| tracepoints.contains(tp))
            })
            .collect();
        vectors.dedup();
        Ok(Self {
            softirqs: PerCpuArray::try_from(take_map(obj, "SOFTIRQS")?)?,
            lines: PerCpuArray::try_from(take_map(obj, "IRQ_LINES")?)?,
            cpu: PerCpuArray::try_from(take_map(obj, "CPU_IRQ")?)?,
            victims: PerCpuHashMap::try_from(take_map(obj, "VICTIMS")?)?,
            n_lines,
            vectors,
        })
    }

    /// The system vectors timed on this kernel.
    pub fn vectors(&self) -> &[u32] {
        &self.vectors
    }

    fn per_cpu(map: &PerCpuArray<MapData, IrqStats>, i: u32) -> Result<Vec<Figures>> {
        Ok(map
            .get(&i, 0)
            .with_context(|| format!("reading interrupt slot {i}"))?
            .iter()
            .map(Figures::from)
            .collect())
    }

    /// Everything the programs have counted since they were attached. Lines are read for
    /// the IRQs that exist now (a line never allocated has nothing to read).
    pub fn read(&self) -> Result<Reading> {
        let mut r = Reading::default();
        for v in 0..SOFTIRQS as u32 {
            for (c, f) in Self::per_cpu(&self.softirqs, v)?.into_iter().enumerate() {
                if r.softirqs.len() <= c {
                    r.softirqs.resize(c + 1, Default::default());
                }
                r.softirqs[c][v as usize] = f;
            }
        }
        for irq in allocated_irqs(self.n_lines) {
            r.hard
                .insert(Source::Line(irq), Self::per_cpu(&self.lines, irq)?);
        }
        for &v in &self.vectors {
            r.hard.insert(
                Source::Vector(v),
                Self::per_cpu(&self.lines, self.n_lines + v)?,
            );
        }
        r.cpus = self
            .cpu
            .get(&0, 0)
            .context("reading CPU_IRQ")?
            .iter()
            .map(|c| c.totals)
            .collect();
        let victims = summed(&self.victims, "VICTIMS", |per_cpu| {
            let mut t = Taken::default();
            let mut comm = [0u8; 16];
            for s in per_cpu.iter() {
                t.add(&Taken::of(s));
                if comm[0] == 0 {
                    comm = s.comm;
                }
            }
            (t, crate::model::switches::comm_str(&comm))
        })?;
        r.victims = victims
            .into_iter()
            .map(|(k, v)| {
                (
                    Key {
                        tgid: k.tgid,
                        start_ns: k.start_ns,
                    },
                    v,
                )
            })
            .collect();
        Ok(r)
    }

    /// Deletes the victim entries of processes that have gone (after their last report).
    pub fn prune(&mut self, gone: &super::gone::Gone) -> Result<()> {
        if gone.is_empty() {
            return Ok(());
        }
        remove_where(&mut self.victims, "VICTIMS", |k| {
            gone.contains(&Key {
                tgid: k.tgid,
                start_ns: k.start_ns,
            })
        })
    }
}

/// The IRQ numbers below `n` allocated now (from /sys/kernel/irq); all of them where the
/// kernel does not list its IRQs.
fn allocated_irqs(n: u32) -> Vec<u32> {
    match std::fs::read_dir("/sys/kernel/irq") {
        Ok(dir) => {
            let mut v: Vec<u32> = dir
                .flatten()
                .filter_map(|e| e.file_name().to_str()?.parse().ok())
                .filter(|&i| i < n)
                .collect();
            v.sort_unstable();
            v
        }
        Err(_) => (0..n).collect(),
    }
}
