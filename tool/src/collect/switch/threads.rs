//! Reading the thread table through the task iterators (tool-ebpf/src/iter.rs): the seed
//! once when tracing starts, the live reading at every report, whose open periods are
//! credited here (`model::open_period`) so that every view gets them.

use std::{collections::HashMap, io::Read as _};

use anyhow::{Context as _, Result, bail};
use aya::{
    maps::{Array, MapData, PerCpuArray},
    programs::Iter,
};
use proclens_common::switch::{CpuSwitches, CpuTable, LiveThread, ThreadSwitches};

use super::super::{object::Object, setup};
use crate::model::{
    open_period::{Timing, credited},
    waits::{OpenBlock, open_blocks},
};

const SEED: &str = "seed_threads";
const LIVE: &str = "live_threads";
/// Both iterators over tasks, with their target.
pub const ITERATORS: [(&str, &str); 2] = [(SEED, "task"), (LIVE, "task")];

/// Loads both iterators over tasks.
pub fn load(obj: &mut Object, kernel: &aya::Btf) -> Result<()> {
    for (name, target) in ITERATORS {
        setup::load_iter(program(obj, name)?, target, kernel).map_err(|e| {
            setup::load_error(&anyhow::Error::new(e).context(format!("loading iter/task {name}")))
        })?;
    }
    Ok(())
}

fn program<'a>(obj: &'a mut Object, name: &str) -> Result<&'a mut Iter> {
    Ok(obj
        .program_mut(name)
        .with_context(|| format!("program {name} missing from the BPF object"))?
        .try_into()?)
}

/// Runs iterator `name` over every task and returns what it wrote.
fn run(obj: &mut Object, name: &str) -> Result<Vec<u8>> {
    let prog = program(obj, name)?;
    let link = prog.attach().with_context(|| format!("attaching {name}"))?;
    let link = prog.take_link(link)?;
    let mut out = Vec::new();
    link.into_file()
        .with_context(|| format!("starting {name}"))?
        .read_to_end(&mut out)
        .with_context(|| format!("reading {name}"))?;
    Ok(out)
}

/// Gives every traced thread that exists now an entry (see `iter::seed_threads`).
pub fn seed(obj: &mut Object) -> Result<()> {
    run(obj, SEED).map(drop)
}

/// Where the switch programs keep their per-CPU state (see `config::Switch::cpu_table`).
pub enum CpuState {
    /// The object's `.bss`, one [`CpuTable`].
    Table(Array<MapData, CpuTable>),
    /// The per-CPU map `CPU_SWITCHES`.
    PerCpu(PerCpuArray<MapData, CpuSwitches>),
}

/// The switch programs' maps: per-thread accounting (read through the live iterator) and
/// the per-CPU split.
pub struct SwitchMaps {
    cpus: CpuState,
    timing: Timing,
}

impl SwitchMaps {
    pub fn new(cpus: CpuState, timing: Timing) -> Self {
        Self { cpus, timing }
    }

    /// Every traced thread's accounting now, by thread id, its open period credited;
    /// with `blocks`, also the blocks in progress (see `model::waits::open_block`).
    pub fn threads(
        &self,
        obj: &mut Object,
        blocks: bool,
    ) -> Result<(HashMap<u32, ThreadSwitches>, Vec<OpenBlock>)> {
        let live = decode(&run(obj, LIVE)?)?;
        let open = if blocks {
            live.iter()
                .flat_map(|t| open_blocks(t, self.timing))
                .collect()
        } else {
            Vec::new()
        };
        Ok((
            live.iter()
                .map(|t| (t.tid, credited(t, self.timing)))
                .collect(),
            open,
        ))
    }

    /// The system-wide switch split, summed over CPUs.
    pub fn cpu_totals(&self) -> Result<CpuSwitches> {
        Ok(match &self.cpus {
            CpuState::Table(a) => {
                // 128 KiB, copied once per report.
                let table = a.get(&0, 0).context("reading the CPU state table")?;
                sum_cpus(table.cpus.iter().map(|c| &c.state))
            }
            CpuState::PerCpu(a) => sum_cpus(a.get(&0, 0).context("reading CPU_SWITCHES")?.iter()),
        })
    }
}

/// The system-wide split: the CPUs' counts summed.
fn sum_cpus<'a>(cpus: impl Iterator<Item = &'a CpuSwitches>) -> CpuSwitches {
    let mut t = CpuSwitches::default();
    for c in cpus {
        t.switches += c.switches;
        t.same_process += c.same_process;
        t.cross_process += c.cross_process;
        t.idle_or_kernel += c.idle_or_kernel;
    }
    t
}

/// The live iterator's records: whole `LiveThread`s back to back.
fn decode(bytes: &[u8]) -> Result<Vec<LiveThread>> {
    let size = size_of::<LiveThread>();
    if !bytes.len().is_multiple_of(size) {
        bail!(
            "the thread iterator wrote {} bytes, not a whole number of {size}-byte records",
            bytes.len()
        );
    }
    Ok(bytes
        .chunks_exact(size)
        // SAFETY: a chunk is exactly one LiveThread's bytes; every bit pattern is valid
        // (plain integers), and read_unaligned needs no alignment.
        .map(|c| unsafe { std::ptr::read_unaligned(c.as_ptr().cast::<LiveThread>()) })
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_decode_whole_and_a_torn_read_is_an_error() {
        let rec = |tid| LiveThread {
            tid,
            now: 5,
            ..LiveThread::default()
        };
        let mut bytes = Vec::new();
        for r in [rec(3), rec(9)] {
            // SAFETY: plain-integer struct viewed as its bytes.
            bytes.extend_from_slice(unsafe {
                std::slice::from_raw_parts((&raw const r).cast::<u8>(), size_of::<LiveThread>())
            });
        }
        let got = decode(&bytes).unwrap();
        assert_eq!(got, [rec(3), rec(9)]);
        assert!(decode(&bytes[1..]).is_err());
        assert!(decode(&[]).unwrap().is_empty());
    }
}
